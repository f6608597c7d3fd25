"""Time and peak memory of the pixel metrics on a full MVTec AD-size test set (1,725 maps of 256 x 256).

    python benchmarks/bench_metrics.py [--n 1725] [--size 256] [--seed 0] [--out benchmarks/results/metrics.json]

Makes random ground-truth masks (elliptic blobs in about 1 image in 3) and smooth random float32 maps that tend
to light them, saves them to a temporary folder, then runs each metric in a fresh Python process that loads the
inputs and calls only that metric: pixel_auroc, pro (exact), pro (thresholds200) and evaluate (everything,
image and pixel level). Memory is the process's peak resident set size, resource.getrusage(RUSAGE_SELF).ru_maxrss:
`peak_gb` for the whole process (interpreter, libraries and the inputs included) and `added_gb` for the peak
above what the process held once the inputs were loaded. Results go to benchmarks/results/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

HERE = Path(__file__).resolve().parent
METRICS = ("pixel_auroc", "pro_exact", "pro_thresholds200", "evaluate")


def make_test_set(n: int, size: int, seed: int, chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """masks (n, size, size) bool with 1-3 elliptic blobs in ~1/3 of the images; maps (n, size, size) float32."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in np.flatnonzero(rng.random(n) < 1 / 3):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(size / 80, size / 8, 2)
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    maps = np.empty(masks.shape, dtype=np.float32)
    sigma = (0, size / 64, size / 64)
    for start in range(0, n, chunk):  # in chunks: float32 temporaries of `chunk` images only
        part = slice(start, start + chunk)
        noise = ndimage.gaussian_filter(rng.standard_normal(maps[part].shape, dtype=np.float32), sigma)
        signal = ndimage.gaussian_filter(masks[part].astype(np.float32), sigma)
        maps[part] = noise / noise.std() + 2 * signal
    return masks, maps


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux reports KiB


def worker(name: str, data: Path, shape: tuple[int, int, int]) -> dict:
    """Load the inputs, run one metric, and report its seconds, value and the process's peak memory."""
    from dynad import metrics

    # Raw files read straight into their arrays: no transient second copy to raise the baseline peak.
    masks = np.fromfile(data / "masks.bool", dtype=bool).reshape(shape)
    maps = np.fromfile(data / "maps.f32", dtype=np.float32).reshape(shape)
    loaded = peak_gb()
    calls = {
        "pixel_auroc": lambda: metrics.pixel_auroc(masks, maps),
        "pro_exact": lambda: metrics.pro(masks, maps, method="exact"),
        "pro_thresholds200": lambda: metrics.pro(masks, maps, method="thresholds200"),
        "evaluate": lambda: metrics.evaluate(masks.any(axis=(1, 2)), maps.max(axis=(1, 2)), masks, maps),
    }
    t0 = time.perf_counter()
    value = calls[name]()
    seconds = time.perf_counter() - t0
    peak = peak_gb()
    return {"seconds": seconds, "value": value, "peak_gb": peak, "loaded_gb": loaded, "added_gb": peak - loaded}


def make_files(data: Path, n: int, size: int, seed: int) -> dict:
    """Make the test set and write it as raw files into `data`; returns its description."""
    t0 = time.perf_counter()
    masks, maps = make_test_set(n, size, seed)
    masks.tofile(data / "masks.bool")
    maps.tofile(data / "maps.f32")
    return {
        "n_images": n,
        "size": size,
        "pixels": int(masks.size),
        "anomalous_images": int(masks.any(axis=(1, 2)).sum()),
        "anomalous_pixel_fraction": float(masks.mean()),
        "inputs_gb": (masks.nbytes + maps.nbytes) / 1e9,
        "make_seconds": time.perf_counter() - t0,
    }


def run_self(*args: str) -> dict:
    """This script in a fresh process; its last stdout line is JSON."""
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1725, help="test images (MVTec AD: 1,725 over the 15 categories)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "results/metrics.json")
    p.add_argument("--worker", choices=("make", *METRICS), help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker == "make":
        print(json.dumps(make_files(args.data, args.n, args.size, args.seed)))
        return 0
    if args.worker:
        print(json.dumps(worker(args.worker, args.data, (args.n, args.size, args.size))))
        return 0

    # This process stays small (no data, no torch) until the workers are done: Linux carries a parent's
    # ru_maxrss over into the children it starts, so a large parent would hide the workers' own peaks.
    sizes = ["--n", str(args.n), "--size", str(args.size)]
    with tempfile.TemporaryDirectory(prefix="dynad-bench-metrics-") as tmp:
        result = run_self("--worker", "make", "--data", tmp, "--seed", str(args.seed), *sizes)
        print(f"test set: {args.n} x {args.size} x {args.size}, {result['anomalous_images']} anomalous images, "
              f"{result['anomalous_pixel_fraction']:.4f} of the pixels anomalous ({result['make_seconds']:.1f} s)")  # fmt: skip
        result["metrics"] = {}
        for name in METRICS:
            r = result["metrics"][name] = run_self("--worker", name, "--data", tmp, *sizes)
            print(f"{name:18s} {r['seconds']:6.1f} s   peak {r['peak_gb']:.2f} GB (+{r['added_gb']:.2f} GB over inputs)")

    from dynad.provenance import environment, write_json

    result.update({
        "memory": "ru_maxrss of a fresh process that loads the inputs and runs one metric; "
        "peak_gb: whole process, loaded_gb: after loading the inputs, added_gb: peak above loaded",
        "cpus": os.cpu_count(),
        "machine_memory_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9,
        **environment(),
    })  # fmt: skip
    write_json(args.out, result)
    print(json.dumps(result["metrics"], indent=2))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
