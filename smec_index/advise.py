"""The advisor: how much of the full-dim result each compressed dim and code keeps, and the cheapest that is enough.

In bytes: for every trained dim and stage code (``index.backends.codes``: float32, sq8, sq4, RaBitQ 4/2/1
bit, binary), it measures recall@k of an exhaustive search of the code followed by the exact full-dim
rerank of 1/5, 1/2 and all of ``candidates`` (the full vector coded included), and prices each (dim, code) in
RAM bytes a vector (the code, the label every index keeps, and the compressor's map to that dim spread over
``n_vectors``). Given a RAM ``budget`` it picks the best recall within it; given only a ``target`` the fewest
bytes that reach it: ``Advice.choice`` is (dim, code, candidates) with its measured recall, and
``CompressedIndex(smec, dims=dim, code=code, candidates=candidates)`` builds it.

The float32 dims table below is the original advice, kept as is:

For each trained dim it measures recall@k against exact full-dim search (the share of the full-dim
top-k a search at that dim returns), without rerank (exact search at the dim) and with rerank (the
top ``candidates`` at the dim rescored with the full vectors). Searches are exact so that the
estimate is about compression alone; an ANN index loses its own, dim-independent share on top.
Queries are held-out queries, or, when there are none, corpus rows held out of training and of the
searched corpus. It then recommends the smallest dim (without rerank when that is enough) that keeps
``target`` of the full-dim top-k, and what that saves for ``n_vectors`` vectors: RAM for the vectors,
and the queries per second of an exhaustive scan, measured here and scaled linearly to ``n_vectors``.
"""

from __future__ import annotations

import math

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import faiss
import numpy as np

from .compressor import SMEC
from .index.backends import make_backend
from .index.backends.codes import CODES, LABEL_BYTES, code_bytes, code_options
from .metrics import exact_search
from .quality import default_dims
from .report import best_time, human_bytes, markdown_table

__all__ = ["advise", "Advice", "DimEstimate", "CodeEstimate", "DEFAULT_CODES"]

DEFAULT_CODES = ("float32", "sq8", "sq4", "rabitq4", "rabitq2", "rabitq1", "pq4", "pq2", "pq1", "binary")

_TIMING_ROWS = 20_000  # the scan is timed on at least this many rows (tiled), so small corpora time stably
_REPEATS = 3


@dataclass(frozen=True)
class DimEstimate:
    """One trained dim: float32 bytes per vector, recall@k against full-dim exact search, estimated QPS."""

    dim: int
    bytes_per_vector: int
    recall: float
    recall_rerank: float
    qps: float
    qps_rerank: float

    def meets(self, target: float) -> str:
        """``"yes"`` (without rerank), ``"with rerank"`` or ``"no"``."""
        if self.recall >= target:
            return "yes"
        return "with rerank" if self.recall_rerank >= target else "no"


@dataclass(frozen=True)
class CodeEstimate:
    """One (dim, code, candidates): RAM bytes a vector (code + label + the compressor's map to ``dim`` spread over
    the collection, rounded up) and recall@k after the full rerank."""

    dim: int
    code: str
    candidates: int
    code_bytes: int
    ram_bytes_per_vector: int
    recall: float


