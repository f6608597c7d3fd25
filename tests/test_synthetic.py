"""The built-in synthetic dataset: determinism, MVTec layout, exact masks, the four defect scales, `ensure`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from dynad import synthetic
from dynad.data import make_index
from dynad.synthetic import CATEGORIES, DEFECT_TYPES, SynthConfig, ensure, generate, render

SMALL = SynthConfig(image_size=64, n_train=4, n_test_good=2, n_test_per_defect=2, seed=0)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("synth") / "data", SMALL, progress=False)


def test_same_config_gives_identical_bytes_and_another_seed_other_images(small: Path, tmp_path: Path) -> None:
    again = _files(generate(tmp_path / "again", SMALL, progress=False))
    assert again == _files(small)
    other = _files(generate(tmp_path / "other", SynthConfig(**{**SMALL.__dict__, "seed": 1}), progress=False))
    assert other.keys() == again.keys()
    pngs = [k for k in again if k.endswith(".png") and "ground_truth" not in k]
    assert all(other[k] != again[k] for k in pngs)


def test_changing_a_count_does_not_reshuffle_the_other_images(small: Path, tmp_path: Path) -> None:
    fewer = generate(tmp_path / "fewer", SynthConfig(**{**SMALL.__dict__, "n_train": 2}), progress=False)
    shared = {k: v for k, v in _files(fewer).items() if k.endswith(".png")}
    assert shared and all(_files(small)[k] == v for k, v in shared.items())


def test_mvtec_layout_counts_and_masks(small: Path) -> None:
    manifest = json.loads((small / synthetic.MANIFEST).read_text())
    assert manifest["config"]["seed"] == SMALL.seed and manifest["version"] == synthetic.FORMAT_VERSION
    for category in CATEGORIES:
        root = small / category
        assert sorted(p.name for p in (root / "train" / "good").iterdir()) == ["000.png", "001.png", "002.png", "003.png"]
        assert sorted(p.name for p in (root / "test").iterdir()) == sorted(("good", *DEFECT_TYPES))
        assert len(list((root / "test" / "good").iterdir())) == SMALL.n_test_good
        # Good images have no masks: ground_truth holds exactly the defect types.
        assert sorted(p.name for p in (root / "ground_truth").iterdir()) == sorted(DEFECT_TYPES)
        for image_path in root.rglob("*.png"):
            if "ground_truth" not in image_path.parts:
                image = Image.open(image_path)
                assert image.mode == "RGB" and image.size == (SMALL.image_size, SMALL.image_size)
        for defect in DEFECT_TYPES:
            names = sorted(p.name for p in (root / "test" / defect).iterdir())
            assert names == [f"{i:03d}.png" for i in range(SMALL.n_test_per_defect)]
            for name in names:
                mask = _load(root / "ground_truth" / defect / name.replace(".png", "_mask.png"))
                assert mask.shape == (SMALL.image_size, SMALL.image_size) and mask.dtype == np.uint8
                assert set(np.unique(mask)) == {0, 255}


def test_four_scales_span_orders_of_magnitude() -> None:
    area = {d: np.mean([render(c, d, 128, [3, i])[1].mean() for c in CATEGORIES for i in range(6)]) for d in DEFECT_TYPES}
    assert area["spot"] < area["scratch"] < area["patch"] < area["missing"]
    assert area["missing"] / area["spot"] >= 50
    assert area["spot"] < 0.002 and area["missing"] > 0.06


@pytest.mark.parametrize("category", CATEGORIES)
@pytest.mark.parametrize("defect", DEFECT_TYPES)
def test_defect_changes_exactly_the_masked_pixels_and_clearly(category: str, defect: str) -> None:
    for i in range(3):
        clean, empty = render(category, None, 128, [5, i])
        broken, mask = render(category, defect, 128, [5, i])
        assert not empty.any() and mask.any()
        diff = np.abs(broken.astype(int) - clean.astype(int)).max(axis=2)
        assert not diff[~mask].any(), "pixels outside the mask changed"
        assert (diff[mask] > 40).mean() > 0.9, "the defect is faint or drew nothing over part of its mask"


def test_board_missing_shows_bare_green_board_where_the_part_was(small: Path) -> None:
    for i in range(SMALL.n_test_per_defect):
        image = _load(small / "board" / "test" / "missing" / f"{i:03d}.png").astype(int)
        mask = _load(small / "board" / "ground_truth" / "missing" / f"{i:03d}_mask.png") > 0
        r, g, b = image[mask].T
        assert ((g > r + 40) & (g > b + 20)).mean() > 0.9


def test_tiles_missing_shows_grey_mortar_instead_of_tiles(small: Path) -> None:
    for i in range(SMALL.n_test_per_defect):
        image = _load(small / "tiles" / "test" / "missing" / f"{i:03d}.png").astype(int)
        mask = _load(small / "tiles" / "ground_truth" / "missing" / f"{i:03d}_mask.png") > 0
        warmth = image[..., 0] - image[..., 2]  # terracotta is red-heavy, the mortar bed is grey
        assert warmth[mask].mean() < 20 < warmth[~mask].mean()


def test_ensure_reuses_a_matching_dataset_and_regenerates_otherwise(tmp_path: Path) -> None:
    out = tmp_path / "data"
    assert ensure(out, SMALL, progress=False) == out
    probe = out / "tiles" / "train" / "good" / "000.png"
    stamp = probe.stat().st_mtime_ns
    ensure(out, SMALL, progress=False)
    assert probe.stat().st_mtime_ns == stamp

    (out / "board" / "test" / "spot" / "001.png").unlink()  # an incomplete copy is not reused
    ensure(out, SMALL, progress=False)
    assert (out / "board" / "test" / "spot" / "001.png").is_file() and probe.stat().st_mtime_ns != stamp

    before = probe.read_bytes()
    ensure(out, SynthConfig(**{**SMALL.__dict__, "seed": 7}), progress=False)
    assert json.loads((out / synthetic.MANIFEST).read_text())["config"]["seed"] == 7
    assert probe.read_bytes() != before


def test_interrupted_generation_keeps_the_previous_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = generate(tmp_path / "data", SMALL, progress=False)
    before = _files(out)
    calls = []

    def failing_save(path: Path, array: np.ndarray) -> None:
        calls.append(path)
        if len(calls) > 5:
            raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "_save_png", failing_save)
    with pytest.raises(KeyboardInterrupt):
        generate(out, SynthConfig(**{**SMALL.__dict__, "seed": 3}), progress=False)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no partial folder left beside it


def test_refuses_to_replace_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate(tmp_path / "real", SMALL, progress=False)
    assert (tmp_path / "real" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("bad", [{"image_size": 32}, {"categories": ("carpet",)}, {"n_train": 0}, {"seed": -1}])
def test_invalid_config_is_rejected(bad: dict) -> None:
    with pytest.raises(ValueError):
        SynthConfig(**bad)


def _photographs(folder: Path, n: int, size: int = 96) -> list[Path]:
    """n textured 'photographs' (smooth noise, each its own), as a user's folder of normal images would hold."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = ndimage.gaussian_filter(rng.uniform(0, 255, (size, size, 3)), sigma=(1.5, 1.5, 0))
        paths.append(folder / f"photo_{i:02d}.jpg")
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(paths[-1], quality=95)
    return paths


