"""Row norms and L2 normalisation of (n, d) float arrays: every module takes them from here.

Cosine similarity is the inner product of unit rows, so the compressor, the data loader and every index
normalise; they share these three so that zero rows, dtypes and the single-row fast path agree.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["row_norms", "inv_row_norms", "normalise_rows"]

# below this a row counts as zero: it is divided by this floor (and stays zero) instead of by its norm
_FLOOR = 1e-12


def row_norms(X: np.ndarray) -> np.ndarray:
    """The L2 norm of each row, shape (n,), without an (n, d) temporary."""
    return np.sqrt(np.einsum("ij,ij->i", X, X))


def inv_row_norms(X: np.ndarray) -> float | np.ndarray:
    """1 / row norms (floored), shaped to broadcast over X: a float for one row (the scalar path is 2x faster)."""
    if X.shape[0] == 1:
        return 1.0 / max(math.sqrt(float(X[0] @ X[0])), _FLOOR)
    return 1.0 / np.maximum(row_norms(X)[:, None], _FLOOR)


def normalise_rows(X: np.ndarray, *, in_place: bool = False) -> np.ndarray:
    """X's rows scaled to unit L2 norm, as float32 C-contiguous; all-zero rows stay zero.

    ``in_place`` divides X itself (a float array the caller owns) instead of allocating a copy.
    """
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    np.maximum(norms, _FLOOR, out=norms)
    if in_place:
        X /= norms
    else:
        X = X / norms
    return np.ascontiguousarray(X, dtype=np.float32)
