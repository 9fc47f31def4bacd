"""`oaml bench`: every benchmark against its baseline in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from oaml.cli.common import DeviceOption, OverridesOption, bench_app, friendly


@bench_app.command("serve")
@friendly
def bench_serve(
    checkpoint: Annotated[Path, typer.Option(help="Student checkpoint (the PyTorch baseline)")],
    out: Annotated[Path, typer.Option(help="Folder for serve.json and serve.md")],
    onnx: Annotated[
        Path | None, typer.Option(help="Its exported detector (default: export it now)")
    ] = None,
    batch: Annotated[int, typer.Option(help="Batch size compared across runtimes")] = 32,
    concurrency: Annotated[str, typer.Option(help="Server concurrency levels")] = "1,8,32,64",
    seconds: Annotated[float, typer.Option(help="Measured seconds per row")] = 10.0,
    threads: Annotated[int | None, typer.Option(help="Threads (default: usable cores)")] = None,
    peer: Annotated[
        str | None, typer.Option(help="Also serve the model with a peer server: kserve")
    ] = None,
    peer_venv: Annotated[
        Path | None,
        typer.Option(help="The peer's virtual environment (default: ~/.cache/oaml/peers/...)"),
    ] = None,
    images_per_request: Annotated[
        int, typer.Option(help="Images in each request the load generator sends")
    ] = 1,
    json_requests: Annotated[
        bool, typer.Option("--json", help="Send JSON tensors (default: binary tensors)")
    ] = False,
    max_batch: Annotated[
        int | None, typer.Option(help="The server's --max-batch (default: its own default)")
    ] = None,
    rounds: Annotated[
        int, typer.Option(help="Rounds of the raw session and the servers, interleaved (median)")
    ] = 1,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="A git revision of this checkout whose server runs beside this one under the "
            "same load (before/after in one run)"
        ),
    ] = None,
) -> None:
    """PyTorch eager vs the raw onnxruntime session vs the HTTP server (and a peer) under load."""
    from oaml.bench.report import render
    from oaml.bench.serve import ServeLoad
    from oaml.bench.serve import bench_serve as run_bench

    levels = tuple(int(v) for v in concurrency.split(",") if v.strip())
    load = ServeLoad(images_per_request, json_requests, max_batch, baseline, rounds)
    result = run_bench(
        checkpoint, out, onnx, batch, levels, seconds, threads, peer, peer_venv, load
    )
    typer.echo(render(result, "serve.json"))


@bench_app.command("quality")
@friendly
def bench_quality(
    out: Annotated[Path, typer.Option(help="Folder for results.json, results.md, results.png")],
    preset: Annotated[str, typer.Option(help="Preset name or YAML path")] = "quick",
    benchmark: Annotated[str, typer.Option(help="fmnist, fmnist6, cifar10, ...")] = "fmnist",
    methods: Annotated[
        str, typer.Option(help="Comma-separated student methods (`oaml methods` lists them)")
    ] = "ce,oe_energy,oaml",
    seeds: Annotated[int, typer.Option(help="Seeds per method (0..N-1)")] = 3,
    data_root: Annotated[
        Path | None, typer.Option(help="Data folder (default: OUT/data, prepared if needed)")
    ] = None,
    set_: OverridesOption = None,
    device: DeviceOption = "auto",
    scores: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated post-hoc scores for a method x score table (ebo, msp, mls, "
            "gen, knn, mds, rmds, vim); default: the preset's score only"
        ),
    ] = None,
    sources: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated outlier sources each outlier method trains on, for an "
            "ablation (forward-diffusion, class-mix, generator, ...; a+b: half each); "
            "default: the preset's"
        ),
    ] = None,
) -> None:
    """Each method under the same budget, over seeds: ID accuracy, near/far AUROC and FPR95."""
    from oaml.bench.quality import QualityPlan, run_quality
    from oaml.bench.report import render
    from oaml.evaluation.postprocessors import POSTPROCESSORS
    from oaml.synthesis.backends import check_backend

    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    chosen_scores = tuple(s.strip() for s in (scores or "").split(",") if s.strip())
    for name in chosen_scores:
        POSTPROCESSORS.get(name)  # an unknown score fails before any training
    chosen_sources = tuple(s.strip() for s in (sources or "").split(",") if s.strip())
    for name in chosen_sources:
        check_backend(name)
    plan = QualityPlan(
        preset, benchmark, chosen, seeds, tuple(set_ or []), chosen_scores, chosen_sources
    )
    typer.echo(render(run_quality(plan, out, data_root, device), "results.json"))


@bench_app.command("scores")
@friendly
def bench_scores(
    checkpoint: Annotated[Path, typer.Option(help="Student checkpoint to export per score")],
    out: Annotated[Path, typer.Option(help="Folder for the detectors, scores.json, scores.md")],
    data_root: Annotated[
        Path | None, typer.Option(help="Data folder (default: the checkpoint's)")
    ] = None,
    scores: Annotated[str, typer.Option(help="Servable scores; ebo is the baseline")] = (
        "ebo,msp,mls,gen,knn"
    ),
    batch: Annotated[int, typer.Option(help="Images per onnxruntime call")] = 32,
    seconds: Annotated[float, typer.Option(help="Measured seconds per score and round")] = 5.0,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds (median reported)")] = 2,
    knn_k: Annotated[int, typer.Option(help="knn: the neighbour whose distance scores")] = 50,
    fit_images: Annotated[
        int | None, typer.Option(help="knn: ID training images in the bank (default: all)")
    ] = None,
) -> None:
    """What each servable score costs the exported detector: images/s against ebo, file size."""
    from oaml.bench.report import render
    from oaml.bench.score_cost import bench_scores as run_bench

    chosen = tuple(s.strip() for s in scores.split(",") if s.strip())
    result = run_bench(
        checkpoint, out, data_root, chosen, batch, seconds, rounds, knn_k, fit_images
    )
    typer.echo(render(result, "scores.json"))


@bench_app.command("demo")
@friendly
def bench_demo(
    out: Annotated[Path, typer.Option(help="Folder for the runs, demo.json and demo.md")],
    baseline: Annotated[
        str | None, typer.Option(help="A git revision whose demo runs first, for the ratios")
    ] = None,
    overrides: OverridesOption = None,
    device: DeviceOption = "auto",
) -> None:
    """`oaml demo` at this checkout (and at --baseline first), each with its own data and
    store: every stage's seconds side by side, and the student beside its cross-entropy start."""
    from oaml.bench.demo import bench_demo as run_bench
    from oaml.bench.report import render

    result = run_bench(out, baseline, overrides, device)
    typer.echo(render(result, "demo.json"))


