"""`make benchmark`'s two scripts record what made their numbers (commit, CPU, versions, time), and a clone without
the demo run writes the tiny preset's inference numbers beside the demo pipeline's instead of over them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import benchmark_scripts
import pytest

from dynad.provenance import cpu_description, git_commit


def _assert_environment(result: dict) -> None:
    assert result["git_commit"] == git_commit() and result["cpu"] == cpu_description()
    assert result["versions"]["torch"] and result["created"].startswith("20")


def test_bench_metrics_records_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    script = benchmark_scripts.BENCHMARKS / "bench_metrics.py"
    subprocess.run([sys.executable, script, "--n", "6", "--size", "32", "--out", out], check=True, capture_output=True)
    result = json.loads(out.read_text())
    _assert_environment(result)
    assert set(result["metrics"]) == {"pixel_auroc", "pro_exact", "pro_thresholds200", "evaluate"}


@pytest.mark.usefixtures("one_thread")
def test_bench_inference_without_the_demo_run_keeps_the_demo_numbers(tmp_path: Path, monkeypatch) -> None:
    bench = benchmark_scripts.load("bench_inference")
    monkeypatch.setattr(bench, "HERE", tmp_path)  # its results/ folder
    monkeypatch.setattr(bench.tempfile, "gettempdir", lambda: str(tmp_path))  # its synthetic set and tiny models
    assert bench.main(["--pipeline", str(tmp_path / "no_demo_run.pt"), "--images", "16"]) == 0
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["inference_tiny.json"]
    result = json.loads((tmp_path / "results" / "inference_tiny.json").read_text())
    _assert_environment(result)
    assert result["preset"] == "tiny" and result["torch_threads"] == 1
    assert [r["batch"] for r in result["runs"]] == [1, 16]


def test_compare_results_exit_codes_and_a_mistyped_folder(tmp_path: Path, capsys) -> None:
    compare = benchmark_scripts.load("compare_results")
    a, b = tmp_path / "a" / "tables", tmp_path / "b" / "tables"
    for d in (a, b):
        d.mkdir(parents=True)
        (d / "main_synthetic.md").write_text("| board | 97.75 |\n")
    assert compare.main([str(a.parent), str(b.parent)]) == 0
    (b / "main_synthetic.md").write_text("| board | 97.12 |\n")
    assert compare.main([str(a.parent), str(b.parent)]) == 1
    assert "main_synthetic.md:1: '| board | 97.75 |' != '| board | 97.12 |'" in capsys.readouterr().out
    # A mistyped path is an error naming it (it used to list every table of the other folder as "only in").
    with pytest.raises(SystemExit) as e:
        compare.main([str(a.parent), str(tmp_path / "typo")])
    assert e.value.code == 2 and f"results folder {tmp_path / 'typo'} does not exist" in capsys.readouterr().err
    # One level too high on one side: one line saying so.
    assert compare.main([str(a.parent), str(tmp_path)]) == 1
    assert "no table in common between" in capsys.readouterr().out