def test_defects_on_photographs_make_a_folder_data_set_with_exact_masks(tmp_path: Path) -> None:
    photos = _photographs(tmp_path / "normals", 14)
    out = synthetic.on_photographs(photos, tmp_path / "bed", "surface", image_size=64, n_train=4, n_test_good=2,
                                   n_test_per_defect=2, progress=False)  # fmt: skip
    index = make_index("folder", tmp_path / "bed", "surface")
    assert (index.split == "train").sum() == 4 and ((index.split == "test") & (index.label == 0)).sum() == 2
    assert sorted(index.defect_type[index.label == 1].unique()) == sorted(synthetic.DEFECT_TYPES)
    # A defect changes its masked pixels and nothing else: outside the mask the image is the resized photograph.
    for k, defect in enumerate(synthetic.DEFECT_TYPES):
        for i in range(2):
            src = photos[4 + 2 + 2 * k + i]
            photo = np.asarray(Image.open(src).convert("RGB").resize((64, 64), Image.BICUBIC)).astype(int)
            image = np.asarray(Image.open(out / "test" / defect / f"{i:03d}.png")).astype(int)
            mask = np.asarray(Image.open(out / "ground_truth" / defect / f"{i:03d}_mask.png")) > 127
            assert mask.any()
            assert (image[~mask] == photo[~mask]).all()
            assert np.abs(image[mask] - photo[mask]).mean() > 3, defect
    missing = np.asarray(Image.open(out / "test" / "missing" / "000.png")).astype(float)
    mask = np.asarray(Image.open(out / "ground_truth" / "missing" / "000_mask.png")) > 127
    assert missing[mask].std(axis=0).max() < 1.0  # flat: the texture is gone


