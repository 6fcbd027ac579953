"""``QdrantCompressedCollection``: SMEC on Qdrant, one named vector per stage, re-scored by Qdrant itself.

Each point carries one named vector per configured SMEC dim (``smec_64``, ``smec_256``, ...) and, with
``full=True``, the full vector (``full``): the compressor's adapted full vector when it was trained
supervised (raw vectors would undo the adaptation), else the raw input. A search is one Query API call
per query with nested prefetches: the smallest vector is searched (HNSW, optionally on int8 or binary
codes), each larger one re-scores the candidates the stage before passed on, the full vector last.
Distance is cosine, the geometry SMEC is trained in.

Two engines, one code path (``smec_index.index.backends.qdrant_edge`` / ``qdrant_server``):

    col = QdrantCompressedCollection.edge("docs.qdrant", smec, dims=(64, 256))        # in-process, on disk
    col = QdrantCompressedCollection.server(QdrantClient(url), "docs", smec, dims=(64, 256),
                                            shard_number=2, replication_factor=2)   # a server or cluster
    col.upsert(ids, vectors, payloads)             # full-dim vectors; projection happens here
    scores, ids = col.search(queries, k=10, filter=None, candidates=100)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ._fsutil import atomic_file
from ._rows import row_norms
from .compressor import SMEC
from .index.checks import check_vectors, is_int
from .index.backends._qdrant import (DATATYPES, QUANTIZATIONS, CollectionSpec, QdrantEngine, QdrantEngineError,
                                     QdrantLayoutError, Stage, StageParams, VectorSpec, check_batch_size, check_ids,
                                     check_int, check_oversampling, check_payloads,
                                     check_same_layout)
from .index.backends.qdrant_edge import EdgeEngine
from .index.backends.qdrant_server import ServerEngine

__all__ = ["QdrantCompressedCollection", "QdrantEngineError", "QdrantLayoutError", "FULL", "vector_name"]

FULL = "full"
_MANIFEST = "collection.json"
_SMEC = "smec"
_SHARD = "shard"
_FORMAT = 1


def vector_name(dim: int) -> str:
    """The named vector that holds a SMEC stage: ``smec_<dim>``."""
    return f"smec_{dim}"


def _fingerprint(smec: SMEC, full: bool) -> dict[str, Any]:
    """What makes stored vectors valid for a compressor: its input dim, whether the full vector is the
    adapted one, and a sha256 over every map it has (so another compressor is caught, whatever the dims)."""
    h = hashlib.sha256()
    for d in sorted(smec.projections_):
        p = smec.projection(d)
        h.update(np.ascontiguousarray(p.M, dtype=np.float32).tobytes())
        h.update(np.ascontiguousarray(p.c, dtype=np.float32).tobytes())
    return {"input_dim": int(smec.input_dim_), "supervised": bool(smec.supervised_),
            "full_vector": ("adapted" if smec.supervised_ else "raw") if full else None, "sha256": h.hexdigest()}


def _check_vectors(x: Any, name: str, where: str, d: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 C-contiguous (n, d) and finite (``smec_index.index.checks``), without an all-zero row (cosine
    has no direction for it); returns x and its row norms (the projections need unit rows)."""
    x = check_vectors(x, where, d, name=name)
    norms = row_norms(x)
    zero = norms == 0
    if zero.any():
        raise ValueError(f"{where}: {name} has {int(zero.sum())} all-zero row(s) (first: row {int(np.argmax(zero))}) "
                         f"(or rows whose squared norm underflows float32); cosine similarity needs a non-zero vector")
    return x, norms


