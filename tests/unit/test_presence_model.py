"""MemoryPresence against a plain model: random joins, leaves, reconnects,
drops and the passing of time across rooms and two projects."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from livesessions.domain.live import Admission, PeerPresence, RoomKey
from livesessions.stores.memory_presence import MemoryPresence

GRACE_MS = 1000
PROJECTS = ("p1", "p2")
ROOMS = ("aaa-aaaa-aaa", "bbb-bbbb-bbb", "ccc-cccc-ccc")
PEERS = tuple(f"peer-{i}" for i in range(6))


_loop = asyncio.new_event_loop()


def run(coro):
    return _loop.run_until_complete(coro)


@dataclass
class ModelRoom:
    peers: dict[str, str] = field(default_factory=dict)  # peer -> connection
    bots: dict[str, str] = field(default_factory=dict)
    session: str | None = None
    start: int = 0
    idle_since: int | None = None


class PresenceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.presence = MemoryPresence(GRACE_MS)
        self.now = 1_000_000
        self.rooms: dict[RoomKey, ModelRoom] = {}
        self.connections = 0
        self.ended: set[str] = set()
        self.seen_sessions: set[str] = set()
        # project -> (listing version, the list then), to check the version
        # moves whenever the list does (callers cache answers by it)
        self.listings: dict[str, tuple[int, list]] = {}

    def _room(self, key: RoomKey) -> ModelRoom:
        return self.rooms.setdefault(key, ModelRoom())

    def _expire_model(self, room: ModelRoom) -> None:
        if room.session and room.idle_since is not None and self.now - room.idle_since >= GRACE_MS:
            self.ended.add(room.session)
            room.session, room.idle_since = None, None

    @rule(
        project=st.sampled_from(PROJECTS),
        room_id=st.sampled_from(ROOMS),
        peer=st.sampled_from(PEERS),
        bot=st.booleans(),
    )
    def join(self, project: str, room_id: str, peer: str, bot: bool) -> None:
        key = RoomKey(project, room_id)
        room = self._room(key)
        self._expire_model(room)
        members, other = (room.bots, room.peers) if bot else (room.peers, room.bots)
        if peer in other:
            return  # one peer id is either a bot or not, as a token fixes it
        self.connections += 1
        conn = f"c{self.connections}"
        role = "bot" if bot else "speaker"
        admission = Admission(PeerPresence(peer, role, "", self.now), {}, conn, room_locked=False)
        outcome = run(self.presence.join(key, admission, self.now))
        assert outcome.refused is None
        replaced = members.get(peer)
        assert outcome.replaced_connection == replaced
        members[peer] = conn
        if bot:
            assert outcome.session_id == room.session
            return
        if room.session is None:
            assert outcome.started_session
            assert outcome.session_id not in self.seen_sessions
            room.session, room.start = outcome.session_id, self.now
            self.seen_sessions.add(room.session)
        else:
            assert not outcome.started_session
            assert outcome.session_id == room.session
        room.idle_since = None
        assert {p.peer_id for p in outcome.peers} == set(room.peers) - {peer}

    def _members(self) -> list[tuple[RoomKey, str, str, bool]]:
        return [
            (key, peer, conn, bot)
            for key, room in self.rooms.items()
            for bot, members in ((False, room.peers), (True, room.bots))
            for peer, conn in members.items()
        ]

    @precondition(lambda self: self._members())
    @rule(data=st.data(), stale=st.booleans())
    def leave_or_drop(self, data: st.DataObject, stale: bool) -> None:
        key, peer, conn, bot = data.draw(st.sampled_from(sorted(self._members(), key=repr)))
        if stale:
            # A replaced connection ending must change nothing.
            assert run(self.presence.leave(key, peer, conn + "-old", self.now)) is None
            return
        outcome = run(self.presence.leave(key, peer, conn, self.now))
        assert outcome is not None and outcome.was_bot == bot
        room = self.rooms[key]
        (room.bots if bot else room.peers).pop(peer)
        if not bot and not room.peers and room.session:
            assert outcome.room_emptied
            room.idle_since = self.now

    @rule(ms=st.sampled_from([1, GRACE_MS - 1, GRACE_MS]) | st.integers(min_value=1, max_value=1500))
    def time_passes(self, ms: int) -> None:
        self.now += ms

    @precondition(lambda self: any(r.idle_since is not None for r in self.rooms.values()))
    @rule(data=st.data(), offset=st.sampled_from([-1, 0]))
    def time_reaches_a_grace_boundary(self, data: st.DataObject, offset: int) -> None:
        idle = sorted(r.idle_since for r in self.rooms.values() if r.idle_since is not None)
        boundary = data.draw(st.sampled_from(idle)) + GRACE_MS + offset
        self.now = max(self.now, boundary)

    @rule()
    def expire(self) -> None:
        ended = run(self.presence.expire(self.now))
        expected = set()
        for room in self.rooms.values():
            before = room.session
            self._expire_model(room)
            if before and room.session is None:
                expected.add(before)
        assert {e.session_id for e in ended} == expected

    @invariant()
    def live_sessions_match_the_model(self) -> None:
        for project in PROJECTS:
            expected = sorted(
                (
                    (room.start, key.room_id, len(room.peers))
                    for key, room in self.rooms.items()
                    if key.project_id == project and room.peers
                ),
            )
            listed = run(self.presence.live_sessions(project))
            assert [(s.start_time, s.room_id, s.current_peer_count) for s in listed] == expected
            version = run(self.presence.listing_version(project))
            shown = [
                (s.room_id, s.start_time, s.current_peer_count, s.recording_count, s.livestream_count) for s in listed
            ]
            previous = self.listings.get(project)
            if previous is not None and previous[1] != shown:
                assert version != previous[0], "the list changed but its version did not"
            self.listings[project] = (version, shown)
            for _start, room_id, count in expected:
                single = run(self.presence.live_session(RoomKey(project, room_id)))
                assert single is not None and single.current_peer_count == count
            # Paging with a cursor yields the same list.
            paged, after = [], None
            while True:
                page = run(self.presence.live_sessions(project, after, 2))
                paged += page
                if len(page) < 2:
                    break
                after = (page[-1].start_time, page[-1].room_id)
            assert paged == listed

    @invariant()
    def quiet_rooms_are_not_live(self) -> None:
        for key, room in self.rooms.items():
            if not room.peers:
                assert run(self.presence.live_session(key)) is None
                assert run(self.presence.peers(key)) is None


TestPresenceModel = PresenceMachine.TestCase
TestPresenceModel.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
