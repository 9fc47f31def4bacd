# The README's two commands: `make demo` and `make test`. Both set up everything they need
# (Debian packages, the .venv virtual environment, the project) and are safe to run twice.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.oaml-installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_OUT ?= runs/demo

.PHONY: setup system-deps demo test lint format clean

setup: system-deps $(STAMP)

# Fashion-MNIST from Debian's package, and venv support where the base Python lacks it.
system-deps:
	@if [ ! -f $(FMNIST) ] || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq dataset-fashion-mnist \
			$$(python3 -c 'import venv, ensurepip' 2>/dev/null || echo python3-venv); \
	fi

$(STAMP): pyproject.toml
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/oaml demo --out $(DEMO_OUT)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pytest -m "not gpu"

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean:
	rm -rf runs .pytest_cache .ruff_cache
