"""The whole method on a tiny synthetic category: it trains, writes every result file, and its maps localise defects."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dynad import metrics, plots, run_folder, synthetic
from dynad.cli import main as cli_main
from dynad.config import load_preset
from dynad.experiment import RESULT_FILES, run_experiment
from dynad.pipeline import DynAD
from dynad.reconstruction import reconstruct

import benchmark_scripts
import official_code

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
    assert metrics["defective_without_mask"] == 0 and metrics["choices"]["mask_resize"] == "area"
    prov = metrics["provenance"]
    assert prov["config"]["preset"] == "tiny" and prov["versions"]["torch"]
    assert prov["cpu"]["model"] and prov["cpu"]["vector_instructions"] == torch.backends.cpu.get_cpu_capability()
    assert prov["num_processes"] == 1  # a plain `dynad run` (`accelerate launch` records its process count)
    assert "mobilenet_v2-b0353104.pth" in prov["weights"]["feature_extractor"]
    assert set(metrics["seconds"]) >= {"train_autoencoder", "train_denoiser", "adaptation", "fit_knn", "inference"}
    peers = metrics["baselines"]
    assert peers["knn_distance"]["image_auroc"] == metrics["knn_baseline_image_auroc"]
    assert peers["patch_knn"]["bank"] == peers["patch_knn"]["training_patches"]  # a tiny bank: exact, no coreset
    for key in ("image_auroc", "pixel_auroc", "pro"):
        assert 0.0 <= peers["patch_knn"][key] <= 1.0
    per_image = pd.read_csv(out / "per_image.csv")
    assert list(per_image.columns) == ["path", "label", "defect_type", "score", "knn_distance", "bin", "t_hat",
                                       "patch_knn_score"]  # fmt: skip
    assert len(per_image) == 4 + 4 * 3
    assert set(per_image.t_hat) <= set(json.loads((out / "dic.json").read_text())["table"])


# Localisation needs models trained for minutes (the demo preset): the tiny preset's 20-epoch UNet does not remove
# defects (its maps are measured at pixel AUROC ~0.3), so these two checks read the demo run that `make demo` writes.
DEMO_RUNS = Path(__file__).resolve().parents[1] / "runs/demo/synthetic"


def demo_eval(category: str) -> Path:
    path = DEMO_RUNS / category / "eval"
    if not (path / "maps.npz").is_file() or not (path / "pipeline.pt").is_file():
        pytest.skip(f"no demo run at {path}: run `make demo` first "
                    "(it trains the demo models: 13 to 34 min on 2 CPU cores)")
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


def test_demo_denoiser_changes_missing_parts_more_than_normal_images():
    """The latent map |z0_hat - z0| (the demo preset's whole map, lambda 1) is larger on images with a missing part.

    With the earlier trained-VAE preset this was asserted on the decoded reconstruction. With TAEF2 at T_hat 40 it
    does not hold in pixel space (measured on board: mean |x_hat - x| 0.091 on good images, 0.078 on missing ones):
    the denoiser's change is read in the latent space, where the map is made (0.102 vs 0.120)."""
    from dynad.data import load_image

    out = demo_eval("board")
    pipe = DynAD.load(out / "pipeline.pt", device="cpu")
    per_image = pd.read_csv(out / "per_image.csv")
    size = pipe.cfg.data.image_size
    err = {}
    for kind in ("good", "missing"):
        x = torch.stack([load_image(p, size) for p in per_image.path[per_image.defect_type == kind][:6]])
        err[kind] = pipe.infer(x, t_hat=pipe.cfg.dic.t_max)["latent_map"].mean().item()
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


def test_fine_tuning_starts_from_the_one_denoiser_in_a_models_folder(tiny_run, tmp_path):
    """`denoiser.init_from` takes a checkpoint file or a folder with exactly one (a run's `models/`)."""
    import shutil

    from dynad.denoiser import build_unet, load_unet_weights

    out, _ = tiny_run
    pipe = DynAD.load(out / "pipeline.pt", device="cpu")
    unet = build_unet(pipe.cfg.denoiser, pipe.unet.config.sample_size, pipe.unet.config.in_channels)
    load_unet_weights(unet, out / "models")
    trained = pipe.unet.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in unet.state_dict().items())
    (only,) = (out / "models").glob("denoiser-*.pt")
    (tmp_path / "a").mkdir()
    shutil.copy(only, tmp_path / "a" / only.name)
    shutil.copy(only, tmp_path / "a" / "denoiser-other.pt")
    with pytest.raises(FileNotFoundError, match=r"2 denoiser-\*\.pt files .*denoiser-other\.pt.*name the file"):
        load_unet_weights(unet, tmp_path / "a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="0 denoiser.*none"):
        load_unet_weights(unet, tmp_path / "empty")


def test_rerun_reuses_trained_models(tiny_run, tiny_root):
    out, first = tiny_run
    models = {p.name: p.stat().st_mtime_ns for p in (out / "models").glob("*.pt")}
    again = run_experiment(load_preset("tiny", ["anomaly_map.normalization=train"]), "synthetic", tiny_root, "board",
                           out, progress=False)  # fmt: skip
    # Nothing is retrained (the checkpoints are complete and their configs match): same numbers, quick stages.
    assert models and {p.name: p.stat().st_mtime_ns for p in (out / "models").glob("*.pt")} == models
    assert again["image_auroc"] == first["image_auroc"] and again["pixel_auroc"] == first["pixel_auroc"]
    assert again["seconds"]["train_denoiser"] < first["seconds"]["train_denoiser"]


def test_cli_run_and_help(tiny_root, tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        cli_main(["run", "--help"])
    assert e.value.code == 0 and "--preset" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)  # --out relative to the working directory, as a user types it
    code = cli_main(["run", "--preset", "tiny", "--dataset", "synthetic", "--root", str(tiny_root), "--category",
                     "board", "--out", "runs/cli", "--set", "adaptation.epochs=0"])  # fmt: skip
    assert code == 0 and (tmp_path / "runs/cli/metrics.json").is_file()
    manifest = json.loads((tmp_path / "runs/cli" / run_folder.MANIFEST).read_text())["files"]
    assert "figures/knn_histogram.png" in manifest and run_folder.is_complete(tmp_path / "runs/cli")
    assert cli_main(["run", "--preset", "tiny", "--dataset", "mvtec", "--root", str(tmp_path), "--category",
                     "bottle", "--out", str(tmp_path / "x")]) == 2  # fmt: skip
    assert "bottle" in capsys.readouterr().err
    assert cli_main(["run", "--preset", "tiny", "--category", "board", "--root", str(tiny_root), "--out",
                     str(tmp_path / "y"), "--set", "dic.kk=1"]) == 2  # fmt: skip
    assert "dic.kk" in capsys.readouterr().err


def test_predict_threshold_without_validation_is_a_training_quantile(tiny_run, tmp_path):
    """A run without validation pseudo-defects (validation.fraction 0): the quantile of the training images' scores."""
    import shutil

    from dynad.predict import PredictError, run_threshold

    run, _ = tiny_run
    shutil.copy(run / "pipeline.pt", tmp_path / "pipeline.pt")
    metrics = json.loads((run / "metrics.json").read_text())
    (tmp_path / "metrics.json").write_text(json.dumps({**metrics, "validation": None}))
    pipe = DynAD.load(tmp_path / "pipeline.pt")
    scores = np.sort(pipe.train_scores)
    threshold, source = run_threshold(tmp_path / "pipeline.pt", pipe)
    assert threshold == pytest.approx(float(np.quantile(scores, 0.99))) and threshold > np.median(scores)
    assert source == f"0.99 quantile of {len(scores)} training images' scores"
    assert run_threshold(tmp_path / "pipeline.pt", pipe, quantile=0.5)[0] == pytest.approx(float(np.median(scores)))
    with pytest.raises(PredictError, match=r"\[0, 1\], got 1.5"):
        run_threshold(tmp_path / "pipeline.pt", pipe, quantile=1.5)


def test_predict_scores_new_images_like_the_run_and_skips_bad_files(tiny_run, tiny_root, tmp_path, capsys):
    """`dynad predict`: the run's own test images score as in per_image.csv (both use training statistics);
    folders, globs and odd sizes work; a corrupt file and a missing path each get one line and are skipped."""
    run, _ = tiny_run
    test_dir = tiny_root / "board" / "test"
    odd = tmp_path / "odd" / "wide.png"
    odd.parent.mkdir()
    Image.new("RGB", (100, 60), (120, 90, 60)).save(odd)
    bad = tmp_path / "odd" / "broken.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "pred"
    rc = cli_main(["predict", str(run), str(test_dir / "good"), str(test_dir / "[!g]*" / "*.png"), str(odd.parent),
                   str(tmp_path / "missing.png"), "--out", str(out), "--batch-size", "5"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1  # some inputs were skipped
    assert err.count("skipped") == 2 and "broken.png" in err and "missing.png" in err
    shown = [line.rsplit("\r", 1)[-1] for line in err.split("\n")]  # what a terminal shows on each line
    assert sum(line.startswith("skipped ") for line in shown) == 2, shown  # not glued to the progress bar
    pred = pd.read_csv(out / "predictions.csv")
    assert list(pred.columns) == ["path", "name", "score", "is_anomalous", "threshold", "knn_distance", "bin", "t_hat"]
    # test/good/000.png and test/spot/000.png: each overlay is named in the table, and every one is there.
    assert pred.name.is_unique and {"000.png", "000-2.png"} <= set(pred.name)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(pred.name)
    per_image = pd.read_csv(run / "per_image.csv")
    assert len(pred) == len(per_image) + 1
    merged = per_image.merge(pred, on="path", suffixes=("_run", ""))
    assert len(merged) == len(per_image)
    assert np.allclose(merged.score, merged.score_run, atol=1e-4)
    assert np.allclose(merged.knn_distance, merged.knn_distance_run, atol=1e-4)
    assert (merged.t_hat == merged.t_hat_run).all()
    summary = json.loads((out / "summary.json").read_text())
    validation = json.loads((run / "metrics.json").read_text())["validation"]  # the F1-optimal threshold on it
    assert summary["threshold"] == pytest.approx(validation["threshold"])
    assert (pred.is_anomalous == (pred.score >= summary["threshold"])).all()
    assert len(summary["skipped"]) == 2 and summary["n_images"] == len(pred)
    # summary.png shows the overlays of the eight highest scores, as summary.json names them.
    assert summary["highest"] == pred.sort_values("score", ascending=False, kind="stable").name.tolist()[:8]
    assert Image.open(out / "summary.png").size[0] > 1000
    wide = pred[pred.path == str(odd)].iloc[0]
    overlay, mask = Image.open(out / "overlays" / "wide.png"), Image.open(out / "masks" / "wide.png")
    assert overlay.size == mask.size == (100, 60)
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    assert bool(wide.is_anomalous) == (wide.score >= summary["threshold"])
    # A second, smaller prediction into the same folder replaces the first's files instead of mixing with them.
    assert cli_main(["predict", str(run), str(odd), "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(p.name for p in (out / "masks").iterdir()) \
        == ["wide.png"]
    # Into the images' own folder, twice: the first prediction's overlays and masks are not taken for new images
    # (they were, then deleted as old outputs: eight "skipped … No such file" lines).
    for _ in range(2):
        assert cli_main(["predict", str(run), str(odd.parent), "--out", str(odd.parent)]) == 1  # broken.png
        assert capsys.readouterr().err.count("skipped") == 1
    assert pd.read_csv(odd.parent / "predictions.csv").name.tolist() == ["wide.png"]


def test_predict_overlay_is_half_image_half_jet_of_the_map_over_twice_the_threshold():
    """The 8-bit colour-table overlay against matplotlib's float colours (within rounding), maps below 0 and above
    twice the threshold included."""
    import matplotlib

    from dynad.predict import heat_overlay

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    amap = rng.uniform(-0.2, 1.5, (20, 30)).astype(np.float32)
    expected = 255 * (0.5 * rgb / 255 + 0.5 * matplotlib.colormaps["jet"](np.clip(amap / 0.8, 0, 1))[..., :3])
    got = np.asarray(heat_overlay(Image.fromarray(rgb), amap, threshold=0.4)).astype(float)
    assert got.shape == rgb.shape and np.abs(got - expected).max() <= 1.0


def test_predict_overlays_16_bit_images_as_their_8_bit_twins(tiny_run, tmp_path):
    """A 16-bit greyscale image scores and is drawn by its range: its overlay is its 8-bit twin's, not white."""
    from dynad.predict import predict

    run, _ = tiny_run
    image = sorted((Path(pd.read_csv(run / "per_image.csv").path[0])).parent.glob("*.png"))[0]
    grey = np.asarray(Image.open(image).convert("L"))
    Image.fromarray(grey).save(tmp_path / "grey8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    predict(run, [tmp_path / "grey8.png", tmp_path / "grey16.png"], tmp_path / "out", progress=False)
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert pred.score[0] == pytest.approx(pred.score[1], rel=1e-2)  # resized in float vs in 8 bits: near, not equal
    a, b = (np.asarray(Image.open(tmp_path / "out" / "overlays" / f"grey{d}.png")).astype(int) for d in (8, 16))
    assert np.abs(a - b).mean() < 0.5 and np.abs(a - b).max() <= 8  # the maps differ by that rounding only


def test_predict_threshold_from_validation_or_given(tiny_run, tmp_path):
    """The run's validation threshold wins over the training quantile; --threshold wins over both."""
    import shutil

    from dynad.predict import PredictError, predict

    run, _ = tiny_run
    copy = tmp_path / "run"
    copy.mkdir()
    shutil.copy(run / "pipeline.pt", copy / "pipeline.pt")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["validation"] = {"image_auroc": 1.0, "pixel_auroc": 1.0, "threshold": 0.123}
    (copy / "metrics.json").write_text(json.dumps(metrics))
    image = sorted((Path(pd.read_csv(run / "per_image.csv").path[0])).parent.glob("*.png"))[0]
    s = predict(copy, [image], tmp_path / "a", progress=False)
    assert s["threshold"] == 0.123 and "validation" in s["threshold_source"]
    s = predict(copy, [image], tmp_path / "b", threshold=5.0, progress=False)
    assert s["threshold"] == 5.0 and s["n_anomalous"] == 0
    assert not np.asarray(Image.open(tmp_path / "b" / "masks" / f"{image.stem}.png")).any()
    # A bad option is an error even where the validation threshold makes it moot (--quantile 2 and --batch-size 0
    # used to pass in silence), before anything is written.
    for option, message in (({"quantile": 2.0}, "threshold quantile must lie in [0, 1], got 2.0"),
                            ({"batch_size": 0}, "batch size must be >= 1, got 0"),
                            ({"threshold": float("nan")}, "threshold must be a finite number, got nan")):  # fmt: skip
        with pytest.raises(PredictError, match=re.escape(message)):
            predict(copy, [image], tmp_path / "c", progress=False, **option)
    assert not (tmp_path / "c").exists()
def test_predict_keeps_the_sub_folders_of_a_folder_it_is_given(tiny_run, tiny_root, tmp_path):
    """A tree of day folders gave overlays 0000.png and 0000-2.png side by side; now day1/0000.png and day2/0000.png."""
    import shutil

    from dynad.predict import predict

    run, _ = tiny_run
    images = sorted((tiny_root / "board" / "test" / "good").glob("*.png"))
    tree = tmp_path / "lot7"
    for target, image in ((tree / "day1" / "0000.png", images[0]), (tree / "day2" / "0000.png", images[1]),
                          (tree / "0000.png", images[2])):  # fmt: skip
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
    predict(run, [tree, images[3]], tmp_path / "out", progress=False)
    names = pd.read_csv(tmp_path / "out" / "predictions.csv").name.tolist()
    assert names == ["0000.png", "day1/0000.png", "day2/0000.png", f"{images[3].stem}.png"]
    for d in ("overlays", "masks"):
        assert all((tmp_path / "out" / d / n).is_file() for n in names)
    for mine in ("annotated.png", "day1/annotated.png"):  # files of the user's own in those folders
        shutil.copy(images[0], tmp_path / "out" / "masks" / mine)
    # A second prediction removes the first's files, not the user's (every .png directly in masks/ went before).
    predict(run, [images[3]], tmp_path / "out", progress=False)
    assert sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir()) == [f"{images[3].stem}.png"]
    assert sorted(p.relative_to(tmp_path / "out" / "masks").as_posix() for p in (tmp_path / "out" / "masks").rglob(
        "*.png")) == sorted(["annotated.png", "day1/annotated.png", f"{images[3].stem}.png"])  # fmt: skip


def test_predict_warns_about_images_of_another_aspect_ratio_than_the_training_images(tiny_run, tiny_root, tmp_path,
                                                                                       capsys):
    """Trained on square crops, given wide frames: each image is squeezed to S x S, so theirs are squeezed otherwise
    (normal boards scored 1.10 on average as they are, 1.37 twice as wide, against a threshold of 1.38)."""
    from dynad.predict import predict

    run, _ = tiny_run
    assert DynAD.load(run).provenance["data"]["train_aspect_ratio"] == [1.0, 1.0]
    images = sorted((tiny_root / "board" / "test" / "good").glob("*.png"))[:3]
    with Image.open(images[1]) as im:
        wide = Image.new("RGB", (2 * im.width, im.height))
        wide.paste(im, (0, 0))
        wide.paste(im, (im.width, 0))
    wide.save(tmp_path / "wide.png")
    with Image.open(images[2]) as im:  # 5 % wider: within the tolerance of a crop's rounding
        im.resize((round(im.width * 1.05), im.height)).save(tmp_path / "nearly.png")
    summary = predict(run, [images[0], tmp_path / "wide.png", tmp_path / "nearly.png"], tmp_path / "out",
                      progress=False)  # fmt: skip
    assert summary["aspect_ratio"] == {"training": [1.0, 1.0], "outside": 1, "examples": ["wide.png"]}
    err = capsys.readouterr().err
    assert ("WARNING: 1 of 3 images have another aspect ratio (width / height) than the training images (1.00): "
            f"wide.png is {2 * wide.height} x {wide.height} px (2.00)") in err
    predict(run, images, tmp_path / "out2", progress=False)
    assert "aspect ratio" not in capsys.readouterr().err


def test_an_interrupted_prediction_resumes_and_gives_the_uninterrupted_files(tiny_run, tiny_root, tmp_path,
                                                                           monkeypatch, capsys):
    """Ctrl-C during `dynad predict` lost every row scored so far (predictions.csv was written at the end only); the
    same command now scores only the rest, and its files equal an uninterrupted prediction's. Another threshold, or
    pictures deleted since, start afresh."""
    from dynad.predict import predict

    run, _ = tiny_run
    images = sorted((tiny_root / "board" / "test").rglob("*.png"))[:7]
    whole = predict(run, images, tmp_path / "whole", batch_size=3, progress=False)
    score, calls = DynAD.score, []

    def score_then_stop(self, x):  # Ctrl-C during the second batch
        calls.append(len(x))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return score(self, x)

    monkeypatch.setattr(DynAD, "score", score_then_stop)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        predict(run, images, out, batch_size=3, progress=False)
    assert len(pd.read_csv(out / "predictions.partial.csv")) == 3 and not (out / "predictions.csv").exists()
    with open(out / "predictions.partial.csv", "a") as f:
        f.write(str(images[3]) + ",00")  # a row cut short by a kill while appending
    monkeypatch.setattr(DynAD, "score", score)
    s = predict(run, images, out, batch_size=3, progress=False)
    assert "resuming: 3 of 7 images were scored before" in capsys.readouterr().err
    assert s["resumed"] == 3 and s["n_images"] == whole["n_images"] == 7
    assert (out / "predictions.csv").read_bytes() == (tmp_path / "whole" / "predictions.csv").read_bytes()
    for d in ("overlays", "masks"):
        assert sorted(p.name for p in (out / d).iterdir()) == sorted(p.name for p in (tmp_path / "whole" / d).iterdir())
    assert not list(out.glob("predictions.partial.*"))
    # Pictures deleted since, or another threshold: no row of the interrupted attempt is kept.
    for change, options in ((lambda: (out / "overlays" / "000.png").unlink(), {}), (lambda: None, {"threshold": 9.0})):
        monkeypatch.setattr(DynAD, "score", score_then_stop)
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            predict(run, images, out, batch_size=3, progress=False)
        change()
        monkeypatch.setattr(DynAD, "score", score)
        assert predict(run, images, out, batch_size=3, progress=False, **options)["resumed"] == 0


def test_reference_fidelity_run_matches_the_official_code(tiny_root, tmp_path):
    """`--set fidelity=reference` end to end on the tiny category (every reference behaviour, training ones
    included), then its fitted DIC and sampler against the independent re-implementation on the same tensors."""
    code = cli_main(["run", "--preset", "tiny", "--dataset", "synthetic", "--root", str(tiny_root), "--category",
                     "board", "--out", str(tmp_path / "ref"), "--set", "fidelity=reference"])  # fmt: skip
    assert code == 0
    metrics = json.loads((tmp_path / "ref/metrics.json").read_text())
    assert metrics["fidelity"] == "reference" and metrics["choices"]["fidelity_deviations"] == []
    assert metrics["choices"]["knn_binning"] == "digitize" and metrics["choices"]["pro_method"] == "thresholds200"

    pipe = DynAD.load(tmp_path / "ref/pipeline.pt", device="cpu")
    per_image = pd.read_csv(tmp_path / "ref/per_image.csv")
    from dynad.data import load_image

    x = torch.stack([load_image(p, pipe.cfg.data.image_size) for p in per_image.path])  # (N, 3, S, S)
    feats = pipe.knn_descriptors(x).numpy()
    y, b, t = pipe.dic.t_hat(feats)
    _, b_ref, t_ref = official_code.dic(pipe.dic.train_features, feats, pipe.cfg.dic.k, pipe.cfg.dic.t_max)
    assert b.tolist() == b_ref.tolist() == per_image.bin.tolist()
    assert t.tolist() == t_ref.tolist() == per_image.t_hat.tolist()
    z0 = pipe.codec.encode(x, torch.Generator().manual_seed(0))  # one posterior sample, given to both
    ours = reconstruct(pipe.unet, pipe.schedule, z0, t, pipe.cfg.reconstruction)
    theirs = official_code.dynamic_sampler(pipe.unet, z0, t_ref, pipe.cfg.reconstruction.eta, official_code.betas())
    assert (ours - theirs).abs().max() < 1e-5


def test_latent_channels_split_finds_the_channel_that_points_at_the_defect():
    """Channel 1 is raised exactly at the defect, channel 0 is noise: the best channel is 1 (within 100), the mean
    is in between, and the worst is channel 0."""
    bench = benchmark_scripts.load("latent_channels")
    rng = np.random.default_rng(0)
    err = torch.from_numpy(rng.uniform(0, 1, (4, 2, 8, 8)).astype(np.float32))
    masks = np.zeros((4, 8, 8), bool)
    masks[2:, 2:6, 2:6] = True
    err[:, 1] = 0.5 * torch.from_numpy(masks.astype(np.float32)) + 0.01 * err[:, 1]  # the mean overlaps
    table = pd.DataFrame(bench.split_rows(err, masks, np.array([0, 0, 1, 1]), np.array(["good", "good", "d", "d"]), 8))
    row = bench.summary(table).set_index("defect_type").loc["d"]
    assert row["best channel"] == "1" and row["within, best channel"] == 100.0
    channel0 = table[(table["map"] == "channel 0") & (table.defect_type == "d")].within.iloc[0]
    assert row["within, worst channel"] == pytest.approx(100 * channel0, abs=0.05)
    assert 100 * channel0 < row["within, channel mean"] < 100.0


def test_latent_channels_mean_row_is_the_runs_latent_map(tiny_run):
    """Reconstructed again from pipeline.pt, the mean over channels splits as the run's stored latent map does."""
    out, _ = tiny_run
    bench = benchmark_scripts.load("latent_channels")
    pipe = DynAD.load(out / "pipeline.pt")
    rows = pd.read_csv(out / "per_image.csv", keep_default_na=False)
    with np.load(out / "maps.npz") as z:
        masks, stored = z["gt_mask"], z["latent_map"].astype(np.float32)
    err = bench.channel_errors(pipe, list(rows.path), rows.t_hat.to_numpy())
    assert err.shape[1] == pipe.codec.latent_channels
    up = torch.nn.functional.interpolate(err.mean(dim=1, keepdim=True), size=masks.shape[-2:], mode="bilinear")[:, 0]
    np.testing.assert_allclose(up.numpy(), stored, rtol=2e-3, atol=1e-3)  # maps.npz holds float16
    table = pd.DataFrame(bench.split_rows(err, masks, rows.label.to_numpy(), rows.defect_type.to_numpy(), masks.shape[-1]))
    mean = table[table["map"].str.startswith("mean")].set_index("defect_type")
    expected = pd.DataFrame(metrics.localization_split(stored, masks, rows.label, rows.defect_type)).set_index("defect_type")
    np.testing.assert_allclose(mean.within.astype(float), expected.within.astype(float), atol=2e-3)


def test_a_category_with_image_labels_only_scores_images_as_with_masks(tiny_root, tmp_path, capsys, monkeypatch):
    """The same category as a folder data set with and without ground_truth/: the same models, maps and image
    scores; without masks the pixel metrics are None (null in the CLI's line), maps.npz has no gt_mask, and the
    figures and tables that show masks say so instead of failing."""
    import shutil

    from dynad.ablations import run_ablations
    from dynad.explorer import StepSizeExplorer
    from dynad.report.figures import figure2_segmentation
    from dynad.report.regenerate import regenerate
    from dynad.report.runs import Run
    from dynad.report.tables import dataset_metrics, localization_table

    shutil.copytree(tiny_root / "board", tmp_path / "masked" / "board")
    shutil.copytree(tiny_root / "board", tmp_path / "labels" / "board", ignore=shutil.ignore_patterns("ground_truth"))
    cfg, models = load_preset("tiny"), tmp_path / "models"
    with_masks = run_experiment(cfg, "folder", tmp_path / "masked", "board", tmp_path / "m", models, progress=False)
    capsys.readouterr()
    out = tmp_path / "runs" / "tiny" / "folder" / "board" / "eval"
    # A normal image's ground truth is known without a mask (no defect pixel): only anomalous ones say "no mask".
    no_mask, drawn = plots.no_mask, []
    monkeypatch.setattr(plots, "no_mask", lambda ax: drawn.append(1) or no_mask(ax))
    assert cli_main(["run", "--preset", "tiny", "--dataset", "folder", "--root", str(tmp_path / "labels"),
                     "--category", "board", "--out", str(out), "--models", str(models),
                     "--set", "eval.num_figures=5"]) == 0  # fmt: skip
    assert len(drawn) == 4  # figures/qualitative.png: the four defect types' examples, then a normal image
    printed = capsys.readouterr()
    assert "image labels only (no ground_truth/ folder): anomalous test images missing 3, patch 3" in printed.err
    line = json.loads(printed.out.splitlines()[0])
    assert line["pixel_auroc"] is None and line["pro"] is None
    assert line["image_auroc"] == round(with_masks["image_auroc"], 4)

    m = json.loads((out / "metrics.json").read_text())
    assert m["image_labels_only"] and not with_masks["image_labels_only"] and with_masks["pixel_auroc"] > 0.5
    assert m["image_auroc"] == with_masks["image_auroc"] and m["image_ap"] == with_masks["image_ap"]
    assert all(m[k] is None for k in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "pro"))
    assert all(m["baselines"]["patch_knn"][k] is None for k in ("pixel_auroc", "pro"))
    assert m["seconds"]["train_denoiser"] < with_masks["seconds"]["train_denoiser"]  # the models were reused
    per_image = [pd.read_csv(d / "per_image.csv") for d in (tmp_path / "m", out)]
    assert per_image[0].score.tolist() == per_image[1].score.tolist()
    with np.load(out / "maps.npz") as z, np.load(tmp_path / "m" / "maps.npz") as zm:
        assert "gt_mask" not in z and "gt_mask" in zm
        assert np.array_equal(z["anomaly_map"], zm["anomaly_map"])
    per_defect = pd.read_csv(out / "per_defect.csv")
    assert per_defect.pixel_auroc.isna().all() and per_defect.image_auroc.between(0, 1).all()

    assert (out / "figures" / "qualitative.png").is_file()
    assert localization_table(out).empty and not localization_table(tmp_path / "m").empty
    assert figure2_segmentation(Run("folder", "board", out.parent, m), tmp_path / "fig2.png").is_file()
    assert len(drawn) == 8  # the same five images
    table = dataset_metrics(out.parents[1])
    assert table.category.tolist() == ["board", "mean"] and table.pixel_auroc.isna().all()
    assert table.image_auroc.tolist() == [m["image_auroc"]] * 2

    explorer = StepSizeExplorer(out.parent)  # renders the first image at once: its ground truth says "no mask"
    assert explorer.figure_png.startswith(b"\x89PNG") and explorer.gt_mask is None
    sweep = explorer.fixed_step_sweep([50])
    assert sweep.pixel_auroc.isna().all() and sweep.image_auroc.iloc[-1] == m["image_auroc"]
    assert explorer.render_static([50], tmp_path / "grid.png", images=[0]).is_file()
    normal, anomalous = (int(np.flatnonzero(explorer.per_image.label == k)[0]) for k in (0, 1))
    drawn.clear()
    explorer.render_static([50], tmp_path / "grid.png", images=[normal, anomalous])
    assert len(drawn) == 1
    assert not plots.shown_truth(None, explorer.per_image.label, normal, 32).any()

    # The paper's tables and figures from such a run, with two ablation variants (their pixel columns empty).
    run_ablations(cfg, "folder", tmp_path / "labels", "board", out.parent / "ablations", models, progress=False,
                  only=["DIC (full method)", "fixed 50% T_max"])  # fmt: skip
    written = regenerate(tmp_path / "runs", tmp_path / "results", "tiny")
    manifest = json.loads((tmp_path / "results" / "tiny" / "manifest.json").read_text())
    assert manifest["skipped"] == [] and {"figures/fig2_segmentation_folder_board.png",
                                          "figures/fig6_fixed_steps_folder_board.png"} <= set(written)  # fmt: skip
    table4 = pd.read_csv(tmp_path / "results" / "tiny" / "tables" / "table4_folder.csv")
    main = (tmp_path / "results" / "tiny" / "tables" / "main_folder.md").read_text()
    assert "board: image labels only (no ground_truth/), so no pixel AUROC or PRO" in main
    assert main.startswith("### folder: dynad and its peers\n")  # no paper numbers for the user's own data
    ours = table4.dropna(subset=["image_auroc"])  # the other rows hold the paper's numbers only
    assert ours.variant.tolist() == ["fixed 50% T_max", "DIC (full method)"] and table4.pixel_auroc.isna().all()
