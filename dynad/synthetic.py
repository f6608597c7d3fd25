"""The built-in synthetic dataset: an MVTec AD-style benchmark that runs with nothing downloaded.

Two categories stand in for the two kinds of MVTec classes: "tiles", a periodic textured surface, and "board", an
object made of several parts (a circuit board with seven components). Four defect types cover the four scales the
paper's dynamic noise is about, from a few pixels to a whole missing part:

    spot     a tiny high-contrast dot                       ~0.16 % of the image
    scratch  a thin curved line                             ~0.6 %
    patch    a foreign blob of another colour and texture   ~3 %
    missing  a missing component / missing tiles            ~10 %

Every defect image comes with its exact pixel mask. Each image is drawn from its own random stream, keyed by
(seed, category, split, index), so the same config always gives byte-identical files and changing a count never
reshuffles the other images.

    root = ensure("data/synthetic")   # generates once (a few seconds), then reuses
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from dynad.data import open_rgb
from dynad.progress import tqdm

CATEGORIES = ("tiles", "board")
DEFECT_TYPES = ("spot", "scratch", "patch", "missing")
FORMAT_VERSION = 2  # bump whenever the rendering changes, so that `ensure` regenerates old copies
MANIFEST = "synthetic.json"

RGB = tuple[float, float, float]


@dataclass(frozen=True)
class SynthConfig:
    image_size: int = 128  # 64..256 px; defect sizes scale with it
    n_train: int = 120  # normal training images per category
    n_test_good: int = 20  # normal test images per category
    n_test_per_defect: int = 10  # per defect type per category
    seed: int = 0
    categories: tuple[str, ...] = CATEGORIES

    def __post_init__(self) -> None:
        if not 64 <= self.image_size <= 256:
            raise ValueError(f"image_size must be in 64..256, got {self.image_size}")
        if self.n_train < 1 or self.n_test_good < 0 or self.n_test_per_defect < 0:
            raise ValueError("n_train must be >= 1 and the test counts >= 0")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        unknown = set(self.categories) - set(CATEGORIES)
        if unknown or not self.categories:
            raise ValueError(f"categories must be a non-empty subset of {CATEGORIES}, got {self.categories}")
        object.__setattr__(self, "categories", tuple(self.categories))  # a list from JSON/YAML would not hash


# ---------------------------------------------------------------------------------------------------- public API


def generate(out: str | Path, config: SynthConfig = SynthConfig(), progress: bool = True) -> Path:
    """Write the dataset under `out` (MVTec AD layout plus `synthetic.json`), replacing an older synthetic copy.

    Everything is written into a hidden sibling folder that is renamed onto `out` only once complete, so an
    interrupted run leaves either the previous dataset or nothing, never half a dataset.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        # Never delete a folder we did not make (a real dataset, a typo'd path).
        raise FileExistsError(f"{out} exists and is not a dynad synthetic dataset (no {MANIFEST}); "
                              f"refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        jobs = list(_jobs(config))
        for category, split, index, defect in tqdm(jobs, desc="synthetic dataset", unit="img", disable=not progress):
            image, mask = render(category, defect, config.image_size, _seed(config.seed, category, split, index))
            _save_png(tmp / _image_path(category, split, index), image)
            if defect is not None:
                _save_png(tmp / _mask_path(category, defect, index), np.where(mask, 255, 0).astype(np.uint8))
        (tmp / MANIFEST).write_text(_manifest_text(config))  # written last: its presence marks a complete dataset
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def ensure(out: str | Path, config: SynthConfig = SynthConfig(), progress: bool = True) -> Path:
    """Return `out` untouched if it holds a complete dataset made with this config, else (re)generate it."""
    out = Path(out)
    if _is_complete(out, config):
        return out
    return generate(out, config, progress)


def render(category: str, defect: str | None, image_size: int,
           seed: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One image as (uint8 HxWx3, bool HxW defect mask); `defect=None` gives a normal image and an empty mask.

    The scene, the defect and the photometric jitter draw from three separate streams of `seed`, so rendering the
    same seed with and without a defect gives images that differ exactly inside the mask.
    """
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    if defect is not None and defect not in DEFECT_TYPES:
        raise ValueError(f"unknown defect {defect!r}; expected one of {DEFECT_TYPES}")
    scene_rng, defect_rng, photo_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    scene = _TilesScene(image_size, scene_rng) if category == "tiles" else _BoardScene(image_size, scene_rng)
    if defect == "missing":
        image, mask = scene.render_missing(defect_rng)
    else:
        image = scene.render()
        mask = np.zeros((image_size, image_size), bool)
        if defect is not None:
            mask = _DEFECTS[defect](image, defect_rng, scene.defect_area)
    return _photometric(image, photo_rng), mask


# ------------------------------------------------------------------------------------------------ files and seeds


def _jobs(config: SynthConfig) -> Iterator[tuple[str, str, int, str | None]]:
    """(category, split, index, defect) for every image of the dataset."""
    for category in config.categories:
        yield from ((category, "train/good", i, None) for i in range(config.n_train))
        yield from ((category, "test/good", i, None) for i in range(config.n_test_good))
        for defect in DEFECT_TYPES:
            yield from ((category, f"test/{defect}", i, defect) for i in range(config.n_test_per_defect))


def _seed(seed: int, category: str, split: str, index: int) -> list[int]:
    # crc32 rather than hash(): Python salts str hashes per process.
    return [seed, zlib.crc32(category.encode()), zlib.crc32(split.encode()), index]


def _image_path(category: str, split: str, index: int) -> str:
    return f"{category}/{split}/{index:03d}.png"


def _mask_path(category: str, defect: str, index: int) -> str:
    return f"{category}/ground_truth/{defect}/{index:03d}_mask.png"


def _expected_files(config: SynthConfig) -> Iterator[str]:
    for category, split, index, defect in _jobs(config):
        yield _image_path(category, split, index)
        if defect is not None:
            yield _mask_path(category, defect, index)


def _manifest_text(config: SynthConfig) -> str:
    manifest = {"format": "dynad-synthetic", "version": FORMAT_VERSION, "defect_types": list(DEFECT_TYPES),
                "config": asdict(config)}
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def _is_complete(out: Path, config: SynthConfig) -> bool:
    try:
        found = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    # Compare through JSON so that tuples and lists compare equal; then check no file was deleted since.
    return found == json.loads(_manifest_text(config)) and all((out / p).is_file() for p in _expected_files(config))


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")  # PIL writes no timestamp, so same pixels -> same bytes


def _swap_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old)


# -------------------------------------------------------------------------------------------- drawing primitives


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (yy, xx), read-only so the cached arrays cannot be altered by a caller."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    yy.flags.writeable = xx.flags.writeable = False
    return yy, xx


def _rect(size: int, cy: float, cx: float, h: float, w: float) -> np.ndarray:
    """An axis-aligned box of round(h) x round(w) whole pixels centred near (cy, cx).

    Sizes are rounded before positions, so a part is the same pixel pattern wherever it lands; rasterising the
    float outline instead lets thin pins merge or vanish with sub-pixel jitter, a structural change in normal images.
    """
    mask = np.zeros((size, size), bool)
    h_px, w_px = max(1, round(h)), max(1, round(w))
    y0, x0 = int(np.floor(cy - h_px / 2 + 0.5)), int(np.floor(cx - w_px / 2 + 0.5))
    mask[max(y0, 0):max(y0 + h_px, 0), max(x0, 0):max(x0 + w_px, 0)] = True
    return mask


def _disk(size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = _grid(size)
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _blob(size: int, rng: np.random.Generator, cy: float, cx: float, area: float) -> np.ndarray:
    """An irregular closed blob of roughly `area` pixels: a disk whose radius wobbles with a few low harmonics."""
    yy, xx = _grid(size)
    theta = np.arctan2(yy - cy, xx - cx)
    wobble = np.ones_like(theta)
    for k in (2, 3, 4):
        wobble += rng.uniform(0.0, 0.22 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius = np.sqrt(area / np.pi)
    return np.hypot(yy - cy, xx - cx) <= radius * wobble


def _smooth_noise(size: int, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered HxW noise: a mottled texture."""
    noise = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=sigma, mode="wrap")
    return noise / (noise.std() + 1e-12)


def _paint(image: np.ndarray, mask: np.ndarray, colour: RGB | np.ndarray) -> None:
    image[mask] = np.asarray(colour) if np.ndim(colour) == 1 else colour[mask]


def _luminance(image: np.ndarray) -> np.ndarray:
    return image @ np.array([0.299, 0.587, 0.114])


def _photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera-like variation of normal images: exposure, white balance, a soft light gradient, sensor noise."""
    size = image.shape[0]
    yy, xx = _grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 1 + rng.uniform(0.0, 0.08) * ((xx - size / 2) * np.cos(angle) + (yy - size / 2) * np.sin(angle)) / size
    gain = rng.uniform(0.93, 1.07) * rng.uniform(0.97, 1.03, size=3)
    image = image * gain * gradient[..., None] + rng.normal(0.0, 0.012, image.shape)
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


# -------------------------------------------------------------------------------------------------------- scenes


class _TilesScene:
    """Square terracotta tiles with light grout, random phase and per-tile shade; missing tiles expose the mortar
    bed."""

    TILE: RGB = (0.80, 0.60, 0.42)
    GROUT: RGB = (0.74, 0.72, 0.68)  # light grout: tiles and grout both read as "light" to _contrast_colour
    MORTAR: RGB = (0.40, 0.38, 0.35)

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        self.period = round(size / 8)
        self.grout = max(1, round(size / 64))
        self.phase = rng.integers(0, self.period, size=2)  # the texture is periodic: any phase is a shift
        n_cells = size // self.period + 2
        self.tile_shade = np.clip(rng.normal(1.0, 0.035, size=(n_cells, n_cells)), 0.9, 1.1)
        self.grain = _smooth_noise(size, rng, sigma=0.8)
        self.defect_area = np.ones((size, size), bool)  # defects may land anywhere on a surface

    def _cells(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        yy, xx = _grid(self.size)
        y, x = yy.astype(int) + self.phase[0], xx.astype(int) + self.phase[1]
        return y // self.period, x // self.period, y % self.period, x % self.period

    def render(self) -> np.ndarray:
        cy, cx, v, u = self._cells()
        is_grout = (u < self.grout) | (v < self.grout)
        # Interior coordinates in [-1, 1]: a "pillow" shading darkens each tile towards its edges.
        inner = self.period - self.grout
        s = 2 * (u - self.grout + 0.5) / inner - 1
        t = 2 * (v - self.grout + 0.5) / inner - 1
        shade = self.tile_shade[cy, cx] * (1 - 0.10 * (s**4 + t**4) / 2) * (1 + 0.03 * self.grain)
        image = np.asarray(self.TILE) * shade[..., None]
        _paint(image, is_grout, np.asarray(self.GROUT) * (1 + 0.03 * self.grain[..., None]))
        return image

    def render_missing(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A connected group of 5-9 tiles (with their grout) broken out, showing the notched-trowel mortar bed."""
        image = self.render()
        cy, cx, _, _ = self._cells()
        # Only whole tiles, so that the broken-out area does not shrink at the image border.
        cells, counts = np.unique(np.stack([cy.ravel(), cx.ravel()]), axis=1, return_counts=True)
        visible = [(int(a), int(b)) for a, b in cells[:, counts == self.period**2].T]
        group = {visible[rng.integers(len(visible))]}
        target = int(rng.integers(5, 10))
        while len(group) < target:
            a, b = sorted(group)[rng.integers(len(group))]
            da, db = ((0, 1), (1, 0), (0, -1), (-1, 0))[rng.integers(4)]
            if (a + da, b + db) in visible:
                group.add((a + da, b + db))
        mask = np.zeros((self.size, self.size), bool)
        for a, b in group:
            mask |= (cy == a) & (cx == b)
        yy, xx = _grid(self.size)
        angle = rng.uniform(0, np.pi)
        ridges = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / (self.size / 20))
        mortar = np.asarray(self.MORTAR) * (1 + 0.07 * ridges + 0.04 * _smooth_noise(self.size, rng, 1.5))[..., None]
        _paint(image, mask, mortar)
        return image, mask


