"""Sessions over time: joins, leaves and grace expiry, kept in step between
presence (now) and history.

Each method changes presence first and queues the matching history write in
the same step, so history is written in the order things happened. The
returned awaitable resolves once that write is committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from livesessions.clock import Clock
from livesessions.domain.errors import Unavailable
from livesessions.domain.live import (
    Admission,
    EndedSession,
    JoinOutcome,
    LeaveOutcome,
    PeerPresence,
    Removal,
    RoomKey,
)
from livesessions.domain.ports import History, Presence
from livesessions.logs import context


async def _all(writes: list[Awaitable[None]]) -> None:
    for write in writes:
        await write


log = logging.getLogger(__name__)

SessionEndListener = Callable[[EndedSession], Awaitable[None]]


class SessionKeeper:
    def __init__(self, presence: Presence, history: History, clock: Clock) -> None:
        self.presence = presence
        self.history = history
        self.clock = clock
        # Told of every session that ends, after history has recorded it.
        self.session_end_listeners: list[SessionEndListener] = []
        # False while history cannot take writes (scaled out: PostgreSQL out
        # of reach long enough to fill its buffer): joins are refused then,
        # rather than admitted and lost.
        self.history_writable: Callable[[], bool] = lambda: True

    async def join(self, key: RoomKey, admission: Admission) -> tuple[JoinOutcome, Awaitable[None]]:
        if not self.history_writable() and not admission.internal:
            raise Unavailable("history cannot take writes right now (its database is out of reach); retry shortly")
        now = self.clock()
        outcome = await self.presence.join(key, admission, now)
        writes: list[Awaitable[None]] = []
        if outcome.ended is not None:
            _log_ended(outcome.ended)
            writes.append(self.history.end_sessions([(outcome.ended.session_id, outcome.ended.end_time)]))
            # Not awaited here: the joiner should not wait on the old session's tidying.
            asyncio.get_running_loop().create_task(self._announce([outcome.ended]))
        if outcome.refused is None and not admission.is_bot and outcome.replaced_connection is None:
            assert outcome.session_id is not None
            peer = admission.peer
            if outcome.started_session:
                log.info(
                    "session started",
                    extra=context(
                        project=key.project_id, room=key.room_id, session=outcome.session_id, peer=peer.peer_id
                    ),
                )
            writes.append(self.record_stint(key, outcome, peer, now))
        return outcome, _all(writes)

    def record_stint(self, key: RoomKey, outcome: JoinOutcome, peer: PeerPresence, now: int) -> Awaitable[None]:
        """Queue a peer's stint in the session `outcome` put it in (its start too,
        when that session started with it)."""
        assert outcome.session_id is not None
        return self.history.record_join(
            key.project_id,
            key.room_id,
            outcome.session_id,
            outcome.start_time if outcome.started_session else None,
            peer.peer_id,
            peer.role,
            peer.metadata,
            now,
        )

    async def leave(
        self, key: RoomKey, peer_id: str, connection_id: str, at: int | None = None
    ) -> tuple[LeaveOutcome | None, Awaitable[None]]:
        """`at`: when the member left, if not now (a leave retried later)."""
        now = self.clock() if at is None else at
        outcome = await self.presence.leave(key, peer_id, connection_id, now)
        if outcome is None or outcome.was_bot or outcome.session_id is None:
            return outcome, _all([])
        return outcome, self.history.record_exit(outcome.session_id, peer_id, now)

    async def remove(self, key: RoomKey, peer_id: str) -> tuple[Removal | None, Awaitable[None]]:
        """Take a peer out for the project (moderation): it leaves now."""
        now = self.clock()
        found = await self.presence.remove(key, peer_id, now)
        if found is None:
            return None, _all([])
        removal, outcome = found
        if outcome.session_id is None:
            return removal, _all([])
        return removal, self.history.record_exit(outcome.session_id, peer_id, now)

    async def end_now(self, key: RoomKey) -> tuple[EndedSession | None, list[Removal], Awaitable[None]]:
        """End the room's live session for everyone (moderation): every member
        leaves now, and the session ends now, with no grace."""
        now = self.clock()
        found = await self.presence.end_session(key, now)
        if found is None:
            return None, [], _all([])
        ended, removed = found
        _log_ended(ended)
        writes = [self.history.record_exit(ended.session_id, r.peer_id, now) for r in removed if not r.was_bot]
        writes.append(self.history.end_sessions([(ended.session_id, ended.end_time)]))

        async def recorded() -> None:
            await _all(writes)
            await self._announce([ended])

        return ended, removed, recorded()

    async def update_metadata(
        self, key: RoomKey, peer_id: str, connection_id: str, metadata: str, is_bot: bool
    ) -> tuple[bool, Awaitable[None]]:
        changed = await self.presence.update_metadata(key, peer_id, connection_id, metadata)
        session_id = await self.presence.session_of(key)
        if not changed or is_bot or session_id is None:
            return changed, _all([])
        return True, self.history.record_peer_metadata(session_id, peer_id, metadata)

    async def expire(self) -> int:
        """End the sessions whose grace period ran out; how many ended."""
        ended = await self.presence.expire(self.clock())
        for session in ended:
            _log_ended(session)
        if ended:
            await self.history.end_sessions([(e.session_id, e.end_time) for e in ended])
            await self._announce(ended)
        return len(ended)

    async def _announce(self, ended: list[EndedSession]) -> None:
        for session in ended:
            for listener in self.session_end_listeners:
                try:
                    await listener(session)
                except Exception:
                    log.exception("session end listener failed for %s", session.session_id)

    async def heartbeat(self) -> None:
        """Record that live sessions are still live, for crash recovery."""
        live = await self.presence.live_session_ids()
        if live:
            await self.history.touch_sessions(live, self.clock())


def _log_ended(session: EndedSession) -> None:
    log.info(
        "session ended",
        extra=context(
            project=session.key.project_id,
            room=session.key.room_id,
            session=session.session_id,
            end_time=session.end_time,
        ),
    )
