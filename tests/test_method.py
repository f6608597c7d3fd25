"""Each piece of the method on tiny tensors: schedule, DIC table, sampler, guidance, maps, config."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from dynad import anomaly_map as am
from dynad.checks import check_config
from dynad.config import (
    FIDELITY,
    ConfigError,
    DICConfig,
    ExperimentConfig,
    ReconstructionConfig,
    apply_overrides,
    fidelity_deviations,
    load_preset,
)
from dynad.denoiser import build_unet
from dynad.experiment import choices
from dynad.dic import DynamicConditioning, t_hat_for_bin
from dynad.domain_adaptation import da_loss
from dynad.features import build_extractor, knn_features
from dynad.reconstruction import ddim_timesteps, guided_step, reconstruct
from dynad.schedule import NoiseSchedule

import official_code


class LinearEps(torch.nn.Module):
    """A stand-in denoiser: eps_theta(z, t) = a * z + c(t), enough to check the sampler's arithmetic."""

    def __init__(self, a: float = 0.3):
        super().__init__()
        self.a = a

    def forward(self, z, t):
        out = self.a * z + 0.01 * t.float().view(-1, 1, 1, 1)
        return type("Out", (), {"sample": out})()


# --- schedule ------------------------------------------------------------------------------------------------


def test_schedule_matches_diffusers_linear_schedule():
    ours = NoiseSchedule(1000, 0.0015, 0.0195)
    ref = DDPMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195, beta_schedule="linear")
    assert torch.allclose(ours.alphas_cumprod.float(), ref.alphas_cumprod, atol=1e-6)
    assert float(ours.abar(-1)) == 1.0
    # abar_80 ~ 0.837: the noiseless start scales z0 by ~0.915 at T_max = 80.
    assert float(ours.abar(80)) == pytest.approx(0.8367, abs=2e-3)


# --- DIC -----------------------------------------------------------------------------------------------------


def test_bin_to_t_hat_table_of_the_reference_code_for_t_max_80():
    cfg = DICConfig(t_max=80, num_bins=10, rounding="nearest")
    assert [t_hat_for_bin(b, cfg, 10) for b in range(11)] == [20, 20, 20, 20, 30, 40, 50, 60, 60, 70, 80]


def test_bin_to_t_hat_table_paper_floor_rounding():
    cfg = DICConfig(t_max=80, num_bins=10, rounding="floor")
    assert [t_hat_for_bin(b, cfg, 10) for b in range(11)] == [10, 10, 10, 20, 30, 40, 40, 50, 60, 70, 80]


def test_knn_distances_bins_and_self_distance():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(30, 8)).astype(np.float32)
    dic = DynamicConditioning(DICConfig(k=3, t_max=80, rounding="nearest"), num_steps=10).fit(train)
    # Training y_bar excludes the image itself: compare with a brute-force L1 computation.
    d = np.abs(train[:, None] - train[None]).sum(-1)  # (N, N)
    np.fill_diagonal(d, np.inf)
    expect = np.sort(d, axis=1)[:, :3].mean(1)
    np.testing.assert_allclose(dic.train_distances, expect, rtol=1e-5)
    assert dic.edges[0] == pytest.approx(expect.min()) and dic.edges[-1] == pytest.approx(expect.max())
    # Far away -> above the range -> bin |B| -> T_max; a training point's own features -> low bin.
    y, b, t = dic.t_hat(np.vstack([train[:1] + 100.0, train[:1]]))
    assert b[0] == 10 and t[0] == 80
    assert y[1] < y[0]
    with_self = DynamicConditioning(DICConfig(k=3, self_distance="include"), 10).fit(train)
    assert np.all(with_self.train_distances < dic.train_distances)


def test_fixed_t_hat_overrides_dic():
    train = np.random.default_rng(1).normal(size=(10, 4))
    dic = DynamicConditioning(DICConfig(k=2, fixed_t_hat=40), 10).fit(train)
    assert set(dic.t_hat(train + 50)[2]) == {40}


# --- sampler -------------------------------------------------------------------------------------------------


