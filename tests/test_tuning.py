"""`dynad tune` on the tiny preset, and the diagnosis that sets its validation numbers beside the test set's."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynad.cli import main
from dynad.config import ConfigError, load_preset
from dynad.tuning import kernel_size, parse_grid, tune

import benchmark_scripts

GRID = {"dic.t_max": [20, 60], "reconstruction.eta": [0.0], "anomaly_map.lam": [0.5, 1.0], "anomaly_map.sigma": [2.0]}
KEYS = ["t_max", "eta", "lam", "sigma"]


@pytest.fixture(scope="module")
def tuned(shared_data, tmp_path_factory, one_thread) -> tuple[Path, dict, list[str]]:
    """(out, best, the splits the tune loaded)."""
    import dynad.experiment

    root, models = shared_data
    out = tmp_path_factory.mktemp("tune")
    loaded, load_split = [], dynad.experiment.load_split

    def recording_load_split(index, split, *args):
        loaded.append(split)
        return load_split(index, split, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dynad.experiment, "load_split", recording_load_split)
        best = tune(load_preset("tiny"), "synthetic", root, "board", out, models_dir=models, grid=GRID, progress=False)
    return out, best, loaded


def test_tune_never_opens_the_test_split(tuned) -> None:
    assert tuned[2] == ["train"]


def test_grid_arguments_are_read_as_dynad_tune_reads_them():
    grid = parse_grid(["dic.t_max=10,40", "anomaly_map.lam=0.5,1", "reconstruction.eta=4"])
    assert grid == {"dic.t_max": [10, 40], "anomaly_map.lam": [0.5, 1], "reconstruction.eta": [4]}
    assert [type(v) for v in grid["anomaly_map.lam"]] == [float, int]  # YAML, so T_max stays an int


def test_a_list_valued_grid_axis_keeps_its_commas():
    grid = parse_grid(["denoiser.block_out_channels=[32,64],[64, 128]", "autoencoder.source=taef2,train"])
    assert grid == {"denoiser.block_out_channels": [[32, 64], [64, 128]], "autoencoder.source": ["taef2", "train"]}
    with pytest.raises(ConfigError, match=r"--grid 'dic.t_max=10,\{': '\{' is not a value"):  # was a yaml traceback
        parse_grid(["dic.t_max=10,{"])


def test_a_training_axis_fits_each_setting_and_the_tuned_preset_keeps_the_chosen_one(shared_data, tmp_path, one_thread):
    root, models = shared_data
    grid = {**GRID, "dic.t_max": [20], "anomaly_map.lam": [1.0], "denoiser.epochs": [4, 20]}
    best = tune(load_preset("tiny"), "synthetic", root, "board", tmp_path, models_dir=models, grid=grid, progress=False)
    table = pd.read_csv(tmp_path / "tune.csv")
    assert sorted(table["denoiser.epochs"]) == [4, 20] and table.within_budget.all()
    assert (table.fit_seconds > 0).all()
    assert table.objective.nunique() == 2  # two trained denoisers, not one scored twice
    assert best["denoiser.epochs"] == table["denoiser.epochs"].iloc[0]
    tuned = (tmp_path / "tuned.yaml").read_text()
    assert load_preset(tmp_path / "tuned.yaml").denoiser.epochs == best["denoiser.epochs"]
    assert "2 training settings were fitted; the chosen one took" in tuned
    with pytest.raises(ValueError, match="no training setting trained within 0.0001 min"):
        tune(load_preset("tiny"), "synthetic", root, "board", tmp_path / "b", models_dir=models, grid=grid,
             budget_minutes=1e-4, progress=False)  # 6 ms: loading the models takes longer  # fmt: skip
    assert len(pd.read_csv(tmp_path / "b" / "tune.csv")) == 2  # every row kept, none chosen

    # Tuning again into the same folder keeps the earlier tuning beside the new one (it was replaced unseen).
    first = (tmp_path / "tune.csv").read_text(), tuned
    tune(load_preset("tiny"), "synthetic", root, "board", tmp_path, models_dir=models,
         grid={**grid, "denoiser.epochs": [4]}, progress=False)  # fmt: skip
    assert ((tmp_path / "tune.previous.csv").read_text(), (tmp_path / "tuned.previous.yaml").read_text()) == first
    assert pd.read_csv(tmp_path / "tune.csv")["denoiser.epochs"].tolist() == [4]
    # An earlier tuning that chose nothing (over budget: tune.csv alone) leaves no older tuned.previous.yaml beside it.
    (tmp_path / "b" / "tuned.previous.yaml").write_text("# from an older tuning\n")
    tune(load_preset("tiny"), "synthetic", root, "board", tmp_path / "b", models_dir=models,
         grid={**grid, "denoiser.epochs": [4]}, progress=False)  # fmt: skip
    assert (tmp_path / "b" / "tune.previous.csv").is_file() and not (tmp_path / "b" / "tuned.previous.yaml").exists()


def test_a_training_setting_that_diverges_is_listed_and_the_tune_goes_on(shared_data, tmp_path, one_thread, capsys):
    """A grid over learning rates is what a tune is for, and the largest may diverge: that stopped the whole tune
    with the error of one setting (the others, trained or not, were never scored)."""
    from dynad.plots import tune_grid

    root, models = shared_data
    grid = {**GRID, "dic.t_max": [20], "anomaly_map.lam": [1.0], "denoiser.lr": [1e30, 0.002]}  # 0.002: tiny's
    best = tune(load_preset("tiny"), "synthetic", root, "board", tmp_path, models_dir=models, grid=grid, progress=False)
    assert best["denoiser.lr"] == 0.002
    table = pd.read_csv(tmp_path / "tune.csv")
    assert table["denoiser.lr"].tolist() == [0.002, 1e30] and table.diverged.tolist() == [False, True]
    assert np.isnan(table.objective[1]) and np.isfinite(table.objective[0])
    assert re.search(r"WARNING \(synthetic/board\): training setting 1 of 2 \(denoiser.lr 1e\+30\) diverged and is not "
                     r"scored \(denoiser: the training loss is nan after epoch \d+ of 20", capsys.readouterr().err)
    assert "2 training settings were fitted, 1 of them diverged" in (tmp_path / "tuned.yaml").read_text()
    assert tune_grid(table, tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with pytest.raises(ValueError, match=r"every training setting diverged \(1 of 1\); every row is in"):
        tune(load_preset("tiny"), "synthetic", root, "board", tmp_path / "b", models_dir=models,
             grid={**grid, "denoiser.lr": [1e30]}, progress=False)  # fmt: skip
    assert pd.read_csv(tmp_path / "b" / "tune.csv").diverged.tolist() == [True]


def test_an_interrupted_tune_does_not_score_again_the_settings_it_had_scored(shared_data, tmp_path, one_thread,
                                                                            monkeypatch):  # fmt: skip
    """Ctrl-C in the third of six training settings: the same command reused the first two's models but
    reconstructed their validation images at every (T_max, eta) again, and judged their budget on loading time."""
    import dynad.tuning

    root, models = shared_data
    grid = {**GRID, "denoiser.epochs": [4, 20]}
    scored, score = [], dynad.tuning._score_inference_grid

    def counting_score(pipe, *args):
        scored.append(pipe.cfg.denoiser.epochs)
        if pipe.cfg.denoiser.epochs == 20 and len(scored) == 2:
            raise KeyboardInterrupt  # while the second setting is scored
        return score(pipe, *args)

    monkeypatch.setattr(dynad.tuning, "_score_inference_grid", counting_score)
    with pytest.raises(KeyboardInterrupt):
        tune(load_preset("tiny"), "synthetic", root, "board", tmp_path, models_dir=models, grid=grid, progress=False)
    first = json.loads(next((tmp_path / "scored").glob("*.json")).read_text())
    tune(load_preset("tiny"), "synthetic", root, "board", tmp_path, models_dir=models, grid=grid, progress=False)
    assert scored == [4, 20, 20]  # the first setting's rows were read back
    table = pd.read_csv(tmp_path / "tune.csv")
    assert table[table["denoiser.epochs"] == 4].fit_seconds.unique().tolist() == [first["fit_seconds"]]
    assert len(table) == 8 and len(list((tmp_path / "scored").glob("*.json"))) == 2
    # Another grid of (T_max, eta, lambda, sigma) is scored anew; so is the same grid on other settings.
    tune(load_preset("tiny"), "synthetic", root, "board", tmp_path, models_dir=models,
         grid={**grid, "dic.t_max": [20]}, progress=False)  # fmt: skip
    tune(load_preset("tiny", ["seed=1"]), "synthetic", root, "board", tmp_path, models_dir=models,
         grid={**grid, "denoiser.epochs": [4]}, progress=False)  # fmt: skip
    assert scored == [4, 20, 20, 4, 20, 4]


def test_a_training_setting_wins_over_the_presets_per_category_table(shared_data, tmp_path, one_thread):
    """With the category in the preset's per-category table (as every VisA category is in `visa`), each grid value
    of a key the table sets was replaced by the table's: two settings trained the same model, and the tuned preset
    still ran the table's value."""
    import yaml

    from dynad.config import preset_path

    root, models = shared_data
    preset = yaml.safe_load(preset_path("tiny").read_text())
    preset["per_category"] = {"board": {"denoiser.epochs": 4, "reconstruction.eta": 2.0}}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(preset))
    grid = {**GRID, "dic.t_max": [20], "anomaly_map.lam": [1.0], "denoiser.epochs": [4, 20]}
    best = tune(load_preset(tmp_path / "mine.yaml"), "synthetic", root, "board", tmp_path / "t", models_dir=models,
                grid=grid, progress=False)  # fmt: skip
    table = pd.read_csv(tmp_path / "t" / "tune.csv")
    assert table.objective.nunique() == 2  # two trained denoisers
    tuned = load_preset(tmp_path / "t" / "tuned.yaml").for_category("board")
    assert (tuned.denoiser.epochs, tuned.reconstruction.eta) == (best["denoiser.epochs"], GRID["reconstruction.eta"][0])


