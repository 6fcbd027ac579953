"""Binary backend: one bit per stage dimension, searched by Hamming distance (FAISS ``IndexBinaryFlat`` or
``IndexBinaryHNSW``).

A row's code is the sign of each coordinate of the stage output, optionally after an ITQ rotation
(``itq=True``: FAISS ``ITQTransform``, centring then an orthogonal rotation fitted on the stage outputs
given to ``train``, so each bit splits the data evenly). Queries are binarised the same way. A code is
``dim / 8`` bytes: 32x fewer than float32. The ranking is coarse, so this backend is meant to be followed
by the exact rerank from the full store.

``search`` reports FAISS-shaped scores: for ``"ip"`` the SimHash estimate of the cosine,
``cos(pi * hamming / dim)`` (larger is better); for ``"l2"`` the squared distance of unit vectors at
that cosine, ``2 - 2 cos`` (smaller is better). Both are monotone in the Hamming distance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np

from .base import METRICS
from .faiss import RowLabels, faiss_threads, serialized_size

__all__ = ["BinaryBackend", "binarize"]

_CONFIG = "binary.json"
_INDEX = "index.faissb"
_ITQ = "itq.faissvt"
_DELETED = "deleted.npy"


def binarize(X: np.ndarray) -> np.ndarray:
    """Sign bits of float rows (x > 0 -> 1), packed little-endian: ``(n, dim / 8)`` uint8, FAISS's layout."""
    return np.packbits(X > 0, axis=1, bitorder="little")


