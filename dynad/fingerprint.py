"""The data fingerprint: one hash of the files a model was trained on (names, sizes and contents).

Stored models are keyed on it, so replacing the training images of a folder trains new models instead of silently
reusing the old ones, while the same files at another path reuse them.

    fp = data_fingerprint(paths, root)     # "sha256:<16 hex>", the same for the same files under any root

Each file's content hash is cached per folder in `$DYNAD_CACHE` (default `~/.cache/dynad`) under
`fingerprints/<hash of the folder>.json`, keyed on (size, mtime_ns, inode): a second call reads every file's
`stat` only, and rehashes just the files that changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from dynad.provenance import write_json

_CHUNK = 1 << 20


def cache_dir() -> Path:
    return Path(os.environ.get("DYNAD_CACHE") or Path.home() / ".cache" / "dynad") / "fingerprints"


def _file_hash(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_cache(path: Path) -> dict[str, list]:
    try:
        return json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # missing or damaged: recomputed (the cache only saves time)


def data_fingerprint(paths: Iterable[str | Path], root: str | Path) -> str:
    """Hash of (path relative to `root`, size, content hash) of every file, in sorted order."""
    root = Path(root).resolve()
    prefix = str(root) + os.sep
    files = sorted({os.path.abspath(p) for p in paths})  # strings: 10,000 Path objects cost more than the stats
    cache_file = cache_dir() / f"{hashlib.sha256(str(root).encode()).hexdigest()[:16]}.json"
    cache = _read_cache(cache_file)
    fresh: dict[str, list] = {}
    h = hashlib.sha256()
    for p in files:
        rel = p[len(prefix):].replace(os.sep, "/") if p.startswith(prefix) else p
        st = os.stat(p)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        entry = cache.get(rel)
        digest = entry[3] if entry and entry[:3] == stamp else _file_hash(Path(p))
        fresh[rel] = [*stamp, digest]
        h.update(f"{rel}|{st.st_size}|{digest}\n".encode())
    if any(cache.get(k) != v for k, v in fresh.items()):
        try:  # train and test files of a folder share one cache file
            write_json(cache_file, {"root": str(root), "files": {**cache, **fresh}})
        except OSError:
            pass  # a read-only home: the fingerprint is still right, only slower next time
    return "sha256:" + h.hexdigest()[:16]
