"""Argument checks at the public boundary: what was expected, what came, before any state changes."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_int", "check_shape", "check_finite", "check_vectors", "check_ids"]


def is_int(v: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_shape(x: Any, where: str, d: int | None, name: str = "x") -> np.ndarray:
    """A float (n, d) ndarray, not converted or copied (a memory-mapped input stays mapped), else a
    TypeError/ValueError naming the argument, the expected and the received shape or dtype."""
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError, OverflowError) as e:  # ragged nested lists, mixed objects
            raise ValueError(f"{where}: {name} is not a rectangular array of numbers "
                             f"({str(e).split(' The ')[0].rstrip('.')}); expected shape (n, {'D' if d is None else d})") from None
    if x.dtype.kind != "f":
        raise TypeError(f"{where}: {name} must be a float array, got dtype {x.dtype}")
    if x.ndim != 2 or (d is not None and x.shape[1] != d) or x.shape[1] == 0:
        raise ValueError(f"{where}: {name} has shape {x.shape}; expected (n, {'D' if d is None else d})")
    return x


def check_finite(x: np.ndarray, where: str, name: str = "x", row0: int = 0) -> None:
    """ValueError naming the first row with NaN or inf (counted from ``row0``: the chunk's offset)."""
    # a finite sum means only finite values (inf and NaN propagate): one cheap pass, no (n, d) temporary;
    # when it is not finite (a bad value, or an overflowing sum), rows are checked one by one
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(x.sum()):
            return
        suspect = np.flatnonzero(~np.isfinite(x.sum(axis=1)))
    bad = np.zeros(x.shape[0], dtype=bool)
    bad[suspect] = ~np.isfinite(x[suspect]).all(axis=1)
    if bad.any():
        raise ValueError(f"{where}: {name} has {int(bad.sum())} row(s) with NaN or inf (first: row "
                         f"{row0 + int(np.argmax(bad))}); expected finite float32 values")


def check_vectors(x: Any, where: str, d: int | None, name: str = "x") -> np.ndarray:
    """float32 C-contiguous (n, d) with finite values (other float dtypes converted), else a
    TypeError/ValueError naming the argument, the expected and the received shape or dtype.

    ``d=None`` accepts any width (the dim is learned from this data)."""
    x = np.ascontiguousarray(check_shape(x, where, d, name), dtype=np.float32)
    check_finite(x, where, name)
    return x


def check_ids(ids: Any, where: str, n: int | None) -> np.ndarray:
    """A 1-D int64 array of non-negative ids (of length n when given)."""
    try:
        arr = np.asarray(ids)
    except (ValueError, TypeError, OverflowError) as e:
        raise ValueError(f"{where}: ids is not a flat list of integers ({str(e).split(' The ')[0].rstrip('.')})") from None
    if arr.dtype == object and arr.ndim == 1 and all(is_int(v) for v in arr.tolist()):
        raise ValueError(f"{where}: ids must fit in int64, got {max(arr.tolist(), key=abs)}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{where}: ids must be integers (int64), got dtype {arr.dtype}")
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        expected = f"({n},)" if n is not None else "(n,)"
        raise ValueError(f"{where}: ids has shape {arr.shape}; expected {expected}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{where}: ids must fit in int64, got {int(arr.max())}")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{where}: ids must be >= 0 (-1 marks a missing result), got {int(arr.min())}")
    return arr
