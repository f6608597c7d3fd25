"""The step-size explorer on a tiny run: the slider drives T_hat and the maps, the image and category selections
reload state, "use DIC" resets, and the static grid is a valid PNG."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dynad.config import load_preset
from dynad.experiment import run_experiment
from dynad.explorer import StepSizeExplorer, ensure_run, sibling_runs, sweep_summary

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, shared_data) -> Path:
    root, models = shared_data
    run = tmp_path_factory.mktemp("explorer") / "tiny" / "synthetic" / "board"
    run_experiment(load_preset("tiny"), "synthetic", root, "board", run / "eval", models_dir=models, progress=False)
    return run


@pytest.fixture(scope="module")
def explorer(run_dir: Path) -> StepSizeExplorer:
    return StepSizeExplorer(run_dir)


def test_starts_at_the_dic_step_of_the_first_image(explorer: StepSizeExplorer) -> None:
    s = explorer.state
    assert s["index"] == explorer.image_select.value == 0
    assert s["t_hat"] == s["dic_t_hat"] == explorer.per_image.t_hat.iloc[0]
    assert s["knn_distance"] == pytest.approx(explorer.per_image.knn_distance.iloc[0], rel=1e-4)
    assert s["bin"] == explorer.per_image["bin"].iloc[0]
    size = explorer.pipe.cfg.data.image_size
    assert s["anomaly_map"].shape == (size, size) and s["reconstruction"].shape == (3, size, size)
    # tiny preset: 10 DDIM steps, T_max 100 -> slider 10 .. 200 in steps of 10
    assert (explorer.t_hat_slider.min, explorer.t_hat_slider.max, explorer.t_hat_slider.step) == (10, 200, 10)


def test_slider_sets_t_hat_and_changes_the_map(explorer: StepSizeExplorer) -> None:
    explorer.t_hat_slider.value = 10
    assert explorer.state["t_hat"] == 10
    small_map, small_rec = explorer.state["anomaly_map"].copy(), explorer.state["reconstruction"].clone()
    explorer.t_hat_slider.value = 200
    assert explorer.state["t_hat"] == 200
    assert not np.allclose(small_map, explorer.state["anomaly_map"])
    assert not torch.allclose(small_rec, explorer.state["reconstruction"])
    assert explorer.state["bin"] == explorer.per_image["bin"].iloc[0]  # DIC's values do not move with the slider
    assert explorer.figure_png[:8] == b"\x89PNG\r\n\x1a\n"


def test_use_dic_button_resets_the_step(explorer: StepSizeExplorer) -> None:
    explorer.t_hat_slider.value = 200
    explorer.dic_button.click()
    assert explorer.state["t_hat"] == explorer.state["dic_t_hat"] == explorer.per_image.t_hat.iloc[0]


def test_selecting_another_image_updates_the_state(explorer: StepSizeExplorer) -> None:
    before = dict(explorer.state)
    last = explorer.image_select.options[-1][1]
    explorer.image_select.value = last
    s = explorer.state
    assert s["index"] == last and s["path"] != before["path"]
    assert s["t_hat"] == explorer.per_image.t_hat.iloc[last]  # a new image starts at its own DIC step
    assert s["knn_distance"] != before["knn_distance"]
    assert not np.allclose(s["anomaly_map"], before["anomaly_map"])


def test_maps_share_the_evaluation_scale(explorer: StepSizeExplorer, run_dir: Path) -> None:
    """At the DIC step, the explorer's map of an image is the evaluation's map of it."""
    i = 3
    explorer.image_select.value = i
    explorer.dic_button.click()
    with np.load(run_dir / "eval" / "maps.npz") as z:
        expected = z["anomaly_map"][i].astype(np.float32)
    np.testing.assert_allclose(explorer.state["anomaly_map"], expected, atol=2e-3)


def test_render_static_writes_a_png(explorer: StepSizeExplorer, tmp_path: Path) -> None:
    path = explorer.render_static([10, 100], tmp_path / "grid.png", images=[0, 5])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as im:
        im.verify()
    assert (tmp_path / "grid.pdf").is_file()
    assert explorer.render_static(None, tmp_path / "default.png").is_file()  # default steps and images


def test_category_dropdown_lists_sibling_runs(run_dir: Path) -> None:
    sibling = run_dir.parent / "board_copy"
    shutil.copytree(run_dir / "eval", sibling / "eval")
    assert list(sibling_runs(run_dir)) == ["board", "board_copy"]
    ex = StepSizeExplorer(run_dir)
    assert list(ex.category_select.options) == ["board", "board_copy"]
    ex.category_select.value = "board_copy"
    assert ex.run_dir == sibling.resolve() and ex.state["run_dir"] == str(sibling.resolve())
    assert ex.state["t_hat"] == ex.per_image.t_hat.iloc[0]


def test_a_dynad_run_output_folder_opens_as_it_is(run_dir: Path, tmp_path: Path, capsys) -> None:
    """`dynad run --out runs/board` writes pipeline.pt into runs/board itself, not into eval/: the explorer said "No
    fitted run" (ensure_run) or failed on runs/board/eval/pipeline.pt, although `dynad predict` takes that folder."""
    plain = tmp_path / "runs" / "board"
    shutil.copytree(run_dir / "eval", plain)
    shutil.copytree(run_dir / "eval", tmp_path / "runs" / "tiles")
    (tmp_path / "runs" / "notes").mkdir()  # not a run: not a category
    assert ensure_run(plain) == plain and capsys.readouterr().out == ""
    ex = StepSizeExplorer(plain)
    assert list(ex.category_select.options) == ["board", "tiles"]
    assert ex.state["t_hat"] == ex.per_image.t_hat.iloc[0]
    assert ex.fixed_step_sweep([ex.default_t_values()[0]]).iloc[-1]["image_auroc"] == pytest.approx(
        json.loads((plain / "metrics.json").read_text())["image_auroc"])  # the DIC row is the run's own number


