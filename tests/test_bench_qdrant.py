"""benchmarks/qdrant.py: the paired bootstrap it judges quality differences with, and one small real run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import qdrant as bench  # noqa: E402


def test_paired_interval_separates_a_real_difference_from_noise():
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 1, 300)
    assert bench.paired_interval(a, a) == (0.0, 0.0)
    # one query's worth of change in 300: inside the interval of per-query noise
    b = a.copy()
    b[:30] = rng.uniform(0, 1, 30)
    lo, hi = bench.paired_interval(a, b)
    assert lo < 0 < hi
    # every query better by 0.05: the interval excludes 0 and holds the true difference
    lo, hi = bench.paired_interval(a + 0.05, a)
    assert 0.0499 < lo <= hi < 0.0501
    assert bench.paired_interval(a, b, seed=3) == bench.paired_interval(a, b, seed=3)


@pytest.mark.realdata
def test_qdrant_benchmark_runs_on_scifact_and_checks_the_goal(tmp_path):
    from smec_index.datasets import default_data_dir

    if not (default_data_dir() / "emb").is_dir():
        pytest.skip("real data not found")
    out = tmp_path / "q"
    assert bench.main(["--data", "scifact-minilm", "--method", "pca", "--runs", "1", "--out", str(out),
                       "--configs", "peer-bq,smec64i8-full-f16-c20", "--workdir", str(tmp_path)]) == 0
    payload = json.loads(out.with_suffix(".json").read_text())
    (res,) = payload["datasets"]
    by = {r["config"]: r for r in res["records"]}
    assert set(by) == {"peer-bq", "smec64i8-full-f16-c20"}
    for r in by.values():
        assert len(r["ndcg@10_per_query"]) == res["queries"] == 300
        assert abs(np.mean(r["ndcg@10_per_query"]) - r["ndcg@10"]) < 1e-6  # stored to 6 digits
        assert 0 < r["recall@10"] <= 1 and r["qps_b1"] > 0
    (goal,) = bench.goals(res)
    lo, hi = goal["quality_interval"]
    assert lo <= goal["quality_delta"] <= hi
    # what the first stage scans: 64 int8 codes + one float (68 B) against 384 bits of binary code (48 B)
    assert (by["smec64i8-full-f16-c20"]["code_b_per_pt"], by["peer-bq"]["code_b_per_pt"]) == (68, 48)
    assert goal["code_bytes_ok"] is False
    assert "95% paired bootstrap" in bench.goals_table(res)
