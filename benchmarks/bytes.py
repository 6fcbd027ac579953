"""The bytes frontier: recall@10 of a coded first stage, then exact rerank, against its RAM bytes per vector.

For every first stage (the full vector, PCA-d, SMEC-d unsupervised, SMEC-d quantization-aware) and every code
(float32, sq8, sq4, rabitq 1/2/4 bit, product quantizers pq 1/2/4 bit and opq 2 bit, residual quantizers
rq 1/2/4 bit, binary; ``--codes`` a subset, the full stage without rq: ``FULL_SKIP``), and for FAISS
peers on the raw vectors (``RaBitQ``, ``RaBitQ4``, ``ITQ256,LSHt``, ``PCAR128,RaBitQ``, ``OPQ<D/16>,PQ<D/16>``),
it measures on the test queries of a BEIR-layout set:

- ``code_bytes``: bytes of one vector's code in RAM (FAISS's ``sa_code_size``; labels and ids not counted),
- ``recall@10`` against exact full-dim search, with no rerank (``candidates`` 0) and with the top 20, 50,
  100 candidates reranked exactly at full dim (100 through ``CompressedIndex``; 20 and 50 by reranking the
  prefix of the same exhaustive scan's top 100, which is what a search with fewer candidates returns),
- ``ndcg@10`` on the test qrels (every row; issue 16 reads it at 100 candidates),
- ``qps_b1``: queries a second one at a time (batch 1), through ``CompressedIndex`` for the reduced first
  stages (its default ``disk`` full store), through the same backend and a numpy rerank from RAM for the
  full-vector stages and the peers (``qps_via`` says which).

Default dims (``bytes_dims``): the quality benchmark's, and the dim whose one-bit-a-dim codes take half the
bytes of FAISS RaBitQ on the full vector (``half_rabitq_dim``: 224 for 384-d, 416 for 768-d).

Searches at the first stage are exhaustive (no graph): the numbers are about the codes, not about an ANN
engine. "smec-qa" is quantization-aware SMEC: one fit per code of ``QA_CODES`` with ``SMEC(code=...)``, whose
every stage keeps the candidate map (trained, or PCA of its input or of the full vector) whose *codes* keep the
most of held-out corpus rows' full-dim top-10 among 100 candidates, and for binary the ``binary-itq`` code (a
learned ITQ rotation before the sign bits). The first stages live in ``FIRST_STAGES``. Compressors are trained
once and cached under ``--cache`` (default /tmp/smec-bytes-cache).

    python benchmarks/bytes.py --data ../shared/data/scifact --model all-MiniLM-L6-v2 \\
        --json benchmarks/results/bytes-scifact-all-MiniLM-L6-v2.json --plot benchmarks/results/bytes-scifact-all-MiniLM-L6-v2.png

Timings are only comparable on a quiet machine: the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (describe_machine, load_avg, machine_info, markdown_table, recall, save_figure,  # noqa: E402
                    write_json)

from smec_index import SMEC  # noqa: E402
from smec_index.datasets import load_beir  # noqa: E402
from smec_index.index import CompressedIndex  # noqa: E402
from smec_index.index.backends import make_backend  # noqa: E402
from smec_index.index.backends.codes import CODES, code_bytes, code_options  # noqa: E402
from smec_index.metrics import exact_search, ndcg_at_k  # noqa: E402
from smec_index.quality import default_dims  # noqa: E402

K = 10
CANDIDATES = (0, 20, 50, 100)  # 0: no rerank
STAGE_CODES = ("float32", "sq8", "sq4", "rabitq1", "rabitq2", "rabitq4", "pq1", "pq2", "pq4", "opq2", "rq1", "rq2", "rq4",
               "binary")
# codes the full first stage skips: a residual quantizer of the whole vector (D/8 to D/2 codebooks of D dims)
# beam-encodes for tens of minutes on debian's 64k rows, where a reduced stage's takes one to three minutes
FULL_SKIP = ("rq1", "rq2", "rq4")
PEERS = {"RaBitQ": "RaBitQ", "RaBitQ4": "RaBitQ4", "ITQ256,LSHt": "ITQ256,LSHt", "PCAR128,RaBitQ": "PCAR128,RaBitQ"}
# the stage codes smec-qa is fitted for, and the code its index runs (binary: sign bits after a learned ITQ rotation)
QA_CODES = {"rabitq1": "rabitq1", "rabitq2": "rabitq2", "rabitq4": "rabitq4", "pq1": "pq1", "pq2": "pq2",
            "pq4": "pq4", "binary": "binary-itq"}
DEFAULT_CACHE = Path("/tmp/smec-bytes-cache")


# --------------------------------------------------------------------- first stages
def half_rabitq_dim(D: int) -> int | None:
    """The dim whose one-bit-a-dim codes (``rq1``, ``pq1``: d / 8 bytes) take half the bytes of FAISS's 1-bit
    RaBitQ on the full vector (D / 8 + 8), the half-bytes point of issue 16 (384 -> 224, 768 -> 416); None when
    that is not below D. At a fixed byte budget a wider stage with fewer bits a dim kept more: on 1,000 Debian
    training queries at 28 B (RQ28x8), 112 dims 0.989, 160 0.993, 192 0.994, 224 0.993, against 0.994 for RaBitQ."""
    dim = 8 * (code_bytes("rabitq1", D) // 2)
    return dim if dim < D else None


def bytes_dims(D: int) -> tuple[int, ...]:
    """The benchmark's default dims: the quality defaults (``default_dims``) and ``half_rabitq_dim``."""
    half = half_rabitq_dim(D)
    return tuple(sorted(set(default_dims(D)) | ({half} if half else set()), reverse=True))


