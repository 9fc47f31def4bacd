"""Process-wide settings for oaml's own entry points (the `oaml` command and pipeline stages)."""

from __future__ import annotations

import atexit
import gc

_registered = False


def freeze_gc_at_exit() -> None:
    """Skip the cyclic garbage collector's pass over every object when the process exits.

    With torch, timm and torchvision (which loads torch._dynamo) imported, that last pass costs
    about 0.8 s per process here, paid by every command and by each pipeline stage. Registered
    first, the handler runs after every other atexit handler (they run last in, first out).
    """
    global _registered
    if not _registered:
        atexit.register(gc.freeze)
        _registered = True
