"""Presence against a plain model: random joins (some refused: full or locked
rooms), leaves, reconnects, drops, metadata changes, egress counts and the
passing of time across rooms and two projects.

The same machine runs against MemoryPresence and against RedisPresence, the
latter as two nodes on one Redis (each step goes through either node: every
answer must be the same whichever node gives it). Redis is a redis-server this
process starts (see test_redis_presence.py), flushed before each example; the
Redis case skips without redis-server unless LIVESESSIONS_REQUIRE_SERVICES or
CI is set.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from redis.asyncio import Redis
from test_redis_presence import needs_redis, redis_server

from livesessions.domain.live import Admission, PeerPresence, Refusal, RoomKey
from livesessions.stores.memory_presence import MemoryPresence
from livesessions.stores.redis_presence import RedisPresence

GRACE_MS = 1000
PROJECTS = ("p1", "p2")
ROOMS = ("aaa-aaaa-aaa", "bbb-bbbb-bbb", "ccc-cccc-ccc")
PEERS = tuple(f"peer-{i}" for i in range(6))
METADATA = ("", '{"name":"Ada"}', 'é/\\"\x00\x1f{')


_loop = asyncio.new_event_loop()


def run(coro):
    return _loop.run_until_complete(coro)


@dataclass
class Member:
    conn: str
    role: str
    metadata: str
    join_time: int


@dataclass
class ModelRoom:
    peers: dict[str, Member] = field(default_factory=dict)
    bots: dict[str, Member] = field(default_factory=dict)
    session: str | None = None
    start: int = 0
    idle_since: int | None = None
    locked: bool = False  # for the rest of the session, by an admin's token
    livestreams: int = 0
    recordings: int = 0


class PresenceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[Any] = self.make_nodes()
        self.now = 1_000_000
        self.rooms: dict[RoomKey, ModelRoom] = {}
        self.connections = 0
        self.ended: set[str] = set()
        self.seen_sessions: set[str] = set()
        # project -> (listing version, the list then), to check the version
        # moves whenever the list does (callers cache answers by it)
        self.listings: dict[str, tuple[int, list]] = {}

    def make_nodes(self) -> list[Any]:
        return [MemoryPresence(GRACE_MS)]

    def node(self, index: int) -> Any:
        return self.nodes[index % len(self.nodes)]

    def _room(self, key: RoomKey) -> ModelRoom:
        return self.rooms.setdefault(key, ModelRoom())

    def _expire_model(self, room: ModelRoom) -> tuple[str, int] | None:
        if room.session and room.idle_since is not None and self.now - room.idle_since >= GRACE_MS:
            ended = room.session, room.idle_since
            self.ended.add(room.session)
            room.session, room.idle_since, room.locked = None, None, False
            return ended
        return None

    @rule(
        node=st.integers(0, 1),
        project=st.sampled_from(PROJECTS),
        room_id=st.sampled_from(ROOMS),
        peer=st.sampled_from(PEERS),
        bot=st.booleans(),
        metadata=st.sampled_from(METADATA),
        limits=st.none()
        | st.fixed_dictionaries(
            {
                "max_peers": st.none() | st.integers(1, 4),
                "room_locked": st.booleans(),
                "admin": st.booleans(),
                "lock_room": st.booleans(),
                "internal": st.booleans(),
            }
        ),
    )
    def join(
        self,
        node: int,
        project: str,
        room_id: str,
        peer: str,
        bot: bool,
        metadata: str,
        limits: dict[str, Any] | None,
    ) -> None:
        key = RoomKey(project, room_id)
        room = self._room(key)
        members, other = (room.bots, room.peers) if bot else (room.peers, room.bots)
        if peer in other:
            return  # one peer id is either a bot or not, as a token fixes it
        ended = self._expire_model(room)
        limits = limits or {}
        admin = limits.get("admin", False)
        internal = limits.get("internal", False) and bot  # only the service's own bots are internal
        self.connections += 1
        conn = f"c{self.connections}"
        role = "bot" if bot else "speaker"
        admission = Admission(
            PeerPresence(peer, role, metadata, self.now),
            {"admin": True} if admin else {},
            conn,
            room_locked=limits.get("room_locked", False),
            max_peers=limits.get("max_peers"),
            lock_room=limits.get("lock_room", False),
            internal=internal,
        )
        outcome = run(self.node(node).join(key, admission, self.now))
        assert (outcome.ended.session_id, outcome.ended.end_time) == ended if outcome.ended else ended is None
        replaced = members.get(peer)

        expected_refusal = None
        if replaced is None and not internal:
            counted = len(room.peers) + (len(room.bots) if bot else 0)
            if (admission.room_locked or room.locked) and not admin:
                expected_refusal = Refusal.LOCKED
            elif admission.max_peers is not None and counted >= admission.max_peers:
                expected_refusal = Refusal.FULL
        assert outcome.refused is expected_refusal
        if expected_refusal is not None:
            return

        assert outcome.replaced_connection == (replaced.conn if replaced else None)
        join_time = replaced.join_time if replaced else self.now
        members[peer] = Member(conn, role, metadata, join_time)
        if bot:
            assert outcome.session_id == room.session
            assert not outcome.started_session
            return
        if room.session is None:
            assert outcome.started_session
            assert outcome.session_id not in self.seen_sessions
            room.session, room.start = outcome.session_id, self.now
            room.locked, room.livestreams, room.recordings = False, 0, 0
            self.seen_sessions.add(room.session)
        else:
            assert not outcome.started_session
            assert outcome.session_id == room.session
        assert outcome.start_time == room.start
        room.idle_since = None
        if admission.lock_room and admin:
            room.locked = True
        others = [(p, m.metadata, m.join_time) for p, m in room.peers.items() if p != peer]
        assert [(p.peer_id, p.metadata, p.join_time) for p in outcome.peers] == others

    def _members(self) -> list[tuple[RoomKey, str, Member, bool]]:
        return [
            (key, peer, member, bot)
            for key, room in self.rooms.items()
            for bot, members in ((False, room.peers), (True, room.bots))
            for peer, member in members.items()
        ]

    @precondition(lambda self: self._members())
    @rule(node=st.integers(0, 1), data=st.data(), stale=st.booleans())
    def leave_or_drop(self, node: int, data: st.DataObject, stale: bool) -> None:
        key, peer, member, bot = data.draw(st.sampled_from(sorted(self._members(), key=repr)))
        if stale:
            # A replaced connection ending must change nothing.
            assert run(self.node(node).leave(key, peer, member.conn + "-old", self.now)) is None
            return
        outcome = run(self.node(node).leave(key, peer, member.conn, self.now))
        assert outcome is not None and outcome.was_bot == bot
        room = self.rooms[key]
        assert outcome.session_id == room.session
        (room.bots if bot else room.peers).pop(peer)
        assert outcome.room_emptied == (not bot and not room.peers)
        if not bot and not room.peers and room.session:
            room.idle_since = self.now

    @precondition(lambda self: self._members())
    @rule(node=st.integers(0, 1), data=st.data(), stale=st.booleans(), metadata=st.sampled_from(METADATA))
    def update_metadata(self, node: int, data: st.DataObject, stale: bool, metadata: str) -> None:
        key, peer, member, _bot = data.draw(st.sampled_from(sorted(self._members(), key=repr)))
        conn = member.conn + "-old" if stale else member.conn
        changed = run(self.node(node).update_metadata(key, peer, conn, metadata))
        assert changed == (not stale)
        if changed:
            member.metadata = metadata

    @rule(node=st.integers(0, 1), project=st.sampled_from(PROJECTS), room_id=st.sampled_from(ROOMS), data=st.data())
    def remove(self, node: int, project: str, room_id: str, data: st.DataObject) -> None:
        """Moderation: a peer (never a bot) out, whatever its connection."""
        key = RoomKey(project, room_id)
        room = self.rooms.get(key)
        peer = data.draw(st.sampled_from(sorted({*PEERS, *(room.peers if room else ())})))
        found = run(self.node(node).remove(key, peer, self.now))
        member = room.peers.get(peer) if room is not None else None
        if member is None:
            assert found is None
            return
        assert room is not None and found is not None
        removal, outcome = found
        assert (removal.peer_id, removal.connection_id, removal.was_bot) == (peer, member.conn, False)
        assert outcome.session_id == room.session
        del room.peers[peer]
        assert outcome.room_emptied == (not room.peers)
        if not room.peers and room.session:
            room.idle_since = self.now

    @rule(node=st.integers(0, 1), project=st.sampled_from(PROJECTS), room_id=st.sampled_from(ROOMS))
    def end_session(self, node: int, project: str, room_id: str) -> None:
        """Moderation: the live session over now, every member out."""
        key = RoomKey(project, room_id)
        room = self.rooms.get(key)
        found = run(self.node(node).end_session(key, self.now))
        if room is None or not room.peers or room.session is None:
            assert found is None
            return
        assert found is not None
        ended, removed = found
        assert (ended.key, ended.session_id, ended.end_time) == (key, room.session, self.now)
        expected = {(p, m.conn, False) for p, m in room.peers.items()} | {
            (p, m.conn, True) for p, m in room.bots.items()
        }
        assert {(r.peer_id, r.connection_id, r.was_bot) for r in removed} == expected
        self.ended.add(room.session)
        room.peers.clear()
        room.bots.clear()
        room.session, room.idle_since, room.locked = None, None, False

    @rule(
        node=st.integers(0, 1),
        project=st.sampled_from(PROJECTS),
        room_id=st.sampled_from(ROOMS),
        kind=st.sampled_from(["livestream", "recording"]),
    )
    def count_egress(self, node: int, project: str, room_id: str, kind: str) -> None:
        room = self.rooms.get(RoomKey(project, room_id))
        counted = run(self.node(node).count_egress(RoomKey(project, room_id), kind))
        live = room is not None and room.session is not None and room.idle_since is None
        assert counted == live
        if room is not None and counted:
            if kind == "livestream":
                room.livestreams += 1
            else:
                room.recordings += 1

    @rule(ms=st.sampled_from([1, GRACE_MS - 1, GRACE_MS]) | st.integers(min_value=1, max_value=1500))
    def time_passes(self, ms: int) -> None:
        self.now += ms

    @precondition(lambda self: any(r.idle_since is not None for r in self.rooms.values()))
    @rule(data=st.data(), offset=st.sampled_from([-1, 0]), then_expire=st.booleans(), node=st.integers(0, 1))
    def time_reaches_a_grace_boundary(self, data: st.DataObject, offset: int, then_expire: bool, node: int) -> None:
        idle = sorted(r.idle_since for r in self.rooms.values() if r.idle_since is not None)
        boundary = data.draw(st.sampled_from(idle)) + GRACE_MS + offset
        self.now = max(self.now, boundary)
        if then_expire:
            self.expire(node)

    @rule(node=st.integers(0, 1))
    def expire(self, node: int) -> None:
        ended = run(self.node(node).expire(self.now))
        expected = set()
        for key, room in self.rooms.items():
            gone = self._expire_model(room)
            if gone is not None:
                expected.add((key, *gone))
        assert {(e.key, e.session_id, e.end_time) for e in ended} == expected

    @invariant()
    def live_sessions_match_the_model(self) -> None:
        for index, project in enumerate(PROJECTS):
            presence = self.node(index)
            expected = sorted(
                (
                    (room.start, key.room_id, len(room.peers), room.livestreams, room.recordings)
                    for key, room in self.rooms.items()
                    if key.project_id == project and room.peers
                ),
            )
            listed = run(presence.live_sessions(project))
            shown = [
                (s.start_time, s.room_id, s.current_peer_count, s.livestream_count, s.recording_count) for s in listed
            ]
            assert shown == expected
            version = run(self.node(index + 1).listing_version(project))
            previous = self.listings.get(project)
            if previous is not None and previous[1] != shown:
                assert version != previous[0], "the list changed but its version did not"
            self.listings[project] = (version, shown)
            for start, room_id, count, livestreams, recordings in expected:
                single = run(self.node(index + 1).live_session(RoomKey(project, room_id)))
                assert single is not None
                assert (single.start_time, single.current_peer_count) == (start, count)
                assert (single.livestream_count, single.recording_count) == (livestreams, recordings)
            # Paging with a cursor yields the same list.
            paged, after = [], None
            while True:
                page = run(presence.live_sessions(project, after, 2))
                paged += page
                if len(page) < 2:
                    break
                after = (page[-1].start_time, page[-1].room_id)
            assert paged == listed

    @invariant()
    def who_is_in_each_room_matches_the_model(self) -> None:
        for index, (key, room) in enumerate(sorted(self.rooms.items(), key=repr)):
            presence = self.node(index)
            if not room.peers:
                assert run(presence.live_session(key)) is None
                assert run(presence.peers(key)) is None
                assert run(presence.session_of(key)) is None
                continue
            peers = run(presence.peers(key))
            assert peers is not None
            assert [(p.peer_id, p.role, p.metadata, p.join_time) for p in peers] == [
                (peer, m.role, m.metadata, m.join_time) for peer, m in room.peers.items()
            ]
            assert run(presence.session_of(key)) == room.session

    @invariant()
    def totals_match_the_model(self) -> None:
        live = [room for room in self.rooms.values() if room.peers]
        assert run(self.node(0).totals()) == (len(live), sum(len(r.peers) for r in live))
        assert sorted(run(self.node(1).live_session_ids())) == sorted(r.session for r in live)


class RedisPresenceMachine(PresenceMachine):
    """Two nodes on one Redis, flushed before each example."""

    client: Redis | None = None

    def make_nodes(self) -> list[Any]:
        cls = RedisPresenceMachine
        if cls.client is None:
            # Replies as bytes here (the other tests decode them): both must work.
            cls.client = Redis.from_url(redis_server().url)
        run(cls.client.flushall())
        return [RedisPresence(cls.client, GRACE_MS, node_name=name) for name in ("a", "b")]


TestPresenceModel = PresenceMachine.TestCase
TestPresenceModel.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)

TestRedisPresenceModel = needs_redis(RedisPresenceMachine.TestCase)
TestRedisPresenceModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
