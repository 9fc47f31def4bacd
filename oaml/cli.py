"""The `oaml` command: parses arguments and calls library functions, nothing more.

Heavy libraries (torch, timm, sklearn) are imported inside each command, so `oaml --help` is fast.
Expected failures (bad input, missing files) print one line naming the problem and exit 2;
set OAML_DEBUG=1 to see the full traceback instead.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="OOD-aware image classifiers with Outlier Aware Metric Learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Benchmark data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
bench_app = typer.Typer(
    help="Benchmarks, each against its baseline in one run.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")
pipeline_app = typer.Typer(
    help="The Kubeflow pipeline: compile, submit, or run it here.", no_args_is_help=True
)
app.add_typer(pipeline_app, name="pipeline")
registry_app = typer.Typer(
    help="The MLflow model registry: promote, copy, list, history.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")


def _user_errors() -> tuple[type[BaseException], ...]:
    from oaml.config import ConfigError
    from oaml.data.imglist import ImglistError
    from oaml.serving.detector import DetectorError
    from oaml.tracking.registry import PromotionError

    own: tuple[type[BaseException], ...] = (
        ConfigError,
        ImglistError,
        DetectorError,
        PromotionError,
    )
    try:  # torch-free images (the serving one) have no checkpoints to complain about
        from oaml.models.checkpoint import CheckpointError

        own = (*own, CheckpointError)
    except ImportError:
        pass
    return (
        *own,
        ValueError,
        KeyError,
        OSError,  # missing files, permissions, a folder where a file was expected
        FloatingPointError,  # a diverging loss (the message says what to change)
    )


def friendly(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected errors into a one-line message and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get("OAML_DEBUG"):
            return func(*args, **kwargs)  # full tracebacks for debugging
        try:
            return func(*args, **kwargs)
        except _user_errors() as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from None

    return wrapper


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


@app.command()
@friendly
def train(
    out: Annotated[Path, typer.Option(help="Run folder: checkpoint.pt, last.pt")],
    preset: Annotated[str, typer.Option(help="Preset name or YAML path")] = "quick",
    data_root: Annotated[Path | None, typer.Option(help="Data folder (OpenOOD layout)")] = None,
    method: Annotated[
        str | None,
        typer.Option(help="Training method (`oaml methods` lists them); default: the preset's"),
    ] = None,
    role: Annotated[
        str | None, typer.Option(help="student or teacher; default: the one the method trains")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/last.pt if present")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a preset key: a.b.c=value")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
) -> None:
    """Train the student (or the teacher) of a preset; a killed run continues with --resume."""
    from oaml.config import load_preset

    config = load_preset(preset, set_ or [])  # fail fast on a bad preset, before heavy imports
    from oaml.training.methods import METHODS
    from oaml.training.stage import train_stage

    chosen_role = role or (METHODS.get(method).role if method else "student")
    result = train_stage(
        config,
        chosen_role,
        data_root,
        out,
        resume=resume,
        device=device,
        method=method,
    )
    typer.echo(f"checkpoint: {result.checkpoint} ({result.epochs} epochs, {result.seconds:.0f} s)")


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
    score: Annotated[str, typer.Option(help="ebo (energy) or msp")] = "ebo",
    temperature: Annotated[float, typer.Option(help="Score temperature T")] = 1.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write metrics JSON here")] = None,
    save_scores: Annotated[
        Path | None, typer.Option(help="Write id.npy and <set>.npy confidences here")
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="Write score_histograms.png and roc_curves.png here")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass")] = 256,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
) -> None:
    """ID accuracy and OOD detection metrics (AUROC, AUPR, FPR95) of a checkpoint or ONNX file."""
    from oaml.evaluation import evaluate as ev
    from oaml.evaluation.report import markdown_table, plot_evaluation
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
    )
    if json_out:
        atomic_write_json(json_out, result.metrics)
    if save_scores:
        ev.save_scores(result, save_scores)
    plot_dir = plots or (json_out.parent if json_out else None)
    if plot_dir:
        plot_evaluation(result.confidences, result.groups, score, plot_dir)
    typer.echo(markdown_table(result.metrics))


@app.command()
@friendly
def synthesize(
    out: Annotated[Path, typer.Option(help="Output folder: shards and manifest.json")],
    backend: Annotated[
        str,
        typer.Option(
            help="forward-diffusion (pixels), stable-diffusion (generation) or "
            "stable-diffusion-forward (VAE latents noised at t)"
        ),
    ] = "forward-diffusion",
    benchmark: Annotated[str, typer.Option(help="Benchmark whose ID images are used")] = "fmnist",
    data_root: Annotated[Path, typer.Option(help="Data folder (OpenOOD layout)")] = Path("data"),
    count: Annotated[int, typer.Option(help="How many outlier images (forward-diffusion)")] = 10000,
    t_min: Annotated[int, typer.Option(help="Smallest diffusion timestep")] = 300,
    t_max: Annotated[int, typer.Option(help="Largest diffusion timestep")] = 700,
    shard_size: Annotated[int, typer.Option(help="Images per shard file")] = 2048,
    seed: Annotated[
        int | None, typer.Option(help="Seed (default: 0; stable-diffusion: 42, the paper's)")
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="Stable Diffusion: a local diffusers folder or a .ckpt/.safetensors"),
    ] = None,
    teacher: Annotated[
        Path | None, typer.Option(help="Teacher checkpoint for the text-conditioned space")
    ] = None,
    n_per_class: Annotated[int, typer.Option(help="Stable Diffusion outliers per class")] = 100,
    steps: Annotated[int, typer.Option(help="Sampler steps")] = 50,
    size: Annotated[int, typer.Option(help="Image side in pixels")] = 512,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale")] = 7.5,
    scheduler: Annotated[str, typer.Option(help="pndm (PLMS) or ddim")] = "pndm",
    eta: Annotated[float, typer.Option(help="DDIM eta")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Images per sampler call")] = 4,
    denoise: Annotated[
        bool, typer.Option(help="stable-diffusion-forward: denoise from t (img2img)")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
) -> None:
    """Synthesize outliers; a killed run resumes where it stopped when run again."""
    if backend == "stable-diffusion-forward":
        if checkpoint is None:
            raise ValueError(f"--backend {backend} needs --checkpoint SD_DIR (its VAE and UNet)")
        from oaml.synthesis.latent_diffusion import LatentDiffusionConfig, latent_forward_diffusion

        latent_cfg = LatentDiffusionConfig(
            count=count, t_min=t_min, t_max=t_max, size=size, seed=seed or 0,
            denoise=denoise, steps=steps, guidance=guidance, batch_size=batch_size,
        )  # fmt: skip
        manifest = latent_forward_diffusion(
            checkpoint, benchmark, data_root, out, latent_cfg, device
        )
        typer.echo(f"manifest: {manifest}")
        return
    if backend == "stable-diffusion":
        _synthesize_sd(
            out, benchmark, data_root, checkpoint, teacher, n_per_class, steps, size, guidance,
            scheduler, eta, batch_size, 42 if seed is None else seed, device,
        )  # fmt: skip
        return
    if backend != "forward-diffusion":
        raise ValueError(
            f"unknown backend {backend!r}; available: forward-diffusion, stable-diffusion, "
            "stable-diffusion-forward"
        )
    from oaml.synthesis.forward_diffusion import ForwardDiffusionConfig, synthesize

    cfg = ForwardDiffusionConfig(
        count=count, t_min=t_min, t_max=t_max, shard_size=shard_size, seed=seed or 0
    )
    typer.echo(f"manifest: {synthesize(benchmark, data_root, out, cfg)}")


def _synthesize_sd(
    out, benchmark, data_root, checkpoint, teacher, n_per_class, steps, size, guidance,
    scheduler, eta, batch_size, seed, device,
) -> None:  # fmt: skip
    if checkpoint is None:
        raise ValueError("--backend stable-diffusion needs --checkpoint SD_DIR (or a .ckpt file)")
    from oaml.data.benchmarks import get_benchmark
    from oaml.synthesis.stable_diffusion import GenerationConfig, check_config, synthesize_sd

    cfg = GenerationConfig(
        n_per_class=n_per_class, steps=steps, size=size, guidance=guidance,
        scheduler=scheduler, eta=eta, batch_size=batch_size, seed=seed,
    )  # fmt: skip
    check_config(cfg)  # before loading a multi-GB checkpoint
    names = list(get_benchmark(benchmark).class_names)
    manifest = synthesize_sd(
        checkpoint, names, out, cfg, device, teacher=teacher, benchmark=benchmark,
        data_root=data_root,
    )  # fmt: skip
    typer.echo(f"manifest: {manifest}")


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
) -> None:
    """Export the detector: uint8 NHWC pixels in, logits and energy out, one ONNX graph."""
    from oaml.export.onnx import export_onnx

    result = export_onnx(checkpoint, out, data_root=data_root)
    worst = max(result.parity.values())
    typer.echo(f"onnx: {result.path} (parity with PyTorch: max abs diff {worst:.2e})")
    if int8:
        from oaml.export.quantize import quantize_int8

        report = quantize_int8(result.path, data_root=data_root)
        typer.echo(f"int8: {report.path}; {report.summary()}")


@app.command()
@friendly
def serve(
    model: Annotated[str, typer.Option(help="ONNX file or models:/NAME@ALIAS (MLflow)")],
    name: Annotated[
        str | None, typer.Option(help="Served model name (default: file stem or NAME)")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8080,
    threshold: Annotated[
        float | None, typer.Option(help="Energy above which an input is OOD (default: calibrated)")
    ] = None,
    max_batch: Annotated[int, typer.Option(help="Most images per onnxruntime call")] = 64,
    max_wait_ms: Annotated[
        float, typer.Option(help="How long a batch waits for more requests")
    ] = 0.0,
    max_images: Annotated[int, typer.Option(help="Most images per request")] = 256,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body, MiB")] = 32.0,
    threads: Annotated[
        int | None, typer.Option(help="onnxruntime threads (default: usable cores)")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, or auto / cuda to use a GPU")] = "cpu",
) -> None:
    """Serve the detector: Open Inference Protocol v2, /v1/score, /metrics.

    Set OAML_SERVE_TOKEN in the environment to require 'Authorization: Bearer <token>'.
    """
    from oaml.serving.app import ServeSettings
    from oaml.serving.server import serve as run_server

    settings = ServeSettings(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_images=max_images,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
    )
    run_server(model, host, port, name, threshold, settings, threads=threads, device=device)


@app.command()
@friendly
def score(
    inputs: Annotated[list[Path], typer.Argument(help="Image files, folders or imglists (.txt)")],
    model: Annotated[Path, typer.Option(help="Exported detector (.onnx)")],
    out: Annotated[Path, typer.Option(help="Results file: .csv or .jsonl")],
    batch_size: Annotated[int, typer.Option(help="Images per onnxruntime call")] = 256,
    threshold: Annotated[
        float | None, typer.Option(help="Energy above which an input is OOD (default: calibrated)")
    ] = None,
    image_root: Annotated[
        Path | None,
        typer.Option(help="Folder imglist paths are relative to (default: the imglist's folder)"),
    ] = None,
) -> None:
    """Score image files offline, as the server would, into CSV or JSON Lines."""
    from oaml.serving.batch_score import score_images
    from oaml.serving.detector import Detector

    detector = Detector(model, threshold=threshold)
    summary = score_images(detector, inputs, out, batch_size, image_root)
    typer.echo(
        f"{summary.images} images scored ({summary.ood} OOD), {summary.errors} unreadable; "
        f"results: {summary.out}"
    )


OverridesOption = Annotated[
    list[str] | None, typer.Option("--set", help="Override a preset key: a.b.c=value")
]
TrackingOption = Annotated[
    str | None,
    typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else runs/mlflow)"),
]
# The names come from the method registry, which imports torch: `oaml methods` lists them.
StudentMethodOption = Annotated[
    str, typer.Option(help="Student method (`oaml methods` lists them)")
]


@app.command()
@friendly
def demo(
    out: Annotated[Path, typer.Option(help="Output folder; summary.json is written here")] = Path(
        "runs/demo"
    ),
    data_root: Annotated[
        Path | None, typer.Option(help="Data folder (default: OUT/data, prepared if needed)")
    ] = None,
    preset: Annotated[str, typer.Option(help="Preset name or YAML path")] = "quick",
    set_: OverridesOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    method: StudentMethodOption = "oaml",
    tracking_uri: TrackingOption = None,
    registered_model: Annotated[str, typer.Option(help="Registered model name")] = (
        "oaml-detector"
    ),
) -> None:
    """Run the whole pipeline locally on the embedded default and write OUT/summary.json."""
    from pipelines.demo import run_demo

    _check_method(method)
    run_demo(out, data_root, preset, set_ or [], device, method, tracking_uri, registered_model)


def _check_method(method: str) -> None:
    """Refuse a --method that is not a registered student method, naming those that are."""
    from oaml.recipe import student_methods

    known = student_methods()
    if method not in known:
        raise ValueError(f"--method must be one of {', '.join(known)}; got {method!r}")


@pipeline_app.command("compile")
@friendly
def pipeline_compile(
    out: Annotated[Path, typer.Option(help="IR YAML file to write")] = Path("oaml-pipeline.yaml"),
) -> None:
    """Write the pipeline's Kubeflow Pipelines IR YAML (upload it in the UI or submit it)."""
    from pipelines.runner import compile_pipeline

    typer.echo(f"pipeline: {compile_pipeline(out)}")


