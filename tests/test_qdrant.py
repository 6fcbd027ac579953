"""QdrantCompressedCollection on Qdrant Edge and on qdrant-client's local mode (server API conformance):
layout, round trip, the prefetch chain against a numpy cascade, filters, reopening, bad input, retries."""

from __future__ import annotations

import json
import numpy as np
import pytest
import qdrant_edge as qe
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from smec_index import SMEC
from smec_index.index.backends._qdrant import (CollectionSpec, QdrantEngineError, Stage, StageParams, VectorSpec,
                                               translate_error)
from smec_index.index.backends.qdrant_edge import EdgeEngine
from smec_index.index.backends.qdrant_server import ServerEngine
from smec_index.metrics import ndcg_at_k
from smec_index.qdrant import QdrantCompressedCollection, QdrantLayoutError

pytestmark = pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning")
FLT_MAX = float(np.finfo(np.float32).max)
ENGINES = ["edge", "server"]


@pytest.fixture(scope="module")
def pca(synth):
    return SMEC((16, 8), method="pca", progress=False).fit(synth)


@pytest.fixture(scope="module")
def queries(synth):
    rng = np.random.default_rng(7)
    Q = synth[rng.choice(synth.shape[0], 25, replace=False)] + rng.normal(scale=0.05, size=(25, synth.shape[1]))
    return Q.astype(np.float32)


@pytest.fixture(scope="module")
def supervised(synth, synth_supervised):
    Q, pairs = synth_supervised
    return SMEC((16, 8), "search-adaptor", seed=0, max_epochs=3, patience=1, batch_size=64,
                progress=False).fit(synth, queries=Q, qrels=pairs)


@pytest.fixture
def make(tmp_path):
    """make(engine, smec, **kwargs) -> a new collection on Edge (in tmp_path) or on a local-mode client."""
    made = []

    def _make(engine, smec, **kwargs):
        if engine == "edge":
            col = QdrantCompressedCollection.edge(tmp_path / f"c{len(made)}", smec, **kwargs)
        else:
            col = QdrantCompressedCollection.server(QdrantClient(":memory:"), f"c{len(made)}", smec, **kwargs)
        made.append(col)
        return col

    yield _make
    for col in made:
        col.close()


def _cascade(smec, X, Q, dims, full, limits, keep=None):
    """The chain computed by hand: exact cosine top-limits[0] at the smallest dim, then each later stage
    re-scores what the one before passed on and keeps its limit (stable order on ties)."""
    def unit(A):
        return A / np.linalg.norm(A, axis=1, keepdims=True)

    stages = [(smec.transform(X, d), smec.transform(Q, d)) for d in sorted(dims)]
    if full:
        D = smec.input_dim_
        stages.append((smec.transform(X, D), smec.transform(Q, D)) if smec.supervised_ else (unit(X), unit(Q)))
    pool = np.arange(X.shape[0]) if keep is None else np.flatnonzero(keep)
    ids, scores = [], []
    for i in range(Q.shape[0]):
        cand = pool
        for (S, q), limit in zip(stages, limits):
            s = S[cand] @ q[i]
            order = np.argsort(-s, kind="stable")[:limit]
            cand, best = cand[order], s[order]
        ids.append(cand)
        scores.append(best)
    return np.array(scores), np.array(ids)


# --------------------------------------------------------------------- layout
@pytest.mark.parametrize("engine", ENGINES)
def test_layout_names_sizes_distance(make, pca, engine):
    col = make(engine, pca, dims=(16, 8), quantization="int8")
    assert col.stages == ("smec_8", "smec_16", "full")
    assert col.layout() == {
        "smec_8": {"size": 8, "distance": "cosine", "m": 16, "quantization": "scalar"},
        "smec_16": {"size": 16, "distance": "cosine", "m": 0, "quantization": None},
        "full": {"size": 48, "distance": "cosine", "m": 0, "quantization": None},
    }
    only = make(engine, pca, dims=(8,), full=False, quantization="binary", m=8)
    assert only.layout() == {"smec_8": {"size": 8, "distance": "cosine", "m": 8, "quantization": "binary"}}
    for quantization, kind in (("turbo2", "turbo"), ("pq-x16", "product")):  # Qdrant 1.18's TurboQuant, PQ
        col = make(engine, pca, dims=(8,), full=False, quantization=quantization)
        assert col.layout()["smec_8"]["quantization"] == kind


