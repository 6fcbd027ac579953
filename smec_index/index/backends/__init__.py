"""ANN engines behind one ``Backend`` protocol, by name. A new engine is one module and one entry here."""

from __future__ import annotations

import inspect
from typing import Any

from .base import METRIC_TYPE, METRICS, Backend, pad_results, worst_distance
from .binary import BinaryBackend
from .faiss import FaissBackend
from .hnswlib import HnswlibBackend
from .qdrant_edge import QdrantEdgeBackend

__all__ = ["Backend", "BACKENDS", "METRICS", "METRIC_TYPE", "make_backend", "backend_class", "pad_results", "worst_distance"]

BACKENDS: dict[str, type] = {FaissBackend.name: FaissBackend, BinaryBackend.name: BinaryBackend,
                             HnswlibBackend.name: HnswlibBackend, QdrantEdgeBackend.name: QdrantEdgeBackend}


def backend_class(name: str) -> type:
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {sorted(BACKENDS)}, got {name!r}")
    return BACKENDS[name]


def make_backend(name: str, dim: int, metric: str, options: dict[str, Any]) -> Backend:
    """An empty engine ``name`` at ``dim``; refuses options the engine does not take, naming those it does."""
    cls = backend_class(name)
    allowed = [p for p in inspect.signature(cls).parameters if p not in ("dim", "metric")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{name} backend: unknown option(s) {unknown}; its options are {allowed}")
    return cls(dim, metric, **options)
