"""The latent denoiser eps_theta (METHOD.md section 1): a diffusers UNet2DModel trained with the epsilon loss.

    t ~ U{0 .. T-1} (or below DenoiserConfig.max_train_timestep),  eps ~ N(0, I)
    z_t  = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps
    loss = || eps - eps_theta(z_t, t) ||^2

Trained on normal images only, on latents precomputed once (posterior mean and std), so an epoch costs UNet
passes only. Training starts from scratch, or fine-tunes an existing denoiser (`DenoiserConfig.init_from`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from dynad.config import ConfigError, DenoiserConfig
from dynad.schedule import NoiseSchedule
from dynad.training import BatchRandom


def build_unet(cfg: DenoiserConfig, sample_size: int, channels: int) -> UNet2DModel:
    try:
        return _unet(cfg, sample_size, channels)
    except ValueError as e:  # diffusers' words for an unknown block type or lists of different lengths
        raise ConfigError(f"denoiser: diffusers' UNet2DModel refuses these settings: {e}") from None


def check_unet(cfg: DenoiserConfig) -> None:
    """Build the UNet on the meta device (no memory, no random numbers drawn), so that settings diffusers refuses
    fail before the autoencoder is trained; its latent size and channels are not known yet and do not matter here."""
    with torch.device("meta"):
        build_unet(cfg, 32, 4)


def _unet(cfg: DenoiserConfig, sample_size: int, channels: int) -> UNet2DModel:
    # Every UNet2DModel setting is spelled out: a diffusers default that changes would otherwise change our numbers.
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=cfg.block_out_channels,
        layers_per_block=cfg.layers_per_block,
        down_block_types=cfg.down_block_types,
        up_block_types=cfg.up_block_types,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=cfg.norm_num_groups,
        resnet_time_scale_shift=cfg.resnet_time_scale_shift,
        dropout=cfg.dropout,
        time_embedding_type="positional",
        flip_sin_to_cos=True,
        freq_shift=0,
        act_fn="silu",
        norm_eps=1e-5,
        downsample_padding=1,
        downsample_type="conv",
        upsample_type="conv",
        add_attention=True,
        center_input_sample=False,
    )


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def epsilon_loss(schedule: NoiseSchedule, sample_posterior: bool, max_timestep: int | None = None):
    """The loss over rows of (B, 2C, h, w): posterior mean and std stacked on the channel axis; t below max_timestep."""
    t_high = schedule.num_train_timesteps if max_timestep is None else min(max_timestep, schedule.num_train_timesteps)

    def loss_fn(unet: UNet2DModel, moments: torch.Tensor, rng: BatchRandom) -> torch.Tensor:
        mean, std = moments.chunk(2, dim=1)  # (B, C, h, w) each
        row = mean.shape[1:]  # (C, h, w)
        z0 = mean + std * rng.randn(*row).to(mean.device) if sample_posterior else mean
        t = rng.randint(0, t_high).to(z0.device)
        eps = rng.randn(*row).to(z0.device)
        z_t = schedule.add_noise(z0, eps, t)
        return F.mse_loss(unet(z_t, t).sample.float(), eps)

    return loss_fn


def denoiser_checkpoint(source: str | Path) -> Path:
    """The denoiser checkpoint file that `source` names: the file itself, or the one in a folder such as a run's
    `models/`; FileNotFoundError names what is wrong."""
    path = Path(source).expanduser()
    if path.is_dir():
        found = sorted(path.glob("**/denoiser-*.pt"))  # the models folder names each by its config hash
        if len(found) != 1:
            names = ", ".join(str(f.relative_to(path)) for f in found) or "none"
            raise FileNotFoundError(f"{path}: {len(found)} denoiser-*.pt files to fine-tune from ({names}); "
                                    "name the file in denoiser.init_from")  # fmt: skip
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"denoiser checkpoint {path} to fine-tune from does not exist")
    return path


def load_unet_weights(unet: UNet2DModel, source: str | Path) -> None:
    """Initialise from a denoiser checkpoint file (ours) or a folder holding exactly one, e.g. a run's `models/`."""
    path = denoiser_checkpoint(source)
    state = torch.load(path, map_location="cpu", weights_only=False)
    try:
        unet.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ConfigError(f"denoiser.init_from: {path}: its UNet does not match the denoiser settings ({e})") from None
