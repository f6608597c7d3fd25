"""The `cpu` preset on a real photographed surface with the four synthetic defect types painted on it.

    python benchmarks/real_surface.py [--mtd ../shared/data/magnetic-tile] [--preset cpu] [--threads 1]
                                      [--out benchmarks/results/real_surface.json]

Issue 8 measures dynad on real textured surfaces with defects of the four scales of `dynad synth`; this project has
one real surface, the Magnetic Tile photographs. The benchmark takes every third defect-free *training* image of
the Magnetic Tile split (sorted; the split's test images are never used), makes a folder data set of them with
`dynad synth --from-images` (150 train, 40 good test, 15 each of spot, scratch, patch and missing), runs
`dynad run --preset cpu --dataset folder` on it from scratch in a temporary folder, and writes the numbers, the
peers' (kNN distance, patch kNN), the validation self-check and the wall time to `--out`.

Caveat, said with the numbers: the `cpu` preset's inference settings were chosen on validation pseudo-defects that
include this surface, so this is a check that the maps are not inverted on a real photographed texture, not a
measurement on an unseen surface.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from dynad import synthetic
from dynad.config import load_preset
from dynad.data import make_index
from dynad.experiment import run_experiment
from dynad.provenance import versions, write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mtd", type=Path, default=ROOT.parent / "shared" / "data" / "magnetic-tile")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "results" / "real_surface.json")
    args = p.parse_args()
    if not (args.mtd / "MT_Free").is_dir():
        raise SystemExit(f"{args.mtd}: no Magnetic Tile data there (MT_Free/ missing); pass --mtd")
    index = make_index("mtd", args.mtd, "magnetic_tile")
    normals = sorted(index.image_path[(index.split == "train") & (index.label == 0)])[::3]
    work = Path(tempfile.mkdtemp(prefix="dynad-real-surface-"))
    t0 = time.perf_counter()
    synthetic.on_photographs(normals, work / "data", "mtd_surface")
    cfg = load_preset(args.preset, [f"threads={args.threads}"])
    m = run_experiment(cfg, "folder", work / "data", "mtd_surface", work / "run")
    seconds = time.perf_counter() - t0
    per_defect = (work / "run" / "per_defect.csv").read_text()
    write_json(args.out, {
        "command": f"python benchmarks/real_surface.py --preset {args.preset} --threads {args.threads}",
        "surface": "Magnetic Tile defect-free training photographs, every third (sorted), 256 px, defects painted by "
                   "dynad synth --from-images",
        "preset": args.preset, "threads": args.threads, "wall_seconds": round(seconds, 1),
        "image_auroc": m["image_auroc"], "pixel_auroc": m["pixel_auroc"], "pro": m["pro"],
        "baselines": m["baselines"], "validation": {k: m["validation"][k] for k in ("image_auroc", "pixel_auroc", "warning")},
        "per_defect_csv": per_defect, "run_folder": str(work / "run"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}, "versions": versions(),
        "caveat": "the cpu preset's inference settings were chosen on validation pseudo-defects that include this surface",
    })  # fmt: skip
    print(f"image {m['image_auroc']:.4f} pixel {m['pixel_auroc']:.4f} PRO {m['pro']:.4f} in {seconds / 60:.1f} min -> {args.out}")


if __name__ == "__main__":
    main()
