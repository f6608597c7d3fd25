"""Where things live: relative paths in the notebooks are relative to the project root, not to the kernel's folder.

JupyterLab and `jupyter nbconvert --execute` start the kernel in `notebooks/`, papermill wherever it was called; a
notebook's `run_dir = "runs/demo/synthetic/board"` must mean the same folder in all three.

    project_path("runs/demo/synthetic/board")   # <project>/runs/demo/synthetic/board, whatever os.getcwd() is
"""

from __future__ import annotations

from pathlib import Path

SYNTHETIC_ROOT = "data/synthetic"  # the built-in data set, generated here (only here) when missing


def project_root() -> Path:
    """The checkout that holds this package (a folder with pyproject.toml above dynad/), else the working folder.

    An installed (non-editable) dynad has no checkout around it; then the working folder is the only anchor.
    """
    checkout = Path(__file__).resolve().parents[1]
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd().resolve()


def project_path(path: str | Path) -> Path:
    """`path` made absolute: `~` expanded, a relative path taken relative to `project_root()`."""
    p = Path(path).expanduser()
    return (p if p.is_absolute() else project_root() / p).resolve()


def default_synthetic_root() -> Path:
    return project_path(SYNTHETIC_ROOT)
