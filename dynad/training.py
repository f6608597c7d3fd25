"""One plain training loop shared by the autoencoder, the denoiser and the domain adaptation.

AdamW, a tqdm bar with the running loss, bf16 autocast on CUDA, checkpoints written atomically every
`checkpoint_every` epochs, and resume: when `ckpt_path` holds a checkpoint of the same component and config, training
continues from its epoch with the optimizer state and the RNG state it stopped with.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable

import torch

from dynad.progress import tqdm
from dynad.provenance import save_torch

LossFn = Callable[[torch.nn.Module, torch.Tensor, torch.Generator], torch.Tensor]


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when enabled; a no-op on the CPU (float32 there)."""
    if device.type == "cuda" and enabled:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def train(
    model: torch.nn.Module,
    data: torch.Tensor,
    loss_fn: LossFn,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    ckpt_path: str | Path,
    config: dict[str, Any],
    checkpoint_every: int = 10,
    seed: int = 0,
    device: torch.device = torch.device("cpu"),
    mixed_precision: bool = True,
    desc: str = "train",
    progress: bool = True,
    params: list[torch.nn.Parameter] | None = None,
) -> list[float]:
    """Train `model` on the rows of `data` (N, ...) and return the mean loss of each epoch.

    `loss_fn(model, batch, generator)` returns a scalar; `generator` is a seeded CPU generator so that a run is
    repeatable and a resumed run draws what the uninterrupted run would have drawn from that epoch on.
    The final checkpoint has `complete=True`; `config` is stored inside every checkpoint.
    """
    ckpt_path = Path(ckpt_path)
    model.to(device)
    opt = torch.optim.AdamW(params if params is not None else model.parameters(), lr=lr, weight_decay=weight_decay)
    losses: list[float] = []
    start = 0
    if ckpt_path.is_file():
        ckpt = load_checkpoint(ckpt_path)
        if ckpt.get("config") == config:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            losses, start = list(ckpt["losses"]), int(ckpt["epoch"])
    n = data.shape[0]
    batch_size = min(batch_size, n)
    bar = tqdm(range(start, epochs), desc=desc, disable=not progress, initial=start, total=epochs, leave=False)
    for epoch in bar:
        # One generator per epoch, seeded from (seed, epoch): resuming at any epoch reproduces the same draws.
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=gen)
        model.train()
        total, count = 0.0, 0
        # Drop the last incomplete batch unless it is the only one (tiny data sets).
        for i in range(0, max(n - batch_size + 1, 1), batch_size):
            batch = data[perm[i : i + batch_size]].to(device)
            with autocast(device, mixed_precision):
                loss = loss_fn(model, batch, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * batch.shape[0]
            count += batch.shape[0]
        losses.append(total / count)
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        done = epoch + 1 == epochs
        if done or (epoch + 1) % checkpoint_every == 0:
            state = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": epoch + 1,
                "losses": losses,
                "config": config,
                "complete": done,
            }
            save_torch(ckpt_path, state)
    model.eval()
    return losses
