"""Scale: 2-process DDP through accelerate equals one process; the paper presets' dry run builds the real
architectures and runs every stage. (`reproduce --executor ray` is tested with the other reproductions, in
tests/test_reproduce.py.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import benchmark_scripts
import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TESTS = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_equals_one_process(tmp_path: Path) -> None:
    """Same global batch, same optimizer steps: the UNet's weights agree within 1e-5, and only rank 0 wrote."""
    sys.path.insert(0, str(TESTS))
    import ddp_worker

    single = ddp_worker.run(tmp_path / "one")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(TESTS.parent)}
    # On a machine without CUDA, accelerate's multi-process launcher starts CPU processes that join over gloo.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(TESTS / "ddp_worker.py"), str(tmp_path / "two")]  # fmt: skip
    if torch.cuda.is_available():
        pytest.skip("the gloo CPU group needs a machine without CUDA (accelerate would use NCCL on the GPUs)")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "two" / "unet.pt", map_location="cpu", weights_only=False)
    assert ckpt["complete"] and ckpt["epoch"] == ddp_worker.EPOCHS
    diffs = [(ckpt["model"][k] - v).abs().max().item() for k, v in single.state_dict().items()]
    assert max(diffs) < 1e-5
    start = ddp_worker.initial_unet().state_dict()
    moved = [(v - start[k]).abs().max().item() for k, v in single.state_dict().items()]
    assert max(moved) > 1e-3  # the steps changed the weights: the comparison is not between two untouched copies
    assert (tmp_path / "two" / "writes-0.txt").read_text().splitlines() == [str(tmp_path / "two" / "unet.pt")] * 2
    assert not (tmp_path / "two" / "writes-1.txt").exists()  # rank 1 wrote nothing
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["unet.pt", "writes-0.txt"]
    one = torch.load(tmp_path / "one" / "unet.pt", map_location="cpu", weights_only=False)
    assert one["losses"] == pytest.approx(ckpt["losses"], abs=1e-6)  # loss history reduced over both processes



