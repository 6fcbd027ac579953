"""Stage codes and the lean default: the faiss-binary backend, named codes and their bytes, RaBitQ's query
bits, the default one-stage index with full vectors on disk, and memory_usage / build / info in bytes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from conftest import _clustered, write_toy_beir
from test_cli import run as _run

from smec_index import SMEC
from smec_index.compressor import api
from smec_index.index import CompressedIndex
from smec_index.index.backends import make_backend
from smec_index.index.backends.binary import BinaryBackend, binarize
from smec_index.index.backends.codes import CODES, LABEL_BYTES, code_bytes, default_first_stage


@pytest.fixture(scope="module")
def pca(synth):
    return SMEC((32, 16, 8), "pca").fit(synth)


@pytest.fixture(scope="module")
def wide():
    """600 x 768 clustered unit vectors and a PCA compressor (256, 128) fitted on them."""
    X = _clustered(600, 768, seed=3)
    return X, SMEC((256, 128), "pca").fit(X)


def _exact(Q: np.ndarray, X: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(Q @ X.T), axis=1, kind="stable")[:, :k]


# --------------------------------------------------------------------- faiss-binary backend
def test_binary_codes_are_sign_bits_and_scores_follow_hamming(synth):
    X = synth[:, :32].copy()
    b = BinaryBackend(32)
    b.add(np.arange(600, dtype=np.int64), X)
    assert b.is_trained and b.min_train_rows == 0 and b.ntotal == 600
    codes = b.codes(X[:3])
    assert codes.shape == (3, 4) and np.array_equal(np.unpackbits(codes, axis=1, bitorder="little"), X[:3] > 0)
    D, I = b.search(X[:5], 20)
    bits = np.unpackbits(binarize(X), axis=1, bitorder="little").astype(int)
    hamming = (bits[:5, None, :] != bits[I]).sum(axis=2)
    assert np.allclose(D, np.cos(np.pi * hamming / 32), atol=1e-6)
    assert np.all(np.diff(D, axis=1) <= 1e-7) and np.all(I[:, 0] == np.arange(5))
    l2 = BinaryBackend(32, "l2")
    l2.add(np.arange(600, dtype=np.int64), X)
    D2, I2 = l2.search(X[:5], 20)
    assert np.array_equal(I2, I) and np.allclose(D2, 2 - 2 * D, atol=1e-6)


def test_binary_itq_trains_rotates_and_round_trips(synth, tmp_path):
    X = synth[:, :16].copy()
    b = BinaryBackend(16, itq=True)
    assert not b.is_trained and b.min_train_rows == 16
    b.train(X)
    assert b.is_trained
    b.add(np.arange(600, dtype=np.int64), X)
    assert not np.array_equal(b.codes(X), binarize(X))  # the rotation changes the bits
    bits = np.unpackbits(b.codes(X), axis=1, bitorder="little")
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.2)  # centred: each bit splits the corpus
    b.remove(np.array([3, 4], dtype=np.int64))
    b.save(tmp_path)
    loaded = BinaryBackend.load(tmp_path)
    assert loaded.options() == b.options() == {"itq": True, "hnsw_m": None, "ef_search": 64}
    assert loaded.ntotal == 598
    for x, y in zip(loaded.search(X[:10], 5), b.search(X[:10], 5)):
        np.testing.assert_array_equal(x, y)


def test_binary_hnsw_tombstones_removed_labels(synth, tmp_path):
    X = synth[:, :32].copy()
    b = BinaryBackend(32, hnsw_m=16, ef_search=600)
    b.add(np.arange(600, dtype=np.int64), X)
    assert b.remove(np.array([0, 1], dtype=np.int64)) == 2 and b.ntotal == 598
    _, I = b.search(X[:2], 10)
    assert not np.isin(I, [0, 1]).any() and (I >= 0).all()
    b.save(tmp_path)
    _, I2 = BinaryBackend.load(tmp_path).search(X[:2], 10)
    assert not np.isin(I2, [0, 1]).any()
    b.reset()
    assert b.ntotal == 0


@pytest.mark.parametrize("kwargs, match", [({"dim": 12}, "multiple of 8"), ({"dim": 16, "hnsw_m": 1}, "hnsw_m"),
                                           ({"dim": 16, "itq": 1}, "itq must be a bool"),
                                           ({"dim": 16, "metric": "cos"}, "metric")])
def test_binary_bad_arguments(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        BinaryBackend(**kwargs)


# --------------------------------------------------------------------- codes
def test_code_bytes_match_faiss_and_the_issue():
    assert code_bytes("rabitq1", 384) == 56 and code_bytes("rabitq4", 384) == 212  # issue 16's table
    assert code_bytes("rabitq1", 128) == 24 and code_bytes("sq8", 128) == 128 and code_bytes("sq4", 128) == 64
    assert code_bytes("binary", 128) == code_bytes("binary-itq", 128) == code_bytes("qdrant-binary", 128) == 16
    assert code_bytes("qdrant-binary2", 128) == 32 and code_bytes("qdrant-binary1.5", 128) == 24
    # TurboQuant: the bits plus 8 bytes a vector (1.5 bits: 1-bit codes of 1.5 d); product quantization: 1/N of float32
    assert [code_bytes(f"qdrant-turbo{b}", 384) for b in ("1", "1.5", "2", "4", "8")] == [56, 80, 104, 200, 392]
    assert [code_bytes(f"qdrant-pq-x{n}", 384) for n in (4, 8, 16, 32, 64)] == [384, 192, 96, 48, 24]
    with pytest.raises(ValueError, match="code must be one of"):
        code_bytes("pq", 64)


def test_product_quantizer_codes_size_their_sub_quantizers_by_the_dim(synth, tmp_path):
    """pq1 / pq2 / pq4 / opq2: one byte per 8 / 4 / 2 / 4 dims, the spec resolved at the stage's dim (no
    polysemous training), a dim that does not split into sub-vectors refused, and saved with the resolved spec."""
    from smec_index.index.backends.codes import code_options, fits_dim

    assert (code_bytes("pq1", 128), code_bytes("pq2", 112), code_bytes("pq4", 64), code_bytes("opq2", 128)) == \
        (16, 28, 32, 32)
    assert code_options("pq2", 112) == {"spec": "PQ28np"} and code_options("opq2", 96) == {"spec": "OPQ24,PQ24np"}
    with pytest.raises(ValueError, match="multiple of 4, got 30"):
        code_options("pq2", 30)
    assert [fits_dim(c, 30) for c in ("pq2", "pq4", "pq1", "sq8")] == [False, True, False, True]
    odd = SMEC((30, 16), "pca").fit(synth)
    with pytest.raises(ValueError, match="multiple of 4, got 30"):
        CompressedIndex(odd, dims=30, code="pq2")
    few = CompressedIndex(odd, dims=16, code="pq2")
    with pytest.raises(ValueError, match="need at least 256 to train"):
        few.train(synth[:100])  # 256 centroids a sub-quantizer need 256 rows
    few.train(synth)
    few.add(synth)
    assert few.ntotal == 600
    backend = make_backend("faiss", 16, "ip", code_options("pq2", 16))
    with pytest.raises(ValueError, match="training 'PQ4np' on 100 rows failed"):
        backend.train(synth[:100, :16].copy())
    index = CompressedIndex(odd, code="pq2", budget=1000)  # the largest dim that holds the code
    assert index.dims == (16,) and index.backends[16].options()["spec"] == "PQ4np"
    index = CompressedIndex(SMEC((32, 16), "pca").fit(synth), dims=32, code="opq2", candidates=50)
    index.train(synth)
    index.add(synth)
    # 8 code bytes a vector (no label: FAISS's rows are the slots), plus the codebooks (8 x 256 x 4 floats) and
    # the 48 -> 32 map shared by 600 vectors
    assert index.memory_usage()["ram_bytes_per_vector"] == pytest.approx(
        8 + (8 * 256 * 4 + 32 * 32 + 48 * 32 + 32) * 4 / 600, abs=2)
    hits = index.search(synth[:20], 10)[1]
    assert np.mean([len(set(a) & set(b)) for a, b in zip(hits, _exact(synth[:20], synth, 10))]) >= 9
    index.save(tmp_path / "ix")
    loaded = CompressedIndex.load(tmp_path / "ix")
    assert loaded.code == "opq2" and loaded.backends[32].options()["spec"] == "OPQ8,PQ8np"
    np.testing.assert_array_equal(loaded.search(synth[:20], 10)[1], hits)


def test_residual_quantizer_codes_match_pq_bytes_and_keep_more_neighbours(synth, tmp_path, monkeypatch):
    """rq1 / rq2 / rq4: FAISS RQ<m>x8 with the bytes of pq1 / pq2 / pq4 at the same dim, look-up-table search
    without norms (inner product), 256 training rows needed, a seeded sample of AQ_TRAIN_ROWS rows trained on,
    saved and loaded with the resolved spec; on clustered data the stage's own top 10 (no rerank) keeps more of
    the exact answer than pq at the same bytes."""
    import smec_index.index.backends.faiss as fb
    from smec_index.index.backends.codes import code_options

    assert [code_bytes(f"rq{b}", 112) for b in (1, 2, 4)] == [code_bytes(f"pq{b}", 112) for b in (1, 2, 4)] == \
        [14, 28, 56]
    assert code_options("rq2", 112) == {"spec": "RQ28x8"}
    with pytest.raises(ValueError, match="multiple of 4, got 30"):
        code_options("rq2", 30)
    rq = make_backend("faiss", 32, "ip", code_options("rq2", 32))
    inner = faiss.downcast_index(rq._inner)
    assert inner.rq.search_type == faiss.AdditiveQuantizer.ST_LUT_nonorm and rq.min_train_rows == 256
    with pytest.raises(ValueError, match="training 'RQ8x8' on 100 rows failed"):
        rq.train(synth[:100, :32].copy())
    seen = []
    monkeypatch.setattr(fb, "AQ_TRAIN_ROWS", 300)
    real = fb._training_rows
    monkeypatch.setattr(fb, "_training_rows", lambda index, X: seen.append(real(index, X).shape) or real(index, X))
    stage = SMEC((32,), "pca").fit(synth)
    recall = {}
    for code in ("pq2", "rq2"):
        index = CompressedIndex(stage, dims=32, code=code, candidates=50)
        index.train(synth)
        index.add(synth)
        hits = index.search(synth[:100], 10, rerank="none")[1]
        recall[code] = np.mean([len(set(a) & set(b)) for a, b in zip(hits, _exact(synth[:100], synth, 10))])
    assert seen == [(600, 32), (300, 32)]  # pq trains on every row, rq on the sample
    assert recall["rq2"] > recall["pq2"]
    index.save(tmp_path / "ix")
    loaded = CompressedIndex.load(tmp_path / "ix")
    assert loaded.code == "rq2" and loaded.backends[32].options()["spec"] == "RQ8x8"
    np.testing.assert_array_equal(loaded.search(synth[:20], 10)[1], index.search(synth[:20], 10)[1])


def test_default_first_stage_fits_the_budget():
    assert default_first_stage(768, (256, 128, 64, 32)) == (256, "sq4")
    assert default_first_stage(384, (128, 64, 32)) == (128, "sq4")
    dim, code = default_first_stage(768, (256, 128, 64), budget=1024 + LABEL_BYTES)
    assert (dim, code) == (256, "float32")
    for D, dims in ((768, (256, 128, 64, 32)), (384, (128, 64, 32)), (1024, (512, 256))):
        dim, code = default_first_stage(D, dims)
        assert code_bytes(code, dim) + LABEL_BYTES <= 4 * D / 16


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_code_reranks_to_the_exact_answer(code, pca, synth):
    """With every row a candidate, any code's first stage followed by the full rerank is exact search."""
    index = CompressedIndex(pca, dims=32, code=code, candidates=600)
    assert index.backend == CODES[code].backend and index.code == code
    index.train(synth)
    index.add(synth)
    D, I = index.search(synth[:20], 10)
    np.testing.assert_array_equal(I, _exact(synth[:20], synth, 10))
    _, I0 = index.search(synth[:20], 10, rerank="none")
    assert (I0 >= 0).all()


