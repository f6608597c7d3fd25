"""The ways in agree on where things are and say clearly what is wrong: notebook paths resolve against the project
root whatever the working folder, a mistyped synthetic root is an error (not a new data set), and `dynad --help`
describes the tool with examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from dynad.cli import main as cli_main
from dynad.data import DatasetError
from dynad.paths import default_synthetic_root, project_path, project_root
from dynad.results import ensure_data

REPO = Path(__file__).resolve().parents[1]


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
