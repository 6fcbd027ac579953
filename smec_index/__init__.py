"""smec_index: learned embedding compression (SMEC) with real vector indexes at reduced dims."""

from ._threads import set_wait_policy

set_wait_policy()  # before torch loads OpenMP (below): idle OpenMP threads sleep instead of spinning

from .compressor import SMEC, NotFittedError
from .index import CompressedIndex, index_factory, read_index, write_index

__version__ = "0.1.0"
__all__ = ["SMEC", "NotFittedError", "CompressedIndex", "index_factory", "read_index", "write_index", "__version__"]
