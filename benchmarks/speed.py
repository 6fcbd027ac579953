"""Speed of CompressedIndex against the same engines at full dim (not a timed test).

    OMP_WAIT_POLICY=PASSIVE nice -n 10 python benchmarks/speed.py --n 100000
    OMP_WAIT_POLICY=PASSIVE nice -n 10 python benchmarks/speed.py --n 1000000
    python benchmarks/speed.py --plot benchmarks/results/speed-100000.json     # re-plot a JSON

Data: SciFact's all-mpnet-base-v2 corpus vectors (5,183 x 768) tiled to N rows with N(0, 0.02^2) noise on
every coordinate and re-normalised; queries: the real SciFact queries (all splits). Tiled copies of one
document are near-duplicates, so recall against exact 768-d search is harsher than on real data of size N.

For each engine (FAISS Flat, HNSW32, HNSW16-SQ8, IVF-Flat, IVF-PQ; hnswlib) at 768 (the raw vectors in the engine
itself) and at each reduced dim (a CompressedIndex with that one dim), with and without the full-dim rerank
of 100 candidates: build time, bytes per vector in RAM and on disk (index alone, and with the full store),
QPS at batch 1 and batch 1000, p50/p99 latency at batch 1, recall@10 against exact full-dim search (and
against exact search at the same reduced dim), and SciFact nDCG@10 through the index on the real corpus.
Writes speed-<N>.json, speed-<N>.md and speed-<N>.png under benchmarks/results/.

OMP_WAIT_POLICY=PASSIVE: on a 2-core machine shared with other jobs, OpenMP's default spin-waiting made a
2-thread FAISS batch search 10x slower than one thread (156 vs 1,480 QPS, Flat d=64, 200k rows); passive
waiting removes that (1,771 QPS), so the numbers measure the engines rather than the scheduler.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS, commit_note, describe_machine, load_avg, machine_info, markdown_table,  # noqa: E402
                    recall, save_figure, with_provenance, write_json)

import faiss  # noqa: E402
from smec_index import SMEC, CompressedIndex  # noqa: E402
from smec_index.datasets import default_data_dir, load_beir  # noqa: E402
from smec_index.index.backends import make_backend  # noqa: E402
from smec_index._rows import inv_row_norms  # noqa: E402  (timing the internal projector)
from smec_index.metrics import evaluate, evaluate_embeddings  # noqa: E402

MODEL = "all-mpnet-base-v2"
SIGMA = 0.02
K = 10
CANDIDATES = 100
DATA_NOTE = (f"SciFact {MODEL} corpus vectors tiled to N rows with N(0, {SIGMA}^2) noise per coordinate, "
             f"re-normalised; queries: the real SciFact queries")


# --------------------------------------------------------------------- engines
def nlist_for(n: int) -> int:
    """IVF lists: the power of two nearest 4 sqrt(n), at most 2048 (k-means training time on 2 cores)."""
    return int(min(2048, 2 ** round(math.log2(4 * math.sqrt(n)))))


def engines(n: int, hnsw_ef: list[int] | None = None) -> dict[str, dict[str, Any]]:
    """Engine name -> backend, options, the search-time settings swept for the QPS/recall curve, and the
    default setting (the one the targets are read at). ``hnsw_ef`` replaces the HNSW ef sweeps."""
    nl = nlist_for(n)
    ef = hnsw_ef or [32, 64, 128]
    return {
        "Flat": {"backend": "faiss", "options": {"spec": "Flat"}, "sweep": [{}], "default": {}},
        "HNSW32": {"backend": "faiss", "options": {"spec": "HNSW32", "params": {"efConstruction": 200, "efSearch": 64}},
                   "sweep": [{"efSearch": e} for e in ef], "default": {"efSearch": 64}},
        # a graph index inside the 1/10-of-raw byte budget at 64 dims: 16 links a node (2 x 16 x 4 B at level 0)
        # and 8-bit codes (64 B); HNSW32 with float vectors needs 256 B of links plus 256 B of vectors
        "HNSW16-SQ8": {"backend": "faiss",
                       "options": {"spec": "HNSW16,SQ8", "params": {"efConstruction": 200, "efSearch": 64}},
                       "sweep": [{"efSearch": e} for e in ef], "default": {"efSearch": 64}},
        "IVF-Flat": {"backend": "faiss", "options": {"spec": f"IVF{nl},Flat", "params": {"nprobe": 16}},
                     "sweep": [{"nprobe": 4}, {"nprobe": 16}, {"nprobe": 64}], "default": {"nprobe": 16}},
        "IVF-PQ": {"backend": "faiss", "options": {"spec": f"IVF{nl},PQ32np", "params": {"nprobe": 16}},
                   "sweep": [{"nprobe": 4}, {"nprobe": 16}, {"nprobe": 64}], "default": {"nprobe": 16}},
        "hnswlib": {"backend": "hnswlib", "options": {"M": 32, "ef_construction": 200, "ef": 64},
                    "sweep": [{"ef": e} for e in ef], "default": {"ef": 64}},
    }


def set_search(backend: Any, setting: dict[str, Any]) -> None:
    """Apply one swept search-time setting to a backend."""
    if not setting:
        return
    if backend.name == "hnswlib":
        backend.set_ef(setting["ef"])
    else:
        backend.set_params(**setting)


# --------------------------------------------------------------------- data
def tiled(corpus: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Rows of ``corpus`` repeated to n rows, each plus N(0, SIGMA^2) noise, re-normalised."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, corpus.shape[1]), dtype=np.float32)
    rows = np.arange(n) % corpus.shape[0]
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        x = corpus[rows[s:e]] + SIGMA * rng.standard_normal((e - s, corpus.shape[1]), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[s:e] = x
    return out


def normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def exact_top(Q: np.ndarray, X: np.ndarray, k: int) -> np.ndarray:
    """Exact inner-product top-k ids with FAISS's IndexFlatIP (batched; BLAS path)."""
    ref = faiss.IndexFlatIP(X.shape[1])
    ref.add(X)
    _, I = ref.search(Q, k)
    return I


