"""`dynad tune`: choose settings on the validation pseudo-defects, never on a test set.

    for training setting in grid:                            any other config key, e.g. denoiser.epochs=60,120
        pipe, train, _ = fit_pipeline(cfg + setting, ...)    trains (or reuses) that setting's models; timed
        for T_max, eta in grid:                              reconstruct the validation images at each pair
            for lam, sigma, gamma in grid:                   re-combine the same raw maps (no new inference)
                objective = mean(validation image AUROC, validation pixel AUROC)
    -> tune.csv (every row), tuned.yaml (the preset with the best row's settings; its header says how it was chosen);
       an earlier tuning's two files in the same folder are kept as tune.previous.csv and tuned.previous.yaml

With a time budget, a training setting whose fit took longer is scored and listed but not chosen; one whose
training diverged (its loss NaN: a learning rate too high) is listed, not scored, and the tune goes on. Models reused
from --models count only their loading time, so a budget judges training time in a fresh models folder (the
default, OUT/models). Each setting's rows are kept in OUT/scored/ with its fit time, so the same command after an
interruption scores only the settings it had not.

T_max and eta are chosen together: from the noiseless start the first guided step scales the predicted noise by
1 - eta (1 - abar_t) (METHOD.md section 8), so which eta repairs depends on T_max. Maps are normalised with
training statistics, as a new image is scored.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from tqdm.auto import tqdm

from dynad import run_folder, validation
from dynad.checks import check_buildable, check_config
from dynad.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    kernel_size,
    load_preset,
    load_yaml,
    parse_value,
    preset_path,
)
from dynad.experiment import fit_pipeline
from dynad.pipeline import DynAD
from dynad.provenance import atomic_write
from dynad.training import DivergedError

DEFAULT_GRID: dict[str, list[Any]] = {
    "dic.t_max": [40, 80, 160, 320],
    "reconstruction.eta": [0.0, 1.0, 2.0, 4.0],
    "anomaly_map.lam": [0.0, 0.25, 0.5, 0.85, 1.0],
    "anomaly_map.sigma": [1.0, 2.0, 4.0],
    "anomaly_map.score_exponent": [0.0],
}
_INFERENCE_KEYS = ("dic.t_max", "reconstruction.eta")  # need new reconstructions
_MAP_KEYS = ("anomaly_map.lam", "anomaly_map.sigma", "anomaly_map.score_exponent")  # re-combine the same raw maps
_SCORE_COLUMNS = ("image_auroc", "pixel_auroc", "objective", "fit_seconds", "within_budget", "diverged")


class TuneError(ValueError):
    """A tune that cannot choose: a grid it cannot search, no validation set, no setting within the budget."""


def training_columns(table: pd.DataFrame) -> list[str]:
    """The training settings' columns of a tune.csv table: every column that is neither a grid key nor a score."""
    return [c for c in table.columns if c not in _INFERENCE_KEYS + _MAP_KEYS + _SCORE_COLUMNS]


def eligible(table: pd.DataFrame) -> pd.DataFrame:
    """The rows a tune may choose from, best first: trained within the budget, and scored (not diverged)."""
    rows = table[table.within_budget & table.objective.notna()]
    return rows.sort_values("objective", ascending=False, kind="stable")


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """`--grid KEY=V1,V2` arguments -> {KEY: [V1, V2]}, each value read as YAML (10 an int, 0.5 a float, [64,128]
    a list: commas inside brackets do not split)."""
    grid = {}
    for item in items:
        key, eq, values = item.partition("=")
        if not (key and eq and values):
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,... (e.g. dic.t_max=10,40)")
        grid[key] = [parse_value(v, f"--grid {item!r}") for v in re.split(r",(?![^\[]*\])", values)]
    return grid


def map_overrides(lam: float, sigma: float, score_exponent: float = 0.0) -> dict[str, Any]:
    """The anomaly map's lambda, sigma (kernel +-4 sigma) and score exponent as config overrides."""
    return {"anomaly_map.lam": lam, "anomaly_map.sigma": sigma, "anomaly_map.kernel_size": kernel_size(sigma),
            "anomaly_map.score_exponent": score_exponent}  # fmt: skip


