"""Trains the tiny preset's UNet through dynad.training.train; run alone (one process) or under `accelerate launch`.

    python tests/ddp_worker.py OUT            accelerate launch --cpu --num_processes 2 tests/ddp_worker.py OUT

The weights are float64, so the comparison measures the sharding of batches and draws, not float32 summation order
(which Adam amplifies on near-zero gradients to ~1e-5 after a few steps at the tiny preset's learning rate).
Every process logs the files it writes to OUT/writes-<rank>.txt (through dynad.provenance.atomic_write, which
every checkpoint goes through), so the test can check that only the main process wrote.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

from dynad import distributed, provenance
from dynad.config import load_preset
from dynad.denoiser import build_unet, epsilon_loss
from dynad.schedule import NoiseSchedule
from dynad.training import train

ROWS, BATCH, EPOCHS = 14, 7, 2  # 2 optimizer steps per epoch; global batch 7: shards of 4 and 3 rows


def data() -> torch.Tensor:
    """(ROWS, 8, 16, 16): latent posterior means and stds of the tiny preset's shape, fixed by a seed."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(ROWS, 4, 16, 16, generator=g), 0.1 * torch.rand(ROWS, 4, 16, 16, generator=g)], 1)
    return x.double()


def initial_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_unet(load_preset("tiny").denoiser, 16, 4).double()


def run(out: Path) -> torch.nn.Module:
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    rank = distributed.state().process_index
    log = out / f"writes-{rank}.txt"
    original = provenance.atomic_write

    @contextlib.contextmanager
    def logged(path, mode="wb"):
        with log.open("a") as f:
            f.write(f"{path}\n")
        with original(path, mode) as fh:
            yield fh

    provenance.atomic_write = logged
    try:
        cfg = load_preset("tiny").denoiser
        unet = initial_unet()
        train(unet, data(), epsilon_loss(NoiseSchedule(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end), True),
              epochs=EPOCHS, batch_size=BATCH, lr=cfg.lr, weight_decay=cfg.weight_decay, ckpt_path=out / "unet.pt",
              config={"test": "ddp"}, checkpoint_every=1, seed=0, device="cpu", progress=False)  # fmt: skip
    finally:
        provenance.atomic_write = original
    return unet


if __name__ == "__main__":
    run(Path(sys.argv[1]))
