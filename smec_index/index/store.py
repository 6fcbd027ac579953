"""Rows of vectors by slot, for exact rescoring: in RAM or memory-mapped from disk, float32 or float16.

The full-dim store holds what the final rerank scores against; smaller stores hold the reduced vectors of
the intermediate cascade stages. A memory-mapped store lives in a private temporary file while it is
being written; a loaded one maps the saved ``.npy`` read-only and copies it to a private file only on the
first ``append``, so a saved index on disk is never modified by later adds.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path

import numpy as np

__all__ = ["VectorStore", "STORE_KINDS", "STORE_DTYPES"]

STORE_KINDS = ("memory", "mmap")
STORE_DTYPES = ("float32", "float16")
_COPY_ROWS = 65536


class VectorStore:
    """Rows of one dim addressed by slot (row i = slot i); ``take`` always returns float32."""

    def __init__(self, dim: int, dtype: str = "float32", kind: str = "memory") -> None:
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)
        self.kind = kind
        self._n = 0
        self._arr: np.ndarray = np.empty((0, self.dim), dtype=self.dtype)
        self._path: str | None = None  # the private file of a writable mmap store

    @property
    def n(self) -> int:
        return self._n

    @property
    def nbytes(self) -> int:
        """Bytes held in process memory (a memory-mapped store is paged in by the OS on demand: 0)."""
        return 0 if self.kind == "mmap" else int(self._arr.nbytes)

    def append(self, X: np.ndarray) -> None:
        """Store rows for the next ``len(X)`` slots (cast to the store's dtype)."""
        m = X.shape[0]
        if self._n + m > self._arr.shape[0] or (self.kind == "mmap" and self._path is None):
            self._grow(max(self._n + m, int(self._arr.shape[0] * 1.5)))
        self._arr[self._n : self._n + m] = X
        self._n += m

    def take(self, slots: np.ndarray) -> np.ndarray:
        """Rows of the given slots as float32 (any shape of slots; rows appended on the last axis)."""
        return np.take(self._arr, slots, axis=0).astype(np.float32, copy=False)

    def rows(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """A view of the stored rows ``start:stop`` in the store's dtype."""
        return self._arr[start : self._n if stop is None else stop]

    def _grow(self, cap: int) -> None:
        old = self._arr
        if self.kind == "memory":
            grown = np.empty((cap, self.dim), dtype=self.dtype)
        else:
            if self._path is None:
                fd, self._path = tempfile.mkstemp(prefix="smec-store-", suffix=".bin")
                os.close(fd)
                weakref.finalize(self, _unlink, self._path)
            with open(self._path, "r+b") as f:
                f.truncate(cap * self.dim * self.dtype.itemsize)
            grown = np.memmap(self._path, dtype=self.dtype, mode="r+", shape=(cap, self.dim))
            if isinstance(old, np.memmap) and old.filename is not None and os.path.samefile(old.filename, self._path):
                self._arr = grown  # the rows are already in the (extended) file
                return
        for s in range(0, self._n, _COPY_ROWS):
            grown[s : min(s + _COPY_ROWS, self._n)] = old[s : min(s + _COPY_ROWS, self._n)]
        self._arr = grown

    # ----------------------------------------------------------------- persistence
    def save(self, path: Path) -> None:
        """Write the stored rows as one ``.npy`` file."""
        with open(path, "wb") as f:
            np.lib.format.write_array(f, np.asarray(self.rows()), allow_pickle=False)

    @classmethod
    def load(cls, path: Path, dim: int, dtype: str, kind: str, n: int) -> "VectorStore":
        """Read a saved store (mmap kind: map it read-only); refuses a shape or dtype other than expected."""
        arr = np.load(path, mmap_mode="r" if kind == "mmap" else None, allow_pickle=False)
        if arr.shape != (n, dim) or arr.dtype != np.dtype(dtype):
            raise ValueError(f"read_index: {path} holds {arr.dtype} {arr.shape}; the manifest says {dtype} ({n}, {dim})")
        obj = cls(dim, dtype, kind)
        obj._arr, obj._n = arr, n
        return obj


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
