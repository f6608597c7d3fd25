"""The paper's tables and figures, regenerated from finished runs; and the small helpers the notebooks call.

    paths = regenerate("runs", "results", "demo")     # reads runs/demo/<dataset>/<category>/, writes results/demo/
    compare_tables("results_a/demo", "results_b/demo") -> []   # two reproductions, identical tables

A run folder (`runs/<preset>/<dataset>/<category>`, written by notebooks 01-05) holds:
    eval/                 `dynad.experiment.run_experiment`: metrics.json, per_image.csv, dic.json, maps.npz,
                          pipeline.pt
    ablations/            `dynad.ablations.run_ablations`: ablations.csv and variants/<name>/ (each a run_experiment)
    <notebook>.done.json  the marker each notebook writes last (its parameters and outputs)

`results/<preset>/` gets:
    tables/    main_<dataset> (Tables 1-3: ours beside the paper's D3AD column, difference in percentage points),
               comparison_<dataset> (the paper's other methods), table4/table5/space_<dataset>[_by_defect]
               (the ablations, means over categories, beside the paper's VisA means); each as .csv, .md and .tex.
               All numbers are percentages with two decimals; no timings, so two reproductions compare equal.
    figures/   fig1 (noise as a function of the image), fig2 (segmentation across defect scales), fig4 (anomaly-map
               construction), fig5 (kNN histograms), fig6 (fixed steps vs DIC masks), fig7 (noised vs noiseless
               reconstructions), fig8 (noiseless scaling as a function of the step); PNG and PDF.
    manifest.json, timings.csv   what produced every number: commit, versions, config hash, seed, device, weights,
               wall time per stage per run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
import yaml

from dynad import anomaly_map as am
from dynad import plots, synthetic
from dynad.ablations import variant_dir
from dynad.config import DICConfig, ExperimentConfig, from_dict
from dynad.data import DatasetError, ImageDataset
from dynad.dic import DynamicConditioning
from dynad.experiment import is_complete, pixel_threshold
from dynad.paths import default_synthetic_root, project_path
from dynad.provenance import git_commit, versions, write_json, write_text
from dynad.reconstruction import ddim_timesteps, guided_step
from dynad.synthetic import DEFECT_TYPES

METRICS = ("image_auroc", "pixel_auroc", "pro")
TABLE_SUFFIXES = (".csv", ".md", ".tex")
FLOAT_FORMAT = "%.2f"  # every number in a table: percent, two decimals

# Variant names of dynad.ablations.ablation_variants, in the order of the paper's tables.
FULL = "DIC (full method)"
TABLE4_ORDER = ("fixed 25% T_max", "fixed 50% T_max", "fixed 75% T_max", "fixed 100% T_max", FULL)
TABLE5_ORDER = ("neither (noise, no DA)", "DS only", "DA only", FULL)
SPACE_ORDER = (FULL, "pixel space")
TABLE5_FLAGS = {  # (noiseless scaling, domain adaptation)
    "neither (noise, no DA)": ("no", "no"),
    "DS only": ("yes", "no"),
    "DA only": ("no", "yes"),
    FULL: ("yes", "yes"),
}
ABLATION_TITLES = {
    "table4": "Table 4: fixed steps vs DIC",
    "table5": "Table 5: noiseless scaling (DS) and domain adaptation (DA)",
    "space": "Latent vs pixel space",
}
FIG6_VARIANTS = ("fixed 100% T_max", "fixed 75% T_max", "fixed 50% T_max", "fixed 25% T_max", FULL)


# ------------------------------------------------------------------------------------------------------------------
# Targets, markers and other notebook plumbing.


def load_targets() -> dict[str, Any]:
    """The paper's numbers (dynad/targets.yaml, in percent)."""
    return yaml.safe_load((resources.files("dynad") / "targets.yaml").read_text())


def ensure_data(dataset: str, root: str | Path) -> Path:
    """The data folder, absolute (a relative `root` is relative to the project root, see dynad/paths.py).

    The synthetic set is generated (default SynthConfig) only at its default place, data/synthetic: a mistyped root
    is an error, not a new data set. Other data sets must exist.
    """
    root = project_path(root)
    if dataset == "synthetic" and not root.exists():
        if root != default_synthetic_root():
            raise DatasetError(f"synthetic data folder {root} does not exist (it is generated only at "
                               f"{default_synthetic_root()}; write one elsewhere with `dynad synth --out {root}`)")
        synthetic.ensure(root)
    if not root.is_dir():
        raise DatasetError(f"data folder {root} (dataset {dataset!r}) does not exist")
    return root


