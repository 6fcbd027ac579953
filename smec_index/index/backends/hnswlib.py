"""hnswlib backend: an HNSW graph with M, ef_construction and ef; removal through ``mark_deleted``.

hnswlib reports inner-product distance as ``1 - <q, x>``; this backend turns it back into the inner
product so results read like FAISS's. It raises when it finds fewer than k live neighbours (k above the
live count, or a graph thinned by deletions); k is capped at the live count and a query the graph still
cannot fill is answered by an exact scan of the live vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import hnswlib
import numpy as np

from ..._npy import load_npy
from .base import pad_results

__all__ = ["HnswlibBackend"]

_CONFIG = "hnswlib.json"
_INDEX = "index.hnsw"
_DELETED = "deleted.npy"
# hnswlib keeps, besides the saved data, per element: a std::mutex (40 B), a level (4 B), a link-list
# pointer (8 B) and a label hash-map entry (about 32 B).
_RAM_PER_ELEMENT = 84


def _positive_int(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ValueError(f"hnswlib backend: {name} must be an int >= {least}, got {value!r}")
    return int(value)


class HnswlibBackend:
    """An ``hnswlib.Index`` (space "ip" or "l2") whose labels are the facade's slots."""

    name: ClassVar[str] = "hnswlib"

    def __init__(self, dim: int, metric: str = "ip", M: int = 32, ef_construction: int = 200, ef: int = 64) -> None:
        self._configure(dim, metric, M, ef_construction, ef)
        self.reset()

    def _configure(self, dim: int, metric: str, M: int, ef_construction: int, ef: int) -> None:
        self.M = _positive_int("M", M, 2)
        self.ef_construction = _positive_int("ef_construction", ef_construction, 1)
        self.ef = _positive_int("ef", ef, 1)
        self.dim, self.metric = int(dim), metric
        self.index = hnswlib.Index(space=metric, dim=self.dim)
        self._deleted = np.empty(0, dtype=np.int64)

    def set_ef(self, ef: int) -> None:
        """Set the search-time candidate list size (not while searches run)."""
        self.ef = _positive_int("ef", ef, 1)
        self.index.set_ef(self.ef)

    # ----------------------------------------------------------------- protocol
    is_trained: ClassVar[bool] = True
    min_train_rows: ClassVar[int] = 0

    @property
    def ntotal(self) -> int:
        return int(self.index.element_count) - int(self._deleted.size)

    @property
    def nbytes(self) -> int:
        """hnswlib's data and links (its saved size) plus its per-element bookkeeping (an estimate)."""
        return int(self.index.index_file_size()) + _RAM_PER_ELEMENT * int(self.index.element_count) + int(self._deleted.nbytes)

    def options(self) -> dict[str, Any]:
        return {"M": self.M, "ef_construction": self.ef_construction, "ef": self.ef}

    def train(self, X: np.ndarray) -> None:
        """hnswlib needs no training."""

    def add(self, ids: np.ndarray, X: np.ndarray) -> None:
        need = int(self.index.element_count) + X.shape[0]
        if need > self.index.max_elements:
            self.index.resize_index(max(need, int(self.index.max_elements * 1.5)))
        self.index.add_items(X, ids, num_threads=1 if X.shape[0] == 1 else -1)

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        kk = min(k, self.ntotal)
        if kk == 0:
            return pad_results(np.empty((Q.shape[0], 0), np.float32), np.empty((Q.shape[0], 0), np.int64), k, self.metric)
        try:
            labels, dist = self.index.knn_query(Q, k=kk, num_threads=1 if Q.shape[0] == 1 else -1)
        except RuntimeError:  # some query found fewer than kk live neighbours
            labels, dist = self._search_each(Q, kk)
        labels = labels.astype(np.int64)
        D = (1.0 - dist).astype(np.float32) if self.metric == "ip" else dist
        return pad_results(D, labels, k, self.metric)

    def _search_each(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.empty((Q.shape[0], k), dtype=np.uint64)
        dist = np.empty((Q.shape[0], k), dtype=np.float32)
        for i in range(Q.shape[0]):
            try:
                labels[i], dist[i] = self.index.knn_query(Q[i : i + 1], k=k, num_threads=1)
            except RuntimeError:
                labels[i], dist[i] = self._exact(Q[i], k)
        return labels, dist

    def _exact(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest live vectors by a full scan, in hnswlib's distance convention."""
        live = np.setdiff1d(np.asarray(self.index.get_ids_list(), dtype=np.int64), self._deleted)
        X = np.asarray(self.index.get_items(live, return_type="numpy"), dtype=np.float32)
        dist = 1.0 - X @ q if self.metric == "ip" else ((X - q) ** 2).sum(axis=1)
        order = np.argsort(dist, kind="stable")[:k]
        return live[order].astype(np.uint64), dist[order].astype(np.float32)

    def remove(self, ids: np.ndarray) -> int:
        for label in ids.tolist():
            self.index.mark_deleted(label)
        self._deleted = np.union1d(self._deleted, ids).astype(np.int64)
        return int(ids.shape[0])

    def reset(self) -> None:
        self._configure(self.dim, self.metric, self.M, self.ef_construction, self.ef)
        self.index.init_index(max_elements=0, M=self.M, ef_construction=self.ef_construction)
        self.index.set_ef(self.ef)

    # ----------------------------------------------------------------- persistence
    def save(self, path: Path) -> None:
        self.index.save_index(str(path / _INDEX))
        np.save(path / _DELETED, self._deleted)
        cfg = {"dim": self.dim, "metric": self.metric, **self.options(), "max_elements": int(self.index.max_elements)}
        (path / _CONFIG).write_text(json.dumps(cfg, indent=2))

    @classmethod
    def load(cls, path: Path) -> "HnswlibBackend":
        cfg = json.loads((path / _CONFIG).read_text())
        obj = cls.__new__(cls)
        obj._configure(cfg["dim"], cfg["metric"], cfg["M"], cfg["ef_construction"], cfg["ef"])
        # every element stores its float32 vector, and capacity grows 1.5x at a time: a larger declared capacity
        # is not this save's (a crafted one would allocate without bound), so it is capped from the file's size
        cap = int(1.5 * (path / _INDEX).stat().st_size // (4 * max(1, int(cfg["dim"])))) + 1
        obj.index.load_index(str(path / _INDEX), max_elements=min(int(cfg["max_elements"]), cap))
        obj.index.set_ef(obj.ef)
        obj._deleted = load_npy(path / _DELETED, "read_index", "the tombstones").astype(np.int64)
        return obj
