"""Adding inputs larger than RAM: fixed-size row chunks, and handing back the pages of a mapped ``.npy``.

``CompressedIndex.add`` works through its input one chunk of rows at a time, so it never holds more
than one chunk of full-dim float32 rows beyond its stores, whatever the input's size or dtype. An input
memory-mapped read-only (``np.load(path, mmap_mode="r")``) is paged in by the OS as it is read; those
pages are dropped from the process after each chunk (``madvise(MADV_DONTNEED)``: the file's data stays
in the page cache and reads back unchanged), so a 3 GB input does not count 3 GB against the process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap

import numpy as np

__all__ = ["CHUNK_BYTES", "chunk_rows", "release_pages", "take_rows"]

CHUNK_BYTES = 64 << 20  # float32 bytes of full-dim rows processed at once
_MADV_DONTNEED = 4
_libc = None


def chunk_rows(d: int) -> int:
    """Rows of width ``d`` per chunk (at least one)."""
    return max(1, CHUNK_BYTES // (4 * max(1, d)))


def _madvise():
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name, use_errno=True) if name else False
    fn = getattr(_libc, "madvise", None) if _libc else None
    if fn is not None:
        fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return fn


def release_pages(x: np.ndarray, start: int, stop: int) -> None:
    """Drop the pages of rows ``start:stop`` of a read-only memory-mapped array from the process.

    Only for ``np.memmap`` in mode ``"r"`` (file-backed, never modified: the pages read back from the file);
    anything else is left alone. Pages shared with rows outside the range are kept.
    """
    if not (isinstance(x, np.memmap) and x.mode == "r" and x.flags.c_contiguous and x.ndim == 2):
        return
    fn = _madvise()
    if fn is None or stop <= start:
        return
    page = mmap.PAGESIZE
    row = x.shape[1] * x.itemsize
    lo = x.ctypes.data + start * row
    hi = x.ctypes.data + min(stop, x.shape[0]) * row
    lo = -(-lo // page) * page  # round in: never drop a page holding rows outside the range
    hi = hi // page * page
    if hi > lo:
        fn(lo, hi - lo, _MADV_DONTNEED)


def take_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``x[rows]`` as a float32 array, for a training sample of a big (memory-mapped) input: the rows are
    gathered one chunk of ``x`` at a time and each chunk's pages are handed back, so sampling from a file
    does not map the whole file into the process."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((rows.shape[0], x.shape[1]), dtype=np.float32)
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    step = chunk_rows(x.shape[1])
    for s in range(0, x.shape[0], step):
        lo, hi = np.searchsorted(ordered, [s, s + step])
        if hi > lo:
            out[order[lo:hi]] = x[ordered[lo:hi]]
            release_pages(x, s, s + step)
    return out
