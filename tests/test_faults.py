"""Faults a new user meets (issue 10): each case either converts the input or stops early with one clear line.

The training cases use the session's tiny synthetic data set with 1-epoch models (seconds), not the notebook
fixtures' trained models: what is checked is which models are trained or reused, not how good they are.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dynad import fingerprint, run_folder
from dynad.checks import check_config
from dynad.cli import main as cli_main
from dynad.config import PRESETS, ConfigError, load_preset
from dynad.data import DatasetError, load_image, load_mask, make_index, open_rgb
from dynad.experiment import fit_pipeline, is_complete, run_experiment, run_identity
from dynad.pipeline import DynAD
from dynad.provenance import atomic_write, resolve_device, save_torch, tmp_tag
from dynad.results import marker_matches, write_marker
from dynad.training import CheckpointError, train

pytestmark = pytest.mark.usefixtures("one_thread")

# 1-epoch models, no adaptation, training statistics for `score`: every stage runs in about a second.
FAST = ["autoencoder.epochs=1", "denoiser.epochs=1", "adaptation.epochs=0", "anomaly_map.normalization=train",
        "eval.num_figures=0"]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def own_cache(tmp_path_factory):
    """Fingerprint caches in a temporary folder, not in the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DYNAD_CACHE", str(tmp_path_factory.mktemp("dynad-cache")))
        yield


@pytest.fixture(scope="module")
def data_copy(shared_data, tmp_path_factory) -> Path:
    """A private copy of the tiny synthetic set, which the tests may change."""
    root, _ = shared_data
    return Path(shutil.copytree(root, tmp_path_factory.mktemp("faults") / "synthetic"))


@pytest.fixture(scope="module")
def fitted(data_copy, tmp_path_factory, own_cache):
    """(pipeline, models folder) fitted with 1-epoch models on the copy."""
    models = tmp_path_factory.mktemp("faults-models")
    pipe, _, _ = fit_pipeline(load_preset("tiny", FAST), "synthetic", data_copy, "board", models, progress=False)
    return pipe, models


# ------------------------------------------------------------------------------------------------------------------
# 1. Stored models are keyed on the training files' contents.


def test_changed_training_images_train_new_models(data_copy, fitted, tmp_path):
    _, models = fitted
    before = {p.name for p in models.glob("*.pt")}
    assert {n.split("-")[0] for n in before} == {"autoencoder", "denoiser"}
    # The same files under another path reuse the stored models ...
    moved = Path(shutil.copytree(data_copy, tmp_path / "moved"))
    fit_pipeline(load_preset("tiny", FAST), "synthetic", moved, "board", models, progress=False)
    assert {p.name for p in models.glob("*.pt")} == before
    # ... and new training images in the same place train new ones.
    good = sorted((moved / "board" / "train" / "good").glob("*.png"))
    shutil.copyfile(good[1], good[0])
    pipe, _, _ = fit_pipeline(load_preset("tiny", FAST), "synthetic", moved, "board", models, progress=False)
    after = {p.name for p in models.glob("*.pt")}
    assert len(after - before) == 2, after - before  # a new autoencoder and a new denoiser
    assert pipe.provenance["data"]["train_fingerprint"] != fitted[0].provenance["data"]["train_fingerprint"]


def test_fingerprint_is_cached_and_sees_same_size_edits(tmp_path, monkeypatch):
    files = []
    for i in range(5):
        p = tmp_path / f"{i}.bin"
        p.write_bytes(bytes([i]) * 100)
        files.append(p)
    calls = []
    real = fingerprint._file_hash
    monkeypatch.setattr(fingerprint, "_file_hash", lambda p: calls.append(p) or real(p))
    first = fingerprint.data_fingerprint(files, tmp_path)
    assert len(calls) == 5
    assert fingerprint.data_fingerprint(files, tmp_path) == first and len(calls) == 5  # from the cache
    files[2].write_bytes(b"x" * 100)  # same size, other content
    os.utime(files[2], ns=(1, 1))
    assert fingerprint.data_fingerprint(files, tmp_path) != first and len(calls) == 6  # only that file rehashed


# ------------------------------------------------------------------------------------------------------------------
# 2. 16-bit and float greyscale files.


def test_16_bit_and_float_images_and_masks_load_by_their_range(tmp_path):
    grey8 = (np.arange(48 * 40).reshape(48, 40) * 7 % 256).astype(np.uint8)
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    Image.fromarray(grey8.astype(np.float32) / 255).save(tmp_path / "gf.tiff")
    ref = load_image(tmp_path / "g8.png", 32)
    for name in ("g16.png", "gf.tiff"):
        x = load_image(tmp_path / name, 32)
        assert x.shape == (3, 32, 32) and torch.allclose(x, ref, atol=2 / 255), name
        # Pictures of them (predict's overlays, synth --from-images) too, not clipped to white at 255.
        assert np.array_equal(np.asarray(open_rgb(tmp_path / name)), np.repeat(grey8[..., None], 3, axis=2)), name
    mask8 = np.zeros((48, 40), np.uint8)
    mask8[10:30, 5:20] = 255
    Image.fromarray(mask8).save(tmp_path / "m8.png")
    Image.fromarray(mask8.astype(np.uint16) * 257).save(tmp_path / "m16.png")
    assert torch.equal(load_mask(tmp_path / "m16.png", 32), load_mask(tmp_path / "m8.png", 32))
    Image.fromarray(np.full((8, 8), 3.0, np.float32)).save(tmp_path / "bad.tiff")
    with pytest.raises(DatasetError, match="bad.tiff.*float values in \\[3, 3\\]"):
        load_image(tmp_path / "bad.tiff", 32)


