"""RedisFanout: how one node hands the room events it receives from Redis to
its own connections (the order across nodes is Redis', tested with real nodes
in tests/e2e/test_cluster.py). Events are fed as Redis would deliver them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from livesessions.cluster.fanout import RedisFanout
from livesessions.domain.live import JoinOutcome, RoomKey
from livesessions.realtime.hub import Close, Connection, Hub
from livesessions.stores.redis_presence import RedisJoinOutcome, decode_event
from livesessions.telemetry import Telemetry

ROOM = RoomKey("prj_a", "aaa-aaaa-aaa")
OTHER_ROOM = RoomKey("prj_a", "bbb-bbbb-bbb")
CHANNEL = "ls:{prj_a}:events"


class Log:
    """Stands in for the presence's event log: what `recent_events` finds."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def recent_events(self, project_id: str, after: int) -> list[Any]:
        found = [decode_event(e) for e in self.events]
        return [e for e in found if e.seq > after]


class Node(RedisFanout):
    def feed(self, *events: str) -> None:
        """Events as the subscription delivers them, one after another."""

        async def run() -> None:
            for event in events:
                await self._receive(CHANNEL, event)

        asyncio.run(run())


def fanout(log: Log | None = None) -> Node:
    return Node(Hub(), presence=log or Log(), redis=None, telemetry=Telemetry())  # type: ignore[arg-type]


def connection(peer_id: str, key: RoomKey = ROOM, **permissions: bool) -> Connection:
    return Connection(key=key, peer_id=peer_id, role="host", permissions={"canRecvData": True, **permissions})


def joined(seq: int, peer: str, room: str = ROOM.room_id) -> str:
    return json.dumps(
        {
            "seq": seq,
            "type": "peer-joined",
            "room": room,
            "session": "ses_1",
            "node": "n1",
            "conn": f"c-{peer}",
            "peer": {"peerId": peer, "role": "host", "metadata": "", "joinTime": 1},
        }
    )


def left(seq: int, peer: str) -> str:
    return json.dumps(
        {
            "seq": seq,
            "type": "peer-left",
            "room": ROOM.room_id,
            "session": "ses_1",
            "peerId": peer,
            "node": "n1",
            "conn": f"c-{peer}",
            "reason": "left",
            "time": 2,
        }
    )


def data(seq: int, sender: str, to: list[str] | None, payload: Any) -> str:
    message = {"type": "data", "from": sender, "label": None, "payload": payload}
    return json.dumps(
        {"seq": seq, "type": "data", "room": ROOM.room_id, "sender": sender, "to": to, "message": message}
    )


def received(conn: Connection) -> list[dict[str, Any]]:
    out = []
    while conn.outbox:
        item = conn.outbox.popleft()
        out.append({"close": item.code} if isinstance(item, Close) else json.loads(item))
    return out


def outcome(seq: int) -> JoinOutcome:
    return RedisJoinOutcome(session_id="ses_1", event_seq=seq)


def test_a_joiner_gets_only_what_came_after_its_join_including_what_arrived_before_it_was_attached() -> None:
    node = fanout()
    alice = connection("alice")
    node.attach(alice, outcome(1))
    node.feed(joined(1, "alice"))
    node.feed(joined(2, "bob"))  # bob's join: alice's joined did not tell of it
    node.feed(joined(3, "carol", room=OTHER_ROOM.room_id))
    node.feed(left(4, "bob"))
    # dave joined at 2 (bob was in his `joined`), but is attached only now.
    dave = connection("dave")
    node.attach(dave, outcome(2))
    assert [m["type"] for m in received(alice)] == ["peer-joined", "peer-left"]
    assert received(dave) == [{"type": "peer-left", "peerId": "bob"}]
    node.feed(joined(5, "erin"))
    assert [m["peer"]["peerId"] for m in received(dave)] == ["erin"]


def test_a_peer_is_not_told_of_its_own_join_or_data() -> None:
    node = fanout()
    alice, bob = connection("alice"), connection("bob")
    node.attach(alice, outcome(0))
    node.attach(bob, outcome(0))
    node.feed(joined(1, "alice"))
    node.feed(data(2, "alice", None, {"n": 1}))
    assert received(alice) == []
    assert [m["type"] for m in received(bob)] == ["peer-joined", "data"]