def test_server_passes_sharding_through_and_records_layout(pca):
    seen = {}

    class Spy(QdrantClient):
        def create_collection(self, collection_name, **kwargs):
            seen.update(kwargs)
            return super().create_collection(collection_name, **kwargs)

    client = Spy(":memory:")
    QdrantCompressedCollection.server(client, "docs", pca, dims=(8, 16), shard_number=2, replication_factor=3)
    assert seen["shard_number"] == 2 and seen["replication_factor"] == 3
    recorded = client.get_collection("docs").config.metadata["smec_index"]
    assert [v["name"] for v in recorded["vectors"]] == ["smec_8", "smec_16", "full"]
    assert recorded["metadata"]["smec"]["full_vector"] == "raw"


# --------------------------------------------------------------------- round trip
@pytest.mark.parametrize("engine", ENGINES)
def test_upsert_search_delete_round_trip(make, pca, synth, engine):
    col = make(engine, pca, dims=(8, 16))
    ids = np.arange(600, dtype=np.int64) * 3 + 7
    col.upsert(ids, synth, batch_size=128)
    assert col.count() == 600
    D, I = col.search(synth[:20], k=5)
    assert D.dtype == np.float32 and I.dtype == np.int64 and I.shape == D.shape == (20, 5)
    np.testing.assert_array_equal(I[:, 0], ids[:20])
    np.testing.assert_allclose(D[:, 0], 1.0, atol=1e-5)
    assert (np.diff(D, axis=1) <= 1e-6).all()
    assert col.delete(np.concatenate([ids[:10], [10**9]])) == 10 and col.count() == 590
    assert not np.isin(col.search(synth[:10], k=20)[1], ids[:10]).any()
    col.upsert(ids[10:11], synth[:1])  # replaces the vector of an existing id
    assert col.count() == 590 and col.search(synth[:1], k=1)[1][0, 0] == ids[10]


@pytest.mark.parametrize("engine", ENGINES)
def test_padding_when_fewer_than_k(make, pca, synth, engine):
    col = make(engine, pca, dims=(8,))
    D, I = col.search(synth[:2], k=3)
    assert (I == -1).all() and (D == -FLT_MAX).all()
    col.upsert([1, 2], synth[:2])
    D, I = col.search(synth[:1], k=4)
    assert I[0, :2].tolist() == [1, 2] and (I[0, 2:] == -1).all() and (D[0, 2:] == -FLT_MAX).all()
    assert col.search(synth[:0], k=4)[1].shape == (0, 4)


# --------------------------------------------------------------------- the chain
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("dims,full,candidates", [
    ((8, 16), True, 60), ((8, 16), True, (80, 30)), ((8,), True, 40), ((8, 16), False, (50, 7)), ((), True, 100),
])
def test_prefetch_chain_equals_numpy_cascade(make, pca, synth, queries, engine, dims, full, candidates):
    col = make(engine, pca, dims=dims, full=full)
    col.upsert(np.arange(600), synth)
    k = 10
    c = (candidates,) * len(dims) if isinstance(candidates, int) else candidates
    limits = [max(k, x) for x in c][: len(col.stages) - 1] + [k]
    Dr, Ir = _cascade(pca, synth, queries, dims, full, limits)
    for exact in (True, False):  # 600 points are below the full-scan threshold: the graph path is exact too
        D, I = col.search(queries, k=k, candidates=candidates, exact=exact)
        np.testing.assert_array_equal(I, Ir)
        np.testing.assert_allclose(D, Dr, atol=2e-5)
    D1, I1 = col.search(queries[:1], k=k, candidates=candidates)  # one query: the non-batch path
    np.testing.assert_array_equal(I1, Ir[:1])


