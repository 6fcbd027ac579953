"""The contract between ``CompressedIndex`` and an ANN engine, and the helpers every engine shares.

A backend is one engine at one dimension. The facade projects, validates and maps ids; the backend only
stores float32 L2-normalised rows under int64 labels (the facade's slots, never reused), finds the k
best labels for a batch of queries, and forgets labels. Engine knobs (FAISS spec, HNSW M/ef) stay in the
engine's own module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

__all__ = ["Backend", "METRICS", "METRIC_TYPE", "FLT_MAX", "worst_distance", "pad_results"]

METRICS = ("ip", "l2")
METRIC_TYPE = {"ip": 0, "l2": 1}  # FAISS's metric_type ints: METRIC_INNER_PRODUCT, METRIC_L2
FLT_MAX = float(np.finfo(np.float32).max)


@runtime_checkable
class Backend(Protocol):
    """One engine holding vectors of one dim under int64 labels.

    ``search`` returns FAISS-shaped ``(D float32 (nq, k), I int64 (nq, k))``, best first: inner products
    (larger is better) for ``"ip"``, squared L2 (smaller is better) for ``"l2"``, padded with label -1
    and ``worst_distance(metric)``. ``save``/``load`` use the engine's native files in one directory.
    """

    name: ClassVar[str]
    dim: int
    metric: str

    @property
    def is_trained(self) -> bool: ...

    @property
    def min_train_rows(self) -> int:
        """Rows ``train`` needs (0 when the engine needs no training); checked before anything is fitted."""
        ...

    @property
    def ntotal(self) -> int:
        """Live (not removed) vectors."""
        ...

    @property
    def nbytes(self) -> int:
        """Bytes the engine holds in RAM for its vectors and structures."""
        ...

    def options(self) -> dict[str, Any]:
        """The constructor keyword arguments that rebuild an empty engine like this one (JSON-serialisable)."""
        ...

    def train(self, X: np.ndarray) -> None: ...

    def add(self, ids: np.ndarray, X: np.ndarray) -> None: ...

    def search(self, Q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def remove(self, ids: np.ndarray) -> int:
        """Forget these labels (all present); return how many were removed."""
        ...

    def reset(self) -> None:
        """Forget every vector, keeping the training (as FAISS's ``reset``)."""
        ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> "Backend": ...


def worst_distance(metric: str) -> float:
    """FAISS's filler for missing results: -FLT_MAX for inner product, +FLT_MAX for L2 (not inf)."""
    return -FLT_MAX if metric == "ip" else FLT_MAX


def pad_results(D: np.ndarray, I: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Widen (nq, m <= k) results to (nq, k) with FAISS's padding; float32/int64, C-contiguous."""
    nq, m = I.shape
    outD = np.full((nq, k), worst_distance(metric), dtype=np.float32)
    outI = np.full((nq, k), -1, dtype=np.int64)
    outD[:, :m] = D
    outI[:, :m] = I
    return outD, outI

