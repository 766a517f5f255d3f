"""Presence for a single node: who is in which room right now, in memory.

Every method runs to completion without awaiting, so on one event loop each
join or leave is atomic, and a GET that runs after it sees all of it.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from livesessions.domain.ids import new_session_id
from livesessions.domain.live import (
    Admission,
    EndedSession,
    JoinOutcome,
    LeaveOutcome,
    LiveSession,
    PeerPresence,
    Refusal,
    Removal,
    RoomKey,
)
from livesessions.stores.live_index import LiveIndex


@dataclass(slots=True)
class _Member:
    peer: PeerPresence
    connection_id: str


@dataclass(slots=True)
class _Room:
    peers: dict[str, _Member] = field(default_factory=dict)
    bots: dict[str, _Member] = field(default_factory=dict)
    session_id: str | None = None
    start_time: int = 0
    # Time of the last non-bot leave while the session waits out its grace.
    idle_since: int | None = None
    # Locked for the rest of this session by an admin's token option.
    session_locked: bool = False
    # What the Live Sessions API shows while the room is listed, kept up to
    # date in place so a GET only collects these.
    item: LiveSession | None = None


class MemoryPresence:
    def __init__(self, grace_period_ms: int) -> None:
        self._grace_ms = grace_period_ms
        self._rooms: dict[RoomKey, _Room] = {}
        # Each project's listed rooms, oldest session first.
        self._listed: dict[str, LiveIndex] = {}
        # Rooms waiting out their grace, soonest idle first: (idle since, a
        # tie-breaker, room). An entry whose room has been rejoined (or went
        # idle again later) is stale and skipped when it comes up.
        self._idle: list[tuple[int, int, RoomKey]] = []
        self._idle_count = itertools.count()
        # Bumped on every change a project's list could show.
        self._versions: dict[str, int] = {}

    async def ping(self) -> None:
        """In this process: always there."""

    # --- joins and leaves -------------------------------------------------

    async def join(self, key: RoomKey, admission: Admission, now: int) -> JoinOutcome:
        room = self._rooms.get(key)
        if room is None:
            room = self._rooms[key] = _Room()
        outcome = JoinOutcome()
        if self._grace_over(room, now):
            outcome.ended = self._end_session(key, room)

        peer_id = admission.peer.peer_id
        members = room.bots if admission.is_bot else room.peers
        previous = members.get(peer_id)
        if previous is None and not admission.internal:
            locked = admission.room_locked or room.session_locked
            # A bot takes no peer's place, but it may not slip into a room
            # its token says is full: for bots every member counts.
            members_counted = len(room.peers) + (len(room.bots) if admission.is_bot else 0)
            if locked and not admission.is_admin:
                outcome.refused = Refusal.LOCKED
            elif admission.max_peers is not None and members_counted >= admission.max_peers:
                outcome.refused = Refusal.FULL
            if outcome.refused:
                self._forget_if_unused(key, room)
                return outcome

        if previous is not None:
            outcome.replaced_connection = previous.connection_id
            # The peer never left: it keeps its place and its join time.
            peer = PeerPresence(
                peer_id=peer_id,
                role=admission.peer.role,
                metadata=admission.peer.metadata,
                join_time=previous.peer.join_time,
            )
        else:
            peer = admission.peer
        members[peer_id] = _Member(peer, admission.connection_id)

        if not admission.is_bot:
            if room.session_id is None:
                room.session_id = new_session_id()
                room.start_time = now
                room.item = LiveSession(key.room_id, now, 0, 0, 0)
                room.session_locked = False
                outcome.started_session = True
            assert room.item is not None
            if room.idle_since is not None or outcome.started_session:
                room.idle_since = None
                self._listed.setdefault(key.project_id, LiveIndex()).add((room.start_time, key.room_id, room.item))
            room.item.current_peer_count = len(room.peers)
            self._changed(key, room)
            if admission.lock_room and admission.is_admin:
                room.session_locked = True

        outcome.session_id = room.session_id
        outcome.start_time = room.start_time if room.session_id else None
        outcome.peers = [m.peer for pid, m in room.peers.items() if pid != peer_id]
        return outcome

    async def leave(self, key: RoomKey, peer_id: str, connection_id: str, now: int) -> LeaveOutcome | None:
        """Take the peer out, unless another connection has replaced this one."""
        room = self._rooms.get(key)
        if room is None:
            return None
        for members, was_bot in ((room.peers, False), (room.bots, True)):  # noqa: B007 - read after the loop
            member = members.get(peer_id)
            if member is not None and member.connection_id == connection_id:
                break
        else:
            return None
        del members[peer_id]
        emptied = not was_bot and not room.peers
        if not was_bot and room.item is not None:
            room.item.current_peer_count = len(room.peers)
            self._changed(key, room)
        if emptied and room.session_id is not None:
            self._unlist(key, room)
            room.idle_since = now
            heapq.heappush(self._idle, (now, next(self._idle_count), key))
        outcome = LeaveOutcome(session_id=room.session_id, was_bot=was_bot, room_emptied=emptied)
        self._forget_if_unused(key, room)
        return outcome

    async def remove(self, key: RoomKey, peer_id: str, now: int) -> tuple[Removal, LeaveOutcome] | None:
        room = self._rooms.get(key)
        member = room.peers.get(peer_id) if room is not None else None
        if member is None:
            return None
        outcome = await self.leave(key, peer_id, member.connection_id, now)
        assert outcome is not None
        return Removal(peer_id, member.connection_id, was_bot=False), outcome

    async def end_session(self, key: RoomKey, now: int) -> tuple[EndedSession, list[Removal]] | None:
        room = self._rooms.get(key)
        if room is None or not room.peers or room.session_id is None:
            return None
        removed = [
            Removal(peer_id, member.connection_id, was_bot)
            for members, was_bot in ((room.peers, False), (room.bots, True))
            for peer_id, member in list(members.items())
        ]
        for removal in removed:
            await self.leave(key, removal.peer_id, removal.connection_id, now)
        # The last leave made the room idle as of now: it ends without its grace.
        ended = self._end_session(key, room)
        self._forget_if_unused(key, room)
        return ended, removed

    async def update_metadata(self, key: RoomKey, peer_id: str, connection_id: str, metadata: str) -> bool:
        room = self._rooms.get(key)
        member = room and (room.peers.get(peer_id) or room.bots.get(peer_id))
        if not member or member.connection_id != connection_id:
            return False
        member.peer.metadata = metadata
        return True

    async def expire(self, now: int) -> list[EndedSession]:
        """End every session whose grace period is over."""
        ended = []
        # Only the rooms that are due are looked at, not every idle room.
        while self._idle and now - self._idle[0][0] >= self._grace_ms:
            since, _, key = heapq.heappop(self._idle)
            room = self._rooms.get(key)
            if room is not None and room.idle_since == since and self._grace_over(room, now):
                ended.append(self._end_session(key, room))
                self._forget_if_unused(key, room)
        return ended

    async def count_egress(self, key: RoomKey, kind: str) -> bool:
        """Count a recording or livestream started in the room's live session."""
        room = self._rooms.get(key)
        if room is None or room.item is None or room.idle_since is not None:
            return False
        if kind == "livestream":
            room.item.livestream_count += 1
        else:
            room.item.recording_count += 1
        self._changed(key, room)
        return True

    # --- reads ------------------------------------------------------------

    async def live_sessions(
        self, project_id: str, after: tuple[int, str] | None = None, limit: int | None = None
    ) -> list[LiveSession]:
        listed = self._listed.get(project_id)
        return [] if listed is None else listed.page(after, limit)

    async def live_sessions_json(self, project_id: str) -> list[bytes]:
        listed = self._listed.get(project_id)
        return [b"[]"] if listed is None else listed.json()

    async def listing_version(self, project_id: str) -> int:
        return self._versions.get(project_id, 0)

    async def live_session(self, key: RoomKey) -> LiveSession | None:
        room = self._rooms.get(key)
        if room is None or not room.peers:
            return None
        return room.item

    async def session_of(self, key: RoomKey) -> str | None:
        """The id of the room's live session, if it has peers right now."""
        room = self._rooms.get(key)
        return room.session_id if room is not None and room.peers else None

    async def peers(self, key: RoomKey) -> list[PeerPresence] | None:
        room = self._rooms.get(key)
        if room is None or not room.peers:
            return None
        return [m.peer for m in room.peers.values()]

    async def live_session_ids(self) -> list[str]:
        """Sessions with peers in them now (not those waiting out their grace)."""
        return [r.session_id for r in self._rooms.values() if r.session_id is not None and r.peers]

    async def totals(self) -> tuple[int, int]:
        """(live rooms, peers in them) across every project."""
        rooms = sum(len(listed) for listed in self._listed.values())
        return rooms, sum(item.current_peer_count for listed in self._listed.values() for item in listed)

    # --- internals --------------------------------------------------------

    def _changed(self, key: RoomKey, room: _Room) -> None:
        """The room's item changed: its project's list did too."""
        self._versions[key.project_id] = self._versions.get(key.project_id, 0) + 1
        listed = self._listed.get(key.project_id)
        if listed is not None:
            listed.changed((room.start_time, key.room_id))

    def _grace_over(self, room: _Room, now: int) -> bool:
        return room.idle_since is not None and now - room.idle_since >= self._grace_ms

    def _end_session(self, key: RoomKey, room: _Room) -> EndedSession:
        assert room.session_id is not None and room.idle_since is not None
        ended = EndedSession(key=key, session_id=room.session_id, end_time=room.idle_since)
        room.session_id = None
        room.item = None
        room.idle_since = None
        room.session_locked = False
        return ended

    def _unlist(self, key: RoomKey, room: _Room) -> None:
        listed = self._listed[key.project_id]
        listed.remove((room.start_time, key.room_id))
        if not listed:
            del self._listed[key.project_id]

    def _forget_if_unused(self, key: RoomKey, room: _Room) -> None:
        if not room.peers and not room.bots and room.session_id is None:
            self._rooms.pop(key, None)
