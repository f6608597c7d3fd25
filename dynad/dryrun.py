"""A paper-scale dry run: the preset's real architectures, a few steps of every stage, on synthetic images.

    dynad run --preset mvtec --dry-run [--dry-run-steps 3] [--dry-run-batch 1] [--set ...]

It proves that the paper path runs end to end on a machine without the data or the weights, and measures what a
step costs there: the 267 M-parameter UNet, sd-vae-ft-mse (its architecture with random weights when the weights
are absent, labelled so), the ResNet-34 extractor (random when its file is absent, labelled so), `steps` optimizer
steps of each trained stage at batch `batch` through dynad.training.train (without checkpoints), the kNN, and
inference on a few images of the built-in synthetic data at the preset's image size. The numbers it prints are
costs, never results.
"""

from __future__ import annotations

import dataclasses
import resource
import time
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL

from dynad import distributed, synthetic
from dynad.autoencoder import (
    LatentCodec, WeightsNotFoundError, build_small_vae, load_pretrained_vae, set_latent_scale, vae_loss,
)  # fmt: skip
from dynad.checks import check_config
from dynad.config import ConfigError, ExperimentConfig, apply_overrides
from dynad.denoiser import build_unet, count_parameters, epsilon_loss
from dynad.dic import DynamicConditioning
from dynad.domain_adaptation import make_loss
from dynad.features import build_extractor
from dynad.pipeline import DynAD
from dynad.schedule import NoiseSchedule
from dynad.training import train

# The architecture of stabilityai/sd-vae-ft-mse (its config.json): 4 levels, factor 8, 4 latent channels, 83.7 M
# parameters. Used with random weights when the pretrained folder is not on this machine.
SD_VAE_FT_MSE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 256,
    "scaling_factor": 0.18215,
}


def _images(n: int, size: int, defect: str | None, seed: int) -> torch.Tensor:
    """(n, 3, size, size) in [-1, 1]: synthetic `board` images (normal when defect is None)."""
    arr = np.stack([synthetic.render("board", defect, size, [seed, i])[0] for i in range(n)])  # (n, H, W, 3) uint8
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 127.5 - 1  # (n, 3, H, W)


