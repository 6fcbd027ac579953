"""The scale benchmark at 100k rows, as CI runs it: every phase in its own process, peak RSS from the kernel.

A smaller configuration than the 1M run (``benchmarks/results/scale-1000000*.md``) so that it takes about a
minute on 2 cores: PCA instead of SMEC training (trained on 20k rows), one engine (Flat) at one dim (64),
300 queries. The memory bound of issue 6 is asserted for both file-backed full stores: peak RSS of the build
and of the search processes <= 2.5 x the reduced index in RAM + 1 GiB; a load must take <= 10 s.
"""

from __future__ import annotations

import json

import pytest
from conftest import run_benchmark


@pytest.mark.realdata
def test_scale_100k_meets_the_memory_bound(tmp_path):
    out = tmp_path / "scale.json"
    run_benchmark("scale.py", "--n", "100000", "--compressor", "pca", "--train-rows", "20000", "--engines", "Flat",
                  "--dims", "64", "--stores", "mmap,disk", "--queries", "300", "--b1-queries", "50", "--runs", "1",
                  "--work", tmp_path / "work", "--out", out)
    res = json.loads(out.read_text())
    (config,) = res["configs"]
    assert config["build"]["ntotal"] == 100_000
    rss = [t for t in res["targets"] if "peak RSS" in t["target"]]
    load = [t for t in res["targets"] if "load of the saved index" in t["target"]]
    assert len(rss) == len(load) == 2
    for t in rss + load:
        assert t["met"], t
    for store, search in config["search"].items():
        assert search["full"]["recall@10"] > search["none"]["recall@10"] + 0.2  # the rerank from the store works
        assert search["peak_rss"] < 2.5 * config["build"]["reduced_bytes"] + 2**30
    # the pread store keeps the candidates' pages out of the process: less file-backed RSS than the mapped one
    files = {store: config["search"][store]["peak_sampled_rssfile"] for store in ("disk", "mmap")}
    assert files["disk"] + 50 * 2**20 < files["mmap"], files  # 300 x 100 candidates touch most of the 146 MiB
    assert not list((tmp_path / "work").glob("index-*"))  # saved indexes are removed after each config
