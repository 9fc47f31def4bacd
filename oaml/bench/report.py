"""`oaml bench report`: the Markdown table the docs include, rendered from a benchmark's own
results file and ending with where and how it was measured (command, commit, date, machine).

The docs' generated pages (docs/generated/NAME.md beside NAME.json) are written by this and
checked against it by the tests, so no number in them is copied by hand.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from oaml.bench.stamp import stamp, stamp_line
from oaml.io import atomic_write_json, atomic_write_text

# The results file each benchmark writes -> the module whose markdown() renders it.
RENDERERS = {
    "demo.json": "oaml.bench.demo",
    "import.json": "oaml.bench.imports",
    "serve.json": "oaml.bench.serve",
    "scores.json": "oaml.bench.score_cost",
    "results.json": "oaml.bench.quality",
    "train.json": "oaml.bench.train",
    "knn.json": "oaml.bench.knn",
    "sd.json": "oaml.bench.generation",
}
STAMP_KEYS = ("command", "commit", "date", "machine")


class ReportError(ValueError):
    """A results file this command cannot render: which one, why, and what to run."""


def _renderer(kind: str):
    if kind not in RENDERERS:
        raise ReportError(
            f"{kind}: not a results file oaml renders; give one of {', '.join(RENDERERS)} "
            "(the file name a benchmark wrote, or --kind)"
        )
    return importlib.import_module(RENDERERS[kind]).markdown


def render(result: dict[str, Any], kind: str) -> str:
    """Markdown for `result` of benchmark `kind` (a RENDERERS key), stamp line last."""
    missing = [key for key in STAMP_KEYS if key not in result]
    if missing:
        raise ReportError(
            f"this {kind} has no {', '.join(missing)}: it was written before results were "
            "stamped; run the benchmark again with this oaml"
        )
    return f"{_renderer(kind)(result).rstrip()}\n\n{stamp_line(result)}\n"


def write_results(
    out: Path, kind: str, result: dict[str, Any], argv: list[str] | None = None
) -> dict[str, Any]:
    """Every benchmark's last step: `result` stamped (command, commit, date, machine) into
    out/KIND and its Markdown beside it (out/KIND with .md), as `oaml bench report` renders it."""
    stamped = {**result, **stamp(argv)}
    atomic_write_json(out / kind, stamped)
    atomic_write_text(out / kind.replace(".json", ".md"), render(stamped, kind))
    return stamped


def kind_of(name: str) -> str:
    """The kind a results file's name says: `serve.json`, or a copy named `serve-NAME.json`."""
    for kind in RENDERERS:
        if name == kind or name.startswith(kind.removesuffix(".json") + "-"):
            return kind
    return name


def report(results: str | Path, kind: str | None = None) -> str:
    """Read a results file and render it (its kind from its name unless given)."""
    path = Path(results)
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from None
    return render(result, kind or kind_of(path.name))
