"""The container engine the image tests use: podman (with the project's engine settings) or a
Docker daemon, whichever answers; the images are built through the Makefile, as a user builds
them. Without an engine the tests skip with the reason; nothing stands in for one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PODMAN_CONF = ROOT / "docker" / "podman" / "containers.conf"
# Test builds get their own names, so that they never replace a user's ghcr.io/oaml/... images.
REGISTRY, TAG = "localhost/oaml-test", "ci"
TRAIN_IMAGE = f"{REGISTRY}/oaml:{TAG}"


def serve_image(flavor: str) -> str:
    return f"{REGISTRY}/oaml-serve:{TAG}" + ("-cpu" if flavor == "cpu" else "")


@dataclass(frozen=True)
class Engine:
    command: str  # "podman" or "docker"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(PODMAN_CONF)}

    def run(self, *args: str, timeout: float = 120, check: bool = True, **kwargs):
        return subprocess.run(
            [self.command, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            **kwargs,
        )

    def make(self, *targets: str, **variables: str) -> float:
        """Run make targets with this engine; returns the wall time in seconds."""
        settings = [f"{k}={v}" for k, v in {"DOCKER": self.command, **variables}.items()]
        started = time.perf_counter()
        done = subprocess.run(
            ["make", "-s", *targets, *settings],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
        if done.returncode:
            tail = (done.stdout + done.stderr)[-6000:]
            raise AssertionError(f"make {' '.join(targets)} failed:\n{tail}")
        return time.perf_counter() - started

    def image_size(self, image: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())

    def inspect(self, image: str) -> dict:
        return json.loads(self.run("image", "inspect", image).stdout)[0]


@cache
def find_engine() -> Engine | str:
    """The engine, or why there is none."""
    reasons = []
    for command in ("podman", "docker"):
        if shutil.which(command) is None:
            continue
        probe = Engine(command).run("info", check=False, timeout=60)
        if probe.returncode == 0:
            return Engine(command)
        reasons.append(f"{command} info failed: {(probe.stderr or probe.stdout).strip()[-300:]}")
    return "; ".join(reasons) or "no container engine (podman or docker) is installed"


def require_engine() -> Engine:
    found = find_engine()
    if isinstance(found, str):
        pytest.skip(found)
    return found


@cache
def built(engine: Engine, target: str, **variables: str) -> float:
    """Build once per test session (the base image first, where none can be pulled); returns
    the build's wall time."""
    engine.make("base-images")
    return engine.make(target, IMAGE_REGISTRY=REGISTRY, IMAGE_TAG=TAG, **variables)


@contextmanager
def running(engine: Engine, image: str, *args: str, options: tuple[str, ...] = ()) -> Iterator[str]:
    """A detached container on the host network (no bridge networking in a sandbox); yields its
    id and removes it afterwards."""
    started = engine.run("run", "-d", "--network=host", *options, image, *args)
    container = started.stdout.strip()
    try:
        yield container
    finally:
        engine.run("rm", "-f", container, check=False)


def logs(engine: Engine, container: str) -> str:
    done = engine.run("logs", container, check=False)
    return done.stdout + done.stderr


@contextmanager
def docker_api(engine: Engine, folder: Path) -> Iterator[str]:
    """A Docker-compatible API for the Docker SDK (kfp.local's DockerRunner): podman's own
    service on a socket in `folder`, or the Docker daemon's. Yields the DOCKER_HOST value."""
    if engine.command == "docker":
        yield os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        return
    socket = folder / "podman.sock"
    log = (folder / "podman-service.log").open("w")
    service = subprocess.Popen(
        ["podman", "system", "service", "--time=0", f"unix://{socket}"],
        env=engine.env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not socket.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"podman system service did not start: {log.name}")
            time.sleep(0.1)
        yield f"unix://{socket}"
    finally:
        service.terminate()
        try:
            service.wait(20)
        except subprocess.TimeoutExpired:
            service.kill()
        log.close()
