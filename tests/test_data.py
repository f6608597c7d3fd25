"""Dataset readers: every layout on small trees of real image files, every fault, and the Magnetic Tile data."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageFile

from dynad import synthetic
from dynad.config import apply_overrides, load_preset
from dynad.data import (
    COLUMNS,
    DATASETS,
    KNOWN_CATEGORIES,
    MASK_ENCODING,
    DatasetError,
    ImageDataset,
    has_masks,
    load_image,
    load_mask,
    make_index,
    mask_is_empty,
    open_rgb,
)
from dynad.experiment import load_split

MTD_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "magnetic-tile"
W, H = 30, 20  # deliberately not square: loading must resize without cropping


def write_image(path: Path, mode: str = "RGB", color=(255, 0, 128)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (W, H), color if mode == "RGB" else 200).save(path)
    return path


def write_mask(path: Path) -> Path:
    """Defect on the left half of the image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((H, W), np.uint8)
    m[:, : W // 2] = 255
    Image.fromarray(m).save(path)
    return path


def mvtec_tree(root: Path, category: str, mode: str = "RGB") -> Path:
    cat = root / category
    for i in range(3):
        write_image(cat / "train" / "good" / f"{i:03d}.png", mode)
    for i in range(2):
        write_image(cat / "test" / "good" / f"{i:03d}.png", mode)
    for defect, n in (("crack", 2), ("broken", 1)):
        for i in range(n):
            write_image(cat / "test" / defect / f"{i:03d}.png", mode)
            write_mask(cat / "ground_truth" / defect / f"{i:03d}_mask.png")
    return cat


def check_index(index: pd.DataFrame, n_train: int, n_test_good: int, defects: dict[str, int]) -> None:
    """Shared checks of make_index's contract."""
    assert list(index.columns) == list(COLUMNS)
    assert index.index.tolist() == list(range(len(index)))
    key = list(zip(index.split, index.defect_type, index.image_path))
    assert key == sorted(key)
    train, test = index[index.split == "train"], index[index.split == "test"]
    assert len(train) == n_train and (train.label == 0).all() and (train.defect_type == "good").all()
    assert ((test.defect_type == "good") == (test.label == 0)).all()
    assert (test.label == 0).sum() == n_test_good
    assert test[test.label == 1].defect_type.value_counts().to_dict() == defects
    normal = index[index.label == 0]
    assert normal.mask_path.map(lambda m: m is None).all()
    for p in [*index.image_path, *index[index.label == 1].mask_path]:
        assert Path(p).is_absolute() and Path(p).is_file()
    assert index.label.dtype == np.int64


# ----------------------------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("dataset, category, mode", [("mvtec", "bottle", "RGB"), ("mvtec", "grid", "L"),
                                                     ("synthetic", "tiles", "RGB")])  # fmt: skip
def test_mvtec_layout(tmp_path, dataset, category, mode):
    cat = mvtec_tree(tmp_path, category, mode)
    index = make_index(dataset, tmp_path, category)
    check_index(index, 3, 2, {"crack": 2, "broken": 1})
    assert (index.category == category).all()
    bad = index[index.label == 1]
    for image, mask, defect in zip(bad.image_path, bad.mask_path, bad.defect_type):
        assert Path(mask) == cat / "ground_truth" / defect / f"{Path(image).stem}_mask.png"
        assert Path(image).parent == cat / "test" / defect

    item = ImageDataset(index, 16)[int(bad.index[0])]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["mask"].shape == (1, 16, 16) and set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["label"] == 1 and item["index"] == int(bad.index[0])
    if mode == "L":  # greyscale repeated to 3 equal channels
        assert torch.equal(item["image"][0], item["image"][1]) and torch.equal(item["image"][0], item["image"][2])
        assert item["image"][0, 0, 0].item() == pytest.approx(200 / 127.5 - 1)
    normal = ImageDataset(index, 16)[int(index.index[index.label == 0][0])]
    assert normal["label"] == 0 and normal["mask"].sum() == 0


def test_generated_synthetic_data(tmp_path):
    """The built-in generator's output reads back with the MVTec reader."""
    cfg = synthetic.SynthConfig(image_size=64, n_train=2, n_test_good=1, n_test_per_defect=1, categories=("board",))
    root = synthetic.generate(tmp_path / "synth", cfg, progress=False)
    index = make_index("synthetic", root, "board")
    check_index(index, 2, 1, {d: 1 for d in synthetic.DEFECT_TYPES})


def test_load_image_values_and_resize(tmp_path):
    path = write_image(tmp_path / "a.png")
    x = load_image(path, 8)
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    # (255, 0, 128) maps to (1, -1, 128/127.5 - 1) everywhere: a uniform image stays uniform under resize.
    assert torch.allclose(x[0], torch.ones(8, 8)) and torch.allclose(x[1], -torch.ones(8, 8))
    assert torch.allclose(x[2], torch.full((8, 8), 128 / 127.5 - 1), atol=1e-6)
    grey = load_image(write_image(tmp_path / "g.png", "L"), 5)
    assert grey.shape == (3, 5, 5) and torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_load_mask_binarises_after_resize(tmp_path):
    path = write_mask(tmp_path / "m.png")  # left 15 of 30 columns
    m = load_mask(path, 8)
    assert m.shape == (1, 8, 8) and m.dtype == torch.float32
    # The edge falls exactly between output columns 3 and 4: 0.5 keeps the left half, 0.0 dilates by the blur.
    assert m[0].sum(0).tolist() == [8.0] * 4 + [0.0] * 4
    dilated = load_mask(path, 8, threshold=0.0, resize="bilinear")
    assert dilated[0].sum(0).tolist() == [8.0] * 5 + [0.0] * 3
    assert torch.equal(load_mask(path, 8, resize="bilinear"), m)  # the paper's 0.5 agrees with "area" here
    assert torch.equal(load_mask(None, 8), torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="threshold"):
        load_mask(path, 8, threshold=1.0)