class QdrantCompressedCollection:
    """A Qdrant collection (Edge shard or server collection) holding SMEC-compressed stages of each point.

    Build it with ``edge`` or ``server``. ``stages`` are the vector names in search order: the smallest
    SMEC dim (searched), the larger ones, then ``full`` (both re-score).
    """

    def __init__(self, engine: QdrantEngine, smec: SMEC, dims: tuple[int, ...], full: bool) -> None:
        self.engine = engine
        self.smec = smec
        self.dims = dims
        self.full = full
        self.stages = tuple(vector_name(d) for d in dims) + ((FULL,) if full else ())
        self._closed = False

    # ----------------------------------------------------------------- construction
    @staticmethod
    def _spec(where: str, smec: Any, dims: Any, full: Any, quantization: Any, datatype: Any, m: Any,
              ef_construct: Any, full_scan_threshold_kb: Any) -> tuple[tuple[int, ...], CollectionSpec]:
        """Validate the layout arguments (nothing is written before this passes) and describe the layout."""
        if not isinstance(smec, SMEC):
            raise TypeError(f"{where}: smec must be a fitted smec_index.SMEC, got {type(smec).__name__}")
        if not smec.is_fitted:
            raise ValueError(f"{where}: smec is not fitted; call smec.fit(corpus) first")
        if not isinstance(full, (bool, np.bool_)):
            raise TypeError(f"{where}: full must be a bool, got {full!r}")
        if is_int(dims):
            dims = (dims,)
        if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence):
            raise TypeError(f"{where}: dims must be a sequence of ints, got {type(dims).__name__}")
        for d in dims:
            if not is_int(d):
                raise TypeError(f"{where}: dims must be ints, got {d!r} in {tuple(dims)!r}")
        unknown = sorted(set(int(d) for d in dims) - set(smec.dims_))
        if unknown:
            raise ValueError(f"{where}: dims {unknown} are not dims of the compressor; it has {smec.dims_}")
        if len(set(dims)) != len(dims):
            raise ValueError(f"{where}: dims repeat: {tuple(dims)}")
        if not dims and not full:
            raise ValueError(f"{where}: nothing to store: give at least one dim or full=True")
        if quantization not in QUANTIZATIONS:
            raise ValueError(f"{where}: quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
        if datatype not in DATATYPES:
            raise ValueError(f"{where}: datatype must be one of {DATATYPES}, got {datatype!r}")
        m = check_int(m, "m", where, least=2)
        ef_construct = check_int(ef_construct, "ef_construct", where)
        full_scan_threshold_kb = check_int(full_scan_threshold_kb, "full_scan_threshold_kb", where)
        dims = tuple(sorted(int(d) for d in dims))
        sizes = [(vector_name(d), d) for d in dims] + ([(FULL, smec.input_dim_)] if full else [])
        vectors = tuple(VectorSpec(name, size, graph=(i == 0), quantization=quantization if i == 0 else None,
                                   datatype=datatype) for i, (name, size) in enumerate(sizes))
        spec = CollectionSpec(vectors=vectors, distance="cosine", m=m, ef_construct=ef_construct,
                              full_scan_threshold_kb=full_scan_threshold_kb,
                              metadata={"format": _FORMAT, "smec": _fingerprint(smec, bool(full))})
        return dims, spec

    @classmethod
    def edge(
        cls,
        path: str | os.PathLike,
        smec: SMEC | None,
        dims: Sequence[int] = (64, 256),
        full: bool = True,
        *,
        quantization: str | None = None,
        datatype: str = "float32",
        m: int = 16,
        ef_construct: int = 100,
        full_scan_threshold_kb: int = 1000,
        max_search_threads: int | None = 1,
    ) -> "QdrantCompressedCollection":
        """A collection in an embedded Qdrant Edge shard in directory ``path``: created when ``path`` holds
        none, reopened (same arguments, or ``smec=None`` to use the compressor saved with it) when it does.

        Args:
            smec: the fitted compressor; it is saved beside the shard.
            dims: the SMEC dims stored as named vectors; the smallest is searched.
            full: also store the full vector and re-score with it last.
            quantization: ``"int8"``, ``"binary"`` (``"binary1.5"``, ``"binary2"``: 1.5 or 2 bits a dim),
                TurboQuant ``"turbo1"``, ``"turbo1.5"``, ``"turbo2"``, ``"turbo4"``, ``"turbo8"`` (Qdrant 1.18's
                rotation + N-bit codes) or product quantization ``"pq-x4"`` ... ``"pq-x64"`` codes
                for the searched vector (re-scored by the chain;
                by Qdrant with the floats when it is the only stage), or None.
            datatype: storage of every vector, ``"float32"`` or ``"float16"`` (half the bytes on disk).
            m, ef_construct, full_scan_threshold_kb: HNSW of the searched vector (Qdrant's own knobs).
            max_search_threads: threads one query is searched with. 1 (default): on the calling thread. None:
                Edge's pool, sized from the CPU count, which spreads a query over segments but costs a hand-off
                per query (SciFact, 5k points: engine time 0.18 against 0.11 ms for the binary peer, 0.21
                against 0.08 ms for smec_64 int8 -> full; docs/qdrant.md).
        """
        where = "QdrantCompressedCollection.edge"
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{where}: path must be a str or os.PathLike directory, got {type(path).__name__}")
        if max_search_threads is not None:
            check_int(max_search_threads, "max_search_threads", where)
        path = Path(path)
        manifest = path / _MANIFEST
        if path.exists() and not path.is_dir():
            raise ValueError(f"{where}: path {str(path)!r} exists and is not a directory")
        if manifest.exists():
            saved = CollectionSpec.from_json(json.loads(manifest.read_text()))
            if smec is None:
                smec = SMEC.load(path / _SMEC)
            dims, spec = cls._spec(where, smec, dims, full, quantization, datatype, m, ef_construct,
                                   full_scan_threshold_kb)
            check_same_layout(where, f"the collection at {str(path)!r}", saved, spec)
            engine = EdgeEngine.open(path / _SHARD, spec, max_search_threads)
        else:
            if smec is None:
                raise ValueError(f"{where}: smec is None but {str(path)!r} holds no collection to reopen; "
                                 f"pass the fitted SMEC to create one")
            dims, spec = cls._spec(where, smec, dims, full, quantization, datatype, m, ef_construct,
                                   full_scan_threshold_kb)
            if path.exists() and any(path.iterdir()):
                raise FileExistsError(f"{where}: {str(path)!r} is not empty and holds no collection "
                                      f"({_MANIFEST} is missing); give a new or empty directory")
            path.mkdir(parents=True, exist_ok=True)
            engine = EdgeEngine.create(path / _SHARD, spec, max_search_threads)
            try:
                smec.save(path / _SMEC)
                with atomic_file(manifest) as f:  # the manifest last: its presence marks a complete collection
                    f.write(json.dumps(spec.to_json(), indent=2))
            except BaseException:
                engine.close()
                raise
        return cls(engine, smec, dims, bool(full))

    @classmethod
    def server(
        cls,
        client: Any,
        name: str,
        smec: SMEC,
        dims: Sequence[int] = (64, 256),
        full: bool = True,
        *,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        quantization: str | None = None,
        datatype: str = "float32",
        m: int = 16,
        ef_construct: int = 100,
        full_scan_threshold_kb: int = 1000,
        retries: int = 3,
        backoff_s: float = 0.5,
    ) -> "QdrantCompressedCollection":
        """A collection ``name`` on a Qdrant server through ``client`` (a ``qdrant_client.QdrantClient``):
        created with ``shard_number`` and ``replication_factor`` when absent, else checked against this layout
        (recorded in the collection's metadata, compressor fingerprint included). Calls are retried
        ``retries`` times on transient failures, waiting ``backoff_s * 2**attempt``. Other arguments as
        ``edge``."""
        from qdrant_client import QdrantClient

        where = "QdrantCompressedCollection.server"
        if not isinstance(client, QdrantClient):
            raise TypeError(f"{where}: client must be a qdrant_client.QdrantClient, got {type(client).__name__}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: name must be a non-empty str, got {name!r}")
        for arg, value in (("shard_number", shard_number), ("replication_factor", replication_factor)):
            if value is not None:
                check_int(value, arg, where)
        retries = check_int(retries, "retries", where, least=0)
        if isinstance(backoff_s, bool) or not isinstance(backoff_s, (int, float)) or backoff_s < 0:
            raise ValueError(f"{where}: backoff_s must be a number >= 0, got {backoff_s!r}")
        dims, spec = cls._spec(where, smec, dims, full, quantization, datatype, m, ef_construct, full_scan_threshold_kb)
        retry = {"retries": retries, "backoff_s": float(backoff_s)}
        if ServerEngine.exists(client, name):
            engine = ServerEngine.open(client, name, spec, **retry)
        else:
            engine = ServerEngine.create(client, name, spec, shard_number, replication_factor, **retry)
        return cls(engine, smec, dims, bool(full))

    # ----------------------------------------------------------------- vectors per stage
    @property
    def d(self) -> int:
        """The full input dim."""
        return int(self.smec.input_dim_)

    def stage_vectors(self, X: np.ndarray, norms: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """What each named vector holds for full-dim rows X (already checked; ``norms``: their row norms when
        the caller has them): the SMEC projections of the unit rows, and the full vector (adapted when the
        compressor is supervised, else X as given; cosine normalises it)."""
        out: dict[str, np.ndarray] = {}
        adapted = self.full and self.smec.supervised_
        if self.dims or adapted:
            if norms is None:
                norms = row_norms(X)
            Xn = X / np.maximum(norms, 1e-12)[:, None]
            out = {vector_name(d): self.smec.projection(d)(Xn) for d in self.dims}
            if adapted:
                out[FULL] = self.smec.projection(self.d)(Xn)
        if self.full and not adapted:
            out[FULL] = X
        return out

    def _open(self, where: str) -> None:
        if self._closed:
            raise QdrantEngineError(f"{where}: this collection is closed")

    # ----------------------------------------------------------------- writes
    def upsert(self, ids: Any, vectors: Any, payloads: Sequence[Mapping[str, Any] | None] | None = None,
               batch_size: int = 1024, *, optimize: bool = True) -> None:
        """Insert or replace points: ``ids`` (n,) non-negative ints, ``vectors`` (n, d) full-dim floats,
        ``payloads`` one dict (or None) per point. Everything is checked before anything is written.

        Edge: with ``optimize`` (default) the HNSW graph and quantized codes are built before returning
        (blocking); pass ``optimize=False`` for many small upserts and call ``optimize()`` once after. The
        server indexes in the background.
        """
        where = "upsert"
        self._open(where)
        X, norms = _check_vectors(vectors, "vectors", where, self.d)
        ids = check_ids(ids, where, X.shape[0])
        payloads = check_payloads(payloads, X.shape[0], where)
        batch_size = check_batch_size(batch_size, where)
        if not isinstance(optimize, (bool, np.bool_)):
            raise TypeError(f"{where}: optimize must be a bool, got {optimize!r}")
        if X.shape[0] == 0:
            return
        self.engine.upsert(ids, self.stage_vectors(X, norms), payloads, batch_size, optimize=bool(optimize))

    def optimize(self) -> None:
        """Edge: build indexes for everything written so far (blocking). Server: nothing (it does it itself)."""
        self._open("optimize")
        self.engine.optimize()

    def delete(self, ids: Any) -> int:
        """Delete points by id (absent ids are ignored); returns how many were present."""
        where = "delete"
        self._open(where)
        ids = check_ids(ids, where, unique=False)
        if ids.shape[0] == 0:
            return 0
        before = self.engine.count()
        self.engine.delete(np.unique(ids))
        return before - self.engine.count()

    def refresh(self, batch_size: int = 1024) -> int:
        """Make points written by third parties searchable: every point that has a ``full`` vector but lacks a
        stage vector (langchain-qdrant, llama-index-vector-stores-qdrant and other Qdrant clients write only
        the vector they are told to, ``full``) gets its stage vectors computed from ``full`` taken as the raw
        embedding (and, with a supervised compressor, ``full`` replaced by the adapted vector); its payload is
        kept. Returns how many points were refreshed. Points complete already are not touched, so calling it
        again is cheap and safe; a point rewritten by a third party while this runs may need another call.
        A point with a UUID id (LlamaIndex writes only those) raises a ValueError: results here are int64 ids."""
        where = "refresh"
        self._open(where)
        batch_size = check_batch_size(batch_size, where)
        if not self.full:
            raise ValueError(f"{where}: this collection stores no 'full' vector (full=False), so there is nothing "
                             f"to compute the stages from")
        refreshed, offset = 0, None
        while True:
            records, offset = self._scroll(offset, batch_size)
            todo = [r for r in records if isinstance(r.vector, dict) and FULL in r.vector
                    and any(name not in r.vector for name in self.stages)]
            bad = next((r.id for r in todo if not isinstance(r.id, int)), None)
            if bad is not None:
                raise ValueError(f"{where}: point {bad!r} has a UUID id; this collection answers with int64 ids "
                                 f"(FAISS-shaped), so points written with UUIDs (LlamaIndex always writes them) "
                                 f"cannot be made searchable here ({refreshed} refreshed before it)")
            if todo:
                X, norms = _check_vectors(np.array([r.vector[FULL] for r in todo], dtype=np.float32), "full",
                                          where, self.d)
                ids = np.array([int(r.id) for r in todo], dtype=np.int64)
                self.engine.upsert(ids, self.stage_vectors(X, norms), [r.payload for r in todo], batch_size,
                                   optimize=False)
                refreshed += len(todo)
            if offset is None:
                break
        if refreshed:
            self.engine.optimize()
        return refreshed

    def _scroll(self, offset: Any, limit: int) -> tuple[list[Any], Any]:
        """One page of points with their vectors and payloads, and the next page's offset (None at the end)."""
        if isinstance(self.engine, EdgeEngine):
            import qdrant_edge as qe

            req = qe.ScrollRequest(offset=offset, limit=limit, with_vector=True, with_payload=True)
            return self.engine._call("refresh", self.engine.shard.scroll, req)
        return self.engine._call("refresh", self.engine.client.scroll, collection_name=self.engine.collection,
                                 offset=offset, limit=limit, with_vectors=True, with_payload=True)

    # ----------------------------------------------------------------- reads
    def count(self) -> int:
        """Points in the collection."""
        self._open("count")
        return self.engine.count()

    def _limits(self, k: int, candidates: Any, where: str) -> list[int]:
        """How many points each stage keeps: the first and middle stages ``max(k, candidates[i])`` (one
        candidates value per SMEC dim, smallest first, or one int for all), the last stage k."""
        n = len(self.dims)
        if is_int(candidates):
            candidates = (candidates,) * n
        elif isinstance(candidates, (str, bytes)) or not isinstance(candidates, Sequence):
            raise TypeError(f"{where}: candidates must be an int or one int per dim, got {candidates!r}")
        if len(candidates) != n or not all(is_int(c) and c > 0 for c in candidates):
            raise ValueError(f"{where}: candidates must be a positive int or {n} positive ints (one per dim of "
                             f"{self.dims}, smallest first), got {candidates!r}")
        limits = [max(k, int(c)) for c in candidates][: len(self.stages) - 1]
        return limits + [k]

    def search(
        self,
        query_vectors: Any,
        k: int = 10,
        filter: Any = None,
        candidates: int | Sequence[int] = 100,
        *,
        hnsw_ef: int | None = None,
        exact: bool = False,
        oversampling: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best points per query, answered by Qdrant's nested prefetch chain, FAISS-shaped:
        ``(scores float32 (nq, k), ids int64 (nq, k))``, best first, padded with id -1 and -FLT_MAX.

        Args:
            query_vectors: (nq, d) full-dim floats.
            filter: a ``qdrant_client.models.Filter`` (either engine) or a ``qdrant_edge.Filter`` (Edge);
                Qdrant applies it in the first stage, so all k results match it.
            candidates: how many each stage passes on (one int, or one per dim, smallest first).
            hnsw_ef: HNSW beam of the first stage (None: Qdrant's default, at least its limit).
            exact: brute-force the first stage (floats, quantization ignored).
            oversampling: for a quantized first stage, read this many times its limit from the codes.
        """
        where = "search"
        self._open(where)
        Q, norms = _check_vectors(query_vectors, "query_vectors", where, self.d)
        k = check_int(k, "k", where)
        limits = self._limits(k, candidates, where)
        if hnsw_ef is not None:
            hnsw_ef = check_int(hnsw_ef, "hnsw_ef", where)
        if not isinstance(exact, (bool, np.bool_)):
            raise TypeError(f"{where}: exact must be a bool, got {exact!r}")
        oversampling = check_oversampling(oversampling, where)
        native = self.engine.native_filter(filter, where)
        if Q.shape[0] == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        per_stage = self.stage_vectors(Q, norms)
        stages = [Stage(name, per_stage[name], limit) for name, limit in zip(self.stages, limits)]
        params = StageParams(hnsw_ef=hnsw_ef, exact=bool(exact), rescore=len(stages) == 1,
                             oversampling=oversampling)
        return self.engine.query(stages, params, native)

    def layout(self) -> dict[str, dict[str, Any]]:
        """The collection's vectors as the engine reports them: name -> size, distance, m, quantization."""
        self._open("layout")
        return self.engine.layout()

    # ----------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Flush and release the Edge shard (the server client stays the caller's). Idempotent."""
        if not self._closed:
            self._closed = True
            self.engine.close()

    def __enter__(self) -> "QdrantCompressedCollection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"QdrantCompressedCollection({self.engine.name}, stages={self.stages}, d={self.d}"
                f"{', closed' if self._closed else ''})")

