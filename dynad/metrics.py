"""Evaluation metrics of MVTec AD style anomaly detection, as pure functions on numpy arrays.

Image level: AUROC, average precision, the best F1 over thresholds (F1-max) and the F1 at the threshold that
maximises Youden's J = TPR - FPR. Pixel level (all pixels of all test images, normal images included): AUROC,
average precision, F1-max and PRO, the per-region overlap integrated over FPR in [0, 0.3] as MVTec AD's official
evaluation defines it (`pro(method="exact")`), or the 200-threshold approximation of the paper's reference code
(`pro(method="thresholds200")`). `localization_split` asks, per defect type, whether the map is raised over the
whole defective image or at the defect (notebook 04, benchmarks/localization.py, each run's validation report).

The image-level metrics (and `average_precision`, `f1_max`, `f1_youden` on any labels) come from scikit-learn.
At pixel scale its curves are slow (about a minute and 6 GB per metric on 113 M pixels: an argsort into float64
arrays), so `pixel_auroc`, the pixel metrics of `evaluate` and exact PRO use one float32 sort of the normal
pixels' scores instead, exact with ties; the tests check them against scikit-learn and slow reference code.

Labels and masks are binary (bool or {0, 1}); scores and maps are floats without NaN or inf. Pixel maps are
evaluated in float32 (half the memory of float64 on a full test set: 1,725 x 256 x 256 = 113 M pixels).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.integrate import trapezoid
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score, roc_curve

PRO_METHODS = ("exact", "thresholds200")

# 8-connectivity inside each image and none across images: labels all (N, H, W) masks in one call.
_REGION_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_REGION_STRUCTURE[1] = True

_CHUNK_PIXELS = 1 << 22  # pixels binned at a time by the threshold approximation (bounds its int64 temporaries)


def _binary(labels, scores, what: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Validate a binary problem; returns labels as bool and scores, both flattened (same shapes required)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if labels.shape != scores.shape:
        raise ValueError(f"{what} shape {labels.shape} does not match scores shape {scores.shape}")
    if labels.size == 0:
        raise ValueError(f"{what} are empty")
    if labels.dtype != bool:
        # An elementwise test, not np.unique: no sort of 113 M mask pixels.
        if not np.all((labels == 0) | (labels == 1)):
            raise ValueError(f"{what} must be binary (bool or 0/1)")
        labels = labels != 0
    if not np.issubdtype(scores.dtype, np.number) or np.iscomplexobj(scores):
        raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    n_pos = int(np.count_nonzero(labels))
    if n_pos in (0, labels.size):
        raise ValueError(
            f"{what} contain a single class ({n_pos} positive of {labels.size}); the metric needs both classes"
        )
    return labels.reshape(-1), scores.reshape(-1)


def _pixels(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """Validate (N, H, W) masks and maps; returns bool masks and float32 maps (no copy when already so)."""
    masks, maps = np.asarray(masks), np.asarray(maps)
    if masks.ndim != 3 or masks.shape != maps.shape:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} must have the same (N, H, W) shape")
    flat_masks, flat_maps = _binary(masks, maps.astype(np.float32, copy=False), what="masks")
    return flat_masks.reshape(masks.shape), flat_maps.reshape(maps.shape)


def image_auroc(labels, scores) -> float:
    """Area under the ROC curve of image scores. labels (N,) bool or {0, 1} (1 = anomalous), scores (N,)."""
    labels, scores = _binary(labels, scores)
    return float(roc_auc_score(labels, scores))


def average_precision(labels, scores) -> float:
    """Average precision (area under the step precision-recall curve). labels, scores: same shape, any."""
    labels, scores = _binary(labels, scores)
    return float(average_precision_score(labels, scores))


def f1_max(labels, scores) -> float:
    """The best F1 over all thresholds `scores >= th`. labels, scores: same shape (images (N,), or pixels)."""
    labels, scores = _binary(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def f1_youden(labels, scores) -> float:
    """F1 of `scores >= th` at the threshold maximising Youden's J = TPR - FPR (the highest such th on ties).

    labels, scores: same shape. The threshold is chosen on the same data it is scored on, like F1-max.
    """
    labels, scores = _binary(labels, scores)
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    th = thresholds[np.argmax(tpr - fpr)]  # thresholds descend: argmax's first hit is the highest threshold
    return float(f1_score(labels, scores >= th))


def _pixel_ranking(masks: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    """AUROC, average precision and F1-max of all pixels (validated bool masks, float32 maps), from one sort.

    Only the normal scores are sorted (a float32 copy, no indices) and each distinct anomalous score is looked up
    in them. That suffices, exactly, ties included: every metric changes only where an anomalous
    pixel enters (lowering a threshold past normal pixels alone only adds false positives).
    """
    normal = maps[~masks]  # a copy, sorted in place
    normal.sort()
    num_normal, num_anomalous = normal.size, int(np.count_nonzero(masks))
    values, counts = np.unique(maps[masks], return_counts=True)
    values, counts = values[::-1], counts[::-1]  # descending thresholds th = each distinct anomalous score
    tp = np.cumsum(counts)  # anomalous pixels >= th
    fp = num_normal - np.searchsorted(normal, values, side="left")  # normal pixels >= th
    fp_above = num_normal - np.searchsorted(normal, values, side="right")  # normal pixels > th
    # Mann-Whitney: each anomalous pixel beats the normal pixels below it and ties half of the equal ones
    # (2U in int64 stays exact: at most 2 * anomalous * normal pixels, < 2^63 for any image set).
    twice_u = int(np.sum(counts * (2 * num_normal - fp - fp_above)))
    return {
        "auroc": twice_u / (2 * num_anomalous * num_normal),
        # Recall rises by counts / num_anomalous at each th, at precision tp / (tp + fp).
        "ap": float(np.sum(counts / num_anomalous * tp / (tp + fp))),
        "f1_max": float(np.max(2 * tp / (tp + fp + num_anomalous))),
    }


def pixel_auroc(masks, maps) -> float:
    """Area under the ROC curve over all pixels of all images. masks (N, H, W) bool or {0, 1}, maps (N, H, W)."""
    return _pixel_ranking(*_pixels(masks, maps))["auroc"]


def _auroc_above(negatives: np.ndarray, positives: np.ndarray) -> float | None:
    """AUROC of positives above negatives (1-D float32 scores, pixel-scale: the one-sort ranking); None when either
    side is empty."""
    if negatives.size == 0 or positives.size == 0:
        return None
    labels = np.r_[np.zeros(negatives.size, bool), np.ones(positives.size, bool)]
    return _pixel_ranking(labels, np.r_[negatives, positives])["auroc"]


def localization_split(maps, masks, labels, types) -> list[dict]:
    """Pixel AUROC split per defect type: is the map raised over the defective image, or at the defect?

        share        the type's part of all defect pixels (the pooled pixel AUROC is mostly the large-mask types)
        pixel_auroc  the type's images with the normal ones (as per_defect.csv)
        background   the non-defect pixels of its defective images against the normal images' pixels: above 0.5
                     when the map is raised over the whole defective image (image AUROC gains, pixel AUROC loses)
        within       its defect pixels against the rest of the same images: whether the map points at the defect

    maps (N, H, W), masks (N, H, W), labels (N,) 0/1, types (N,) -> a row per type (by name), then "all"; None
    where a type has no defect pixel (MTD and MVTec AD have defective images with empty masks), so a row is JSON.
    """
    masks, maps = _pixels(masks, maps)
    labels, types = np.asarray(labels), np.asarray(types)
    normal = labels == 0
    good = maps[normal].ravel()
    total = int(masks[~normal].sum())
    rows = []
    for defect in [*sorted(set(types[~normal])), "all"]:
        sel = ~normal if defect == "all" else (types == defect) & ~normal
        m, s = masks[sel], maps[sel]
        rows.append({
            "defect_type": str(defect),
            "images": int(sel.sum()),
            "share": float(m.sum() / max(total, 1)),
            "pixel_auroc": pixel_auroc(masks[sel | normal], maps[sel | normal]) if m.any() else None,
            "background": _auroc_above(good, s[~m]),
            "within": _auroc_above(s[~m], s[m]),
        })  # fmt: skip
    return rows


def _regions(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected regions of each (N, H, W) mask: the region (1 .. R, numbered over all images) of each anomalous
    pixel, int32 (P,) in the order of maps[masks]; and the region sizes (R + 1,) int64 (sizes[0] = 0)."""
    # Label only the images that have a region (a third of MVTec AD's test set), keep ids of region pixels only.
    with_region = masks[masks.any(axis=(1, 2))]
    ids, num_regions = ndimage.label(with_region, structure=_REGION_STRUCTURE)
    region = ids[with_region]  # the order of maps[masks]: the images left out hold no anomalous pixel
    return region, np.bincount(region, minlength=num_regions + 1)


