"""Range checks of a whole config, and of the config against the data, before anything is trained.

    check_config(cfg, n_train=len(train_images))    # raises ConfigError, one line per fault

Types are checked when a config is built (`dynad.config.from_dict`); this module checks what a type cannot say:
ranges (`dic.num_bins >= 1`), fields against each other (`dic.t_max` inside the noise schedule, the image size
divisible by the autoencoder's and the UNet's downsampling) and against the data (`dic.k` below the number of
training images). Every line names the key, the value and what is allowed, so a paper preset fails in seconds
instead of after hours of training.
"""

from __future__ import annotations

import math
import re

from dynad.config import ConfigError, ExperimentConfig, kernel_size

CHOICES = {
    "autoencoder.posterior": ("mean", "sample"),
    "adaptation.loss": ("per_position", "flattened"),
    "dic.rounding": ("floor", "nearest", "half_up"),
    "dic.binning": ("floor", "digitize"),
    "adaptation.step_grid": ("paper", "reference"),
    "data.mask_resize": ("area", "bilinear"),
    "ablations.variants": ("all", "short"),
    "dic.self_distance": ("exclude", "include"),
    "reconstruction.start": ("noiseless", "noise"),
    "reconstruction.sampler_start": ("t_hat", "t_hat_minus_step"),
    "reconstruction.space": ("latent", "pixel"),
    "anomaly_map.normalization": ("test_set", "train"),
    "eval.pro_method": ("exact", "thresholds200"),
    "inference.cpu_bf16": (False, True, "auto"),
}


