"""Data parallelism's pieces on CPU (gloo): the shared batch order, the synchronised method nets,
summed metrics, and the teacher cache written by two ranks in parallel."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset

from oaml.config import OptimConfig, TrainConfig
from oaml.distributed import Distributed
from oaml.training.batches import SharedOrderSampler, per_rank_batch, steps_per_epoch
from oaml.training.step import TrainStep


def test_two_ranks_split_exactly_the_single_process_batches():
    """Rank r's k-th batch plus the other rank's k-th batch = the single process's k-th batch."""
    data = TensorDataset(torch.arange(103))
    seed = 12345
    single = DataLoader(
        data, batch_size=10, shuffle=True, drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    expected = [set(b[0].tolist()) for b in single]
    ranks = []
    for rank in range(2):
        sampler = SharedOrderSampler(data, 2, rank, True, seed - 3, True)
        sampler.set_epoch(3)
        ranks.append([b[0].tolist() for b in DataLoader(data, 5, sampler=sampler, drop_last=True)])
    assert len(ranks[0]) == len(ranks[1]) == len(expected)
    for k, batch in enumerate(expected):
        assert set(ranks[0][k]) | set(ranks[1][k]) == batch
        assert not set(ranks[0][k]) & set(ranks[1][k])


def test_endless_outliers_split_the_single_process_batches():
    """Outlier batches across passes: two ranks' halves make the single process's batches."""
    from oaml.training.batches import endless_outliers

    data = TensorDataset(torch.arange(25), torch.zeros(25))
    single = endless_outliers(data, 10, seed=3)
    ranks = [endless_outliers(data, 10, 3, Distributed(rank, 2)) for rank in range(2)]
    for _ in range(6):  # three passes of two batches
        whole = set(next(single)[0].tolist())
        halves = [set(next(r)[0].tolist()) for r in ranks]
        assert halves[0] | halves[1] == whole and not halves[0] & halves[1]


def test_batch_must_split_over_ranks():
    three = Distributed(rank=0, world_size=3)
    with pytest.raises(ValueError, match="multiple of 3"):
        per_rank_batch(128, three)
    assert steps_per_epoch(1000, 100, Distributed()) == 10
    assert steps_per_epoch(1000, 100, Distributed(0, 2)) == 10


def test_one_process_collectives_are_no_ops():
    single = Distributed()
    assert not single.enabled and single.is_main
    assert single.sum({"a": 1.5}) == {"a": 1.5}
    assert single.main_first(lambda: 7) == 7
    single.barrier()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _join(rank: int, world: int, port: int) -> Distributed:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
    )  # fmt: skip
    torch.set_num_threads(1)
    return Distributed.from_env("cpu")


def _oaml_steps(rank: int, world: int, port: int, out: str) -> None:
    """A few OAML steps under DDP, each rank on different data; what each rank ends with."""
    from oaml.models.factory import create_model
    from oaml.training.methods import create_method

    dist = _join(rank, world, port)
    torch.manual_seed(0)  # identical seeds: identical initial weights on every rank
    model = create_model("resnet18_32x32", 3, 1, 0.125)
    method = create_method("oaml", {"energy": 0.1})
    method.attach(np.random.default_rng(0).standard_normal((3, 5, 12)), 12, 64, 64)
    cfg = TrainConfig(batch_size=8, amp=False, optim=OptimConfig(lr=0.05))
    step = TrainStep.build(model, method, cfg, torch.device("cpu"), 10, 10, dist)
    data = torch.Generator().manual_seed(100 + rank)  # each rank sees its own batch
    for _ in range(3):
        step({
            "images": torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=data),
            "labels": torch.randint(0, 3, (4,), generator=data),
            "teacher_logits": torch.randn(4, 3, generator=data),
            "teacher_features": torch.randn(4, 12, generator=data),
            "outlier_images": torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8,
                                            generator=data),
        })  # fmt: skip
    totals = dist.sum({"rank": float(rank), "one": 1.0})
    # Parameters only: batch-norm statistics are rank 0's from the next forward on.
    state = {
        "model": {k: v.detach() for k, v in model.named_parameters()},
        "method": {k: v.detach() for k, v in method.named_parameters()},
        "totals": totals,
    }
    torch.save(state, f"{out}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_student_and_method_nets_stay_identical_across_ranks(tmp_path):
    """The distiller and both CLUB nets are inside DDP: after steps on different data every
    rank holds the same weights (they would drift apart outside it), and sums add up."""
    mp.spawn(_oaml_steps, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    for part in ("model", "method"):
        assert a[part].keys() == b[part].keys() and a[part]
        for key in a[part]:
            assert torch.allclose(a[part][key], b[part][key], atol=1e-6), key
    assert a["totals"] == b["totals"] == {"one": 2.0, "rank": 1.0}
    assert any(k.startswith("club_net") for k in a["method"])
    assert any(k.startswith("distiller") for k in a["method"])


def _cache_rank(rank: int, world: int, port: int, args: dict) -> None:
    from oaml.data.teacher_cache import teacher_outputs

    dist = _join(rank, world, port)
    teacher_outputs(**args, dist=dist, shard_rows=2)
    torch.distributed.destroy_process_group()


def test_teacher_cache_written_by_two_ranks_equals_one_process(tmp_path):
    from oaml.data.teacher_cache import teacher_outputs
    from oaml.models.checkpoint import save_checkpoint
    from oaml.models.factory import build_model
    from tests.data.test_teacher_cache import SPEC, _images

    imglist = _images(tmp_path / "img", count=7)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "teacher.pt", build_model(SPEC).eval(), SPEC)
    args = {"checkpoint": checkpoint, "imglist": imglist, "image_root": tmp_path / "img"}
    single = teacher_outputs(**args, cache_dir=tmp_path / "single")
    mp.spawn(_cache_rank, args=(2, _free_port(), {**args, "cache_dir": tmp_path / "two"}), nprocs=2)
    two = teacher_outputs(**args, cache_dir=tmp_path / "two")
    assert two.reused and len(list((two.cache_file / "shards").glob("*.done"))) == 4
    np.testing.assert_allclose(two.logits, single.logits, atol=1e-5)
    np.testing.assert_allclose(two.features, single.features, atol=1e-5)