def test_ddim_timesteps_paper_and_reference_start():
    assert ddim_timesteps(20, 10, "t_hat") == [(20, 18), (18, 16), (16, 14), (14, 12), (12, 10), (10, 8), (8, 6),
                                                (6, 4), (4, 2), (2, -1)]  # fmt: skip
    ref = ddim_timesteps(20, 10, "t_hat_minus_step")
    assert ref[0] == (18, 16) and ref[-1] == (0, -1) and len(ref) == 10


def test_noiseless_start_adds_no_noise():
    """With T_hat's start and no UNet step, z_T is exactly sqrt(abar) z0, whatever the generator."""
    sched = NoiseSchedule()
    z0 = torch.randn(2, 4, 8, 8)
    zero = lambda z, t: type("O", (), {"sample": torch.zeros_like(z)})()  # noqa: E731
    cfg = ReconstructionConfig(num_steps=1, eta=0.0, start="noiseless")
    # One step from T_hat to clean with eps = 0: z0_pred = z_T / sqrt(abar) = z0 exactly.
    out1 = reconstruct(zero, sched, z0, [50, 50], cfg, torch.Generator().manual_seed(1))
    out2 = reconstruct(zero, sched, z0, [50, 50], cfg, torch.Generator().manual_seed(2))
    torch.testing.assert_close(out1, z0)
    torch.testing.assert_close(out1, out2)
    noisy = reconstruct(zero, sched, z0, [50, 50], ReconstructionConfig(num_steps=1, eta=0.0, start="noise"),
                        torch.Generator().manual_seed(1))  # fmt: skip
    assert (noisy - z0).abs().mean() > 0.05


def test_guided_step_is_plain_ddim_at_eta_zero_against_diffusers():
    sched = NoiseSchedule(1000, 0.0015, 0.0195)
    ref = DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195, beta_schedule="linear",
                        clip_sample=False, set_alpha_to_one=True, prediction_type="epsilon")  # fmt: skip
    ref.set_timesteps(500)  # diffusers steps t -> t - 1000 // 500 = t - 2
    unet = LinearEps()
    z0 = torch.randn(1, 4, 6, 6)
    z = sched.abar(20).sqrt() * z0
    z_ref = z.clone()
    for t, t_prev in ddim_timesteps(20, 10, "t_hat_minus_step"):  # (18, 16) ... (0, -1): diffusers' own pairs
        z = guided_step(unet, sched, z, z0, t, t_prev, eta=0.0)
        eps = unet(z_ref, torch.tensor([t])).sample
        z_ref = ref.step(eps, t, z_ref, eta=0.0).prev_sample
    torch.testing.assert_close(z, z_ref, atol=1e-4, rtol=1e-4)


def test_guidance_pulls_towards_the_condition():
    sched = NoiseSchedule()
    unet = LinearEps(a=1.0)
    z0 = torch.randn(1, 4, 6, 6)
    cfg0 = ReconstructionConfig(eta=0.0)
    cfg4 = ReconstructionConfig(eta=4.0)
    d0 = (reconstruct(unet, sched, z0, [80], cfg0) - z0).abs().mean()
    d4 = (reconstruct(unet, sched, z0, [80], cfg4) - z0).abs().mean()
    assert d4 < d0


def test_reconstruct_groups_images_by_t_hat():
    sched = NoiseSchedule()
    unet = LinearEps()
    z0 = torch.randn(3, 4, 6, 6)
    cfg = ReconstructionConfig()
    both = reconstruct(unet, sched, z0, [20, 80, 20], cfg)
    torch.testing.assert_close(both[1:2], reconstruct(unet, sched, z0[1:2], [80], cfg))
    torch.testing.assert_close(both[[0, 2]], reconstruct(unet, sched, z0[[0, 2]], [20, 20], cfg))


# --- maps ----------------------------------------------------------------------------------------------------


