"""Domain adaptation of the feature extractor, "fine-tuning" in the paper (Eq. 10; METHOD.md section 2).

    L_DA = sum_j ( 1 - cos( phi_j(x0), phi_j(x0_hat) ) )

x0_hat is the reconstruction of a training image x0 from itself through Algorithm 1 at a random step
T = T_max * p / num_levels, p ~ U{1 .. num_levels}, one draw per batch; the VAE and the UNet are frozen, so x0_hat
carries no gradient. The extractor learns that a normal image and its reconstruction are the same thing, which
removes the reconstruction's domain gap (blur, colour shifts) from the feature map.

    step_grid="paper":     scale the latent and step from round(T)
    step_grid="reference": scale by abar at the truncated T, step from T rounded half up to a multiple of the DDIM
                           steps (the official code; T_max 75, p 1: scale at 7, step from 10)

    loss="per_position": cos over channels at each position, then global average pooling (the paper)
    loss="flattened":    one cosine between the flattened maps (the reference code)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dynad.config import AdaptationConfig, DICConfig, ReconstructionConfig
from dynad.reconstruction import reconstruct
from dynad.training import BatchRandom


def da_loss(feats: dict[str, torch.Tensor], feats_hat: dict[str, torch.Tensor], layers, mode: str) -> torch.Tensor:
    """Eq. 10 averaged over the batch; feats {layer: (B, C, H, W)}."""
    total = 0
    for name in layers:
        a, b = feats[name].float(), feats_hat[name].float()
        if mode == "per_position":
            cos = F.cosine_similarity(a, b, dim=1).flatten(1).mean(dim=1)  # (B, H, W) -> (B,)
        elif mode == "flattened":
            cos = F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)  # (B, C*H*W) -> (B,)
        else:
            raise ValueError(f"adaptation.loss must be 'per_position' or 'flattened', got {mode!r}")
        total = total + (1 - cos).mean()
    return total


def make_loss(pipeline, cfg: AdaptationConfig, dic_cfg: DICConfig, rec_cfg: ReconstructionConfig, layers):
    """loss_fn(extractor, x0, rng) for `dynad.training.train`; `pipeline` supplies codec, unet, schedule."""

    def loss_fn(extractor: torch.nn.Module, x0: torch.Tensor, rng: BatchRandom) -> torch.Tensor:
        p = rng.batch_randint(1, cfg.num_levels + 1)  # one step for the whole global batch
        x = dic_cfg.t_max * p / cfg.num_levels
        if cfg.step_grid == "paper":
            t = scale_t = max(1, round(x))
        elif cfg.step_grid == "reference":
            s = rec_cfg.num_steps
            t, scale_t = max(s, math.floor(x / s + 0.5) * s), int(x)
        else:
            raise ValueError(f"adaptation.step_grid must be 'paper' or 'reference', got {cfg.step_grid!r}")
        n = x0.shape[0]
        with torch.no_grad():
            gen = rng.local_generator()
            z0 = pipeline.codec.encode(x0, gen)
            z0_hat = reconstruct(pipeline.unet, pipeline.schedule, z0, [t] * n, rec_cfg, gen,
                                 drop_first_noise=rec_cfg.drop_first_noise, scale_t=[scale_t] * n)  # fmt: skip
            x0_hat = pipeline.codec.decode(z0_hat, clamp=rec_cfg.clamp_decoded)
        return da_loss(extractor(x0), extractor(x0_hat), layers, cfg.loss)

    return loss_fn
