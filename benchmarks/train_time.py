"""Training time of SMEC on a 100k x 768 corpus, unsupervised and supervised (issue: <= 60 s / <= 120 s on 2 cores).

Data: SciFact's all-mpnet-base-v2 corpus vectors (5,183 x 768) tiled to ``--n`` rows with N(0, 0.02^2) noise
per coordinate and re-normalised (``speed.py``'s ``tiled``); supervised fits add SciFact's 809 training queries,
each judged relevant to the first copy of its documents. Tiled near-duplicates say nothing about quality, so
this benchmark reports time (wall and CPU), the epochs each stage ran and what each stage kept; quality is
``quality.py``'s job on real data.

    python benchmarks/train_time.py [--n 100000] [--threads 2] [--modes unsupervised,supervised] [--json OUT]

``--modes unlabelled`` times a fit on the same training queries' vectors without their judgements (no target).
``--lift D`` times a model of D > 768 dims: corpus and queries mapped into D dims by a seeded random isometry
(``lift``), so the retrieval structure is the real one and only the width grows (no target).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from common import RESULTS, describe_machine, load_avg, machine_info, markdown_table, write_json  # noqa: E402
from speed import tiled  # noqa: E402

from smec_index import SMEC  # noqa: E402
from smec_index.datasets import default_data_dir, load_beir  # noqa: E402
from smec_index.quality import default_dims  # noqa: E402

MODEL = "all-mpnet-base-v2"
TARGET_S = {"unsupervised": 60.0, "supervised": 120.0}  # issue 15's, for 100k x 768
LIFT_SIGMA = 0.005  # noise per coordinate after a lift, so that the lifted rows span every one of the D dims


def lift(x: np.ndarray, dim: int, seed: int = 0, stream: int = 0) -> np.ndarray:
    """Rows ``x`` (n, d) mapped into ``dim`` >= d dims by the isometry of ``seed`` (inner products kept; corpus
    and queries share it), plus N(0, LIFT_SIGMA^2) per coordinate from noise ``stream`` (corpus and queries take
    different ones), re-normalised: a wider model with nearly the same neighbours."""
    n, d = x.shape
    if dim < d:
        raise ValueError(f"lift: dim must be at least the rows' {d}, got {dim}")
    basis = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, d)))[0].astype(np.float32)
    rng = np.random.default_rng([seed, stream])
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 20_000):
        y = x[s : s + 20_000] @ basis.T
        y += LIFT_SIGMA * rng.standard_normal(y.shape, dtype=np.float32)
        out[s : s + 20_000] = y / np.linalg.norm(y, axis=1, keepdims=True)
    return out


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="corpus rows (tiled)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--modes", default="unsupervised,supervised")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lift", type=int, metavar="D", help="map corpus and queries into D dims (> 768): no target")
    p.add_argument("--json", default=None, help="output JSON (default benchmarks/results/train-time-<n>.json)")
    a = p.parse_args(argv)
    ds = load_beir(default_data_dir(), MODEL)
    if a.lift is not None and a.lift <= ds.dim:
        p.error(f"--lift: expected more than {ds.dim} dims, got {a.lift}")
    torch.set_num_threads(a.threads)
    X = tiled(ds.corpus.astype("float32"), a.n)
    D = a.lift or ds.dim
    if a.lift:
        X = lift(X, D, a.seed)
    dims = list(default_dims(D))
    info = machine_info()
    what = f"tiled {MODEL}" + (f", lifted from {ds.dim}" if a.lift else "")
    print(f"# train time: {a.n:,} x {D} {what}, dims {dims}, {a.threads} torch threads")
    print(f"# machine: {describe_machine(info)}; load {load_avg()}")
    records = []
    for mode in a.modes.split(","):
        if mode not in ("unsupervised", "supervised", "unlabelled"):
            p.error(f"--modes: expected unsupervised, supervised or unlabelled, got {mode!r}")
        args = ()
        if mode != "unsupervised":
            Qt, pairs = ds.pairs(*ds.supervised_split(a.seed)[:2])
            if a.lift:
                Qt = lift(Qt.astype(np.float32), D, a.seed, stream=1)
            # unlabelled: the same training queries' vectors without their judgements
            args = (Qt, pairs) if mode == "supervised" else (Qt,)
        load0, t0, c0 = load_avg(), time.perf_counter(), cpu_s()
        smec = SMEC(dims, "smec", seed=a.seed, progress=False).fit(X, *args)
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
        stages = [{"out_dims": r["out_dims"], "epochs": r["epochs"], "best_epoch": r["best_epoch"],
                   "train_s": r["train_s"], "choice": r.get("choice")} for r in smec.reports_]
        target = None if a.lift else TARGET_S.get(mode)
        met = None if target is None else wall <= target
        records.append({"mode": mode, "n": a.n, "dim": D, "dims": dims, "wall_s": round(wall, 1),
                        "cpu_s": round(cpu, 1), "target_s": target, "met": met,
                        "load_before": load0, "load_after": load_avg(), "stages": stages})
        verdict = "no target" if target is None else f"target {target:.0f} s: {'met' if met else 'NOT met'}"
        print(f"{mode:12s} {wall:7.1f} s wall, {cpu:7.1f} s CPU  ({verdict}); stages "
              + ", ".join(f"{s['out_dims'][0]}: {s['epochs']} ep, {s['choice']}" for s in stages), flush=True)
    print()
    print(markdown_table(["mode", "wall s", "CPU s", "target s", "met"],
                         [[r["mode"], r["wall_s"], r["cpu_s"], "-" if r["target_s"] is None else r["target_s"],
                           "-" if r["met"] is None else r["met"]] for r in records], ".1f"))
    out = Path(a.json) if a.json else RESULTS / f"train-time-{a.n}{f'-{D}d' if a.lift else ''}.json"
    lifted = f", lifted to {D} dims (N(0, {LIFT_SIGMA}^2) noise)" if a.lift else ""
    write_json(out, {"data": f"SciFact {MODEL} tiled to {a.n} rows, N(0, 0.02^2) noise{lifted}", "threads": a.threads,
                     "machine": info, "argv": sys.argv[1:], "records": records})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
