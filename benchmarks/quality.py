"""Compressor quality on a BEIR-layout data set: every method x dim x mode, plus the paper's ablation.

    python benchmarks/quality.py --model all-MiniLM-L6-v2
    python benchmarks/quality.py --data DIR --model NAME --dims 128,64,32 --methods smec,pca \
        --mode both --json out.json --ablation
    python benchmarks/quality.py --data ../shared/data/scifact ../shared/data/debian --seeds 0,1,2

With several ``--data`` directories each writes its own JSON (``results/quality-<data>-<model>.json``) and a
summary table across them is printed at the end.

Prints markdown tables and writes JSON (records with keys method, dim, mode, ndcg@10, recall@100,
mrr@10, train_s) with the machine and versions that produced them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, describe_machine, machine_info, markdown_table, write_json  # noqa: E402

from smec_index.compressor import METHODS  # noqa: E402
from smec_index.datasets import default_data_dir, load_beir  # noqa: E402
from smec_index.quality import ALL_MODES, MODES, average_runs, default_dims, run_ablation, run_quality  # noqa: E402
from smec_index.report import ablation_table, quality_tables, quality_targets, save_figure  # noqa: E402


def _print_targets(records: list[dict]) -> None:
    table = quality_targets(records)
    if table:
        print("\nGoals (nDCG@10 points):\n\n" + table)


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _modes(s: str) -> str | list[str]:
    if s in ("both", "all"):
        return s
    modes = _csv(s)
    bad = [m for m in modes if m not in ALL_MODES]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"expected both, all or a comma list of {', '.join(ALL_MODES)}; got {s!r}")
    return modes


def plot(records: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in ALL_MODES if any(r["mode"] == m for r in records)] or list(MODES)
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4), sharey=True, squeeze=False)
    axes = axes[0]
    methods = list(dict.fromkeys(r["method"] for r in records if r["method"] != "full"))
    colour = {m: f"C{i}" for i, m in enumerate(methods)}
    for ax, mode in zip(axes, modes):
        recs = [r for r in records if r["mode"] == mode and r["method"] != "full"]
        for m in dict.fromkeys(r["method"] for r in recs):
            pts = sorted((r["dim"], r["ndcg@10"]) for r in recs if r["method"] == m)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m, color=colour[m])
        full = [r for r in records if r["mode"] == mode and r["method"] == "full"]
        if full:
            ax.axhline(full[0]["ndcg@10"], color="grey", ls="--", label="full dim (raw)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("dims (bytes/vector = 4 x dims)")
        ax.set_title(mode)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("nDCG@10")
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    save_figure(fig, path)


def merge(parts: list[str], out: str | None, plot_path: str | None) -> int:
    """One result file from runs made in parts on the same data, model and dims: parts with the same seeds (e.g.
    one mode each) are joined; parts with different seeds (e.g. one seed each) are averaged over every seed
    from their per-seed records."""
    payloads = [json.loads(Path(f).read_text()) for f in parts]
    first = payloads[0]
    for p in payloads[1:]:
        for key in ("dataset", "model", "dims"):
            if p[key] != first[key]:
                raise SystemExit(f"merge: {key} differs between parts ({p[key]!r} vs {first[key]!r})")
    seen, records = set(), []
    for p in payloads:
        for r in p["records"]:
            key = (r["method"], r["dim"], r["mode"])
            if key not in seen:
                seen.add(key)
                records.append(r)
    per_seed: dict[str, list] = {}
    for p in payloads:
        for seed, recs in p.get("per_seed", {}).items():
            per_seed.setdefault(seed, []).extend(recs)
    seeds = sorted({int(x) for p in payloads for x in p["seed"]})
    if any(sorted(p["seed"]) != seeds for p in payloads):
        if not all("per_seed" in p for p in payloads):
            raise SystemExit("merge: parts with different seeds need their per-seed records (per_seed)")
        for seed, recs in per_seed.items():
            keys = [(r["method"], r["dim"], r["mode"]) for r in recs]
            if len(keys) != len(set(keys)):
                raise SystemExit(f"merge: seed {seed} has the same (method, dim, mode) in two parts")
        records = average_runs([per_seed[str(s)] for s in seeds], ("method", "dim", "mode"))
    merged = {k: first[k] for k in ("data", "dataset", "model", "dim", "dims")}
    merged["seed"] = seeds
    merged.update(machine=first["machine"], records=records,
                  parts=[{"file": Path(f).name, "argv": p.get("argv"), "machine": p["machine"], "wall_s": p.get("wall_s")}
                         for f, p in zip(parts, payloads)])
    if per_seed:
        merged["per_seed"] = per_seed
    ablation = [p["ablation"] for p in payloads if "ablation" in p]
    if ablation:
        merged["ablation"] = ablation[0]
    print(f"# quality (merged from {len(parts)} parts): {first['dataset']} / {first['model']}")
    print(f"# machine: {describe_machine(first['machine'])}")
    print(quality_tables(records))
    _print_targets(records)
    if ablation:
        print("\n### Ablation (paper Table 1 layout), nDCG@10, supervised\n")
        print(ablation_table(ablation[0]["rows"]))
    dest = Path(out) if out else RESULTS / f"quality-{first['dataset']}-{first['model']}.json"
    write_json(dest, merged)
    print(f"\nwrote {dest}")
    if plot_path:
        plot(records, Path(plot_path), f"{first['dataset']} / {first['model']}")
        print(f"wrote {plot_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", default=[str(default_data_dir())],
                   help="BEIR-layout directories (default: shared SciFact); several print a summary across them")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="embedding model under DATA/emb/")
    p.add_argument("--dims", type=lambda s: [int(x) for x in _csv(s)], default=None)
    p.add_argument("--methods", type=_csv, default=list(METHODS))
    p.add_argument("--mode", type=_modes, default="both",
                   help="unsupervised, supervised, unlabelled (smec fitted on the training queries' vectors without "
                   "their qrels), a comma list of them, both (unsupervised,supervised; the default) or all")
    p.add_argument("--ablation", action="store_true", help="also run the paper's Table 1 ablation (supervised)")
    p.add_argument("--sample", type=int, metavar="N",
                   help="a small corpus cut from each set: N documents, half judged, half random (BeirDataset.sample)")
    p.add_argument("--seeds", type=lambda s: [int(x) for x in _csv(s)], default=[0],
                   help="training seeds; with several, every number is the mean over them (default 0)")
    p.add_argument("--json", default=None, help="output JSON (default benchmarks/results/quality-<data>-<model>.json)")
    p.add_argument("--plot", default=None, help="output PNG of nDCG@10 against dims")
    p.add_argument("--out", default=str(RESULTS), help="folder of the default JSON names (default benchmarks/results)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--reuse", default=None, metavar="JSON",
                   help="with --ablation: take the mrl and smec rows from this earlier result instead of retraining")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="combine the JSON of runs made in parts (e.g. one mode each, in parallel) into --json")
    a = p.parse_args(argv)
    if a.merge:
        return merge(a.merge, a.json, a.plot)

    if (a.json or a.plot) and len(a.data) > 1:
        p.error("--json and --plot name one file: give one --data, or let each data set write its default JSON")
    summary = []
    for data in a.data:
        summary += run_one(a, data)
    if len(a.data) > 1:
        print("\n# Summary across data sets (nDCG@10, mean over seeds)\n")
        print(summary_table(summary))
    return 0


def run_one(a: argparse.Namespace, data: str) -> list[dict]:
    """Every (method, dim, mode) on one data set: prints its tables, writes its JSON, returns its records."""
    ds = load_beir(data, a.model)
    if a.sample:
        ds = ds.sample(a.sample)
    dims = a.dims or list(default_dims(ds.dim))
    modes = list(MODES) if a.mode == "both" else list(ALL_MODES) if a.mode == "all" else a.mode
    info = machine_info()
    print(f"# quality: {ds.name} / {ds.model} (D={ds.dim}), {len(ds.doc_ids):,} documents, dims {dims}, "
          f"methods {a.methods}, modes {modes}")
    print(f"# machine: {describe_machine(info)}")
    t0 = time.perf_counter()
    runs, ablations = [], []
    for seed in a.seeds:
        print(f"## seed {seed}", flush=True)
        runs.append(run_quality(ds, a.methods, dims, modes, seed, progress=not a.quiet,
                                log=lambda line: print(line, flush=True)))
        if a.ablation:
            known = runs[-1] + (json.loads(Path(a.reuse).read_text())["records"] if a.reuse else [])
            ablations.append(run_ablation(ds, dims, "supervised", seed, progress=not a.quiet, known=known))
    records = average_runs(runs, ("method", "dim", "mode"))
    payload = {"data": str(data), "dataset": ds.name, "model": ds.model, "dim": ds.dim, "dims": dims,
               "n_corpus": len(ds.doc_ids), "sample": a.sample,
               "seed": a.seeds, "machine": info, "argv": sys.argv[1:], "records": records,
               "per_seed": dict(zip(map(str, a.seeds), runs))}
    if len(a.seeds) > 1:
        print(f"\nMeans over seeds {a.seeds}; largest std of nDCG@10 over seeds: "
              f"{max(r.get('std_ndcg@10', 0.0) for r in records):.4f}")
    print(quality_tables(records))
    _print_targets(records)
    if a.ablation:
        rows = average_runs(ablations, ("variant",))
        payload["ablation"] = {"mode": "supervised", "rows": rows, "per_seed": ablations}
        print("\n### Ablation (paper Table 1 layout), nDCG@10, supervised\n")
        print(ablation_table(rows))
    payload["wall_s"] = round(time.perf_counter() - t0, 1)
    out = Path(a.json) if a.json else Path(a.out) / f"quality-{ds.name}-{ds.model}.json"
    write_json(out, payload)
    print(f"\nwrote {out}")
    if a.plot:
        plot(records, Path(a.plot), f"{ds.name} / {ds.model}")
        print(f"wrote {a.plot}")
    return [{**r, "dataset": ds.name} for r in records]


def summary_table(records: list[dict]) -> str:
    """One row per (data set, mode, method): nDCG@10 at each of its dims (largest first) and the training time."""
    rows = []
    for key in dict.fromkeys((r["dataset"], r["mode"], r["method"]) for r in records):
        recs = sorted((r for r in records if (r["dataset"], r["mode"], r["method"]) == key), key=lambda r: -r["dim"])
        rows.append([*key, " / ".join(f"{r['dim']}: {r['ndcg@10']:.4f}" for r in recs),
                     f"{max(r['train_s'] for r in recs):.1f}"])
    return markdown_table(["data set", "mode", "method", "nDCG@10 by dim", "train_s"], rows)


if __name__ == "__main__":
    raise SystemExit(main())
