"""The ablations of Tables 4 and 5, and latent vs pixel space: options of the one pipeline, never copies.

Each ablation is a set of config overrides; every variant runs through `run_experiment` with a shared
`models_dir`, so a variant trains only what it changes (the pixel-space denoiser, the noise-start adaptation).
Variants that differ only at inference time (a fixed step; the noised start when nothing is adapted) share one
fitted pipeline through `DynAD.with_overrides`: 8 variants need 4 fits. `ablations.variants = "short"` runs only
the variants that train nothing new. The results are split by defect type where the data set gives it (the
synthetic default's four scales).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from dynad.config import ConfigError, ExperimentConfig, apply_overrides
from dynad.experiment import fit_pipeline, is_complete, read_results_csv, run_experiment, run_identity
from dynad.provenance import atomic_write

METRICS = ("image_auroc", "pixel_auroc", "pro")
TRAINS_SOMETHING_NEW = ("DA only", "pixel space")  # left out by ablations.variants = "short"


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


def fit_key(cfg: ExperimentConfig) -> str:
    """What a fitted pipeline depends on: the config without the settings that act only at inference time.

    The start of the sampler counts only when nothing is adapted: domain adaptation trains on reconstructions
    from that start.
    """
    inference_only = {"dic.fixed_t_hat": None}
    if cfg.adaptation.epochs == 0:
        inference_only["reconstruction.start"] = "noiseless"
    return apply_overrides(cfg, inference_only).to_json()


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
    if cfg.ablations.variants not in ("all", "short"):
        raise ConfigError(f"ablations.variants must be 'all' or 'short', got {cfg.ablations.variants!r}")
    rows = []
    shared: tuple[str, tuple] | None = None  # (fit key, (pipe, train, test)) of the last fit, for the next variants
    for name, (table, overrides) in ablation_variants(cfg.for_category(category)).items():
        if only is not None and name not in only:
            continue
        if cfg.ablations.variants == "short" and name in TRAINS_SOMETHING_NEW:
            continue
        run_dir = out / "variants" / variant_dir(name)
        # The per-category table is applied first, then the variant's overrides, which must win.
        vcfg = apply_overrides(cfg.for_category(category), {**overrides, "use_per_category": False})
        if not is_complete(run_dir, run_identity(vcfg, dataset, category)):  # another config's: refused by its claim
            key = fit_key(vcfg)
            if shared is None or shared[0] != key:
                shared = (key, fit_pipeline(vcfg, dataset, root, category, models_dir, progress))
            pipe, train, test = shared[1]
            if pipe.cfg != vcfg:
                pipe = pipe.with_overrides({"dic.fixed_t_hat": vcfg.dic.fixed_t_hat,
                                            "reconstruction.start": vcfg.reconstruction.start})  # fmt: skip
                if vcfg.anomaly_map.normalization == "train":  # the statistics of this variant's own maps
                    pipe.fit_train_normalization(train["images"])
            run_experiment(vcfg, dataset, root, category, run_dir, models_dir=models_dir, progress=progress,
                           save_pipeline=False, figures=False, baselines=False, fitted=(pipe, train, test))  # fmt: skip
        metrics = pd.read_json(run_dir / "metrics.json", typ="series")
        rows.append({"variant": name, "table": table, "defect_type": "all", **{m: metrics[m] for m in METRICS}})
        per_defect = read_results_csv(run_dir / "per_defect.csv")
        for _, r in per_defect.iterrows():
            rows.append({"variant": name, "table": table, "defect_type": r.defect_type, **{m: r[m] for m in METRICS}})
    df = pd.DataFrame(rows)
    df.insert(0, "category", category)
    with atomic_write(out / "ablations.csv", "w") as f:
        df.to_csv(f, index=False)
    return df