def test_code_arguments_are_checked(pca):
    with pytest.raises(ValueError, match="code must be one of"):
        CompressedIndex(pca, code="pq8")
    with pytest.raises(ValueError, match="runs on the 'faiss-binary' backend"):
        CompressedIndex(pca, code="binary", backend="faiss")
    with pytest.raises(ValueError, match="sets spec='SQ8'"):
        CompressedIndex(pca, code="sq8", spec="Flat")
    with pytest.raises(ValueError, match="budget must be a positive number"):
        CompressedIndex(pca, budget=0)
    with pytest.raises(ValueError, match="budget chooses the dim"):
        CompressedIndex(pca, dims=16, budget=64)
    with pytest.raises(ValueError, match="budget chooses the dim"):
        CompressedIndex(pca, spec="Flat", budget=64)
    index = CompressedIndex(pca, dims=16, code="rabitq2", params={"qb": 4})
    assert index.backends[16].options() == {"spec": "RaBitQ2", "params": {"qb": 4}}


def test_rabitq_query_bits_are_set_kept_and_checked(synth, tmp_path):
    b = make_backend("faiss", 32, "ip", {"spec": "RaBitQ", "params": {"qb": 8}})
    assert faiss.downcast_index(b._inner).qb == 8
    b.train(synth[:, :32].copy())
    b.add(np.arange(600, dtype=np.int64), synth[:, :32].copy())
    b.save(tmp_path)
    assert faiss.downcast_index(type(b).load(tmp_path)._inner).qb == 8
    ivf = make_backend("faiss", 32, "ip", {"spec": "IVF4,RaBitQ", "params": {"qb": 6, "nprobe": 2}})
    assert faiss.downcast_index(ivf.index).qb == 6
    with pytest.raises(ValueError, match="qb"):
        make_backend("faiss", 32, "ip", {"spec": "Flat", "params": {"qb": 8}})
    with pytest.raises(ValueError, match="qb"):
        make_backend("faiss", 32, "ip", {"spec": "RaBitQ", "params": {"qb": 9}})


