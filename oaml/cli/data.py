"""`oaml data`: build and verify benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oaml.cli.common import (
    data_app,
    friendly,
)


@data_app.command("prepare")
@friendly
def data_prepare(
    benchmark: Annotated[str, typer.Option(help="fmnist or fmnist6")] = "fmnist",
    root: Annotated[Path, typer.Option(help="Data folder (OpenOOD layout) to write")] = Path(
        "data"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the train/val split and OOD crops")] = 0,
    source: Annotated[
        Path | None, typer.Option(help="Folder with the Fashion-MNIST IDX files")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the manifest verifies")] = False,
) -> None:
    """Build an offline benchmark in the OpenOOD layout (deterministic, with a manifest)."""
    from oaml.data.prepare import prepare

    result = prepare(benchmark, root, seed=seed, source_dir=source, force=force)
    state = "verified (already prepared)" if result.reused else "written"
    typer.echo(f"{benchmark}: {state}; manifest {result.manifest}")
