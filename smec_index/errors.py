"""The library's own exceptions, in one place for callers (the CLI maps each to a one-line message).

Every refusal of bad input is a ``ValueError`` or ``TypeError`` naming the call and the argument; these are
the more specific kinds worth catching on their own.
"""

from ._fsutil import StorageFullError
from .compressor import NotFittedError
from .index.errors import IndexStateError
from .index.store import NotNpyError

__all__ = ["StorageFullError", "IndexStateError", "NotFittedError", "NotNpyError"]
