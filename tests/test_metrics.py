"""dynad.metrics against hand-computed cases and against slow, obvious implementations written here."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from dynad import metrics


# ---------------------------------------------------------------- slow references (independent of dynad.metrics)


def regions_8(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected regions of one (H, W) mask by flood fill: a list of flat pixel-index arrays."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        stack, pixels = [(y0, x0)], []
        while stack:
            y, x = stack.pop()
            pixels.append(y * w + x)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        out.append(np.array(pixels))
    return out


def slow_pro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """PRO the obvious way: every distinct threshold, FPR and per-region overlaps counted one by one."""
    regions = [(i, r) for i, m in enumerate(masks) for r in regions_8(m)]
    normal = ~masks
    xs, ys = [0.0], [0.0]
    for th in np.unique(maps)[::-1]:
        pred = maps >= th
        xs.append((pred & normal).sum() / normal.sum())
        ys.append(np.mean([pred[i].reshape(-1)[r].mean() for i, r in regions]))
        if xs[-1] > fpr_limit:
            break
    area = 0.0
    for x0, x1, y0, y1 in zip(xs[:-1], xs[1:], ys[:-1], ys[1:]):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:  # the last segment, cut at fpr_limit
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def slow_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney U / (P * N): pairs (anomalous, normal) ranked correctly, ties counting one half."""
    pos, neg = scores[labels.astype(bool)], scores[~labels.astype(bool)]
    u = sum((neg < p).sum() + 0.5 * (neg == p).sum() for p in pos)
    return u / (pos.size * neg.size)


def blob_set(seed: int, n: int = 10, size: int = 32, quantise: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Random elliptic blobs (about half the images anomalous) and smooth float32 maps that tend to light them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        if i == 0 or rng.random() < 0.5:
            for _ in range(rng.integers(1, 4)):
                cy, cx = rng.uniform(0, size, 2)
                ry, rx = rng.uniform(0.7, size / 5, 2)
                masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    noise = ndimage.gaussian_filter(rng.normal(size=masks.shape), sigma=(0, 2, 2))
    maps = noise / noise.std() + 1.5 * ndimage.gaussian_filter(masks.astype(float), sigma=(0, 1.5, 1.5))
    if quantise:  # a few dozen distinct values: large groups of tied scores, normal and anomalous pixels mixed
        maps = np.round(maps * 4) / 4
    return masks, maps.astype(np.float32)


# ---------------------------------------------------------------- hand-computed cases


def two_region_image() -> tuple[np.ndarray, np.ndarray]:
    """One 4x4 image: region A = 2 pixels (row 0), region B = 4 pixels (bottom right), 10 normal pixels.

        A A . .      scores: A 0.9 0.9; B 0.8 0.8 / 0.3 0.2;
        . . . .      normal: one 0.7, one 0.5, eight 0.2 (tied with a B pixel)
        . . B B
        . . B B
    """
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, :2] = True
    masks[0, 2:, 2:] = True
    maps = np.full((1, 4, 4), 0.2, dtype=np.float32)
    maps[0, 0, :2] = 0.9
    maps[0, 2, 2:] = 0.8
    maps[0, 3, 2] = 0.3
    maps[0, 1, 0], maps[0, 1, 1] = 0.7, 0.5
    return masks, maps


def test_pro_two_regions_by_hand():
    # Curve (FPR, PRO = mean over the 2 regions of the found fraction), thresholds descending:
    #   start (0, 0); th 0.9: A found (0, 1/2); 0.8: B half found (0, 3/4); 0.7: (0.1, 3/4); 0.5: (0.2, 3/4);
    #   0.3: B 3/4 found (0.2, 7/8); 0.2: all pixels (1.0, 1).
    # PRO at FPR 0.3, on the last segment: 7/8 + (1 - 7/8) * (0.3 - 0.2) / (1.0 - 0.2) = 0.890625.
    # Area: 0.2 * 3/4 + 0.1 * (0.875 + 0.890625) / 2 = 0.15 + 0.08828125 = 0.23828125; PRO = area / 0.3.
    # (A pixel-weighted mean instead of the region mean would give B twice A's weight.)
    masks, maps = two_region_image()
    assert metrics.pro(masks, maps) == pytest.approx(0.23828125 / 0.3, abs=1e-6)
    # Up to FPR 0.1 the curve is flat at 3/4 after the vertical start: area 0.075, PRO 0.75.
    assert metrics.pro(masks, maps, fpr_limit=0.1) == pytest.approx(0.75, abs=1e-6)


def test_pro_regions_are_8_connected_and_per_image():
    # Image 0: pixels (0,0), (0,1) and (1,2) touch diagonally -> one region of 3; only (1,2) scores high.
    # Image 1: the same place holds a 1-pixel region, not found; it is a separate region (not merged across images).
    # Curve: (0, 0); th 1: (0, (1/3 + 0) / 2 = 1/6); th 0: (1, 1). PRO(0.3) = 1/6 + 5/6 * 0.3 = 5/12.
    # Area / 0.3 = (1/6 + 5/12) / 2 = 7/24. (4-connectivity would give regions {2 px, 1 px found, 1 px}: 1/3.)
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 0, :2] = masks[0, 1, 2] = True
    masks[1, 1, 2] = True
    maps = np.zeros((2, 4, 4), dtype=np.float32)
    maps[0, 1, 2] = 1.0
    assert metrics.pro(masks, maps) == pytest.approx(7 / 24, abs=1e-9)


