"""A Qdrant server (single node or cluster) through ``qdrant-client``: the same engine interface as
``EdgeEngine``, so ``QdrantCompressedCollection`` runs the same layout and chain on either.

Differences from Edge are the server's own: the collection may be sharded and replicated
(``shard_number``, ``replication_factor`` passed through), the server indexes in the background (there
is no blocking ``optimize``), calls cross a network, so every call is retried on transient failures
(connection errors, timeouts, HTTP 429/5xx, gRPC UNAVAILABLE) with exponential back-off, and the layout
is recorded in the collection's own ``metadata`` so a later ``open`` can check it. Upserts and deletes by
id are idempotent, which is what makes retrying them safe.
"""

from __future__ import annotations

import time
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from ._qdrant import (PQ_QUANTIZATIONS, TURBO_QUANTIZATIONS, CollectionSpec, QdrantEngineError, QdrantLayoutError,
                      Stage, StageParams, VectorSpec, check_same_layout, nest_chain, stage_search_params, to_arrays,
                      translate_error)

__all__ = ["ServerEngine", "METADATA_KEY"]

ENGINE = "Qdrant server"
METADATA_KEY = "smec_index"
_DISTANCE = {"cosine": models.Distance.COSINE, "dot": models.Distance.DOT, "euclid": models.Distance.EUCLID}
_DATATYPE = {"float32": models.Datatype.FLOAT32, "float16": models.Datatype.FLOAT16}
_RETRY_STATUS = (408, 429, 500, 502, 503, 504)


_BINARY_ENCODING = {"binary": models.BinaryQuantizationEncoding.ONE_BIT,
                    "binary1.5": models.BinaryQuantizationEncoding.ONE_AND_HALF_BITS,
                    "binary2": models.BinaryQuantizationEncoding.TWO_BITS}


# "turbo1.5" -> "bits1_5", "pq-x16" -> "x16"
_TURBO_BITS = {q: models.TurboQuantBitSize("bits" + q[len("turbo"):].replace(".", "_")) for q in TURBO_QUANTIZATIONS}
_PQ_RATIO = {q: models.CompressionRatio(q[len("pq-"):]) for q in PQ_QUANTIZATIONS}


def _quantization(kind: str | None) -> Any:
    if kind == "int8":
        return models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8))
    if kind in _BINARY_ENCODING:
        return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(
            encoding=_BINARY_ENCODING[kind], query_encoding=models.BinaryQuantizationQueryEncoding.SCALAR8BITS))
    if kind in _TURBO_BITS:
        return models.TurboQuantization(turbo=models.TurboQuantQuantizationConfig(bits=_TURBO_BITS[kind]))
    if kind in _PQ_RATIO:
        return models.ProductQuantization(product=models.ProductQuantizationConfig(compression=_PQ_RATIO[kind]))
    return None


def _vectors_config(spec: CollectionSpec) -> dict[str, models.VectorParams]:
    return {
        v.name: models.VectorParams(
            size=v.size, distance=_DISTANCE[spec.distance], datatype=_DATATYPE[v.datatype],
            quantization_config=_quantization(v.quantization),
            hnsw_config=models.HnswConfigDiff(m=spec.m if v.graph else 0, ef_construct=spec.ef_construct,
                                              full_scan_threshold=spec.full_scan_threshold_kb))
        for v in spec.vectors
    }


def _search_params(spec: VectorSpec | None, params: StageParams | None) -> Any:
    return stage_search_params(spec, params, models.SearchParams, models.QuantizationSearchParams)


def _transient(e: BaseException) -> bool:
    if isinstance(e, (ResponseHandlingException, ConnectionError, TimeoutError)):
        return True
    if isinstance(e, UnexpectedResponse):
        return e.status_code in _RETRY_STATUS
    code = getattr(e, "code", None)  # grpc.RpcError, without importing grpc
    if callable(code):
        try:
            return getattr(code(), "name", "") in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")
        except Exception:  # noqa: BLE001 - a non-grpc object with a code() method
            return False
    return False


