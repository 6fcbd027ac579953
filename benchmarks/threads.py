"""Training under load: the same fit on an idle machine and beside CPU-bound processes.

    python benchmarks/threads.py [--rows 1460] [--dims 128,64,32] [--loads 0,2] [--compare] [--json OUT]

Each fit runs in a fresh Python process (OpenMP reads its wait policy when torch loads), on the first
``--rows`` rows of the SciFact corpus shipped with the package, unsupervised, with the library's default
training. For each load L in ``--loads``, L processes spinning ``while True: pass`` start first and are
stopped after the fit. The target (issue 19): fit time at load 2 at most 2.5x the time at load 0 on two
cores. ``--compare`` also runs every load with the thread policy off (``SMEC_INDEX_THREADS`` = all cores,
``OMP_WAIT_POLICY=ACTIVE``: spinning threads on every core). Timings are only meaningful on a machine with
nothing else running: the load average is recorded at the start and end of each fit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, describe_machine, load_avg, machine_info, write_json  # noqa: E402

TARGET_RATIO = 2.5
SPIN = "while True: pass"


def child(rows: int, dims: tuple[int, ...], seed: int) -> None:
    """The timed fit (in its own process); prints one JSON line."""
    import torch

    from smec_index import SMEC
    from smec_index._threads import choose_threads
    from smec_index.data import DEMO_MODEL, demo_data_dir
    from smec_index.datasets import load_beir

    X = load_beir(demo_data_dir(), DEMO_MODEL).corpus[:rows]
    threads = choose_threads(torch.get_num_threads())
    t0 = time.perf_counter()
    smec = SMEC(dims, "smec", seed=seed, progress=False).fit(X)
    print(json.dumps({"fit_s": round(time.perf_counter() - t0, 2), "train_s": round(smec.train_s_, 2),
                      "threads": threads, "torch_threads_default": torch.get_num_threads(),
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}))


def timed_fit(rows: int, dims: tuple[int, ...], seed: int, load: int, policy: bool) -> dict:
    """Start ``load`` spinning processes, run the fit in a child process, stop the spinners."""
    env = dict(os.environ)
    if not policy:
        env.update(SMEC_INDEX_THREADS=str(os.cpu_count() or 1), OMP_WAIT_POLICY="ACTIVE")
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(load)]
    try:
        time.sleep(1.0 if load else 0.0)  # let the spinners be running when the fit picks its threads
        start_load = load_avg()
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", "--rows", str(rows), "--dims",
                              ",".join(map(str, dims)), "--seed", str(seed)], env=env, check=True,
                             capture_output=True, text=True).stdout
        wall = time.perf_counter() - t0
    finally:
        for p in spinners:
            p.kill()
            p.wait()
    rec = json.loads(out.strip().splitlines()[-1])
    return {"load": load, "policy": "on" if policy else "off", "process_s": round(wall, 2), **rec,
            "load_start": start_load, "load_end": load_avg()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1460, help="corpus rows to fit on (default 1460)")
    ap.add_argument("--dims", default="128,64,32", help="dims to train (default 128,64,32)")
    ap.add_argument("--loads", default="0,2", help="competing CPU-bound processes, comma-separated (default 0,2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", action="store_true", help="also run with the thread policy off")
    ap.add_argument("--json", default=str(RESULTS / "threads.json"), help="where the results go")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    dims = tuple(int(d) for d in args.dims.split(","))
    if args.child:
        child(args.rows, dims, args.seed)
        return
    loads = [int(x) for x in args.loads.split(",")]
    info = machine_info()
    print(f"# threads: {args.rows} rows, dims {list(dims)}, loads {loads}; {describe_machine(info)}")
    records = []
    for policy in ([True, False] if args.compare else [True]):
        for load in loads:
            rec = timed_fit(args.rows, dims, args.seed, load, policy)
            records.append(rec)
            print(f"policy {rec['policy']:>3}, load {load}: fit {rec['fit_s']:.1f} s on {rec['threads']} thread(s) "
                  f"(load average {rec['load_start']} -> {rec['load_end']})")
    targets = []
    for policy in ("on", "off"):
        fit = {r["load"]: r["fit_s"] for r in records if r["policy"] == policy}
        if 0 in fit and 2 in fit:
            ratio = fit[2] / fit[0]
            targets.append({"target": f"policy {policy}: fit at load 2 / load 0 <= {TARGET_RATIO}",
                            "value": round(ratio, 2), "met": ratio <= TARGET_RATIO})
            print(f"policy {policy}: load 2 / load 0 = {ratio:.2f} (target <= {TARGET_RATIO})")
    payload = {"command": "python benchmarks/threads.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "rows": args.rows, "dims": list(dims), "seed": args.seed, "machine": info, "records": records,
               "targets": targets}
    print(f"wrote {write_json(args.json, payload)}")


if __name__ == "__main__":
    main()
