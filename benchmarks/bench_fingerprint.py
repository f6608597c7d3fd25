"""Cost of the data fingerprint that keys stored models (dynad.fingerprint), cold and cached.

    python benchmarks/bench_fingerprint.py [--mtd ../shared/data/magnetic-tile] [--n 10000] [--size 128]
                                           [--out benchmarks/results/fingerprint.json]

Two data sets: the Magnetic Tile images as `make_index` lists them (1,344 images; then with their masks), and
`--n` generated RGB PNG files of `--size` px (random noise, so they do not compress) written to a temporary folder
that is removed afterwards. For each: the first call with an empty cache (every file read and hashed; the files
may sit in the OS page cache, which a real first run may not have), the second call (the cache: one `stat` per
file), and a call after one file was rewritten (that file rehashed). Each timing is the best of `--repeat` calls.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dynad import fingerprint
from dynad.data import make_index
from dynad.provenance import environment, write_json

HERE = Path(__file__).resolve().parent


def _timed(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(files: list[Path], root: Path, repeat: int) -> dict:
    cache = Path(os.environ["DYNAD_CACHE"]) / "fingerprints"

    def cold():
        shutil.rmtree(cache, ignore_errors=True)
        fingerprint.data_fingerprint(files, root)

    cold_s = _timed(cold, repeat)
    fingerprint.data_fingerprint(files, root)
    warm_s = _timed(lambda: fingerprint.data_fingerprint(files, root), repeat)
    one = files[len(files) // 2]

    def one_changed():
        os.utime(one, ns=(time.time_ns(), time.time_ns()))  # a new mtime: the cache entry no longer holds
        fingerprint.data_fingerprint(files, root)

    one_s = _timed(one_changed, repeat)
    size = sum(p.stat().st_size for p in files)
    return {"files": len(files), "megabytes": round(size / 1e6, 1), "first_call_s": round(cold_s, 3),
            "cached_call_s": round(warm_s, 3), "one_file_changed_s": round(one_s, 3),
            "first_call_mb_per_s": round(size / 1e6 / cold_s, 1)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mtd", type=Path, default=HERE.parent.parent / "shared" / "data" / "magnetic-tile")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path, default=HERE / "results" / "fingerprint.json")
    args = p.parse_args()
    result: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores", **environment()}
    with tempfile.TemporaryDirectory(prefix="dynad-fp-") as tmp:
        os.environ["DYNAD_CACHE"] = str(Path(tmp) / "cache")
        if args.mtd.is_dir():
            index = make_index("mtd", args.mtd, "magnetic_tile")
            images = [Path(x) for x in index.image_path]
            result["magnetic_tile_images"] = measure(images, args.mtd, args.repeat)
            masks = [Path(x) for x in index.mask_path.dropna()]
            result["magnetic_tile_images_and_masks"] = measure(images + masks, args.mtd, args.repeat)
        gen = Path(tmp) / "generated"
        gen.mkdir()
        rng = np.random.default_rng(0)
        files = []
        for i in range(args.n):
            f = gen / f"{i:05d}.png"
            Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(f)
            files.append(f)
        result[f"generated_{args.n}_png_{args.size}px"] = measure(files, gen, args.repeat)
    write_json(args.out, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