class BinaryBackend(RowLabels):
    """Sign codes of the stage output; labels are the rows (slots come in order, never reused) until a removal
    from a flat index, which wraps it in ``IndexBinaryIDMap`` first (an 8-byte label a vector from then on).

    Options: ``itq`` (fit an ITQ rotation in ``train``; the backend then needs training),
    ``hnsw_m`` (None: exhaustive ``IndexBinaryFlat``; an int: ``IndexBinaryHNSW`` with that M) and
    ``ef_search`` (HNSW only, at least k at search time). HNSW cannot remove: removed labels become
    tombstones skipped at search time, as in the FAISS backend.
    """

    name: ClassVar[str] = "faiss-binary"
    _WRAPPER: ClassVar[type] = faiss.IndexBinaryIDMap

    def __init__(self, dim: int, metric: str = "ip", itq: bool = False, hnsw_m: int | None = None,
                 ef_search: int = 64) -> None:
        where = "faiss-binary backend"
        if metric not in METRICS:
            raise ValueError(f"{where}: metric must be one of {METRICS}, got {metric!r}")
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim <= 0 or dim % 8:
            raise ValueError(f"{where}: dim must be a positive multiple of 8 (whole bytes of bits), got {dim!r}")
        if not isinstance(itq, bool):
            raise TypeError(f"{where}: itq must be a bool, got {type(itq).__name__}")
        for name, v in (("hnsw_m", hnsw_m), ("ef_search", ef_search)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2):
                raise ValueError(f"{where}: {name} must be an int >= 2{' or None' if name == 'hnsw_m' else ''}, "
                                 f"got {v!r}")
        inner = faiss.IndexBinaryFlat(int(dim)) if hnsw_m is None else faiss.IndexBinaryHNSW(int(dim), int(hnsw_m))
        itq_t = faiss.ITQTransform(int(dim), int(dim), False) if itq else None
        self._setup(inner, itq_t, int(dim), metric, hnsw_m, int(ef_search), np.empty(0, dtype=np.int64))

    def _setup(self, index: Any, itq: Any, dim: int, metric: str, hnsw_m: int | None, ef_search: int,
               deleted: np.ndarray) -> None:
        self.index, self._itq, self.dim, self.metric = index, itq, dim, metric
        self.hnsw_m, self.ef_search = hnsw_m, ef_search
        self._rows_are_labels = not isinstance(index, faiss.IndexBinaryIDMap)
        self._set_tombstones(deleted)

    # ----------------------------------------------------------------- protocol
    @property
    def is_trained(self) -> bool:
        return self._itq is None or bool(self._itq.is_trained)

    @property
    def min_train_rows(self) -> int:
        """ITQ fits a dim x dim rotation: at least dim rows; plain sign codes need no training."""
        return 0 if self.is_trained else self.dim

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - int(self._deleted.size)

    @property
    def nbytes(self) -> int:
        """Serialised size of the binary index (codes, id map, graph) plus the ITQ rotation and tombstones."""
        itq = 0 if self._itq is None else 4 * self.dim * (self.dim + 1)
        return serialized_size(self.index, faiss.write_index_binary) + itq + int(
            self._deleted.nbytes + self._deleted_bits.nbytes)

    def options(self) -> dict[str, Any]:
        return {"itq": self._itq is not None, "hnsw_m": self.hnsw_m, "ef_search": self.ef_search}

    def codes(self, X: np.ndarray) -> np.ndarray:
        """The packed sign codes of float rows (after the ITQ rotation when there is one)."""
        if self._itq is not None:
            X = self._itq.apply(np.ascontiguousarray(X, dtype=np.float32))
        return binarize(X)

    def train(self, X: np.ndarray) -> None:
        if not self.is_trained:
            with faiss_threads(X.shape[0]):
                self._itq.train(np.ascontiguousarray(X, dtype=np.float32))

    def add(self, ids: np.ndarray, X: np.ndarray) -> None:
        if self._stores_labels(ids):
            self.index.add_with_ids(self.codes(X), np.ascontiguousarray(ids, dtype=np.int64))
        else:
            self.index.add(self.codes(X))

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        params = self._search_params(k)
        with faiss_threads(Q.shape[0]):
            H, I = self.index.search(self.codes(Q), k, params=params)
        cos = np.cos(np.pi * H.astype(np.float32) / self.dim).astype(np.float32)
        D = cos if self.metric == "ip" else (2.0 - 2.0 * cos).astype(np.float32)
        # FAISS pads missing results with the worst int distance; give them the float padding instead
        D[I < 0] = np.float32(-np.finfo(np.float32).max if self.metric == "ip" else np.finfo(np.float32).max)
        return D, I

    @property
    def _native_remove(self) -> bool:
        """A flat binary index deletes; a binary HNSW graph keeps tombstones."""
        return self.hnsw_m is None

    def _search_params(self, k: int) -> Any:
        """HNSW's ef (at least k) and, when labels were removed, a selector that skips them; made per call."""
        if self.hnsw_m is None:
            if not self._deleted.size:
                return None
            params = faiss.SearchParameters()
        else:
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.ef_search, k)
        if self._deleted.size:
            bits = self._deleted_bits
            params.sel = faiss.IDSelectorNot(faiss.IDSelectorBitmap(bits.shape[0], faiss.swig_ptr(bits)))
        return params

    # ----------------------------------------------------------------- persistence
    def save(self, path: Path) -> None:
        faiss.write_index_binary(self.index, str(Path(path) / _INDEX))
        if self._itq is not None:
            faiss.write_VectorTransform(self._itq, str(Path(path) / _ITQ))
        np.save(Path(path) / _DELETED, self._deleted)
        (Path(path) / _CONFIG).write_text(json.dumps({"dim": self.dim, "metric": self.metric, **self.options()},
                                                     indent=2))

    @classmethod
    def load(cls, path: Path) -> "BinaryBackend":
        path = Path(path)
        cfg = json.loads((path / _CONFIG).read_text())
        index = faiss.read_index_binary(str(path / _INDEX))
        inner = index.index if isinstance(index, faiss.IndexBinaryIDMap) else index
        kind = faiss.IndexBinaryFlat if cfg["hnsw_m"] is None else faiss.IndexBinaryHNSW
        if index.d != cfg["dim"] or not isinstance(faiss.downcast_IndexBinary(inner), kind):
            raise ValueError(f"read_index: {path / _INDEX} is not an {kind.__name__} of {cfg['dim']} bits")
        itq = None
        if cfg["itq"]:
            itq = faiss.read_VectorTransform(str(path / _ITQ))
            if not isinstance(itq, faiss.ITQTransform) or itq.d_in != cfg["dim"] or itq.d_out != cfg["dim"]:
                raise ValueError(f"read_index: {path / _ITQ} is not a {cfg['dim']}-dim ITQTransform")
        obj = cls.__new__(cls)
        obj._setup(index, itq, int(cfg["dim"]), cfg["metric"], cfg["hnsw_m"], int(cfg["ef_search"]),
                   np.load(path / _DELETED, allow_pickle=False).astype(np.int64))
        return obj