def models_dir_for(run_dir: str | Path, models_dir: str | Path | None = "") -> Path:
    """Where trained models live: `models_dir` when given, else `run_dir/models` (shared by notebooks 01-05)."""
    return project_path(models_dir) if models_dir else project_path(run_dir) / "models"


def marker_path(run_dir: str | Path, stem: str) -> Path:
    return Path(run_dir) / f"{stem}.done.json"


def write_marker(run_dir: str | Path, stem: str, parameters: dict[str, Any], outputs: Iterable = (), **extra) -> Path:
    """The last thing a notebook does: record its parameters and outputs in `run_dir/<stem>.done.json` (atomic)."""
    path = marker_path(run_dir, stem)
    write_json(path, {
        "notebook": stem, "parameters": _jsonable(parameters), "outputs": sorted(str(o) for o in outputs),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra,
    })  # fmt: skip
    return path


def read_marker(run_dir: str | Path, stem: str) -> dict[str, Any] | None:
    path = marker_path(run_dir, stem)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def marker_matches(run_dir: str | Path, stem: str, parameters: dict[str, Any], **extra) -> bool:
    """True when the notebook finished with these parameters (and these extra recorded values, e.g. `inputs`)."""
    m = read_marker(run_dir, stem)
    if m is None:
        return False
    recorded = m.get("parameters", {})
    if any(recorded.get(k) != v for k, v in _jsonable(parameters).items()):
        return False
    return all(m.get(k) == v for k, v in extra.items())


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=str))


def fingerprint(paths: Iterable[Path], root: Path) -> str:
    """Hash of (relative path, size, mtime) of files: changes when any input was rewritten."""
    h = hashlib.sha256()
    for p in sorted(set(paths)):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def run_inputs(run_dir: str | Path) -> list[Path]:
    """The files of one run folder that the summary notebooks read."""
    run_dir = Path(run_dir)
    names = ("metrics.json", "per_image.csv", "dic.json", "maps.npz", "pipeline.pt")
    files = [run_dir / "eval" / n for n in names] + [run_dir / "ablations" / "ablations.csv"]
    files += sorted((run_dir / "ablations" / "variants").glob("*/metrics.json"))
    return files


def eval_fingerprint(run_dir: str | Path) -> str:
    """Fingerprint of one run's evaluation files (what notebook 07 reads)."""
    run_dir = Path(run_dir)
    return fingerprint(run_inputs(run_dir)[:5], run_dir)


def inputs_fingerprint(runs_dir: str | Path, preset: str) -> str:
    """Fingerprint of every run's result files under runs_dir/<preset>: 06 reruns only when one changed."""
    root = _runs_root(runs_dir, preset)
    files = [f for run in sorted(root.glob("*/*")) if run.is_dir() for f in run_inputs(run)]
    return fingerprint(files, root) if root.is_dir() else "none"


# ------------------------------------------------------------------------------------------------------------------
# Notebook 01: what the latent diffusion model learned.


def _batches(x, size: int):
    for i in range(0, x.shape[0], size):
        yield x[i : i + size]


def sample_images(pipe, n: int, num_steps: int = 50, seed: int = 0):
    """n unconditional samples (n, 3, S, S): deterministic DDIM (sigma 0, guidance eta 0) from pure noise at T-1.

    With guidance weight 0 the guided step of Algorithm 1 is plain DDIM, so this reuses the method's own sampler.
    """
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        h = pipe.cfg.data.image_size // pipe.codec.downsampling
        z = torch.randn((n, pipe.codec.latent_channels, h, h), generator=gen).to(pipe.device)  # (n, C, h, w)
        zeros = torch.zeros_like(z)  # the condition; unused with eta = 0
        for t, t_prev in ddim_timesteps(pipe.schedule.num_train_timesteps - 1, num_steps):
            z = guided_step(pipe.unet, pipe.schedule, z, zeros, t, t_prev, eta=0.0)
        return pipe.codec.decode(z).float().cpu()


def vae_reconstructions(pipe, images):
    """D(E(x)) for images (N, 3, S, S): what the latent space alone keeps."""
    with torch.no_grad():
        out = [pipe.codec.decode(pipe.codec.encode(b.to(pipe.device))).float().cpu() for b in _batches(images, 16)]
    return torch.cat(out)