def with_map_settings(pipe: DynAD, lam: float, sigma: float, score_exponent: float = 0.0) -> DynAD:
    """`pipe` with `map_overrides`: re-combines raw maps, no new inference."""
    return pipe.with_overrides(map_overrides(lam, sigma, score_exponent))


def tune(
    cfg: ExperimentConfig,
    dataset: str,
    root: str | Path,
    category: str,
    out: str | Path,
    models_dir: str | Path | None = None,
    grid: dict[str, list[Any]] | None = None,
    budget_minutes: float | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit each training setting, score every grid point on the validation set, write tune.csv and tuned.yaml;
    returns the best row among the settings that trained within `budget_minutes` (all when None)."""
    if budget_minutes is not None and not budget_minutes > 0:  # also NaN, which no fit time would exceed
        raise TuneError(f"the time budget must be a positive number of minutes, got {budget_minutes}")
    grid = {**DEFAULT_GRID, **(grid or {})}
    training_keys = [k for k in grid if k not in _INFERENCE_KEYS + _MAP_KEYS]
    if any(k.startswith("validation.") for k in training_keys):
        raise TuneError("dynad tune cannot search validation.*: those settings make the set that judges the grid")
    settings = [dict(zip(training_keys, values)) for values in itertools.product(*(grid[k] for k in training_keys))]
    # A wrong key or type fails before training; a setting wins over the preset's per-category table.
    configs = [apply_overrides(cfg, setting, for_every_category=True) for setting in settings]
    _check_grid(configs, grid)
    if cfg.validation.fraction <= 0:
        raise TuneError("dynad tune needs validation.fraction > 0: it chooses settings on held-out pseudo-defects")
    out = Path(out)
    run_folder.prepare_folder(out, 0, "output folder")
    rows, n_val = [], 0
    for i, (setting, setting_cfg) in enumerate(zip(settings, configs)):
        if training_keys and progress:
            print(f"training setting {i + 1} of {len(settings)}: {setting}")
        t0 = time.perf_counter()
        cells = {k: _cell(v) for k, v in setting.items()}
        try:
            pipe, train, _ = fit_pipeline(setting_cfg, dataset, root, category, models_dir or out / "models",
                                          progress, load_test=False)  # the test split is never opened
        except DivergedError as e:  # a learning rate too high is a setting a tune can be asked to try
            if not training_keys:
                raise
            print(f"WARNING ({dataset}/{category}): training setting {i + 1} of {len(settings)} "
                  f"({', '.join(f'{k} {v}' for k, v in setting.items())}) diverged and is not scored ({e})",
                  file=sys.stderr)  # fmt: skip
            rows.append({**cells, "objective": float("nan"), "setting": i,
                         "fit_seconds": round(time.perf_counter() - t0, 1), "within_budget": False, "diverged": True})
            continue
        seconds, scored = _scored(pipe, train, grid, out, time.perf_counter() - t0, progress)
        within = budget_minutes is None or seconds <= 60 * budget_minutes
        n_val = len(train["validation"].labels) // 2
        for row in scored:
            rows.append({**cells, **row, "setting": i, "fit_seconds": seconds, "within_budget": within,
                         "diverged": False})  # fmt: skip
    if n_val and n_val < validation.FEW_HELD_OUT:
        print(f"WARNING ({dataset}/{category}): the choice rests on {n_val} held-out training images, so near-ties "
              f"decide it; more training images or a larger validation.fraction (now {cfg.validation.fraction:g}) "
              f"make it firmer", file=sys.stderr)  # fmt: skip
    table = pd.DataFrame(rows).sort_values("objective", ascending=False, kind="stable").reset_index(drop=True)
    _keep_previous(out)
    with atomic_write(out / "tune.csv", "w") as f:
        table.drop(columns="setting").to_csv(f, index=False)
    n_diverged = int(table.diverged.sum())  # one row per diverged setting
    if n_diverged == len(settings):
        raise TuneError(f"every training setting diverged ({n_diverged} of {len(settings)}); every row is in "
                        f"{out / 'tune.csv'}")  # fmt: skip
    choices = eligible(table)
    if choices.empty:
        fastest = table[~table.diverged].fit_seconds.min()
        raise TuneError(f"no training setting trained within {budget_minutes} min (the fastest took "
                        f"{fastest / 60:.1f} min); every row is in {out / 'tune.csv'}")  # fmt: skip
    best = choices.iloc[0].to_dict()
    chosen = {**settings[best.pop("setting")], **{k: best[k] for k in _INFERENCE_KEYS + _MAP_KEYS}}
    chosen["anomaly_map.kernel_size"] = kernel_size(best["anomaly_map.sigma"])
    write_tuned_preset(cfg, chosen, best, out / "tuned.yaml", dataset, category, n_val, best["fit_seconds"],
                       len(settings), budget_minutes, n_diverged)  # fmt: skip
    return best


TUNE_FILES = {"tune.csv": "tune.previous.csv", "tuned.yaml": "tuned.previous.yaml"}  # file -> where it is kept


def _keep_previous(out: Path) -> None:
    """An earlier tuning's files in `out` become tune.previous.csv and tuned.previous.yaml (one level: the tuning
    before that is replaced), so that tuning again with another grid does not erase the last choice unseen."""
    earlier = [name for name in TUNE_FILES if (out / name).is_file()]
    if not earlier:
        return
    for name, kept_as in TUNE_FILES.items():  # both from the same tuning: an older one's leftover goes
        if name in earlier:
            os.replace(out / name, out / kept_as)
        else:
            (out / kept_as).unlink(missing_ok=True)
    kept = " and ".join(TUNE_FILES[name] for name in earlier)
    print(f"the earlier tuning's {' and '.join(earlier)} in {out} are kept as {kept}", file=sys.stderr)


def _check_grid(configs: list[ExperimentConfig], grid: dict[str, list[Any]]) -> None:
    """Every grid point's settings in range (ConfigError), before any training rather than when it is scored."""
    for setting_cfg in configs:
        check_buildable(setting_cfg)
        for inference in itertools.product(*(grid[k] for k in _INFERENCE_KEYS)):
            for map_values in itertools.product(*(grid[k] for k in _MAP_KEYS)):
                point = {**dict(zip(_INFERENCE_KEYS, inference)), **map_overrides(*map_values)}  # as scored below
                check_config(apply_overrides(setting_cfg, point))


