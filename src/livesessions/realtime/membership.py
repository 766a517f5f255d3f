"""Entering and leaving a room, for any member: a peer's WebSocket or one of
the service's own bots (the recorder, the livestream).

Entering is one step on the event loop: presence admits the member, its
connection is registered, `joined` is queued to it and `peer-joined` to the
others, with no await in between, so no other join or leave can slip through
the middle and leave someone unaware of someone else.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from livesessions.domain.live import Admission, JoinOutcome, RoomKey
from livesessions.domain.permissions import ROLES
from livesessions.domain.sessions import SessionKeeper
from livesessions.logs import context
from livesessions.realtime import protocol
from livesessions.realtime.fanout import Fanout
from livesessions.realtime.hub import Connection
from livesessions.realtime.protocol import CloseCode
from livesessions.telemetry import Telemetry

log = logging.getLogger(__name__)


class Membership:
    def __init__(self, keeper: SessionKeeper, fanout: Fanout, telemetry: Telemetry) -> None:
        self.keeper = keeper
        self.fanout = fanout
        self.hub = fanout.hub
        self.telemetry = telemetry
        # Scaled out: departures presence could not take (Redis unreachable),
        # with when they happened, retried until it can, so that no member
        # outlives its connection.
        self.unfinished_departures: dict[Connection, int] = {}
        # Sessions whose last known peer left while presence could not hear
        # of it, and that presence no longer knows: (room, session, left at).
        # Ended once every node had the time to put back what it holds.
        self.sessions_left_unknown: dict[str, tuple[RoomKey, int]] = {}

    async def enter(self, connection: Connection, admission: Admission) -> tuple[JoinOutcome, Awaitable[None]]:
        """Admit the member; the awaitable resolves once history has the join."""
        key = connection.key
        outcome, persisted = await self.keeper.join(key, admission)
        if outcome.refused is not None:
            return outcome, persisted
        self.telemetry.joins.labels(connection.role if connection.role in ROLES else "custom").inc()
        connection.admission = admission
        connection.session_id, connection.session_start = outcome.session_id, outcome.start_time
        connection.push(protocol.Joined(key.room_id, outcome.session_id, connection.peer_id, outcome.peers))
        replaced = self.fanout.attach(connection, outcome)
        if replaced is not None:
            replaced.close(CloseCode.REPLACED, "replaced by a newer connection of the same peer")
        if not connection.is_bot and outcome.replaced_connection is None:
            self.fanout.peer_joined(key, admission.peer)
        return outcome, persisted

    async def depart(self, connection: Connection) -> None:
        """Take the member out of the room (once) and tell the others."""
        try:
            outcome, persisted = await self.keeper.leave(connection.key, connection.peer_id, connection.id)
        except Exception:
            # Presence is out of reach (scaled out): the connection is gone
            # all the same, and its leave is retried until presence takes it.
            log.warning(
                "a leave could not be recorded in presence; retrying",
                extra=context(project=connection.key.project_id, room=connection.key.room_id, peer=connection.peer_id),
                exc_info=True,
            )
            self.fanout.detach(connection)
            self.unfinished_departures.setdefault(connection, self.keeper.clock())
            return
        removed = self.fanout.detach(connection)
        if outcome is not None:
            self.telemetry.leaves.inc()
        if removed and outcome is not None and not outcome.was_bot:
            self.fanout.peer_left(connection.key, connection.peer_id)
        try:
            await persisted
        except Exception:  # the member has left; its history write is another matter
            log.warning(
                "a leave is not committed to history yet (its database is slow or out of reach)",
                extra=context(project=connection.key.project_id, room=connection.key.room_id, peer=connection.peer_id),
                exc_info=True,
            )

    async def remove(self, key: RoomKey, peer_id: str) -> bool:
        """Take a peer out for the project (moderation): its connection is
        closed (4011) wherever it is; False when it is not in the room."""
        removal, persisted = await self.keeper.remove(key, peer_id)
        if removal is None:
            await persisted
            return False
        self.telemetry.leaves.inc()
        self.fanout.evicted(key, removal, "removed")
        await persisted
        return True

    async def end_session(self, key: RoomKey) -> bool:
        """End the room's live session for everyone (moderation): every
        connection closed (4010), the session over now; False when not live."""
        ended, removed, persisted = await self.keeper.end_now(key)
        if ended is None:
            await persisted
            return False
        for removal in removed:
            self.telemetry.leaves.inc()
            self.fanout.evicted(key, removal, "ended")
        await persisted
        return True

    async def retry_departures(self) -> None:
        """Take out the members whose leave presence could not take before,
        as of when they left."""
        for connection, left_at in list(self.unfinished_departures.items()):
            key, peer_id = connection.key, connection.peer_id
            outcome, persisted = await self.keeper.leave(key, peer_id, connection.id, at=left_at)
            del self.unfinished_departures[connection]
            if outcome is not None:
                self.telemetry.leaves.inc()
                if not outcome.was_bot:
                    self.fanout.peer_left(key, peer_id)
            elif not connection.is_bot and connection.session_id is not None:
                # Presence no longer holds it (Redis lost its data meanwhile,
                # or this node was reaped): history still needs its exit,
                # unless the peer is back in the room on a connection of its own.
                present = await self.keeper.presence.peers(key) or []
                if all(peer.peer_id != peer_id for peer in present):
                    persisted = self.keeper.history.record_exit(connection.session_id, peer_id, left_at)
                    await self.fanout.peer_gone(key, peer_id, connection.id, connection.session_id, left_at)
                    if await self.keeper.presence.session_of(key) != connection.session_id:
                        _, last = self.sessions_left_unknown.get(connection.session_id, (key, left_at))
                        self.sessions_left_unknown[connection.session_id] = (key, max(last, left_at))
            await persisted