@pytest.mark.parametrize("engine", ENGINES)
def test_supervised_full_vector_is_the_adapted_one(make, supervised, synth, queries, engine):
    col = make(engine, supervised, dims=(8,))
    adapted = supervised.transform(synth, 48)
    assert np.abs(adapted - synth).max() > 1e-2  # the raw vectors would give other scores
    np.testing.assert_allclose(col.stage_vectors(synth[:5])["full"], adapted[:5], atol=1e-6)
    col.upsert(np.arange(600), synth)
    Dr, Ir = _cascade(supervised, synth, queries, (8,), True, [50, 10])
    D, I = col.search(queries, k=10, candidates=50, exact=True)
    np.testing.assert_array_equal(I, Ir)
    np.testing.assert_allclose(D, Dr, atol=2e-5)


def test_edge_and_server_answer_alike(make, pca, synth, queries):
    a, b = make("edge", pca, dims=(8, 16)), make("server", pca, dims=(8, 16))
    for col in (a, b):
        col.upsert(np.arange(600), synth, payloads=[{"g": i % 4} for i in range(600)])
    f = models.Filter(must_not=[models.FieldCondition(key="g", match=models.MatchAny(any=[0, 1]))])
    for kwargs in ({}, {"filter": f}):
        Da, Ia = a.search(queries, k=10, candidates=(40, 20), exact=True, **kwargs)
        Db, Ib = b.search(queries, k=10, candidates=(40, 20), exact=True, **kwargs)
        np.testing.assert_array_equal(Ia, Ib)
        np.testing.assert_allclose(Da, Db, atol=2e-5)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_batch_row_answers_like_the_query_alone(make, pca, synth, queries, engine):
    col = make(engine, pca, dims=(8, 16), quantization="int8", full_scan_threshold_kb=1)  # graph and codes
    col.upsert(np.arange(600), synth)
    D, I = col.search(queries, k=10, candidates=(30, 20))
    for i in range(queries.shape[0]):
        Di, Ii = col.search(queries[i : i + 1], k=10, candidates=(30, 20))
        np.testing.assert_array_equal(Ii[0], I[i])
        np.testing.assert_allclose(Di[0], D[i], rtol=0, atol=0 if engine == "edge" else 1e-6)


# --------------------------------------------------------------------- filters
@pytest.mark.parametrize("engine", ENGINES)
def test_filter_applies_from_the_first_stage(make, pca, synth, queries, engine):
    col = make(engine, pca, dims=(8, 16))
    groups = np.arange(600) % 3
    col.upsert(np.arange(600), synth, payloads=[{"g": int(g), "x": float(i)} for i, g in enumerate(groups)])
    f = models.Filter(must=[models.FieldCondition(key="g", match=models.MatchValue(value=1)),
                            models.FieldCondition(key="x", range=models.Range(lt=450))])
    D, I = col.search(queries, k=10, filter=f, candidates=30, exact=True)
    keep = (groups == 1) & (np.arange(600) < 450)
    Dr, Ir = _cascade(pca, synth, queries, (8, 16), True, [30, 30, 10], keep=keep)
    np.testing.assert_array_equal(I, Ir)  # k full results, all matching: filtering did not happen after the fact
    assert keep[I].all()
    ids_only = models.Filter(must=[models.HasIdCondition(has_id=[5, 6, 7])])
    assert set(col.search(synth[:1], k=10, filter=ids_only)[1][0].tolist()) == {5, 6, 7, -1}


