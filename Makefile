# Two commands do everything on a fresh machine: `make demo` and `make test`.
# `make setup` builds .venv/ (Python 3.11) in the order the stack needs; it is idempotent: a stamp file
# records a finished set-up, and it is redone only when pyproject.toml or this Makefile change.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.setup-done
PYTEST_ARGS ?=

.PHONY: setup test test-fast test-gpu demo clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade "pip>=24"
	$(PIP) install torch==2.13.0
	$(PIP) install "setuptools>=77.0.3,<81" wheel
	$(PIP) install "opencv-python-headless>=4.8,<5" "numpy>=1.26"
	MMCV_WITH_OPS=1 $(PIP) install --no-build-isolation mmcv==2.1.0
	$(PIP) install mmengine==0.10.7 mmdet==3.3.0
	$(PIP) install "pycocotools>=2.0.8" "pandas>=2.0" "fsspec>=2023.1" "ensemble-boxes>=1.0.9" "numba>=0.59" "optuna>=3.6" "scikit-learn>=1.4" \
		"tqdm>=4.66" "matplotlib>=3.8" "pytest>=8" "hypothesis>=6.100"
	$(PIP) install --no-build-isolation --no-deps -e . --config-settings editable_mode=compat
	@# mmengine asks for the GUI build opencv-python, which shares the cv2 folder with the headless one and
	@# needs libGL; keep only the headless build.
	$(PIP) uninstall -y opencv-python
	$(PIP) install --force-reinstall --no-deps "opencv-python-headless>=4.8,<5"
	$(PY) -c "import torch, mmcv, mmengine, mmdet; from mmcv.ops import RoIAlign, nms, ModulatedDeformConv2d; \
		print('stack ok: torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmengine', mmengine.__version__, 'mmdet', mmdet.__version__)"
	touch $(STAMP)

test: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

demo: setup
	scripts/demo.sh

test-fast: setup
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

# The checks only a CUDA machine can run (tests/gpu/: fp16 training and resume, nccl DDP, the ensemble
# tester on cuda:0 against the CPU, the shard loop on one GPU); skipped where there is no GPU.
test-gpu: setup
	$(PY) -m pytest tests -m cuda $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