def test_latent_and_feature_maps_localise_a_difference():
    z0 = torch.zeros(1, 4, 8, 8)
    z0_hat = z0.clone()
    z0_hat[:, :, 2, 5] = 1.0  # one latent position differs
    lat = am.latent_map(z0, z0_hat, 32)
    assert lat.shape == (1, 32, 32)
    iy, ix = np.unravel_index(int(lat[0].argmax()), (32, 32))
    assert 8 <= iy < 12 and 20 <= ix < 24  # the 4x4 pixel block of latent cell (2, 5)
    f = {"a": torch.randn(1, 5, 8, 8)}
    g = {"a": f["a"].clone()}
    g["a"][:, :, 6, 1] = -g["a"][:, :, 6, 1]  # opposite direction -> cosine distance 2
    fm = am.feature_map(f, g, ["a"], 8)
    assert fm[0, 6, 1] == pytest.approx(2.0, abs=1e-5) and fm[0].sum() == pytest.approx(2.0, abs=1e-4)


def test_combine_weights_and_smoothing():
    cfg = ExperimentConfig().anomaly_map
    lat = torch.zeros(2, 64, 64)
    feat = torch.zeros(2, 64, 64)
    lat[0, 30, 30] = 1.0
    feat[1, 10, 10] = 1.0
    norm = am.MapNormalization.from_maps(lat, feat)
    a = am.combine(lat, feat, norm, cfg)
    scores = am.image_scores(a)
    # lambda = 0.85 on the latent map: the same spike scores higher there; smoothing spreads mass around the peak.
    assert scores[0] > scores[1] > 0
    assert scores[0] / scores[1] == pytest.approx(0.85 / 0.15, rel=1e-4)
    assert a[0].argmax() == 30 * 64 + 30 and a[0, 30, 34] > 0


def test_score_exponent_scales_each_map_by_its_own_score_by_hand():
    """A <- A * (max A)^gamma on two hand-made maps (no blur): within-image order and score order unchanged."""
    base = dataclasses.replace(ExperimentConfig().anomaly_map, lam=1.0, sigma=1.0, kernel_size=1)  # kernel 1: no blur
    lat = torch.tensor([[[0.0, 1.0], [0.5, 0.25]], [[0.0, 0.5], [0.25, 0.0]]])  # (2, 2, 2); image maxima 1.0 and 0.5
    norm = am.MapNormalization(0.0, 1.0, 0.0, 1.0)
    plain = am.combine(lat, torch.zeros_like(lat), norm, base)
    assert torch.equal(plain, lat)
    weighted = am.combine(lat, torch.zeros_like(lat), norm, dataclasses.replace(base, score_exponent=2.0))
    assert torch.allclose(weighted, torch.stack([lat[0] * 1.0, lat[1] * 0.25]))
    # The second image's top pixel (0.5) now ranks below the first image's 0.5 pixel scaled by 1: 0.125 < 0.5.
    assert weighted[1, 0, 1] == pytest.approx(0.125) and weighted[0, 1, 0] == pytest.approx(0.5)
    assert torch.equal(weighted[0].flatten().argsort(), plain[0].flatten().argsort())
    assert torch.equal(am.image_scores(weighted).argsort(), am.image_scores(plain).argsort())


def test_da_loss_zero_for_identical_features_and_modes_differ():
    f = {"l": torch.randn(2, 3, 4, 4)}
    assert float(da_loss(f, f, ["l"], "per_position")) == pytest.approx(0.0, abs=1e-6)
    g = {"l": f["l"] + torch.randn(2, 3, 4, 4)}
    assert float(da_loss(f, g, ["l"], "per_position")) != pytest.approx(float(da_loss(f, g, ["l"], "flattened")))


# --- features ------------------------------------------------------------------------------------------------


def test_extractor_blocks_shapes_and_knn_descriptor():
    cfg = load_preset("tiny").features
    ext = build_extractor(cfg)
    assert "mobilenet_v2-b0353104.pth" in ext.weights_label
    feats = ext(torch.zeros(2, 3, 64, 64))
    assert [tuple(feats[k].shape[1:]) for k in cfg.layers] == [(24, 16, 16), (32, 8, 8), (96, 4, 4)]
    assert knn_features(feats, cfg).shape == (2, 32 * cfg.knn_pool_size**2)


def test_random_weights_are_labelled_and_missing_weights_explain_themselves(tmp_path):
    cfg = load_preset("tiny").features
    rand = build_extractor(apply_overrides(ExperimentConfig(features=cfg), ["features.weights=random"]).features)
    assert "random" in rand.weights_label
    with pytest.raises(FileNotFoundError, match="never downloads"):
        build_extractor(apply_overrides(ExperimentConfig(features=cfg), [f"features.weights={tmp_path}/none.pth"]).features)