# --------------------------------------------------------------------- timing
def time_batch1(search: Callable[[np.ndarray], Any], Q: np.ndarray, warmup: int = 10) -> dict[str, float]:
    """One query at a time: QPS, p50 and p99 latency (ms), by the wall clock and by the calling thread's
    CPU time (single queries run on the calling thread; CPU time is what a dedicated core would take)."""
    for q in Q[:warmup]:
        search(q[None])
    wall = np.empty(Q.shape[0])
    cpu = np.empty(Q.shape[0])
    t0 = time.perf_counter()
    for i in range(Q.shape[0]):
        t, c = time.perf_counter(), time.thread_time()
        search(Q[i : i + 1])
        cpu[i] = time.thread_time() - c
        wall[i] = time.perf_counter() - t
    total = time.perf_counter() - t0
    return {"qps_b1": Q.shape[0] / total, "p50_ms": float(np.percentile(wall, 50) * 1e3),
            "p99_ms": float(np.percentile(wall, 99) * 1e3), "qps_b1_cpu": Q.shape[0] / float(cpu.sum()),
            "cpu_p50_ms": float(np.percentile(cpu, 50) * 1e3), "cpu_p99_ms": float(np.percentile(cpu, 99) * 1e3)}


def time_batch(search: Callable[[np.ndarray], Any], Q: np.ndarray, runs: int) -> tuple[dict[str, float], Any]:
    """A batch of len(Q) queries: warm-up, then ``runs`` timed runs (one when a run exceeds 20 s). Wall-clock
    QPS, and queries per CPU-second of the whole process (all its threads): the per-core throughput."""
    out = search(Q)
    wall, cpu = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        out = search(Q)
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - t)
        if wall[-1] > 20:
            break
    qps = Q.shape[0] / np.array(wall)
    return {"qps_b1000": float(qps.mean()), "qps_b1000_std": float(qps.std()), "b1000_runs": len(wall),
            "qps_b1000_per_cpu_s": float(Q.shape[0] / np.mean(cpu))}, out


def median_us(fn: Callable[[], Any], reps: int = 2000) -> tuple[float, float]:
    """Median wall-clock and thread-CPU microseconds of a short call."""
    for _ in range(50):
        fn()
    wall, cpu = np.empty(reps), np.empty(reps)
    for i in range(reps):
        s, c = time.perf_counter(), time.thread_time()
        fn()
        cpu[i] = time.thread_time() - c
        wall[i] = time.perf_counter() - s
    return float(np.median(wall) * 1e6), float(np.median(cpu) * 1e6)