def test_fixed_step_sweep_uses_one_step_for_every_image(explorer: StepSizeExplorer, monkeypatch) -> None:
    calls, infer = [], explorer.pipe.infer

    def spy(x, t_hat, **kw):
        calls.append((len(x), t_hat))
        return infer(x, t_hat=t_hat, **kw)

    monkeypatch.setattr(explorer.pipe, "infer", spy)
    sweep = explorer.fixed_step_sweep([10, 100])
    assert sweep.t_hat.tolist() == [10, 100, "DIC"]
    # Every test image once at each fixed step, and no other step.
    assert {t: sum(n for n, s in calls if s == t) for t in {s for _, s in calls}} == {10: len(explorer.images),
                                                                                      100: len(explorer.images)}
    assert sweep.image_auroc.iloc[-1] == json_metrics(explorer)["image_auroc"]
    # A fixed step changes the maps: the two fixed rows are not both equal to DIC's row.
    assert not (sweep.pixel_auroc.iloc[0] == sweep.pixel_auroc.iloc[1] == sweep.pixel_auroc.iloc[2])


def json_metrics(explorer: StepSizeExplorer) -> dict:
    import json

    return json.loads((explorer.run_dir / "eval" / "metrics.json").read_text())


def test_sweep_summary_says_what_the_numbers_say() -> None:
    worse = pd.DataFrame({"t_hat": [10, 50, "DIC"], "image_auroc": [0.939, 0.943, 0.946], "pixel_auroc": [0.9] * 3})
    text = sweep_summary(worse, "synthetic/board")
    assert "93.9 / 94.3 at T_hat 10 / 50; DIC gives 94.6" in text
    assert "DIC's per-image steps beat every fixed step, by 0.3 points" in text
    assert "worst fixed step (T_hat 10) gives 93.9" in text
    better = worse.assign(image_auroc=[0.95, 0.90, 0.93])
    assert "the best fixed step, T_hat 10, beats DIC's per-image steps by 2.0 points" in sweep_summary(better, "x")


def test_without_a_fitted_run_the_explorer_fits_the_tiny_preset_and_says_so(
    run_dir: Path, shared_data, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert ensure_run(run_dir) == run_dir.resolve()  # a fitted run is used as it is, silently
    assert capsys.readouterr().out == ""
    root, _ = shared_data
    fallback = tmp_path / "tiny" / "synthetic" / "board"
    assert ensure_run(tmp_path / "nothing", fallback=fallback, root=root) == fallback
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "No fitted run in" in out[0] and "notebook 00" in out[0] and str(fallback) in out[0]
    assert (fallback / "eval" / "pipeline.pt").is_file()
    StepSizeExplorer(fallback)  # opens
