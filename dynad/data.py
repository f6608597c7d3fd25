"""Dataset readers: one sorted index per category, and the image/mask loaders the runs use.

`make_index(dataset, root, category)` lists a category's images as a pandas DataFrame with the columns

    split        "train" or "test"
    category     the category name
    defect_type  "good" for normal images, else the defect folder / type
    label        0 normal, 1 anomalous
    image_path   absolute path (str)
    mask_path    absolute path (str) of the pixel mask, None for normal images (and for every image of a
                 "folder" category with image labels only)

sorted by (split, defect_type, image_path). Every anomalous test image must pair with exactly one mask and every
mask with an image; anything else raises `DatasetError` naming the file or folder, since a silently dropped mask
would change the pixel-level metrics. The one exception is a "folder" category with no `ground_truth/` folder at
all: its test/<type>/ images are anomalous by their folder alone (image labels only), and a run reports image
metrics without pixel AUROC and PRO.

Supported layouts: MVTec AD (also the built-in "synthetic" data and any MVTec-like "folder"), VisA (as published
with split_csv/1cls.csv, or converted to the MVTec-like layout by VisA's own prepare script), BTAD, and the
Magnetic Tile Defect data set (split: every 5th sorted MT_Free image is a test image).

Images load as (3, S, S) float32 in [-1, 1] (bilinear resize of the whole image, no crop), turned as an EXIF
Orientation tag says (as viewers show them); masks as (1, S, S) in {0, 1}. A mask file is read by its data set's
value convention (`MASK_ENCODING`): greyscale 0/255 (MVTec AD, BTAD, Magnetic Tile; defect where the value is above
half scale) or class values (VisA's published masks hold 0/1 or small integers: any non-zero pixel is defect).
"auto" (every other layout) reads a file whose largest value is below half scale as class values, since /255 > 0.5
would empty it. A "folder" data set's masks may be any image file (`<name>_mask.<ext>` or `<name>.<ext>`). A mask is
then resized so that no defect pixel vanishes ("area": an output pixel is defect when any defect pixel lies in its
footprint) or, as the paper and the reference code do, bilinearly and then thresholded ("bilinear"). A mask of
another aspect ratio than its image is a DatasetError (its defects would land in the wrong place); one at another
scale of the same shape is resized with it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFile, ImageOps


class DatasetError(ValueError):
    """A data set on disk is missing, incomplete or unreadable; the message names the file or folder."""


KNOWN_CATEGORIES: dict[str, tuple[str, ...]] = {
    "mvtec": ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw",
              "tile", "toothbrush", "transistor", "wood", "zipper"),  # fmt: skip
    "visa": ("candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3",
             "pcb4", "pipe_fryum"),  # fmt: skip
    "btad": ("01", "02", "03"),
    "mtd": ("magnetic_tile",),
    "synthetic": ("tiles", "board"),
}

DATASETS = ("mvtec", "visa", "btad", "mtd", "synthetic", "folder")

# How each data set stores its masks: "grey" 0/255, "class" values (non-zero = defect), "auto" (decided per file).
MASK_ENCODING = {"mvtec": "grey", "synthetic": "grey", "btad": "grey", "mtd": "grey", "visa": "class", "folder": "auto"}
MASK_RESIZE = ("area", "bilinear")

COLUMNS = ("split", "category", "defect_type", "label", "image_path", "mask_path")

# Every extension any layout uses; files in mask folders with one of these must belong to an image.
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class _Tree:
    """An MVTec-like tree: train/<normal>/, test/<type>/, ground_truth/<type>/<mask name>."""

    normal: str  # folder of the normal images, in train/ and test/
    image_exts: tuple[str, ...]  # lower case; compared case-insensitively
    mask_stems: tuple[str, ...]  # templates of a mask's file name without extension, from the image's stem
    mask_exts: tuple[str, ...]

    def mask_names(self, stem: str) -> list[str]:
        return [t.format(stem=stem) + e for t in self.mask_stems for e in self.mask_exts]

    def describe_masks(self, folder: Path, stem: str = "{stem}") -> str:
        """The mask names an image's stem may have, for an error message."""
        names = self.mask_names(stem)
        if len(names) <= 2:
            return " or ".join(str(folder / n) for n in names)
        stems = " or ".join(str(folder / t.format(stem=stem)) for t in self.mask_stems)
        return f"{stems}, as {'/'.join(self.mask_exts)}"