def disk_bytes(path: Path, exclude: str | None = None) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and (exclude is None or p.name != exclude))


# --------------------------------------------------------------------- one engine at one dim
class Built:
    """A built engine at one dim: a raw backend at full dim, or a CompressedIndex at a reduced dim."""

    def __init__(self, name: str, spec: dict[str, Any], dim: int, D: int, smec: SMEC) -> None:
        self.name, self.spec, self.dim, self.D, self.smec = name, spec, dim, D, smec
        self.raw = dim == D
        self.obj: Any = None

    def build(self, X: np.ndarray, train_rows: np.ndarray) -> float:
        t = time.perf_counter()
        if self.raw:
            self.obj = make_backend(self.spec["backend"], self.D, "ip", self.spec["options"])
            self.obj.train(X[train_rows])
            self.obj.add(np.arange(X.shape[0], dtype=np.int64), X)
        else:
            self.obj = CompressedIndex(self.smec, dims=(self.dim,), backend=self.spec["backend"], candidates=CANDIDATES,
                                       full_store="memory", **self.spec["options"])
            self.obj.train(X[train_rows])
            self.obj.add(X)
        return time.perf_counter() - t

    @property
    def backend(self) -> Any:
        return self.obj if self.raw else self.obj.backends[self.dim]

    def sizes(self, n: int) -> dict[str, float]:
        """Bytes per vector in RAM and on disk: the index alone (backend + ids) and with the full store."""
        with tempfile.TemporaryDirectory(dir=RESULTS) as tmp:
            path = Path(tmp) / "ix"
            if self.raw:
                path.mkdir()
                self.obj.save(path)
                disk = disk_bytes(path)
                ram = self.obj.nbytes
                return {"ram_index": ram / n, "ram_full": ram / n, "disk_index": disk / n, "disk_full": disk / n}
            self.obj.save(path)
            parts = self.obj.memory_usage()
            return {"ram_index": (parts["backends"] + parts["ids"]) / n, "ram_full": parts["ram_bytes"] / n,
                    "disk_index": disk_bytes(path, exclude="store-full.npy") / n, "disk_full": disk_bytes(path) / n}

    def searcher(self, rerank: str) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        if self.raw:
            return lambda q: self.obj.search(q, K)
        return lambda q: self.obj.search(q, K, rerank=rerank)


def run_n(n: int, ds, smec: SMEC, configs: list[tuple[str, int]], b1: int, runs: int,
          hnsw_ef: list[int] | None = None) -> dict:
    D = ds.dim
    Qb = ds.queries[:1000]
    Q1 = ds.queries[:b1]
    print(f"\n## N = {n:,}: tiling ...", flush=True)
    X = tiled(ds.corpus, n)
    rng = np.random.default_rng(1)
    nl = nlist_for(n)
    train_rows = np.sort(rng.choice(n, min(n, 40 * nl), replace=False))
    t = time.perf_counter()
    truth = exact_top(Qb, X, K)
    print(f"exact full-dim ground truth: {time.perf_counter() - t:.1f} s", flush=True)
    truth_at: dict[int, np.ndarray] = {}
    for d in sorted({d for _, d in configs if d != D}):
        P = smec.projection(d)
        truth_at[d] = exact_top(P(normalise(Qb)), P(normalise(X)), K)
    records, costs = [], {}
    specs = engines(n, hnsw_ef)
    for name, d in configs:
        built = Built(name, specs[name], d, D, smec)
        la = load_avg()
        build_s = built.build(X, train_rows)
        sizes = built.sizes(n)
        print(f"{name} @ {d}: built in {build_s:.1f} s (load {la} -> {load_avg()}), "
              f"{sizes['ram_index']:.0f} B/vec index, {sizes['ram_full']:.0f} B/vec with full store", flush=True)
        if not built.raw and d not in costs:
            costs[d] = stage_costs(built.obj, d, X, Q1)
        for rerank in (["none"] if built.raw else ["none", "full"]):
            for setting in specs[name]["sweep"]:
                set_search(built.backend, setting)
                b1s = time_batch1(built.searcher(rerank), Q1)
                bb, (_, I) = time_batch(built.searcher(rerank), Qb, runs)
                rec = {"n": n, "engine": name, "dim": d, "rerank": rerank, "setting": setting, "build_s": build_s,
                       **sizes, **b1s, **bb, "recall@10": recall(I, truth),
                       "recall@10_same_dim": recall(I, truth_at[d]) if d in truth_at and rerank == "none" else None,
                       "load_avg": load_avg()}
                if not built.raw:
                    rec["projector_share_cpu"] = costs[d]["projector_cpu_us"] / 1e3 / b1s["cpu_p50_ms"]
                records.append(rec)
                same = rec["recall@10_same_dim"]
                print(f"  {rerank:4s} {setting}: b1 {b1s['qps_b1']:.0f} QPS wall / {b1s['qps_b1_cpu']:.0f} per CPU-s "
                      f"(p50 {b1s['p50_ms']:.3f} ms wall, {b1s['cpu_p50_ms']:.3f} CPU), b1000 {bb['qps_b1000']:.0f} QPS "
                      f"wall / {bb['qps_b1000_per_cpu_s']:.0f} per CPU-s, R@10 {rec['recall@10']:.3f}"
                      + (f", vs exact@{d} {same:.3f}" if same is not None else ""), flush=True)
        del built
        gc.collect()
    del X
    gc.collect()
    return {"n": n, "nlist": nl, "records": records, "costs": costs}


