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


# ----------------------------------------------------------------- the native index and FAISS's signatures
import pickle  # noqa: E402

from smec_index.index import IndexStateError  # noqa: E402


def _overlap(I, J) -> float:
    return float(np.mean([len(set(a) & set(b)) / max(1, len(set(b))) for a, b in zip(I, J)]))


@pytest.fixture(scope="module")
def pca16(data):
    return SMEC(dims=(16, 8), method="pca", progress=False).fit(data[0])


def _filled(smec, X, ids=None, **kw) -> CompressedIndex:
    ci = CompressedIndex(smec, **kw)
    ci.train(X)
    if ids is None:
        ci.add(X)
    else:
        ci.add_with_ids(X, ids)
    return ci


TO_FAISS_CASES = [
    dict(dims=(8,), spec="Flat", candidates=40),
    dict(dims=(8,), spec="HNSW32", params={"efSearch": 64}, candidates=40),
    dict(dims=(8,), spec="IVF8,Flat", params={"nprobe": 3}, candidates=40),
    dict(dims=(16,), spec="SQ8", candidates=30, store_dtype="float16"),
    dict(dims=(8, 16), spec="Flat", candidates=(60, 20)),
    dict(dims=(8,), spec="Flat", rerank="none"),
    dict(dims=(8,), spec="HNSW32", metric="l2", candidates=40),
]


@pytest.mark.parametrize("explicit", [False, True])
@pytest.mark.parametrize("removed", [False, True])
@pytest.mark.parametrize("case", TO_FAISS_CASES, ids=lambda c: f"{c['spec']}-{c['dims']}-{c.get('rerank', 'full')}")
def test_to_faiss_answers_as_the_compressed_index(data, pca16, case, explicit, removed, tmp_path):
    X, Q = data
    ids = np.arange(len(X), dtype=np.int64) * 3 + 11 if explicit else None
    ci = _filled(pca16, X, ids, **case)
    if removed:  # HNSW keeps tombstones, Flat compacts, IVF removes from its lists
        ci.remove_ids((ids if explicit else np.arange(len(X)))[::7])
    native = ci.to_faiss(k=10)
    assert isinstance(native, faiss.Index)
    assert (native.ntotal, native.d, native.metric_type) == (ci.ntotal, ci.d, ci.metric_type)
    Dc, Ic = ci.search(Q, 10)
    Dn, In = native.search(Q, 10)
    # HNSW with tombstones is rebuilt: a new graph, near the same answer; otherwise the same engine state
    assert _overlap(In, Ic) >= (0.95 if removed and case["spec"] == "HNSW32" else 0.999)
    same = In == Ic
    np.testing.assert_allclose(Dn[same], Dc[same], atol=2e-5)
    faiss.write_index(native, str(tmp_path / "n.faiss"))
    np.testing.assert_array_equal(faiss.read_index(str(tmp_path / "n.faiss")).search(Q, 10)[1], In)


def test_to_faiss_with_a_supervised_compressor_reranks_adapted_vectors(synth, synth_supervised):
    """The full store holds adapted vectors; the native refine index maps queries to the same space."""
    Q, pairs = synth_supervised
    smec = SMEC(dims=(16,), seed=0, max_epochs=2, ads_epochs=1, patience=1, batch_size=64, memory_size=100,
                neighbour_pool=20, progress=False).fit(synth, Q, pairs)
    ci = _filled(smec, synth, dims=(16,), spec="HNSW32", candidates=50)
    native = ci.to_faiss(k=10)
    (Dc, Ic), (Dn, In) = ci.search(Q, 10), native.search(Q, 10)
    assert _overlap(In, Ic) >= 0.999
    np.testing.assert_allclose(Dn, Dc, atol=2e-5)


@pytest.mark.parametrize("spec", ["Flat", "IVF8,Flat", "HNSW32"])
def test_to_faiss_of_an_empty_or_reset_index(data, pca16, spec):
    X, Q = data
    ci = CompressedIndex(pca16, dims=(8, 16), spec=spec)
    ci.train(X)
    for _ in range(2):
        native = ci.to_faiss()
        assert native.ntotal == 0 and native.d == X.shape[1]
        D, I = native.search(Q[:2], 3)
        assert (I == -1).all()
        ci.add(X[:5])
        ci.reset()


def test_to_faiss_refuses_other_backends(data, pca16):
    ci = _filled(pca16, data[0], dims=(8,), backend="hnswlib")
    with pytest.raises(ValueError, match="backend='faiss'"):
        ci.to_faiss()
    with pytest.raises(ValueError, match="k must"):
        _filled(pca16, data[0], dims=(8,)).to_faiss(k=0)