_MVTEC = _Tree("good", (".png",), ("{stem}_mask",), (".png",))
_TREES = {
    "mvtec": _MVTEC,
    "synthetic": _MVTEC,
    # Your own folder: masks as any image file, since annotation tools also export JPEG, BMP or TIFF.
    "folder": _Tree("good", _IMAGE_EXTS, ("{stem}_mask", "{stem}"), _IMAGE_EXTS),
    "btad": _Tree("ok", (".bmp", ".png"), ("{stem}",), (".png", ".bmp")),
    "visa": _Tree("good", (".jpg",), ("{stem}",), (".png",)),  # the converted layout
}


def make_index(dataset: str, root: str | Path, category: str) -> pd.DataFrame:
    """The category's images as a DataFrame (see the module docstring), validated and sorted."""
    if dataset not in DATASETS:
        raise DatasetError(f"unknown dataset {dataset!r} (root {root}); choose one of: {', '.join(DATASETS)}")
    known = KNOWN_CATEGORIES.get(dataset)
    if dataset == "mtd" and category not in known:  # its MT_* folders are defect types, not categories
        raise DatasetError(f"unknown mtd category {category!r}: Magnetic Tile Defect is one category, 'magnetic_tile' "
                           f"(its MT_* folders are the defect types)")  # fmt: skip
    if known is not None and category not in known:
        # What the folder holds is what the user can pick; the standard names only when there is no folder.
        present = _present_categories(dataset, root)
        if category in present:  # the user's own data in the benchmark's layout: the folder data set reads it
            raise DatasetError(f"unknown {dataset} category {category!r} ({dataset}'s are {', '.join(known)}); "
                               f"for your own data in the MVTec layout, such as {Path(root) / category}, use "
                               f"--dataset folder")  # fmt: skip
        where = f"{root} holds: {', '.join(present)}" if present else f"root {root}; known: {', '.join(known)}"
        raise DatasetError(f"unknown {dataset} category {category!r} ({where})")
    root = Path(root).expanduser().resolve()
    if root.is_file():
        raise DatasetError(f"dataset root {root} is a file, not a folder (an archive must be unpacked first)")
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a folder")

    if dataset == "mtd":
        rows = _read_mtd(root)  # the root itself holds the one category
    else:
        if category in ("", ".", "..") or "/" in category or "\\" in category:
            raise DatasetError(f"category {category!r} is not a folder name inside {root}")
        cat_dir = root / category
        if not cat_dir.is_dir():
            present = ", ".join(_present_categories(dataset, root)) or "no folders"
            hint = is_a_category_folder(root) or _root_one_level_down(root, category)
            raise DatasetError(f"category folder {cat_dir} does not exist ({root} holds: {present})"
                               + (f"; {hint}" if hint else ""))  # fmt: skip
        elif dataset == "visa":
            rows = _read_visa(root, category)
        else:  # only the user's own folder may lack masks: a benchmark without them is a broken download
            rows = _read_tree(cat_dir, category, _TREES[dataset], labels_only_allowed=dataset == "folder")

    # object dtype throughout: pandas >= 3 would store the string columns as "str" and turn None into NaN.
    index = pd.DataFrame(rows, columns=list(COLUMNS), dtype=object).astype({"label": "int64"})
    return index.sort_values(["split", "defect_type", "image_path"], kind="stable").reset_index(drop=True)


def has_masks(index: pd.DataFrame) -> bool:
    """Whether the anomalous images of `index` have pixel masks: False for a "folder" category with image labels
    only (no ground_truth/ folder), and for an index with no anomalous image."""
    return bool(index.mask_path[index.label == 1].notna().any())


