"""Micro-batching: concurrent requests share calls, each gets exactly its own rows back."""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np

from oaml.serving.batching import MicroBatcher


def _run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    time.sleep(0.01)  # a call long enough for requests to queue behind it
    flat = images.reshape(len(images), -1).astype(np.float32)
    return flat[:, :2], flat.sum(axis=1)


def _serve(requests: list[np.ndarray], **kwargs) -> tuple[list, list[int]]:
    sizes: list[int] = []

    async def main():
        batcher = MicroBatcher(_run, on_batch=sizes.append, **kwargs)
        await batcher.start()
        answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.stop()
        return answers

    return asyncio.run(main()), sizes


def test_concurrent_requests_are_batched_and_answered_with_their_own_rows():
    rng = np.random.default_rng(0)
    requests = [rng.integers(0, 256, (1 + i % 3, 4, 4, 1), dtype=np.uint8) for i in range(40)]
    answers, sizes = _serve(requests, max_batch=16)
    assert sum(sizes) == sum(len(r) for r in requests)
    assert max(sizes) > 1 and max(sizes) <= 16
    for request, (first_two, total) in zip(requests, answers, strict=True):
        np.testing.assert_array_equal(total, request.reshape(len(request), -1).sum(1))
        np.testing.assert_array_equal(first_two, request.reshape(len(request), -1)[:, :2])


def test_oversized_request_runs_alone_and_shapes_never_mix():
    big = np.ones((20, 4, 4, 1), np.uint8)
    other_size = np.ones((2, 8, 8, 1), np.uint8)
    small = np.ones((1, 4, 4, 1), np.uint8)
    answers, sizes = _serve([big, other_size, small], max_batch=8)
    assert [len(a[1]) for a in answers] == [20, 2, 1]
    assert 20 in sizes  # never split, never joined


def test_submitting_to_a_batcher_that_is_not_running_fails_at_once():
    import pytest

    from oaml.serving.batching import BatcherStopped

    async def main():
        batcher = MicroBatcher(_run)
        with pytest.raises(BatcherStopped):
            await batcher.submit(np.ones((1, 2, 2, 1), np.uint8))

    asyncio.run(main())


def test_a_failing_call_fails_only_its_requests():
    calls = {"n": 0}

    def flaky(images):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return _run(images)

    async def main():
        batcher = MicroBatcher(flaky, max_batch=1)
        await batcher.start()
        first = await asyncio.gather(batcher.submit(np.ones((1, 2, 2, 1), np.uint8)),
                                     return_exceptions=True)  # fmt: skip
        second = await batcher.submit(np.ones((1, 2, 2, 1), np.uint8))
        await batcher.stop()
        return first[0], second

    error, answer = asyncio.run(main())
    assert isinstance(error, RuntimeError)
    assert answer[1][0] == 4.0


def test_alive_tells_whether_the_worker_runs():
    """Readiness reads `alive`: false before start, true while serving, false once the worker
    has ended for any reason (here: cancelled from outside), and then submits fail at once."""
    from oaml.serving.batching import BatcherStopped

    async def main():
        batcher = MicroBatcher(_run)
        states = [batcher.alive]
        await batcher.start()
        await batcher.submit(np.ones((1, 2, 2, 1), np.uint8))
        states.append(batcher.alive)
        batcher._worker.cancel()
        await asyncio.sleep(0)
        states.append(batcher.alive)
        try:
            await batcher.submit(np.ones((1, 2, 2, 1), np.uint8))
        except BatcherStopped:
            states.append("refused")
        return states

    assert asyncio.run(main()) == [False, True, False, "refused"]


def test_a_full_queue_refuses_at_once_and_stop_waits_for_what_was_queued():
    from oaml.serving.batching import BatcherBusy

    async def main():
        batcher = MicroBatcher(_run, max_batch=2, max_queued_bytes=12)  # three 4-byte images
        await batcher.start()
        image = np.ones((1, 2, 2, 1), np.uint8)
        answers = await asyncio.gather(
            *(batcher.submit(image) for _ in range(5)), return_exceptions=True
        )
        queued = [batcher.submit(image) for _ in range(2)]
        tasks = [asyncio.ensure_future(q) for q in queued]
        await asyncio.sleep(0)  # both are queued before stop() is asked
        await batcher.stop()  # waits for them: no polling loop
        return answers, [t.result()[1].tolist() for t in tasks]

    answers, after = asyncio.run(main())
    refused = [a for a in answers if isinstance(a, BatcherBusy)]
    assert len(refused) == 2 and "retry shortly" in str(refused[0])
    assert all(a[1].tolist() == [4.0] for a in answers if not isinstance(a, Exception))
    assert after == [[4.0], [4.0]]


def test_the_batcher_counts_model_errors_in_a_row_but_not_refused_inputs():
    """Liveness reads failures_in_a_row; an input the model refuses is the request's fault."""
    broken = {"model": False}

    class Refused(ValueError):
        pass

    def run(images):
        if broken["model"]:
            raise RuntimeError("device lost")
        if images.shape[1] != 4:
            raise Refused("wrong size")
        return _run(images)

    async def main():
        batcher = MicroBatcher(run, blames_input=lambda exc: isinstance(exc, Refused))
        await batcher.start()
        good, odd = np.ones((1, 4, 4, 1), np.uint8), np.ones((1, 5, 5, 1), np.uint8)
        await batcher.submit(good)
        seen = [(batcher.failures_in_a_row, batcher.last_success is not None)]
        for _ in range(3):
            with contextlib.suppress(Refused):
                await batcher.submit(odd)
        seen.append((batcher.failures_in_a_row, batcher.died))
        broken["model"] = True
        for _ in range(3):
            with contextlib.suppress(RuntimeError):
                await batcher.submit(good)
        seen.append((batcher.failures_in_a_row, batcher.died))
        broken["model"] = False
        await batcher.submit(good)
        seen.append((batcher.failures_in_a_row, batcher.alive))
        await batcher.stop()
        seen.append((batcher.alive, batcher.died))  # stopped on purpose: not "died"
        return seen

    assert asyncio.run(main()) == [(0, True), (0, False), (3, False), (0, True), (False, False)]


def test_a_batch_stays_under_its_byte_cap_but_a_big_request_still_runs_whole():
    small = [np.ones((2, 4, 4, 1), np.uint8) for _ in range(12)]  # 32 bytes each
    big = np.ones((5, 4, 4, 1), np.uint8)  # 80 bytes, over the cap on its own
    answers, sizes = _serve([big, *small], max_batch=64, max_batch_bytes=64)
    assert [len(a[1]) for a in answers] == [5] + [2] * 12
    assert 5 in sizes  # never split
    assert all(size <= 4 for size in sizes if size != 5)  # at most 64 bytes of small requests
