"""What the command line prints and draws: markdown tables, the machine a result came from, the nDCG plot."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ._fsutil import atomic_file

__all__ = ["markdown_table", "environment", "describe_environment", "curves_by_label", "plot_ndcg_vs_bytes",
           "human_bytes", "write_json", "provenance", "quality_tables", "quality_targets", "ablation_table",
           "best_time", "save_figure"]


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence], floatfmt: str = ".4f") -> str:
    """A GitHub markdown table, the first column left-aligned and the others right-aligned (numbers); floats
    formatted with ``floatfmt``, everything else with ``str``."""
    def cell(x: object) -> str:
        return format(x, floatfmt) if isinstance(x, float) else str(x)

    lines = ["| " + " | ".join(headers) + " |", "|---|" + "".join("---:|" for _ in headers[1:])]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


_NUMBER_LIST = re.compile(r"\[\s*(-?[0-9][-+0-9.eE]*(?:,\s*-?[0-9][-+0-9.eE]*)*)\s*\]")


def write_json(path: str | Path, payload: dict) -> Path:
    """Write ``payload`` as indented JSON, atomically (``_fsutil.atomic_file``); a list of plain numbers (a
    per-query score, a curve) stays on one line, so 3,000 queries take one line, not 3,000."""
    text = _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                            json.dumps(payload, indent=2))
    with atomic_file(path) as f:
        f.write(text)
    return Path(path)


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Lay out ``fig`` and write it to ``path`` (its format from the suffix) atomically (``_fsutil.atomic_file``),
    then close it so that a process drawing many plots does not keep them all."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        fig.tight_layout()
        with atomic_file(path, "wb") as f:
            fig.savefig(f, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def quality_tables(records: Sequence[dict]) -> str:
    """nDCG@10 of ``run_quality`` records as one markdown table per mode: a row per method, a column per dim
    (largest first), and the method's training seconds."""
    out = []
    for mode in dict.fromkeys(r["mode"] for r in records):
        recs = [r for r in records if r["mode"] == mode]
        cols = sorted({r["dim"] for r in recs}, reverse=True)
        by = {(r["method"], r["dim"]): r for r in recs}
        methods = list(dict.fromkeys(r["method"] for r in recs))
        rows = [[m] + [by[(m, d)]["ndcg@10"] if (m, d) in by else "-" for d in cols]
                + [f'{max(r["train_s"] for r in recs if r["method"] == m):.1f}'] for m in methods]
        out.append(f"nDCG@10, {mode}:\n\n" + markdown_table(["method"] + [str(d) for d in cols] + ["train_s"], rows))
    return "\n\n".join(out)


def quality_targets(records: Sequence[dict]) -> str:
    """The compressor's quality goals checked on ``run_quality`` records, one row each, in nDCG@10 points.

    Supervised: smec >= max(mrl, search-adaptor) at every dim, and smec >= mrl + 1.0 on the mean of the two
    smallest dims, and smec >= unsupervised smec - 0.3 at every dim (labels never hurt). Unsupervised (and
    unlabelled, smec fitted on queries without their qrels): smec >= pca at every dim, and >= pca + 1.5 on the
    mean of the two smallest dims; unlabelled smec >= unsupervised smec - 0.3 at every dim (queries never hurt).
    A goal whose methods were not run is left out; "" when none can be checked.
    """
    rows = []
    for mode, peers, margin in (("supervised", ("mrl", "search-adaptor"), 1.0), ("unsupervised", ("pca",), 1.5),
                                ("unlabelled", ("pca",), 1.5)):
        by = {(r["method"], r["dim"]): r["ndcg@10"] for r in records if r["mode"] == mode}
        # the goals are on the reduced dims, not on the full dim ("full" is the raw reference there)
        dims = sorted((d for m, d in by if m == "smec" and ("full", d) not in by and all((p, d) in by for p in peers)),
                      reverse=True)
        if not dims:
            continue
        for d in dims:
            best = max(peers, key=lambda p: by[(p, d)])
            gap = 100 * (by[("smec", d)] - by[(best, d)])
            named = peers[0] if len(peers) == 1 else f"max({', '.join(peers)})"
            rows.append([mode, f"smec >= {named} at {d}", f"{by[('smec', d)]:.4f} vs {best} "
                         f"{by[(best, d)]:.4f}", f"{gap:+.2f}", "met" if gap >= 0 else "not met"])
        small = dims[-2:]
        mean = {m: sum(by[(m, d)] for d in small) / len(small) for m in ("smec", peers[0])}
        gap = 100 * (mean["smec"] - mean[peers[0]])
        rows.append([mode, f"smec >= {peers[0]} + {margin:.1f} pt, mean of {' and '.join(map(str, small))}",
                     f"{mean['smec']:.4f} vs {mean[peers[0]]:.4f}", f"{gap:+.2f}", "met" if gap >= margin else "not met"])
    # labels (and queries without them) never hurt: smec within 0.3 points of unsupervised smec at every reduced dim
    uns = {r["dim"]: r["ndcg@10"] for r in records if r["mode"] == "unsupervised" and r["method"] == "smec"}
    for mode in ("supervised", "unlabelled"):
        got = {r["dim"]: r["ndcg@10"] for r in records if r["mode"] == mode and r["method"] == "smec"}
        for d in sorted(set(got) & set(uns), reverse=True):
            gap = 100 * (got[d] - uns[d])
            rows.append([mode, f"smec >= unsupervised smec - 0.3 pt at {d}", f"{got[d]:.4f} vs {uns[d]:.4f}",
                         f"{gap:+.2f}", "met" if gap >= -0.3 else "not met"])
    if not rows:
        return ""
    return markdown_table(["mode", "goal", "nDCG@10", "difference (pt)", "met"], rows)


