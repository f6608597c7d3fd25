"""Validation without test labels: held-out normal images with pseudo-defects pasted on, and a run that checks itself.

    train, held_out = holdout(train_images, fraction, seed)      normals the models never see
    val = pseudo_defect_set(held_out, donors=train, seed)       each held-out image twice: as it is (label 0) and
                                                                with one pseudo-defect and its exact mask (label 1)
    report = validate(pipe, val, train_images)                  image / pixel AUROC, errors on normal and defect
                                                                pixels, the autoencoder's PSNR, an F1 threshold,
                                                                the localization split per family

The pseudo-defects follow the four scales of `dynad synth`, drawn from the image's own statistics so that they
are defects of *this* surface, not of a synthetic palette, plus patches transplanted from other training images:

    spot        a small disk, darker or brighter than its surroundings by 3-5 standard deviations of the image
    scratch     a thin curved line, likewise
    patch       a blob whose texture is another region of the image, contrast-inverted and shifted in intensity
    missing     a large blob flattened to a smooth fill (the local mean, blurred): a missing, featureless region
    transplant  a blob copied from another training image, rotated by 90 degrees and rescaled
    stain       a large blob (8-20 % of the image) whose intensity is shifted by 1-2 standard deviations with its
                texture kept: a faint discolouration or unevenness, the low-contrast end of real defects

Settings are chosen on this set (`dynad tune`), never on a test set; every run reports it in
`metrics.json["validation"]` and warns when its maps are unreliable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from dynad import metrics
from dynad.anomaly_map import image_scores
from dynad.synthetic import _disk, _grid  # the same pixel-centre grid as `dynad synth`'s defects

FAMILIES = ("spot", "scratch", "patch", "missing", "transplant", "stain")
UNRELIABLE_AUROC = 0.6  # below this, a run warns that its maps are unreliable
# Below this many held-out images, validation image AUROC moves in steps of 1 / n^2 or coarser and near-ties decide.
FEW_HELD_OUT = 10


@dataclass(frozen=True)
class ValidationSet:
    images: torch.Tensor  # (N, 3, S, S) in [-1, 1]
    masks: torch.Tensor  # (N, S, S) bool
    labels: np.ndarray  # (N,) 0 normal, 1 pseudo-defect
    families: list[str]  # "good" or the pseudo-defect family, per image


def holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept for training, held out for validation); at least 2 held out when fraction > 0."""
    if fraction <= 0:
        return np.arange(n), np.arange(0)
    k = max(2, int(round(fraction * n)))
    if n - k < 2:
        raise ValueError(f"validation.fraction={fraction} leaves {n - k} of {n} training images: too few to train on")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def held_out_key(cfg, n: int) -> list:
    """What identifies the training subset in the stored models' keys (fraction, seed, number of images)."""
    return [cfg.fraction, cfg.seed, n]


# ---------------------------------------------------------------------------------------------- pseudo-defects


def _blob(size: int, rng: np.random.Generator, area_fraction: float) -> np.ndarray:
    """An irregular blob of about `area_fraction` of the image, away from the border."""
    radius = np.sqrt(area_fraction * size * size / np.pi)
    cy, cx = rng.uniform(radius + 0.05 * size, size - radius - 0.05 * size, size=2)
    yy, xx = _grid(size)
    theta = np.arctan2(yy - cy, xx - cx)
    wobble = np.ones_like(theta)
    for k in (2, 3, 5):
        wobble += rng.uniform(0.0, 0.3 / k) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    return np.hypot(yy - cy, xx - cx) <= radius * wobble


def _away(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, k: tuple[float, float]) -> np.ndarray:
    """A colour k standard deviations of the image away from the mean under the mask, towards the far end."""
    mean, std = image.reshape(-1, 3).mean(0), image.reshape(-1, 3).std(0).mean() + 0.02
    local = image[mask].mean(0)
    sign = -1.0 if local.mean() > 0.5 else 1.0
    return np.clip(local + sign * rng.uniform(*k) * std, 0, 1) if mask.any() else mean


def _spot(image, rng, donor):
    size = image.shape[0]
    radius = max(1.5, rng.uniform(0.02, 0.035) * size)
    cy, cx = rng.uniform(0.1 * size, 0.9 * size, size=2)
    mask = _disk(size, cy, cx, radius)
    image[mask] = _away(image, mask, rng, (3, 5))
    return mask


