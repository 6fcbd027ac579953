"""``QdrantCompressedCollection.refresh``: points written by third parties (only the ``full`` vector, as
langchain-qdrant and llama-index-vector-stores-qdrant write them) become searchable, payloads kept."""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from smec_index import SMEC
from smec_index.qdrant import FULL, QdrantCompressedCollection

FAST = dict(max_epochs=2, ads_epochs=1, patience=1, batch_size=64, memory_size=100, neighbour_pool=20,
            progress=False)


def third_party_write(col: QdrantCompressedCollection, ids, X, payloads) -> None:
    """What another Qdrant client does: upsert points holding only the named vector ``full`` (raw embedding)."""
    if hasattr(col.engine, "shard"):
        import qdrant_edge as qe

        points = [qe.Point(int(i), {FULL: x.tolist()}, p) for i, x, p in zip(ids, X, payloads)]
        col.engine.shard.update(qe.UpdateOperation.upsert_points(points))
    else:
        col.engine.client.upsert(col.engine.collection, points=[
            models.PointStruct(id=int(i), vector={FULL: x.tolist()}, payload=p) for i, x, p in zip(ids, X, payloads)])


@pytest.fixture(scope="module")
def compressors(synth, synth_supervised):
    Q, pairs = synth_supervised
    return {False: SMEC(dims=(16, 8), method="pca", progress=False).fit(synth),
            True: SMEC(dims=(16, 8), seed=0, **FAST).fit(synth, Q, pairs)}


@pytest.mark.parametrize("engine", ["edge", "server"])
@pytest.mark.parametrize("supervised", [False, True])
def test_refresh_makes_third_party_points_searchable(tmp_path, synth, compressors, engine, supervised):
    X, smec = synth, compressors[supervised]
    col = (QdrantCompressedCollection.edge(tmp_path / "c", smec, dims=(8, 16)) if engine == "edge" else
           QdrantCompressedCollection.server(QdrantClient(":memory:"), "c", smec, dims=(8, 16)))
    with col:
        col.upsert(np.arange(500), X[:500], [{"src": "ours"}] * 500)
        third_party_write(col, np.arange(500, 600), X[500:], [{"src": "theirs", "n": i} for i in range(100)])
        assert col.count() == 600
        probe = np.arange(500, 600, 4)  # qdrant-client's local mode searches in Python: a sample
        _, I = col.search(X[probe], 1, candidates=50)
        assert not np.isin(I, np.arange(500, 600)).any()  # invisible: they have no stage vectors
        assert col.refresh(batch_size=64) == 100
        _, I = col.search(X[probe], 1, candidates=50)
        assert np.mean(I[:, 0] == probe) >= 0.96
        # the refreshed points hold what our own upsert would have written, and keep their payloads
        records, _ = col._scroll(None, 600)
        byid = {int(r.id): r for r in records}
        want = col.stage_vectors(X[500:])
        for j in (0, 57):
            r = byid[500 + j]
            assert r.payload == {"src": "theirs", "n": j}
            for name, arr in want.items():
                np.testing.assert_allclose(np.array(r.vector[name]) / np.linalg.norm(r.vector[name]),
                                           arr[j] / np.linalg.norm(arr[j]), atol=1e-5)
        assert col.refresh() == 0  # idempotent


def test_refresh_needs_the_full_vector(tmp_path, synth):
    smec = SMEC(dims=(8,), method="pca", progress=False).fit(synth)
    with QdrantCompressedCollection.edge(tmp_path / "c", smec, dims=(8,), full=False) as col:
        with pytest.raises(ValueError, match="full=False"):
            col.refresh()
        with pytest.raises(ValueError, match="batch_size"):
            QdrantCompressedCollection.refresh(col, batch_size=0)
