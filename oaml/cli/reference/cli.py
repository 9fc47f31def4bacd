"""The CLI reference page: every command of the typer app, its help, arguments and options
with their defaults."""

from __future__ import annotations

from typing import Any

import typer

HEADER = (
    "# Command reference\n\n"
    "Generated from the `oaml` command itself by `make docs`; "
    "`oaml COMMAND --help` prints the same.\n"
)


def _default(param: Any) -> str:
    if param.required:
        return "required"
    value = param.default
    if value is None or callable(value):
        return ""
    if getattr(param, "is_flag", False):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return f"`{value}`"


def _names(param: Any) -> str:
    if param.param_type_name == "argument":
        return f"`{param.name.upper()}`"
    names = [*param.opts, *param.secondary_opts]
    envvar = getattr(param, "envvar", None)
    env = f" (env `{envvar}`)" if isinstance(envvar, str) else ""
    return " / ".join(f"`{n}`" for n in names) + env


def _help(param: Any) -> str:
    text = getattr(param, "help", None) or ""
    return " ".join(text.split()).replace("|", "\\|")


def _command(path: str, command: Any) -> str:
    lines = [f"## `{path}`", ""]
    if command.help:
        lines += [command.help.strip(), ""]
    params = [p for p in command.params if p.name != "help" and not getattr(p, "hidden", False)]
    if params:
        lines += ["| argument / option | default | what |", "|---|---|---|"]
        lines += [f"| {_names(p)} | {_default(p)} | {_help(p)} |" for p in params]
        lines.append("")
    return "\n".join(lines)


def _walk(path: str, command: Any) -> list[str]:
    """Each leaf command's section, groups in name order (typer vendors its own click, so the
    classes are recognised by what they hold)."""
    if hasattr(command, "commands"):
        sections = []
        for name in sorted(command.commands):
            sub = command.commands[name]
            if not getattr(sub, "hidden", False):
                sections += _walk(f"{path} {name}", sub)
        return sections
    return [_command(path, command)]


def cli_reference(app: typer.Typer | None = None) -> str:
    """Markdown for every command of `app` (default: the `oaml` command with its plugins)."""
    if app is None:
        from oaml.cli import app
    return "\n".join([HEADER, *_walk("oaml", typer.main.get_command(app))])
