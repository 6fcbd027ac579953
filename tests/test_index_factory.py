"""``smec_index.index_factory``: a fitted SMEC as a genuine ``faiss.Index``, checked against SMEC.transform,
CompressedIndex and FAISS's own wrappers, tools and file format."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap

import faiss
import numpy as np
import pytest

from index_cases import one_faiss_thread  # noqa: F401  (autouse fixture)
from smec_index import SMEC, CompressedIndex, index_factory
from smec_index.index.factory import parse_spec

FAST = dict(max_epochs=2, ads_epochs=1, patience=1, batch_size=64, memory_size=100, neighbour_pool=20,
            progress=False)
IP, L2 = faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L2


@pytest.fixture(scope="module")
def data(synth):
    return synth[:500], synth[500:540]


@pytest.fixture(scope="module")
def pca(data):
    return SMEC(dims=(16, 8), method="pca", progress=False).fit(data[0])


@pytest.fixture(scope="module")
def supervised(synth, synth_supervised):
    Q, pairs = synth_supervised
    return SMEC(dims=(16,), seed=0, **FAST).fit(synth, Q, pairs)


def chain_of(index: faiss.Index) -> faiss.IndexPreTransform:
    """The IndexPreTransform inside refine / IDMap wrappers (a view, valid while ``index`` lives)."""
    index = faiss.downcast_index(index)
    while not isinstance(index, faiss.IndexPreTransform):
        index = faiss.downcast_index(index.base_index if isinstance(index, faiss.IndexRefine) else index.index)
    return index


def apply_chain(pt: faiss.IndexPreTransform, X: np.ndarray) -> np.ndarray:
    for i in range(pt.chain.size()):
        X = faiss.downcast_VectorTransform(pt.chain.at(i)).apply(X)
    return X


def built(smec, spec, X, metric=IP):
    index = index_factory(smec, spec, metric=metric)
    index.train(X)
    index.add(X)
    return index


def overlap(I, J) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(I, J)]))


# ----------------------------------------------------------------- the projection
@pytest.mark.parametrize("which, dim", [("pca", 16), ("pca", 8), ("supervised", 16)])
def test_chain_is_smec_transform(request, data, which, dim):
    smec = request.getfixturevalue(which)
    X = data[0] * np.float32(3.0)  # not unit rows: the first normalisation is part of the map
    native = index_factory(smec, f"SMEC{dim},Flat")
    pt = chain_of(native)  # a view: valid while native lives
    assert pt.chain.size() == 3 and pt.d == smec.input_dim_ and pt.index.d == dim
    np.testing.assert_allclose(apply_chain(pt, X), smec.transform(X, dim), atol=1e-6, rtol=0)


@pytest.mark.realdata
def test_chain_is_smec_transform_on_scifact_mpnet(scifact_mpnet):
    """768-d real embeddings: FAISS's sgemm and numpy agree to float32 rounding."""
    X = scifact_mpnet.corpus
    smec = SMEC(dims=(256, 64), method="pca", progress=False).fit(X)
    for dim in (256, 64):
        native = index_factory(smec, f"SMEC{dim},Flat")
        np.testing.assert_allclose(apply_chain(chain_of(native), X[:2000]), smec.transform(X[:2000], dim),
                                   atol=1e-6, rtol=0)


def test_supervised_refine_scores_the_adapted_full_vectors(data, supervised):
    """The refine stage sits behind the adapted D -> D map, as the CompressedIndex full store does."""
    X, Q = data
    native = built(supervised, "SMEC16,Flat,Refine(Flat)", X)
    native.k_factor = 10
    ci = CompressedIndex(supervised, spec="Flat", candidates=100)
    ci.add(X)
    Dn, In = native.search(Q, 10)
    Dc, Ic = ci.search(Q, 10)
    np.testing.assert_array_equal(In, Ic)
    np.testing.assert_allclose(Dn, Dc, atol=2e-6)
    refine = faiss.downcast_index(faiss.downcast_index(native).refine_index)
    assert isinstance(refine, faiss.IndexPreTransform)
    np.testing.assert_allclose(apply_chain(refine, X[:5]), supervised.transform(X[:5], supervised.input_dim_),
                               atol=1e-6)