ParamOption = Annotated[
    list[str] | None,
    typer.Option("--param", help="Pipeline parameter key=value (see `oaml pipeline params`)"),
]


@pipeline_app.command("params")
def pipeline_params() -> None:
    """List the pipeline's parameters and their defaults."""
    from pipelines.oaml_pipeline import oaml_pipeline

    for name, spec in (oaml_pipeline.component_spec.inputs or {}).items():
        typer.echo(f"{name:18s} {spec.default!r}")


@pipeline_app.command("submit")
@friendly
def pipeline_submit(
    host: Annotated[str, typer.Option(help="Kubeflow Pipelines API endpoint URL")],
    experiment: Annotated[str, typer.Option(help="Experiment name")] = "oaml",
    run_name: Annotated[str | None, typer.Option(help="Run name (default: oaml-TIME)")] = None,
    namespace: Annotated[str | None, typer.Option(help="Kubeflow profile namespace")] = None,
    service_account: Annotated[
        str | None, typer.Option(help="Kubernetes service account the run's pods use")
    ] = None,
    param: ParamOption = None,
) -> None:
    """Submit the pipeline to a Kubeflow Pipelines endpoint (kfp.Client) and print the run."""
    from pipelines.runner import parse_params, submit

    params = parse_params(param or [])
    result = submit(host, params, experiment, run_name, namespace, service_account)
    typer.echo(json.dumps(result))


