"""The notebooks: committed clean (no outputs, one `parameters` cell), and each one run with papermill on the tiny
preset in sequence (00 -> 07, as `dynad reproduce` does), checking the files each writes for the next one. They run
with the kernel in notebooks/, as JupyterLab and `jupyter nbconvert --execute` start it, and must write nothing there.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dynad import validation
from dynad.config import load_preset
from dynad.synthetic import DEFECT_TYPES

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
STEMS = (
    "00_quickstart",
    "01_train_latent_diffusion",
    "02_domain_adaptation",
    "03_knn_binning",
    "04_evaluate",
    "05_ablations",
    "06_paper_tables_and_figures",
    "07_step_size_explorer",
    "08_tune_on_validation",
)
# A training axis (the tiny preset's 20 denoiser epochs against 4) beside two T_max and two sigma.
TUNE_GRID = {"dic.t_max": [20, 60], "reconstruction.eta": [0.0], "anomaly_map.lam": [1.0],
             "anomaly_map.sigma": [1.0, 2.0], "denoiser.epochs": [4, 20]}  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} missing"
    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as im:
        im.verify()
        assert im.size[0] > 50 and im.size[1] > 50


def tree(folder: Path) -> dict[str, int]:
    """{relative path: mtime_ns} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def assert_fractions(values) -> None:
    values = np.asarray(values, dtype=float)
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all(), values


# ------------------------------------------------------------------------------------------------------------------
# The committed notebooks.


@pytest.mark.parametrize("stem", STEMS)
def test_committed_notebook_is_clean_with_one_parameters_cell(stem: str) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), "outputs must be cleared"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    # Typed defaults, one per line: `name: type = value`.
    lines = [ln for ln in tagged[0].source.splitlines() if ln.strip() and not ln.startswith("#")]
    assert all(": " in ln.split("=")[0] for ln in lines), lines


def test_every_notebook_is_tested() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(STEMS)


# ------------------------------------------------------------------------------------------------------------------
# Running them.


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory, shared_data, one_thread) -> dict:
    import papermill

    root, models = shared_data
    base = tmp_path_factory.mktemp("notebooks")
    runs, results = base / "runs", base / "results"
    run_dir = runs / "tiny" / "synthetic" / "board"
    params = {"preset": "tiny", "dataset": "synthetic", "root": str(root), "category": "board",
              "run_dir": str(run_dir), "quick": False, "overrides": [], "models_dir": str(models),
              "threads": 1}  # fmt: skip
    per_notebook = {stem: params for stem in STEMS[:6]}
    per_notebook[STEMS[6]] = {"runs_dir": str(runs), "results_dir": str(results), "preset": "tiny"}
    per_notebook[STEMS[7]] = {"run_dir": str(run_dir), "interactive": False}
    per_notebook[STEMS[8]] = {**{k: params[k] for k in ("dataset", "root", "category", "run_dir", "models_dir")},
                              "preset": "tiny", "threads": 1, "grid": TUNE_GRID}  # fmt: skip
    (base / "executed").mkdir()
    before = tree(NOTEBOOKS)
    for stem, p in per_notebook.items():
        papermill.execute_notebook(
            str(NOTEBOOKS / f"{stem}.ipynb"), str(base / "executed" / f"{stem}.ipynb"), parameters=p,
            kernel_name="python3", progress_bar=False, cwd=str(NOTEBOOKS),  # papermill --cwd notebooks
        )  # fmt: skip
    return {"run_dir": run_dir, "results": results / "tiny", "executed": base / "executed", "params": params,
            "per_notebook": per_notebook, "notebooks_before": before, "notebooks_after": tree(NOTEBOOKS)}  # fmt: skip


@pytest.mark.slow
@pytest.mark.notebooks
def test_kernel_in_notebooks_folder_writes_nothing_there(executed: dict) -> None:
    assert executed["notebooks_after"] == executed["notebooks_before"]


@pytest.mark.slow
@pytest.mark.notebooks
def test_each_notebook_wrote_its_marker_with_its_parameters(executed: dict) -> None:
    run_dir = executed["run_dir"]
    for stem in STEMS:
        folder = executed["results"] if stem == STEMS[6] else run_dir
        marker = json.loads((folder / f"{stem}.done.json").read_text())
        assert marker["notebook"] == stem
        # 06 lists its outputs relative to its results folder (committed there), the others absolute.
        assert marker["outputs"] and all((folder / p).exists() for p in marker["outputs"]), stem
        # Each records the parameters it was given (beside its defaults for the others).
        given = executed["per_notebook"][stem]
        assert {k: marker["parameters"].get(k) for k in given} == given, stem
    assert json.loads((run_dir / "01_train_latent_diffusion.done.json").read_text())["parameters"] == executed["params"]
    for stem in STEMS:
        nb = nbformat.read(executed["executed"] / f"{stem}.ipynb", as_version=4)
        assert all(c.execution_count for c in nb.cells if c.cell_type == "code" and c.source.strip())


