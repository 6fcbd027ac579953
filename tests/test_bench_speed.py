"""benchmarks/speed.py on a few thousand tiled rows: every engine it names builds, is measured, and the
byte accounting separates a graph index that fits a tenth of the raw vector (HNSW16-SQ8) from one that
does not (HNSW32)."""

from __future__ import annotations

import json

import pytest
from conftest import run_benchmark


@pytest.mark.realdata
def test_speed_benchmark_small_run(tmp_path):
    run_benchmark("speed.py", "--n", "3000", "--configs", "Flat@64,HNSW16-SQ8@64,HNSW32@64", "--skip-scifact",
                  "--b1-queries", "20", "--runs", "1", "--method", "pca", "--out", tmp_path)
    payload = json.loads((tmp_path / "speed-3000.json").read_text())
    assert {p.name for p in tmp_path.iterdir()} == {"speed-3000.json", "speed-3000.md", "speed-3000.png"}
    recs = payload["result"]["records"]
    ram = {r["engine"]: r["ram_index"] for r in recs}
    raw_tenth = payload["D"] * 4 / 10
    assert ram["HNSW16-SQ8"] <= raw_tenth < ram["HNSW32"]
    assert 64 * 4 <= ram["Flat"] <= raw_tenth
    flat = next(r for r in recs if r["engine"] == "Flat" and r["rerank"] == "none")
    assert flat["recall@10_same_dim"] == 1.0
    for r in recs:
        assert r["qps_b1"] > 0 and r["qps_b1000"] > 0 and 0 <= r["recall@10"] <= 1
    # every engine gets its byte target checked (on disk the compressor's files dominate at 3,000 rows)
    byte_targets = [t["target"] for t in payload["targets"] if t["target"].startswith("bytes/vec at 64")]
    assert sorted(t.rsplit(": ", 1)[1] for t in byte_targets) == ["Flat", "HNSW16-SQ8", "HNSW32"]