def dic_reconstructions(pipe, images, t_hat: int | None = None):
    """Algorithm 1 on images (N, 3, S, S): (reconstructions, T_hat per image)."""
    recs, ts = [], []
    gen = torch.Generator().manual_seed(pipe.cfg.seed)
    for b in _batches(images, pipe.cfg.data.batch_size):
        out = pipe.infer(b, t_hat=t_hat, generator=gen)
        recs.append(out["reconstruction"])
        ts.append(out["t_hat"])
    return torch.cat(recs), np.concatenate(ts)


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
    """RGB tensors (3, S, S) in [-1, 1] as images; 2-D arrays as maps (gray for masks)."""
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


# ------------------------------------------------------------------------------------------------------------------
# Notebook 02: the domain gap of the feature extractor before and after adaptation.


def feature_gap(pipe, before, images) -> dict[str, Any]:
    """Feature maps between images and their DIC reconstructions with the un-adapted (`before`) and adapted extractor.

    Returns reconstruction (N, 3, S, S), t_hat (N,), before / after (N, S, S): the raw Eq. 9 feature maps.
    """
    before = before.to(pipe.device).eval()
    layers, size = pipe.cfg.features.map_layers, pipe.cfg.data.image_size
    recs, t_hat = dic_reconstructions(pipe, images)
    maps: dict[str, list] = {"before": [], "after": []}
    with torch.no_grad():
        for x, x_hat in zip(_batches(images, 16), _batches(recs, 16)):
            x, x_hat = x.to(pipe.device), x_hat.to(pipe.device)
            for name, ext in (("before", before), ("after", pipe.extractor)):
                maps[name].append(am.feature_map(ext(x), ext(x_hat), layers, size).float().cpu())
    return {"reconstruction": recs, "t_hat": t_hat, **{k: torch.cat(v) for k, v in maps.items()}}


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


# ------------------------------------------------------------------------------------------------------------------
# Notebook 03: kNN binning (Algorithm 2, Figure 5).


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


# ------------------------------------------------------------------------------------------------------------------
# Notebook 04: per-category metrics.


def category_metrics(eval_dir: str | Path) -> pd.DataFrame:
    """One run's metrics: the whole test set ("all") and each defect type against the normal images (fractions)."""
    eval_dir = Path(eval_dir)
    m = json.loads((eval_dir / "metrics.json").read_text())
    rows = [{"defect_type": "all", "n": m.get("n_test"), **{k: m[k] for k in METRICS},
             "knn_baseline_image_auroc": m.get("knn_baseline_image_auroc")}]  # fmt: skip
    per_defect = pd.read_csv(eval_dir / "per_defect.csv")
    for _, r in per_defect.iterrows():
        rows.append({"defect_type": r.defect_type, "n": int(r.n), **{k: r[k] for k in METRICS}})
    return pd.DataFrame(rows)


def dataset_metrics(dataset_dir: str | Path) -> pd.DataFrame:
    """image / pixel AUROC, PRO and the kNN baseline of every complete category run in `runs/<preset>/<dataset>`."""
    rows = []
    for cat in sorted(p for p in Path(dataset_dir).iterdir() if p.is_dir()):
        f = cat / "eval" / "metrics.json"
        if f.is_file():
            m = json.loads(f.read_text())
            rows.append({"category": cat.name, **{k: m[k] for k in (*METRICS, "knn_baseline_image_auroc")}})
    df = pd.DataFrame(rows, columns=["category", *METRICS, "knn_baseline_image_auroc"])
    if len(df):
        df = pd.concat([df, pd.DataFrame([{"category": "mean", **df.drop(columns="category").mean().to_dict()}])])
    return df.reset_index(drop=True)


# ------------------------------------------------------------------------------------------------------------------
# Notebook 05: ablations.


def ablation_tables(df: pd.DataFrame, targets: dict[str, Any] | None = None, by_defect: bool = False,
                    dataset: str | None = None) -> dict[str, pd.DataFrame]:  # fmt: skip
    """Tables 4, 5 and latent vs pixel space from ablations.csv rows (fractions): means over categories, in percent.

    by_defect: one row per variant and defect type (the synthetic default's four scales). The paper's VisA means
    stand beside ours (paper_*); the difference (diff_*, percentage points) only when `dataset` is VisA.
    """
    targets = load_targets() if targets is None else targets
    abl = targets.get("ablations", {})
    paper_dataset = abl.get("dataset", "visa")
    out = {}
    for name, order in (("table4", TABLE4_ORDER), ("table5", TABLE5_ORDER), ("space", SPACE_ORDER)):
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
            defects = _defect_order(ours.defect_type) if by_defect else [None]
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
        out[name + ("_by_defect" if by_defect else "")] = pd.DataFrame(rows)
    return out


