"""Shared fixtures: the real offline benchmark, prepared once per test session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# On N pytest-xdist workers each worker (and every `oaml` process it starts) gets its share of
# the cores as compute threads: two workers of two threads each on two cores make every
# kernel wait on a preempted thread. Set before torch is imported anywhere in the worker.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))

from oaml.data.fashion_mnist import DEBIAN_DIR
from tests.tracking import services as tracking_services

# `make test` runs on two pytest-xdist workers (--dist loadgroup). Tests that share an expensive
# session fixture, or a container engine's image store, stay on one worker as a group, so each
# such fixture is built once: the demo run (its re-runs and the services run build on it) and the
# images (built once per session through the Makefile).
XDIST_GROUPS = {"demo_run": "demo", "tracking_server": "demo"}
ENGINE_TESTS = ("tests/docker/", "tests/pipelines/test_containers.py")


def _xdist_group(item) -> str | None:
    for fixture, group in XDIST_GROUPS.items():
        if fixture in getattr(item, "fixturenames", ()):
            return group
    path = item.nodeid.replace("\\", "/")
    return "engine" if path.startswith(ENGINE_TESTS) else None


@pytest.hookimpl(tryfirst=True)  # before the worker sends its collection to the scheduler
def pytest_collection_finish(session):
    """The `@group` suffix xdist's loadgroup scheduler reads from each node id, set here: xdist
    3.8 writes it into `_nodeid`, which pytest 9.2's structured node ids no longer read, so its
    groups were silently lost (pytest-dev/pytest-xdist#1386)."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId

    for item in session.items:
        group = _xdist_group(item)
        if group and not item.nodeid.endswith(f"@{group}"):
            item._id = NodeId.parse(f"{item.nodeid}@{group}")


@pytest.hookimpl(tryfirst=True)  # before `-m` selects: the marks added here count there
def pytest_collection_modifyitems(config, items):
    """Tests on the real benchmark (the data_root fixture) are slow by definition, so
    `make test-fast` runs unit tests only; gpu-marked tests skip on machines without CUDA."""
    for item in items:
        if "data_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
        group = _xdist_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu"):  # a marker, not a test id that says gpu
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """fmnist and fmnist6 built from the real Fashion-MNIST files (about 1.5 min), once for all
    xdist workers: the first builds it under a lock, the others verify it (by file stats)."""
    if not (DEBIAN_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.fail("Fashion-MNIST is missing: run `make test` (it installs dataset-fashion-mnist)")
    import fcntl

    from oaml.data.prepare import prepare

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # the run's folder
    root = shared / "shared-data"
    with (shared / "shared-data.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        prepare("fmnist", root)
        prepare("fmnist6", root)
    return root


def run_oaml(
    *args: str,
    timeout: float = 600,
    check: bool = True,
    cwd: Path | None = None,
    unset: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run the installed `oaml` command as a user would (with `env` added, without the variables
    in `unset`), capturing its output."""
    exe = Path(sys.executable).with_name("oaml")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    for name in unset:
        env.pop(name, None)
    proc = subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"oaml {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def oaml_in_process(*args: str) -> subprocess.CompletedProcess:
    """The `oaml` command's own app run inside this test process (typer's CliRunner), for
    commands that fail on their input: the same parsing and one-line error handling as
    `run_oaml`, without a fresh interpreter's 3-4 s of imports for each case."""
    from typer.testing import CliRunner

    from oaml.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"oaml {' '.join(args)} raised") from result.exception
    return subprocess.CompletedProcess(
        ["oaml", *args], result.exit_code, result.stdout, result.stderr
    )


# Settings that make a real training run take seconds: a tiny subset, one-eighth width.
TINY = [
    "--set",
    "student.train.train_subset=1500",
    "--set",
    "student.train.batch_size=50",
    "--set",
    "student.model.width=0.125",
]

# TINY plus a tiny teacher, few outliers and one fine-tuning epoch: the whole recipe in seconds.
TINY_RECIPE = [
    *TINY,
    "--set", "student.train.epochs=1",
    "--set", "finetune.epochs=1",
    "--set", "outliers.count=300",
    "--set", "teacher.train.train_subset=1500",
    "--set", "teacher.train.batch_size=50",
    "--set", "teacher.train.epochs=1",
    "--set", "teacher.model.width=0.125",
    "--set", "student.train.knn_outliers_per_class=50",
    # The preset's generator for one epoch, the feature scores fitted on 2,000 images.
    "--set", "outliers.generator_epochs=1",
    "--set", "evaluation.fit_images=2000",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, data_root) -> Path:
    """A real (tiny, one-epoch) fmnist student with a calibrated threshold."""
    out = tmp_path_factory.mktemp("tiny_student")
    run_oaml(
        "train", "--out", str(out), "--data-root", str(data_root), *TINY,
        "--set", "student.train.epochs=1",
    )  # fmt: skip
    return out / "checkpoint.pt"


@dataclass(frozen=True)
class DemoRun:
    """One `oaml demo` on TINY_RECIPE: where it ran (its embedded store is under `cwd`), its
    output folder and the summary.json it wrote."""

    cwd: Path
    out: Path
    summary: dict

    @property
    def work(self) -> Path:
        return self.out / "work"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, data_root) -> DemoRun:
    """The whole local pipeline, run once per session on tiny settings and the embedded MLflow
    store; later tests re-run it on top of its finished stages (tests/test_demo.py,
    tests/tracking/test_pipeline_services.py)."""
    cwd = tmp_path_factory.mktemp("demo")
    out = cwd / "demo"
    run_oaml(
        "demo", "--out", str(out), "--data-root", str(data_root), *TINY_RECIPE,
        timeout=900, cwd=cwd, unset=("MLFLOW_TRACKING_URI",),
    )  # fmt: skip
    return DemoRun(cwd, out, json.loads((out / "summary.json").read_text()))


@pytest.fixture(scope="session")
def test_files(data_root):
    """The first 12 real fmnist test images and 4 real OOD photos, as files."""
    from oaml.data.imglist import parse_imglist

    listing = data_root / "benchmark_imglist" / "fmnist"
    root = data_root / "images_classic"
    id_entries = parse_imglist(listing / "test_fmnist.txt")[:12]
    ood_entries = parse_imglist(listing / "test_photos.txt")[:4]
    return [root / e.path for e in id_entries + ood_entries]


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_checkpoint) -> Path:
    """The tiny student exported by `oaml export` (parity-checked on the way)."""
    out = tmp_path_factory.mktemp("tiny_onnx") / "detector.onnx"
    run_oaml("export", "--checkpoint", str(tiny_checkpoint), "--out", str(out))
    return out