def is_a_category_folder(root: str | Path) -> str:
    """A message when `root`, given as a data set's root, is one category's folder, else "": train/ and test/ in it
    (MVTec-like layouts), or Data/Images/ (VisA's published layout)."""
    root = Path(root)
    if ((root / "train").is_dir() and (root / "test").is_dir()) or (root / "Data" / "Images").is_dir():
        return f"{root} is a category folder: the root is {root.parent}, the category {root.name!r}"
    return ""


def _root_one_level_down(root: Path, category: str) -> str:
    """A message when the category lies one folder deeper (an archive unpacked into a folder of its own), else ""."""
    deeper = [d for d in _subdirs(root) if (d / category).is_dir()]
    return f"the root is {deeper[0]}, which holds {category!r}" if len(deeper) == 1 else ""


def category_folders(root: str | Path) -> list[str]:
    """The visible subfolders of `root`, sorted ([] when root is not a folder)."""
    root = Path(root).expanduser()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def _present_categories(dataset: str, root: str | Path) -> list[str]:
    """The category folders of `root` for a message: VisA's split_csv/ (its published split table) is not one."""
    return [c for c in category_folders(root) if not (dataset == "visa" and c == "split_csv")]


def _row(split: str, category: str, defect_type: str, image: Path, mask: Path | None, label: int | None = None) -> dict:
    """One index row; the label is the mask's presence unless given (image labels only)."""
    return {"split": split, "category": category, "defect_type": defect_type,
            "label": int(mask is not None) if label is None else label,
            "image_path": str(image), "mask_path": None if mask is None else str(mask)}  # fmt: skip


def _files(folder: Path, exts: Iterable[str]) -> list[Path]:
    """Regular files in `folder` with one of `exts` (case-insensitive), sorted; [] when the folder is missing.

    Hidden files are skipped: archives unpacked on macOS carry `._name.png` resource forks that are not images.
    """
    if not folder.is_dir():
        return []
    exts = tuple(exts)
    named = [p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() in exts]
    broken = sorted(p for p in named if p.is_symlink() and not p.exists())
    if broken:  # skipped, but never silently: the data set is smaller than the folder suggests
        warnings.warn(f"skipped {len(broken)} broken symbolic link(s) in {folder} (first: {broken[0].name})",
                      stacklevel=2)  # fmt: skip
    return sorted(p for p in named if p.is_file())


def _subdirs(folder: Path) -> list[Path]:
    """Non-hidden sub-folders of `folder`, sorted; [] when the folder is missing."""
    if not folder.is_dir():
        return []
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _first_names(folders: list[Path]) -> str:
    """The first three folder names, for a message."""
    return ", ".join(d.name for d in folders[:3]) + (", ..." if len(folders) > 3 else "")


def _check_not_nested(folder: Path, exts: tuple[str, ...]) -> None:
    """Raise when a sub-folder of an image folder holds images (one per camera or batch): they would go unread."""
    if nested := [d for d in _subdirs(folder) if _files(d, exts)]:
        raise DatasetError(f"{folder} holds the folder(s) {_first_names(nested)} with images: images in sub-folders "
                           f"are not read, they go in {folder} itself")  # fmt: skip


# Names of test/ folders that sound normal: with image labels only, every folder but test/good is anomalous, so one
# of these is more likely a misnamed normal folder than a defect type.
_NORMAL_SOUNDING = {"ok", "okay", "normal", "nominal", "defect_free", "defect-free", "no_defect", "pass", "clean"}


