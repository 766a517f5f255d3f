"""What only the Redis presence has: admission racing across nodes, replacement
across nodes, node leases and reaping, re-registration after Redis lost its
data, and the room events it publishes.

Each test runs on a `redis-server` this process starts on a free port (shared
with test_presence_model.py), flushed first. Without redis-server the tests
skip, unless LIVESESSIONS_REQUIRE_SERVICES or CI is set: then they fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from backends import REDIS_SERVER, SKIP_REASON, redis_server
from livesessions.domain.live import Admission, PeerPresence, Refusal, RoomKey
from livesessions.stores.redis_presence import (
    HeldConnection,
    Lease,
    PeerJoinedEvent,
    PeerLeftEvent,
    PresenceUnavailable,
    RedisPresence,
    ReplacedEvent,
    RoomEvent,
    decode_event,
)
from support import required

REQUIRED = required()
# Skip when redis-server is missing, unless it is required: then the tests run and fail saying why.
needs_redis = pytest.mark.skipif(REDIS_SERVER is None and not REQUIRED, reason=SKIP_REASON)


# --- helpers -------------------------------------------------------------------

GRACE = 1000
P = "prj_test"
ROOM = RoomKey(P, "aaa-aaaa-aaa")
ROOM2 = RoomKey(P, "bbb-bbbb-bbb")


def admission(peer: str, conn: str, now: int = 1000, bot: bool = False, **options: Any) -> Admission:
    permissions = {"admin": True} if options.pop("admin", False) else {}
    return Admission(
        PeerPresence(peer, "bot" if bot else "speaker", "", now),
        permissions,
        conn,
        room_locked=options.pop("room_locked", False),
        **options,
    )


class Cluster:
    """Nodes (RedisPresence instances, each on its own connection pool) on the test's Redis."""

    def __init__(self) -> None:
        self.url = redis_server().url
        self.clients: list[Redis] = []

    def client(self) -> Redis:
        client = Redis.from_url(self.url, decode_responses=True)
        self.clients.append(client)
        return client

    def node(self, name: str, lease_ms: int = 10_000) -> RedisPresence:
        return RedisPresence(self.client(), GRACE, node_name=name, lease_ms=lease_ms)

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


def run(test: Callable[[Cluster], Awaitable[None]]) -> None:
    async def main() -> None:
        cluster = Cluster()
        await cluster.client().flushall()
        try:
            await test(cluster)
        finally:
            await cluster.close()

    asyncio.run(main())


class Events:
    """The room events of project P, as a subscriber on another connection sees them."""

    def __init__(self, cluster: Cluster, presence: RedisPresence) -> None:
        self.pubsub = cluster.client().pubsub()
        self.channel = presence.events_channel(P)
        self.pattern = presence.events_pattern  # every project's channel

    async def __aenter__(self) -> Events:
        await self.pubsub.psubscribe(self.pattern)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pubsub.aclose()

    async def take(self, count: int, timeout: float = 5.0) -> list[RoomEvent]:
        events: list[RoomEvent] = []
        deadline = time.monotonic() + timeout
        while len(events) < count and time.monotonic() < deadline:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
            if message is not None:
                assert message["channel"] == self.channel
                events.append(decode_event(message["data"]))
        return events

    async def none_left(self) -> bool:
        return await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2) is None


async def count(presence: RedisPresence, key: RoomKey = ROOM) -> int:
    live = await presence.live_session(key)
    return 0 if live is None else live.current_peer_count


# --- admission across nodes ------------------------------------------------------


