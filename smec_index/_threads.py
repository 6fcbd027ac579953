"""How many torch threads training uses, so that a busy machine slows it at most in proportion to the load.

Training runs many small matrix products; with one OpenMP thread per core, every product waits at a barrier
for the slowest thread, and a thread that shares its core with another process is descheduled for whole
time slices (issue 19: a fit that took under 20 s alone took 721 s beside other work on two cores). So a
fit takes one thread per core that nothing else is using (``training_threads``), and OpenMP threads sleep
instead of spinning while they wait (``OMP_WAIT_POLICY=PASSIVE``, ``set_wait_policy``), so idle workers do
not steal the cores the others need.

The user always wins: ``SMEC_INDEX_THREADS=N`` fixes the count, and ``OMP_NUM_THREADS`` or an earlier
``torch.set_num_threads`` lowering the count are respected (the policy only ever lowers torch's count).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Iterator

__all__ = ["set_wait_policy", "busy_cores", "available_cores", "choose_threads", "training_threads", "ENV_THREADS"]

ENV_THREADS = "SMEC_INDEX_THREADS"


def set_wait_policy() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy or torch is loaded; True when this call set it.

    OpenMP reads the variable once, when its runtime loads (with torch), so ``smec_index/__init__.py`` calls
    this before its first ``import torch``; once torch is loaded the variable would change nothing for it.
    (torch 2.13's CPU wheel ships libgomp: ``OMP_DISPLAY_ENV=true`` shows the policy it took.)"""
    if os.environ.get("OMP_WAIT_POLICY") or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _runnable_here(proc: str = "/proc") -> int:
    """Threads of this process that are runnable now (state R in ``/proc/self/task/*/stat``), the reading
    thread included; 1 where the OS does not tell."""
    running = 0
    try:
        tasks = os.listdir(f"{proc}/self/task")
    except OSError:
        return 1
    for tid in tasks:
        try:
            with open(f"{proc}/self/task/{tid}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:  # the thread ended while we looked
            continue
        fields = stat[stat.rfind(")") + 1:].split()
        running += bool(fields) and fields[0] == "R"
    return max(1, running)


def busy_cores(samples: int = 5, interval_s: float = 0.02, proc: str = "/proc") -> int:
    """Cores other processes keep busy now: the median of a few readings of the runnable threads in
    ``/proc/loadavg`` less this process's own runnable threads, else the 1-minute load average.

    The instantaneous count, not the load average, because the average includes this process's own training
    of the last minute: a second fit right after a first would otherwise see its own load and shrink. Own
    threads are left out because the BLAS threads of numpy's last product spin for a while after it (OpenBLAS):
    a fit that starts right after one (the PCA start of every fit) would otherwise count them as another
    process and take one thread where two cores are idle."""
    counts = []
    for i in range(samples):
        try:
            with open(f"{proc}/loadavg", encoding="ascii") as f:
                total = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            break
        counts.append(total - _runnable_here(proc))
        if i + 1 < samples:
            time.sleep(interval_s)
    if len(counts) == samples:
        return max(0, sorted(counts)[samples // 2])
    try:
        return max(0, round(os.getloadavg()[0]))
    except (AttributeError, OSError):
        return 0


def choose_threads(current: int, cores: int | None = None, busy: int | None = None) -> int:
    """The thread count for a fit: ``SMEC_INDEX_THREADS`` when set, else one per core nothing else is using,
    at least 1 and never above ``current`` (torch's count now, which the user may have lowered)."""
    env = os.environ.get(ENV_THREADS, "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"{ENV_THREADS} must be a positive integer, got {env!r}") from None
        if n < 1:
            raise ValueError(f"{ENV_THREADS} must be a positive integer, got {env!r}")
        return n
    cores = available_cores() if cores is None else cores
    busy = busy_cores() if busy is None else busy
    return max(1, min(current, cores - busy))


@contextlib.contextmanager
def training_threads() -> Iterator[int]:
    """Run a block (a fit) with ``choose_threads`` torch threads; torch's count is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    n = choose_threads(before)
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