def test_torchvision_weights_load_into_timm_resnet(tmp_path):
    import torchvision

    path = tmp_path / "resnet18.pth"
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), path)
    cfg = apply_overrides(ExperimentConfig(), ["features.backbone=timm:resnet18", f"features.weights={path}"]).features
    ext = build_extractor(cfg)
    x = torch.randn(1, 3, 64, 64)
    ref = torchvision.models.feature_extraction.create_feature_extractor(tv.eval(), ["layer2"])
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(ext(x)["layer2"], ref(((x + 1) / 2 - mean) / std)["layer2"])


# --- config --------------------------------------------------------------------------------------------------


def test_presets_load_and_overrides_are_typed():
    for name in ("demo", "mvtec", "visa", "btad", "mtd", "tiny"):
        assert load_preset(name).preset == name
    cfg = load_preset("visa", ["dic.k=5", "reconstruction.eta=7"])
    assert cfg.dic.k == 5 and cfg.reconstruction.eta == 7.0
    assert load_preset("visa").for_category("pcb1").reconstruction.eta == 10.0  # the per-category table
    # A setting given for the run wins over the table (pcb1's eta 10 silently replaced --set reconstruction.eta=7);
    # the table's other settings still apply.
    assert cfg.for_category("pcb1").reconstruction.eta == 7.0 and cfg.for_category("pcb1").denoiser.epochs == 250
    assert cfg.for_category("pipe_fryum").reconstruction.eta == 7.0  # no table entry: the run's value
    no_table = apply_overrides(cfg, ["use_per_category=false"]).for_category("pcb1")
    assert no_table.reconstruction.eta == 7.0 and no_table.denoiser.epochs == load_preset("visa").denoiser.epochs
    # The category's own config keeps the whole table (it is part of every run's saved config and identity).
    assert load_preset("visa").for_category("pcb1").per_category == load_preset("visa").per_category
    with pytest.raises(ConfigError, match="dic.kk"):
        load_preset("demo", ["dic.kk=3"])
    with pytest.raises(ConfigError, match="dic.k"):
        load_preset("demo", ["dic.k=three"])
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("nope")


def test_numbers_in_scientific_notation_are_numbers(tmp_path):
    """PyYAML reads YAML 1.1, where 1e-4 (no dot) is a string: `--set denoiser.lr=1e-4` failed with "expected a
    number, got '1e-4'", and so did a preset file or a `--grid` value written that way."""
    from dynad.tuning import parse_grid

    cfg = load_preset("tiny", ["denoiser.lr=1e-4", "adaptation.lr=5E-5", "anomaly_map.sigma=2.5e0",
                               "reconstruction.eta=.5e1"])  # fmt: skip
    assert (cfg.denoiser.lr, cfg.adaptation.lr, cfg.anomaly_map.sigma, cfg.reconstruction.eta) == (1e-4, 5e-5, 2.5, 5.0)
    preset = tmp_path / "mine.yaml"
    preset.write_text("denoiser:\n  lr: 3e-4\n  epochs: 5\n")
    assert load_preset(str(preset)).denoiser.lr == 3e-4
    assert parse_grid(["denoiser.lr=1e-4,2.5e-4", "autoencoder.source=taef2,train"]) == {
        "denoiser.lr": [1e-4, 2.5e-4], "autoencoder.source": ["taef2", "train"]}
    assert load_preset("tiny", ["features.weights=1e5.pth"]).features.weights == "1e5.pth"  # words stay words


def test_paper_unet_size_within_ten_percent_of_281m():
    from dynad.denoiser import build_unet, count_parameters

    with torch.device("meta"):
        unet = build_unet(load_preset("mvtec").denoiser, 32, 4)
    assert abs(count_parameters(unet) / 281e6 - 1) < 0.10


# --- fidelity: the official code's behaviours, against an independent re-implementation (tests/official_code.py) --