@needs_redis
def test_fifty_joins_on_fifty_nodes_racing_for_ten_places_admit_exactly_ten() -> None:
    async def test(cluster: Cluster) -> None:
        nodes = [cluster.node(f"n{i}") for i in range(50)]
        for node in nodes:
            assert await node.heartbeat(1000) is Lease.REGISTERED
        outcomes = await asyncio.gather(
            *(node.join(ROOM, admission(f"peer-{i}", f"c{i}", max_peers=10), 1000) for i, node in enumerate(nodes))
        )
        admitted = [o for o in outcomes if o.refused is None]
        assert len(admitted) == 10
        assert all(o.refused is Refusal.FULL for o in outcomes if o.refused is not None)
        assert sum(o.started_session for o in admitted) == 1
        assert len({o.session_id for o in admitted}) == 1
        assert await count(nodes[0]) == 10
        assert len(await nodes[-1].peers(ROOM) or []) == 10
        assert await nodes[7].totals() == (1, 10)

        # Bots racing for the same room: for them every member counts, so
        # with 10 peers in and a limit of 12, two of them get in.
        bots = await asyncio.gather(
            *(
                node.join(ROOM, admission(f"bot-{i}", f"b{i}", bot=True, max_peers=12), 1000)
                for i, node in enumerate(nodes[:20])
            )
        )
        assert sum(o.refused is None for o in bots) == 2
        assert await count(nodes[0]) == 10  # bots are not counted

        # A locked room refuses every non-admin racing in, and the admins get in.
        racers = await asyncio.gather(
            *(
                node.join(ROOM2, admission(f"peer-{i}", f"l{i}", admin=i % 10 == 0, room_locked=True), 1000)
                for i, node in enumerate(nodes)
            )
        )
        assert [o.refused is None for o in racers] == [i % 10 == 0 for i in range(50)]
        assert all(o.refused is Refusal.LOCKED for o in racers if o.refused is not None)

    run(test)


@needs_redis
def test_the_same_peer_joining_on_many_nodes_at_once_is_counted_once() -> None:
    async def test(cluster: Cluster) -> None:
        nodes = [cluster.node(f"n{i}") for i in range(10)]
        outcomes = await asyncio.gather(
            *(node.join(ROOM, admission("peer-x", f"c{i}", max_peers=1), 1000) for i, node in enumerate(nodes))
        )
        # Each join after the first replaced the one before it: one chain, and
        # the one nobody replaced is the connection that holds the place.
        assert all(o.refused is None for o in outcomes)
        replaced = [o.replaced_connection for o in outcomes if o.replaced_connection is not None]
        assert len(replaced) == 9 == len(set(replaced))
        holder = ({f"c{i}" for i in range(10)} - set(replaced)).pop()
        for i, outcome in enumerate(outcomes):
            if outcome.replaced_connection is not None:
                assert outcome.replaced_node == nodes[int(outcome.replaced_connection[1:])].node_id != nodes[i].node_id
        assert await count(nodes[0]) == 1
        assert await nodes[3].leave(ROOM, "peer-x", "c0" if holder != "c0" else "c1", 1001) is None
        left = await nodes[5].leave(ROOM, "peer-x", holder, 1001)
        assert left is not None and left.room_emptied

    run(test)


@needs_redis
def test_a_peer_connecting_on_another_node_replaces_its_connection_there() -> None:
    async def test(cluster: Cluster) -> None:
        a, b = cluster.node("a"), cluster.node("b")
        async with Events(cluster, a) as events:
            first = await a.join(ROOM, admission("peer-x", "a-1", now=1000), 1000)
            second = await b.join(ROOM, admission("peer-x", "b-1", now=2000), 2000)
            assert second.replaced_connection == "a-1" and second.replaced_node == a.node_id
            assert second.session_id == first.session_id and not second.started_session
            peers = await a.peers(ROOM)
            assert peers is not None and [(p.peer_id, p.join_time) for p in peers] == [("peer-x", 1000)]
            assert await count(b) == 1
            # The old connection closing on node a changes nothing.
            assert await a.leave(ROOM, "peer-x", "a-1", 2001) is None
            assert await count(a) == 1
            joined, replaced = await events.take(2)
            assert isinstance(joined, PeerJoinedEvent) and joined.conn == "a-1"
            assert isinstance(replaced, ReplacedEvent)
            assert (replaced.node, replaced.conn) == (a.node_id, "a-1")
            assert (replaced.by_node, replaced.by_conn) == (b.node_id, "b-1")
            assert await events.none_left()  # no peer-joined for a replacement, no peer-left for the stale leave

    run(test)


