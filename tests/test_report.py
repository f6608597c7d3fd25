"""The report layer's tables (dynad/report/tables.py) on hand-made run metrics: the peers sit beside DynAD."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dynad.report.runs import Run
from dynad.report.tables import comparison_table, main_table, peers_table, table1_visa, table3_btad
from dynad.report.targets import load_targets


def _metrics(i_auroc: float, patch: float | None) -> dict:
    m = {"image_auroc": i_auroc, "pixel_auroc": 0.9, "pro": 0.8, "knn_baseline_image_auroc": 0.7}
    if patch is not None:
        m["baselines"] = {"knn_distance": {"image_auroc": 0.7, "pixel_auroc": None, "pro": None},
                          "patch_knn": {"image_auroc": patch, "pixel_auroc": 0.85, "pro": 0.75, "bank": 10}}  # fmt: skip
    return m


def _runs(patch: list[float | None]) -> list[Run]:
    return [Run("synthetic", c, Path(c), _metrics(0.9 + 0.05 * i, p)) for i, (c, p) in enumerate(zip("ab", patch))]


def test_main_table_shows_the_patch_knn_peer_only_when_the_runs_computed_it():
    targets = load_targets()
    old = main_table(_runs([None, None]), "synthetic", targets)
    assert list(old.columns) == ["category", "ours", "image_auroc", "pixel_auroc", "pro", "knn_image_auroc"]
    new = main_table(_runs([0.6, 0.8]), "synthetic", targets)
    assert list(new.columns) == [*old.columns, "patch_knn_image_auroc", "patch_knn_pixel_auroc", "patch_knn_pro"]
    assert new.patch_knn_image_auroc.tolist() == pytest.approx([60.0, 80.0, 70.0])  # two categories and their mean
    assert new.image_auroc.tolist() == pytest.approx([90.0, 95.0, 92.5])
    mixed = main_table(_runs([0.6, None]), "synthetic", targets)
    assert np.isnan(mixed.patch_knn_image_auroc[1]) and mixed.patch_knn_image_auroc[2] == pytest.approx(60.0)


def test_comparison_table_adds_the_peers_rows_and_paper_tables_are_named():
    targets = load_targets()
    runs = [Run("visa", c, Path(c), _metrics(0.9, 0.8)) for c in ("candle", "pcb1")]
    t = comparison_table(runs, "visa", targets)
    assert t.method.iloc[-3].startswith("dynad") and t.method.iloc[-2].startswith("kNN distance alone")
    assert t.method.iloc[-1].startswith("patch kNN") and t.image_auroc.iloc[-1] == pytest.approx(80.0)
    assert np.isnan(t.pixel_auroc.iloc[-2])  # the kNN distance scores images only
    assert len(comparison_table([Run("visa", "candle", Path("c"), _metrics(0.9, None))], "visa", targets)) == len(t) - 2
    assert table1_visa(runs, targets).equals(main_table(runs, "visa", targets))
    assert "paper_image_auroc" in table3_btad([], targets).columns


def test_main_table_mean_difference_compares_the_same_categories():
    """With BTAD's 01 alone (88.88 against the paper's 98.9), the mean row's diff was 88.88 - 95.2 (the paper's mean
    over its three categories): -6.3 instead of 01's -10.0."""
    targets = load_targets()
    paper = targets["main"]["btad"]
    one = main_table([Run("btad", "01", Path("01"), _metrics(0.8888, None))], "btad", targets).set_index("category")
    assert one.loc["01", "diff_image_auroc"] == pytest.approx(88.88 - paper["01"]["image_auroc"])
    assert one.loc["mean", "diff_image_auroc"] == pytest.approx(one.loc["01", "diff_image_auroc"])
    assert one.loc["mean", "paper_image_auroc"] == paper["mean"]["image_auroc"]  # the paper's column stays the paper's
    runs = [Run("btad", c, Path(c), _metrics(0.9 + 0.02 * i, None)) for i, c in enumerate(("01", "02", "03"))]
    every = main_table(runs, "btad", targets).set_index("category")
    assert every.loc["mean", "diff_image_auroc"] == pytest.approx(92.0 - paper["mean"]["image_auroc"])
    (method,) = [m for m in comparison_table(runs[:1], "btad", targets).method if m.startswith("dynad")]
    assert method == "dynad (this reproduction, 1 category)"


def test_a_figure_drawn_twice_is_the_same_file(tmp_path, monkeypatch):
    """PDFs carried their creation time, so every regeneration of results/ changed each PDF's bytes."""
    from dynad.report.figures import figure3_architecture

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for path, day in ((a, 0), (b, 1)):  # drawn on two days
        monkeypatch.setenv("SOURCE_DATE_EPOCH", str(86400 * day))
        figure3_architecture(path)
    assert a.read_bytes() == b.read_bytes()
    assert a.with_suffix(".pdf").read_bytes() == b.with_suffix(".pdf").read_bytes()


def test_peers_table_reads_metrics_json(tmp_path):
    (tmp_path / "metrics.json").write_text(json.dumps(_metrics(0.9, 0.6)))
    t = peers_table(tmp_path)
    assert t.method.tolist() == ["DynAD", "kNN distance alone", "patch kNN (bank 10 patches)"]
    assert t.image_auroc.tolist() == pytest.approx([0.9, 0.7, 0.6])
    (tmp_path / "metrics.json").write_text(json.dumps(_metrics(0.9, None)))
    assert len(peers_table(tmp_path)) == 2
    assert isinstance(peers_table(tmp_path), pd.DataFrame)


def test_regenerating_without_any_run_says_so_and_writes_the_papers_tables(tmp_path):
    """A mistyped runs_dir gave tables of the paper's numbers without a word, and notebook 06 then stopped on a
    KeyError in its provenance table (no run, no columns)."""
    from dynad.report.regenerate import regenerate

    with pytest.warns(UserWarning, match=f"no complete run under {tmp_path / 'runs'} .*the paper's numbers only"):
        written = regenerate(tmp_path / "runs", tmp_path / "results", "demo", pipeline_figures=0)
    assert {"tables/main_visa.md", "tables/main_btad.md"} <= set(written)  # the data sets TARGETS.md has tables of
    assert (tmp_path / "results" / "demo" / "figures" / "fig3_architecture.pdf").is_file()  # the method's diagram
    assert "figures/fig3_architecture.png" in written
    manifest = json.loads((tmp_path / "results" / "demo" / "manifest.json").read_text())
    assert manifest["runs"] == []


def test_a_defect_type_named_like_a_missing_value_keeps_its_name(tmp_path):
    """pandas reads "NA", "None" or "null" as missing: a defect folder so named lost its name in notebook 04's
    table and in the ablation tables; only an empty cell (a pixel metric not computed) is missing."""
    from dynad.report.tables import category_metrics

    (tmp_path / "metrics.json").write_text(json.dumps({
        "n_test": 6, "image_auroc": 0.9, "pixel_auroc": None, "pro": None, "knn_baseline_image_auroc": 0.8}))
    (tmp_path / "per_defect.csv").write_text(
        "defect_type,n,image_auroc,pixel_auroc,pro\nNA,2,0.75,,\nNone,2,1.0,,\nnull,2,0.5,,\n")
    table = category_metrics(tmp_path)
    assert table.defect_type.tolist() == ["all", "NA", "None", "null"]
    assert table.image_auroc.tolist() == [0.9, 0.75, 1.0, 0.5] and table.pixel_auroc.isna().all()
