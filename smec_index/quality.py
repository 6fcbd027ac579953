"""The compressor quality benchmark as a library function (used by ``benchmarks/quality.py`` and the CLI).

For each (method, dim, mode) it fits the compressor on the corpus (and, in supervised mode, on the
training queries' qrels; in unlabelled mode smec also on the training queries' vectors without their qrels),
projects the evaluation queries and the corpus, runs exact search and reports nDCG@10, Recall@100 and MRR@10
with trec_eval semantics.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

import numpy as np

from .compressor import METHODS, SMEC
from .datasets import BeirDataset, Qrels
from .metrics import evaluate_embeddings

__all__ = ["default_dims", "eval_split", "run_quality", "run_ablation", "average_runs", "ABLATION", "MODES",
           "ALL_MODES"]

# "both" in the benchmarks and the CLI
MODES = ("unsupervised", "supervised")
# "unlabelled": the training queries' vectors without their qrels (a query log); only smec takes them, so the
# mode runs smec with them and pca / truncate as without them, and leaves mrl and search-adaptor out
ALL_MODES = MODES + ("unlabelled",)
UNLABELLED_METHODS = ("smec", "pca", "truncate")
# The paper's Table 1, built from the same code: MRL, then each SMEC module added alone, then all three, and the
# library's default (SMRL + S-XBM: ADS is off unless asked for, see docs/method.md).
ABLATION = {
    "MRL (baseline)": dict(sequential=False, ads=False, xbm=False),
    "w/ SMRL": dict(sequential=True, ads=False, xbm=False),
    "w/ ADS": dict(sequential=False, ads=True, xbm=False),
    "w/ S-XBM": dict(sequential=False, ads=False, xbm=True),
    "SMEC (all three)": dict(sequential=True, ads=True, xbm=True),
    "SMEC (library default: SMRL + S-XBM)": dict(sequential=True, ads=False, xbm=True),
}


def default_dims(D: int) -> tuple[int, ...]:
    """256/128/64/32 below two thirds of D (768 -> 256..32, 384 -> 128..32)."""
    dims = tuple(d for d in (256, 128, 64, 32) if d < D / 1.5)
    return dims or tuple(d for d in (D // 2, D // 4, D // 8) if d > 0)


def eval_split(ds: BeirDataset, seed: int) -> tuple[np.ndarray, list[str], Qrels, np.ndarray,
                                                  list[tuple[int, int, float]]]:
    """The evaluation queries and the supervised training pairs of ``ds``, as every benchmark uses them.

    Returns ``(Qe, qids, qrels, Qt, pairs)``: evaluation query vectors, their ids and judgments, and the
    training query vectors with (query_row, doc_row, relevance) pairs (see ``BeirDataset.supervised_split``).
    """
    train_qids, train_split, eval_qids, eval_name = ds.supervised_split(seed)
    Q, qids, qrels = ds.split_queries(eval_name)
    wanted = set(eval_qids)
    keep = [i for i, q in enumerate(qids) if q in wanted]
    Qe = Q[keep]
    qids = [qids[i] for i in keep]
    Qt, pairs = ds.pairs(train_qids, train_split)
    return Qe, qids, {q: qrels[q] for q in qids}, Qt, pairs


def _score(smec: SMEC, ds: BeirDataset, Qe, qids, qrels, dim: int) -> dict:
    return evaluate_embeddings(smec.transform(Qe, dim), smec.transform(ds.corpus, dim), qids, ds.doc_ids, qrels)


def run_quality(
    ds: BeirDataset,
    methods: Iterable[str] = METHODS,
    dims: Iterable[int] | None = None,
    modes: Iterable[str] = MODES,
    seed: int = 0,
    progress: bool = True,
    method_options: dict | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """One record per (method, dim, mode): ``method, dim, mode, ndcg@10, recall@100, mrr@10, train_s``
    (and ``train_threads``, the torch threads a learned fit trained with).

    Also a ``full`` record per mode (exact raw full-dim search) and, per learned method in
    supervised mode, its adapted full vector (``dim`` = D).
    """
    dims = tuple(dims) if dims is not None else default_dims(ds.dim)
    Qe, qids, qrels, Qt, pairs = eval_split(ds, seed)
    records: list[dict] = []
    full = evaluate_embeddings(Qe, ds.corpus, qids, ds.doc_ids, qrels)
    for mode in modes:
        if mode not in ALL_MODES:
            raise ValueError(f"run_quality: mode must be one of {ALL_MODES}, got {mode!r}")
        records.append({"method": "full", "dim": ds.dim, "mode": mode, **full, "train_s": 0.0,
                        "train_threads": None})
        for method in methods:
            if mode == "unlabelled" and method not in UNLABELLED_METHODS:
                continue
            sup = mode == "supervised" and method not in ("pca", "truncate")
            opts = dict((method_options or {}).get(method, {}))
            t0 = time.perf_counter()
            smec = SMEC(dims, method, seed=seed, progress=progress, **opts)
            if sup:
                smec.fit(ds.corpus, queries=Qt, qrels=pairs)
            elif mode == "unlabelled" and method == "smec":
                smec.fit(ds.corpus, queries=Qt)
            else:
                smec.fit(ds.corpus)
            train_s = time.perf_counter() - t0
            out_dims = list(dims) + ([ds.dim] if sup else [])
            # what each stage kept (the trained map or a candidate it was compared with on held-out data)
            choice = {r["out_dims"][0]: r["choice"] for r in getattr(smec, "reports_", []) if len(r["out_dims"]) == 1}
            for d in out_dims:
                records.append({"method": method, "dim": d, "mode": mode, **_score(smec, ds, Qe, qids, qrels, d),
                                "train_s": round(train_s, 2), "train_threads": smec.train_threads_,
                                **({"choice": choice[d]} if d in choice else {})})
            if log is not None:
                got = " ".join(f"{r['dim']}:{r['ndcg@10']:.4f}" for r in records[-len(out_dims):])
                log(f"{mode:12s} {method:15s} nDCG@10 {got}  ({train_s:.1f} s)")
    return records


def run_ablation(
    ds: BeirDataset,
    dims: Iterable[int] | None = None,
    mode: str = "supervised",
    seed: int = 0,
    progress: bool = True,
    known: list[dict] | None = None,
) -> list[dict]:
    """The paper's Table 1 layout: nDCG@10 per dim for MRL, +SMRL, +ADS, +S-XBM and all three.

    ``known``: records of ``run_quality`` with the same data, dims and seed; the baseline row (= method
    ``mrl``) and the library-default row (= method ``smec``) are taken from them instead of retrained.
    """
    dims = tuple(dims) if dims is not None else default_dims(ds.dim)
    Qe, qids, qrels, Qt, pairs = eval_split(ds, seed)
    same_as = {"MRL (baseline)": "mrl", "SMEC (library default: SMRL + S-XBM)": "smec"}
    rows = []
    for name, flags in ABLATION.items():
        recs = {r["dim"]: r for r in (known or []) if r["method"] == same_as.get(name) and r["mode"] == mode}
        if all(d in recs for d in dims):
            row = {"variant": name, **flags, "mode": mode, "train_s": recs[dims[0]]["train_s"]}
            row.update({f"ndcg@10@{d}": recs[d]["ndcg@10"] for d in dims})
            rows.append(row)
            continue
        t0 = time.perf_counter()
        smec = SMEC(dims, "smec", seed=seed, progress=progress, **flags)
        if mode == "supervised":
            smec.fit(ds.corpus, queries=Qt, qrels=pairs)
        else:
            smec.fit(ds.corpus)
        row = {"variant": name, **flags, "mode": mode, "train_s": round(time.perf_counter() - t0, 2)}
        for d in dims:
            row[f"ndcg@10@{d}"] = _score(smec, ds, Qe, qids, qrels, d)["ndcg@10"]
        rows.append(row)
    return rows


def average_runs(runs: list[list[dict]], key: tuple[str, ...]) -> list[dict]:
    """One record per ``key`` from runs with different seeds: the mean of each numeric field, plus
    ``std_<field>`` (population std over seeds) for the nDCG fields and ``seeds`` (how many runs)."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        for r in run:
            groups.setdefault(tuple(r[k] for k in key), []).append(r)
    out = []
    for recs in groups.values():
        row = dict(recs[0])
        for f, v in recs[0].items():
            if f in key or isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            vals = np.array([r[f] for r in recs], dtype=np.float64)
            row[f] = float(vals.mean())
            if f.startswith("ndcg@10"):
                row["std_" + f] = float(vals.std())
        if "choice" in row:
            row["choice"] = [r.get("choice") for r in recs]
        row["seeds"] = len(recs)
        out.append(row)
    return out


def summarize(records: list[dict]) -> dict[str, np.ndarray]:
    """{method/mode: nDCG@10 per dim} for quick comparisons in reports."""
    out: dict[str, dict[int, float]] = {}
    for r in records:
        out.setdefault(f"{r['method']}/{r['mode']}", {})[r["dim"]] = r["ndcg@10"]
    return out
