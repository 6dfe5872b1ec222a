# Quick start: `make run` (train and test on the embedded data), `make test` (the whole test suite) and
# `make test-fast` (tests/unit and the doctests: no training, under a minute).
# Each creates .venv on first use; torch and torchvision are pinned to the builds this machine holds.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/synthetic_two_head.yaml
RUN_ROOT := runs/quickstart/$(shell date +%Y%m%d-%H%M%S)

.PHONY: run test test-fast clean-venv

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python train.py fit --config $(CONFIG) --trainer.default_root_dir $(RUN_ROOT) \
		--trainer.enable_progress_bar false
	$(BIN)/python train.py test --config $(CONFIG) --trainer.default_root_dir $(RUN_ROOT) \
		--ckpt_path $(RUN_ROOT)/version_0/checkpoints/best.ckpt --trainer.enable_progress_bar false --verbose false

test: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q --durations=25

test-fast: $(STAMP)
	WANDB_MODE=disabled $(BIN)/python -m pytest -q tests/unit avgk_lightning

clean-venv:
	rm -rf $(VENV)