def test_defects_on_16_bit_photographs_are_those_on_their_8_bit_twins(tmp_path: Path) -> None:
    """A 16-bit greyscale photograph is read by its range (as training reads it), not clipped to white."""
    photos8 = _photographs(tmp_path / "normals", 14)
    photos16 = [tmp_path / "deep" / f"{p.stem}.png" for p in photos8]
    photos16[0].parent.mkdir()
    for p, deep in zip(photos8, photos16):
        grey = np.asarray(Image.open(p).convert("L"))
        Image.fromarray(grey).save(p.with_suffix(".png"))
        Image.fromarray(grey.astype(np.uint16) * 257).save(deep)  # the same picture at 16 bits
    kw = dict(image_size=32, n_train=4, n_test_good=2, n_test_per_defect=2, progress=False)
    a = synthetic.on_photographs([p.with_suffix(".png") for p in photos8], tmp_path / "a", "s", **kw)
    b = synthetic.on_photographs(photos16, tmp_path / "b", "s", **kw)
    written = sorted(f.relative_to(a) for f in a.rglob("*.png"))
    assert len(written) == 4 + 2 + 2 * 8
    for f in written:
        assert np.array_equal(np.asarray(Image.open(a / f)), np.asarray(Image.open(b / f))), f


def test_defects_on_photographs_say_how_many_are_needed_and_keep_existing_folders(tmp_path: Path) -> None:
    photos = _photographs(tmp_path / "normals", 3)
    with pytest.raises(ValueError, match=r"14 photographs are needed .* 3 were given: give more, or ask for fewer"):
        synthetic.on_photographs(photos, tmp_path / "bed", "surface", image_size=64, n_train=4, n_test_good=2,
                                 n_test_per_defect=2, progress=False)  # fmt: skip
    (tmp_path / "bed" / "surface").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="exists"):
        synthetic.on_photographs(photos * 5, tmp_path / "bed", "surface", image_size=64, n_train=4, n_test_good=2,
                                 n_test_per_defect=2, progress=False)  # fmt: skip


