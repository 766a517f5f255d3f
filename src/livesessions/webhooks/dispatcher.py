"""The dispatcher: sends queued webhook deliveries, each room's in order.

It claims due deliveries from the store (each the oldest undelivered event
of its webhook and room, claimed for a lease so that, scaled out, one node
sends it at a time), sends each in a task of its own, and records what came
back. A room waits only for its own head; a slow endpoint holds at most
PER_ENDPOINT_CONCURRENCY of this node's places; nothing here runs on a
join's or a read's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from cryptography.exceptions import InvalidTag

from livesessions.clock import Clock
from livesessions.domain.events import delivery_body
from livesessions.domain.ports import WebhookRegistry
from livesessions.domain.webhooks import (
    CLAIM_LEASE_MS,
    PER_ENDPOINT_CONCURRENCY,
    AttemptResult,
    Delivery,
    settle,
)
from livesessions.logs import context
from livesessions.webhooks import sender
from livesessions.webhooks.sealing import Sealer
from livesessions.webhooks.targets import TargetRefused, parse, resolve

log = logging.getLogger(__name__)

# Attempts in flight on this node, over all endpoints.
MAX_IN_FLIGHT = 64
# Looked again this often even when not woken: another node's retries and
# claims that ran out are noticed no later than this.
IDLE_POLL_S = 2.0
# How long stopping waits for the loop and attempts under way.
STOP_WAIT_S = 5.0


class Dispatcher:
    def __init__(
        self,
        registry: WebhookRegistry,
        sealer: Sealer,
        clock: Clock,
        retry_for_ms: int,
        allow_private: bool,
        observe: Callable[[str], None] = lambda outcome: None,
    ) -> None:
        self.registry = registry
        self.sealer = sealer
        self.clock = clock
        self.retry_for_ms = retry_for_ms
        self.allow_private = allow_private
        # Told each attempt's outcome (a metric).
        self.observe = observe
        self._wake = asyncio.Event()
        self._in_flight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._stopping = False

    def wake(self, *_: object) -> None:
        """Look for due deliveries now (new events were queued)."""
        self._wake.set()

    def start(self) -> None:
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        """Stop claiming; attempts under way are abandoned (their claims run
        out and they are sent again: at-least-once). The loop is asked to end
        rather than cancelled: cancelling a database call half-way can leave
        its connection to be reset while the pool is closing."""
        self._stopping = True
        self._wake.set()
        if self._runner is not None:
            _, late = await asyncio.wait({self._runner}, timeout=STOP_WAIT_S)
            for task in late:
                task.cancel()
                await asyncio.wait({task}, timeout=STOP_WAIT_S)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_WAIT_S)
        self._runner = None

    async def _run(self) -> None:
        while not self._stopping:
            try:
                # A read first: most wakes (an event committed with no
                # webhook wanting it) find nothing due, and a claim is a
                # write on the store's writer, which joins and leaves share.
                due = await self.registry.next_delivery_at()
                claimed = 0
                if due is not None and due <= self.clock():
                    claimed = await self._dispatch_due()
                    due = await self.registry.next_delivery_at()
                delay = self._delay_until(due)
                if claimed == 0 and delay <= 0:
                    # Due, but nothing could be claimed: every due head's
                    # webhook is at its limit (or another node has it). An
                    # attempt that ends wakes this; never spin meanwhile.
                    delay = IDLE_POLL_S
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook dispatch failed; trying again shortly")
                delay = IDLE_POLL_S
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()

    def _delay_until(self, due: int | None) -> float:
        if due is None:
            return IDLE_POLL_S
        return min(IDLE_POLL_S, max(0.0, (due - self.clock()) / 1000))

    async def _dispatch_due(self) -> int:
        """Claim what is due and start sending it; how many."""
        free = MAX_IN_FLIGHT - len(self._tasks)
        if free <= 0:
            return 0
        room_for = {hook: PER_ENDPOINT_CONCURRENCY - busy for hook, busy in self._in_flight.items()}
        claimed = await self.registry.claim_deliveries(
            self.clock(), CLAIM_LEASE_MS, room_for, PER_ENDPOINT_CONCURRENCY, free
        )
        for delivery in claimed:
            self._in_flight[delivery.webhook_id] = self._in_flight.get(delivery.webhook_id, 0) + 1
            task = asyncio.get_running_loop().create_task(self._deliver(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(claimed)

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            result = await self.attempt(delivery)
            now = self.clock()
            settled = settle(delivery, result, now, self.retry_for_ms)
            self.observe(settled.outcome)
            if settled.outcome != "delivered":
                log.info(
                    "webhook attempt failed",
                    extra=context(
                        webhook=delivery.webhook_id,
                        event=delivery.event_id,
                        attempt=delivery.attempt,
                        outcome=settled.outcome,
                        error=settled.error,
                    ),
                )
            await self.registry.settle_delivery(delivery, result, settled, now)
        except Exception:
            # Left claimed: sent again once the claim runs out.
            log.exception("recording a webhook attempt failed", extra=context(webhook=delivery.webhook_id))
        finally:
            left = self._in_flight.get(delivery.webhook_id, 1) - 1
            if left > 0:
                self._in_flight[delivery.webhook_id] = left
            else:
                self._in_flight.pop(delivery.webhook_id, None)
            self._wake.set()

    async def attempt(self, delivery: Delivery) -> AttemptResult:
        """Sign and send one delivery (the target checked again first)."""
        try:
            api_key = self.sealer.open(delivery.sealed_key, delivery.webhook_id)
        except (InvalidTag, ValueError):
            return AttemptResult(None, "the signing key cannot be unsealed (was the sealing secret replaced?)")
        try:
            target = parse(delivery.url)
            addresses = await resolve(target, self.allow_private)
        except TargetRefused as exc:
            return AttemptResult(None, f"refused: {exc}")
        body = delivery_body(delivery.event_id, delivery.event, delivery.payload)
        headers = [
            ("huddle01-signature", sender.signature_header(api_key, delivery.event_id, self.clock(), body)),
            ("x-livesessions-event-id", delivery.event_id),
            ("x-livesessions-sequence", str(delivery.room_seq)),
        ]
        return await sender.post(target, addresses[0], headers, body.encode())