# ------------------------------------------------------------------------------------------------------------------
# 3. DynAD.score checks and converts its input.


@pytest.fixture(scope="module")
def normal_image(data_copy) -> torch.Tensor:
    return load_image(next((data_copy / "board" / "test" / "good").glob("*.png")), 32)  # (3, 32, 32)


def test_score_converts_what_it_can(fitted, normal_image):
    pipe, _ = fitted
    x = normal_image[None]  # (1, 3, 32, 32)
    ref = pipe.score(x)
    assert ref["anomaly_map"].shape == (1, 32, 32)
    unbatched = pipe.score(normal_image)
    assert torch.allclose(unbatched["pred_score"], ref["pred_score"])
    as_uint8 = ((x + 1) * 127.5).round().to(torch.uint8)
    assert torch.allclose(pipe.score(as_uint8)["pred_score"], ref["pred_score"], atol=1e-2)
    assert torch.allclose(pipe.score(x.double())["pred_score"], ref["pred_score"], atol=1e-5)
    grey = x.mean(dim=1, keepdim=True)  # (1, 1, 32, 32)
    assert torch.allclose(pipe.score(grey)["pred_score"], pipe.score(grey.expand(-1, 3, -1, -1))["pred_score"])
    tall = torch.nn.functional.interpolate(x, size=(40, 24), mode="bilinear", align_corners=False)
    # squeezed to 32 x 32 otherwise than the square training images: `dynad predict` warned, the Python API did not
    with pytest.warns(UserWarning, match=r"^1 of 1 images given to score\(\) have another aspect ratio \(width / "
                      r"height\) than the training images \(1.00\): each is 24 x 40 px \(0.60\)"):
        out = pipe.score(tall)
    assert out["anomaly_map"].shape == (1, 40, 24) and out["reconstruction"].shape == (1, 3, 40, 24)
    assert torch.isfinite(out["pred_score"]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the training images' own shape, and a square input larger or smaller
        for size in [(32, 32), (64, 64), (33, 31)]:
            pipe.score(torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False))


def test_score_takes_pil_images_and_channels_last_arrays_and_load_takes_the_run_folder(fitted, normal_image, tmp_path):
    """What `np.asarray(Image.open(f))` gives is (H, W, 3): it was refused as "channels first" expected; a PIL image
    was refused outright, and `DynAD.load("runs/board")` (the folder) failed with IsADirectoryError."""
    pipe, _ = fitted
    hwc = ((normal_image.permute(1, 2, 0) + 1) * 127.5).round().to(torch.uint8).numpy()  # (32, 32, 3) uint8
    ref = pipe.score(torch.from_numpy(hwc).permute(2, 0, 1))["pred_score"]
    assert torch.equal(pipe.score(hwc)["pred_score"], ref)
    assert torch.allclose(pipe.score(np.stack([hwc, hwc]))["pred_score"], ref.repeat(2), atol=1e-5)  # a batch of 2
    assert torch.equal(pipe.score(Image.fromarray(hwc))["pred_score"], ref)
    grey8 = Image.fromarray(hwc[..., 0])
    grey16 = Image.fromarray(hwc[..., 0].astype(np.uint16) * 257)  # read by its range, as a 16-bit file loads
    assert torch.equal(pipe.score(grey16)["pred_score"], pipe.score(grey8)["pred_score"])
    pipe.save(tmp_path / "run" / "pipeline.pt")
    assert torch.equal(DynAD.load(tmp_path / "run", device="cpu").score(hwc)["pred_score"], ref)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x: (x + 1) * 127.5, r"expects float images in \[-1, 1\].*got values in \[21, 224\]"),
        (lambda x: x.clone().index_put_((torch.tensor([0]),) * 4, torch.tensor(float("inf"))), "non-finite"),
        (lambda x: (x > 0).long(), "dtype torch.int64"),
        (lambda x: x.repeat(1, 2, 1, 1)[:, :5], r"C 1 or 3.*\(1, 5, 32, 32\)"),
        (lambda x: x[None], r"shape \(1, 1, 3, 32, 32\)"),
    ],
)
def test_score_rejects_what_it_cannot_convert(fitted, normal_image, make, message):
    with pytest.raises(ValueError, match=message):
        fitted[0].score(make(normal_image[None]))


# ------------------------------------------------------------------------------------------------------------------
# 4. Settings are checked before anything is trained.