class _Meter:
    """Seconds per optimizer step (from the gaps between loss calls) and peak memory of each stage."""

    def __init__(self, device: torch.device):
        self.device, self.calls = device, []

    def wrap(self, loss_fn):
        def timed(model, batch, rng):
            self.calls.append(time.perf_counter())
            return loss_fn(model, batch, rng)

        return timed

    def start(self) -> None:
        self.calls = []
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        total = time.perf_counter() - self.t0
        gaps = np.diff(self.calls)  # each gap: forward, backward and optimizer step of one step
        out = {"seconds": total, "peak_memory_gb": self.peak_gb()}
        if len(gaps):
            out["seconds_per_step"] = float(gaps[-1])  # the last full step: no first-step allocation in it
            out["seconds_first_step"] = float(gaps[0])
        return out

    def peak_gb(self) -> float:
        """CUDA: peak allocated by torch in this stage. CPU: the process's peak resident memory so far."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: kB


def dry_run(cfg: ExperimentConfig, steps: int = 3, batch: int = 1, n_test: int = 2, progress: bool = True) -> dict:
    """Build, train `steps` steps of every stage at batch `batch`, fit the kNN, infer `n_test` images; a report."""
    if steps < 1 or batch < 1 or n_test < 1:
        raise ConfigError(f"dry run: steps, batch and test images must be >= 1 (got {steps}, {batch}, {n_test})")
    check_config(cfg)  # the settings a run would refuse (threads -2, T_max 0, ...) fail the dry run as well
    mp = distributed.precision(cfg)
    device = distributed.accelerator(cfg.device, mp).device
    size = cfg.data.image_size
    n_train = max(steps * batch, 2)
    # K needs K + 1 training images; the dry run has few, so K shrinks to what there is (a cost, not a result).
    k = min(cfg.dic.k, n_train - 1)
    cfg = apply_overrides(cfg, {"dic.k": k})
    train_images, test_images = _images(n_train, size, None, 0), _images(n_test, size, "missing", 1)
    run = {"device": cfg.device, "mixed_precision": mp, "accumulation_steps": cfg.gradient_accumulation_steps}
    meter, report = _Meter(device), {"preset": cfg.preset, "device": str(device), "image_size": size, "batch": batch,
                                     "steps": steps, "dic_k": k, "weights": {}, "parameters": {},
                                     "stages": {}}  # fmt: skip
    common = {"epochs": 1, "batch_size": batch, "checkpoint_every": 1, "seed": cfg.seed, "progress": progress, **run}

    # 1. Autoencoder: trained (small VAE), pretrained, or sd-vae-ft-mse's architecture with random weights.
    meter.start()
    if cfg.autoencoder.source == "train":
        vae = build_small_vae(cfg.autoencoder, size)
        train(vae, train_images, meter.wrap(vae_loss(cfg.autoencoder)), lr=cfg.autoencoder.lr,
              ckpt_path=None, config={}, desc="autoencoder", **common)  # fmt: skip
        report["weights"]["autoencoder"] = "small VAE, trained here for the dry run"
    else:
        try:
            vae = load_pretrained_vae(cfg.autoencoder.source)
            report["weights"]["autoencoder"] = f"pretrained: {cfg.autoencoder.source}"
        except WeightsNotFoundError:
            vae = AutoencoderKL(**SD_VAE_FT_MSE)
            report["weights"]["autoencoder"] = "sd-vae-ft-mse architecture, RANDOM weights (not on this machine)"
    codec = LatentCodec(vae, 1.0, cfg.autoencoder.posterior).to(device).eval()
    with torch.no_grad():
        moments = torch.cat(
            [torch.cat(codec.posterior_moments(train_images[i : i + batch].to(device)), 1).cpu()
             for i in range(0, n_train, batch)]  # fmt: skip
        )  # (N, 2C, h, w), unscaled
    report["latent_scaling_factor"] = set_latent_scale(codec, moments, cfg.autoencoder.scaling_factor)
    moments = moments * codec.scaling_factor
    report["stages"]["autoencoder"] = meter.stop()
    report["parameters"]["autoencoder"] = count_parameters(vae)

    # 2. Denoiser: the preset's UNet, `steps` steps of the epsilon loss.
    d = cfg.denoiser
    unet = build_unet(d, size // codec.downsampling, codec.latent_channels)
    report["parameters"]["denoiser"] = count_parameters(unet)
    meter.start()
    loss = epsilon_loss(NoiseSchedule(d.num_train_timesteps, d.beta_start, d.beta_end),
                        cfg.autoencoder.posterior == "sample")
    train(unet, moments, meter.wrap(loss), lr=d.lr, weight_decay=d.weight_decay, ckpt_path=None,
          config={}, desc="denoiser", **common)  # fmt: skip
    report["stages"]["denoiser"] = meter.stop()
    report["weights"]["denoiser"] = "random initialisation, trained here for the dry run"

    # 3. Feature extractor and its domain adaptation (Eq. 10).
    try:
        extractor = build_extractor(cfg.features)
    except WeightsNotFoundError:
        extractor = build_extractor(dataclasses.replace(cfg.features, weights="random"))
    report["weights"]["feature_extractor"] = extractor.weights_label
    report["parameters"]["feature_extractor"] = count_parameters(extractor)
    pipe = DynAD(cfg, codec, unet, extractor, DynamicConditioning(cfg.dic, cfg.reconstruction.num_steps), device)
    meter.start()
    a = cfg.adaptation
    train(extractor, train_images, meter.wrap(make_loss(pipe, a, cfg.dic, cfg.reconstruction, cfg.features.layers)),
          lr=a.lr, ckpt_path=None, config={}, desc="adaptation", find_unused_parameters=True,
          **common)  # fmt: skip
    report["stages"]["adaptation"] = meter.stop()

    # 4. kNN and inference (Algorithms 1 and 2, Eq. 9) on the test images.
    meter.start()
    pipe.dic.fit(pipe.knn_descriptors(train_images))
    out = pipe.infer_all(test_images, progress=False)
    maps = pipe.anomaly_maps(out["latent_map"], out["feature_map"])  # (n_test, S, S)
    inference = meter.stop()
    inference["seconds_per_image"] = inference["seconds"] / n_test
    report["stages"]["inference"] = inference
    report["t_hat"] = [int(t) for t in out["t_hat"]]
    report["map_shape"] = list(maps.shape)
    report["maps_finite"] = bool(torch.isfinite(maps).all())
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a few readable lines."""
    lines = [f"dry run of preset {report['preset']} on {report['device']}: {report['image_size']} px, batch "
             f"{report['batch']}, {report['steps']} steps per trained stage (costs, not results)"]  # fmt: skip
    for name, n in report["parameters"].items():
        lines.append(f"  {name:<18} {n / 1e6:8.1f} M parameters   {report['weights'].get(name, '')}")
    for name, s in report["stages"].items():
        step = f"{s['seconds_per_step']:8.2f} s/step" if "seconds_per_step" in s else " " * 15
        per_image = f"  {s['seconds_per_image']:.2f} s/image" if "seconds_per_image" in s else ""
        lines.append(f"  {name:<18} {s['seconds']:8.1f} s  {step}  peak {s['peak_memory_gb']:.2f} GB{per_image}")
    lines.append(f"  maps {report['map_shape']} finite: {report['maps_finite']}; T_hat {report['t_hat']}")
    return "\n".join(lines)