def _area_to_limit(fpr: np.ndarray, pro_curve: np.ndarray, fpr_limit: float) -> float:
    """Trapezoid area under pro_curve(fpr) from fpr[0] to fpr_limit, the curve interpolated linearly at fpr_limit.

    fpr ascending, with fpr[-1] >= fpr_limit.
    """
    inside = int(np.searchsorted(fpr, fpr_limit, side="right"))  # fpr[:inside] <= fpr_limit < fpr[inside]
    x, y = fpr[:inside], pro_curve[:inside]
    if x[-1] < fpr_limit:
        # fpr[inside] > x[-1] strictly, so no division by zero; vertical steps at exactly fpr_limit add no area.
        y_limit = y[-1] + (pro_curve[inside] - y[-1]) * (fpr_limit - x[-1]) / (fpr[inside] - x[-1])
        x, y = np.append(x, fpr_limit), np.append(y, y_limit)
    return float(trapezoid(y, x))


def _pro_exact(masks: np.ndarray, maps: np.ndarray, fpr_limit: float) -> float:
    """PRO over every distinct threshold (see `pro`), from the sorted normal scores and the anomalous pixels.

    Lowering the threshold past normal pixels alone moves the curve right at constant PRO; PRO changes only at the
    score `a` of an anomalous pixel. So the curve through all distinct map values is the path through, for each
    distinct anomalous score a (descending), (FPR of normal pixels > a, PRO before a) -- the end of the flat run --
    and (FPR of normal pixels >= a, PRO at a) -- the step at a, diagonal when normal pixels tie with a -- from (0, 0)
    to (1, 1). Only the normal scores are sorted (np.sort of float32: about 10x faster than an argsort of all the
    pixels) and the anomalous ones argsorted; a sort of all pixels with cumulative sums gives the same points.
    """
    region, sizes = _regions(masks)
    num_regions = sizes.size - 1
    normal = maps[~masks]  # a copy, sorted in place
    normal.sort()
    anomalous = maps[masks]
    order = np.argsort(anomalous)[::-1]  # descending; the order inside ties is irrelevant (only group ends count)
    values = anomalous[order]

    # Each region pixel adds 1 / (|its region| * num_regions) to PRO, the mean over regions of the found fraction.
    weight = np.zeros(num_regions + 1)
    weight[1:] = 1.0 / (sizes[1:] * num_regions)
    found = np.cumsum(weight[region[order]])
    ends = np.append(np.flatnonzero(values[1:] != values[:-1]), values.size - 1)  # last pixel of each tie group
    values, found = values[ends], found[ends]

    above = normal.size - np.searchsorted(normal, values, side="right")  # normal pixels > a
    at_or_above = normal.size - np.searchsorted(normal, values, side="left")  # normal pixels >= a
    fpr = np.concatenate(([0.0], np.column_stack((above, at_or_above)).ravel() / normal.size, [1.0]))
    before = np.concatenate(([0.0], found[:-1]))
    pro_curve = np.concatenate(([0.0], np.column_stack((before, found)).ravel(), [found[-1]]))
    return _area_to_limit(fpr, pro_curve, fpr_limit) / fpr_limit


