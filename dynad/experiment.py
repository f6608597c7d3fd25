"""`dynad run`: train what is missing, adapt, fit the kNN, evaluate one category, and write the results.

    result = run_experiment(cfg, dataset="synthetic", root="data/synthetic", category="board", out="runs/demo/board")

writes into `out`:
    metrics.json      image_auroc, pixel_auroc, pro, ..., the kNN baseline, seconds per stage, provenance
    per_image.csv     path, label, defect_type, score, knn_distance, bin, t_hat
    per_defect.csv    the metrics split by defect type (each defect type against the normal test images)
    dic.json          training and test kNN distances, bin edges and the bin -> T_hat table (Figure 5)
    maps.npz          anomaly maps and the raw latent / feature maps (float16), ground-truth masks
    figures/*.png     qualitative panels, the kNN histogram, training curves
    pipeline.pt       the fitted pipeline (to score new images alone, and for the step-size explorer)
Trained models live in `models_dir` (default `out/models`), shared between runs that can reuse them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dynad import metrics, plots
from dynad.anomaly_map import MapNormalization, image_scores
from dynad.config import ExperimentConfig
from dynad.data import ImageDataset, make_index
from dynad.pipeline import DynAD
from dynad.progress import tqdm
from dynad.provenance import atomic_write, record, write_json

RESULT_FILES = ("metrics.json", "per_image.csv", "per_defect.csv", "dic.json")


def is_complete(out: str | Path) -> bool:
    out = Path(out)
    return all((out / f).is_file() for f in RESULT_FILES)


def load_split(index: pd.DataFrame, split: str, cfg: ExperimentConfig, progress: bool) -> dict[str, Any]:
    """All images of one split as tensors: images (N, 3, S, S), masks (N, S, S) bool, labels (N,)."""
    rows = index[index.split == split].reset_index(drop=True)
    ds = ImageDataset(rows, cfg.data.image_size, cfg.data.mask_threshold)
    items = [ds[i] for i in tqdm(range(len(ds)), desc=f"load {split}", disable=not progress, leave=False)]
    return {
        "rows": rows,
        "images": torch.stack([it["image"] for it in items]),
        "masks": torch.stack([it["mask"][0] for it in items]).bool(),
        "labels": np.array([it["label"] for it in items]),
    }


def per_defect_table(test: dict, scores: np.ndarray, maps: np.ndarray, pro_method: str) -> pd.DataFrame:
    """Each defect type against the normal test images."""
    rows = test["rows"]
    normal = (rows.label == 0).to_numpy()
    out = []
    for defect in sorted(rows.defect_type[rows.label == 1].unique()):
        sel = normal | (rows.defect_type == defect).to_numpy()
        m = metrics.evaluate(test["labels"][sel], scores[sel], test["masks"][sel].numpy(), maps[sel], pro_method=pro_method)
        defect_masks = test["masks"][torch.from_numpy((rows.defect_type == defect).to_numpy().copy())]
        out.append({"defect_type": defect, "n": int((rows.defect_type == defect).sum()),
                    "mask_area": float(defect_masks.float().mean()), **m})  # fmt: skip
    return pd.DataFrame(out)


def fit_pipeline(
    cfg: ExperimentConfig,
    dataset: str,
    root: str | Path,
    category: str,
    models_dir: str | Path,
    progress: bool = True,
) -> tuple[DynAD, dict[str, Any], dict[str, Any]]:
    """Load the category's images and fit (or reload from `models_dir`) the pipeline: (pipe, train, test).

    `cfg` is the run's config before the per-category table is applied (applied here).
    """
    cfg = cfg.for_category(category)
    t0 = time.perf_counter()
    index = make_index(dataset, root, category)
    train_split = load_split(index, "train", cfg, progress)
    test = load_split(index, "test", cfg, progress)
    load_seconds = time.perf_counter() - t0
    data_id = {"dataset": dataset, "root": str(Path(root).resolve()), "category": category}
    pipe = DynAD.fit(cfg, train_split["images"], models_dir, data_id, progress=progress)
    pipe.provenance["seconds"] = {"load_data": load_seconds, **pipe.provenance["seconds"]}
    return pipe, train_split, test


def run_experiment(
    cfg: ExperimentConfig,
    dataset: str,
    root: str | Path,
    category: str,
    out: str | Path,
    models_dir: str | Path | None = None,
    progress: bool = True,
    save_pipeline: bool = True,
    figures: bool = True,
) -> dict[str, Any]:
    """Run the method on one category and write the results into `out`; returns the metrics dict.

    `figures=False` skips the qualitative panels (the ablation variants need only their numbers and maps).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    pipe, train_split, test = fit_pipeline(cfg, dataset, root, category, models_dir or out / "models", progress)
    cfg = pipe.cfg
    seconds = dict(pipe.provenance["seconds"])

    t0 = time.perf_counter()
    res = pipe.infer_all(test["images"], progress=progress)
    seconds["inference"] = time.perf_counter() - t0

    # Eq. 9: normalise over the test set (paper) or with training statistics.
    norm = pipe.train_normalization if cfg.anomaly_map.normalization == "train" else None
    maps = pipe.anomaly_maps(res["latent_map"], res["feature_map"], norm)
    scores = image_scores(maps).numpy()
    maps_np = maps.numpy()

    t0 = time.perf_counter()
    m = metrics.evaluate(test["labels"], scores, test["masks"].numpy(), maps_np, pro_method=cfg.eval.pro_method)
    m["knn_baseline_image_auroc"] = metrics.image_auroc(test["labels"], res["knn_distance"])
    per_defect = per_defect_table(test, scores, maps_np, cfg.eval.pro_method)
    seconds["metrics"] = time.perf_counter() - t0

    rows = test["rows"]
    per_image = pd.DataFrame({
        "path": rows.image_path, "label": rows.label, "defect_type": rows.defect_type, "score": scores,
        "knn_distance": res["knn_distance"], "bin": res["bin"], "t_hat": res["t_hat"],
    })  # fmt: skip
    dic_info = {
        "train_distances": pipe.dic.train_distances.tolist(),
        "test_distances": res["knn_distance"].tolist(),
        "test_labels": test["labels"].tolist(),
        "test_defect_types": rows.defect_type.tolist(),
        "edges": pipe.dic.edges.tolist(),
        "table": pipe.dic.table,
        "fixed_t_hat": cfg.dic.fixed_t_hat,
    }

    t0 = time.perf_counter()
    figs = out / "figures"
    plots.knn_histogram(dic_info, figs / "knn_histogram.png", title=f"{dataset}/{category}")
    plots.training_curves(pipe.provenance["losses"], figs / "training_curves.png")
    picks = plots.pick_examples(rows, scores, cfg.eval.num_figures) if figures else []
    if picks:
        rec = pipe.infer(test["images"][picks], generator=torch.Generator().manual_seed(cfg.seed))
        plots.qualitative_panels(
            test["images"][picks], test["masks"][picks], rec["reconstruction"], res["latent_map"][picks],
            res["feature_map"][picks], maps[picks], pixel_threshold(test["masks"].numpy(), maps_np),
            [f"{rows.defect_type[i]} T_hat={res['t_hat'][i]}" for i in picks], figs / "qualitative.png",
        )  # fmt: skip
    seconds["figures"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start

    with atomic_write(out / "maps.npz", "wb") as f:
        np.savez_compressed(
            f, anomaly_map=maps_np.astype(np.float16), latent_map=res["latent_map"].numpy().astype(np.float16),
            feature_map=res["feature_map"].numpy().astype(np.float16), gt_mask=test["masks"].numpy(),
        )  # fmt: skip
    if save_pipeline:
        pipe.save(out / "pipeline.pt")
    with atomic_write(out / "per_image.csv", "w") as f:
        per_image.to_csv(f, index=False)
    with atomic_write(out / "per_defect.csv", "w") as f:
        per_defect.to_csv(f, index=False)
    write_json(out / "dic.json", dic_info)
    result = {
        "dataset": dataset,
        "category": category,
        **m,
        "n_train": int(len(train_split["rows"])),
        "n_test": int(len(rows)),
        "seconds": seconds,
        "threads": torch.get_num_threads(),  # the count in use (config `threads`; 0 there: torch's default)
        "choices": choices(cfg),
        "denoiser_parameters": pipe.provenance.get("denoiser_parameters"),
        "provenance": record(cfg.to_dict(), pipe.device, pipe.provenance["weights"]),
    }
    write_json(out / "metrics.json", result)  # last: its presence marks the run complete
    return result


def choices(cfg: ExperimentConfig) -> dict[str, Any]:
    """The paper-vs-reference-code choices (METHOD.md section 8) that produced a number."""
    return {
        "da_loss": cfg.adaptation.loss,
        "t_hat_rounding": cfg.dic.rounding,
        "sampler_start": cfg.reconstruction.sampler_start,
        "vae_posterior": cfg.autoencoder.posterior,
        "map_normalization": cfg.anomaly_map.normalization,
        "mask_threshold": cfg.data.mask_threshold,
        "knn_self_distance": cfg.dic.self_distance,
        "pro_method": cfg.eval.pro_method,
        "start": cfg.reconstruction.start,
        "fixed_t_hat": cfg.dic.fixed_t_hat,
        "space": cfg.reconstruction.space,
        "adaptation_epochs": cfg.adaptation.epochs,
    }


def pixel_threshold(masks: np.ndarray, maps: np.ndarray, max_pixels: int = 2_000_000) -> float:
    """The pixel threshold with the best F1 (on a fixed subsample for large sets): for the thresholded-mask panel."""
    from sklearn.metrics import precision_recall_curve

    y, s = masks.ravel(), maps.ravel()
    if y.size > max_pixels:
        idx = np.random.default_rng(0).choice(y.size, max_pixels, replace=False)
        y, s = y[idx], s[idx]
    if y.min() == y.max():
        return float(s.max())
    p, r, th = precision_recall_curve(y, s)
    f1 = 2 * p * r / np.maximum(p + r, 1e-12)
    return float(th[np.argmax(f1[:-1])])