def _read_tree(cat_dir: Path, category: str, tree: _Tree, labels_only_allowed: bool = False) -> list[dict]:
    train_dir = cat_dir / "train" / tree.normal
    train = _files(train_dir, tree.image_exts)
    if not train:
        hint = ""  # the usual slip: the normal images straight in train/, or in another sub-folder of it
        others = [d.name for d in _subdirs(train_dir.parent) if d != train_dir]
        if others or _files(train_dir.parent, tree.image_exts):
            held = f"the folder(s) {', '.join(others)}" if others else "image files"
            hint = f"; {train_dir.parent} holds {held}: the normal training images go in {train_dir}"
        elif nested := _subdirs(train_dir):  # e.g. one sub-folder per camera or batch
            hint = (f"; it holds the folder(s) {_first_names(nested)}: images in sub-folders are not read, they go in "
                    f"{train_dir} itself")
        raise DatasetError(f"no training images in {train_dir} (looked for {'/'.join(tree.image_exts)} files){hint}")
    _check_not_nested(train_dir, tree.image_exts)
    rows = [_row("train", category, "good", p, None) for p in train]

    test_dir = cat_dir / "test"
    gt_dir = cat_dir / "ground_truth"
    labels_only = labels_only_allowed and not gt_dir.exists()
    claimed: dict[Path, Path] = {}  # mask -> its image
    for type_dir in _subdirs(test_dir):
        images = _files(type_dir, tree.image_exts)
        _check_not_nested(type_dir, tree.image_exts)
        if type_dir.name == tree.normal:
            rows += [_row("test", category, "good", p, None) for p in images]
            continue
        if type_dir.name == "good":  # a BTAD tree would otherwise list anomalous images as defect_type "good"
            raise DatasetError(f"{type_dir}: 'good' is reserved for normal images, whose folder is {tree.normal!r}")
        if labels_only:
            if type_dir.name.lower() in _NORMAL_SOUNDING:
                raise DatasetError(f"{type_dir}: with no {gt_dir} folder (image labels only), every folder of "
                                   f"{test_dir} but {tree.normal!r} holds anomalous images; if it holds normal "
                                   f"images, name it {test_dir / tree.normal}")  # fmt: skip
            rows += [_row("test", category, type_dir.name, p, None, label=1) for p in images]
            continue
        masks = {p.name.lower(): p for p in _files(gt_dir / type_dir.name, _IMAGE_EXTS)}
        for image in images:
            found = [masks[n.lower()] for n in tree.mask_names(image.stem) if n.lower() in masks]
            if not found:
                expected = tree.describe_masks(gt_dir / type_dir.name, image.stem)
                if not (gt_dir / type_dir.name).is_dir():  # e.g. normal images in test/ok or test/normal
                    expected += (f" (there is no folder {gt_dir / type_dir.name}; if {type_dir} holds normal images, "
                                 f"it must be named {type_dir.parent / tree.normal})")
                if labels_only_allowed:
                    expected += "; a category with no ground_truth/ folder at all is read with image labels only"
                raise DatasetError(f"anomalous test image {image} has no mask: expected {expected}")
            if len(found) > 1:
                raise DatasetError(f"anomalous test image {image} has several masks: {', '.join(map(str, found))}")
            if found[0] in claimed:
                raise DatasetError(f"mask {found[0]} matches two images: {claimed[found[0]]} and {image}")
            claimed[found[0]] = image
            rows.append(_row("test", category, type_dir.name, image, found[0]))
    if not any(r["split"] == "test" for r in rows):
        raise DatasetError(f"no test images in {test_dir}")

    # Masks under ground_truth/ (any type, "good" included) that no anomalous test image claimed.
    for mask_dir in _subdirs(gt_dir):
        for mask in _files(mask_dir, _IMAGE_EXTS):
            if mask not in claimed:
                raise DatasetError(f"mask {mask} has no image: no anomalous test image in {test_dir / mask_dir.name} "
                                   f"matches it (mask names: {tree.describe_masks(Path())})")  # fmt: skip
    return rows


def _read_visa(root: Path, category: str) -> list[dict]:
    """VisA in either layout; both present is ambiguous, so it raises rather than picking one."""
    csv = root / "split_csv" / "1cls.csv"
    converted = root / category / "train"
    if csv.is_file() and converted.is_dir():
        raise DatasetError(f"both VisA layouts are present ({csv} and {converted}); keep one of them")
    if converted.is_dir():
        return _read_tree(root / category, category, _TREES["visa"])
    if csv.is_file():
        return _read_visa_csv(root, category, csv)
    raise DatasetError(f"no VisA layout for {category!r}: expected {csv} (published layout) "
                       f"or {converted} (converted MVTec-like layout)")  # fmt: skip