@pipeline_app.command("run")
@friendly
def pipeline_run(
    local: Annotated[
        bool, typer.Option("--local", help="Run here with kfp.local (required: no cluster)")
    ] = False,
    out: Annotated[Path, typer.Option(help="Folder for artifacts and stage folders")] = Path(
        "runs/pipeline"
    ),
    preset: Annotated[str, typer.Option(help="Preset name or YAML path")] = "quick",
    data_root: Annotated[Path | None, typer.Option(help="Data folder (default: OUT/data)")] = None,
    set_: OverridesOption = None,
    method: StudentMethodOption = "oaml",
    tracking_uri: TrackingOption = None,
    registered_model: Annotated[str, typer.Option(help="Registered model name")] = (
        "oaml-detector"
    ),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    runner: Annotated[
        str,
        typer.Option(
            help="subprocess: every stage in this Python; docker: every stage in a container of "
            "the project image (an engine at DOCKER_HOST, e.g. podman system service)"
        ),
    ] = "subprocess",
    image: Annotated[
        str | None,
        typer.Option(help="Image for --runner docker (default: the pipeline's, `make images`)"),
    ] = None,
) -> None:
    """Run the very same pipeline on this machine (kfp.local) and write OUT/summary.json."""
    if not local:
        raise ValueError("give --local to run here, or use `oaml pipeline submit --host URL`")
    if image and runner != "docker":
        raise ValueError("--image needs --runner docker")
    from pipelines.demo import run_demo

    _check_method(method)
    run_demo(
        out, data_root, preset, set_ or [], device, method, tracking_uri, registered_model,
        runner=runner, image=image,
    )  # fmt: skip


