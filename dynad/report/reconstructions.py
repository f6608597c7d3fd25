"""What the fitted pipeline makes of images, for notebooks 01, 02 and the figures: samples, VAE and DIC
reconstructions, and the feature extractor's domain gap before and after adaptation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dynad import anomaly_map as am
from dynad.reconstruction import ddim_timesteps, guided_step


def _batches(x, size: int):
    for i in range(0, x.shape[0], size):
        yield x[i : i + size]


def sample_images(pipe, n: int, num_steps: int = 50, seed: int = 0):
    """n unconditional samples (n, 3, S, S): deterministic DDIM (sigma 0, guidance eta 0) from pure noise at T-1.

    With guidance weight 0 the guided step of Algorithm 1 is plain DDIM, so this reuses the method's own sampler.
    """
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        h = pipe.cfg.data.image_size // pipe.codec.downsampling
        z = torch.randn((n, pipe.codec.latent_channels, h, h), generator=gen).to(pipe.device)  # (n, C, h, w)
        zeros = torch.zeros_like(z)  # the condition; unused with eta = 0
        for t, t_prev in ddim_timesteps(pipe.schedule.num_train_timesteps - 1, num_steps):
            z = guided_step(pipe.unet, pipe.schedule, z, zeros, t, t_prev, eta=0.0)
        return pipe.codec.decode(z).float().cpu()


def vae_reconstructions(pipe, images):
    """D(E(x)) for images (N, 3, S, S): what the latent space alone keeps."""
    with torch.no_grad():
        out = [pipe.codec.decode(pipe.codec.encode(b.to(pipe.device))).float().cpu() for b in _batches(images, 16)]
    return torch.cat(out)


def dic_reconstructions(pipe, images, t_hat: int | None = None):
    """Algorithm 1 on images (N, 3, S, S): (reconstructions, T_hat per image)."""
    recs, ts = [], []
    gen = torch.Generator().manual_seed(pipe.cfg.seed)
    for b in _batches(images, pipe.cfg.data.batch_size):
        out = pipe.infer(b, t_hat=t_hat, generator=gen)
        recs.append(out["reconstruction"])
        ts.append(out["t_hat"])
    return torch.cat(recs), np.concatenate(ts)


def feature_gap(pipe, before, images) -> dict[str, Any]:
    """Feature maps between images and their DIC reconstructions with the un-adapted (`before`) and adapted extractor.

    Returns reconstruction (N, 3, S, S), t_hat (N,), before / after (N, S, S): the raw Eq. 9 feature maps.
    """
    before = before.to(pipe.device).eval()
    layers, size = pipe.cfg.features.map_layers, pipe.cfg.data.image_size
    recs, t_hat = dic_reconstructions(pipe, images)
    maps: dict[str, list] = {"before": [], "after": []}
    with torch.no_grad():
        for x, x_hat in zip(_batches(images, 16), _batches(recs, 16)):
            x, x_hat = x.to(pipe.device), x_hat.to(pipe.device)
            for name, ext in (("before", before), ("after", pipe.extractor)):
                maps[name].append(am.feature_map(ext(x), ext(x_hat), layers, size).float().cpu())
    return {"reconstruction": recs, "t_hat": t_hat, **{k: torch.cat(v) for k, v in maps.items()}}