@pytest.fixture(scope="session")
def msp_onnx(tmp_path_factory, tiny_checkpoint, data_root) -> Path:
    """The tiny student exported to decide on the maximum softmax probability (`--score msp`:
    a third output, its own threshold calibrated on the ID validation images)."""
    out = tmp_path_factory.mktemp("msp_onnx") / "msp.onnx"
    run_oaml(
        "export", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
        "--data-root", str(data_root), "--score", "msp",
    )  # fmt: skip
    return out


# Real services on loopback (tests/tracking/services.py), started only when a test asks.
@pytest.fixture(scope="session")
def postgres_uri():
    """A fresh database on the machine's PostgreSQL; skipped with the reason where none runs."""
    why = tracking_services.postgres_reachable()
    if why:
        pytest.skip(why)
    with tracking_services.fresh_database() as uri:
        yield uri


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory):
    with tracking_services.seaweed_s3(tmp_path_factory.mktemp("weed")) as store:
        yield store


@pytest.fixture(scope="session")
def tracking_server(postgres_uri, s3_store, tmp_path_factory):
    """An `mlflow server` backed by PostgreSQL and SeaweedFS S3; yields its URL."""
    folder = tmp_path_factory.mktemp("mlflow_server")
    with tracking_services.mlflow_server(postgres_uri, s3_store, folder) as url:
        yield url
