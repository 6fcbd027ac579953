"""Progress bars that stay out of logs: one rule for every tqdm bar of the library and the command line."""

from __future__ import annotations

import sys
from typing import Literal, Union

__all__ = ["Progress", "tqdm_disable"]

Progress = Union[bool, Literal["always"]]


def tqdm_disable(progress: Progress) -> bool | None:
    """tqdm's ``disable=`` for a ``progress`` setting: False -> no bar; True -> a bar only when the bar's stream
    is a terminal (tqdm's ``None``: no carriage-return updates written into a log file); ``"always"`` -> a bar
    even when the output is redirected (the command line's ``--progress``). In a Jupyter kernel (whose streams
    are not terminals) True shows the notebook widget, as ``tqdm.auto`` intends."""
    if progress == "always" or (progress and "ipykernel" in sys.modules):
        return False
    return None if progress else True
