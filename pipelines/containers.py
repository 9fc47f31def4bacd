"""Local pipeline runs with every stage in the project image: kfp.local's DockerRunner, set up so
that a container sees exactly what a Kubeflow pod would miss.

Any Docker-compatible engine works (DOCKER_HOST; podman's `podman system service` included).
Containers run as the image's own non-root user, on the host network (a tracking server on
loopback stays reachable), with the run folder, the data and an embedded MLflow store mounted at
their host paths, and only the tracking and S3 settings of this environment passed in. The
containers join this process's group to write those folders: that needs a rootful engine (with
rootless podman or Docker the group maps to a sub-id and the writes fail).
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

# The environment a stage container gets from this one: tracking and oaml's own settings, and the
# S3 credentials themselves (not AWS_PROFILE or AWS_*_FILE: those name host files it cannot see).
FORWARDED_PREFIXES = ("MLFLOW_", "OAML_")
FORWARDED_AWS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)
SHM_SIZE = "2g"  # PyTorch's data-loader workers share batches through /dev/shm
LOG_DRAIN_S = 5.0  # after a container exits, how long its followed log may take to end


class ContainerEngineError(OSError):
    """No container engine answers, or the image is missing: a one-line, actionable error."""


def engine_client():
    """A Docker SDK client for DOCKER_HOST (or the default socket), checked to answer."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # the SDK raises several types for "nothing listens there"
        where = os.environ.get("DOCKER_HOST", "the default Docker socket")
        raise ContainerEngineError(
            f"no container engine answers at {where} ({type(exc).__name__}): start one, e.g. "
            "`podman system service --time=0 unix:///run/podman.sock` and "
            "DOCKER_HOST=unix:///run/podman.sock"
        ) from None
    return client


def require_image(client, image: str) -> None:
    """Fail before any stage runs when the image is not present locally (kfp.local would try to
    pull it, which needs a registry)."""
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise ContainerEngineError(
            f"image {image} is not present in the container engine: build it with `make images` "
            "(DOCKER=podman where podman runs) or pass --image"
        ) from None


def local_store(tracking_uri: str) -> Path | None:
    """The folder of a local MLflow store (sqlite database or file store), None for a server."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent
    if tracking_uri.startswith("file:"):
        return Path(tracking_uri.removeprefix("file:").removeprefix("//")).resolve()
    if "://" not in tracking_uri:
        return Path(tracking_uri).resolve()  # a plain path is MLflow's file store
    return None


def shared_folders(out: Path, arguments: dict[str, Any]) -> list[Path]:
    """Host folders the stages read or write: the run folder, the data, a local store. Each is
    mounted and made group-writable, so a home folder or another user's folder is refused."""
    folders = [out.resolve()]
    for folder in (Path(arguments["data_root"]).resolve(), local_store(arguments["tracking_uri"])):
        if folder is not None and not folder.is_relative_to(folders[0]):
            folders.append(folder)
    for folder in folders:
        if folder == Path.home().resolve() or folder == Path("/"):
            raise ContainerEngineError(
                f"{folder} would be mounted into every stage and made group-writable: keep the "
                "data and the MLflow store in folders of their own"
            )
        if folder.exists() and folder.stat().st_uid != os.geteuid():
            raise ContainerEngineError(
                f"{folder} belongs to another user: the stage containers need it group-writable; "
                "use a folder of yours"
            )
    return folders


def make_group_writable(folder: Path) -> None:
    """Group-writable with the set-group-id bit, so that what kfp.local creates inside (umask
    002 during the run) is writable by the containers, which join this process's group."""
    folder.mkdir(parents=True, exist_ok=True)
    mode = folder.stat().st_mode
    folder.chmod(mode | stat.S_IRWXG | stat.S_ISGID)


def docker_runner(out: Path, arguments: dict[str, Any], pipeline_root: Path):
    """kfp.local's DockerRunner with the mounts, network, group and environment above.
    `pipeline_root` (inside `out`) is where the containers create each run's folders."""
    import docker
    import kfp.local

    folders = shared_folders(out, arguments)
    for folder in [*folders, pipeline_root]:
        make_group_writable(folder)
    mounts = [docker.types.Mount(str(f), str(f), type="bind") for f in folders]
    environment = {
        key: value
        for key, value in os.environ.items()
        if key.startswith(FORWARDED_PREFIXES) or key in FORWARDED_AWS
    }
    return kfp.local.DockerRunner(
        mounts=mounts,
        network_mode="host",
        group_add=[str(os.getgid())],
        environment=environment,
        shm_size=SHM_SIZE,
    )


def run_container(client, image: str, command: list[str], volumes: dict, **run_args) -> int:
    """Run one stage container to its end and return its real exit status.

    kfp 2.17 starts containers with auto_remove and reads the status afterwards, so a container
    that is already gone counts as success (kubeflow/pipelines#13332): a failed stage would pass.
    Here the container is kept until its status is read, then removed."""
    import docker

    container = client.containers.run(
        image=image, command=command, volumes=volumes, detach=True, **run_args
    )
    try:
        stream = container.logs(stream=True, follow=True)
        printed = bytearray()

        def follow() -> None:
            for chunk in stream:
                printed.extend(chunk)
                print(chunk.decode(errors="replace"), end="")

        # The log is followed beside the wait: podman's follow may outlive a container that
        # exited before it attached. Once the status is in, what the stream did not print is
        # printed from the finished log.
        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        status = int(container.wait()["StatusCode"])
        follower.join(timeout=LOG_DRAIN_S)
        if follower.is_alive():
            stream.close()
            follower.join(timeout=LOG_DRAIN_S)
            whole = container.logs(stream=False, follow=False)
            print(whole[len(printed) :].decode(errors="replace"), end="")
        return status
    finally:
        # Already removed by the engine is fine: the status was read.
        with suppress(docker.errors.APIError):
            container.remove(force=True)


@contextmanager
def stage_containers() -> Iterator[None]:
    """For one run: kfp.local's Docker task handler goes through `run_container`, and what
    kfp.local creates in the shared folders is group-writable (umask 002)."""
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = run_container
    previous_umask = os.umask(0o002)
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original
        os.umask(previous_umask)
