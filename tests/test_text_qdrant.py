"""Texts on Qdrant (Edge and a local-mode server client): ids and texts in payloads, found by a text query."""

from __future__ import annotations

import numpy as np
import pytest
from text_helpers import sentence_model

from smec_index import SMEC
from smec_index.data import demo_data_dir
from smec_index.datasets import iter_jsonl
from smec_index.qdrant import QdrantCompressedCollection
from smec_index.text import Encoder
from smec_index.text.qdrant import QdrantTextCollection, point_id


@pytest.fixture(scope="module")
def claims():
    return [r["text"] for r in list(iter_jsonl(demo_data_dir() / "queries.jsonl.gz"))[:60]]


@pytest.fixture(scope="module")
def enc_and_smec(tmp_path_factory, claims):
    enc = Encoder(sentence_model(), cache=tmp_path_factory.mktemp("cache"), progress=False)
    return enc, SMEC((32,), "pca").fit(enc.encode(claims))


def _collections(tmp_path, smec):
    from qdrant_client import QdrantClient

    yield "edge", QdrantCompressedCollection.edge(tmp_path / "edge", smec, dims=(32,))
    yield "server", QdrantCompressedCollection.server(QdrantClient(":memory:"), "texts", smec, dims=(32,))


def test_texts_live_in_payloads(enc_and_smec, claims, tmp_path):
    enc, smec = enc_and_smec
    ids = [f"claim-{i}" for i in range(len(claims))]
    for kind, col in _collections(tmp_path, smec):
        tc = QdrantTextCollection(col, enc)
        tc.add(claims, ids)
        hits = tc.search(claims[7], k=3)
        assert hits[0][0] == "claim-7" and hits[0][2] == claims[7] and hits[0][1] > 0.99, kind
        assert [h[1] for h in hits] == sorted((h[1] for h in hits), reverse=True)
        many = tc.search([claims[1], claims[2]], k=2)
        assert [m[0][0] for m in many] == ["claim-1", "claim-2"]
        assert tc.remove(["claim-7", "absent"]) == 1 and col.count() == len(claims) - 1
        assert all(h[0] != "claim-7" for h in tc.search(claims[7], k=5))
        with pytest.raises(ValueError, match="ids repeat"):
            tc.add(["a", "b"], ["x", "x"])
        with pytest.raises(TypeError, match=r"texts\[1\] is int"):
            tc.add(["a", 2], ["x", "y"])
        assert col.count() == len(claims) - 1
        col.close()
    # Edge keeps the texts on disk: reopened, the payloads are there
    col = QdrantCompressedCollection.edge(tmp_path / "edge", None, dims=(32,))
    assert QdrantTextCollection(col, enc).search(claims[3], k=1)[0][:1] == ("claim-3",)
    col.close()


def test_point_ids_are_stable_and_typed():
    assert point_id("42") != point_id(42) and point_id("a") == point_id("a")
    assert 0 <= point_id("x") < 2**63 and point_id(np.int64(5)) == point_id(5)