def ablation_table(rows: Sequence[dict]) -> str:
    """The paper's Table 1 layout from ``run_ablation`` rows: a row per variant, nDCG@10 per dim (largest
    first), and the variant's training seconds."""
    dims = sorted((int(k.split("@")[-1]) for k in rows[0] if k.startswith("ndcg@10@")), reverse=True)
    return markdown_table(["variant"] + [str(d) for d in dims] + ["train_s"],
                          [[r["variant"]] + [r[f"ndcg@10@{d}"] for d in dims] + [f"{r['train_s']:.1f}"] for r in rows])


def best_time(fn: Callable[[], object], repeats: int = 3, min_seconds: float = 0.0) -> float:
    """The shortest wall time of at least ``repeats`` calls of ``fn``, calling on until ``min_seconds`` have
    passed, in seconds: other jobs on the machine only ever add time, so the minimum is the least disturbed."""
    best, start, n = float("inf"), time.perf_counter(), 0
    while n < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        n += 1
    return best


def human_bytes(n: float) -> str:
    """1536 -> "1.5 KiB": binary units, one decimal."""
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if abs(n) < 1024 or unit == "TiB":
            break
    return f"{n:.1f} {unit}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment() -> dict:
    """The machine and the package versions that move the numbers, stored with every result (the same keys
    as ``benchmarks/common.py``'s ``machine_info``)."""
    import torch

    versions = {}
    for pkg in ("smec-index", "torch", "numpy", "faiss-cpu", "hnswlib", "qdrant-edge-py", "qdrant-client"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        memory_gib = round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "cpu": _cpu_model(),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "memory_gib": memory_gib,
            "os": platform.platform(), "python": platform.python_version(), "versions": versions,
            "cuda": torch.cuda.is_available(), **provenance()}


def provenance() -> dict:
    """Where a result came from: the git commit of the working tree and whether it had uncommitted changes
    (``dirty``; files under ``benchmarks/results/`` do not count), the command line, and the thread settings that move timings (OpenMP environment, torch)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    # results a run writes into the tree are its output, not a change to the code that produced it
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)benchmarks/results") \
        if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else list(sys.argv),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def describe_environment(env: dict) -> str:
    """One line: CPU, cores, memory, Python and the main versions."""
    v = env["versions"]
    mem = f", {env['memory_gib']} GiB" if env.get("memory_gib") else ""
    return (f"{env['cpu']}, {env['cores']} cores{mem}; Python {env['python']}, torch {v['torch']}, "
            f"numpy {v['numpy']}, faiss-cpu {v['faiss-cpu']}")


def curves_by_label(records: Iterable[dict], label: Callable[[dict], str | None]) -> dict[str, list[tuple[int, float]]]:
    """Group records into plot lines: ``label(record)`` -> sorted (bytes per vector, nDCG@10); None skips a record."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        name = label(r)
        if name is not None:
            curves.setdefault(name, []).append((4 * int(r["dim"]), float(r["ndcg@10"])))
    return {k: sorted(v) for k, v in curves.items()}


def plot_ndcg_vs_bytes(curves: dict[str, list[tuple[int, float]]], path: str | Path, title: str,
                       reference: float | None = None) -> Path:
    """PNG of nDCG@10 against bytes per vector (float32, log scale), one line per curve; ``reference``
    (the full-dim nDCG@10) as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for label, pts in curves.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    if reference is not None:
        ax.axhline(reference, color="grey", ls="--", label=f"full dim, raw ({reference:.3f})")
    ax.set_xscale("log", base=2)
    ticks = sorted({x for pts in curves.values() for x, _ in pts})
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("bytes per vector (float32 = 4 x dims)")
    ax.set_ylabel("nDCG@10")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