# --------------------------------------------------------------------- the lean default
def test_default_index_is_one_coded_stage_with_full_vectors_on_disk(wide):
    X, smec = wide
    index = CompressedIndex(smec, n_vectors=100_000)  # the 256-d map is 8 B a vector of 100k
    assert index.dims == (256,) and index.code == "sq4" and index.full_store == "disk"
    index.train(X)
    index.add(X)
    u = index.memory_usage()
    assert u["raw_bytes_per_vector"] == 4 * 768 and u["ntotal"] == 600
    assert u["compressor"] == (768 * 256 + 256) * 4 == smec.subset(256).nbytes
    assert (u["ram_bytes"] - u["compressor"]) / 600 + u["compressor"] / 100_000 <= 4 * 768 / 16
    assert u["disk_bytes"] == 600 * 4 * 768 and u["full_store"] == 0 and u["cascade_stores"] == 0
    assert u["ram_bytes"] == index.nbytes == sum(u[k] for k in ("compressor", "backends", "ids", "cascade_stores",
                                                                "full_store"))
    D, I = index.search(X[:20], 10, candidates=600)
    np.testing.assert_array_equal(I, _exact(X[:20], X, 10))


def test_a_small_corpus_gets_a_stage_whose_map_fits_the_budget_too(wide):
    """The compressor's map is held once whatever the corpus: on 100,000 vectors the 256-d map is 8 B a vector
    and 256 dims at SQ4 fit 192 B; on 5,000 it is 158 B, nothing of 4 bits fits at 256 (D / 3) and the
    full vector at 1 bit (no map to hold) is the default; by default the corpus is the compressor's fitted rows;
    an index of that size stays within budget."""
    X, smec = wide
    assert smec.fit_rows_ == 600
    assert (CompressedIndex(smec, n_vectors=100_000).dims, CompressedIndex(smec, n_vectors=100_000).code) == \
        ((256,), "sq4")
    assert (CompressedIndex(smec, n_vectors=5_000).dims, CompressedIndex(smec, n_vectors=5_000).code) == \
        ((768,), "rabitq1")
    small = CompressedIndex(smec)
    assert (small.dims, small.code) == ((768,), "rabitq1")
    # nothing fits 100 B with its map (128 dims at 1 bit: 32 + 79); the order again without maps: 256 at 2 bits
    tight = CompressedIndex(smec, n_vectors=5_000, budget=100)
    assert (tight.dims, tight.code) == ((256,), "rabitq2")
    assert (CompressedIndex(smec, n_vectors=5_000, budget=20).dims, CompressedIndex(smec, budget=20).code) == \
        ((128,), "rabitq1")  # nothing fits even without: the smallest dim at 1 bit
    rng = np.random.default_rng(0)
    big = np.repeat(X, 9, axis=0) + rng.normal(scale=0.01, size=(5_400, 768)).astype(np.float32)
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    index = CompressedIndex(SMEC((256, 128), "pca").fit(big))
    assert (index.dims, index.code) == ((768,), "rabitq1")
    index.train(big)
    index.add(big)
    u = index.memory_usage()
    assert u["compressor"] == 0 and u["ram_bytes_per_vector"] <= 4 * 768 / 16  # the identity map is not held
    hits = index.search(big[:20], 10)[1]
    assert np.mean([len(set(a) & set(b)) for a, b in zip(hits, _exact(big[:20], big, 10))]) >= 9
    unknown = SMEC((256, 128), "pca").fit(X)
    unknown.fit_rows_ = None  # a compressor saved before fit_rows was recorded: the map is not counted
    assert (CompressedIndex(unknown).dims, CompressedIndex(unknown).code) == ((256,), "sq4")
    for bad in (0, -5, 2.5, "100", True):
        with pytest.raises(ValueError, match="n_vectors must be a positive int"):
            CompressedIndex(smec, n_vectors=bad)
    with pytest.raises(ValueError, match="n_vectors sizes the default first stage"):
        CompressedIndex(smec, dims=128, n_vectors=1000)


