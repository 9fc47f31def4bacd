"""`oaml train --nproc N`: the same command in N data-parallel processes on this machine.

torchrun (torch.distributed.run) starts the workers with RANK/WORLD_SIZE/LOCAL_RANK set; when a
rank dies the group stops, and `launch` starts a new group (up to `max_restarts` times) that
continues from the last epoch's checkpoint with --resume. A fresh torchrun per attempt, not
torchrun's own --max-restarts: its restarted gloo groups read the dead group's addresses from
the rendezvous store and fail to connect (seen here with torch 2.14). A Kubeflow TrainJob on the
torch-distributed runtime runs the very same `torchrun -m oaml.cli train ...` per node.
"""

from __future__ import annotations

import os
import subprocess
import sys


def torchrun_command(train_args: list[str], nproc: int) -> list[str]:
    """The torchrun command line that runs `oaml train <train_args>` in `nproc` processes on
    this machine (a standalone rendezvous on a free local port)."""
    if nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {nproc}")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return [*launcher, f"--nproc-per-node={nproc}", "-m", "oaml.cli", "train", *train_args]


def worker_threads(nproc: int) -> int:
    """CPU threads per worker: the machine's cores shared out (at least one)."""
    return max(1, (os.cpu_count() or 1) // nproc)


def launch(train_args: list[str], nproc: int, max_restarts: int = 0) -> int:
    """Run `oaml train` in `nproc` local processes, starting a resuming group again after a
    failure up to `max_restarts` times; the last group's exit status."""
    if max_restarts < 0:
        raise ValueError(f"--max-restarts must be 0 or more, got {max_restarts}")
    env = dict(os.environ)
    # torchrun would otherwise pin every worker to one thread.
    env.setdefault("OMP_NUM_THREADS", str(worker_threads(nproc)))
    args = list(train_args)
    for attempt in range(max_restarts + 1):
        code = subprocess.call(torchrun_command(args, nproc), env=env)
        if code == 0 or attempt == max_restarts:
            return code
        print(f"a rank failed (exit {code}); restarting the group from the last checkpoint "
              f"({attempt + 1}/{max_restarts})", flush=True)  # fmt: skip
        if "--resume" not in args:
            args.append("--resume")
    return code
