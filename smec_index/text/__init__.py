"""From texts to compressed search: ``Encoder`` (sentence-transformers, cached) and ``TextIndex``.

Importing this package does not import sentence-transformers; an ``Encoder`` loads it when it is created.
"""

from .encoder import DEFAULT_MODEL, Encoder, TruncationWarning
from .io import read_texts
from .store import TextStore
from .textindex import TextIndex

__all__ = ["Encoder", "TextIndex", "TextStore", "DEFAULT_MODEL", "TruncationWarning", "read_texts"]