def test_official_binning_of_y_hand_computed():
    """Bins of y itself on edges 1, 2, ..., 11: on an edge, between edges, below the minimum, above the maximum."""
    y = np.array([0.5, 1.0, 1.5, 2.0, 2.0001, 5.0, 10.9, 11.0, 12.0])
    expected = {
        "digitize": [0, 0, 1, 1, 2, 4, 10, 10, 10],  # right-closed (e_{b-1}, e_b] -> b; at or below e_0 -> 0
        "floor": [0, 0, 0, 1, 1, 4, 9, 10, 10],  # [e_b, e_{b+1}) -> b; at or above e_|B| -> |B|
    }
    for binning, bins in expected.items():
        dic = DynamicConditioning(DICConfig(binning=binning), 10)
        dic.edges = np.arange(1.0, 12.0)
        assert dic.bin(y).tolist() == bins, binning
    assert [official_code.bin_of(v, np.arange(1.0, 12.0)) for v in y] == expected["digitize"]


def test_half_up_rounding_of_the_reference_code():
    assert [t_hat_for_bin(b, DICConfig(t_max=50, rounding=r), 10) for r in ("half_up", "nearest", "floor")
            for b in (5,)] == [30, 20, 20]  # fmt: skip  # 25: halves up, to even, down
    for t_max in (40, 50, 75, 80, 100, 150, 200, 250):
        cfg = DICConfig(t_max=t_max, rounding="half_up")
        assert [t_hat_for_bin(b, cfg, 10) for b in range(11)] == [official_code.t_hat_of(b, t_max) for b in range(11)]


def test_reference_dic_matches_the_official_code_on_the_same_features():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(60, 24)).astype(np.float32)
    # Test rows from inside the training cloud to far outside it, so every bin region is visited.
    test = (train[rng.integers(0, 60, 40)] * rng.uniform(0.2, 2.5, (40, 1))).astype(np.float32)
    test = np.vstack([test, train[:3], train[:1] + 50]).astype(np.float32)
    cfg = load_preset("tiny", ["fidelity=reference", "dic.k=5", "dic.t_max=80"])
    y, b, t = DynamicConditioning(cfg.dic, cfg.reconstruction.num_steps).fit(train).t_hat(test)
    y_ref, b_ref, t_ref = official_code.dic(train, test, k=5, t_max=80)
    np.testing.assert_allclose(y, y_ref, rtol=1e-6)
    assert b.tolist() == b_ref.tolist() and t.tolist() == t_ref.tolist()
    assert len(set(b.tolist())) >= 5 and b.max() == 10
    # The paper reading puts in-range values one bin lower: it disagrees with the official code on some images.
    paper = DynamicConditioning(load_preset("tiny", ["dic.k=5", "dic.t_max=80"]).dic, 10).fit(train)
    assert (paper.t_hat(test)[1] != b_ref).any()


def _tiny_unet(seed: int = 0):
    cfg = load_preset("tiny")
    torch.manual_seed(seed)
    return build_unet(cfg.denoiser, 16, 4).eval()