@pytest.mark.slow
@pytest.mark.notebooks
def test_00_quickstart_and_04_evaluate(executed: dict) -> None:
    ev = executed["run_dir"] / "eval"
    m = json.loads((ev / "metrics.json").read_text())
    assert_fractions([m[k] for k in ("image_auroc", "pixel_auroc", "pro", "knn_baseline_image_auroc")])
    for name in ("qualitative", "knn_histogram", "training_curves", "validation"):
        assert_png(ev / "figures" / f"{name}.png")
    table = pd.read_csv(executed["run_dir"] / "evaluate" / "metrics_table.csv")
    assert table.defect_type.tolist() == ["all", *sorted(DEFECT_TYPES)]
    assert_fractions(table[["image_auroc", "pixel_auroc", "pro"]])
    overview = pd.read_csv(executed["run_dir"] / "evaluate" / "dataset_metrics.csv")
    assert overview.category.tolist() == ["board", "mean"]
    split = pd.read_csv(executed["run_dir"] / "evaluate" / "localization.csv").set_index("defect_type")
    assert sorted(split.index) == sorted([*DEFECT_TYPES, "all"]) and split.share.drop("all").sum() == pytest.approx(1)
    assert split.loc["all", "pixel_auroc"] == pytest.approx(m["pixel_auroc"], abs=2e-3)  # maps.npz holds float16
    assert_png(executed["run_dir"] / "evaluate" / "localization.png")


@pytest.mark.slow
@pytest.mark.notebooks
def test_04_reads_a_dynad_run_folder_and_refuses_an_evaluation_of_other_settings(executed: dict, tmp_path: Path):
    """04 given a `dynad run --out` folder evaluated it again into run_dir/eval; given other overrides, it showed the
    complete eval/ of the old settings as if it were theirs (and `dynad reproduce --set` tabulated it)."""
    import shutil

    import papermill

    def run_04(params: dict) -> None:
        papermill.execute_notebook(str(NOTEBOOKS / "04_evaluate.ipynb"), str(tmp_path / "04.ipynb"), parameters=params,
                                   kernel_name="python3", progress_bar=False, cwd=str(NOTEBOOKS))  # fmt: skip

    flat = Path(shutil.copytree(executed["run_dir"] / "eval", tmp_path / "flat"))  # the layout `dynad run` writes
    run_04({**executed["params"], "run_dir": str(flat)})
    assert not (flat / "eval").exists() and (flat / "evaluate" / "metrics_table.csv").is_file()
    copy = Path(shutil.copytree(executed["run_dir"], tmp_path / "nb"))
    with pytest.raises(Exception, match=r"holds the results of another run \(dic.t_max: 100 -> 50\)"):
        run_04({**executed["params"], "run_dir": str(copy), "overrides": ["dic.t_max=50"]})
    assert json.loads((copy / "eval" / "metrics.json").read_text())["provenance"]["config"]["dic"]["t_max"] == 100


@pytest.mark.slow
@pytest.mark.notebooks
def test_01_training(executed: dict) -> None:
    out = executed["run_dir"] / "train"
    assert_png(out / "training_curves.png")
    assert_png(out / "reconstructions.png")
    losses = pd.read_csv(out / "losses.csv")
    assert (losses.component == "denoiser").sum() == 20  # tiny preset: denoiser.epochs = 20
    assert np.isfinite(losses.loss).all()
    summary = json.loads((out / "summary.json").read_text())
    assert "denoiser" in summary["weights"] and summary["denoiser_parameters"] > 0


@pytest.mark.slow
@pytest.mark.notebooks
def test_02_domain_adaptation(executed: dict) -> None:
    out = executed["run_dir"] / "domain_adaptation"
    table = pd.read_csv(out / "feature_distance.csv")
    assert table.extractor.tolist() == ["before adaptation", "after adaptation"]
    assert np.isfinite(table.mean_distance_normal).all() and (table.mean_distance_normal >= 0).all()
    assert_png(out / "feature_distance_maps.png")
    assert_png(out / "adaptation_loss.png")  # tiny preset: adaptation.epochs = 1