def _faults(cfg: ExperimentConfig, n_train: int | None, n_held: int) -> list[str]:
    faults: list[str] = []

    def need(ok: bool, key: str, value, allowed: str) -> None:
        if not ok:
            faults.append(f"{key} = {value!r}: {allowed}")

    def at_least(key: str, value, lo: float) -> None:
        need(value >= lo, key, value, f"must be >= {lo}")

    def positive(key: str, value) -> None:
        need(value > 0, key, value, "must be > 0")

    d, ae, den, f, a, dic, rec, am, ev = (cfg.data, cfg.autoencoder, cfg.denoiser, cfg.features, cfg.adaptation,
                                         cfg.dic, cfg.reconstruction, cfg.anomaly_map, cfg.eval)  # fmt: skip
    need(cfg.fidelity in ("paper", "reference"), "fidelity", cfg.fidelity, "must be one of paper, reference")
    need(cfg.mixed_precision_dtype in ("bf16", "fp16"), "mixed_precision_dtype", cfg.mixed_precision_dtype,
         "must be one of bf16, fp16")  # fmt: skip
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        need(value in allowed, key, value, f"must be one of {', '.join(str(a).lower() for a in allowed)}")
    need(cfg.device == "auto" or re.fullmatch(r"cpu|mps|cuda(:\d+)?", cfg.device) is not None, "device", cfg.device,
         "must be auto, cpu, mps, cuda or cuda:<index>")  # fmt: skip
    need(0.0 <= cfg.predict.threshold_quantile <= 1.0, "predict.threshold_quantile", cfg.predict.threshold_quantile,
         "must lie in [0, 1]")  # fmt: skip
    at_least("seed", cfg.seed, 0)
    at_least("threads", cfg.threads, 0)  # 0: torch's default

    at_least("data.image_size", d.image_size, 8)
    need(0.0 <= d.mask_threshold < 1.0, "data.mask_threshold", d.mask_threshold, "must be in [0, 1)")
    at_least("data.batch_size", d.batch_size, 1)
    at_least("data.num_workers", d.num_workers, 0)

    if ae.scaling_factor is not None:  # None: measured on the training latents
        positive("autoencoder.scaling_factor", ae.scaling_factor)
    v = cfg.validation
    need(0.0 <= v.fraction <= 0.5, "validation.fraction", v.fraction, "must be in [0, 0.5]")
    at_least("validation.seed", v.seed, 0)
    factor = 1
    if ae.source == "train" and rec.space == "latent":
        at_least("autoencoder.epochs", ae.epochs, 1)  # 0 would leave an untrained VAE
        at_least("autoencoder.batch_size", ae.batch_size, 1)
        positive("autoencoder.lr", ae.lr)
        at_least("autoencoder.kl_weight", ae.kl_weight, 0.0)
        at_least("autoencoder.latent_channels", ae.latent_channels, 1)
        at_least("autoencoder.layers_per_block", ae.layers_per_block, 1)
        need(len(ae.block_out_channels) >= 1, "autoencoder.block_out_channels", list(ae.block_out_channels),
             "must list at least one width")  # fmt: skip
        for c in ae.block_out_channels:
            need(ae.norm_num_groups >= 1 and c % ae.norm_num_groups == 0, "autoencoder.norm_num_groups",
                 ae.norm_num_groups, f"must divide every width of autoencoder.block_out_channels ({c})")  # fmt: skip
        factor = 2 ** max(len(ae.block_out_channels) - 1, 0)
        need(d.image_size % factor == 0, "data.image_size", d.image_size,
             f"must be divisible by the autoencoder's downsampling factor {factor} "
             f"(2 ** (len(autoencoder.block_out_channels) - 1))")  # fmt: skip

    T = den.num_train_timesteps
    at_least("denoiser.num_train_timesteps", T, 2)
    need(0.0 < den.beta_start < den.beta_end < 1.0, "denoiser.beta_start", den.beta_start,
         f"must satisfy 0 < beta_start < beta_end ({den.beta_end}) < 1")  # fmt: skip
    n_levels = len(den.block_out_channels)
    need(n_levels >= 1 and len(den.down_block_types) == n_levels == len(den.up_block_types),
         "denoiser.down_block_types", len(den.down_block_types),
         f"denoiser.block_out_channels ({n_levels}), down_block_types and up_block_types need the same length")
    for c in den.block_out_channels:
        need(den.norm_num_groups >= 1 and c % den.norm_num_groups == 0, "denoiser.norm_num_groups",
             den.norm_num_groups, f"must divide every width of denoiser.block_out_channels ({c})")  # fmt: skip
    at_least("denoiser.layers_per_block", den.layers_per_block, 1)
    if den.max_train_timestep is not None:
        need(1 <= den.max_train_timestep <= T, "denoiser.max_train_timestep", den.max_train_timestep,
             f"must be in 1..{T}")
        need(dic.t_max <= den.max_train_timestep, "dic.t_max", dic.t_max,
             f"must be <= denoiser.max_train_timestep ({den.max_train_timestep}): the denoiser never saw larger steps")
    at_least("denoiser.attention_head_dim", den.attention_head_dim, 1)
    need(0.0 <= den.dropout < 1.0, "denoiser.dropout", den.dropout, "must be in [0, 1)")
    need(0.0 <= den.ema_decay < 1.0, "denoiser.ema_decay", den.ema_decay, "must be in [0, 1) (0: no average)")
    if den.init_from:
        at_least("denoiser.finetune_epochs", den.finetune_epochs, 1)
        positive("denoiser.finetune_lr", den.finetune_lr)
    else:
        at_least("denoiser.epochs", den.epochs, 1)
        positive("denoiser.lr", den.lr)
    at_least("denoiser.batch_size", den.batch_size, 1)
    at_least("denoiser.weight_decay", den.weight_decay, 0.0)
    at_least("denoiser.checkpoint_every", den.checkpoint_every, 1)
    if d.image_size % factor == 0:
        latent, unet_factor = d.image_size // factor, 2 ** max(n_levels - 1, 0)
        need(latent % unet_factor == 0, "data.image_size", d.image_size,
             f"its latent size {latent} must be divisible by the UNet's downsampling factor {unet_factor} "
             f"(2 ** (len(denoiser.block_out_channels) - 1))")  # fmt: skip

    need(f.knn_layer in f.layers, "features.knn_layer", f.knn_layer, f"must be one of features.layers {list(f.layers)}")
    for layer in f.map_layers:
        need(layer in f.layers, "features.map_layers", layer, f"must be one of features.layers {list(f.layers)}")
    at_least("features.knn_pool_size", f.knn_pool_size, 1)
    if f.input_size is not None:
        at_least("features.input_size", f.input_size, 8)

    at_least("adaptation.epochs", a.epochs, 0)
    if a.epochs > 0:
        positive("adaptation.lr", a.lr)
        at_least("adaptation.batch_size", a.batch_size, 1)
        at_least("adaptation.num_levels", a.num_levels, 1)

    at_least("dic.k", dic.k, 1)
    at_least("dic.num_bins", dic.num_bins, 1)
    need(1 <= dic.t_max <= T - 1, "dic.t_max", dic.t_max,
         f"must be in [1, {T - 1}] (steps 0 .. denoiser.num_train_timesteps - 1)")  # fmt: skip
    need(0 <= dic.min_bin <= dic.num_bins, "dic.min_bin", dic.min_bin, f"must be in [0, dic.num_bins = {dic.num_bins}]")
    if dic.fixed_t_hat is not None:
        need(1 <= dic.fixed_t_hat <= T - 1, "dic.fixed_t_hat", dic.fixed_t_hat, f"must be in [1, {T - 1}] or null")
    if n_train is not None:
        need_n = dic.k + int(dic.self_distance == "exclude")
        held = f" ({n_train + n_held} training images, {n_held} held out for validation)" if n_held else ""
        most = n_train - need_n + dic.k  # the largest K these images allow
        fix = f"a dic.k of at most {most}, or more training images" if most >= 1 else "more training images"
        itself = " besides the image itself" if dic.self_distance == "exclude" else ""
        need(n_train >= need_n, "dic.k", dic.k, f"needs at least {need_n} training images (K neighbours{itself}); "
             f"the data have {n_train}{held}: {fix}")  # fmt: skip

    at_least("reconstruction.num_steps", rec.num_steps, 1)
    at_least("reconstruction.eta", rec.eta, 0.0)

    need(0.0 <= am.lam <= 1.0, "anomaly_map.lam", am.lam, "must be in [0, 1]")
    positive("anomaly_map.sigma", am.sigma)
    need(am.kernel_size >= 1 and am.kernel_size % 2 == 1, "anomaly_map.kernel_size", am.kernel_size,
         "must be odd and >= 1")  # fmt: skip
    half = am.kernel_size // 2
    if am.sigma > 0:  # a --set of sigma alone kept the preset's kernel, which then cut the Gaussian short
        need(half >= 2 * am.sigma, "anomaly_map.kernel_size", am.kernel_size,
             f"covers only +-{half} px, {half / am.sigma:.2f} sigma of anomaly_map.sigma {am.sigma:g}, so the Gaussian "
             f"is cut to a box: a kernel_size of at least {2 * math.ceil(2 * am.sigma) + 1} (+-2 sigma; dynad tune "
             f"sets 2 * round(4 sigma) + 1 = {kernel_size(am.sigma)}), or a smaller sigma")  # fmt: skip
    # The map (data.image_size square) is padded by reflection, kernel_size // 2 on each side, which needs fewer
    # pixels than the map has; torch says so only after training, in its own words.
    need(half < d.image_size, "anomaly_map.kernel_size", am.kernel_size,
         f"must be at most {2 * d.image_size - 1} for maps of data.image_size {d.image_size} px (anomaly_map.sigma "
         f"{am.sigma:g}; dynad tune uses 2 * round(4 sigma) + 1): a smaller sigma, or a smaller kernel_size")
    at_least("anomaly_map.num_train_maps", am.num_train_maps, 1)
    at_least("anomaly_map.score_exponent", am.score_exponent, 0.0)
    at_least("eval.num_figures", ev.num_figures, 0)
    at_least("gradient_accumulation_steps", cfg.gradient_accumulation_steps, 1)
    bl = cfg.baselines
    need(0 < bl.coreset_ratio <= 1, "baselines.coreset_ratio", bl.coreset_ratio, "must lie in (0, 1]")
    at_least("baselines.projection_dim", bl.projection_dim, 1)
    at_least("baselines.exact_below", bl.exact_below, 0)
    return faults


