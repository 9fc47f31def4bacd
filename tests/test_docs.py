"""The documentation site: its reference pages are what the code generates, and `mkdocs build
--strict` passes (every page in the nav, no broken link or anchor)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from oaml.cli.reference import cli_reference, pages
from oaml.cli.reference.contract import metadata_reference, metrics_reference
from oaml.cli.reference.settings import presets_reference
from oaml.config import preset_names
from oaml.contract import Meta

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(pages()))
def test_every_reference_page_is_current(name):
    page = ROOT / "docs" / "reference" / name
    assert page.read_text() == pages()[name](), f"docs/reference/{name} is stale: run `make docs`"


def test_every_reference_page_is_generated_and_in_the_site():
    on_disk = {p.name for p in (ROOT / "docs" / "reference").glob("*.md")}
    assert on_disk == set(pages()), "a reference page nobody generates, or one not written"
    nav = (ROOT / "mkdocs.yml").read_text()
    assert all(f"reference/{name}" in nav for name in on_disk)


def test_the_references_cover_every_preset_parameter_key_and_metric():
    presets = presets_reference()
    for name in preset_names():
        assert f"- **{name}**:" in presets
    assert "| `student.train.epochs` | `100` |" in presets  # the dataclass default
    pipeline = pages()["pipeline.md"]()
    for parameter in ("preset", "image", "num_nodes", "import_options"):
        assert f"| `{parameter}` |" in pipeline
    assert "|  |" not in pipeline, "a pipeline parameter has no description in its docstring"
    metadata = metadata_reference()
    for key in (v for k, v in vars(Meta).items() if k.isupper()):
        assert f"| `{key}` |" in metadata
    metrics = metrics_reference()
    for metric in ("oaml_requests_total", "oaml_request_latency_seconds", "oaml_batch_size"):
        assert f"| `{metric}` |" in metrics


def test_every_command_and_option_is_in_the_reference():
    text = cli_reference()
    for command in ("oaml serve", "oaml registry promote", "oaml registry fetch-triton"):
        assert f"## `{command}`" in text
    assert "`--model-sha256` (env `OAML_MODEL_SHA256`)" in text


def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    built = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    # A clean build prints nothing but INFO lines (no warning, no theme banner).
    noise = [line for line in built.stderr.splitlines() if line and not line.startswith("INFO")]
    assert not noise, noise
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
    assert (tmp_path / "site" / "index.html").is_file()
