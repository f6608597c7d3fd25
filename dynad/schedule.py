"""The DDPM noise schedule (METHOD.md section 1) and the forward process.

Notation (0-based steps, as the reference code indexes them):
    beta_t        linear from beta_start to beta_end, t = 0 .. T-1
    abar_t        prod_{i <= t} (1 - beta_i)                   (`alphas_cumprod[t]`)
    abar_{-1}     1, the clean end of the chain                 (`abar(-1)`)
    q(z_t | z_0)  = N(sqrt(abar_t) z_0, (1 - abar_t) I)

The whole state is arrays built in __init__; nothing is set later, so a sampler derives its (t, t_prev) pairs
from an explicit list (see `dynad.reconstruction.ddim_timesteps`).
"""

from __future__ import annotations

import torch


class NoiseSchedule:
    def __init__(self, num_train_timesteps: int = 1000, beta_start: float = 0.0015, beta_end: float = 0.0195):
        self.num_train_timesteps = num_train_timesteps
        # float64 for the cumulative product, as diffusers and the reference code do before casting.
        self.betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)

    def abar(self, t: int | torch.Tensor) -> torch.Tensor:
        """abar_t as float32, with abar_{-1} = 1; `t` an int or a (B,) long tensor."""
        padded = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod])
        t = torch.as_tensor(t)
        return padded[t.cpu() + 1].float()

    def add_noise(self, z0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """z_t = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps, per sample; z0, eps (B, C, H, W), t (B,)."""
        a = self.abar(t).to(z0.device).view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        return a.sqrt() * z0 + (1 - a).sqrt() * eps