def test_an_unfitted_compressor_gets_its_default_stage_when_train_fits_it(wide):
    """Before the fit neither the input dim nor the corpus is known: the stage is provisional, and train chooses
    it as a fitted compressor's would be (600 rows: the full vector at 1 bit; 100,000 expected: 256 at 4 bits)."""
    X, _ = wide
    index = CompressedIndex(SMEC((256, 128), "pca"))
    index.train(X)
    assert (index.dims, index.code, tuple(index.backends)) == ((768,), "rabitq1", (768,))
    index.add(X)
    assert (index.search(X[:5], 1)[1][:, 0] == np.arange(5)).all()
    big = CompressedIndex(SMEC((256, 128), "pca"), n_vectors=100_000)
    big.train(X)
    assert (big.dims, big.code) == ((256,), "sq4")
    kept = CompressedIndex(SMEC((256, 128), "pca"), code="sq8")  # a code the caller chose is not re-chosen
    kept.train(X)
    assert kept.code == "sq8"


def test_the_full_vector_is_a_first_stage_of_its_own(synth, tmp_path):
    """dims=D codes the (normalised) full vector itself: search, save, load, removal and adds after loading work
    as for a reduced dim; D beside another dim is refused."""
    smec = SMEC((32, 16), "pca").fit(synth)
    index = CompressedIndex(smec, dims=48, code="sq8")
    index.train(synth)
    index.add(synth)
    np.testing.assert_array_equal(index.search(synth[:10], 5)[1], _exact(synth[:10], synth, 5))
    np.testing.assert_allclose(index.project(synth[:3], 48), synth[:3])
    assert index.memory_usage()["compressor"] == 0 and smec.subset(48).dims_ == ()
    index.save(tmp_path / "ix")
    loaded = CompressedIndex.load(tmp_path / "ix")
    assert loaded.dims == (48,) and loaded.code == "sq8" and loaded.smec.dims_ == ()
    np.testing.assert_array_equal(loaded.search(synth[:10], 5)[1], index.search(synth[:10], 5)[1])
    assert loaded.remove_ids(np.array([0, 1])) == 2 and loaded.ntotal == 598
    assert loaded.search(synth[2:3], 1)[1][0, 0] == 0  # sequential ids compact, as in FAISS
    loaded.add(synth[:3])
    loaded.save(tmp_path / "ix2")
    assert CompressedIndex.load(tmp_path / "ix2").ntotal == 601
    for kw in ({"backend": "hnswlib"}, {"code": "binary"}):  # any engine holds it
        other = CompressedIndex(smec, dims=48, **kw)
        other.train(synth)
        other.add(synth)
        assert (other.search(synth[:5], 1)[1][:, 0] == np.arange(5)).all()
    assert (index.to_faiss().search(synth[:5], 1)[1][:, 0] == np.arange(5)).all()  # and FAISS natively
    with pytest.raises(ValueError, match="the full dim 48 is a first stage of its own"):
        CompressedIndex(smec, dims=(16, 48), code="sq8")
    with pytest.raises(ValueError, match="dims \\[40\\] are not dims of the compressor"):
        CompressedIndex(smec, dims=40, code="sq8")


