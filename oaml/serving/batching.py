"""Dynamic micro-batching: concurrent requests share one onnxruntime call.

One worker runs the session on a single thread (onnxruntime parallelises inside a call). While a
batch runs, new requests queue; the next batch takes all of them up to `max_batch` images, so
batches grow with load and a lone request never waits. `max_wait_ms` > 0 additionally holds a
batch open for stragglers (trading latency for larger batches on bursty traffic).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

RunFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class BatcherStopped(RuntimeError):
    """The batcher is not running (not started, stopped, or its worker died)."""


class BatcherBusy(RuntimeError):
    """The queue holds as many images as it may: the caller should retry shortly (503)."""


class MicroBatcher:
    """Queue requests of uint8 [n, H, W, C] images; answer each with its rows of the outputs."""

    def __init__(
        self,
        run: RunFn,
        max_batch: int = 64,
        max_wait_ms: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
        max_queued_bytes: int = 256 * 1024 * 1024,
        blames_input: Callable[[Exception], bool] = lambda _exc: False,
        max_batch_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self._run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000.0
        self._on_batch = on_batch
        # Bounded: past this many bytes of images waiting or running, requests are refused at
        # once instead of queueing without end (memory, and latency no client would wait for).
        self.max_queued_bytes = max_queued_bytes
        # One onnxruntime call's input (and so its activations) stays bounded in bytes too:
        # 64 large images are another thing than 64 small ones.
        self.max_batch_bytes = max_batch_bytes
        self._queue: asyncio.Queue = asyncio.Queue()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxruntime")
        self._worker: asyncio.Task | None = None
        self._pending = 0  # requests submitted and not yet answered
        self._queued_bytes = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._carry: tuple[np.ndarray, asyncio.Future] | None = None
        # Health: runtime errors in a row (errors `blames_input` puts on the request excluded)
        # and when a batch last succeeded, for liveness and readiness.
        self._blames_input = blames_input
        self.failures_in_a_row = 0
        self.last_success: float | None = None
        self._stopping = False

    async def start(self) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._serve())

    @property
    def alive(self) -> bool:
        """The worker is running: readiness is false once it has stopped or died."""
        return self._worker is not None and not self._worker.done()

    @property
    def died(self) -> bool:
        """The worker ended without being stopped: it will never answer again."""
        return self._worker is not None and self._worker.done() and not self._stopping

    async def stop(self) -> None:
        """Finish every queued request, then stop the worker."""
        await self._idle.wait()
        self._stopping = True
        if self._worker:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)

    async def submit(self, images: np.ndarray) -> tuple[np.ndarray, ...]:
        """The model's outputs (logits, energy, confidence) for these images' rows, computed in
        a shared batch."""
        if not self.alive:
            raise BatcherStopped("the model is not serving (starting up or shutting down)")
        if self._queued_bytes + images.nbytes > self.max_queued_bytes:
            raise BatcherBusy(
                f"{self._queued_bytes} bytes of images are already waiting (the limit is "
                f"{self.max_queued_bytes}); retry shortly"
            )
        future = asyncio.get_running_loop().create_future()
        self._pending += 1
        self._queued_bytes += images.nbytes
        self._idle.clear()
        try:
            await self._queue.put((images, future))
            return await future
        finally:
            self._pending -= 1
            self._queued_bytes -= images.nbytes
            if not self._pending:
                self._idle.set()

    async def _collect(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        first, self._carry = self._carry, None
        items = [first or await self._queue.get()]
        count, shape, size = len(items[0][0]), items[0][0].shape[1:], items[0][0].nbytes
        deadline = time.perf_counter() + self.max_wait
        while count < self.max_batch and size < self.max_batch_bytes:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            # Too many images or bytes to join, or another image size (only equal shapes
            # stack): next batch. A request alone is never split, whatever its size.
            too_big = size + item[0].nbytes > self.max_batch_bytes
            if count + len(item[0]) > self.max_batch or too_big or item[0].shape[1:] != shape:
                self._carry = item
                break
            items.append(item)
            count, size = count + len(item[0]), size + item[0].nbytes
        return items

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._collect()
            items = [(x, f) for x, f in items if not f.done()]  # drop cancelled requests
            if not items:
                continue
            try:
                # Inside the try: whatever fails here fails these requests, never the worker.
                batch = items[0][0] if len(items) == 1 else np.concatenate([x for x, _ in items])
                outputs = await loop.run_in_executor(self._pool, self._run, batch)
            except Exception as exc:  # hand the error to every waiting request
                if not self._blames_input(exc):
                    self.failures_in_a_row += 1
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.failures_in_a_row, self.last_success = 0, time.monotonic()
            if self._on_batch:
                self._on_batch(len(batch))
            start = 0
            for images, future in items:
                end = start + len(images)
                if not future.done():
                    future.set_result(tuple(o[start:end] for o in outputs))
                start = end
