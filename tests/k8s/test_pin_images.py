"""k8s/pin_images.py: what `make push-images` pushed becomes the production targets' images."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.k8s.test_manifests import KUBECTL, TRAIN_IMAGE

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "k8s" / "pin_images.py"
DIGEST = "sha256:" + "0123456789abcdef" * 4

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl renders the kustomizations")


def pin(component: Path, *references: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *references, "--component", str(component)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def rendered_images(k8s: Path, target: str) -> set[str]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(k8s / target)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return {
        container["image"]
        for doc in yaml.safe_load_all(out.stdout)
        if doc
        for container in _containers(doc)
    }


def _containers(node):
    """Every container and init container anywhere in an object."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from value
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


@pytest.fixture
def k8s(tmp_path) -> Path:
    """A copy of k8s/ to pin (the repository's own stays as committed)."""
    return Path(shutil.copytree(ROOT / "k8s", tmp_path / "k8s"))


def test_a_pushed_image_becomes_every_production_targets_image(k8s):
    pushed = f"127.0.0.1:5000/team/oaml-serve:0.1.0-cpu@{DIGEST}"
    done = pin(k8s / "release-images", pushed)
    assert done.returncode == 0, done.stderr
    assert f"127.0.0.1:5000/team/oaml-serve@{DIGEST}" in done.stdout
    for target in ("overlays/prod", "kserve", "kserve-triton"):
        images = rendered_images(k8s, target)
        assert f"127.0.0.1:5000/team/oaml-serve@{DIGEST}" in images, target
        # The image not pushed keeps its entry (here: the placeholder), by digest too.
        assert {i for i in images if "serve" not in i} == {
            f"{TRAIN_IMAGE}@sha256:unpinned-run-make-push-images"
        }
    # Development keeps its moving tag.
    assert all(i.endswith(":dev") for i in rendered_images(k8s, "overlays/dev"))


def test_pinning_again_replaces_the_entry(k8s):
    other = "sha256:" + "f" * 64
    assert pin(k8s / "release-images", f"ghcr.io/oaml/oaml:1@{DIGEST}").returncode == 0
    assert pin(k8s / "release-images", f"ghcr.io/oaml/oaml@{other}").returncode == 0
    component = yaml.safe_load((k8s / "release-images" / "kustomization.yaml").read_text())
    (entry,) = [e for e in component["images"] if e["name"] == TRAIN_IMAGE]
    assert entry == {"name": TRAIN_IMAGE, "digest": other}  # same repository: no newName


@pytest.mark.parametrize(
    ("reference", "says"),
    [
        ("ghcr.io/oaml/oaml:0.1.0", "has no digest"),
        ("ghcr.io/oaml/oaml@sha256:abc", "has no digest"),
        (f"ghcr.io/oaml/oaml@sha512:{'0' * 128}", "has no digest"),
        (f"ghcr.io/oaml/other:1@{DIGEST}", "not one of this project's images"),
        (f"registry:5000@{DIGEST}", "not one of this project's images"),
    ],
)
def test_a_reference_without_a_digest_or_of_another_image_is_refused(k8s, reference, says):
    component = k8s / "release-images" / "kustomization.yaml"
    before = component.read_bytes()
    done = pin(k8s / "release-images", reference)
    assert done.returncode == 2
    assert says in done.stderr and "Traceback" not in done.stderr
    assert component.read_bytes() == before  # nothing half written
    assert [p.name for p in component.parent.iterdir()] == ["kustomization.yaml"]