BAD_SETTINGS = [
    ("dic.num_bins=0", "dic.num_bins = 0"),
    ("dic.k=-1", "dic.k = -1"),
    ("reconstruction.num_steps=0", "reconstruction.num_steps = 0"),
    ("dic.t_max=1000", r"dic.t_max = 1000: must be in \[1, 999\]"),
    ("dic.fixed_t_hat=1200", "dic.fixed_t_hat = 1200"),
    ("anomaly_map.kernel_size=4", "anomaly_map.kernel_size = 4: must be odd"),
    # tiny's maps are 32 px: a reflection pad of 32 does not fit (torch said so after training)
    ("anomaly_map.kernel_size=65", "anomaly_map.kernel_size = 65: must be at most 63 for maps of data.image_size 32"),
    # sigma 8 with tiny's kernel of 5 px: the Gaussian was cut to a box (weights 1 to 0.97), without a word
    ("anomaly_map.sigma=8", r"anomaly_map.kernel_size = 5: covers only \+-2 px, 0.25 sigma of anomaly_map.sigma 8, so "
     r"the Gaussian is cut to a box: a kernel_size of at least 33 \(\+-2 sigma; dynad tune sets 2 \* round\(4 sigma\) "
     r"\+ 1 = 65\), or a smaller sigma"),
    ("anomaly_map.sigma=0", r"anomaly_map.sigma = 0.0: must be > 0"),  # the kernel check divided by it
    ("anomaly_map.score_exponent=-1", "anomaly_map.score_exponent = -1.0: must be >= 0"),
    ("data.batch_size=0", "data.batch_size = 0"),
    ("data.image_size=33", "data.image_size = 33: must be divisible by the autoencoder's downsampling factor 2"),
    ("reconstruction.eta=-1", "reconstruction.eta = -1.0"),
    ("autoencoder.epochs=0", "autoencoder.epochs = 0"),
    ("dic.rounding=ceil", "dic.rounding = 'ceil': must be one of floor, nearest"),
    ("features.knn_layer=layer9", "features.knn_layer = 'layer9'"),
    ("denoiser.ema_decay=1", r"denoiser.ema_decay = 1.0: must be in \[0, 1\)"),
    ("predict.threshold_quantile=99", r"predict.threshold_quantile = 99.0: must lie in \[0, 1\]"),
    ("gradient_accumulation_steps=0", "gradient_accumulation_steps = 0: must be >= 1"),  # it trained nothing
    # the patch-kNN peer used a one-patch memory bank, or divided by zero, without a word
    ("baselines.coreset_ratio=0", r"baselines.coreset_ratio = 0.0: must lie in \(0, 1\]"),
    ("baselines.projection_dim=0", "baselines.projection_dim = 0: must be >= 1"),
    ("baselines.exact_below=-5", "baselines.exact_below = -5: must be >= 0"),
    ("dic.t_max=[40", r"override 'dic.t_max=\[40': '\[40' is not a value"),  # was a yaml traceback
    ("=40", "override '=40' is not of the form key=value"),
]


@pytest.mark.parametrize("override, message", BAD_SETTINGS)
def test_bad_setting_names_key_value_and_range(override, message):
    with pytest.raises(ConfigError, match=message):
        check_config(load_preset("tiny", [override]))


def test_every_preset_passes_the_checks():
    for name in PRESETS:
        cfg = load_preset(name)
        for category in cfg.per_category:
            check_config(cfg.for_category(category))
        check_config(cfg)


@pytest.mark.parametrize("text, message", [
    ("dic:\n\tt_max: 40\n", r"not valid YAML at line 2, column 1: found character '\\t'"),  # a tab indent
    ("denoiser: {epochs: 4\n", r"not valid YAML at line 2, column 1: expected ',' or '}'"),
    ("- dic.t_max: 40\n", r"expected a mapping of settings .*, got a list"),
    ("fidelity: reference\ndic: 40\n", r"dic: expected a mapping, got 40"),  # the profile fills dic.* in
    # BTAD's categories are 01, 02, 03: YAML reads 01 as the number 1, and its settings were never applied
    ("per_category:\n  01: {reconstruction.eta: 3}\n", r"per_category: the key 1 is not text \(YAML reads 01 as the "
     r"number 1, yes as true\): write it in quotes as it is named, e.g. '01'"),
    # a misspelt setting of one category failed only when that category ran, without the category in the message
    ("per_category:\n  capsule: {reconstruction.etaa: 3}\n", r"per_category.capsule: unknown config key "
     r"reconstruction.etaa"),
    ("per_category:\n  capsule: {reconstruction.eta: high}\n", r"per_category.capsule: reconstruction.eta: "
     r"expected a number, got 'high'"),
    ("per_category:\n  capsule: 3\n", r"per_category.capsule: expected a mapping, got 3"),  # an AttributeError
])  # fmt: skip
def test_a_preset_file_that_is_not_a_mapping_of_settings_is_one_line(tmp_path, text, message):
    """Each of these ended in a yaml or AttributeError traceback."""
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: {message}"):
        load_preset(path)


