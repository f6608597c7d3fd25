"""The ways in agree on where things are and say clearly what is wrong: notebook paths resolve against the project
root whatever the working folder, a mistyped synthetic root is an error (not a new data set), and `dynad --help`
describes the tool with examples, notebook 00 gives the numbers of `dynad run`, and the README's Python example
runs as written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from dynad.cli import main as cli_main
from dynad.data import DatasetError
from dynad.paths import default_synthetic_root, project_path, project_root
from dynad.results import ensure_data

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def test_relative_paths_resolve_against_the_project_root_from_any_folder(monkeypatch, tmp_path: Path) -> None:
    assert project_root() == REPO
    for cwd in (REPO / "notebooks", tmp_path):
        monkeypatch.chdir(cwd)
        assert project_path("runs/demo/synthetic/board") == REPO / "runs" / "demo" / "synthetic" / "board"
        assert default_synthetic_root() == REPO / "data" / "synthetic"
        assert project_path(tmp_path / "x") == tmp_path / "x"  # absolute paths stay


def test_a_mistyped_synthetic_root_is_an_error_not_a_new_data_set(tmp_path: Path, capsys) -> None:
    typo = tmp_path / "data" / "synthetc"
    with pytest.raises(DatasetError, match="does not exist.*generated only at"):
        ensure_data("synthetic", typo)
    assert not typo.exists()
    code = cli_main(["run", "--preset", "tiny", "--root", str(typo), "--category", "board", "--out", str(tmp_path / "o")])
    assert code == 2 and "synthetc" in capsys.readouterr().err
    assert not typo.exists() and not (tmp_path / "o").exists()


def test_a_category_typed_with_the_shells_trailing_slash_is_that_category() -> None:
    """Tab completion writes `--category board/`: it was refused as "not a folder name inside" the root."""
    from dynad.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["run", "--category", "board/"]).category == "board"
    assert parse(["tune", "--category", "board/", "--out", "o"]).category == "board"
    assert parse(["reproduce", "--categories", "board/", "tiles"]).categories == ["board", "tiles"]
    assert parse(["synth", "--out", "o", "--category", "surface/"]).category == "surface"


def test_help_has_a_description_examples_and_every_option_explained(capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["--help"])
    top = capsys.readouterr().out
    assert "Dynamic Addition of Noise" in top and "examples:" in top and "dynad run --preset demo" in top
    with pytest.raises(SystemExit):
        cli_main(["run", "--help"])
    run = capsys.readouterr().out
    assert "--threads" in run and "the folder layout of --root" in run and "a category folder inside --root" in run
    with pytest.raises(SystemExit):
        cli_main(["reproduce", "--help"])
    assert "--threads" in capsys.readouterr().out
    from dynad.cli import build_parser

    (commands,) = [a for a in build_parser()._actions if a.dest == "command"]
    unexplained = [f"{name} {' '.join(a.option_strings) or a.dest}" for name, parser in commands.choices.items()
                   for a in parser._actions if not a.help and a.dest != "help"]  # fmt: skip
    assert not unexplained, f"options without help text: {unexplained}"


def test_version_names_the_package_version_and_the_commit(capsys) -> None:
    import tomllib

    import dynad
    from dynad.provenance import git_commit

    with pytest.raises(SystemExit) as exit_:
        cli_main(["--version"])
    assert exit_.value.code == 0
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert dynad.__version__ == version  # read from the installed metadata
    assert capsys.readouterr().out == f"dynad {version} (commit {git_commit()})\n"


def test_dynad_exports_the_pipeline_without_importing_torch_up_front() -> None:
    code = ("import sys, dynad; assert 'DynAD' in dir(dynad) and 'torch' not in sys.modules; "
            "from dynad import DynAD; from dynad.pipeline import DynAD as P; assert DynAD is P; "
            "print(DynAD.load.__doc__ is not None)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0 and done.stdout == "True\n", done.stderr
    with pytest.raises(AttributeError, match="module 'dynad' has no attribute 'Pipeline'"):
        import dynad

        dynad.Pipeline


@pytest.mark.slow
@pytest.mark.notebooks
def test_notebook_00_and_dynad_run_agree_and_progress_is_visible(shared_data, tmp_path: Path) -> None:
    """One thread count per run: notebook 00 (papermill CLI, kernel in notebooks/) and `dynad run`, each training from
    scratch with threads=1 in a process whose OMP default is 2 threads, give the same numbers. Under papermill the
    training's progress reaches the terminal (stderr) without --log-output, and the saved notebook keeps each bar's
    final state as text (not an ipywidget frozen at 0 %)."""
    root, _ = shared_data
    # Without pytest's marker variable, which makes ipykernel skip its capture of the kernel's stderr.
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env.update(OMP_NUM_THREADS="2", PYTHONPATH=str(REPO))
    nb_out = tmp_path / "00.ipynb"
    cmd = [sys.executable, "-m", "papermill", str(NOTEBOOKS / "00_quickstart.ipynb"), str(nb_out), "--cwd",
           str(NOTEBOOKS), "-p", "preset", "tiny", "-p", "root", str(root), "-p", "run_dir", str(tmp_path / "nb"),
           "-p", "threads", "1"]  # fmt: skip
    pm = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert pm.returncode == 0, pm.stderr[-3000:]
    cli = subprocess.run(
        [sys.executable, "-m", "dynad.cli", "run", "--preset", "tiny", "--root", str(root), "--category", "board",
         "--out", str(tmp_path / "cli"), "--threads", "1"], env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-3000:]
    a = json.loads((tmp_path / "nb" / "eval" / "metrics.json").read_text())
    b = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert a["threads"] == b["threads"] == 1 and a["provenance"]["config"]["threads"] == 1
    for k in ("image_auroc", "pixel_auroc", "pro", "knn_baseline_image_auroc"):
        assert a[k] == b[k], k
    with np.load(tmp_path / "nb" / "eval" / "maps.npz") as za, np.load(tmp_path / "cli" / "maps.npz") as zb:
        assert all(np.array_equal(za[k], zb[k]) for k in ("anomaly_map", "latent_map", "feature_map"))
    # Progress: in papermill's terminal, and in the saved notebook as text in its final state.
    assert "denoiser: 100%" in pm.stderr and "autoencoder: 100%" in pm.stderr
    nb = nbformat.read(nb_out, as_version=4)
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "denoiser: 100%" in text and "inference: 100%" in text
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)


def test_the_readmes_python_example_runs_as_written(shared_data, tmp_path: Path, monkeypatch) -> None:
    """The README's "3. Python" lines, executed: only the preset (tiny for demo) and the data folder (the tests' tiny
    set for data/synthetic) are swapped, so a renamed import or a changed signature fails here."""
    import dynad.config
    import dynad.results

    root, models = shared_data
    readme = (REPO / "README.md").read_text()
    code = readme.split("# 3. Python\n", 1)[1].split("```", 1)[0]
    real_load_preset = dynad.config.load_preset
    monkeypatch.setattr(dynad.config, "load_preset", lambda name: real_load_preset("tiny" if name == "demo" else name))
    monkeypatch.setattr(dynad.results, "ensure_data", lambda dataset, path: ensure_data(dataset, root))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md (3. Python)", "exec"), namespace)
    assert 0 <= namespace["result"]["image_auroc"] <= 1
    assert json.loads((tmp_path / "runs" / "board" / "metrics.json").read_text())["category"] == "board"
    out = namespace["out"]  # `from dynad import DynAD`, new on 2026-12-07, and the image at its own size
    assert out["anomaly_map"].shape == (1, 64, 64) and out["pred_score"].shape == (1,)  # the tests' 64 px images
