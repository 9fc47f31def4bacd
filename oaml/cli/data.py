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


@data_app.command("import")
@friendly
def data_import(
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="A folder with one subfolder per class (images at any depth below it), or a "
            ".csv of path,label (an imglist .txt of 'path label' too)",
        ),
    ],
    name: Annotated[str, typer.Option(help="The benchmark's name (--benchmark NAME later)")],
    root: Annotated[Path, typer.Option(help="Data folder (OpenOOD layout) to write into")] = Path(
        "data"
    ),
    holdout_classes: Annotated[
        str, typer.Option(help="Classes kept out of training: near-OOD test sets (A,B)")
    ] = "",
    ood: Annotated[
        list[str] | None,
        typer.Option(
            help="SET=DIR: a folder (or s3://BUCKET/PREFIX) of your OOD images as a far-OOD "
            "test set (near:SET=DIR for a near one); repeat for more"
        ),
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option(help="REGEX on file names: files with the same first group share a split"),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the splits and the far-OOD crops")] = 0,
    size: Annotated[
        int | None, typer.Option(help="Input side in pixels (default: from the images)")
    ] = None,
    channels: Annotated[
        int | None, typer.Option(help="1 or 3 (default: 1 when every image is grey)")
    ] = None,
    val: Annotated[float, typer.Option(help="Share of each class for validation")] = 0.1,
    test: Annotated[float, typer.Option(help="Share of each class for the ID test set")] = 0.15,
    calibration: Annotated[
        float, typer.Option(help="Share of each class that training and tuning never see")
    ] = 0.1,
    min_per_class: Annotated[
        int, typer.Option(help="Classes with fewer readable images are left out (reported)")
    ] = 10,
    far_count: Annotated[
        int, typer.Option(help="Images in each built-in far-OOD set (real pictures, bundled)")
    ] = 1000,
    strict: Annotated[bool, typer.Option(help="Refuse (exit 2) on any unreadable file")] = False,
    workers: Annotated[
        int | None, typer.Option(help="Decoding processes (default: one per core)")
    ] = None,
) -> None:
    """Import your labelled images as a benchmark: seeded stratified splits (train, val, test,
    calibration), groups and duplicates kept in one split, bad files reported and skipped."""
    from oaml.data.import_sources import ImportConfig, parse_ood
    from oaml.data.importer import run_import

    if channels not in (None, 1, 3):
        raise ValueError(f"--channels {channels}: use 1 or 3")
    if size is not None and size < 8:
        raise ValueError(f"--size {size}: use at least 8 pixels")
    if far_count < 1:
        raise ValueError(f"--far-count {far_count}: use at least 1")
    cfg = ImportConfig(
        source=source, name=name, root=root.expanduser().resolve(),
        holdout_classes=tuple(c.strip() for c in holdout_classes.split(",") if c.strip()),
        ood=tuple(parse_ood(o) for o in ood or []), group_by=group_by, seed=seed, size=size,
        channels=channels, val=val, test=test, calibration=calibration, strict=strict,
        workers=workers, far_count=far_count, min_per_class=min_per_class,
    )  # fmt: skip
    result = run_import(cfg)
    counts = result.counts
    typer.echo(
        f"{name}: {counts['imported']} images imported, {counts['skipped']} skipped "
        f"(of {counts['listed']} files); report {result.report}; spec {result.spec}"
    )
    if result.left_out:
        shown = ", ".join(f"{c} ({n})" for c, n in result.left_out.items())
        typer.echo(f"left out, fewer than {min_per_class} readable images: {shown}", err=True)


@data_app.command("preset")
@friendly
def data_preset(
    benchmark: Annotated[str, typer.Option(help="The benchmark (e.g. one `data import` wrote)")],
    root: Annotated[Path, typer.Option(help="Its data folder")] = Path("data"),
    minutes: Annotated[float, typer.Option(help="Time budget of the whole recipe here")] = 30.0,
    out: Annotated[Path | None, typer.Option(help="YAML to write (default: NAME.yaml)")] = None,
    base: Annotated[str, typer.Option(help="Preset whose recipe it sizes")] = "quick",
) -> None:
    """Write a starting preset for a benchmark: model widths, epochs and batch sized to a time
    budget from training speed measured here (edit it, then --preset FILE)."""
    import yaml

    from oaml.io import atomic_write_text
    from oaml.starter import header, starter_preset

    data, plan = starter_preset(benchmark, root, minutes, base)
    path = out or Path(f"{benchmark}.yaml")
    atomic_write_text(
        path, header(plan, benchmark, minutes) + yaml.safe_dump(data, sort_keys=False)
    )
    typer.echo(
        f"{path}: student width {plan.width:g}, teacher width {plan.teacher_width:g}, "
        f"{plan.epochs} epochs, about {plan.seconds / 60:.1f} min of training; "
        f"then: oaml demo --preset {path}"
    )