def test_paper_preset_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`dynad run --preset mvtec --dry-run`: the 267 M UNet, sd-vae-ft-mse's architecture and ResNet-34 (random
    weights: neither file is on a CI machine, and the report says so), one step of every stage, inference, maps.

    At 128 px (the smallest size the 5-level UNet takes: latent 16 x 16) to keep the suite short; the 256 px costs
    are measured by benchmarks/bench_scale.py. visa and btad build exactly the same networks (checked here)."""
    from dynad.cli import main
    from dynad.config import load_preset

    for preset in ("visa", "btad"):
        other = load_preset(preset)
        for section in ("data", "autoencoder", "denoiser", "features", "adaptation", "dic", "reconstruction"):
            assert getattr(other, section) == getattr(load_preset("mvtec"), section), (preset, section)
    absent = ["autoencoder.source=" + str(tmp_path / "no-sd-vae"), "features.weights=" + str(tmp_path / "no.pth")]
    argv = ["run", "--preset", "mvtec", "--dry-run", "--dry-run-steps", "1", "--dry-run-images", "1", "--out",
            str(tmp_path), "--set", "data.image_size=128", "--set", "device=cpu"] + [a for s in absent for a in ("--set", s)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "dry_run.json").read_text())
    assert report["parameters"]["denoiser"] == pytest.approx(267.2e6, rel=1e-3)
    assert report["parameters"]["autoencoder"] == pytest.approx(83.65e6, rel=1e-3)  # sd-vae-ft-mse's size
    assert "RANDOM" in report["weights"]["autoencoder"] and "random" in report["weights"]["feature_extractor"]
    assert set(report["stages"]) == {"autoencoder", "denoiser", "adaptation", "inference"}
    assert report["map_shape"] == [1, 128, 128] and report["maps_finite"]
    assert all(s["peak_memory_gb"] > 1.0 for s in report["stages"].values())  # 267 M params + AdamW: > 1 GB
    out = capsys.readouterr().out
    assert "267.2 M parameters" in out and "RANDOM weights" in out


@pytest.mark.parametrize("preset", ["demo", "cpu", "mtd"])
def test_dry_run_of_a_preset_that_measures_its_latent_scale(preset: str, tmp_path: Path) -> None:
    """TAEF2's presets measure the latent scale on the training latents (`scaling_factor: null`); the dry run
    stopped on `Tensor * NoneType` before it measured it as a run does."""
    from dynad.cli import main
    from dynad.config import load_preset

    assert load_preset(preset).autoencoder.scaling_factor is None
    argv = ["run", "--preset", preset, "--dry-run", "--dry-run-steps", "1", "--dry-run-images", "1", "--out",
            str(tmp_path), "--set", "device=cpu"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((tmp_path / "dry_run.json").read_text())
    assert report["maps_finite"] and report["latent_scaling_factor"] > 0
    assert report["weights"]["autoencoder"] == "pretrained: taef2"


@pytest.mark.parametrize("option, message", [
    (["--dry-run-steps", "0"], "dry run: steps, batch and test images must be >= 1 (got 0, 1, 1)"),
    (["--threads", "-2"], "threads = -2: must be >= 0"),  # a run refuses it, so its dry run must too
    (["--set", "dic.t_max=0"], "dic.t_max = 0: must be in [1, 999]"),
])  # fmt: skip
def test_dry_run_refuses_what_a_run_refuses_in_one_line(
    option: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from dynad.cli import main

    argv = ["run", "--preset", "tiny", "--dry-run", "--dry-run-images", "1", "--out", str(tmp_path / "dry"), *option]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "dry").exists()


def test_training_resumes_after_a_kill_with_the_same_weights(tmp_path: Path) -> None:
    """Killed during epoch 2: the rerun continues from the epoch-1 checkpoint and ends on the uninterrupted weights;
    atomic writes leave no partial file behind."""
    sys.path.insert(0, str(TESTS))
    import ddp_worker
    from dynad.config import load_preset
    from dynad.denoiser import epsilon_loss
    from dynad.schedule import NoiseSchedule
    from dynad.training import train

    cfg = load_preset("tiny").denoiser
    loss = epsilon_loss(NoiseSchedule(cfg.num_train_timesteps, cfg.beta_start, cfg.beta_end), True)

    def run(folder: Path, kill_at_call: int | None = None) -> tuple[torch.nn.Module, int]:
        unet, calls = ddp_worker.initial_unet(), []

        def counted(model, batch, rng):
            calls.append(1)
            if len(calls) == kill_at_call:
                raise KeyboardInterrupt  # as if killed in the middle of a step
            return loss(model, batch, rng)

        train(unet, ddp_worker.data(), counted, epochs=3, batch_size=ddp_worker.BATCH, lr=cfg.lr,
              ckpt_path=folder / "unet.pt", config={"test": "resume"}, checkpoint_every=1, device="cpu",
              progress=False)  # fmt: skip
        return unet, len(calls)

    whole, _ = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", kill_at_call=4)  # 2 steps per epoch: the 2nd step of epoch 2
    ckpt = torch.load(tmp_path / "killed" / "unet.pt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1 and not ckpt["complete"]
    resumed, calls = run(tmp_path / "killed")
    assert calls == 4  # epochs 2 and 3 only
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert [p.name for p in (tmp_path / "killed").iterdir()] == ["unet.pt"]


def test_ema_weights_are_the_average_of_the_raw_trajectory_and_survive_a_resume(tmp_path: Path) -> None:
    """One optimizer step per epoch: the returned model holds e_k = d e_(k-1) + (1 - d) w_k over the raw weights w_k
    of plain runs (e_1 = w_1), and training 2 epochs then resuming to 4 ends on the same average."""
    from dynad.training import train

    data = torch.linspace(-1, 1, 24).reshape(8, 3)

    def run(epochs: int, ema_decay: float = 0.0, ckpt: Path | None = None) -> torch.nn.Module:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        train(model, data, lambda m, b, g: (m(b) - 1).pow(2).mean(), epochs=epochs, batch_size=8, lr=0.1,
              ckpt_path=ckpt, config={"test": "ema"}, checkpoint_every=1, device="cpu", progress=False,
              ema_decay=ema_decay)  # fmt: skip
        return model

    d = 0.5
    raw = [run(k).weight.detach().clone() for k in range(1, 5)]
    assert not torch.allclose(raw[0], raw[-1])  # the weights move, so the average differs from the last ones
    expected = raw[0]
    for w in raw[1:]:
        expected = d * expected + (1 - d) * w
    averaged = run(4, d).weight.detach()
    assert torch.allclose(averaged, expected, atol=1e-6) and not torch.allclose(averaged, raw[-1], atol=1e-3)
    run(2, d, tmp_path / "m.pt")
    resumed = run(4, d, tmp_path / "m.pt").weight.detach()
    assert torch.equal(resumed, averaged)


def test_shards_partition_and_draws_do_not_depend_on_the_process_count() -> None:
    from dynad.distributed import shard
    from dynad.training import BatchRandom

    for n in (1, 5, 7, 30):
        for count in range(1, min(n, 8) + 1):
            parts = [shard(n, i, count) for i in range(count)]
            assert [r for s in parts for r in range(n)[s]] == list(range(n))  # contiguous, in order, complete
            assert max(s.stop - s.start for s in parts) - min(s.stop - s.start for s in parts) <= 1

    def draws(rows: slice, total: int) -> list[torch.Tensor]:
        rng = BatchRandom(torch.Generator().manual_seed(3), rows, total)
        return [rng.randn(4, 2), rng.randint(0, 1000).float(), torch.tensor(float(rng.batch_randint(1, 11))),
                rng.randn(3)]  # fmt: skip

    whole = draws(slice(0, 7), 7)
    halves = [draws(shard(7, i, 2), 7) for i in range(2)]
    for k in (0, 1, 3):  # per-row draws: the shards' rows are the single process's rows
        assert torch.equal(torch.cat([halves[0][k], halves[1][k]]), whole[k])
    assert halves[0][2] == halves[1][2] == whole[2]  # one draw per batch: the same on every process


def test_measured_projection_of_bench_scale_by_hand() -> None:
    """benchmarks/bench_scale.py's projection from a GPU dry run's step times, against a hand computation."""
    bench = benchmark_scripts.load("bench_scale")
    run = {"batch": 30, "stages": {"denoiser": {"seconds_per_step": 0.5}, "adaptation": {"seconds_per_step": 2.0},
                                   "inference": {"seconds_per_image": 0.25}}}  # fmt: skip
    # 61 training images -> 3 steps of 30; 100 epochs x 3 x 0.5 s + 2 x 3 x 2.0 s + 40 x 0.25 s = 150 + 12 + 10 s
    assert bench.measured_hours(run, 61, 40, 100, 2) == pytest.approx(172 / 3600)
    # longest first onto the least loaded GPU: [3, 2, 2, 1] on 2 GPUs -> loads 4 and 4
    assert bench.makespan([1.0, 2.0, 3.0, 2.0], 2) == pytest.approx(4.0)