def test_edge_takes_its_native_filter_and_refuses_what_it_cannot_express(make, pca, synth):
    col = make("edge", pca, dims=(8,))
    col.upsert(np.arange(600), synth, payloads=[{"g": i % 2} for i in range(600)])
    native = qe.Filter(must=[qe.FieldCondition(key="g", match=qe.MatchValue(0))])
    assert (col.search(synth[:3], k=10, filter=native)[1] % 2 == 0).all()
    geo = models.Filter(must=[models.FieldCondition(key="loc", geo_radius=models.GeoRadius(
        center=models.GeoPoint(lon=0, lat=0), radius=1.0))])
    with pytest.raises(TypeError, match="filter contains FieldCondition"):
        col.search(synth[:1], filter=geo)
    with pytest.raises(TypeError, match="filter must be a qdrant_client.models.Filter"):
        col.search(synth[:1], filter={"g": 1})
    server = make("server", pca, dims=(8,))
    with pytest.raises(TypeError, match="filter must be a qdrant_client.models.Filter, got Filter"):
        server.search(synth[:1], filter=native)


# --------------------------------------------------------------------- persistence
def test_edge_reopens_from_disk_with_identical_results(tmp_path, pca, synth, queries):
    path = tmp_path / "docs"
    kwargs = dict(dims=(8, 16), quantization="int8", full_scan_threshold_kb=1)  # graph + codes in use
    col = QdrantCompressedCollection.edge(path, pca, **kwargs)
    col.upsert(np.arange(600), synth, payloads=[{"g": i % 2} for i in range(600)])
    f = models.Filter(must=[models.FieldCondition(key="g", match=models.MatchValue(value=1))])
    before = [col.search(queries, k=10, candidates=(40, 20)), col.search(queries, k=10, filter=f)]
    with pytest.raises(QdrantEngineError, match="already open"):
        QdrantCompressedCollection.edge(path, pca, **kwargs)
    col.close()
    with pytest.raises(QdrantEngineError, match="closed"):
        col.count()
    for smec in (pca, None):  # with the compressor, or the one saved beside the shard
        with QdrantCompressedCollection.edge(path, smec, **kwargs) as back:
            after = [back.search(queries, k=10, candidates=(40, 20)), back.search(queries, k=10, filter=f)]
            assert back.count() == 600
        for (D0, I0), (D1, I1) in zip(before, after):
            np.testing.assert_array_equal(I1, I0)
            np.testing.assert_array_equal(D1, D0)


@pytest.mark.parametrize("threads,recorded", [((), 1), ((None,), None), ((2,), 2)])
def test_edge_search_threads_default_to_one_and_answer_alike(tmp_path, pca, synth, queries, threads, recorded):
    """One search thread by default (no hand-off to a pool per query); Edge's pool on request; same answers."""
    kwargs = dict(dims=(8,), quantization="int8", full_scan_threshold_kb=1)
    ref = QdrantCompressedCollection.edge(tmp_path / "ref", pca, **kwargs, max_search_threads=1)
    ref.upsert(np.arange(600), synth)
    with QdrantCompressedCollection.edge(tmp_path / "col", pca, **kwargs,
                                         **dict(zip(["max_search_threads"], threads))) as col:
        cfg = json.loads((col.engine.path / "edge_config.json").read_text())
        assert cfg.get("max_search_threads") == recorded
        col.upsert(np.arange(600), synth)
        for got, want in zip(col.search(queries, k=10, candidates=40), ref.search(queries, k=10, candidates=40)):
            np.testing.assert_array_equal(got, want)
    ref.close()



def test_edge_backend_of_compressed_index_searches_on_one_thread_by_default():
    from smec_index.index.backends.qdrant_edge import QdrantEdgeBackend

    for kwargs, recorded in (({}, 1), ({"max_search_threads": None}, None)):
        backend = QdrantEdgeBackend(8, **kwargs)
        cfg = json.loads((backend.engine.path / "edge_config.json").read_text())
        assert cfg.get("max_search_threads") == recorded

