"""FLOPs of the paper path and a projection of the full reproduction's wall time on 1, 8 and 64 H100-class GPUs.

    python benchmarks/bench_scale.py [--dry-runs benchmarks/results/dry_run_*.json]

FLOPs are counted by torch's FlopCounterMode on the `meta` device (shapes only, nothing computed) for the paper
presets' real architectures: the 267 M UNet (training step: forward + backward; inference: forward), sd-vae-ft-mse
(encode, decode) and ResNet-34 up to layer3. The projection multiplies them by the published split sizes and the
presets' epochs (section ASSUMPTIONS below, also written into the JSON). The dry runs given (dynad run --dry-run
--out ...) add the measured seconds per UNet step on this machine. Results: benchmarks/results/scale.json.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
import torchvision
from diffusers import AutoencoderKL
from torch.utils.flop_counter import FlopCounterMode

from dynad.config import load_preset
from dynad.denoiser import build_unet
from dynad.dryrun import SD_VAE_FT_MSE
from dynad.features import FeatureExtractor
from dynad.provenance import environment, write_json

HERE = Path(__file__).resolve().parent

# Published split sizes (train normal images, test images) per category.
MVTEC = {"bottle": (209, 83), "cable": (224, 150), "capsule": (219, 132), "carpet": (280, 117), "grid": (264, 78),
         "hazelnut": (391, 110), "leather": (245, 124), "metal_nut": (220, 115), "pill": (267, 167),
         "screw": (320, 160), "tile": (230, 117), "toothbrush": (60, 42), "transistor": (213, 100),
         "wood": (247, 79), "zipper": (240, 151)}  # fmt: skip
VISA = {"candle": (900, 200), "capsules": (542, 160), "cashew": (450, 150), "chewinggum": (453, 150),
        "fryum": (450, 150), "macaroni1": (900, 200), "macaroni2": (900, 200), "pcb1": (904, 200),
        "pcb2": (901, 200), "pcb3": (905, 201), "pcb4": (904, 201), "pipe_fryum": (450, 150)}  # fmt: skip
BTAD = {"01": (400, 70), "02": (399, 230), "03": (1000, 441)}
PEAK_TFLOPS = 989.0  # H100 SXM, dense bf16
MFU = 0.30  # assumed sustained fraction of peak for this conv/attention UNet at batch 30 (not measured here)
MFU_LOW = 0.10  # a pessimistic bound: small 32 x 32 latents, GroupNorm and attention keep a GPU far from peak
DDP_EFFICIENCY = 0.90  # assumed when one category trains on several GPUs
OVERHEAD_MINUTES = 5.0  # assumed fixed cost per category: kernels, reading the images, figures, checkpoints
ASSUMPTIONS = [
    f"H100-class GPU: {PEAK_TFLOPS:.0f} TFLOP/s dense bf16 peak, {MFU:.0%} of it sustained (assumed, not measured; "
    f"also given at {MFU_LOW:.0%})",
    "per category: denoiser epochs x train images training samples (the preset's epochs; VisA's per-category table), "
    "latents precomputed once, domain adaptation epochs x train images reconstructions (10 DDIM steps), inference "
    "on every test image (10 DDIM steps at most), kNN and metrics neglected; the ablation notebook is not included",
    "categories are independent Ray tasks (one GPU each, longest first); with more GPUs than categories each "
    f"category trains with DDP on its share of GPUs at {DDP_EFFICIENCY:.0%} efficiency",
    "split sizes: the published MVTec AD, VisA (1cls) and BTAD splits",
    f"'with_overhead': plus {OVERHEAD_MINUTES:.0f} min per category that no FLOP count sees (notebook kernels, "
    "reading and resizing the images, figures, checkpoint writes; assumed, not measured on a GPU)",
]


def flops(fn) -> float:
    with FlopCounterMode(display=False) as fc:
        fn()
    return float(fc.get_total_flops())


def per_sample_flops() -> dict[str, float]:
    """FLOPs per image of each piece at 256 px (meta tensors)."""
    cfg = load_preset("mvtec")
    with torch.device("meta"):
        unet = build_unet(cfg.denoiser, 32, 4)
        vae = AutoencoderKL(**SD_VAE_FT_MSE)
        resnet = torchvision.models.resnet34(weights=None)
        ext = FeatureExtractor(resnet, cfg.features.layers, "meta")
        z, t, x = torch.randn(1, 4, 32, 32), torch.zeros(1, dtype=torch.long), torch.randn(1, 3, 256, 256)

        def unet_train():
            unet(z, t).sample.float().pow(2).mean().backward()

        def ext_train():
            sum(v.float().mean() for v in ext(x).values()).backward()

        return {
            "unet_train_step": flops(unet_train),
            "unet_forward": flops(lambda: unet(z, t)),
            "vae_encode": flops(lambda: vae.encode(x)),
            "vae_decode": flops(lambda: vae.decode(z)),
            "extractor_forward": flops(lambda: ext(x)),
            "extractor_train_step": flops(ext_train),
        }


def category_flops(f: dict[str, float], n_train: int, n_test: int, epochs: int, da_epochs: int, steps: int = 10) -> float:
    reconstruct = f["vae_encode"] + steps * f["unet_forward"] + f["vae_decode"]
    return (
        n_train * f["vae_encode"]  # latents, once
        + epochs * n_train * f["unet_train_step"]
        + da_epochs * n_train * (reconstruct + f["extractor_forward"] + f["extractor_train_step"])
        + n_test * (reconstruct + 2 * f["extractor_forward"])
    )


def categories() -> list[tuple[str, int, int, int, int]]:
    """(name, n_train, n_test, denoiser epochs, adaptation epochs) of the 30 categories, from the presets."""
    out = []
    for preset, table in (("mvtec", MVTEC), ("visa", VISA), ("btad", BTAD)):
        cfg = load_preset(preset)
        for cat, (n_train, n_test) in table.items():
            c = cfg.for_category(cat)
            out.append((f"{preset}/{cat}", n_train, n_test, c.denoiser.epochs, c.adaptation.epochs))
    return out


def makespan(hours: list[float], gpus: int) -> float:
    """Longest-first assignment of independent categories to GPUs; with more GPUs than categories, DDP shares."""
    if gpus >= len(hours):
        share = gpus // len(hours)
        speedup = 1 if share == 1 else share * DDP_EFFICIENCY
        return max(hours) / speedup
    loads = [0.0] * gpus
    for h in sorted(hours, reverse=True):
        loads[loads.index(min(loads))] += h
    return max(loads)


def measured_hours(run: dict, n_train: int, n_test: int, epochs: int, da_epochs: int) -> float:
    """One category's hours from a dry run's measured seconds per UNet and adaptation step and per test image."""
    s, steps = run["stages"], math.ceil(n_train / run["batch"])
    seconds = (epochs * steps * s["denoiser"]["seconds_per_step"]
               + da_epochs * steps * s["adaptation"]["seconds_per_step"]
               + n_test * s["inference"]["seconds_per_image"])  # fmt: skip
    return seconds / 3600


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-runs", nargs="*", type=Path, default=sorted((HERE / "results").glob("dry_run_*.json")))
    p.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    args = p.parse_args()
    f = per_sample_flops()
    rate = PEAK_TFLOPS * 1e12 * MFU
    cats = categories()
    per_cat = {name: category_flops(f, n, m, e, da) for name, n, m, e, da in cats}
    hours = [v / rate / 3600 for v in per_cat.values()]
    result = {
        "gflops_per_image": {k: round(v / 1e9, 2) for k, v in f.items()},
        "total_pflops": round(sum(per_cat.values()) / 1e15, 1),
        "category_hours_on_one_gpu": {k: round(v / rate / 3600, 2) for k, v in per_cat.items()},
        "projected_wall_hours": {str(g): round(makespan(hours, g), 2) for g in (1, 8, 64)},
        "projected_wall_hours_at_low_mfu": {str(g): round(makespan([h * MFU / MFU_LOW for h in hours], g), 2)
                                            for g in (1, 8, 64)},  # fmt: skip
        "projected_wall_hours_with_overhead": {
            str(g): round(makespan([h + OVERHEAD_MINUTES / 60 for h in hours], g), 2) for g in (1, 8, 64)
        },
        "assumptions": ASSUMPTIONS,
        "measured_dry_runs": [],
        **environment(),
    }
    runs = [(path, json.loads(path.read_text())) for path in args.dry_runs]
    for path, r in runs:
        s = r["stages"]["denoiser"]
        step = s.get("seconds_per_step")
        result["measured_dry_runs"].append({
            "file": path.name, "device": r["device"], "batch": r["batch"], "unet_seconds_per_step": step,
            "peak_memory_gb": round(s["peak_memory_gb"], 2),
            "implied_gflops_per_second": round(r["batch"] * f["unet_train_step"] / step / 1e9, 1) if step else None,
        })  # fmt: skip
    # A GPU dry run at the presets' batch (30, both trained stages) replaces the assumed MFU with measured step times.
    gpu_runs = [(path, r) for path, r in runs if r["device"].startswith("cuda") and r["batch"] == 30]
    if gpu_runs:
        path, run = gpu_runs[0]
        measured = [measured_hours(run, n, m, e, da) for _, n, m, e, da in cats]
        result["measured_projection"] = {
            "from": path.name,
            "note": "per category: epochs x steps x the measured s/step of the UNet and of adaptation, plus test "
                    "images x the measured s/image; the same makespan rule as above",
            "category_hours_on_one_gpu": {name: round(h, 3) for (name, *_), h in zip(cats, measured)},
            "wall_hours": {str(g): round(makespan(measured, g), 2) for g in (1, 8, 64)},
            "wall_hours_with_overhead": {
                str(g): round(makespan([h + OVERHEAD_MINUTES / 60 for h in measured], g), 2) for g in (1, 8, 64)
            },
            "unet_fraction_of_peak": round(run["batch"] * f["unet_train_step"] / run["stages"]["denoiser"]["seconds_per_step"]
                                           / (PEAK_TFLOPS * 1e12), 3),  # fmt: skip
        }
    write_json(args.out, result)
    keys = ("gflops_per_image", "total_pflops", "projected_wall_hours", "projected_wall_hours_at_low_mfu",
            "projected_wall_hours_with_overhead", "measured_dry_runs", "measured_projection")
    print(json.dumps({k: result[k] for k in keys if k in result}, indent=1))
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
