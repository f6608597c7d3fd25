"""The one-call-per-step sampler equals the grouped loop it replaced (each T_hat group denoised on its own)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynad.config import DenoiserConfig, ReconstructionConfig
from dynad.denoiser import build_unet
from dynad.reconstruction import ddim_timesteps, guided_step, reconstruct
from dynad.schedule import NoiseSchedule


def grouped_reconstruct(unet, schedule, z0, t_hat, cfg, generator=None, drop_first_noise=False, scale_t=None):
    """The former `reconstruct`, kept as the reference: one sub-batch per T_hat, one UNet call per group and step
    (with the reference code's first-step quirk when asked; its start scale is T_hat's)."""
    assert scale_t is None
    t_hat = np.asarray(t_hat, dtype=int)
    out = torch.empty_like(z0)
    for value in np.unique(t_hat):
        idx = torch.as_tensor(np.flatnonzero(t_hat == value))
        y = z0[idx]  # (b, C, h, w)
        a = schedule.abar(int(value))
        z = a.sqrt() * y
        if cfg.start == "noise":
            z = z + (1 - a).sqrt() * torch.randn(y.shape, generator=generator)
        for i, (t, t_prev) in enumerate(ddim_timesteps(int(value), cfg.num_steps, cfg.sampler_start)):
            z = guided_step(unet, schedule, z, y, t, t_prev, cfg.eta, keep_noise=not (drop_first_noise and i == 0))
        out[idx] = z
    return out


class CountingUNet(torch.nn.Module):
    """Wraps a denoiser and records the timesteps of every call."""

    def __init__(self, unet: torch.nn.Module):
        super().__init__()
        self.unet, self.calls = unet, []

    def forward(self, z, t):
        self.calls.append(t.tolist())
        return self.unet(z, t)


@pytest.fixture(scope="module")
def tiny_unet():
    torch.manual_seed(0)
    cfg = DenoiserConfig(block_out_channels=(32, 32), layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                         up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=16, norm_num_groups=8)  # fmt: skip
    return build_unet(cfg, 8, 4).eval()


@pytest.mark.parametrize(
    "t_hat, cfg, drop_first_noise",
    [
        ([20, 80, 20, 40, 80, 60], ReconstructionConfig(eta=4.0), False),  # the paper's T_max 80 table
        ([20, 80, 20, 40], ReconstructionConfig(eta=8.0, sampler_start="t_hat_minus_step"), False),
        ([5, 30, 3, 30], ReconstructionConfig(eta=4.0), False),  # T_hat < num_steps: fewer steps for those images
        ([20, 80, 20, 40], ReconstructionConfig(eta=4.0, start="noise"), False),
        ([5, 30, 3, 30], ReconstructionConfig(eta=4.0), True),  # the reference code's first-step quirk, per image
    ],
)
def test_one_call_per_step_equals_the_grouped_loop(tiny_unet, t_hat, cfg, drop_first_noise):
    sched = NoiseSchedule()
    z0 = torch.randn(len(t_hat), 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = grouped_reconstruct(tiny_unet, sched, z0, t_hat, cfg, torch.Generator().manual_seed(7), drop_first_noise)
    counting = CountingUNet(tiny_unet)
    with torch.no_grad():
        out = reconstruct(counting, sched, z0, t_hat, cfg, torch.Generator().manual_seed(7), drop_first_noise)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    # As many calls as the longest image's sampler, not one per group and step.
    assert len(counting.calls) == max(len(ddim_timesteps(v, cfg.num_steps, cfg.sampler_start)) for v in t_hat)
    first = [ddim_timesteps(v, cfg.num_steps, cfg.sampler_start)[0][0] for v in t_hat]
    if len(set(len(ddim_timesteps(v, cfg.num_steps, cfg.sampler_start)) for v in t_hat)) == 1:
        assert counting.calls[0] == first  # the first call holds every image, each at its own T_hat


def test_the_speed_benchmarks_grouped_variant_is_called_as_the_pipeline_calls_reconstruct(tiny_unet):
    """benchmarks/bench_vs_reference.py swaps its grouped loop in for `dynad.pipeline.reconstruct` ("before")."""
    import benchmark_scripts

    bench = benchmark_scripts.load("bench_vs_reference")
    sched, cfg, t_hat = NoiseSchedule(), ReconstructionConfig(eta=4.0), [5, 30, 3, 30]
    z0 = torch.randn(len(t_hat), 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():  # positional, as DynAD.infer passes them
        out = bench.grouped_reconstruct(tiny_unet, sched, z0, t_hat, cfg, torch.Generator().manual_seed(7), True)
        ref = reconstruct(tiny_unet, sched, z0, t_hat, cfg, torch.Generator().manual_seed(7), True)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_an_image_with_fewer_steps_sits_out_the_first_calls(tiny_unet):
    counting = CountingUNet(tiny_unet)
    with torch.no_grad():
        reconstruct(counting, NoiseSchedule(), torch.randn(2, 4, 8, 8), [3, 30], ReconstructionConfig())
    assert len(counting.calls) == 10
    assert counting.calls[0] == [30] and counting.calls[-3:] == [[3, 9], [2, 6], [1, 3]]


def test_guided_step_per_sample_timesteps_equal_one_call_per_timestep(tiny_unet):
    sched = NoiseSchedule()
    z0, z = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        both = guided_step(tiny_unet, sched, z, z0, torch.tensor([40, 10]), torch.tensor([32, 8]), 4.0)
        first = guided_step(tiny_unet, sched, z[:1], z0[:1], 40, 32, 4.0)
        second = guided_step(tiny_unet, sched, z[1:], z0[1:], 10, 8, 4.0)
    torch.testing.assert_close(both, torch.cat([first, second]), atol=1e-5, rtol=0)
    assert (first - second).abs().max() > 1e-2  # the two timesteps really differ


# --- the whole pipeline on the tiny preset ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pipeline(shared_data, one_thread):
    from dynad.config import load_preset
    from dynad.experiment import fit_pipeline

    root, models = shared_data
    pipe, _, test = fit_pipeline(load_preset("tiny"), "synthetic", root, "board", models, progress=False)
    return pipe, test["images"]


def test_tiny_maps_equal_those_of_the_grouped_loop_without_channels_last(tiny_pipeline, monkeypatch):
    """Today's inference (one UNet call per step, NHWC UNet and encoder) gives the maps of the former one."""
    import dynad.pipeline

    pipe, images = tiny_pipeline
    fast = pipe.infer_all(images, progress=False)
    assert len(set(fast["t_hat"].tolist())) > 1  # several T_hat groups, so the grouping is exercised
    before = pipe.with_overrides(["inference.channels_last=false"])
    monkeypatch.setattr(dynad.pipeline, "reconstruct", grouped_reconstruct)
    slow = before.infer_all(images, progress=False)
    np.testing.assert_array_equal(fast["t_hat"], slow["t_hat"])
    for key in ("latent_map", "feature_map"):
        torch.testing.assert_close(fast[key], slow[key], atol=1e-4, rtol=0)
    torch.testing.assert_close(pipe.anomaly_maps(fast["latent_map"], fast["feature_map"]),
                               before.anomaly_maps(slow["latent_map"], slow["feature_map"]), atol=1e-4, rtol=0)  # fmt: skip


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no native bf16")
def test_cpu_bf16_runs_the_unet_and_vae_in_bf16_and_leaves_dic_in_float32(tiny_pipeline):
    pipe, images = tiny_pipeline
    fp32 = pipe.infer_all(images, progress=False)
    bf16 = pipe.with_overrides(["inference.cpu_bf16=true"]).infer_all(images, progress=False)
    auto = pipe.with_overrides(["inference.cpu_bf16=auto"]).infer_all(images, progress=False)  # native bf16 here
    torch.testing.assert_close(auto["latent_map"], bf16["latent_map"], atol=0, rtol=0)
    np.testing.assert_array_equal(bf16["knn_distance"], fp32["knn_distance"])  # the extractor stays float32
    np.testing.assert_array_equal(bf16["t_hat"], fp32["t_hat"])
    diff = (bf16["latent_map"] - fp32["latent_map"]).abs().max().item()
    assert 1e-4 < diff < 0.05 * fp32["latent_map"].abs().max().item(), diff  # bf16 is on, and only rounds
