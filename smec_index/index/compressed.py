"""``CompressedIndex``: a FAISS-shaped index that searches SMEC-compressed vectors and reranks exactly.

Each configured reduced dim has its own real index (a ``Backend``: FAISS through any ``index_factory``
spec, or hnswlib). A search runs on the smallest dim, passes ``candidates`` results on, rescores them
exactly at each larger configured dim, then at full dim (``rerank="full"``) against the full store: the
raw vectors as added, or the compressor's adapted full vectors when it was trained supervised (raw
vectors would undo the adaptation).

FAISS semantics (see ``shared/notes/faiss-contract.md``): ``d`` is the full input dim; inputs are float
arrays of shape (n, d) (other float dtypes are converted to float32); ``search`` returns float32 and int64
arrays of shape (nq, k), best first, padded with id -1 and -FLT_MAX (``ip``) or +FLT_MAX (``l2``, squared
distances). Vectors added with ``add`` are numbered 0..ntotal-1 and renumbered on removal like
``IndexFlat``; vectors added with ``add_with_ids`` keep their ids like ``IndexIDMap``; one index holds
one kind. ``faiss.write_index`` cannot save this Python object: use ``smec_index.write_index`` /
``read_index`` (they also pass plain FAISS indexes through to FAISS).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import faiss
import numpy as np

from .._fsutil import atomic_directory
from .._rows import inv_row_norms
from ..compressor import SMEC
from .backends import BACKENDS, METRIC_TYPE, METRICS, Backend, backend_class, make_backend, pad_results, worst_distance
from .backends.codes import CODES, LABEL_BYTES, RAM_SHARE, code_bytes, code_options, default_first_stage, fits_dim
from .checks import check_finite, check_ids, check_shape, check_vectors, is_int
from .errors import IndexStateError
from .ids import EXPLICIT, SEQUENTIAL, IdMap
from .persist import read_manifest, saved_files, write_manifest
from .store import STORE_DTYPES, STORE_KINDS, VectorStore, load_npy
from .stream import chunk_rows, release_pages

__all__ = ["CompressedIndex", "write_index", "read_index", "RERANK"]

RERANK = ("full", "cascade", "none")
FULL = "full"
_MAX_RESULTS = 1 << 28  # (nq * k) per search call: the (D, I) tables alone are 12 bytes a result (3 GiB)
_RESCORE_CHUNK_FLOATS = 1 << 20  # rows gathered per rescoring chunk: 4 MiB of float32 stays in cache


class _RWLock:
    """Many concurrent searches, or one mutation; a waiting mutation goes before new searches."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class CompressedIndex:
    """A drop-in for a FAISS index that searches SMEC-compressed vectors, then reranks exactly.

    Lean by default: ``CompressedIndex(smec)`` indexes ONE first stage, the (dim, code) that fits ``budget``
    (default raw float32 / 16, i.e. ``d / 4`` bytes a vector, the compressor's map included; see
    ``backends/codes.py``), and keeps the full vectors on disk (``full_store="disk"``) for the exact rerank.
    Pass several ``dims`` for a cascade.

    Args:
        smec: the compressor; ``train`` fits it when it is not fitted yet.
        dims: the reduced dim(s) to index, each its own backend, or a fitted compressor's input dim alone (the
            full vector coded, no map to hold). Default: one stage, chosen with the code by ``budget``
            (``backends.codes.default_first_stage``): a dim of at least a third of the input's at a code of 4
            bits or more, else the full vector at 1-bit RaBitQ; with a ``code``, the largest dim whose code fits
            ``budget``; the smallest trained dim when backend options are given without a code.
        backend: ``"faiss"`` (option ``spec``: any ``index_factory`` string, ``params``: search-time
            parameters such as ``{"efSearch": 64}``, or ``{"qb": 8}`` for RaBitQ's query bits; default spec
            ``"Flat"``), ``"faiss-binary"`` (sign codes by Hamming distance; options ``itq``, ``hnsw_m``,
            ``ef_search``), ``"hnswlib"`` (options ``M``, ``ef_construction``, ``ef``) or ``"qdrant-edge"``.
            Default: the code's backend.
        code: a named stage code (``backends.codes.CODES``): ``"float32"``, ``"sq8"``, ``"sq4"``,
            ``"rabitq1"``, ``"rabitq2"``, ``"rabitq4"``, ``"pq1"``, ``"pq2"``, ``"pq4"``, ``"opq2"`` (product
            quantizers of 1, 2, 4 bits a dim: the dim must be a multiple of 8, 4, 2), ``"binary"``,
            ``"binary-itq"``, ``"qdrant-int8"``,
            ``"qdrant-binary"``, ``"qdrant-binary1.5"``, ``"qdrant-binary2"``, ``"qdrant-turbo1"``,
            ``"qdrant-turbo1.5"``, ``"qdrant-turbo2"``, ``"qdrant-turbo4"``, ``"qdrant-turbo8"`` (TurboQuant),
            ``"qdrant-pq-x4"`` ... ``"qdrant-pq-x64"``, ``"rq1"``, ``"rq2"``, ``"rq4"``.
            Default when neither dims, backend nor backend options are given: the compressor's own
            (``SMEC(code=...)``, whose stages were chosen for it), else chosen with the dim by ``budget``.
        budget: RAM bytes a vector for the default first stage: its code, the engine's 8-byte label and the
            compressor's map of that dim spread over ``n_vectors`` (default raw float32 / 16). With an unfitted
            compressor the default stage is provisional until ``train`` fits the compressor and chooses it with
            the real input dim and rows (``dims`` and ``code`` change then).
        n_vectors: how many vectors the index will hold, for the default first stage only: the compressor's map
            is held once whatever the corpus, so on a small corpus it is a large share of each vector's bytes and
            a smaller dim fits the budget. Default: the rows the compressor was fitted on (the corpus it is
            usually fitted on); unknown for compressors saved before 2026-12-05 or not fitted (then not counted).
        metric: ``"ip"`` (inner product) or ``"l2"`` (squared L2), or ``faiss.METRIC_*``.
        rerank: default for ``search``: ``"full"`` (cascade, then exact full dim), ``"cascade"`` (exact at
            each larger configured dim only) or ``"none"`` (the backend's answer at the searched dim).
        candidates: how many results each stage passes on to the next: one int for every stage, or one
            per configured dim (smallest first). The last stage keeps k.
        full_store: where the full-dim vectors live: ``"memory"``, ``"mmap"`` (a file, read through a
            mapping: the fastest rerank from disk, but the pages it touches count in the process's RSS),
            ``"disk"`` (the default: a file, rows read with ``pread``: 3x slower rerank, RSS stays at the
            indexes) or None (no full rerank, no ``reconstruct``). Intermediate cascade stores follow it.
        store_dtype: ``"float32"`` or ``"float16"`` (half the bytes; slower rerank, tiny score error).
        d: the full input dim, only needed to know ``d`` before ``train`` fits an unfitted ``smec``.
    """

    def __init__(
        self,
        smec: SMEC,
        dims: int | Sequence[int] | None = None,
        backend: str | None = None,
        *,
        code: str | None = None,
        budget: float | None = None,
        n_vectors: int | None = None,
        metric: str | int = "ip",
        rerank: str = "full",
        candidates: int | Sequence[int] = 100,
        full_store: str | None = "disk",
        store_dtype: str = "float32",
        d: int | None = None,
        **backend_options: Any,
    ) -> None:
        where = "CompressedIndex"
        if not isinstance(smec, SMEC):
            raise TypeError(f"{where}: smec must be a smec_index.SMEC, got {type(smec).__name__}")
        metric = self._check_metric(metric)
        available = smec.dims_ if smec.is_fitted else smec.dims
        if d is not None and (not is_int(d) or d <= max(available)):
            raise ValueError(f"{where}: d must be an int above the largest dim {max(available)}, got {d!r}")
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float, np.number))
                                   or not budget > 0):
            raise ValueError(f"{where}: budget must be a positive number of RAM bytes per vector, got {budget!r}")
        if n_vectors is not None and (not is_int(n_vectors) or n_vectors < 1):
            raise ValueError(f"{where}: n_vectors must be a positive int (the vectors the index will hold), got "
                             f"{n_vectors!r}")
        if n_vectors is not None and dims is not None:
            raise ValueError(f"{where}: n_vectors sizes the default first stage; it cannot apply with dims={dims!r}")
        shared = self._shared_bytes(smec, available, n_vectors) if dims is None else {}  # sizes only a default
        chosen = None  # the default (dim, code)'s dim
        if code is None and dims is None and backend is None and not backend_options:
            if smec.code is not None:  # a compressor fitted for a code (``SMEC(code=...)``) chose its stages for it
                code = smec.code
            else:
                chosen, code = default_first_stage(smec.input_dim_ if smec.is_fitted else int(d or max(available) + 1),
                                                   available, budget, shared, full=smec.is_fitted)
        if code is not None:
            backend, backend_options = self._code_options(code, backend, backend_options)
        backend = "faiss" if backend is None else backend
        if budget is not None and (dims is not None or code is None):
            raise ValueError(f"{where}: budget chooses the dim of a code; it cannot apply with dims={dims!r} or "
                             f"with backend options and no code (pass dims, or budget with or without a code)")
        if dims is None:
            dims = chosen if chosen is not None else self._default_dim(code, available, budget, smec, d, shared)
        dims = self._check_dims(dims, available, smec.input_dim_ if smec.is_fitted else None)
        if full_store not in STORE_KINDS and full_store is not None:
            raise ValueError(f"{where}: full_store must be one of {STORE_KINDS} or None, got {full_store!r}")
        if store_dtype not in STORE_DTYPES:
            raise ValueError(f"{where}: store_dtype must be one of {STORE_DTYPES}, got {store_dtype!r}")
        if rerank not in RERANK:
            raise ValueError(f"{where}: rerank must be one of {RERANK}, got {rerank!r}")
        if rerank == FULL and full_store is None:
            raise ValueError(f"{where}: rerank='full' needs a full store; pass full_store='memory', 'mmap' or 'disk', "
                             f"or rerank='cascade'/'none'")
        if d is not None:
            if smec.is_fitted and d != smec.input_dim_:
                raise ValueError(f"{where}: d={d} but smec was fitted on {smec.input_dim_}-dim vectors")
        backends = {dim: make_backend(backend, dim, metric,
                                      backend_options if code is None else code_options(code, dim, backend_options))
                    for dim in dims}
        self._configure(smec, dims, backend, metric, rerank, self._check_candidates(candidates, dims),
                        full_store, store_dtype, backends, code)
        if d is not None:
            self._d = int(d)
        # an unfitted compressor's default stage is provisional: ``train`` chooses it again once D and the rows are known
        self._pending_default = (budget, n_vectors) if chosen is not None and not smec.is_fitted else None
        self._frozen = True

    def _choose_default(self, budget: float | None, n_vectors: int | None) -> None:
        """The default first stage again, now that ``train`` has fitted the compressor (its input dim and rows
        known), with a fresh engine for it (write lock held, nothing added yet)."""
        smec = self.smec
        dim, code = default_first_stage(smec.input_dim_, smec.dims_, budget,
                                        self._shared_bytes(smec, smec.dims_, n_vectors), full=True)
        backend, options = self._code_options(code, None, {})
        self.dims, self.code, self.backend = (dim,), code, backend
        self.backends = {dim: make_backend(backend, dim, self.metric, code_options(code, dim, options))}
        self._pending_default = None

    @staticmethod
    def _code_options(code: Any, backend: str | None, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The backend and options of a named code; the caller's options may add to them (``params`` merged)
        but not contradict them."""
        where = "CompressedIndex"
        if code not in CODES:
            raise ValueError(f"{where}: code must be one of {sorted(CODES)}, got {code!r}")
        c = CODES[code]
        if backend is not None and backend != c.backend:
            raise ValueError(f"{where}: code {code!r} runs on the {c.backend!r} backend; got backend={backend!r}")
        merged = dict(c.options)
        for key, value in options.items():
            if key == "params" and isinstance(value, dict) and isinstance(merged.get("params"), dict):
                merged["params"] = {**merged["params"], **value}
            elif key in merged and merged[key] != value:
                raise ValueError(f"{where}: code {code!r} sets {key}={merged[key]!r}; got {key}={value!r} (pass "
                                 f"backend options without code to choose them yourself)")
            else:
                merged[key] = value
        return c.backend, merged

    @staticmethod
    def _shared_bytes(smec: SMEC, available: Sequence[int], n_vectors: int | None) -> dict[int, float]:
        """Per trained dim, the bytes a vector of the compressor's map that serving it holds, spread over
        ``n_vectors`` (default: the compressor's fitted rows); empty when that is unknown."""
        if not smec.is_fitted:  # no maps yet: their size is known once fitted (``train`` chooses again then)
            return {}
        n = n_vectors if n_vectors is not None else getattr(smec, "fit_rows_", None)
        if not n:
            return {}
        return {int(dim): smec.subset(dim).nbytes / n for dim in (*available, smec.input_dim_)}

    @staticmethod
    def _default_dim(code: str | None, available: Sequence[int], budget: float | None, smec: SMEC,
                     d: int | None, shared: dict[int, float]) -> int:
        """One first stage: the largest trained dim whose ``code`` (plus label and compressor share) fits the
        RAM budget per vector (raw float32 / 16 by default); the smallest trained dim when the code is unknown
        (backend options without a code)."""
        if code is None:
            return int(min(available))
        D = smec.input_dim_ if smec.is_fitted else int(d or max(available) + 1)
        room = (4 * D / RAM_SHARE if budget is None else float(budget)) - LABEL_BYTES
        fits = [dim for dim in available if fits_dim(code, dim)]
        fits = [dim for dim in fits if code_bytes(code, dim) + shared.get(dim, 0.0) <= room]
        return int(max(fits) if fits else min(available))

    def _configure(self, smec: SMEC, dims: tuple[int, ...], backend: str, metric: str, rerank: str,
                   candidates: tuple[int, ...], full_store: str | None, store_dtype: str,
                   backends: dict[int, Backend], code: str | None = None) -> None:
        self.smec = smec
        self.code = code
        self.dims = dims
        self.backend = backend
        self.metric = metric
        self.rerank = rerank
        self.candidates = candidates
        self.full_store = full_store
        self.store_dtype = store_dtype
        self.backends = backends
        self._d: int | None = smec.input_dim_ if smec.is_fitted else None
        self._trained = False
        self._ids = IdMap()
        self._stores: dict[int | str, VectorStore] = {}
        self._lock = _RWLock()
        self._broken: str | None = None  # why the index may not be saved (an add that could not be undone)
        self._pending_default: tuple[float | None, int | None] | None = None  # see __init__

    # ----------------------------------------------------------------- argument checks
    @staticmethod
    def _check_metric(metric: Any) -> str:
        by_type = {v: k for k, v in METRIC_TYPE.items()}
        if is_int(metric) and int(metric) in by_type:
            return by_type[int(metric)]
        if metric not in METRICS:
            raise ValueError(f"CompressedIndex: metric must be one of {METRICS} or faiss.METRIC_INNER_PRODUCT/"
                             f"METRIC_L2, got {metric!r}")
        return metric

    @staticmethod
    def _check_dims(dims: Any, available: Sequence[int], full: int | None = None) -> tuple[int, ...]:
        """``dims`` as a sorted tuple of the compressor's dims; ``full`` (a fitted compressor's input dim) may be
        the one and only dim: a first stage that codes the full vector itself."""
        where = "CompressedIndex"
        if is_int(dims):
            dims = (dims,)
        try:
            dims = tuple(dims)
        except TypeError:
            raise TypeError(f"{where}: dims must be a sequence of ints, got {type(dims).__name__}") from None
        if not dims or not all(is_int(x) for x in dims):
            raise ValueError(f"{where}: dims must be a non-empty sequence of ints, got {dims!r}")
        if full is not None and full in dims and len(dims) > 1:
            raise ValueError(f"{where}: the full dim {full} is a first stage of its own (dims={full}); got {dims!r}")
        missing = sorted(set(int(x) for x in dims) - set(available) - ({full} if full is not None else set()))
        if missing:
            raise ValueError(f"{where}: dims {missing} are not dims of the compressor; it has {tuple(available)}"
                             + (f" (and {full}, the full vector alone)" if full is not None else ""))
        if len(set(dims)) != len(dims):
            raise ValueError(f"{where}: dims repeat: {dims}")
        return tuple(sorted(int(x) for x in dims))

    @staticmethod
    def _check_candidates(candidates: Any, dims: tuple[int, ...]) -> tuple[int, ...]:
        where = "CompressedIndex"
        if is_int(candidates):
            candidates = (candidates,) * len(dims)
        try:
            candidates = tuple(candidates)
        except TypeError:
            raise TypeError(f"{where}: candidates must be an int or one int per dim, got {candidates!r}") from None
        if len(candidates) != len(dims) or not all(is_int(c) and c > 0 for c in candidates):
            raise ValueError(f"{where}: candidates must be a positive int or {len(dims)} positive ints "
                             f"(one per dim of {dims}, smallest first), got {candidates!r}")
        return tuple(int(c) for c in candidates)

    def _require_trained(self, where: str) -> int:
        if not self.is_trained:
            raise IndexStateError(f"{where}: the index is not trained; call train(X) first")
        return self._d

    # ----------------------------------------------------------------- FAISS attributes
    @property
    def d(self) -> int | None:
        """The full input dim (None only while an unfitted compressor has not seen data and no d was given)."""
        return self._d

    @property
    def ntotal(self) -> int:
        """Live vectors."""
        return self._ids.ntotal

    @property
    def is_trained(self) -> bool:
        if not self._trained:  # once trained, always (reset keeps training): spares the check per search
            self._trained = self.smec.is_fitted and all(b.is_trained for b in self.backends.values())
        return self._trained

    @property
    def metric_type(self) -> int:
        """``faiss.METRIC_INNER_PRODUCT`` (0) or ``faiss.METRIC_L2`` (1)."""
        return int(METRIC_TYPE[self.metric])

    def memory_usage(self) -> dict[str, Any]:
        """Bytes by part and per vector, beside raw float32.

        RAM by part: ``compressor`` (the maps of this index's dims, what a saved index loads: a fixed size,
        whatever the corpus), ``backends``, ``ids``, ``cascade_stores`` (intermediate dims), ``full_store``
        (stores kept in memory; file-backed ones count 0), totalled in ``ram_bytes``. ``disk_bytes``: the rows
        of the file-backed stores. Per live vector: ``ram_bytes_per_vector``, ``disk_bytes_per_vector`` and
        ``raw_bytes_per_vector`` (4 d, the float32 vectors as given), with ``ntotal``.
        """
        compressor = self.smec.subset(self.dims).nbytes if self.smec.is_fitted else 0
        with self._lock.read():  # FAISS serialises the index to count it: not while an add changes it
            parts = {"compressor": compressor, "backends": sum(b.nbytes for b in self.backends.values()),
                     "ids": self._ids.nbytes,
                     "cascade_stores": sum(s.nbytes for key, s in self._stores.items() if key != FULL),
                     "full_store": self._stores[FULL].nbytes if FULL in self._stores else 0}
            disk = sum(s.n * s.row_bytes for s in self._stores.values() if s.kind != "memory")
            n = self.ntotal
        ram = sum(parts.values())
        per = (lambda b: b / n) if n else (lambda b: 0.0)
        return {**parts, "ram_bytes": ram, "disk_bytes": disk, "ntotal": n, "ram_bytes_per_vector": per(ram),
                "disk_bytes_per_vector": per(disk), "raw_bytes_per_vector": 4 * (self._d or 0)}

    @property
    def nbytes(self) -> int:
        """Bytes held in RAM: the compressor's maps, every backend, the id map, and the stores kept in memory
        (not mapped ones)."""
        return int(self.memory_usage()["ram_bytes"])

    def __repr__(self) -> str:
        code = f", code={self.code!r}" if self.code else ""
        return (f"CompressedIndex(d={self._d}, dims={self.dims}, backend={self.backend!r}{code}, "
                f"metric={self.metric!r}, rerank={self.rerank!r}, ntotal={self.ntotal})")

    # ----------------------------------------------------------------- training and adding
    def train(self, x: np.ndarray) -> None:
        """Fit the compressor if it is not fitted yet, then train the backends that need it (IVF, PQ)."""
        where = "train"
        X = check_vectors(x, where, self._d)
        need = max(b.min_train_rows for b in self.backends.values())
        if X.shape[0] < max(need, 1):
            raise ValueError(f"{where}: x has {X.shape[0]} rows; the {self.backend} backends need at least "
                             f"{max(need, 1)} to train")
        with self._lock.write():
            if not self.smec.is_fitted:
                if X.shape[1] <= max(self.dims):
                    raise ValueError(f"{where}: x has shape {X.shape}; expected (n, D) with D above the largest "
                                     f"dim {max(self.dims)}")
                self.smec.fit(X)
                self._d = self.smec.input_dim_
                if self._pending_default is not None:
                    self._choose_default(*self._pending_default)
            inv = inv_row_norms(X)
            for dim, b in self.backends.items():
                if not b.is_trained:
                    b.train(self._project(dim, X, inv))

    def add(self, x: np.ndarray) -> None:
        """Add vectors numbered ``ntotal .. ntotal+n-1`` (renumbered on removal, like ``IndexFlat``)."""
        self._add(x, None, "add")

    def add_with_ids(self, x: np.ndarray, ids: np.ndarray) -> None:
        """Add vectors under caller-chosen int64 ids (stable on removal, like ``IndexIDMap``)."""
        self._add(x, ids, "add_with_ids")

    def _add(self, x: Any, ids: Any, where: str, held: bool = False) -> None:
        """Validate the whole input first (nothing changes on bad input), then add it one chunk of rows at a
        time under the write lock: searches see all of the batch or none of it, and at most one chunk of
        full-dim float32 rows is held beyond the stores (see ``stream.py``). Should the machine fail the add
        half way (out of memory, disk full), what it had added is taken out again before the error is raised.
        ``held``: the caller holds the write lock already (``merge_from``)."""
        d = self._require_trained(where)
        X = check_shape(x, where, d)
        ids = None if ids is None else check_ids(ids, where, X.shape[0])
        mode = SEQUENTIAL if ids is None else EXPLICIT
        n, step = X.shape[0], chunk_rows(d)
        if n <= step:  # one chunk: project before taking the lock, so searches wait less
            X = check_vectors(X, where, d)
            inv = inv_row_norms(X)
            reduced = {dim: self._project(dim, X, inv) for dim in self.dims}
            with contextlib.nullcontext() if held else self._lock.write():
                self._ids.check_add(mode, ids, where)
                if n:
                    self._reserve_stores(n, where)
                    with self._undo_on_failure() as added:
                        self._add_rows(X, inv, reduced, ids, added)
            return
        for s in range(0, n, step):
            check_finite(np.asarray(X[s : s + step], dtype=np.float32), where, row0=s)
            release_pages(X, s, s + step)
        with contextlib.nullcontext() if held else self._lock.write():
            self._ids.check_add(mode, ids, where)
            self._reserve_stores(n, where)
            with self._undo_on_failure() as added:
                for s in range(0, n, step):
                    C = np.ascontiguousarray(X[s : s + step], dtype=np.float32)
                    inv = inv_row_norms(C)
                    self._add_rows(C, inv, {dim: self._project(dim, C, inv) for dim in self.dims},
                                   None if ids is None else ids[s : s + step], added)
                    release_pages(X, s, s + step)

    def _add_rows(self, X: np.ndarray, inv: float | np.ndarray, reduced: dict[int, np.ndarray],
                  ids: np.ndarray | None, added: dict[Any, list[np.ndarray]]) -> None:
        """Give validated rows their slots, then add them to every backend and store (write lock held);
        ``added`` records what each part received, for ``_undo_on_failure``."""
        slots = self._ids.assign(X.shape[0], ids)
        added["ids"].append(self._ids.slot_ids[slots])
        for dim, b in self.backends.items():
            b.add(slots, reduced[dim])
            added[dim].append(slots)
        for key in self._store_keys():
            self._stores[key].append(self._project(FULL, X, inv) if key == FULL else reduced[key])

    def _reserve_stores(self, n: int, where: str) -> None:
        """Make room in every store for ``n`` more slots before anything changes (write lock held): a full disk
        or memory fails the add here, and writing the rows, or an undo's placeholder rows, needs no new space."""
        if self._broken is not None:
            raise IndexStateError(f"{where}: {self._broken}")
        created = []
        try:
            for key in self._store_keys():
                if key not in self._stores:
                    dim = self._d if key == FULL else key
                    self._stores[key] = VectorStore(dim, self.store_dtype, self.full_store or "memory")
                    created.append(key)
                self._stores[key].reserve(self._ids.n_slots + n)
        except BaseException:
            for key in created:  # an empty index keeps no stores
                del self._stores[key]
            raise

    @contextlib.contextmanager
    def _undo_on_failure(self) -> Iterator[dict[Any, list[np.ndarray]]]:
        """Yield a record of what an add gave each part; if the add raises, take it all out again: the ids
        are removed, each backend forgets the slots it received, and every store is padded to the slot
        count (slots are never reused, so removed ones keep a row; the room was reserved), then the error goes
        on. Should the undo itself fail, the index is marked broken: ``save`` and later adds refuse it, so a
        good earlier save is never replaced by an inconsistent one."""
        added: dict[Any, list[np.ndarray]] = {"ids": [], **{dim: [] for dim in self.backends}}
        try:
            yield added
        except BaseException as e:
            try:
                for dim, b in self.backends.items():
                    if added[dim]:
                        b.remove(np.concatenate(added[dim]))
                if added["ids"]:
                    self._ids.remove(np.concatenate(added["ids"]))
                for key, store in self._stores.items():
                    if store.n < self._ids.n_slots:
                        store.append(np.zeros((self._ids.n_slots - store.n, store.dim), dtype=np.float32))
            except BaseException as undo:
                self._broken = (f"an add failed ({type(e).__name__}: {e}) and could not be undone "
                                f"({type(undo).__name__}: {undo}); this index is inconsistent and may not be "
                                f"saved or added to: load the last save again")
            raise

    def _store_keys(self) -> list[int | str]:
        """Stores needed: each configured dim above the smallest (cascade rescoring), and the full one."""
        return list(self.dims[1:]) + ([FULL] if self.full_store is not None else [])

    # ----------------------------------------------------------------- search
    def search(
        self,
        x: np.ndarray,
        k: int,
        *,
        params: faiss.SearchParameters | None = None,
        D: np.ndarray | None = None,
        I: np.ndarray | None = None,
        dim: int | None = None,
        rerank: str | None = None,
        candidates: int | Sequence[int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k best ids per query, best first: ``(D float32 (nq, k), I int64 (nq, k))``.

        As in FAISS, ``params`` (a ``faiss.SearchParameters``) filters with ``sel=IDSelector...`` (on the ids
        this index returns) and sets this call's ``efSearch`` / ``nprobe`` (``SearchParametersHNSW`` / ``IVF``;
        FAISS backend), and ``IndexRefineSearchParameters(k_factor=, base_index_params=)`` sets
        ``candidates = k * k_factor``; ``D`` and ``I`` are filled in place and returned. ``dim`` picks the
        configured dim to search (default the smallest); ``rerank`` and ``candidates`` override the index
        defaults for this call. Thread-safe: searches run concurrently.
        """
        where = "search"
        d = self._require_trained(where)
        X = check_vectors(x, where, d)
        if not is_int(k) or k <= 0:
            raise ValueError(f"{where}: k must be a positive int, got {k!r}")
        sel, overrides, k_factor = self._search_params(params, where)
        if k_factor is not None and candidates is None:
            candidates = max(1, int(k * k_factor))
        for name, out, dtype in (("D", D, np.float32), ("I", I, np.int64)):
            if out is not None and (not isinstance(out, np.ndarray) or out.dtype != dtype
                                    or out.shape != (X.shape[0], k) or not out.flags.writeable):
                got = f"{out.dtype} {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
                raise ValueError(f"{where}: {name} must be a writeable {np.dtype(dtype)} array of shape "
                                 f"({X.shape[0]}, {k}), got {got}")
        if X.shape[0] * int(k) > _MAX_RESULTS:
            raise ValueError(f"{where}: k={k} for {X.shape[0]} queries asks for {X.shape[0] * int(k):,} results; "
                             f"at most {_MAX_RESULTS:,} per call (search in smaller batches)")
        if dim is None:
            dim = self.dims[0]
        elif not is_int(dim) or int(dim) not in self.dims:
            raise ValueError(f"{where}: dim must be one of the configured dims {self.dims}, got {dim!r}")
        rerank = self.rerank if rerank is None else rerank
        if rerank not in RERANK:
            raise ValueError(f"{where}: rerank must be one of {RERANK}, got {rerank!r}")
        if rerank == FULL and self.full_store is None:
            raise ValueError(f"{where}: rerank='full' needs a full store; this index has full_store=None")
        cands = self.candidates if candidates is None else self._check_candidates(candidates, self.dims)
        k = int(k)
        with self._lock.read():
            outD, outI = self._search(X, k, self.dims.index(int(dim)), rerank, cands, sel, overrides)
        if D is None and I is None:
            return outD, outI
        if D is not None:
            D[...] = outD
        if I is not None:
            I[...] = outI
        return (outD if D is None else D), (outI if I is None else I)

    def _search_params(self, params: Any, where: str) -> tuple[Any, dict[str, Any], float | None]:
        """``(sel, overrides, k_factor)`` from FAISS search parameters (checked; see ``search``)."""
        if params is None:
            return None, {}, None
        if not isinstance(params, faiss.SearchParameters):
            raise TypeError(f"{where}: params must be a faiss.SearchParameters (or None), got {type(params).__name__}")
        k_factor = None
        if isinstance(params, faiss.IndexRefineSearchParameters):
            k_factor = float(params.k_factor) if params.k_factor > 0 else None
            params = params.base_index_params
            if params is None:
                return None, {}, k_factor
        overrides: dict[str, Any] = {}
        if isinstance(params, faiss.SearchParametersHNSW):
            overrides["efSearch"] = int(params.efSearch)
        elif isinstance(params, faiss.SearchParametersIVF):
            overrides["nprobe"] = int(params.nprobe)
        sel = params.sel
        if (sel is not None or overrides) and self.backend != "faiss":
            raise ValueError(f"{where}: params (IDSelector, efSearch, nprobe) need backend='faiss'; this index "
                             f"uses {self.backend!r}")
        return sel, overrides, k_factor

    def _slot_selector(self, sel: Any) -> Any:
        """A selector on backend labels (slots) accepting what ``sel`` accepts on external ids (FAISS's
        wrapper keeps the id vector and ``sel`` alive with it)."""
        if self._ids.mode != EXPLICIT and self._ids.ntotal == self._ids.n_slots:
            return sel  # ids from add, nothing removed: slot = id
        vec = faiss.Int64Vector()
        faiss.copy_array_to_vector(np.ascontiguousarray(self._ids.slot_ids), vec)
        return faiss.IDSelectorTranslated(vec, sel)

    def _stages(self, start: int, rerank: str) -> list[int | str]:
        if rerank == "none":
            return [self.dims[start]]
        return list(self.dims[start:]) + ([FULL] if rerank == FULL else [])

    def _search(self, X: np.ndarray, k: int, start: int, rerank: str, cands: tuple[int, ...], sel: Any = None,
                overrides: dict[str, Any] | None = None):
        nq = X.shape[0]
        if nq == 0 or self.ntotal == 0:
            return pad_results(np.empty((nq, 0), np.float32), np.empty((nq, 0), np.int64), k, self.metric)
        stages = self._stages(start, rerank)
        inv = inv_row_norms(X)
        first = stages[0]
        # never ask an engine for more rows than it holds: FAISS allocates (nq, k) whatever ntotal is
        fetch = min(k if len(stages) == 1 else max(k, cands[start]), self._ids.n_slots)
        Q = self._project(first, X, inv)
        if sel is None and not overrides:
            D, S = self.backends[first].search(Q, fetch)
        else:
            slot_sel = None if sel is None else self._slot_selector(sel)
            D, S = self.backends[first].search(Q, fetch, slot_sel, **(overrides or {}))
        for j, stage in enumerate(stages[1:], 1):
            keep = k if j == len(stages) - 1 else max(k, cands[start + j])
            D, S = self.rescore(self._project(stage, X, inv), S, stage, keep)
        return pad_results(D, self._ids.to_external(S), k, self.metric)

    def project(self, x: np.ndarray, dim: int) -> np.ndarray:
        """Rows of x as the index sees them at ``dim``: a configured dim, or ``d`` for the vectors the
        full-dim rerank scores (the raw rows, or the adapted ones when the compressor is supervised)."""
        d = self._require_trained("project")
        X = check_vectors(x, "project", d)
        if not is_int(dim) or (int(dim) not in self.dims and dim != d):
            raise ValueError(f"project: dim must be one of {self.dims} or d={d}, got {dim!r}")
        return self._project(FULL if dim == d else int(dim), X, inv_row_norms(X))

    def _project(self, stage: int | str, X: np.ndarray, inv: float | np.ndarray) -> np.ndarray:
        """Rows of X as a stage sees them: ``transform(X, dim)`` for a reduced dim; at full dim the raw rows,
        or the adapted full vectors when the compressor is supervised (raw ones would undo the adaptation).

        ``inv`` is ``inv_row_norms(X)``: normalising the input is folded into the affine map, which saves
        a copy of X (the same result as ``SMEC.transform`` to float32 rounding).
        """
        if stage == FULL:
            if not self.smec.supervised_:
                return X
            stage = self._d
        elif stage == self._d and not self.smec.supervised_:  # a first stage coding the full vector: normalised
            return X * inv
        P = self.smec.projections_[stage]
        Y = X @ P.M
        Y *= inv
        Y += P.c
        Y *= inv_row_norms(Y)
        return Y

    def rescore(self, Q: np.ndarray, slots: np.ndarray, stage: int | str, keep: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of candidate slots (nq, m; -1 = none) at a stage's store; the ``keep`` best, sorted.

        ``Q`` is already projected for the stage (see ``_project``). Public so benchmarks can time it.
        """
        store = self._stores[stage]
        nq, m = slots.shape
        valid = slots >= 0
        gather = np.where(valid, slots, 0)
        scores = np.empty((nq, m), dtype=np.float32)
        step = max(1, _RESCORE_CHUNK_FLOATS // max(1, m * store.dim))
        for s in range(0, nq, step):
            rows = store.take(gather[s : s + step])  # (c, m, dim)
            q = Q[s : s + step]
            if self.metric == "ip":
                scores[s : s + step] = np.matmul(rows, q[:, :, None])[:, :, 0]
            else:
                diff = rows - q[:, None, :]
                scores[s : s + step] = np.einsum("qmd,qmd->qm", diff, diff)
        scores[~valid] = worst_distance(self.metric)
        order = np.argsort(-scores if self.metric == "ip" else scores, axis=1, kind="stable")[:, : min(keep, m)]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(slots, order, axis=1)

    # ----------------------------------------------------------------- removal and access
    def remove_ids(self, ids: Any) -> int:
        """Remove vectors by id (an int array, or a ``faiss.IDSelector`` as in FAISS); returns how many were
        present. Ids from ``add`` are then renumbered."""
        if isinstance(ids, faiss.IDSelector):
            with self._lock.read():
                live = self._ids.slot_ids[self._ids.live_slots()]
            ids = live[np.fromiter((ids.is_member(int(i)) for i in live), dtype=bool, count=live.shape[0])]
        arr = check_ids(ids, "remove_ids", None)
        with self._lock.write():
            slots = self._ids.lookup(np.unique(arr))
            slots = slots[slots >= 0]
            if slots.shape[0]:
                for b in self.backends.values():
                    b.remove(slots)
                self._ids.remove(arr)
            return int(slots.shape[0])

    def reconstruct(self, key: int) -> np.ndarray:
        """The stored full-dim vector of id ``key`` (raw as added; adapted when the compressor is supervised)."""
        if not is_int(key):
            raise TypeError(f"reconstruct: key must be an int id, got {type(key).__name__}")
        with self._lock.read():
            self._require_full_store("reconstruct")
            slot = self._ids.lookup(np.array([key]))
            if slot[0] < 0:
                raise ValueError(f"reconstruct: id {key} is not in the index (ntotal={self.ntotal})")
            return self._stores[FULL].take(slot)[0]

    def reconstruct_n(self, n0: int = 0, ni: int = -1, x: np.ndarray | None = None) -> np.ndarray:
        """Full-dim vectors of the live entries ``n0 .. n0+ni-1`` in insertion order (ids from ``add`` =
        positions); FAISS's defaults: ``ni=-1`` is every entry from ``n0``, ``x`` an (ni, d) float32 output."""
        with self._lock.read():
            self._require_full_store("reconstruct_n")
            live = self._ids.live_slots()
            if is_int(n0) and is_int(ni) and ni == -1:
                ni = live.shape[0] - n0
            if not (is_int(n0) and is_int(ni)) or n0 < 0 or ni < 0 or n0 + ni > live.shape[0]:
                raise ValueError(f"reconstruct_n: range n0={n0!r}, ni={ni!r} is outside 0..{live.shape[0]}")
            if x is not None and (not isinstance(x, np.ndarray) or x.dtype != np.float32
                                  or x.shape != (ni, self._d)):
                raise ValueError(f"reconstruct_n: x must be a float32 array of shape ({ni}, {self._d}), got "
                                 f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
            out = (np.empty((0, self._d or 0), dtype=np.float32) if ni == 0
                   else self._stores[FULL].take(live[n0 : n0 + ni]))
        if x is None:
            return out
        x[...] = out
        return x

    def assign(self, x: np.ndarray, k: int, labels: np.ndarray | None = None) -> np.ndarray:
        """FAISS's ``assign``: only the ids of ``search(x, k)`` (written into ``labels`` when given)."""
        return self.search(x, k, I=labels)[1]

    def range_search(self, x: np.ndarray, thresh: float, *,
                     params: faiss.SearchParameters | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """FAISS's ``(lims, D, I)``: per query, every id whose score passes ``thresh`` (inner product above,
        squared L2 below), unsorted. FAISS backend, engines with a range search (Flat, IVF, HNSW, SQ...).

        The engine finds the ids that pass at the smallest dim; with ``rerank`` ``"cascade"``/``"full"`` they
        are rescored at each larger stage and kept where the final score passes too (the returned ``D``).
        A vector that passes at full dim but not at the compressed dim is missed, as in a search.
        """
        where = "range_search"
        d = self._require_trained(where)
        X = check_vectors(x, where, d)
        if isinstance(thresh, bool) or not isinstance(thresh, (int, float, np.number)) or not np.isfinite(thresh):
            raise ValueError(f"{where}: thresh must be a finite number, got {thresh!r}")
        if self.backend != "faiss":
            raise ValueError(f"{where}: needs backend='faiss'; this index uses {self.backend!r}")
        sel, overrides, _ = self._search_params(params, where)
        nq = X.shape[0]
        with self._lock.read():
            if nq == 0 or self.ntotal == 0:
                return np.zeros(nq + 1, np.uint64), np.empty(0, np.float32), np.empty(0, np.int64)
            inv = inv_row_norms(X)
            first = self.dims[0]
            slot_sel = None if sel is None else self._slot_selector(sel)
            lims, D, S = self.backends[first].range_search(self._project(first, X, inv), thresh, slot_sel,
                                                           **overrides)
            lims = lims.astype(np.int64)
            qrow = np.repeat(np.arange(nq), np.diff(lims))
            for stage in self._stages(0, self.rerank)[1:]:
                store = self._stores[stage]
                Q = self._project(stage, X, inv)[qrow]
                rows = store.take(S)
                D = (np.einsum("nd,nd->n", rows, Q) if self.metric == "ip"
                     else np.einsum("nd,nd->n", rows - Q, rows - Q)).astype(np.float32)
            keep = D > thresh if self.metric == "ip" else D < thresh
            counts = np.bincount(qrow[keep], minlength=nq)
            return (np.concatenate([[0], np.cumsum(counts)]).astype(np.uint64), np.ascontiguousarray(D[keep]),
                    self._ids.to_external(S[keep]))

    def to_faiss(self, k: int = 10) -> faiss.Index:
        """A genuine ``faiss.Index`` with the same vectors, engine and rerank as this index (FAISS backend),
        independent of it: ``faiss.write_index`` saves it, a process with only faiss loads and serves it.

        Built as ``smec_index.index_factory`` builds (see docs/faiss.md): the smallest dim's engine copied, one
        ``IndexRefine`` per rescoring stage over the stored rows, ``k_factor`` set so that a search for ``k``
        reranks the same candidates as ``search``; ids from ``add_with_ids`` (or renumbered ones) through an
        ``IndexIDMap2``. An HNSW engine with removed vectors is rebuilt from the live ones (a new graph).
        """
        from .factory import from_compressed

        self._require_trained("to_faiss")
        if self.backend != "faiss":
            raise ValueError(f"to_faiss: needs backend='faiss'; this index uses {self.backend!r}")
        if not is_int(k) or k <= 0:
            raise ValueError(f"to_faiss: k must be a positive int, got {k!r}")
        with self._lock.read():
            return from_compressed(self, int(k))

    # ----------------------------------------------------------------- attributes and pickling
    _PASS_THROUGH = ("nprobe", "efSearch")

    def __setattr__(self, name: str, value: Any) -> None:
        """Refuse attributes this index does not have (FAISS code setting one would silently do nothing);
        ``nprobe`` and ``efSearch`` go to every FAISS engine (``efSearch`` also to hnswlib's ``ef``)."""
        if name in self._PASS_THROUGH:
            self._set_engine_param(name, value)
        elif (name.startswith("_") or "_frozen" not in self.__dict__ or name in self.__dict__
              or isinstance(getattr(type(self), name, None), property)):
            object.__setattr__(self, name, value)
        else:
            raise AttributeError(f"CompressedIndex has no attribute {name!r}; search-time engine parameters are "
                                 f"{self._PASS_THROUGH} (or pass params= to search)")

    def __getattr__(self, name: str) -> Any:
        if name in CompressedIndex._PASS_THROUGH and "backends" in self.__dict__:
            values = {b.params.get(name) if hasattr(b, "params") else getattr(b, "ef", None) if name == "efSearch"
                      else None for b in self.backends.values()}
            if len(values) == 1 and None not in values:
                return values.pop()
        raise AttributeError(f"CompressedIndex has no attribute {name!r}")

    def _set_engine_param(self, name: str, value: Any) -> None:
        if not is_int(value) or value <= 0:
            raise ValueError(f"CompressedIndex.{name} must be a positive int, got {value!r}")
        with self._lock.write():
            for dim, b in self.backends.items():
                if hasattr(b, "set_params"):
                    b.set_params(**{name: int(value)})
                elif name == "efSearch" and hasattr(b, "set_ef"):
                    b.set_ef(int(value))
                else:
                    raise ValueError(f"CompressedIndex.{name}: the {self.backend} engine at dim {dim} has no {name}")

    def __reduce__(self) -> tuple[Any, tuple[dict[str, bytes], str | None]]:
        """Pickled through the save format (the files of ``save``, checksums verified on unpickling); the
        copy holds its full store in memory ("mmap"/"disk" stores need a file of their own: ``save``)."""
        import tempfile

        with tempfile.TemporaryDirectory(prefix="smec-pickle-") as tmp:
            self.save(Path(tmp) / "index")
            root = Path(tmp) / "index"
            files = {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        return _unpickle, (files, self.full_store)

    def _require_full_store(self, where: str) -> None:
        if self.full_store is None:
            raise IndexStateError(f"{where}: this index keeps no full-dim vectors (full_store=None)")

    def reset(self) -> None:
        """Remove every vector; training (compressor, IVF/PQ) is kept, as in FAISS."""
        with self._lock.write():
            for b in self.backends.values():
                b.reset()
            self._ids.reset()
            self._stores = {}
            self._broken = None  # nothing is left of what a failed add spoiled

    def merge_from(self, other: "CompressedIndex", add_id: int = 0) -> None:
        """Move ``other``'s vectors into this index (renumbered like ``add``, or under their ids), then empty it.

        One step under the write locks of both indexes (taken in a fixed order, so two indexes merging into
        each other cannot deadlock): nothing added to ``other`` meanwhile is lost, and a failure leaves both
        as they were. Needs ``other`` to keep raw full vectors (they are re-projected with this index's
        compressor).
        """
        if not isinstance(other, CompressedIndex):
            raise TypeError(f"merge_from: other must be a CompressedIndex, got {type(other).__name__}")
        if other is self:
            raise ValueError("merge_from: other is this index")
        if add_id != 0:
            raise ValueError(f"merge_from: add_id={add_id!r} is not supported; only 0")
        if other.d != self.d:
            raise ValueError(f"merge_from: other has d={other.d}; expected {self.d}")
        if other.full_store is None or other.smec.supervised_:
            raise IndexStateError("merge_from: other keeps no raw full-dim vectors (full_store=None or a "
                                  "supervised compressor), so its vectors cannot be re-added")
        first, second = sorted((self, other), key=id)
        with first._lock.write(), second._lock.write():
            live = other._ids.live_slots()
            if live.shape[0] == 0:
                return
            X = other._stores[FULL].take(live)
            ids = other._ids.slot_ids[live] if other._ids.mode == EXPLICIT else None
            self._add(X, ids, "merge_from", held=True)
            for b in other.backends.values():
                b.reset()
            other._ids.reset()
            other._stores = {}

    # ----------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Write the whole index to directory ``path`` atomically (a crash leaves the old save intact).

        ``path`` may be new, an empty directory or an earlier save holding only the files its manifest lists
        (replaced as a whole); any other existing directory is refused with a ValueError naming what is in the
        way. An index left inconsistent by a failed add that could not be undone is refused
        (``IndexStateError``) before the path is touched; a disk that fills is raised as ``StorageFullError``.
        Runs concurrently with searches; waits for adds and removals. The compressor is saved with only the
        stages the index serves (``SMEC.subset``); save the compressor itself to keep its other dims.
        """
        self._require_trained("save")
        with self._lock.read():
            self._check_consistent("save")
            self._write(path)

    def _check_consistent(self, where: str) -> None:
        """IndexStateError unless every part holds what the id map says (read lock held)."""
        if self._broken is not None:
            raise IndexStateError(f"{where}: {self._broken}")
        counts = {f"backend-{dim}": b.ntotal for dim, b in self.backends.items() if b.ntotal != self.ntotal}
        rows = {f"store-{key}": st.n for key, st in self._stores.items() if st.n != self._ids.n_slots}
        if counts or rows or (self._ids.n_slots and sorted(map(str, self._stores)) != sorted(map(str, self._store_keys()))):
            raise IndexStateError(f"{where}: the index is inconsistent ({self.ntotal} ids in {self._ids.n_slots} "
                                  f"slots; backends {counts}, stores {rows or sorted(map(str, self._stores))}); "
                                  f"refused, so that no good save is replaced by it")

    def _write(self, path: str | Path) -> None:
        with atomic_directory(path, saved_files, "a saved CompressedIndex") as tmp:
            self.smec.subset(self.dims).save(tmp / "smec")  # only the stages this index serves
            np.save(tmp / "ids.npy", self._ids.slot_ids)
            for dim, b in self.backends.items():
                (tmp / f"backend-{dim}").mkdir()
                b.save(tmp / f"backend-{dim}")
            for key, store in self._stores.items():
                store.save(tmp / f"store-{key}.npy")
            write_manifest(tmp, {
                "d": self._d, "dims": list(self.dims), "backend": self.backend, "metric": self.metric,
                "rerank": self.rerank, "candidates": list(self.candidates), "full_store": self.full_store,
                "store_dtype": self.store_dtype, "full_vectors": "adapted" if self.smec.supervised_ else "raw",
                "id_mode": self._ids.mode, "ntotal": self.ntotal, "n_slots": self._ids.n_slots, "code": self.code,
                "stores": sorted(str(k) for k in self._stores),
                "backend_options": {str(dim): b.options() for dim, b in self.backends.items()},
            })

    @classmethod
    def load(cls, path: str | Path, *, full_store: str | None = None, verify: bool = True) -> "CompressedIndex":
        """Read a directory written by ``save``, after checking its manifest and every file's checksum.

        ``full_store`` ("memory" or "mmap") overrides how the saved stores are held; ``verify=False``
        skips the sha256 pass over the data files (their sizes are still checked).
        """
        path = Path(path)
        m = _check_settings(read_manifest(path, verify), path)
        kind = m["full_store"] if full_store is None else full_store
        if kind not in STORE_KINDS and not (kind is None and m["full_store"] is None):
            raise ValueError(f"read_index: full_store must be one of {STORE_KINDS}, got {full_store!r}")
        if m["full_store"] is None and full_store is not None:
            raise ValueError(f"read_index: {path} was saved without a full store; full_store={full_store!r} "
                             f"cannot add one")
        smec = SMEC.load(path / "smec")
        dims = tuple(m["dims"])
        if smec.input_dim_ != m["d"] or not set(dims) <= set(smec.dims_) | {smec.input_dim_}:
            raise ValueError(f"read_index: the saved compressor (D={smec.input_dim_}, dims={smec.dims_}) does not "
                             f"match the manifest (d={m['d']}, dims={dims})")
        if m.get("full_vectors") != ("adapted" if smec.supervised_ else "raw"):
            raise ValueError(f"read_index: the manifest says full_vectors={m.get('full_vectors')!r}, but the saved "
                             f"compressor is {'' if smec.supervised_ else 'not '}supervised (its full store holds "
                             f"{'adapted' if smec.supervised_ else 'raw'} vectors)")
        bcls = backend_class(m["backend"])
        backends = {dim: bcls.load(path / f"backend-{dim}") for dim in dims}
        obj = cls.__new__(cls)
        obj._configure(smec, dims, m["backend"], m["metric"], m["rerank"], tuple(m["candidates"]), kind,
                       m["store_dtype"], backends, m.get("code"))
        slot_ids = load_npy(path / "ids.npy", "read_index", "the id map")
        if slot_ids.dtype != np.int64 or slot_ids.shape != (m["n_slots"],):
            raise ValueError(f"read_index: {path / 'ids.npy'} holds {slot_ids.dtype} {slot_ids.shape}; expected "
                             f"int64 ({m['n_slots']},)")
        _check_ids_file(slot_ids, m, path)
        obj._ids = IdMap.from_slot_ids(m["id_mode"], slot_ids)
        for key in m["stores"]:
            skey: int | str = key if key == FULL else int(key)
            sdim = m["d"] if key == FULL else skey
            obj._stores[skey] = VectorStore.load(path / f"store-{key}.npy", sdim, m["store_dtype"], kind or "memory",
                                                 m["n_slots"])
        counts = {"ids": obj._ids.ntotal, **{f"backend-{dim}": b.ntotal for dim, b in backends.items()}}
        if obj._ids.n_slots != m["n_slots"] or any(c != m["ntotal"] for c in counts.values()):
            raise ValueError(f"read_index: {path} is inconsistent: the manifest says ntotal={m['ntotal']}, "
                             f"n_slots={m['n_slots']}; the files hold {counts}, n_slots={obj._ids.n_slots}")
        obj._frozen = True
        return obj


def _unpickle(files: dict[str, bytes], full_store: str | None) -> CompressedIndex:
    """Rebuild a pickled CompressedIndex from the files of its save (see ``CompressedIndex.__reduce__``)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="smec-pickle-") as tmp:
        root = Path(tmp) / "index"
        for name, data in files.items():
            target = (root / name).resolve()
            if root.resolve() not in target.parents:
                raise ValueError(f"pickle: file name {name!r} leaves the index directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return CompressedIndex.load(root, full_store=None if full_store is None else "memory")


def _check_settings(m: dict[str, Any], path: Path) -> dict[str, Any]:
    """The manifest's settings, each checked for type and range (a file name is built from ``dims`` and
    ``stores``, so nothing unchecked reaches a path); ValueError naming the first bad one."""
    def bad(key: str, expected: str) -> ValueError:
        return ValueError(f"read_index: {path / 'manifest.json'} has {key}={m.get(key)!r}; expected {expected}")

    def nonneg(v: Any) -> bool:
        return is_int(v) and v >= 0

    if not (is_int(m.get("d")) and m["d"] > 0):
        raise bad("d", "a positive int")
    dims = m.get("dims")
    if not (isinstance(dims, list) and dims and all(is_int(x) and 0 < x <= m["d"] for x in dims)
            and dims == sorted(set(dims)) and (dims[-1] < m["d"] or dims == [m["d"]])):
        raise bad("dims", f"increasing ints in 1..{m['d'] - 1}, or [{m['d']}] (the full vector coded)")
    checks = {"backend": (lambda v: isinstance(v, str) and v in BACKENDS, f"one of {sorted(BACKENDS)}"),
              "metric": (lambda v: v in METRICS, f"one of {METRICS}"),
              "rerank": (lambda v: v in RERANK, f"one of {RERANK}"),
              "candidates": (lambda v: isinstance(v, list) and len(v) == len(dims) and all(is_int(c) and c > 0 for c in v),
                             f"{len(dims)} positive ints"),
              "full_store": (lambda v: v is None or v in STORE_KINDS, f"one of {STORE_KINDS} or null"),
              "store_dtype": (lambda v: v in STORE_DTYPES, f"one of {STORE_DTYPES}"),
              "id_mode": (lambda v: v in (None, SEQUENTIAL, EXPLICIT), f"null, {SEQUENTIAL!r} or {EXPLICIT!r}"),
              "ntotal": (nonneg, "an int >= 0"), "n_slots": (nonneg, "an int >= 0"),
              "code": (lambda v: v is None or v in CODES, f"null or one of {sorted(CODES)}"),
              "stores": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)
                         and set(v) <= {FULL, *map(str, dims[1:])} and len(set(v)) == len(v),
                         f"names from {[FULL, *map(str, dims[1:])]}")}
    for key, (ok, expected) in checks.items():
        if not ok(m.get(key)):
            raise bad(key, expected)
    if m["ntotal"] > m["n_slots"]:
        raise bad("ntotal", f"at most n_slots={m['n_slots']}")
    if m["rerank"] == FULL and m["full_store"] is None:
        raise bad("rerank", "not 'full' with full_store=null")
    expected = sorted(map(str, dims[1:])) + ([FULL] if m["full_store"] is not None else []) if m["n_slots"] else []
    if sorted(m["stores"]) != sorted(expected):
        raise bad("stores", f"{expected} for these dims, full_store and n_slots")
    return m


def _check_ids_file(slot_ids: np.ndarray, m: dict[str, Any], path: Path) -> None:
    """The saved id of every slot agrees with the manifest's id mode and count: ids >= 0 or -1 (removed), live
    ids distinct, and with sequential ids exactly 0..ntotal-1 in slot order; no mode only for an empty map."""
    live = slot_ids[slot_ids >= 0]
    bad = None
    if slot_ids.size and slot_ids.min() < -1:
        bad = f"ids below -1 ({int(slot_ids.min())})"
    elif live.shape[0] != m["ntotal"]:
        bad = f"{live.shape[0]} live ids, the manifest says ntotal={m['ntotal']}"
    elif m["id_mode"] is None and m["n_slots"]:
        bad = f"id_mode=null with {m['n_slots']} slots"
    elif m["id_mode"] == SEQUENTIAL and not np.array_equal(live, np.arange(live.shape[0])):
        bad = "id_mode='sequential', but the live ids are not 0..ntotal-1 in order"
    elif np.unique(live).shape[0] != live.shape[0]:
        bad = "live ids that repeat"
    if bad is not None:
        raise ValueError(f"read_index: {path / 'ids.npy'} does not match the manifest: {bad}")


def write_index(index: "CompressedIndex | faiss.Index", path: str | Path) -> None:
    """Save a CompressedIndex (a directory) or a plain FAISS index (a file, via ``faiss.write_index``)."""
    if isinstance(index, CompressedIndex):
        index.save(path)
    elif isinstance(index, faiss.Index):
        faiss.write_index(index, str(path))
    else:
        raise TypeError(f"write_index: index must be a CompressedIndex or a faiss.Index, got {type(index).__name__}")


def read_index(path: str | Path, **kwargs: Any) -> "CompressedIndex | faiss.Index":
    """Load what ``write_index`` wrote: a CompressedIndex directory, or a FAISS index file."""
    p = Path(path)
    if p.is_file():
        if kwargs:
            raise TypeError(f"read_index: {sorted(kwargs)} only apply to a CompressedIndex directory")
        try:
            return faiss.read_index(str(p))
        except RuntimeError as e:
            raise ValueError(f"read_index: {p} is a file but not a FAISS index file (a saved CompressedIndex is a "
                             f"directory); FAISS says: {str(e).splitlines()[-1][:300]}") from None
    if (p / "string_ids.json").is_file() and not (p / "manifest.json").exists():
        raise ValueError(f"read_index: {p} holds an index with string ids (smec-index build --ids); load it with "
                         f"smec_index.index.string_ids.load(path), which returns (index, ids)")
    return CompressedIndex.load(p, **kwargs)