@pytest.mark.parametrize("metric, name", [(IP, "ip"), (L2, "l2")])
def test_flat_matches_compressed_index_exactly(data, pca, metric, name):
    X, Q = data
    ci_none = CompressedIndex(pca, dims=(8,), spec="Flat", metric=name, rerank="none")
    ci_full = CompressedIndex(pca, dims=(8,), spec="Flat", metric=name, candidates=50)
    for ci in (ci_none, ci_full):
        ci.add(X)
    plain = built(pca, "SMEC8,Flat", X, metric)
    refined = built(pca, "SMEC8,Flat,RFlat", X, metric)
    refined.k_factor = 5
    for native, ci in ((plain, ci_none), (refined, ci_full)):
        assert (native.d, native.ntotal, native.metric_type) == (ci.d, ci.ntotal, ci.metric_type)
        Dn, In = native.search(Q, 10)
        Dc, Ic = ci.search(Q, 10)
        assert overlap(In, Ic) >= 0.99  # float32 ties between two BLAS paths may swap a pair
        np.testing.assert_allclose(np.sort(Dn, axis=1), np.sort(Dc, axis=1), atol=2e-5)


ENGINES = ["Flat", "HNSW32", "IVF8,Flat", "SQ8", "SQ4", "PQ4x4np", "IVF4,PQ4x4np", "RaBitQ", "HNSW16,SQ8"]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("refine", ["", ",Refine(Flat)", ",Refine(SQfp16)", ",RFlat"])
def test_every_engine_spec_builds_trains_and_matches_compressed_index(data, pca, engine, refine):
    """Any FAISS engine after the token: same answer as CompressedIndex with the same engine and candidates."""
    X, Q = data
    native = built(pca, f"SMEC16,{engine}{refine}", X)
    assert isinstance(native, faiss.Index) and native.is_trained and native.ntotal == len(X)
    ci = CompressedIndex(pca, dims=(16,), spec=engine, rerank="full" if refine else "none", candidates=40)
    ci.train(X)
    ci.add(X)
    if refine:
        native.k_factor = 4
    Dn, In = native.search(Q, 10)
    _, Ic = ci.search(Q, 10)
    assert Dn.dtype == np.float32 and In.dtype == np.int64 and In.shape == (len(Q), 10)
    # the engines see the same vectors up to float32 rounding (numpy vs FAISS's sgemm)
    assert overlap(In, Ic) >= (0.9 if "Refine(SQfp16)" in refine else 0.95)


def test_factory_parse_and_errors(pca):
    assert parse_spec("SMEC64,HNSW32,Refine(Flat)") == (None, 64, "HNSW32", "Flat")
    assert parse_spec("IDMap2,SMEC8,IVF8,PQ4,Refine(SQfp16)") == ("IDMap2", 8, "IVF8,PQ4", "SQfp16")
    assert parse_spec("SMEC8, Flat ,RFlat") == (None, 8, "Flat", "Flat")
    with pytest.raises(ValueError, match="SMEC<dim>"):
        index_factory(pca, "HNSW32")
    with pytest.raises(ValueError, match="no FAISS engine"):
        index_factory(pca, "SMEC16,RFlat")
    with pytest.raises(ValueError, match="has dims"):
        index_factory(pca, "SMEC12,Flat")
    with pytest.raises(ValueError, match="not a FAISS factory string"):
        index_factory(pca, "SMEC16,Bogus7")
    with pytest.raises(ValueError, match="out of place"):
        index_factory(pca, "SMEC16,Flat,SMEC8")
    with pytest.raises(ValueError, match="unbalanced"):
        index_factory(pca, "SMEC16,Flat,Refine(Flat")
    with pytest.raises(ValueError, match="metric"):
        index_factory(pca, "SMEC16,Flat", metric=7)
    with pytest.raises(TypeError, match="spec"):
        index_factory(pca, None)
    with pytest.raises(TypeError, match="SMEC"):
        index_factory("pca", "SMEC16,Flat")
    with pytest.raises(ValueError, match="not fitted"):
        index_factory(SMEC(dims=(8,)), "SMEC8,Flat")


