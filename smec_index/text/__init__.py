"""From texts to compressed search: ``Encoder`` (sentence-transformers, cached) and ``TextIndex``.

Importing this package does not import sentence-transformers: an ``Encoder`` loads it when it is created, and
``SMECStage`` / ``load_sentence_transformer`` (``st_module``) and ``QdrantTextCollection`` (``qdrant``) are
imported on first access.
"""

from typing import Any

from .encoder import DEFAULT_MODEL, Encoder, TruncationWarning
from .io import read_texts
from .store import TextStore
from .textindex import TextIndex

__all__ = ["Encoder", "TextIndex", "TextStore", "DEFAULT_MODEL", "TruncationWarning", "read_texts", "SMECStage",
           "load_sentence_transformer", "QdrantTextCollection"]


def __getattr__(name: str) -> Any:
    if name in ("SMECStage", "load_sentence_transformer"):
        from . import st_module

        return getattr(st_module, name)
    if name == "QdrantTextCollection":
        from .qdrant import QdrantTextCollection

        return QdrantTextCollection
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