@pytest.mark.slow
@pytest.mark.notebooks
def test_03_knn_binning(executed: dict, synth_config) -> None:
    out = executed["run_dir"] / "knn"
    dic = json.loads((out / "dic.json").read_text())
    bins = pd.read_csv(out / "bin_table.csv")
    assert bins.bin.tolist() == list(range(11))  # |B| = 10 bins plus "above the range"
    assert bins.t_hat.tolist() == dic["table"]
    # every training image but those held out for validation (validation.fraction 0.1 of 24: 2)
    held_out = validation.holdout(synth_config.n_train, load_preset("tiny").validation.fraction, 0)[1]
    assert bins.n_train.sum() == len(dic["train_distances"]) == synth_config.n_train - len(held_out) == 22
    n_test = synth_config.n_test_good + len(DEFECT_TYPES) * synth_config.n_test_per_defect
    assert bins.n_test_normal.sum() + bins.n_test_anomalous.sum() == n_test
    by_defect = pd.read_csv(out / "t_hat_by_defect.csv")
    assert sorted(by_defect.defect_type) == sorted(["good", *DEFECT_TYPES]) and by_defect.n.sum() == n_test
    assert_png(out / "knn_histogram.png")
    assert_png(out / "t_hat_by_defect.png")


@pytest.mark.slow
@pytest.mark.notebooks
def test_05_ablations(executed: dict) -> None:
    out = executed["run_dir"] / "ablations"
    df = pd.read_csv(out / "ablations.csv")
    assert df.variant.nunique() == 9  # DIC, 4 fixed steps, 3 of Table 5, pixel space
    assert len(df) == 9 * (1 + len(DEFECT_TYPES))
    assert_fractions(df[["image_auroc", "pixel_auroc", "pro"]])
    assert pd.read_csv(out / "table4.csv").variant.tolist()[-1] == "DIC (full method)"
    assert len(pd.read_csv(out / "table4.csv")) == 5 and len(pd.read_csv(out / "table5.csv")) == 4
    assert pd.read_csv(out / "space.csv").variant.tolist() == ["DIC (full method)", "pixel space"]
    assert len(pd.read_csv(out / "table4_by_defect.csv")) == 5 * (1 + len(DEFECT_TYPES))
    assert_png(out / "ablations_by_defect.png")
    for v in ("fixed_25pct_T_max", "DIC_full_method", "pixel_space"):
        assert (out / "variants" / v / "maps.npz").is_file()


@pytest.mark.slow
@pytest.mark.notebooks
def test_06_tables_and_figures(executed: dict) -> None:
    res = executed["results"]
    main = pd.read_csv(res / "tables" / "main_synthetic.csv")
    assert main.category.tolist() == ["board", "mean"]
    assert ((main.image_auroc >= 0) & (main.image_auroc <= 100)).all()
    visa = pd.read_csv(res / "tables" / "main_visa.csv")  # no VisA run: the paper's numbers alone
    assert len(visa) == 13 and visa.image_auroc.isna().all()
    assert visa.set_index("category").loc["mean", "paper_image_auroc"] == 96.0
    t4 = pd.read_csv(res / "tables" / "table4_synthetic.csv")
    assert t4.variant.tolist() == ["fixed 25% T_max", "fixed 50% T_max", "fixed 75% T_max", "fixed 100% T_max",
                                   "DIC (full method)"]  # fmt: skip
    assert t4.paper_visa_image_auroc.tolist() == [95.2, 94.7, 95.0, 95.4, 96.0]
    for name in ("main_synthetic", "table5_synthetic", "space_synthetic_by_defect"):
        for suffix in (".csv", ".md", ".tex"):
            assert (res / "tables" / f"{name}{suffix}").is_file()
    figures = ["fig5_knn_histograms_synthetic"] + [f"{f}_synthetic_board" for f in (
        "fig2_segmentation", "fig6_fixed_steps", "fig1_noise_vs_image", "fig4_anomaly_map_construction",
        "fig7_noised_vs_noiseless", "fig8_scaling_vs_step")]  # fmt: skip
    for name in figures:
        assert_png(res / "figures" / f"{name}.png")
        assert (res / "figures" / f"{name}.pdf").read_bytes()[:4] == b"%PDF"
    manifest = json.loads((res / "manifest.json").read_text())
    assert manifest["skipped"] == []
    assert {r["run"] for r in manifest["runs"]} >= {"eval", "ablations/DIC_full_method"}
    assert all(r["config_hash"] and r["seed"] == 0 for r in manifest["runs"])
    timings = pd.read_csv(res / "timings.csv")
    assert "inference" in set(timings.stage)