# --- node leases ------------------------------------------------------------------


@needs_redis
def test_a_dead_nodes_members_are_reaped_after_its_lease_as_leaving_when_it_was_last_alive() -> None:
    async def test(cluster: Cluster) -> None:
        dead, b, c = cluster.node("dead", lease_ms=200), cluster.node("b"), cluster.node("c")
        for node in (dead, b, c):
            await node.heartbeat(1000)
        s1 = await dead.join(ROOM, admission("peer-x", "d-x"), 1000)
        await dead.join(ROOM2, admission("peer-y", "d-y"), 1000)
        await dead.join(ROOM2, admission("recorder", "d-r", bot=True, internal=True), 1000)
        await b.join(ROOM2, admission("peer-z", "b-z"), 1000)
        assert await dead.heartbeat(3000) is Lease.RENEWED  # last known alive at 3000
        await b.leave(ROOM2, "peer-z", "b-z", 3500)  # someone else leaves after that
        await b.join(ROOM2, admission("peer-z", "b-z2", now=3600), 3600)

        assert await b.reap_dead_nodes(4000) == []  # its lease still runs
        await asyncio.sleep(0.3)
        async with Events(cluster, b) as events:
            first, second = await asyncio.gather(b.reap_dead_nodes(4000), c.reap_dead_nodes(4000))
            departures = first + second
            # Each member reported once, by one reaper or the other.
            assert sorted((d.key.room_id, d.peer_id, d.connection_id) for d in departures) == [
                (ROOM.room_id, "peer-x", "d-x"),
                (ROOM2.room_id, "peer-y", "d-y"),
                (ROOM2.room_id, "recorder", "d-r"),
            ]
            assert {d.left_at for d in departures} == {3000}
            assert {d.node_id for d in departures} == {dead.node_id}
            by_peer = {d.peer_id: d.outcome for d in departures}
            assert by_peer["peer-x"].room_emptied and by_peer["peer-x"].session_id == s1.session_id
            assert not by_peer["peer-y"].room_emptied and by_peer["recorder"].was_bot
            left = await events.take(2)
            assert sorted((e.peer_id, e.reason, e.time) for e in left if isinstance(e, PeerLeftEvent)) == [
                ("peer-x", "reaped", 3000),
                ("peer-y", "reaped", 3000),
            ]
        # Gone from every answer on every node.
        for node in (b, c):
            assert await node.live_session(ROOM) is None
            assert await count(node, ROOM2) == 1
            assert await node.totals() == (1, 1)
        # The emptied room's session ends at the exit time, after its grace.
        assert await c.expire(3000 + GRACE - 1) == []
        ended = await b.expire(3000 + GRACE)
        assert [(e.session_id, e.end_time) for e in ended] == [(s1.session_id, 3000)]
        assert await b.reap_dead_nodes(5000) == [] and await c.reap_dead_nodes(5000) == []
        assert dead.node_id not in await cluster.clients[0].zrange("ls:{g}:alive", 0, -1)

    run(test)


@needs_redis
def test_a_room_emptied_by_a_reap_after_a_later_leave_goes_idle_at_that_leave() -> None:
    async def test(cluster: Cluster) -> None:
        dead, b = cluster.node("dead", lease_ms=200), cluster.node("b")
        await dead.heartbeat(1000)
        await dead.join(ROOM, admission("peer-x", "d-x"), 1000)
        await b.join(ROOM, admission("peer-z", "b-z"), 1000)
        await b.leave(ROOM, "peer-z", "b-z", 1500)  # after the dead node was last heard of
        await asyncio.sleep(0.3)
        [departure] = await b.reap_dead_nodes(2000)
        assert departure.left_at == 1000 and departure.outcome.room_emptied
        [ended] = await b.expire(1500 + GRACE)
        assert ended.end_time == 1500

    run(test)


