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

__all__ = ["CHUNK_BYTES", "chunk_rows", "release_pages"]

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