def _read_visa_csv(root: Path, category: str, csv: Path) -> list[dict]:
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    header = ["object", "split", "label", "image", "mask"]
    if list(table.columns) != header:
        raise DatasetError(f"{csv} has header {','.join(table.columns)}; expected {','.join(header)}")
    table = table[table.object == category]
    mask_dir = root / category / "Data" / "Masks" / "Anomaly"
    rows = []
    for r in table.itertuples(index=False):
        image = root / r.image
        if r.split not in ("train", "test") or r.label not in ("normal", "anomaly"):
            raise DatasetError(f"{csv}: row for {r.image} has split={r.split!r}, label={r.label!r}; "
                               f"expected train/test and normal/anomaly")  # fmt: skip
        if not image.is_file():
            raise DatasetError(f"{csv} lists {image}, which does not exist")
        if r.label == "normal":
            if r.mask:
                raise DatasetError(f"{csv}: normal image {image} has a mask ({r.mask}); normal images have none")
            rows.append(_row(r.split, category, "good", image, None))
            continue
        if r.split == "train":
            raise DatasetError(f"{csv}: anomalous image {image} is in the training split")
        mask = root / r.mask if r.mask else mask_dir / f"{image.stem}.png"
        if not mask.is_file():
            raise DatasetError(f"anomalous test image {image} has no mask: expected {mask}")
        rows.append(_row("test", category, "bad", image, mask))
    if not any(r["split"] == "train" for r in rows):
        raise DatasetError(f"no training images for {category!r} in {csv}")

    listed = {Path(r["mask_path"]).resolve() for r in rows if r["mask_path"] is not None}
    for mask in _files(mask_dir, _IMAGE_EXTS):
        if mask.resolve() not in listed:
            raise DatasetError(f"mask {mask} has no image: no anomalous row of {csv} names it")
    return rows


def _read_mtd(root: Path) -> list[dict]:
    """Magnetic Tile Defect: MT_<Type>/Imgs/<name>.jpg with its mask <name>.png beside it."""
    free_dir = root / "MT_Free" / "Imgs"
    free = sorted(_files(free_dir, (".jpg",)), key=lambda p: p.name)
    if not free:
        hint = "" if free_dir.parent.is_dir() else _root_one_level_down(root, "MT_Free")
        raise DatasetError(f"no training images in {free_dir} (looked for .jpg files)" + (f"; {hint}" if hint else ""))
    # The project's fixed split: sorted positions 0, 5, 10, ... are test images (README of the data).
    rows = [_row("test" if i % 5 == 0 else "train", "magnetic_tile", "good", p, None) for i, p in enumerate(free)]
    _check_mtd_masks(free_dir, free)
    for type_dir in sorted(d for d in root.glob("MT_*") if d.is_dir() and d.name != "MT_Free"):
        imgs_dir = type_dir / "Imgs"
        images = _files(imgs_dir, (".jpg",))
        if not images:
            raise DatasetError(f"no images in {imgs_dir} (looked for .jpg files)")
        masks = _check_mtd_masks(imgs_dir, images)
        for image in images:
            mask = masks.get(image.stem)
            if mask is None:
                raise DatasetError(f"anomalous test image {image} has no mask: expected {image.with_suffix('.png')}")
            rows.append(_row("test", "magnetic_tile", type_dir.name[3:].lower(), image, mask))
    return rows


def _check_mtd_masks(imgs_dir: Path, images: list[Path]) -> dict[str, Path]:
    """The .png masks of `imgs_dir` by stem; raises on a mask whose .jpg image is missing."""
    masks = {p.stem: p for p in _files(imgs_dir, (".png",))}
    stems = {p.stem for p in images}
    for stem, mask in masks.items():
        if stem not in stems:
            raise DatasetError(f"mask {mask} has no image: expected {imgs_dir / stem}.jpg")
    return masks