def _pro_thresholds(masks: np.ndarray, maps: np.ndarray, fpr_limit: float, num_thresholds: int) -> float:
    """The reference code's approximation of PRO (see `pro`), by histograms instead of a loop over thresholds."""
    region, sizes = _regions(masks)
    num_regions = sizes.size - 1
    lo, hi = float(maps.min()), float(maps.max())
    if hi == lo:
        raise ValueError("maps are constant: no thresholds between their min and max")
    thresholds = lo + (hi - lo) / num_thresholds * np.arange(num_thresholds)  # min included, max excluded

    # searchsorted(side="left") = the number of thresholds th with map > th: a pixel is predicted anomalous at
    # thresholds[:that number]. Histogram it over the normal pixels and per region.
    bins = num_thresholds + 1
    normal_hist = np.zeros(bins, dtype=np.int64)
    flat_maps, flat_masks = maps.reshape(-1), masks.reshape(-1)
    for start in range(0, flat_maps.size, _CHUNK_PIXELS):  # in chunks: int64 temporaries of 4 M pixels, not 113 M
        chunk = slice(start, start + _CHUNK_PIXELS)
        normal_above = np.searchsorted(thresholds, flat_maps[chunk][~flat_masks[chunk]], side="left")
        normal_hist += np.bincount(normal_above, minlength=bins)
    cell = (region.astype(np.int64) - 1) * bins + np.searchsorted(thresholds, maps[masks], side="left")
    region_hist = np.bincount(cell, minlength=num_regions * bins).reshape(num_regions, bins)

    # Pixels predicted anomalous at threshold i: those counted in bins > i (a reversed cumulative sum, shifted).
    fpr = np.cumsum(normal_hist[::-1])[::-1][1:] / (flat_masks.size - region.size)
    tp = np.cumsum(region_hist[:, ::-1], axis=1)[:, ::-1][:, 1:]
    pro_curve = (tp / sizes[1:, None]).mean(axis=0)

    keep = fpr < fpr_limit
    if np.count_nonzero(keep) < 2 or fpr[keep].max() == 0:
        raise ValueError(
            f"fewer than two of the {num_thresholds} thresholds give 0 < FPR < {fpr_limit}: cannot integrate"
        )
    fpr, pro_curve = fpr[keep][::-1], pro_curve[keep][::-1]  # ascending FPR (thresholds descending)
    return float(trapezoid(pro_curve, fpr / fpr.max()))


