"""Stable Diffusion outliers, DreamOOD's generation path that OAML reuses.

The prompt "A high-quality image of the <class>" is encoded with the class name's (last) token
embedding replaced by an outlier embedding, so the sampler draws images near, but outside, the
class. Outputs: the final latents (for DeepCLUB) and the decoded images (for the energy term), in
shards with a manifest; a killed run resumes at the first missing shard and repeats exactly what an
uninterrupted run writes (every sample has its own seeded generator).

Checkpoints are read from a local diffusers folder or a single checkpoint file, or given as a hub
repo id (`ORG/NAME[@REVISION]`, e.g. CompVis/stable-diffusion-v1-4) from the Hugging Face cache
(HF_HOME; HF_HUB_OFFLINE=1 never downloads, HF_ENDPOINT names a mirror): the snapshot folder,
whose name is the commit, is what the manifest records.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oaml.io import atomic_write, atomic_write_json, files_sha256
from oaml.synthesis.shards import ShardWriter

SCHEDULERS = ("pndm", "ddim")
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+(@[\w./-]+)?$")
# What a diffusers pipeline folder needs from a hub repo (not its .ckpt, fp16 or flax copies).
HUB_FILES = ["model_index.json", "scheduler/*", "text_encoder/*", "tokenizer/*", "unet/*", "vae/*"]
HUB_SKIP = ["*.ckpt", "*fp16*", "*non_ema*", "*.msgpack", "*.h5", "*.onnx"]


class StableDiffusionError(ValueError):
    """A checkpoint that cannot be used; the message names the path and what to do."""


@dataclass(frozen=True)
class GenerationConfig:
    """The paper's defaults: PLMS (PNDM) 50 steps, guidance 7.5, eta 0, 512x512, seed 42."""

    n_per_class: int = 100
    steps: int = 50
    guidance: float = 7.5
    eta: float = 0.0  # DDIM only
    size: int = 512
    scheduler: str = "pndm"
    seed: int = 42
    batch_size: int = 4  # images per sampler call (the paper's n_samples)
    shard_size: int = 64
    prompt: str = "A high-quality image of the {}"
    # Without a text-conditioned feature space: outlier embeddings are the class token's embedding
    # plus Gaussian noise of this relative size, rescaled to the token embedding's norm.
    token_noise: float = 0.5


def check_config(cfg: GenerationConfig) -> None:
    if cfg.scheduler not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {cfg.scheduler!r}")
    positive = {"n_per_class": cfg.n_per_class, "steps": cfg.steps, "size": cfg.size,
                "batch_size": cfg.batch_size, "shard_size": cfg.shard_size}  # fmt: skip
    bad = [k for k, v in positive.items() if v < 1]
    if bad:
        raise ValueError(f"{', '.join(bad)} must be positive")
    if "{}" not in cfg.prompt:
        raise ValueError(f"the prompt must hold {{}} where the class name goes: {cfg.prompt!r}")


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """The local folder or file of `checkpoint`: itself where it exists, else (a hub repo id)
    its snapshot in the Hugging Face cache, fetched into it where the hub is reachable."""
    path = Path(checkpoint).expanduser()
    if path.exists() or not HUB_ID.match(str(checkpoint)):
        return path
    from huggingface_hub import snapshot_download

    repo, _, revision = str(checkpoint).partition("@")
    try:
        return Path(
            snapshot_download(
                repo, revision=revision or None, allow_patterns=HUB_FILES, ignore_patterns=HUB_SKIP
            )
        )
    except Exception as exc:  # offline and not cached, unknown repo, network: all unusable
        home = os.environ.get("HF_HOME", "~/.cache/huggingface")
        raise StableDiffusionError(
            f"Stable Diffusion {checkpoint}: no such local path, and the hub repo is not in the "
            f"cache under {home} ({type(exc).__name__}); fetch it once where the hub (or "
            "HF_ENDPOINT, a mirror) is reachable, or pass a local diffusers folder"
        ) from None


def load_pipeline(checkpoint: str | Path, device: torch.device, fp16: bool | None = None):
    """A StableDiffusionPipeline from a local diffusers folder (model_index.json, unet/, vae/,
    text_encoder/, tokenizer/, scheduler/), a single .ckpt/.safetensors file or a hub repo id
    in the cache; fp16 and attention slicing on CUDA."""
    from diffusers import StableDiffusionPipeline

    path = resolve_checkpoint(checkpoint)
    if not path.exists():
        raise StableDiffusionError(
            f"Stable Diffusion checkpoint {path} does not exist: pass a local diffusers folder "
            "or a .ckpt/.safetensors file (nothing is downloaded)"
        )
    half = device.type == "cuda" if fp16 is None else fp16
    dtype = torch.float16 if half else torch.float32
    options: dict[str, Any] = {"torch_dtype": dtype, "local_files_only": True}
    try:
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise StableDiffusionError(
                    f"{path} is not a diffusers folder (no model_index.json); pass the folder "
                    "that holds model_index.json, unet/, vae/, text_encoder/, tokenizer/"
                )
            pipe = StableDiffusionPipeline.from_pretrained(
                path, safety_checker=None, requires_safety_checker=False, **options
            )
        else:
            pipe = StableDiffusionPipeline.from_single_file(str(path), **options)
    except StableDiffusionError:
        raise
    except Exception as exc:  # diffusers raises many kinds; all mean: this path is unusable
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StableDiffusionError(
            f"cannot load Stable Diffusion from {path}: {first[:300]}"
        ) from None
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if device.type == "cuda":
        pipe.enable_attention_slicing()
    return pipe