@needs_redis
def test_a_node_cut_off_and_reaped_does_not_resurrect_what_it_no_longer_holds() -> None:
    async def test(cluster: Cluster) -> None:
        cut, b = cluster.node("cut", lease_ms=500), cluster.node("b")
        await cut.heartbeat(1000)
        await b.heartbeat(1000)
        s = await cut.join(ROOM, admission("peer-x", "c-x"), 1000)
        await cut.join(ROOM, admission("peer-y", "c-y"), 1000)
        await cut.join(ROOM, admission("peer-v", "c-v"), 1000)
        await b.join(ROOM, admission("peer-z", "b-z"), 1000)
        old_id = cut.node_id

        await asyncio.sleep(0.6)  # cut off: no heartbeat gets through
        assert len(await b.reap_dead_nodes(2000)) == 3
        await b.join(ROOM, admission("peer-v", "b-v", now=2100), 2100)  # v reconnected on b meanwhile

        # Back, but its lease lapsed: it changes nothing until a heartbeat.
        with pytest.raises(PresenceUnavailable):
            await cut.join(ROOM, admission("peer-w", "c-w"), 2200)
        with pytest.raises(PresenceUnavailable):
            await cut.leave(ROOM, "peer-x", "c-x", 2200)
        async with Events(cluster, b) as events:
            assert await cut.heartbeat(2500) is Lease.LOST
            assert cut.node_id != old_id
            # x's connection dropped while it was cut off; it still holds y and v.
            held = [
                HeldConnection(ROOM, admission("peer-y", "c-y"), s.session_id, s.start_time),
                HeldConnection(ROOM, admission("peer-v", "c-v"), s.session_id, s.start_time),
            ]
            restored = {r.connection.admission.peer.peer_id: r for r in await cut.reregister(held, 2500)}
            assert restored["peer-y"].status == "rejoined"
            assert restored["peer-y"].outcome.session_id == s.session_id
            assert not restored["peer-y"].outcome.started_session
            assert restored["peer-v"].status == "superseded"
            assert restored["peer-v"].outcome.replaced_connection == "b-v"
            [event] = await events.take(1)
            assert isinstance(event, PeerJoinedEvent) and event.peer.peer_id == "peer-y"
            assert event.peer.join_time == 2500 and event.node == cut.node_id
            assert await events.none_left()
        peers = await b.peers(ROOM)
        assert peers is not None and sorted(p.peer_id for p in peers) == ["peer-v", "peer-y", "peer-z"]
        assert await count(b) == 3
        assert await cut.heartbeat(2600) is Lease.RENEWED  # (the lease here is short)
        assert await cut.leave(ROOM, "peer-x", "c-x", 2600) is None
        # Re-registering again finds it there.
        [again] = await cut.reregister(held[:1], 2700)
        assert again.status == "present"
        # The new id's members are its own: when it dies, they are reaped.
        await asyncio.sleep(0.6)
        assert [d.peer_id for d in await b.reap_dead_nodes(3000)] == ["peer-y"]

    run(test)


@needs_redis
def test_after_redis_comes_back_empty_every_node_puts_back_exactly_what_it_holds() -> None:
    async def test(cluster: Cluster) -> None:
        a, b = cluster.node("a"), cluster.node("b")
        await a.heartbeat(1000)
        await b.heartbeat(1000)
        other = RoomKey("prj_other", "ccc-cccc-ccc")
        joins = [
            (a, ROOM, admission("peer-x", "a-x", now=1000)),
            (b, ROOM, admission("peer-y", "b-y", now=1100)),
            (a, ROOM, admission("recorder", "a-r", now=1100, bot=True, internal=True)),
            (b, ROOM2, admission("host", "b-h", now=1200, admin=True, lock_room=True)),
            (a, other, admission("peer-w", "a-w", now=1300)),
        ]
        held: dict[str, list[HeldConnection]] = {"a": [], "b": []}
        for node, key, adm in joins:
            outcome = await node.join(key, adm, adm.peer.join_time)
            assert outcome.refused is None
            held["a" if node is a else "b"].append(HeldConnection(key, adm, outcome.session_id, outcome.start_time))

        async def snapshot() -> Any:
            return (
                await a.live_sessions(P),
                await a.live_sessions(other.project_id),
                {k: sorted((p.peer_id, p.join_time) for p in await b.peers(k) or []) for k in (ROOM, ROOM2, other)},
                {k: await b.session_of(k) for k in (ROOM, ROOM2, other)},
                await a.totals(),
                sorted(await b.live_session_ids()),
            )

        before = await snapshot()
        version = await a.listing_version(P)
        async with Events(cluster, a) as events:
            await cluster.clients[0].flushall()
            assert await a.live_sessions(P) == []
            assert await a.heartbeat(2000) is Lease.EMPTIED
            assert await b.heartbeat(2000) is Lease.EMPTIED
            restored = await a.reregister(held["a"], 2000) + await b.reregister(held["b"], 2000)
            assert [r.status for r in restored] == ["restored"] * 5
            assert not any(r.outcome.started_session for r in restored)
            assert await snapshot() == before
            assert await a.listing_version(P) != version
            assert await events.none_left()  # nobody saw anyone leave: nothing to announce
        # The session lock came back with the host.
        refused = await a.join(ROOM2, admission("peer-q", "a-q"), 2100)
        assert refused.refused is Refusal.LOCKED
        # And the restored members are reaped with their node.
        assert sorted(r.status for r in await a.reregister(held["a"], 2200)) == ["present"] * 3

    run(test)