def test_area_resize_keeps_every_defect(tmp_path):
    # A 1-pixel defect at 96 px -> 8 px: bilinear then > 0.5 loses it; "area" keeps exactly the pixel holding it.
    m = np.zeros((96, 96), np.uint8)
    m[50, 70] = 255
    Image.fromarray(m).save(tmp_path / "dot.png")
    assert load_mask(tmp_path / "dot.png", 8, resize="bilinear").sum() == 0
    area = load_mask(tmp_path / "dot.png", 8)
    assert area.sum() == 1 and area[0, 50 // 12, 70 // 12] == 1
    # For an integer factor "area" is a max-pool of the binary mask (a defect pixel never vanishes, none is added).
    rng = np.random.default_rng(0)
    for density in (0.001, 0.02, 0.3):
        m = (rng.random((96, 96)) < density).astype(np.uint8) * 255
        Image.fromarray(m).save(tmp_path / "r.png")
        pooled = torch.nn.functional.max_pool2d(torch.from_numpy(m > 127).float()[None, None], 12)[0]  # (1, 8, 8)
        assert torch.equal(load_mask(tmp_path / "r.png", 8), pooled)
    with pytest.raises(ValueError, match="resize"):
        load_mask(tmp_path / "r.png", 8, resize="nearest")


def write_class_mask(path: Path, value: int = 1) -> Path:
    """VisA's published convention: the defect holds a class value (1, sometimes a small integer), not 255."""
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((H, W), np.uint8)
    m[:, : W // 2] = value
    Image.fromarray(m).save(path)
    return path


def test_class_value_masks(tmp_path):
    for value in (1, 3):
        path = write_class_mask(tmp_path / f"m{value}.png", value)
        expected = load_mask(write_mask(tmp_path / "grey.png"), 8)
        assert expected.sum() == 32
        assert torch.equal(load_mask(path, 8, encoding="class"), expected)
        assert torch.equal(load_mask(path, 8), expected)  # "auto": below half scale, so class values
        assert load_mask(path, 8, encoding="grey").sum() == 0  # the fault: /255 > 0.5 empties it
    # A 0/255 mask reads the same under every convention.
    for encoding in ("auto", "class", "grey"):
        assert torch.equal(load_mask(tmp_path / "grey.png", 8, encoding=encoding), expected), encoding


def test_colour_masks_are_read_by_their_brightest_channel(tmp_path):
    """A red annotation saved as JPEG read three times too large here (1,906 pixels for 640): its grey value (76)
    passed for a class index, so every pixel of the JPEG ringing around it above 0 was a defect. A layer with
    transparency is read by its opacity."""
    for colour in ((255, 0, 0), (0, 0, 255)):
        m = np.zeros((64, 64, 3), np.uint8)
        m[20:36, 10:50] = colour  # 640 defect pixels
        Image.fromarray(m).save(tmp_path / "m.jpg", quality=75)
        assert load_mask(tmp_path / "m.jpg", 64).sum() == pytest.approx(640, rel=0.01), colour
    # An annotation layer: red strokes on transparent white read as all defect (4,096 pixels), now by their opacity.
    layer = np.full((64, 64, 4), (255, 255, 255, 0), np.uint8)
    layer[20:36, 10:50] = (255, 0, 0, 255)
    Image.fromarray(layer, "RGBA").save(tmp_path / "layer.png")
    assert load_mask(tmp_path / "layer.png", 64).sum() == 640


def visa_published_tree(root: Path, mask_writer=write_mask) -> Path:
    lines = ["object,split,label,image,mask"]
    for cat in ("candle", "pcb1"):
        for i in range(3):
            image = f"{cat}/Data/Images/Normal/{i:04d}.JPG"
            write_image(root / image)
            lines.append(f"{cat},{'train' if i < 2 else 'test'},normal,{image},")
        for i in range(2):
            image, mask = f"{cat}/Data/Images/Anomaly/{i:03d}.JPG", f"{cat}/Data/Masks/Anomaly/{i:03d}.png"
            write_image(root / image)
            mask_writer(root / mask)
            lines.append(f"{cat},test,anomaly,{image},{mask}")
    csv = root / "split_csv" / "1cls.csv"
    csv.parent.mkdir(parents=True)
    csv.write_text("\n".join(lines) + "\n")
    return csv


def test_visa_published_layout(tmp_path):
    visa_published_tree(tmp_path)
    index = make_index("visa", tmp_path, "candle")
    check_index(index, 2, 1, {"bad": 2})
    assert (index.category == "candle").all()
    assert all("/candle/" in p for p in index.image_path)  # pcb1 rows of the shared CSV are left out
    bad = index[index.label == 1]
    assert [Path(m).stem for m in bad.mask_path] == [Path(p).stem for p in bad.image_path]
    assert ImageDataset(index, 12)[int(bad.index[0])]["mask"].sum() > 0


def test_visa_published_class_masks_through_load_split(tmp_path):
    # The published layout with its 0/1 masks, read the way a run reads it (experiment.load_split).
    visa_published_tree(tmp_path, write_class_mask)
    index = make_index("visa", tmp_path, "candle")
    cfg = load_preset("tiny", ["data.image_size=8"])
    test = load_split(index, "test", cfg, progress=False, mask_encoding=MASK_ENCODING["visa"])
    assert test["labels"].tolist() == [1, 1, 0] and test["defective_without_mask"] == 0
    assert [int(m.sum()) for m in test["masks"]] == [32, 32, 0]
    with pytest.raises(DatasetError, match=r"all 2 defective test images have an empty mask at 8 px"):
        load_split(index, "test", cfg, progress=False, mask_encoding="grey")  # the old reading, stopped early


def test_folder_class_masks_detected(tmp_path):
    cat = mvtec_tree(tmp_path, "part")
    for mask in (cat / "ground_truth").rglob("*.png"):
        write_class_mask(mask)
    index = make_index("folder", tmp_path, "part")
    test = load_split(index, "test", load_preset("tiny", ["data.image_size=8"]), False, MASK_ENCODING["folder"])
    assert [int(m.sum()) for m in test["masks"][test["labels"] == 1]] == [32, 32, 32]


def test_empty_masks_counted_and_warned(tmp_path):
    cat = mvtec_tree(tmp_path, "bottle")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(cat / "ground_truth" / "crack" / "001_mask.png")  # empty file
    dot = np.zeros((H, W), np.uint8)
    dot[5, 5] = 255  # one pixel: vanishes at 8 px under bilinear > 0.5
    Image.fromarray(dot).save(cat / "ground_truth" / "broken" / "000_mask.png")
    index = make_index("mvtec", tmp_path, "bottle")
    cfg = load_preset("tiny", ["data.image_size=8"])
    with pytest.warns(UserWarning, match=r"1 of 3 defective test images have an empty mask at 8 px \(1 of them empty"):
        test = load_split(index, "test", cfg, False, "grey")
    assert (test["defective_without_mask"], test["defective_without_mask_in_data"]) == (1, 1)
    bilinear = apply_overrides(cfg, ["data.mask_resize=bilinear"])
    with pytest.warns(UserWarning, match=r"2 of 3 defective test images"):
        test = load_split(index, "test", bilinear, False, "grey")
    assert (test["defective_without_mask"], test["defective_without_mask_in_data"]) == (2, 1)


def test_dark_training_images_are_warned_about(tmp_path, recwarn):
    """12-bit camera values in 16-bit files read 16 times too dark: the run says so; ordinary images pass quietly."""
    cat = mvtec_tree(tmp_path, "cam")
    cfg = load_preset("tiny", ["data.image_size=8"])
    load_split(make_index("folder", tmp_path, "cam"), "train", cfg, False)
    assert not [w for w in recwarn if "dark" in str(w.message)]
    for i, f in enumerate(sorted((cat / "train" / "good").glob("*.png"))):
        Image.fromarray(np.full((H, W), 4095 // (i + 1), np.uint16)).save(f)  # 000.png at the 12-bit maximum
    with pytest.warns(UserWarning, match=r"the 3 training images are dark: the brightest pixel of all of them is at "
                                         r"6\.2% of full scale \(.*cam/train/good/000\.png\)"):  # fmt: skip
        load_split(make_index("folder", tmp_path, "cam"), "train", cfg, False)


def test_visa_converted_layout(tmp_path):
    cat = tmp_path / "pcb1"
    for i in range(3):
        write_image(cat / "train" / "good" / f"{i:04d}.JPG")
    write_image(cat / "test" / "good" / "0100.JPG")
    for i in range(2):
        write_image(cat / "test" / "bad" / f"{i:03d}.JPG")
        write_mask(cat / "ground_truth" / "bad" / f"{i:03d}.png")
    index = make_index("visa", tmp_path, "pcb1")
    check_index(index, 3, 1, {"bad": 2})
    bad = index[index.label == 1]
    assert [Path(m).name for m in bad.mask_path] == ["000.png", "001.png"]


def test_btad_layout(tmp_path):
    # Class 01: .bmp images with .png masks; class 02: .png images and masks; class 03: .bmp images and masks.
    for cls, image_ext, mask_ext in (("01", ".bmp", ".png"), ("02", ".png", ".png"), ("03", ".bmp", ".bmp")):
        c = tmp_path / cls
        for i in range(2):
            write_image(c / "train" / "ok" / f"{i:04d}{image_ext}")
        write_image(c / "test" / "ok" / f"0100{image_ext}")
        for i in range(3):
            write_image(c / "test" / "ko" / f"{i:04d}{image_ext}")
            write_mask(c / "ground_truth" / "ko" / f"{i:04d}{mask_ext}")
        index = make_index("btad", tmp_path, cls)
        check_index(index, 2, 1, {"ko": 3})
        bad = index[index.label == 1]
        assert all(Path(m).suffix == mask_ext and Path(m).stem == Path(p).stem
                   for m, p in zip(bad.mask_path, bad.image_path))  # fmt: skip
        assert all(Path(p).suffix == image_ext for p in index.image_path)
        item = ImageDataset(index, 10)[int(bad.index[0])]
        assert item["image"].shape == (3, 10, 10) and item["mask"].sum() > 0


def test_folder_layout(tmp_path):
    cat = tmp_path / "my_widget"
    write_image(cat / "train" / "good" / "a.jpg")
    write_image(cat / "train" / "good" / "b.JPEG")
    write_image(cat / "train" / "good" / "c.tif")
    (cat / "train" / "good" / "notes.txt").write_text("not an image")
    write_image(cat / "test" / "good" / "d.BMP")
    write_image(cat / "test" / "dent" / "e.png")
    write_mask(cat / "ground_truth" / "dent" / "e_mask.png")  # MVTec-style name
    write_image(cat / "test" / "dent" / "f.TIFF")
    write_mask(cat / "ground_truth" / "dent" / "f.png")  # same-stem name
    index = make_index("folder", tmp_path, "my_widget")
    check_index(index, 3, 1, {"dent": 2})
    bad = index[index.label == 1]
    assert [Path(m).name for m in bad.mask_path] == ["e_mask.png", "f.png"]
    assert ImageDataset(index, 6)[int(bad.index[1])]["image"].shape == (3, 6, 6)


def test_folder_with_image_labels_only(tmp_path):
    """A folder category without ground_truth/ (inspection records often have labels, not masks): the test/<type>/
    images are anomalous by their folder, with no mask; one missing mask where ground_truth/ exists still raises,
    and so does a benchmark layout without it."""
    cat = tmp_path / "my_widget"
    write_image(cat / "train" / "good" / "a.png")
    write_image(cat / "test" / "good" / "b.png")
    write_image(cat / "test" / "dent" / "c.png")
    write_image(cat / "test" / "scratch" / "d.jpg")
    index = make_index("folder", tmp_path, "my_widget")
    assert list(zip(index.split, index.defect_type, index.label)) == [
        ("test", "dent", 1), ("test", "good", 0), ("test", "scratch", 1), ("train", "good", 0)]  # fmt: skip
    assert index.mask_path.isna().all() and not has_masks(index)
    test = load_split(index, "test", load_preset("tiny", ["data.image_size=8"]), False, MASK_ENCODING["folder"])
    assert test["masks"] is None and test["labels"].tolist() == [1, 0, 1]  # sorted: dent, good, scratch

    (cat / "test" / "OK").mkdir()  # a normal folder under another name would count as anomalous: refused
    with raises_naming(cat / "test" / "OK", cat / "test" / "good", "image labels only"):
        make_index("folder", tmp_path, "my_widget")
    (cat / "test" / "OK").rmdir()
    write_mask(cat / "ground_truth" / "dent" / "c_mask.png")  # masks for some types: all anomalous images need one
    with raises_naming(cat / "test" / "scratch" / "d.jpg", "no mask", "no ground_truth/ folder at all is read with "
                       "image labels only"):  # fmt: skip
        make_index("folder", tmp_path, "my_widget")
    write_mask(cat / "ground_truth" / "scratch" / "d.png")
    assert has_masks(make_index("folder", tmp_path, "my_widget"))

    bottle = mvtec_tree(tmp_path / "mvtec", "bottle")
    shutil.rmtree(bottle / "ground_truth")
    with raises_naming(bottle / "test" / "broken" / "000.png", "no mask"):
        make_index("mvtec", tmp_path / "mvtec", "bottle")


def test_exif_orientation_is_applied_to_images_and_in_the_mask_shape_check(tmp_path):
    """A phone JPEG stores the picture sideways with EXIF Orientation 6 (shown turned 90 degrees clockwise); a mask
    drawn on the shown picture is tall where the stored image is wide. It was refused as another aspect ratio, and
    on a square photo it would have been read a quarter turn away from its defect."""
    stored = np.zeros((20, 30, 3), np.uint8)  # (H, W, 3): wide as stored
    stored[:, :10] = 255  # the stored left third: shown at the top after a clockwise quarter turn
    exif = Image.Exif()
    exif[0x0112] = 6
    cat = tmp_path / "phone"
    write_image(cat / "train" / "good" / "a.png")
    write_image(cat / "test" / "good" / "b.png")
    image = cat / "test" / "dent" / "c.jpg"
    image.parent.mkdir(parents=True)
    Image.fromarray(stored).save(image, exif=exif, quality=100)
    shown = np.zeros((30, 20), np.uint8)  # (H, W): tall, as shown
    shown[:10] = 255
    (cat / "ground_truth" / "dent").mkdir(parents=True)
    Image.fromarray(shown).save(cat / "ground_truth" / "dent" / "c_mask.png")
    index = make_index("folder", tmp_path, "phone")
    item = ImageDataset(index, 12)[int(np.flatnonzero(index.label == 1)[0])]
    bright = item["image"].mean(0) > 0  # (12, 12) where the picture is white
    assert bright[:3].all() and not bright[5:].any()  # the top, as shown
    assert torch.equal(item["mask"][0].bool(), bright)
    assert open_rgb(image).size == (20, 30)  # dynad predict's overlays are drawn on the shown picture too


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_read_as_shown_whatever_colour_they_hide(tmp_path, mode):
    """A cut-out product photo: transparent pixels store a colour no viewer shows (black from one tool, white or the
    old background from another). Two files that look the same differed by the whole range there, so a background
    turned into a defect; both are now read over black, as the commonest (0, 0, 0, 0) is."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    alpha = np.zeros((16, 16), np.uint8)
    alpha[4:12, 4:12] = 255
    alpha[4:12, 12] = 128  # a soft edge: half its colour over black
    indices = np.where(alpha == 0, 63, rng.integers(0, 63, (16, 16))).astype(np.uint8)  # for the palette image
    files = []
    for hidden in (0, 255):
        a = np.dstack([rgb, alpha])
        a[alpha == 0, :3] = hidden
        im = Image.fromarray(a)
        if mode == "LA":
            im = im.convert("LA")
        elif mode == "P":  # a palette whose last entry is transparent (tRNS), as GIF-like PNGs store cut-outs
            im = Image.fromarray(indices, mode="P")
            im.putpalette(list(np.random.default_rng(1).integers(0, 256, 63 * 3)) + [hidden] * 3)
            im.info["transparency"] = 63
        files.append(tmp_path / f"{hidden}.png")
        im.save(files[-1])
        with Image.open(files[-1]) as saved:
            assert saved.mode == mode and (mode != "P" or saved.info["transparency"] == 63)
    first, second = (np.asarray(open_rgb(f), dtype=np.int16) for f in files)
    assert np.array_equal(first, second)
    assert (first[alpha == 0] == 0).all()  # over black
    assert torch.equal(load_image(files[0], 16), load_image(files[1], 16))
    if mode == "RGBA":
        assert np.abs(first[4:12, 12] - rgb[4:12, 12].astype(np.int16) // 2).max() <= 1  # half over black


def test_folder_masks_in_other_image_formats(tmp_path):
    """Annotation tools also export JPEG, BMP or TIFF masks; a folder data set reads them (only .png before)."""
    cat = tmp_path / "my_widget"
    write_image(cat / "train" / "good" / "a.png")
    write_image(cat / "test" / "good" / "b.png")
    for stem, mask in (("c", "c_mask.jpg"), ("d", "d.bmp"), ("e", "e_mask.TIF")):
        write_image(cat / "test" / "dent" / f"{stem}.png")
        write_mask(cat / "ground_truth" / "dent" / mask)
    index = make_index("folder", tmp_path, "my_widget")
    bad = index[index.label == 1]
    assert [Path(m).name for m in bad.mask_path] == ["c_mask.jpg", "d.bmp", "e_mask.TIF"]
    test = load_split(index, "test", load_preset("tiny", ["data.image_size=8"]), False, MASK_ENCODING["folder"])
    defect_share = test["masks"][test["labels"] == 1].flatten(1).float().mean(1)
    assert defect_share.tolist() == [0.5, 0.5, 0.5]  # the left half each; JPEG's faint ringing is not defect
    (cat / "ground_truth" / "dent" / "d.bmp").unlink()
    expected = f"{cat / 'ground_truth' / 'dent' / 'd_mask'} or {cat / 'ground_truth' / 'dent' / 'd'}, as .png/.jpg/"
    with raises_naming(cat / "test" / "dent" / "d.png", expected, "no mask"):
        make_index("folder", tmp_path, "my_widget")
    write_mask(cat / "ground_truth" / "dent" / "d.bmp")
    (cat / "test" / "good").rename(cat / "test" / "ok")  # normal images under another name
    with raises_naming(cat / "test" / "ok" / "b.png", f"if {cat / 'test' / 'ok'} holds normal images, it must be "
                       f"named {cat / 'test' / 'good'}"):  # fmt: skip
        make_index("folder", tmp_path, "my_widget")


def test_mtd_layout_and_split(tmp_path):
    for i in range(7):
        write_image(tmp_path / "MT_Free" / "Imgs" / f"exp{i}.jpg", "L")
        write_mask(tmp_path / "MT_Free" / "Imgs" / f"exp{i}.png")
    for defect in ("Crack", "Blowhole"):
        write_image(tmp_path / f"MT_{defect}" / "Imgs" / "x1.jpg", "L")
        write_mask(tmp_path / f"MT_{defect}" / "Imgs" / "x1.png")
    index = make_index("mtd", tmp_path, "magnetic_tile")
    check_index(index, 5, 2, {"crack": 1, "blowhole": 1})
    test_good = index[(index.split == "test") & (index.label == 0)]
    assert sorted(Path(p).name for p in test_good.image_path) == ["exp0.jpg", "exp5.jpg"]


def test_ids_are_consistent():
    assert set(KNOWN_CATEGORIES) == set(DATASETS) - {"folder"}
    assert len(KNOWN_CATEGORIES["mvtec"]) == 15 and len(KNOWN_CATEGORIES["visa"]) == 12


def test_index_with_missing_masks_as_nan(tmp_path):
    """An index read back from CSV has NaN instead of None for normal images."""
    path = write_image(tmp_path / "a.png")
    rows = pd.DataFrame({"image_path": [str(path)], "mask_path": [np.nan], "label": [0]})
    assert ImageDataset(rows, 4)[0]["mask"].sum() == 0
    with pytest.raises(ValueError, match="mask_path"):
        ImageDataset(rows.drop(columns="mask_path"), 4)


# ------------------------------------------------------------------------------------------------------ faults


def raises_naming(path: Path | str, *fragments: str):
    """pytest.raises for a DatasetError whose message names `path` (and contains each fragment)."""
    return pytest.raises(DatasetError, match="(?s)" + "".join(f"(?=.*{re.escape(str(s))})" for s in (path, *fragments)))


def test_unknown_dataset(tmp_path):
    with pytest.raises(DatasetError, match="mvtec, visa, btad, mtd, synthetic, folder"):
        make_index("mvtecad", tmp_path, "bottle")


def test_unknown_category_lists_known_ones_before_touching_disk(tmp_path):
    with pytest.raises(DatasetError, match="known: bottle, cable") as e:
        make_index("mvtec", tmp_path / "nowhere", "bottel")
    assert "bottel" in str(e.value)
    # Your own category in the MVTec layout, read as MVTec: the folder data set is named (the message listed the
    # folder's categories, this one among them, as if it could be chosen).
    mvtec_tree(tmp_path / "mine", "widget")
    with raises_naming(tmp_path / "mine" / "widget", "unknown mvtec category 'widget' (mvtec's are bottle, cable",
                       "use --dataset folder"):  # fmt: skip
        make_index("mvtec", tmp_path / "mine", "widget")


def test_root_missing(tmp_path):
    with raises_naming(tmp_path / "nowhere", "does not exist"):
        make_index("mvtec", tmp_path / "nowhere", "bottle")
    (tmp_path / "mvtec_anomaly_detection.tar.xz").write_bytes(b"\xfd7zXZ")  # the download, not yet unpacked
    with raises_naming(tmp_path / "mvtec_anomaly_detection.tar.xz", "is a file, not a folder", "must be unpacked"):
        make_index("mvtec", tmp_path / "mvtec_anomaly_detection.tar.xz", "bottle")


def test_category_folder_missing(tmp_path):
    with raises_naming(tmp_path / "bottle", "does not exist"):
        make_index("mvtec", tmp_path, "bottle")
    with raises_naming(tmp_path / "anything", "does not exist"):
        make_index("folder", tmp_path, "anything")
    cat = mvtec_tree(tmp_path, "widget")  # the category folder given as the root: the message says how to call it
    with raises_naming(cat / "widget", f"{cat} is a category folder: the root is {tmp_path}, the category 'widget'"):
        make_index("folder", cat, "widget")
    # The root one level above the categories (an archive unpacked into a folder of its own): the message says where.
    unpacked = tmp_path / "mvtec_anomaly_detection"
    mvtec_tree(unpacked, "bottle")
    with raises_naming(tmp_path / "bottle", f"the root is {unpacked}, which holds 'bottle'"):
        make_index("mvtec", tmp_path, "bottle")
    # VisA's published layout: a category folder holds Data/Images/.
    (tmp_path / "VisA" / "candle" / "Data" / "Images" / "Normal").mkdir(parents=True)
    with raises_naming(tmp_path / "VisA" / "candle" / "candle",
                       f"the root is {tmp_path / 'VisA'}, the category 'candle'"):  # fmt: skip
        make_index("visa", tmp_path / "VisA" / "candle", "candle")


def test_no_training_images(tmp_path):
    mvtec_tree(tmp_path, "bottle")
    for p in (tmp_path / "bottle" / "train" / "good").iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match=r"no training images in \S+/bottle/train/good \(looked for .png files\)$"):
        make_index("mvtec", tmp_path, "bottle")
    # The usual slips: the images straight in train/, or in another sub-folder of it; the message says where they go.
    write_image(tmp_path / "bottle" / "train" / "000.png")
    with raises_naming(tmp_path / "bottle" / "train" / "good", "holds image files: the normal training images go in"):
        make_index("mvtec", tmp_path, "bottle")
    write_image(tmp_path / "bottle" / "train" / "ok" / "000.png")
    with raises_naming(tmp_path / "bottle" / "train", "holds the folder(s) ok: the normal training images go in"):
        make_index("mvtec", tmp_path, "bottle")
    # Or one sub-folder per camera or batch inside train/good, which is not read.
    shutil.rmtree(tmp_path / "bottle" / "train" / "ok")
    (tmp_path / "bottle" / "train" / "000.png").unlink()
    write_image(tmp_path / "bottle" / "train" / "good" / "camera1" / "000.png")
    with raises_naming(tmp_path / "bottle" / "train" / "good",
                       "it holds the folder(s) camera1: images in sub-folders are not read"):  # fmt: skip
        make_index("mvtec", tmp_path, "bottle")
    # Beside images of their own, such folders went unread without a word, in train/good and in test/<type>.
    write_image(tmp_path / "bottle" / "train" / "good" / "000.png")
    with raises_naming(tmp_path / "bottle" / "train" / "good", "holds the folder(s) camera1 with images"):
        make_index("mvtec", tmp_path, "bottle")
    shutil.rmtree(tmp_path / "bottle" / "train" / "good" / "camera1")
    write_image(tmp_path / "bottle" / "test" / "crack" / "2024-05" / "007.png")
    with raises_naming(tmp_path / "bottle" / "test" / "crack", "holds the folder(s) 2024-05 with images"):
        make_index("mvtec", tmp_path, "bottle")


def test_no_training_images_mtd(tmp_path):
    (tmp_path / "Magnetic-Tile-Defect" / "MT_Free" / "Imgs").mkdir(parents=True)
    with raises_naming(tmp_path / "MT_Free" / "Imgs", "no training images",
                       f"the root is {tmp_path / 'Magnetic-Tile-Defect'}, which holds 'MT_Free'"):  # fmt: skip
        make_index("mtd", tmp_path, "magnetic_tile")  # the folder above the data set
    with raises_naming(tmp_path / "Magnetic-Tile-Defect" / "MT_Free" / "Imgs", "no training images"):
        make_index("mtd", tmp_path / "Magnetic-Tile-Defect", "magnetic_tile")


def test_anomalous_image_without_mask(tmp_path):
    cat = mvtec_tree(tmp_path, "bottle")
    (cat / "ground_truth" / "crack" / "001_mask.png").unlink()
    with raises_naming(cat / "test" / "crack" / "001.png", cat / "ground_truth" / "crack" / "001_mask.png", "no mask"):
        make_index("mvtec", tmp_path, "bottle")


def test_anomalous_image_without_mask_btad(tmp_path):
    c = tmp_path / "01"
    write_image(c / "train" / "ok" / "0000.bmp")
    write_image(c / "test" / "ko" / "0001.bmp")
    with raises_naming(c / "test" / "ko" / "0001.bmp", c / "ground_truth" / "ko" / "0001.png", "no mask"):
        make_index("btad", tmp_path, "01")


def test_mask_without_image(tmp_path):
    cat = mvtec_tree(tmp_path, "bottle")
    orphan = write_mask(cat / "ground_truth" / "crack" / "007_mask.png")
    with raises_naming(orphan, "has no image"):
        make_index("mvtec", tmp_path, "bottle")


def test_mask_for_a_missing_defect_folder(tmp_path):
    cat = mvtec_tree(tmp_path, "bottle")
    orphan = write_mask(cat / "ground_truth" / "scratch" / "000_mask.png")
    with raises_naming(orphan, "has no image"):
        make_index("mvtec", tmp_path, "bottle")


def test_two_masks_for_one_image(tmp_path):
    c = tmp_path / "03"
    write_image(c / "train" / "ok" / "0000.bmp")
    image = write_image(c / "test" / "ko" / "0001.bmp")
    write_mask(c / "ground_truth" / "ko" / "0001.bmp")
    write_mask(c / "ground_truth" / "ko" / "0001.png")
    with raises_naming(image, "several masks"):
        make_index("btad", tmp_path, "03")


def test_btad_good_folder_is_not_a_defect_type(tmp_path):
    write_image(tmp_path / "02" / "train" / "ok" / "0000.png")
    write_image(tmp_path / "02" / "test" / "good" / "0001.png")
    with raises_naming(tmp_path / "02" / "test" / "good", "reserved for normal images"):
        make_index("btad", tmp_path, "02")


def test_no_test_images(tmp_path):
    write_image(tmp_path / "bottle" / "train" / "good" / "000.png")
    with raises_naming(tmp_path / "bottle" / "test", "no test images"):
        make_index("mvtec", tmp_path, "bottle")


def test_visa_no_layout_names_both(tmp_path):
    (tmp_path / "candle").mkdir()
    with raises_naming(tmp_path / "split_csv" / "1cls.csv", tmp_path / "candle" / "train"):
        make_index("visa", tmp_path, "candle")


def test_visa_published_layout_names_its_categories_without_split_csv(tmp_path):
    visa_published_tree(tmp_path)
    with pytest.raises(DatasetError, match=r"holds: candle, pcb1\)$"):
        make_index("visa", tmp_path, "01")


def test_reproduce_runs_each_named_category_in_the_data_sets_that_have_it(tmp_path):
    """`--categories 01 pcb1` with BTAD and VisA roots ran 01 in VisA and pcb1 in BTAD too, as failed categories."""
    from dynad.reproduce import _tasks

    visa_published_tree(tmp_path / "visa")
    for split, kind in (("train", "ok"), ("test", "ok"), ("test", "ko")):
        write_image(tmp_path / "btad" / "01" / split / kind / "0000.bmp")
    write_mask(tmp_path / "btad" / "01" / "ground_truth" / "ko" / "0000.png")
    roots = {"btad": str(tmp_path / "btad"), "visa": str(tmp_path / "visa")}

    def tasks(categories):
        return [(t.dataset, t.category, t.error) for t in
                _tasks("tiny", ["btad", "visa"], categories, roots, tmp_path / "runs", [], [], None, None)]

    assert tasks(["01", "pcb1"]) == [("btad", "01", None), ("visa", "pcb1", None)]
    # A BTAD category missing from its root fails there only; a category of neither in each, saying what each holds.
    assert tasks(["02", "bottle"]) == [
        ("btad", "(all)", f"none of its 2 categories can run; 02: category folder {tmp_path / 'btad' / '02'} does "
                          f"not exist ({tmp_path / 'btad'} holds: 01)"),
        ("visa", "bottle", f"unknown visa category 'bottle' ({tmp_path / 'visa'} holds: candle, pcb1)")]


def test_visa_published_faults(tmp_path):
    csv = visa_published_tree(tmp_path)
    mask = tmp_path / "candle" / "Data" / "Masks" / "Anomaly" / "001.png"
    mask.unlink()
    with raises_naming(tmp_path / "candle" / "Data" / "Images" / "Anomaly" / "001.JPG", mask, "no mask"):
        make_index("visa", tmp_path, "candle")
    write_mask(mask)
    orphan = write_mask(mask.with_name("099.png"))
    with raises_naming(orphan, csv, "has no image"):
        make_index("visa", tmp_path, "candle")
    orphan.unlink()
    image = tmp_path / "candle" / "Data" / "Images" / "Normal" / "0001.JPG"
    image.unlink()
    with raises_naming(image, csv, "does not exist"):
        make_index("visa", tmp_path, "candle")


def test_mtd_faults(tmp_path):
    write_image(tmp_path / "MT_Free" / "Imgs" / "a.jpg", "L")
    image = write_image(tmp_path / "MT_Crack" / "Imgs" / "b.jpg", "L")
    with raises_naming(image, image.with_suffix(".png"), "no mask"):
        make_index("mtd", tmp_path, "magnetic_tile")
    write_mask(image.with_suffix(".png"))
    orphan = write_mask(tmp_path / "MT_Crack" / "Imgs" / "c.png")
    with raises_naming(orphan, "has no image"):
        make_index("mtd", tmp_path, "magnetic_tile")


def test_mask_of_another_shape_is_refused(tmp_path):
    """A mask must be its image's shape; the same shape at half the scale is accepted and resized with it."""
    image = write_image(tmp_path / "cat" / "test" / "dent" / "000.png")
    write_image(tmp_path / "cat" / "train" / "good" / "000.png")
    mask = tmp_path / "cat" / "ground_truth" / "dent" / "000_mask.png"
    mask.parent.mkdir(parents=True)
    half = np.zeros((H // 2, W // 2), np.uint8)
    half[:, : W // 4] = 255  # the left half, as write_mask
    Image.fromarray(half).save(mask)
    index = make_index("folder", tmp_path, "cat")
    row = int(index.index[index.label == 1][0])
    item = ImageDataset(index, 8)[row]
    assert item["mask"][0, :, :4].all() and not item["mask"][0, :, 5:].any()
    Image.fromarray(np.full((W, H), 255, np.uint8)).save(mask)  # transposed: 20 x 30 for a 30 x 20 image
    with raises_naming(mask, image, "20 x 30 px", "30 x 20 px"):
        ImageDataset(index, 8)[row]


@pytest.mark.parametrize("name", ["a.png", "a.jpg"])
def test_truncated_file(tmp_path, name):
    path = tmp_path / name
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with raises_naming(path, "cannot read"):
        load_image(path, 8)
    with raises_naming(path, "cannot read"):
        load_mask(path, 8)


def test_unreadable_and_missing_files(tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not a png")
    with raises_naming(junk, "cannot read"):
        load_image(junk, 8)
    with raises_naming(tmp_path / "gone.png", "cannot read"):
        load_mask(tmp_path / "gone.png", 8)


def test_refuses_pil_truncation_padding(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        load_image(write_image(tmp_path / "a.png"), 8)


# --------------------------------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_magnetic_tile_real_data():
    if not MTD_ROOT.is_dir():
        pytest.skip(f"Magnetic Tile data not found at {MTD_ROOT}: it lives beside the repository in shared/data")
    index = make_index("mtd", MTD_ROOT, "magnetic_tile")
    normal, anomalous = index[index.label == 0], index[index.label == 1]
    assert len(normal) == 952 and len(anomalous) == 392
    assert anomalous.defect_type.value_counts().to_dict() == {"blowhole": 115, "break": 85, "uneven": 103,
                                                              "crack": 57, "fray": 32}  # fmt: skip
    assert (anomalous.split == "test").all() and anomalous.mask_path.map(lambda p: Path(p).is_file()).all()
    free = sorted(p.name for p in (MTD_ROOT / "MT_Free" / "Imgs").glob("*.jpg"))
    test_names = sorted(Path(p).name for p in normal[normal.split == "test"].image_path)
    assert test_names == free[::5] and len(test_names) == 191 and (normal.split == "train").sum() == 761

    row = anomalous.iloc[0]
    image, mask = load_image(row.image_path, 64), load_mask(row.mask_path, 64, threshold=0.0)
    assert image.shape == (3, 64, 64) and image.min() >= -1 and image.max() <= 1
    assert torch.equal(image[0], image[1])  # greyscale photographs
    assert (np.array(Image.open(row.mask_path).convert("L")) > 127).any() and mask.sum() > 0


@pytest.mark.realdata
def test_magnetic_tile_masks_survive_resizing():
    if not MTD_ROOT.is_dir():
        pytest.skip(f"Magnetic Tile data not found at {MTD_ROOT}: it lives beside the repository in shared/data")
    index = make_index("mtd", MTD_ROOT, "magnetic_tile")
    masks = index[index.label == 1].mask_path.tolist()
    in_data = sum(mask_is_empty(p) for p in masks)
    bilinear = sum(load_mask(p, 64, resize="bilinear").sum() == 0 for p in masks)
    area = sum(load_mask(p, 64).sum() == 0 for p in masks)
    # 4 masks are empty in the data; bilinear > 0.5 at 64 px empties 21; "area" keeps every stored defect.
    assert (in_data, bilinear, area) == (4, 21, 4)


def test_unknown_category_lists_what_the_folder_holds(tmp_path):
    for name in ("screw", "bottle", ".cache"):
        (tmp_path / name).mkdir()
    with pytest.raises(DatasetError, match=re.escape(f"{tmp_path} holds: bottle, screw)")) as e:
        make_index("mvtec", tmp_path, "bottel")
    assert "cable" not in str(e.value)  # not the 15 standard names
    with pytest.raises(DatasetError, match=re.escape(f"({tmp_path} holds: bottle, screw)")):
        make_index("folder", tmp_path, "bottel")
    for name in ("MT_Blowhole", "MT_Free"):  # Magnetic Tile's folders are its defect types: not offered as categories
        (tmp_path / "mtd" / name).mkdir(parents=True)
    with pytest.raises(DatasetError, match="unknown mtd category 'MT_Blowhole': Magnetic Tile Defect is one "
                                           "category, 'magnetic_tile'") as e:  # fmt: skip
        make_index("mtd", tmp_path / "mtd", "MT_Blowhole")
    assert "holds" not in str(e.value)
