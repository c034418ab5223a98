"""attnflow: normalizing flows with invertible attention (iMap, iTrans), CVPR 2022."""

from .core import Flow, Inverse, Sequential
from .layers import IMap, ITrans

__version__ = "0.1.0"

__all__ = ["Flow", "Inverse", "Sequential", "IMap", "ITrans", "__version__"]
