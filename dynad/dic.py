"""Dynamic Implicit Conditioning, DIC (Algorithm 2; METHOD.md section 3): one diffusion step T_hat per image.

Notation:
    f(x)      layer-2 features of the (adapted) extractor, average-pooled to 16 x 16, flattened   (`knn_features`)
    y_bar(x)  mean L1 distance of f(x) to its K nearest neighbours among the training features
    B         |B| equal-width bins spanning the training images' y_bar values, edges e_0 < ... < e_|B|
    b(x)      bin index of y_bar(x). binning="floor" (paper reading): floor((y - e_0) / width), clipped to 0..|B|
              (0 below the range, |B| at or above its top); binning="digitize" (reference code): the number of
              edges strictly below y, at most |B| (0 at or below e_0, 1..|B| inside the range, |B| above it)
    T_hat     round_to_steps(max(b, min_bin) / |B| * T_max)

The neighbour search is scikit-learn's exact brute-force NearestNeighbors with the L1 ("manhattan") metric:
a few hundred to a few thousand training vectors need no approximate index (faiss), and brute force is exact.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from dynad.config import DICConfig


def t_hat_for_bin(b: int, cfg: DICConfig, num_steps: int) -> int:
    """Map a bin index to T_hat, a multiple of the `num_steps` DDIM steps and at least one step each.

    rounding="floor" (paper): floor(max(b, min_bin) / |B| * T_max) floored to a multiple of num_steps;
    rounding="nearest": that integer rounded to the nearest multiple, halves to even; rounding="half_up" (reference
    code): max(b, min_bin) / |B| * T_max itself to the nearest multiple, halves up (T_max 50, bin 5: 25 -> 30, where
    "nearest" gives 20). T_max 80: bins 0..10 -> 20,20,20,20,30,40,50,60,60,70,80 with "nearest" and "half_up",
    and 10,10,10,20,30,40,40,50,60,70,80 with "floor".
    """
    x = max(b, cfg.min_bin) / cfg.num_bins * cfg.t_max
    if cfg.rounding == "floor":
        t = (math.floor(x) // num_steps) * num_steps
    elif cfg.rounding == "nearest":
        t = int(round(math.floor(x) / num_steps)) * num_steps  # Python rounds half to even: 25 -> 20, 35 -> 40
    elif cfg.rounding == "half_up":  # not capped at T_max, as in the reference code (T_max 75, bin 10: 80)
        return max(math.floor(x / num_steps + 0.5) * num_steps, num_steps)
    else:
        raise ValueError(f"dic.rounding must be 'floor', 'nearest' or 'half_up', got {cfg.rounding!r}")
    return min(max(t, num_steps), cfg.t_max)


class DynamicConditioning:
    """kNN on training features, equal-width bins over the training distances, bin -> T_hat."""

    def __init__(self, cfg: DICConfig, num_steps: int):
        self.cfg = cfg
        self.num_steps = num_steps
        self.train_features: np.ndarray | None = None  # (N, D) float32
        self.train_distances: np.ndarray | None = None  # (N,) y_bar of each training image
        self.edges: np.ndarray | None = None  # (|B| + 1,)
        self._nn: NearestNeighbors | None = None

    @property
    def table(self) -> list[int]:
        """T_hat for each bin 0 .. |B|."""
        return [t_hat_for_bin(b, self.cfg, self.num_steps) for b in range(self.cfg.num_bins + 1)]

    def fit(self, train_features: torch.Tensor | np.ndarray) -> "DynamicConditioning":
        x = np.asarray(train_features, dtype=np.float32)  # (N, D)
        exclude = self.cfg.self_distance == "exclude"
        if self.cfg.self_distance not in ("exclude", "include"):
            raise ValueError(f"dic.self_distance must be 'exclude' or 'include', got {self.cfg.self_distance!r}")
        if x.shape[0] < self.cfg.k + int(exclude):
            raise ValueError(f"DIC needs more than K = {self.cfg.k} training images, got {x.shape[0]}")
        self.train_features = x
        self._nn = NearestNeighbors(n_neighbors=self.cfg.k, metric="manhattan", algorithm="brute").fit(x)
        d, _ = self._nn.kneighbors(x, n_neighbors=self.cfg.k + int(exclude))  # (N, K [+1]), sorted, d[:, 0] = 0
        self.train_distances = (d[:, 1:] if exclude else d).mean(axis=1)
        if self.cfg.binning == "digitize":  # np.histogram's edges (the reference code's), to the last bit
            self.edges = np.histogram_bin_edges(self.train_distances, self.cfg.num_bins)
        elif self.cfg.binning == "floor":
            self.edges = np.linspace(self.train_distances.min(), self.train_distances.max(), self.cfg.num_bins + 1)
        else:
            raise ValueError(f"dic.binning must be 'floor' or 'digitize', got {self.cfg.binning!r}")
        return self

    def distance(self, features: torch.Tensor | np.ndarray) -> np.ndarray:
        """y_bar for each row of features (B, D) -> (B,)."""
        if self._nn is None:
            raise RuntimeError("DynamicConditioning.fit must be called first")
        d, _ = self._nn.kneighbors(np.asarray(features, dtype=np.float32), n_neighbors=self.cfg.k)
        return d.mean(axis=1)

    def bin(self, y_bar: np.ndarray) -> np.ndarray:
        """Bin index (B,) of each y_bar, by `dic.binning` (see the module docstring)."""
        y = np.asarray(y_bar)  # (B,)
        if self.cfg.binning == "digitize":
            below = (self.edges < y[..., None]).sum(axis=-1)  # (B, |B| + 1) -> (B,): edges strictly below y
            return np.minimum(below, self.cfg.num_bins).astype(int)
        lo, hi = self.edges[0], self.edges[-1]
        width = (hi - lo) / self.cfg.num_bins if hi > lo else 1.0
        return np.clip(np.floor((y - lo) / width), 0, self.cfg.num_bins).astype(int)

    def t_hat(self, features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(y_bar, bin, T_hat) for each row of features; T_hat is fixed when the ablation asks for it."""
        y = self.distance(features)
        b = self.bin(y)
        if self.cfg.fixed_t_hat is not None:
            t = np.full_like(b, self.cfg.fixed_t_hat)
        else:
            t = np.asarray(self.table)[b]
        return y, b, t

    def state_dict(self) -> dict:
        return {"train_features": self.train_features, "num_steps": self.num_steps}  # cfg: in the pipeline checkpoint

    @classmethod
    def from_state_dict(cls, state: dict, cfg: DICConfig) -> "DynamicConditioning":
        """Refit from stored training features (the kNN index itself is cheap to rebuild)."""
        return cls(cfg, state["num_steps"]).fit(state["train_features"])
