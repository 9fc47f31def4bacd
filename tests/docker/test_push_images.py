"""`make push-serve-image` against a real registry on loopback (Debian's docker-registry, the
CNCF distribution server): the image is pushed, production's manifests are pinned to the digest
the registry answered, and that reference pulls the very image that was built."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.docker import engine as eng
from tests.k8s.test_pin_images import rendered_images
from tests.serving.conftest import free_port
from tests.tracking.services import stop, wait_answering

pytestmark = [pytest.mark.slow, pytest.mark.images]
REGISTRY_BINARY = shutil.which("docker-registry")


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[str]:
    """A plain-HTTP registry on 127.0.0.1 storing into a temporary folder; yields host:port."""
    if REGISTRY_BINARY is None:
        pytest.skip("docker-registry is not installed (make container-deps installs it)")
    folder = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = folder / "config.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = folder / "registry.log"
    with log.open("w") as out:
        server = subprocess.Popen([REGISTRY_BINARY, "serve", str(config)], stdout=out, stderr=out)
    try:
        wait_answering(f"http://127.0.0.1:{port}/v2/", server, log, timeout=30)
        yield f"127.0.0.1:{port}"
    finally:
        stop(server)


def test_push_pins_production_to_the_digest_the_registry_answered(registry, tmp_path):
    engine = eng.require_engine()
    if engine.command != "podman":
        pytest.skip("the loopback registry is plain HTTP: podman's --tls-verify=false reaches it")
    k8s = Path(shutil.copytree(eng.ROOT / "k8s", tmp_path / "k8s"))
    repository = f"{registry}/oaml-test"
    engine.make("base-images")
    seconds = engine.make(
        "push-serve-image", SERVE_FLAVOR="cpu", IMAGE_REGISTRY=repository, IMAGE_TAG="ci",
        PUSH_FLAGS="--tls-verify=false", RELEASE_IMAGES=str(k8s / "release-images"),
    )  # fmt: skip
    print(f"\nbuilt and pushed in {seconds:.0f} s")
    built = f"{repository}/oaml-serve:ci-cpu"
    tags = httpx.get(f"http://{registry}/v2/oaml-test/oaml-serve/tags/list", timeout=10).json()
    assert tags["tags"] == ["ci-cpu"]

    (pinned,) = {i for i in rendered_images(k8s, "overlays/prod") if "oaml-serve" in i}
    name, _, digest = pinned.partition("@")
    assert name == f"{repository}/oaml-serve"
    # The registry serves that digest (the manifest a kubelet would pull)...
    manifest = httpx.head(
        f"http://{registry}/v2/oaml-test/oaml-serve/manifests/{digest}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"},
        timeout=10,
    )
    assert manifest.status_code == 200
    assert manifest.headers["Docker-Content-Digest"] == digest
    # ... and pulling it gives the image that was built, whatever the tag points at later.
    expected = engine.inspect(built)["Id"]
    engine.run("rmi", built)
    engine.run("pull", "--tls-verify=false", pinned, timeout=300)
    assert engine.inspect(pinned)["Id"] == expected