def _fit_cached(method: str, X: np.ndarray, dims: tuple[int, ...], seed: int, cache: Path, tag: str,
                code: str | None = None) -> SMEC:
    """``SMEC(dims, method, code=code, seed=seed)`` fitted on X, loaded from ``cache`` when an identical fit (same
    data, same compressor and code source) was saved there."""
    h = hashlib.sha256(X[:: max(1, X.shape[0] // 1000)].tobytes())
    root = Path(__file__).resolve().parent.parent / "smec_index"
    for src in [*sorted((root / "compressor").glob("*.py")), root / "index" / "backends" / "codes.py"]:
        h.update(src.read_bytes())  # a fit by other compressor code is another model
    key = h.hexdigest()[:12]
    name = method if code is None else f"{method}-{code}"
    path = cache / f"{tag}-{name}-{'-'.join(map(str, dims))}-seed{seed}-{X.shape[0]}x{X.shape[1]}-{key}"
    if (path / "config.json").is_file():
        return SMEC.load(path)
    smec = SMEC(dims, method, code=code, seed=seed, progress=False).fit(X)
    cache.mkdir(parents=True, exist_ok=True)
    smec.save(path)
    return smec


def _first_stages(X: np.ndarray, dims: tuple[int, ...], seed: int, cache: Path, tag: str,
                  codes: tuple[str, ...]) -> dict[str, Any]:
    """Every reduced first stage by name: its compressor, and the code each of ``codes`` runs as.

    The one place first stages are listed; "smec-qa" is fitted once per code of ``QA_CODES`` in ``codes``."""
    pca = _fit_cached("pca", X, dims, seed, cache, tag)
    smec = _fit_cached("smec", X, dims, seed, cache, tag)
    same = {c: (None, c) for c in STAGE_CODES}  # (compressor override, code)
    qa = {c: (_fit_cached("smec", X, dims, seed, cache, tag, QA_CODES[c]), QA_CODES[c]) for c in QA_CODES if c in codes}
    return {"pca": (pca, same), "smec": (smec, same), "smec-qa": (smec, qa)}


FIRST_STAGES = ("full", "pca", "smec", "smec-qa")


def stage_choices(stages: dict[str, Any]) -> dict[str, Any]:
    """Which map each SMEC stage kept and by which rule: for "smec", and for "smec-qa" per code."""
    def kept(smec: SMEC) -> list[dict]:
        return [{"out_dims": r["out_dims"], "choice": r["choice"], "rule": r["rule"],
                 "tolerance": r["tolerance"], "candidates": r["candidates"]}
                for r in smec.reports_ if r["candidates"]]

    return {"smec": kept(stages["smec"][0]),
            "smec-qa": {code: kept(fit) for code, (fit, _) in stages["smec-qa"][1].items()}}


# --------------------------------------------------------------------- measuring
def _ndcg(rows: np.ndarray, qids: list[str], doc_ids: list[str], qrels: dict) -> float:
    vals = [ndcg_at_k([doc_ids[j] for j in r if j >= 0], qrels[q], K) for q, r in zip(qids, rows) if q in qrels]
    return float(np.mean(vals)) if vals else float("nan")


def _qps(search_one: Callable[[np.ndarray], Any], Q: np.ndarray) -> float:
    search_one(Q[:1])
    t = time.perf_counter()
    for i in range(Q.shape[0]):
        search_one(Q[i : i + 1])
    return Q.shape[0] / (time.perf_counter() - t)


def _rerank(Qn: np.ndarray, Xn: np.ndarray, cand: np.ndarray, k: int) -> np.ndarray:
    """Rows of the k best candidates per query by exact inner product (-1 candidates score last)."""
    scores = np.einsum("qd,qmd->qm", Qn, Xn[np.maximum(cand, 0)])
    scores[cand < 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(cand, order, axis=1)


class Run:
    """One data set: the queries, the exact truth, and the rows measured so far."""

    def __init__(self, ds: Any, n_qps: int, max_queries: int | None) -> None:
        self.X = ds.corpus
        self.Q, self.qids, self.qrels = ds.split_queries("test")
        if max_queries is not None and self.Q.shape[0] > max_queries:  # a seeded sample, in file order
            keep = np.sort(np.random.default_rng(0).choice(self.Q.shape[0], max_queries, replace=False))
            self.Q, self.qids = self.Q[keep], [self.qids[i] for i in keep]
        self.doc_ids = ds.doc_ids
        _, self.truth = exact_search(self.Q, self.X, K)
        self.Qqps = self.Q[: min(n_qps, self.Q.shape[0])]
        self.records: list[dict] = []

    def _record(self, first_stage: str, dim: int, code: str, nbytes: int, c: int, rows: np.ndarray, qps: float,
                via: str, ram: float | None, peer: bool) -> None:
        self.records.append({"first_stage": first_stage, "dim": dim, "code": code, "code_bytes": nbytes,
                             "candidates": c, "recall@10": round(recall(rows, self.truth, K), 4),
                             "ndcg@10": round(_ndcg(rows, self.qids, self.doc_ids, self.qrels), 4),
                             "qps_b1": round(qps, 1), "qps_via": via, "ram_bytes_per_vector": ram, "peer": peer})

    def compressed(self, first_stage: str, smec: SMEC, dim: int, code: str) -> None:
        """A reduced first stage through ``CompressedIndex`` (exhaustive code scan, then full rerank)."""
        index = CompressedIndex(smec, dims=dim, code=code)
        index.train(self.X)
        index.add(self.X)
        ram = round(index.memory_usage()["ram_bytes_per_vector"], 1)
        nbytes = code_bytes(code, dim)
        top = max(CANDIDATES)
        cand = index.search(self.Q, top, rerank="none")[1]  # ids = corpus rows (added in order)
        for c in CANDIDATES:
            kw = {"rerank": "none"} if c == 0 else {"rerank": "full", "candidates": c}
            if c == top:
                rows = index.search(self.Q, K, **kw)[1]
            else:  # an exhaustive scan's top c is the prefix of its top 100: rerank it as the index would
                rows = cand[:, :K] if c == 0 else _rerank(self.Q, self.X, cand[:, :c], K)
            qps = _qps(lambda q: index.search(q, K, **kw), self.Qqps)
            self._record(first_stage, dim, code, nbytes, c, rows, qps, "CompressedIndex", ram, False)

    def default_build(self, smec: SMEC) -> dict:
        """``CompressedIndex(smec)`` as a user gets it (one coded stage, full vectors on disk): its RAM, its saved
        size on disk, beside raw float32, and recall@10 / nDCG@10 / batch-1 QPS at its default candidates."""
        index = CompressedIndex(smec)
        index.train(self.X)
        index.add(self.X)
        u = index.memory_usage()
        with tempfile.TemporaryDirectory() as tmp:
            index.save(Path(tmp) / "ix")
            disk = sum(f.stat().st_size for f in (Path(tmp) / "ix").rglob("*") if f.is_file())
        rows = index.search(self.Q, K)[1]
        return {"dim": index.dims[0], "code": index.code, "candidates": index.candidates[0],
                "full_store": index.full_store, "ram_bytes_per_vector": round(u["ram_bytes_per_vector"], 1),
                "disk_bytes_per_vector": round(disk / index.ntotal, 1), "raw_bytes_per_vector": u["raw_bytes_per_vector"],
                "recall@10": round(recall(rows, self.truth, K), 4),
                "ndcg@10": round(_ndcg(rows, self.qids, self.doc_ids, self.qrels), 4),
                "qps_b1": round(_qps(lambda q: index.search(q, K), self.Qqps), 1)}

    def raw(self, first_stage: str, label: str, backend: str, options: dict, nbytes: int, metric: str,
            peer: bool) -> None:
        """A code of the full vector: the backend over the raw rows, then a numpy rerank from RAM."""
        D = self.X.shape[1]
        b = make_backend(backend, D, metric, options)
        b.train(self.X)
        b.add(np.arange(self.X.shape[0], dtype=np.int64), self.X)
        ram = round(b.nbytes / self.X.shape[0], 1)
        cand = b.search(self.Q, max(CANDIDATES))[1]
        for c in CANDIDATES:
            def one(q: np.ndarray, c: int = c) -> np.ndarray:
                if c == 0:
                    return b.search(q, K)[1]
                return _rerank(q, self.X, b.search(q, c)[1], K)
            rows = cand[:, :K] if c == 0 else _rerank(self.Q, self.X, cand[:, :c], K)
            self._record(first_stage, D, label, nbytes, c, rows, _qps(one, self.Qqps),
                         "backend + numpy rerank", ram, peer)


def run_default(data: str, model: str, dims: tuple[int, ...] | None, seed: int, cache: Path, n_qps: int,
                tile: int | None, max_queries: int | None = None, sample: int | None = None) -> dict:
    """Only the default ``CompressedIndex(smec)`` (SMEC fitted with its default dims), optionally on the corpus
    tiled to ``tile`` rows as ``scale.py`` tiles it (noise N(0, 0.02^2), re-normalised; judged documents are
    then the first copy of each row, so nDCG@10 is only indicative), or on a seeded ``sample`` of its rows (a
    small corpus, where the compressor's map is a large share of each vector's bytes; judged documents left out
    cannot be found, so nDCG@10 is only indicative there too)."""
    ds = load_beir(data, model)
    suffix = ""
    if sample and sample < len(ds.doc_ids):
        keep = np.sort(np.random.default_rng(seed).choice(len(ds.doc_ids), sample, replace=False))
        ds.corpus, ds.doc_ids = ds.corpus[keep], [ds.doc_ids[i] for i in keep]
        suffix = f", a sample of {sample:,} rows"
    if tile:
        from scale import tiled_chunks

        ds.corpus = np.concatenate([x for _, x in tiled_chunks(ds.corpus.astype(np.float32), tile)])
        n0 = len(ds.doc_ids)  # copies after the first get ids of their own: only the originals are judged
        ds.doc_ids = [ds.doc_ids[i] if i < n0 else f"{ds.doc_ids[i % n0]}~{i // n0}" for i in range(tile)]
    X = ds.corpus
    dims = tuple(dims or default_dims(X.shape[1]))
    t0 = time.perf_counter()
    r = Run(ds, n_qps, max_queries)
    smec = _fit_cached("smec", X, dims, seed, cache, f"{Path(data).name}-{model}")
    return {"data": str(data), "dataset": ds.name + (f" tiled to {tile:,}" if tile else "") + suffix, "model": model,
            "n_corpus": int(X.shape[0]), "dim": int(X.shape[1]), "n_queries": int(r.Q.shape[0]),
            "n_qps_queries": int(r.Qqps.shape[0]), "dims": list(dims), "k": K, "seed": seed,
            "default_build": r.default_build(smec), "wall_s": round(time.perf_counter() - t0, 1), "skipped": [],
            "records": []}


def run(data: str, model: str, dims: tuple[int, ...] | None, seed: int, cache: Path, n_qps: int,
        max_queries: int | None = None, progress: bool = True, codes: tuple[str, ...] | None = None) -> dict:
    """Every row of the table; ``codes`` (default ``STAGE_CODES``) the stage codes measured."""
    codes = tuple(STAGE_CODES if codes is None else codes)
    unknown = sorted(set(codes) - set(STAGE_CODES))
    if unknown:
        raise ValueError(f"codes must be among {STAGE_CODES}, got {unknown}")
    ds = load_beir(data, model)
    X = ds.corpus
    D = X.shape[1]
    dims = tuple(dims or bytes_dims(D))
    r = Run(ds, n_qps, max_queries)
    say = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    skipped = [f"full {code}: see FULL_SKIP" for code in codes if code in FULL_SKIP]
    for code in codes:
        if code in FULL_SKIP:
            continue
        c = CODES[code]
        say(f"[{time.perf_counter() - t0:6.0f} s] full {code}")
        r.raw("full", code, c.backend, code_options(code, D), code_bytes(code, D), "ip", False)
    # a FAISS user's product quantizer on the raw vector, at half a bit a dim (MiniLM 24 B, mpnet 48 B)
    m = D // 16
    peers = {**PEERS, **({f"OPQ{m},PQ{m}": f"OPQ{m},PQ{m}np"} if D % 16 == 0 and X.shape[0] >= 256 else {})}
    if f"OPQ{m},PQ{m}" not in peers:
        skipped.append(f"peer OPQ,PQ: needs D a multiple of 16 and 256 rows, got {X.shape[0]} x {D}")
    for label, spec in peers.items():
        say(f"[{time.perf_counter() - t0:6.0f} s] peer {label}")
        # ITQ + LSH is an L2 index in FAISS; on unit vectors its ranking is the inner product's
        metric = "l2" if "LSH" in spec else "ip"
        params = {"qb": 8} if "RaBitQ" in spec else {}
        reduced = re.match(r"(?:ITQ|PCAR?)(\d+),", spec)
        if reduced and int(reduced.group(1)) >= D:  # ITQ256 or PCAR128 on vectors of that many dims or fewer
            skipped.append(f"peer {label}: not defined at D={D}")
            continue
        nbytes = int(faiss.index_factory(D, spec, 1 if metric == "l2" else 0).sa_code_size())
        r.raw("faiss", label, "faiss", {"spec": spec, "params": params}, nbytes, metric, True)
    say(f"[{time.perf_counter() - t0:6.0f} s] fitting compressors (cached under {cache})")
    tag = f"{Path(data).name}-{model}"
    stages = _first_stages(X, dims, seed, cache, tag, codes)
    for name in FIRST_STAGES[1:]:
        base, stage_codes = stages[name]
        for dim in dims:
            for stage_code, (override, code) in stage_codes.items():
                if stage_code not in codes:
                    continue
                say(f"[{time.perf_counter() - t0:6.0f} s] {name}-{dim} {code}")
                r.compressed(name, override or base, dim, code)
    say(f"[{time.perf_counter() - t0:6.0f} s] the default CompressedIndex(smec)")
    # the default index of a compressor fitted as a user would (the quality defaults' dims): a wider benchmark
    # stage would otherwise become the default stage, with a larger matrix saved beside it
    user_dims = tuple(default_dims(D))
    user = stages["smec"][0] if dims == user_dims else _fit_cached("smec", X, user_dims, seed, cache, tag)
    default = r.default_build(user)
    return {"data": str(data), "dataset": ds.name, "model": model, "n_corpus": int(X.shape[0]), "dim": D,
            "n_queries": int(r.Q.shape[0]), "n_qps_queries": int(r.Qqps.shape[0]), "dims": list(dims), "k": K,
            "seed": seed, "wall_s": round(time.perf_counter() - t0, 1), "skipped": skipped, "default_build": default,
            "stage_choices": stage_choices(stages), "records": r.records}


# --------------------------------------------------------------------- report
def _git() -> dict:
    from smec_index.report import provenance

    p = provenance()
    return {"commit": p["commit"], "dirty": p["dirty"]}


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both fewer bytes and higher recall, by bytes."""
    out: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not out or y > out[-1][1]:
            out.append((x, y))
    return out


def table(records: list[dict]) -> str:
    """One row per (first stage, dim, code): bytes, recall@10 at each candidates count, nDCG@10 and QPS at 100."""
    rows: dict[tuple, dict] = {}
    for rec in records:
        rows.setdefault((rec["first_stage"], rec["dim"], rec["code"]), {})[rec["candidates"]] = rec
    body = []
    for (stage, dim, code), by_c in sorted(rows.items(), key=lambda kv: (kv[1][100]["code_bytes"], kv[0])):
        r100 = by_c[100]
        body.append([stage, dim, code, r100["code_bytes"], *[by_c[c]["recall@10"] for c in CANDIDATES],
                     r100["ndcg@10"], f"{r100['qps_b1']:,.0f}"])
    return markdown_table(["first stage", "dim", "code", "B/vec", "R@10 no rerank", "C=20", "C=50", "C=100",
                           "nDCG@10 C=100", "QPS b1 C=100"], body, ".3f")


def frontier_table(records: list[dict]) -> str:
    """The rows on each first stage's Pareto frontier (bytes vs recall@10 at 100 candidates) and every peer."""
    at100 = [r for r in records if r["candidates"] == 100]
    keep = set()
    for stage in {r["first_stage"] for r in at100}:
        mine = [r for r in at100 if r["first_stage"] == stage]
        front = set(pareto([(r["code_bytes"], r["recall@10"]) for r in mine]))
        keep |= {(r["first_stage"], r["dim"], r["code"]) for r in mine
                 if (r["code_bytes"], r["recall@10"]) in front or r["peer"]}
    return table([r for r in records if (r["first_stage"], r["dim"], r["code"]) in keep])


def targets(payload: dict) -> list[str]:
    """Issue 16's targets read from one run, each ``met`` / ``not met`` with the numbers it compares."""
    recs = payload["records"]

    def rec(stage: str, code: str, c: int, dim: int | None = None) -> dict | None:
        return next((r for r in recs if r["first_stage"] == stage and r["code"] == code and r["candidates"] == c
                     and (dim is None or r["dim"] == dim)), None)

    def best(stages: tuple[str, ...], max_bytes: float, c: int) -> dict | None:
        pool = [r for r in recs if r["first_stage"] in stages and r["code_bytes"] <= max_bytes and r["candidates"] == c]
        return max(pool, key=lambda r: (r["recall@10"], -r["code_bytes"])) if pool else None

    def name(r: dict) -> str:
        return f"{r['first_stage']}-{r['dim']} {r['code']} ({r['code_bytes']} B)"

    out = []
    verdict = lambda ok: "met" if ok else "not met"  # noqa: E731
    peer100, peer50 = rec("faiss", "RaBitQ", 100), rec("faiss", "RaBitQ", 50)
    ours = ("smec", "smec-qa")
    if peer100 and peer50:
        half = best(ours, peer100["code_bytes"] / 2, 100)
        if half:
            out.append(f"{verdict(half['recall@10'] >= peer100['recall@10'])}: at half the bytes of FAISS RaBitQ "
                       f"({peer100['code_bytes'] / 2:g} B), recall@10 at 100 candidates >= RaBitQ's "
                       f"{peer100['recall@10']:.3f}: best {name(half)} {half['recall@10']:.3f}")
        equal = best(ours, peer50["code_bytes"], 50)
        if equal:
            out.append(f"{verdict(equal['recall@10'] >= peer50['recall@10'])}: at RaBitQ's bytes "
                       f"({peer50['code_bytes']} B), recall@10 at 50 candidates >= RaBitQ's {peer50['recall@10']:.3f}: "
                       f"best {name(equal)} {equal['recall@10']:.3f}")
    pairs = [(r, rec("pca", "binary" if r["code"] == "binary-itq" else r["code"], 100, r["dim"]))
             for r in recs if r["first_stage"] == "smec-qa" and r["candidates"] == 100]
    pairs = [(q, p) for q, p in pairs if p is not None]
    if pairs:
        lost = [f"{q['dim']} {q['code']} {q['recall@10']:.4f} < {p['recall@10']:.4f}" for q, p in pairs
                if q["recall@10"] < p["recall@10"]]
        out.append(f"{verdict(not lost)}: smec-qa >= pca with the same code at every (dim, code), recall@10 at 100 "
                   f"candidates: {len(pairs) - len(lost)} of {len(pairs)} pairs" + (f"; behind at {', '.join(lost)}"
                                                                                    if lost else ""))
    opq = next((r for r in recs if r["first_stage"] == "faiss" and r["code"].startswith("OPQ")
                and r["candidates"] == 100), None)
    if opq:
        mine = best(ours, opq["code_bytes"], 100)
        if mine:
            out.append(f"{verdict(mine['recall@10'] >= opq['recall@10'])} (not an issue target): at the bytes of FAISS "
                       f"{opq['code']} on the raw vector ({opq['code_bytes']} B), recall@10 at 100 candidates >= its "
                       f"{opq['recall@10']:.3f}: best {name(mine)} {mine['recall@10']:.3f}")
    itq = rec("faiss", "ITQ256,LSHt", 100)
    if itq:
        qa = best(("smec-qa",), itq["code_bytes"], 100)
        if qa:
            out.append(f"{verdict(qa['recall@10'] >= itq['recall@10'])}: smec-qa >= FAISS ITQ256,LSHt at its "
                       f"{itq['code_bytes']} B or fewer, recall@10 at 100 candidates: best {name(qa)} "
                       f"{qa['recall@10']:.3f} vs {itq['recall@10']:.3f}")
    d = payload.get("default_build")
    if d:
        raw = d["raw_bytes_per_vector"]
        ok = d["ram_bytes_per_vector"] <= raw / 16 and d["disk_bytes_per_vector"] <= 1.1 * raw and d["recall@10"] >= 0.95
        out.append(f"{verdict(ok)}: default CompressedIndex(smec) ({d['dim']} dims, {d['code']}, {d['candidates']} "
                   f"candidates): RAM {d['ram_bytes_per_vector']:g} B <= {raw / 16:g} (raw / 16), disk "
                   f"{d['disk_bytes_per_vector']:g} B <= {1.1 * raw:g} (raw + 10%), recall@10 {d['recall@10']:.3f} "
                   f">= 0.95 (" + ("the issue's setting, " if payload["n_corpus"] >= 100_000 and raw == 3072 else
                                   "not the issue's 100k x 768: ") + f"{payload['n_corpus']:,} x {payload['dim']})")
    return out


def report(payload: dict) -> str:
    """The docs' view of one run: what ran where, the Pareto rows and peers, the default index, the targets."""
    d = payload.get("default_build")
    load = f"load average {payload['load_avg_before']} -> {payload['load_avg_after']} (timings are not comparable)"
    rows = (f"Rows on a first stage's Pareto frontier (bytes against recall@10 at 100 candidates) and the FAISS "
            f"peers:\n\n{frontier_table(payload['records'])}\n\n") if payload["records"] else ""
    return (f"`{payload['command']}`: {payload['dataset']} / {payload['model']}, {payload['n_corpus']:,} x "
            f"{payload['dim']}, {payload['n_queries']} test queries ({payload['n_qps_queries']} timed one at a time); "
            f"commit {str(payload['commit'])[:10]}{' (dirty)' if payload['dirty'] else ''}; "
            f"{describe_machine(payload['machine'])}; {load}.\n\n"
            f"{rows}" + (f"Default `CompressedIndex(smec)`: {d['dim']} dims, {d['code']}, {d['candidates']} candidates, "
                         f"full store {d['full_store']}: RAM {d['ram_bytes_per_vector']:g} B, disk "
                         f"{d['disk_bytes_per_vector']:g} B a vector (raw {d['raw_bytes_per_vector']} B); recall@10 "
                         f"{d['recall@10']:.3f}" + (" (nDCG@10 is not meaningful on tiled copies: the near-duplicates "
                                                   "of a judged document are not judged)" if "tiled" in payload["dataset"]
                                                   else " (nDCG@10 is only indicative on a sample: judged documents "
                                                   "outside it cannot be found)" if "sample" in payload["dataset"]
                                                   else f", nDCG@10 {d['ndcg@10']:.4f}") + ".\n\n" if d else "")
            + "\n".join(f"- {t}" for t in targets(payload)))


def plot(payload: dict, path: str | Path) -> None:
    """recall@10 at 100 candidates against code bytes (log x): each first stage's points and Pareto line,
    the FAISS peers as labelled stars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in payload["records"] if r["candidates"] == 100]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colours = {"full": "tab:gray", "pca": "tab:blue", "smec": "tab:orange", "smec-qa": "tab:red"}
    for stage, colour in colours.items():
        pts = [(r["code_bytes"], r["recall@10"]) for r in recs if r["first_stage"] == stage]
        if not pts:
            continue
        ax.scatter(*zip(*pts), s=14, color=colour, alpha=0.5)
        ax.plot(*zip(*pareto(pts)), "-", color=colour, label=f"{stage} (Pareto)")
    for r in recs:
        if r["peer"]:
            ax.scatter([r["code_bytes"]], [r["recall@10"]], marker="*", s=150, color="black", zorder=5)
            ax.annotate(f"FAISS {r['code']}", (r["code_bytes"], r["recall@10"]), textcoords="offset points",
                        xytext=(5, -10), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("code bytes per vector in RAM (log)")
    ax.set_ylabel("recall@10 vs exact full-dim, 100 candidates reranked")
    ax.set_title(f"{payload['dataset']} / {payload['model']} ({payload['n_corpus']:,} x {payload['dim']})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, metavar="DIR", help="a BEIR-layout data set")
    p.add_argument("--model", required=True, metavar="NAME", help="embedding model under DIR/emb/")
    p.add_argument("--dims", type=lambda t: tuple(int(x) for x in t.split(",")), help="reduced dims (default: "
                   "256,128,64,32 below 2/3 of D, and the dim whose 1-bit codes take half of RaBitQ's bytes, "
                   "D / 2 + 32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--qps-queries", type=int, default=200, help="queries timed one at a time (default 200)")
    p.add_argument("--max-queries", type=int, help="a seeded sample of the test queries (default: all)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"compressor cache (default {DEFAULT_CACHE})")
    p.add_argument("--default-only", action="store_true", help="measure only the default CompressedIndex(smec)")
    p.add_argument("--tile", type=int, metavar="N", help="with --default-only: the corpus tiled to N rows")
    p.add_argument("--sample", type=int, metavar="N", help="with --default-only: a seeded sample of N corpus rows")
    p.add_argument("--codes", type=lambda t: tuple(t.split(",")), help=f"stage codes, comma-separated (default: "
                   f"all of {','.join(STAGE_CODES)})")
    p.add_argument("--json", metavar="OUT.json")
    p.add_argument("--plot", metavar="OUT.png")
    a = p.parse_args(argv)
    if a.codes and not set(a.codes) <= set(STAGE_CODES):
        p.error(f"--codes: expected names among {','.join(STAGE_CODES)}, got {','.join(a.codes)}")
    info = machine_info()
    load_before = load_avg()
    git = _git()  # the code as it was when the run started
    if a.default_only:
        if a.tile and a.sample:
            p.error("--tile and --sample exclude each other")
        payload = run_default(a.data, a.model, a.dims, a.seed, a.cache, a.qps_queries, a.tile, a.max_queries,
                              a.sample)
    else:
        if a.tile or a.sample:
            p.error("--tile and --sample go with --default-only")
        payload = run(a.data, a.model, a.dims, a.seed, a.cache, a.qps_queries, a.max_queries, codes=a.codes)
    payload = {**payload, **git, "command": " ".join(["python", "benchmarks/bytes.py",
                                                          *(argv if argv is not None else sys.argv[1:])]),
               "threads": {"faiss_omp": faiss.omp_get_max_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                           "torch": info.get("torch_threads")},
               "load_avg_before": load_before, "load_avg_after": load_avg(), "machine": info}
    print(f"# bytes: {payload['dataset']} / {a.model}; {describe_machine(info)}; load {load_before} -> "
          f"{payload['load_avg_after']}")
    if payload["records"]:
        print(table(payload["records"]))
    print(f"\ndefault CompressedIndex(smec): {payload['default_build']}")
    print("\n".join(f"- {t}" for t in targets(payload)))
    if a.json:
        out = write_json(a.json, payload)
        Path(out).with_suffix(".md").write_text(
            f"# bytes: {payload['dataset']} / {a.model} ({payload['n_corpus']:,} x {payload['dim']}, "
            f"{payload['n_queries']} test queries)\n\n`{payload['command']}`\n\n{describe_machine(info)}; "
            f"load {load_before} -> {payload['load_avg_after']}; commit {payload['commit']}"
            f"{' (dirty)' if payload['dirty'] else ''}\n\n{table(payload['records'])}\n\n"
            f"Default `CompressedIndex(smec)`: {payload['default_build']}\n\n"
            + "".join(f"- {t}\n" for t in targets(payload)))
        print(f"wrote {out}")
    if a.plot and payload["records"]:
        plot(payload, a.plot)
        print(f"wrote {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
