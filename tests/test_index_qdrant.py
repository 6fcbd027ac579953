"""The ``qdrant-edge`` backend: the Backend protocol, and CompressedIndex's FAISS API running on Qdrant Edge."""

from __future__ import annotations

import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

from smec_index import SMEC, CompressedIndex, read_index, write_index
from smec_index.index.backends import Backend, make_backend
from smec_index.index.backends._qdrant import allocated_bytes

FLT_MAX = float(np.finfo(np.float32).max)


@pytest.fixture(scope="module")
def unit(synth):
    return np.ascontiguousarray(synth[:, :16] / np.linalg.norm(synth[:, :16], axis=1, keepdims=True))


@pytest.fixture(scope="module")
def pca(synth):
    return SMEC((16, 8), method="pca", progress=False).fit(synth)


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("options", [{}, {"quantization": "int8", "oversampling": 3.0, "full_scan_threshold_kb": 1}])
def test_protocol_search_remove_reset(unit, metric, options):
    b = make_backend("qdrant-edge", 16, metric, options)
    assert isinstance(b, Backend) and b.is_trained and b.min_train_rows == 0 and b.dim == 16 and b.metric == metric
    labels = np.arange(600, dtype=np.int64) * 2 + 1000
    b.add(labels, unit)
    assert b.ntotal == 600 and b.nbytes > 0
    D, I = b.search(unit[:20], 5)
    assert D.dtype == np.float32 and I.dtype == np.int64 and I.shape == (20, 5)
    ref = faiss.IndexFlatIP(16) if metric == "ip" else faiss.IndexFlatL2(16)
    ref.add(unit)
    Dr, Ir = ref.search(unit[:20], 5)
    assert (labels[Ir] == I).mean() >= 0.95
    np.testing.assert_allclose(D[:, 0], Dr[:, 0], atol=1e-5)  # FAISS's scores: inner product / squared L2
    assert b.remove(labels[:590]) == 590 and b.ntotal == 10
    D, I = b.search(unit[:3], 15)
    assert set(I[I >= 0].tolist()) <= set(labels[590:].tolist()) and (I >= 0).sum(axis=1).tolist() == [10] * 3
    assert (D[:, 10:] == (-FLT_MAX if metric == "ip" else FLT_MAX)).all()
    b.reset()
    assert b.ntotal == 0 and (b.search(unit[:2], 3)[1] == -1).all()
    b.add(labels[:5], unit[:5])
    assert b.search(unit[:1], 1)[1][0, 0] == labels[0]


def test_save_load_copies_the_shard(unit, tmp_path):
    b = make_backend("qdrant-edge", 16, "ip", {"full_scan_threshold_kb": 1, "hnsw_ef": 32})
    b.add(np.arange(600, dtype=np.int64), unit)
    b.remove(np.arange(0, 600, 2, dtype=np.int64))
    b.save(tmp_path)
    assert allocated_bytes(tmp_path) < 2 * b.nbytes  # Qdrant's sparse 32 MiB files stay sparse in the copy
    back = type(b).load(tmp_path)
    assert back.ntotal == b.ntotal == 300 and back.options() == b.options()
    for q in (unit[:1], unit[:30]):
        np.testing.assert_array_equal(back.search(q, 8)[1], b.search(q, 8)[1])
        np.testing.assert_array_equal(back.search(q, 8)[0], b.search(q, 8)[0])
    back.add(np.array([1000], np.int64), unit[1:2])  # the loaded copy is private: the saved files stay as saved
    assert back.ntotal == 301 and type(b).load(tmp_path).ntotal == 300


def test_working_directory_is_removed_with_the_backend(unit):
    b = make_backend("qdrant-edge", 16, "ip", {})
    b.add(np.arange(10, dtype=np.int64), unit[:10])
    workdir = Path(b.engine.path).parent
    assert workdir.is_dir()
    del b
    assert not workdir.exists()