# ----------------------------------------------------------------- FAISS's own tools
_LOADER = textwrap.dedent("""
    import json, sys
    import faiss, numpy as np
    index = faiss.read_index(sys.argv[1])
    Q = np.load(sys.argv[2])
    D, I = index.search(Q, 10)
    np.save(sys.argv[3], I)
    np.save(sys.argv[4], D)
    print(json.dumps({"type": type(index).__name__, "ntotal": index.ntotal,
                      "smec_index": "smec_index" in sys.modules, "torch": "torch" in sys.modules}))
""")


@pytest.mark.parametrize("which, spec", [("pca", "SMEC16,HNSW32,Refine(Flat)"), ("pca", "IDMap2,SMEC8,IVF8,SQ8,RFlat"),
                                         ("supervised", "SMEC16,Flat,Refine(SQfp16)")])
def test_write_index_read_index_in_a_process_with_only_faiss(request, tmp_path, data, which, spec):
    X, Q = data
    native = index_factory(request.getfixturevalue(which), spec)
    native.train(X)
    if spec.startswith("IDMap"):
        native.add_with_ids(X, np.arange(len(X), dtype=np.int64) * 7 + 3)
    else:
        native.add(X)
    D, I = native.search(Q, 10)
    faiss.write_index(native, str(tmp_path / "smec.faiss"))
    np.save(tmp_path / "q.npy", Q)
    script = tmp_path / "load.py"
    script.write_text(_LOADER)
    # -I: isolated mode (no PYTHONPATH, no user site, not the cwd): nothing of this checkout is importable
    out = subprocess.run([sys.executable, "-I", str(script), str(tmp_path / "smec.faiss"), str(tmp_path / "q.npy"),
                          str(tmp_path / "I.npy"), str(tmp_path / "D.npy")],
                         capture_output=True, text=True, timeout=120, check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["ntotal"] == len(X) and not info["smec_index"] and not info["torch"]
    np.testing.assert_array_equal(np.load(tmp_path / "I.npy"), I)
    np.testing.assert_array_equal(np.load(tmp_path / "D.npy"), D)


def test_serialize_and_pickle_copy_clone_index_refuses_as_for_faiss_l2norm(data, pca):
    X, Q = data
    native = built(pca, "SMEC16,HNSW32,Refine(Flat)", X)
    D, I = native.search(Q, 10)
    # FAISS 1.15 cannot clone a NormalizationTransform, its own "L2norm,Flat" included (docs/faiss.md)
    for index in (native, faiss.index_factory(8, "L2norm,Flat")):
        with pytest.raises(RuntimeError, match="clone not supported"):
            faiss.clone_index(index)
    for copy in (faiss.deserialize_index(faiss.serialize_index(native)), pickle.loads(pickle.dumps(native))):
        D2, I2 = copy.search(Q, 10)
        np.testing.assert_array_equal(I2, I)
        np.testing.assert_array_equal(D2, D)


def test_idmap2_wrapping(data, pca):
    X, Q = data
    ids = np.arange(len(X), dtype=np.int64) * 10 + 5
    wrapped = faiss.IndexIDMap2(index_factory(pca, "SMEC16,Flat,RFlat"))
    wrapped.add_with_ids(X, ids)
    plain = built(pca, "SMEC16,Flat,RFlat", X)
    (Dw, Iw), (Dp, Ip) = wrapped.search(Q, 10), plain.search(Q, 10)
    np.testing.assert_array_equal(Iw, ids[Ip])
    np.testing.assert_array_equal(Dw, Dp)
    np.testing.assert_array_equal(wrapped.reconstruct(int(ids[3])), X[3])  # the refine store keeps raw rows


def test_index_shards(data, pca):
    X, Q = data
    shards = faiss.IndexShards(X.shape[1], False, True)  # not threaded; successive ids
    parts = [built(pca, "SMEC16,Flat,RFlat", X[:250]), built(pca, "SMEC16,Flat,RFlat", X[250:])]
    for p in parts:
        shards.add_shard(p)
    single = built(pca, "SMEC16,Flat,RFlat", X)
    for index in (shards, single):
        faiss.ParameterSpace().set_index_parameter(index, "k_factor_rf", 4)
    assert shards.ntotal == len(X)
    (Ds, Is), (D1, I1) = shards.search(Q, 10), single.search(Q, 10)
    np.testing.assert_array_equal(Is, I1)
    np.testing.assert_allclose(Ds, D1, atol=1e-6)


def test_parameter_space(data, pca):
    X, _ = data
    hnsw = index_factory(pca, "SMEC16,HNSW32,Refine(Flat)")
    ivf = index_factory(pca, "SMEC16,IVF8,Flat")
    ps = faiss.ParameterSpace()
    ps.set_index_parameters(hnsw, "efSearch=77,k_factor_rf=6")
    ps.set_index_parameter(ivf, "nprobe", 5)
    assert faiss.downcast_index(hnsw).k_factor == 6
    assert faiss.downcast_index(chain_of(hnsw).index).hnsw.efSearch == 77
    assert faiss.extract_index_ivf(ivf).nprobe == 5
    with pytest.raises(RuntimeError):
        ps.set_index_parameter(hnsw, "nprobe", 5)  # FAISS refuses a parameter the index does not have


def test_search_parameters_with_id_selector(data, pca):
    X, Q = data
    allowed = np.arange(0, len(X), 3, dtype=np.int64)
    sel = faiss.IDSelectorBatch(allowed)
    plain = built(pca, "SMEC16,Flat", X)
    _, I = plain.search(Q, 10, params=faiss.SearchParameters(sel=sel))
    assert np.isin(I, allowed).all()
    # FAISS's IndexRefine takes its own parameter type, the filter going to its base index
    refined = built(pca, "SMEC16,HNSW32,Refine(Flat)", X)
    params = faiss.IndexRefineSearchParameters(k_factor=4, base_index_params=faiss.SearchParametersHNSW(sel=sel, efSearch=64))
    _, I = refined.search(Q, 10, params=params)
    assert np.isin(I, allowed).all() and (I >= 0).all()
    with pytest.raises(RuntimeError, match="incorrect type"):
        refined.search(Q, 10, params=faiss.SearchParameters(sel=sel))


def test_range_search_matches_brute_force_in_the_compressed_space(data, pca):
    X, Q = data
    native = built(pca, "SMEC16,Flat", X)
    lims, D, I = native.range_search(Q, 0.8)
    S = pca.transform(Q, 16) @ pca.transform(X, 16).T
    for q in range(len(Q)):
        expect = set(np.flatnonzero(S[q] > 0.8 + 1e-5))
        got = set(I[lims[q]:lims[q + 1]])
        assert expect <= got <= set(np.flatnonzero(S[q] > 0.8 - 1e-5))
    assert lims[-1] > 0


@pytest.mark.skipif(not hasattr(faiss, "get_num_gpus") or faiss.get_num_gpus() == 0,
                    reason="no GPU (or faiss-cpu): index_cpu_to_gpu needs faiss-gpu and a device")
def test_index_cpu_to_gpu(data, pca):
    X, Q = data
    native = built(pca, "SMEC16,Flat,RFlat", X)
    native.k_factor = 4
    res = faiss.StandardGpuResources()
    gpu = faiss.index_cpu_to_gpu(res, 0, native)
    _, I = native.search(Q, 10)
    _, Ig = gpu.search(Q, 10)
    assert overlap(I, Ig) >= 0.99
