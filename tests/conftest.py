"""Fixtures shared by the notebook, reproduce and explorer tests: one tiny synthetic set and one models folder per
session (the tiny models train once per worker), and one torch thread (on 2 shared cores, 2 threads each are several
times slower).

`make test` runs the suite on three worker processes (pytest-xdist, `-n 3`) on two cores: much of its time is spent
waiting on notebook kernels and subprocesses, and the third worker fills that wait. Each test file stays on one
worker, so a module fixture is built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dynad import synthetic
from dynad.synthetic import SynthConfig

# The two longest files start first, one on each worker; the others fill in around them.
FIRST = ("test_notebooks", "test_reproduce")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.stem not in FIRST)  # stable: file order otherwise


@pytest.hookimpl(optionalhook=True)  # a plain `pytest` without xdist runs the same files serially
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Work units are whole test files (xdist's `loadfile`), in collection order."""
    from xdist.scheduler import LoadFileScheduling

    config.option.loadscopereorder = False  # xdist would otherwise start with the files that hold the most tests
    return LoadFileScheduling(config, log)


SYNTH = SynthConfig(image_size=64, n_train=24, n_test_good=4, n_test_per_defect=2, categories=("board",))


@pytest.fixture(scope="session")
def synth_config() -> SynthConfig:
    return SYNTH


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(synthetic root, models folder), the same for every test of the session."""
    base = tmp_path_factory.getbasetemp() / "dynad-shared"
    return synthetic.ensure(base / "synthetic", SYNTH, progress=False), base / "models"


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread here and in the notebook kernels (which inherit OMP_NUM_THREADS)."""
    import torch

    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env