def _cell(value: Any) -> Any:
    """A training setting's value as a tune.csv cell (a list becomes its YAML text, e.g. [64, 128, 256])."""
    return yaml.safe_dump(value, default_flow_style=True).strip() if isinstance(value, (list, tuple, dict)) else value


def _scored(pipe: DynAD, train: dict[str, Any], grid: dict[str, list[Any]], out: Path, seconds: float,
            progress: bool) -> tuple[float, list[dict[str, Any]]]:
    """(fit seconds, rows) of one fitted setting: scored anew, or read from OUT/scored/ where an earlier tune, such as
    one interrupted, scored the same settings on the same training files with the same grid (with its fit time: a
    resumed setting's models only load)."""
    key = json.dumps({"config": pipe.cfg.result_hash(), "train": pipe.provenance["data"]["train_fingerprint"],
                      "grid": {k: grid[k] for k in _INFERENCE_KEYS + _MAP_KEYS}}, sort_keys=True)  # fmt: skip
    path = out / "scored" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        kept = json.loads(path.read_text())
        return kept["fit_seconds"], kept["rows"]
    rows = list(_score_inference_grid(pipe, train, grid, progress))
    path.parent.mkdir(exist_ok=True)
    with atomic_write(path, "w") as f:
        json.dump({"fit_seconds": round(seconds, 1), "rows": rows}, f, default=float)  # numpy scalars as numbers
    return round(seconds, 1), rows


