# The README's two commands: `make demo` and `make test`. Both set up everything they need
# (Debian packages, the .venv virtual environment, the project) and are safe to run twice.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.oaml-installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# Real painted sprites nobody here made (GPL-2): the colour task `oaml data import` is tested on;
# clip art (public domain) and Noto glyphs (SIL OFL): far-OOD sets of imported benchmarks.
WESNOTH := /usr/share/games/wesnoth/1.16/data/core/images/units
PACKAGED_OOD := /usr/share/openclipart/png /usr/share/fonts/truetype/noto
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_OUT ?= runs/demo

.PHONY: setup system-deps container-deps browser-deps demo test test-fast test-images lint format clean gpu-check lock \
	lock-export docs

setup: system-deps $(STAMP)

# Fashion-MNIST, Wesnoth's unit sprites, clip art and Noto fonts from Debian's packages, and
# venv support where the base Python lacks it.
system-deps:
	@if [ ! -f $(FMNIST) ] || ! ls -d $(WESNOTH) $(PACKAGED_OOD) >/dev/null 2>&1 || \
		! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			dataset-fashion-mnist wesnoth-1.16-data openclipart-png fonts-noto-core \
			$$(python3 -c 'import venv, ensurepip' 2>/dev/null || echo python3-venv); \
	fi

# Everything from the lock (requirements/dev.txt, exported from uv.lock with hashes): what is
# installed next month is what was tested today. The project itself goes in editable, with the
# locked setuptools as its build backend.
$(STAMP): pyproject.toml requirements/dev.txt
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps \
		-r requirements/dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Refresh uv.lock from pyproject.toml (needs PyPI), then export the installable sets from it:
# make setup's, the training image's and the serving image's in its GPU and CPU builds.
# tests/docker checks that the exports match uv.lock.
UV ?= $(VENV)/bin/uv
REQUIREMENTS_DIR ?= requirements
LOCK_EXPORT = $(UV) export --frozen --quiet --no-emit-project --format requirements-txt
lock: $(STAMP)
	$(UV) lock
	$(MAKE) lock-export

lock-export:
	$(LOCK_EXPORT) --extra dev --extra pipeline --group build -o $(REQUIREMENTS_DIR)/dev.txt
	$(LOCK_EXPORT) --no-dev --extra gpu --extra postgres --extra pipeline --group build \
		--no-emit-package faiss-cpu --no-emit-package onnxruntime \
		-o $(REQUIREMENTS_DIR)/train-image.txt
	$(LOCK_EXPORT) --only-group serve --only-group serve-gpu --only-group build \
		-o $(REQUIREMENTS_DIR)/serve-gpu.txt
	$(LOCK_EXPORT) --only-group serve --only-group serve-cpu --only-group build \
		-o $(REQUIREMENTS_DIR)/serve-cpu.txt

demo: setup
	$(VENV)/bin/oaml demo --out $(DEMO_OUT)

# pytest-xdist workers: one per core, at most 4 (each builds its own copy of the benchmark data),
# each worker's processes computing on its share of the cores (tests/conftest.py), so one worker
# trains while the other waits on a process start or a service. Tests sharing a costly fixture
# stay on one worker (tests/conftest.py). PYTEST_WORKERS=N overrides (0: one process).
PYTEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 2 ? 0 : (n > 4 ? 4 : n) )))
PYTEST_PARALLEL ?= $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist loadgroup)

# The suite, including the serving image built and driven as a container (tests/docker); the
# training image and the pipeline in containers are `make test-images`.
test: setup container-deps browser-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(CONTAINER_ENV) $(VENV)/bin/pytest -m "not gpu and not images" --durations=15 $(PYTEST_PARALLEL)

# The training image (built, inspected, the MLflow server started from it) and the whole pipeline
# with every component in that image (kfp.local's DockerRunner on podman's Docker API).
# Unit tests only (no real benchmark, services, pipeline runs or images): quick answers.
# The documentation site (mkdocs-material) into site/, its reference pages (CLI, presets, pipeline
# parameters, ONNX metadata, server metrics) regenerated from the code first; `make test` checks
# both (tests/test_docs.py).
docs: setup
	$(PY) -m oaml.cli.reference docs/reference
	$(VENV)/bin/mkdocs build --strict

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow and not gpu and not images" $(PYTEST_PARALLEL)