def test_perfect_and_inverted_maps():
    masks, _ = blob_set(seed=1)
    perfect = masks.astype(np.float32)
    assert metrics.pro(masks, perfect) == pytest.approx(1.0, abs=1e-12)
    assert metrics.pixel_auroc(masks, perfect) == 1.0
    assert metrics.pixel_auroc(masks, -perfect) == 0.0
    assert metrics.f1_max(masks, perfect) == 1.0
    assert metrics.pro(masks, -perfect) == pytest.approx(0.0, abs=1e-12)


def test_image_auroc_by_hand():
    # 3 normals, 2 anomalies; the anomaly at 0.3 ranks below the normal at 0.4: 5 of 6 pairs right.
    assert metrics.image_auroc([0, 0, 0, 1, 1], [0.1, 0.2, 0.4, 0.3, 0.5]) == pytest.approx(5 / 6)
    assert metrics.image_auroc(np.array([False, True]), [0.0, 1.0]) == 1.0


def test_f1_max_youden_and_ap_by_hand():
    # 2 anomalies (0.9, 0.3), 10 normals (0.8, 0.7, 0.6, then seven below 0.3).
    #   th 0.9: TP 1, FP 0 -> F1 = 2TP / (2TP + FP + FN) = 2/3, J = 1/2 - 0 = 0.5   (best F1)
    #   th 0.8: TP 1, FP 1 -> F1 1/2, J 0.4;  th 0.7: F1 2/5, J 0.3;  th 0.6: F1 1/3, J 0.2
    #   th 0.3: TP 2, FP 3 -> F1 = 4/7, J = 1 - 0.3 = 0.7                              (best J)
    #   lower thresholds only add false positives.
    labels = np.r_[1, 1, np.zeros(10, dtype=int)]
    scores = np.r_[0.9, 0.3, 0.8, 0.7, 0.6, 0.2, 0.15, 0.1, 0.08, 0.05, 0.02, 0.01]
    assert metrics.f1_max(labels, scores) == pytest.approx(2 / 3)
    assert metrics.f1_youden(labels, scores) == pytest.approx(4 / 7)
    # Tied J = 1/2 at th 0.8 (F1 2/3) and th 0.35 (F1 4/5): the highest threshold wins.
    assert metrics.f1_youden([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(2 / 3)
    # AP = sum over recall steps of precision: recall 1/2 at precision 1, recall 1 at precision 2/5.
    assert metrics.average_precision(labels, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 5)


# ---------------------------------------------------------------- against the slow references


@pytest.mark.parametrize("quantise", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pro_exact_matches_slow_reference(seed, quantise):
    masks, maps = blob_set(seed, quantise=quantise)
    for fpr_limit in (0.3, 0.02):
        assert metrics.pro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(
            slow_pro(masks, maps, fpr_limit), abs=1e-6
        )


def test_pro_exact_full_range_and_float64_input():
    masks, maps = blob_set(seed=3, n=4, size=16, quantise=True)
    assert metrics.pro(masks, maps, fpr_limit=1.0) == pytest.approx(slow_pro(masks, maps, 1.0), abs=1e-6)
    assert metrics.pro(masks, maps.astype(np.float64)) == metrics.pro(masks, maps)


@pytest.mark.parametrize("quantise", [False, True])
def test_pixel_metrics_match_mann_whitney_and_sklearn(quantise):
    masks, maps = blob_set(seed=4, n=4, size=24, quantise=quantise)
    labels, scores = masks.reshape(-1), maps.reshape(-1)
    assert metrics.pixel_auroc(masks, maps) == pytest.approx(slow_auroc(labels, scores), abs=1e-12)
    # evaluate's one-sort pixel AP and F1-max equal the scikit-learn based functions on the flattened pixels.
    full = metrics.evaluate(masks.any(axis=(1, 2)), maps.max(axis=(1, 2)), masks, maps)
    assert full["pixel_auroc"] == metrics.pixel_auroc(masks, maps)
    assert full["pixel_ap"] == pytest.approx(metrics.average_precision(labels, scores), abs=1e-12)
    assert full["pixel_f1_max"] == pytest.approx(metrics.f1_max(labels, scores), abs=1e-12)


# ---------------------------------------------------------------- the reference code's approximation


def test_thresholds200_semantics_by_hand():
    # Same layout as two_region_image; maps from 0 to 1, 4 thresholds 0, 0.25, 0.5, 0.75 (the max 1 is not one),
    # predicted anomalous when map > th (dyadic values: equal to a threshold exactly, also in float32).
    # A 1 1; B 0.875 0.5 / 0.375 0; normal: 0.625, 0.5, 0.25 (both = a threshold), seven 0.125.
    #   th 0.75: FPR 0,   PRO (1 + 1/4) / 2 = 5/8
    #   th 0.5:  FPR 0.1, PRO 5/8 (neither 0.5, the normal nor the B pixel, is > 0.5)
    #   th 0.25: FPR 0.2, PRO (1 + 3/4) / 2 = 7/8     th 0: FPR 1.0 (dropped: not < 0.3)
    # FPR rescaled by its kept max 0.2: (0, 5/8), (1/2, 5/8), (1, 7/8); area 5/16 + (5/8 + 7/8) / 4 = 0.6875.
    # With fpr_limit 0.2 the point at FPR 0.2 is dropped (strictly below): (0, 5/8), (1, 5/8) -> 0.625.
    masks, maps = two_region_image()
    maps[:] = 0.125
    maps[0, 0, :2] = 1.0
    maps[0, 2, 2:] = 0.875, 0.5
    maps[0, 3, 2], maps[0, 3, 3] = 0.375, 0.0
    maps[0, 1, 0], maps[0, 1, 1], maps[0, 1, 2] = 0.625, 0.5, 0.25
    assert metrics.pro(masks, maps, method="thresholds200", num_thresholds=4) == pytest.approx(0.6875, abs=1e-9)
    assert metrics.pro(masks, maps, 0.2, method="thresholds200", num_thresholds=4) == pytest.approx(0.625, abs=1e-9)
    # The exact curve of the same maps: (0, 1/2) at 1, (0, 5/8) at 0.875, (0.1, 5/8) at 0.625, then at 0.5 a normal
    # and a B pixel tie: diagonal to (0.2, 3/4); (0.2, 7/8) at 0.375; (0.3, 7/8) at 0.25; ...
    # Area to 0.3: 0.1 * 5/8 + 0.1 * (5/8 + 3/4) / 2 + 0.1 * 7/8 = 0.21875.
    assert metrics.pro(masks, maps) == pytest.approx(0.21875 / 0.3, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_thresholds200_close_to_exact_on_smooth_maps(seed):
    masks, maps = blob_set(seed, n=20, size=48)
    exact = metrics.pro(masks, maps)
    approx = metrics.pro(masks, maps, method="thresholds200")
    assert abs(approx - exact) < 0.05
    assert approx != exact  # a different computation, not an alias


# ---------------------------------------------------------------- evaluate and errors


def test_evaluate_keys_ranges_and_consistency():
    masks, maps = blob_set(seed=5, n=12, size=24)
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = maps.max(axis=(1, 2))
    image_only = metrics.evaluate(labels, scores)
    assert set(image_only) == {"image_auroc", "image_ap", "image_f1_max", "image_f1_youden"}
    full = metrics.evaluate(labels, scores, masks, maps, pro_method="thresholds200")
    assert set(full) == set(image_only) | {"pixel_auroc", "pixel_ap", "pixel_f1_max", "pro"}
    assert all(isinstance(v, float) and 0 <= v <= 1 for v in full.values())
    # Pixel metrics run over all images, the normal ones (empty masks) included.
    assert full["pixel_auroc"] == metrics.pixel_auroc(masks, maps)
    assert full["pixel_ap"] == pytest.approx(metrics.average_precision(masks, maps), abs=1e-12)
    assert full["pixel_auroc"] != metrics.pixel_auroc(masks[labels == 1], maps[labels == 1])
    assert full["pro"] == metrics.pro(masks, maps, method="thresholds200")
    assert full["image_auroc"] == image_only["image_auroc"] == metrics.image_auroc(labels, scores)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.image_auroc([0, 1, 1], [0.1, 0.2]), "shape"),
        (lambda: metrics.image_auroc([0, 0, 0], [0.1, 0.2, 0.3]), "single class"),
        (lambda: metrics.f1_max([1, 1], [0.1, 0.2]), "single class"),
        (lambda: metrics.image_auroc([0, 1], [0.1, np.nan]), "NaN"),
        (lambda: metrics.image_auroc([0, 2], [0.1, 0.2]), "binary"),
        (lambda: metrics.pixel_auroc(np.ones((2, 4, 4)), np.zeros((2, 4, 5))), "shape"),
        (lambda: metrics.pro(np.zeros((2, 4, 4)), np.zeros((2, 4, 4))), "single class"),
        (lambda: metrics.pro(np.eye(4)[None], np.zeros((1, 4, 4)), method="fast"), "unknown PRO method"),
        (lambda: metrics.pro(np.eye(4)[None], np.zeros((1, 4, 4)), fpr_limit=0), "fpr_limit"),
        (lambda: metrics.pro(np.eye(4), np.zeros((4, 4))), "(N, H, W)"),
        (lambda: metrics.evaluate([0, 1], [0.1, 0.2], masks=np.eye(4)[None].repeat(2, 0)), "together"),
        (lambda: metrics.evaluate([0, 1], [0.1, 0.2], np.eye(4)[None], np.zeros((1, 4, 4))), "image labels"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()
