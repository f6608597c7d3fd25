"""Reconstruction with guided deterministic DDIM from a noiseless scaled start (Algorithm 1; METHOD.md section 4).

Notation (0-based steps, abar_{-1} = 1, see `dynad.schedule`):
    z0       latent of the input (the condition of the implicit guidance)
    T_hat    the image's step from DIC
    z_T      start: sqrt(abar_T_hat) z0            ("noiseless", the paper)
                    sqrt(abar_T_hat) z0 + sqrt(1 - abar_T_hat) eps   ("noise", ablation)
    eta      guidance weight of Eq. 8 (the DDIM stochasticity sigma is 0 throughout)

One step from t to t_prev:
    (1) eps       = eps_theta(z_t, t)
    (2) z_tilde   = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps                 the input, noised with the predicted noise
    (3) eps_hat   = eps - eta * sqrt(1 - abar_t) * (z_tilde - z_t)         Eq. 8 (DDAD's conditioning)
    (4) z0_pred   = (z_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t)
    (5) z_{t_prev} = sqrt(abar_t_prev) z0_pred + sqrt(1 - abar_t_prev) eps_hat
    (5') z_{t_prev} = sqrt(abar_t_prev) z0_pred             first step with drop_first_noise (the reference code's
                                                            fixed-step sampler, used for Table 4 and adaptation)
With eta = 0, (3) is eps_hat = eps and the step is plain DDIM.
"""

from __future__ import annotations

import numpy as np
import torch

from dynad.config import ReconstructionConfig
from dynad.schedule import NoiseSchedule


def ddim_timesteps(t_hat: int, num_steps: int, sampler_start: str = "t_hat") -> list[tuple[int, int]]:
    """The explicit (t, t_prev) pairs of the sampler, ending at t_prev = -1 (clean).

    sampler_start="t_hat": the first UNet call is at T_hat (paper), e.g. T_hat 20, 10 steps: (20,18) ... (2,-1).
    sampler_start="t_hat_minus_step": the reference code's (T_hat-s, ...): (18,16) ... (0,-1), same start z_T.
    """
    if t_hat < 1:
        raise ValueError(f"T_hat must be at least 1, got {t_hat}")
    grid = [int(v) for v in np.unique(np.round(np.linspace(t_hat, 0, num_steps + 1)))[::-1]]  # t_hat .. 0
    if sampler_start == "t_hat":
        ts = grid[:-1]
    elif sampler_start == "t_hat_minus_step":
        ts = grid[1:]
    else:
        raise ValueError(f"reconstruction.sampler_start must be 't_hat' or 't_hat_minus_step', got {sampler_start!r}")
    return list(zip(ts, ts[1:] + [-1]))


def guided_step(
    unet: torch.nn.Module,
    schedule: NoiseSchedule,
    z_t: torch.Tensor,
    z0: torch.Tensor,
    t: int,
    t_prev: int,
    eta: float,
    keep_noise: bool = True,
) -> torch.Tensor:
    """Steps (1)-(5) above for a batch (B, C, h, w) at one common t; (5') when keep_noise is False."""
    a_t, a_prev = schedule.abar(t).to(z_t.device), schedule.abar(t_prev).to(z_t.device)
    t_batch = torch.full((z_t.shape[0],), t, device=z_t.device, dtype=torch.long)
    eps = unet(z_t, t_batch).sample.float()  # (1)
    z_tilde = a_t.sqrt() * z0 + (1 - a_t).sqrt() * eps  # (2)
    eps_hat = eps - eta * (1 - a_t).sqrt() * (z_tilde - z_t)  # (3)
    z0_pred = (z_t - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()  # (4)
    if not keep_noise:
        return a_prev.sqrt() * z0_pred  # (5')
    return a_prev.sqrt() * z0_pred + (1 - a_prev).sqrt() * eps_hat  # (5)


@torch.no_grad()
def reconstruct(
    unet: torch.nn.Module,
    schedule: NoiseSchedule,
    z0: torch.Tensor,
    t_hat: np.ndarray | list[int],
    cfg: ReconstructionConfig,
    generator: torch.Generator | None = None,
    drop_first_noise: bool = False,
    scale_t: np.ndarray | list[int] | None = None,
) -> torch.Tensor:
    """z0 (B, C, h, w) and one T_hat per image -> z0_hat (B, C, h, w).

    `drop_first_noise`: step (5') at the first step. `scale_t`: the step whose abar scales the start, per image,
    when it is not T_hat (the reference code's adaptation). Images are grouped by (T_hat, scale step) so that each
    group shares its timesteps (a batch has at most |B| + 1 groups).
    """
    t_hat = np.asarray(t_hat, dtype=int)
    scale_t = t_hat if scale_t is None else np.asarray(scale_t, dtype=int)
    out = torch.empty_like(z0)
    for value, scale in np.unique(np.stack([t_hat, scale_t], axis=1), axis=0):  # (groups, 2)
        idx = torch.as_tensor(np.flatnonzero((t_hat == value) & (scale_t == scale)), device=z0.device)
        y = z0[idx]  # (b, C, h, w)
        a = schedule.abar(int(scale)).to(y.device)
        if cfg.start == "noiseless":
            z = a.sqrt() * y
        elif cfg.start == "noise":
            eps = torch.randn(y.shape, generator=generator).to(y.device)
            z = a.sqrt() * y + (1 - a).sqrt() * eps
        else:
            raise ValueError(f"reconstruction.start must be 'noiseless' or 'noise', got {cfg.start!r}")
        for i, (t, t_prev) in enumerate(ddim_timesteps(int(value), cfg.num_steps, cfg.sampler_start)):
            z = guided_step(unet, schedule, z, y, t, t_prev, cfg.eta, keep_noise=not (drop_first_noise and i == 0))
        out[idx] = z
    return out