def stage_costs(index: CompressedIndex, d: int, X: np.ndarray, Q: np.ndarray) -> dict[str, float]:
    """Per query: the projector as the search path runs it (normalise folded into the affine map, then
    normalise; internal), ``index.project`` (the same plus the input check every search does anyway), and
    the exact rerank of 100 candidates against the full store."""
    q = Q[:1]
    rng = np.random.default_rng(2)
    slots = rng.choice(X.shape[0], (1, CANDIDATES), replace=False).astype(np.int64)
    proj_wall, proj_cpu = median_us(lambda: index._project(d, q, inv_row_norms(q)))
    checked_wall, checked_cpu = median_us(lambda: index.project(q, d))
    rr_wall, rr_cpu = median_us(lambda: index.rescore(q, slots, "full", K))
    return {"projector_us": proj_wall, "projector_cpu_us": proj_cpu, "project_call_us": checked_wall,
            "project_call_cpu_us": checked_cpu, "rerank100_us": rr_wall, "rerank100_cpu_us": rr_cpu}


# --------------------------------------------------------------------- SciFact nDCG through the index
def scifact_ndcg(ds, smec: SMEC, configs: list[tuple[str, int]]) -> list[dict]:
    """nDCG@10 on the real SciFact test queries through each engine x dim x rerank, next to exact search."""
    Q, qids, qrels = ds.split_queries("test")
    specs = engines(ds.corpus.shape[0])
    exact = {ds.dim: evaluate_embeddings(Q, ds.corpus, qids, ds.doc_ids, qrels)["ndcg@10"]}
    for d in sorted({d for _, d in configs if d != ds.dim}):
        exact[d] = evaluate_embeddings(smec.transform(Q, d), smec.transform(ds.corpus, d), qids, ds.doc_ids, qrels)["ndcg@10"]
    rows = []
    for name, d in configs:
        built = Built(name, specs[name], d, ds.dim, smec)
        built.build(ds.corpus, np.arange(ds.corpus.shape[0]))
        for rerank in (["none"] if built.raw else ["none", "full"]):
            _, I = built.searcher(rerank)(Q)
            run = {q: [ds.doc_ids[j] for j in row if j >= 0] for q, row in zip(qids, I)}
            rows.append({"engine": name, "dim": d, "rerank": rerank, "ndcg@10": evaluate(run, qrels)["ndcg@10"],
                         "exact_ndcg@10_at_dim": exact[d], "exact_ndcg@10_full": exact[ds.dim]})
    return rows


