"""FAISS backend: any ``index_factory`` spec ("Flat", "HNSW32", "IVF1024,Flat", "IVF256,PQ16", "SQ8", ...).

The facade's slots are the FAISS labels. IVF indexes store labels natively (``add_with_ids``). Every other
index starts bare: slots are handed out in order and never reused, so a row's number is its slot and FAISS
needs no label (8 bytes a vector saved). The first removal from an engine that removes natively (Flat, PQ, SQ,
RaBitQ) wraps it in ``IndexIDMap`` first (labels = the rows then), which keeps labels stable when FAISS
compacts storage. ``IndexIDMap`` must not wrap an IVF: IVF removal does not renumber, IDMap assumes it does.
Indexes that cannot remove (HNSW, NSG) keep removed labels as tombstones and exclude them at search time
with an ``IDSelector``, as hnswlib's ``mark_deleted`` does.

Two process-wide FAISS settings are handled around each call (see ``shared/notes/faiss-speed.md``):
a single query runs on one OpenMP thread (FAISS splits one query's scan across threads and gets slower),
and batches lower ``distance_compute_blas_threshold`` so small-dim batches take the sgemm path.
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import faiss
import numpy as np

from ..._npy import load_npy
from .base import METRIC_TYPE

__all__ = ["FaissBackend", "faiss_threads", "with_ids"]

_CONFIG = "faiss.json"
_INDEX = "index.faiss"
_DELETED = "deleted.npy"

# Batches of at least this many query coordinates (nq * d) take FAISS's sgemm path; FAISS's default is
# 128,000, which sends a batch of 1000 queries at d=64 down the query-by-query scan.
BATCH_BLAS_THRESHOLD = 4096

_blas_lock = threading.Lock()
_blas_users = 0
_blas_saved = 0


@contextlib.contextmanager
def faiss_threads(nq: int) -> Iterator[None]:
    """One OpenMP thread for a single query; for a batch, the lowered BLAS threshold (restored afterwards).

    ``omp_set_num_threads`` is per calling thread; the BLAS threshold is a global, so concurrent batches
    share one lowered value, and the original comes back when the last of them finishes.
    """
    global _blas_users, _blas_saved
    if nq == 1:
        prev = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(prev)
        return
    with _blas_lock:
        if _blas_users == 0:
            _blas_saved = faiss.cvar.distance_compute_blas_threshold
            faiss.cvar.distance_compute_blas_threshold = BATCH_BLAS_THRESHOLD
        _blas_users += 1
    try:
        yield
    finally:
        with _blas_lock:
            _blas_users -= 1
            if _blas_users == 0:
                faiss.cvar.distance_compute_blas_threshold = _blas_saved


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__


def _min_train_rows(index: faiss.Index) -> int:
    """Training rows FAISS needs for this index: one per IVF list, 2**nbits per PQ or additive-quantizer
    codebook, else 1."""
    if index.is_trained:
        return 0
    need = 1
    parts = [faiss.downcast_index(index)]
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        need = max(need, int(ivf.nlist))
        parts.append(faiss.downcast_index(ivf))
    for part in parts:
        pq = getattr(part, "pq", None)
        if pq is not None:
            need = max(need, int(pq.ksub))
        aq = getattr(part, "aq", None)
        if aq is not None:
            need = max(need, 2 ** int(faiss.vector_to_array(aq.nbits).max()))
    return need


# rows an additive quantizer (``RQ``) trains on: FAISS's k-means samples 256 rows a centroid by itself, but the
# residual quantizer also beam-encodes every training row at each of its codebooks (64k x 112 at 28 codebooks:
# about 100 s on one core), so it trains on as many rows as that k-means would keep (256 x 256)
AQ_TRAIN_ROWS = 65_536


def _training_rows(index: faiss.Index, X: np.ndarray) -> np.ndarray:
    """``X``, or for an additive quantizer (``index``: the backend's ``_inner``, already downcast) a seeded sample
    of ``AQ_TRAIN_ROWS`` of its rows."""
    if getattr(index, "aq", None) is None or X.shape[0] <= AQ_TRAIN_ROWS:
        return X
    rows = np.sort(np.random.default_rng(0).choice(X.shape[0], AQ_TRAIN_ROWS, replace=False))
    return np.ascontiguousarray(X[rows])


def _can_remove(index: faiss.Index) -> bool:
    """Whether FAISS removes natively from this index; the probe removes label -1, which no slot has."""
    try:
        index.remove_ids(np.array([-1], dtype=np.int64))
    except RuntimeError:
        return False
    return True


def serialized_size(index: Any, write: Callable[[Any, Any], None] = faiss.write_index) -> int:
    """The bytes ``write`` (``faiss.write_index`` or ``faiss.write_index_binary``) produces for ``index``,
    counted as they stream out, without a copy."""
    total = 0

    def count(chunk: bytes) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    writer = faiss.PyCallbackIOWriter(count)
    write(index, writer)
    del writer
    return total


class Tombstones:
    """Removal for engines that cannot delete (graphs): removed labels are kept as tombstones (``_deleted``, sorted,
    and ``_deleted_bits``, the bitmap searches skip them with) while ``_native_remove`` is False."""

    _native_remove: bool
    _deleted: np.ndarray
    _deleted_bits: np.ndarray
    index: Any

    def _set_tombstones(self, deleted: np.ndarray) -> None:
        self._deleted = deleted
        self._deleted_bits = _bitmap(deleted)

    def remove(self, ids: np.ndarray) -> int:
        if self._native_remove:
            return int(self.index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))
        self._set_tombstones(np.union1d(self._deleted, ids).astype(np.int64))
        return int(ids.shape[0])

    def reset(self) -> None:
        self.index.reset()
        self._set_tombstones(np.empty(0, dtype=np.int64))


class RowLabels(Tombstones):
    """Labels that are the rows while they can be: slots are handed out in order and never reused, so until a
    native removal renumbers rows, row i holds slot i and FAISS keeps no label (8 bytes a vector). ``_WRAPPER``
    (``IndexIDMap``, ``IndexBinaryIDMap``) takes the labels over before such a removal, or when an add brings
    labels that are not the next rows. Subclasses set ``_rows_are_labels`` when they set up their index."""

    _WRAPPER: ClassVar[type]
    _rows_are_labels: bool

    def _label(self) -> None:
        """Wrap the bare index in ``_WRAPPER`` with its rows as labels."""
        self.index = with_ids(self.index, np.arange(self.index.ntotal, dtype=np.int64), self._WRAPPER)
        self._rows_are_labels = False

    def _stores_labels(self, ids: np.ndarray) -> bool:
        """Whether adding ``ids`` hands FAISS its labels (a bare index is wrapped first when they are not its
        next rows)."""
        if self._rows_are_labels and not np.array_equal(ids, np.arange(self.index.ntotal, self.index.ntotal + len(ids))):
            self._label()
        return not self._rows_are_labels

    def remove(self, ids: np.ndarray) -> int:
        if self._native_remove and self._rows_are_labels:
            self._label()  # FAISS compacts the rows on removal: from now on they need their labels
        return super().remove(ids)


class FaissBackend(RowLabels):
    """A FAISS index built by ``index_factory(dim, spec, metric)``, labels = the facade's slots.

    ``params`` are FAISS search-time parameters set through ``ParameterSpace`` (e.g. ``{"efSearch": 64}``,
    ``{"nprobe": 16}``); they are saved and re-applied on load.
    """

    name: ClassVar[str] = "faiss"
    _WRAPPER: ClassVar[type] = faiss.IndexIDMap

    def __init__(self, dim: int, metric: str = "ip", spec: str = "Flat", params: dict[str, Any] | None = None) -> None:
        if not isinstance(spec, str) or not spec.strip():
            raise TypeError(f"faiss backend: spec must be an index_factory string such as 'HNSW32', got {spec!r}")
        if "IDMap" in spec:
            raise ValueError(f"faiss backend: spec {spec!r} contains IDMap; ids are handled by CompressedIndex, "
                             f"give the spec without it")
        try:
            inner = faiss.index_factory(int(dim), spec, METRIC_TYPE[metric])
        except RuntimeError as e:
            raise ValueError(f"faiss backend: index_factory({dim}, {spec!r}) failed: {_first_line(e)}") from None
        self._setup(inner, int(dim), metric, spec, dict(params or {}), np.empty(0, dtype=np.int64))

    def _setup(self, index: faiss.Index, dim: int, metric: str, spec: str, params: dict, deleted: np.ndarray) -> None:
        self.index, self.dim, self.metric, self.spec = index, dim, metric, spec
        # a bare non-IVF index: row i is slot i (labels implicit) until a removal wraps it in IndexIDMap
        self._rows_are_labels = not isinstance(index, faiss.IndexIDMap) and faiss.try_extract_index_ivf(index) is None
        self.params: dict[str, Any] = {}
        self.set_params(**params)
        self._native_remove = _can_remove(index)
        self._set_tombstones(deleted)

    def set_params(self, **params: Any) -> None:
        """Set FAISS search-time parameters (``efSearch``, ``nprobe``, ...) by ``ParameterSpace`` name."""
        space = faiss.ParameterSpace()
        for key, value in params.items():
            try:
                if key == "qb":  # RaBitQ's query bits: a field, not a ParameterSpace name
                    _set_query_bits(self._inner, value)
                else:
                    space.set_index_parameter(self.index, key, value)
            except RuntimeError as e:
                raise ValueError(f"faiss backend: parameter {key}={value!r} does not apply to spec "
                                 f"{self.spec!r}: {_first_line(e)}") from None
            self.params[key] = value

    # ----------------------------------------------------------------- protocol
    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    @property
    def _inner(self) -> faiss.Index:
        """The factory index (inside the IDMap wrapper and a pre-transform such as ``RR``, if any); valid while
        ``self.index`` lives."""
        index = faiss.downcast_index(self.index.index) if isinstance(self.index, faiss.IndexIDMap) else self.index
        return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexPreTransform) else index

    @property
    def min_train_rows(self) -> int:
        return _min_train_rows(self._inner)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - int(self._deleted.size)

    @property
    def nbytes(self) -> int:
        """Size of FAISS's serialised index (its codes, graph and id map), counted without a copy."""
        return serialized_size(self.index) + int(self._deleted.nbytes + self._deleted_bits.nbytes)

    def options(self) -> dict[str, Any]:
        return {"spec": self.spec, "params": dict(self.params)}

    def train(self, X: np.ndarray) -> None:
        if not self.index.is_trained:
            with faiss_threads(X.shape[0]):
                try:
                    self.index.train(_training_rows(self._inner, X))
                except RuntimeError as e:  # e.g. a product quantizer's 256 centroids from fewer rows
                    raise ValueError(f"faiss backend: training {self.spec!r} on {X.shape[0]} rows failed: "
                                     f"{_first_line(e)}") from None

    def add(self, ids: np.ndarray, X: np.ndarray) -> None:
        labelled = self._stores_labels(ids)
        with faiss_threads(X.shape[0]):
            if labelled:
                self.index.add_with_ids(X, ids)
            else:
                self.index.add(X)

    def search(self, Q: np.ndarray, k: int, sel: faiss.IDSelector | None = None,
               **overrides: Any) -> tuple[np.ndarray, np.ndarray]:
        """``sel`` keeps only labels it accepts; ``overrides`` (``efSearch``, ``nprobe``) apply to this call only."""
        params = self._search_params(sel, overrides)
        with faiss_threads(Q.shape[0]):
            D, I = self.index.search(Q, k, params=params)
        return D, I

    def range_search(self, Q: np.ndarray, radius: float, sel: faiss.IDSelector | None = None,
                     **overrides: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """FAISS's ``(lims, D, I)``: every label within ``radius`` (above it for inner product) of each query."""
        params = self._search_params(sel, overrides)
        with faiss_threads(Q.shape[0]):
            try:
                return self.index.range_search(Q, float(radius), params=params)
            except RuntimeError as e:
                raise ValueError(f"range_search: FAISS has no range search for spec {self.spec!r}: "
                                 f"{_first_line(e)}") from None

    def compact_copy(self) -> tuple[faiss.Index, np.ndarray]:
        """A copy of the engine without this backend's labels: rows 0..n-1 of the copy hold the live vectors,
        and ``slots[row]`` is the label each had (increasing). Tombstoned rows (HNSW, NSG) cannot be taken
        out of a graph: the copy is then rebuilt from the live rows' reconstructions (a new graph)."""
        if faiss.try_extract_index_ivf(self.index) is None:  # labels in an IndexIDMap, or the rows themselves
            inner = self._inner
            slots = (faiss.vector_to_array(self.index.id_map).astype(np.int64) if isinstance(self.index, faiss.IndexIDMap)
                     else np.arange(self.index.ntotal, dtype=np.int64))
            copy = faiss.deserialize_index(faiss.serialize_index(inner))
            if self._deleted.size:
                keep = np.isin(slots, self._deleted, invert=True)
                rows = inner.reconstruct_n(0, inner.ntotal)[keep]
                copy.reset()
                with faiss_threads(rows.shape[0]):
                    copy.add(rows)
                slots = slots[keep]
            if np.any(np.diff(slots) <= 0):
                raise AssertionError("FAISS IndexIDMap rows are out of insertion order")
            return copy, slots
        copy = faiss.deserialize_index(faiss.serialize_index(self.index))
        ivf = faiss.extract_index_ivf(copy)
        if ivf.direct_map.type != faiss.DirectMap.NoMap:
            ivf.make_direct_map(False)
        inv = ivf.invlists
        lists = [faiss.rev_swig_ptr(inv.get_ids(j), inv.list_size(j)).astype(np.int64) if inv.list_size(j)
                 else np.empty(0, np.int64) for j in range(ivf.nlist)]
        slots = np.sort(np.concatenate(lists))
        for j, labels in enumerate(lists):
            if labels.size:
                rows = np.ascontiguousarray(np.searchsorted(slots, labels), dtype=np.int64)
                inv.update_entries(j, 0, labels.size, faiss.swig_ptr(rows), inv.get_codes(j))
        return copy, slots

    def _search_params(self, sel: faiss.IDSelector | None, overrides: dict[str, Any]) -> faiss.SearchParameters | None:
        """Per-call search parameters: skip tombstoned labels, keep only ``sel``'s, and this call's
        ``efSearch`` / ``nprobe`` (None when there is nothing to say).

        Made fresh for every call: ``IndexIDMap.search`` swaps the selector inside the parameters while
        it runs, so sharing one object between threads would race.
        """
        unknown = sorted(set(overrides) - {"efSearch", "nprobe"})
        if unknown:
            raise ValueError(f"faiss backend: search parameters {unknown} are not supported; efSearch, nprobe")
        if not self._deleted.size and sel is None and not overrides:
            return None
        keep = []
        if self._deleted.size:
            bits = self._deleted_bits
            keep.append(faiss.IDSelectorNot(faiss.IDSelectorBitmap(bits.shape[0], faiss.swig_ptr(bits))))
        if sel is not None:
            keep.append(sel)
        # keyword construction: FAISS's wrapper then keeps the selectors alive as long as the parameters
        kwargs: dict[str, Any] = {"sel": keep[0] if len(keep) == 1 else faiss.IDSelectorAnd(*keep)} if keep else {}
        inner = self._inner
        if isinstance(inner, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(efSearch=int(overrides.pop("efSearch", inner.hnsw.efSearch)),
                                                **kwargs)
        elif isinstance(inner, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(nprobe=int(overrides.pop("nprobe", inner.nprobe)), **kwargs)
        else:
            params = faiss.SearchParameters(**kwargs)
        if overrides:
            raise ValueError(f"faiss backend: {sorted(overrides)} do not apply to spec {self.spec!r}")
        return params

    # ----------------------------------------------------------------- persistence
    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path / _INDEX))
        np.save(path / _DELETED, self._deleted)
        cfg = {"dim": self.dim, "metric": self.metric, "spec": self.spec, "params": self.params}
        (path / _CONFIG).write_text(json.dumps(cfg, indent=2))

    @classmethod
    def load(cls, path: Path) -> "FaissBackend":
        cfg = json.loads((path / _CONFIG).read_text())
        index = faiss.read_index(str(path / _INDEX))  # already the concrete type; downcasting a temporary would free it
        if index.d != cfg["dim"] or index.metric_type != METRIC_TYPE[cfg["metric"]]:
            raise ValueError(f"read_index: {path / _INDEX} is not an index of dim {cfg['dim']} and metric "
                             f"{cfg['metric']!r}")
        obj = cls.__new__(cls)
        obj._setup(index, int(cfg["dim"]), cfg["metric"], cfg["spec"], cfg["params"],
                   load_npy(path / _DELETED, "read_index", "the tombstones").astype(np.int64))
        return obj


def with_ids(index: faiss.Index, ids: np.ndarray, wrap: type = faiss.IndexIDMap2) -> faiss.IndexIDMap:
    """``wrap`` (``IndexIDMap2``, or ``IndexIDMap``: no reverse map) over an already filled index (FAISS's
    constructor wants it empty: its count is hidden for the construction and the map filled directly); the
    wrapper owns ``index`` from then on."""
    n = index.ntotal
    index.ntotal = 0
    wrapper = wrap(index)
    index.ntotal = n
    index.this.disown()
    wrapper.own_fields = True
    faiss.copy_array_to_vector(np.ascontiguousarray(ids, dtype=np.int64), wrapper.id_map)
    wrapper.ntotal = n
    if isinstance(wrapper, faiss.IndexIDMap2):
        wrapper.construct_rev_map()
    return wrapper


def _set_query_bits(index: faiss.Index, qb: Any) -> None:
    """Set ``qb`` (bits of the quantized query, 1..8) on a RaBitQ index, or on the RaBitQ index inside an IVF."""
    target = faiss.downcast_index(index)
    if isinstance(target, faiss.IndexPreTransform):
        target = faiss.downcast_index(target.index)
    if not hasattr(target, "qb"):
        raise RuntimeError("qb applies to RaBitQ indexes only")
    if isinstance(qb, bool) or not isinstance(qb, (int, np.integer)) or not 0 <= qb <= 8:
        raise RuntimeError(f"qb must be an int in 0..8 (0: float queries), got {qb!r}")
    target.qb = int(qb)


def _bitmap(labels: np.ndarray) -> np.ndarray:
    """Packed little-endian bitmap with the given labels set (the layout ``IDSelectorBitmap`` reads)."""
    if not labels.size:
        return np.zeros(1, dtype=np.uint8)
    bits = np.zeros(int(labels.max()) + 1, dtype=bool)
    bits[labels] = True
    return np.packbits(bits, bitorder="little")

