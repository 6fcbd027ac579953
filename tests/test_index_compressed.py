"""CompressedIndex, parametrized over every backend: FAISS parity, cascade, rerank, ids, bad input, threads."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from index_cases import BACKEND_CASES, case_id, one_faiss_thread  # noqa: F401  (autouse fixture)
from smec_index import SMEC, CompressedIndex
from smec_index.index import IndexStateError
from smec_index.metrics import evaluate, evaluate_embeddings

FLT = float(np.finfo(np.float32).max)
ALL = 10_000  # candidates above the corpus size: every backend then passes every vector on


@pytest.fixture(scope="module")
def pca(synth):
    return SMEC(dims=(32, 16, 8), method="pca", progress=False).fit(synth)


@pytest.fixture(params=BACKEND_CASES, ids=case_id)
def case(request):
    return request.param


def build(smec, case, X, dims=(8, 32), **kw):
    backend, opts = case
    index = CompressedIndex(smec, dims=dims, backend=backend, **opts, **kw)
    index.train(X)
    return index


def split(synth):
    return synth[:500], synth[500:]


# --------------------------------------------------------------------- FAISS parity
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_full_rerank_over_all_candidates_equals_faiss_flat(case, pca, synth, metric):
    X, Q = split(synth)
    X = X * np.linspace(0.5, 2.0, X.shape[0], dtype=np.float32)[:, None]  # raw norms differ: rerank must keep them
    index = build(pca, case, X, metric=metric, candidates=ALL)
    index.add(X)
    ref = faiss.IndexFlatIP(48) if metric == "ip" else faiss.IndexFlatL2(48)
    ref.add(X)
    for queries in (Q, Q[:1]):
        D, I = index.search(queries, 10)
        Dr, Ir = ref.search(queries, 10)
        assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (queries.shape[0], 10)
        assert D.flags.c_contiguous and I.flags.c_contiguous
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_allclose(D, Dr, rtol=1e-5, atol=1e-5)
    assert index.metric_type == ref.metric_type


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("rerank", ["full", "cascade", "none"])
def test_padding_is_faiss_padding(case, pca, synth, metric, rerank):
    X = synth[:5]
    index = build(pca, case, synth, metric=metric, rerank=rerank)
    ref = faiss.IndexFlatIP(48) if metric == "ip" else faiss.IndexFlatL2(48)
    Dr, Ir = ref.search(synth[:3], 8)  # empty index: all padding
    D, I = index.search(synth[:3], 8)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_array_equal(D, Dr)
    index.add(X)
    ref.add(X)
    D, I = index.search(synth[:3], 8)
    Dr, Ir = ref.search(synth[:3], 8)
    np.testing.assert_array_equal(I[:, 5:], Ir[:, 5:])
    np.testing.assert_array_equal(D[:, 5:], Dr[:, 5:])
    assert (D[:, 5:] == (-FLT if metric == "ip" else FLT)).all()
    assert set(I[:, :5].ravel()) == set(range(5))


def test_empty_query_batch_like_faiss(pca, synth):
    index = build(pca, BACKEND_CASES[0], synth)
    index.add(synth)
    D, I = index.search(np.zeros((0, 48), np.float32), 4)
    Dr, Ir = faiss.IndexFlatIP(48).search(np.zeros((0, 48), np.float32), 4)
    assert D.shape == Dr.shape == (0, 4) and D.dtype == Dr.dtype and I.dtype == Ir.dtype


def test_other_float_dtypes_are_converted(pca, synth):
    index = build(pca, BACKEND_CASES[0], synth)
    index.add(synth.astype(np.float64))
    D, I = index.search(synth[:4].astype(np.float16), 3)
    assert D.dtype == np.float32 and I.dtype == np.int64
    np.testing.assert_array_equal(I[:, 0], np.arange(4))


# --------------------------------------------------------------------- cascade and rerank
def _exact_top(q: np.ndarray, rows: np.ndarray, cand: np.ndarray, keep: int) -> np.ndarray:
    scores = rows[cand] @ q
    return cand[np.argsort(-scores, kind="stable")[:keep]]


def test_cascade_rescoring_order(case, pca, synth):
    """Search at 8 for 40, rescore at 16 keep 20, at 32 keep 12, then full dim keep k=5."""
    X, Q = split(synth)
    index = build(pca, case, X, dims=(8, 16, 32), candidates=(40, 20, 12))
    index.add(X)
    Z = {d: pca.transform(X, d) for d in (16, 32)}
    for q in Q[:20]:
        _, first = index.backends[8].search(pca.transform(q[None], 8), 40)
        cand = first[0][first[0] >= 0]
        cand = _exact_top(pca.transform(q[None], 16)[0], Z[16], cand, 20)
        cand = _exact_top(pca.transform(q[None], 32)[0], Z[32], cand, 12)
        cand = _exact_top(q, X, cand, 5)
        _, I = index.search(q[None], 5)
        np.testing.assert_array_equal(I[0], cand)


def test_dim_and_rerank_select_the_stages(case, pca, synth):
    X, Q = split(synth)
    index = build(pca, case, X, dims=(8, 16, 32), candidates=(40, 30, 20))
    index.add(X)
    q = Q[:3]
    # rerank="none": the backend's own answer at the searched dim
    D, I = index.search(q, 7, dim=16, rerank="none")
    Db, Ib = index.backends[16].search(pca.transform(q, 16), 7)
    np.testing.assert_array_equal(I, Ib)
    np.testing.assert_allclose(D, Db, atol=1e-6)  # queries projected as SMEC.transform does, to float32 rounding
    # rerank="cascade" from 16: exact scores at 32 of the 30 candidates found at 16
    D, I = index.search(q, 7, dim=16, rerank="cascade")
    Z32 = pca.transform(X, 32)
    for i in range(3):
        _, first = index.backends[16].search(pca.transform(q[i : i + 1], 16), 30)
        expected = _exact_top(pca.transform(q[i : i + 1], 32)[0], Z32, first[0], 7)
        np.testing.assert_array_equal(I[i], expected)
        np.testing.assert_allclose(D[i], Z32[expected] @ pca.transform(q[i : i + 1], 32)[0], rtol=1e-5, atol=1e-6)
    # per-call candidates override the index default
    _, I_few = index.search(q, 7, candidates=7)
    _, I_all = index.search(q, 7, candidates=ALL)
    Ir = faiss.IndexFlatIP(48)
    Ir.add(X)
    np.testing.assert_array_equal(I_all, Ir.search(q, 7)[1])
    assert I_few.shape == (3, 7)


def test_full_rerank_uses_adapted_vectors_when_supervised(synth, synth_supervised):
    Qs, pairs = synth_supervised
    smec = SMEC(dims=(16, 8), method="smec", progress=False, max_epochs=3).fit(synth, Qs, pairs)
    assert smec.supervised_
    X, Q = split(synth)
    X = X * 3.0  # raw scale must not leak into adapted scores
    index = build(smec, BACKEND_CASES[0], X, dims=(8,), candidates=ALL)
    index.add(X)
    adapted = smec.transform(X, 48)
    np.testing.assert_allclose(index.reconstruct(7), adapted[7], rtol=1e-6, atol=1e-6)
    D, I = index.search(Q[:10], 5)
    qa = smec.transform(Q[:10], 48)
    expected = np.argsort(-(qa @ adapted.T), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(I, expected)
    np.testing.assert_allclose(D, np.take_along_axis(qa @ adapted.T, I, axis=1), rtol=1e-5, atol=1e-6)
    assert not np.allclose(D, np.take_along_axis(Q[:10] @ X.T, I, axis=1), atol=1e-3)


def test_project_is_transform_and_full_vectors(pca, synth, synth_supervised):
    index = build(pca, BACKEND_CASES[0], synth, dims=(8, 16))
    for q in (synth[:1] * 5, synth[:7].astype(np.float64)):
        np.testing.assert_allclose(index.project(q, 16), pca.transform(q, 16), atol=1e-6)
        np.testing.assert_array_equal(index.project(q, 48), q.astype(np.float32))  # unsupervised: raw rows
    with pytest.raises(ValueError, match=r"dim must be one of \(8, 16\) or d=48, got 32"):
        index.project(synth[:1], 32)


def test_full_rerank_uses_raw_vectors_when_unsupervised(pca, synth):
    X, Q = split(synth)
    X = X * 3.0
    index = build(pca, BACKEND_CASES[0], X, metric="l2", candidates=ALL)
    index.add(X)
    np.testing.assert_array_equal(index.reconstruct(3), X[3])  # raw, un-normalised
    D, I = index.search(Q[:4], 3)
    d2 = ((Q[:4, None, :] - X[I]) ** 2).sum(-1)
    np.testing.assert_allclose(D, d2, rtol=1e-5)


@pytest.mark.parametrize("full_store,dtype", [("memory", "float16"), ("mmap", "float32"), ("mmap", "float16"),
                                             ("disk", "float32"), ("disk", "float16")])
def test_store_kinds_give_the_same_ranking(pca, synth, full_store, dtype):
    X, Q = split(synth)
    base = build(pca, BACKEND_CASES[0], X)
    other = build(pca, BACKEND_CASES[0], X, full_store=full_store, store_dtype=dtype)
    base.add(X)
    other.add(X)
    D0, I0 = base.search(Q, 10)
    D1, I1 = other.search(Q, 10)
    if dtype == "float32":
        np.testing.assert_array_equal(I1, I0)
        np.testing.assert_array_equal(D1, D0)
    else:  # half precision: scores within its rounding, so only near-ties may swap
        np.testing.assert_allclose(D1, D0, atol=2e-3)
        np.testing.assert_allclose(np.take_along_axis(Q @ X.T, I1, axis=1), D0, atol=4e-3)
        assert (I0[:, 0] == I1[:, 0]).mean() >= 0.9


def test_without_full_store(pca, synth):
    X, Q = split(synth)
    index = build(pca, BACKEND_CASES[0], X, full_store=None, rerank="cascade")
    index.add(X)
    assert index.search(Q[:2], 3)[1].shape == (2, 3)
    with pytest.raises(IndexStateError, match="full_store=None"):
        index.reconstruct(0)
    with pytest.raises(ValueError, match="full store"):
        index.search(Q[:2], 3, rerank="full")
    full = build(pca, BACKEND_CASES[0], X, full_store="memory")
    full.add(X)
    assert index.nbytes < full.nbytes - X.nbytes * 0.9


# --------------------------------------------------------------------- ids, remove, add
def test_sequential_ids_compact_like_indexflat(case, pca, synth):
    X, Q = split(synth)
    index = build(pca, case, X, candidates=ALL)
    ref = faiss.IndexFlatIP(48)
    for target in (index, ref):
        target.add(X[:300])
    removed = np.array([0, 1, 0, 299, 5000], dtype=np.int64)
    assert index.remove_ids(removed) == ref.remove_ids(removed) == 3
    assert index.ntotal == ref.ntotal == 297
    np.testing.assert_array_equal(index.reconstruct(0), X[2])
    np.testing.assert_array_equal(index.reconstruct(0), ref.reconstruct(0))
    for target in (index, ref):
        target.add(X[300:])
    assert index.ntotal == ref.ntotal == 497
    D, I = index.search(Q, 10)
    Dr, Ir = ref.search(Q, 10)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(index.reconstruct_n(10, 5), ref.reconstruct_n(10, 5))


def test_explicit_ids_stay_put_like_idmap(case, pca, synth):
    X, Q = split(synth)
    index = build(pca, case, X, candidates=ALL)
    ref = faiss.IndexIDMap(faiss.IndexFlatIP(48))
    ids = np.arange(500, dtype=np.int64) * 7 + 10**12
    for target in (index, ref):
        target.add_with_ids(X, ids)
    gone = ids[::3]
    assert index.remove_ids(gone) == ref.remove_ids(gone) == gone.shape[0]
    assert index.ntotal == ref.ntotal
    D, I = index.search(Q, 10)
    Dr, Ir = ref.search(Q, 10)
    np.testing.assert_array_equal(I, Ir)
    assert not np.isin(I, gone).any()
    np.testing.assert_array_equal(index.reconstruct(int(ids[1])), X[1])
    index.add_with_ids(X[[0, 3, 6]], gone[:3])  # removed ids may come back
    assert index.ntotal == ref.ntotal + 3
    np.testing.assert_array_equal(index.search(X[[0, 3, 6]], 1)[1][:, 0], gone[:3])


def test_mixing_add_and_add_with_ids_is_refused(pca, synth):
    index = build(pca, BACKEND_CASES[0], synth)
    index.add(synth[:10])
    with pytest.raises(IndexStateError, match="cannot be mixed"):
        index.add_with_ids(synth[10:12], np.array([100, 101]))
    with pytest.raises(RuntimeError):  # what FAISS raises for add_with_ids on IndexFlat
        index.add_with_ids(synth[10:12], np.array([100, 101]))
    other = build(pca, BACKEND_CASES[0], synth)
    other.add_with_ids(synth[:2], np.array([5, 6]))
    with pytest.raises(IndexStateError, match="cannot be mixed"):
        other.add(synth[2:4])
    assert index.ntotal == 10 and other.ntotal == 2
    index.reset()
    index.add_with_ids(synth[:2], np.array([5, 6]))  # a reset index takes either kind
    assert index.ntotal == 2


def test_reset_keeps_training_and_merge_from(pca, synth):
    case = ("faiss", {"spec": "IVF8,Flat", "params": {"nprobe": 8}})
    a = build(pca, case, synth, candidates=ALL)
    b = build(pca, case, synth, candidates=ALL)
    a.add(synth[:100])
    a.reset()
    assert a.ntotal == 0 and a.is_trained
    a.add(synth[:100])
    b.add(synth[100:150])
    a.merge_from(b)
    assert a.ntotal == 150 and b.ntotal == 0
    np.testing.assert_array_equal(a.reconstruct(120), synth[120])
    np.testing.assert_array_equal(a.search(synth[120:121], 1)[1], [[120]])
    with pytest.raises(ValueError, match="other is this index"):
        a.merge_from(a)
    assert a.ntotal == 150


def test_train_fits_an_unfitted_compressor(synth):
    smec = SMEC(dims=(16, 8), method="pca", progress=False)
    index = CompressedIndex(smec, dims=(16, 8), backend="hnswlib")
    assert not index.is_trained and index.d is None and index.dims == (8, 16)
    with pytest.raises(IndexStateError, match="not trained"):
        index.search(synth[:1], 1)
    with pytest.raises(IndexStateError, match="not trained"):
        index.add(synth[:1])
    index.train(synth)
    assert smec.is_fitted and index.is_trained and index.d == 48
    index.add(synth)
    assert index.search(synth[:2], 1)[1][:, 0].tolist() == [0, 1]
    assert CompressedIndex(SMEC(dims=(8,), method="pca"), d=48).d == 48


# --------------------------------------------------------------------- bad input
def _bad_calls(X):
    nan = X[:3].copy()
    nan[1, 2] = np.nan
    inf = X[:3].copy()
    inf[0, 0] = np.inf
    return [
        ("add", lambda ix: ix.add(X[:3, :40]), ValueError, r"shape \(3, 40\); expected \(n, 48\)"),
        ("add 1-D", lambda ix: ix.add(X[0]), ValueError, r"shape \(48,\); expected \(n, 48\)"),
        ("add ints", lambda ix: ix.add(np.ones((2, 48), np.int64)), TypeError, "float array, got dtype int64"),
        ("add nan", lambda ix: ix.add(nan), ValueError, "1 row.*NaN or inf.*row 1"),
        ("add inf", lambda ix: ix.add(inf), ValueError, "NaN or inf"),
        ("ids float", lambda ix: ix.add_with_ids(X[:2], np.array([1.0, 2.0])), TypeError, "ids must be integers"),
        ("ids length", lambda ix: ix.add_with_ids(X[:2], np.array([1, 2, 3])), ValueError, r"shape \(3,\); expected \(2,\)"),
        ("ids 2-D", lambda ix: ix.add_with_ids(X[:2], np.array([[1, 2]])), ValueError, r"ids has shape \(1, 2\)"),
        ("ids negative", lambda ix: ix.add_with_ids(X[:2], np.array([-1, 2])), ValueError, ">= 0"),
        ("ids repeat", lambda ix: ix.add_with_ids(X[:2], np.array([9, 9])), ValueError, r"repeat within the batch: \[9\]"),
        ("ids present", lambda ix: ix.add_with_ids(X[:2], np.array([100, 3])), ValueError, r"already in the index: \[3\]"),
        ("k zero", lambda ix: ix.search(X[:1], 0), ValueError, "k must be a positive int, got 0"),
        ("k negative", lambda ix: ix.search(X[:1], -2), ValueError, "k must be a positive int"),
        ("k float", lambda ix: ix.search(X[:1], 2.0), ValueError, "k must be a positive int"),
        ("k bool", lambda ix: ix.search(X[:1], True), ValueError, "k must be a positive int"),
        ("search dim", lambda ix: ix.search(X[:1], 2, dim=12), ValueError, r"configured dims \(8, 32\), got 12"),
        ("search rerank", lambda ix: ix.search(X[:1], 2, rerank="yes"), ValueError, "rerank must be one of"),
        ("search candidates", lambda ix: ix.search(X[:1], 2, candidates=0), ValueError, "candidates must be"),
        ("search shape", lambda ix: ix.search(X[:1, :47], 2), ValueError, r"shape \(1, 47\); expected \(n, 48\)"),
        ("search nan", lambda ix: ix.search(nan, 2), ValueError, "NaN or inf"),
        ("remove floats", lambda ix: ix.remove_ids(np.array([1.5])), TypeError, "ids must be integers"),
        ("reconstruct missing", lambda ix: ix.reconstruct(10**9), ValueError, "not in the index"),
        ("reconstruct type", lambda ix: ix.reconstruct(1.0), TypeError, "key must be an int"),
        ("reconstruct_n range", lambda ix: ix.reconstruct_n(5, 10**6), ValueError, "outside"),
    ]


@pytest.mark.parametrize("name", [c[0] for c in _bad_calls(np.zeros((3, 48), np.float32))])
def test_bad_input_raises_before_any_change(pca, synth, name):
    call, exc, match = {c[0]: c[1:] for c in _bad_calls(synth)}[name]
    index = build(pca, BACKEND_CASES[0], synth)
    index.add_with_ids(synth[:50], np.arange(50))
    before = index.search(synth[:5], 5)
    with pytest.raises(exc, match=match):
        call(index)
    assert index.ntotal == 50
    after = index.search(synth[:5], 5)
    np.testing.assert_array_equal(before[1], after[1])
    np.testing.assert_array_equal(before[0], after[0])


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(dims=(12,)), ValueError, r"dims \[12\] are not dims of the compressor"),
    (dict(dims=(8, 8)), ValueError, "dims repeat"),
    (dict(dims="8"), ValueError, "sequence of ints"),
    (dict(metric="cosine"), ValueError, "metric must be one of"),
    (dict(metric=faiss.METRIC_L1), ValueError, "metric must be one of"),
    (dict(full_store="ssd"), ValueError, "full_store must be one of"),
    (dict(full_store=None), ValueError, "rerank='full' needs a full store"),
    (dict(store_dtype="int8"), ValueError, "store_dtype must be one of"),
    (dict(rerank="some"), ValueError, "rerank must be one of"),
    (dict(candidates=(10,)), ValueError, "one per dim"),
    (dict(candidates=-3), ValueError, "positive int"),
    (dict(backend="annoy"), ValueError, "backend must be one of"),
    (dict(backend="hnswlib", spec="Flat"), TypeError, r"unknown option\(s\) \['spec'\]; its options are \['M'"),
    (dict(backend="hnswlib", M=1), ValueError, "M must be an int >= 2"),
    (dict(spec="NoSuchIndex7"), ValueError, "index_factory.*failed"),
    (dict(spec="IDMap,Flat"), ValueError, "contains IDMap"),
    (dict(spec="HNSW32", params={"nprobe": 4}), ValueError, "nprobe=4 does not apply"),
    (dict(d=16), ValueError, "d must be an int above"),
    (dict(d=64), ValueError, "fitted on 48-dim"),
])
def test_bad_constructor_arguments(pca, kwargs, exc, match):
    kwargs = {"dims": (8, 32), **kwargs}
    with pytest.raises(exc, match=match):
        CompressedIndex(pca, **kwargs)


def test_bad_smec_and_training_data(pca, synth):
    with pytest.raises(TypeError, match="smec must be a smec_index.SMEC"):
        CompressedIndex("pca")
    fresh = SMEC(dims=(8,), method="pca", progress=False)
    index = CompressedIndex(fresh, spec="IVF64,Flat")
    with pytest.raises(ValueError, match="x has 50 rows; the faiss backends need at least 64"):
        index.train(synth[:50])
    assert not fresh.is_fitted  # refused before the compressor was fitted
    with pytest.raises(ValueError, match=r"expected \(n, D\) with D above the largest dim 8"):
        CompressedIndex(SMEC(dims=(8,), method="pca")).train(synth[:, :6])


# --------------------------------------------------------------------- threads
def test_concurrent_search_equals_serial(case, pca, synth):
    X, Q = split(synth)
    index = build(pca, case, X, dims=(8, 16))
    index.add(X)
    jobs = [(Q[i : i + 1], {}) for i in range(40)] + [(Q[i : i + 25], {"dim": 16}) for i in range(0, 100, 25)]
    jobs += [(Q[:30], {"rerank": "none"}), (Q[30:60], {"rerank": "cascade"})]
    serial = [index.search(q, 10, **kw) for q, kw in jobs]
    results: list = [None] * len(jobs)
    errors: list = []

    def worker(offset: int) -> None:
        try:
            for r in range(3):
                for j in range(offset, len(jobs), 4):
                    results[j] = index.search(jobs[j][0], 10, **jobs[j][1])
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (D, I), (Ds, Is) in zip(results, serial):
        np.testing.assert_array_equal(I, Is)
        np.testing.assert_array_equal(D, Ds)


def test_search_concurrent_with_adds_sees_whole_batches(pca, synth):
    index = build(pca, BACKEND_CASES[0], synth)
    seen: list[int] = []
    stop = threading.Event()

    def searcher() -> None:
        while not stop.is_set():
            _, I = index.search(synth[:1], 600)
            seen.append(int((I >= 0).sum()))

    t = threading.Thread(target=searcher)
    t.start()
    for s in range(0, 600, 50):
        index.add(synth[s : s + 50])
    stop.set()
    t.join()
    assert all(n % 50 == 0 for n in seen)  # never a half-added batch
    assert index.ntotal == 600


# --------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_scifact_ndcg_through_flat_index_equals_exact(scifact_mpnet):
    ds = scifact_mpnet
    Q, qids, qrels = ds.split_queries("test")
    smec = SMEC(dims=(64,), method="pca", progress=False).fit(ds.corpus)
    exact = evaluate_embeddings(smec.transform(Q, 64), smec.transform(ds.corpus, 64), qids, ds.doc_ids, qrels)
    index = CompressedIndex(smec, dims=(64,), spec="Flat", rerank="none")
    index.add(ds.corpus)
    _, I = index.search(Q, 100)
    run = {q: [ds.doc_ids[j] for j in row] for q, row in zip(qids, I)}
    assert abs(evaluate(run, qrels)["ndcg@10"] - exact["ndcg@10"]) <= 0.002