def test_dynad_tune_says_when_no_training_setting_fits_the_budget(shared_data, tmp_path, one_thread, capsys):
    root, models = shared_data
    argv = ["tune", "--preset", "tiny", "--root", str(root), "--category", "board", "--out", str(tmp_path),
            "--models", str(models), "--grid", "dic.t_max=20", "--grid", "reconstruction.eta=0", "--grid",
            "anomaly_map.lam=1", "--grid", "anomaly_map.sigma=2", "--grid", "denoiser.epochs=4",
            "--budget-minutes", "0.0001"]  # fmt: skip
    assert main(argv) == 2
    assert "error: no training setting trained within 0.0001 min" in capsys.readouterr().err
    assert (tmp_path / "tune.csv").is_file() and not (tmp_path / "tuned.yaml").exists()


@pytest.mark.parametrize("budget", ["0", "-1", "nan"])
def test_dynad_tune_refuses_a_budget_that_is_not_a_positive_time(shared_data, tmp_path, capsys, budget):
    """NaN compared with any fit time is False, so it was a budget that let every setting through in silence."""
    root, models = shared_data
    argv = ["tune", "--preset", "tiny", "--root", str(root), "--category", "board", "--out", str(tmp_path / "t"),
            "--models", str(models), "--budget-minutes", budget]  # fmt: skip
    assert main(argv) == 2
    assert "error: the time budget must be a positive number of minutes" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()  # refused before anything was trained or written


