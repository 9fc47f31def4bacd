"""Pin the release's images by digest: write what `make push-images` pushed into the kustomize
Component that the production overlays include (k8s/release-images), so a rollout deploys the
exact bytes that were pushed and a re-pushed tag changes nothing.

    python k8s/pin_images.py REPOSITORY[:TAG]@sha256:HEX ... [--component DIR]

Each reference is an image as pushed (any registry); its last path component (`oaml` or
`oaml-serve`) says which of the manifests' images it replaces. Entries not given stay as they are.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import yaml

# The names the manifests use (k8s/base); kustomize's `images:` rewrites them.
CANONICAL = {"oaml": "ghcr.io/oaml/oaml", "oaml-serve": "ghcr.io/oaml/oaml-serve"}
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
COMPONENT = Path(__file__).resolve().parent / "release-images"
HEADER = """\
# The release's images by digest, included by overlays/prod, kserve and kserve-triton.
# Written by `make push-images` (k8s/pin_images.py) from the digests the registry answered:
# do not edit by hand. Until the first push the digests are placeholders, and pods that would
# run them fail with InvalidImageName rather than run an image nobody pinned.
"""


class PinError(ValueError):
    """A reference that cannot be pinned; the message says why and what to pass instead."""


def parse_reference(reference: str) -> tuple[str, str, str]:
    """`REPOSITORY[:TAG]@sha256:HEX` -> (canonical name, repository, digest)."""
    repository, at, digest = reference.strip().rpartition("@")
    if not at or not DIGEST.fullmatch(digest):
        raise PinError(f"{reference!r} has no digest: pass REPOSITORY[:TAG]@sha256:<64 hex>")
    last = repository.rsplit("/", 1)[-1]
    if ":" in last:  # a tag, not a registry port (those sit before a slash)
        repository, last = repository.rsplit(":", 1)[0], last.split(":", 1)[0]
    if last not in CANONICAL:
        raise PinError(
            f"{reference!r} is not one of this project's images (its name must end in "
            f"{' or '.join('/' + name for name in CANONICAL)})"
        )
    return CANONICAL[last], repository, digest


def pin(references: list[str], component: Path = COMPONENT) -> list[dict]:
    """Update `component`'s kustomization.yaml with these references; returns its images."""
    path = component / "kustomization.yaml"
    document = yaml.safe_load(path.read_text())
    images = {entry["name"]: entry for entry in document.get("images", [])}
    for reference in references:
        name, repository, digest = parse_reference(reference)
        entry = {"name": name, "digest": digest}
        if repository != name:
            entry = {"name": name, "newName": repository, "digest": digest}
        images[name] = entry
    document["images"] = [images[name] for name in sorted(images)]
    write_atomically(path, HEADER + yaml.safe_dump(document, sort_keys=False))
    return document["images"]


def write_atomically(path: Path, text: str) -> None:
    """A temporary file beside `path`, fsynced, then renamed over it: never half written."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("references", nargs="+", help="REPOSITORY[:TAG]@sha256:HEX, as pushed")
    parser.add_argument("--component", type=Path, default=COMPONENT, help="the Component folder")
    args = parser.parse_args(argv)
    try:
        images = pin(args.references, args.component)
    except (PinError, OSError) as exc:
        print(f"pin_images: {exc}", file=sys.stderr)
        return 2
    for entry in images:
        print(f"{entry['name']} -> {entry.get('newName', entry['name'])}@{entry['digest']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
