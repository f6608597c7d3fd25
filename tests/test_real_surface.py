"""benchmarks/real_surface.py: texture crops whose test views share no pixel with the training views, and its table."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from dynad.config import ConfigError

import benchmark_scripts


@pytest.fixture(scope="module")
def bench():
    return benchmark_scripts.load("real_surface")


def test_texture_crops_split_the_photograph_without_a_shared_pixel(bench, tmp_path):
    photo = np.random.default_rng(0).integers(0, 256, (512, 512), dtype=np.uint8)
    paths = bench.texture_crops(photo, tmp_path)
    assert len(paths) == 250
    corners = [tuple(int(v) for v in re.match(r"\d+_y(\d+)_x(\d+)\.png", p.name).groups()) for p in paths]
    train, test = corners[:150], corners[150:]
    assert max(y for y, _ in train) + bench.CROP <= 512 - bench.TEST_ROWS <= min(y for y, _ in test)
    assert len(set(train)) == 150 and len(set(test)) == 100
    for path, (y, x) in zip(paths[::37], corners[::37]):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), photo[y : y + 128, x : x + 128])
    with pytest.raises(ValueError, match="at least 288 rows"):
        bench.texture_crops(photo[:256], tmp_path / "small")


def test_summary_tabulates_every_surface(bench, tmp_path):
    per_defect = "defect_type,n,image_auroc\nmissing,15,1.0\npatch,15,0.9\nscratch,15,0.8\nspot,15,0.7\n"
    result = {"image_auroc": 0.85, "pixel_auroc": 0.96, "pro": 0.9, "per_defect_csv": per_defect, "wall_seconds": 90,
              "baselines": {"patch_knn": {"image_auroc": 0.99, "pixel_auroc": 0.98, "pro": 0.97},
                            "knn_distance": {"image_auroc": 0.8}},
              "validation": {"image_auroc": 1.0, "pixel_auroc": 0.95}}  # fmt: skip
    (tmp_path / "real_surface_gravel.json").write_text(json.dumps(result))
    (tmp_path / "real_surface_mtd.json").write_text(json.dumps({**result, "image_auroc": 0.5}))
    (tmp_path / "real_surface_grass.json").write_text(json.dumps({**result, "image_auroc": 0.95, "pixel_auroc": 0.98}))
    rows = bench.summary(tmp_path).splitlines()
    assert "on each surface; commands" in rows[0]  # no override: the preset as it is
    assert rows[-1] == "| mean of the 2 unseen textures | **0.900 / 0.970 / 0.900** | | | | | |"  # mtd is not one
    assert rows[-3] == ("| gravel | **0.850 / 0.960 / 0.900** | 0.70 / 0.80 / 0.90 / 1.00 | 0.990 / 0.980 / 0.970 | "
                        "0.800 | 1.000 / 0.950 | 1.5 |")  # fmt: skip
    (tmp_path / "real_surface_moon.json").write_text(json.dumps({**result, "image_auroc": 0.1}))
    rows = bench.summary(tmp_path).splitlines()
    assert rows[-1] == "| mean of the 2 unseen textures | **0.900 / 0.970 / 0.900** | | | | | |"  # nor is the moon
    assert any(row.startswith("| moon | **0.100 / ") for row in rows)
    (tmp_path / "real_surface_brick.json").write_text(json.dumps({**result, "overrides": ["seed=43"]}))
    assert "on each surface, with `--set seed=43`; commands" in bench.summary(tmp_path)


def test_a_surface_without_its_data_is_named_and_skipped(bench, tmp_path, monkeypatch, capsys):
    assert bench.missing("mtd", tmp_path) == f"{tmp_path}: no Magnetic Tile data (MT_Free/ missing); pass --mtd"
    assert bench.missing("gravel", tmp_path) is None  # scikit-image is a dev dependency: its photograph is there
    monkeypatch.setattr("sys.argv", ["real_surface.py", "--surface", "mtd", "--mtd", str(tmp_path)])
    with pytest.raises(SystemExit, match="no surface to measure"):
        bench.main()
    assert "skipping mtd" in capsys.readouterr().out


def test_a_bad_override_fails_before_any_surface_is_built(bench, monkeypatch):
    monkeypatch.setattr(bench, "measure", lambda *a: pytest.fail("a surface was built"))
    monkeypatch.setattr("sys.argv", ["real_surface.py", "--surface", "gravel", "--set", "sed=43"])
    with pytest.raises(ConfigError, match="unknown config key sed"):
        bench.main()