def test_fit_rows_survive_a_save_and_older_saves_load_without_them(wide, tmp_path):
    from safetensors.numpy import load_file

    X, smec = wide
    smec.save(tmp_path / "m")
    assert SMEC.load(tmp_path / "m").fit_rows_ == 600 and smec.subset(128).fit_rows_ == 600
    sampled = SMEC((16, 8), "pca", max_train_rows=200).fit(X[:, :48])
    assert sampled.fit_rows_ == 600  # the corpus, not the 200 rows it trained on
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    tensors = load_file(str(tmp_path / "m" / "weights.safetensors"))
    del cfg["fitted"]["fit_rows"]  # as saved before 2026-12-05
    assert SMEC._from_saved(cfg, tensors, tmp_path / "m").fit_rows_ is None
    cfg["fitted"]["fit_rows"] = -3
    with pytest.raises(ValueError, match="fit_rows=-3"):
        SMEC._from_saved(cfg, tensors, tmp_path / "m")


def test_budget_and_explicit_arguments_choose_the_stage(wide):
    X, smec = wide
    many = {"n_vectors": 10**9}  # the map's share of a vector: under 0.001 B
    assert CompressedIndex(smec, budget=1024 + LABEL_BYTES + 0.01, **many).code == "float32"
    assert CompressedIndex(smec, budget=48.01, **many).dims == (256,)  # 1-bit RaBitQ at 256: 40 B code + 8 B label
    assert CompressedIndex(smec, budget=47.99, **many).dims == (128,)
    assert CompressedIndex(smec, code="sq8", **many).dims == (128,)  # 256 B at 256 dims is over 192
    old = CompressedIndex(smec, dims=smec.dims_, full_store="memory", spec="Flat")  # the old default, on request
    assert old.dims == (128, 256) and old.code is None
    old.train(X)
    old.add(X)
    u = old.memory_usage()
    assert u["disk_bytes"] == 0 and u["full_store"] == 600 * 4 * 768 and u["cascade_stores"] == 600 * 4 * 256
    assert u["compressor"] == smec.nbytes == (768 * 384 + 384) * 4
    assert CompressedIndex(smec, spec="HNSW32").dims == (128,)  # backend options without a code: the smallest dim


def test_a_compressor_fitted_for_a_code_indexes_with_it_by_default(synth):
    smec = SMEC((16, 8), "smec", code="rabitq2", max_epochs=2, patience=1, progress=False).fit(synth)
    index = CompressedIndex(smec)
    assert index.code == "rabitq2" and index.dims == (8,)  # nothing fits 48 / 4 B: the smallest dim
    assert CompressedIndex(smec, code="sq8").code == "sq8"  # an explicit code still wins


def test_memory_usage_of_an_empty_index(pca):
    u = CompressedIndex(pca).memory_usage()
    assert u["ntotal"] == 0 and u["ram_bytes_per_vector"] == 0.0 and u["raw_bytes_per_vector"] == 4 * 48


def test_code_survives_save_and_load(pca, synth, tmp_path):
    index = CompressedIndex(pca, dims=16, code="binary-itq")
    index.train(synth)
    index.add(synth)
    index.save(tmp_path / "ix")
    loaded = CompressedIndex.load(tmp_path / "ix")
    assert loaded.code == "binary-itq" and loaded.full_store == "disk" and "code='binary-itq'" in repr(loaded)
    np.testing.assert_array_equal(loaded.search(synth[:5], 5)[1], index.search(synth[:5], 5)[1])


