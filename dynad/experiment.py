"""`dynad run`: train what is missing, adapt, fit the kNN, evaluate one category, and write the results.

    result = run_experiment(cfg, dataset="synthetic", root="data/synthetic", category="board", out="runs/demo/board")

writes into `out`:
    metrics.json      image_auroc, pixel_auroc, pro, ..., "baselines" (kNN distance alone, patch kNN), seconds per
                      stage, provenance, and "validation": the self-check on held-out normals with pseudo-defects
    per_image.csv     path, label, defect_type, score, knn_distance, bin, t_hat (and patch_knn_score)
    per_defect.csv    the metrics split by defect type (each defect type against the normal test images)
    dic.json          training and test kNN distances, bin edges and the bin -> T_hat table (Figure 5)
    maps.npz          anomaly maps and the raw latent / feature maps (float16), ground-truth masks (none for a
                      test set with image labels only: its pixel metrics are None, `image_labels_only` true)
    figures/*.png     qualitative panels, the kNN histogram, training curves, the validation self-check
    pipeline.pt       the fitted pipeline (to score new images alone, and for the step-size explorer)
    run.json          which data set, category and config own the folder (written first)
    run_manifest.json every file above with its size and sha256 (written last: the run is complete)
Trained models live in `models_dir` (default `out/models`), shared between runs that can reuse them.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dynad import distributed, metrics, plots, run_folder, validation
from dynad.anomaly_map import image_scores
from dynad.autoencoder import build_small_vae
from dynad.checks import check_config
from dynad.config import ExperimentConfig, fidelity_deviations
from dynad.data import (
    MASK_ENCODING,
    DatasetError,
    ImageDataset,
    aspect_range,
    aspect_warning,
    has_masks,
    make_index,
    mask_is_empty,
    other_aspect_ratios,
)
from dynad.denoiser import build_unet, count_parameters
from dynad.features import build_extractor
from dynad.fingerprint import data_fingerprint
from dynad.baselines.patch_knn import PatchKNN
from dynad.pipeline import DynAD
from dynad.progress import tqdm
from dynad.provenance import atomic_write, record, resolve_device, write_json

RESULT_FILES = ("metrics.json", "per_image.csv", "per_defect.csv", "dic.json")


def run_identity(cfg: ExperimentConfig, dataset: str, category: str) -> dict[str, str]:
    """What a run folder is claimed by (`run.json`): the data set, the category and the hash of every setting that
    changes a number."""
    return {"dataset": dataset, "category": category, "config": cfg.for_category(category).result_hash()}


def is_complete(out: str | Path, identity: dict[str, str] | None = None) -> bool:
    """The run in `out` finished and its files are as its manifest lists them (see `dynad.run_folder`); with
    `identity` (`run_identity`), also that it is a run of these data and settings, not of others."""
    # The identity is one small JSON file; the manifest check hashes every result file.
    return (identity is None or run_folder.identity_of(out) == identity) and run_folder.is_complete(out)


def finished_run(run_dir: str | Path, identity: dict[str, str]) -> Path | None:
    """The folder that holds a finished run of `identity`: run_dir itself (`dynad run --out run_dir`) or run_dir/eval
    (the notebooks, `dynad reproduce`), the two places `dynad predict` looks; None when neither does."""
    return next((d for d in (Path(run_dir), Path(run_dir) / "eval") if is_complete(d, identity)), None)


def storage_estimate(cfg: ExperimentConfig) -> tuple[int, int]:
    """Rough bytes a run needs: (models folder, output folder), from the parameter counts (meta tensors, no memory).

    A checkpoint holds the weights and AdamW's two moments (12 bytes a parameter), twice while it is replaced;
    pipeline.pt holds the weights (4 bytes a parameter).
    """
    size = cfg.data.image_size
    with torch.device("meta"):
        factor, channels, vae_params, trained_vae = 1, 3, 0, 0
        if cfg.reconstruction.space == "latent" and cfg.autoencoder.source == "train":
            vae = build_small_vae(cfg.autoencoder, size)
            factor, channels = 2 ** (len(cfg.autoencoder.block_out_channels) - 1), cfg.autoencoder.latent_channels
            vae_params = trained_vae = count_parameters(vae)
        elif cfg.reconstruction.space == "latent":
            factor, channels, vae_params = 8, 4, 84_000_000  # sd-vae-ft-mse, read from its own folder
        unet_params = count_parameters(build_unet(cfg.denoiser, max(size // factor, 1), channels))
    margin = 256 << 20  # the feature extractor, tables, figures
    return 2 * 12 * (trained_vae + unet_params) + margin, 4 * (vae_params + unet_params) + margin


DARK = 1 / 8  # training images whose brightest pixel is at most this fraction of full scale are warned about


def _check_both_classes(rows: pd.DataFrame) -> None:
    """Every AUROC needs normal and anomalous test images; a test folder of one class otherwise fails only after
    training, in the metrics."""
    n_anomalous = int(rows.label.sum())
    if 0 < n_anomalous < len(rows):
        return
    folder = os.path.commonpath([str(p) for p in rows.image_path])
    if n_anomalous == 0:
        raise DatasetError(
            f"the {len(rows)} test images ({folder}) are all normal: image AUROC needs anomalous test images too "
            f"(MVTec layout: test/<defect type>/, with masks in ground_truth/<defect type>/ for pixel AUROC and PRO); "
            f"to test on your own normal photographs, `dynad synth --from-images` paints defects with masks on them"
        )
    raise DatasetError(
        f"the {len(rows)} test images ({folder}) are all anomalous: image AUROC needs normal test images too "
        f"(MVTec layout: test/good/)"
    )


def load_split(
    index: pd.DataFrame, split: str, cfg: ExperimentConfig, progress: bool, mask_encoding: str = "auto"
) -> dict[str, Any]:
    """All images of one split as tensors: images (N, 3, S, S), masks (N, S, S) bool (None for a test set with image
    labels only), labels (N,), and the number of defective images whose mask is empty at this resolution
    (`defective_without_mask`), of which `defective_without_mask_in_data` are empty in the stored file already.

    Warns when any defective image has an empty mask (its defect pixels would count as normal) and raises when all
    of them do (no pixel metric could be computed; found now rather than after training). Raises when the test
    split holds one class only (no AUROC), before training too. Warns when every training image is dark (at most
    `DARK` of full scale), as 12-bit values in 16-bit files are.
    """
    rows = index[index.split == split].reset_index(drop=True)
    if split == "test":
        _check_both_classes(rows)
    d = cfg.data
    ds = ImageDataset(rows, d.image_size, d.mask_threshold, d.mask_resize, mask_encoding)
    # The bar as a context: a file that fails to load closes (erases) it, so the error starts on a line of its own.
    with tqdm(range(len(ds)), desc=f"load {split}", disable=not progress, leave=False) as bar:
        items = [ds[i] for i in bar]
    out = {
        "rows": rows,
        "images": torch.stack([it["image"] for it in items]),
        "masks": torch.stack([it["mask"][0] for it in items]).bool(),
        "labels": np.array([it["label"] for it in items]),
    }
    defective = np.flatnonzero(out["labels"] == 1)
    if split == "test" and not has_masks(rows):  # image labels only: no pixel metric, nothing to check
        out.update(masks=None, defective_without_mask=0, defective_without_mask_in_data=0)
        return out
    empty = [i for i in defective if not out["masks"][i].any()]
    in_data = [i for i in empty if mask_is_empty(rows.mask_path[i], mask_encoding)]
    if empty and len(empty) == len(defective):
        raise DatasetError(
            f"all {len(defective)} defective {split} images have an empty mask at {d.image_size} px "
            f"(e.g. {rows.mask_path[empty[0]]}; {len(in_data)} empty in the file itself): check how the masks store "
            f"defects (0/255 greyscale or class values) and data.mask_resize"
        )
    if empty:
        warnings.warn(
            f"{len(empty)} of {len(defective)} defective {split} images have an empty mask at {d.image_size} px "
            f"({len(in_data)} of them empty in the stored file, e.g. {rows.mask_path[empty[0]]}); they stay "
            f"labelled defective for image AUROC, and add no defect pixels to pixel AUROC and PRO",
            stacklevel=2,
        )
    out["defective_without_mask"] = len(empty)
    out["defective_without_mask_in_data"] = len(in_data)
    if split == "train":
        brightest = (out["images"].amax(dim=(1, 2, 3)) + 1) / 2  # (N,) each image's brightest pixel, 1 = full scale
        if float(brightest.max()) <= DARK:
            i = int(brightest.argmax())
            warnings.warn(
                f"the {len(rows)} training images are dark: the brightest pixel of all of them is at "
                f"{float(brightest[i]):.1%} of full scale ({rows.image_path[i]}); if they hold 12-bit or 10-bit "
                f"camera values in 16-bit files (read on 0-65535, so 16 or 64 times too dark), scale them to the full "
                f"range before training",
                stacklevel=2,
            )
    return out


PIXEL_METRICS = ("pixel_auroc", "pixel_ap", "pixel_f1_max", "pro")


def evaluate(labels: np.ndarray, scores: np.ndarray, masks: torch.Tensor | None, maps: np.ndarray, pro_method: str):
    """`metrics.evaluate`, with the pixel metrics None for a test set with image labels only (`masks` None)."""
    if masks is None:
        return metrics.evaluate(labels, scores) | dict.fromkeys(PIXEL_METRICS)
    return metrics.evaluate(labels, scores, masks.numpy(), maps, pro_method=pro_method)


def read_results_csv(path: str | Path) -> pd.DataFrame:
    """A per-defect or ablations CSV: "NA", "None" or "null" may name a defect type (pandas would read them as
    missing), and only an empty cell is a missing value, such as a pixel metric of a test set with image labels
    only."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def per_defect_table(test: dict, scores: np.ndarray, maps: np.ndarray, pro_method: str) -> pd.DataFrame:
    """Each defect type against the normal test images."""
    rows, masks = test["rows"], test["masks"]
    normal = (rows.label == 0).to_numpy()
    out = []
    for defect in sorted(rows.defect_type[rows.label == 1].unique()):
        sel = normal | (rows.defect_type == defect).to_numpy()
        m = evaluate(test["labels"][sel], scores[sel], None if masks is None else masks[sel], maps[sel], pro_method)
        of_type = torch.from_numpy((rows.defect_type == defect).to_numpy().copy())
        out.append({"defect_type": defect, "n": int(of_type.sum()),
                    "mask_area": None if masks is None else float(masks[of_type].float().mean()), **m})  # fmt: skip
    return pd.DataFrame(out)


