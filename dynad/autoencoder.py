"""The autoencoder E, D of the latent space (METHOD.md sections 1 and 4.4).

    z0    = s * E(x0)          `LatentCodec.encode`   (s = scaling_factor = 0.18215; posterior mean or a sample)
    x0_hat = D(z0_hat / s)     `LatentCodec.decode`

This is the one place where the scaling factor is applied. The paper presets load Stable Diffusion's
sd-vae-ft-mse from a local folder or the local Hugging Face cache (never downloaded); the demo trains a small
diffusers AutoencoderKL on the category's training images. For the pixel-space ablation the codec is the identity.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from dynad.config import AutoencoderConfig
from dynad.training import BatchRandom


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights that are not on this machine; the message says how to place them."""


class LatentCodec(torch.nn.Module):
    def __init__(self, vae: AutoencoderKL | None, scaling_factor: float = 1.0, posterior: str = "mean"):
        super().__init__()
        self.vae = vae  # None: the identity (pixel-space ablation)
        self.scaling_factor = scaling_factor if vae is not None else 1.0
        self.posterior = posterior

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (B, 3, H, W) in [-1, 1] -> z0 (B, C, H/f, W/f)."""
        if self.vae is None:
            return x
        dist = self.vae.encode(x).latent_dist
        z = dist.sample(generator) if self.posterior == "sample" else dist.mean
        return z * self.scaling_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C, h, w) -> x (B, 3, H, W), clamped to [-1, 1]."""
        if self.vae is None:
            return z.clamp(-1, 1)
        return self.vae.decode(z / self.scaling_factor).sample.clamp(-1, 1)

    @torch.no_grad()
    def posterior_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled posterior mean and std (B, C, h, w) each, so the denoiser can be trained on precomputed latents."""
        if self.vae is None:
            return x, torch.zeros_like(x)
        dist = self.vae.encode(x).latent_dist
        return dist.mean * self.scaling_factor, dist.std * self.scaling_factor

    @property
    def downsampling(self) -> int:
        if self.vae is None:
            return 1
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return 3 if self.vae is None else self.vae.config.latent_channels


def build_small_vae(cfg: AutoencoderConfig, image_size: int) -> AutoencoderKL:
    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=image_size,
        scaling_factor=cfg.scaling_factor,
        mid_block_add_attention=cfg.mid_block_attention,
        act_fn="silu",
    )


def load_pretrained_vae(source: str) -> AutoencoderKL:
    """sd-vae-ft-mse (or another diffusers AutoencoderKL) from a local folder or the local Hugging Face cache."""
    path = Path(source).expanduser()
    try:
        if path.exists():
            return AutoencoderKL.from_pretrained(path, local_files_only=True)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return AutoencoderKL.from_pretrained(source, local_files_only=True)
    except (OSError, ValueError) as e:
        raise WeightsNotFoundError(
            f"autoencoder weights {source!r} not found on this machine (dynad never downloads). Place the diffusers "
            f"folder of sd-vae-ft-mse (config.json + diffusion_pytorch_model.safetensors) somewhere and pass "
            f"--set autoencoder.source=/path/to/sd-vae-ft-mse, or fill the Hugging Face cache on a machine with "
            f"internet (huggingface-cli download stabilityai/sd-vae-ft-mse) and copy ~/.cache/huggingface here. "
            f"Use autoencoder.source=train to train a small one instead. ({type(e).__name__}: {e})"
        ) from e


def vae_loss(cfg: AutoencoderConfig) -> "callable":
    """L1 reconstruction plus a small KL term (the loss of the demo's small VAE)."""

    def loss_fn(vae: AutoencoderKL, x: torch.Tensor, rng: BatchRandom) -> torch.Tensor:
        dist = vae.encode(x).latent_dist
        eps = rng.randn(*dist.mean.shape[1:]).to(x.device)
        z = dist.mean + dist.std * eps
        rec = vae.decode(z).sample
        return F.l1_loss(rec, x) + cfg.kl_weight * dist.kl().mean()

    return loss_fn
