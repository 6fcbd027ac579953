"""The error raised when the index's state forbids a call (as opposed to a bad argument)."""

from __future__ import annotations

__all__ = ["IndexStateError"]


class IndexStateError(ValueError, RuntimeError):
    """The call cannot run in this index's state: not trained yet, ``add`` mixed with ``add_with_ids``,
    ``reconstruct`` without a full store, ...

    Also a RuntimeError because FAISS raises RuntimeError in these situations, so code written against
    FAISS that catches it keeps working; a ValueError like every other refusal of this package.
    """
