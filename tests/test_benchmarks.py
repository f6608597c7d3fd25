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
