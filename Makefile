# The README's two commands: `make demo` and `make test`. Both set up everything they need
# (Debian packages, the .venv virtual environment, the project) and are safe to run twice.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.oaml-installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_OUT ?= runs/demo

.PHONY: setup system-deps demo test lint format clean gpu-check

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

# On a GPU machine: the gpu-marked tests, then the GPU benchmarks (fp16 vs fp32 generation with the
# tiny model at a small size, and with SD_CHECKPOINT at 512x512 when given; faiss k-NN).
SD_CHECKPOINT ?=
gpu-check: setup
	$(VENV)/bin/pytest -m gpu -v
	$(VENV)/bin/oaml bench sd --out runs/bench-gpu/sd-tiny --device cuda --steps 20 --images 32
	@if [ -n "$(SD_CHECKPOINT)" ]; then \
		$(VENV)/bin/oaml bench sd --out runs/bench-gpu/sd-512 --device cuda \
			--checkpoint $(SD_CHECKPOINT) --images 8; fi
	$(VENV)/bin/oaml bench knn --out runs/bench-gpu/knn

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean:
	rm -rf runs .pytest_cache .ruff_cache

# Container images (docker/README.md): the training/components image and the serving image, tagged
# with the project's version by default, which is also the pipeline's and k8s/base's default tag.
IMAGE_REGISTRY ?= ghcr.io/oaml
PROJECT_VERSION := $(shell sed -n 's/^version = "\([^"]*\)"$$/\1/p' pyproject.toml | head -n 1)
IMAGE_TAG ?= $(PROJECT_VERSION)
TRAIN_IMAGE = $(IMAGE_REGISTRY)/oaml:$(IMAGE_TAG)
SERVE_IMAGE = $(IMAGE_REGISTRY)/oaml-serve:$(IMAGE_TAG)
DOCKER ?= docker
IMAGE_BUILD_ARGS = --build-arg VERSION=$(PROJECT_VERSION) \
	--build-arg REVISION="$$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
	--build-arg CREATED="$$(date -u +%Y-%m-%dT%H:%M:%SZ)"

.PHONY: images push-images

images:
	$(DOCKER) build -f docker/Dockerfile $(IMAGE_BUILD_ARGS) -t $(TRAIN_IMAGE) .
	$(DOCKER) build -f docker/Dockerfile.serve $(IMAGE_BUILD_ARGS) -t $(SERVE_IMAGE) .

push-images: images
	$(DOCKER) push $(TRAIN_IMAGE)
	$(DOCKER) push $(SERVE_IMAGE)
