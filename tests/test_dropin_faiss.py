"""Drop-in proof: client code written against ``faiss.IndexFlatIP(D)`` runs unchanged on a CompressedIndex.

``client`` below is the kind of code vector-store wrappers run (add, search, pad handling, remove with
compaction, reconstruct, k above ntotal); it is called once with FAISS's index and once with ours, and
everything it observes is compared.
"""

from __future__ import annotations

import numpy as np
import pytest

import faiss
from index_cases import one_faiss_thread  # noqa: F401  (autouse fixture)
from smec_index import SMEC, CompressedIndex
from smec_index.metrics import exact_search


def client(index, X: np.ndarray, Q: np.ndarray) -> dict:
    """FAISS client code: must not know which index it got."""
    out = {"d": index.d, "trained": index.is_trained, "metric": index.metric_type}
    D, I = index.search(Q[:2], 5)  # empty index
    out["empty"] = (D, I)
    index.add(X[:4])
    out["ntotal_small"] = index.ntotal
    D, I = index.search(Q, 7)  # k above ntotal: padded
    out["padded"] = (D, I)
    out["found"] = [[int(i) for i in row if i != -1] for row in I]
    index.add(X[4:])
    out["ntotal"] = index.ntotal
    out["search"] = index.search(Q, 10)
    out["removed"] = index.remove_ids(np.array([0, 1], dtype=np.int64))
    out["ntotal_after_remove"] = index.ntotal
    out["row0"] = index.reconstruct(0)  # the old row 2: FAISS compacts
    out["after_remove"] = index.search(Q, 10)
    out["single"] = index.search(np.ascontiguousarray(Q[:1]), 3)
    return out


@pytest.fixture(scope="module")
def data(synth):
    return synth[:500], synth[500:530]


def test_client_code_runs_unchanged(data):
    X, Q = data
    smec = SMEC(dims=(16,), method="pca", progress=False).fit(X)
    ours = client(CompressedIndex(smec, backend="faiss", spec="Flat", rerank="full", candidates=1000), X, Q)
    ref = client(faiss.IndexFlatIP(X.shape[1]), X, Q)
    for key in ("d", "trained", "metric", "ntotal_small", "ntotal", "removed", "ntotal_after_remove", "found"):
        assert ours[key] == ref[key], key
    for key in ("empty", "padded", "search", "after_remove", "single"):
        (D, I), (Dr, Ir) = ours[key], ref[key]
        assert D.dtype == Dr.dtype == np.float32 and I.dtype == Ir.dtype == np.int64, key
        assert D.shape == Dr.shape and I.shape == Ir.shape, key
        np.testing.assert_array_equal(I, Ir, err_msg=key)
        np.testing.assert_allclose(D, Dr, rtol=1e-5, atol=1e-5, err_msg=key)
    np.testing.assert_array_equal(ours["padded"][0][:, 4:], np.float32(-3.4028235e38))
    np.testing.assert_array_equal(ours["row0"], ref["row0"])
    np.testing.assert_array_equal(ours["row0"], X[2])


@pytest.mark.realdata
def test_scifact_top1_through_compressed_flat_matches_exact(scifact_mpnet):
    """SciFact test queries, mpnet 768-d: PCA-64 Flat search for 100 candidates, exact rerank on raw vectors."""
    ds = scifact_mpnet
    Q, _, _ = ds.split_queries("test")
    smec = SMEC(dims=(64,), method="pca", progress=False).fit(ds.corpus)
    index = CompressedIndex(smec, backend="faiss", spec="Flat", rerank="full", candidates=100)
    index.add(ds.corpus)
    D, I = index.search(Q, 10)
    De, Ie = exact_search(Q, ds.corpus, 10)
    top1_in_top10 = np.mean([Ie[i, 0] in I[i] for i in range(len(Q))])
    same_top1 = np.mean(I[:, 0] == Ie[:, 0])
    overlap10 = np.mean([len(set(I[i]) & set(Ie[i])) / 10 for i in range(len(Q))])
    assert top1_in_top10 >= 0.95 and same_top1 >= 0.95, (top1_in_top10, same_top1, overlap10)
    assert overlap10 >= 0.9, overlap10
    found = I[:, 0] == Ie[:, 0]
    np.testing.assert_allclose(D[found, 0], De[found, 0], rtol=1e-5)