def test_dynad_tune_warns_when_few_held_out_images_judge_the_grid(shared_data, tmp_path, one_thread, capsys,
                                                                  monkeypatch):  # fmt: skip
    import dynad.validation

    root, models = shared_data
    argv = ["tune", "--preset", "tiny", "--root", str(root), "--category", "board", "--models", str(models),
            "--grid", "dic.t_max=20", "--grid", "reconstruction.eta=0", "--grid", "anomaly_map.lam=1", "--grid",
            "anomaly_map.sigma=2"]  # fmt: skip
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    n_val = int(re.search(r"pseudo-defects on (\d+) held-out", (tmp_path / "a" / "tuned.yaml").read_text())[1])
    assert n_val < dynad.validation.FEW_HELD_OUT
    warning = f"WARNING (synthetic/board): the choice rests on {n_val} held-out training images, so near-ties decide"
    assert warning in capsys.readouterr().err
    monkeypatch.setattr(dynad.validation, "FEW_HELD_OUT", n_val)
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    assert "WARNING" not in capsys.readouterr().err


def test_an_unknown_training_key_fails_before_any_training(shared_data, tmp_path):
    root, models = shared_data
    with pytest.raises(ConfigError, match="unknown config key denoiser.epoch"):
        tune(load_preset("tiny"), "synthetic", root, "board", tmp_path, models_dir=tmp_path / "models",
             grid={"denoiser.epoch": [1, 2]}, progress=False)  # fmt: skip
    assert not (tmp_path / "models").exists()
    with pytest.raises(ValueError, match="cannot search validation"):  # the judge itself
        tune(load_preset("tiny"), "synthetic", root, "board", tmp_path, grid={"validation.seed": [0, 1]},
             progress=False)  # fmt: skip
    # An out-of-range grid value, of an inference or a map setting too (they used to fail after training).
    for grid, fault in (({"anomaly_map.sigma": [2.0, -1.0]}, "anomaly_map.sigma = -1.0: must be > 0"),
                        ({"anomaly_map.sigma": [2.0, 8.0]}, r"kernel_size = 65: .* \(anomaly_map.sigma 8;"),
                        ({"dic.t_max": [20, 5000]}, "dic.t_max = 5000"),
                        ({"denoiser.max_train_timestep": [50], "dic.t_max": [20, 100]},  # with a training axis
                         "dic.t_max = 100: must be <= denoiser.max_train_timestep"),
                        # the second training setting's UNet: diffusers refused it once the first had trained
                        ({"denoiser.down_block_types": [["DownBlock2D", "AttnDownBlock2D"], ["DownBlock2D", "Foo"]]},
                         "Foo does not exist")):  # fmt: skip
        with pytest.raises(ConfigError, match=fault):
            tune(load_preset("tiny"), "synthetic", root, "board", tmp_path, models_dir=tmp_path / "models", grid=grid,
                 progress=False)  # fmt: skip
    assert not (tmp_path / "models").exists()
    with pytest.raises(ConfigError, match=r"--grid 'dic.t_max': expected KEY=V1,V2"):
        parse_grid(["dic.t_max"])


