"""`regenerate`: every table, figure and the manifest of results/<preset>/ from the runs under runs/<preset>/.

`results/<preset>/` gets:
    tables/    main_<dataset> (Tables 1 and 3: ours beside the paper's D3AD column, difference in percentage
               points), comparison_<dataset> (Table 2: the paper's other methods), table4/table5/space_<dataset>
               [_by_defect] (the ablations, means over categories, beside the paper's VisA means); each as .csv, .md
               and .tex. All numbers are percentages with two decimals; no timings, so two reproductions compare equal.
    figures/   fig1 to fig8 (dynad/report/figures.py; fig3 is the method's diagram); PNG and PDF.
    manifest.json, timings.csv   what produced every number: commit, versions, config hash, seed, device, weights,
               wall time per stage per run.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from dynad.config import ExperimentConfig, from_dict
from dynad.experiment import read_results_csv
from dynad.provenance import git_commit, versions, write_json, write_text
from dynad.report.figures import (
    PIPELINE_FIGURES, figure2_segmentation, figure3_architecture, figure5_knn_histograms, figure6_fixed_steps,
    figure8_scaling_vs_step,
)
from dynad.report.format import TABLE_SUFFIXES, write_table
from dynad.report.runs import Run, find_runs, preset_runs_folder
from dynad.report.tables import (
    PAPER_COMPARISON_TABLES, PAPER_MAIN_TABLES, ablation_tables, comparison_table, main_table,
)
from dynad.report.targets import ABLATION_TITLES, METRICS, load_targets


def regenerate(
    runs_dir: str | Path, results_dir: str | Path, preset: str, pipeline_figures: int = 1
) -> dict[str, Path]:
    """Write the tables, figures and manifest of every run under runs_dir/<preset> into results_dir/<preset>.

    Missing pieces are tolerated: a data set without runs still gets its table of the paper's numbers; a run
    without ablations gets no Table 4/5 rows; figures that need a fitted pipeline are drawn for the first
    `pipeline_figures` categories of each data set that have eval/pipeline.pt. Returns {name: path} of what was written.
    """
    runs_root = preset_runs_folder(runs_dir, preset)
    out = Path(results_dir) / preset
    tables, fig_dir = out / "tables", out / "figures"
    targets = load_targets()
    runs = find_runs(runs_root)
    if not runs:  # a mistyped runs_dir would otherwise pass for a reproduction with nothing of ours in it
        warnings.warn(f"no complete run under {runs_root} (<dataset>/<category>/eval/run_manifest.json): the tables "
                      f"hold the paper's numbers only", stacklevel=2)  # fmt: skip
    written: dict[str, Path] = {}
    skipped: list[str] = []

    # ---- tables
    datasets = sorted({r.dataset for r in runs} | {d for d, v in targets["main"].items() if v})
    for d in datasets:
        t = PAPER_MAIN_TABLES[d](runs, targets) if d in PAPER_MAIN_TABLES else main_table(runs, d, targets)
        note = "Percent. `ours`: 1 where this reproduction ran the category (mean row: how many of them)."
        if d in targets["main"]:
            note += (" paper: the D3AD column of the paper; diff = ours - paper in percentage points (our mean is"
                     " over the categories we ran; when they are not the paper's, the mean row's diff is the mean of"
                     " the categories' diffs).")
        if labels_only := sorted(r.category for r in runs if r.dataset == d and r.metrics.get("image_labels_only")):
            note += (f" {', '.join(labels_only)}: image labels only (no ground_truth/), so no pixel AUROC or PRO; the"
                     f" mean row's pixel columns are over the other categories.")
        title = f"{d}: dynad vs the paper (D3AD)" if d in targets["main"] else f"{d}: dynad and its peers"
        for p in write_table(t, tables, f"main_{d}", title, note):
            written[f"tables/{p.name}"] = p
        if d in targets.get("comparison", {}):
            c = (PAPER_COMPARISON_TABLES[d](runs, targets) if d in PAPER_COMPARISON_TABLES
                 else comparison_table(runs, d, targets))
            for p in write_table(c, tables, f"comparison_{d}", f"{d}: method means"):
                written[f"tables/{p.name}"] = p
    abl = []
    for r in runs:
        if r.ablations.is_file():
            df = read_results_csv(r.ablations)
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
    p = figure3_architecture(fig_dir / "fig3_architecture.png")  # a diagram of the method: the same for every run
    written[f"figures/{p.name}"] = p
    by_dataset: dict[str, list[Run]] = {}
    for r in runs:
        by_dataset.setdefault(r.dataset, []).append(r)
    extra_tables = []
    for d, rs in by_dataset.items():
        p = figure5_knn_histograms(runs, d, fig_dir / f"fig5_knn_histograms_{d}.png")
        written[f"figures/{p.name}"] = p
        with_pipe = 0
        for r in rs:
            tag = f"{d}_{r.category}"
            for name, fn in (("fig2_segmentation", figure2_segmentation), ("fig6_fixed_steps", figure6_fixed_steps)):
                try:
                    p = fn(r, fig_dir / f"{name}_{tag}.png")
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
                    p = fn(r, pipe, fig_dir / f"{name}_{tag}.png")
                    written[f"figures/{p.name}"] = p
                p, curve = figure8_scaling_vs_step(r, pipe, fig_dir / f"fig8_scaling_vs_step_{tag}.png")
                written[f"figures/{p.name}"] = p
                curve.insert(0, "category", r.category)
                curve.insert(0, "dataset", d)
                extra_tables.append(curve)
            except (FileNotFoundError, OSError, KeyError, ValueError, RuntimeError) as e:
                skipped.append(f"pipeline figures {tag}: {type(e).__name__}: {e}")
    if extra_tables:
        # Figure data, not a paper table: lives beside the figures so that tables/ stays comparable across machines.
        p = fig_dir / "fig8_scaling_vs_step.csv"
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
