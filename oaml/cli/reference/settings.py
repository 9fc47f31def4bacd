"""The presets' reference page: every shipped preset's settings side by side, from the presets
themselves."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any


def _flat(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted keys (`student.train.epochs`), as `--set` takes them."""
    for key, value in values.items():
        if isinstance(value, dict) and value:
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def cell(value: Any) -> str:
    """A value as a Markdown table cell (code span, pipes escaped)."""
    if value == "":
        return '`""`'
    text = "null" if value is None else str(list(value) if isinstance(value, tuple) else value)
    return f"`{text}`".replace("|", "\\|")


def presets_reference() -> str:
    """Markdown: every setting of every shipped preset beside the dataclasses' defaults."""
    from oaml.config import Preset, load_preset, preset_names

    names = preset_names()
    presets = {name: load_preset(name) for name in names}
    columns = {name: dict(_flat(dataclasses.asdict(p))) for name, p in presets.items()}
    defaults = dict(_flat(dataclasses.asdict(Preset())))
    keys = list(dict.fromkeys(k for column in columns.values() for k in column))
    lines = [
        "# Presets",
        "",
        "Generated from the shipped presets (`oaml/presets/*.yaml`, read through "
        "`oaml/config.py`) by `make docs`. Pick one with `--preset NAME` (or a YAML file's "
        "path) and change any setting with `--set KEY=VALUE`, the key as in the first column. "
        "A dot means the preset keeps the default; the presets' YAML files say why they differ.",
        "",
        *(f"- **{name}**: {presets[name].description}" for name in names),
        "",
        "| setting | default | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for key in keys:
        if key in ("name", "description"):
            continue
        default = defaults.get(key, ...)  # ...: a key only presets set (a method's losses)
        cells = [
            "." if columns[n].get(key, ...) == default else cell(columns[n].get(key)) for n in names
        ]
        shown = "-" if default is ... else cell(default)
        lines.append(f"| `{key}` | {shown} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, ""])