@dataclass(frozen=True)
class _Part:
    kind: str
    cx: float  # nominal centre, as a fraction of the image size
    cy: float
    can_go_missing: bool  # only the large parts: "missing" is the large-scale defect
    vertical: bool = False


class _BoardScene:
    """A green circuit board on a dark table: traces, mounting holes and seven components at jittered positions."""

    TABLE: RGB = (0.15, 0.15, 0.16)
    BOARD: RGB = (0.09, 0.40, 0.20)
    TRACE: RGB = (0.18, 0.55, 0.28)
    GOLD: RGB = (0.84, 0.70, 0.32)
    SILVER: RGB = (0.78, 0.78, 0.75)
    BLACK: RGB = (0.09, 0.09, 0.10)
    PARTS = (
        _Part("qfp", 0.31, 0.33, True),  # the main IC, pins on four sides
        _Part("electrolytic", 0.74, 0.30, True),
        _Part("connector", 0.40, 0.80, True),
        _Part("soic", 0.80, 0.70, False),
        _Part("resistor", 0.58, 0.59, False),
        _Part("resistor", 0.14, 0.62, False, vertical=True),
        _Part("ceramic", 0.40, 0.60, False),
    )
    TRACES = (  # polylines in image fractions, drawn before the parts so that parts sit on top of them
        ((0.49, 0.40), (0.60, 0.40), (0.60, 0.55)),
        ((0.24, 0.50), (0.24, 0.70)),
        ((0.36, 0.50), (0.36, 0.57)),
        ((0.64, 0.59), (0.72, 0.59), (0.78, 0.63)),
        ((0.82, 0.47), (0.82, 0.61)),
        ((0.14, 0.68), (0.14, 0.74)),
        ((0.69, 0.82), (0.88, 0.82), (0.88, 0.78)),
        ((0.49, 0.22), (0.56, 0.22)),
    )

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size = size
        k = size / 128
        shift = rng.integers(-round(2 * k), round(2 * k) + 1, size=2)  # the whole board moves a few pixels
        self.dy, self.dx = int(shift[0]), int(shift[1])
        # Whole-pixel jitter (see _rect). Every part draws its jitter even when it will be left out, so that
        # "missing" changes nothing else in the image.
        reach = max(1, round(1.5 * k))
        self.jitter = rng.integers(-reach, reach + 1, size=(len(self.PARTS), 2))
        self.texture = _smooth_noise(size, rng, sigma=1.0)
        self.table_texture = _smooth_noise(size, rng, sigma=2.0)
        yy, xx = _grid(size)
        self.board_mask = self._rounded_rect(yy, xx)
        edge = round(0.12 * size)
        self.defect_area = np.zeros((size, size), bool)
        self.defect_area[edge:-edge, edge:-edge] = True

    def _rounded_rect(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        s = self.size
        half, radius = 0.45 * s, 0.05 * s
        dy = np.maximum(np.abs(yy - s / 2 - self.dy) - (half - radius), 0)
        dx = np.maximum(np.abs(xx - s / 2 - self.dx) - (half - radius), 0)
        return dx**2 + dy**2 <= radius**2

    def render(self) -> np.ndarray:
        return self._draw(omit=None)

    def render_missing(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One large component absent: bare board where it was; the mask is its footprint."""
        candidates = [i for i, part in enumerate(self.PARTS) if part.can_go_missing]
        omit = candidates[rng.integers(len(candidates))]
        footprints = [self._layers(i)[0] for i in range(len(self.PARTS))]
        others = np.logical_or.reduce([f for i, f in enumerate(footprints) if i != omit])
        return self._draw(omit=omit), footprints[omit] & ~others

    def _draw(self, omit: int | None) -> np.ndarray:
        s = self.size
        image = np.asarray(self.TABLE) * (1 + 0.05 * self.table_texture)[..., None]
        _paint(image, self.board_mask, np.asarray(self.BOARD) * (1 + 0.04 * self.texture)[..., None])
        traces = Image.new("L", (s, s))
        draw = ImageDraw.Draw(traces)
        for line in self.TRACES:
            draw.line([(x * s + self.dx, y * s + self.dy) for x, y in line], fill=255, width=max(1, round(s / 80)))
        _paint(image, (np.asarray(traces) > 0) & self.board_mask, self.TRACE)
        for fx, fy in ((0.085, 0.085), (0.915, 0.085), (0.085, 0.915), (0.915, 0.915)):
            cy, cx = fy * s + self.dy, fx * s + self.dx
            _paint(image, _disk(s, cy, cx, 0.032 * s), self.GOLD)
            _paint(image, _disk(s, cy, cx, 0.018 * s), self.TABLE)
        for i in range(len(self.PARTS)):
            if i != omit:
                for mask, colour in self._layers(i)[1]:
                    _paint(image, mask, colour)
        return image

    def _layers(self, i: int) -> tuple[np.ndarray, list[tuple[np.ndarray, RGB]]]:
        """(footprint, [(mask, colour), ...] painted in order) of part `i` at its jittered position."""
        part, s = self.PARTS[i], self.size
        cy = round(part.cy * s) + self.dy + int(self.jitter[i, 0])
        cx = round(part.cx * s) + self.dx + int(self.jitter[i, 1])
        layers = getattr(self, f"_{part.kind}")(cy, cx, part.vertical)
        return np.logical_or.reduce([m for m, _ in layers]), layers

    def _pins(self, cy: float, cx: float, body: tuple[float, float], n: int, sides: str) -> np.ndarray:
        """Rows of `n` gull-wing pins sticking out of a body of (h, w) pixels on the given sides ("tblr")."""
        s, (h, w) = self.size, body
        length, width = 0.045 * s, 0.018 * s
        mask = np.zeros((s, s), bool)
        for side in sides:
            along = w if side in "tb" else h
            pitch = max(2, round(0.8 * along / (n - 1)))  # whole pixels, so the pins of a row look alike
            for t in (np.arange(n) - (n - 1) / 2) * pitch:
                if side in "tb":
                    py = cy + (-1 if side == "t" else 1) * (h + length) / 2
                    mask |= _rect(s, py, cx + t, length, width)
                else:
                    px = cx + (-1 if side == "l" else 1) * (w + length) / 2
                    mask |= _rect(s, cy + t, px, width, length)
        return mask

    def _qfp(self, cy: float, cx: float, _vertical: bool) -> list[tuple[np.ndarray, RGB]]:
        s, body = self.size, 0.27 * self.size
        marking = _rect(s, cy + 0.08 * s, cx, 0.016 * s, 0.14 * s) | _rect(s, cy + 0.04 * s, cx, 0.016 * s, 0.10 * s)
        return [
            (self._pins(cy, cx, (body, body), 8, "tblr"), self.SILVER),
            (_rect(s, cy, cx, body, body), self.BLACK),
            (_disk(s, cy - 0.085 * s, cx - 0.085 * s, 0.02 * s), (0.30, 0.30, 0.32)),
            (marking, (0.38, 0.38, 0.40)),
        ]

    def _soic(self, cy: float, cx: float, _vertical: bool) -> list[tuple[np.ndarray, RGB]]:
        s, h, w = self.size, 0.17 * self.size, 0.11 * self.size
        return [
            (self._pins(cy, cx, (h, w), 4, "lr"), self.SILVER),
            (_rect(s, cy, cx, h, w), self.BLACK),
            (_disk(s, cy - 0.055 * s, cx - 0.03 * s, 0.013 * s), (0.30, 0.30, 0.32)),
        ]

    def _electrolytic(self, cy: float, cx: float, _vertical: bool) -> list[tuple[np.ndarray, RGB]]:
        """Top view of an aluminium can: blue sleeve with a polarity stripe, silver top with a cross-shaped vent."""
        s, r = self.size, 0.175 * self.size
        yy, xx = _grid(s)
        sleeve = _disk(s, cy, cx, r)
        top = _disk(s, cy, cx, 0.72 * r)
        stripe = sleeve & ~top & (np.abs(np.arctan2(yy - cy, xx - cx) - 2.4) < 0.5)
        vent = top & (_rect(s, cy, cx, 0.022 * s, 2 * r) | _rect(s, cy, cx, 2 * r, 0.022 * s))
        return [(sleeve, (0.12, 0.17, 0.42)), (stripe, (0.70, 0.72, 0.78)), (top, (0.74, 0.75, 0.77)),
                (vent, (0.46, 0.46, 0.48))]

    def _connector(self, cy: float, cx: float, _vertical: bool) -> list[tuple[np.ndarray, RGB]]:
        """A white two-row header: plastic housing, dark holes, gold pins."""
        s = self.size
        holes = np.zeros((s, s), bool)
        pins = np.zeros((s, s), bool)
        for row in (-0.045, 0.045):
            for col in np.arange(8) - 3.5:
                py, px = cy + row * s, cx + col * round(0.064 * s)
                holes |= _rect(s, py, px, 0.045 * s, 0.045 * s)
                pins |= _rect(s, py, px, 0.02 * s, 0.02 * s)
        return [(_rect(s, cy, cx, 0.19 * s, 0.56 * s), (0.90, 0.87, 0.79)), (holes, (0.13, 0.12, 0.11)),
                (pins, self.GOLD)]

    def _two_terminal(self, cy: float, cx: float, vertical: bool, body: RGB) -> list[tuple[np.ndarray, RGB]]:
        s = self.size
        h, w = (0.10 * s, 0.045 * s) if vertical else (0.045 * s, 0.10 * s)
        inner = (h * 0.55, w) if vertical else (h, w * 0.55)
        return [(_rect(s, cy, cx, h, w), self.SILVER), (_rect(s, cy, cx, *inner), body)]

    def _resistor(self, cy: float, cx: float, vertical: bool) -> list[tuple[np.ndarray, RGB]]:
        return self._two_terminal(cy, cx, vertical, (0.10, 0.10, 0.11))

    def _ceramic(self, cy: float, cx: float, vertical: bool) -> list[tuple[np.ndarray, RGB]]:
        return self._two_terminal(cy, cx, vertical, (0.72, 0.58, 0.40))


# ------------------------------------------------------------------------------------------------------- defects
# Each takes the clean float image, draws onto it in place and returns the exact mask of the pixels it drew.


def _contrast_colour(image: np.ndarray) -> np.ndarray:
    """Per pixel, near-black on light surfaces and near-white on dark ones, so tiny defects stay high-contrast."""
    dark, light = np.array([0.07, 0.06, 0.06]), np.array([0.96, 0.95, 0.90])
    return np.where(_luminance(image)[..., None] > 0.5, dark, light)


def _centre(rng: np.random.Generator, area: np.ndarray, margin: float) -> tuple[float, float]:
    """A random pixel centre inside `area`, at least `margin` pixels from the image border."""
    size = area.shape[0]
    m = int(np.ceil(margin))
    allowed = np.zeros_like(area)
    allowed[m:size - m, m:size - m] = area[m:size - m, m:size - m]
    ys, xs = np.nonzero(allowed)
    j = rng.integers(len(ys))
    return ys[j] + 0.5, xs[j] + 0.5


def _spot(image: np.ndarray, rng: np.random.Generator, area: np.ndarray) -> np.ndarray:
    size = image.shape[0]
    # 21-32 px at 128 (0.13-0.2 % of the image): still 2-3 px across at the demo's 64 px working resolution,
    # where a 1-px spot (the first version's 0.06 %) is below what a factor-4 latent can resolve.
    radius = max(1.0, rng.uniform(2.6, 3.2) * size / 128)
    cy, cx = _centre(rng, area, 0.1 * size)
    mask = _disk(size, cy, cx, radius)
    _paint(image, mask, _contrast_colour(image))
    return mask


def _scratch(image: np.ndarray, rng: np.random.Generator, area: np.ndarray) -> np.ndarray:
    """A thin quadratic Bezier curve, 30-45 % of the image long."""
    size = image.shape[0]
    length = rng.uniform(0.30, 0.45) * size
    cy, cx = _centre(rng, area, 0.25 * size)
    angle = rng.uniform(0, np.pi)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    p0 = np.array([cx, cy]) - direction * length / 2
    p2 = np.array([cx, cy]) + direction * length / 2
    p1 = np.array([cx, cy]) + normal * rng.uniform(-0.25, 0.25) * length
    t = np.linspace(0, 1, 48)[:, None]
    points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
    canvas = Image.new("L", (size, size))
    ImageDraw.Draw(canvas).line([tuple(p) for p in points], fill=255, width=max(1, round(1.5 * size / 128)),
                                joint="curve")
    mask = np.asarray(canvas) > 0
    _paint(image, mask, _contrast_colour(image))
    return mask


_PATCH_COLOURS: tuple[RGB, ...] = (
    (0.28, 0.38, 0.62),  # blue paint
    (0.33, 0.50, 0.22),  # moss
    (0.80, 0.55, 0.12),  # amber glue
    (0.90, 0.89, 0.84),  # white residue
    (0.55, 0.22, 0.45),  # purple ink
)


def _patch(image: np.ndarray, rng: np.random.Generator, area: np.ndarray) -> np.ndarray:
    """A foreign blob (2-4 % of the image) whose colour is far from what it covers, with a mottled texture."""
    size = image.shape[0]
    target = rng.uniform(0.02, 0.04) * size * size
    cy, cx = _centre(rng, area, 0.1 * size + np.sqrt(target / np.pi) * 1.3)
    mask = _blob(size, rng, cy, cx, target)
    covered = image[mask]
    # "Foreign" in colour, not only in texture: a random palette colour that stands out from (nearly) every pixel
    # it covers, judged by a low percentile since a patch may straddle a dark chip and a white connector.
    contrast = [np.percentile(np.linalg.norm(covered - np.asarray(c), axis=1), 10) for c in _PATCH_COLOURS]
    eligible = [i for i, c in enumerate(contrast) if c >= 0.35] or [int(np.argmax(contrast))]
    colour = _PATCH_COLOURS[eligible[rng.integers(len(eligible))]]
    mottle = 1 + 0.12 * _smooth_noise(size, rng, sigma=1.2)
    _paint(image, mask, np.asarray(colour) * mottle[..., None])
    return mask


_DEFECTS = {"spot": _spot, "scratch": _scratch, "patch": _patch}


# ------------------------------------------------------------------------------ the defects on your own photographs


def _missing_region(image: np.ndarray, rng: np.random.Generator, area: np.ndarray) -> np.ndarray:
    """A region of the surface gone flat (5-10 % of the image): its texture removed, its mean colour kept, so only
    the missing texture tells it apart (the hardest case for a map of intensity differences)."""
    size = image.shape[0]
    target = rng.uniform(0.05, 0.10) * size * size
    cy, cx = _centre(rng, area, 0.05 * size + np.sqrt(target / np.pi) * 1.3)
    mask = _blob(size, rng, cy, cx, target)
    _paint(image, mask, image[mask].mean(0))
    return mask


_PHOTO_DEFECTS = {**_DEFECTS, "missing": _missing_region}


def on_photographs(
    images: Sequence[str | Path],
    out: str | Path,
    category: str,
    image_size: int = 256,
    n_train: int = 150,
    n_test_good: int = 40,
    n_test_per_defect: int = 15,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """A labelled test bed from your own normal photographs: the four defect types above painted on real images.

    The photographs are taken in the order given (resized to image_size square): the first n_train become
    train/good, the next n_test_good test/good, the next 4 x n_test_per_defect get one defect each (spot, scratch,
    patch, missing: a region gone flat) with its exact mask. Files of at most two colours (masks, blank frames) are
    passed over and listed in left_out.txt. The result is a "folder" data set (MVTec layout) in out/category,
    written to a hidden sibling and renamed into place when complete.
    """
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 px, got {image_size}")
    if n_train < 1 or n_test_good < 0 or n_test_per_defect < 0:
        raise ValueError(f"n_train must be >= 1 and the test counts >= 0, "
                         f"got {n_train}, {n_test_good}, {n_test_per_defect}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if category in ("", ".", "..") or Path(category).name != category:
        raise ValueError(f"category must be one folder name, got {category!r}")
    images = [Path(p) for p in images]
    need = n_train + n_test_good + len(DEFECT_TYPES) * n_test_per_defect
    if len(images) < need:
        raise ValueError(f"{need} photographs are needed ({n_train} train, {n_test_good} good test, "
                         f"{len(DEFECT_TYPES)} x {n_test_per_defect} defective), {len(images)} were given: give more, "
                         f"or ask for fewer (dynad synth: --n-train, --n-test-good, --n-test-per-defect)")  # fmt: skip
    target = Path(out) / category
    if target.exists():
        raise FileExistsError(f"{target} exists; choose another --out or --category")
    tmp = target.with_name(f".{category}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    jobs = [("train/good", i, None) for i in range(n_train)] + [("test/good", i, None) for i in range(n_test_good)]
    jobs += [(f"test/{d}", i, d) for d in DEFECT_TYPES for i in range(n_test_per_defect)]
    full = np.ones((image_size, image_size), bool)
    photos, used, left_out = iter(images), [], []
    try:
        for split, index, defect in tqdm(jobs, desc="defects on photographs", disable=not progress):
            for path in photos:
                photo = open_rgb(path)  # DatasetError names a bad file
                # A mask or blank frame saved beside the photographs (Magnetic Tile keeps x.png next to x.jpg) is not
                # a normal surface: as a training image it would teach the model black.
                if photo.getcolors(maxcolors=2) is None:
                    break
                left_out.append(path)
            else:
                raise ValueError(f"{need} photographs are needed ({n_train} train, {n_test_good} good test, "
                                 f"{len(DEFECT_TYPES)} x {n_test_per_defect} defective), {len(images)} were given, of "
                                 f"which {len(left_out)} are masks or blank frames (at most two colours, such as "
                                 f"{left_out[0]}) and were left out: give more, or ask for fewer")  # fmt: skip
            used.append(path)
            photo = photo.resize((image_size, image_size), Image.BICUBIC)
            image = np.asarray(photo, dtype=np.float64) / 255
            if defect is not None:
                rng = np.random.default_rng(_seed(seed, category, split, index))
                mask = _PHOTO_DEFECTS[defect](image, rng, full)
                _save_png(tmp / "ground_truth" / defect / f"{index:03d}_mask.png",
                          np.where(mask, 255, 0).astype(np.uint8))
            _save_png(tmp / split / f"{index:03d}.png", np.clip(np.rint(image * 255), 0, 255).astype(np.uint8))
        (tmp / "sources.txt").write_text("".join(f"{s}/{i:03d}.png <- {p}\n" for (s, i, _), p in zip(jobs, used)))
        if left_out:
            reason = "a mask or blank frame (at most two colours)"
            (tmp / "left_out.txt").write_text("".join(f"{p}: {reason}\n" for p in left_out))
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
