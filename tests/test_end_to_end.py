"""The whole method on a tiny synthetic category: it trains, writes every result file, and its maps localise defects."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dynad import synthetic
from dynad.cli import main as cli_main
from dynad.config import load_preset
from dynad.experiment import RESULT_FILES, run_experiment
from dynad.pipeline import DynAD

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    cfg = synthetic.SynthConfig(image_size=64, n_train=24, n_test_good=4, n_test_per_defect=3, categories=("board",))
    return synthetic.generate(tmp_path_factory.mktemp("synth") / "data", cfg, progress=False)


@pytest.fixture(scope="module")
def tiny_run(tiny_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = load_preset("tiny", ["anomaly_map.normalization=train"])
    result = run_experiment(cfg, "synthetic", tiny_root, "board", out, progress=False)
    return out, result


def test_run_writes_every_result_with_provenance(tiny_run):
    out, result = tiny_run
    for name in RESULT_FILES + ("maps.npz", "pipeline.pt", "figures/qualitative.png", "figures/knn_histogram.png"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "pro", "knn_baseline_image_auroc"):
        assert 0.0 <= metrics[key] <= 1.0
    prov = metrics["provenance"]
    assert prov["config"]["preset"] == "tiny" and prov["versions"]["torch"]
    assert prov["num_processes"] == 1  # a plain `dynad run` (`accelerate launch` records its process count)
    assert "mobilenet_v2-b0353104.pth" in prov["weights"]["feature_extractor"]
    assert set(metrics["seconds"]) >= {"train_autoencoder", "train_denoiser", "adaptation", "fit_knn", "inference"}
    per_image = pd.read_csv(out / "per_image.csv")
    assert list(per_image.columns) == ["path", "label", "defect_type", "score", "knn_distance", "bin", "t_hat"]
    assert len(per_image) == 4 + 4 * 3
    assert set(per_image.t_hat) <= set(json.loads((out / "dic.json").read_text())["table"])


# Localisation needs models trained for minutes (the demo preset): the tiny preset's 20-epoch UNet does not remove
# defects (its maps are measured at pixel AUROC ~0.3), so these two checks read the demo run that `make demo` writes.
DEMO_RUNS = Path(__file__).resolve().parents[1] / "runs/demo/synthetic"


def demo_eval(category: str) -> Path:
    path = DEMO_RUNS / category / "eval"
    if not (path / "maps.npz").is_file() or not (path / "pipeline.pt").is_file():
        pytest.skip(f"no demo run at {path}: run `make demo` first (it trains the demo models, ~5 min per category)")
    return path


@pytest.mark.parametrize("category", ["board", "tiles"])
def test_demo_maps_peak_inside_large_defects(category):
    """For the large defects (patch, missing) the anomaly map's maximum lies on (or within 2 px of) the defect."""
    out = demo_eval(category)
    maps = np.load(out / "maps.npz")
    per_image = pd.read_csv(out / "per_image.csv")
    hits = []
    for i in np.flatnonzero(per_image.defect_type.isin(["patch", "missing"]).to_numpy()):
        amap, gt = maps["anomaly_map"][i].astype(np.float32), maps["gt_mask"][i]
        iy, ix = np.unravel_index(np.argmax(amap), amap.shape)
        ys, xs = np.nonzero(gt)
        hits.append(np.min(np.abs(ys - iy) + np.abs(xs - ix)) <= 2)
    assert np.mean(hits) >= 0.8, hits


def test_demo_defect_free_input_is_reconstructed_closer():
    from dynad.data import load_image

    out = demo_eval("board")
    pipe = DynAD.load(out / "pipeline.pt", device="cpu")
    per_image = pd.read_csv(out / "per_image.csv")
    size = pipe.cfg.data.image_size
    err = {}
    for kind in ("good", "missing"):
        x = torch.stack([load_image(p, size) for p in per_image.path[per_image.defect_type == kind][:6]])
        err[kind] = (pipe.infer(x, t_hat=pipe.cfg.dic.t_max)["reconstruction"] - x).abs().mean().item()
    assert err["good"] < err["missing"], err


def test_saved_pipeline_scores_one_image_alone(tiny_run, tiny_root, monkeypatch):
    out, _ = tiny_run

    def no_weights(weights):  # as on a machine without the backbone's ImageNet file: the checkpoint suffices
        raise AssertionError(f"DynAD.load read the weights file {weights!r}")

    monkeypatch.setattr("dynad.features.resolve_weights_file", no_weights)
    pipe = DynAD.load(out / "pipeline.pt", device="cpu")
    assert pipe.extractor.weights_label == json.loads((out / "metrics.json").read_text())["provenance"]["weights"][
        "feature_extractor"].split(", domain-adapted")[0]
    assert pipe.train_normalization is not None
    per_image = pd.read_csv(out / "per_image.csv")
    from dynad.data import load_image

    x = load_image(per_image.path[0], pipe.cfg.data.image_size)[None]
    res = pipe.score(x)
    assert res["anomaly_map"].shape == (1, 32, 32) and torch.isfinite(res["pred_score"]).all()
    assert int(res["t_hat"][0]) == int(per_image.t_hat[0])


def test_rerun_reuses_trained_models(tiny_run, tiny_root):
    out, first = tiny_run
    again = run_experiment(load_preset("tiny", ["anomaly_map.normalization=train"]), "synthetic", tiny_root, "board",
                           out, progress=False)  # fmt: skip
    # Nothing is retrained (the checkpoints are complete and their configs match): same numbers, quick stages.
    assert again["image_auroc"] == first["image_auroc"] and again["pixel_auroc"] == first["pixel_auroc"]
    assert again["seconds"]["train_denoiser"] < first["seconds"]["train_denoiser"]


def test_cli_run_and_help(tiny_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["run", "--help"])
    assert e.value.code == 0 and "--preset" in capsys.readouterr().out
    code = cli_main(["run", "--preset", "tiny", "--dataset", "synthetic", "--root", str(tiny_root), "--category",
                     "board", "--out", str(tmp_path / "cli"), "--set", "adaptation.epochs=0"])  # fmt: skip
    assert code == 0 and (tmp_path / "cli/metrics.json").is_file()
    assert cli_main(["run", "--preset", "tiny", "--dataset", "mvtec", "--root", str(tmp_path), "--category",
                     "bottle", "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    assert "bottle" in capsys.readouterr().err
    assert cli_main(["run", "--preset", "tiny", "--category", "board", "--root", str(tiny_root), "--out",
                     str(tmp_path / "y"), "--set", "dic.kk=1"]) == 2  # fmt: skip
    assert "dic.kk" in capsys.readouterr().err
