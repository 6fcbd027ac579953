"""Real vector indexes over SMEC-compressed vectors: the FAISS-shaped ``CompressedIndex`` and its backends."""

from .backends import BACKENDS, Backend
from .compressed import RERANK, CompressedIndex, read_index, write_index
from .errors import IndexStateError
from .factory import index_factory

__all__ = ["CompressedIndex", "index_factory", "write_index", "read_index", "IndexStateError", "Backend", "BACKENDS", "RERANK"]