def pro(masks, maps, fpr_limit: float = 0.3, method: str = "exact", num_thresholds: int = 200) -> float:
    """Normalised area under the per-region-overlap (PRO) curve up to FPR = fpr_limit; a fraction in [0, 1].

    masks (N, H, W) bool or {0, 1}: the ground truth, empty for normal images; maps (N, H, W) float: anomaly maps
    (evaluated in float32). Regions are the 8-connected components of each image's mask. At a threshold th a
    pixel is predicted anomalous when map >= th; FPR = normal pixels predicted anomalous / normal pixels (over
    all images) and PRO = mean over all regions of all images of |region predicted anomalous| / |region|.

    method="exact" (MVTec AD's official evaluation): the curve through every distinct map value, starting at
    (0, 0); its trapezoid area from FPR 0 to exactly fpr_limit (the curve interpolated linearly there), divided
    by fpr_limit.

    method="thresholds200" (the approximation in the paper's reference code; `num_thresholds` thresholds, 200 by
    default): thresholds min + i * (max - min) / num_thresholds for i = 0 .. num_thresholds - 1 (the max itself
    is never one), a pixel is predicted anomalous when map > th (strictly); only thresholds with FPR < fpr_limit
    (strictly) are kept, their FPR is rescaled to end at 1 (divided by the largest kept FPR) and PRO is
    integrated over the rescaled FPR with the trapezoid rule. It differs from the exact value in that (i) the
    curve is sampled at num_thresholds points instead of every distinct value, (ii) it stops at the last kept
    threshold instead of at fpr_limit and the rescaling stretches that shorter curve to length 1, and (iii) it
    has no (0, 0) start, so the stretch from FPR 0 to the smallest sampled FPR is left out. On smooth maps it is
    close to the exact value (within a few hundredths); on maps with heavy ties or outliers it can be far off.
    """
    if method not in PRO_METHODS:
        raise ValueError(f"unknown PRO method {method!r}; expected one of {PRO_METHODS}")
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if num_thresholds < 2:
        raise ValueError(f"num_thresholds must be at least 2, got {num_thresholds}")
    masks, maps = _pixels(masks, maps)
    if method == "exact":
        return _pro_exact(masks, maps, fpr_limit)
    return _pro_thresholds(masks, maps, fpr_limit, num_thresholds)


def evaluate(labels, scores, masks=None, maps=None, pro_method: str = "exact") -> dict[str, float]:
    """All metrics of a test set, as fractions in [0, 1].

    labels (N,) bool or {0, 1}, scores (N,): image level -> image_auroc, image_ap, image_f1_max, image_f1_youden.
    masks (N, H, W), maps (N, H, W), given together: pixel level over all N images (normal images included, their
    masks empty) -> pixel_auroc, pixel_ap, pixel_f1_max and pro (FPR <= 0.3, `pro_method`).
    """
    result = {
        "image_auroc": image_auroc(labels, scores),
        "image_ap": average_precision(labels, scores),
        "image_f1_max": f1_max(labels, scores),
        "image_f1_youden": f1_youden(labels, scores),
    }
    if masks is None and maps is None:
        return result
    if masks is None or maps is None:
        raise ValueError("masks and maps must be given together")
    masks, maps = _pixels(masks, maps)
    if masks.shape[0] != np.asarray(labels).shape[0]:
        raise ValueError(f"{masks.shape[0]} masks/maps for {np.asarray(labels).shape[0]} image labels")
    ranking = _pixel_ranking(masks, maps)  # = pixel_auroc, average_precision and f1_max of the flattened pixels
    result["pixel_auroc"] = ranking["auroc"]
    result["pixel_ap"] = ranking["ap"]
    result["pixel_f1_max"] = ranking["f1_max"]
    result["pro"] = pro(masks, maps, method=pro_method)
    return result
