"""Rows of vectors by slot, for exact rescoring: in RAM or memory-mapped from disk, float32 or float16.

The full-dim store holds what the final rerank scores against; smaller stores hold the reduced vectors of
the intermediate cascade stages.

Two kinds keep their rows in a file instead of RAM: ``"mmap"`` reads candidates through a read-only
mapping (the fastest rerank, about 70 us for 100 rows of 768 floats), ``"disk"`` reads each candidate row
with ``pread`` (about 3x slower). Both leave the data in the OS page cache, which the kernel can drop at
any time; the difference is what the kernel counts as the process's resident memory: pages reached
through a mapping are counted (and on Linux a touched row maps its whole page-cache folio, up to 2 MiB,
so a few thousand queries map most of the file), pages read with ``pread`` are not. Pick ``"disk"`` when
the resident set must stay at the size of the indexes (a memory limit, a cgroup).

A file-backed store writes its rows to a private temporary file with ``pwrite``, so building never maps
them into the process; the file has no name (unlinked when created), so a killed process leaves nothing
behind. A loaded one reads the saved ``.npy`` read-only and copies it to a private file
(``copy_file_range``, in the kernel) only on the first ``append``, so a saved index on disk is never
modified by later adds. Saving copies file to file too.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import weakref
from pathlib import Path

import numpy as np

__all__ = ["VectorStore", "STORE_KINDS", "STORE_DTYPES", "npy_data_offset"]

STORE_KINDS = ("memory", "mmap", "disk")
STORE_DTYPES = ("float32", "float16")
_COPY_BYTES = 16 << 20


def npy_data_offset(path: Path) -> tuple[int, tuple[int, ...], np.dtype, bool]:
    """Byte offset of the data in a ``.npy`` file, with its shape, dtype and Fortran flag (header only)."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"read_index: {path} is a .npy file of format version {version}; expected 1.0 or 2.0")
        return f.tell(), tuple(shape), np.dtype(dtype), bool(fortran)


def _copy_range(src: int, src_off: int, dst: int, dst_off: int, nbytes: int) -> None:
    """Copy bytes between two file descriptors in the kernel (``copy_file_range``), else by ``pread``/``pwrite``."""
    fast = hasattr(os, "copy_file_range")
    while nbytes > 0:
        if fast:
            try:
                done = os.copy_file_range(src, dst, min(nbytes, 1 << 30), src_off, dst_off)
            except OSError:
                fast = False
                continue
        else:
            block = os.pread(src, min(nbytes, _COPY_BYTES), src_off)
            done = os.pwrite(dst, block, dst_off)
        if done <= 0:
            raise OSError(f"store: short copy ({nbytes} bytes left)")
        src_off, dst_off, nbytes = src_off + done, dst_off + done, nbytes - done


def _map_rows(fd: int, offset: int, n: int, dim: int, dtype: np.dtype) -> np.ndarray:
    """A read-only (n, dim) view of a file's bytes from ``offset``, mapped with random-access advice."""
    if n == 0:
        return np.empty((0, dim), dtype=dtype)
    mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)  # holds its own duplicate of fd
    if hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mm.madvise(mmap.MADV_RANDOM)  # a rerank reads scattered rows: no read-ahead
    return np.frombuffer(mm, dtype=dtype, count=n * dim, offset=offset).reshape(n, dim)


