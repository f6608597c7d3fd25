"""The ablations of Tables 4 and 5, and latent vs pixel space: options of the one pipeline, never copies.

Each ablation is a set of config overrides; every variant runs through `run_experiment` with a shared
`models_dir`, so a variant trains only what it changes (the pixel-space denoiser, the un-adapted extractor).
The results are split by defect type where the data set gives it (the synthetic default's four scales).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dynad.config import ExperimentConfig, apply_overrides
from dynad.experiment import is_complete, run_experiment
from dynad.provenance import atomic_write

METRICS = ("image_auroc", "pixel_auroc", "pro")


def variant_dir(name: str) -> str:
    """The folder name of a variant under `<out>/variants/`."""
    return name.replace(" ", "_").replace("%", "pct").replace("(", "").replace(")", "").replace(",", "")


def ablation_variants(cfg: ExperimentConfig) -> dict[str, tuple[str, dict]]:
    """name -> (table, overrides). Table 4: fixed steps vs DIC; Table 5: noiseless scaling (DS) x adaptation (DA)."""
    t_max = cfg.dic.t_max
    da_on = max(cfg.adaptation.epochs, 1)
    variants: dict[str, tuple[str, dict]] = {"DIC (full method)": ("all", {})}
    for pct in (25, 50, 75, 100):
        variants[f"fixed {pct}% T_max"] = ("table4", {"dic.fixed_t_hat": round(t_max * pct / 100)})
    variants["neither (noise, no DA)"] = ("table5", {"reconstruction.start": "noise", "adaptation.epochs": 0})
    variants["DS only"] = ("table5", {"adaptation.epochs": 0})
    variants["DA only"] = ("table5", {"reconstruction.start": "noise", "adaptation.epochs": da_on})
    variants["pixel space"] = ("space", {"reconstruction.space": "pixel", **cfg.pixel_space_overrides})
    return variants


def run_ablations(
    cfg: ExperimentConfig,
    dataset: str,
    root: str | Path,
    category: str,
    out: str | Path,
    models_dir: str | Path,
    progress: bool = True,
    only: list[str] | None = None,
) -> pd.DataFrame:
    """Run every variant (skipping complete ones) and write `out/ablations.csv`: one row per variant and defect type."""
    out = Path(out)
    rows = []
    for name, (table, overrides) in ablation_variants(cfg.for_category(category)).items():
        if only is not None and name not in only:
            continue
        run_dir = out / "variants" / variant_dir(name)
        # The per-category table is applied first, then the variant's overrides, which must win.
        vcfg = apply_overrides(cfg.for_category(category), {**overrides, "use_per_category": False})
        if not is_complete(run_dir):
            run_experiment(vcfg, dataset, root, category, run_dir, models_dir=models_dir, progress=progress,
                           save_pipeline=False, figures=False, baselines=False)  # fmt: skip
        metrics = pd.read_json(run_dir / "metrics.json", typ="series")
        rows.append({"variant": name, "table": table, "defect_type": "all", **{m: metrics[m] for m in METRICS}})
        per_defect = pd.read_csv(run_dir / "per_defect.csv")
        for _, r in per_defect.iterrows():
            rows.append({"variant": name, "table": table, "defect_type": r.defect_type, **{m: r[m] for m in METRICS}})
    df = pd.DataFrame(rows)
    df.insert(0, "category", category)
    with atomic_write(out / "ablations.csv", "w") as f:
        df.to_csv(f, index=False)
    return df
