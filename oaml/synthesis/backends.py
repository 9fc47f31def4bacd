"""The synthesis backends, by name: the one place that turns a request into outlier shards.

`oaml synthesize --backend NAME`, the pipeline's outlier stage and the quality benchmark all call
`synthesize(name, request)`; a new backend is one function and one decorator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from oaml.io import writable_folder
from oaml.registry import Registry


@dataclass(frozen=True)
class SynthesisRequest:
    """What to synthesize and where; each backend reads the fields it uses."""

    benchmark: str
    data_root: Path
    out: Path
    count: int = 10000  # outlier images in all (Stable Diffusion: spread over the classes)
    n_per_class: int | None = None  # Stable Diffusion: per class (default: count / classes)
    seed: int | None = None  # None: the backend's default (Stable Diffusion: 42, the paper's)
    device: str = "auto"
    t_min: int = 300
    t_max: int = 700
    shard_size: int | None = None  # None: the backend's default
    checkpoint: Path | None = None  # a local Stable Diffusion folder or file
    teacher: Path | None = None  # its features make the text-conditioned k-NN space
    steps: int = 50
    size: int = 512
    guidance: float = 7.5
    scheduler: str = "pndm"
    eta: float = 0.0
    batch_size: int = 4
    denoise: bool = False  # latent forward diffusion: img2img from t
    # The generator backend: its training epochs and images (None: its defaults) and where
    # trained generators are kept (None: <data_root>/cache/generators).
    generator_epochs: int | None = None
    generator_images: int | None = None
    cache: Path | None = None


Backend = Callable[[SynthesisRequest], Path]
BACKENDS: Registry[Backend] = Registry("synthesis backend")


def check_backend(backend: str) -> list[str]:
    """The parts of `backend` ("a" or "a+b": both, half the count each), each checked to be
    a registered backend (the error names the known ones)."""
    parts = backend.split("+")
    for part in parts:
        BACKENDS.get(part)
    if len(set(parts)) != len(parts):
        raise ValueError(f"outlier source {backend!r} names a backend twice")
    return parts


def synthesize(backend: str, request: SynthesisRequest) -> Path:
    """Run `backend` on `request`; return the manifest path (a killed run resumes). "a+b"
    runs each part on an equal share of the count into its own subfolder and lists their
    images in one manifest (images only: their latents, where one has them, are dropped)."""
    from oaml.synthesis.shards import combine_runs

    parts = check_backend(backend)
    if len(parts) == 1:
        return BACKENDS.get(backend)(request)
    shares = [
        request.count // len(parts) + (i < request.count % len(parts)) for i in range(len(parts))
    ]
    for part, share in zip(parts, shares, strict=True):
        BACKENDS.get(part)(replace(request, out=request.out / part, count=share))
    return combine_runs(request.out, parts)


def _needs_checkpoint(request: SynthesisRequest, backend: str) -> Path:
    if request.checkpoint is None:
        raise ValueError(
            f"--backend {backend} needs --checkpoint SD (a local diffusers folder or a hub id)"
        )
    return request.checkpoint


def _sized(request: SynthesisRequest, default: int) -> dict[str, int]:
    return {"shard_size": request.shard_size or default}


@BACKENDS.register("forward-diffusion")
def forward_diffusion(request: SynthesisRequest) -> Path:
    """ID training pixels noised through q(x_t | x_0) (the paper's noisy forward-diffusion
    features); needs no checkpoint."""
    from oaml.synthesis.forward_diffusion import ForwardDiffusionConfig
    from oaml.synthesis.forward_diffusion import synthesize as run

    cfg = ForwardDiffusionConfig(
        count=request.count, t_min=request.t_min, t_max=request.t_max,
        seed=request.seed or 0, **_sized(request, 2048),
    )  # fmt: skip
    return run(request.benchmark, request.data_root, request.out, cfg)


@BACKENDS.register("stable-diffusion")
def stable_diffusion(request: SynthesisRequest) -> Path:
    """Stable Diffusion generations around outlier embeddings of the class tokens (DreamOOD),
    latents and decoded images."""
    from oaml.data.benchmarks import get_benchmark
    from oaml.synthesis.stable_diffusion import GenerationConfig, synthesize_sd

    checkpoint = _needs_checkpoint(request, "stable-diffusion")
    names = list(get_benchmark(request.benchmark, request.data_root).class_names)
    cfg = GenerationConfig(
        n_per_class=request.n_per_class or max(1, request.count // len(names)),
        steps=request.steps, size=request.size, guidance=request.guidance,
        scheduler=request.scheduler, eta=request.eta, batch_size=request.batch_size,
        seed=42 if request.seed is None else request.seed, **_sized(request, 64),
    )  # fmt: skip
    return synthesize_sd(
        checkpoint, names, request.out, cfg, device=request.device, teacher=request.teacher,
        benchmark=request.benchmark, data_root=request.data_root,
    )  # fmt: skip


@BACKENDS.register("stable-diffusion-forward")
def latent_forward_diffusion(request: SynthesisRequest) -> Path:
    """ID training images through the SD VAE, their latents noised at t (optionally denoised
    part of the way under the class prompt)."""
    from oaml.synthesis.latent_diffusion import LatentDiffusionConfig
    from oaml.synthesis.latent_diffusion import latent_forward_diffusion as run

    checkpoint = _needs_checkpoint(request, "stable-diffusion-forward")
    cfg = LatentDiffusionConfig(
        count=request.count, t_min=request.t_min, t_max=request.t_max, size=request.size,
        seed=request.seed or 0, denoise=request.denoise, steps=request.steps,
        guidance=request.guidance, batch_size=request.batch_size, **_sized(request, 64),
    )  # fmt: skip
    return run(checkpoint, request.benchmark, request.data_root, request.out, cfg, request.device)


@BACKENDS.register("class-mix")
def class_mix(request: SynthesisRequest) -> Path:
    """Between-class mixup and cutmix of ID training images (no model needed)."""
    from oaml.synthesis.class_mix import ClassMixConfig
    from oaml.synthesis.class_mix import synthesize as run

    cfg = ClassMixConfig(count=request.count, seed=request.seed or 0, **_sized(request, 2048))
    return run(request.benchmark, request.data_root, request.out, cfg)


@BACKENDS.register("generator")
def generated(request: SynthesisRequest) -> Path:
    """Decoded boundary and between-class latents of a small class-conditional VAE trained
    here on the ID training images (DreamOOD in miniature; no pretrained weights)."""
    from oaml.synthesis.generated_outliers import GeneratedOutliersConfig
    from oaml.synthesis.generated_outliers import synthesize as run
    from oaml.synthesis.generator import GeneratorConfig

    trainer = GeneratorConfig()
    if request.generator_epochs is not None:
        trainer = replace(trainer, epochs=request.generator_epochs)
    if request.generator_images is not None:
        trainer = replace(trainer, images=request.generator_images)
    cfg = GeneratedOutliersConfig(
        count=request.count, seed=request.seed or 0, generator=trainer, **_sized(request, 2048)
    )
    # Shared by every run on the data, where the data volume can be written; else the generator
    # is trained into the outlier folder itself (a read-only data volume in a container).
    shared = Path(request.data_root) / "cache" / "generators"
    cache = request.cache or writable_folder(shared, Path(request.out) / "generator-cache")
    return run(request.benchmark, request.data_root, request.out, cfg, cache, request.device)


def preset_request(preset, data_root: Path, out: Path) -> tuple[str, SynthesisRequest]:
    """The backend and request a preset's `outliers:` section asks for: Stable Diffusion
    generations where `sd_checkpoint` is set (a source naming stable-diffusion combines them),
    else its `source`, else forward-diffused ID images."""
    from oaml.data.benchmarks import get_benchmark

    found = preset.outliers
    classes = get_benchmark(preset.benchmark, data_root).num_classes
    request = SynthesisRequest(
        benchmark=preset.benchmark, data_root=Path(data_root), out=Path(out), count=found.count,
        t_min=found.t_min, t_max=found.t_max, steps=found.sd_steps, size=found.sd_size,
        checkpoint=Path(found.sd_checkpoint) if found.sd_checkpoint else None,
        n_per_class=max(1, found.count // classes) if found.sd_checkpoint else None,
        # The generator learns from the images the student trains on.
        generator_epochs=found.generator_epochs,
        generator_images=preset.student.train.train_subset,
    )  # fmt: skip
    backend = found.source or "forward-diffusion"
    if found.sd_checkpoint and "stable-diffusion" not in backend.split("+"):
        backend = "stable-diffusion"  # local weights given: DreamOOD's own path wins
    check_backend(backend)  # an unknown source fails here, naming the known ones
    return backend, request


def request_settings(backend: str, request: SynthesisRequest) -> dict[str, object]:
    """What the outliers depend on (for tracking and a stage folder's name): the backend and
    the request without where it reads and writes."""
    where = {"data_root", "out", "device", "cache"}
    fields = {k: v for k, v in asdict(request).items() if k not in where}
    return {
        "backend": backend,
        **{k: str(v) if isinstance(v, Path) else v for k, v in fields.items()},
    }
