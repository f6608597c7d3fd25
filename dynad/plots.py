"""Figures, drawn from arrays and files that the compute steps wrote: each function saves PNG (and PDF on request).

Figure 4 (anomaly-map construction) and Figure 2/6-style panels: `qualitative_panels`;
Figure 5 (kNN binning histograms): `knn_histogram`; training curves: `training_curves`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; notebooks display the saved images or call these with their own backend
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from dynad.provenance import atomic_write  # noqa: E402


def save(fig: plt.Figure, path: str | Path, pdf: bool = False) -> Path:
    path = Path(path)
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120, bbox_inches="tight")
    if pdf:
        with atomic_write(path.with_suffix(".pdf"), "wb") as f:
            # No creation date: the same figure gives the same bytes, so a regenerated results/ shows no false change.
            fig.savefig(f, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)
    return path


def to_rgb(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) in [0, 1]."""
    return ((x.float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def knn_histogram(dic: dict[str, Any], path: str | Path, title: str = "", ax: plt.Axes | None = None,
                  pdf: bool = False):
    """Figure 5: kNN distances y_bar of training vs test images (normal / anomalous), bin edges and T_hat marked."""
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(7, 3.2))
    train = np.asarray(dic["train_distances"])
    test = np.asarray(dic["test_distances"])
    labels = np.asarray(dic["test_labels"])
    edges = np.asarray(dic["edges"])
    lo = min(train.min(), test.min())
    hi = max(train.max(), test.max())
    bins = np.linspace(lo, hi, 40)
    ax.hist(train, bins=bins, alpha=0.5, label="train (normal)", color="tab:blue", density=True)
    ax.hist(test[labels == 0], bins=bins, alpha=0.5, label="test normal", color="tab:green", density=True)
    ax.hist(test[labels == 1], bins=bins, alpha=0.5, label="test anomalous", color="tab:red", density=True)
    for e in edges:
        ax.axvline(e, color="k", lw=0.5, ls=":")
    table = dic["table"]
    for b in range(len(edges) - 1):  # upright labels overlap when the bins are narrow: written vertically
        ax.text((edges[b] + edges[b + 1]) / 2, ax.get_ylim()[1] * 0.97, str(table[b]), ha="center", va="top",
                fontsize=6, rotation=90)  # fmt: skip
    ax.set_xlabel("mean L1 distance to the K nearest training features (y_bar); numbers: T_hat of each bin")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=7)
    if own:
        return save(fig, path, pdf)
    return None


def training_curves(losses: dict[str, list[float]], path: str | Path):
    losses = {k: v for k, v in losses.items() if v}
    if not losses:
        return None
    fig, axes = plt.subplots(1, len(losses), figsize=(3.5 * len(losses), 2.8), squeeze=False)
    for ax, (name, values) in zip(axes[0], losses.items()):
        ax.plot(np.arange(1, len(values) + 1), values)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("loss")
    return save(fig, path)


def pick_examples(rows: pd.DataFrame, scores: np.ndarray, n: int) -> list[int]:
    """One highest-scoring image per defect type (then the lowest-scoring normal), up to n."""
    picks = []
    for defect in sorted(rows.defect_type[rows.label == 1].unique()):
        idx = np.flatnonzero((rows.defect_type == defect).to_numpy())
        picks.append(int(idx[np.argmax(scores[idx])]))
    normal = np.flatnonzero((rows.label == 0).to_numpy())
    if len(normal):
        picks.append(int(normal[np.argmin(scores[normal])]))
    return picks[:n]


def shown_truth(masks, labels: Sequence[int], i: int, size: int) -> np.ndarray | None:
    """Image i's ground-truth panel: its mask; with image labels only (`masks` None), an empty mask for a normal image
    (its label says it has no defect pixel) and None for an anomalous one, drawn by `no_mask`."""
    if masks is not None:
        return np.asarray(masks[i], dtype=np.float32)
    return np.zeros((size, size), np.float32) if int(np.asarray(labels)[i]) == 0 else None


