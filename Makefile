# laion-assets: `make demo` builds the whole graph from the sample, `make test` runs the suite.
# Both create .venv with the pinned stack first if it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster
export DAGSTER_MODULE_NAME := laion_assets.definitions
export HF_HUB_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: venv demo demo-urls test lint clean-out instance

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[images,hub,dev]'
	bash scripts/patch-activate.sh $(VENV)/bin/activate
	touch $@

instance:
	mkdir -p $(DAGSTER_HOME)
	ln -sf ../dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: venv instance
	$(BIN)/python -m laion_assets.demo

# The from-URLs chain on images served from 127.0.0.1 with a tiny CLIP; its own instance keeps its shards apart.
demo-urls: venv
	mkdir -p $(CURDIR)/.dagster-urls
	ln -sf ../dagster.yaml $(CURDIR)/.dagster-urls/dagster.yaml
	DAGSTER_HOME=$(CURDIR)/.dagster-urls $(BIN)/python -m laion_assets.demo_urls

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check laion_assets laion_assets_tests bench
	$(BIN)/ruff format --check laion_assets laion_assets_tests bench

clean-out:
	rm -rf data/out $(DAGSTER_HOME) data/demo-urls .dagster-urls
