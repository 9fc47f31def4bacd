"""`oaml train`, `oaml synthesize`, `oaml presets`, `oaml methods`: make outliers and models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from oaml.cli.common import DeviceOption, app, friendly


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
    nproc: Annotated[
        int,
        typer.Option(
            help="Data-parallel processes on this machine (torchrun; gloo on CPU, NCCL on "
            "GPUs: one per GPU). The preset's batch size is the global batch."
        ),
    ] = 1,
    max_restarts: Annotated[
        int,
        typer.Option(help="With --nproc: start a resuming group again this often if a rank dies"),
    ] = 0,
) -> None:
    """Train the student (or the teacher) of a preset; a killed run continues with --resume.
    Also the command each rank runs under torchrun (a Kubeflow TrainJob runs it that way)."""
    from oaml.config import load_preset

    config = load_preset(preset, set_ or [])  # fail fast on a bad preset, before heavy imports
    if nproc != 1:
        from oaml.training.launch import launch

        args = ["--out", str(out), "--preset", preset, "--device", device]
        args += ["--data-root", str(data_root)] if data_root else []
        args += ["--method", method] if method else []
        args += ["--role", role] if role else []
        args += ["--resume"] if resume else []
        for override in set_ or []:
            args += ["--set", override]
        raise typer.Exit(launch(args, nproc, max_restarts))
    from oaml.distributed import restarted, shutdown
    from oaml.training.methods import METHODS
    from oaml.training.stage import train_stage

    chosen_role = role or (METHODS.get(method).role if method else "student")
    result = train_stage(
        config,
        chosen_role,
        data_root,
        out,
        resume=resume or restarted(),  # a group torchrun restarted continues from last.pt
        device=device,
        method=method,
    )
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(
            f"checkpoint: {result.checkpoint} ({result.epochs} epochs, {result.seconds:.0f} s)"
        )
    shutdown()


@app.command()
@friendly
def synthesize(
    out: Annotated[Path, typer.Option(help="Output folder: shards and manifest.json")],
    backend: Annotated[
        str,
        typer.Option(
            help="forward-diffusion (pixels), class-mix (between-class mixup/cutmix), "
            "generator (a class-conditional VAE trained here), stable-diffusion (generation) "
            "or stable-diffusion-forward (VAE latents noised at t); oaml.synthesis.backends"
        ),
    ] = "forward-diffusion",
    benchmark: Annotated[str, typer.Option(help="Benchmark whose ID images are used")] = "fmnist",
    data_root: Annotated[Path, typer.Option(help="Data folder (OpenOOD layout)")] = Path("data"),
    count: Annotated[
        int, typer.Option(help="How many outlier images (all but stable-diffusion)")
    ] = 10000,
    t_min: Annotated[int, typer.Option(help="Smallest diffusion timestep")] = 300,
    t_max: Annotated[int, typer.Option(help="Largest diffusion timestep")] = 700,
    shard_size: Annotated[
        int | None,
        typer.Option(help="Images per shard file (default: 2048; Stable Diffusion backends: 64)"),
    ] = None,
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
    generator_epochs: Annotated[
        int | None, typer.Option(help="generator: training epochs of its VAE (default 20)")
    ] = None,
    device: DeviceOption = "auto",
) -> None:
    """Synthesize outliers; a killed run resumes where it stopped when run again."""
    from oaml.synthesis.backends import SynthesisRequest
    from oaml.synthesis.backends import synthesize as run

    request = SynthesisRequest(
        benchmark=benchmark, data_root=data_root, out=out, count=count, n_per_class=n_per_class,
        seed=seed, device=device, t_min=t_min, t_max=t_max, shard_size=shard_size,
        checkpoint=checkpoint, teacher=teacher, steps=steps, size=size, guidance=guidance,
        scheduler=scheduler, eta=eta, batch_size=batch_size, denoise=denoise,
        generator_epochs=generator_epochs,
    )  # fmt: skip
    typer.echo(f"manifest: {run(backend, request)}")


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
