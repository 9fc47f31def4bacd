"""`python -m oaml.cli`: the `oaml` command, for environments without the console script."""

from oaml.cli import app

app()