def test_data_reaches_only_its_recipients_that_may_receive_data() -> None:
    node = fanout()
    bob, carol, deaf = connection("bob"), connection("carol"), connection("deaf", canRecvData=False)
    for peer in (bob, carol, deaf):
        node.attach(peer, outcome(0))
    node.feed(data(1, "alice", ["bob", "deaf"], "hi"))
    node.feed(data(2, "alice", None, "all"))
    assert [m["payload"] for m in received(bob)] == ["hi", "all"]
    assert [m["payload"] for m in received(carol)] == ["all"]
    assert received(deaf) == []


def test_a_replacement_closes_only_the_connection_it_names() -> None:
    node = fanout()
    old = connection("alice")
    old.id = "c-old"
    node.attach(old, outcome(0))
    replaced = {
        "seq": 1,
        "type": "replaced",
        "room": ROOM.room_id,
        "peerId": "alice",
        "bot": False,
        "node": "n1",
        "conn": "c-other",
        "byNode": "n2",
        "byConn": "c-new",
    }
    node.feed(json.dumps(replaced))
    assert not old.closing
    node.feed(json.dumps({**replaced, "seq": 2, "conn": "c-old"}))
    assert received(old) == [{"close": 4009}]


def test_sequences_starting_again_mean_redis_restarted_and_nothing_is_skipped() -> None:
    node = fanout()
    alice = connection("alice")
    node.attach(alice, outcome(40))
    node.feed(joined(41, "bob"))
    # Redis came back empty: the project's events count from 1 again.
    node.feed(joined(1, "carol"))
    node.feed(joined(2, "dave"))
    assert [m["peer"]["peerId"] for m in received(alice)] == ["bob", "carol", "dave"]


def test_events_missed_in_transit_are_caught_up_from_the_log_in_order() -> None:
    log = Log()
    node = fanout(log)
    bob = connection("bob")
    node.attach(bob, outcome(0))
    log.events = [joined(1, "alice"), data(2, "alice", None, "lost in transit"), data(3, "alice", None, "too")]
    node.feed(joined(1, "alice"), data(4, "alice", None, "after"))
    # The duplicate of what the log gave is not handed on twice.
    node.feed(data(3, "alice", None, "too"))
    assert [m.get("payload") for m in received(bob)] == [None, "lost in transit", "too", "after"]
    assert node._telemetry.cluster_events.labels("missed")._value.get() == 0


def test_events_older_than_the_log_are_counted_as_lost() -> None:
    node = fanout()
    node.feed(joined(1, "bob"), joined(5, "carol"))
    counted = node._telemetry.cluster_events
    assert counted.labels("missed")._value.get() == 3
    assert counted.labels("received")._value.get() == 2


def test_session_ends_reach_the_listeners() -> None:
    async def run() -> list[str]:
        node = fanout()
        ended: list[str] = []

        async def listener(session: Any) -> None:
            ended.append(session.session_id)

        node.session_end_listeners.append(listener)
        event = {"seq": 1, "type": "session-ended", "room": ROOM.room_id, "session": "ses_9", "endTime": 5}
        await node._receive(CHANNEL, json.dumps(event))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return ended

    assert asyncio.run(run()) == ["ses_9"]


def test_a_connection_replaced_or_taken_out_before_it_was_attached_is_closed_at_once() -> None:
    node = fanout()
    replaced = {
        "seq": 3,
        "type": "replaced",
        "room": ROOM.room_id,
        "peerId": "alice",
        "bot": False,
        "node": "n1",
        "conn": "c-alice",
        "byNode": "n2",
        "byConn": "c-new",
    }
    evicted = {"seq": 4, "type": "evicted", "room": ROOM.room_id, "peerId": "bob", "conn": "c-bob", "reason": "removed"}
    node.feed(joined(1, "carol"), json.dumps(replaced), json.dumps(evicted))
    alice, bob = connection("alice"), connection("bob")
    alice.id, bob.id = "c-alice", "c-bob"
    node.attach(alice, outcome(2))
    node.attach(bob, outcome(2))
    assert received(alice) == [{"close": 4009}]
    assert received(bob) == [{"close": 4011}]