def _open(path: str | Path) -> Image.Image:
    """The fully decoded image, in its stored mode; any failure becomes a DatasetError naming the file."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # With this global set, PIL pads truncated files with grey instead of failing.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by other code); dynad refuses to "
                           "load images that could be silently truncated")  # fmt: skip
    try:
        with Image.open(path) as im:
            im.load()
            # As every viewer and annotation tool shows it: phone and camera JPEGs store the picture sideways with an
            # EXIF Orientation tag, and a mask drawn on the shown picture would otherwise land elsewhere.
            return ImageOps.exif_transpose(im)
    except Exception as e:  # PIL's decoders raise OSError, SyntaxError, ValueError, EOFError, ... on corrupt data
        raise DatasetError(f"cannot read image file {path}: {type(e).__name__}: {e}") from e


def _high_depth_grey(im: Image.Image, path: str | Path) -> np.ndarray | None:
    """A 16-bit or 32-bit greyscale image as (H, W) float32 in [0, 1], scaled by its bit depth; None for 8-bit ones.

    PIL's convert("RGB"/"L") clips such values at 255, so a 16-bit image would load all white.
    """
    if im.mode.startswith("I;16"):
        return np.asarray(im, dtype=np.float32) / 65535
    if im.mode not in ("I", "F"):
        return None
    a = np.asarray(im, dtype=np.float32)
    if im.mode == "I":  # 32-bit integers; 16-bit files (TIFF) also open so
        if a.min() < 0 or a.max() > 65535:
            raise DatasetError(f"image file {path}: 32-bit integer values in [{a.min():g}, {a.max():g}]; dynad reads "
                               f"8-bit and 16-bit integer images and float images in [0, 1]")  # fmt: skip
        return a / 65535
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:  # mode "F"
        raise DatasetError(f"image file {path}: float values in [{np.nanmin(a):g}, {np.nanmax(a):g}]; float images "
                           f"must hold values in [0, 1]")  # fmt: skip
    return a


def open_rgb(path: str | Path) -> Image.Image:
    """The file as an 8-bit RGB image at its own size, for pictures and for writing PNGs: 16-bit and float greyscale
    scaled by their range as `load_image` reads them (PIL's convert("RGB") would turn them white)."""
    return to_rgb(_open(path), path)


def to_rgb(im: Image.Image, name: str | Path = "the image") -> Image.Image:
    """An image already open as 8-bit RGB, high-depth greyscale scaled by its range; `name` is for errors."""
    grey = _high_depth_grey(im, name)
    if grey is None:
        return _over_black(im)
    return Image.fromarray(np.rint(grey * 255).astype(np.uint8)).convert("RGB")


def _over_black(im: Image.Image) -> Image.Image:
    """8-bit RGB as shown over black: the colour that transparent pixels store is hidden from every viewer and differs
    between tools (black, white, the old background), so convert("RGB"), which keeps it, would turn a cut-out's
    background into a defect. Black is what the commonest (0, 0, 0, 0) already read as."""
    if im.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and "transparency" not in im.info:
        return im.convert("RGB")
    rgba = im.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"image size must be a positive int, got {size!r}")


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """(3, size, size) float32 in [-1, 1]; greyscale files repeat to 3 channels; bilinear resize, no crop."""
    _check_size(size)
    im = _open(path)
    grey = _high_depth_grey(im, path)
    if grey is not None:  # resized in float, then repeated to 3 channels
        g = np.array(Image.fromarray(grey).resize((size, size), Image.Resampling.BILINEAR))  # (S, S)
        return torch.from_numpy(g).clamp(0, 1)[None].repeat(3, 1, 1) * 2 - 1  # (3, S, S)
    # PIL's bilinear filter (antialiased when shrinking) is what torchvision's Resize does on PIL images.
    im = _over_black(im).resize((size, size), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.array(im, dtype=np.float32)).permute(2, 0, 1)  # (3, S, S)
    return x / 127.5 - 1