def test_reopen_refuses_another_layout_or_compressor(tmp_path, pca, synth):
    path = tmp_path / "docs"
    QdrantCompressedCollection.edge(path, pca, dims=(8, 16)).close()
    with pytest.raises(QdrantLayoutError, match="another layout: vectors"):
        QdrantCompressedCollection.edge(path, pca, dims=(8,))
    other = SMEC((16, 8), method="pca", progress=False).fit(synth[:300])
    with pytest.raises(QdrantLayoutError, match="another compressor"):
        QdrantCompressedCollection.edge(path, other, dims=(8, 16))
    client = QdrantClient(":memory:")
    QdrantCompressedCollection.server(client, "docs", pca, dims=(8, 16))
    with pytest.raises(QdrantLayoutError, match="another layout: m"):
        QdrantCompressedCollection.server(client, "docs", pca, dims=(8, 16), m=32)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        QdrantCompressedCollection.edge(tmp_path / "junk", pca, dims=(8, 16))
    with pytest.raises(ValueError, match="holds no collection to reopen"):
        QdrantCompressedCollection.edge(tmp_path / "new", None)


# --------------------------------------------------------------------- bad input
def _bad_upserts(X):
    nan = X.copy()
    nan[1500, 3] = np.nan  # in the second batch: the first must not be written either
    zero = X.copy()
    zero[7] = 0
    ids = np.arange(X.shape[0])
    return {
        "wrong dim": ((ids, X[:, :40]), ValueError, r"vectors has shape \(2000, 40\); expected \(n, 48\)"),
        "1-d vectors": ((ids[:1], X[0]), ValueError, r"vectors has shape \(48,\); expected \(n, 48\)"),
        "int vectors": ((ids, X.astype(np.int32)), TypeError, "vectors must be a float array, got dtype int32"),
        "nan": ((ids, nan), ValueError, r"1 row\(s\) with NaN or inf \(first: row 1500\)"),
        "zero row": ((ids, zero), ValueError, r"all-zero row\(s\) \(first: row 7\)"),
        "float ids": ((ids.astype(np.float64), X), TypeError, "ids must be integers .* got dtype float64"),
        "str ids": (([str(i) for i in ids], X), TypeError, "ids must be integers .* got dtype <U"),
        "mixed ids": ((np.array([1, "a"] * 1000, dtype=object), X), TypeError, "ids must be integers .* dtype object"),
        "negative ids": ((ids - 1, X), ValueError, "ids must be >= 0 .* got -1"),
        "short ids": ((ids[:-1], X), ValueError, r"ids has shape \(1999,\); expected \(2000,\)"),
        "repeated ids": ((np.r_[ids[:-1], 0], X), ValueError, r"ids repeat within the call: \[0\]"),
    }


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", list(_bad_upserts(np.ones((2000, 48), np.float32))))
def test_bad_upsert_rejected_before_anything_is_written(make, pca, engine, case):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 48)).astype(np.float32)
    col = make(engine, pca, dims=(8,))
    args, exc, match = _bad_upserts(X)[case]
    with pytest.raises(exc, match=match):
        col.upsert(*args, batch_size=1024)
    assert col.count() == 0


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"payloads": [{}] * 3}, ValueError, "payloads has 3 entries; expected 4"),
    ({"payloads": [{}, {}, 5, {}]}, TypeError, r"payloads\[2\] must be a dict"),
    ({"payloads": {"a": 1}}, TypeError, "payloads must be a list of dicts"),
    ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1, got 0"),
    ({"optimize": "yes"}, TypeError, "optimize must be a bool"),
])
def test_bad_upsert_options(make, pca, synth, kwargs, exc, match):
    col = make("edge", pca, dims=(8,))
    with pytest.raises(exc, match=match):
        col.upsert(np.arange(4), synth[:4], **kwargs)
    assert col.count() == 0


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"query_vectors": np.ones((2, 47), np.float32)}, ValueError,
     r"query_vectors has shape \(2, 47\); expected \(n, 48\)"),
    ({"query_vectors": "text"}, TypeError, "query_vectors must be a float array"),
    ({"k": 0}, ValueError, "k must be an int >= 1, got 0"),
    ({"k": 2.5}, ValueError, "k must be an int >= 1, got 2.5"),
    ({"candidates": (10,)}, ValueError, r"2 positive ints \(one per dim of \(8, 16\)"),
    ({"candidates": 0}, ValueError, "candidates must be a positive int"),
    ({"hnsw_ef": -1}, ValueError, "hnsw_ef must be an int >= 1"),
    ({"oversampling": 0.5}, ValueError, "oversampling must be a number >= 1"),
    ({"exact": 1}, TypeError, "exact must be a bool"),
])
def test_bad_search_arguments(make, pca, synth, kwargs, exc, match):
    col = make("edge", pca, dims=(8, 16))
    col.upsert(np.arange(10), synth[:10])
    kwargs = {"query_vectors": synth[:2], **kwargs}
    with pytest.raises(exc, match=match):
        col.search(**kwargs)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"dims": (8, 32)}, ValueError, r"dims \[32\] are not dims of the compressor; it has \(16, 8\)"),
    ({"dims": (8, 8)}, ValueError, "dims repeat"),
    ({"dims": ("8",)}, TypeError, "dims must be ints"),
    ({"dims": (), "full": False}, ValueError, "nothing to store"),
    ({"full": "yes"}, TypeError, "full must be a bool"),
    ({"quantization": "pq"}, ValueError, "quantization must be one of"),
    ({"datatype": "uint8"}, ValueError, "datatype must be one of"),
    ({"m": 1}, ValueError, "m must be an int >= 2"),
])
def test_bad_layout_arguments_create_nothing(tmp_path, pca, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        QdrantCompressedCollection.edge(tmp_path / "c", pca, **{"dims": (8, 16), **kwargs})
    assert not (tmp_path / "c").exists()
    client = QdrantClient(":memory:")
    with pytest.raises(exc, match=match):
        QdrantCompressedCollection.server(client, "c", pca, **{"dims": (8, 16), **kwargs})
    assert not client.collection_exists("c")


def test_bad_compressor_or_client(tmp_path, synth):
    with pytest.raises(TypeError, match="smec must be a fitted smec_index.SMEC, got dict"):
        QdrantCompressedCollection.edge(tmp_path / "c", {})
    with pytest.raises(ValueError, match="smec is not fitted"):
        QdrantCompressedCollection.edge(tmp_path / "c", SMEC((16, 8), method="pca"))
    with pytest.raises(TypeError, match="client must be a qdrant_client.QdrantClient, got str"):
        QdrantCompressedCollection.server("http://localhost:6333", "c", SMEC((16, 8), method="pca"))
    assert not (tmp_path / "c").exists()


# --------------------------------------------------------------------- engine errors
def test_engine_errors_become_specific_errors(tmp_path):
    spec = CollectionSpec(vectors=(VectorSpec("v", 4, graph=True),))
    engine = EdgeEngine.create(tmp_path / "s", spec)
    with pytest.raises(FileExistsError, match="already contains segment data"):
        EdgeEngine.create(tmp_path / "s", spec)
    with pytest.raises(ValueError, match="Edge refused the input: Vector dimension error: expected dim: 4, got 3"):
        engine.query([Stage("v", np.ones((1, 3), np.float32), 5)], StageParams(), None)
    with pytest.raises(ValueError, match="Not existing vector name error: w"):
        engine.query([Stage("w", np.ones((1, 4), np.float32), 5)], StageParams(), None)
    engine.close()
    with pytest.raises(QdrantEngineError, match="is closed"):
        engine.count()
    assert isinstance(translate_error(Exception("Service runtime error: disk full"), "upsert", "Qdrant Edge"),
                      QdrantEngineError)


class _Flaky:
    """A client whose first ``fail`` calls of ``method`` raise ``error``; everything else goes to ``inner``."""

    def __init__(self, inner, method, error, fail):
        self.inner, self.method, self.error, self.fail = inner, method, error, fail
        self.calls = 0

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if name != self.method:
            return attr

        def call(*args, **kwargs):
            self.calls += 1
            if self.calls <= self.fail:
                raise self.error
            return attr(*args, **kwargs)

        return call


def _server_engine(client, sleeps, retries=3):
    spec = CollectionSpec(vectors=(VectorSpec("v", 4, graph=True),))
    return ServerEngine.create(client, "c", spec, retries=retries, backoff_s=0.5, sleep=sleeps.append)


def test_server_retries_transient_failures_with_backoff():
    sleeps: list[float] = []
    transient = ResponseHandlingException(ConnectionError("connection reset"))
    client = _Flaky(QdrantClient(":memory:"), "upsert", transient, fail=2)
    engine = _server_engine(client, sleeps)
    X = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]] + 0.1
    engine.upsert(np.arange(5), {"v": X}, None, batch_size=2)
    assert engine.count() == 5 and client.calls == 5 and sleeps == [0.5, 1.0]
    busy = UnexpectedResponse(503, "Service Unavailable", b"busy", None)
    engine = _server_engine(_Flaky(QdrantClient(":memory:"), "count", busy, fail=10), sleeps := [], retries=2)
    with pytest.raises(QdrantEngineError, match="failed 3 times"):
        engine.count()
    assert sleeps == [0.5, 1.0]
    refused = UnexpectedResponse(400, "Bad Request", b'{"status":{"error":"wrong dim"}}', None)
    flaky = _Flaky(QdrantClient(":memory:"), "count", refused, fail=1)
    engine = _server_engine(flaky, sleeps := [])
    with pytest.raises(ValueError, match="Qdrant server refused the input"):
        engine.count()
    assert sleeps == [] and flaky.calls == 1


