"""Scale: N x 768 vectors on one machine, built from a file without holding it, peak RSS from the OS.

    OMP_WAIT_POLICY=PASSIVE nice -n 10 python benchmarks/scale.py --n 1000000 --work /tmp/scale
    python benchmarks/scale.py --n 1000000 --work /tmp/scale --phases train --compressor smec   # training time only
    python benchmarks/scale.py --n 100000 --compressor pca --engines Flat --dims 64             # what the test runs

Data: SciFact's all-mpnet-base-v2 corpus vectors (5,183 x 768) tiled to N rows with N(0, 0.02^2) noise on every
coordinate and re-normalised (the law of ``speed.py``'s ``tiled``, written to a ``.npy`` file 100k rows at a time);
queries: the first 1000 real SciFact queries. Tiled copies of one document are near-duplicates, so recall against
exact 768-d search is harsher than on real data of size N.

Every phase runs in its own Python process, so its peak resident set (``ru_maxrss``, from the kernel) is its own:
``data`` (write the tiled file and the exact full-dim top-10 of every query), ``train`` (fit the compressor on a
random ``--train-rows`` sample through ``SMEC.fit``), then per engine and dim ``build`` (a CompressedIndex with
``full_store="mmap"`` fed from the memory-mapped file in batches, then saved) and ``search`` (``read_index`` with the
full store as each of ``--stores``: ``mmap``, read through a mapping, and ``disk``, read with pread; batch and
one-at-a-time QPS, recall@10 against exact full-dim search). Each phase also samples RssAnon/RssFile from
``/proc/self/status`` to show what the peak is made of. Wall and CPU seconds are both reported: on a machine shared
with other jobs the wall clock carries their load (the load average is printed with every phase).

Targets (issue 6): peak RSS of build and search <= 2.5 x the reduced index (backend + id map, in RAM) + 1 GiB;
unsupervised SMEC training on 100k x 768 <= 15 min; loading a saved index (full store mapped) <= 10 s.
Writes scale-<N>[-<tag>].json and .md under benchmarks/results/ (or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (RESULTS, commit_note, describe_machine, load_avg, machine_info, markdown_table,  # noqa: E402
                    recall, with_provenance, write_json)

MODEL = "all-mpnet-base-v2"
SIGMA = 0.02
K = 10
CANDIDATES = 100
GIB = 1 << 30
TILE_CHUNK = 100_000  # rows generated per RNG call, as in speed.py's tiled(): the same rows for the same seed
ADD_BATCH = 65_536  # rows handed to one CompressedIndex.add call
DATA_NOTE = (f"SciFact {MODEL} corpus vectors tiled to N rows with N(0, {SIGMA}^2) noise per coordinate, "
             f"re-normalised; queries: the first 1000 real SciFact queries")
ENGINES: dict[str, dict[str, Any]] = {
    # efConstruction is FAISS's default (40): a 1M-row HNSW32 build at 256 dims stays within the run's time here
    "Flat": {"spec": "Flat", "params": {}},
    "HNSW32": {"spec": "HNSW32", "params": {"efConstruction": 40, "efSearch": 64}},
}


# --------------------------------------------------------------------- measuring a phase
class RssSampler:
    """Peak RssAnon / RssFile of this process, sampled from /proc/self/status (the kernel's ru_maxrss is the
    exact peak of their sum; the samples say what it was made of)."""

    def __init__(self, every_s: float = 0.2) -> None:
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._t.start()

    @staticmethod
    def read() -> dict[str, int]:
        out = {}
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
        except OSError:
            pass
        return out

    def sample(self) -> None:
        """Take one sample now: a phase shorter than the timer's period would otherwise go unseen."""
        now = self.read()
        with self._lock:
            for key in self.peak:
                self.peak[key] = max(self.peak[key], now.get(key, 0))

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            self.sample()

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._t.join()
        self.sample()
        return {f"peak_sampled_{k.lower()}": v for k, v in self.peak.items()}


_SAMPLER: RssSampler | None = None  # the sampler of this phase's process (set by run_phase_here)


def sample_rss() -> None:
    """One RSS sample now, where a phase's memory peaks and may be gone before the timer's next tick."""
    if _SAMPLER is not None:
        _SAMPLER.sample()