def _score_inference_grid(pipe: DynAD, train: dict[str, Any], grid: dict[str, list[Any]], progress: bool):
    """One fitted pipeline at every (T_max, eta, lambda, sigma) of the grid: a row per point."""
    val = train["validation"]
    outer = list(itertools.product(*(grid[k] for k in _INFERENCE_KEYS)))
    for values in tqdm(outer, desc="tune (T_max, eta)", disable=not progress):
        variant = pipe.with_overrides(dict(zip(_INFERENCE_KEYS, values)))
        variant.fit_train_normalization(train["images"])
        res = variant.infer_all(val.images, progress=False)
        for map_values in itertools.product(*(grid[k] for k in _MAP_KEYS)):
            v = with_map_settings(variant, *map_values)
            maps = v.anomaly_maps(res["latent_map"], res["feature_map"], variant.train_normalization)
            m, _ = validation.evaluate_maps(val, res["latent_map"], res["feature_map"], maps)
            yield {**dict(zip(_INFERENCE_KEYS, values)), **dict(zip(_MAP_KEYS, map_values)),
                   "image_auroc": m["image_auroc"], "pixel_auroc": m["pixel_auroc"],
                   "objective": (m["image_auroc"] + m["pixel_auroc"]) / 2}  # fmt: skip


def write_tuned_preset(
    cfg: ExperimentConfig,
    chosen: dict[str, Any],
    best: dict[str, Any],
    path: Path,
    dataset: str,
    category: str,
    n_val: int,
    fit_s: float,
    n_settings: int = 1,
    budget_minutes: float | None = None,
    n_diverged: int = 0,
) -> None:
    """The preset that `cfg` came from, with the chosen settings written in; its header says how they were chosen.
    The chosen keys leave the tuned category's entry of the per-category table, which would replace them."""
    try:
        base = load_yaml(preset_path(cfg.preset).read_text()) or {}
        preset_cfg = load_preset(cfg.preset).to_dict()
    except ConfigError:  # a custom or file preset: start from the full config
        base, preset_cfg = {}, {}
    # What the run overrode (--set) stays in the tuned preset: its trained models are the ones tuned.
    for section, fields in cfg.to_dict().items():
        if isinstance(fields, dict) and isinstance(preset_cfg.get(section), dict):
            for field, value in fields.items():
                if value != preset_cfg[section].get(field):
                    base.setdefault(section, {})[field] = list(value) if isinstance(value, tuple) else value
        elif fields != preset_cfg.get(section) and section != "preset":
            base[section] = fields
    for key, value in chosen.items():
        *sections, field = key.split(".")
        node = base
        for section in sections:
            node = node.setdefault(section, {})
        v = value.item() if hasattr(value, "item") else value  # a numpy scalar from the table
        if key in _INFERENCE_KEYS + _MAP_KEYS + ("anomaly_map.kernel_size",):
            v = int(v) if field in ("t_max", "kernel_size") else float(v)
        node[field] = list(v) if isinstance(v, tuple) else v
        (base.get("per_category") or {}).get(category, {}).pop(key, None)
    trained = f"Training took {fit_s:.0f} s."
    if n_settings > 1:
        budget = f" (a budget of {budget_minutes:g} min each)" if budget_minutes is not None else ""
        diverged = f", {n_diverged} of them diverged" if n_diverged else ""
        trained = f"{n_settings} training settings were fitted{budget}{diverged}; the chosen one took {fit_s:.0f} s."
    header = (
        f"# Chosen by `dynad tune` on {dataset}/{category}: validation pseudo-defects on {n_val} held-out training "
        f"images\n# (no test label read). Best of the grid in tune.csv: validation image AUROC "
        f"{best['image_auroc']:.4f}, pixel AUROC {best['pixel_auroc']:.4f}.\n# Tuned: {', '.join(chosen)}.\n"
        f"# {trained}\n"
    )
    with atomic_write(path, "w") as f:
        f.write(header + yaml.safe_dump(base, sort_keys=False))
