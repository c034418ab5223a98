"""attnflow: normalizing flows with invertible attention (iMap, iTrans), CVPR 2022."""

from .core import Flow, Inverse, Sequential

__version__ = "0.1.0"

__all__ = ["Flow", "Inverse", "Sequential", "__version__"]
