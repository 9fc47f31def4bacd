"""The `oaml` command: parses arguments and calls library functions, nothing more.

One module per command group; each registers its commands on the shared app (cli.common).
Command groups that live outside the library (the Kubeflow pipeline and the demo, in
pipelines/) plug in through the `oaml.cli` entry point group, so oaml never imports them.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from oaml.cli.common import app
from oaml.process import freeze_gc_at_exit

freeze_gc_at_exit()

PLUGIN_GROUP = "oaml.cli"
# Imported in this order, which is the order `oaml --help` lists the commands in.
GROUPS = ("data", "training", "evaluation", "serving", "registry", "bench")
for _group in GROUPS:
    importlib.import_module(f"oaml.cli.{_group}")


def _load_plugins() -> None:
    """Let each installed plugin add its commands (a plugin is `register(app)`). A plugin whose
    package is not in this install (the serving image has no pipelines/) is left out."""
    for entry in entry_points(group=PLUGIN_GROUP):
        try:
            register = entry.load()
        except ModuleNotFoundError:
            continue
        register(app)


_load_plugins()


def main() -> None:  # pragma: no cover - console entry point alias
    app()
