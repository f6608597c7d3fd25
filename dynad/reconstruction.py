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
    t: int | torch.Tensor,
    t_prev: int | torch.Tensor,
    eta: float,
    keep_noise: bool | torch.Tensor = True,
) -> torch.Tensor:
    """Steps (1)-(5) above for a batch (B, C, h, w); t and t_prev are ints or (B,) tensors, one step per image.
    (5') where keep_noise is False (a bool, or a (B,) bool tensor per image)."""
    t_batch = torch.as_tensor(t, dtype=torch.long).expand(z_t.shape[0])  # (B,)
    t_prev_batch = torch.as_tensor(t_prev, dtype=torch.long).expand(z_t.shape[0])  # (B,)
    a_t = schedule.abar(t_batch).to(z_t.device).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    a_prev = schedule.abar(t_prev_batch).to(z_t.device).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    eps = unet(z_t, t_batch.to(z_t.device)).sample.float()  # (1)
    z_tilde = a_t.sqrt() * z0 + (1 - a_t).sqrt() * eps  # (2)
    eps_hat = eps - eta * (1 - a_t).sqrt() * (z_tilde - z_t)  # (3)
    z0_pred = (z_t - (1 - a_t).sqrt() * eps_hat) / a_t.sqrt()  # (4)
    keep = torch.as_tensor(keep_noise, device=z_t.device).float().expand(z_t.shape[0]).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return a_prev.sqrt() * z0_pred + keep * (1 - a_prev).sqrt() * eps_hat  # (5), or (5') where keep is 0


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

    `drop_first_noise`: step (5') at each image's first step. `scale_t`: the step whose abar scales the start, per
    image, when it is not T_hat (the reference code's adaptation).

    One UNet call per DDIM step for the whole batch, each image at its own timestep. Every image's pairs are
    right-aligned so that all of them end at t_prev = -1; an image with fewer steps (T_hat < num_steps) sits out
    the first calls. This equals running each T_hat group on its own (the test keeps that loop as the reference).
    """
    t_hat = np.asarray(t_hat, dtype=int)
    scale_t = t_hat if scale_t is None else np.asarray(scale_t, dtype=int)
    if cfg.start not in ("noiseless", "noise"):
        raise ValueError(f"reconstruction.start must be 'noiseless' or 'noise', got {cfg.start!r}")
    pairs = {int(v): ddim_timesteps(int(v), cfg.num_steps, cfg.sampler_start) for v in np.unique(t_hat)}
    n_steps = max(len(p) for p in pairs.values())
    # (B, n_steps) tables of t and t_prev; -2 marks the steps an image sits out.
    ts = torch.full((len(t_hat), n_steps), -2, dtype=torch.long)
    ts_prev = torch.full((len(t_hat), n_steps), -2, dtype=torch.long)
    first = torch.empty(len(t_hat), dtype=torch.long)  # (B,) the column of each image's first step
    for i, v in enumerate(t_hat):
        p = torch.tensor(pairs[int(v)], dtype=torch.long)  # (n_i, 2)
        ts[i, n_steps - len(p) :], ts_prev[i, n_steps - len(p) :] = p[:, 0], p[:, 1]
        first[i] = n_steps - len(p)
    a = schedule.abar(torch.as_tensor(scale_t)).to(z0.device).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    z = a.sqrt() * z0
    if cfg.start == "noise":
        # Drawn group by group in increasing T_hat, the order of the grouped loop, so the noise ablation's
        # random stream (and its results) stay what they were.
        eps = torch.empty_like(z0)
        for value in pairs:
            idx = torch.as_tensor(np.flatnonzero(t_hat == value), device=z0.device)
            eps[idx] = torch.randn(z0[idx].shape, generator=generator).to(z0.device)
        z = z + (1 - a).sqrt() * eps
    for k in range(n_steps):
        active = ts[:, k] > -2
        keep = ~(first == k) if drop_first_noise else torch.ones(len(t_hat), dtype=torch.bool)  # (B,)
        if bool(active.all()):
            z = guided_step(unet, schedule, z, z0, ts[:, k], ts_prev[:, k], cfg.eta, keep.to(z0.device))
        else:
            idx = torch.nonzero(active)[:, 0].to(z0.device)
            z = z.clone()
            z[idx] = guided_step(unet, schedule, z[idx], z0[idx], ts[active, k], ts_prev[active, k], cfg.eta,
                                 keep[active].to(z0.device))  # fmt: skip
    return z