def _mask_values(path: str | Path, encoding: str) -> tuple[np.ndarray, np.ndarray]:
    """The stored mask as (soft value in [0, 1], defect) arrays (H, W), read by its value convention."""
    im = _open(path)
    # Single-channel files keep their stored values (a palette file its class indices). Colour ones are read by
    # their brightest channel: a red annotation's grey value (76) would pass for a class index, and then the JPEG
    # ringing around it for defect pixels too.
    # A layer with transparency (an annotation exported from an image editor) is read by its opacity: what is drawn
    # is the defect, whatever colour the transparent pixels hold (often white, which read as a defect everywhere).
    alpha = np.asarray(im.getchannel("A")) if im.mode in ("RGBA", "LA") else None
    single = im.mode in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L")
    if alpha is not None and alpha.min() < 255:
        raw = alpha
    else:
        raw = np.asarray(im) if single else np.asarray(im.convert("RGB")).max(axis=2)  # (H, W, 3) -> (H, W)
    raw = raw.astype(np.float64)
    full = 255.0 if raw.max() <= 255 else 65535.0  # 8- or 16-bit greyscale
    if encoding == "auto":
        encoding = "class" if 0 < raw.max() < full / 2 else "grey"
    if encoding == "grey":
        soft = raw / full
        return soft, soft > 0.5
    if encoding == "class":
        defect = raw > 0
        return defect.astype(np.float64), defect
    raise ValueError(f"mask encoding must be 'grey', 'class' or 'auto', got {encoding!r}")


def load_mask(
    path: str | Path | None, size: int, threshold: float = 0.5, resize: str = "area", encoding: str = "auto"
) -> torch.Tensor:
    """(1, size, size) float32 in {0, 1}; `path` None (a normal image) gives all zeros.

    resize="area": the defect pixels' area fraction in each output pixel's footprint, defect where > 0, so that a
    defect smaller than an output pixel keeps one pixel (a defective image never ends with an empty mask).
    resize="bilinear": the soft mask resized bilinearly, then > threshold; 0.5 is the paper's binarisation, 0.0
    keeps every pixel the resize touched (the reference code's slight dilation).
    """
    _check_size(size)
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"mask threshold must be in [0, 1), got {threshold!r}")
    if resize not in MASK_RESIZE:
        raise ValueError(f"mask resize must be one of {MASK_RESIZE}, got {resize!r}")
    if path is None:
        return torch.zeros(1, size, size)
    soft, defect = _mask_values(path, encoding)
    # Resize in float so that the threshold sees the interpolated value, not one rounded to 1/255. PIL's BOX filter
    # averages exactly over each output pixel's footprint (positive weights only), so "> 0" is an area max-pool.
    if resize == "area":
        m = np.array(Image.fromarray(defect.astype(np.float32)).resize((size, size), Image.Resampling.BOX)) > 0
    else:
        resized = Image.fromarray(soft.astype(np.float32)).resize((size, size), Image.Resampling.BILINEAR)
        m = np.array(resized) > threshold
    return torch.from_numpy(m).float()[None]  # (1, S, S)


def check_mask_covers_image(image: str | Path, mask: str | Path) -> None:
    """Raise DatasetError when a mask's shape cannot be its image's.

    A mask at another scale of the same shape is resized with its image (one pixel of rounding per side allowed);
    a different aspect ratio would put every defect pixel in the wrong place, which no metric would notice.
    """
    (w, h), (mw, mh) = (shown_size(p) for p in (image, mask))
    if abs(mw * h - mh * w) > w + h:  # mw / mh != w / h beyond rounding each mask side by one pixel
        raise DatasetError(f"mask {mask} is {mw} x {mh} px, but its image {image} is {w} x {h} px: a mask must "
                           "have its image's shape (the same size, or the same aspect ratio at another scale)")


