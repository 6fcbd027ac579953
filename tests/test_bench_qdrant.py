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


def test_frontier_picks_the_best_stage_within_the_peers_bytes_at_the_same_rescore():
    def rec(config, rescored, b, r):
        return {"config": config, "label": config, "rescored": rescored, "code_b_per_pt": b, "recall@10": r}

    res = {"records": [rec("peer-binary-r20", 20, 48, 0.86), rec("peer-turbo2-r20", 20, 104, 0.98),
                       rec("smec128-turbo2-r20", 20, 40, 0.90), rec("smec256-turbo2-r20", 20, 72, 0.97),
                       rec("smec128-turbo1-r20", 20, 24, 0.77),
                       rec("smec256-turbo4-r50", 50, 136, 0.999),  # another re-score budget: never compared
                       {"config": "peer-bq", "label": "classic", "code_b_per_pt": 48, "recall@10": 0.5}]}
    rows = {f["peer"]: f for f in bench.frontier(res)}
    assert set(rows) == {"peer-binary-r20", "peer-turbo2-r20"}  # classic configurations have no "rescored"
    b = rows["peer-binary-r20"]
    assert (b["within"]["config"], b["within"]["met"]) == ("smec128-turbo2-r20", True)
    assert (b["half"]["config"], b["half"]["met"]) == ("smec128-turbo1-r20", False)
    t = rows["peer-turbo2-r20"]
    assert (t["within"]["config"], t["within"]["met"]) == ("smec256-turbo2-r20", False)
    assert t["half"]["config"] == "smec128-turbo2-r20"
    table = bench.frontier_table(res)
    assert table.count("\n") == 3 and "| smec128-turbo2-r20 | 40 | 0.900 | met |" in table
    assert bench.code_bytes({"dims": (128,), "quantization": "turbo2"}, 384) == 40
    assert bench.code_bytes({"dims": (), "quantization": "pq-x32"}, 384) == 48


def test_half_dim_group_is_asked_for_and_needs_its_stage(tmp_path):
    """The default run is the classic and frontier groups; the half-dim group needs 'half' in --dims, refused
    before any work otherwise."""
    assert set(bench.HALF).isdisjoint(bench.CLASSIC + bench.FRONTIER) and len(bench.HALF) == 6
    with pytest.raises(SystemExit):
        bench.main(["--configs", "half", "--out", str(tmp_path / "q"), "--workdir", str(tmp_path)])
    assert not list(tmp_path.iterdir())
    cfg = bench.resolve(bench.CONFIGS["smechalf-turbo2-r20"], 384)
    assert cfg["layout"]["dims"] == (192,) and cfg["label"] == "smec_192 turbo2 -> full, re-scored 20"
    assert bench.code_bytes(cfg["layout"], 384) == 56  # the bytes of TurboQuant 1 bit on the full 384-d vector
