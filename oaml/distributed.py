"""Data-parallel training: the process group torchrun (or a Kubeflow TrainJob) describes.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `Distributed.from_env` joins that group once per
process (gloo on CPU, NCCL on GPUs) and gives every rank its device. A single process, with no
such variables, gets a context whose collectives are no-ops, so the training loop calls them
unconditionally and single-process training runs exactly as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

# torchrun's count of how often it restarted the worker group (a killed rank restarts them all).
RESTART_COUNT = "TORCHELASTIC_RESTART_COUNT"


@dataclass(frozen=True)
class Distributed:
    """This process's place in the group: rank, world size, its device and the backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes checkpoints, calibrates and logs."""
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> Distributed:
        """Join the group torchrun describes (initialising it once), or a single process."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        wants_cuda = device != "cpu" and torch.cuda.is_available()
        backend = "nccl" if wants_cuda else "gloo"
        if wants_cuda:
            gpus = torch.cuda.device_count()
            if local_rank >= gpus:
                raise ValueError(
                    f"{os.environ.get('LOCAL_WORLD_SIZE', local_rank + 1)} processes on this "
                    f"node but {gpus} GPU(s): one process per GPU (--nproc {gpus}), or --device cpu"
                )
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        return cls(rank, world_size, local_rank, dist.get_backend())

    def device(self, name: str = "auto") -> torch.device:
        """The rank's device: cuda:LOCAL_RANK under NCCL, else what `name` picks."""
        from oaml.device import pick_device

        if self.backend == "nccl":
            return torch.device("cuda", self.local_rank)
        return pick_device(name)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, values: dict[str, float]) -> dict[str, float]:
        """Element-wise sums of the same keys over all ranks (float64, in a stable key order)."""
        if not self.enabled or not values:
            return dict(values)
        keys = sorted(values)
        on = torch.device("cuda", self.local_rank) if self.backend == "nccl" else "cpu"
        tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=on)
        dist.all_reduce(tensor)
        return dict(zip(keys, tensor.tolist(), strict=True))

    def main_first(self, build):
        """`build()` on rank 0, then on the other ranks: work that fills a shared cache (decoded
        images) is done once, and the later ranks find it made."""
        if not self.is_main:
            self.barrier()
        value = build()
        if self.is_main:
            self.barrier()
        return value


def restarted() -> bool:
    """True in a worker group torchrun restarted after a failure: it continues from last.pt."""
    return int(os.environ.get(RESTART_COUNT, "0")) > 0


def shutdown() -> None:
    """Leave the process group (at the end of a distributed `oaml train`)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