@registry_app.command("promote")
@friendly
def registry_promote(
    name: Annotated[str, typer.Argument(help="Registered model name")],
    auroc_tolerance: Annotated[
        float, typer.Option(help="Near/far AUROC may be at most this much lower")
    ] = 0.0,
    fpr95_tolerance: Annotated[
        float, typer.Option(help="Near/far FPR95 may be at most this much higher")
    ] = 0.01,
    max_accuracy_drop: Annotated[
        float, typer.Option(help="ID accuracy may drop at most this much")
    ] = 0.005,
    force: Annotated[bool, typer.Option(help="Promote even if the gate fails")] = False,
    reason: Annotated[str, typer.Option(help="Why --force (recorded as a tag)")] = "",
    source: Annotated[str, typer.Option(help="Alias to promote")] = "challenger",
    target: Annotated[str, typer.Option(help="Alias to move")] = "champion",
    tracking_uri: TrackingOption = None,
) -> None:
    """Move `champion` to the `challenger` version if its metrics pass the gate; exit 2 naming
    the failing metrics otherwise."""
    from oaml.tracking import registry
    from oaml.tracking.store import resolve_tracking_uri

    gate = registry.Gate(auroc_tolerance, fpr95_tolerance, max_accuracy_drop)
    done = registry.promote(
        name, gate, force, reason, source, target, resolve_tracking_uri(tracking_uri)
    )
    was = f"(was version {done.previous})" if done.previous else "(first champion)"
    note = " FORCED past: " + "; ".join(done.gate.failures) if done.forced else ""
    typer.echo(f"{name} version {done.version} is now {target} {was}{note}")