# --------------------------------------------------------------------- command line
def test_build_and_info_report_bytes_per_vector(wide, tmp_path, capsys):
    X, smec = wide
    smec.save(tmp_path / "m")
    rng = np.random.default_rng(0)  # 12,000 rows where the compressor was fitted on 600: build spreads its map
    big = np.repeat(X, 20, axis=0) + rng.normal(scale=0.01, size=(12_000, 768)).astype(np.float32)
    np.save(tmp_path / "X.npy", big / np.linalg.norm(big, axis=1, keepdims=True))
    code, out, err = _run(["build", "--compressor", tmp_path / "m", "--corpus", tmp_path / "X.npy", "--out",
                           tmp_path / "ix", "--quiet"], capsys)
    assert code == 0, err
    # the 256-d map is 66 B a vector of 12,000: no 4-bit code fits beside it, the full vector at 1 bit does
    assert "dims=(768,)" in out and "code='rabitq1'" in out and "raw float32 3,072 B/vector" in out and "RAM " in out
    assert "the first stage codes the full vector: on 12,000 vectors" in out
    code, out, err = _run(["info", tmp_path / "ix", "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["ntotal"] == 12_000 and info["raw_bytes_per_vector"] == 3072 and info["code"] == "rabitq1"
    assert info["disk_bytes_per_vector"] == pytest.approx(info["total_bytes"] / 12_000)
    assert info["ram_bytes_per_vector"] <= 3072 / 16 and info["disk_bytes_per_vector"] <= 1.1 * 3072
    assert info["ram_bytes_per_vector"] == pytest.approx(
        (info["bytes"]["backend-768"] + info["bytes"]["smec"]) / 12_000)  # sequential ids: no id array in RAM
    loaded = CompressedIndex.load(tmp_path / "ix").memory_usage()  # info reads the manifest as load holds it
    assert info["ram_bytes_per_vector"] == pytest.approx(loaded["ram_bytes_per_vector"], abs=1)
    (tmp_path / "ids.txt").write_text("".join(f"{7 * i + 3}\n" for i in range(12_000)))
    code, _, err = _run(["build", "--compressor", tmp_path / "m", "--corpus", tmp_path / "X.npy", "--ids",
                         tmp_path / "ids.txt", "--out", tmp_path / "ixid", "--quiet"], capsys)
    assert code == 0, err
    named = json.loads(_run(["info", tmp_path / "ixid", "--json"], capsys)[1])
    held = CompressedIndex.load(tmp_path / "ixid").memory_usage()
    assert held["ids"] == 24 * 12_000  # each slot's id, and the sorted id -> slot map
    assert named["ram_bytes_per_vector"] == pytest.approx(held["ram_bytes_per_vector"], abs=1)
    code, out, _ = _run(["info", tmp_path / "ix"], capsys)
    assert "per vector" in out and "of raw" in out and "code rabitq1" in out and "dims none kept" in out
    code, out, err = _run(["build", "--compressor", tmp_path / "m", "--corpus", tmp_path / "X.npy", "--code", "sq8",
                           "--full-store", "memory", "--out", tmp_path / "ix2", "--quiet"], capsys)
    assert code == 0, err
    info = json.loads(_run(["info", tmp_path / "ix2", "--json"], capsys)[1])
    assert info["dims"] == [128] and info["ram_bytes_per_vector"] > 3072  # the full store counts in RAM
    code, _, err = _run(["build", "--compressor", tmp_path / "m", "--corpus", tmp_path / "X.npy", "--code", "binary",
                         "--spec", "Flat", "--out", tmp_path / "ix3", "--quiet"], capsys)
    assert code == 1 and "unknown option(s) ['spec']" in err and not (tmp_path / "ix3").exists()


# --------------------------------------------------------------------- benchmark
def test_bytes_benchmark_writes_records_and_plot(tmp_path, monkeypatch):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bytes as bench

    data = write_toy_beir(tmp_path / "beir", n_docs=150, n_queries=12, dim=32)
    monkeypatch.setattr(bench, "STAGE_CODES", ("float32", "rabitq1", "binary"))
    out = tmp_path / "b.json"
    assert bench.main(["--data", str(data), "--model", "toy", "--dims", "16", "--qps-queries", "3", "--cache",
                       str(tmp_path / "cache"), "--json", str(out), "--plot", str(tmp_path / "b.png")]) == 0
    payload = json.loads(out.read_text())
    keys = {"first_stage", "dim", "code", "code_bytes", "candidates", "recall@10", "ndcg@10", "qps_b1"}
    assert all(keys <= set(r) for r in payload["records"])
    assert {"commit", "dirty", "threads", "command", "machine", "load_avg_before"} <= set(payload)
    stages = {(r["first_stage"], r["code"]) for r in payload["records"]}
    assert {("full", "float32"), ("pca", "rabitq1"), ("smec", "binary"), ("smec-qa", "binary-itq"),
            ("smec-qa", "rabitq1"), ("faiss", "RaBitQ")} <= stages
    assert any("ITQ256" in s for s in payload["skipped"])  # not defined on 32-dim vectors
    choices = payload["stage_choices"]
    assert set(choices["smec-qa"]) == {"rabitq1", "binary"} and choices["smec"]
    for kept in [choices["smec"], *choices["smec-qa"].values()]:
        assert all(c["choice"] in c["candidates"] for c in kept)
    assert {c["rule"] for c in choices["smec-qa"]["rabitq1"]} == {"pca-2se"}
    assert {c["rule"] for c in choices["smec"]} == {"best"}
    exact = [r for r in payload["records"] if (r["first_stage"], r["code"]) == ("full", "float32")]
    assert all(r["recall@10"] == 1.0 for r in exact) and {r["candidates"] for r in exact} == {0, 20, 50, 100}
    assert (tmp_path / "b.png").stat().st_size > 1000 and out.with_suffix(".md").is_file()
    assert list((tmp_path / "cache").iterdir())  # the compressors were cached
    default = payload["default_build"]
    assert default["full_store"] == "disk" and default["raw_bytes_per_vector"] == 128 and default["recall@10"] > 0
    # built from a compressor of the user's default dims (16, 8, 4 for 32-d), not the run's --dims 16: nothing fits
    # raw / 16 = 8 B a vector there, so the smallest dim
    assert default["dim"] == 4


def test_bytes_benchmark_codes_option_and_full_stage_skips(tmp_path, capsys):
    """--codes limits the stage codes; the full first stage skips the residual quantizers and says so."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bytes as bench

    data = write_toy_beir(tmp_path / "beir", n_docs=300, n_queries=12, dim=32)
    out = tmp_path / "b.json"
    assert bench.main(["--data", str(data), "--model", "toy", "--dims", "16", "--qps-queries", "3", "--codes",
                       "float32,rq1", "--cache", str(tmp_path / "cache"), "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    stages = {(r["first_stage"], r["code"]) for r in payload["records"] if r["first_stage"] != "faiss"}
    assert stages == {("full", "float32"), ("pca", "float32"), ("pca", "rq1"), ("smec", "float32"), ("smec", "rq1")}
    assert "full rq1: see FULL_SKIP" in payload["skipped"]
    assert "--codes float32,rq1" in payload["command"]
    with pytest.raises(SystemExit):
        bench.main(["--data", str(data), "--model", "toy", "--codes", "float32,pq3"])
    assert "--codes: expected names among" in capsys.readouterr().err


def test_the_default_dims_include_the_half_rabitq_bytes_stage():
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bytes as bench

    assert bench.half_rabitq_dim(384) == 224 and code_bytes("rq1", 224) * 2 == code_bytes("rabitq1", 384)
    assert bench.half_rabitq_dim(768) == 416 and code_bytes("pq1", 416) * 2 == code_bytes("rabitq1", 768)
    assert bench.bytes_dims(384) == (224, 128, 64, 32) and bench.bytes_dims(768) == (416, 256, 128, 64, 32)
    assert bench.half_rabitq_dim(32) is None and bench.bytes_dims(32) == (16, 8, 4)


def test_quantization_aware_first_stages_are_fitted_per_code(synth, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bytes as bench

    stages = bench._first_stages(synth, (16, 8), 0, tmp_path, "t", ("float32", "rabitq1", "binary"))
    qa = stages["smec-qa"][1]
    assert set(qa) == {"rabitq1", "binary"}
    assert (qa["rabitq1"][0].code, qa["rabitq1"][1]) == ("rabitq1", "rabitq1")
    assert (qa["binary"][0].code, qa["binary"][1]) == ("binary-itq", "binary-itq")
    assert stages["smec"][0].code is None and stages["pca"][0].method == "pca"
    assert bench.pareto([(8, 0.5), (16, 0.4), (24, 0.9), (32, 0.9)]) == [(8, 0.5), (24, 0.9)]


def test_advise_command_prints_the_bytes_choice(synth, tmp_path, capsys):
    np.save(tmp_path / "X.npy", synth)
    SMEC((32, 16), "pca").fit(synth).save(tmp_path / "m")
    code, out, err = _run(["advise", "--corpus", tmp_path / "X.npy", "--compressor", tmp_path / "m", "--budget", "48",
                           "--codes", "sq8,binary", "--candidates", "50", "--json", tmp_path / "a.json", "--quiet"],
                          capsys)
    assert code == 0, err
    assert "## In bytes" in out and "Choice (within 48 B a vector)" in out
    payload = json.loads((tmp_path / "a.json").read_text())
    assert payload["budget"] == 48 and payload["choice"]["ram_bytes_per_vector"] <= 48
    assert {o["code"] for o in payload["options"]} == {"sq8", "binary"}
    code, _, err = _run(["advise", "--corpus", tmp_path / "X.npy", "--codes", "qdrant-int8"], capsys)
    assert code == 2 and "expected comma-separated names" in err


def test_code_choice_benchmark_scores_candidates_on_training_queries(tmp_path):
    """benchmarks/code_choice.py: every stage candidate scored on held-out rows and on training queries; the
    library's choice is its "full-2se" rule applied to the same scores; data without train queries is refused."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import code_choice as bench

    data = write_toy_beir(tmp_path / "beir", n_docs=400, n_queries=12, dim=32)
    out = tmp_path / "c.json"
    assert bench.main(["--data", str(data), "--model", "toy", "--codes", "rabitq1,pq1", "--dims", "16,8",
                       "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["n_train_queries"] == 2 and {"commit", "dirty", "command", "machine"} <= set(payload)
    assert [(s["code"], s["dim"]) for s in payload["stages"]] == [("rabitq1", 16), ("rabitq1", 8), ("pq1", 16),
                                                                    ("pq1", 8)]
    for st in payload["stages"]:
        assert st["library_choice"] == st["rules"]["full-2se"]
        assert all(0 <= c["rows"] <= 1 and 0 <= c["queries_top"] <= 1 for c in st["candidates"].values())
    assert set(payload["rules"]) == set(bench.RULES) and payload["rules"]["full-2se"]["stages"] == 4
    text = bench.report(payload)
    assert "PCA of the full vector unless beaten by 2 SE (the library's) | 4 |" in text and "--codes rabitq1,pq1" in text
    assert api._Trainer._choose.__name__ == "_choose"  # the probe is removed after the run
    no_train = write_toy_beir(tmp_path / "nt", with_train=False, n_docs=400, n_queries=12, dim=32)
    with pytest.raises(ValueError, match="no train queries"):
        bench.run(str(no_train), "toy", ("rabitq1",), (16,), 0, 100)


def test_default_stage_benchmark_scores_every_option_within_the_budget(tmp_path):
    """benchmarks/default_stage.py: every (dim, code) within the default budget, the full vector included, scored
    on training queries; the library's pick is among them, and the report marks it."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import default_stage as bench

    data = write_toy_beir(tmp_path / "beir", n_docs=1200, n_queries=12, dim=384)
    out = tmp_path / "d.json"
    assert bench.main(["--data", str(data), "--model", "toy", "--samples", "600,0", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert [s["n_corpus"] for s in payload["sets"]] == [600, 1200] and {"commit", "dirty", "command"} <= set(payload)
    for one in payload["sets"]:
        assert all(o["ram_bytes_per_vector"] <= 96 for o in one["options"])
        assert any(o["dim"] == 384 and o["code"] == "rabitq1" for o in one["options"])
        assert (one["picked"]["dim"], one["picked"]["code"]) in {(o["dim"], o["code"]) for o in one["options"]}
    assert "picked" in bench.report(payload) and "600 documents" in bench.report(payload)


def test_default_first_stage_order():
    """The rule itself, on 384-d vectors and dims (128, 64, 32), the maps' bytes a vector given per dim."""
    from smec_index.index.backends.codes import default_first_stage

    dims = (128, 64, 32)
    def share(n: int) -> dict[int, float]:  # a 384 x d float32 map and its bias over n vectors
        return {d: (384 * d + d) * 4 / n for d in dims} | {384: 0.0}

    assert default_first_stage(384, dims, shared=share(64_000), full=True) == (128, "sq4")  # 64 + 8 + 3 B
    assert default_first_stage(384, dims, shared=share(5_000), full=True) == (384, "rabitq1")  # 128-d map: 39 B
    assert default_first_stage(384, dims, shared=share(5_000)) == (128, "rabitq1")  # no full stage: step 3
    assert default_first_stage(384, dims, budget=200, shared=share(5_000), full=True) == (128, "sq8")
    assert default_first_stage(384, dims, budget=64, shared={d: 1e6 for d in (*dims, 384)}, full=True) == \
        (384, "rabitq1")  # nothing fits with the maps: the order again without them
    assert default_first_stage(384, dims, budget=10, full=True) == (32, "rabitq1")  # nothing fits at all


def test_the_full_vector_stage_of_a_supervised_compressor_codes_the_adapted_vector(synth, synth_supervised):
    """With labels the full-dim map may adapt the vector: a first stage at the full dim codes that vector (the one
    the rerank scores), and the default counts its D x D map for every stage."""
    Qs, pairs = synth_supervised
    smec = SMEC((16, 8), "smec", progress=False, max_epochs=3).fit(synth, Qs, pairs)
    index = CompressedIndex(smec, dims=48, code="float32", candidates=600)
    index.train(synth)
    index.add(synth)
    adapted = smec.transform(synth, 48)
    qa = smec.transform(Qs[:10], 48)
    np.testing.assert_array_equal(index.search(Qs[:10], 5)[1], np.argsort(-(qa @ adapted.T), axis=1, kind="stable")[:, :5])
    full_map = smec.subset(48).nbytes
    assert index.memory_usage()["compressor"] == full_map
    assert all(smec.subset(d).nbytes >= full_map for d in (16, 8))  # every stage holds the full map too
