"""The byte budget that bounds request bodies (refused at once) and decodes (they wait)."""

from __future__ import annotations

import asyncio

from oaml.serving.budget import ByteBudget


def test_try_take_refuses_past_the_limit_and_takes_nothing_then():
    budget = ByteBudget(100)
    assert budget.try_take(60) and not budget.try_take(41) and budget.used == 60
    budget.give_back(60)
    assert budget.try_take(100) and budget.used == 100


def test_reserve_waits_for_bytes_given_back_and_caps_a_request_at_the_limit():
    order: list[str] = []

    async def hold(budget: ByteBudget, name: str, n: int, seconds: float) -> None:
        async with budget.reserve(n):
            order.append(f"{name} in ({budget.used})")
            await asyncio.sleep(seconds)
        order.append(f"{name} out")

    async def main():
        budget = ByteBudget(100)
        first = asyncio.create_task(hold(budget, "a", 70, 0.05))
        await asyncio.sleep(0)
        # b waits for a; c wants more than the whole budget: it runs alone, never forever.
        await asyncio.gather(first, hold(budget, "b", 50, 0), hold(budget, "c", 500, 0))
        return budget.used

    assert asyncio.run(main()) == 0
    assert order[:2] == ["a in (70)", "a out"]
    assert sorted(order[2:]) == ["b in (50)", "b out", "c in (100)", "c out"]
