"""DynAD: Dynamic Addition of Noise in a Diffusion Model for Anomaly Detection (Tebbe & Tayyub, CVPR 2024 W)."""

from importlib import metadata

try:
    __version__ = metadata.version("dynad")
except metadata.PackageNotFoundError:  # imported from a checkout that was never installed
    __version__ = "unknown"


def __getattr__(name: str):
    """`from dynad import DynAD` without importing torch for `import dynad` (the CLI's --help stays fast)."""
    if name == "DynAD":
        from dynad.pipeline import DynAD

        return DynAD
    raise AttributeError(f"module 'dynad' has no attribute {name!r}")


def __dir__() -> list[str]:
    """What `dir(dynad)` and tab completion show, the lazily loaded DynAD included."""
    return sorted({*globals(), "DynAD"})
