"""An independent re-implementation, for the tests, of what the official code (JustinTebbe/Dynamic-noise-AD @08b1271,
test.py, sample.py, feature_extractor.py) computes for DIC and the sampler.

It is written from reading that code, in its own loop-per-image style and float32 arithmetic, and shares nothing
with dynad: the tests run both on the same tensors and compare. The official sampler's DDIM stochasticity is 0
(config.yaml: eta 0), so its c1 term vanishes and c2 = sqrt(1 - abar_next).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors


def knn_fit(train: np.ndarray, k: int) -> tuple[NearestNeighbors, np.ndarray]:
    """The kNN and the bin edges: training y_bar is computed with each training image among its own neighbours."""
    model = NearestNeighbors(n_neighbors=k, metric="l1").fit(train)
    distances, _ = model.kneighbors(train)
    _, edges = np.histogram(distances.mean(axis=1), 10)
    return model, edges


def bin_of(y: float, edges: np.ndarray) -> int:
    """`digitize(right=True) - 1`, then `min(., |B| - 1) + 1`."""
    b = int(np.digitize(y, edges, right=True)) - 1
    return min(b, len(edges) - 2) + 1


def roundup(x: float, n: int = 10) -> float:
    """To a multiple of n: ceil, then one down when the remainder is below n / 2 (so exact halves go up)."""
    res = math.ceil(x / n) * n
    if 0 < x % n < n / 2:
        res -= n
    return res


def t_hat_of(b: int, t_max: int) -> int:
    return int(roundup(max(b, 2) / 10 * t_max))


def dic(train: np.ndarray, test: np.ndarray, k: int, t_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y_bar, bin, T_hat) of each test row, image by image."""
    model, edges = knn_fit(train, k)
    distances, _ = model.kneighbors(test)
    ys, bins, steps = [], [], []
    for row in distances:
        y = float(np.mean(row))
        b = bin_of(y, edges)
        ys.append(y), bins.append(b), steps.append(t_hat_of(b, t_max))
    return np.array(ys), np.array(bins), np.array(steps)


def _abar(betas: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """abar at steps t (B,), with abar at -1 = 1: the float32 cumulative product over [0, betas]."""
    padded = torch.cat([torch.zeros(1), betas])
    return (1 - padded).cumprod(dim=0).index_select(0, t.long() + 1).view(-1, 1, 1, 1)  # (B, 1, 1, 1)


def betas(num_steps: int = 1000, start: float = 0.0015, end: float = 0.0195) -> torch.Tensor:
    return torch.tensor(np.linspace(start, end, num_steps, dtype=np.float64)).float()


def _eps(unet, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    out = unet(x, t)
    return (out.sample if hasattr(out, "sample") else out).float()


@torch.no_grad()
def dynamic_sampler(unet, z0: torch.Tensor, steps: np.ndarray, eta: float, b: torch.Tensor) -> torch.Tensor:
    """The DIC path: start sqrt(abar_T) z0, per-image grid arange(0, T, T / 10), first UNet call at T - T / 10."""
    steps_t = torch.as_tensor(steps, dtype=torch.int64)
    x = z0 * _abar(b, steps_t).sqrt()
    seq = [torch.arange(0, end, max(end // 10, 1)) for end in steps_t.tolist()]
    for idx in reversed(range(seq[0].numel())):
        t = torch.tensor([s[idx] for s in seq])
        t_next = torch.full_like(t, -1) if idx == 0 else torch.tensor([s[idx - 1] for s in seq])
        at, at_next = _abar(b, t), _abar(b, t_next)
        et = _eps(unet, x, t)
        yt = at.sqrt() * z0 + (1 - at).sqrt() * et
        et_hat = et - (1 - at).sqrt() * eta * (yt - x)
        x0_t = (x - et_hat * (1 - at).sqrt()) / at.sqrt()
        x = at_next.sqrt() * x0_t + (1 - at_next).sqrt() * et_hat
    return x


@torch.no_grad()
def fixed_sampler(unet, z0: torch.Tensor, scale_step: int, seq: range, eta: float, b: torch.Tensor) -> torch.Tensor:
    """The fixed-step path (Table 4 and adaptation): one grid for all; the first step keeps no noise term."""
    n = z0.shape[0]
    x = z0 * _abar(b, torch.full((n,), scale_step)).sqrt()
    seq_next = [-1] + list(seq[:-1])
    for index, (i, j) in enumerate(zip(reversed(seq), reversed(seq_next))):
        t, t_next = torch.full((n,), i), torch.full((n,), j)
        at, at_next = _abar(b, t), _abar(b, t_next)
        et = _eps(unet, x, t)
        yt = at.sqrt() * z0 + (1 - at).sqrt() * et
        et_hat = et - (1 - at).sqrt() * eta * (yt - x)
        x0_t = (x - et_hat * (1 - at).sqrt()) / at.sqrt()
        c2 = torch.zeros_like(x0_t) if index == 0 else (1 - at_next).sqrt()
        x = at_next.sqrt() * x0_t + c2 * et_hat
    return x


def adaptation_grid(t_max: int, p: int) -> tuple[int, range]:
    """The adaptation's step p of 10: (step whose abar scales the latent, the sampler's grid)."""
    step = t_max / 10 * p
    scale = int(torch.Tensor([step]).type(torch.int64)[0])
    rounded = roundup(step)
    skip = int(max(rounded / 10, 1))
    return scale, range(0, int(rounded), skip)
