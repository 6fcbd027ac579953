"""The learned compressor (PyTorch): SMEC stages, ADS, S-XBM, losses, baselines."""

from .api import FORMAT_VERSION, METHODS, SMEC, NotFittedError
from .model import Projection

__all__ = ["SMEC", "NotFittedError", "METHODS", "FORMAT_VERSION", "Projection"]
