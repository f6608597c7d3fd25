"""`dynad reproduce` on the tiny preset: a failing category is recorded while the others complete, a second call
skips what is done, an interrupted run reruns only what is missing, and two reproductions give identical tables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from dynad.reproduce import CATEGORY_NOTEBOOKS, reproduce
from dynad.results import compare_tables

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, shared_data) -> dict:
    root, models = shared_data
    return {"root": root, "models": models, "base": tmp_path_factory.mktemp("reproduce")}


def _reproduce(env: dict, name: str, categories=("board",), **kw) -> int:
    return reproduce(
        preset="tiny", datasets=["synthetic"], categories=list(categories), roots={"synthetic": str(env["root"])},
        runs=env["base"] / name / "runs", results=env["base"] / name / "results", models=env["models"],
        progress=False, **kw,
    )  # fmt: skip


def _run_dir(env: dict, name: str, category: str = "board") -> Path:
    return env["base"] / name / "runs" / "tiny" / "synthetic" / category


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.glob("*.ipynb"))}


@pytest.fixture(scope="module")
def first(env: dict) -> dict:
    """Reproduction A: board (with ablations) and a category that does not exist, two categories in parallel."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        # threads=1 whatever the cores: torch's CPU results depend on the thread count, and the tables are compared
        # with notebooks run on one thread.
        rc = _reproduce(env, "a", categories=("board", "no_such_category"), jobs=2, ablations=True, threads=1)
    return {"rc": rc, "out": buf.getvalue()}


