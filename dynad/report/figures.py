"""The paper's figures and the notebooks' figures, one function each, from the files the compute steps wrote.

    figure1_noise_vs_image            the noise added depends on the image (smallest vs largest T_hat)   [pipeline]
    figure2_segmentation              input, ground truth, anomaly map, predicted mask per defect type
    figure3_architecture              the method as a diagram (DIC, noiseless scaling, guided DDIM, the map)
    figure4_anomaly_map_construction  input, reconstruction, feature / latent / combined map           [pipeline]
    figure5_knn_histograms            training vs test kNN distances with the bins and their T_hat
    figure6_fixed_steps               predicted masks at fixed T_hat vs DIC (ablation runs)
    figure7_noised_vs_noiseless       noiseless vs noised start at the same T_hat                      [pipeline]
    figure8_scaling_vs_step           latent error vs the step, noiseless vs noised start              [pipeline]
[pipeline]: also needs the fitted pipeline (eval/pipeline.pt) to reconstruct. PNG and PDF.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from dynad import plots
from dynad.ablations import variant_dir
from dynad.data import ImageDataset
from dynad.experiment import map_threshold
from dynad.report.reconstructions import dic_reconstructions
from dynad.report.runs import Run
from dynad.report.targets import FIG6_VARIANTS, FULL
from dynad.report.tables import defect_order


def image_grid(rows: dict[str, Any], path: str | Path, col_titles: Sequence[str] | None = None, pdf: bool = False,
               cmap: str = "jet", vmax: float | None = None) -> Path:  # fmt: skip
    """One row per entry: images (N, 3, S, S) in [-1, 1] drawn as RGB, maps (N, S, S) with `cmap` (shared vmax)."""
    plt = plots.plt
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(1.6 * n, 1.7 * len(rows)), squeeze=False)
    for i, (name, items) in enumerate(rows.items()):
        for j in range(n):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(items):
                ax.axis("off")
                continue
            _imshow(ax, items[j], cmap, vmax)
            if i == 0 and col_titles is not None and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=7)
        axes[i][0].set_ylabel(name, fontsize=7)
    return plots.save(fig, path, pdf)


def _imshow(ax, item, cmap: str = "jet", vmax: float | None = None, vmin: float = 0.0) -> None:
    """RGB tensors (3, S, S) in [-1, 1] as images; 2-D arrays as maps (gray for masks); NO_MASK as a text panel."""
    if isinstance(item, str) and item == NO_MASK:
        plots.no_mask(ax)
        return
    if isinstance(item, torch.Tensor) and item.ndim == 3:
        ax.imshow(plots.to_rgb(item))
        return
    a = np.asarray(item.float() if isinstance(item, torch.Tensor) else item, dtype=np.float32)
    if a.ndim == 3:  # (H, W, 3) in [0, 1]
        ax.imshow(np.clip(a, 0, 1))
    elif a.dtype == bool or set(np.unique(a)) <= {0.0, 1.0}:
        ax.imshow(a, cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax if vmax is not None else float(a.max()))


def load_images(paths: Sequence[str], size: int):
    """Images (N, 3, S, S) in [-1, 1], resized like the runs did (dynad.data.ImageDataset)."""
    rows = pd.DataFrame({"split": "test", "category": "", "defect_type": "good", "label": 0,
                         "image_path": list(paths), "mask_path": None})  # fmt: skip
    ds = ImageDataset(rows, size)
    return torch.stack([ds[i]["image"] for i in range(len(ds))])


def _eval_arrays(eval_dir: Path) -> dict[str, Any]:
    per_image = pd.read_csv(eval_dir / "per_image.csv", keep_default_na=False)
    with np.load(eval_dir / "maps.npz") as z:
        maps = {k: z[k].astype(np.float32) if z[k].dtype != bool else z[k] for k in z.files}
    return {"per_image": per_image, **maps}


def _threshold(a: dict[str, Any]) -> float:
    """The predicted-mask threshold of one run's arrays (`experiment.map_threshold`: from the image labels and
    scores when the run has image labels only)."""
    labels, scores = a["per_image"].label.to_numpy(), a["per_image"].score.to_numpy()
    return map_threshold(a.get("gt_mask"), a["anomaly_map"], labels, scores)


def _examples(per_image: pd.DataFrame, n: int = 8) -> list[int]:
    rows = per_image.rename(columns={"path": "image_path"})
    return plots.pick_examples(rows, per_image.score.to_numpy(), n)


NO_MASK = "no mask"  # a _grid_figure cell: the ground truth of an anomalous image when there are image labels only


def _truth(a: dict[str, Any], i: int) -> np.ndarray | str:
    """Image i's ground-truth cell (`plots.shown_truth`)."""
    truth = plots.shown_truth(a.get("gt_mask"), a["per_image"].label, i, a["anomaly_map"].shape[-1])
    return NO_MASK if truth is None else truth


