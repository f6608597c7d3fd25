"""The autoencoder E, D of the latent space (METHOD.md sections 1 and 4.4).

    z0    = s * E(x0)          `LatentCodec.encode`   (s = scaling_factor = 0.18215; posterior mean or a sample)
    x0_hat = D(z0_hat / s)     `LatentCodec.decode`

This is the one place where the scaling factor is applied. `autoencoder.source` picks E, D:
    a diffusers AutoencoderKL folder or cached repo id   the paper presets: sd-vae-ft-mse (never downloaded)
    "train"                                              a small AutoencoderKL trained on the category
    "taef2", or a folder of <name>_encoder/decoder.pth   a pretrained TAESD-family tiny autoencoder
                                                         (dynad.taesd; TAEF2 ships with the package)
    a diffusers AutoencoderTiny folder                   the same family in diffusers' format
The tiny autoencoders are deterministic (no posterior). With `scaling_factor: null` the scale is measured:
s = 1 / std of the training latents, so that z0 has unit variance as the noise schedule assumes.
For the pixel-space ablation the codec is the identity.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny

from dynad import taesd
from dynad.config import AutoencoderConfig
from dynad.training import BatchRandom


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights that are not on this machine; the message says how to place them."""


Autoencoder = AutoencoderKL | AutoencoderTiny | taesd.TinyAutoencoder


class LatentCodec(torch.nn.Module):
    def __init__(self, vae: Autoencoder | None, scaling_factor: float = 1.0, posterior: str = "mean"):
        super().__init__()
        self.vae = vae  # None: the identity (pixel-space ablation)
        self.scaling_factor = scaling_factor if vae is not None else 1.0
        self.posterior = posterior

    @property
    def is_variational(self) -> bool:
        return isinstance(self.vae, AutoencoderKL)

    def _raw_encode(self, x: torch.Tensor) -> torch.Tensor:
        """Unscaled latent of a deterministic (tiny) autoencoder."""
        if isinstance(self.vae, AutoencoderTiny):
            return self.vae.encode(x).latents
        return self.vae.encode(x)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x (B, 3, H, W) in [-1, 1] -> z0 (B, C, H/f, W/f)."""
        if self.vae is None:
            return x
        if not self.is_variational:
            return self._raw_encode(x) * self.scaling_factor
        dist = self.vae.encode(x).latent_dist
        z = dist.sample(generator) if self.posterior == "sample" else dist.mean
        return z * self.scaling_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """z (B, C, h, w) -> x (B, 3, H, W), clamped to [-1, 1] unless `clamp` is False (the reference code)."""
        if self.vae is None:
            x = z
        elif isinstance(self.vae, taesd.TinyAutoencoder):
            x = self.vae.decode(z / self.scaling_factor)
        else:
            x = self.vae.decode(z / self.scaling_factor).sample
        return x.clamp(-1, 1) if clamp else x

    @torch.no_grad()
    def posterior_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled posterior mean and std (B, C, h, w) each, so the denoiser can be trained on precomputed latents."""
        if self.vae is None:
            return x, torch.zeros_like(x)
        if not self.is_variational:
            z = self._raw_encode(x) * self.scaling_factor
            return z, torch.zeros_like(z)
        dist = self.vae.encode(x).latent_dist
        return dist.mean * self.scaling_factor, dist.std * self.scaling_factor

    @property
    def downsampling(self) -> int:
        if self.vae is None:
            return 1
        if not self.is_variational:
            return 8  # the TAESD family: three stride-2 stages
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        if self.vae is None:
            return 3
        if isinstance(self.vae, taesd.TinyAutoencoder):
            return self.vae.latent_channels
        return self.vae.config.latent_channels

    def architecture(self) -> dict | None:
        """What rebuilds `vae` before its weights are loaded (stored in pipeline.pt)."""
        if self.vae is None:
            return None
        if isinstance(self.vae, taesd.TinyAutoencoder):
            return self.vae.arch
        kind = "diffusers_tiny" if isinstance(self.vae, AutoencoderTiny) else "diffusers_kl"
        return {"kind": kind, "config": dict(self.vae.config)}


def autoencoder_from_architecture(arch: dict) -> Autoencoder:
    if arch.get("kind") == "taesd":
        return taesd.TinyAutoencoder.from_arch(arch)
    if arch.get("kind") == "diffusers_tiny":
        return AutoencoderTiny.from_config(arch["config"])
    if arch.get("kind") == "diffusers_kl":
        return AutoencoderKL.from_config(arch["config"])
    return AutoencoderKL.from_config(arch)  # older checkpoints stored the bare AutoencoderKL config


def latent_scale(latents: torch.Tensor) -> float:
    """1 / std of unscaled training latents (the diffusers convention for choosing `scaling_factor`)."""
    return round(float(1.0 / latents.float().std().clamp_min(1e-6)), 4)  # 4 decimals: the same at any thread count


def set_latent_scale(codec: LatentCodec, moments: torch.Tensor, scaling_factor: float | None) -> float:
    """Give `codec` its scale s, the configured one or (None) measured on the training moments, (N, 2C, h, w)
    unscaled: unit-variance latents, as the noise schedule assumes. Returns s; the caller scales the moments."""
    s = latent_scale(moments[:, : codec.latent_channels]) if scaling_factor is None else scaling_factor
    codec.scaling_factor = s
    return s


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
        scaling_factor=cfg.scaling_factor if cfg.scaling_factor is not None else 1.0,
        mid_block_add_attention=cfg.mid_block_attention,
        act_fn="silu",
    )


def load_pretrained_vae(source: str) -> Autoencoder:
    """A pretrained autoencoder from this machine: a TAESD-family pair (built-in "taef2" or a folder), a diffusers
    AutoencoderTiny or AutoencoderKL folder, or a repo id in the local Hugging Face cache (sd-vae-ft-mse)."""
    path = taesd.resolve(source)
    if not path.exists() and (path.is_absolute() or source.startswith(".")):  # a path (~ expanded), not a repo id
        raise WeightsNotFoundError(
            f"autoencoder.source = {source!r}: no such file or folder (a folder of a TAESD-family _encoder.pth and "
            f"_decoder.pth pair, or of a diffusers AutoencoderTiny or AutoencoderKL; a Hugging Face repo id in the "
            f"local cache; built in: {', '.join(taesd.BUILTIN)}; or train)"
        )
    if taesd.is_taesd_folder(path):
        return taesd.load_tiny_autoencoder(path)  # its own errors name the file and the mismatched keys
    try:
        with warnings.catch_warnings():
            # diffusers passes huggingface_hub an argument that it deprecates, with a warning about "Downloading to a
            # local directory": misleading here, where nothing is downloaded.
            warnings.filterwarnings("ignore", message="The `local_dir_use_symlinks` argument is deprecated")
            if (path / "config.json").is_file() and "AutoencoderTiny" in (path / "config.json").read_text():
                return AutoencoderTiny.from_pretrained(path, local_files_only=True)
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
            f"Use autoencoder.source=taef2 (shipped with dynad) or autoencoder.source=train to train a small one "
            f"instead. "
            f"({type(e).__name__}: {e})"
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
