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

A file-backed store writes its rows to a private file with ``pwrite``, so building never maps them into
the process; the file has no name (``O_TMPFILE``, or unlinked when created), so a killed process leaves
nothing behind. It lives in the temporary directory for a new index and, for a loaded one, beside the saved
index (same filesystem as the data). A loaded one reads the saved ``.npy`` read-only and copies it to a
private file (``copy_file_range``, in the kernel) only on the first ``append``, so a saved index on disk is
never modified by later adds. Saving copies file to file too.

Room is reserved before rows are written (``reserve``: ``posix_fallocate`` for a file), so a full disk
fails an add before anything changes (``StorageFullError``), and rows written into reserved room, the
placeholder rows of a rolled-back add included, never need new space.
"""

from __future__ import annotations

import errno
import mmap
import os
import tempfile
import weakref
from pathlib import Path

import numpy as np

from .._fsutil import StorageFullError, storage_full
from .._npy import NotNpyError, load_npy, npy_data_offset

__all__ = ["VectorStore", "STORE_KINDS", "STORE_DTYPES", "npy_data_offset", "load_npy", "NotNpyError"]  # the .npy readers re-exported

STORE_KINDS = ("memory", "mmap", "disk")
STORE_DTYPES = ("float32", "float16")
_COPY_BYTES = 16 << 20


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

    def __init__(self, dim: int, dtype: str = "float32", kind: str = "memory", work_dir: Path | None = None) -> None:
        self.dim = int(dim)
        self.dtype = np.dtype(dtype)
        self.kind = kind
        self.work_dir = work_dir  # where a file-backed store's private file goes (None: the temporary directory)
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

    @property
    def capacity(self) -> int:
        """Rows that fit without new memory or disk space."""
        return self._arr.shape[0] if self.kind == "memory" else (self._cap if self._private else self._n)

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` rows in all (memory, or disk blocks allocated with ``posix_fallocate``), so that
        appending up to that many never needs new space. Raises before any row changes: ``MemoryError``, or
        ``StorageFullError`` when the disk is full."""
        if rows <= self.capacity:
            return
        if self.kind == "memory":
            grown = np.empty((max(rows, int(self._arr.shape[0] * 1.5)), self.dim), dtype=self.dtype)
            grown[: self._n] = self._arr[: self._n]
            self._arr = grown
            return
        if not self._private:
            self._open_private(rows)
            return
        cap = max(rows, int(self._cap * 1.5), 1024)
        try:
            try:
                _allocate(self._fds[0], cap * self.row_bytes)
            except OSError as e:
                if cap == rows or not storage_full(e, self._dir()):
                    raise
                cap = rows  # the disk has no room for the headroom: take exactly what is needed
                _allocate(self._fds[0], cap * self.row_bytes)
        except OSError as e:
            raise self._full(e, rows) if storage_full(e, self._dir()) else e
        self._cap = cap

    def append(self, X: np.ndarray) -> None:
        """Store rows for the next ``len(X)`` slots (cast to the store's dtype); room is reserved first."""
        m = X.shape[0]
        self.reserve(self._n + m)
        if self.kind == "memory":
            self._arr[self._n : self._n + m] = X
            self._n += m
            return
        fd = self._fds[0]
        data = np.ascontiguousarray(X, dtype=self.dtype)
        view, off = memoryview(data).cast("B"), self._n * self.row_bytes
        while view.nbytes:
            done = os.pwrite(fd, view, off)
            view, off = view[done:], off + done
        self._n += m
        if self.kind == "mmap":
            self._arr = _map_rows(fd, 0, self._n, self.dim, self.dtype)

    def _dir(self) -> str:
        return str(self.work_dir) if self.work_dir is not None else tempfile.gettempdir()

    def _full(self, e: OSError, rows: int) -> StorageFullError:
        err = StorageFullError(errno.ENOSPC, f"add: no room for {rows:,} rows of {self.dim} {self.dtype} "
                               f"({rows * self.row_bytes:,} bytes) in the {self.kind} store's file under "
                               f"{self._dir()}: the disk is full ({e}); nothing was added")
        err.__cause__ = e
        return err

    def _open_private(self, rows: int) -> None:
        """Give the store its own unnamed file with room for ``rows`` rows, holding the loaded rows if any (copied
        in the kernel); on failure (a full disk: ``StorageFullError``) the store is unchanged."""
        fd = _unnamed_file(self._dir())
        try:
            _allocate(fd, max(rows, 1) * self.row_bytes)
            if self._fds and self._n:
                _copy_range(self._fds[0], self._offset, fd, 0, self._n * self.row_bytes)
        except BaseException as e:
            os.close(fd)
            if isinstance(e, OSError) and storage_full(e, self._dir()):
                raise self._full(e, rows) from e
            raise
        _close_all(self._fds)
        self._fds.append(fd)
        self._offset, self._private, self._cap = 0, True, max(rows, 1)

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
        obj = cls(dim, dtype, kind, work_dir=Path(path).absolute().parent)
        obj._n = n
        if kind == "memory":
            obj._arr = np.load(path, allow_pickle=False)
        else:
            obj._fds.append(os.open(path, os.O_RDONLY))
            obj._offset = offset
            if kind == "mmap":
                obj._arr = _map_rows(obj._fds[0], offset, n, dim, got)
        return obj


def _unnamed_file(directory: str) -> int:
    """A read-write file descriptor of a new file without a name in ``directory`` (O_TMPFILE where the
    filesystem has it, else created and unlinked at once), so nothing is left behind when the process dies."""
    if hasattr(os, "O_TMPFILE"):
        try:
            return os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o600)
        except OSError:
            pass
    try:
        fd, path = tempfile.mkstemp(prefix=".smec-store-", suffix=".bin", dir=directory)
    except OSError as e:  # a saved index on read-only media: work in the temporary directory instead
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS) or directory == tempfile.gettempdir():
            raise
        return _unnamed_file(tempfile.gettempdir())
    os.unlink(path)
    return fd


def _allocate(fd: int, nbytes: int) -> None:
    """Allocate disk blocks for the first ``nbytes`` of a file (growing it), so later writes there need no space."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, nbytes)
    elif os.fstat(fd).st_size < nbytes:
        os.ftruncate(fd, nbytes)


def _close_all(fds: list[int]) -> None:
    while fds:
        try:
            os.close(fds.pop())
        except OSError:
            pass