def phase_result(t0: float, c0: float, sampler: RssSampler, **values: Any) -> dict[str, Any]:
    """Wall and CPU seconds of the phase, its peak RSS from the kernel, and the phase's own numbers."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime - c0, 2),
            "peak_rss": ru.ru_maxrss * 1024, **sampler.stop(), "load_avg_end": load_avg(), **values}


def cpu_now() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------- phases (each in its own process)
def tiled_chunks(corpus: np.ndarray, n: int, seed: int = 0):
    """Rows of ``corpus`` repeated to n rows plus N(0, SIGMA^2) noise, re-normalised, TILE_CHUNK rows at a time."""
    rng = np.random.default_rng(seed)
    rows = np.arange(n) % corpus.shape[0]
    for s in range(0, n, TILE_CHUNK):
        e = min(n, s + TILE_CHUNK)
        x = corpus[rows[s:e]] + SIGMA * rng.standard_normal((e - s, corpus.shape[1]), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        yield s, x.astype(np.float32, copy=False)


def phase_data(work: Path, n: int, n_queries: int) -> dict[str, Any]:
    """The tiled corpus as a .npy file written chunk by chunk, the queries, and their exact full-dim top-k."""
    import faiss

    from smec_index.datasets import default_data_dir, load_beir

    ds = load_beir(default_data_dir(), MODEL)
    Q = np.ascontiguousarray(ds.queries[:n_queries], dtype=np.float32)
    D = ds.corpus.shape[1]
    best_d = np.full((Q.shape[0], K), -np.inf, dtype=np.float32)
    best_i = np.full((Q.shape[0], K), -1, dtype=np.int64)
    with open(work / "corpus.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (n, D)})
        for s, x in tiled_chunks(ds.corpus.astype(np.float32), n):
            x.tofile(f)
            flat = faiss.IndexFlatIP(D)
            flat.add(x)
            d, i = flat.search(Q, K)
            alld, alli = np.hstack([best_d, d]), np.hstack([best_i, i + s])
            order = np.argsort(-alld, axis=1, kind="stable")[:, :K]
            best_d, best_i = np.take_along_axis(alld, order, 1), np.take_along_axis(alli, order, 1)
    np.save(work / "queries.npy", Q)
    np.save(work / "truth.npy", best_i)
    return {"corpus_bytes": (work / "corpus.npy").stat().st_size, "D": D}


def train_sample(n: int, rows: int, seed: int = 1) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, min(n, rows), replace=False))


def phase_train(work: Path, n: int, train_rows: int, compressor: str, dims: list[int], threads: int | None) -> dict[str, Any]:
    """Fit the compressor through the public API on a random sample of the corpus file; save it."""
    import torch

    from smec_index import SMEC
    from smec_index.index.stream import take_rows

    if threads:
        torch.set_num_threads(threads)

    X = np.load(work / "corpus.npy", mmap_mode="r")
    sample = take_rows(X, train_sample(n, train_rows))  # chunk by chunk: the file's pages are handed back
    smec = SMEC(dims=sorted(dims, reverse=True), method=compressor, seed=0, progress=False)
    t = time.perf_counter()
    smec.fit(sample)
    fit_s = time.perf_counter() - t
    smec.save(work / f"smec-{compressor}")
    return {"fit_s": round(fit_s, 1), "train_rows": int(sample.shape[0]), "method": compressor,
            "torch_threads": torch.get_num_threads(), "reports": getattr(smec, "reports_", None)}


def phase_build(work: Path, n: int, compressor: str, engine: str, dim: int) -> dict[str, Any]:
    """Build a CompressedIndex at one dim from the memory-mapped corpus in batches; save it."""
    from smec_index import SMEC, CompressedIndex
    from smec_index.index.stream import take_rows

    smec = SMEC.load(work / f"smec-{compressor}")
    X = np.load(work / "corpus.npy", mmap_mode="r")
    spec = ENGINES[engine]
    index = CompressedIndex(smec, dims=(dim,), spec=spec["spec"], params=spec["params"], full_store="mmap",
                            candidates=CANDIDATES)
    t, c = time.perf_counter(), cpu_now()
    if not index.is_trained:
        index.train(take_rows(X, train_sample(n, 50_000)))
    for s in range(0, n, ADD_BATCH):
        index.add(X[s : s + ADD_BATCH])
    build = {"build_s": round(time.perf_counter() - t, 1), "build_cpu_s": round(cpu_now() - c, 1)}
    parts = index.memory_usage()
    sample_rss()
    path = work / f"index-{engine}-{dim}"
    t = time.perf_counter()
    index.save(path)
    save_s = time.perf_counter() - t
    disk = {p.relative_to(path).as_posix(): p.stat().st_size for p in path.rglob("*") if p.is_file()}
    return {**build, "save_s": round(save_s, 1), "ram": parts, "ntotal": index.ntotal,
            "reduced_bytes": parts["backends"] + parts["ids"], "disk_bytes": sum(disk.values()),
            "disk_full_store": disk.get("store-full.npy", 0)}


def phase_search(work: Path, engine: str, dim: int, b1: int, runs: int, store: str) -> dict[str, Any]:
    """Load the saved index with its full store as ``store`` ("mmap" or "disk"), with and without the sha256
    pass, then QPS and recall@10 against exact full-dim search."""
    from speed import time_batch, time_batch1

    from smec_index import read_index

    path = work / f"index-{engine}-{dim}"
    t, c = time.perf_counter(), cpu_now()
    index = read_index(path, full_store=store)
    load_s, load_cpu_s = time.perf_counter() - t, cpu_now() - c
    sample_rss()
    del index
    t = time.perf_counter()
    index = read_index(path, full_store=store, verify=False)
    load_noverify_s = time.perf_counter() - t
    Q = np.load(work / "queries.npy")
    truth = np.load(work / "truth.npy")
    out: dict[str, Any] = {"store": store, "load_s": round(load_s, 2), "load_cpu_s": round(load_cpu_s, 2),
                           "load_noverify_s": round(load_noverify_s, 2)}
    for rerank in ("none", "full"):
        bb, (_, I) = time_batch(lambda q: index.search(q, K, rerank=rerank), Q, runs)
        b1s = time_batch1(lambda q: index.search(q, K, rerank=rerank), Q[:b1])
        out[rerank] = {**{k: round(v, 4) for k, v in {**bb, **b1s}.items()}, "recall@10": round(recall(I, truth), 4)}
        sample_rss()
    return out


PHASES = {"data": phase_data, "train": phase_train, "build": phase_build, "search": phase_search}


def run_phase_here(name: str, kwargs: dict[str, Any], out: Path) -> None:
    """Entry point of a phase's process: run it and write its JSON result."""
    global _SAMPLER
    sampler = _SAMPLER = RssSampler()
    t0, c0 = time.perf_counter(), cpu_now()
    kwargs = {**kwargs, "work": Path(kwargs["work"])}
    values = PHASES[name](**kwargs)
    write_json(out, phase_result(t0, c0, sampler, **values))


