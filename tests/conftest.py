"""Fixtures shared by the notebook, reproduce and explorer tests: one tiny synthetic set and one models folder per
session (the tiny models train once), and one torch thread (on 2 shared cores, 2 threads each are several times
slower)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dynad import synthetic
from dynad.synthetic import SynthConfig

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