def check_buildable(cfg: ExperimentConfig, autoencoder: bool = True) -> None:
    """What only torch can check, in seconds: the UNet and the feature extractor are built on the meta device (no
    memory, no random numbers drawn) and the extractor's weights file is found and matched; both are built after
    hours of training otherwise. With `autoencoder`, a pretrained autoencoder is loaded too (a training loads it
    first anyway). ConfigError, or FileNotFoundError for a weights file that is not there."""
    from dynad.autoencoder import load_pretrained_vae  # torch and diffusers: not needed by the range checks above
    from dynad.denoiser import check_unet
    from dynad.features import check_extractor

    check_unet(cfg.denoiser)
    check_extractor(cfg.features)
    if autoencoder and cfg.autoencoder.source != "train" and cfg.reconstruction.space != "pixel":
        load_pretrained_vae(cfg.autoencoder.source)


def check_config(cfg: ExperimentConfig, n_train: int | None = None, n_held: int = 0) -> ExperimentConfig:
    """Raise ConfigError listing every out-of-range field (one line each); return `cfg` when all are valid.

    `n_train`, when given, also checks the settings that depend on the data (K against the training images);
    `n_held` is how many more were held out for validation, for the message.
    """
    faults = _faults(cfg, n_train, n_held)
    if faults:
        raise ConfigError("\n".join(faults))
    return cfg
