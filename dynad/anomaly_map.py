"""The anomaly map and score (Eq. 9; METHOD.md section 5).

    M_lat(x)  = mean_c | z0_hat - z0 |                            upsampled (bilinear) to the image size
    M_feat(x) = sum_{j in map layers} (1 - cos_c(phi_j(x0), phi_j(x0_hat)))   each upsampled, then summed
    A(x)      = G_sigma * (lam * norm(M_lat) + (1 - lam) * norm(M_feat))      G: Gaussian, sigma 4, kernel 33
    A(x)     <- A(x) * max(A(x), 0)^gamma                                     gamma = score_exponent, 0 in the paper
    score(x)  = max A(x)

With gamma > 0 the map of an image is scaled by its own score: the order of the pixels within an image and the order
of the image scores do not change, only how pixels of different images compare.

norm is a min-max normalisation whose (min, max) come from the whole test set of the category (the paper's
and reference code's choice) or from maps of training images (so that one new image can be scored alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from dynad.config import AnomalyMapConfig


def latent_map(z0: torch.Tensor, z0_hat: torch.Tensor, size: int, align_corners: bool = False) -> torch.Tensor:
    """(B, C, h, w) x 2 -> (B, size, size); align_corners=True is the reference code's upsampling."""
    m = (z0_hat - z0).abs().mean(dim=1, keepdim=True)  # (B, 1, h, w)
    return F.interpolate(m, size=(size, size), mode="bilinear", align_corners=align_corners)[:, 0]


def feature_map(
    feats: dict[str, torch.Tensor], feats_hat: dict[str, torch.Tensor], layers, size: int, align_corners: bool = False
) -> torch.Tensor:
    """{layer: (B, C_j, H_j, W_j)} x 2 -> (B, size, size): summed per-position cosine distances."""
    total = 0
    for name in layers:
        d = 1 - F.cosine_similarity(feats[name].float(), feats_hat[name].float(), dim=1)  # (B, H_j, W_j)
        up = F.interpolate(d[:, None], size=(size, size), mode="bilinear", align_corners=align_corners)  # (B, 1, S, S)
        total = total + up[:, 0]
    return total


@dataclass
class MapNormalization:
    """(min, max) of each raw map type."""

    lat_min: float
    lat_max: float
    feat_min: float
    feat_max: float

    @classmethod
    def from_maps(cls, lat: torch.Tensor, feat: torch.Tensor) -> "MapNormalization":
        return cls(float(lat.min()), float(lat.max()), float(feat.min()), float(feat.max()))


def combine(lat: torch.Tensor, feat: torch.Tensor, norm: MapNormalization, cfg: AnomalyMapConfig) -> torch.Tensor:
    """Raw maps (B, H, W) x 2 -> A (B, H, W)."""
    lat_n = (lat - norm.lat_min) / max(norm.lat_max - norm.lat_min, 1e-12)
    feat_n = (feat - norm.feat_min) / max(norm.feat_max - norm.feat_min, 1e-12)
    a = cfg.lam * lat_n + (1 - cfg.lam) * feat_n
    a = gaussian_blur(a[:, None], kernel_size=cfg.kernel_size, sigma=cfg.sigma)[:, 0]  # (B, H, W)
    if cfg.score_exponent:
        a = a * image_scores(a).clamp_min(0).pow(cfg.score_exponent)[:, None, None]
    return a


def image_scores(maps: torch.Tensor) -> torch.Tensor:
    """score = max of A, (B, H, W) -> (B,)."""
    return maps.flatten(1).amax(dim=1)
