"""The patch-kNN peer (dynad/baselines/patch_knn.py) against brute-force implementations on small data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynad.baselines.patch_knn import PatchKNN, greedy_coreset, nearest_distance, patch_features
from dynad.config import AnomalyMapConfig, BaselineConfig, FeatureConfig
from dynad.features import build_extractor


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def brute_force_k_center(x: np.ndarray, first: int, n: int) -> list[int]:
    """Greedy k-center from the full pairwise distance matrix: each step takes the row farthest from the chosen."""
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))  # (N, N)
    chosen = [first]
    for _ in range(n - 1):
        chosen.append(int(np.argmax(d[:, chosen].min(axis=1))))
    return chosen


def test_greedy_coreset_matches_brute_force_k_center():
    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(1))
    idx = greedy_coreset(x, 25, projection_dim=128, seed=3)  # D = 6 < 128: no projection, exact distances
    assert idx.tolist() == brute_force_k_center(x.double().numpy(), int(idx[0]), 25)
    assert len(set(idx.tolist())) == 25
    # The coreset covers the data: every row is closer to the coreset than the coreset's farthest outlier radius.
    radius = nearest_distance(x, x[idx]).max()
    assert radius < nearest_distance(x, x[:25]).max()  # better than the first 25 rows


def test_greedy_coreset_with_projection_is_deterministic_and_spread():
    x = torch.randn(500, 200, generator=torch.Generator().manual_seed(2))
    a, b = greedy_coreset(x, 40, projection_dim=16, seed=0), greedy_coreset(x, 40, projection_dim=16, seed=0)
    assert torch.equal(a, b)
    assert len(set(a.tolist())) == 40
    # Spread: on 40 tight, well separated clusters the projected coreset takes one point of each.
    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 40, (500,), generator=g)
    clustered = 10 * torch.randn(40, 200, generator=g)[labels] + 0.1 * torch.randn(500, 200, generator=g)
    assert len(set(labels[greedy_coreset(clustered, 40, projection_dim=16, seed=0)].tolist())) == 40


def test_nearest_distance_is_exact():
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(50, 7, generator=g), torch.randn(30, 7, generator=g)
    expected = [min(float(torch.linalg.vector_norm(qi - m)) for m in bank) for qi in q]
    assert np.allclose(nearest_distance(q, bank, chunk=16).numpy(), expected, atol=1e-4)


def _extractor():
    cfg = FeatureConfig(backbone="torchvision:mobilenet_v2", weights="random",
                        layers=("features.3", "features.6"), map_layers=("features.3", "features.6"))  # fmt: skip
    torch.manual_seed(0)
    return build_extractor(cfg)


def test_patch_knn_exact_bank_scores_training_images_zero_and_finds_a_pasted_square():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(6, 3, 32, 32, generator=g) * 0.2 - 0.1  # (N, 3, S, S) faint noise around grey
    peer = PatchKNN(BaselineConfig(exact_below=10_000), _extractor(), ("features.3", "features.6")).fit(train)
    f = patch_features(peer.extractor, train, peer.layers)
    assert len(peer.bank) == peer.n_patches == f.shape[0] * f.shape[2] * f.shape[3]  # every patch: exact
    assert peer.patch_scores(train[:2]).abs().max() < 1e-3  # each training patch is in the bank
    test = train[:1].clone()
    test[:, :, 4:12, 18:26] = 1.0  # a white square
    maps = peer.anomaly_maps(test, AnomalyMapConfig(sigma=1.0, kernel_size=5))
    assert maps.shape == (1, 32, 32)
    y, x = np.unravel_index(int(maps[0].argmax()), (32, 32))
    assert 2 <= y <= 14 and 16 <= x <= 28


def test_patch_knn_coreset_when_the_bank_is_large():
    train = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    peer = PatchKNN(BaselineConfig(exact_below=10, coreset_ratio=0.1), _extractor(), ("features.3", "features.6"))
    peer.fit(train)
    assert len(peer.bank) == int(np.ceil(0.1 * peer.n_patches)) < peer.n_patches