def _scratch(image, rng, donor):
    size = image.shape[0]
    length, angle = rng.uniform(0.3, 0.45) * size, rng.uniform(0, np.pi)
    c = rng.uniform(0.3 * size, 0.7 * size, size=2)
    d = np.array([np.cos(angle), np.sin(angle)])
    n = np.array([-d[1], d[0]])
    p0, p2, p1 = c - d * length / 2, c + d * length / 2, c + n * rng.uniform(-0.25, 0.25) * length
    t = np.linspace(0, 1, 48)[:, None]
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # quadratic Bezier, (48, 2) as (x, y)
    canvas = Image.new("L", (size, size))
    ImageDraw.Draw(canvas).line([tuple(p) for p in pts], fill=255, width=max(1, round(size / 64)), joint="curve")
    mask = np.asarray(canvas) > 0
    image[mask] = _away(image, mask, rng, (3, 5))
    return mask


def _patch(image, rng, donor):
    size = image.shape[0]
    mask = _blob(size, rng, rng.uniform(0.02, 0.04))
    shift = np.roll(image, (size // 3, size // 2), axis=(0, 1))  # another region of the same image
    texture = 1.0 - shift  # contrast-inverted: the surface's own frequencies, in a foreign arrangement
    texture = texture - texture[mask].mean(0) + _away(image, mask, rng, (1.5, 3))
    image[mask] = np.clip(texture[mask], 0, 1)
    return mask


def _missing(image, rng, donor):
    size = image.shape[0]
    mask = _blob(size, rng, rng.uniform(0.05, 0.10))
    fill = ndimage.gaussian_filter(image, sigma=(size / 8, size / 8, 0))  # smooth, featureless
    image[mask] = fill[mask]
    return mask


def _transplant(image, rng, donor):
    size = image.shape[0]
    mask = _blob(size, rng, rng.uniform(0.02, 0.05))
    other = np.rot90(donor, k=1, axes=(0, 1))
    zoom = rng.uniform(1.6, 2.2)  # magnified: the texture's scale is wrong as well as its orientation
    other = ndimage.zoom(other, (zoom, zoom, 1), order=1)[:size, :size]
    image[mask] = other[mask]
    return mask


def _stain(image, rng, donor):
    size = image.shape[0]
    mask = _blob(size, rng, rng.uniform(0.08, 0.20))
    shift = _away(image, mask, rng, (1, 2)) - image[mask].mean(0)  # towards the far end, as the spot's colour
    image[mask] = np.clip(image[mask] + shift, 0, 1)
    return mask


_PASTE = {"spot": _spot, "scratch": _scratch, "patch": _patch, "missing": _missing, "transplant": _transplant,
          "stain": _stain}  # fmt: skip


def paste(image: np.ndarray, family: str, rng: np.random.Generator, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S, S, 3) in [0, 1] -> (image with the pseudo-defect, its exact mask (S, S) bool)."""
    out = image.copy()
    mask = _PASTE[family](out, rng, donor)
    return out, mask


def pseudo_defect_set(held_out: torch.Tensor, donors: torch.Tensor, seed: int) -> ValidationSet:
    """Each held-out image as it is and with one pseudo-defect (families in turn): a balanced labelled set."""
    rng = np.random.default_rng(seed)
    to_np = lambda t: ((t.permute(1, 2, 0).numpy() + 1) / 2).astype(np.float64)  # noqa: E731  (3,S,S) -> (S,S,3)
    images, masks, families = [], [], []
    for i, x in enumerate(held_out):
        family = FAMILIES[i % len(FAMILIES)]
        donor = to_np(donors[rng.integers(len(donors))])
        img, mask = paste(to_np(x), family, rng, donor)
        images.append(torch.from_numpy(img).permute(2, 0, 1).float() * 2 - 1)
        masks.append(torch.from_numpy(mask))
        families.append(family)
    n = len(held_out)
    return ValidationSet(
        images=torch.cat([held_out, torch.stack(images)]) if n else held_out,
        masks=torch.cat([torch.zeros(n, *held_out.shape[-2:], dtype=torch.bool),
                         torch.stack(masks)]) if n else torch.zeros(0),
        labels=np.array([0] * n + [1] * n),
        families=["good"] * n + families,
    )


# ------------------------------------------------------------------------------------------------- the check


def autoencoder_psnr(pipe, images: torch.Tensor, n: int = 32) -> float | None:
    """Mean PSNR (dB, images in [0, 1]) of encode -> decode on some training images; None in pixel space."""
    if pipe.codec.vae is None:
        return None
    x = images[:n].to(pipe.device)
    with torch.no_grad():
        rec = pipe.codec.decode(pipe.codec.encode(x)).float()
    mse = ((rec - x) / 2).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def f1_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The image-score threshold with the best F1 (a defect is score >= threshold)."""
    from sklearn.metrics import precision_recall_curve

    p, r, th = precision_recall_curve(labels, scores)
    f1 = 2 * p * r / np.maximum(p + r, 1e-12)
    return float(th[int(np.argmax(f1[:-1]))])


def evaluate_maps(val: ValidationSet, lat: torch.Tensor, feat: torch.Tensor, maps: torch.Tensor) -> dict[str, Any]:
    """Metrics of one set of maps on the validation set (separate from inference, so a tuner reuses the raw maps)."""
    scores = image_scores(maps).numpy()
    masks = val.masks.numpy()
    out = {
        "image_auroc": metrics.image_auroc(val.labels, scores),
        "pixel_auroc": metrics.pixel_auroc(masks, maps.numpy()),
    }
    normal = ~val.masks & torch.from_numpy(val.labels == 0)[:, None, None]  # pixels of the clean images
    for name, m in (("latent", lat), ("feature", feat)):
        out[f"{name}_error_normal"] = float(m[normal].mean())
        out[f"{name}_error_defect"] = float(m[val.masks].mean())
    by_family = {}
    for fam in FAMILIES:
        sel = np.array([f in ("good", fam) for f in val.families])
        if (val.labels[sel] == 1).any():
            by_family[fam] = metrics.image_auroc(val.labels[sel], scores[sel])
    out["image_auroc_by_family"] = by_family
    return out, scores


def validate(pipe, val: ValidationSet, train_images: torch.Tensor, progress: bool = False) -> dict[str, Any]:
    """Score the validation set with training-statistics normalisation (as one new image would be scored)."""
    res = pipe.infer_all(val.images, progress=progress)
    norm = pipe.train_normalization
    maps = pipe.anomaly_maps(res["latent_map"], res["feature_map"], norm)
    report, scores = evaluate_maps(val, res["latent_map"], res["feature_map"], maps)
    report["n_normal"], report["n_defective"] = int((val.labels == 0).sum()), int((val.labels == 1).sum())
    report["threshold"] = f1_threshold(val.labels, scores)
    report["normalization"] = "train" if norm is not None else "validation set"
    report["autoencoder_psnr"] = autoencoder_psnr(pipe, train_images)
    # Per family: is the map raised over the pasted image, or at the pseudo-defect?
    families = np.array(val.families)
    report["localization"] = metrics.localization_split(maps.numpy(), val.masks.numpy(), val.labels, families)
    report["warning"] = diagnosis(report)
    return report


def diagnosis(report: dict[str, Any]) -> str | None:
    """One line when validation AUROC is below UNRELIABLE_AUROC, naming the number that shows why; else None."""
    low = [k for k in ("image_auroc", "pixel_auroc") if report[k] < UNRELIABLE_AUROC]
    if not low:
        return None
    why = []
    for name in ("latent", "feature"):
        n, d = report[f"{name}_error_normal"], report[f"{name}_error_defect"]
        if d <= n * 1.05:
            why.append(f"the {name} map is no higher on pseudo-defects ({d:.3g}) than on normal pixels ({n:.3g})")
    psnr = report.get("autoencoder_psnr")
    if psnr is not None and psnr < 25:
        why.append(f"the autoencoder loses normal detail (PSNR {psnr:.1f} dB on training images)")
    reason = "; ".join(why) or "the maps separate pseudo-defects from normal images poorly"
    vals = ", ".join(f"{k.replace('_', ' ')} {report[k]:.3f}" for k in low)
    n = report.get("n_normal", FEW_HELD_OUT)
    if n < FEW_HELD_OUT:
        reason += (f"; it rests on {n} held-out training images only, too few to be sure: more training images or a "
                   f"larger validation.fraction make the check firmer")  # fmt: skip
    return f"maps are unreliable on this data: validation {vals} (< {UNRELIABLE_AUROC}): {reason}"

