"""benchmarks/scale.py on a small tiled corpus: each phase in its own process, targets and provenance recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import scale as bench  # noqa: E402


@pytest.mark.realdata
def test_scale_benchmark_records_phases_targets_and_provenance(tmp_path):
    from smec_index.datasets import default_data_dir

    if not (default_data_dir() / "emb").is_dir():
        pytest.skip("real data not found")
    out = tmp_path / "scale.json"
    argv = ["--n", "3000", "--train-rows", "2000", "--dims", "64", "--engines", "Flat", "--queries", "50",
            "--b1-queries", "10", "--runs", "1", "--work", str(tmp_path / "work"), "--out", str(out)]
    assert bench.main(argv) == 0
    p = json.loads(out.read_text())
    assert p["command"] == "python benchmarks/scale.py " + " ".join(argv)
    assert len(p["commit"]) == 40 and isinstance(p["dirty"], bool)
    assert set(p["threads"]) >= {"OMP_NUM_THREADS", "torch"}
    (config,) = p["configs"]
    assert (config["engine"], config["dim"]) == ("Flat", 64) and set(config["search"]) == {"mmap", "disk"}
    assert p["targets"] and all(t["met"] in (True, False, None) for t in p["targets"])  # None: pca, no target
    assert f"commit {p['commit'][:10]}" in out.with_suffix(".md").read_text()
