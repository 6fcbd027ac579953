"""Training time of SMEC on a 100k x 768 corpus, unsupervised and supervised (issue: <= 60 s / <= 120 s on 2 cores).

Data: SciFact's all-mpnet-base-v2 corpus vectors (5,183 x 768) tiled to ``--n`` rows with N(0, 0.02^2) noise
per coordinate and re-normalised (``speed.py``'s ``tiled``); supervised fits add SciFact's 809 training queries,
each judged relevant to the first copy of its documents. Tiled near-duplicates say nothing about quality, so
this benchmark reports time (wall and CPU), the epochs each stage ran and what each stage kept; quality is
``quality.py``'s job on real data.

    python benchmarks/train_time.py [--n 100000] [--threads 2] [--modes unsupervised,supervised] [--json OUT]

``--modes unlabelled`` times a fit on the same training queries' vectors without their judgements (no target).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from common import RESULTS, describe_machine, load_avg, machine_info, markdown_table, write_json  # noqa: E402
from speed import tiled  # noqa: E402

from smec_index import SMEC  # noqa: E402
from smec_index.datasets import default_data_dir, load_beir  # noqa: E402
from smec_index.quality import default_dims  # noqa: E402

MODEL = "all-mpnet-base-v2"
TARGET_S = {"unsupervised": 60.0, "supervised": 120.0}


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="corpus rows (tiled)")
    p.add_argument("--threads", type=int, default=2, help="torch threads for training")
    p.add_argument("--modes", default="unsupervised,supervised")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="output JSON (default benchmarks/results/train-time-<n>.json)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    ds = load_beir(default_data_dir(), MODEL)
    X = tiled(ds.corpus.astype("float32"), a.n)
    dims = list(default_dims(ds.dim))
    info = machine_info()
    print(f"# train time: {a.n:,} x {ds.dim} tiled {MODEL}, dims {dims}, {a.threads} torch threads")
    print(f"# machine: {describe_machine(info)}; load {load_avg()}")
    records = []
    for mode in a.modes.split(","):
        if mode not in ("unsupervised", "supervised", "unlabelled"):
            p.error(f"--modes: expected unsupervised, supervised or unlabelled, got {mode!r}")
        args = ()
        if mode != "unsupervised":
            Qt, pairs = ds.pairs(*ds.supervised_split(a.seed)[:2])
            # unlabelled: the same training queries' vectors without their judgements
            args = (Qt, pairs) if mode == "supervised" else (Qt,)
        load0, t0, c0 = load_avg(), time.perf_counter(), cpu_s()
        smec = SMEC(dims, "smec", seed=a.seed, progress=False).fit(X, *args)
        wall, cpu = time.perf_counter() - t0, cpu_s() - c0
        stages = [{"out_dims": r["out_dims"], "epochs": r["epochs"], "best_epoch": r["best_epoch"],
                   "train_s": r["train_s"], "choice": r.get("choice")} for r in smec.reports_]
        target = TARGET_S.get(mode)
        met = None if target is None else wall <= target
        records.append({"mode": mode, "n": a.n, "dim": ds.dim, "dims": dims, "wall_s": round(wall, 1),
                        "cpu_s": round(cpu, 1), "target_s": target, "met": met,
                        "load_before": load0, "load_after": load_avg(), "stages": stages})
        verdict = "no target" if target is None else f"target {target:.0f} s: {'met' if met else 'NOT met'}"
        print(f"{mode:12s} {wall:7.1f} s wall, {cpu:7.1f} s CPU  ({verdict}); stages "
              + ", ".join(f"{s['out_dims'][0]}: {s['epochs']} ep, {s['choice']}" for s in stages), flush=True)
    print()
    print(markdown_table(["mode", "wall s", "CPU s", "target s", "met"],
                         [[r["mode"], r["wall_s"], r["cpu_s"], "-" if r["target_s"] is None else r["target_s"],
                           "-" if r["met"] is None else r["met"]] for r in records], ".1f"))
    out = Path(a.json) if a.json else RESULTS / f"train-time-{a.n}.json"
    write_json(out, {"data": f"SciFact {MODEL} tiled to {a.n} rows, N(0, 0.02^2) noise", "threads": a.threads,
                     "machine": info, "argv": sys.argv[1:], "records": records})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