@dataclass
class Advice:
    """The advisor's measurements and recommendation (``dim`` None: no trained dim meets the target).

    ``options`` holds every measured (dim, code, candidates); ``choice`` the one picked by ``budget`` or
    ``target`` (None when nothing fits the budget); ``choice_meets`` whether it reaches ``target``."""

    rows: list[DimEstimate]
    input_dim: int
    full_qps: float
    target: float
    k: int
    candidates: int
    n_vectors: int
    n_queries: int
    queries_from: str
    method: str
    supervised: bool
    dim: int | None
    rerank: bool
    options: list[CodeEstimate] = field(default_factory=list)
    budget: float | None = None
    choice: CodeEstimate | None = None
    choice_meets: bool = False

    @property
    def recommended(self) -> DimEstimate | None:
        return next((r for r in self.rows if r.dim == self.dim), None)

    def table(self) -> str:
        """The measured table the recommendation is read from, smallest dim first, full dim last."""
        k, D = self.k, self.input_dim
        rows = [[r.dim, r.bytes_per_vector, f"{D / r.dim:.1f}x", r.recall, r.recall_rerank,
                 _qps(r.qps), _qps(r.qps_rerank), r.meets(self.target)] for r in self.rows]
        rows.append([f"{D} (full)", 4 * D, "1.0x", 1.0, 1.0, _qps(self.full_qps), "-", "reference"])
        return markdown_table(["dim", "bytes/vector", "compression", f"recall@{k}", f"recall@{k} + rerank",
                               "est. QPS", "est. QPS + rerank", f"meets {self.target:g}"], rows, ".3f")

    def summary(self) -> str:
        """The recommendation in words, with what it saves for ``n_vectors`` vectors."""
        N, D, k = self.n_vectors, self.input_dim, self.k
        r = self.recommended
        if r is None:
            best = max(self.rows, key=lambda x: max(x.recall, x.recall_rerank))
            return (f"No trained dim keeps {self.target:g} of the full-dim top-{k}: the best is {best.dim} dims "
                    f"(recall@{k} {best.recall:.3f}, {best.recall_rerank:.3f} with rerank of the top "
                    f"{self.candidates}). Keep the full {D} dims, lower the target, rerank more candidates, "
                    f"or train larger dims.")
        recall = r.recall_rerank if self.rerank else r.recall
        how = f"with full-dim rerank of the top {self.candidates}" if self.rerank else "without rerank"
        qps = r.qps_rerank if self.rerank else r.qps
        text = (f"Recommended: {r.dim} dims {how}; it keeps {recall:.1%} of the full-dim top-{k} "
                f"(target {self.target:.1%}). For {N:,} vectors: {human_bytes(N * 4 * r.dim)} of float32 vectors "
                f"in RAM instead of {human_bytes(N * 4 * D)} ({D / r.dim:.1f}x less, "
                f"{human_bytes(N * 4 * (D - r.dim))} saved)")
        if self.rerank:
            text += (f"; the full vectors ({human_bytes(N * 4 * D)}) can stay on disk, memory-mapped: each query "
                     f"reads {self.candidates} of them")
        text += (f". An exhaustive scan answers an estimated {_qps(qps)} queries/s instead of {_qps(self.full_qps)} "
                 f"({qps / self.full_qps:.1f}x) on this machine.")
        return text

    def bytes_table(self) -> str:
        """Every measured (dim, code): RAM bytes a vector beside raw float32, recall@k at each candidates count."""
        counts = sorted({o.candidates for o in self.options})
        by: dict[tuple[int, str], dict[int, float]] = {}
        ram_of: dict[tuple[int, str], int] = {}
        for o in self.options:
            by.setdefault((o.dim, o.code), {})[o.candidates] = o.recall
            ram_of[(o.dim, o.code)] = o.ram_bytes_per_vector
        raw = 4 * self.input_dim
        rows = []
        for (dim, code), rec in sorted(by.items(), key=lambda kv: (code_bytes(kv[0][1], kv[0][0]), kv[0])):
            ram = ram_of[(dim, code)]
            picked = self.choice is not None and (self.choice.dim, self.choice.code) == (dim, code)
            rows.append([dim, code, ram, f"{ram / raw:.1%}", *[rec[c] for c in counts],
                         f"<- {self.choice.candidates}" if picked else ""])
        return markdown_table(["dim", "code", "RAM B/vector", "of raw", *[f"recall@{self.k} C={c}" for c in counts],
                               "choice"], rows, ".3f")

    def choice_summary(self) -> str:
        """The (dim, code, candidates) recommendation in words."""
        c, raw = self.choice, 4 * self.input_dim
        how = (f"within {self.budget:,.0f} B a vector" if self.budget is not None else
               f"the fewest bytes that keep {self.target:g} of the full-dim top-{self.k}")
        if c is None:
            cheapest = min(self.options, key=lambda o: o.ram_bytes_per_vector)
            return (f"No (dim, code) fits {self.budget:,.0f} B a vector: the cheapest measured needs "
                    f"{cheapest.ram_bytes_per_vector} B ({cheapest.dim} dims, {cheapest.code}).")
        text = (f"Choice ({how}): dim {c.dim}, code {c.code}, {c.candidates} candidates reranked at full dim: "
                f"recall@{self.k} {c.recall:.3f} on {self.queries_from}, {c.ram_bytes_per_vector} B of RAM a vector "
                f"({c.ram_bytes_per_vector / raw:.1%} of raw float32 {raw:,} B; the full vectors stay on disk).")
        if not self.choice_meets:
            text += f" It does not reach the target {self.target:g}."
        return text + (f" Build it with CompressedIndex(smec, dims={c.dim}, code={c.code!r}, "
                       f"candidates={c.candidates}).")

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("rows", "options", "choice")}
        out["rows"] = [{**asdict(r), "meets": r.meets(self.target)} for r in self.rows]
        out["options"] = [asdict(o) for o in self.options]
        out["choice"] = None if self.choice is None else asdict(self.choice)
        return out


