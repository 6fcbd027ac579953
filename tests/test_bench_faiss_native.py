"""benchmarks/faiss_native.py on SciFact, shortened: the native index hands back CompressedIndex's top-10, and the
cost table says, per engine and batch, the native time over the plain engine's on pre-projected vectors."""

from __future__ import annotations

import json

import pytest
from conftest import run_benchmark


@pytest.mark.realdata
def test_faiss_native_benchmark_small_run(tmp_path):
    out = tmp_path / "native.json"
    run_benchmark("faiss_native.py", "--data", "scifact", "--single", "20", "--repeats", "1", "--out", out)
    payload = json.loads(out.read_text())
    assert payload["commit"] and payload["threads"]["OMP_NUM_THREADS"] == "1"
    records = payload["records"]
    assert [r["engine"] for r in records] == ["Flat", "HNSW32", "IVF256,Flat", "SQ8"]
    for r in records:
        assert r["overlap10_to_faiss"] >= 0.999, r  # the handed-out index is the same engine state
        assert r["recall10_vs_exact"]["to_faiss"] == pytest.approx(r["recall10_vs_exact"]["compressed_index"], abs=1e-3)
    rows = payload["targets"]
    assert [(t["engine"], t["batch"]) for t in rows] == [(e, b) for e in ("Flat", "HNSW32", "IVF256,Flat", "SQ8")
                                                         for b in ("1", "1000")]
    for t, (r, key) in zip(rows, [(r, k) for r in records for k in ("ms_per_query_batch1", "ms_batch1000")]):
        ratio = r[key]["native"] / r[key]["pre_projected"]
        assert t["ratio_to_pre_projected"] == pytest.approx(ratio, abs=1e-3) and t["met"] == (ratio <= 1.05)
