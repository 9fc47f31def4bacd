"""Image decodes in child processes that can be stopped. Pillow's decoders cannot be interrupted
in a thread, so a file that takes too long (a progressive JPEG's many scans over millions of
pixels) would hold a decode slot and a core for as long as it likes: here the process decoding
it is killed after `timeout_s`, a fresh one takes its place, and the request gets a 400. One
process per concurrent decode; the event loop only waits for them."""

from __future__ import annotations

import asyncio
import multiprocessing
from typing import Any

import numpy as np

from oaml.serving.images import ImageInputError


def _decode_forever(conn, size: int, channels: int, max_pixels: int, interpolation: str) -> None:
    """A worker: (name, bytes) in, ("ok", pixels) or ("error", message) out, until EOF."""
    from oaml.serving.images import SERVED_FORMATS, decode_image

    while True:
        try:
            name, data = conn.recv()
        except (EOFError, OSError):
            return
        try:
            pixels = decode_image(
                data, size, channels, name, max_pixels, interpolation, SERVED_FORMATS
            )
            conn.send(("ok", pixels))
        except ImageInputError as exc:
            conn.send(("error", str(exc)))


class _Worker:
    """One decoding process and the pipe to it."""

    def __init__(self, context, args: tuple[Any, ...]) -> None:
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_decode_forever, args=(child, *args), daemon=True)
        self.process.start()
        child.close()

    def stop(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()


class DecoderPool:
    """`workers` decoding processes shared by all requests; a request takes one for all its
    images, waiting its turn, so one slow upload holds at most one of them, for at most
    `timeout_s` per image."""

    def __init__(
        self, workers: int, timeout_s: float, size: int, channels: int, max_pixels: int,
        interpolation: str,
    ) -> None:  # fmt: skip
        self.timeout_s = timeout_s
        self._args = (size, channels, max_pixels, interpolation)
        self._count = workers
        self._context = multiprocessing.get_context("spawn")  # no copy of the server's threads
        self._idle: asyncio.Queue[_Worker] | None = None
        self._all: list[_Worker] = []

    def _new_worker(self) -> _Worker:
        worker = _Worker(self._context, self._args)
        self._all.append(worker)
        return worker

    async def start(self) -> None:
        self._idle = asyncio.Queue()
        for _ in range(self._count):
            self._idle.put_nowait(await asyncio.to_thread(self._new_worker))

    async def stop(self) -> None:
        for worker in self._all:
            await asyncio.to_thread(worker.stop)
        self._all.clear()

    async def decode_all(self, blobs: list[tuple[str, memoryview]]) -> np.ndarray:
        """The images of one request, decoded in order, as one uint8 NHWC batch."""
        assert self._idle is not None, "DecoderPool.start() was not awaited"
        worker = await self._idle.get()
        slot = [worker]
        try:
            return await asyncio.to_thread(self._decode_in, slot, blobs)
        finally:
            self._idle.put_nowait(slot[0])

    def _decode_in(self, slot: list[_Worker], blobs: list[tuple[str, memoryview]]) -> np.ndarray:
        images = []
        for name, data in blobs:
            worker = slot[0]
            try:
                worker.conn.send((name, bytes(data)))
                if not worker.conn.poll(self.timeout_s):
                    raise TimeoutError
                status, value = worker.conn.recv()
            except (TimeoutError, EOFError, OSError) as exc:
                # Stopped (or died) mid-decode: a fresh process takes its place.
                self._all.remove(worker)
                worker.stop()
                slot[0] = self._new_worker()
                if isinstance(exc, TimeoutError):
                    raise ImageInputError(
                        f"{name}: decoding took longer than {self.timeout_s:g} s; send it "
                        "smaller or re-encoded (baseline JPEG or PNG)"
                    ) from None
                raise ImageInputError(f"{name}: the image decoder failed on it") from None
            if status == "error":
                raise ImageInputError(value)
            images.append(value)
        return np.stack(images)