class VectorStore:
    """Rows of one dim addressed by slot (row i = slot i); ``take`` always returns float32."""

    def __init__(self, dim: int, dtype: str = "float32", kind: str = "memory") -> None:
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)
        self.kind = kind
        self._n = 0
        self._arr: np.ndarray = np.empty((0, self.dim), dtype=self.dtype)
        # a file-backed store reads its rows from one open descriptor, at ``_offset``: the saved .npy after a
        # load (read-only), or its private file, which has no name (unlinked at creation: a killed process
        # leaves nothing behind in the temporary directory)
        self._fds: list[int] = []
        self._offset = 0
        self._private = False
        self._cap = 0  # rows the private file has room for
        weakref.finalize(self, _close_all, self._fds)

    @property
    def n(self) -> int:
        return self._n

    @property
    def row_bytes(self) -> int:
        return self.dim * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes held in process memory (a file-backed store lives in the OS page cache: 0)."""
        return 0 if self.kind != "memory" else int(self._arr.nbytes)

    def append(self, X: np.ndarray) -> None:
        """Store rows for the next ``len(X)`` slots (cast to the store's dtype)."""
        m = X.shape[0]
        if self.kind == "memory":
            if self._n + m > self._arr.shape[0]:
                grown = np.empty((max(self._n + m, int(self._arr.shape[0] * 1.5)), self.dim), dtype=self.dtype)
                grown[: self._n] = self._arr[: self._n]
                self._arr = grown
            self._arr[self._n : self._n + m] = X
            self._n += m
            return
        if not self._private:
            self._open_private()
        fd = self._fds[0]
        if self._n + m > self._cap:
            self._cap = max(self._n + m, int(self._cap * 1.5), 1024)
            os.ftruncate(fd, self._cap * self.row_bytes)
        data = np.ascontiguousarray(X, dtype=self.dtype)
        view, off = memoryview(data).cast("B"), self._n * self.row_bytes
        while view.nbytes:
            done = os.pwrite(fd, view, off)
            view, off = view[done:], off + done
        self._n += m
        if self.kind == "mmap":
            self._arr = _map_rows(fd, 0, self._n, self.dim, self.dtype)

    def _open_private(self) -> None:
        """Give the store its own unnamed file, holding the loaded rows if any (copied in the kernel)."""
        fd, path = tempfile.mkstemp(prefix="smec-store-", suffix=".bin")
        os.unlink(path)
        try:
            if self._fds and self._n:
                _copy_range(self._fds[0], self._offset, fd, 0, self._n * self.row_bytes)
        except BaseException:
            os.close(fd)
            raise
        _close_all(self._fds)
        self._fds.append(fd)
        self._offset, self._private, self._cap = 0, True, self._n

    def take(self, slots: np.ndarray) -> np.ndarray:
        """Rows of the given slots as float32 (any shape of slots; rows appended on the last axis)."""
        if self.kind != "disk":
            return np.take(self._arr, slots, axis=0).astype(np.float32, copy=False)
        flat = np.asarray(slots).ravel()
        out = np.empty((flat.shape[0], self.dim), dtype=self.dtype)
        if flat.shape[0]:
            if flat.min() < 0 or flat.max() >= self._n:
                raise IndexError(f"store: slots outside 0..{self._n - 1}")
            fd, buf, rb = self._fds[0], memoryview(out).cast("B"), self.row_bytes
            for j, s in enumerate(flat.tolist()):  # pread at explicit offsets: safe from many threads at once
                os.preadv(fd, [buf[j * rb : (j + 1) * rb]], self._offset + s * rb)
        return out.reshape(np.shape(slots) + (self.dim,)).astype(np.float32, copy=False)

    def rows(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """The stored rows ``start:stop`` in the store's dtype (a view, or for "disk" a read-only mapping)."""
        stop = self._n if stop is None else stop
        if self.kind == "disk" and self._n:
            return _map_rows(self._fds[0], self._offset, self._n, self.dim, self.dtype)[start:stop]
        return self._arr[start:stop]

    # ----------------------------------------------------------------- persistence
    def save(self, path: Path) -> None:
        """Write the stored rows as one ``.npy`` file (a file-backed store is copied file to file, not through RAM)."""
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self._n, self.dim)}
        with open(path, "wb") as f:
            if self.kind == "memory":
                np.lib.format.write_array(f, np.asarray(self.rows()), allow_pickle=False)
                return
            np.lib.format.write_array_header_1_0(f, header)
            f.flush()
            if self._n:
                _copy_range(self._fds[0], self._offset, f.fileno(), f.tell(), self._n * self.row_bytes)

    @classmethod
    def load(cls, path: Path, dim: int, dtype: str, kind: str, n: int) -> "VectorStore":
        """Read a saved store (mmap kind: map it read-only); refuses a shape or dtype other than expected."""
        offset, shape, got, fortran = npy_data_offset(path)
        if shape != (n, dim) or got != np.dtype(dtype) or fortran:
            raise ValueError(f"read_index: {path} holds {got} {shape}; the manifest says {dtype} ({n}, {dim})")
        size = Path(path).stat().st_size
        if size != offset + n * dim * got.itemsize:
            raise ValueError(f"read_index: {path} has {size} bytes; {dtype} ({n}, {dim}) needs "
                             f"{offset + n * dim * got.itemsize} (truncated or padded)")
        obj = cls(dim, dtype, kind)
        obj._n = n
        if kind == "memory":
            obj._arr = np.load(path, allow_pickle=False)
        else:
            obj._fds.append(os.open(path, os.O_RDONLY))
            obj._offset = offset
            if kind == "mmap":
                obj._arr = _map_rows(obj._fds[0], offset, n, dim, got)
        return obj


def _close_all(fds: list[int]) -> None:
    while fds:
        try:
            os.close(fds.pop())
        except OSError:
            pass
