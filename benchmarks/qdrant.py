"""SMEC on Qdrant Edge against Qdrant's own answers (not a timed test).

    OMP_NUM_THREADS=1 python benchmarks/qdrant.py --runs 3      # SciFact (both models), Debian, 100k tiled; smec
    nice -n 10 python benchmarks/qdrant.py --data scifact-minilm --method pca --runs 1     # a quick look

Every configuration is a ``QdrantCompressedCollection`` on Qdrant Edge (the engine in-process, a shard on
local disk), searched through the public ``search`` (projection and request building included). Two groups:

- ``classic``: full vector only (HNSW on the full vector); Qdrant's binary quantization of the full vector,
  8-bit query encoding, re-scored by Qdrant with oversampling 2 (also with float16 storage of the originals);
  smec_64 -> full; smec_64 -> smec_256 -> full; each with and without int8 codes on smec_64; smec_256 with
  binary codes -> full; smec_64 int8 -> full with float16 storage, re-scoring 100, 50, 30 or 20 candidates
  (the peer re-scores 20); and smec_256 binary -> full with float16 storage, re-scoring 30.
- ``frontier`` (real sets only): per byte against every quantization a Qdrant user would pick for the full
  vector (binary at 1, 1.5 and 2 bits; TurboQuant at 1, 1.5, 2 and 4 bits, Qdrant 1.18's recommendation;
  scalar int8; product quantization x32), each re-scored with the originals over 20, 50 or 100 points,
  against one SMEC stage coded by the same quantizers and re-scored at full dim over as many points. For each
  peer the report names the best SMEC stage within its bytes and within half of them (``frontier``).

Data: SciFact (5,183 docs, 300 test queries) with all-mpnet-base-v2 (768-d) and all-MiniLM-L6-v2 (384-d);
Debian (63,904 docs, 3,000 test queries, all-MiniLM-L6-v2); and SciFact's mpnet vectors tiled to N (default
100,000) rows with N(0, 0.02^2) noise on every coordinate, re-normalised (near-duplicates: recall against exact
search is harsher than on real data of that size), queried by the real test queries. The compressor is
``SMEC(dims=DIMS, method, seed=0)`` fitted on the corpus without queries (the tiled set uses the one fitted on
the mpnet corpus).

Measured: nDCG@10 (SciFact qrels; not defined on the tiled set) and recall@10 against exact full-dim search
(numpy), QPS at batch 1 (one ``search`` call per query) and for the whole query set in one ``search`` call
(projection batched, then one Edge ``query`` per row), p50/p99 latency at batch 1, the process CPU time per
query (less sensitive than wall time to the other jobs on a shared machine), upsert throughput (writes, then
the blocking ``optimize`` that builds HNSW and codes), bytes on disk per point (allocated blocks: the whole
shard, and its segments without the write-ahead log), and the bytes per point of the first-stage vector
codes (what a search scans; every configuration also keeps its full float vectors on disk for the re-score).
Writes ``qdrant.json`` and ``qdrant.md`` under ``benchmarks/results/``.

Run it with ``OMP_NUM_THREADS=1``: with the default thread pool, every configuration (the peer's too) took
1.25-1.5x the CPU time a query on this 2-core machine (peer on SciFact mpnet: 0.73 against 0.58 ms).
Every collection is opened with Edge's ``max_search_threads=1`` (``--search-threads``): each query is then
answered on the calling thread. With Edge's default pool (from the CPU count) a single query paid a hand-off
to the pool: SciFact MiniLM, the engine call alone, peer 0.18 against 0.11 ms wall, smec_64 int8 -> full
(30 candidates) 0.21 against 0.08 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS, commit_note, describe_machine, load_avg, machine_info, markdown_table,  # noqa: E402
                    recall, with_provenance, write_json)

from smec_index import SMEC  # noqa: E402
from smec_index.datasets import default_data_dir, load_beir  # noqa: E402
from smec_index.index.backends._qdrant import allocated_bytes  # noqa: E402
from smec_index.index.backends.codes import code_bytes as code_bytes_of  # noqa: E402
from smec_index.metrics import exact_search, ndcg_at_k  # noqa: E402
from smec_index.qdrant import QdrantCompressedCollection  # noqa: E402

K = 10
SIGMA = 0.02
PEER = "peer-bq"
# --data name -> (data directory next to scifact's, model)
MODELS = {"scifact-mpnet": ("scifact", "all-mpnet-base-v2"), "scifact-minilm": ("scifact", "all-MiniLM-L6-v2"),
          "debian-minilm": ("debian", "all-MiniLM-L6-v2")}
TILED = "tiled"
DIMS = (256, 128, 64)

# key -> label, collection layout, search arguments. Candidates (what the first stage passes on): 100 into the
# full re-score for the two-stage chains; 200 from smec_64 of which smec_256 keeps 50 for the three-stage ones.
# (SciFact MiniLM, smec int8: 50 -> R@10 0.933, 100 -> 0.971, 200 -> 0.988, at 0.25 / 0.27 / 0.39 CPU ms a query.)
CONFIGS: dict[str, dict[str, Any]] = {
    "full-hnsw": {"label": "full (HNSW)", "layout": {"dims": ()}, "search": {}},
    PEER: {"label": "full, binary + rescore (peer)", "layout": {"dims": (), "quantization": "binary"},
           "search": {"oversampling": 2.0}},
    "peer-bq-f16": {"label": "full f16, binary + rescore (peer)",
                    "layout": {"dims": (), "quantization": "binary", "datatype": "float16"},
                    "search": {"oversampling": 2.0}},
    "smec64-full": {"label": "smec_64 -> full", "layout": {"dims": (64,)}, "search": {"candidates": 100}},
    "smec64i8-full": {"label": "smec_64 int8 -> full", "layout": {"dims": (64,), "quantization": "int8"},
                      "search": {"candidates": 100}},
    "smec64-256-full": {"label": "smec_64 -> smec_256 -> full", "layout": {"dims": (64, 256)},
                        "search": {"candidates": (200, 50)}},
    "smec64i8-256-full": {"label": "smec_64 int8 -> smec_256 -> full",
                          "layout": {"dims": (64, 256), "quantization": "int8"}, "search": {"candidates": (200, 50)}},
    "smec256b-full": {"label": "smec_256 binary -> full", "layout": {"dims": (256,), "quantization": "binary"},
                      "search": {"candidates": 100}},
    "smec64i8-full-f16": {"label": "smec_64 int8 -> full, float16 storage",
                          "layout": {"dims": (64,), "quantization": "int8", "datatype": "float16"},
                          "search": {"candidates": 100}},
    # the peer re-scores 20 points (oversampling 2 x k); these spend a like budget on the full-vector re-score
    # (100k tiled, one timing round: 40 candidates R@10 0.830 against the peer's 0.833)
    **{f"smec64i8-full-f16-c{c}": {"label": f"smec_64 int8 -> full f16, {c} candidates",
                                   "layout": {"dims": (64,), "quantization": "int8", "datatype": "float16"},
                                   "search": {"candidates": c}}
       for c in (20, 30, 50)},
    # 32-byte codes (the peer's are 48 on MiniLM, 96 on mpnet); SciFact MiniLM, 30 candidates: nDCG@10 0.6463
    # against the peer's 0.6454, R@10 0.890 against 0.864
    "smec256b-full-f16-c30": {"label": "smec_256 binary -> full f16, 30 candidates",
                              "layout": {"dims": (256,), "quantization": "binary", "datatype": "float16"},
                              "search": {"candidates": 30}},
}
CLASSIC = tuple(CONFIGS)

# The bytes frontier: Qdrant's own quantizations of the full vector (what a Qdrant user picks instead), each
# re-scored with the originals over 20, 50 or 100 points (oversampling 2, 5, 10), against a SMEC stage coded by
# the same quantizers and re-scored at full dim over as many points. One stage, then full: the cascade's extra
# named vectors would add bytes on disk that a like-for-like comparison does not need.
RESCORED = (20, 50, 100)
PEER_QUANTIZATIONS = ("binary", "binary1.5", "binary2", "turbo1", "turbo1.5", "turbo2", "turbo4", "int8", "pq-x32",
                      "pq-x16")
SMEC_CODES = ((256, "binary"), (128, "binary2"), (256, "binary2"), (128, "turbo1"), (64, "turbo2"), (64, "turbo4"),
              (256, "turbo1"), (128, "turbo2"), (128, "turbo4"), (256, "turbo2"), (256, "turbo4"), (64, "int8"),
              (128, "int8"), (128, "pq-x32"), (128, "pq-x16"), (256, "pq-x32"))


def stage_config(d: int | str, q: str, c: int) -> tuple[str, dict[str, Any]]:
    """One SMEC stage at dim ``d`` (or "half": D // 2, set per data set by ``resolve``) coded by Qdrant's ``q``,
    re-scored at full dim over ``c`` points: its configuration name and entry."""
    return f"smec{d}-{q}-r{c}", {"label": f"smec_{d} {q} -> full, re-scored {c}", "rescored": c,
                                 "layout": {"dims": (d,), "quantization": q}, "search": {"candidates": c}}


def frontier_configs() -> dict[str, dict[str, Any]]:
    """The frontier group: each peer and each SMEC stage code at each re-score count, by configuration name."""
    out: dict[str, dict[str, Any]] = {}
    for c in RESCORED:
        for q in PEER_QUANTIZATIONS:
            out[f"peer-{q}-r{c}"] = {"label": f"full {q}, re-scored {c} (peer)", "rescored": c,
                                     "layout": {"dims": (), "quantization": q}, "search": {"oversampling": c / K}}
        out.update(stage_config(d, q, c) for d, q in SMEC_CODES)
    return out


CONFIGS.update(frontier_configs())
FRONTIER = tuple(c for c in CONFIGS if c not in CLASSIC)
# a stage at half the input dim (the fit needs --dims with "half"): at 2 bits a dim its codes take the bytes of
# 1 bit a dim of the full vector
HALF_CODES = ("turbo2", "binary2")
CONFIGS.update(stage_config("half", q, c) for c in RESCORED for q in HALF_CODES)
HALF = tuple(c for c in CONFIGS if c not in CLASSIC and c not in FRONTIER)


def resolve(cfg: dict[str, Any], D: int) -> dict[str, Any]:
    """``cfg`` with a "half" stage dim as D // 2 (label included)."""
    if "half" not in cfg["layout"]["dims"]:
        return cfg
    dims = tuple(D // 2 if d == "half" else d for d in cfg["layout"]["dims"])
    return {**cfg, "label": cfg["label"].replace("smec_half", f"smec_{D // 2}"),
            "layout": {**cfg["layout"], "dims": dims}}


# --------------------------------------------------------------------- data
def tiled(corpus: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Rows of ``corpus`` repeated to n rows, each plus N(0, SIGMA^2) noise, re-normalised."""
    rng = np.random.default_rng(seed)
    rows = np.arange(n) % corpus.shape[0]
    out = corpus[rows] + SIGMA * rng.standard_normal((n, corpus.shape[1]), dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def ndcg_per_query(I: np.ndarray, doc_ids: list[str], qids: list[str], qrels: dict) -> np.ndarray:
    return np.array([ndcg_at_k([doc_ids[j] for j in row if j >= 0], qrels[q], K) for q, row in zip(qids, I)])


def ndcg(I: np.ndarray, doc_ids: list[str], qids: list[str], qrels: dict) -> float:
    return float(ndcg_per_query(I, doc_ids, qids, qrels).mean())


def paired_interval(a: np.ndarray, b: np.ndarray, rounds: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% paired-bootstrap interval of mean(a - b) over queries: whether a quality difference between two
    configurations is larger than what resampling the same queries gives."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(rounds, len(diff)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


# --------------------------------------------------------------------- timing
def _pass_b1(search: Callable[[np.ndarray], Any], Q: np.ndarray) -> tuple[np.ndarray, float]:
    """One query per call over Q: the latencies (s) and the process CPU seconds."""
    lat = np.empty(Q.shape[0])
    cpu = time.process_time()
    for i in range(Q.shape[0]):
        t = time.perf_counter()
        search(Q[i : i + 1])
        lat[i] = time.perf_counter() - t
    return lat, time.process_time() - cpu


def _pass_batch(search: Callable[[np.ndarray], Any], Q: np.ndarray) -> tuple[float, float]:
    """All of Q in one call: wall and process CPU seconds."""
    cpu, t = time.process_time(), time.perf_counter()
    search(Q)
    return time.perf_counter() - t, time.process_time() - cpu


def time_interleaved(searches: dict[str, Callable[[np.ndarray], Any]], Q: np.ndarray, runs: int) -> dict[str, dict]:
    """Time every configuration in ``runs`` rounds, each round passing over all of them in turn (batch 1, then
    one batch), so that every configuration meets the same mix of other jobs on a shared machine. Per
    configuration: median-round QPS with the spread over rounds, p50/p99 over all batch-1 latencies, and
    median-round CPU ms a query."""
    for search in searches.values():  # warm-up
        for q in Q[:20]:
            search(q[None])
        search(Q)
    lat = {name: [] for name in searches}
    b1_cpu = {name: [] for name in searches}
    batch = {name: [] for name in searches}
    batch_cpu = {name: [] for name in searches}
    for _ in range(runs):
        for name, search in searches.items():
            times, cpu = _pass_b1(search, Q)
            lat[name].append(times)
            b1_cpu[name].append(cpu)
            wall, cpu = _pass_batch(search, Q)
            batch[name].append(wall)
            batch_cpu[name].append(cpu)
    out = {}
    nq = Q.shape[0]
    for name in searches:
        L = np.array(lat[name])
        qps_b1 = nq / L.sum(axis=1)
        qps_batch = nq / np.array(batch[name])
        out[name] = {"qps_b1": float(np.median(qps_b1)), "qps_b1_min": float(qps_b1.min()),
                     "qps_b1_max": float(qps_b1.max()), "p50_ms": float(np.percentile(L, 50) * 1e3),
                     "p99_ms": float(np.percentile(L, 99) * 1e3),
                     "cpu_ms_b1": float(np.median(b1_cpu[name]) * 1e3 / nq),
                     "qps_batch": float(np.median(qps_batch)), "qps_batch_min": float(qps_batch.min()),
                     "qps_batch_max": float(qps_batch.max()),
                     "cpu_ms_batch": float(np.median(batch_cpu[name]) * 1e3 / nq)}
    return out


def code_bytes(layout: dict[str, Any], D: int) -> int:
    """Bytes per point of the first-stage vector a search scans: float32 4d, float16 2d, int8 d + 4 (Qdrant
    keeps one float per vector beside the codes), binary d / 8, binary1.5 3d / 16, binary2 d / 4, TurboQuant
    and product quantization as ``codes.code_bytes`` counts them."""
    d = min(layout["dims"]) if layout["dims"] else D
    q = layout.get("quantization")
    if q is not None:
        return code_bytes_of(f"qdrant-{q}", d)
    return d * (2 if layout.get("datatype") == "float16" else 4)


# --------------------------------------------------------------------- one dataset
def layout_key(layout: dict[str, Any]) -> str:
    """One collection per distinct layout: configurations that differ only in their search share it."""
    return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in sorted(layout.items())})


def build(layout: dict[str, Any], smec: SMEC, X: np.ndarray, path: Path,
          search_threads: int | None = 1) -> tuple[QdrantCompressedCollection, dict[str, Any]]:
    """Build one layout's collection (writes, then the blocking optimize) and measure its bytes."""
    n = X.shape[0]
    rec: dict[str, Any] = {"n": n, "layout": {k: list(v) if isinstance(v, tuple) else v for k, v in layout.items()},
                           "load_at_build": load_avg()}
    col = QdrantCompressedCollection.edge(path, smec, full=True, max_search_threads=search_threads, **layout)
    t = time.perf_counter()
    col.upsert(np.arange(n), X, batch_size=1024, optimize=False)
    rec["upsert_s"] = time.perf_counter() - t
    t = time.perf_counter()
    col.optimize()
    rec["optimize_s"] = time.perf_counter() - t
    rec["upsert_pts_s"] = n / rec["upsert_s"]
    rec["indexed_pts_s"] = n / (rec["upsert_s"] + rec["optimize_s"])
    col.engine.flush()
    rec["disk_bytes"] = col.engine.disk_bytes()
    rec["segments_bytes"] = allocated_bytes(col.engine.path / "segments")
    rec["disk_b_per_pt"] = rec["disk_bytes"] / n
    rec["segments_b_per_pt"] = rec["segments_bytes"] / n
    rec["code_b_per_pt"] = code_bytes(layout, smec.input_dim_)
    return col, rec


def measure(name: str, cfg: dict[str, Any], col: QdrantCompressedCollection, built: dict[str, Any], Q: np.ndarray,
            truth: np.ndarray, rel: tuple | None) -> dict[str, Any]:
    """One configuration's record: its collection's bytes and build times, and its quality on Q."""
    rec: dict[str, Any] = {"config": name, "label": cfg["label"], **built,
                           "search": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg["search"].items()}}
    if "rescored" in cfg:
        rec["rescored"] = cfg["rescored"]
    _, I = col.search(Q, k=K, **cfg["search"])
    rec["recall@10"] = recall(I, truth)
    if rel is not None:
        per_query = ndcg_per_query(I, *rel)
        rec["ndcg@10"] = float(per_query.mean())
        rec["ndcg@10_per_query"] = [round(float(x), 6) for x in per_query]
    print(f"  {cfg['label']}: R@10 {rec['recall@10']:.3f}"
          + (f" nDCG@10 {rec['ndcg@10']:.4f}" if "ndcg@10" in rec else "")
          + f" | upsert {rec['upsert_pts_s']:.0f}/s optimize {rec['optimize_s']:.1f} s"
          f" | disk {rec['disk_b_per_pt']:.0f} B/pt, code {rec['code_b_per_pt']} B/pt", flush=True)
    return rec


def run_dataset(label: str, X: np.ndarray, Q: np.ndarray, smec: SMEC, configs: list[str], workdir: Path,
                runs: int, rel: tuple | None, search_threads: int | None = 1) -> dict[str, Any]:
    """Build every configuration's collection (one per distinct layout), then time them all interleaved
    (``time_interleaved``)."""
    print(f"{label}: {X.shape[0]} x {X.shape[1]}, {Q.shape[0]} queries", flush=True)
    truth = exact_search(Q, X, K)[1]
    out: dict[str, Any] = {"dataset": label, "n": int(X.shape[0]), "d": int(X.shape[1]), "queries": int(Q.shape[0]),
                           "records": []}
    if rel is not None:
        out["exact_ndcg@10"] = ndcg(truth, *rel)
    cols: dict[str, tuple[QdrantCompressedCollection, dict[str, Any]]] = {}
    try:
        cfgs = {name: resolve(CONFIGS[name], X.shape[1]) for name in configs}
        for name, cfg in cfgs.items():
            key = layout_key(cfg["layout"])
            if key not in cols:
                cols[key] = build(cfg["layout"], smec, X, workdir / f"c{len(cols)}", search_threads)
            out["records"].append(measure(name, cfg, *cols[key], Q, truth, rel))
        searches = {name: (lambda q, c=cols[layout_key(cfg["layout"])][0], kw=cfg["search"]: c.search(q, k=K, **kw))
                    for name, cfg in cfgs.items()}
        load = load_avg()
        timings = time_interleaved(searches, Q, runs)
        out["load_during_timing"] = [load, load_avg()]
    finally:
        for i, (col, _) in enumerate(cols.values()):
            col.close()
            shutil.rmtree(workdir / f"c{i}", ignore_errors=True)
    for rec in out["records"]:
        rec.update(timings[rec["config"]])
        print(f"  timed {rec['label']}: QPS b1 {rec['qps_b1']:.0f} batch {rec['qps_batch']:.0f} | p50 "
              f"{rec['p50_ms']:.2f} ms p99 {rec['p99_ms']:.2f} ms | CPU {rec['cpu_ms_b1']:.3f} ms/q", flush=True)
    return out


# --------------------------------------------------------------------- compressor
def fit_smec(X: np.ndarray, method: str, cache: Path | None, key: str,
             dims: tuple[int, ...] = DIMS) -> tuple[SMEC, float]:
    """``SMEC(dims, method, seed=0)`` fitted on X (unsupervised), from ``cache/key`` when there."""
    if cache is not None and (cache / key).is_dir():
        seconds = cache / f"{key}.train_s"
        return SMEC.load(cache / key), float(seconds.read_text()) if seconds.exists() else float("nan")
    t = time.perf_counter()
    smec = SMEC(dims=dims, method=method, seed=0, progress=False).fit(X)
    train_s = time.perf_counter() - t
    if cache is not None:
        smec.save(cache / key)
        (cache / f"{key}.train_s").write_text(f"{train_s:.1f}")
    return smec, train_s


# --------------------------------------------------------------------- report
def _f(x: Any, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def dataset_table(res: dict[str, Any]) -> str:
    headers = ["config", "nDCG@10", "R@10", "QPS b1", "QPS batch", "p50 ms", "p99 ms", "CPU ms/q b1",
               "CPU ms/q batch", "upsert pts/s", "optimize s", "disk B/pt", "segments B/pt", "1st-stage code B/pt"]
    rows = []
    if "exact_ndcg@10" in res:
        rows.append(["exact full dim (numpy)", _f(res["exact_ndcg@10"], 4), "1.000"] + ["-"] * 11)
    for r in res["records"]:
        rows.append([r["label"], _f(r.get("ndcg@10"), 4), _f(r["recall@10"], 3), _f(r["qps_b1"]), _f(r["qps_batch"]),
                     _f(r["p50_ms"], 2), _f(r["p99_ms"], 2), _f(r["cpu_ms_b1"], 3), _f(r["cpu_ms_batch"], 3),
                     _f(r["upsert_pts_s"]), _f(r["optimize_s"], 1), _f(r["disk_b_per_pt"]), _f(r["segments_b_per_pt"]),
                     str(r["code_b_per_pt"])])
    return markdown_table(headers, rows)


def goals(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Each SMEC configuration against the peer (binary + rescore, float32 originals): the issue's goal is
    equal or better nDCG@10 (recall@10 where there are no qrels), fewer bytes per point, higher QPS. With
    qrels, a 95% paired bootstrap over the queries says whether the nDCG@10 difference exceeds query noise."""
    by = {r["config"]: r for r in res["records"]}
    if PEER not in by:
        return []
    peer = by[PEER]
    quality = "ndcg@10" if "ndcg@10" in peer else "recall@10"
    out = []
    for r in res["records"]:
        if not r["config"].startswith("smec") or r["config"] not in CLASSIC:  # the frontier has its own check
            continue
        interval = (paired_interval(r["ndcg@10_per_query"], peer["ndcg@10_per_query"])
                    if "ndcg@10_per_query" in r and "ndcg@10_per_query" in peer else None)
        out.append({"config": r["config"], "label": r["label"], "quality": quality,
                    "quality_delta": r[quality] - peer[quality], "quality_ok": r[quality] >= peer[quality] - 1e-9,
                    "quality_interval": interval,
                    "quality_within_noise": interval is not None and interval[0] <= 0 <= interval[1],
                    "disk_bytes_ok": r["disk_b_per_pt"] < peer["disk_b_per_pt"],
                    "code_bytes_ok": r["code_b_per_pt"] < peer["code_b_per_pt"],
                    "qps_b1_ok": r["qps_b1"] > peer["qps_b1"], "qps_batch_ok": r["qps_batch"] > peer["qps_batch"],
                    "cpu_b1_ok": r["cpu_ms_b1"] < peer["cpu_ms_b1"]})
    return out


def frontier(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Per byte against Qdrant's quantization: for each peer (a quantization of the full vector re-scored over C
    points), the SMEC stage with the best recall@10 among those re-scored over the same C whose codes take at most
    the peer's bytes, and among those taking at most half of them; met when its recall@10 is at least the
    peer's."""
    recs = [r for r in res["records"] if "rescored" in r]
    out = []
    for peer in (r for r in recs if r["config"].startswith("peer-")):
        row: dict[str, Any] = {"peer": peer["config"], "label": peer["label"], "rescored": peer["rescored"],
                               "code_b_per_pt": peer["code_b_per_pt"], "recall@10": peer["recall@10"],
                               "ndcg@10": peer.get("ndcg@10")}
        for key, budget in (("within", peer["code_b_per_pt"]), ("half", peer["code_b_per_pt"] / 2)):
            ours = [r for r in recs if r["config"].startswith("smec") and r["rescored"] == peer["rescored"]
                    and r["code_b_per_pt"] <= budget]
            best = max(ours, key=lambda r: (r["recall@10"], -r["code_b_per_pt"]), default=None)
            row[key] = None if best is None else {
                "config": best["config"], "label": best["label"], "code_b_per_pt": best["code_b_per_pt"],
                "recall@10": best["recall@10"], "ndcg@10": best.get("ndcg@10"),
                "met": best["recall@10"] >= peer["recall@10"] - 1e-9}
        out.append(row)
    return out


def frontier_table(res: dict[str, Any]) -> str:
    def cell(b: dict[str, Any] | None) -> list[str]:
        if b is None:
            return ["-", "-", "-", "no stage that small"]
        nd = "" if b["ndcg@10"] is None else f" / {b['ndcg@10']:.4f}"
        return [b["label"].split(" -> ")[0], str(b["code_b_per_pt"]), f"{b['recall@10']:.3f}{nd}",
                "met" if b["met"] else "not met"]
    rows = [[f["label"], str(f["code_b_per_pt"]), f"{f['recall@10']:.3f}"
             + ("" if f["ndcg@10"] is None else f" / {f['ndcg@10']:.4f}"), *cell(f["within"]), *cell(f["half"])]
            for f in frontier(res)]
    return markdown_table(["peer (Qdrant on the full vector)", "B/pt", "R@10 / nDCG@10", "best smec stage <= its bytes",
                           "B/pt", "R@10 / nDCG@10", ">= peer's R@10", "best smec stage <= half its bytes", "B/pt",
                           "R@10 / nDCG@10", ">= peer's R@10"], rows)


def goals_table(res: dict[str, Any]) -> str:
    keys = ("quality_ok", "disk_bytes_ok", "code_bytes_ok", "qps_b1_ok", "qps_batch_ok", "cpu_b1_ok")
    rows = []
    for g in goals(res):
        lo_hi = g.get("quality_interval")
        noise = "-" if lo_hi is None else (f"{lo_hi[0]:+.4f} .. {lo_hi[1]:+.4f} "
                                           f"({'contains 0' if g['quality_within_noise'] else 'excludes 0'})")
        rows.append([g["label"], f"{g['quality']} {g['quality_delta']:+.4f}", noise]
                    + ["met" if g[k] else "not met" for k in keys])
    return markdown_table(["vs peer", "quality (minus peer's)", "95% paired bootstrap of the nDCG@10 difference",
                           ">= quality", "< disk B/pt", "< code B/pt", "> QPS b1", "> QPS batch", "< CPU ms/q b1"], rows)


def report(payload: dict[str, Any]) -> str:
    dims = "(" + ", ".join(map(str, payload.get("dims", (256, 64)))) + ")"
    parts = [f"# SMEC on Qdrant Edge vs Qdrant's quantization\n\n{describe_machine(payload['machine'])}; "
             f"{commit_note(payload)}; qdrant-edge-py {payload['machine']['versions']['qdrant-edge-py']}. "
             f"Compressor: SMEC(dims={dims}, method={payload['method']!r}, seed=0), unsupervised; k={K}. Timing: "
             f"{payload['runs']} rounds, each passing over every configuration in turn (every query at batch 1, then "
             f"all as one batch); medians over rounds. Load averages are in the JSON."
             + (f" OMP_NUM_THREADS={payload['omp_num_threads']}." if payload.get("omp_num_threads") else "")
             + (f" Edge max_search_threads={payload['edge_max_search_threads']} for every configuration."
                if payload.get("edge_max_search_threads") else "")]
    for res in payload["datasets"]:
        train = res.get("smec_train_s")
        classic = {**res, "records": [r for r in res["records"] if r["config"] in CLASSIC]}
        parts.append(f"## {res['dataset']} ({res['n']:,} x {res['d']}, {res['queries']} queries"
                     + (f"; compressor fitted in {train:.0f} s" if train is not None and np.isfinite(train) else "")
                     + "; load average at the start and end of timing: "
                     + " / ".join(str(x) for x in res.get("load_during_timing", [])) + ")")
        if classic["records"]:
            parts.append(dataset_table(classic))
        if any(r["config"] == PEER for r in res["records"]):
            parts.append("Goal check (each SMEC configuration against the peer `" + CONFIGS[PEER]["label"] + "`):\n\n"
                         + goals_table(res))
        if frontier(res):
            rest = {**res, "records": sorted((r for r in res["records"] if r["config"] not in CLASSIC),
                                             key=lambda r: (r["rescored"], r["code_b_per_pt"]))}
            parts.append("Per byte against Qdrant's quantization (one coded stage, then the full vector re-scores "
                         "the same number of points):\n\n" + frontier_table(res) + "\n\nEvery point of the "
                         "frontier:\n\n" + dataset_table(rest))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="scifact-mpnet,scifact-minilm,debian-minilm,tiled",
                    help=f"comma-separated: {', '.join([*MODELS, TILED])}")
    ap.add_argument("--n-tiled", type=int, default=100_000)
    ap.add_argument("--method", default="smec", help="compressor method (smec for the committed run; pca is fast)")
    ap.add_argument("--configs", default=None,
                    help="comma-separated configuration names, or the groups 'classic' and 'frontier' (default: both "
                         "on the real sets, classic on the tiled one)")
    ap.add_argument("--runs", type=int, default=5, help="timing rounds")
    ap.add_argument("--dims", default=",".join(map(str, DIMS)),
                    help="the compressor's dims, comma-separated; 'half' is half the input dim (needed by the 'half' "
                         "group)")
    ap.add_argument("--search-threads", type=int, default=1,
                    help="Edge's max_search_threads for every configuration (0: Edge's default, from the CPU count)")
    ap.add_argument("--cache", type=Path, default=None, help="directory to keep fitted compressors between runs")
    ap.add_argument("--workdir", type=Path, default=None, help="where collections are built (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=RESULTS / "qdrant")
    args = ap.parse_args(argv)
    groups = {"classic": CLASSIC, "frontier": FRONTIER, "half": HALF}
    configs = None
    if args.configs is not None:
        configs = [n for c in args.configs.split(",") if c.strip() for n in groups.get(c.strip(), (c.strip(),))]
        unknown = [c for c in configs if c not in CONFIGS]
        if unknown:
            ap.error(f"unknown configs {unknown}; known: {list(CONFIGS)} or the groups {list(groups)}")
    dim_args = [d.strip() for d in args.dims.split(",") if d.strip()]
    if any(d != "half" and not d.isdigit() for d in dim_args):
        ap.error(f"--dims takes positive ints and 'half', got {args.dims!r}")
    if configs is not None and "half" not in dim_args and set(configs) & set(HALF):
        ap.error("the 'half' configurations need a stage at half the input dim: add 'half' to --dims")
    datasets = [d.strip() for d in args.data.split(",") if d.strip()]
    bad = [d for d in datasets if d not in (*MODELS, TILED)]
    if bad:
        ap.error(f"unknown data {bad}; known: {[*MODELS, TILED]}")
    from smec_index.report import provenance

    info, load_start, prov = machine_info(), load_avg(), provenance()  # the code as it was at the start
    print(describe_machine(info), flush=True)
    work = Path(tempfile.mkdtemp(prefix="smec-qdrant-bench-", dir=args.workdir))
    # one BLAS thread is how it is meant to run (each search projects one query; a spinning thread pool costs
    # more than the matmul): recorded so that a run without it is recognisable
    payload: dict[str, Any] = {"machine": info, "method": args.method, "dims": dim_args, "runs": args.runs, "k": K,
                               "datasets": [], "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                               "edge_max_search_threads": args.search_threads or None}
    try:
        fitted: dict[tuple[str, str], tuple[SMEC, float]] = {}
        for label in datasets:
            folder, model = MODELS.get(label, MODELS["scifact-mpnet"])
            ds = load_beir(default_data_dir().parent / folder, model)
            if (folder, model) not in fitted:
                dims = tuple(sorted({ds.dim // 2 if d == "half" else int(d) for d in dim_args}, reverse=True))
                fitted[folder, model] = fit_smec(ds.corpus, args.method, args.cache,
                                                 f"{args.method}-{folder}-{model}-{'-'.join(map(str, dims))}", dims)
            smec, train_s = fitted[folder, model]
            Q, qids, qrels = ds.split_queries("test")
            if label == TILED:
                X, rel = tiled(ds.corpus, args.n_tiled), None
                name = f"SciFact {model} tiled to {args.n_tiled:,} (sigma {SIGMA})"
            else:
                X, rel = ds.corpus, (ds.doc_ids, qids, qrels)
                name = f"{'SciFact' if folder == 'scifact' else folder.capitalize()} {model}"
            names = configs if configs is not None else list(CLASSIC if label == TILED else CLASSIC + FRONTIER)
            res = run_dataset(name, X, Q, smec, names, work, args.runs, rel, args.search_threads or None)
            res["smec_train_s"] = train_s
            payload["datasets"].append(res)
            write_json(args.out.with_suffix(".json"),
                       with_provenance(payload, "qdrant.py", argv, info, load_start, prov))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    payload = with_provenance(payload, "qdrant.py", argv, info, load_start, prov)
    text = report(payload)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
