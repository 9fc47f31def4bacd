"""`oaml bench sd`: Stable Diffusion outlier generation speed, fp32 against fp16 on CUDA.

The baseline is the same generation in fp32 on the same device; on CUDA the fp16 path (with
attention slicing) runs beside it, and the ratio is reported. Without --checkpoint, a tiny random
model is built, which measures the code path's overhead rather than a real UNet's cost.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from oaml.bench.report import write_results
from oaml.synthesis import stable_diffusion as sd


def _images_per_second(pipe, cfg: sd.GenerationConfig, images: int) -> float:
    """Generate `images` outliers of class 0 in batches (after one warm-up batch)."""
    prompt = cfg.prompt.format("shirt")
    position = sd.class_token_position(pipe.tokenizer, cfg.prompt, "shirt")
    anchor = sd.token_embedding(pipe, position, prompt)
    batch = anchor[None].repeat(cfg.batch_size, 1)

    def run(seed: int) -> None:
        embeds = sd.encode_outlier_prompts(pipe, prompt, position, batch)
        sd.generate_batch(pipe, embeds, cfg, list(range(seed, seed + cfg.batch_size)))

    run(0)  # warm-up: kernels, allocator, cudnn autotuning
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    done = 0
    while done < images:
        run(1 + done)
        done += cfg.batch_size
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - started)


def bench_generation(
    out: str | Path,
    checkpoint: str | Path | None = None,
    device: str = "auto",
    size: int | None = None,
    steps: int = 50,
    images: int = 8,
    batch_size: int = 4,
) -> dict:
    """Images/s of outlier generation, fp32 (baseline) and fp16 (CUDA only); writes sd.json/md."""
    from oaml.device import pick_device
    from oaml.synthesis.tiny_sd import build_tiny_sd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(checkpoint) if checkpoint else build_tiny_sd(out / "tiny_sd")
    side = size or (512 if checkpoint else 32)
    torch_device = pick_device(device)
    cfg = sd.GenerationConfig(steps=steps, size=side, batch_size=batch_size)
    rows = {}
    precisions = [False, True] if torch_device.type == "cuda" else [False]
    for fp16 in precisions:
        pipe = sd.load_pipeline(model, torch_device, fp16=fp16)
        sd.use_scheduler(pipe, cfg.scheduler)
        rows["fp16" if fp16 else "fp32"] = _images_per_second(pipe, cfg, images)
        del pipe
    report = {
        "checkpoint": str(model) if checkpoint else "tiny random model (built)",
        "device": str(torch_device),
        "gpu": torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else None,
        "size": side,
        "steps": steps,
        "batch_size": batch_size,
        "images_per_second": rows,
        "fp16_speedup": rows["fp16"] / rows["fp32"] if "fp16" in rows else None,
    }
    return write_results(out, "sd.json", report)


def markdown(report: dict) -> str:
    """Images per second at each precision."""
    lines = ["| precision | images/s |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in report["images_per_second"].items()]
    return "\n".join(lines) + "\n"