def test_search_params_filter_on_ids_and_engine_knobs(data, pca16):
    X, Q = data
    ids = np.arange(len(X), dtype=np.int64) * 5 + 1
    for explicit in (False, True):
        ci = _filled(pca16, X, ids if explicit else None, dims=(8,), spec="HNSW32", candidates=50)
        ci.remove_ids(np.array([ids[0] if explicit else 0]))  # removed slots: ids no longer equal slots
        live = ci._ids.slot_ids[ci._ids.live_slots()]
        allowed = live[::4]
        for params in (faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed)),
                       faiss.SearchParametersHNSW(sel=faiss.IDSelectorBatch(allowed), efSearch=128)):
            D, I = ci.search(Q, 10, params=params)
            assert np.isin(I, allowed).all() and (I >= 0).all()
            # the same as a full-dim exact search restricted to the allowed ids, nearly always
            rows = np.flatnonzero(np.isin(live, allowed))
            exact = live[rows][np.argsort(-(Q @ ci.reconstruct_n().T)[:, rows], axis=1)[:, :10]]
            assert _overlap(I, exact) >= 0.95
    refine = faiss.IndexRefineSearchParameters(k_factor=3, base_index_params=faiss.SearchParametersHNSW(efSearch=16))
    D, I = ci.search(Q, 10, params=refine)
    assert I.shape == (len(Q), 10)
    with pytest.raises(TypeError, match="params must be"):
        ci.search(Q, 10, params={"efSearch": 3})
    hn = _filled(pca16, X, dims=(8,), backend="hnswlib")
    with pytest.raises(ValueError, match="backend='faiss'"):
        hn.search(Q, 3, params=faiss.SearchParameters(sel=faiss.IDSelectorRange(0, 5)))
    ivf = _filled(pca16, X, dims=(8,), spec="IVF8,Flat", params={"nprobe": 1}, rerank="none")
    Q = np.random.default_rng(0).normal(size=(40, X.shape[1])).astype(np.float32)  # between the clusters
    narrow = ivf.search(Q, 10)[1]
    wide = ivf.search(Q, 10, params=faiss.SearchParametersIVF(nprobe=8))[1]
    exact = np.argsort(-(pca16.transform(Q, 8) @ pca16.transform(X, 8).T), axis=1)[:, :10]
    assert _overlap(wide, exact) == 1.0 > _overlap(narrow, exact)
    assert ivf.backends[8].params["nprobe"] == 1  # for that call only


def test_search_fills_D_and_I_in_place_and_assign(data, pca16):
    X, Q = data
    ci = _filled(pca16, X, dims=(8,), spec="Flat")
    D0, I0 = ci.search(Q, 5)
    D, I = np.empty((len(Q), 5), np.float32), np.empty((len(Q), 5), np.int64)
    Dr, Ir = ci.search(Q, 5, D=D, I=I)
    assert Dr is D and Ir is I
    np.testing.assert_array_equal(I, I0)
    np.testing.assert_array_equal(D, D0)
    labels = np.empty((len(Q), 5), np.int64)
    assert ci.assign(Q, 5, labels) is labels
    np.testing.assert_array_equal(labels, I0)
    np.testing.assert_array_equal(ci.assign(Q, 5), I0)
    with pytest.raises(ValueError, match="D must be"):
        ci.search(Q, 5, D=np.empty((len(Q), 4), np.float32))
    with pytest.raises(ValueError, match="I must be"):
        ci.search(Q, 5, I=np.empty((len(Q), 5), np.int32))


