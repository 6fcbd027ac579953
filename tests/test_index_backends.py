"""Each backend behind the Backend protocol: search, padding, removal, reset, persistence, FAISS settings."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import pytest

from index_cases import BACKEND_CASES, EXACT_CASES, case_id, one_faiss_thread  # noqa: F401  (autouse fixture)
from smec_index.index.backends import Backend, make_backend
from smec_index.index.backends.faiss import BATCH_BLAS_THRESHOLD, faiss_threads


@pytest.fixture(scope="module")
def unit(synth):
    return np.ascontiguousarray(synth[:, :16] / np.linalg.norm(synth[:, :16], axis=1, keepdims=True))


def _backend(case, X, metric="ip"):
    name, opts = case
    b = make_backend(name, X.shape[1], metric, opts)
    b.train(X)
    return b


@pytest.mark.parametrize("case", BACKEND_CASES, ids=case_id)
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_protocol_search_remove_reset(case, unit, metric):
    X = unit
    b = _backend(case, X, metric)
    assert isinstance(b, Backend) and b.is_trained and b.dim == 16 and b.metric == metric
    labels = np.arange(600, dtype=np.int64) * 2 + 1000  # arbitrary labels, as the facade's slots
    b.add(labels, X)
    assert b.ntotal == 600 and b.nbytes > 0
    D, I = b.search(X[:20], 5)
    assert D.dtype == np.float32 and I.dtype == np.int64 and I.shape == (20, 5)
    assert np.isin(I, labels).all()
    if case in EXACT_CASES:
        ref = faiss.IndexFlatIP(16) if metric == "ip" else faiss.IndexFlatL2(16)
        ref.add(X)
        Dr, Ir = ref.search(X[:20], 5)
        assert (labels[Ir] == I).mean() >= 0.98
        np.testing.assert_allclose(D[:, 0], Dr[:, 0], atol=1e-5)
    gone = labels[:590]
    assert b.remove(gone) == 590 and b.ntotal == 10
    D, I = b.search(X[:3], 15)  # more than remain: padded, removed labels never come back
    live = I[I >= 0]
    assert set(live.tolist()) <= set(labels[590:].tolist()) and (I >= 0).sum(axis=1).tolist() == [10, 10, 10]
    assert (D[:, 10:] == (-np.finfo(np.float32).max if metric == "ip" else np.finfo(np.float32).max)).all()
    b.reset()
    assert b.ntotal == 0 and b.is_trained
    assert (b.search(X[:2], 3)[1] == -1).all()
    b.add(labels[:5], X[:5])
    assert b.search(X[:1], 1)[1][0, 0] == labels[0]


@pytest.mark.parametrize("case", BACKEND_CASES, ids=case_id)
def test_save_load_keeps_removals(case, unit, tmp_path):
    b = _backend(case, unit)
    b.add(np.arange(600, dtype=np.int64), unit)
    b.remove(np.arange(0, 600, 2, dtype=np.int64))
    b.save(tmp_path)
    back = type(b).load(tmp_path)
    assert back.ntotal == b.ntotal == 300 and back.options() == b.options()
    for q in (unit[:1], unit[:30]):
        D0, I0 = b.search(q, 8)
        D1, I1 = back.search(q, 8)
        np.testing.assert_array_equal(I1, I0)
        np.testing.assert_array_equal(D1, D0)
    assert (I1 % 2 == 1).all()


def test_faiss_min_train_rows():
    assert make_backend("faiss", 16, "ip", {"spec": "Flat"}).min_train_rows == 0
    assert make_backend("faiss", 16, "ip", {"spec": "IVF32,Flat"}).min_train_rows == 32
    assert make_backend("faiss", 16, "ip", {"spec": "IVF8,PQ4"}).min_train_rows == 256
    assert make_backend("faiss", 16, "ip", {"spec": "PQ4x4"}).min_train_rows == 16
    assert make_backend("hnswlib", 16, "ip", {}).min_train_rows == 0


class _ThinGraph:
    """An hnswlib index whose walk finds too few neighbours, as after heavy deletion (hnswlib then raises)."""

    def __init__(self, index):
        self._index = index

    def __getattr__(self, name):
        return getattr(self._index, name)

    def knn_query(self, Q, k, num_threads):
        raise RuntimeError("Cannot return the results in a contiguous 2D array. Probably ef or M is too small")


def test_hnswlib_answers_queries_its_graph_cannot_fill(unit):
    b = make_backend("hnswlib", 16, "ip", {"M": 8})
    b.add(np.arange(600, dtype=np.int64), unit)
    keep = np.arange(0, 600, 60)
    b.remove(np.setdiff1d(np.arange(600), keep))
    b.index = _ThinGraph(b.index)
    D, I = b.search(unit[:5], 4)
    sims = unit[:5] @ unit[keep].T
    order = np.argsort(-sims, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(I, keep[order])
    np.testing.assert_allclose(D, np.take_along_axis(sims, order, axis=1), atol=1e-5)


def test_faiss_threads_sets_and_restores_process_settings():
    faiss.omp_set_num_threads(2)
    before = faiss.cvar.distance_compute_blas_threshold
    with faiss_threads(1):
        assert faiss.omp_get_max_threads() == 1
        assert faiss.cvar.distance_compute_blas_threshold == before
    assert faiss.omp_get_max_threads() == 2
    inside = []
    gate = threading.Barrier(3)

    def batch() -> None:
        with faiss_threads(1000):
            gate.wait()
            inside.append(faiss.cvar.distance_compute_blas_threshold)
            gate.wait()

    threads = [threading.Thread(target=batch) for _ in range(2)]
    for t in threads:
        t.start()
    gate.wait()
    gate.wait()
    for t in threads:
        t.join()
    assert inside == [BATCH_BLAS_THRESHOLD] * 2
    assert faiss.cvar.distance_compute_blas_threshold == before
    faiss.omp_set_num_threads(1)


@pytest.mark.parametrize("spec", ["Flat", "SQ8", "RaBitQ4", "HNSW16"])
def test_faiss_holds_no_labels_while_rows_are_the_slots(spec, unit, tmp_path):
    """Slots come in order and are never reused, so FAISS's row numbers are the labels: no IndexIDMap (8 bytes
    a vector) until a removal renumbers rows (engines that remove natively) or labels arrive out of order."""
    def found(b, rows):  # each row among its own 10 nearest: the labels are the right ones
        I = b.search(unit[rows], 10)[1]
        return all(r in I[j] for j, r in enumerate(rows))

    b = _backend(("faiss", {"spec": spec}), unit)
    b.add(np.arange(300, dtype=np.int64), unit[:300])
    b.add(np.arange(300, 600, dtype=np.int64), unit[300:])
    assert not isinstance(b.index, faiss.IndexIDMap) and b.ntotal == 600 and found(b, [0, 1, 2, 599])
    labelled = faiss.IndexIDMap(faiss.index_factory(16, spec, faiss.METRIC_INNER_PRODUCT))
    labelled.train(unit)
    labelled.add_with_ids(unit, np.arange(600, dtype=np.int64))
    assert b.nbytes <= faiss.serialize_index(labelled).nbytes - 600 * 8 + 64
    (tmp_path / "bare").mkdir()
    b.save(tmp_path / "bare")
    back = type(b).load(tmp_path / "bare")
    np.testing.assert_array_equal(back.search(unit[:20], 5)[1], b.search(unit[:20], 5)[1])
    assert b.remove(np.arange(0, 600, 2, dtype=np.int64)) == 300
    assert isinstance(b.index, faiss.IndexIDMap) == (spec != "HNSW16")  # a graph keeps tombstones instead
    I = b.search(unit[:6], 10)[1]
    assert (I[I >= 0] % 2 == 1).all() and found(b, [1, 3, 5])
    b.add(np.arange(600, 610, dtype=np.int64), unit[:10])  # the next slots after a removal
    assert found(b, [1, 3]) and 600 in b.search(unit[:1], 10)[1][0]
    (tmp_path / "labelled").mkdir()
    b.save(tmp_path / "labelled")
    back = type(b).load(tmp_path / "labelled")
    np.testing.assert_array_equal(back.search(unit[:20], 5)[1], b.search(unit[:20], 5)[1])
    engine, slots = b.compact_copy()
    assert engine.ntotal == slots.size == 310 and (np.diff(slots) > 0).all() and slots[0] == 1
    odd = _backend(("faiss", {"spec": spec}), unit)
    odd.add(np.arange(5, 25, dtype=np.int64), unit[:20])  # labels that are not the rows: FAISS stores them
    assert isinstance(odd.index, faiss.IndexIDMap) and 5 in odd.search(unit[:1], 10)[1][0]


@pytest.mark.parametrize("hnsw_m", [None, 16])
def test_sign_codes_hold_no_labels_while_rows_are_the_slots(hnsw_m, synth, tmp_path):
    X = np.ascontiguousarray(synth[:, :32])
    b = make_backend("faiss-binary", 32, "ip", {"hnsw_m": hnsw_m})
    b.add(np.arange(600, dtype=np.int64), X)
    assert not isinstance(b.index, faiss.IndexBinaryIDMap) and (hnsw_m or b.nbytes < 600 * (4 + 8))  # 4 B codes
    I = b.search(X[:5], 10)[1]
    assert all(i in I[i] for i in range(5))
    (tmp_path / "bare").mkdir()
    b.save(tmp_path / "bare")
    np.testing.assert_array_equal(type(b).load(tmp_path / "bare").search(X[:20], 5)[1], b.search(X[:20], 5)[1])
    assert b.remove(np.arange(0, 600, 2, dtype=np.int64)) == 300 and b.ntotal == 300
    assert isinstance(b.index, faiss.IndexBinaryIDMap) == (hnsw_m is None)  # a graph keeps tombstones instead
    I = b.search(X[:6], 10)[1]
    assert (I[I >= 0] % 2 == 1).all() and all(i in I[i] for i in (1, 3, 5))
    (tmp_path / "labelled").mkdir()
    b.save(tmp_path / "labelled")
    np.testing.assert_array_equal(type(b).load(tmp_path / "labelled").search(X[:20], 5)[1], b.search(X[:20], 5)[1])