def _norm01(a: np.ndarray) -> np.ndarray:
    """Min-max over the whole set (as Eq. 9 does per category)."""
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / max(hi - lo, 1e-12)


def _grid_figure(cells: list[list[Any]], col_titles: Sequence[str], row_titles: Sequence[str], path: Path,
                 vmax: float | None = 1.0) -> Path:  # fmt: skip
    n_rows, n_cols = len(cells), max(len(r) for r in cells)
    fig, axes = plots.plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols, 1.7 * n_rows), squeeze=False)
    for i, row in enumerate(cells):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row) or row[j] is None:
                ax.axis("off")
                continue
            _imshow(ax, row[j], vmax=vmax)
            if i == 0:
                ax.set_title(col_titles[j], fontsize=7)
        axes[i][0].set_ylabel(row_titles[i], fontsize=6)
    return plots.save(fig, path, pdf=True)


def figure3_architecture(path: Path) -> Path:
    """Figure 3, the reconstruction architecture, in the paper's notation: DIC picks T_hat from the kNN distance of
    the input's features; the latent is scaled to T_hat without noise and denoised by guided DDIM; the map combines
    the latent and feature errors. A diagram of the method, the same for every run."""
    from matplotlib.patches import FancyBboxPatch

    fig, ax = plots.plt.subplots(figsize=(12, 4.6))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 4.6)
    ax.axis("off")
    colours = {"dic": "#fde9c9", "rec": "#d6e6f5", "map": "#e3f1dc", "io": "#eeeeee"}

    def box(x, y, text, kind, w=1.7, h=0.72):
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04", fc=colours[kind],
                                    ec="0.35", lw=0.8))  # fmt: skip
        ax.text(x, y, text, ha="center", va="center", fontsize=8)
        return x, y, w, h

    def arrow(a, b, text=""):
        (xa, ya, wa, ha), (xb, yb, wb, hb) = a, b
        if abs(ya - yb) < 1e-6:  # same row: side to side
            start, end = (xa + wa / 2, ya), (xb - wb / 2, yb)
        else:  # between rows: bottom or top edges
            start = (xa, ya - ha / 2) if ya > yb else (xa, ya + ha / 2)
            end = (xb, yb + hb / 2) if ya > yb else (xb, yb - hb / 2)
        ax.annotate("", end, start, arrowprops={"arrowstyle": "->", "color": "0.25", "lw": 1})
        if text:  # beside a vertical arrow, above any other
            vertical = abs(start[0] - end[0]) < 1e-6
            ax.text((start[0] + end[0]) / 2 + (0.12 if vertical else 0), (start[1] + end[1]) / 2 + (0 if vertical
                    else 0.16), text, ha="left" if vertical else "center", va="center", fontsize=7.5)  # fmt: skip

    x0 = box(0.9, 2.3, "input $x_0$", "io", w=1.2)
    # Dynamic implicit conditioning (top row).
    phi = box(3.0, 3.9, "features $\\phi(x_0)$\n(CNN, domain-adapted)", "dic")
    knn = box(5.3, 3.9, "$\\bar y$ = mean L1 to the\nK nearest training features", "dic", w=2.1)
    bins = box(7.6, 3.9, "bin of $\\bar y$ among $|B|$\n$\\rightarrow$ step $\\hat T$", "dic")
    # Reconstruction (middle row).
    enc = box(3.0, 2.3, "VAE encoder E\n$z_0 = s\\,E(x_0)$", "rec")
    scale = box(5.3, 2.3, "$z_{\\hat T} = \\sqrt{\\bar\\alpha_{\\hat T}}\\, z_0$\n(scaled, no noise)", "rec", w=2.1)
    ddim = box(7.6, 2.3, "guided DDIM, UNet $\\epsilon_\\theta$\n$\\hat T \\rightarrow 0$, pulled to $z_0$", "rec")
    dec = box(10.2, 2.3, "decoder D\n$\\hat x_0 = D(\\hat z_0 / s)$", "rec")
    # Anomaly map (bottom row): the two maps, added with weights lambda and 1 - lambda.
    lat = box(4.1, 0.7, "latent map\n$|\\hat z_0 - z_0|$", "map", w=1.8)
    feat = box(6.8, 0.7, "feature map\n$1 - \\cos(\\phi(x_0), \\phi(\\hat x_0))$", "map", w=2.5)
    amap = box(10.2, 0.7, "$A = G_\\sigma * (\\lambda\\,$latent$ + (1-\\lambda)\\,$feature$)$\nimage score = max A",
               "map", w=2.9)  # fmt: skip
    ax.text(5.2, 0.7, "+", ha="center", va="center", fontsize=12)
    arrow(x0, enc)
    arrow(x0, phi)
    arrow(phi, knn)
    arrow(knn, bins)
    arrow(bins, ddim, "$\\hat T$")
    arrow(enc, scale)
    arrow(scale, ddim)
    arrow(ddim, dec, "$\\hat z_0$")
    arrow(enc, lat, "$z_0$")
    arrow(ddim, lat, "$\\hat z_0$")
    arrow(dec, feat, "$\\hat x_0$")
    arrow(feat, amap)
    for y, label in ((3.9, "dynamic implicit\nconditioning (DIC)"), (0.7, "anomaly map")):
        ax.text(0.3, y, label, ha="left", va="center", fontsize=8, style="italic", color="0.3")
    ax.set_title("Figure 3: DynAD's reconstruction and anomaly map", fontsize=10)
    return plots.save(fig, path, pdf=True)


