"""Provenance and safe writing: what made a result (config, versions, commit, device, weights), written atomically.

Every file that a run produces goes through `atomic_write` so an interrupted run never leaves a half-written
checkpoint or table that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import random
import shutil
import socket
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

PACKAGES = ("dynad", "torch", "torchvision", "diffusers", "timm", "numpy", "scipy", "scikit-learn", "pandas")


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside `path`; rename it onto `path` only when the block finishes without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{tmp_tag()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results get the user's usual mode
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e.__context__, KeyboardInterrupt):  # Ctrl-C inside torch.save, which turns it into a
            raise e.__context__ from None  # RuntimeError ("unexpected pos"), not a full disk
        if _disk_full(e):
            free = shutil.disk_usage(path.parent).free
            raise OSError(errno.ENOSPC, f"no space left on the device to write {path} ({free / 2**20:.1f} MiB free): "
                                        f"free some space or write to another folder") from e  # fmt: skip
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: os.umask can only be read by setting it


def _disk_full(e: BaseException) -> bool:
    """A full disk: ENOSPC, or torch's zip writer failing on a short write ("unexpected pos ...")."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(e, RuntimeError) and ("unexpected pos" in str(e) or "file write failed" in str(e))


def tmp_tag() -> str:
    """`<host>-<pid>` in temporary names: a later run can tell a dead process's leftovers from a live one's."""
    return f"{socket.gethostname().split('.')[0].replace('-', '_').replace('.', '_') or 'host'}-{os.getpid()}"


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def save_torch(path: str | Path, obj: Any) -> None:
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def git_commit() -> str:
    """The commit of the dynad checkout (with '+dirty' when it has uncommitted changes), or 'unknown'."""
    repo = Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def resolve_device(name: str = "auto") -> torch.device:
    """The device a config's `device` names. `auto` is a GPU when there is one; a GPU named outright must be there
    (ConfigError): it is never swapped for the CPU in silence."""
    from dynad.config import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "" if torch.version.cuda else ", a build without CUDA"
        raise ConfigError(f"device = {name!r}: this machine has no CUDA device (torch {torch.__version__}{build}); "
                          f"device=auto takes a GPU when there is one, else the CPU")  # fmt: skip
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device = {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")  # fmt: skip
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device = {name!r}: MPS (Apple GPUs) is not available on this machine")
    return device


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def cpu_description() -> dict[str, str]:
    """The CPU's model and the vector instructions torch uses on it: CPU numbers differ between, say, AVX2 and AVX-512
    (README), so a result names both."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), model)
    return {"model": model, "vector_instructions": torch.backends.cpu.get_cpu_capability()}


def set_threads(threads: int) -> int:
    """Fix torch's CPU threads (0: leave torch's default); returns the count in use."""
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def environment() -> dict[str, Any]:
    """What made a number, besides its config: package versions, commit, CPU and time (benchmarks store this alone)."""
    return {
        "versions": versions(),
        "git_commit": git_commit(),
        "cpu": cpu_description(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def record(config_dict: dict[str, Any], device: torch.device, weights: dict[str, str]) -> dict[str, Any]:
    """The provenance block stored beside every result."""
    return {
        "config": config_dict,
        **environment(),
        "device": device_description(device),
        "weights": weights,
        "seed": config_dict.get("seed"),
    }
