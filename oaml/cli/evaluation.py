"""`oaml evaluate` and `oaml export`: measure a model and write its ONNX detector."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from oaml.cli.common import DeviceOption, app, friendly


@app.command()
@friendly
def evaluate(
    checkpoint: Annotated[Path | None, typer.Option(help="oaml checkpoint (.pt)")] = None,
    onnx: Annotated[
        Path | None, typer.Option(help="Exported detector (.onnx), run by onnxruntime")
    ] = None,
    benchmark: Annotated[str, typer.Option(help="Benchmark name")] = "fmnist",
    data_root: Annotated[Path, typer.Option(help="Data folder (OpenOOD layout)")] = Path("data"),
    extra_ood: Annotated[
        list[str] | None,
        typer.Option(help="Extra OOD set NAME=IMGLIST (paths relative to the imglist's folder)"),
    ] = None,
    score: Annotated[
        str,
        typer.Option(
            help="OOD score: ebo (energy), msp, mls, gen on the logits; knn, mds, rmds, vim on "
            "the penultimate features (fitted on the ID training images; --checkpoint only)"
        ),
    ] = "ebo",
    temperature: Annotated[float, typer.Option(help="Score temperature T")] = 1.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write metrics JSON here")] = None,
    save_scores: Annotated[
        Path | None, typer.Option(help="Write id.npy and <set>.npy confidences here")
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="Write score_histograms.png and roc_curves.png here")
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Write the HTML report here (tables, plots, worst cases as images)"),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass")] = 256,
    device: DeviceOption = "auto",
    knn_k: Annotated[int, typer.Option(help="knn: the neighbour whose distance scores")] = 50,
    vim_dim: Annotated[
        int | None, typer.Option(help="vim: principal subspace size (default: half the features)")
    ] = None,
    fit_images: Annotated[
        int | None,
        typer.Option(help="Feature scores: ID training images to fit on (default: all)"),
    ] = None,
) -> None:
    """ID accuracy and OOD detection metrics (AUROC, AUPR, FPR95) of a checkpoint or ONNX file."""
    from oaml.evaluation import evaluate as ev
    from oaml.evaluation.report import markdown_table, plot_evaluation
    from oaml.evaluation.review import write_report
    from oaml.io import atomic_write_json

    result = ev.evaluate(
        checkpoint,
        benchmark,
        data_root,
        score=score,
        temperature=temperature,
        extra_ood=ev.parse_extra_ood(extra_ood or []),
        batch_size=batch_size,
        device=device,
        onnx=onnx,
        knn_k=knn_k,
        vim_dim=vim_dim,
        fit_images=fit_images,
    )
    if json_out:
        atomic_write_json(json_out, result.metrics)
    if save_scores:
        ev.save_scores(result, save_scores)
    plot_dir = plots or (json_out.parent if json_out else None) or (report and report.parent)
    if plot_dir:
        drawn = plot_evaluation(result.confidences, result.groups, score, plot_dir)
        if report:
            write_report(result, drawn, report)
    typer.echo(markdown_table(result.metrics))


@app.command()
@friendly
def export(
    checkpoint: Annotated[Path, typer.Option(help="oaml checkpoint (.pt) of the student")],
    out: Annotated[Path, typer.Option(help="ONNX file to write")],
    data_root: Annotated[
        Path | None,
        typer.Option(
            help="Data folder for the parity batch and int8 calibration "
            "(default: the one the checkpoint was trained on)"
        ),
    ] = None,
    int8: Annotated[
        bool, typer.Option(help="Also write OUT's int8 variant (static, calibrated on ID val)")
    ] = False,
    triton_repo: Annotated[
        Path | None,
        typer.Option(help="Also write the detector into this Triton model repository"),
    ] = None,
    triton_name: Annotated[
        str, typer.Option(help="Model name in the Triton repository")
    ] = "oaml-detector",
    score: Annotated[
        str,
        typer.Option(
            help="The score the detector decides on: ebo (energy); msp, mls, gen on the logits; "
            "knn, mds, rmds, vim on the features, fitted on the ID training images and carried "
            "in the graph (knn: a bank of their features). Not ebo: a third output `score`, its "
            "threshold calibrated on the ID validation images"
        ),
    ] = "ebo",
    knn_k: Annotated[int, typer.Option(help="knn: the neighbour whose distance scores")] = 50,
    fit_images: Annotated[
        int | None,
        typer.Option(help="Feature scores: ID training images they are fitted on (default: all)"),
    ] = None,
    vim_dim: Annotated[
        int | None,
        typer.Option(help="vim: the principal subspace's dimension (default: half the features)"),
    ] = None,
) -> None:
    """Export the detector: uint8 NHWC pixels in, logits and energy out, one ONNX graph."""
    from oaml.export.onnx import export_onnx

    result = export_onnx(
        checkpoint, out, data_root=data_root, score=score, knn_k=knn_k, fit_images=fit_images,
        vim_dim=vim_dim,
    )  # fmt: skip
    worst = max(result.parity.values())
    typer.echo(f"onnx: {result.path} (parity with PyTorch: max abs diff {worst:.2e})")
    if triton_repo:
        from oaml.export.triton import write_triton_repo

        folder = write_triton_repo(result.path, triton_repo, triton_name)
        typer.echo(f"triton: {folder} (config.pbtxt, 1/model.onnx)")
    if int8:
        from oaml.export.quantize import quantize_int8

        report = quantize_int8(result.path, data_root=data_root)
        typer.echo(f"int8: {report.path}; {report.summary()}")
