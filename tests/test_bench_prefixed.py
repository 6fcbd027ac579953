"""benchmarks/prefixed_queries.py: SciFact's queries re-encoded behind an instruction, the rest copied."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import _require_data
from text_helpers import sentence_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import prefixed_queries  # noqa: E402

from smec_index.datasets import load_beir  # noqa: E402


@pytest.mark.realdata
def test_prefixed_copy_moves_only_the_queries(tmp_path):
    src = _require_data()
    plain = prefixed_queries.build(src, tmp_path / "plain", prefix="", model=sentence_model())
    # no prefix: the bundled model gives back the shipped query vectors (float16 apart)
    assert plain["mean_cos_with_shipped"] > 0.999
    info = prefixed_queries.build(src, tmp_path / "p", model=sentence_model())
    assert info["mean_cos_with_shipped"] < 0.9 and info["prefix"] == prefixed_queries.PREFIX
    ds, orig = load_beir(tmp_path / "p", "all-MiniLM-L6-v2"), load_beir(src, "all-MiniLM-L6-v2")
    np.testing.assert_array_equal(ds.corpus, orig.corpus)
    assert ds.doc_ids == orig.doc_ids and ds.split_queries("test")[1] == orig.split_queries("test")[1]
    meta = json.loads((tmp_path / "p" / "emb" / "all-MiniLM-L6-v2" / "meta.json").read_text())
    assert meta["query_prefix"] == prefixed_queries.PREFIX
    with pytest.raises(SystemExit, match="must not be the source"):
        prefixed_queries.build(tmp_path / "p", tmp_path / "p", model=sentence_model())
