"""The reference pages of the documentation, generated from the code they describe (the typer
app, the presets, the pipeline's signature, the detector contract, the server's metrics), so they
cannot drift from it.

`python -m oaml.cli.reference docs/reference` writes them all (what `make docs` runs); the test
suite fails when a committed page differs from what this writes.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

from oaml.cli.reference.cli import cli_reference
from oaml.cli.reference.contract import metadata_reference, metrics_reference
from oaml.cli.reference.settings import presets_reference

# Pages outside the library (the pipeline's parameters) plug in like `oaml pipeline` does.
PLUGIN_GROUP = "oaml.reference"
# File name under docs/reference -> the function that writes its Markdown.
OWN_PAGES: dict[str, Callable[[], str]] = {
    "cli.md": cli_reference,
    "presets.md": presets_reference,
    "onnx-metadata.md": metadata_reference,
    "metrics.md": metrics_reference,
}

__all__ = ["cli_reference", "pages", "write_pages"]


def pages() -> dict[str, Callable[[], str]]:
    """Every page: the library's own and each installed plugin's (`name.md = module:function`
    in the entry point group; one whose package is not installed is left out)."""
    found = dict(OWN_PAGES)
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            found[entry.name] = entry.load()
        except ModuleNotFoundError:
            continue
    return found


def write_pages(folder: Path) -> list[Path]:
    """Every page into `folder`; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, page in pages().items():
        path = folder / name
        path.write_text(page())
        written.append(path)
    return written