test-images: setup container-deps
	$(CONTAINER_ENV) $(VENV)/bin/pytest -m images -v --durations=12

# On a GPU machine: the gpu-marked tests (NCCL data parallelism over every GPU among them, where
# there are two or more), then the GPU benchmarks (fp16 vs fp32 generation with the tiny model at
# a small size, and with SD_CHECKPOINT at 512x512 when given; faiss k-NN; the outlier generator's
# training on CUDA; training images/s).
SD_CHECKPOINT ?=
gpu-check: setup
	$(VENV)/bin/pytest -m gpu -v
	$(VENV)/bin/oaml bench sd --out runs/bench-gpu/sd-tiny --device cuda --steps 20 --images 32
	@if [ -n "$(SD_CHECKPOINT)" ]; then \
		$(VENV)/bin/oaml bench sd --out runs/bench-gpu/sd-512 --device cuda \
			--checkpoint $(SD_CHECKPOINT) --images 8; fi
	$(VENV)/bin/oaml bench knn --out runs/bench-gpu/knn
	$(VENV)/bin/oaml data prepare --benchmark fmnist --root runs/bench-gpu/data
	$(VENV)/bin/oaml synthesize --backend generator --benchmark fmnist --device cuda \
		--data-root runs/bench-gpu/data --out runs/bench-gpu/generator --count 2000 --generator-epochs 2
	$(VENV)/bin/oaml bench train --out runs/bench-gpu/train --data-root runs/bench-gpu/data \
		--device cuda

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean:
	rm -rf runs .pytest_cache .ruff_cache

# Container images (docker/README.md): the training/components image and the serving image, tagged
# with the project's version by default, which is also the pipeline's and k8s/base's default tag.
# DOCKER=podman works the same; podman then reads the project's engine settings
# (docker/podman/containers.conf: the runc runtime, ulimits a sandbox allows).
IMAGE_REGISTRY ?= ghcr.io/oaml
PROJECT_VERSION := $(shell sed -n 's/^version = "\([^"]*\)"$$/\1/p' pyproject.toml | head -n 1)
IMAGE_TAG ?= $(PROJECT_VERSION)
TRAIN_IMAGE = $(IMAGE_REGISTRY)/oaml:$(IMAGE_TAG)
SERVE_IMAGE = $(IMAGE_REGISTRY)/oaml-serve:$(IMAGE_TAG)
# SERVE_FLAVOR=cpu builds the small serving image for CPU nodes, tagged <tag>-cpu.
SERVE_FLAVOR ?= gpu
SERVE_TAG = $(SERVE_IMAGE)$(if $(filter cpu,$(SERVE_FLAVOR)),-cpu)
BASE_IMAGE ?= debian:bookworm-slim
DOCKER ?= docker
CONTAINER_ENV = CONTAINERS_CONF=$(CURDIR)/docker/podman/containers.conf
IMAGE_BUILD_ARGS = --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg VERSION=$(PROJECT_VERSION) \
	--build-arg REVISION="$$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
	--build-arg CREATED="$$(date -u +%Y-%m-%dT%H:%M:%SZ)"
# podman: host networking for pip and apt inside the build (no bridge networking in a sandbox),
# Docker's image format (OCI images drop HEALTHCHECK).
# PIP_CA_BUNDLE (default: your PIP_CERT): a CA bundle pip inside the build trusts, for networks
# that inspect TLS; handed over as a build secret, so it never lands in a layer.
PIP_CA_BUNDLE ?= $(PIP_CERT)
COMMA := ,
BUILD_FLAGS = $(if $(findstring podman,$(DOCKER)),--network=host --format docker) \
	$(if $(PIP_CA_BUNDLE),--secret id=pip-ca$(COMMA)src="$(PIP_CA_BUNDLE)")

.PHONY: images train-image serve-image base-images push-images push-serve-image

images: train-image serve-image

train-image:
	$(CONTAINER_ENV) $(DOCKER) build $(BUILD_FLAGS) -f docker/Dockerfile $(IMAGE_BUILD_ARGS) \
		-t $(TRAIN_IMAGE) .