def no_mask(ax) -> None:
    """The ground-truth panel of an anomalous image in a test set with image labels only."""
    ax.text(0.5, 0.5, "no mask", ha="center", va="center", fontsize=7, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def qualitative_panels(
    images: torch.Tensor,
    masks: torch.Tensor | None,
    labels: Sequence[int],
    recs: torch.Tensor,
    latent: torch.Tensor,
    feature: torch.Tensor,
    amap: torch.Tensor,
    threshold: float,
    titles: Sequence[str],
    path: str | Path,
    pdf: bool = False,
):
    """Figure 4 / Figure 2: input, ground truth, reconstruction, latent map, feature map, combined map, mask.

    Each map column has one colour scale for all its rows, with a colour bar: scaled per image, a normal image's
    faint latent map would look as hot as a defect's. `masks` None (image labels only): the ground-truth panels of
    anomalous images say "no mask" (`shown_truth`).
    """
    cols = ["input", "ground truth", "reconstruction", "latent map", "feature map", "anomaly map", "thresholded"]
    n = images.shape[0]
    fig, axes = plt.subplots(n, len(cols), figsize=(1.7 * len(cols), 1.8 * n + 0.3), squeeze=False)
    scales = {3: float(latent.max()), 4: float(feature.max()), 5: float(amap.max())}  # column -> vmax (vmin 0)
    shown = {}
    for i in range(n):
        panels = [
            (to_rgb(images[i]), None), (shown_truth(masks, labels, i, images.shape[-1]), "gray"),
            (to_rgb(recs[i]), None),
            (latent[i].numpy(), "jet"), (feature[i].numpy(), "jet"), (amap[i].numpy(), "jet"),
            ((amap[i] >= threshold).float().numpy(), "gray"),
        ]  # fmt: skip
        for j, (img, cmap) in enumerate(panels):
            ax = axes[i][j]
            kw = {"vmin": 0, "vmax": scales[j]} if j in scales else {}
            if img is None:
                no_mask(ax)
            else:
                shown[j] = ax.imshow(img, cmap=cmap, **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=8)
        axes[i][0].set_ylabel(titles[i], fontsize=7)
    for j in scales:  # under the column, in an inset: the panels keep their size and stay aligned
        bar = fig.colorbar(shown[j], cax=axes[-1][j].inset_axes([0.0, -0.16, 1.0, 0.06]), orientation="horizontal")
        bar.ax.tick_params(labelsize=6)
    return save(fig, path, pdf)


def validation_check(report: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """The run's self-check: validation AUROCs (by pseudo-defect family, and whether the map points at the pseudo-defect
    within its image) against the unreliable line, and the mean latent / feature error on normal vs pseudo-defect
    pixels (a map that is not higher on defects cannot work)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [3, 2]})
    families = list(report["image_auroc_by_family"])
    within = {row["defect_type"]: row["within"] for row in report.get("localization", [])}  # older runs: none
    x = np.arange(2 + len(families))
    w = 0.4 if within else 0.8
    a.bar(x[:2], [report["image_auroc"], report["pixel_auroc"]], 0.8, color="tab:blue")
    a.bar(x[2:] - (w / 2 if within else 0), list(report["image_auroc_by_family"].values()), w, color="tab:gray",
          label="image AUROC by family")  # fmt: skip
    if within:  # a family found only as a raised image, not at its pixels, shows a low orange bar
        a.bar(x[2:] + w / 2, [within.get(f) or 0.0 for f in families], w, color="tab:orange",
              label="within: pseudo-defect vs the rest of its image")  # fmt: skip
    a.set_xticks(x, ["image", "pixel", *families])
    a.axhline(0.6, color="tab:red", ls="--", lw=1, label="unreliable below 0.6")
    a.axhline(0.5, color="k", lw=0.5)
    a.set_ylim(0, 1)
    a.set_ylabel("validation AUROC")
    a.tick_params(axis="x", rotation=30)
    a.legend(loc="upper center", bbox_to_anchor=(0.5, -0.34), ncol=3, fontsize=7)
    psnr = report.get("autoencoder_psnr")
    a.set_title(f"pseudo-defects ({report['n_defective']} vs {report['n_normal']} normal)"
                + (f"; autoencoder PSNR {psnr:.1f} dB" if psnr is not None else ""), fontsize=9)  # fmt: skip
    x = np.arange(2)
    for k, (where, colour) in enumerate((("normal", "tab:green"), ("defect", "tab:red"))):
        raw = [report[f"latent_error_{where}"], report[f"feature_error_{where}"]]
        ref = [max(report["latent_error_normal"], 1e-12), max(report["feature_error_normal"], 1e-12)]
        b.bar(x + 0.38 * k, np.array(raw) / np.array(ref), width=0.38, color=colour, label=f"{where} pixels")
    b.set_xticks(x + 0.19, ["latent map", "feature map"])
    b.set_ylabel("mean error / on normal pixels")
    b.legend(fontsize=8)
    fig.suptitle(title or "validation self-check", fontsize=10)
    fig.tight_layout()
    return save(fig, path)


def prediction_summary(table: pd.DataFrame, shown: Sequence[str], overlays: str | Path, path: str | Path) -> Path:
    """`dynad predict`'s look at a batch: the image scores against the threshold, and the overlays named `shown`
    (its highest scores; read back from `overlays`, shrunk), so the images to inspect first are on one page."""
    threshold = float(table.threshold.iloc[0])
    top = table.set_index("name").loc[list(shown)].reset_index()
    cols = max(1, min(4, len(top)))
    rows = -(-len(top) // cols)  # ceil
    fig = plt.figure(figsize=(3 + 2.2 * cols, max(2.8, 2.6 * rows)))
    grid = fig.add_gridspec(max(rows, 1), cols + 2)
    h = fig.add_subplot(grid[:, :2])
    h.hist(table.score, bins=min(40, max(5, len(table) // 3)), color="tab:gray")
    h.axvline(threshold, color="tab:red", ls="--", lw=1, label=f"threshold {threshold:.4g}")
    h.set_xlabel("image score")
    h.set_ylabel("images")
    h.set_title(f"{int(table.is_anomalous.sum())} of {len(table)} anomalous", fontsize=9)
    h.legend(fontsize=7)
    for k, r in enumerate(top.itertuples()):
        ax = fig.add_subplot(grid[k // cols, 2 + k % cols])
        with Image.open(Path(overlays) / r.name) as im:
            im.thumbnail((256, 256))  # a 48-megapixel overlay shrunk on reading
            ax.imshow(np.asarray(im.convert("RGB")))
        ax.set_title(f"{r.name}\n{r.score:.3g}" + (" (anomalous)" if r.is_anomalous else ""), fontsize=7,
                     color="tab:red" if r.is_anomalous else "k")  # fmt: skip
        ax.axis("off")
    fig.tight_layout()
    return save(fig, path)


def tune_grid(table: pd.DataFrame, path: str | Path) -> Path:
    """`dynad tune`'s tune.csv as heatmaps of the validation objective over T_max x sigma (the best over eta and
    lambda in each cell), one panel per training setting; the chosen point (the best row within the budget) is boxed.
    """
    from dynad.tuning import eligible, training_columns  # here: dynad.tuning imports the whole pipeline

    training = training_columns(table)
    groups = list(table.groupby(training, sort=False)) if training else [((), table)]
    choices = eligible(table)
    chosen = choices.iloc[0] if len(choices) else None  # none: every setting trained over the budget or diverged
    lo, hi = table.objective.min(), table.objective.max()  # one colour scale for every panel
    fig, axes = plt.subplots(1, len(groups), figsize=(0.9 + 3.3 * len(groups), 3.2), squeeze=False)
    for ax, (values, g) in zip(axes[0], groups):
        label = ", ".join(f"{c.split('.')[-1]} {v}" for c, v in zip(training, np.atleast_1d(values)))
        if g.objective.isna().all():  # a training setting that diverged (tune.csv has its row, no score)
            ax.text(0.5, 0.5, "diverged:\nnot scored", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            ax.set_title(label, fontsize=8)
            continue
        grid = g.pivot_table(index="dic.t_max", columns="anomaly_map.sigma", values="objective", aggfunc="max")
        ax.imshow(grid.to_numpy(), cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
        for (i, j), v in np.ndenumerate(grid.to_numpy()):
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=7, color="w" if v < (lo + hi) / 2 else "k")
        if chosen is not None and all(chosen[c] == v for c, v in zip(training, np.atleast_1d(values))):
            i, j = grid.index.get_loc(chosen["dic.t_max"]), grid.columns.get_loc(chosen["anomaly_map.sigma"])
            ax.add_patch(plt.Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False, ec="tab:red", lw=2.5))
        ax.set_xticks(range(len(grid.columns)), [f"{s:g}" for s in grid.columns])
        ax.set_yticks(range(len(grid.index)), [f"{t:g}" for t in grid.index])
        ax.set_xlabel("σ")
        ax.set_ylabel("T_max")
        over = "" if g.within_budget.all() else " (over budget)"
        ax.set_title((label or "validation objective") + f"; fit {g.fit_seconds.iloc[0]:.0f} s{over}", fontsize=8)
    fig.suptitle("validation objective (mean of image and pixel AUROC); red box: chosen", fontsize=9)
    fig.tight_layout()
    return save(fig, path)
