# laion-assets: `make demo` builds the whole graph from the sample, `make test` runs the suite.
# Both create .venv with the pinned stack first if it is missing.
# Settings come from the environment as for every `laion-assets` command (LAION_ASSETS_SOURCE,
# LAION_ASSETS_DATA_ROOT, LAION_ASSETS_SAFETY, DAGSTER_HOME), else the defaults: data/sample, data/out and the
# project's instance .dagster/ (laion_assets/core/settings.py). Only demo-urls sets its own DAGSTER_HOME.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: venv demo demo-urls test lint clean-out

venv: $(VENV)/.installed $(VENV)/.activate-patched $(VENV)/clip-retrieval/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[images,hub,captions,cluster,dev]'
	touch $@

# clip-retrieval's ClipClient for the tests (laion_assets_tests/clip_client.py): its package imports the whole back
# end with pins our stack can't take (numpy < 2, ...), so the wheel goes without dependencies into its own folder,
# off the venv's path. Its own target, so an existing venv gets it too; reinstalled when this file changes.
CLIP_RETRIEVAL := clip-retrieval==2.45.0
$(VENV)/clip-retrieval/.installed: Makefile | $(VENV)/.installed
	rm -rf $(VENV)/clip-retrieval
	$(BIN)/python -m pip install --quiet --no-deps --target $(VENV)/clip-retrieval $(CLIP_RETRIEVAL)
	touch $@

# Applied again whenever the script changes, so an existing venv gets the current activation.
$(VENV)/.activate-patched: scripts/patch-activate.sh $(VENV)/.installed
	bash scripts/patch-activate.sh $(BIN)/activate
	touch $@

demo: venv
	$(BIN)/laion-assets demo

# The from-URLs chain on images served from 127.0.0.1 with a tiny CLIP; its own instance keeps its shards apart.
demo-urls: venv
	mkdir -p $(CURDIR)/.dagster-urls
	ln -sf ../dagster.yaml $(CURDIR)/.dagster-urls/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/.dagster-urls $(BIN)/python -m laion_assets.demos.urls

# One worker per core (pytest-xdist); each test file stays on one worker, so its module fixtures are built once.
test: venv
	$(BIN)/python -m pytest -q -n auto --dist loadfile

lint: venv
	$(BIN)/ruff check laion_assets laion_assets_tests bench
	$(BIN)/ruff format --check laion_assets laion_assets_tests bench

# Only the project's own outputs and instances: never a data root or DAGSTER_HOME set in the environment.
clean-out:
	rm -rf data/out .dagster data/demo-urls .dagster-urls