def test_reference_sampler_matches_the_official_code():
    unet, sched, b = _tiny_unet(), NoiseSchedule(), official_code.betas()
    z0 = torch.randn(5, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    steps = np.array([20, 30, 100, 20, 50])
    rec = load_preset("tiny", ["fidelity=reference", "reconstruction.eta=4.0"]).reconstruction
    ours = reconstruct(unet, sched, z0, steps, rec)
    theirs = official_code.dynamic_sampler(unet, z0, steps, 4.0, b)
    assert (ours - theirs).abs().max() < 1e-5
    assert (ours - reconstruct(unet, sched, z0, steps, ReconstructionConfig(eta=4.0))).abs().max() > 1e-3  # paper
    # The fixed-step path (Table 4) drops the noise term at its first step.
    fixed = reconstruct(unet, sched, z0, [80] * 5, rec, drop_first_noise=True)
    theirs = official_code.fixed_sampler(unet, z0, 80, range(0, 80, 8), 4.0, b)
    assert (fixed - theirs).abs().max() < 1e-5
    assert (fixed - reconstruct(unet, sched, z0, [80] * 5, rec)).abs().max() > 1e-3


def test_reference_adaptation_grid_matches_the_official_code():
    """Adaptation scales by abar at the truncated T_max p / 10 and steps from it rounded half up (T_max 75, p 1:
    scale at 7, 10 steps from 10), with the fixed-step path's first-step quirk."""
    unet, sched, b = _tiny_unet(1), NoiseSchedule(), official_code.betas()
    z0 = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    rec = load_preset("tiny", ["fidelity=reference"]).reconstruction
    for t_max, p in ((75, 1), (75, 3), (80, 7)):
        scale, seq = official_code.adaptation_grid(t_max, p)
        x = t_max * p / 10
        t = max(10, int(np.floor(x / 10 + 0.5)) * 10)
        assert (t, int(x)) == (seq[-1] + seq.step, scale)
        ours = reconstruct(unet, sched, z0, [t] * 2, rec, drop_first_noise=True, scale_t=[int(x)] * 2)
        assert (ours - official_code.fixed_sampler(unet, z0, scale, seq, rec.eta, b)).abs().max() < 1e-5


def test_fidelity_switch_sets_every_behaviour_and_explicit_settings_win():
    paper, ref = load_preset("tiny"), load_preset("tiny", ["fidelity=reference"])
    assert paper.fidelity == "paper" and fidelity_deviations(paper) == []
    assert ref.fidelity == "reference" and fidelity_deviations(ref) == []
    for key, (p, r) in FIDELITY.items():
        section, name = key.split(".")
        assert getattr(getattr(paper, section), name) == p and getattr(getattr(ref, section), name) == r, key
    mixed = load_preset("tiny", ["dic.rounding=floor", "fidelity=reference"])  # explicit wins, in any order
    assert mixed.dic.rounding == "floor" and fidelity_deviations(mixed) == ["dic.rounding"]
    assert fidelity_deviations(apply_overrides(ref, ["fidelity=paper"])) == []  # and back
    with pytest.raises(ConfigError, match="fidelity"):
        load_preset("tiny", ["fidelity=official"])
    assert choices(ref, "cpu")["fidelity"] == "reference" and choices(ref, "cpu")["autocast"] == "off (float32)"
    assert choices(ref, "cuda")["autocast"] == "bf16"
    assert choices(apply_overrides(ref, ["mixed_precision=false"]), "cuda")["autocast"] == "off (float32)"


def test_cpu_bf16_modes_and_what_choices_reports():
    tiny = load_preset("tiny")
    assert tiny.inference.cpu_bf16 is False and choices(tiny, "cpu")["autocast"] == "off (float32)"
    assert choices(apply_overrides(tiny, ["inference.cpu_bf16=true"]), "cpu")["autocast"] == "bf16"
    auto = apply_overrides(tiny, ["inference.cpu_bf16=auto"])
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert choices(auto, "cpu")["autocast"] == ("bf16" if native else "off (float32)")
    assert choices(apply_overrides(auto, ["mixed_precision=false"]), "cpu")["autocast"] == "off (float32)"
    for name in ("mvtec", "visa", "btad"):  # the paper presets compute in their GPU precision wherever it pays
        assert load_preset(name).inference.cpu_bf16 == "auto", name
    with pytest.raises(ConfigError, match="inference.cpu_bf16"):
        check_config(apply_overrides(tiny, ["inference.cpu_bf16=fast"]))


def test_reference_map_upsampling_and_unclamped_decode():
    z0, z1 = torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 4, 4)
    z1[0, :, 0, 0] = 1.0
    a, b = am.latent_map(z0, z1, 8), am.latent_map(z0, z1, 8, align_corners=True)
    assert a[0, 0, 0] == 1.0 and b[0, 0, 0] == 1.0 and not torch.equal(a, b)
    assert b[0, 0, 2] == pytest.approx(1 - 2 / 7 * 3)  # corners aligned: output x = 2 sits at input 6/7
    from dynad.autoencoder import LatentCodec

    x = torch.tensor([[-3.0, 0.5, 2.0]])
    assert LatentCodec(None).decode(x).tolist() == [[-1.0, 0.5, 1.0]]
    assert LatentCodec(None).decode(x, clamp=False).tolist() == x.tolist()
