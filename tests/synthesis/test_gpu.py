"""GPU checks (skipped without CUDA; `make gpu-check` runs them with the GPU benchmarks):
Stable Diffusion generation in fp16, and the faiss-gpu k-NN index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oaml.synthesis import stable_diffusion as sd
from oaml.synthesis.knn import KnnConfig, sample_outliers
from oaml.synthesis.tiny_sd import build_tiny_sd

pytestmark = pytest.mark.gpu


def test_fp16_generation_on_cuda(tmp_path):
    model = build_tiny_sd(tmp_path / "tiny_sd")
    pipe = sd.load_pipeline(model, torch.device("cuda"))
    assert pipe.unet.dtype == torch.float16  # fp16 by default on CUDA
    cfg = sd.GenerationConfig(n_per_class=2, steps=3, size=32, batch_size=2, shard_size=4)
    manifest = sd.synthesize_sd(model, ["shirt", "boot"], tmp_path / "sd", cfg, "cuda")
    latents = np.load(manifest.parent / "latents_00000.npz")["latents"]
    images = np.load(manifest.parent / "images_00000.npz")["images"]
    assert latents.shape == (4, 4, 16, 16) and np.isfinite(latents).all()
    assert images.shape == (4, 32, 32, 3) and images.dtype == np.uint8


def test_faiss_gpu_index_matches_the_cpu_search():
    import faiss

    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        pytest.skip("this faiss build has no GPU support (install the gpu extra: faiss-gpu-cu12)")
    rng = np.random.default_rng(0)
    features = rng.standard_normal((3, 400, 64)).astype(np.float32)
    cfg = KnnConfig(k=50, select=20, seed=0)
    on_gpu = sample_outliers(features, 10, cfg, use_gpu=True)
    on_cpu = sample_outliers(features, 10, cfg, use_gpu=False)
    assert on_gpu.shape == on_cpu.shape == (3, 10, 64)
    assert np.mean(np.isclose(on_gpu, on_cpu, atol=1e-4).all(axis=-1)) > 0.95  # float near-ties