def test_tune_scores_every_grid_point_and_writes_the_best_as_a_preset(tuned):
    out, best, _ = tuned
    table = pd.read_csv(out / "tune.csv")
    assert len(table) == 4 and table.objective.is_monotonic_decreasing
    np.testing.assert_allclose(table.objective, (table.image_auroc + table.pixel_auroc) / 2)
    assert best["objective"] == table.objective.max()
    cfg = load_preset(out / "tuned.yaml")
    assert (cfg.dic.t_max, cfg.reconstruction.eta) == (best["dic.t_max"], best["reconstruction.eta"])
    assert (cfg.anomaly_map.lam, cfg.anomaly_map.sigma) == (best["anomaly_map.lam"], best["anomaly_map.sigma"])
    assert cfg.anomaly_map.kernel_size == kernel_size(best["anomaly_map.sigma"]) == 17
    assert "no test label read" in (out / "tuned.yaml").read_text()


def test_the_diagnosis_scores_validation_exactly_as_tune_does(tuned, shared_data, tmp_path, monkeypatch):
    """benchmarks/validation_vs_test.py: its validation columns are tune's, beside the test set's on the same grid."""
    out, _, _ = tuned
    root, models = shared_data
    bench = benchmark_scripts.load("validation_vs_test")
    grid = [f"--grid={k}={','.join(map(str, v))}" for k, v in GRID.items()]
    argv = ["x", "--preset", "tiny", "--dataset", "synthetic", "--root", str(root), "--category", "board",
            "--models", str(models), "--out", str(tmp_path / "vt"), *grid]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    bench.main()
    diag = pd.read_csv(tmp_path / "vt.csv")
    ours = pd.read_csv(out / "tune.csv").rename(columns=lambda c: c.split(".")[-1])
    both = diag.merge(ours, on=KEYS, validate="one_to_one")
    assert len(both) == 4
    np.testing.assert_allclose(both.val_image_auroc, both.image_auroc, atol=1e-12)
    np.testing.assert_allclose(both.val_pixel_auroc, both.pixel_auroc, atol=1e-12)
    for col in ("test_image_auroc", "test_pixel_auroc", "test_pixel_spot", "test_pixel_missing"):
        assert diag[col].between(0, 1).all(), col
    assert diag.test_pixel_auroc.nunique() > 1  # each setting really scored the test set anew
    text = (tmp_path / "vt.md").read_text()
    assert "Spearman" in text and "diagnosis, not a choice" in text


def test_the_tune_figure_draws_a_table_whose_every_setting_is_over_budget(tmp_path):
    from dynad.plots import tune_grid

    table = pd.DataFrame({"denoiser.epochs": [4, 4, 20, 20], "dic.t_max": [20, 60] * 2, "reconstruction.eta": 0.0,
                          "anomaly_map.lam": 1.0, "anomaly_map.sigma": 2.0, "image_auroc": [0.9, 1.0, 0.8, 0.7],
                          "pixel_auroc": 0.9, "objective": [0.9, 0.95, 0.85, 0.8], "fit_seconds": [5.0, 5.0, 9.0, 9.0],
                          "within_budget": False})  # fmt: skip
    path = tune_grid(table, tmp_path / "grid.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