def run_phase(name: str, work: Path, **kwargs: Any) -> dict[str, Any]:
    """Run one phase in a fresh process (TMPDIR = the work dir, for the mmap store's private file)."""
    out = work / f"phase-{name}-{os.getpid()}.json"
    la = load_avg()
    env = {**os.environ, "TMPDIR": str(work)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name,
           "--phase-args", json.dumps({"work": str(work), **kwargs}), "--phase-out", str(out)]
    subprocess.run(cmd, check=True, env=env)
    res = json.loads(out.read_text())
    out.unlink()
    res["load_avg_start"] = la
    return res


# --------------------------------------------------------------------- the run
def targets(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 6 with its number and whether it was met."""
    rows = []
    train = payload.get("train")
    if train is not None:
        unsup = train["method"] == "smec"
        what = "unsupervised SMEC training" if unsup else f"{train['method']} fit (the target is for SMEC)"
        rows.append({"target": f"{what} on {train['train_rows']:,} x {payload['D']} <= 900 s",
                     "value": f"{train['fit_s']} s wall, {train['cpu_s']} s CPU ({train['method']}, torch threads: "
                              f"{train.get('torch_threads')}, load average {train['load_avg_start']} -> "
                              f"{train['load_avg_end']})",
                     "met": (train["fit_s"] <= 900) if unsup else None})
    for c in payload["configs"]:
        b = c["build"]
        bound = 2.5 * b["reduced_bytes"] + GIB
        for store, s in c["search"].items():
            peak = max(b["peak_rss"], s["peak_rss"])
            anon = max(b["peak_sampled_rssanon"], s["peak_sampled_rssanon"])
            rows.append({"target": f"{c['engine']}@{c['dim']}, full store {store}: peak RSS <= 2.5 x reduced index + 1 GiB",
                         "value": f"{peak / GIB:.2f} GiB (of which anonymous {anon / GIB:.2f}) vs bound {bound / GIB:.2f} "
                                  f"GiB (reduced index {b['reduced_bytes'] / GIB:.3f} GiB)", "met": peak <= bound})
            rows.append({"target": f"{c['engine']}@{c['dim']}, full store {store}: load of the saved index <= 10 s",
                         "value": f"{s['load_s']} s wall ({s['load_cpu_s']} s CPU) with the sha256 of every file, "
                                  f"{s['load_noverify_s']} s without hashing the stores", "met": s["load_s"] <= 10})
    return rows


def report(payload: dict[str, Any]) -> str:
    n = payload["n"]
    lines = [f"# Scale: {n:,} x {payload['D']} ({payload['compressor']} compressor)", "",
             f"Machine: {describe_machine(payload['machine'])}; {commit_note(payload)}. OMP threads {payload['omp_threads']}, "
             f"load average {payload['load_start']} at start, {payload['load_end']} at the end.", "",
             f"Data: {payload['data']}.", ""]
    if payload.get("data_phase_note"):
        lines += [f"The data phase: {payload['data_phase_note']}.", ""]
    phases = [["data", payload["data_phase"]]] if payload.get("data_phase") else []
    if payload.get("train"):
        phases.append([f"train ({payload['train']['method']}, {payload['train']['train_rows']:,} rows)", payload["train"]])
    for c in payload["configs"]:
        phases.append([f"build {c['engine']}@{c['dim']}", c["build"]])
        phases += [[f"search {c['engine']}@{c['dim']} ({store})", s] for store, s in c["search"].items()]
    lines += ["## Phases (each its own process)", "", markdown_table(
        ["phase", "wall s", "CPU s", "peak RSS GiB", "peak RssAnon GiB", "peak RssFile GiB", "load avg start/end"],
        [[name, f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", f"{r['peak_rss'] / GIB:.2f}", f"{r['peak_sampled_rssanon'] / GIB:.2f}",
          f"{r['peak_sampled_rssfile'] / GIB:.2f}", f"{r['load_avg_start']} / {r['load_avg_end']}"] for name, r in phases]), ""]
    rows = []
    for c in payload["configs"]:
        b = c["build"]
        for store, s in c["search"].items():
            for rerank in ("none", "full"):
                r = s[rerank]
                rows.append([f"{c['engine']}@{c['dim']}", store, rerank, f"{b['build_s']:.1f}", f"{b['build_cpu_s']:.1f}",
                             f"{b['save_s']:.1f}", f"{b['reduced_bytes'] / 2**20:.0f}", f"{b['disk_bytes'] / 2**20:.0f}",
                             f"{s['load_s']:.2f}",
                             f"{r['qps_b1000']:.0f}", f"{r['qps_b1000_per_cpu_s']:.0f}", f"{r['qps_b1']:.0f}",
                             f"{r['qps_b1_cpu']:.0f}", f"{r['p50_ms']:.2f}", f"{r['recall@10']:.3f}"])
    lines += ["## Indexes", "", f"k={K}; rerank full = the top {CANDIDATES} at the dim rescored exactly at full dim "
              "from the file-backed store (mmap: read through a mapping; disk: read with pread). QPS by the wall "
              "clock and per CPU-second.", "", markdown_table(
                  ["config", "full store", "rerank", "build s", "build CPU s", "save s", "reduced index MiB (RAM)", "on disk MiB",
                   "load s", "QPS b1000", "per CPU-s", "QPS b1", "per CPU-s", "p50 ms b1", "recall@10"], rows), ""]
    lines += ["## Targets", "", markdown_table(["target", "value", "met"],
                                               [[t["target"], t["value"], {True: "yes", False: "NO", None: "n/a"}[t["met"]]]
                                                for t in payload["targets"]])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="database size (tiled rows)")
    p.add_argument("--train-rows", type=int, default=100_000, help="compressor training sample")
    p.add_argument("--compressor", default="pca", choices=["smec", "pca"], help="compressor method (default pca)")
    p.add_argument("--train-threads", type=int, default=None, help="torch threads for training (default: torch's)")
    p.add_argument("--dims", default="64,256", help="reduced dims, one index per dim and engine")
    p.add_argument("--engines", default="Flat,HNSW32", help=f"from {','.join(ENGINES)}")
    p.add_argument("--queries", type=int, default=1000, help="query batch (first rows of the SciFact queries)")
    p.add_argument("--b1-queries", type=int, default=200, help="queries timed one at a time")
    p.add_argument("--runs", type=int, default=3, help="timed runs of the batch")
    p.add_argument("--stores", default="mmap,disk", help="full-store kinds each saved index is searched with")
    p.add_argument("--phases", default="data,train,build", help="data, train, build (build includes search)")
    p.add_argument("--work", default=None, help="directory for the data file and indexes (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the saved indexes (the data file is always kept in --work)")
    p.add_argument("--out", default=None, help="result JSON path (default results/scale-<N>[-<tag>].json)")
    p.add_argument("--tag", default=None)
    p.add_argument("--phase", help=argparse.SUPPRESS)
    p.add_argument("--phase-args", help=argparse.SUPPRESS)
    p.add_argument("--phase-out", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.phase:
        run_phase_here(a.phase, json.loads(a.phase_args), Path(a.phase_out))
        return 0
    import faiss

    phases = {x.strip() for x in a.phases.split(",")}
    dims = [int(x) for x in a.dims.split(",")]
    engines = [x.strip() for x in a.engines.split(",")]
    stores = [x.strip() for x in a.stores.split(",")]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        p.error(f"unknown engine(s) {unknown}; known: {sorted(ENGINES)}")
    work = Path(a.work) if a.work else Path(os.environ.get("TMPDIR", "/tmp")) / f"smec-scale-{a.n}"
    work.mkdir(parents=True, exist_ok=True)
    from smec_index.report import provenance

    info, load_start, prov = machine_info(), load_avg(), provenance()  # the code as it was at the start
    payload: dict[str, Any] = {"n": a.n, "D": None, "compressor": a.compressor, "dims": dims, "engines": engines, "stores": stores,
                               "engine_settings": {e: ENGINES[e] for e in engines}, "k": K, "candidates": CANDIDATES,
                               "train_rows": a.train_rows, "data": DATA_NOTE, "machine": info,
                               "omp_threads": faiss.omp_get_max_threads(),
                               "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                               "load_start": load_start, "configs": []}
    print(f"# scale: N={a.n:,}, {a.compressor}, engines {engines}, dims {dims}\n# machine: {describe_machine(info)}",
          flush=True)
    t0 = time.perf_counter()
    if "data" in phases or not (work / "corpus.npy").is_file():
        payload["data_phase"] = run_phase("data", work, n=a.n, n_queries=a.queries)
        print(f"data: {payload['data_phase']}", flush=True)
    payload["D"] = int(np.load(work / "queries.npy", mmap_mode="r").shape[1])
    if "train" in phases or not (work / f"smec-{a.compressor}").is_dir():
        payload["train"] = run_phase("train", work, n=a.n, train_rows=a.train_rows, compressor=a.compressor, dims=dims,
                                     threads=a.train_threads)
        print(f"train: fit {payload['train']['fit_s']} s, peak RSS {payload['train']['peak_rss'] / GIB:.2f} GiB", flush=True)
    if "build" in phases:
        for engine in engines:
            for dim in dims:
                build = run_phase("build", work, n=a.n, compressor=a.compressor, engine=engine, dim=dim)
                print(f"build {engine}@{dim}: {build}", flush=True)
                search = {}
                for store in stores:
                    search[store] = run_phase("search", work, engine=engine, dim=dim, b1=a.b1_queries, runs=a.runs,
                                              store=store)
                    print(f"search {engine}@{dim} ({store}): {search[store]}", flush=True)
                payload["configs"].append({"engine": engine, "dim": dim, "build": build, "search": search})
                if not a.keep:
                    shutil.rmtree(work / f"index-{engine}-{dim}")
    payload["load_end"] = load_avg()
    payload["wall_s"] = round(time.perf_counter() - t0, 1)
    payload["targets"] = targets(payload)
    payload = with_provenance(payload, "scale.py", argv, info, load_start, prov)
    out = Path(a.out) if a.out else RESULTS / (f"scale-{a.n}" + (f"-{a.tag}" if a.tag else "") + ".json")
    write_json(out, payload)
    md = report(payload)
    out.with_suffix(".md").write_text(md)
    print("\n" + md + f"\nwrote {out} and {out.with_suffix('.md')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