@registry_app.command("copy")
@friendly
def registry_copy(
    name: Annotated[str, typer.Argument(help="Registered model to copy from (e.g. dev)")],
    to: Annotated[str, typer.Option(help="Registered model to copy into (e.g. prod)")],
    version: Annotated[str, typer.Option(help="Version number or alias")] = "champion",
    alias: Annotated[str, typer.Option(help="Alias to set on the copy")] = "challenger",
    tracking_uri: TrackingOption = None,
) -> None:
    """Copy a version (with its tags) to another registered model, e.g. dev -> prod."""
    import mlflow

    from oaml.tracking import registry
    from oaml.tracking.store import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    copied = registry.copy_version(name, version, to, alias)
    typer.echo(f"{name}@{version} -> {copied.name} version {copied.version} (alias {alias})")


@registry_app.command("list")
@friendly
def registry_list(tracking_uri: TrackingOption = None) -> None:
    """Registered models, their aliases and newest version."""
    import mlflow

    from oaml.tracking import registry
    from oaml.tracking.store import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    for row in registry.list_models():
        aliases = ", ".join(f"{a}={v}" for a, v in row["aliases"].items()) or "-"
        typer.echo(
            f"{row['name']:24s} versions {row['versions']:3d}  latest {row['latest']}  {aliases}"
        )


@registry_app.command("history")
@friendly
def registry_history(
    name: Annotated[str, typer.Argument(help="Registered model name")],
    tracking_uri: TrackingOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Every version of NAME, newest first: aliases, gated metrics, promotion records."""
    import mlflow

    from oaml.tracking import registry
    from oaml.tracking.store import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    rows = registry.history(name)
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    for row in rows:
        m = row["metrics"]
        numbers = " ".join(f"{k}={m[k]:.4f}" for k in sorted(m))
        promoted = row["promotion"].get("at", "")
        forced = (
            " forced: " + row["promotion"]["forced_reason"]
            if "forced_reason" in row["promotion"]
            else ""
        )
        typer.echo(
            f"v{row['version']:>3s} {row['created']} [{', '.join(row['aliases']) or '-'}] "
            f"{numbers}{' promoted ' + promoted if promoted else ''}{forced}"
        )


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
) -> None:
    """PyTorch eager vs the raw onnxruntime session vs the HTTP server under load."""
    from oaml.bench.serve import bench_serve as run_bench
    from oaml.bench.serve import markdown

    levels = tuple(int(v) for v in concurrency.split(",") if v.strip())
    result = run_bench(checkpoint, out, onnx, batch, levels, seconds, threads)
    typer.echo(markdown(result))


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
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a preset key: a.b.c=value")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
) -> None:
    """Each method under the same budget, over seeds: ID accuracy, near/far AUROC and FPR95."""
    from oaml.bench.quality import QualityPlan, markdown, run_quality

    if seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {seeds}")
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    plan = QualityPlan(preset, benchmark, chosen, seeds, tuple(set_ or []))
    typer.echo(markdown(run_quality(plan, out, data_root, device)))


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
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
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


@app.command()
def presets() -> None:
    """List the shipped presets."""
    from oaml.config import load_preset, preset_names

    for name in preset_names():
        typer.echo(f"{name:12s} {load_preset(name).description}")


@app.command()
def methods() -> None:
    """List the registered training methods, the model each trains and what each needs."""
    from oaml.training.methods import METHODS

    for name in METHODS:
        cls = METHODS.get(name)
        needs = [k for k in ("outliers", "teacher") if getattr(cls, f"needs_{k}")]
        typer.echo(f"{name:12s} {cls.role:8s} needs: {', '.join(needs) or '-'}")


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