def fit_pipeline(
    cfg: ExperimentConfig,
    dataset: str,
    root: str | Path,
    category: str,
    models_dir: str | Path,
    progress: bool = True,
    load_test: bool = True,
) -> tuple[DynAD, dict[str, Any], dict[str, Any] | None]:
    """Load the category's images and fit (or reload from `models_dir`) the pipeline: (pipe, train, test).

    `cfg` is the run's config before the per-category table is applied (applied here). `train["validation"]` is
    the validation set (held-out normals with pseudo-defects; None when validation.fraction is 0): the held-out
    images are not in `train["images"]` and no model sees them. With `load_test=False` (`dynad tune`) no test file
    is opened and `test` is None.
    """
    cfg = cfg.for_category(category)
    t0 = time.perf_counter()
    index = make_index(dataset, root, category)
    keep, held = validation.holdout(int((index.split == "train").sum()), cfg.validation.fraction, cfg.validation.seed)
    check_config(cfg, n_train=len(keep), n_held=len(held))  # before hours of training, not after
    train_split = load_split(index, "train", cfg, progress)
    test = load_split(index, "test", cfg, progress, MASK_ENCODING[dataset]) if load_test else None
    if test is not None and test["masks"] is None:  # before training: a misnamed normal folder counts as anomalous
        types = test["rows"][test["rows"].label == 1].defect_type.value_counts().sort_index()
        print(f"{dataset}/{category}: image labels only (no ground_truth/ folder): anomalous test images "
              f"{', '.join(f'{t} {n}' for t, n in types.items())}; pixel AUROC and PRO are not computed",
              file=sys.stderr)  # fmt: skip
    images = train_split["images"]
    train_split["validation"] = (
        validation.pseudo_defect_set(images[held], images[keep], cfg.validation.seed) if len(held) else None
    )
    train_split["images"], train_split["rows"] = images[keep], train_split["rows"].iloc[keep].reset_index(drop=True)
    train_split["held_out"] = int(len(held))
    aspect = aspect_range(train_split["rows"].image_path)  # `dynad predict` compares new images to it too
    if test is not None:  # before training: a test folder from another camera or crop is scored higher for it
        outside = other_aspect_ratios(list(test["rows"].image_path), aspect)
        if outside:
            i, size = outside[0]
            print(f"WARNING ({dataset}/{category}): " + aspect_warning(len(outside), len(test["rows"]), "test images",
                  aspect, test["rows"].image_path.iloc[i], size, cfg.data.image_size), file=sys.stderr)  # fmt: skip
    load_seconds = time.perf_counter() - t0
    # Stored models are keyed on the training files' contents (the held-out ones excluded), not on the folder's path.
    data_id = {"dataset": dataset, "category": category,
               "fingerprint": data_fingerprint(train_split["rows"].image_path, root),
               "held_out": validation.held_out_key(cfg.validation, len(keep) + len(held))}  # fmt: skip
    pipe = DynAD.fit(cfg, train_split["images"], models_dir, data_id, progress=progress)
    pipe.provenance["seconds"] = {"load_data": load_seconds, **pipe.provenance["seconds"]}
    pipe.provenance["data"] = {"root": str(Path(root).resolve()), "train_fingerprint": data_id["fingerprint"],
                               "train_aspect_ratio": aspect}  # fmt: skip
    if test is not None:
        test_files = [*test["rows"].image_path, *test["rows"].mask_path.dropna()]
        pipe.provenance["data"]["test_fingerprint"] = data_fingerprint(test_files, root)
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
    overwrite: bool = False,
    baselines: bool = True,
    fitted: tuple[DynAD, dict[str, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the method on one category and write the results into `out`; returns the metrics dict (an empty dict on
    the processes other than the main one under `accelerate launch`).

    `figures=False` skips the qualitative panels (the ablation variants need only their numbers and maps);
    `baselines=False` skips the patch kNN (it does not depend on the variant). `fitted`: (pipe, train, test) from
    `fit_pipeline` for this config, when a caller shares one fit between runs (the ablations); its stage seconds
    are then those of the shared fit. `out` may hold an earlier run of the same data and config (it is redone);
    another run's folder raises RunFolderError unless `overwrite`.
    """
    out = Path(out)
    models_dir = Path(models_dir or out / "models")
    cat_cfg = check_config(cfg.for_category(category))  # the data-dependent checks follow in fit_pipeline
    resolve_device(cat_cfg.device)  # a named GPU that is not there: an error now, not after loading the data
    need_models, need_out = storage_estimate(cat_cfg)
    run_folder.prepare_folder(out, need_out, "output folder")
    run_folder.prepare_folder(models_dir, need_models, "models folder")
    run_folder.claim(out, run_identity(cat_cfg, dataset, category), overwrite, settings=cat_cfg.to_dict())
    t_start = time.perf_counter()
    pipe, train_split, test = fitted or fit_pipeline(cfg, dataset, root, category, models_dir, progress)
    cfg = pipe.cfg
    seconds = dict(pipe.provenance["seconds"])

    t0 = time.perf_counter()
    val_report = None
    if train_split["validation"] is not None:
        val_report = validation.validate(pipe, train_split["validation"], train_split["images"])
        if val_report["warning"]:
            print(f"WARNING ({dataset}/{category}): {val_report['warning']}", file=sys.stderr)
    seconds["validation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    res = pipe.infer_all(test["images"], progress=progress)
    seconds["inference"] = time.perf_counter() - t0
    if not distributed.state().is_main_process:
        return {}  # the main process computes the metrics and writes every file

    maps = pipe.evaluation_maps(res["latent_map"], res["feature_map"])
    scores = image_scores(maps).numpy()
    maps_np = maps.numpy()

    t0 = time.perf_counter()
    m = evaluate(test["labels"], scores, test["masks"], maps_np, cfg.eval.pro_method)
    m["knn_baseline_image_auroc"] = metrics.image_auroc(test["labels"], res["knn_distance"])
    per_defect = per_defect_table(test, scores, maps_np, cfg.eval.pro_method)
    seconds["metrics"] = time.perf_counter() - t0
    peers = {"knn_distance": {"image_auroc": m["knn_baseline_image_auroc"], "pixel_auroc": None, "pro": None}}
    patch_scores = None
    if baselines and cfg.baselines.patch_knn:
        t0 = time.perf_counter()
        peers["patch_knn"], patch_scores = patch_knn_baseline(cfg, pipe.device, train_split, test)
        seconds["patch_knn"] = time.perf_counter() - t0

    rows = test["rows"]
    per_image = pd.DataFrame({
        "path": rows.image_path, "label": rows.label, "defect_type": rows.defect_type, "score": scores,
        "knn_distance": res["knn_distance"], "bin": res["bin"], "t_hat": res["t_hat"],
    })  # fmt: skip
    if patch_scores is not None:
        per_image["patch_knn_score"] = patch_scores
    dic_info = {
        "train_distances": pipe.dic.train_distances.tolist(),
        "test_distances": res["knn_distance"].tolist(),
        "test_labels": test["labels"].tolist(),
        "test_defect_types": rows.defect_type.tolist(),
        "edges": pipe.dic.edges.tolist(),
        "binning": cfg.dic.binning,
        "table": pipe.dic.table,
        "fixed_t_hat": cfg.dic.fixed_t_hat,
    }

    t0 = time.perf_counter()
    figs = out / "figures"
    plots.knn_histogram(dic_info, figs / "knn_histogram.png", title=f"{dataset}/{category}")
    plots.training_curves(pipe.provenance["losses"], figs / "training_curves.png")
    if val_report is not None:
        plots.validation_check(val_report, figs / "validation.png",
                               title=f"{dataset}/{category}: validation self-check")
    picks = plots.pick_examples(rows, scores, cfg.eval.num_figures) if figures else []
    if picks:
        rec = pipe.infer(test["images"][picks], generator=torch.Generator().manual_seed(cfg.seed))
        masks = test["masks"]
        plots.qualitative_panels(
            test["images"][picks], None if masks is None else masks[picks], test["labels"][picks],
            rec["reconstruction"], res["latent_map"][picks], res["feature_map"][picks], maps[picks],
            map_threshold(None if masks is None else masks.numpy(), maps_np, test["labels"], scores),
            [f"{rows.defect_type[i]} T_hat={res['t_hat'][i]}" for i in picks], figs / "qualitative.png",
        )  # fmt: skip
    seconds["figures"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start

    gt = {} if test["masks"] is None else {"gt_mask": test["masks"].numpy()}  # image labels only: no gt_mask
    with atomic_write(out / "maps.npz", "wb") as f:
        np.savez_compressed(
            f, anomaly_map=maps_np.astype(np.float16), latent_map=res["latent_map"].numpy().astype(np.float16),
            feature_map=res["feature_map"].numpy().astype(np.float16), **gt,
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
        "baselines": peers,
        "n_train": int(len(train_split["rows"])),
        "n_held_out": train_split["held_out"],
        "validation": val_report,
        "n_test": int(len(rows)),
        "image_labels_only": test["masks"] is None,
        "defective_without_mask": test["defective_without_mask"],
        "defective_without_mask_in_data": test["defective_without_mask_in_data"],
        "seconds": seconds,
        "fidelity": cfg.fidelity,
        "threads": torch.get_num_threads(),  # the count in use (config `threads`; 0 there: torch's default)
        "choices": choices(cfg, pipe.device),
        "denoiser_parameters": pipe.provenance.get("denoiser_parameters"),
        "data": pipe.provenance["data"],  # the data fingerprints: which files made the number
        "provenance": {**record(cfg.to_dict(), pipe.device, pipe.provenance["weights"]),
                       "num_processes": distributed.state().num_processes},
    }
    write_json(out / "metrics.json", result)
    figures_written = [p.relative_to(out) for p in figs.glob("*.png")]  # names inside `out`, which may be relative
    written = [*RESULT_FILES, "maps.npz", *(["pipeline.pt"] if save_pipeline else []), *figures_written]
    run_folder.write_manifest(out, written)  # last: the run is complete when its files match this list
    return result


def patch_knn_baseline(
    cfg: ExperimentConfig, device: torch.device, train: dict[str, Any], test: dict[str, Any]
) -> tuple[dict[str, Any], np.ndarray]:
    """The patch-kNN peer on the run's own images, backbone (ImageNet weights, unadapted) and map smoothing:
    (its metrics and bank size, its image scores (N,))."""
    extractor = build_extractor(cfg.features).to(device)
    peer = PatchKNN(cfg.baselines, extractor, cfg.features.map_layers, cfg.seed).fit(train["images"])
    maps = peer.anomaly_maps(test["images"], cfg.anomaly_map).numpy()  # (N, S, S)
    scores = maps.reshape(len(maps), -1).max(axis=1)
    m = evaluate(test["labels"], scores, test["masks"], maps, cfg.eval.pro_method)
    info = {"bank": int(len(peer.bank)), "training_patches": peer.n_patches, "weights": extractor.weights_label}
    return {k: m[k] for k in ("image_auroc", "pixel_auroc", "pro")} | info, scores


def choices(cfg: ExperimentConfig, device: torch.device | str | None = None) -> dict[str, Any]:
    """The paper-vs-reference-code choices (METHOD.md section 8) that produced a number.

    `fidelity` names the mode; `fidelity_deviations` the FIDELITY behaviours set otherwise after it. `device` (the
    one that ran) decides whether autocast was on (`distributed.inference_precision`).
    """
    dev = torch.device(device if device is not None else resolve_device(cfg.device))
    autocast = distributed.inference_precision(cfg, dev)
    return {
        "fidelity": cfg.fidelity,
        "fidelity_deviations": fidelity_deviations(cfg),
        "autocast": "off (float32)" if autocast == "no" else autocast,
        "da_loss": cfg.adaptation.loss,
        "da_step_grid": cfg.adaptation.step_grid,
        "da_weight_decay": cfg.adaptation.weight_decay,
        "knn_binning": cfg.dic.binning,
        "t_hat_rounding": cfg.dic.rounding,
        "sampler_start": cfg.reconstruction.sampler_start,
        "drop_first_noise": cfg.reconstruction.drop_first_noise,
        "clamp_decoded": cfg.reconstruction.clamp_decoded,
        "vae_posterior": cfg.autoencoder.posterior,
        "map_normalization": cfg.anomaly_map.normalization,
        "map_align_corners": cfg.anomaly_map.align_corners,
        "mask_resize": cfg.data.mask_resize,
        "mask_threshold": cfg.data.mask_threshold,
        "knn_self_distance": cfg.dic.self_distance,
        "pro_method": cfg.eval.pro_method,
        "start": cfg.reconstruction.start,
        "fixed_t_hat": cfg.dic.fixed_t_hat,
        "space": cfg.reconstruction.space,
        "adaptation_epochs": cfg.adaptation.epochs,
    }


def map_threshold(masks: np.ndarray | None, maps: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """The threshold of the thresholded-mask panel: the best pixel F1, or with image labels only (`masks` None) the
    best image F1 of the image scores (each map's maximum), so that a map's pixels above it are those that flag
    its image."""
    return pixel_threshold(labels, scores) if masks is None else pixel_threshold(masks, maps)


def pixel_threshold(masks: np.ndarray, maps: np.ndarray, max_pixels: int = 2_000_000) -> float:
    """The pixel threshold with the best F1 (on a fixed subsample for large sets): for the thresholded-mask panel.
    Any labels and scores of one shape will do (image labels and scores, for `map_threshold`)."""
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