def test_dynad_synth_from_images_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dynad.cli import main as cli_main

    photos = _photographs(tmp_path / "normals", 14)
    # What a folder copied from a Mac holds beside the photographs: resource forks and hidden folders, not images.
    (tmp_path / "normals" / "._photo_00.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "normals" / ".thumbnails").mkdir()
    shutil.copy(photos[0], tmp_path / "normals" / ".thumbnails" / "photo_00.jpg")
    args = ["synth", "--from-images", str(tmp_path / "normals"), "--out", str(tmp_path / "bed"), "--category", "tile",
            "--size", "64", "--n-train", "4", "--n-test-good", "2", "--n-test-per-defect", "2"]  # fmt: skip
    assert cli_main(args) == 0
    assert len(list((tmp_path / "bed" / "tile" / "train" / "good").glob("*.png"))) == 4
    out = capsys.readouterr().out
    assert f"--root {tmp_path / 'bed'} --category tile --out runs/tile" in out  # runnable as printed
    assert "photographs were used" not in out  # all 14 were
    args[args.index("--category") + 1], args[args.index("--n-train") + 1] = "fewer", "2"
    assert cli_main(args) == 0
    assert "12 of the 14 photographs were used, the first in path order" in capsys.readouterr().out
    assert cli_main(["synth", "--from-images", str(tmp_path / "nowhere")]) == 2
    assert "nowhere is not a folder" in capsys.readouterr().err


def test_dynad_synth_from_images_passes_over_masks_beside_the_photographs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Magnetic Tile's MT_Free keeps each photograph's (empty) mask beside it as x.png: not a normal surface."""
    from dynad.cli import main as cli_main

    photos = _photographs(tmp_path / "normals", 14)
    for i, p in enumerate(photos):
        mask = np.zeros((48, 48), np.uint8)
        mask[10:20, 10:30] = 255 * (i % 2)  # empty masks and masks with a defect, both two colours at most
        Image.fromarray(mask).save(p.with_suffix(".png"))
    args = ["synth", "--from-images", str(tmp_path / "normals"), "--out", str(tmp_path / "bed"), "--category", "tile",
            "--size", "32", "--n-train", "4", "--n-test-good", "2", "--n-test-per-defect", "2"]  # fmt: skip
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "13 files were left out as masks or blank frames, of at most two colours" in out
    assert "(" + str(tmp_path / "normals" / "photo_00.png") + ", ...; left_out.txt)" in out
    assert "14 of the 28 files were used, the first in path order" in out  # the last mask was not reached
    bed = tmp_path / "bed" / "tile"
    sources = [line.split(" <- ")[1] for line in (bed / "sources.txt").read_text().splitlines()]
    assert len(sources) == 14 and all(src.endswith(".jpg") for src in sources)
    assert len((bed / "left_out.txt").read_text().splitlines()) == 13
    for png in (bed / "train" / "good").glob("*.png"):
        assert len(np.unique(np.asarray(Image.open(png)))) > 2, png  # a photograph, not a mask
    # Too few photographs once the masks are passed over: the count says why.
    with pytest.raises(ValueError, match=r"14 photographs are needed .* 20 were given, of which 10 are masks or blank"):
        synthetic.on_photographs(sorted((tmp_path / "normals").iterdir())[:20], tmp_path / "few", "s", image_size=32,
                                 n_train=4, n_test_good=2, n_test_per_defect=2, progress=False)  # fmt: skip
    assert not (tmp_path / "few" / "s").exists()


@pytest.mark.parametrize("option, value, message", [
    ("--size", "0", "image_size must be >= 32 px, got 0"),  # 0 is not "the default"
    ("--n-train", "-1", "n_train must be >= 1 and the test counts >= 0, got -1"),
    ("--seed", "-1", "seed must be >= 0, got -1"),
    ("--category", "../elsewhere", "category must be one folder name"),
])  # fmt: skip
def test_dynad_synth_from_images_rejects_bad_options_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture, option: str, value: str, message: str
) -> None:
    from dynad.cli import main as cli_main

    _photographs(tmp_path / "normals", 14)
    args = ["synth", "--from-images", str(tmp_path / "normals"), "--out", str(tmp_path / "bed"), "--n-train", "4",
            "--n-test-good", "2", "--n-test-per-defect", "2", option, value]  # fmt: skip
    assert cli_main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bed").exists() and not (tmp_path / "elsewhere").exists()


def test_dynad_synth_size_0_is_an_error_not_the_default(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dynad.cli import main as cli_main

    assert cli_main(["synth", "--out", str(tmp_path / "synthetic"), "--size", "0", "--n-train", "2"]) == 2
    assert "image_size must be in 64..256, got 0" in capsys.readouterr().err
    assert not (tmp_path / "synthetic").exists()
