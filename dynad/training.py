"""One plain training loop shared by the autoencoder, the denoiser and the domain adaptation, run by accelerate.

AdamW, a tqdm bar with the running loss, checkpoints written atomically every `checkpoint_every` epochs, and resume:
when `ckpt_path` holds a checkpoint of the same component and config, training continues from its epoch with the
optimizer state and the RNG state it stopped with. An accelerate `Accelerator` (dynad/distributed.py) places the
model, runs autocast (bf16 or fp16 on CUDA; float32 on the CPU) and, under `accelerate launch`, DDP.

Batches over N processes and K accumulation steps:

    global batch B = `batch_size`, whatever N and K     (so the learning rate needs no rescaling with N)
    each optimizer step: K micro-batches of ~B/K rows; each micro-batch split over the N processes (~B/(K N) rows)
    local loss weighted by n_local * N / B               (DDP averages over N: the step's gradient is that of the
                                                          mean loss over all B rows, even when shards are uneven)

Every process draws the random values of the whole micro-batch from the same seeded generator and keeps its own
rows (`BatchRandom`), so N processes take the same optimizer steps as one (up to float summation order). K > 1
draws per micro-batch, which changes the numbers slightly against K = 1; hence it is part of the model names.
Only the main process writes checkpoints.

`ema_decay` > 0 keeps an exponential moving average of the weights (torch's AveragedModel), updated after every
optimizer step and stored in the checkpoint beside the raw weights, which resuming continues from; the model that
`train` returns holds the average.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from dynad import distributed
from dynad.progress import tqdm
from dynad.provenance import save_torch


class BatchRandom:
    """The random draws of one (micro-)batch of `total` rows, cut to this process's `rows`.

    Draws advance the shared generator by the same amount on every process, so the processes stay in step.
    """

    def __init__(self, generator: torch.Generator, rows: slice, total: int):
        self.generator, self.rows, self.total = generator, rows, total

    def randn(self, *row_shape: int) -> torch.Tensor:
        """(n_local, *row_shape) standard normal, on the CPU."""
        return torch.randn((self.total, *row_shape), generator=self.generator)[self.rows]

    def randint(self, low: int, high: int) -> torch.Tensor:
        """(n_local,) integers in [low, high), on the CPU."""
        return torch.randint(low, high, (self.total,), generator=self.generator)[self.rows]

    def batch_randint(self, low: int, high: int) -> int:
        """One integer in [low, high) for the whole batch (the same on every process)."""
        return int(torch.randint(low, high, (1,), generator=self.generator))

    def local_generator(self) -> torch.Generator:
        """A generator for code that takes one (e.g. a noised reconstruction): the shared one when this process has
        every row, else one seeded from a shared draw and this process's first row."""
        if self.rows.start == 0 and self.rows.stop >= self.total:
            return self.generator
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        return torch.Generator().manual_seed(seed + self.rows.start)


LossFn = Callable[[torch.nn.Module, torch.Tensor, BatchRandom], torch.Tensor]


class _Objective(torch.nn.Module):
    """The model and its loss as one forward: DDP then sees one forward per step whatever the loss calls
    (the VAE's encode and decode, the extractor twice)."""

    def __init__(self, model: torch.nn.Module, loss_fn: LossFn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch: torch.Tensor, rng: BatchRandom) -> torch.Tensor:
        return self.loss_fn(self.model, batch, rng)


