"""Run folders that never mix: who owns a folder, when its files are complete, and room to write them.

A run claims its output folder before anything is trained (`claim`): `run.json` records the data set, category
and config hash, and a folder that holds another configuration's run is refused unless `overwrite=True`. The
claim also removes the old `run_manifest.json`, so a run killed half-way never looks complete. The run's last write
is `run_manifest.json`: every result file with its size and sha256. `is_complete` checks it on every read, so a file
deleted, truncated or rewritten afterwards makes the folder incomplete again, and the step that made it reruns.

`prepare_folder` checks, before training, that a folder is writable and has room, and removes the `.tmp` files that
a killed process of this machine left behind (see `dynad.provenance.atomic_write`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable

from dynad.provenance import tmp_tag, write_json

CLAIM = "run.json"
MANIFEST = "run_manifest.json"
_HASH_LIMIT = 64 << 20  # bigger files (pipeline.pt of the paper presets, ~1 GB) are checked by size only
# `.<name>.<host>-<pid>.<random>.tmp`: the temporary file of `atomic_write`.
_TMP = re.compile(r"^\..+\.(?P<host>[^.]+)-(?P<pid>\d+)\.[^.]+\.tmp$")


class RunFolderError(RuntimeError):
    """An output folder that holds another run, or that cannot be written; the message names the folder."""


def claim(out: str | Path, identity: dict[str, Any], overwrite: bool = False, settings: dict | None = None) -> None:
    """Make `out` this run's folder: refuse one that holds another identity's results (unless `overwrite`).

    A claim with nothing written beside it but models (stored under names of their own settings) is taken over: the
    run that made it stopped before any result, e.g. on a mistyped category, and its corrected rerun is this one.
    `settings` (this run's config as a dict) lets the refusal name the settings that differ.
    """
    out = Path(out)
    previous = identity_of(out)
    if previous is not None and previous != identity and not overwrite and _holds_results(out):
        raise RunFolderError(f"output folder {out} holds the results of another run "
                             f"({describe_difference(out, identity, settings)}); choose another folder, or pass "
                             f"--overwrite (overwrite=True) to replace them")  # fmt: skip
    (out / MANIFEST).unlink(missing_ok=True)  # not complete until this run's manifest is written
    write_json(out / CLAIM, identity)


def identity_of(out: str | Path) -> dict[str, Any] | None:
    """The data set, category and config hash of the run in `out` (None: no run there)."""
    return _read_json(Path(out) / CLAIM) or _legacy_identity(Path(out))


def describe_difference(out: str | Path, identity: dict[str, Any], settings: dict | None = None) -> str:
    """How the run in `out` differs from `identity`: e.g. "dic.t_max: 100 -> 50", read from its metrics.json's
    config where it has one and `settings` are given, else the differing identity fields (config hashes)."""
    previous = identity_of(out) or {}
    fields = [k for k in identity if previous.get(k) != identity.get(k)]
    old = ((_read_json(Path(out) / "metrics.json") or {}).get("provenance") or {}).get("config")
    if fields == ["config"] and isinstance(old, dict) and settings is not None:
        from dynad.config import NOT_IN_RESULT
        new = json.loads(json.dumps(settings))  # tuples as the stored JSON's lists
        changed = [f"{k}: {a!r} -> {b!r}" for k, (a, b) in _changed(old, new).items()
                   if k.split(".")[0] not in NOT_IN_RESULT]  # fmt: skip
        if changed:
            return ", ".join(changed[:5]) + (f" and {len(changed) - 5} more settings" if len(changed) > 5 else "")
    return ", ".join(f"{k}: {previous.get(k)!r} -> {identity.get(k)!r}" for k in fields)


def _changed(old: dict, new: dict, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old, new)} of the leaves that differ between two nested config dicts."""
    out = {}
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(_changed(a, b, f"{prefix}{k}."))
        elif a != b:
            out[f"{prefix}{k}"] = (a, b)
    return out


def _holds_results(out: Path) -> bool:
    return any(p.name not in (CLAIM, "models") and not p.name.startswith(".") for p in out.iterdir())


def _legacy_identity(out: Path) -> dict[str, Any] | None:
    """The identity of a run written before run.json existed, from its metrics.json (None: no run there)."""
    m = _read_json(out / "metrics.json")
    if m is None:
        return None
    config = m.get("provenance", {}).get("config")
    try:
        from dynad.config import ExperimentConfig, from_dict

        digest = from_dict(ExperimentConfig, config).result_hash()
    except Exception:  # an older config layout: it matches no current config
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    return {"dataset": m.get("dataset"), "category": m.get("category"), "config": digest}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def stamp(path: str | Path) -> list:
    """[size, sha256] of a file (sha256 None above 64 MiB: those are checked by size)."""
    size = Path(path).stat().st_size
    return [size, _sha256(Path(path)) if size <= _HASH_LIMIT else None]


def matches(path: str | Path, recorded: list) -> bool:
    """The file exists and still has the recorded `stamp`."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size != recorded[0]:
        return False
    return recorded[1] is None or _sha256(path) == recorded[1]


def write_manifest(out: str | Path, files: Iterable[str | Path]) -> Path:
    """The run's last write: {relative path: [size, sha256]} of its result files, with the claim's identity."""
    out = Path(out)
    entries = {}
    for f in sorted({Path(f) for f in files}):
        p = f if f.is_absolute() else out / f
        entries[p.relative_to(out).as_posix()] = stamp(p)
    write_json(out / MANIFEST, {"run": _read_json(out / CLAIM), "files": entries})
    return out / MANIFEST


def missing_or_changed(out: str | Path) -> list[str]:
    """The manifest's files that are missing or differ from it ([MANIFEST] when there is none)."""
    out = Path(out)
    manifest = _read_json(out / MANIFEST)
    if manifest is None or not isinstance(manifest.get("files"), dict):
        return [MANIFEST]
    return [name for name, recorded in manifest["files"].items() if not matches(out / name, recorded)]


def is_complete(out: str | Path) -> bool:
    return not missing_or_changed(out)


def stamp_outputs(outputs: Iterable[str | Path], base: str | Path) -> dict[str, list]:
    """{path: stamp} of a notebook's output files (relative paths from `base`), recorded in its done-marker."""
    return {str(o): stamp(Path(base) / o) for o in outputs if (Path(base) / o).is_file()}


def outputs_intact(marker: dict[str, Any], base: str | Path) -> bool:
    """Every output a done-marker lists exists and matches its stamp, and a run folder among them is complete."""
    paths = {o: Path(base) / o for o in marker.get("outputs", [])}  # absolute paths stay as they are
    files = marker.get("output_files", {})
    if any(not p.is_file() for p in paths.values()):
        return False
    if not all(matches(Path(base) / o, recorded) for o, recorded in files.items()):
        return False
    folders = {p.parent for p in paths.values() if (p.parent / CLAIM).is_file()}
    return all(is_complete(f) for f in folders)


def _read_json(path: Path) -> dict | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


# ------------------------------------------------------------------------------------------------------------------
# Writable folders with room, and the leftovers of killed processes.


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_tmp(folder: str | Path) -> list[Path]:
    """Remove the `.tmp` files under `folder` whose writer (a process of this machine) is gone; returns them."""
    folder = Path(folder)
    host = tmp_tag().split("-")[0]
    removed = []
    for p in folder.rglob(".*.tmp") if folder.is_dir() else []:
        m = _TMP.match(p.name)
        if m and m["host"] == host and not _alive(int(m["pid"])):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def check_not_a_file(folder: str | Path, what: str) -> None:
    """Raise when `folder`, or the nearest part of its path that exists, is a file; creates nothing."""
    folder = Path(folder)
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                raise RunFolderError(f"{what} {folder} is a file, not a folder" if p == folder else
                                     f"{what} {folder}: {p} is a file, not a folder")  # fmt: skip
            return


def prepare_folder(folder: str | Path, need_bytes: int, what: str) -> None:
    """Create `folder`, check that it is writable and has `need_bytes` free, and clean stale `.tmp` files."""
    folder = Path(folder)
    check_not_a_file(folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise RunFolderError(f"{what} {folder} is not writable: {e.strerror or e}") from e
    removed = clean_stale_tmp(folder)
    if removed:
        warnings.warn(f"removed {len(removed)} temporary file(s) that an interrupted run left in {folder}",
                      stacklevel=2)  # fmt: skip
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise RunFolderError(f"{what} {folder} has {free / 2**20:.0f} MiB free; this run needs about "
                             f"{need_bytes / 2**20:.0f} MiB there (checkpoints and results)")  # fmt: skip
