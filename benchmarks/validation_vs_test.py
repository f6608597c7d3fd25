r"""Does the validation set rank settings the way the test set does? A diagnosis, never a choice.

    python benchmarks/validation_vs_test.py --preset mtd --dataset mtd --root ../shared/data/magnetic-tile \
        --category magnetic_tile --models runs/mtd/models --out benchmarks/results/validation_vs_test_mtd \
        [--set denoiser.epochs=120] [--grid dic.t_max=10,40,160,320 ...]

`dynad tune` chooses T_max, eta, lambda and sigma on validation pseudo-defects. When a preset then scores far less
on real defects than on the pseudo-defects, the question is whether the choice or the models are at fault. This
script fits (or reloads) the preset's models once and scores every point of a grid twice: on the validation set as
`dynad tune` does (training statistics) and on the test set as `dynad run` does. It writes <out>.csv (a row per
point, with each test defect type's image and pixel AUROC) and <out>.md (the validation choice, the best test row,
and the Spearman rank correlation of the two objectives).

The test columns say what each setting would have scored. They are for diagnosis only: no preset reads them, and
choosing a setting by them would make its test number meaningless.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from dynad import metrics, tuning, validation
from dynad.anomaly_map import image_scores
from dynad.config import load_preset
from dynad.experiment import fit_pipeline
from dynad.provenance import atomic_write, git_commit
from dynad.report.format import to_markdown

HERE = Path(__file__).resolve().parent
GRID = {"dic.t_max": [10, 40, 160, 320], "reconstruction.eta": [0.0, 4.0], "anomaly_map.lam": [0.5, 1.0],
        "anomaly_map.sigma": [4.0, 12.0, 24.0]}  # fmt: skip


def auroc_by_type(rows: pd.DataFrame, scores: np.ndarray, masks: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    """Image and pixel AUROC of each defect type's images together with the normal ones."""
    out = {}
    normal = (rows.label == 0).to_numpy()
    labels = rows.label.to_numpy()
    for defect in sorted(rows.defect_type[rows.label == 1].unique()):
        sel = normal | (rows.defect_type == defect).to_numpy()
        out[f"test_image_{defect}"] = metrics.image_auroc(labels[sel], scores[sel])
        out[f"test_pixel_{defect}"] = metrics.pixel_auroc(masks[sel], maps[sel])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mtd")
    p.add_argument("--dataset", default="mtd")
    p.add_argument("--root", type=Path, default=HERE.parent.parent / "shared" / "data" / "magnetic-tile")
    p.add_argument("--category", default="magnetic_tile")
    p.add_argument("--models", type=Path, required=True, help="where the fitted models are (or will be) stored")
    p.add_argument("--out", type=Path, default=HERE / "results" / "validation_vs_test_mtd")
    p.add_argument("--set", action="append", default=[], dest="overrides", help="config override, as in dynad run")
    p.add_argument("--grid", action="append", default=[], help="KEY=V1,V2 (replaces that axis), as in dynad tune")
    p.add_argument("--stride", type=int, default=2, help="score every n-th pixel in each direction (speed)")
    args = p.parse_args()
    grid = {**GRID, **tuning.parse_grid(args.grid)}
    cfg = load_preset(args.preset, args.overrides)
    t0 = time.perf_counter()
    pipe, train, test = fit_pipeline(cfg, args.dataset, args.root, args.category, args.models)
    val = train["validation"]
    test_masks = test["masks"].numpy()[:, :: args.stride, :: args.stride]
    rows = []
    outer = list(itertools.product(grid["dic.t_max"], grid["reconstruction.eta"]))
    for t_max, eta in tqdm(outer, desc="validation vs test (T_max, eta)"):
        variant = pipe.with_overrides({"dic.t_max": int(t_max), "reconstruction.eta": eta})
        variant.fit_train_normalization(train["images"])
        res_val = variant.infer_all(val.images, progress=False)
        res_test = variant.infer_all(test["images"], progress=False)
        for lam, sigma in itertools.product(grid["anomaly_map.lam"], grid["anomaly_map.sigma"]):
            v = tuning.with_map_settings(variant, lam, sigma)
            maps_val = v.anomaly_maps(res_val["latent_map"], res_val["feature_map"], variant.train_normalization)
            mv, _ = validation.evaluate_maps(val, res_val["latent_map"], res_val["feature_map"], maps_val)
            maps_test = v.evaluation_maps(res_test["latent_map"], res_test["feature_map"])
            scores_test = image_scores(maps_test).numpy()
            ti = metrics.image_auroc(test["labels"], scores_test)
            maps_test = maps_test.numpy()[:, :: args.stride, :: args.stride]
            tp = metrics.pixel_auroc(test_masks, maps_test)
            rows.append({"t_max": int(t_max), "eta": eta, "lam": lam, "sigma": sigma,
                         "val_image_auroc": mv["image_auroc"], "val_pixel_auroc": mv["pixel_auroc"],
                         "val_objective": (mv["image_auroc"] + mv["pixel_auroc"]) / 2,
                         "test_image_auroc": ti, "test_pixel_auroc": tp, "test_objective": (ti + tp) / 2,
                         **auroc_by_type(test["rows"], scores_test, test_masks, maps_test)})  # fmt: skip
    table = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out.with_suffix(".csv"), "w") as f:
        table.to_csv(f, index=False)
    rho = spearmanr(table.val_objective, table.test_objective).statistic
    chosen = table.loc[table.val_objective.idxmax()]
    best = table.loc[table.test_objective.idxmax()]
    best_pixel = table.loc[table.test_pixel_auroc.idxmax()]
    scores = [c for c in table.columns if c.startswith(("val_", "test_"))]
    setting = lambda r: f"T_max {r.t_max:g}, eta {r.eta:g}, λ {r.lam:g}, σ {r.sigma:g}"  # noqa: E731
    overrides = " ".join(f"--set {o}" for o in args.overrides)
    text = [
        f"# Validation against test: `{args.preset}` on {args.dataset}/{args.category} (diagnosis, not a choice)\n",
        f"`python benchmarks/validation_vs_test.py --preset {args.preset} --dataset {args.dataset} --category "
        f"{args.category} --models … {overrides}`: {time.perf_counter() - t0:.0f} s, threads {cfg.threads}, commit "
        f"{git_commit()}. Test pixel AUROC on one row and column in {args.stride}.\n",
        f"- Spearman rank correlation of the validation and test objectives over {len(table)} points: **{rho:.2f}**",
        f"- validation's choice: {setting(chosen)} -> validation {chosen.val_image_auroc:.3f} / "
        f"{chosen.val_pixel_auroc:.3f}, test {chosen.test_image_auroc:.3f} / {chosen.test_pixel_auroc:.3f}",
        f"- best test objective: {setting(best)} -> test {best.test_image_auroc:.3f} / {best.test_pixel_auroc:.3f} "
        f"(validation {best.val_image_auroc:.3f} / {best.val_pixel_auroc:.3f})",
        f"- best test pixel AUROC anywhere in the grid: **{best_pixel.test_pixel_auroc:.3f}** "
        f"({setting(best_pixel)})\n",
        "AUROCs in percent, sorted by the validation objective:\n",
        to_markdown(table.sort_values("val_objective", ascending=False).assign(**{c: table[c] * 100 for c in scores})),
    ]
    with atomic_write(args.out.with_suffix(".md"), "w") as f:
        f.write("\n".join(text) + "\n")
    print("\n".join(text[:6]))


if __name__ == "__main__":
    main()
