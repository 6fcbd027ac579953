"""What every benchmark prints with its numbers: the machine, the versions, the time.

The helpers live in ``smec_index.report`` (the command line prints the same tables); this module gives the
benchmarks their short names and the results folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from smec_index.report import describe_environment, environment, markdown_table, save_figure, write_json

__all__ = ["RESULTS", "machine_info", "describe_machine", "markdown_table", "write_json", "save_figure", "load_avg",
           "recall", "with_provenance"]

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info() -> dict:
    """CPU, cores, memory, OS, Python, the versions of the packages that move the numbers, and the date."""
    return environment()


def describe_machine(info: dict) -> str:
    """One line: the machine and versions of ``machine_info`` and its date."""
    return f"{describe_environment(info)}; {info['date']}"


def load_avg() -> float:
    """The 1-minute load average, to two decimals (the machine is shared: every timing records it)."""
    return round(os.getloadavg()[0], 2)


def recall(I: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """recall@k of each row of result ids ``I`` against the exact ids ``truth``, averaged over the rows."""
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(I, truth)]))


def commit_note(payload: dict) -> str:
    """``commit <10 hex>`` (``(dirty)`` when the tree had uncommitted changes) of a results payload, for its
    report line; results written before the commit was recorded say so."""
    if not payload.get("commit"):
        return "commit not recorded"
    return f"commit {payload['commit'][:10]}" + (" (dirty)" if payload.get("dirty") else "")


def with_provenance(payload: dict, script: str, argv: list[str] | None, info: dict, load_before: float,
                    prov: dict) -> dict:
    """``payload`` with what a results JSON records beside its numbers: the commit and dirty flag ``prov`` (taken
    when the run started), the command line, the thread settings, the load averages and the machine ``info``."""
    return {**payload, "commit": prov["commit"], "dirty": prov["dirty"],
            "command": " ".join(["python", f"benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])]),
            "threads": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "torch": info.get("torch_threads")},
            "load_avg_before": load_before, "load_avg_after": load_avg(), "machine": info}
