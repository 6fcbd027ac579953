"""smec_index: learned embedding compression (SMEC) with real vector indexes at reduced dims."""

from .compressor import SMEC, NotFittedError

__version__ = "0.1.0"
__all__ = ["SMEC", "NotFittedError", "__version__"]