# --------------------------------------------------------------------- reporting
def _fmt(x: Any, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def table(res: dict, ndcg: list[dict]) -> str:
    by_key = {(r["engine"], r["dim"], r["rerank"]): r["ndcg@10"] for r in ndcg}
    rows = []
    for r in res["records"]:
        setting = ",".join(f"{k}={v}" for k, v in r["setting"].items()) or "-"
        rows.append([r["engine"], r["dim"], r["rerank"], setting, _fmt(r["build_s"]),
                     f"{r['ram_index']:.0f} / {r['ram_full']:.0f}", f"{r['disk_index']:.0f} / {r['disk_full']:.0f}",
                     f"{r['qps_b1']:,.0f} / {r['qps_b1_cpu']:,.0f}", f"{r['p50_ms']:.3f} / {r['cpu_p50_ms']:.3f}",
                     f"{r['p99_ms']:.3f} / {r['cpu_p99_ms']:.3f}", f"{r['qps_b1000']:,.0f} / {r['qps_b1000_per_cpu_s']:,.0f}",
                     _fmt(r["recall@10"], 3), _fmt(r["recall@10_same_dim"], 3),
                     _fmt(by_key.get((r["engine"], r["dim"], r["rerank"])), 4)])
    headers = ["engine", "dim", "rerank", "search setting", "build s", "RAM B/vec (index / +full)",
               "disk B/vec (index / +full)", "QPS b1 (wall / per CPU-s)", "p50 ms (wall / CPU)", "p99 ms (wall / CPU)",
               "QPS b1000 (wall / per CPU-s)", "R@10 vs exact 768", "R@10 vs exact@dim", "SciFact nDCG@10"]
    return markdown_table(headers, rows)


def targets(res: dict, ndcg: list[dict], D: int) -> list[dict]:
    """The issue's targets, each with the measured numbers and whether it is met."""
    recs = res["records"]
    defaults = engines(res["n"])

    def pick(engine, dim, rerank):
        """The record at the engine's default search setting."""
        setting = defaults[engine]["default"]
        c = [r for r in recs if (r["engine"], r["dim"], r["rerank"], r["setting"]) == (engine, dim, rerank, setting)]
        return c[0] if c else None

    out = []
    f64, f768, f64r = pick("Flat", 64, "none"), pick("Flat", D, "none"), pick("Flat", 64, "full")
    if f64 and f768:
        wall = f64["qps_b1000"] / f768["qps_b1000"]
        cpu = f64["qps_b1000_per_cpu_s"] / f768["qps_b1000_per_cpu_s"]
        rr = f" With the full rerank: {f64r['qps_b1000'] / f768['qps_b1000']:.1f}x wall." if f64r else ""
        out.append({"target": "Flat@64 QPS >= 10x Flat@768 (batch 1000)", "met": wall >= 10,
                    "value": f"{wall:.1f}x wall ({f64['qps_b1000']:,.0f} vs {f768['qps_b1000']:,.0f} QPS), "
                             f"{cpu:.1f}x per CPU-second.{rr}"})
    for engine in dict.fromkeys(r["engine"] for r in recs):
        r = pick(engine, 64, "none")
        if r:
            out.append({"target": f"bytes/vec at 64 without full store <= 1/10 of raw ({D * 4 / 10:.0f}): {engine}",
                        "met": max(r["ram_index"], r["disk_index"]) <= D * 4 / 10,
                        "value": f"RAM {r['ram_index']:.0f}, disk {r['disk_index']:.0f} B/vec"})
    shares = [r for r in recs if r.get("projector_share_cpu") is not None and r["rerank"] == "none"]
    for engine in dict.fromkeys(r["engine"] for r in shares):
        worst = max((r for r in shares if r["engine"] == engine), key=lambda r: r["projector_share_cpu"])
        c = res["costs"][worst["dim"]]
        out.append({"target": f"projector cost <= 10% of a batch-1 query: {engine} (worst dim and setting, CPU time)",
                    "met": worst["projector_share_cpu"] <= 0.10,
                    "value": f"{worst['projector_share_cpu']:.1%} at {worst['dim']} {worst['setting'] or ''} "
                             f"({c['projector_cpu_us']:.1f} us of {worst['cpu_p50_ms'] * 1e3:.0f} us)"})
    for d, c in sorted(res["costs"].items()):
        out.append({"target": f"rerank of 100 candidates <= 1 ms per query (full store, after search at {d})",
                    "met": c["rerank100_us"] <= 1000,
                    "value": f"{c['rerank100_us']:.0f} us wall, {c['rerank100_cpu_us']:.0f} us CPU"})
    h = pick("HNSW32", 64, "none")
    if h:
        best = max((r for r in recs if (r["engine"], r["dim"], r["rerank"]) == ("HNSW32", 64, "none")),
                   key=lambda r: r["recall@10_same_dim"])
        out.append({"target": "HNSW32@64 recall@10 vs exact@64 >= 0.95", "met": h["recall@10_same_dim"] >= 0.95,
                    "value": f"{h['recall@10_same_dim']:.3f} at {h['setting']}; {best['recall@10_same_dim']:.3f} at "
                             f"{best['setting']}"})
    for r in ndcg:
        if r["engine"] == "Flat" and r["rerank"] == "none":
            diff = abs(r["ndcg@10"] - r["exact_ndcg@10_at_dim"])
            out.append({"target": f"SciFact nDCG@10 through Flat@{r['dim']} = exact within 0.002", "met": diff <= 0.002,
                        "value": f"{r['ndcg@10']:.4f} vs {r['exact_ndcg@10_at_dim']:.4f}"})
    return out


def plot(payload: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = payload["result"]["records"]
    colors = dict(zip(dict.fromkeys(r["engine"] for r in recs), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    markers = dict(zip(sorted({r["dim"] for r in recs}, reverse=True), "sDo^v"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharex=True)
    for ax, key, title in ((axes[0], "qps_b1", "one query at a time"), (axes[1], "qps_b1000", "batches of 1000")):
        for (engine, dim, rerank) in dict.fromkeys((r["engine"], r["dim"], r["rerank"]) for r in recs):
            pts = sorted((r["recall@10"], r[key]) for r in recs if (r["engine"], r["dim"], r["rerank"]) == (engine, dim, rerank))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[dim], color=colors[engine],
                    ls="-" if rerank == "full" else ":", mfc=colors[engine] if rerank == "full" else "none", ms=6,
                    label=f"{engine} @{dim}{' +rerank' if rerank == 'full' else ''}")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10 vs exact 768-d search")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("queries per second")
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(f"N = {payload['result']['n']:,}: {DATA_NOTE}", fontsize=8)
    save_figure(fig, path)


def report(payload: dict) -> str:
    res, ndcg, D = payload["result"], payload["scifact_ndcg"], payload["D"]
    costs = [[d, f"{c['projector_us']:.1f} / {c['projector_cpu_us']:.1f}",
              f"{c['project_call_us']:.1f} / {c['project_call_cpu_us']:.1f}",
              f"{c['rerank100_us']:.1f} / {c['rerank100_cpu_us']:.1f}"] for d, c in sorted(res["costs"].items())]
    lines = [
        f"# speed, N = {res['n']:,} x {D}", "",
        f"Machine: {describe_machine(payload['machine'])}; {commit_note(payload)}. Load average {payload['load_start']} at start, "
        f"{payload['load_end']} at end: other jobs shared the 2 cores, so wall-clock numbers carry their waiting; "
        f"the CPU-time columns (thread CPU time for single queries, queries per CPU-second of the process for "
        f"batches) show what the code itself costs.", "",
        f"Data: {DATA_NOTE}.", "",
        f"Compressor: {payload['method']} fitted on the SciFact corpus. k={K}; rerank = exact full-dim rescoring of "
        f"{CANDIDATES} candidates from the in-RAM float32 full store. 768 = the raw vectors in the same engine. IVF "
        f"nlist={res['nlist']}. Batch-1 timings over {payload['b1_queries']} queries, batch timings on 1000 queries. "
        f"FAISS OpenMP threads {payload['omp_threads']} for batches (1 for single queries), "
        f"OMP_WAIT_POLICY={payload['omp_wait_policy']}. Configurations: {payload['configs']}.", "",
        table(res, ndcg), "",
        "## Per-query stage costs (median, wall / thread CPU)", "",
        markdown_table(["dim", "projector us (normalise, affine map, normalise)",
                        "index.project() us (+ input check)", "rerank of 100 candidates us (float32, RAM)"], costs), "",
        "## Targets", "",
        markdown_table(["target", "met", "measured"],
                       [[t["target"], "yes" if t["met"] else "NO", t["value"]] for t in payload["targets"]]),
    ]
    return "\n".join(lines) + "\n"


def parse_configs(engines_arg: str, dims_arg: str, configs_arg: str | None) -> list[tuple[str, int]]:
    """(engine, dim) pairs: the grid of --engines x --dims, or the explicit --configs list."""
    if configs_arg:
        pairs = []
        for item in configs_arg.split(","):
            engine, dim = item.strip().rsplit("@", 1)
            pairs.append((engine, int(dim)))
        return pairs
    return [(e.strip(), int(d)) for e in engines_arg.split(",") if e.strip() for d in dims_arg.split(",")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="database size (tiled rows)")
    p.add_argument("--engines", default="Flat,HNSW32,IVF-Flat,IVF-PQ,hnswlib")
    p.add_argument("--dims", default="768,256,128,64", help="768 = the raw vectors in the engine itself")
    p.add_argument("--configs", default=None, help="explicit engine@dim list instead of the grid, e.g. Flat@768,HNSW32@64")
    p.add_argument("--method", default="pca", help="compressor method, fitted on the SciFact corpus")
    p.add_argument("--b1-queries", type=int, default=200, help="queries timed one at a time")
    p.add_argument("--runs", type=int, default=3, help="timed runs of the batch of 1000")
    p.add_argument("--skip-scifact", action="store_true", help="skip the nDCG@10 pass on the real corpus")
    p.add_argument("--hnsw-ef", default=None, help="ef values swept for the HNSW engines (default 32,64,128)")
    p.add_argument("--tag", default=None, help="suffix of the output files (speed-<N>-<tag>.*)")
    p.add_argument("--plot", default=None, help="only re-plot this JSON")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory of the output files (default benchmarks/results)")
    a = p.parse_args(argv)
    if a.plot:
        path = Path(a.plot)
        plot(json.loads(path.read_text()), path.with_suffix(".png"))
        return 0
    configs = parse_configs(a.engines, a.dims, a.configs)
    unknown = sorted({e for e, _ in configs} - set(engines(a.n)))
    if unknown:
        p.error(f"unknown engine(s) {unknown}; known: {sorted(engines(a.n))}")
    from smec_index.report import provenance

    info, load_start, prov = machine_info(), load_avg(), provenance()  # the code as it was at the start
    print(f"# speed: N={a.n:,}, configs {configs}\n# machine: {describe_machine(info)}\n# data: {DATA_NOTE}")
    ds = load_beir(default_data_dir(), MODEL)
    reduced = tuple(sorted({d for _, d in configs if d != ds.dim}, reverse=True))
    smec = SMEC(dims=reduced, method=a.method, progress=False, seed=0).fit(ds.corpus)
    t0 = time.perf_counter()
    ndcg = [] if a.skip_scifact else scifact_ndcg(ds, smec, configs)
    hnsw_ef = [int(x) for x in a.hnsw_ef.split(",")] if a.hnsw_ef else None
    res = run_n(a.n, ds, smec, configs, a.b1_queries, a.runs, hnsw_ef)
    payload = {"machine": info, "data": DATA_NOTE, "D": ds.dim, "method": a.method, "k": K, "candidates": CANDIDATES,
               "configs": [f"{e}@{d}" for e, d in configs], "hnsw_ef": hnsw_ef, "b1_queries": a.b1_queries, "load_start": load_start,
               "load_end": load_avg(), "omp_threads": faiss.omp_get_max_threads(),
               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "result": res, "scifact_ndcg": ndcg,
               "wall_s": round(time.perf_counter() - t0, 1)}
    payload["targets"] = targets(res, ndcg, ds.dim)
    payload = with_provenance(payload, "speed.py", argv, info, load_start, prov)
    stem = a.out / (f"speed-{a.n}" + (f"-{a.tag}" if a.tag else ""))
    write_json(stem.with_suffix(".json"), payload)
    md = report(payload)
    stem.with_suffix(".md").write_text(md)
    plot(payload, stem.with_suffix(".png"))
    print("\n" + md)
    print(f"wrote {stem}.json, .md, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