def figure5_knn_histograms(runs: list[Run], dataset: str, path: Path) -> Path:
    """Figure 5: one panel per category, training vs test kNN distances with the bins and their T_hat."""
    rs = [r for r in runs if r.dataset == dataset]
    ncol = min(3, len(rs))
    nrow = math.ceil(len(rs) / ncol)
    fig, axes = plots.plt.subplots(nrow, ncol, figsize=(5.5 * ncol, 3.0 * nrow), squeeze=False)
    for ax, r in zip(axes.flat, rs):
        plots.knn_histogram(json.loads((r.eval / "dic.json").read_text()), None, title=f"{dataset}/{r.category}", ax=ax)
        ax.xaxis.label.set_fontsize(6)
    for ax in list(axes.flat)[len(rs):]:
        ax.axis("off")
    return plots.save(fig, path, pdf=True)


def figure2_segmentation(run: Run, path: Path) -> Path:
    """Figure 2: input, ground truth, anomaly map, thresholded mask; one image per defect type (largest score)."""
    a = _eval_arrays(run.eval)
    idx = _examples(a["per_image"])
    size = a["anomaly_map"].shape[-1]
    images = load_images(a["per_image"].path.iloc[idx].tolist(), size)
    thr = _threshold(a)
    vmax = float(a["anomaly_map"].max())
    cells = [[images[k], _truth(a, i), a["anomaly_map"][i] / vmax, a["anomaly_map"][i] >= thr]
             for k, i in enumerate(idx)]  # fmt: skip
    titles = [f"{a['per_image'].defect_type.iloc[i]} (T_hat {a['per_image'].t_hat.iloc[i]})" for i in idx]
    return _grid_figure(cells, ["input", "ground truth", "anomaly map", "predicted mask"], titles, path)


def figure4_anomaly_map_construction(run: Run, pipe, path: Path) -> Path:
    """Figure 4: input, reconstruction, feature map, latent map, combined map (maps normalised over the test set)."""
    a = _eval_arrays(run.eval)
    idx = _examples(a["per_image"])
    size = a["anomaly_map"].shape[-1]
    images = load_images(a["per_image"].path.iloc[idx].tolist(), size)
    recs, _ = dic_reconstructions(pipe, images)
    lat, feat = _norm01(a["latent_map"]), _norm01(a["feature_map"])
    vmax = float(a["anomaly_map"].max())
    cells = [[images[k], recs[k], feat[i], lat[i], a["anomaly_map"][i] / vmax] for k, i in enumerate(idx)]
    titles = [f"{a['per_image'].defect_type.iloc[i]} (T_hat {a['per_image'].t_hat.iloc[i]})" for i in idx]
    return _grid_figure(cells, ["input", "reconstruction", "feature map", "latent map", "anomaly map"], titles, path)