class ServerEngine:
    """One collection on a Qdrant server laid out by a ``CollectionSpec``; every call retried when transient."""

    name: ClassVar[str] = ENGINE

    def __init__(self, client: QdrantClient, collection: str, spec: CollectionSpec, retries: int = 3,
                 backoff_s: float = 0.5, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.collection = collection
        self.spec = spec
        self.retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._vectors = {v.name: v for v in spec.vectors}

    @classmethod
    def create(cls, client: QdrantClient, collection: str, spec: CollectionSpec, shard_number: int | None = None,
               replication_factor: int | None = None, **retry: Any) -> "ServerEngine":
        """Create the collection (refused when it exists) with the layout recorded in its metadata."""
        engine = cls(client, collection, spec, **retry)
        engine._call("create", client.create_collection, collection_name=collection,
                     vectors_config=_vectors_config(spec), shard_number=shard_number,
                     replication_factor=replication_factor, metadata={METADATA_KEY: spec.to_json()})
        return engine

    @classmethod
    def open(cls, client: QdrantClient, collection: str, spec: CollectionSpec, **retry: Any) -> "ServerEngine":
        """An existing collection, after checking that its vectors and recorded layout are ``spec``."""
        engine = cls(client, collection, spec, **retry)
        info = engine._call("open", client.get_collection, collection)
        recorded = (info.config.metadata or {}).get(METADATA_KEY)
        if recorded is None:
            have = engine.layout(info)
            want = {v.name: {"size": v.size, "distance": spec.distance} for v in spec.vectors}
            got = {n: {"size": h["size"], "distance": h["distance"]} for n, h in have.items()}
            if got != want:
                raise QdrantLayoutError(f"open: collection {collection!r} has vectors {got}; expected {want}")
        else:
            check_same_layout("open", f"collection {collection!r}", CollectionSpec.from_json(recorded), spec)
        return engine

    @staticmethod
    def exists(client: QdrantClient, collection: str) -> bool:
        return bool(client.collection_exists(collection))

    def _call(self, where: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, retried ``retries`` times on transient failures, errors translated."""
        for attempt in range(self.retries + 1):
            try:
                return fn(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - classified below
                if _transient(e) and attempt < self.retries:
                    self._sleep(self.backoff_s * 2 ** attempt)
                    continue
                if isinstance(e, (ValueError, TypeError)):  # qdrant-client's own validation (and local mode)
                    raise type(e)(f"{where}: {ENGINE} refused the input: {e}") from None
                if isinstance(e, UnexpectedResponse) and e.status_code == 404:
                    raise QdrantLayoutError(f"{where}: {ENGINE}: {e}") from None
                if isinstance(e, UnexpectedResponse) and 400 <= e.status_code < 500:
                    raise ValueError(f"{where}: {ENGINE} refused the input: {e}") from None
                err = translate_error(e, where, ENGINE)
                if _transient(e):
                    err = QdrantEngineError(f"{where}: {ENGINE} failed {self.retries + 1} times: {e}")
                raise err from None
        raise AssertionError("unreachable")

    # ----------------------------------------------------------------- writes
    def upsert(self, ids: np.ndarray, vectors: Mapping[str, np.ndarray], payloads: Sequence[dict | None] | None,
               batch_size: int, optimize: bool = True) -> None:
        """Write points in batches (each retried on its own); the server indexes in the background, so
        ``optimize`` has nothing to wait for here."""
        for s in range(0, ids.shape[0], batch_size):
            e = min(s + batch_size, ids.shape[0])
            batch = models.Batch(ids=ids[s:e].tolist(), vectors={n: a[s:e].tolist() for n, a in vectors.items()},
                                 payloads=None if payloads is None else list(payloads[s:e]))
            self._call("upsert", self.client.upsert, collection_name=self.collection, points=batch, wait=True)

    def optimize(self) -> None:
        """Nothing to do: the server builds indexes in the background."""

    def delete(self, ids: np.ndarray) -> None:
        self._call("delete", self.client.delete, collection_name=self.collection,
                   points_selector=models.PointIdsList(points=ids.tolist()), wait=True)

    # ----------------------------------------------------------------- reads
    def count(self) -> int:
        return int(self._call("count", self.client.count, collection_name=self.collection, exact=True).count)

    def native_filter(self, filter: Any, where: str) -> models.Filter | None:
        if filter is None or isinstance(filter, models.Filter):
            return filter
        raise TypeError(f"{where}: filter must be a qdrant_client.models.Filter, got {type(filter).__name__}")

    def _prefetch(self, stage: Stage, q: np.ndarray, inner: Any, params: StageParams | None) -> models.Prefetch:
        return models.Prefetch(prefetch=inner, query=q.tolist(), using=stage.name, limit=stage.limit,
                               params=_search_params(self._vectors.get(stage.name), params))

    def query(self, stages: Sequence[Stage], params: StageParams, filter: Any) -> tuple[np.ndarray, np.ndarray]:
        """Run the chain for every query row (one batch request when there are several); FAISS-shaped result."""
        last = stages[-1]
        nq = last.queries.shape[0]
        lp = _search_params(self._vectors.get(last.name), params if len(stages) == 1 else None)
        reqs = [
            models.QueryRequest(prefetch=nest_chain(stages, r, params, self._prefetch),
                                query=last.queries[r].tolist(), using=last.name, limit=last.limit, filter=filter,
                                params=lp, with_payload=False, with_vector=False)
            for r in range(nq)
        ]
        if nq == 1:
            r = reqs[0]
            resp = [self._call("search", self.client.query_points, collection_name=self.collection,
                               prefetch=r.prefetch, query=r.query, using=r.using, limit=r.limit, query_filter=filter,
                               search_params=lp, with_payload=False, with_vectors=False)]
        else:
            resp = self._call("search", self.client.query_batch_points, collection_name=self.collection,
                              requests=reqs) if nq else []
        return to_arrays([[(p.id, p.score) for p in r.points] for r in resp], last.limit, self.spec.distance)

    def layout(self, info: Any = None) -> dict[str, dict[str, Any]]:
        """The vectors as the server reports them: name -> size, distance, m, quantization."""
        info = info or self._call("layout", self.client.get_collection, self.collection)
        out = {}
        for name, v in info.config.params.vectors.items():
            q = v.quantization_config
            out[name] = {"size": v.size, "distance": str(getattr(v.distance, "value", v.distance)).lower(),
                         "m": None if v.hnsw_config is None else v.hnsw_config.m,
                         "quantization": None if q is None else type(q).__name__.replace("Quantization", "").lower()}
        return out

    def close(self) -> None:
        """Nothing of ours to release: the client belongs to the caller."""
