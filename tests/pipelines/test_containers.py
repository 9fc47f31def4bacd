"""kfp.local's DockerRunner as pipelines/containers.py sets it up, on a real engine: a stage's
exit status is its container's (kfp 2.17 alone reports a failed container as a success) and
its whole log arrives; a missing image or engine is a one-line error before anything runs."""

from pathlib import Path

import kfp.local
import pytest
from kfp import dsl

from pipelines import containers
from tests.docker import engine as eng

pytestmark = pytest.mark.slow
BASE = "docker.io/library/debian:bookworm-slim"


@dsl.container_component
def shell(script: str):
    return dsl.ContainerSpec(image=BASE, command=["sh", "-c"], args=[script])


@dsl.pipeline
def one_step(script: str):
    shell(script=script)


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory):
    engine = eng.require_engine()
    engine.make("base-images")
    with eng.docker_api(engine, tmp_path_factory.mktemp("engine")) as host:
        yield host


def run_step(tmp_path, script: str, monkeypatch, docker_host: str) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    out = tmp_path / "run"
    arguments = {"data_root": str(out / "data"), "tracking_uri": "http://127.0.0.1:1"}
    runner = containers.docker_runner(out, arguments, out / "root")
    kfp.local.init(runner=runner, pipeline_root=str(out / "root"), raise_on_error=True)
    with containers.stage_containers():
        one_step(script=script)


def test_a_failing_container_fails_its_stage(tmp_path, monkeypatch, docker_host):
    with pytest.raises(RuntimeError, match="FAILURE"):
        run_step(tmp_path, "echo about to fail; exit 3", monkeypatch, docker_host)


def test_a_stage_gets_its_whole_log_and_the_mounted_folders(
    tmp_path, monkeypatch, docker_host, capfd
):
    script = "for i in 1 2 3; do echo line-$i; done; touch $OAML_PROBE/written"
    probe = tmp_path / "run" / "data"
    probe.mkdir(parents=True)
    monkeypatch.setenv("OAML_PROBE", str(probe))  # forwarded: an OAML_ variable
    run_step(tmp_path, script, monkeypatch, docker_host)
    printed = capfd.readouterr().out
    assert "line-1" in printed and "line-3" in printed
    assert (probe / "written").is_file()  # the data folder is mounted and writable


def test_only_the_tracking_s3_and_oaml_settings_reach_a_stage(tmp_path, monkeypatch, docker_host):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key-for-the-stage")
    monkeypatch.setenv("AWS_PROFILE", "a-host-profile")  # names a host file: stays out
    monkeypatch.setenv("UNRELATED_SECRET", "stays-out")
    runner = containers.docker_runner(
        tmp_path / "run", {"data_root": str(tmp_path / "run" / "data"),
                           "tracking_uri": "http://127.0.0.1:1"}, tmp_path / "run" / "root",
    )  # fmt: skip
    environment = runner.container_run_args["environment"]
    assert environment["AWS_ACCESS_KEY_ID"] == "key-for-the-stage"
    assert "AWS_PROFILE" not in environment and "UNRELATED_SECRET" not in environment


def test_home_or_foreign_folders_are_refused(tmp_path):
    home = {"data_root": str(Path.home()), "tracking_uri": "http://127.0.0.1:1"}
    with pytest.raises(containers.ContainerEngineError, match="folders of their own"):
        containers.shared_folders(tmp_path / "run", home)
    store = {"data_root": str(tmp_path / "d"), "tracking_uri": f"sqlite:///{Path.home()}/x.db"}
    with pytest.raises(containers.ContainerEngineError, match="folders of their own"):
        containers.shared_folders(tmp_path / "run", store)


def test_missing_engine_or_image_is_a_clear_error(monkeypatch, docker_host):
    monkeypatch.setenv("DOCKER_HOST", docker_host)
    client = containers.engine_client()
    with pytest.raises(containers.ContainerEngineError, match="make images"):
        containers.require_image(client, "localhost/oaml-test/absent:none")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/engine.sock")
    with pytest.raises(containers.ContainerEngineError, match="podman system service"):
        containers.engine_client()