def figure6_fixed_steps(run: Run, path: Path) -> Path | None:
    """Figure 6: predicted masks at fixed T_hat of 100/75/50/25 % of T_max vs DIC vs ground truth (ablation runs)."""
    vroot = run.folder / "ablations" / "variants"
    have = [v for v in FIG6_VARIANTS if (vroot / variant_dir(v) / "maps.npz").is_file()]
    if FULL not in have:
        return None
    full = _eval_arrays(vroot / variant_dir(FULL))
    idx = _examples(full["per_image"])
    size = full["anomaly_map"].shape[-1]
    images = load_images(full["per_image"].path.iloc[idx].tolist(), size)
    masks = {}
    for v in have:
        arr = full if v == FULL else _eval_arrays(vroot / variant_dir(v))
        if arr["per_image"].path.tolist() != full["per_image"].path.tolist():
            raise ValueError(f"{vroot / variant_dir(v)}: test images differ from the full method's")
        masks[v] = arr["anomaly_map"][idx] >= _threshold(arr)
    cells = [[images[k], _truth(full, i), *[masks[v][k] for v in have]] for k, i in enumerate(idx)]
    titles = [str(full["per_image"].defect_type.iloc[i]) for i in idx]
    cols = ["input", "ground truth", *[v.replace(" T_max", "").replace(" (full method)", "") for v in have]]
    return _grid_figure(cells, cols, titles, path)


def figure1_noise_vs_image(run: Run, pipe, path: Path) -> Path:
    """Figure 1: the noise added depends on the image. For the test images with the smallest and the largest T_hat:
    the input, the start of the sampler decoded (noiseless scaled start sqrt(abar) z0, and for comparison the usual
    noised start), and the reconstruction."""
    a = _eval_arrays(run.eval)
    pi = a["per_image"]
    anomalous = pi[pi.label == 1] if (pi.label == 1).any() else pi
    picks = [int(anomalous.t_hat.idxmin()), int(anomalous.t_hat.idxmax())]
    images = load_images(pi.path.iloc[picks].tolist(), a["anomaly_map"].shape[-1])
    cells = []
    with torch.no_grad():
        x = images.to(pipe.device)
        z0 = pipe.codec.encode(x).float()
        gen = torch.Generator().manual_seed(pipe.cfg.seed)
        for k, i in enumerate(picks):
            t = int(pi.t_hat.iloc[i])
            abar = pipe.schedule.abar(t).to(z0.device)
            start = abar.sqrt() * z0[k : k + 1]
            noised = start + (1 - abar).sqrt() * torch.randn(start.shape, generator=gen).to(z0.device)
            rec = pipe.infer(images[k : k + 1], t_hat=t, generator=gen)["reconstruction"][0]
            cells.append([images[k], pipe.codec.decode(start).float().cpu()[0],
                          pipe.codec.decode(noised).float().cpu()[0], rec])  # fmt: skip
    titles = [f"{pi.defect_type.iloc[i]}: T_hat={pi.t_hat.iloc[i]}" for i in picks]
    cols = ["input x0", "D(sqrt(abar) z0): noiseless start", "D(z_T): with noise", "reconstruction"]
    return _grid_figure(cells, cols, titles, path)


def figure7_noised_vs_noiseless(run: Run, pipe, path: Path) -> Path:
    """Noiseless (paper) vs noised start at the same T_hat; with the two ablation variants' anomaly maps if present."""
    a = _eval_arrays(run.eval)
    idx = _examples(a["per_image"])
    images = load_images(a["per_image"].path.iloc[idx].tolist(), a["anomaly_map"].shape[-1])
    t = a["per_image"].t_hat.to_numpy()[idx]
    rec_clean, rec_noise = [], []
    for k in range(len(idx)):
        rec_clean.append(dic_reconstructions(pipe, images[k : k + 1], t_hat=int(t[k]))[0][0])
        rec_noise.append(dic_reconstructions(pipe.with_overrides({"reconstruction.start": "noise"}), images[k : k + 1],
                                             t_hat=int(t[k]))[0][0])
    cols = ["input", "noiseless start", "noised start"]
    vroot = run.folder / "ablations" / "variants"
    extra = []
    for v, label in ((FULL, "map: noiseless (DS+DA)"), ("DA only", "map: noised (DA only)")):
        f = vroot / variant_dir(v) / "maps.npz"
        if f.is_file():
            with np.load(f) as z:
                m = z["anomaly_map"].astype(np.float32)
            extra.append(m[idx] / max(float(m.max()), 1e-12))
            cols.append(label)
    cells = [[images[k], rec_clean[k], rec_noise[k], *[e[k] for e in extra]] for k in range(len(idx))]
    titles = [f"{a['per_image'].defect_type.iloc[i]} (T_hat {t[k]})" for k, i in enumerate(idx)]
    return _grid_figure(cells, cols, titles, path)


