"""The documentation site: its CLI reference is what the code generates, and `mkdocs build
--strict` passes (every page in the nav, no broken link or anchor)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from oaml.cli.reference import cli_reference

ROOT = Path(__file__).resolve().parents[1]


def test_the_cli_reference_is_current():
    page = ROOT / "docs" / "reference" / "cli.md"
    assert page.read_text() == cli_reference(), "docs/reference/cli.md is stale: run `make docs`"


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
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
    assert (tmp_path / "site" / "index.html").is_file()
