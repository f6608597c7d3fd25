"""DynAD: Dynamic Addition of Noise in a Diffusion Model for Anomaly Detection (Tebbe & Tayyub, CVPR 2024 W)."""

from importlib import metadata

try:
    __version__ = metadata.version("dynad")
except metadata.PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "unknown"