# --- events ---------------------------------------------------------------------


@needs_redis
def test_events_arrive_in_the_order_the_room_saw_them() -> None:
    async def test(cluster: Cluster) -> None:
        a, b = cluster.node("a"), cluster.node("b")
        async with Events(cluster, a) as events:
            s = await a.join(ROOM, admission("peer-x", "a-x"), 1000)
            await b.join(ROOM, admission("peer-y", "b-y"), 1001)
            assert await a.update_metadata(ROOM, "peer-x", "a-x", '{"name":"Ada"}')
            await b.join(ROOM, admission("peer-x", "b-x"), 1002)
            assert await a.leave(ROOM, "peer-x", "a-x", 1003) is None
            await b.leave(ROOM, "peer-x", "b-x", 1004)
            await b.leave(ROOM, "peer-y", "b-y", 1005)
            await a.expire(1005 + GRACE)
            seen = await events.take(7)
            assert [e.seq for e in seen] == list(range(1, 8))
            assert [(type(e).__name__, getattr(e, "peer_id", None) or getattr(e, "conn", None)) for e in seen] == [
                ("PeerJoinedEvent", "a-x"),
                ("PeerJoinedEvent", "b-y"),
                ("MetadataUpdatedEvent", "peer-x"),
                ("ReplacedEvent", "peer-x"),
                ("PeerLeftEvent", "peer-x"),
                ("PeerLeftEvent", "peer-y"),
                ("SessionEndedEvent", None),
            ]
            assert all(getattr(e, "session", s.session_id) == s.session_id for e in seen)
            assert await events.none_left()

            # Many nodes churning one room at once: the events, replayed in
            # order, give exactly who is in the room.
            nodes = [cluster.node(f"n{i}") for i in range(20)]

            async def churn(i: int, node: RedisPresence) -> None:
                for round_ in range(3):
                    await node.join(ROOM, admission(f"peer-{i}", f"n{i}-{round_}"), 2000)
                    if round_ < 2 or i % 2:
                        await node.leave(ROOM, f"peer-{i}", f"n{i}-{round_}", 2000)

            await asyncio.gather(*(churn(i, node) for i, node in enumerate(nodes)))
            expected = 20 * 3 + 20 * 2 + 10  # joins, leaves
            seen = await events.take(expected)
            assert [e.seq for e in seen] == list(range(8, 8 + expected))
            present: dict[str, str] = {}
            for event in seen:
                if isinstance(event, PeerJoinedEvent):
                    assert event.peer.peer_id not in present
                    present[event.peer.peer_id] = event.conn
                elif isinstance(event, PeerLeftEvent):
                    assert present.pop(event.peer_id) == event.conn
            peers = await a.peers(ROOM)
            assert peers is not None and sorted(present) == sorted(p.peer_id for p in peers)
            assert len(present) == 10

    run(test)