@pytest.mark.parametrize("metric, thresh", [("ip", 0.8), ("l2", 0.4)])
@pytest.mark.parametrize("rerank", ["none", "full"])
def test_range_search(data, pca16, metric, thresh, rerank):
    X, Q = data
    ids = np.arange(len(X), dtype=np.int64) + 1000
    ci = _filled(pca16, X, ids, dims=(8,), spec="Flat", metric=metric, rerank=rerank)
    lims, D, I = ci.range_search(Q, thresh)
    assert lims.dtype == np.uint64 and D.dtype == np.float32 and I.dtype == np.int64 and lims.shape == (len(Q) + 1,)
    ref = faiss.IndexFlat(8, faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2)
    ref.add(pca16.transform(X, 8))
    rl, rD, rI = ref.range_search(pca16.transform(Q, 8), thresh)
    full = (Q @ X.T) if metric == "ip" else ((Q[:, None, :] - X[None]) ** 2).sum(-1)
    assert lims[-1] > 0
    for q in range(len(Q)):
        got = dict(zip(I[lims[q]:lims[q + 1]], D[lims[q]:lims[q + 1]]))
        compressed = set(rI[rl[q]:rl[q + 1]] + 1000)
        if rerank == "none":
            assert set(got) == compressed
        else:  # passes at the compressed dim and at full dim, scored at full dim
            passes = set(np.flatnonzero(full[q] > thresh if metric == "ip" else full[q] < thresh) + 1000)
            assert set(got) == compressed & passes
            for i, dist in got.items():
                assert abs(dist - full[q, i - 1000]) < 1e-5
    hn = _filled(pca16, X, dims=(8,), backend="hnswlib")
    with pytest.raises(ValueError, match="backend='faiss'"):
        hn.range_search(Q, 0.5)


def test_reconstruct_n_faiss_defaults(data, pca16):
    X, _ = data
    ci = _filled(pca16, X, dims=(8,), spec="Flat")
    np.testing.assert_array_equal(ci.reconstruct_n(), X)
    np.testing.assert_array_equal(ci.reconstruct_n(490), X[490:])
    out = np.empty((3, X.shape[1]), np.float32)
    assert ci.reconstruct_n(4, 3, out) is out
    np.testing.assert_array_equal(out, X[4:7])
    with pytest.raises(ValueError, match="x must be"):
        ci.reconstruct_n(0, 3, np.empty((2, X.shape[1]), np.float32))


def test_remove_ids_takes_an_id_selector_as_faiss_does(data, pca16):
    X, Q = data
    ids = np.arange(len(X), dtype=np.int64) * 2
    ci = _filled(pca16, X, ids, dims=(8,), spec="HNSW32")
    ref = faiss.IndexIDMap2(faiss.IndexFlatIP(X.shape[1]))
    ref.add_with_ids(X, ids)
    for sel in (faiss.IDSelectorRange(100, 200), faiss.IDSelectorBatch(np.array([0, 2, 4, 7]))):
        assert ci.remove_ids(sel) == ref.remove_ids(sel)
    assert ci.ntotal == ref.ntotal
    assert not np.isin(ci.search(Q, 20)[1], np.r_[np.arange(100, 200), 0, 2, 4]).any()


def test_pickle_round_trip(data, pca16, tmp_path):
    X, Q = data
    ci = _filled(pca16, X, np.arange(len(X), dtype=np.int64) + 7, dims=(8, 16), spec="HNSW32", full_store="mmap",
                 candidates=(50, 20))
    ci.remove_ids(np.array([7, 8]))
    copy = pickle.loads(pickle.dumps(ci))
    assert copy.full_store == "memory" and copy.ntotal == ci.ntotal
    for a, b in zip(copy.search(Q, 10), ci.search(Q, 10)):
        np.testing.assert_array_equal(a, b)


def test_unknown_attributes_refused_engine_knobs_passed_through(data, pca16):
    X = data[0]
    Q = np.random.default_rng(0).normal(size=(40, X.shape[1])).astype(np.float32)  # between the clusters
    ci = _filled(pca16, X, dims=(8,), spec="IVF8,Flat", params={"nprobe": 1}, rerank="none")
    with pytest.raises(AttributeError, match="no attribute 'nprob'"):
        ci.nprob = 8  # a typo FAISS code would not notice
    with pytest.raises(AttributeError):
        ci.k_factor  # noqa: B018
    before = ci.search(Q, 10)[1]
    ci.nprobe = 8
    assert ci.nprobe == 8 and ci.backends[8].params["nprobe"] == 8
    after = ci.search(Q, 10)[1]
    exact = np.argsort(-(pca16.transform(Q, 8) @ pca16.transform(X, 8).T), axis=1)[:, :10]
    assert _overlap(after, exact) == 1.0 > _overlap(before, exact)
    with pytest.raises(ValueError, match="efSearch"):
        ci.efSearch = 32  # not an HNSW engine
    hn = _filled(pca16, X, dims=(8,), backend="hnswlib")
    hn.efSearch = 77
    assert hn.backends[8].ef == 77 == hn.efSearch
    ci.rerank = "full"  # existing settings stay assignable
    with pytest.raises(IndexStateError):
        CompressedIndex(pca16, dims=(8,), full_store=None, rerank="none").reconstruct_n()
