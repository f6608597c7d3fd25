"""The localization split (dynad.report.tables, benchmarks/localization.py, notebook 04) on maps known by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from dynad import metrics
from dynad.report import tables


def _case(defect_raise: float):
    """2 normal images (maps 0..0.3), 2 of type 'a' raised by 1 everywhere, their 2 x 2 defect by defect_raise more,
    and 1 of type 'b' with a 4 x 4 defect the map misses entirely."""
    rng = np.random.default_rng(0)
    maps = rng.uniform(0, 0.3, size=(5, 8, 8)).astype(np.float32)
    masks = np.zeros((5, 8, 8), bool)
    masks[2:4, 3:5, 3:5] = True
    masks[4, :4, :4] = True
    maps[2:4] += 1.0
    maps[2:4][masks[2:4]] += defect_raise
    return maps, masks, np.array([0, 0, 1, 1, 1]), np.array(["good", "good", "a", "a", "b"])


def test_raised_image_and_pointed_defect():
    table = tables.localization_split(*_case(defect_raise=1.0)).set_index("defect_type")
    assert table.loc["a", "background"] == 1.0  # every non-defect pixel of an 'a' image is above every normal pixel
    assert table.loc["a", "within"] == 1.0  # and the defect is above the rest of its image
    assert table.loc["a", "pixel_auroc"] == 1.0
    assert table.loc["a", "share"] == pytest.approx(8 / 24) and table.loc["b", "share"] == pytest.approx(16 / 24)
    assert table.loc["all", "images"] == 3
    # 'b' is drawn from the normal images' distribution: neither raised nor pointed at (up to sampling)
    assert 0.3 < table.loc["b", "background"] < 0.7 and 0.2 < table.loc["b", "within"] < 0.8


def test_raised_image_without_localization():
    """A map raised uniformly over the defective image: image-level evidence only, within is at chance."""
    maps, masks, labels, types = _case(defect_raise=0.0)
    table = tables.localization_split(maps, masks, labels, types).set_index("defect_type")
    assert table.loc["a", "background"] == 1.0
    a_maps, a_masks = maps[2:4], masks[2:4]
    inside, outside = a_maps[a_masks], a_maps[~a_masks]  # scikit-learn as the independent reference
    expected = roc_auc_score(np.r_[np.zeros(outside.size), np.ones(inside.size)], np.r_[outside, inside])
    assert table.loc["a", "within"] == pytest.approx(expected, abs=1e-12)
    assert 0.25 < table.loc["a", "within"] < 0.75
    # the pooled row is the run's own pixel AUROC over every test image
    assert table.loc["all", "pixel_auroc"] == pytest.approx(metrics.pixel_auroc(masks, maps))


def test_type_without_defect_pixels():
    """A defective image whose mask is empty (MTD has 4) gives its type NaN rows, not an error."""
    maps, masks, labels, types = _case(defect_raise=1.0)
    maps, masks = np.concatenate([maps, maps[:1]]), np.concatenate([masks, np.zeros_like(masks[:1])])
    labels, types = np.append(labels, 1), np.append(types, "c")
    table = tables.localization_split(maps, masks, labels, types).set_index("defect_type")
    assert table.loc["c", "share"] == 0
    assert np.isnan(table.loc["c", "pixel_auroc"]) and np.isnan(table.loc["c", "within"])
    assert table.loc["a", "within"] == 1.0 and table.loc["all", "images"] == 4


def test_read_from_a_run_folder(tmp_path):
    """localization_table reads a run's maps.npz and per_image.csv (float16 maps, as runs write them)."""
    maps, masks, labels, types = _case(defect_raise=1.0)
    np.savez(tmp_path / "maps.npz", anomaly_map=maps.astype(np.float16), gt_mask=masks)
    pd.DataFrame({"path": [f"{i}.png" for i in range(5)], "label": labels, "defect_type": types}).to_csv(
        tmp_path / "per_image.csv", index=False)
    table = tables.localization_table(tmp_path)
    assert list(table.defect_type) == ["a", "b", "all"]
    assert table.set_index("defect_type").loc["a", "within"] == 1.0
    pd.DataFrame({"path": ["x"], "label": [0], "defect_type": ["good"]}).to_csv(tmp_path / "per_image.csv", index=False)
    with pytest.raises(ValueError, match="per_image.csv has 1 rows but maps.npz 5 maps"):
        tables.localization_table(tmp_path)