_ORIENTATION = 0x0112  # the EXIF tag; values 5 to 8 turn the picture by a quarter


def shown_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as `_open` returns the image (EXIF orientation applied), from the header."""
    try:
        with Image.open(path) as im:  # reads the header only
            w, h = im.size
            return (h, w) if im.getexif().get(_ORIENTATION) in (5, 6, 7, 8) else (w, h)
    except Exception as e:
        raise DatasetError(f"cannot read image file {path}: {type(e).__name__}: {e}") from e


ASPECT_TOLERANCE = 1.1  # a width / height within 10 % of the training images' range is theirs (crops round)


def aspect_range(paths: Iterable[str | Path]) -> list[float]:
    """[min, max] of width / height over the images, from their headers (EXIF orientation applied)."""
    ratios = [w / h for w, h in map(shown_size, paths)]
    return [round(min(ratios), 4), round(max(ratios), 4)]


def other_aspect_ratios(paths: Sequence[str | Path], training: Sequence[float]) -> list[tuple[int, tuple[int, int]]]:
    """(index, (width, height)) of the images whose width / height lies outside the training images' `[min, max]`
    beyond the tolerance: every image is resized to S x S, so theirs are squeezed otherwise, which alone raises their
    scores. Files that cannot be read are left to the callers' own errors."""
    outside = []
    for i, p in enumerate(paths):
        try:
            w, h = shown_size(p)
        except DatasetError:
            continue
        if aspect_outside((w, h), training):
            outside.append((i, (w, h)))
    return outside


def aspect_outside(size: tuple[int, int], training: Sequence[float]) -> bool:
    """Whether a (width, height) lies outside the training images' width / height `[min, max]` beyond the tolerance."""
    (w, h), (lo, hi) = size, training
    return not lo / ASPECT_TOLERANCE <= w / h <= hi * ASPECT_TOLERANCE


def aspect_warning(n: int, total: int, what: str, training: Sequence[float], first: str, size: tuple[int, int],
                   image_size: int) -> str:  # fmt: skip
    """The line that reports `other_aspect_ratios`: how many of `what`, the training range, the first one."""
    lo, hi = training
    theirs = f"{lo:.2f}" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f} to {hi:.2f}"
    w, h = size
    return (f"{n} of {total} {what} have another aspect ratio (width / height) than the training images ({theirs}): "
            f"{first} is {w} x {h} px ({w / h:.2f}). Every image is resized to {image_size} x {image_size} px, so "
            f"these are squeezed otherwise, which raises their scores: crop them as the training images were")


def mask_is_empty(path: str | Path, encoding: str = "auto") -> bool:
    """True when the stored mask (at its own resolution) marks no defect pixel."""
    return not _mask_values(path, encoding)[1].any()


class ImageDataset(torch.utils.data.Dataset):
    """The rows of an index (from `make_index`) as {"image", "mask", "label", "index"} items."""

    def __init__(
        self,
        index: pd.DataFrame,
        image_size: int,
        mask_threshold: float = 0.5,
        mask_resize: str = "area",
        mask_encoding: str = "auto",
    ):
        missing = {"image_path", "mask_path", "label"} - set(index.columns)
        if missing:
            raise ValueError(f"index lacks the columns {sorted(missing)}")
        _check_size(image_size)
        self.image_size = image_size
        self.mask_threshold = mask_threshold
        self.mask_resize = mask_resize
        self.mask_encoding = mask_encoding
        self.images = [str(p) for p in index.image_path]
        # None (from make_index) or NaN (an index read back from CSV) both mean "no mask".
        self.masks = [None if pd.isna(m) else str(m) for m in index.mask_path]
        self.labels = [int(v) for v in index.label]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        image = load_image(self.images[i], self.image_size)
        mask = load_mask(self.masks[i], self.image_size, self.mask_threshold, self.mask_resize, self.mask_encoding)
        if self.masks[i] is not None:
            check_mask_covers_image(self.images[i], self.masks[i])
        return {"image": image, "mask": mask, "label": self.labels[i], "index": i}