def test_failing_category_is_recorded_and_the_others_complete(env: dict, first: dict) -> None:
    assert first["rc"] == 1
    out = first["out"]
    failed_nb = _run_dir(env, "a", "no_such_category") / "notebooks" / f"{CATEGORY_NOTEBOOKS[0]}.ipynb"
    assert "synthetic/no_such_category" in out and "FAILED" in out
    assert str(failed_nb) in out and failed_nb.is_file()  # the executed notebook shows the traceback
    failure = [ln for ln in out.splitlines() if ln.strip().startswith("synthetic/no_such_category [")][0]
    assert "no_such_category" in failure and ":" in failure.split("]: ", 1)[1]  # `ErrorName: message`
    run = _run_dir(env, "a")
    for stem in CATEGORY_NOTEBOOKS:
        assert (run / f"{stem}.done.json").is_file() and (run / "notebooks" / f"{stem}.ipynb").is_file()
    res = env["base"] / "a" / "results" / "tiny"
    main = pd.read_csv(res / "tables" / "main_synthetic.csv")
    assert main.category.tolist() == ["board", "mean"]
    assert (res / "tables" / "table5_synthetic.md").is_file()
    assert (res / "figures" / "step_size_explorer.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (res / "notebooks" / "06_paper_tables_and_figures.ipynb").is_file()
    manifest = json.loads((res / "manifest.json").read_text())
    assert [r["device"].endswith(", 1 threads)") for r in manifest["runs"] if r["run"] == "eval"] == [True]


def test_second_call_skips_what_is_done(env: dict, first: dict, capsys: pytest.CaptureFixture) -> None:
    run = _run_dir(env, "a")
    res = env["base"] / "a" / "results" / "tiny"
    before = {**_mtimes(run / "notebooks"), **_mtimes(res / "notebooks")}
    assert _reproduce(env, "a", ablations=True) == 0
    assert {**_mtimes(run / "notebooks"), **_mtimes(res / "notebooks")} == before  # nothing re-executed
    out = capsys.readouterr().out
    assert "synthetic/board" in out and "FAILED" not in out


def test_interrupted_run_reruns_only_what_is_missing(env: dict, first: dict) -> None:
    run = _run_dir(env, "a")
    # As if killed during notebook 03: its marker and half of its outputs are missing.
    (run / "03_knn_binning.done.json").unlink()
    shutil.rmtree(run / "knn")
    before = _mtimes(run / "notebooks")
    res_before = _mtimes(env["base"] / "a" / "results" / "tiny" / "notebooks")
    assert _reproduce(env, "a", ablations=True) == 0
    after = _mtimes(run / "notebooks")
    changed = sorted(k for k in after if after[k] != before.get(k))
    assert changed == ["03_knn_binning.ipynb"]
    assert (run / "knn" / "bin_table.csv").is_file() and (run / "03_knn_binning.done.json").is_file()
    # No evaluation result changed, so the tables are not regenerated either.
    assert _mtimes(env["base"] / "a" / "results" / "tiny" / "notebooks") == res_before


def test_changed_parameters_rerun(env: dict, first: dict) -> None:
    """A marker only counts for the parameters it records: other overrides run the notebook again."""
    run = _run_dir(env, "a")
    marker = json.loads((run / "04_evaluate.done.json").read_text())
    assert marker["parameters"]["overrides"] == [] and marker["parameters"]["category"] == "board"
    from dynad.results import marker_matches

    assert marker_matches(run, "04_evaluate", marker["parameters"])
    assert not marker_matches(run, "04_evaluate", {**marker["parameters"], "overrides": ["dic.k=5"]})


def test_two_reproductions_give_identical_tables(env: dict, first: dict) -> None:
    a = env["base"] / "a" / "results" / "tiny"
    # The other reproduction: tests/test_notebooks.py ran the same notebooks one by one into another runs folder
    # (sharing the trained models, as here); run alone, this module makes its own.
    recorded = env["root"].parent / "notebook_results.txt"
    if recorded.is_file():
        b = Path(recorded.read_text())
    else:
        assert _reproduce(env, "b", ablations=True) == 0
        b = env["base"] / "b" / "results" / "tiny"
    assert b.resolve() != a.resolve()
    assert compare_tables(a, b) == []
    assert len(list((a / "tables").glob("*.csv"))) >= 8
    # compare_tables does see a difference.
    shutil.copytree(b / "tables", env["base"] / "c")
    (env["base"] / "c" / "main_synthetic.csv").write_text("category,image_auroc\nboard,1.00\n")
    (env["base"] / "c" / "space_synthetic.md").unlink()
    diffs = compare_tables(a, env["base"] / "c")
    assert any(d.startswith("main_synthetic.csv") for d in diffs) and any("space_synthetic.md" in d for d in diffs)


def test_a_data_set_without_folder_fails_with_a_clear_message(env: dict, capsys: pytest.CaptureFixture) -> None:
    rc = reproduce(preset="tiny", datasets=["btad"], categories=["01"], roots={}, runs=env["base"] / "x" / "runs",
                   results=env["base"] / "x" / "results", progress=False)  # fmt: skip
    assert rc == 1
    out = capsys.readouterr().out
    assert "btad/(all)" in out and "no data folder for data set 'btad'" in out
    assert not (env["base"] / "x" / "results").exists()  # nothing ran, nothing to summarise


def test_bad_root_and_bad_override_are_reported_once_before_any_kernel(env: dict, capsys, tmp_path: Path) -> None:
    from dynad.config import ConfigError

    runs = tmp_path / "runs"
    # MVTec AD's 15 categories, one missing folder: one line, not 15.
    rc = reproduce(preset="tiny", datasets=["mvtec"], roots={"mvtec": str(tmp_path / "typo")}, runs=runs,
                   results=tmp_path / "results", progress=False)  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 1 and out.count("does not exist") == 1 and "mvtec/(all)" in out
    assert not runs.exists()  # no notebook started
    with pytest.raises(ConfigError, match="dic.kk"):
        _reproduce(env, "bad-set", overrides=["dic.kk=3"])
    with pytest.raises(ConfigError, match="threads"):
        _reproduce(env, "bad-threads", threads="two")
    assert not (env["base"] / "bad-set").exists()
    # A mistyped synthetic root is an error, not a new data set generated there.
    rc = reproduce(preset="tiny", datasets=["synthetic"], roots={"synthetic": str(tmp_path / "synthetc")}, runs=runs,
                   results=tmp_path / "results", progress=False)  # fmt: skip
    assert rc == 1 and "synthetc" in capsys.readouterr().out and not (tmp_path / "synthetc").exists()
