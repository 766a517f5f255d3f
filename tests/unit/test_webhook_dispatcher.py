"""The webhook dispatcher's loop (livesessions.webhooks.dispatcher)."""

from __future__ import annotations

import asyncio
from typing import Any

from livesessions.webhooks.dispatcher import Dispatcher
from livesessions.webhooks.sealing import Sealer


class StuckRegistry:
    """Something is always due, and nothing can be claimed (every due
    delivery's webhook is at its limit, or another node holds it)."""

    def __init__(self) -> None:
        self.asked = 0
        self.claims = 0

    async def next_delivery_at(self) -> int:
        self.asked += 1
        return 0

    async def claim_deliveries(self, *args: Any) -> list[Any]:
        self.claims += 1
        return []


def test_when_nothing_due_can_be_claimed_it_waits_instead_of_spinning() -> None:
    async def scenario() -> tuple[int, int]:
        registry = StuckRegistry()
        dispatcher = Dispatcher(registry, Sealer(bytes(32)), lambda: 1000, 60_000, False)  # type: ignore[arg-type]
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        beat = asyncio.create_task(ticker())
        dispatcher.start()
        await asyncio.sleep(0.5)
        await dispatcher.stop()
        beat.cancel()
        return registry.claims, ticks

    claims, ticks = asyncio.run(scenario())
    assert claims <= 2  # then it waits to be woken (or the idle poll)
    assert ticks >= 20  # and the loop stayed free