def test_k_beyond_the_training_set_fails_before_training(data_copy, tmp_path):
    # 24 training images, 2 of them held out for validation (validation.fraction 0.1)
    with pytest.raises(ConfigError, match=r"dic.k = 30: needs at least 31 training images .* the data have 22 "
                       r"\(24 training images, 2 held out for validation\): a dic.k of at most 21, or more "
                       r"training images"):
        fit_pipeline(load_preset("tiny", FAST + ["dic.k=30"]), "synthetic", data_copy, "board", tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_test_images_of_another_aspect_ratio_are_warned_about_before_training(data_copy, tmp_path, capsys,
                                                                              monkeypatch):
    """Test images from another camera or crop: resized to S x S as every image is, they are squeezed otherwise than
    the training images, which alone raises their scores (`dynad predict` says the same of new images)."""
    import dynad.experiment

    root = Path(shutil.copytree(data_copy, tmp_path / "synthetic"))
    first = sorted((root / "board" / "test" / "good").glob("*.png"))[0]
    with Image.open(first) as im:
        im.resize((2 * im.width, im.height)).save(first)

    class Trained(Exception):
        pass

    def stop(*args, **kwargs):
        raise Trained

    monkeypatch.setattr(dynad.experiment.DynAD, "fit", stop)
    with pytest.raises(Trained):
        fit_pipeline(load_preset("tiny", FAST), "synthetic", root, "board", tmp_path / "m", progress=False)
    err = capsys.readouterr().err
    w, h = Image.open(first).size
    assert (f"WARNING (synthetic/board): 1 of {len(list((root / 'board' / 'test').rglob('*.png')))} test images have "
            f"another aspect ratio (width / height) than the training images (1.00): {first} is {w} x {h} px (2.00). "
            f"Every image is resized to 32 x 32 px") in err
    shutil.copy(data_copy / "board" / "test" / "good" / first.name, first)  # back to its square self: quiet
    with pytest.raises(Trained):
        fit_pipeline(load_preset("tiny", FAST), "synthetic", root, "board", tmp_path / "m", progress=False)
    assert "aspect ratio" not in capsys.readouterr().err


@pytest.mark.parametrize("setting, message", [
    ("denoiser.init_from={missing}", "denoiser checkpoint {missing} to fine-tune from does not exist$"),
    ("denoiser.down_block_types=[DownBlock2D,FooBlock2D]", "denoiser: diffusers' UNet2DModel refuses these settings: "
     "FooBlock2D does not exist.$"),
    ("features.weights={missing}", "feature-extractor weights '{missing}' not found \\(looked at: {missing}\\)\\. "),
    ("features.layers=[features.3,features.6,features.99]",
     "features.layers: MobileNetV2 has no block named 'features.99' \\(its blocks: features, features.0, .*, "
     "features.18, classifier, classifier.0, classifier.1\\)$"),
    ("features.backbone=timm:resnet_nonexist", "features.backbone = 'timm:resnet_nonexist': timm has no such model$"),
    ("features.backbone=torchvision:no_such_net", "features.backbone = 'torchvision:no_such_net': torchvision has no "
     "such model$"),
    ("features.backbone=torchvision:resnet18", "features.weights: .*mobilenet_v2-b0353104.pth: weights do not match "
     "torchvision:resnet18"),
])  # fmt: skip
def test_a_model_that_cannot_be_built_fails_before_training_in_one_line(data_copy, tmp_path, setting, message):
    """The UNet and the feature extractor were built after training: a missing resnet34 file of the mvtec preset
    ended its hours of training with the error, a missing checkpoint to fine-tune from came once the autoencoder was
    trained, and a block that diffusers or the backbone does not have, or a backbone name, ended in a traceback."""
    missing = str(tmp_path / "missing.pt")
    cfg = load_preset("tiny", FAST + [setting.format(missing=missing)])
    with pytest.raises((ConfigError, FileNotFoundError), match=message.format(missing=re.escape(missing))):
        fit_pipeline(cfg, "synthetic", data_copy, "board", tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("keep, message", [
    ("good", r"the 4 test images \(.*/board/test/good\) are all normal: image AUROC needs anomalous test images too"),
    ("spot", r"the \d+ test images \(.*/board/test/spot\) are all anomalous: image AUROC needs normal test images"),
])  # fmt: skip
def test_a_test_split_of_one_class_fails_before_training(data_copy, tmp_path, capsys, keep, message):
    """It used to train, infer, and then stop on a traceback in the metrics."""
    root = tmp_path / "synthetic"
    shutil.copytree(data_copy / "board" / "train", root / "board" / "train")
    shutil.copytree(data_copy / "board" / "test" / keep, root / "board" / "test" / keep)
    if keep != "good":
        shutil.copytree(data_copy / "board" / "ground_truth" / keep, root / "board" / "ground_truth" / keep)
    else:
        for extra in sorted((root / "board" / "test" / "good").glob("*.png"))[4:]:
            extra.unlink()
    fast = [a for kv in FAST for a in ("--set", kv)]
    rc = cli_main(["run", "--preset", "tiny", "--dataset", "folder", "--root", str(root), "--category", "board",
                   "--out", str(tmp_path / "out"), "--models", str(tmp_path / "models"), *fast])  # fmt: skip
    err = capsys.readouterr().err.rsplit("\r", 1)[-1]
    assert rc == 2 and re.match("error: " + message, err), err
    assert not list((tmp_path / "models").glob("*"))  # nothing was trained


def test_cli_reports_a_bad_setting_in_one_line(tmp_path, capsys):
    rc = cli_main(["run", "--preset", "tiny", "--category", "board", "--root", str(tmp_path / "nowhere"),
                   "--out", str(tmp_path / "out"), "--set", "anomaly_map.kernel_size=4"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "error: anomaly_map.kernel_size = 4: must be odd and >= 1"
    assert not (tmp_path / "out").exists()


def test_a_gpu_named_outright_and_absent_is_an_error_not_the_cpu(shared_data, tmp_path, capsys):
    """`--set device=cuda` on a machine without one ran on the CPU without a word (it is recorded, but a paper run
    would take days). `dynad predict --device` and `DynAD.load` go through the same `resolve_device`. On a GPU
    machine the first index past its GPUs is the absent one."""
    absent = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    rc = cli_main(["run", "--preset", "tiny", "--category", "board", "--root", str(shared_data[0]),
                   "--out", str(tmp_path / "out"), "--set", f"device={absent}"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith(f"error: device = '{absent}': this machine has ") and "CUDA device" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=f"device = '{absent}': this machine has "):
        resolve_device(absent)
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cli_reports_an_unreadable_image_on_a_line_of_its_own(shared_data, tmp_path, capsys):
    """The loading bar is erased before the error, which names the file (it used to be glued to the bar's line)."""
    root = Path(shutil.copytree(shared_data[0], tmp_path / "synthetic"))
    bad = sorted((root / "board" / "train" / "good").glob("*.png"))[3]
    bad.write_bytes(b"not a png")
    rc = cli_main(["run", "--preset", "tiny", "--category", "board", "--root", str(root),
                   "--out", str(tmp_path / "out"), "--models", str(tmp_path / "models")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "load train" in err  # the bar was drawn
    last = err.rsplit("\r", 1)[-1]  # what a terminal shows on the last line
    assert last.startswith(f"error: cannot read image file {bad}: UnidentifiedImageError"), last


# ------------------------------------------------------------------------------------------------------------------
# 5, 6. Run folders never mix; done-markers are checked against their outputs.


@pytest.fixture(scope="module")
def one_run(data_copy, fitted, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults-run") / "out"
    run_experiment(load_preset("tiny", FAST), "synthetic", data_copy, "board", out, models_dir=fitted[1],
                   progress=False, save_pipeline=False, figures=False)  # fmt: skip
    return out


def test_run_records_the_data_fingerprint_and_a_manifest(one_run):
    metrics = json.loads((one_run / "metrics.json").read_text())
    assert metrics["data"]["train_fingerprint"].startswith("sha256:")
    assert metrics["data"]["test_fingerprint"] != metrics["data"]["train_fingerprint"]
    manifest = json.loads((one_run / run_folder.MANIFEST).read_text())
    assert {"metrics.json", "per_image.csv", "maps.npz", "dic.json"} <= set(manifest["files"])
    assert is_complete(one_run)


def test_other_config_into_a_used_folder_is_refused(data_copy, fitted, one_run, tmp_path):
    from dynad.reproduce import _other_settings

    before = (one_run / "metrics.json").read_bytes()
    other = load_preset("tiny", FAST + ["reconstruction.eta=2"])
    eta = load_preset("tiny", FAST).reconstruction.eta
    # The refusal names the setting that differs (it used to give two config hashes).
    with pytest.raises(run_folder.RunFolderError, match=re.escape(f"output folder {one_run} holds the results of "
                                                                  f"another run (reconstruction.eta: {eta} -> 2.0)")):
        run_experiment(other, "synthetic", data_copy, "board", one_run, models_dir=fitted[1], progress=False)
    assert (one_run / "metrics.json").read_bytes() == before and is_complete(one_run)
    # Complete, but not a run of these settings: what notebooks 00, 04 and 05 now ask before reusing a folder.
    assert is_complete(one_run, run_identity(load_preset("tiny", FAST), "synthetic", "board"))
    assert not is_complete(one_run, run_identity(other, "synthetic", "board"))
    # `dynad reproduce --set reconstruction.eta=2` into the same runs: the category fails before any notebook.
    shutil.copytree(one_run, tmp_path / "board" / "eval")
    assert _other_settings(tmp_path / "board", load_preset("tiny", FAST), "synthetic", "board") is None
    assert _other_settings(tmp_path / "board", other, "synthetic", "board") == (
        f"{tmp_path / 'board'} holds a finished run of other settings (reconstruction.eta: {eta} -> 2.0): pass --runs "
        f"DIR to keep both, or delete {tmp_path / 'board'} to replace it")  # fmt: skip


def test_reproduce_fails_a_category_of_other_settings_and_warns_when_only_the_preset_file_changed(
    one_run, tmp_path, capsys
):
    from dynad.reproduce import CATEGORY_NOTEBOOKS, Task, _refuse_other_settings

    shutil.copytree(one_run, tmp_path / "board" / "eval")
    other = load_preset("tiny", FAST + ["reconstruction.eta=2"])
    task = Task("tiny", "synthetic", "board", "data", str(tmp_path / "board"), [], list(CATEGORY_NOTEBOOKS))
    _refuse_other_settings([task], other)  # its notebooks are not done with these parameters: they would run
    assert task.error.startswith(f"{tmp_path / 'board'} holds a finished run of other settings")
    # Every notebook done with the same parameters: an edited preset file (or a newer dynad). Kept, with a warning.
    for stem in CATEGORY_NOTEBOOKS:
        write_marker(tmp_path / "board", stem, task.parameters())
    task.error = None
    _refuse_other_settings([task], other)
    err = capsys.readouterr().err
    assert task.error is None and err.startswith("WARNING (synthetic/board): ") and "(reconstruction.eta: " in err
    assert err.rstrip().endswith("(the preset file or dynad changed since), so it is kept as it is")


def test_a_folder_claimed_by_a_run_that_stopped_before_any_result_is_taken_over(data_copy, fitted, tmp_path, capsys):
    """A mistyped category stopped the run after it had claimed OUT; the corrected command was then refused as
    "another run" (category: 'bord' -> 'board'). So was a rerun with dic.k lowered after the check against the
    training images. A folder that holds results is still refused (the test above)."""
    out, models = tmp_path / "out", fitted[1]
    fast = [a for kv in FAST for a in ("--set", kv)]
    argv = ["run", "--preset", "tiny", "--root", str(data_copy), "--out", str(out), "--models", str(models), *fast]
    assert cli_main([*argv, "--category", "bord"]) == 2
    assert cli_main([*argv, "--category", "board", "--set", "dic.k=30"]) == 2
    assert "needs at least 31 training images" in capsys.readouterr().err
    assert cli_main([*argv, "--category", "board"]) == 0
    assert is_complete(out) and json.loads((out / run_folder.CLAIM).read_text())["category"] == "board"


def test_run_made_before_run_json_is_recognised(one_run, tmp_path):
    """A folder without run.json is identified by its metrics.json: the same run may continue, another may not."""
    legacy = Path(shutil.copytree(one_run, tmp_path / "legacy"))
    identity = json.loads((legacy / run_folder.CLAIM).read_text())
    (legacy / run_folder.CLAIM).unlink()
    with pytest.raises(run_folder.RunFolderError, match="config: "):
        run_folder.claim(legacy, {**identity, "config": "0" * 12})
    run_folder.claim(legacy, identity)
    other = {**identity, "config": "0" * 12}
    run_folder.claim(legacy, other, overwrite=True)  # --overwrite: the folder is the new run's, not yet complete
    assert json.loads((legacy / run_folder.CLAIM).read_text()) == other and not is_complete(legacy)


def test_changed_or_half_written_run_is_not_complete(one_run, tmp_path):
    copy = Path(shutil.copytree(one_run, tmp_path / "copy"))
    assert is_complete(copy)
    with open(copy / "per_image.csv", "a") as f:  # a file rewritten after the manifest
        f.write("x\n")
    assert not is_complete(copy)
    copy = Path(shutil.copytree(one_run, tmp_path / "copy2"))
    identity = json.loads((copy / run_folder.CLAIM).read_text())
    run_folder.claim(copy, identity)  # a rerun that starts, then is killed before its manifest
    assert not is_complete(copy)


def test_done_marker_with_a_deleted_output_does_not_match(one_run, tmp_path):
    run_dir = Path(shutil.copytree(one_run, tmp_path / "run" / "eval")).parent
    params = {"preset": "tiny"}
    write_marker(run_dir, "04_evaluate", params, outputs=[run_dir / "eval" / "metrics.json"])
    assert marker_matches(run_dir, "04_evaluate", params)
    (run_dir / "eval" / "maps.npz").unlink()  # not a listed output, but part of the run folder's manifest
    assert not marker_matches(run_dir, "04_evaluate", params)
    shutil.rmtree(run_dir / "eval")
    assert not marker_matches(run_dir, "04_evaluate", params)


# ------------------------------------------------------------------------------------------------------------------
# 7. Folders, disks and checkpoints.


def test_a_file_where_a_folder_goes_is_named_as_such(fitted, data_copy, tmp_path, capsys):
    """A file given as --out, --models or --root: "not writable: File exists", "does not exist" (the root), or a
    bare OSError (`dynad predict`, `dynad tune`) before."""
    pipe, models = fitted
    afile = tmp_path / "afile"
    afile.write_text("")
    pipe.save(tmp_path / "run" / "pipeline.pt")
    image = next((data_copy / "board" / "test" / "good").glob("*.png"))
    fast = [a for kv in FAST for a in ("--set", kv)]
    common = ["--preset", "tiny", "--category", "board", "--models", str(models), *fast]
    not_a_folder = f"{afile} is a file, not a folder"
    cases = [
        (["run", *common, "--root", str(data_copy), "--out", str(afile)], f"output folder {not_a_folder}"),
        (["run", "--preset", "tiny", "--category", "board", "--root", str(data_copy), "--out", str(tmp_path / "o"),
          "--models", str(afile)], f"models folder {not_a_folder}"),
        (["run", *common, "--root", str(afile), "--out", str(tmp_path / "o")],
         f"data folder {afile} (dataset 'synthetic') is a file, not a folder (an archive must be unpacked first)"),
        (["tune", *common, "--root", str(data_copy), "--out", str(afile), "--grid", "dic.t_max=20"],
         f"output folder {not_a_folder}"),
        (["predict", str(tmp_path / "run"), str(image), "--out", str(afile)], f"output folder {not_a_folder}"),
        (["reproduce", "--preset", "tiny", "--runs", str(afile), "--results", str(tmp_path / "r")],
         f"runs folder {not_a_folder}"),  # it failed after the first notebook; a results folder, after them all
        (["reproduce", "--preset", "tiny", "--runs", str(tmp_path / "r"), "--results", str(afile / "sub")],
         f"results folder {afile / 'sub'}: {not_a_folder}"),
    ]  # fmt: skip
    for argv, message in cases:
        assert cli_main(argv) == 2, argv
        assert capsys.readouterr().err.rsplit("\r", 1)[-1].strip() == f"error: {message}", argv
    assert afile.read_text() == ""


def test_unwritable_or_full_folders_fail_before_training(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(run_folder.RunFolderError,
                       match=f"output folder {tmp_path / 'file' / 'out'}: {tmp_path / 'file'} is a file, not a folder"):
        run_folder.prepare_folder(tmp_path / "file" / "out", 0, "output folder")
    with pytest.raises(run_folder.RunFolderError, match=f"models folder {tmp_path} has .* MiB free; this run needs"):
        run_folder.prepare_folder(tmp_path, 1 << 60, "models folder")

    def read_only(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(run_folder.tempfile, "TemporaryFile", read_only)
    with pytest.raises(run_folder.RunFolderError, match="is not writable: Permission denied"):
        run_folder.prepare_folder(tmp_path, 0, "output folder")


TORCH_SHORT_WRITE = "[enforce fail at inline_container.cc:664] . unexpected pos 8331712 vs 8331608"


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), RuntimeError(TORCH_SHORT_WRITE)])
def test_full_disk_names_the_file(tmp_path, error):
    target = tmp_path / "ckpt.pt"
    with pytest.raises(OSError, match=f"no space left on the device to write {target}"):
        with atomic_write(target) as f:
            f.write(b"partial")
            raise error
    assert list(tmp_path.iterdir()) == []  # no temporary file left


def test_ctrl_c_inside_torch_save_is_ctrl_c_not_a_full_disk(tmp_path):
    """Ctrl-C while a checkpoint was written ended as `error: no space left on the device … (65784.5 MiB free)`,
    exit 2: torch's writer turns the interrupt into a RuntimeError ("unexpected pos"), read as a short write."""
    import io

    class Interrupted(io.BytesIO):  # Ctrl-C arrives during the third write torch makes
        calls = 0

        def write(self, data):
            Interrupted.calls += 1
            if Interrupted.calls == 3:
                raise KeyboardInterrupt
            return super().write(data)

    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "ckpt.pt"):
            torch.save({"w": torch.zeros(1000)}, Interrupted())  # raises RuntimeError, from the KeyboardInterrupt
    assert Interrupted.calls == 3 and list(tmp_path.iterdir()) == []


def test_truncated_checkpoint_is_named_moved_aside_and_retrained(tmp_path):
    model = torch.nn.Linear(2, 1)
    ckpt = tmp_path / "m.pt"
    save_torch(ckpt, {"model": model.state_dict()})
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {ckpt}"):
        DynAD.load(ckpt)
    data = torch.randn(8, 2)
    with pytest.warns(UserWarning, match=f"cannot read checkpoint {ckpt}.*moved it to {ckpt}.corrupt"):
        losses = train(model, data, lambda m, b, g: m(b).pow(2).mean(), epochs=2, batch_size=4, lr=0.1,
                       ckpt_path=ckpt, config={"x": 1}, progress=False)  # fmt: skip
    assert len(losses) == 2 and (tmp_path / "m.pt.corrupt").is_file()
    assert torch.load(ckpt, weights_only=False)["complete"]


def test_a_diverged_training_stops_with_one_line_and_keeps_the_checkpoint_before(tmp_path):
    """A learning rate too high: the loss became NaN, training went on, the NaN weights were saved as a finished model,
    and the run ended in scikit-learn's 'Input X contains NaN' traceback (or, with gradient_accumulation_steps 0,
    which trained nothing, finished with numbers)."""
    from dynad.training import DivergedError

    calls = []

    def loss(m, b, g):
        calls.append(1)
        value = m(b).pow(2).mean()
        return value * float("inf") if len(calls) == 2 else value  # the second epoch's step blows up

    model, ckpt = torch.nn.Linear(2, 1), tmp_path / "m.pt"
    with pytest.raises(DivergedError, match=r"^denoiser: the training loss is inf after epoch 2 of 3 \(learning rate "
                       r"0.1\): the weights diverged and are not kept; a smaller learning rate trains them"):
        train(model, torch.randn(4, 2), loss, epochs=3, batch_size=4, lr=0.1, ckpt_path=ckpt, config={"x": 1},
              checkpoint_every=1, desc="denoiser", progress=False)  # fmt: skip
    kept = torch.load(ckpt, weights_only=False)
    assert kept["epoch"] == 1 and not kept["complete"] and all(v.isfinite().all() for v in kept["model"].values())


def test_a_diverged_run_is_one_line_at_the_command_line(data_copy, tmp_path, capsys):
    assert cli_main(["run", "--preset", "tiny", "--dataset", "synthetic", "--root", str(data_copy), "--category",
                     "board", "--out", str(tmp_path / "run"), "--set", "autoencoder.epochs=1",
                     "--set", "denoiser.lr=1e30"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert re.fullmatch(r"error: denoiser: the training loss is nan after epoch \d+ of 20 \(learning rate 1e\+30\): the "
                        r"weights diverged and are not kept; a smaller learning rate trains them", err[-1])
    assert not any("Traceback" in line for line in err)


@pytest.mark.parametrize("command, says", [
    ("predict", "the same command scores only the others"),
    ("synth", "nothing was changed"),
    ("reproduce", "finished notebooks are kept"),
])  # fmt: skip
def test_ctrl_c_says_what_each_command_keeps(monkeypatch, capsys, command, says):
    """The line spoke of checkpoints for every command, also for `dynad predict` and `dynad synth`, which have none."""
    from dynad import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"_{command}", interrupted)
    argv = {"predict": ["predict", "run", "x.png", "--out", "o"], "synth": ["synth"], "reproduce": ["reproduce"]}
    assert cli_main(argv[command]) == 130
    line = cli.INTERRUPTED[command]
    assert capsys.readouterr().err.strip() == f"interrupted: {line}" and says in line
    subcommands = cli.build_parser()._subparsers._group_actions[0].choices
    assert set(subcommands) == set(cli.INTERRUPTED)  # a new command needs its line


def test_ctrl_c_is_one_line_and_keeps_the_checkpoint(shared_data, tmp_path):
    """Ctrl-C during training printed a 30-line traceback ending in torch's autograd engine."""
    import signal
    import time

    models = tmp_path / "models"
    cmd = [sys.executable, "-m", "dynad", "run", "--preset", "tiny", "--category", "board", "--root",
           str(shared_data[0]), "--out", str(tmp_path / "out"), "--models", str(models), "--set",
           "denoiser.epochs=10000", "--set", "denoiser.checkpoint_every=1"]  # fmt: skip
    # SIGINT as a terminal sends it (a test runner's worker may ignore it, and children inherit that).
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(models.glob("denoiser-*.pt")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert err.rstrip().splitlines()[-1].startswith("interrupted: what was written is kept")
    (ckpt,) = models.glob("denoiser-*.pt")
    assert torch.load(ckpt, weights_only=False)["epoch"] >= 1  # the next run goes on from here


# ------------------------------------------------------------------------------------------------------------------
# 8. Leftovers and small faults.


def test_tmp_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = tmp_tag().split("-")[0]
    stale = tmp_path / f".denoiser-abc.pt.{host}-{dead.stdout.strip()}.x1y2z3.tmp"
    live = tmp_path / f".denoiser-abc.pt.{tmp_tag()}.a1b2c3.tmp"
    stale.write_bytes(b"0" * 1000)
    live.write_bytes(b"0")
    with pytest.warns(UserWarning, match=f"removed 1 temporary file.* in {tmp_path}"):
        run_folder.prepare_folder(tmp_path, 0, "models folder")
    assert not stale.exists() and live.exists()  # a live writer (here: this process) keeps its file


def test_broken_symlink_image_is_reported(data_copy, tmp_path):
    root = Path(shutil.copytree(data_copy, tmp_path / "data"))
    good = root / "board" / "train" / "good"
    (good / "zzz.png").symlink_to(tmp_path / "gone.png")
    with pytest.warns(UserWarning, match=f"skipped 1 broken symbolic link.* in {good} \\(first: zzz.png\\)"):
        index = make_index("synthetic", root, "board")
    assert (index.split == "train").sum() == 24


def test_synth_with_a_bad_size_is_one_line(tmp_path, capsys):
    assert cli_main(["synth", "--size", "32", "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.strip() == "error: dynad synth: image_size must be in 64..256, got 32"


def test_results_get_the_users_umask(tmp_path):
    with atomic_write(tmp_path / "a.json", "w") as f:
        f.write("{}")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run_folder.clean_stale_tmp(tmp_path) == []


def _fake_papermill(monkeypatch, errors: list[BaseException]) -> list[str]:
    """papermill.execute_notebook raising `errors` in turn, then writing its output; returns the calls' outputs."""
    import papermill

    calls: list[str] = []

    def execute_notebook(_source, output, **_kw):
        calls.append(output)
        if errors:
            raise errors.pop(0)
        Path(output).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return calls


def test_a_kernel_that_dies_before_its_first_cell_is_started_once_more(tmp_path, monkeypatch, capsys):
    from dynad.reproduce import execute

    calls = _fake_papermill(monkeypatch, [RuntimeError("Kernel died before replying to kernel_info")])
    execute("04_evaluate", tmp_path / "out" / "04.ipynb", {}, tmp_path / "run")
    assert len(calls) == 2 and (tmp_path / "out" / "04.ipynb").is_file()
    assert "starting the kernel again" in capsys.readouterr().err


def test_a_kernel_that_never_starts_or_an_error_in_a_cell_is_not_retried(tmp_path, monkeypatch):
    from dynad.reproduce import execute

    died = lambda: RuntimeError("Kernel died before replying to kernel_info")  # noqa: E731
    calls = _fake_papermill(monkeypatch, [died(), died(), died()])
    with pytest.raises(RuntimeError, match="Kernel died"):
        execute("04_evaluate", tmp_path / "04.ipynb", {}, tmp_path)
    assert len(calls) == 2  # one retry, then the error is the category's

    calls = _fake_papermill(monkeypatch, [RuntimeError("a cell raised this")])
    with pytest.raises(RuntimeError, match="a cell raised this"):
        execute("04_evaluate", tmp_path / "04.ipynb", {}, tmp_path)
    assert len(calls) == 1


def test_ray_that_does_not_start_is_one_line_and_runs_nothing(shared_data, tmp_path, monkeypatch, capsys):
    """Ray raises a bare Exception when its local node does not come up in time (seen on a loaded 2-core machine):
    `dynad reproduce --executor ray` says so on a line of its own, with what to do, and starts no notebook."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[cluster]')")

    def init(**kwargs):
        raise Exception("The current node timed out during startup.")  # noqa: TRY002 - Ray's own type

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setenv("RAY_raylet_start_wait_time_s", "90")
    rc = cli_main(["reproduce", "--preset", "tiny", "--datasets", "synthetic", "--categories", "board",
                   "--root", f"synthetic={shared_data[0]}", "--runs", str(tmp_path / "runs"),
                   "--results", str(tmp_path / "results"), "--executor", "ray"])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 2 and out.endswith("\n")  # the progress bar's line is finished before the error
    assert err == (
        "error: Ray did not start, so no category ran (Exception: The current node timed out during startup.); "
        "on a loaded machine set RAY_raylet_start_wait_time_s above 90 s, or use --executor local\n"
    )
    assert not list(tmp_path.rglob("*.ipynb"))