serve-image:
	$(CONTAINER_ENV) $(DOCKER) build $(BUILD_FLAGS) -f docker/Dockerfile.serve $(IMAGE_BUILD_ARGS) \
		--build-arg FLAVOR=$(SERVE_FLAVOR) -t $(SERVE_TAG) .

# Where no container registry is reachable: Debian 12 (minbase) from Debian's own packages with
# mmdebstrap, imported under the name the Dockerfiles start from, so `make images` finds it
# locally. Safe to run twice (an existing image is kept).
BASE_TAR = runs/base-images/debian-bookworm.tar
# Like Debian's slim images: no manual pages, documentation or translations.
SLIM_DPKG = --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*'
BASE_PATH = /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
base-images: container-deps
	@if $(CONTAINER_ENV) $(DOCKER) image inspect docker.io/library/$(BASE_IMAGE) >/dev/null 2>&1; then \
		echo "base image $(BASE_IMAGE) is already present"; \
	else \
		mkdir -p $(dir $(BASE_TAR)) && \
		$(SUDO) mmdebstrap --variant=minbase --format=tar --include=ca-certificates $(SLIM_DPKG) bookworm $(BASE_TAR).tmp && \
		mv $(BASE_TAR).tmp $(BASE_TAR) && \
		$(CONTAINER_ENV) $(DOCKER) import --change 'ENV PATH=$(BASE_PATH)' --change 'CMD ["bash"]' \
			$(BASE_TAR) docker.io/library/$(BASE_IMAGE) && \
		rm -f $(BASE_TAR); \
	fi

# Push both images, then pin k8s/release-images (the production targets' images) to the digests
# the registry answered, so production runs exactly what was pushed. PUSH_FLAGS: the engine's own
# (podman: --tls-verify=false for a plain-HTTP registry); RELEASE_IMAGES: the Component to pin.
# push-serve-image pushes and pins the serving image alone.
PUSH_FLAGS ?=
RELEASE_IMAGES ?= k8s/release-images
DIGESTS = runs/images
# $(call push_and_pin,IMAGE): podman writes the digest it pushed to a file; docker prints it.
push_and_pin = mkdir -p $(DIGESTS) && rm -f $(DIGESTS)/pushed && \
	$(if $(findstring podman,$(DOCKER)), \
		$(CONTAINER_ENV) $(DOCKER) push $(PUSH_FLAGS) --digestfile $(DIGESTS)/pushed $(1), \
		$(DOCKER) push $(PUSH_FLAGS) $(1) > $(DIGESTS)/push.log && cat $(DIGESTS)/push.log && \
		sed -n 's/.*digest: \(sha256:[0-9a-f]\{64\}\).*/\1/p' $(DIGESTS)/push.log > $(DIGESTS)/pushed) && \
	$(VENV)/bin/python k8s/pin_images.py --component $(RELEASE_IMAGES) "$(1)@$$(cat $(DIGESTS)/pushed)"

push-images: images
	$(call push_and_pin,$(TRAIN_IMAGE))
	$(call push_and_pin,$(SERVE_TAG))

push-serve-image: serve-image
	$(call push_and_pin,$(SERVE_TAG))

# Headless Chromium for the test that renders the evaluation report (Debian's package, where
# missing; skipped where apt-get does not exist).
browser-deps:
	@if ! command -v chromium >/dev/null && command -v apt-get >/dev/null; then \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install \
			-y -qq --no-install-recommends chromium; fi

# The container tests' engine where none is installed: Debian's podman with runc (crun fails on
# hybrid cgroups), mmdebstrap for `make base-images`, and docker-registry (a registry on loopback
# that `make test-images` pushes to). Only what is missing is installed, and
# no podman/runc where a Docker daemon already answers (Docker CE's containerd conflicts with
# Debian's runc). Skipped where apt-get does not exist.
container-deps:
	@missing=""; \
	if ! command -v podman >/dev/null && ! docker info >/dev/null 2>&1; then \
		missing="podman runc uidmap"; fi; \
	command -v mmdebstrap >/dev/null || missing="$$missing mmdebstrap"; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	if [ -n "$$missing" ]; then \
		if command -v apt-get >/dev/null; then \
			$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install \
				-y -qq --no-install-recommends ca-certificates $$missing; \
		else echo "no apt-get: install $$missing yourself; the container tests skip without an engine"; fi; \
	fi