@bench_app.command("train")
@friendly
def bench_train(
    out: Annotated[Path, typer.Option(help="Folder for train.json and train.md")],
    preset: Annotated[str, typer.Option(help="Preset name or YAML file")] = "quick",
    data_root: Annotated[Path | None, typer.Option(help="Benchmark data folder")] = None,
    steps: Annotated[int, typer.Option(help="Timed steps per stage and setting")] = 12,
    rounds: Annotated[int, typer.Option(help="Interleaved rounds (the median is reported)")] = 2,
    device: DeviceOption = "auto",
) -> None:
    """Images/s of each stage's training step, before (PNG decoding, fp32) and after (decoded
    cache, mixed precision where the hardware has it), interleaved in one run, as a ratio."""
    from oaml.bench.train import bench_train as run_bench

    run_bench(out, preset, data_root, steps=steps, rounds=rounds, device=device)


@bench_app.command("knn")
@friendly
def bench_knn(
    out: Annotated[Path, typer.Option(help="Folder for knn.json and knn.md")],
    classes: Annotated[int, typer.Option(help="Classes")] = 10,
    per_class: Annotated[int, typer.Option(help="ID features per class")] = 5000,
    dim: Annotated[int, typer.Option(help="Feature dimension")] = 768,
    outliers_per_class: Annotated[int, typer.Option(help="Outliers sampled per class")] = 100,
) -> None:
    """DreamOOD k-NN outlier sampling: faiss vs brute-force NumPy, same outputs, time ratio."""
    from oaml.bench.knn import bench_knn as run_bench

    report = run_bench(out, classes, per_class, dim, outliers_per_class)
    typer.echo(json.dumps(report, indent=1))


@bench_app.command("sd")
@friendly
def bench_sd(
    out: Annotated[Path, typer.Option(help="Folder for sd.json and sd.md")],
    checkpoint: Annotated[
        Path | None, typer.Option(help="Stable Diffusion folder or file (default: a tiny model)")
    ] = None,
    device: DeviceOption = "auto",
    size: Annotated[
        int | None, typer.Option(help="Image side (default: 512, or 32 for the tiny model)")
    ] = None,
    steps: Annotated[int, typer.Option(help="Sampler steps")] = 50,
    images: Annotated[int, typer.Option(help="Images measured per precision")] = 8,
    batch_size: Annotated[int, typer.Option(help="Images per sampler call")] = 4,
) -> None:
    """Stable Diffusion outlier generation: images/s in fp32, and fp16 on CUDA, with the ratio."""
    from oaml.bench.generation import bench_generation

    report = bench_generation(out, checkpoint, device, size, steps, images, batch_size)
    typer.echo(json.dumps(report, indent=1))


@bench_app.command("import")
@friendly
def bench_import(
    out: Annotated[Path, typer.Option(help="Folder for import.json and import.md")],
    photos: Annotated[int, typer.Option(help="12-megapixel JPEGs made and imported")] = 96,
    clipart: Annotated[int, typer.Option(help="Clip-art drawings imported")] = 2000,
    sprites: Annotated[int, typer.Option(help="Sprites imported (at most all 5,776)")] = 6000,
    baseline_files: Annotated[int, typer.Option(help="Files per set in the plain loop")] = 200,
    workers: Annotated[int | None, typer.Option(help="Import processes (default: cores)")] = None,
) -> None:
    """`oaml data import` images/s on sprites, clip art and 12 MP photos against a plain loop
    over the same files, and the hours a million images would take."""
    from oaml.bench.imports import bench_import as run_bench
    from oaml.bench.report import render

    result = run_bench(out, photos, clipart, sprites, baseline_files, workers)
    typer.echo(render(result, "import.json"))


@bench_app.command("report")
@friendly
def bench_report(
    results: Annotated[Path, typer.Argument(help="A benchmark's results file (serve.json, ...)")],
    out: Annotated[
        Path | None, typer.Option(help="Markdown file to write (default: print it)")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="The results kind (import.json, serve.json, ...): default its name"),
    ] = None,
) -> None:
    """Render a benchmark's results as the stamped Markdown table the docs include."""
    from oaml.bench.report import report
    from oaml.io import atomic_write_text

    text = report(results, kind)
    if out is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_text(out, text)
        typer.echo(f"wrote {out}")
