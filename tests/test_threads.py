"""The training thread policy: one torch thread per idle core, OpenMP threads that sleep, the user's setting wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from smec_index import SMEC, _threads
from smec_index._threads import ENV_THREADS, busy_cores, choose_threads, set_wait_policy, training_threads


@pytest.fixture(autouse=True)
def no_user_threads(monkeypatch):
    monkeypatch.delenv(ENV_THREADS, raising=False)


@pytest.mark.parametrize("cores, busy, current, expected", [
    (2, 0, 2, 2),    # idle machine: every core
    (2, 1, 2, 1),    # one other CPU-bound process: the idle core only
    (2, 2, 2, 1),    # fully busy: still one thread, never zero
    (8, 3, 8, 5),
    (8, 0, 4, 4),    # never above torch's count (the user lowered it, or OMP_NUM_THREADS did)
])
def test_one_thread_per_idle_core(cores, busy, current, expected):
    assert choose_threads(current, cores=cores, busy=busy) == expected


def test_the_environment_variable_wins(monkeypatch):
    monkeypatch.setenv(ENV_THREADS, "3")
    assert choose_threads(2, cores=2, busy=2) == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(ENV_THREADS, bad)
        with pytest.raises(ValueError, match=ENV_THREADS):
            choose_threads(2, cores=2, busy=0)


def test_busy_cores_counts_others_not_itself():
    # this test process is the only runnable one it knows of; others may run on a shared machine
    assert 0 <= busy_cores(samples=3, interval_s=0.0) <= os.cpu_count() * 64


def test_busy_cores_leaves_out_this_process_s_own_runnable_threads(tmp_path):
    """numpy's BLAS threads spin for a while after a product; counted as other processes they would cost the
    next fit a thread. A fake /proc: 5 runnable threads on the machine, 2 of them (of 3) this process's."""
    (tmp_path / "loadavg").write_text("0.50 0.40 0.30 5/300 1234\n")
    for tid, state in ((11, "R"), (12, "S"), (13, "R")):
        (tmp_path / "self" / "task" / str(tid)).mkdir(parents=True)
        (tmp_path / "self" / "task" / str(tid) / "stat").write_text(f"{tid} (py (thread) x) {state} 1 2 3\n")
    assert _threads._runnable_here(str(tmp_path)) == 2
    assert busy_cores(samples=3, interval_s=0.0, proc=str(tmp_path)) == 3
    (tmp_path / "self" / "task" / "13" / "stat").write_text("13 (py) S 1 2 3\n")
    assert busy_cores(samples=3, interval_s=0.0, proc=str(tmp_path)) == 4


def test_training_threads_sets_and_restores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(_threads, "busy_cores", lambda: _threads.available_cores())  # a fully busy machine
    with training_threads() as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_fit_runs_under_the_policy(monkeypatch, synth):
    seen = []
    real = _threads.training_threads

    def spy():
        seen.append(True)
        return real()

    monkeypatch.setattr("smec_index.compressor.api.training_threads", spy)
    SMEC((8,), "smec", progress=False, max_epochs=1, ads_epochs=1, patience=1).fit(synth[:100])
    assert seen == [True]


def test_a_fit_records_the_threads_it_trained_with_and_a_save_keeps_them(monkeypatch, synth, tmp_path):
    """The thread count changes the float sums, so a seed reproduces a fit only at the same count: the model
    says which (None where nothing trained), and a save and a subset keep it."""
    import json

    from safetensors.numpy import load_file

    fast = dict(progress=False, max_epochs=1, ads_epochs=1, patience=1)
    monkeypatch.setenv(ENV_THREADS, "1")
    one = SMEC((8,), "smec", seed=0, **fast).fit(synth[:100])
    assert one.train_threads_ == 1 and one.subset(8).train_threads_ == 1
    assert SMEC((8,), "pca").fit(synth[:100]).train_threads_ is None
    monkeypatch.setenv(ENV_THREADS, "2")
    assert SMEC((8,), "smec", seed=0, **fast).fit(synth[:100]).train_threads_ == 2
    one.save(tmp_path / "m")
    assert SMEC.load(tmp_path / "m").train_threads_ == 1
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    tensors = load_file(str(tmp_path / "m" / "weights.safetensors"))
    del cfg["fitted"]["train_threads"]  # as saved before it was recorded
    assert SMEC._from_saved(cfg, tensors, tmp_path / "m").train_threads_ is None
    for bad in (0, 1.5, True, "2"):
        cfg["fitted"]["train_threads"] = bad
        with pytest.raises(ValueError, match="train_threads="):
            SMEC._from_saved(cfg, tensors, tmp_path / "m")


def test_wait_policy_is_set_before_torch_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert set_wait_policy() is False and "OMP_WAIT_POLICY" not in os.environ  # torch is loaded here: too late
    code = "import os, smec_index, torch; print(os.environ.get('OMP_WAIT_POLICY'))"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "PASSIVE"
    # and torch's OpenMP runtime (libgomp in the CPU wheel) took it: it prints its settings on request
    shown = subprocess.run([sys.executable, "-c", code + "; x = torch.ones(64, 64); (x @ x).sum()"],
                           env={**env, "OMP_DISPLAY_ENV": "true"}, capture_output=True, text=True, check=True).stderr
    if "OPENMP DISPLAY ENVIRONMENT" in shown:
        assert "OMP_WAIT_POLICY = 'PASSIVE'" in shown, shown
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "ACTIVE"