# --------------------------------------------------------------------- quantization
@pytest.mark.parametrize("engine", ENGINES)
def test_quantized_first_stage_is_rescored_by_the_chain(make, pca, synth, queries, engine):
    exact = _cascade(pca, synth, queries, (), True, [10])[1]
    for quantization, dims in (("int8", (8, 16)), ("binary", ())):
        col = make(engine, pca, dims=dims, quantization=quantization, full_scan_threshold_kb=1)
        col.upsert(np.arange(600), synth)
        D, I = col.search(queries, k=10, candidates=200, oversampling=4.0)
        full = pca.transform(queries, 48) @ (synth / np.linalg.norm(synth, axis=1, keepdims=True)).T
        np.testing.assert_allclose(D, np.take_along_axis(full, I, axis=1), atol=2e-5)  # final scores: exact floats
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, exact)])
        assert overlap >= 0.9, (quantization, overlap)


# --------------------------------------------------------------------- real data
@pytest.mark.realdata
@pytest.mark.parametrize("fixture", ["scifact_minilm", "scifact_mpnet"])
def test_scifact_chain_keeps_full_dim_quality(request, tmp_path, fixture):
    ds = request.getfixturevalue(fixture)
    Q, qids, qrels = ds.split_queries("test")
    smec = SMEC((256, 64), method="pca", progress=False).fit(ds.corpus)
    with QdrantCompressedCollection.edge(tmp_path / "scifact", smec, dims=(64, 256)) as col:
        col.upsert(np.arange(ds.corpus.shape[0]), ds.corpus, payloads=[{"doc": d} for d in ds.doc_ids])
        _, I = col.search(Q, k=10, candidates=100)
    exact = np.argsort(-(Q @ ds.corpus.T), axis=1)[:, :10]
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, exact)])
    ndcg = np.mean([ndcg_at_k([ds.doc_ids[j] for j in row], qrels[q]) for q, row in zip(qids, I)])
    ndcg_full = np.mean([ndcg_at_k([ds.doc_ids[j] for j in row], qrels[q]) for q, row in zip(qids, exact)])
    assert recall >= 0.95, recall
    assert ndcg >= ndcg_full - 0.02, (ndcg, ndcg_full)  # PCA-64 -> 256 -> full; SMEC is measured in benchmarks
