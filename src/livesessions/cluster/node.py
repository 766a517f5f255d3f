"""This node's life among the others: its lease in Redis, the nodes that died,
and Redis coming back empty.

Every `lease / 5` seconds the node renews its lease and reaps the members of
every node whose lease ran out (each departure is taken by exactly one
surviving node: it records the exit in history at the time that node was last
known alive; presence publishes the peer-left). A node that finds its own
lease gone (it was cut off long enough to be reaped) or Redis empty takes a
new id and puts back only the connections it still really holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from livesessions.clock import Clock
from livesessions.domain.ports import History
from livesessions.realtime.hub import Connection
from livesessions.realtime.membership import Membership
from livesessions.realtime.protocol import REFUSAL_CLOSE, CloseCode
from livesessions.stores.redis_presence import Departure, HeldConnection, Lease, RedisPresence, Restored
from livesessions.telemetry import Telemetry

log = logging.getLogger(__name__)

BotDeparted = Callable[[Departure], Awaitable[None]]


class OrphanedSessions(Protocol):
    async def close_orphaned_sessions(self, known: list[str], stale_before: int) -> int: ...


class NodeKeeper:
    def __init__(
        self,
        presence: RedisPresence,
        membership: Membership,
        history: History,
        clock: Clock,
        telemetry: Telemetry,
        lease_s: float,
        orphans: OrphanedSessions | None = None,
        orphan_age_s: float = 60.0,
    ) -> None:
        self.presence = presence
        self.membership = membership
        self.history = history
        self.clock = clock
        self.telemetry = telemetry
        self.interval = lease_s / 5
        self.lease_s = lease_s
        self._unknown_since: dict[str, float] = {}
        self._must_reregister = False
        # Sessions open in history that no node holds any more (their nodes
        # died while Redis lost its data): closed once this stale.
        self._orphans = orphans
        self._orphan_age_ms = int(orphan_age_s * 1000)
        self._next_orphan_sweep = 0.0
        # Told of each bot (a recording's or livestream's) of a dead node.
        self.bot_departed: list[BotDeparted] = []
        self._task: asyncio.Task[None] | None = None
        self._last_failure_log = 0.0

    async def start(self) -> None:
        await self.presence.heartbeat(self.clock())
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop renewing, and give up the lease (call after the node's
        connections have left: what remains is reaped by the others)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.presence.deregister()
        except Exception:  # noqa: BLE001 - the others reap it when the lease runs out
            log.warning("could not give up this node's lease; the other nodes reap it when it runs out")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except Exception:
                now = time.monotonic()
                if now - self._last_failure_log > 10:
                    self._last_failure_log = now
                    log.warning("node heartbeat failed (is Redis reachable?)", exc_info=True)

    async def beat(self) -> None:
        lease = await self.presence.heartbeat(self.clock())
        if lease in (Lease.LOST, Lease.EMPTIED):
            log.warning(
                "this node's presence was lost; putting back the connections it holds",
                extra={"why": lease.value, "node": self.presence.node_id},
            )
            # Until it has worked: the next heartbeat renews the new lease and
            # would not say again that anything was lost.
            self._must_reregister = True
        if self._must_reregister:
            await self.reregister()
            self._must_reregister = False
        await self.reap()
        await self.membership.retry_departures()
        await self.settle_unknown_sessions()
        if self._orphans is not None and time.monotonic() >= self._next_orphan_sweep:
            self._next_orphan_sweep = time.monotonic() + self._orphan_age_ms / 4000
            now = self.clock()
            closed = await self._orphans.close_orphaned_sessions(
                await self.presence.live_session_ids(), now - self._orphan_age_ms
            )
            if closed:
                log.info("closed sessions no node holds any more", extra={"count": closed})

    async def settle_unknown_sessions(self) -> None:
        """End the sessions left by leaves presence could not hear of, once
        every node has had a lease period to put back what it holds: those
        still unknown then have nobody in them."""
        waiting = self.membership.sessions_left_unknown
        now = time.monotonic()
        for session_id, (key, left_at) in list(waiting.items()):
            if now < self._unknown_since.setdefault(session_id, now) + self.lease_s:
                continue
            del waiting[session_id], self._unknown_since[session_id]
            if await self.presence.end_unknown_session(key, session_id, left_at):
                log.info("ended a session left while Redis was out of reach", extra={"session": session_id})
                await self.history.end_sessions([(session_id, left_at)])

    async def reap(self) -> None:
        departures = await self.presence.reap_dead_nodes(self.clock())
        if not departures:
            return
        self.telemetry.reaped.inc(len(departures))
        log.info("took out the members of dead nodes", extra={"count": len(departures)})
        # Every exit queued first: these members are out of Redis already,
        # and this node alone was handed them.
        writes = [
            self.history.record_exit(d.outcome.session_id, d.peer_id, d.left_at)
            for d in departures
            if not d.outcome.was_bot and d.outcome.session_id is not None
        ]
        for departure in departures:
            if departure.outcome.was_bot:
                for listener in self.bot_departed:
                    try:
                        await listener(departure)
                    except Exception:
                        log.exception("finishing a dead node's job failed", extra={"peer": departure.peer_id})
        for write in writes:
            await write

    async def reregister(self) -> None:
        held = [c for c in self.membership.hub.connections() if c.admission is not None and not c.closing]
        now = self.clock()
        restored = await self.presence.reregister(
            [HeldConnection(c.key, c.admission, c.session_id, c.session_start) for c in held if c.admission], now
        )
        by_id = {c.id: c for c in held}
        writes = []
        for result in restored:
            connection = by_id[result.connection.admission.connection_id]
            writes.extend(self._settle(connection, result, now))
        for write in writes:
            await write

    def _settle(self, connection: Connection, result: Restored, now: int) -> list[Awaitable[None]]:
        outcome = result.outcome
        if result.status == "superseded":
            connection.close(CloseCode.REPLACED, "replaced by a newer connection of the same peer")
            return []
        if result.status == "full":
            connection.close(*REFUSAL_CLOSE[outcome.refused] if outcome.refused else (CloseCode.FULL, "room is full"))
            return []
        writes: list[Awaitable[None]] = []
        if outcome.ended is not None:
            writes.append(self.history.end_sessions([(outcome.ended.session_id, outcome.ended.end_time)]))
        admission = connection.admission
        if admission is None or admission.is_bot or result.status == "present":
            return writes
        # Rejoined; or put back into a session other than the one it was in
        # (that one ended meanwhile, or a join on another node started a new
        # one first): a stint of its own in the session it is in now.
        if result.status == "rejoined" or outcome.started_session or outcome.session_id != connection.session_id:
            connection.session_id, connection.session_start = outcome.session_id, outcome.start_time
            writes.append(self.membership.keeper.record_stint(connection.key, outcome, admission.peer, now))
        return writes