def figure8_scaling_vs_step(run: Run, pipe, path: Path, n_images: int = 4,
                            n_steps: int = 6) -> tuple[Path, pd.DataFrame]:
    """Mean latent reconstruction error |z0_hat - z0| vs the step T, noiseless vs noised start, normal vs anomalous."""
    a = _eval_arrays(run.eval)
    pi = a["per_image"]
    normal = pi.index[pi.label == 0][:n_images].tolist()
    anomalous = pi.index[pi.label == 1][:n_images].tolist()
    images = load_images(pi.path.iloc[normal + anomalous].tolist(), a["anomaly_map"].shape[-1])
    labels = np.array([0] * len(normal) + [1] * len(anomalous))
    step, t_max = pipe.cfg.reconstruction.num_steps, pipe.cfg.dic.t_max
    ts = sorted({int(round(v / step)) * step for v in np.linspace(step, t_max, n_steps)})
    rows = []
    for start in ("noiseless", "noise"):
        p = pipe.with_overrides({"reconstruction.start": start})
        for t in ts:
            out = p.infer(images, t_hat=t, generator=torch.Generator().manual_seed(pipe.cfg.seed))
            err = out["latent_map"].flatten(1).mean(1).numpy()
            for lab in (0, 1):
                if (labels == lab).any():
                    rows.append({"start": start, "t": t, "images": "anomalous" if lab else "normal",
                                 "latent_error": float(err[labels == lab].mean())})  # fmt: skip
    df = pd.DataFrame(rows)
    fig, ax = plots.plt.subplots(figsize=(5, 3))
    for (start, images_kind), g in df.groupby(["start", "images"]):
        ls = "-" if start == "noiseless" else "--"
        ax.plot(g.t, g.latent_error, marker="o", ls=ls, label=f"{start}, {images_kind}")
    ax.set_xlabel("T (steps of noise / noiseless scaling)")
    ax.set_ylabel("mean |z0_hat - z0|")
    ax.legend(fontsize=7)
    return plots.save(fig, path, pdf=True), df


# Figures drawn with the fitted pipeline (reconstructions), for the first categories of each data set.
PIPELINE_FIGURES = (
    ("fig1_noise_vs_image", figure1_noise_vs_image),
    ("fig4_anomaly_map_construction", figure4_anomaly_map_construction),
    ("fig7_noised_vs_noiseless", figure7_noised_vs_noiseless),
)


def t_hat_by_defect_plot(df: pd.DataFrame, path: str | Path) -> Path:
    cols = [c for c in df.columns if c.startswith("T_hat=")]
    fig, ax = plots.plt.subplots(figsize=(5.5, 2.8))
    bottom = np.zeros(len(df))
    for c in cols:
        ax.bar(df.defect_type, df[c], bottom=bottom, label=c)
        bottom += df[c].to_numpy()
    ax.set_ylabel("test images")
    ax.set_title("T_hat chosen by DIC, per defect type")
    ax.legend(fontsize=6, ncol=2)
    return plots.save(fig, path)


def localization_plot(df: pd.DataFrame, path: str | Path) -> Path:
    """`localization_table`'s background and within AUROC per defect type, bars; 0.5 is chance."""
    df = df[df.defect_type != "all"]
    x = np.arange(len(df))
    fig, ax = plots.plt.subplots(figsize=(1.6 + 1.1 * len(df), 3.0))
    ax.bar(x - 0.2, df.background, 0.4, label="background: its images vs normal images")
    ax.bar(x + 0.2, df.within, 0.4, label="within: defect vs the rest of its image")
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{t}\n{100 * s:.0f} % of pixels" for t, s in zip(df.defect_type, df.share)], fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("AUROC")
    ax.set_title("Is the map raised over the image, or at the defect?", fontsize=9)
    ax.legend(fontsize=6, loc="lower left")
    return plots.save(fig, path)


def ablation_plot(df: pd.DataFrame, path: str | Path, metric: str = "image_auroc") -> Path:
    """`metric` per defect type (x) and variant (bars), mean over the categories in df."""
    sub = df.groupby(["variant", "defect_type"], sort=False)[metric].mean().reset_index()
    variants = list(dict.fromkeys(df.variant))
    defects = defect_order(sub.defect_type)
    fig, ax = plots.plt.subplots(figsize=(1.6 + 1.4 * len(defects), 3.2))
    width = 0.8 / max(len(variants), 1)
    for i, v in enumerate(variants):
        vals = [sub[(sub.variant == v) & (sub.defect_type == d)][metric].mean() for d in defects]
        ax.bar(np.arange(len(defects)) + i * width, vals, width, label=v)
    ax.set_xticks(np.arange(len(defects)) + 0.4 - width / 2)
    ax.set_xticklabels(defects)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(metric.replace("_", " "))
    ax.legend(fontsize=6, ncol=2, loc="lower left")
    return plots.save(fig, path)
