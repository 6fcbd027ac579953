"""Closed-form baselines: PCA and truncation, as projections like every learned method's.

The learned baselines (MRL / Matryoshka-Adaptor, Search-Adaptor) share SMEC's training loop and
live in ``api.py``; these two need no training loop at all.
"""

from __future__ import annotations

import numpy as np

from .model import Projection

__all__ = ["pca_projections", "truncate_projections", "pca_rotation"]


def pca_rotation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean (D,), principal axes as columns (D, D) by decreasing variance, variances (D,))."""
    X64 = X.astype(np.float64)
    mu = X64.mean(axis=0)
    cov = np.cov(X64 - mu, rowvar=False)
    var, vec = np.linalg.eigh(cov)
    order = np.argsort(-var, kind="stable")
    vec = vec[:, order]
    # fix each axis's sign so the rotation is deterministic across LAPACK builds
    signs = np.sign(vec[np.abs(vec).argmax(axis=0), np.arange(vec.shape[1])])
    signs[signs == 0] = 1
    return mu, vec * signs, var[order]


def pca_projections(X: np.ndarray, dims: tuple[int, ...]) -> dict[int, Projection]:
    """PCA fitted on X (mean-centred): ``(x - mu) @ P[:, :d]``, re-normalised by ``Projection``."""
    mu, P, _ = pca_rotation(X)
    out = {}
    for d in dims:
        M = P[:, :d]
        out[d] = Projection(np.ascontiguousarray(M, dtype=np.float32), (-(mu @ M)).astype(np.float32))
    return out


def truncate_projections(D: int, dims: tuple[int, ...]) -> dict[int, Projection]:
    """The first d coordinates."""
    eye = np.eye(D, dtype=np.float32)
    return {d: Projection(np.ascontiguousarray(eye[:, :d]), np.zeros(d, dtype=np.float32)) for d in dims}