@pytest.mark.parametrize("options,exc,match", [
    ({"spec": "Flat"}, TypeError, r"qdrant-edge backend: unknown option\(s\) \['spec'\]"),
    ({"m": 1}, ValueError, "m must be an int >= 2"),
    ({"quantization": "pq"}, ValueError, "quantization must be one of"),
    ({"oversampling": 0.5}, ValueError, "oversampling must be a number >= 1"),
    ({"datatype": "int8"}, ValueError, "datatype must be one of"),
])
def test_bad_backend_options(options, exc, match):
    with pytest.raises(exc, match=match):
        make_backend("qdrant-edge", 16, "ip", options)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_compressed_index_on_qdrant_edge_matches_faiss_flat(pca, synth, metric, tmp_path):
    index = CompressedIndex(pca, backend="qdrant-edge", metric=metric, candidates=600)
    index.add_with_ids(synth, np.arange(600, dtype=np.int64) + 10)
    ref = faiss.IndexFlatIP(48) if metric == "ip" else faiss.IndexFlatL2(48)
    ref.add(synth)
    Dr, Ir = ref.search(synth[:30], 10)
    D, I = index.search(synth[:30], 10)
    np.testing.assert_array_equal(I, Ir + 10)
    np.testing.assert_allclose(D, Dr, atol=1e-4)
    assert index.remove_ids(np.arange(10, 20)) == 10 and index.ntotal == 590
    write_index(index, tmp_path / "idx")
    back = read_index(tmp_path / "idx")
    np.testing.assert_array_equal(back.search(synth[:30], 10)[1], index.search(synth[:30], 10)[1])
    assert not np.isin(back.search(synth[:10], 10)[1], np.arange(10, 20)).any()


def test_concurrent_searches(pca, synth):
    index = CompressedIndex(pca, backend="qdrant-edge")
    index.add(synth)
    expected = index.search(synth[:40], 5)[1]
    out: dict[int, np.ndarray] = {}

    def run(t: int) -> None:
        out[t] = np.vstack([index.search(synth[i : i + 1], 5)[1] for i in range(40)])

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in range(4):
        np.testing.assert_array_equal(out[t], expected)


@pytest.mark.parametrize("quantization", ["turbo1", "turbo1.5", "turbo2", "turbo4", "turbo8",
                                          "pq-x4", "pq-x8", "pq-x16", "pq-x32", "pq-x64"])
def test_turboquant_and_product_quantization_are_searched_and_rescored(unit, quantization):
    """Qdrant's TurboQuant (1.18) and product quantization as the backend's codes: the top 5 read from 50
    candidates of the codes, re-scored with the floats, are the exact top 5 with FAISS's exact scores."""
    b = make_backend("qdrant-edge", 16, "ip", {"quantization": quantization, "oversampling": 10.0,
                                                 "full_scan_threshold_kb": 1})
    b.add(np.arange(600, dtype=np.int64), unit)
    D, I = b.search(unit[:50], 5)
    ref = faiss.IndexFlatIP(16)
    ref.add(unit)
    Dr, Ir = ref.search(unit[:50], 5)
    coarse = quantization in ("turbo1", "turbo1.5", "pq-x64")  # 16 to 24 bits a vector at 16 dims
    assert (I == Ir).mean() >= (0.8 if coarse else 0.95)
    found = I == Ir
    np.testing.assert_allclose(D[found], Dr[found], atol=1e-5)  # re-scored: exact scores, not the codes'


def test_compressed_index_with_a_turboquant_stage(pca, synth):
    index = CompressedIndex(pca, dims=8, backend="qdrant-edge", code="qdrant-turbo2", candidates=100)
    index.add(synth)
    ref = faiss.IndexFlatIP(48)
    ref.add(synth)
    _, Ir = ref.search(synth[:30], 10)
    _, I = index.search(synth[:30], 10)
    assert (I == Ir).mean() >= 0.95
    assert index.memory_usage()["backends"] > 0