def use_scheduler(pipe, name: str) -> None:
    """PNDM (the PLMS sampler of the paper) or DDIM, from the checkpoint's own schedule."""
    from diffusers import DDIMScheduler, PNDMScheduler

    cls = {"pndm": PNDMScheduler, "ddim": DDIMScheduler}[name]
    if not isinstance(pipe.scheduler, cls):
        pipe.scheduler = cls.from_config(pipe.scheduler.config)


def class_token_position(tokenizer, prompt: str, class_name: str) -> int:
    """Where the class name's last token sits in the tokenized prompt (the replaced one)."""
    ids = tokenizer(prompt.format(class_name)).input_ids
    name = tokenizer(class_name, add_special_tokens=False).input_ids
    for start in range(len(ids) - len(name), -1, -1):
        if ids[start : start + len(name)] == name:
            return start + len(name) - 1
    raise ValueError(f"cannot find the tokens of {class_name!r} in the prompt {prompt!r}")


def token_embedding(pipe, position: int, prompt: str) -> torch.Tensor:
    """The input embedding of the prompt's token at `position` (a class anchor)."""
    ids = pipe.tokenizer(prompt).input_ids
    table = pipe.text_encoder.get_input_embeddings()
    return table.weight[ids[position]].detach().float().cpu()


@contextmanager
def replaced_token(text_encoder, position: int, embeddings: torch.Tensor) -> Iterator[None]:
    """While active, the token embedding at `position` of each prompt in the batch is replaced by
    the matching row of `embeddings` (a forward hook on the input embedding table)."""
    table = text_encoder.get_input_embeddings()

    def hook(_module, _inputs, output):
        output = output.clone()
        output[:, position] = embeddings.to(output.device, output.dtype)
        return output

    handle = table.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def encode_prompts(pipe, prompts: list[str]) -> torch.Tensor:
    """The text encoder's hidden states for `prompts`, padded to the tokenizer's length."""
    tokens = pipe.tokenizer(
        prompts,
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(pipe.device)
    with torch.no_grad():
        return pipe.text_encoder(tokens)[0]


def encode_outlier_prompts(pipe, prompt: str, position: int, embeddings: torch.Tensor):
    """Prompt embeddings for `prompt` with the token at `position` replaced, one per row."""
    with replaced_token(pipe.text_encoder, position, embeddings):
        return encode_prompts(pipe, [prompt] * len(embeddings))


def token_noise_embeddings(
    anchors: torch.Tensor, n: int, relative_noise: float, seed: int
) -> np.ndarray:
    """(C, n, D) outlier embeddings around each class anchor: anchor + noise, rescaled to the
    anchor's norm (used until a text-conditioned feature space feeds the k-NN sampler)."""
    rng = np.random.default_rng(seed)
    a = anchors.numpy().astype(np.float32)
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    noise = rng.standard_normal((a.shape[0], n, a.shape[1])).astype(np.float32)
    noise *= (relative_noise * norms / np.sqrt(a.shape[1]))[:, None, :]
    moved = a[:, None, :] + noise
    return moved / np.linalg.norm(moved, axis=2, keepdims=True) * norms[:, None, :]


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """VAE output in [-1, 1], NCHW -> uint8 NHWC."""
    scaled = ((images.float().clamp(-1, 1) + 1) * 127.5).round()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def generate_batch(pipe, prompt_embeds, cfg: GenerationConfig, seeds: list[int]):
    """Latents (N, 4, h, w) and decoded uint8 images (N, size, size, 3) for one batch."""
    generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    negative = encode_prompts(pipe, [""]).expand(len(seeds), -1, -1)  # unconditional
    with torch.no_grad():
        latents = pipe(
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative,
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance,
            eta=cfg.eta,
            height=cfg.size,
            width=cfg.size,
            generator=generators,
            output_type="latent",
        ).images
        decoded = pipe.vae.decode(latents / pipe.vae.config.scaling_factor).sample
    return latents.float().cpu().numpy(), _to_uint8(decoded)


def synthesize_sd(
    checkpoint: str | Path,
    class_names: list[str],
    out_dir: str | Path,
    cfg: GenerationConfig,
    device: str = "auto",
    embeddings: np.ndarray | None = None,
    teacher: str | Path | None = None,
    benchmark: str | None = None,
    data_root: str | Path | None = None,
) -> Path:
    """Generate `cfg.n_per_class` outliers per class into shards; return the manifest path.
    Outlier embeddings (C, N, D) in the text encoder's token space: `embeddings` as given, else
    k-NN samples in the text-conditioned space of `teacher`'s features on `benchmark`'s training
    images, else token noise around the class anchors. They are kept in OUT/embeddings.npy, so
    a resumed run generates from the very same ones."""
    from oaml.device import pick_device

    check_config(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch_device = pick_device(device)
    checkpoint = resolve_checkpoint(checkpoint)
    pipe = load_pipeline(checkpoint, torch_device)
    use_scheduler(pipe, cfg.scheduler)
    positions = [class_token_position(pipe.tokenizer, cfg.prompt, c) for c in class_names]
    prompts = [cfg.prompt.format(c) for c in class_names]
    anchors = torch.stack(
        [token_embedding(pipe, p, q) for p, q in zip(positions, prompts, strict=True)]
    )
    embeddings, source, report = _outlier_embeddings(
        out, anchors, cfg, embeddings, teacher, benchmark, data_root, device
    )
    if embeddings.shape[:2] != (len(class_names), cfg.n_per_class):
        raise ValueError(
            f"embeddings have shape {embeddings.shape}, need ({len(class_names)}, "
            f"{cfg.n_per_class}, D)"
        )
    jobs = [(c, i) for c in range(len(class_names)) for i in range(cfg.n_per_class)]
    writer = ShardWriter(out, ("latents", "images"))
    shards = [jobs[s : s + cfg.shard_size] for s in range(0, len(jobs), cfg.shard_size)]
    for number, shard in writer.pending(shards, "stable diffusion"):
        latents, images = _generate_shard(pipe, shard, embeddings, prompts, positions, cfg)
        labels = np.array([c for c, _ in shard], dtype=np.int64)
        writer.write(number, {"latents": latents, "images": images}, labels=labels)
    return writer.finish(
        "stable_diffusion",
        checkpoint=str(Path(checkpoint).expanduser().resolve()),
        checkpoint_files=files_sha256(checkpoint),  # the weights' lineage, hub snapshot or not
        class_names=list(class_names),
        count=len(jobs),
        embeddings=source,
        embeddings_file="embeddings.npy",
        text_space=report,
        params=asdict(cfg),
    )


def _outlier_embeddings(out: Path, anchors, cfg, embeddings, teacher, benchmark, data_root, device):
    """The run's outlier embeddings and where they came from: given, kept from an earlier
    (resumed) run, k-NN samples in a teacher's text-conditioned space, or token noise."""
    source, report = "given", {}
    saved = out / "embeddings.npy"
    about = out / "embeddings.json"
    if embeddings is None and saved.is_file() and about.is_file():
        embeddings = np.load(saved)
        recorded = json.loads(about.read_text())
        source, report = recorded["source"], recorded["report"]
    elif embeddings is None and teacher is not None:
        from oaml.synthesis.text_space import text_space_outliers

        if benchmark is None or data_root is None:
            raise ValueError("outliers from a teacher's features need the benchmark and data root")
        embeddings, report = text_space_outliers(
            teacher, anchors, benchmark, data_root, cfg.n_per_class, device=device
        )
        source = "text_space"
    elif embeddings is None:
        embeddings = token_noise_embeddings(anchors, cfg.n_per_class, cfg.token_noise, cfg.seed)
        source = "token_noise"
    if not (saved.is_file() and about.is_file()):
        atomic_write(saved, lambda fh: np.save(fh, np.asarray(embeddings, dtype=np.float32)))
        atomic_write_json(about, {"source": source, "report": report})
    return np.asarray(embeddings), source, report


def _generate_shard(pipe, shard, embeddings, prompts, positions, cfg: GenerationConfig):
    latents, images = [], []
    for start in range(0, len(shard), cfg.batch_size):
        batch = shard[start : start + cfg.batch_size]
        # One class per sampler call (one prompt, one replaced position).
        for c in sorted({c for c, _ in batch}):
            rows = [i for cc, i in batch if cc == c]
            emb = torch.from_numpy(np.asarray(embeddings[c, rows], dtype=np.float32))
            prompt_embeds = encode_outlier_prompts(pipe, prompts[c], positions[c], emb)
            seeds = [cfg.seed * 1_000_003 + c * 100_003 + i for i in rows]
            lat, img = generate_batch(pipe, prompt_embeds, cfg, seeds)
            latents.append(lat)
            images.append(img)
    return np.concatenate(latents), np.concatenate(images)