def _defect_order(values) -> list[str]:
    vals = list(dict.fromkeys(values))
    rank = {d: i for i, d in enumerate(("all", *DEFECT_TYPES))}
    return sorted(vals, key=lambda d: (rank.get(d, len(rank)), d))


def ablation_plot(df: pd.DataFrame, path: str | Path, metric: str = "image_auroc") -> Path:
    """`metric` per defect type (x) and variant (bars), mean over the categories in df."""
    sub = df.groupby(["variant", "defect_type"], sort=False)[metric].mean().reset_index()
    variants = list(dict.fromkeys(df.variant))
    defects = _defect_order(sub.defect_type)
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


# ------------------------------------------------------------------------------------------------------------------
# Writing tables: CSV, Markdown and LaTeX with one fixed number format.


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        s = FLOAT_FORMAT % float(v)
        return "0.00" if s == "-0.00" else s
    return str(v)


def _numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def to_markdown(df: pd.DataFrame, title: str = "", note: str = "") -> str:
    """A GitHub Markdown table (no tabulate needed)."""
    cols = [str(c) for c in df.columns]
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = [f"### {title}", ""] if title else []
    lines.append("| " + " | ".join(esc(c) for c in cols) + " |")
    lines.append("|" + "|".join("---:" if _numeric(df[c]) else "---" for c in df.columns) + "|")
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(esc(_fmt(v)) for v in row) + " |")
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def to_latex(df: pd.DataFrame, caption: str = "") -> str:
    """A booktabs tabular (no jinja2 needed)."""
    def esc(s: str) -> str:
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                     ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\~{}"), ("^", r"\^{}")):  # fmt: skip
            s = s.replace(a, b) if a != "\\" else s.replace(a, "\x00")
        return s.replace("\x00", r"\textbackslash{}")

    align = "".join("r" if _numeric(df[c]) else "l" for c in df.columns)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(r"\caption{" + esc(caption) + "}")
    lines += [r"\begin{tabular}{" + align + "}", r"\toprule", " & ".join(esc(str(c)) for c in df.columns) + r" \\",
              r"\midrule"]  # fmt: skip
    for row in df.itertuples(index=False):
        lines.append(" & ".join(esc(_fmt(v)) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, folder: str | Path, name: str, title: str = "", note: str = "") -> list[Path]:
    """`folder/name.{csv,md,tex}`, every float as FLOAT_FORMAT; returns the paths."""
    folder = Path(folder)
    csv = df.copy()
    for c in csv.columns:
        if _numeric(csv[c]):
            csv[c] = pd.Series([_fmt(v) for v in csv[c]], index=csv.index, dtype=object)
    paths = [folder / f"{name}{s}" for s in TABLE_SUFFIXES]
    write_text(paths[0], csv.to_csv(index=False, lineterminator="\n"))
    write_text(paths[1], to_markdown(df, title, note))
    write_text(paths[2], to_latex(df, title))
    return paths


# ------------------------------------------------------------------------------------------------------------------
# Finding runs.


def _runs_root(runs_dir: str | Path, preset: str) -> Path:
    """runs_dir/<preset> when it exists, else runs_dir itself (already a preset folder)."""
    runs_dir = Path(runs_dir)
    return runs_dir / preset if (runs_dir / preset).is_dir() else runs_dir


@dataclasses.dataclass
class Run:
    dataset: str
    category: str
    folder: Path
    metrics: dict[str, Any]

    @property
    def eval(self) -> Path:
        return self.folder / "eval"

    @property
    def ablations(self) -> Path:
        return self.folder / "ablations" / "ablations.csv"


def find_runs(runs_root: str | Path) -> list[Run]:
    """Every complete evaluation under runs_root/<dataset>/<category>/eval, sorted."""
    runs = []
    root = Path(runs_root)
    if not root.is_dir():
        return runs
    for ds in sorted(p for p in root.iterdir() if p.is_dir()):
        for cat in sorted(p for p in ds.iterdir() if p.is_dir()):
            if is_complete(cat / "eval"):
                runs.append(Run(ds.name, cat.name, cat, json.loads((cat / "eval" / "metrics.json").read_text())))
    return runs


# ------------------------------------------------------------------------------------------------------------------
# Tables 1-3: ours beside the paper.


def main_table(runs: list[Run], dataset: str, targets: dict[str, Any]) -> pd.DataFrame:
    """Categories of `dataset` (ours and the paper's), our metrics and the kNN baseline, the paper's D3AD column and
    the difference (percentage points), and the mean row (ours over the categories we ran)."""
    ours = {r.category: r.metrics for r in runs if r.dataset == dataset}
    paper = targets.get("main", {}).get(dataset)
    paper_cats = [c for c in (paper or {}) if c != "mean"]
    cats = paper_cats + sorted(c for c in ours if c not in paper_cats)
    rows = []
    for cat in cats:
        m = ours.get(cat, {})
        row: dict[str, Any] = {"category": cat}
        for k in (*METRICS, "knn_baseline_image_auroc"):
            row[k] = 100 * m[k] if k in m and m[k] is not None else np.nan
        rows.append(row)
    df = pd.DataFrame(rows, columns=["category", *METRICS, "knn_baseline_image_auroc"])
    mean = {"category": "mean", **{k: df[k].mean() if df[k].notna().any() else np.nan for k in df.columns[1:]}}
    df = pd.concat([df, pd.DataFrame([mean])], ignore_index=True)
    df.insert(1, "ours", [int(c in ours) for c in cats] + [len(ours)])  # 1 = we ran it; mean row: how many
    if paper is not None:
        for k in METRICS:
            df[f"paper_{k}"] = [paper.get(c, {}).get(k, np.nan) for c in df.category]
            df[f"diff_{k}"] = df[k] - df[f"paper_{k}"]
    return df.rename(columns={"knn_baseline_image_auroc": "knn_image_auroc"})


def comparison_table(runs: list[Run], dataset: str, targets: dict[str, Any]) -> pd.DataFrame:
    """The paper's comparison methods (means) and our mean over the categories we ran."""
    rows = [{"method": k, **{m: v.get(m, np.nan) for m in METRICS}} for k, v in targets["comparison"][dataset].items()]
    ours = [r.metrics for r in runs if r.dataset == dataset]
    if ours:
        rows.append({"method": f"dynad (this reproduction, {len(ours)} categories)",
                     **{m: 100 * float(np.mean([o[m] for o in ours])) for m in METRICS}})  # fmt: skip
    return pd.DataFrame(rows, columns=["method", *METRICS])


# ------------------------------------------------------------------------------------------------------------------
# Figures.


def _load_images(paths: Sequence[str], size: int):
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


def _examples(per_image: pd.DataFrame, n: int = 8) -> list[int]:
    rows = per_image.rename(columns={"path": "image_path"})
    return plots.pick_examples(rows, per_image.score.to_numpy(), n)


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


def fig5_histograms(runs: list[Run], dataset: str, path: Path) -> Path:
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


def fig2_segmentation(run: Run, path: Path) -> Path:
    """Figure 2: input, ground truth, anomaly map, thresholded mask; one image per defect type (largest score)."""
    a = _eval_arrays(run.eval)
    idx = _examples(a["per_image"])
    size = a["anomaly_map"].shape[-1]
    images = _load_images(a["per_image"].path.iloc[idx].tolist(), size)
    thr = pixel_threshold(a["gt_mask"], a["anomaly_map"])
    vmax = float(a["anomaly_map"].max())
    cells = [[images[k], a["gt_mask"][i], a["anomaly_map"][i] / vmax, a["anomaly_map"][i] >= thr]
             for k, i in enumerate(idx)]  # fmt: skip
    titles = [f"{a['per_image'].defect_type.iloc[i]} (T_hat {a['per_image'].t_hat.iloc[i]})" for i in idx]
    return _grid_figure(cells, ["input", "ground truth", "anomaly map", "predicted mask"], titles, path)


def fig4_construction(run: Run, pipe, path: Path) -> Path:
    """Figure 4: input, reconstruction, feature map, latent map, combined map (maps normalised over the test set)."""
    a = _eval_arrays(run.eval)
    idx = _examples(a["per_image"])
    size = a["anomaly_map"].shape[-1]
    images = _load_images(a["per_image"].path.iloc[idx].tolist(), size)
    recs, _ = dic_reconstructions(pipe, images)
    lat, feat = _norm01(a["latent_map"]), _norm01(a["feature_map"])
    vmax = float(a["anomaly_map"].max())
    cells = [[images[k], recs[k], feat[i], lat[i], a["anomaly_map"][i] / vmax] for k, i in enumerate(idx)]
    titles = [f"{a['per_image'].defect_type.iloc[i]} (T_hat {a['per_image'].t_hat.iloc[i]})" for i in idx]
    return _grid_figure(cells, ["input", "reconstruction", "feature map", "latent map", "anomaly map"], titles, path)


def fig6_fixed_steps(run: Run, path: Path) -> Path | None:
    """Figure 6: predicted masks at fixed T_hat of 100/75/50/25 % of T_max vs DIC vs ground truth (ablation runs)."""
    vroot = run.folder / "ablations" / "variants"
    have = [v for v in FIG6_VARIANTS if (vroot / variant_dir(v) / "maps.npz").is_file()]
    if FULL not in have:
        return None
    full = _eval_arrays(vroot / variant_dir(FULL))
    idx = _examples(full["per_image"])
    size = full["anomaly_map"].shape[-1]
    images = _load_images(full["per_image"].path.iloc[idx].tolist(), size)
    masks = {}
    for v in have:
        arr = full if v == FULL else _eval_arrays(vroot / variant_dir(v))
        if arr["per_image"].path.tolist() != full["per_image"].path.tolist():
            raise ValueError(f"{vroot / variant_dir(v)}: test images differ from the full method's")
        thr = pixel_threshold(arr["gt_mask"], arr["anomaly_map"])
        masks[v] = arr["anomaly_map"][idx] >= thr
    cells = [[images[k], full["gt_mask"][i], *[masks[v][k] for v in have]] for k, i in enumerate(idx)]
    titles = [str(full["per_image"].defect_type.iloc[i]) for i in idx]
    cols = ["input", "ground truth", *[v.replace(" T_max", "").replace(" (full method)", "") for v in have]]
    return _grid_figure(cells, cols, titles, path)


def fig1_noise_vs_image(run: Run, pipe, path: Path) -> Path:
    """Figure 1: the noise added depends on the image. For the test images with the smallest and the largest T_hat:
    the input, the start of the sampler decoded (noiseless scaled start sqrt(abar) z0, and for comparison the usual
    noised start), and the reconstruction."""
    a = _eval_arrays(run.eval)
    pi = a["per_image"]
    anomalous = pi[pi.label == 1] if (pi.label == 1).any() else pi
    picks = [int(anomalous.t_hat.idxmin()), int(anomalous.t_hat.idxmax())]
    images = _load_images(pi.path.iloc[picks].tolist(), a["anomaly_map"].shape[-1])
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


def fig7_noised_vs_noiseless(run: Run, pipe, path: Path) -> Path:
    """Noiseless (paper) vs noised start at the same T_hat; with the two ablation variants' anomaly maps if present."""
    a = _eval_arrays(run.eval)
    idx = _examples(a["per_image"])
    images = _load_images(a["per_image"].path.iloc[idx].tolist(), a["anomaly_map"].shape[-1])
    t = a["per_image"].t_hat.to_numpy()[idx]
    rec_clean, rec_noise = [], []
    for k in range(len(idx)):
        rec_clean.append(dic_reconstructions(pipe, images[k : k + 1], t_hat=int(t[k]))[0][0])
        rec_noise.append(dic_reconstructions(pipe.with_overrides({"reconstruction.start": "noise"}), images[k : k + 1], t_hat=int(t[k]))[0][0])
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


def fig8_scaling_vs_step(run: Run, pipe, path: Path, n_images: int = 4, n_steps: int = 6) -> tuple[Path, pd.DataFrame]:
    """Mean latent reconstruction error |z0_hat - z0| vs the step T, noiseless vs noised start, normal vs anomalous."""
    a = _eval_arrays(run.eval)
    pi = a["per_image"]
    normal = pi.index[pi.label == 0][:n_images].tolist()
    anomalous = pi.index[pi.label == 1][:n_images].tolist()
    images = _load_images(pi.path.iloc[normal + anomalous].tolist(), a["anomaly_map"].shape[-1])
    labels = np.array([0] * len(normal) + [1] * len(anomalous))
    step, t_max = pipe.cfg.reconstruction.num_steps, pipe.cfg.dic.t_max
    ts = sorted({int(round(v / step)) * step for v in np.linspace(step, t_max, n_steps)})
    rows = []
    for start in ("noiseless", "noise"):
        p = pipe.with_overrides({"reconstruction.start": start})
        for t in ts:
            out = p.infer(images, t_hat=t, generator=__import__("torch").Generator().manual_seed(pipe.cfg.seed))
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
    ("fig1_noise_vs_image", fig1_noise_vs_image),
    ("fig4_anomaly_map_construction", fig4_construction),
    ("fig7_noised_vs_noiseless", fig7_noised_vs_noiseless),
)


