"""A budget of bytes shared by the requests of one event loop: what bounds the server's memory.

Request bodies take from it or are refused at once (503); image decodes wait for their share.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ByteBudget:
    """`limit` bytes to hand out; used only from the event loop's thread."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used, self._waiting = limit, 0, 0
        self._freed = asyncio.Condition()

    def try_take(self, n: int) -> bool:
        """Take `n` bytes now if they are free; False (nothing taken) otherwise."""
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give_back(self, n: int) -> None:
        self.used -= n
        if self._waiting:  # no task to schedule when nobody waits (every request body ends here)
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._freed:
            self._freed.notify_all()

    @asynccontextmanager
    async def reserve(self, n: int) -> AsyncIterator[None]:
        """Hold `n` bytes (at most `limit`) for the block, waiting until they are free."""
        n = min(n, self.limit)
        self._waiting += 1
        try:
            async with self._freed:
                await self._freed.wait_for(lambda: self.try_take(n))
        finally:
            self._waiting -= 1
        try:
            yield
        finally:
            self.give_back(n)
