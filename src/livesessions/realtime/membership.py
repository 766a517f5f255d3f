"""Entering and leaving a room, for any member: a peer's WebSocket or one of
the service's own bots (the recorder, the livestream).

Entering is one step on the event loop: presence admits the member, its
connection is registered, `joined` is queued to it and `peer-joined` to the
others, with no await in between, so no other join or leave can slip through
the middle and leave someone unaware of someone else.
"""

from __future__ import annotations

from collections.abc import Awaitable

from livesessions.domain.live import Admission, JoinOutcome
from livesessions.domain.permissions import ROLES
from livesessions.domain.sessions import SessionKeeper
from livesessions.realtime import protocol
from livesessions.realtime.hub import Connection, Hub
from livesessions.realtime.protocol import CloseCode
from livesessions.telemetry import Telemetry


class Membership:
    def __init__(self, keeper: SessionKeeper, hub: Hub, telemetry: Telemetry) -> None:
        self.keeper = keeper
        self.hub = hub
        self.telemetry = telemetry

    async def enter(self, connection: Connection, admission: Admission) -> tuple[JoinOutcome, Awaitable[None]]:
        """Admit the member; the awaitable resolves once history has the join."""
        key = connection.key
        outcome, persisted = await self.keeper.join(key, admission)
        if outcome.refused is not None:
            return outcome, persisted
        self.telemetry.joins.labels(connection.role if connection.role in ROLES else "custom").inc()
        replaced = self.hub.add(connection)
        if replaced is not None:
            replaced.close(CloseCode.REPLACED, "replaced by a newer connection of the same peer")
        connection.push(protocol.Joined(key.room_id, outcome.session_id, connection.peer_id, outcome.peers))
        if not connection.is_bot and outcome.replaced_connection is None:
            self.hub.broadcast(key, protocol.PeerJoined(admission.peer), exclude=connection.peer_id)
        return outcome, persisted

    async def depart(self, connection: Connection) -> None:
        """Take the member out of the room (once) and tell the others."""
        outcome, persisted = await self.keeper.leave(connection.key, connection.peer_id, connection.id)
        removed = self.hub.remove(connection)
        if outcome is not None:
            self.telemetry.leaves.inc()
        if removed and outcome is not None and not outcome.was_bot:
            self.hub.broadcast(connection.key, protocol.PeerLeft(connection.peer_id))
        await persisted
