"""The paper's tables and the notebooks' tables, one function each, from the files the compute steps wrote.

    table1_visa(runs, targets)               Table 1: VisA per category, ours beside the paper's D3AD column
    table2_visa_comparison(runs, targets)    Table 2: the paper's methods (VisA means) and our mean
    table3_btad(runs, targets)               Table 3: BTAD per category
    main_table(runs, dataset, targets)       the same layout for any data set (synthetic, mtd, mvtec, ...)
    table4_fixed_steps(df, ...)              Table 4: fixed steps vs DIC (ablations.csv rows)
    table5_noiseless_and_adaptation(df, ...) Table 5: noiseless scaling (DS) x domain adaptation (DA)
    latent_vs_pixel_space(df, ...)           latent vs pixel space (not in the paper)
Notebooks 02-04: feature_gap_table, knn_binning, bin_table, t_hat_by_defect, category_metrics, peers_table,
dataset_metrics, localization_table. Every per-category table carries the peers of the same runs: the kNN distance
alone and, when the runs computed it, the patch kNN (dynad/baselines/).
All paper tables are in percent; the notebooks' per-run tables keep fractions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dynad import metrics as mt
from dynad.config import DICConfig
from dynad.dic import DynamicConditioning
from dynad.experiment import read_results_csv
from dynad.report.runs import Run
from dynad.report.targets import METRICS, SPACE_ORDER, TABLE4_ORDER, TABLE5_FLAGS, TABLE5_ORDER, load_targets
from dynad.synthetic import DEFECT_TYPES


def main_table(runs: list[Run], dataset: str, targets: dict[str, Any]) -> pd.DataFrame:
    """Categories of `dataset` (ours and the paper's), our metrics and the kNN baseline, the paper's D3AD column and
    the difference (percentage points), and the mean row (ours over the categories we ran). When we ran other
    categories than the paper's, the mean row's difference is the mean of the categories' differences."""
    ours = {r.category: r.metrics for r in runs if r.dataset == dataset}
    paper = targets.get("main", {}).get(dataset)
    paper_cats = [c for c in (paper or {}) if c != "mean"]
    cats = paper_cats + sorted(c for c in ours if c not in paper_cats)
    # The patch-kNN peer's columns, when the runs computed it (runs made before it existed have none).
    peer_cols = [f"patch_knn_{k}" for k in METRICS] if any(_patch_knn(m) for m in ours.values()) else []
    rows = []
    for cat in cats:
        m = ours.get(cat, {})
        row: dict[str, Any] = {"category": cat}
        for k in (*METRICS, "knn_baseline_image_auroc"):
            row[k] = 100 * m[k] if k in m and m[k] is not None else np.nan
        for k in peer_cols:
            v = _patch_knn(m).get(k.removeprefix("patch_knn_"))
            row[k] = 100 * v if v is not None else np.nan
        rows.append(row)
    df = pd.DataFrame(rows, columns=["category", *METRICS, "knn_baseline_image_auroc", *peer_cols])
    mean = {"category": "mean", **{k: df[k].mean() if df[k].notna().any() else np.nan for k in df.columns[1:]}}
    df = pd.concat([df, pd.DataFrame([mean])], ignore_index=True)
    df.insert(1, "ours", [int(c in ours) for c in cats] + [len(ours)])  # 1 = we ran it; mean row: how many
    if paper is not None:
        for k in METRICS:
            df[f"paper_{k}"] = [paper.get(c, {}).get(k, np.nan) for c in df.category]
            df[f"diff_{k}"] = df[k] - df[f"paper_{k}"]
            if set(ours) != set(paper_cats):  # the two means are over other categories: compare like for like
                df.loc[df.index[-1], f"diff_{k}"] = df[f"diff_{k}"].iloc[:-1].mean()
    return df.rename(columns={"knn_baseline_image_auroc": "knn_image_auroc"})


def comparison_table(runs: list[Run], dataset: str, targets: dict[str, Any]) -> pd.DataFrame:
    """The paper's comparison methods (means) and our mean over the categories we ran."""
    rows = [{"method": k, **{m: v.get(m, np.nan) for m in METRICS}} for k, v in targets["comparison"][dataset].items()]
    ours = [r.metrics for r in runs if r.dataset == dataset]
    n = f"{len(ours)} {'category' if len(ours) == 1 else 'categories'}"
    if ours:
        rows.append({"method": f"dynad (this reproduction, {n})",
                     **{m: 100 * float(np.mean([o[m] for o in ours])) for m in METRICS}})  # fmt: skip
    if ours and all("baselines" in o for o in ours):  # the peers, computed in the same runs
        rows.append({"method": f"kNN distance alone (this reproduction, {n})",
                     "image_auroc": 100 * float(np.mean([o["knn_baseline_image_auroc"] for o in ours]))})  # fmt: skip
    if ours and all(_patch_knn(o) for o in ours):
        rows.append({"method": f"patch kNN (this reproduction, {n})",
                     **{m: 100 * float(np.mean([_patch_knn(o)[m] for o in ours])) for m in METRICS}})  # fmt: skip
    return pd.DataFrame(rows, columns=["method", *METRICS])


def _patch_knn(metrics: dict[str, Any]) -> dict[str, Any]:
    """The patch-kNN peer's entry of a run's metrics.json ({} when the run has none)."""
    return (metrics.get("baselines") or {}).get("patch_knn") or {}


def table1_visa(runs: list[Run], targets: dict[str, Any]) -> pd.DataFrame:
    """Table 1: VisA per category (I-AUROC, PRO; P-AUROC where we have it) beside the paper's D3AD column."""
    return main_table(runs, "visa", targets)


def table2_visa_comparison(runs: list[Run], targets: dict[str, Any]) -> pd.DataFrame:
    """Table 2: the VisA means of the paper's methods and of this reproduction."""
    return comparison_table(runs, "visa", targets)


def table3_btad(runs: list[Run], targets: dict[str, Any]) -> pd.DataFrame:
    """Table 3: BTAD per category beside the paper's D3AD column."""
    return main_table(runs, "btad", targets)


# The paper's own tables by data set; other data sets get main_table / comparison_table under their name.
PAPER_MAIN_TABLES = {"visa": table1_visa, "btad": table3_btad}
PAPER_COMPARISON_TABLES = {"visa": table2_visa_comparison}


def _ablation_table(name: str, order: tuple[str, ...], df: pd.DataFrame, targets: dict[str, Any] | None,
                    by_defect: bool, dataset: str | None) -> pd.DataFrame:  # fmt: skip
    """One ablation table from ablations.csv rows (fractions): means over categories, in percent.

    by_defect: one row per variant and defect type (the synthetic default's four scales). The paper's VisA means
    stand beside ours (paper_*); the difference (diff_*, percentage points) only when `dataset` is VisA.
    """
    targets = load_targets() if targets is None else targets
    abl = targets.get("ablations", {})
    paper_dataset = abl.get("dataset", "visa")
    sub = df[df.variant.isin(order)]
    if not by_defect:
        sub = sub[sub.defect_type == "all"]
    keys = ["variant", "defect_type"] if by_defect else ["variant"]
    if len(sub):
        g = sub.groupby(keys, sort=False)
        mean = g[list(METRICS)].mean() * 100
        mean["n_categories"] = g["category"].nunique() if "category" in sub else 1
        mean = mean.reset_index()
    else:
        mean = pd.DataFrame(columns=[*keys, *METRICS, "n_categories"])
    # Paper rows exist even without runs (by-defect tables: only ours).
    variants = [v for v in order if v in set(mean.variant) or (not by_defect and v in abl.get(name, {}))]
    rows = []
    for v in variants:
        ours = mean[mean.variant == v]
        defects = defect_order(ours.defect_type) if by_defect else [None]
        for d in defects:
            r = ours if d is None else ours[ours.defect_type == d]
            row: dict[str, Any] = {"variant": v}
            if name == "table5":
                row["noiseless_scaling"], row["domain_adaptation"] = TABLE5_FLAGS[v]
            if by_defect:
                row["defect_type"] = d
            for k in METRICS:
                row[k] = float(r[k].iloc[0]) if len(r) else np.nan
            row["n_categories"] = int(r["n_categories"].iloc[0]) if len(r) else 0
            if not by_defect and abl.get(name):  # the paper has no latent-vs-pixel table
                paper = abl.get(name, {}).get(v, {})
                for k in METRICS:
                    row[f"paper_{paper_dataset}_{k}"] = paper.get(k, np.nan)
                    if dataset == paper_dataset:
                        row[f"diff_{k}"] = row[k] - paper.get(k, np.nan)
            rows.append(row)
    return pd.DataFrame(rows)


def table4_fixed_steps(df: pd.DataFrame, targets: dict[str, Any] | None = None, by_defect: bool = False,
                       dataset: str | None = None) -> pd.DataFrame:  # fmt: skip
    """Table 4: fixed steps of 25 / 50 / 75 / 100 % of T_max vs DIC."""
    return _ablation_table("table4", TABLE4_ORDER, df, targets, by_defect, dataset)


def table5_noiseless_and_adaptation(df: pd.DataFrame, targets: dict[str, Any] | None = None, by_defect: bool = False,
                                    dataset: str | None = None) -> pd.DataFrame:  # fmt: skip
    """Table 5: noiseless scaling (DS) and domain adaptation (DA), each on and off."""
    return _ablation_table("table5", TABLE5_ORDER, df, targets, by_defect, dataset)


def latent_vs_pixel_space(df: pd.DataFrame, targets: dict[str, Any] | None = None, by_defect: bool = False,
                          dataset: str | None = None) -> pd.DataFrame:  # fmt: skip
    """The same sampler in the latent space (the method) and on the pixels (not a table of the paper)."""
    return _ablation_table("space", SPACE_ORDER, df, targets, by_defect, dataset)


ABLATION_TABLES = {"table4": table4_fixed_steps, "table5": table5_noiseless_and_adaptation,
                   "space": latent_vs_pixel_space}  # fmt: skip


def ablation_tables(df: pd.DataFrame, targets: dict[str, Any] | None = None, by_defect: bool = False,
                    dataset: str | None = None) -> dict[str, pd.DataFrame]:  # fmt: skip
    """The three ablation tables, keyed table4 / table5 / space (with a _by_defect suffix when by_defect)."""
    targets = load_targets() if targets is None else targets
    suffix = "_by_defect" if by_defect else ""
    return {name + suffix: fn(df, targets, by_defect, dataset) for name, fn in ABLATION_TABLES.items()}


def defect_order(values) -> list[str]:
    """"all" first, then the synthetic scales from small to large, then any other type by name."""
    vals = list(dict.fromkeys(values))
    rank = {d: i for i, d in enumerate(("all", *DEFECT_TYPES))}
    return sorted(vals, key=lambda d: (rank.get(d, len(rank)), d))


def feature_gap_table(gap: dict[str, Any], labels: np.ndarray) -> pd.DataFrame:
    """Mean feature distance (image vs its reconstruction) on normal and anomalous images, before / after DA."""
    labels = np.asarray(labels)
    rows = []
    for name in ("before", "after"):
        per_image = gap[name].flatten(1).mean(1).numpy()  # (N,)
        normal = float(per_image[labels == 0].mean()) if (labels == 0).any() else float("nan")
        anomalous = float(per_image[labels == 1].mean()) if (labels == 1).any() else float("nan")
        rows.append({"extractor": f"{name} adaptation", "mean_distance_normal": normal,
                     "mean_distance_anomalous": anomalous, "anomalous_over_normal": anomalous / normal})  # fmt: skip
    return pd.DataFrame(rows)


def knn_binning(pipe, train: dict[str, Any], test: dict[str, Any]) -> dict[str, Any]:
    """y_bar, bin and T_hat of every test image (no reconstruction needed), in the layout of the run's dic.json."""
    y, b, t = pipe.dic.t_hat(pipe.knn_descriptors(test["images"]))
    return {
        "train_distances": pipe.dic.train_distances.tolist(),
        "test_distances": np.asarray(y).tolist(),
        "test_labels": np.asarray(test["labels"]).tolist(),
        "test_defect_types": test["rows"].defect_type.tolist(),
        "test_bins": np.asarray(b).tolist(),
        "test_t_hat": np.asarray(t).tolist(),
        "edges": pipe.dic.edges.tolist(),
        "table": pipe.dic.table,
        "fixed_t_hat": pipe.cfg.dic.fixed_t_hat,
        "n_train": len(train["rows"]),
    }


def _bins(dic: dict[str, Any], y) -> np.ndarray:
    """The bin of each distance, with the library's own rule (dynad.dic.DynamicConditioning.bin)."""
    d = DynamicConditioning(DICConfig(num_bins=len(dic["edges"]) - 1), 1)
    d.edges = np.asarray(dic["edges"])
    return d.bin(np.asarray(y))


def bin_table(dic: dict[str, Any]) -> pd.DataFrame:
    """One row per bin 0..|B|: its range, its T_hat, and how many training / test images fall in it."""
    edges, table = np.asarray(dic["edges"]), list(dic["table"])
    train_b = _bins(dic, dic["train_distances"])
    test_b = np.asarray(dic.get("test_bins", _bins(dic, dic["test_distances"])))
    labels = np.asarray(dic["test_labels"])
    nb = len(edges) - 1
    rows = []
    for b in range(nb + 1):
        lo = "-inf" if b == 0 else f"{edges[b]:.6g}"
        hi = f"{edges[b + 1]:.6g}" if b < nb else "inf"
        rows.append({"bin": b, "from": lo, "to": hi, "t_hat": table[b], "n_train": int((train_b == b).sum()),
                     "n_test_normal": int(((test_b == b) & (labels == 0)).sum()),
                     "n_test_anomalous": int(((test_b == b) & (labels == 1)).sum())})  # fmt: skip
    return pd.DataFrame(rows)


def t_hat_by_defect(dic: dict[str, Any]) -> pd.DataFrame:
    """Counts of T_hat per defect type ("good" = normal), plus the median kNN distance of each type."""
    t = dic.get("test_t_hat")
    if t is None:
        t = np.asarray(dic["table"])[_bins(dic, dic["test_distances"])]
    df = pd.DataFrame({"defect_type": dic["test_defect_types"], "t_hat": np.asarray(t),
                       "knn_distance": dic["test_distances"]})  # fmt: skip
    counts = pd.crosstab(df.defect_type, df.t_hat).sort_index(axis=1)
    counts.columns = [f"T_hat={c}" for c in counts.columns]
    stats = df.groupby("defect_type").agg(n=("t_hat", "size"), mean_t_hat=("t_hat", "mean"),
                                          median_knn_distance=("knn_distance", "median"))  # fmt: skip
    out = stats.join(counts).reset_index()
    return out.sort_values("mean_t_hat", kind="stable").reset_index(drop=True)


def category_metrics(eval_dir: str | Path) -> pd.DataFrame:
    """One run's metrics: the whole test set ("all") and each defect type against the normal images (fractions)."""
    eval_dir = Path(eval_dir)
    m = json.loads((eval_dir / "metrics.json").read_text())
    rows = [{"defect_type": "all", "n": m.get("n_test"), **{k: m[k] for k in METRICS},
             "knn_baseline_image_auroc": m.get("knn_baseline_image_auroc")}]  # fmt: skip
    per_defect = read_results_csv(eval_dir / "per_defect.csv")
    for _, r in per_defect.iterrows():
        rows.append({"defect_type": r.defect_type, "n": int(r.n), **{k: r[k] for k in METRICS}})
    return pd.DataFrame(rows)


def localization_split(maps: np.ndarray, masks: np.ndarray, labels: np.ndarray, types: np.ndarray) -> pd.DataFrame:
    """`metrics.localization_split` as a table, the defect types in `defect_order` and "all" last (fractions; NaN
    where a type has no defect pixel)."""
    df = pd.DataFrame(mt.localization_split(maps, masks, labels, types))
    order = [*defect_order(df.defect_type[df.defect_type != "all"]), "all"]
    return df.set_index("defect_type").loc[order].reset_index()


LOCALIZATION_COLUMNS = ("defect_type", "images", "share", "pixel_auroc", "background", "within")


def localization_table(eval_dir: str | Path) -> pd.DataFrame:
    """`localization_split` of one run's test maps (eval_dir/maps.npz, per_image.csv); no rows for a test set with
    image labels only (its maps.npz has no gt_mask)."""
    eval_dir = Path(eval_dir)
    rows = pd.read_csv(eval_dir / "per_image.csv", keep_default_na=False)  # a defect type may be called "NA"
    with np.load(eval_dir / "maps.npz") as z:
        if "gt_mask" not in z:
            return pd.DataFrame(columns=list(LOCALIZATION_COLUMNS))
        maps, masks = z["anomaly_map"].astype(np.float32), z["gt_mask"]
    if len(rows) != len(maps):
        raise ValueError(f"{eval_dir}: per_image.csv has {len(rows)} rows but maps.npz {len(maps)} maps")
    return localization_split(maps, masks, rows.label.to_numpy(), rows.defect_type.to_numpy())


def peers_table(eval_dir: str | Path) -> pd.DataFrame:
    """DynAD beside the peers computed in the same run (kNN distance alone, patch kNN): one row each (fractions)."""
    m = json.loads((Path(eval_dir) / "metrics.json").read_text())
    rows = [{"method": "DynAD", **{k: m[k] for k in METRICS}},
            {"method": "kNN distance alone", "image_auroc": m.get("knn_baseline_image_auroc")}]  # fmt: skip
    if _patch_knn(m):
        rows.append({"method": f"patch kNN (bank {_patch_knn(m)['bank']} patches)",
                     **{k: _patch_knn(m)[k] for k in METRICS}})
    return pd.DataFrame(rows, columns=["method", *METRICS])


def dataset_metrics(dataset_dir: str | Path) -> pd.DataFrame:
    """image / pixel AUROC, PRO and the kNN baseline of every complete category run in `runs/<preset>/<dataset>`."""
    rows = []
    for cat in sorted(p for p in Path(dataset_dir).iterdir() if p.is_dir()):
        f = cat / "eval" / "metrics.json"
        if f.is_file():
            m = json.loads(f.read_text())
            rows.append({"category": cat.name, **{k: m[k] for k in (*METRICS, "knn_baseline_image_auroc")},
                         **{f"patch_knn_{k}": _patch_knn(m).get(k, np.nan) for k in METRICS}})  # fmt: skip
    df = pd.DataFrame(rows, columns=["category", *METRICS, "knn_baseline_image_auroc",
                                     *[f"patch_knn_{k}" for k in METRICS]])
    numbers = df.columns.drop("category")
    df[numbers] = df[numbers].astype(float)  # None (image labels only: no pixel metrics) -> NaN, skipped by the mean
    if len(df):
        df = pd.concat([df, pd.DataFrame([{"category": "mean", **df.drop(columns="category").mean().to_dict()}])])
    return df.reset_index(drop=True)