# ------------------------------------------------------------------------------------------------------------------
# regenerate and compare.


def regenerate(
    runs_dir: str | Path, results_dir: str | Path, preset: str, pipeline_figures: int = 1
) -> dict[str, Path]:
    """Write the tables, figures and manifest of every run under runs_dir/<preset> into results_dir/<preset>.

    Missing pieces are tolerated: a data set without runs still gets its table of the paper's numbers; a run
    without ablations gets no Table 4/5 rows; figures that need a fitted pipeline are drawn for the first
    `pipeline_figures` categories of each data set that have eval/pipeline.pt. Returns {name: path} of what was written.
    """
    runs_root = _runs_root(runs_dir, preset)
    out = Path(results_dir) / preset
    tables, figures = out / "tables", out / "figures"
    targets = load_targets()
    runs = find_runs(runs_root)
    written: dict[str, Path] = {}
    skipped: list[str] = []

    # ---- tables
    datasets = sorted({r.dataset for r in runs} | {d for d, v in targets["main"].items() if v})
    for d in datasets:
        t = main_table(runs, d, targets)
        note = "Percent. `ours`: 1 where this reproduction ran the category (mean row: how many of them)."
        if d in targets["main"]:
            note += (" paper: the D3AD column of the paper; diff = ours - paper in percentage points"
                     " (our mean is over the categories we ran).")
        for p in write_table(t, tables, f"main_{d}", f"{d}: dynad vs the paper (D3AD)", note):
            written[f"tables/{p.name}"] = p
        if d in targets.get("comparison", {}):
            for p in write_table(comparison_table(runs, d, targets), tables, f"comparison_{d}", f"{d}: method means"):
                written[f"tables/{p.name}"] = p
    abl = []
    for r in runs:
        if r.ablations.is_file():
            df = pd.read_csv(r.ablations, keep_default_na=False)
            df.insert(0, "dataset", r.dataset)
            abl.append(df)
    columns = ["dataset", "category", "variant", "table", "defect_type", *METRICS]
    abl_df = pd.concat(abl, ignore_index=True) if abl else pd.DataFrame(columns=columns)
    paper_ds = targets.get("ablations", {}).get("dataset", "visa")
    for d in sorted(set(abl_df.dataset) | {paper_ds}):
        sub = abl_df[abl_df.dataset == d]
        for by_defect in (False, True):
            if by_defect and not len(sub):
                continue
            for name, t in ablation_tables(sub, targets, by_defect, dataset=d).items():
                if not len(t):
                    continue
                base = name.removesuffix("_by_defect")
                fname = f"{base}_{d}_by_defect" if by_defect else f"{base}_{d}"
                title = f"{ABLATION_TITLES[base]} ({d}{', by defect type' if by_defect else ''})"
                note = "Percent, means over categories; paper_visa_*: the paper's VisA means."
                for p in write_table(t, tables, fname, title, note):
                    written[f"tables/{p.name}"] = p
    # Stale tables from an earlier call (a run since deleted) would break comparisons: remove them.
    if tables.is_dir():
        for f in tables.iterdir():
            if f.suffix in TABLE_SUFFIXES and f"tables/{f.name}" not in written:
                f.unlink()

    # ---- figures
    by_dataset: dict[str, list[Run]] = {}
    for r in runs:
        by_dataset.setdefault(r.dataset, []).append(r)
    extra_tables = []
    for d, rs in by_dataset.items():
        p = fig5_histograms(runs, d, figures / f"fig5_knn_histograms_{d}.png")
        written[f"figures/{p.name}"] = p
        with_pipe = 0
        for r in rs:
            tag = f"{d}_{r.category}"
            for name, fn in (("fig2_segmentation", fig2_segmentation), ("fig6_fixed_steps", fig6_fixed_steps)):
                try:
                    p = fn(r, figures / f"{name}_{tag}.png")
                    if p is not None:
                        written[f"figures/{p.name}"] = p
                except (FileNotFoundError, OSError, KeyError, ValueError) as e:
                    skipped.append(f"{name}_{tag}: {type(e).__name__}: {e}")
            if with_pipe >= pipeline_figures or not (r.eval / "pipeline.pt").is_file():
                continue
            with_pipe += 1
            try:
                from dynad.pipeline import DynAD

                pipe = DynAD.load(r.eval / "pipeline.pt")
                for name, fn in PIPELINE_FIGURES:
                    p = fn(r, pipe, figures / f"{name}_{tag}.png")
                    written[f"figures/{p.name}"] = p
                p, curve = fig8_scaling_vs_step(r, pipe, figures / f"fig8_scaling_vs_step_{tag}.png")
                written[f"figures/{p.name}"] = p
                curve.insert(0, "category", r.category)
                curve.insert(0, "dataset", d)
                extra_tables.append(curve)
            except (FileNotFoundError, OSError, KeyError, ValueError, RuntimeError) as e:
                skipped.append(f"pipeline figures {tag}: {type(e).__name__}: {e}")
    if extra_tables:
        # Figure data, not a paper table: lives beside the figures so that tables/ stays comparable across machines.
        p = figures / "fig8_scaling_vs_step.csv"
        write_text(p, pd.concat(extra_tables).to_csv(index=False, float_format="%.6g", lineterminator="\n"))
        written["figures/fig8_scaling_vs_step.csv"] = p

    # ---- manifest and timings
    manifest_runs, timing_rows = [], []
    for r in runs:
        manifest_runs.append(_run_manifest(r, "eval", r.metrics))
        timing_rows += _timing_rows(r, "eval", r.metrics)
        for mf in sorted((r.folder / "ablations" / "variants").glob("*/metrics.json")):
            m = json.loads(mf.read_text())
            manifest_runs.append(_run_manifest(r, f"ablations/{mf.parent.name}", m))
            timing_rows += _timing_rows(r, f"ablations/{mf.parent.name}", m)
    timings = pd.DataFrame(timing_rows, columns=["dataset", "category", "run", "stage", "seconds"])
    write_text(out / "timings.csv", timings.to_csv(index=False, float_format="%.3f", lineterminator="\n"))
    written["timings.csv"] = out / "timings.csv"
    manifest = {
        "preset": preset,
        "runs_dir": str(runs_root.resolve()),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "versions": versions(),
        "runs": manifest_runs,
        "skipped": skipped,
        "files": sorted(k for k in written),
    }
    write_json(out / "manifest.json", manifest)
    written["manifest.json"] = out / "manifest.json"
    return written


