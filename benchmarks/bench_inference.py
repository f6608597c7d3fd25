"""Per-image inference time by stage (kNN, encode, denoise, decode, maps) and images per second at batch 1 and 16.

    python benchmarks/bench_inference.py [--pipeline runs/demo/synthetic/board/eval/pipeline.pt] [--device cpu]
                                         [--threads 1]

Uses a fitted pipeline (default: the demo run of `make demo`; without one, it fits the `tiny` preset on a small
synthetic set first) and random-free inputs (synthetic test images at the pipeline's size). Results go to
benchmarks/results/inference.json, or inference_tiny.json for the tiny preset fitted here, so that a clone without
the demo run does not replace the demo pipeline's numbers (README) with the tiny preset's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from dynad import synthetic
from dynad.config import load_preset
from dynad.data import ImageDataset, make_index
from dynad.experiment import fit_pipeline
from dynad.pipeline import DynAD
from dynad.provenance import device_description, environment, set_threads, write_json

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent / "runs/demo/synthetic/board/eval/pipeline.pt"


def bench_data() -> Path:
    """A small synthetic set (board: 24 training, 24 test images) for the inputs and the fallback fit."""
    return synthetic.ensure(Path(tempfile.gettempdir()) / "dynad-bench-synth",
                            synthetic.SynthConfig(image_size=64, n_train=24, n_test_good=8, n_test_per_defect=4))  # fmt: skip


def test_images(pipe: DynAD, n: int) -> torch.Tensor:
    index = make_index("synthetic", bench_data(), "board")
    ds = ImageDataset(index[index.split == "test"].reset_index(drop=True), pipe.cfg.data.image_size)
    return torch.stack([ds[i % len(ds)]["image"] for i in range(n)])


def bench(pipe: DynAD, images: torch.Tensor, batch: int, repeats: int) -> dict:
    stages: dict[str, float] = {}
    pipe.infer(images[:batch])  # warm-up
    t0 = time.perf_counter()
    count = 0
    for r in range(repeats):
        for i in range(0, images.shape[0] - batch + 1, batch):
            pipe.infer(images[i : i + batch], timings=stages)
            count += batch
    total = time.perf_counter() - t0
    return {
        "batch": batch,
        "images": count,
        "images_per_second": count / total,
        "ms_per_image_by_stage": {k: 1000 * v / count for k, v in stages.items()},
        "ms_per_image_total": 1000 * total / count,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", type=Path, default=DEFAULT)
    p.add_argument("--device", default=None)
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=None,
                   help="default: benchmarks/results/inference.json (inference_tiny.json for the tiny preset)")
    args = p.parse_args(argv)
    set_threads(args.threads)
    if args.pipeline.is_file():
        pipe, source = DynAD.load(args.pipeline, device=args.device), str(args.pipeline)
        name = "inference.json"
    else:
        print(f"{args.pipeline} not found (run `make demo` first for the demo models); fitting the tiny preset", file=sys.stderr)
        cfg = load_preset("tiny", [f"device={args.device or 'auto'}"])
        pipe, _, _ = fit_pipeline(cfg, "synthetic", bench_data(), "board", Path(tempfile.gettempdir()) / "dynad-bench-models", False)
        source, name = "tiny preset fitted on the fly", "inference_tiny.json"
    out = args.out or HERE / "results" / name
    images = test_images(pipe, args.images)
    result = {
        "pipeline": source,
        "preset": pipe.cfg.preset,
        "image_size": pipe.cfg.data.image_size,
        "device": device_description(pipe.device),
        "torch_threads": torch.get_num_threads(),
        **environment(),
        "runs": [bench(pipe, images, 1, 1), bench(pipe, images, 16, 2)],
    }
    write_json(out, result)
    print(json.dumps(result["runs"], indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