class DivergedError(RuntimeError):
    """The training loss became NaN or infinite: the weights are lost, so training stops before they are saved."""


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (truncated, not a torch file); the message names it."""


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e


def _set_aside(path: Path, error: CheckpointError) -> None:
    """Rename an unreadable checkpoint to `<name>.corrupt` (kept for inspection) so that training starts over."""
    aside = path.with_name(path.name + ".corrupt")
    os.replace(path, aside)
    warnings.warn(f"{error}; moved it to {aside} and training again from scratch", stacklevel=3)


def train(
    model: torch.nn.Module,
    data: torch.Tensor,
    loss_fn: LossFn,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float = 0.0,
    ckpt_path: str | Path | None,
    config: dict[str, Any],
    checkpoint_every: int = 10,
    seed: int = 0,
    device: str = "auto",
    mixed_precision: str = "no",
    accumulation_steps: int = 1,
    find_unused_parameters: bool = False,
    desc: str = "train",
    progress: bool = True,
    params: list[torch.nn.Parameter] | None = None,
    ema_decay: float = 0.0,
) -> list[float]:
    """Train `model` on the rows of `data` (N, ...) and return the mean loss of each epoch (over all processes).

    `loss_fn(model, batch, rng)` returns the mean loss of `batch`; `rng` (BatchRandom) draws from a seeded CPU
    generator, so a run is repeatable and a resumed run draws what the uninterrupted run would have drawn from that
    epoch on. `device` and `mixed_precision` ("no", "bf16", "fp16") go to the Accelerator; `find_unused_parameters`
    is for models whose forward skips parameters under DDP (the truncated feature extractor).
    The final checkpoint has `complete=True`; `config` is stored inside every checkpoint. `ckpt_path=None`: no
    checkpoints (the dry run).
    """
    ckpt_path = Path(ckpt_path) if ckpt_path is not None else None
    acc = distributed.accelerator(device, mixed_precision, find_unused_parameters)
    opt = torch.optim.AdamW(params if params is not None else model.parameters(), lr=lr, weight_decay=weight_decay)
    # A copy of the model's weights, made before accelerate places the model; moved to its device after prepare.
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay)) if ema_decay > 0 else None
    losses: list[float] = []
    start = 0
    ckpt = {}
    if ckpt_path is not None and ckpt_path.is_file():
        try:
            ckpt = load_checkpoint(ckpt_path)
        except CheckpointError as e:
            _set_aside(ckpt_path, e)
        if ckpt.get("config") == config:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            if ema is not None:
                ema.load_state_dict(ckpt["ema"])
            losses, start = list(ckpt["losses"]), int(ckpt["epoch"])
    if acc.num_processes > 1 and acc.device.type == "cuda":
        # BatchNorm (the extractor's) over the whole global batch, as one process sees it; torch syncs only on GPUs,
        # so on CPU processes each shard normalises by its own statistics (and rank 0's running stats are kept).
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    objective, opt = acc.prepare(_Objective(model, loss_fn), opt)
    if ema is not None:
        ema.to(acc.device)
    n = data.shape[0]
    batch_size = min(batch_size, n)
    procs, rank = acc.num_processes, acc.process_index
    if batch_size < procs * accumulation_steps:
        raise ValueError(
            f"{desc}: batch_size {batch_size} is smaller than {procs} processes x {accumulation_steps} accumulation "
            f"steps (gradient_accumulation_steps): every process needs at least one row per micro-batch"
        )
    bar = tqdm(range(start, epochs), desc=desc, disable=not (progress and acc.is_main_process), initial=start,
               total=epochs, leave=False)  # fmt: skip
    for epoch in bar:
        # One generator per epoch, seeded from (seed, epoch): resuming at any epoch reproduces the same draws.
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=gen)
        model.train()
        total, count = 0.0, 0
        # Drop the last incomplete batch unless it is the only one (tiny data sets).
        for i in range(0, max(n - batch_size + 1, 1), batch_size):
            rows = perm[i : i + batch_size]  # the global batch (B,)
            opt.zero_grad(set_to_none=True)
            for k in range(accumulation_steps):
                micro = rows[distributed.shard(len(rows), k, accumulation_steps)]
                mine = distributed.shard(len(micro), rank, procs)
                batch = data[micro[mine]].to(acc.device)
                weight = batch.shape[0] * procs / len(rows)
                # Gradients are all-reduced on the last micro-batch only.
                sync = acc.no_sync(objective) if k + 1 < accumulation_steps else contextlib.nullcontext()
                with sync:
                    loss = objective(batch, BatchRandom(gen, mine, len(micro)))
                    acc.backward(loss * weight if weight != 1 else loss)
                total += float(loss.detach()) * batch.shape[0]
                count += batch.shape[0]
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
        summed = acc.reduce(torch.tensor([total, count], dtype=torch.float64, device=acc.device), "sum")
        losses.append(float(summed[0] / summed[1]))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if not math.isfinite(losses[-1]):  # every later epoch, the saved model and the run's maps would be NaN
            bar.close()
            raise DivergedError(f"{desc}: the training loss is {losses[-1]} after epoch {epoch + 1} of {epochs} "
                                f"(learning rate {lr:g}): the weights diverged and are not kept; a smaller learning "
                                f"rate trains them")  # fmt: skip
        done = epoch + 1 == epochs
        if ckpt_path is not None and (done or (epoch + 1) % checkpoint_every == 0) and acc.is_main_process:
            state = {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": epoch + 1,
                "losses": losses,
                "config": config,
                **({"ema": ema.state_dict()} if ema is not None else {}),
                "complete": done,
            }
            save_torch(ckpt_path, state)
    acc.wait_for_everyone()  # the others read the checkpoint only once it is whole
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    model.eval()
    acc.free_memory()
    return losses