def _config_hash(config: dict[str, Any]) -> str:
    try:
        return from_dict(ExperimentConfig, config).hash()
    except Exception:  # an older config layout: hash the JSON itself
        return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def _run_manifest(r: Run, name: str, m: dict[str, Any]) -> dict[str, Any]:
    prov = m.get("provenance", {})
    return {
        "dataset": r.dataset, "category": r.category, "run": name, "folder": str(r.folder.resolve()),
        "config_hash": _config_hash(prov.get("config", {})), "seed": prov.get("seed"), "device": prov.get("device"),
        "git_commit": prov.get("git_commit"), "versions": prov.get("versions"), "weights": prov.get("weights"),
        "created": prov.get("created"), "choices": m.get("choices"), "seconds": m.get("seconds"),
        "n_train": m.get("n_train"), "n_test": m.get("n_test"),
    }  # fmt: skip


def _timing_rows(r: Run, name: str, m: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"dataset": r.dataset, "category": r.category, "run": name, "stage": k, "seconds": v}
            for k, v in sorted((m.get("seconds") or {}).items())]  # fmt: skip


def compare_tables(dir_a: str | Path, dir_b: str | Path) -> list[str]:
    """Differences between the tables of two results folders (results/<preset> or its tables/): [] when identical."""
    def tables_of(d: Path) -> tuple[Path, dict[str, Path]]:
        d = Path(d)
        d = d / "tables" if (d / "tables").is_dir() else d
        return d, {str(p.relative_to(d)): p for p in sorted(d.rglob("*")) if p.suffix in TABLE_SUFFIXES}

    da, a = tables_of(Path(dir_a))
    db, b = tables_of(Path(dir_b))
    diffs = []
    if not a and not b:
        return [f"no tables in {da} nor in {db}"]
    for name in sorted(set(a) - set(b)):
        diffs.append(f"{name}: only in {da}")
    for name in sorted(set(b) - set(a)):
        diffs.append(f"{name}: only in {db}")
    for name in sorted(set(a) & set(b)):
        la, lb = a[name].read_text().splitlines(), b[name].read_text().splitlines()
        if la == lb:
            continue
        if len(la) != len(lb):
            diffs.append(f"{name}: {len(la)} lines vs {len(lb)} lines")
        for i, (x, y) in enumerate(zip(la, lb)):
            if x != y:
                diffs.append(f"{name}:{i + 1}: {x!r} != {y!r}")
    return diffs