def _qps(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def _check_matrix(X: Any, name: str, D: int | None = None) -> np.ndarray:
    if not isinstance(X, np.ndarray) or X.dtype.kind != "f":
        got = f"dtype {X.dtype}" if isinstance(X, np.ndarray) else type(X).__name__
        raise TypeError(f"advise: {name} must be a float numpy array (n, {D or 'D'}), got {got}")
    if X.ndim != 2 or X.shape[0] == 0 or (D is not None and X.shape[1] != D):
        raise ValueError(f"advise: {name} has shape {X.shape}; expected (n, {D or 'D'}) with n >= 1")
    if not np.isfinite(X).all():
        raise ValueError(f"advise: {name} has NaN or inf values; expected finite values")
    X = np.ascontiguousarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` (nq, k) found in the same row of ``found`` (nq, k)."""
    return float((found[:, :, None] == truth[:, None, :]).any(axis=2).sum(axis=1).mean() / truth.shape[1])


def _rerank(Fq: np.ndarray, F: np.ndarray, cand: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k best candidates per query by exact full-dim inner product."""
    scores = np.einsum("qd,qmd->qm", Fq, F[cand])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cand, order, axis=1)


def _scan_seconds_per_vector(Zq: np.ndarray, Zc: np.ndarray, k: int) -> float:
    """Seconds an exhaustive scan (faiss ``IndexFlatIP``) spends per query and per stored vector."""
    reps = max(1, -(-_TIMING_ROWS // Zc.shape[0]))
    index = faiss.IndexFlatIP(Zc.shape[1])
    index.add(np.tile(Zc, (reps, 1)) if reps > 1 else Zc)
    t = best_time(lambda: index.search(Zq, k), _REPEATS)
    return t / (Zq.shape[0] * index.ntotal)


def advise(
    corpus: np.ndarray,
    queries: np.ndarray | None = None,
    *,
    smec: SMEC | None = None,
    dims: Sequence[int] | None = None,
    method: str = "smec",
    target: float = 0.98,
    k: int = 10,
    candidates: int = 100,
    n_vectors: int | None = None,
    holdout: int = 200,
    seed: int = 0,
    progress: bool = True,
    codes: Sequence[str] = DEFAULT_CODES,
    budget: float | None = None,
    **fit_options: Any,
) -> Advice:
    """Measure every trained dim and code against exact full-dim search; recommend (dim, code, candidates).

    Args:
        corpus: the vectors to be indexed (n, D).
        queries: held-out queries (m, D). Without them, ``holdout`` corpus rows (at most a fifth) are
            held out of training and of the searched corpus and used as queries.
        smec: a fitted compressor to assess; without one, ``SMEC(dims, method, seed=seed, **fit_options)``
            is fitted on the corpus (less the held-out rows).
        dims: the dims to assess (default: every trained dim, or ``default_dims(D)`` when fitting).
        target: the share of the full-dim top-k to keep, in (0, 1].
        k: the k of recall@k. candidates: how many results at the reduced dim the full-dim rerank rescores.
        n_vectors: the collection size the savings are stated for (default: the searched corpus size).
        codes: the stage codes to measure at every dim (FAISS codes of ``index.backends.codes.CODES``),
            each with 1/5, 1/2 and all of ``candidates`` reranked.
        budget: RAM bytes a vector: the choice is the best recall within it; without one, the fewest bytes
            that reach ``target``.

    Example::

        advice = advise(corpus, queries, target=0.95)         # or budget=96 (bytes a vector)
        print(advice.bytes_table()); print(advice.choice_summary())
    """
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise ValueError(f"advise: target must be a number in (0, 1], got {target!r}")
    for name, v in (("k", k), ("candidates", candidates), ("holdout", holdout)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"advise: {name} must be a positive int, got {v!r}")
    if candidates < k:
        raise ValueError(f"advise: candidates must be >= k={k} (the rerank keeps k of them), got {candidates}")
    if isinstance(codes, str) or not all(c in CODES and CODES[c].backend != "qdrant-edge" for c in codes) or not codes:
        faiss_codes = sorted(c for c in CODES if CODES[c].backend != "qdrant-edge")
        raise ValueError(f"advise: codes must be a non-empty sequence of {faiss_codes}, got {codes!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0):
        raise ValueError(f"advise: budget must be a positive number of RAM bytes a vector, got {budget!r}")
    if n_vectors is not None and (isinstance(n_vectors, bool) or not isinstance(n_vectors, (int, np.integer))
                                  or n_vectors < 1):
        raise ValueError(f"advise: n_vectors must be a positive int, got {n_vectors!r}")
    X = _check_matrix(corpus, "corpus")
    n, D = X.shape
    Q = None if queries is None else _check_matrix(queries, "queries", D)
    if smec is not None:
        if not isinstance(smec, SMEC) or not smec.is_fitted:
            raise ValueError(f"advise: smec must be a fitted smec_index.SMEC, got {smec!r}")
        if smec.input_dim_ != D:
            raise ValueError(f"advise: smec was fitted on {smec.input_dim_}-dim vectors; corpus has shape {X.shape}")
        if fit_options or method != "smec":
            raise ValueError(f"advise: method and training options {sorted(fit_options)} apply only when advise "
                             f"fits the compressor (smec=None)")
        available = smec.dims_
        dims = tuple(available if dims is None else dims)
        missing = sorted(set(dims) - set(available))
        if missing:
            raise ValueError(f"advise: dims {missing} are not trained in smec; it has {available}")
    else:
        dims = tuple(default_dims(D) if dims is None else dims)
        smec = SMEC(dims, method, seed=seed, progress=progress, **fit_options)  # checks dims, method, options
        if max(smec.dims) >= D:
            raise ValueError(f"advise: dims {smec.dims} must all be < the corpus dim {D}")

    if Q is None:
        n_hold = min(holdout, n // 5)
        if n_hold < 1:
            raise ValueError(f"advise: corpus has {n} rows; without queries at least 5 are needed to hold some out")
        held = np.zeros(n, dtype=bool)
        held[np.random.default_rng(seed).choice(n, n_hold, replace=False)] = True
        Q, X = X[held], X[~held]
        queries_from = f"{n_hold} corpus rows held out of the searched corpus" + (
            " and of training" if not smec.is_fitted else " (the given compressor may have been trained on them)")
    else:
        queries_from = f"{Q.shape[0]} held-out queries"
    if X.shape[0] < candidates:
        candidates = X.shape[0]
    if X.shape[0] < k:
        raise ValueError(f"advise: k={k} but the searched corpus has only {X.shape[0]} rows")
    if not smec.is_fitted:
        smec.fit(X)

    from tqdm.auto import tqdm

    from ._progress import tqdm_disable

    N = int(n_vectors or X.shape[0])
    _, truth = exact_search(Q, X, k)
    F, Fq = smec.transform(X, D), smec.transform(Q, D)  # what the full-dim rerank scores (adapted if supervised)
    rerank_s = None
    rows = []
    options: list[CodeEstimate] = []
    counts = sorted({c for c in (candidates // 5, candidates // 2, candidates) if c >= k})
    for d in tqdm(sorted(dims), desc="advise", disable=tqdm_disable(progress), leave=False):
        Zc, Zq = smec.transform(X, d), smec.transform(Q, d)
        shared = math.ceil(smec.subset(int(d)).nbytes / N)  # the map to d, held once for the N vectors
        options += _measure_codes(Zc, Zq, Fq, F, truth, int(d), codes, counts, k, shared)
        _, cand = exact_search(Zq, Zc, candidates)
        if rerank_s is None:
            rerank_s = best_time(lambda: _rerank(Fq, F, cand, k), _REPEATS) / Q.shape[0]
        found = _rerank(Fq, F, cand, k)
        scan = _scan_seconds_per_vector(Zq, Zc, k)
        rows.append(DimEstimate(int(d), 4 * int(d), _recall(cand[:, :k], truth), _recall(found, truth),
                                1.0 / (scan * N), 1.0 / (scan * N + rerank_s)))
    # the full vector itself coded (``CompressedIndex(smec, dims=D, code=...)``): no reduced map to hold
    options += _measure_codes(F, Fq, Fq, F, truth, D, codes, counts, k, math.ceil(smec.subset(D).nbytes / N))
    full_qps = 1.0 / (_scan_seconds_per_vector(Q, X, k) * N)
    dim, rerank = None, False
    for r in rows:
        verdict = r.meets(target)
        if verdict != "no":
            dim, rerank = r.dim, verdict == "with rerank"
            break
    choice, meets = _choose(options, float(target), budget)
    return Advice(rows, D, full_qps, float(target), int(k), int(candidates), N, int(Q.shape[0]), queries_from,
                  smec.method, bool(smec.supervised_), dim, rerank, options, None if budget is None else float(budget),
                  choice, meets)


def _measure_codes(Zc: np.ndarray, Zq: np.ndarray, Fq: np.ndarray, F: np.ndarray, truth: np.ndarray, dim: int,
                   codes: Sequence[str], counts: list[int], k: int, shared: int = 0) -> list[CodeEstimate]:
    """recall@k of an exhaustive search of each code at ``dim``, its top ``c`` reranked at full dim, per count;
    RAM a vector: the code, the label and ``shared`` (the compressor's map spread over the vectors)."""
    out = []
    for code in codes:
        c = CODES[code]
        try:
            b = make_backend(c.backend, dim, "ip", code_options(code, dim))
            b.train(Zc)
        except ValueError:  # a code this dim cannot hold (binary: a multiple of 8 bits; pq: of its sub-vector) or
            continue  # these rows cannot train (a product quantizer's 256 centroids need 256 rows)
        b.add(np.arange(Zc.shape[0], dtype=np.int64), Zc)
        _, cand = b.search(Zq, max(counts))
        ram = code_bytes(code, dim) + LABEL_BYTES + shared
        for m in counts:
            out.append(CodeEstimate(dim, code, m, code_bytes(code, dim), ram,
                                    _recall(_rerank(Fq, F, cand[:, :m], k), truth)))
    return out


def _choose(options: list[CodeEstimate], target: float, budget: float | None) -> tuple[CodeEstimate | None, bool]:
    """With a budget: the best recall within it (then fewer bytes, fewer candidates). Without: the fewest bytes
    reaching ``target`` (then fewer candidates), else the best recall measured. Returns (choice, meets target)."""
    best = lambda pool: max(pool, key=lambda o: (o.recall, -o.ram_bytes_per_vector, -o.candidates))  # noqa: E731
    if budget is not None:
        pool = [o for o in options if o.ram_bytes_per_vector <= budget]
        if not pool:
            return None, False
        pick = best(pool)
        return pick, pick.recall >= target
    meeting = [o for o in options if o.recall >= target]
    if meeting:
        return min(meeting, key=lambda o: (o.ram_bytes_per_vector, o.candidates, -o.recall)), True
    return (best(options), False) if options else (None, False)