@pytest.mark.slow
@pytest.mark.notebooks
def test_08_tune_writes_every_grid_point_and_a_runnable_preset(executed: dict) -> None:
    out = executed["run_dir"] / "tune"
    table = pd.read_csv(out / "tune.csv")
    assert len(table) == 8 and sorted(set(table["denoiser.epochs"])) == [4, 20]
    assert table.objective.is_monotonic_decreasing and table.within_budget.all()
    cfg = load_preset(out / "tuned.yaml")
    best = table.iloc[0]
    assert (cfg.denoiser.epochs, cfg.dic.t_max, cfg.anomaly_map.sigma) == (
        best["denoiser.epochs"], best["dic.t_max"], best["anomaly_map.sigma"])
    assert_png(out / "tune_grid.png")


@pytest.mark.slow
@pytest.mark.notebooks
def test_07_static_explorer_grid(executed: dict) -> None:
    assert_png(executed["run_dir"] / "explorer" / "step_size_grid.png")


@pytest.mark.slow
@pytest.mark.notebooks
def test_07_sweep_and_its_prose_come_from_the_computed_numbers(executed: dict) -> None:
    run_dir = executed["run_dir"]
    sweep = pd.read_csv(run_dir / "explorer" / "fixed_step_sweep.csv")
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert sweep.t_hat.tolist()[-1] == "DIC" and len(sweep) >= 3
    assert sweep.image_auroc.iloc[-1] == metrics["image_auroc"]
    assert_fractions(sweep[["image_auroc", "pixel_auroc"]])
    nb = nbformat.read(executed["executed"] / "07_step_size_explorer.ipynb", as_version=4)
    shown = "".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells for o in c.get("outputs", []))
    fixed = sweep[sweep.t_hat != "DIC"]
    assert " / ".join(f"{100 * v:.1f}" for v in fixed.image_auroc) in shown  # the sweep's own numbers
    assert f"DIC gives {100 * metrics['image_auroc']:.1f}" in shown
    assert "DIC chose T_hat" in shown  # the grid's per-image lines


def _with_parameters(stem: str, values: dict) -> nbformat.NotebookNode:
    """The committed notebook with its parameters cell set to `values` (as a user edits it in JupyterLab)."""
    nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = cell.source + "\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items())
    return nb


@pytest.mark.slow
@pytest.mark.notebooks
def test_nbconvert_execute_with_the_kernel_in_notebooks(executed: dict, shared_data, tmp_path: Path) -> None:
    """`jupyter nbconvert --execute` starts the kernel in the notebook's folder: 00 and 07 run there, nothing lands
    in notebooks/. 07 keeps its default (interactive) mode."""
    from nbconvert.preprocessors import ExecutePreprocessor

    root, models = shared_data
    before = tree(NOTEBOOKS)
    run_dir = tmp_path / "run"
    values = {"preset": "tiny", "root": str(root), "run_dir": str(run_dir), "models_dir": str(models), "quick": True}
    for stem, p in (("00_quickstart", values), ("07_step_size_explorer", {"run_dir": str(run_dir)})):
        nb = _with_parameters(stem, p)
        ExecutePreprocessor(timeout=600, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(NOTEBOOKS)}})
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
        assert not errors, errors
    assert (run_dir / "eval" / "metrics.json").is_file() and (run_dir / "07_step_size_explorer.done.json").is_file()
    widgets = [o for c in nb.cells for o in c.get("outputs", []) if "application/vnd.jupyter.widget-view+json"
               in o.get("data", {})]  # fmt: skip
    assert widgets, "07's default mode shows the explorer widget"
    assert tree(NOTEBOOKS) == before



@pytest.mark.notebooks
def test_06_without_any_run_warns_and_finishes(tmp_path: Path) -> None:
    """A mistyped runs_dir: 06 says there is no run and writes the paper's tables; it stopped on a KeyError in its
    provenance table."""
    from nbconvert.preprocessors import ExecutePreprocessor

    nb = _with_parameters("06_paper_tables_and_figures", {"runs_dir": str(tmp_path / "runs"),
                                                          "results_dir": str(tmp_path / "results")})  # fmt: skip
    ExecutePreprocessor(timeout=600, kernel_name="python3").preprocess(nb, {"metadata": {"path": str(tmp_path)}})
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("no complete run under" in o.get("text", "") for o in outputs if o.output_type == "stream")
    assert (tmp_path / "results" / "demo" / "06_paper_tables_and_figures.done.json").is_file()
