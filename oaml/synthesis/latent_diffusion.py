"""Forward diffusion in Stable Diffusion's latent space: the paper's "noisy features obtained in
the forward diffusion process", with the SD VAE.

ID training images are encoded by the VAE, their latents noised at a timestep t in t_min..t_max
(the checkpoint's own schedule), and optionally denoised part of the way by the UNet under the
class prompt (img2img from t). Outputs match `stable_diffusion.py`: latents (for DeepCLUB) and
decoded images, in resumable shards with a manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from oaml.io import files_sha256
from oaml.synthesis.shards import ShardWriter
from oaml.synthesis.stable_diffusion import _to_uint8, load_pipeline, resolve_checkpoint


@dataclass(frozen=True)
class LatentDiffusionConfig:
    count: int = 1000
    t_min: int = 300
    t_max: int = 700
    size: int = 512  # ID images are resized to this side before encoding
    seed: int = 0
    shard_size: int = 64
    batch_size: int = 8
    denoise: bool = False  # img2img from t under the class prompt
    steps: int = 50  # the sampler's full schedule; img2img runs the part below t
    guidance: float = 7.5
    prompt: str = "A high-quality image of the {}"


def _check(cfg: LatentDiffusionConfig, train_steps: int) -> None:
    if not 0 <= cfg.t_min <= cfg.t_max < train_steps:
        raise ValueError(f"need 0 <= t_min <= t_max < {train_steps}, got {cfg.t_min}..{cfg.t_max}")
    if min(cfg.count, cfg.size, cfg.shard_size, cfg.batch_size, cfg.steps) < 1:
        raise ValueError("count, size, shard_size, batch_size and steps must be positive")


def _pixels(images: list, size: int, device, dtype) -> torch.Tensor:
    """PIL RGB images -> [-1, 1] NCHW at `size` (the VAE's input)."""
    from oaml.imaging import resize

    arrays = [np.asarray(resize(im, size, "bicubic"), dtype=np.float32) for im in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0
    return x.to(device, dtype)


def latent_forward_diffusion(
    checkpoint: str | Path,
    benchmark: str,
    data_root: str | Path,
    out_dir: str | Path,
    cfg: LatentDiffusionConfig,
    device: str = "auto",
) -> Path:
    """Encode, noise (and optionally partly denoise) `cfg.count` stratified ID training images;
    return the manifest path. Seeds depend on (seed, shard), so a resumed run is identical."""
    from oaml.data.benchmarks import get_benchmark
    from oaml.data.datasets import stratified_subset
    from oaml.data.imglist import load_image, parse_imglist
    from oaml.device import pick_device

    root = Path(data_root).expanduser().resolve()
    bench = get_benchmark(benchmark, root)
    bench.require(root, [bench.train])
    torch_device = pick_device(device)
    checkpoint = resolve_checkpoint(checkpoint)
    pipe = load_pipeline(checkpoint, torch_device)
    _check(cfg, pipe.scheduler.config.num_train_timesteps)
    entries = stratified_subset(parse_imglist(bench.train.imglist_path(root)), cfg.count, cfg.seed)
    image_root = bench.train.image_root(root)
    writer = ShardWriter(out_dir, ("latents", "images"))
    chunks = [entries[s : s + cfg.shard_size] for s in range(0, len(entries), cfg.shard_size)]
    for number, chunk in writer.pending(chunks, "latent diffusion"):
        rng = np.random.default_rng([cfg.seed, number])
        timesteps = rng.integers(cfg.t_min, cfg.t_max + 1, size=len(chunk))
        generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        latents, images = [], []
        for b in range(0, len(chunk), cfg.batch_size):
            part = chunk[b : b + cfg.batch_size]
            pil = [load_image(image_root / e.path, "RGB") for e in part]
            t = torch.from_numpy(timesteps[b : b + cfg.batch_size]).long()
            labels = [e.label for e in part]
            lat, img = _noised(pipe, pil, t, labels, bench.class_names, cfg, generator)
            latents.append(lat)
            images.append(img)
        labels = np.array([e.label for e in chunk], dtype=np.int64)
        arrays = {"latents": np.concatenate(latents), "images": np.concatenate(images)}
        writer.write(number, arrays, labels=labels, timesteps=timesteps)
    return writer.finish(
        "stable_diffusion",
        mode="latent_forward_diffusion" + ("+img2img" if cfg.denoise else ""),
        checkpoint=str(Path(checkpoint).expanduser().resolve()),
        checkpoint_files=files_sha256(checkpoint),  # the weights' lineage, hub snapshot or not
        benchmark=benchmark,
        class_names=list(bench.class_names),
        count=len(entries),
        params=asdict(cfg),
    )


def _noised(pipe, pil, t, labels, class_names, cfg: LatentDiffusionConfig, generator):
    """VAE latents noised at `t` (z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps), or, with
    `denoise`, diffusers' img2img from t under the class prompt; latents and uint8 images."""
    vae = pipe.vae
    with torch.no_grad():
        x = _pixels(pil, cfg.size, pipe.device, vae.dtype)
        z0 = vae.encode(x).latent_dist.sample(generator=generator) * vae.config.scaling_factor
        if cfg.denoise:
            z = _img2img(pipe, z0, t, labels, class_names, cfg, generator)
        else:
            noise = torch.randn(z0.shape, generator=generator).to(z0.device, z0.dtype)
            z = pipe.scheduler.add_noise(z0, noise, t.to(z0.device))
        decoded = vae.decode(z / vae.config.scaling_factor).sample
    return z.float().cpu().numpy(), _to_uint8(decoded)


def _img2img(pipe, z0, t, labels, class_names, cfg: LatentDiffusionConfig, generator):
    """diffusers' img2img on clean latents: it noises each to its own t (strength t / T) and
    denoises the rest of the schedule under the class prompt."""
    from diffusers import StableDiffusionImg2ImgPipeline

    from oaml.synthesis.stable_diffusion import encode_prompts

    img2img = StableDiffusionImg2ImgPipeline(**pipe.components, requires_safety_checker=False)
    img2img.set_progress_bar_config(disable=True)
    total = pipe.scheduler.config.num_train_timesteps
    negative = encode_prompts(pipe, [""])
    results = []
    for i in range(len(z0)):
        results.append(
            img2img(
                prompt_embeds=encode_prompts(pipe, [cfg.prompt.format(class_names[labels[i]])]),
                negative_prompt_embeds=negative,
                image=z0[i : i + 1],  # 4 channels: taken as latents, not pixels
                strength=float(t[i]) / total,
                num_inference_steps=cfg.steps,
                guidance_scale=cfg.guidance,
                generator=generator,
                output_type="latent",
            ).images
        )
    return torch.cat(results)
