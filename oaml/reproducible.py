"""Runs whose trained weights do not depend on the machine's core count or CPU model, at a
speed cost: what `oaml demo --reproducible` uses.

One machine reproduces its own runs bit for bit. Between machines three things change the
weights (each measured here on a tiny recipe, each moving ID accuracy by about a point): torch's
intra-op thread count (float sums split differently), the instruction set oneDNN, ATen and MKL
pick for the CPU (AVX2, AVX-512, AMX), and bf16 autocast, which training turns on only where
the CPU computes bf16 in hardware. Pinned: 2 threads, the AVX2 kernels, float32.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

# Read when torch (oneDNN, ATen, MKL) starts in a process: set before the stages start.
PINNED_ENVIRONMENT = {
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
}
# bf16 autocast exists only on some CPUs: train in float32 everywhere.
PINNED_OVERRIDES = ("student.train.amp=false", "teacher.train.amp=false")


@contextmanager
def pinned_environment() -> Iterator[dict[str, str]]:
    """os.environ with PINNED_ENVIRONMENT for the processes started inside; restored after."""
    saved = {key: os.environ.get(key) for key in PINNED_ENVIRONMENT}
    os.environ.update(PINNED_ENVIRONMENT)
    try:
        yield dict(PINNED_ENVIRONMENT)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
