"""Scale-out mode with real processes: three `livesessions serve` nodes on one
PostgreSQL database and one Redis (tests/cluster_support.py), peers joining
through different nodes, and nodes, Redis and PostgreSQL failing mid-run.

Timings are the harness's short ones: node lease 2 s (heartbeat every 0.4 s),
grace period 1 s, pings every 0.5 s. The tests take turns with one cluster,
each in a project of its own; a test that breaks a node or Redis leaves it to
the next test's `project` fixture to put back (`Cluster.heal`). The
PostgreSQL restarts run on a cluster of their own, on a private PostgreSQL
that can be stopped and started.

Without PostgreSQL or redis-server the module skips saying why; where the
services are required (LIVESESSIONS_REQUIRE_SERVICES or CI) it fails.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from backends import REDIS_SERVER, SKIP_REASON
from cluster_support import (
    Cluster,
    ClusterProject,
    PrivatePostgres,
    RedisServer,
    RowLock,
    cluster_on_fresh_database,
    in_threads,
)
from livesessions.clock import now_ms
from support import Peer, eventually, required, unavailable, wait_closed

pytestmark = pytest.mark.skipif(REDIS_SERVER is None and not required(), reason=SKIP_REASON)

SDK = "/api/v2/sdk"


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster_on_fresh_database(tmp_path_factory.mktemp("cluster")) as instance:
        yield instance


@pytest.fixture
def project(cluster: Cluster) -> Iterator[ClusterProject]:
    """A fresh project on the module's cluster, every node and Redis running."""
    cluster.heal()
    instance = cluster.project()
    yield instance
    instance.close()


# --- helpers ---------------------------------------------------------------------------


def drain(peer: Peer, quiet: float = 0.2) -> list[dict[str, Any]]:
    """Every message until none comes for `quiet` seconds."""
    messages = []
    while True:
        try:
            messages.append(peer.recv(quiet))
        except TimeoutError:
            return messages


def wait_counts(
    project: ClusterProject, expected: dict[str, int], nodes: list[int] | None = None, timeout: float = 10
) -> float:
    """Poll until every node (of `nodes`, default all running) answers the
    live list with exactly `expected` {room: currentPeerCount}; the seconds it took."""
    start = time.monotonic()
    while True:
        answers = project.counts_everywhere(nodes)
        if answers and all(answer == expected for answer in answers):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            pytest.fail(f"after {timeout} s the nodes answer {answers}, not {expected} each")
        time.sleep(0.05)


def counts_now(project: ClusterProject, nodes: list[int] | None = None) -> list[dict[str, int] | None]:
    return project.counts_everywhere(nodes)


def event_key(message: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a room event, whoever receives it."""
    kind = message["type"]
    if kind == "data":
        return ("data", message["from"], message["label"], json.dumps(message["payload"]))
    if kind == "peer-joined":
        return ("joined", message["peer"]["peerId"])
    if kind == "peer-left":
        return ("left", message["peerId"])
    if kind == "metadata-updated":
        return ("meta", message["peerId"], message["metadata"])
    return (kind, json.dumps(message, sort_keys=True))


def peer_id_of(message: dict[str, Any]) -> str | None:
    return message.get("peerId") or message.get("peer", {}).get("peerId")


def within(value: int | None, low: int, high: int) -> bool:
    return value is not None and low <= value <= high


def eventually_value(check: Callable[[], Any], timeout: float) -> Any:
    """Poll until `check()` is truthy; fail with its last value if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s; last: {value!r}")
        time.sleep(0.05)


def gets_data(peer: Peer, payload: Any, timeout: float = 0.5) -> bool:
    """Whether a data message with this payload comes within `timeout` (others are skipped)."""
    deadline = time.monotonic() + timeout
    try:
        while peer.recv_type("data", timeout=max(0.01, deadline - time.monotonic()))["payload"] != payload:
            pass
    except TimeoutError:
        return False
    return True


def show(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """A measurement, printed where it is seen even when the test passes."""
    with capsys.disabled():
        print(f"\n[cluster] {text}")


# --- messages between nodes --------------------------------------------------------


SENT = 50


def test_room_events_reach_peers_on_every_node_in_one_order(project: ClusterProject) -> None:
    room = project.create_room()
    control = project.join(0, room, metadata="control")
    observers = [project.join(node, room, metadata=f"o{node}") for node in range(3)]
    ids = [observer.peer_id for observer in observers]
    # Each joiner is told who is there, in join order, whichever node they came through.
    for i, observer in enumerate(observers):
        assert observer.session_id == control.session_id
        assert [p["peerId"] for p in observer.joined["peers"]] == [control.peer_id, *ids[:i]]
    for i, observer in enumerate([control, *observers]):
        later = ids[i:]
        assert [observer.recv_type("peer-joined")["peer"]["peerId"] for _ in later] == later

    logs: list[list[dict[str, Any]]] = [[] for _ in observers]
    done = [threading.Event() for _ in observers]

    def collect(i: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                message = observers[i].recv(1)
            except TimeoutError:
                continue
            if message["type"] == "data" and message["label"] == "end" and message["from"] == control.peer_id:
                done[i].set()
                return
            logs[i].append(message)

    collectors = [threading.Thread(target=collect, args=(i,), daemon=True) for i in range(3)]
    for thread in collectors:
        thread.start()

    def send_from(i: int) -> Callable[[], None]:
        def run() -> None:
            sender, after = observers[i], ids[(i + 1) % 3]
            for n in range(1, SENT + 1):
                sender.send({"type": "data", "to": "*", "label": "seq", "payload": n})
                if n % 5 == 0:
                    sender.send({"type": "data", "to": [after], "label": "dm", "payload": n})
                if n % 10 == 0:
                    sender.send({"type": "update-metadata", "metadata": f"o{i}-{n}"})

        return run

    transients: list[str] = []

    def churn() -> None:
        # Peers coming and going through every node while the others talk.
        for k in range(6):
            transient = project.join(k % 3, room, metadata=f"t{k}")
            transients.append(transient.peer_id)
            transient.send({"type": "data", "to": "*", "label": "churn", "payload": k})
            transient.leave()

    failures = [r for r in in_threads([send_from(0), send_from(1), send_from(2), churn]) if r is not None]
    assert failures == []
    control.send({"type": "data", "to": "*", "label": "end", "payload": None})
    for i, event in enumerate(done):
        assert event.wait(20), f"observer {i} never got the end marker; got {len(logs[i])} messages"

    expected_meta = {j: [f"o{j}-{n}" for n in range(10, SENT + 1, 10)] for j in range(3)}
    for i, log in enumerate(logs):
        assert [m for m in log if m["type"] == "error"] == []
        keys = [event_key(m) for m in log]
        assert len(keys) == len(set(keys)), f"observer {i} got an event twice"
        for j in range(3):
            seq = [m["payload"] for m in log if m["type"] == "data" and m["label"] == "seq" and m["from"] == ids[j]]
            # Nobody gets its own data back; everyone else gets all of it, in order.
            assert seq == ([] if j == i else list(range(1, SENT + 1))), (i, j)
            meta = [m["metadata"] for m in log if m["type"] == "metadata-updated" and m["peerId"] == ids[j]]
            assert meta == expected_meta[j], (i, j)
        # Messages to a list reach exactly the peers listed, on whichever node.
        dms = [(m["from"], m["payload"]) for m in log if m["type"] == "data" and m["label"] == "dm"]
        assert dms == [(ids[(i - 1) % 3], n) for n in range(5, SENT + 1, 5)]
        for k, transient in enumerate(transients):
            about = [event_key(m) for m in log if peer_id_of(m) == transient or m.get("from") == transient]
            assert about == [("joined", transient), ("data", transient, "churn", str(k)), ("left", transient)]
    # Every two receivers saw the events both got in the same order: the room's.
    for i in range(3):
        for j in range(i + 1, 3):
            keys_i, keys_j = [event_key(m) for m in logs[i]], [event_key(m) for m in logs[j]]
            common = set(keys_i) & set(keys_j)
            assert [k for k in keys_i if k in common] == [k for k in keys_j if k in common], (i, j)
    for observer in [control, *observers]:
        observer.close()


# --- admission ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "opened",
    [
        pytest.param(True, id="session-already-open"),
        pytest.param(False, id="rush-opens-the-session"),
    ],
)
def test_max_peers_holds_under_concurrent_joins_on_every_node(project: ClusterProject, opened: bool) -> None:
    allowed = 4
    for _round in range(2):
        room = project.create_room()
        # With `opened`, one peer is in (and its session in history) before the rush.
        first = [project.join(0, room, options={"maxPeersAllowed": allowed})] if opened else []
        tokens = [project.token(room, options={"maxPeersAllowed": allowed}) for _ in range(3 * allowed)]
        results = in_threads([lambda i=i, t=t: project.connect(i % 3, t) for i, t in enumerate(tokens)])
        assert [r for r in results if isinstance(r, BaseException)] == []
        admitted = first + [peer for peer, _code in results if peer is not None]
        refused = [code for peer, code in results if peer is None]
        assert len(admitted) == allowed, f"{len(admitted)} admitted with maxPeersAllowed={allowed}"
        assert refused == [4029] * (3 * allowed + len(first) - allowed)
        assert counts_now(project) == [{room: allowed}] * 3
        for node in range(3):
            listed = project[node].get(f"{SDK}/live-sessions/participants/{room}").json()
            assert listed["count"] == allowed
            assert {p["peerId"] for p in listed["participants"]} == {peer.peer_id for peer in admitted}
        for peer in admitted:
            peer.leave()
        assert counts_now(project) == [{}] * 3


def test_a_join_into_a_session_opened_on_a_slow_node_is_kept(cluster: Cluster, project: ClusterProject) -> None:
    # Node 0's history writer is held up (a row it must update is locked), as
    # by a slow or contended database: a session it opens reaches PostgreSQL late.
    elsewhere = project.create_room()
    slow = project.join(0, elsewhere)
    room = project.create_room()
    opener_token, joiner_token = project.token(room), project.token(room)
    pool = ThreadPoolExecutor(1)
    try:
        with RowLock(cluster.database_url, "SELECT 1 FROM participants WHERE peer_id = $1 FOR UPDATE", slow.peer_id):
            slow.send({"type": "update-metadata", "metadata": "held up"})
            assert slow.recv_type("metadata-updated")["metadata"] == "held up"
            opening = pool.submit(project.connect, 0, opener_token)
            # The opener is in the room (its `joined` waits for node 0's writer).
            eventually_value(lambda: project[1].live_counts().get(room) == 1, 10)
            joiner, code = project.connect(1, joiner_token)
            if joiner is not None:
                # and it stays in: a failure on the server would close it now
                with pytest.raises(TimeoutError):
                    joiner.recv_type("never", timeout=0.5)
            assert (joiner is not None, code) == (True, None)
    finally:
        pool.shutdown(wait=False)
    opener, _ = opening.result(10)
    assert opener is not None
    assert counts_now(project) == [{elsewhere: 1, room: 2}] * 3
    (session,) = project.sessions(room)
    assert {p["peerId"] for p in project.participants(session["sessionId"])} == {opener.peer_id, joiner.peer_id}
    for peer in (slow, opener, joiner):
        peer.close()


# --- read-your-join -------------------------------------------------------------------


def test_a_join_is_counted_on_every_node_once_joined_and_a_leave_nowhere_once_processed(
    project: ClusterProject,
) -> None:
    room = project.create_room()
    anchor = project.join(0, room)
    for i in range(30):
        joined_through, read_on = i % 3, (i + 1) % 3
        peer = project.join(joined_through, room)
        # At once, on another node: no waiting for anything to spread.
        answer = project[read_on].get(f"{SDK}/live-sessions/{room}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["liveSessions"][0]["currentPeerCount"] == 2, (i, answer.json())
        listed = project[(i + 2) % 3].get(f"{SDK}/live-sessions/participants/{room}").json()
        assert peer.peer_id in {p["peerId"] for p in listed["participants"]}, i
        if i % 2 == 0:
            peer.leave()  # the server closes only once the leave is processed
        else:
            peer.close()
            assert anchor.recv_type("peer-left")["peerId"] == peer.peer_id
        for node in range(3):
            listed = project[node].get(f"{SDK}/live-sessions/participants/{room}").json()
            assert [p["peerId"] for p in listed["participants"]] == [anchor.peer_id], (i, node)
        assert counts_now(project) == [{room: 1}] * 3, i
        if i % 2 == 0:
            assert anchor.recv_type("peer-left")["peerId"] == peer.peer_id
    anchor.close()


# --- webhooks and the live event stream -------------------------------------------------


def test_webhooks_get_every_node_s_events_once_each_in_room_order(project: ClusterProject) -> None:
    from receiver import Receiver

    receiver = Receiver()
    try:
        answer = project[1].post(f"{SDK}/webhooks", json={"url": receiver.url})
        assert answer.status_code == 201, answer.text
        rooms = [project.create_room() for _ in range(3)]

        def churn(node: int) -> None:
            for n in range(4):
                room = rooms[(node + n) % 3]
                project.join(node, room).leave()

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(churn, range(3)))

        # 12 stints in 3 rooms: 24 peer events, and each session's start and
        # end (a room may have had more than one session)
        def settled() -> bool:
            names = [r.event for r in receiver.events()]
            started = names.count("meeting:started")
            return names.count("peer:left") == 12 and started >= 3 and names.count("meeting:ended") == started

        assert eventually(settled, timeout=30), [r.event for r in receiver.events()]
        got = receiver.events()
        ids = [r.data["id"] for r in got]
        assert len(ids) == len(set(ids)), "an event was delivered twice"
        by_room: dict[str, list[Any]] = {}
        for r in got:
            by_room.setdefault(r.payload["roomId"], []).append(r)
        assert set(by_room) == set(rooms)
        for room, received in by_room.items():
            assert [r.sequence for r in received] == list(range(1, len(received) + 1)), room
            names = [r.event for r in received]
            assert names[0] == "meeting:started" and names[-1] == "meeting:ended", (room, names)
            assert names.count("peer:joined") == names.count("peer:left") == 4, (room, names)
    finally:
        receiver.stop()


def test_the_live_event_stream_on_one_node_hears_joins_on_the_others(project: ClusterProject) -> None:
    import httpx

    room = project.create_room()
    heard: list[str] = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.stream(
            "GET",
            f"{project.cluster[2].base}{SDK}/live-sessions/events",
            headers={"x-api-key": project.key},
            timeout=httpx.Timeout(5, read=30),
        ) as stream:
            for line in stream.iter_lines():
                ready.set()
                if line.startswith("event: "):
                    heard.append(line[7:])
                if heard.count("peer:left") == 2:
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert ready.wait(10)
    project.join(0, room).leave()
    project.join(1, room).leave()
    thread.join(20)
    assert [e for e in heard if e.startswith("peer:")] == ["peer:joined", "peer:left", "peer:joined", "peer:left"]


# --- the same peer on another node -------------------------------------------------------


def test_the_same_peer_on_another_node_replaces_its_connection(project: ClusterProject) -> None:
    room = project.create_room()
    other = project.join(2, room)
    token = project.token(room)
    first = project.join(0, room, token=token)
    assert other.recv_type("peer-joined")["peer"]["peerId"] == first.peer_id
    current = first
    for node in (1, 0, 1):
        again = project.join(node, room, token=token)
        assert again.peer_id == first.peer_id
        assert again.session_id == first.session_id
        assert [p["peerId"] for p in again.joined["peers"]] == [other.peer_id]
        assert counts_now(project) == [{room: 2}] * 3
        assert wait_closed(current.ws)[0] == 4009
        current = again
    listed = project[0].get(f"{SDK}/live-sessions/participants/{room}").json()
    assert sorted(p["peerId"] for p in listed["participants"]) == sorted([other.peer_id, first.peer_id])
    # A replacement is neither a leave nor a join for the others.
    assert [m["type"] for m in drain(other, 0.5)] == []
    current.send({"type": "data", "to": [other.peer_id], "label": "x", "payload": "still here"})
    assert other.recv_type("data")["payload"] == "still here"
    current.leave()
    assert other.recv_type("peer-left")["peerId"] == first.peer_id
    assert counts_now(project) == [{room: 1}] * 3
    history = project.participants(other.session_id or "")
    assert [p["peerId"] for p in history].count(first.peer_id) == 1
    other.close()


def test_moderation_reaches_peers_on_every_node(project: ClusterProject) -> None:
    room = project.create_room()
    peers = [project.join(node, room) for node in range(3)]
    # Removing a peer held by node 2, asked of node 0.
    answer = project[0].post(f"{SDK}/live-sessions/{room}/peers/{peers[2].peer_id}/remove")
    assert answer.status_code == 200, answer.text
    assert wait_closed(peers[2].ws)[0] == 4011
    for peer in peers[:2]:
        assert peer.recv_type("peer-left")["peerId"] == peers[2].peer_id
    assert counts_now(project) == [{room: 2}] * 3
    # Ending the session, asked of node 1: everyone, on every node, at once.
    assert project[1].post(f"{SDK}/live-sessions/{room}/end", json={}).status_code == 200
    for peer in peers[:2]:
        assert wait_closed(peer.ws)[0] == 4010
    assert counts_now(project) == [{}] * 3
    (session,) = project.sessions(room, node=2)
    assert session["endTime"] is not None
    assert all(p.get("exitTime") for p in project.participants(session["sessionId"]))


# --- a node killed ----------------------------------------------------------------------


def test_a_killed_node_s_peers_disappear_and_its_empty_rooms_end(
    cluster: Cluster, project: ClusterProject, capsys: pytest.CaptureFixture[str]
) -> None:
    shared, alone = project.create_room(), project.create_room()
    a0, a1, a1b, a2 = (project.join(node, shared) for node in (0, 1, 1, 2))
    b1, b1b = project.join(1, alone), project.join(1, alone)
    wait_counts(project, {shared: 4, alone: 2})
    for peer in (a0, a2):
        drain(peer, 0.1)

    before_kill = now_ms()
    cluster[1].kill()
    killed_at = now_ms()
    elapsed = wait_counts(project, {shared: 2}, nodes=[0, 2], timeout=10)
    show(capsys, f"a SIGKILLed node's peers disappeared from every surviving node after {elapsed:.2f} s")
    assert elapsed < 10
    for node in (0, 2):
        assert project[node].get(f"{SDK}/live-sessions/{alone}").status_code == 404
    for survivor in (a0, a2):
        gone = {survivor.recv_type("peer-left", timeout=5)["peerId"] for _ in range(2)}
        assert gone == {a1.peer_id, a1b.peer_id}

    # The room left empty ends after its grace, at the time its node was last known alive.
    lease_ms = int(cluster.lease * 1000)
    sessions = eventually_value(lambda: project.sessions(alone)[0]["endTime"] and project.sessions(alone), 10)
    (session,) = sessions
    assert session["sessionId"] == b1.session_id
    assert within(session["endTime"], before_kill - lease_ms, killed_at), (session, before_kill, killed_at)
    exits = {p["peerId"]: p.get("exitTime") for p in project.participants(session["sessionId"])}
    assert set(exits) == {b1.peer_id, b1b.peer_id}
    assert all(within(t, before_kill - lease_ms, killed_at) for t in exits.values()), exits
    exits = {p["peerId"]: p.get("exitTime") for p in project.participants(a0.session_id or "")}
    assert exits[a0.peer_id] is None and exits[a2.peer_id] is None
    assert within(exits[a1.peer_id], before_kill - lease_ms, killed_at), exits
    assert within(exits[a1b.peer_id], before_kill - lease_ms, killed_at), exits
    # The survivors still talk to each other.
    a0.send({"type": "data", "to": "*", "label": "x", "payload": 1})
    assert a2.recv_type("data")["payload"] == 1
    # A node started again on the same port serves the room as before.
    cluster[1].start()
    again = project.join(1, shared)
    assert again.session_id == a0.session_id
    assert counts_now(project) == [{shared: 3}] * 3
    for peer in (a0, a2, again):
        peer.close()


# --- a node cut off, then back ---------------------------------------------------------------


def test_a_node_cut_off_is_reaped_and_comes_back_with_only_what_it_still_holds(
    cluster: Cluster, project: ClusterProject, capsys: pytest.CaptureFixture[str]
) -> None:
    shared, alone = project.create_room(), project.create_room()
    a0, a1, a1x, a2 = (project.join(node, shared) for node in (0, 1, 1, 2))
    b1 = project.join(1, alone)
    wait_counts(project, {shared: 4, alone: 1})
    for peer in (a0, a1, a1x, a2, b1):
        drain(peer, 0.1)

    cluster[1].pause()  # SIGSTOP: no heartbeat, no answers, its sockets stay open
    elapsed = wait_counts(project, {shared: 2}, nodes=[0, 2], timeout=10)
    show(capsys, f"a paused (cut off) node's peers disappeared from the other nodes after {elapsed:.2f} s")
    for survivor in (a0, a2):
        gone = {survivor.recv_type("peer-left", timeout=5)["peerId"] for _ in range(2)}
        assert gone == {a1.peer_id, a1x.peer_id}
    # While it is away, one of its peers goes; and the room it alone held ends.
    a1x.ws.close_timeout = 0.05  # type: ignore[union-attr]
    a1x.close()
    ended = eventually_value(lambda: project.sessions(alone)[0]["endTime"], 10)
    assert ended is not None

    cluster[1].resume()
    # Back: only what it still holds is counted again, everywhere.
    wait_counts(project, {shared: 3, alone: 1}, timeout=10)
    watch_until = time.monotonic() + cluster.lease
    while time.monotonic() < watch_until:  # and it stays so (no late resurrection)
        assert counts_now(project) == [{shared: 3, alone: 1}] * 3
        time.sleep(0.1)
    for survivor in (a0, a2):
        seen = [(m["type"], peer_id_of(m)) for m in drain(survivor, 0.3)]
        assert seen == [("peer-joined", a1.peer_id)]
    listed = project[0].get(f"{SDK}/live-sessions/participants/{shared}").json()
    assert sorted(p["peerId"] for p in listed["participants"]) == sorted([a0.peer_id, a1.peer_id, a2.peer_id])
    # The room whose session ended while its node was away is in a new session.
    (now, before) = project.sessions(alone)
    assert before["sessionId"] == b1.session_id and before["endTime"] == ended
    assert now["endTime"] is None and now["sessionId"] != b1.session_id
    # Its peers still talk to the others, both ways.
    a0.send({"type": "data", "to": [a1.peer_id], "label": "x", "payload": "to a1"})
    assert a1.recv_type("data")["payload"] == "to a1"
    a1.send({"type": "data", "to": "*", "label": "x", "payload": "from a1"})
    assert a0.recv_type("data")["payload"] == "from a1"
    assert a2.recv_type("data")["payload"] == "from a1"
    for peer in (a0, a1, a2, b1):
        peer.leave()
    assert counts_now(project) == [{}] * 3


# --- Redis killed and started again, empty ----------------------------------------------------


UNAVAILABLE_MESSAGE = "Service Unavailable"


def test_redis_restarted_empty_every_node_puts_back_what_it_holds(
    cluster: Cluster, project: ClusterProject, capsys: pytest.CaptureFixture[str]
) -> None:
    shared, alone = project.create_room(), project.create_room()
    p0, p1, p2 = (project.join(node, shared) for node in range(3))
    q2 = project.join(2, alone)
    wait_counts(project, {shared: 3, alone: 1})
    before = {item["roomId"]: item for item in project[0].live()}
    late_token = project.token(shared)
    for peer in (p0, p1, p2):
        drain(peer, 0.1)

    cluster.redis.kill()
    # While it is down: no wrong counts, a clear 503 with a JSON message, on every node.
    for node in range(3):
        for path in (
            f"{SDK}/live-sessions",
            f"{SDK}/live-sessions/{shared}",
            f"{SDK}/live-sessions/participants/{shared}",
        ):
            answer = project[node].get(path)
            assert answer.status_code == 503, (node, path, answer.status_code, answer.text)
            body = answer.json()
            assert body["ok"] is False and UNAVAILABLE_MESSAGE in body["message"]
    # A join is refused with the contract's "reconnect shortly" close.
    assert project.connect(1, late_token) == (None, 1013)

    cluster.redis.start()
    elapsed = wait_counts(project, {shared: 3, alone: 1}, timeout=15)
    show(capsys, f"after Redis came back empty, every node's live answers were exact after {elapsed:.2f} s")
    # The same sessions go on: same start times, nothing ended in history.
    for node in range(3):
        assert {item["roomId"]: item for item in project[node].live()} == before
    (session,) = project.sessions(shared)
    assert session["sessionId"] == p0.session_id and session["endTime"] is None
    # Room events flow between nodes again. Each node resubscribes on its own
    # schedule, and what is published before it has is lost to its peers (see
    # test_room_events_survive_a_node_s_subscription_being_cut): a probe is
    # repeated until one gets through to every node.
    deadline = time.monotonic() + 10
    for probe in itertools.count():
        # From node 0 to nodes 1 and 2, and from node 1 to node 0: every node hears.
        p0.send({"type": "data", "to": "*", "label": "probe", "payload": [0, probe]})
        p1.send({"type": "data", "to": [p0.peer_id], "label": "probe", "payload": [1, probe]})
        heard = [gets_data(p1, [0, probe]), gets_data(p2, [0, probe]), gets_data(p0, [1, probe])]
        if all(heard):
            break
        assert time.monotonic() < deadline, f"room events do not get through between nodes: {heard}"
    p2.send({"type": "data", "to": [p1.peer_id], "label": "dm", "payload": "only p1"})
    assert p1.recv_type("data")["payload"] == "only p1"
    late = project.join(1, shared, token=late_token)
    assert late.session_id == p0.session_id
    assert sorted(p["peerId"] for p in late.joined["peers"]) == sorted([p0.peer_id, p1.peer_id, p2.peer_id])
    for peer in (p0, p2):
        assert peer.recv_type("peer-joined")["peer"]["peerId"] == late.peer_id
    assert counts_now(project) == [{shared: 4, alone: 1}] * 3
    late.leave()
    assert p0.recv_type("peer-left")["peerId"] == late.peer_id
    for peer in (p0, p1, p2, q2):
        peer.leave()
    assert counts_now(project) == [{}] * 3


def test_a_leave_while_redis_is_down_reaches_history_once_it_is_back(cluster: Cluster, project: ClusterProject) -> None:
    shared, alone = project.create_room(), project.create_room()
    a0, a1 = project.join(0, shared), project.join(1, shared)
    b1 = project.join(1, alone)
    wait_counts(project, {shared: 2, alone: 1})

    cluster.redis.kill()
    left_at = now_ms()
    a1.close()
    b1.close()
    time.sleep(0.5)  # the node sees both go while Redis is down (not an assertion)
    cluster.redis.start()
    wait_counts(project, {shared: 1}, timeout=15)
    back = now_ms()

    def recorded() -> bool:
        exits = {p["peerId"]: p.get("exitTime") for p in project.participants(a0.session_id or "")}
        (session,) = project.sessions(alone)
        return exits[a1.peer_id] is not None and session["endTime"] is not None

    deadline = time.monotonic() + 2 * cluster.lease + cluster.grace + 2
    while not recorded() and time.monotonic() < deadline:
        time.sleep(0.1)
    exits = {p["peerId"]: p.get("exitTime") for p in project.participants(a0.session_id or "")}
    assert within(exits[a1.peer_id], left_at, back), exits
    assert exits[a0.peer_id] is None
    (going_on,) = project.sessions(shared)  # a0 is still there: its session goes on
    assert going_on["endTime"] is None
    (session,) = project.sessions(alone)
    assert within(session["endTime"], left_at, back + int(cluster.grace * 1000) + 1000), session
    a0.close()


def test_room_events_survive_a_node_s_subscription_being_cut(cluster: Cluster, project: ClusterProject) -> None:
    room = project.create_room()
    sender, *receivers = (project.join(node, room) for node in range(3))
    for peer in (sender, *receivers):
        drain(peer, 0.1)
    redis = cluster.redis.client()
    try:
        for n in range(3):
            # Every node is listening again (its room-event pattern), then
            # Redis drops every subscriber connection (as it does a client
            # past its output buffer limit).
            deadline = time.monotonic() + 10
            while sum(1 for c in redis.client_list(_type="pubsub") if int(c.get("psub", 0)) > 0) < 3:
                assert time.monotonic() < deadline, "the nodes did not subscribe again"
                time.sleep(0.02)
            assert redis.client_kill_filter(_type="pubsub") >= 3
            sender.send({"type": "data", "to": "*", "label": "after-cut", "payload": n})
            late = project.join(n % 3, room)
            for receiver in receivers:
                assert receiver.recv_type("data", timeout=2)["payload"] == n
                assert receiver.recv_type("peer-joined", timeout=2)["peer"]["peerId"] == late.peer_id
            receivers.append(late)
    finally:
        redis.close()


# --- PostgreSQL restarted ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    reason = PrivatePostgres.missing()
    if reason is not None:
        unavailable(f"cannot run a PostgreSQL of the test's own to restart: {reason}")
    try:
        instance = PrivatePostgres()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        unavailable(f"cannot run a PostgreSQL of the test's own to restart: {exc}")
    yield instance
    instance.close()


@pytest.fixture(scope="module")
def pg_cluster(private_postgres: PrivatePostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two nodes on the private PostgreSQL (and a Redis of their own)."""
    redis = RedisServer()
    instance = Cluster(tmp_path_factory.mktemp("pg-cluster"), private_postgres.url, n=2, redis=redis)
    try:
        instance.start()
        yield instance
    finally:
        instance.close()
        redis.stop()


@pytest.fixture
def pg_project(pg_cluster: Cluster, private_postgres: PrivatePostgres) -> Iterator[ClusterProject]:
    private_postgres.start_if_stopped()
    pg_cluster.heal()
    instance = pg_cluster.project()
    yield instance
    instance.close()


def history_reads_answer(project: ClusterProject, room: str, nodes: int) -> bool:
    return all(
        project[node].get(f"{SDK}/rooms/session-details", params={"roomId": room}).status_code == 200
        for node in range(nodes)
    )


def test_postgres_restarted_loses_no_join_or_leave(
    pg_cluster: Cluster, private_postgres: PrivatePostgres, pg_project: ClusterProject
) -> None:
    project = pg_project
    room = project.create_room()
    p0, p1, p2 = project.join(0, room), project.join(1, room), project.join(1, room)
    drain(p0, 0.1)

    private_postgres.stop("fast")
    # Presence does not need PostgreSQL: leaves are seen at once by the others.
    closed_at = now_ms()
    p1.close()
    assert p0.recv_type("peer-left")["peerId"] == p1.peer_id
    left_at = now_ms()
    p2.send({"type": "leave"})  # the server closes once history has it
    assert p0.recv_type("peer-left")["peerId"] == p2.peer_id
    for node in range(2):  # reads answer right, or 503 with a JSON message; never wrong
        answer = project[node].get(f"{SDK}/live-sessions")
        assert answer.status_code in (200, 503), answer.text
        if answer.status_code == 200:
            assert {i["roomId"]: i["currentPeerCount"] for i in answer.json()["liveSessions"]} == {room: 1}
        else:
            assert answer.json()["ok"] is False and answer.json()["message"]

    private_postgres.start()
    back = now_ms()
    assert eventually_value(lambda: history_reads_answer(project, room, 2), 15)
    assert wait_closed(p2.ws, timeout=10)[0] == 1000
    # Both leaves made during the outage are in history, at the time they were made.
    exits = {p["peerId"]: p.get("exitTime") for p in project.participants(p0.session_id or "")}
    assert set(exits) == {p0.peer_id, p1.peer_id, p2.peer_id}
    assert exits[p0.peer_id] is None
    assert within(exits[p1.peer_id], closed_at, back), exits
    assert within(exits[p2.peer_id], left_at, back), exits
    # Joins work again and reach history; the session ends when the room empties.
    again = project.join(1, room)
    assert again.session_id == p0.session_id
    assert again.peer_id in {p["peerId"] for p in project.participants(p0.session_id or "", node=0)}
    assert counts_now(project) == [{room: 2}] * 2
    again.leave()
    p0.leave()
    (session,) = eventually_value(lambda: project.sessions(room)[0]["endTime"] and project.sessions(room), 10)
    assert session["sessionId"] == p0.session_id


def test_a_join_while_postgres_is_down_is_refused_cleanly_or_kept(
    pg_cluster: Cluster, private_postgres: PrivatePostgres, pg_project: ClusterProject
) -> None:
    project = pg_project
    room = project.create_room()
    p0 = project.join(0, room)
    token = project.token(room)
    private_postgres.stop("fast")
    try:
        peer, code = project.connect(1, token)
    finally:
        private_postgres.start()
    assert eventually_value(lambda: history_reads_answer(project, room, 2), 15)
    if peer is None:
        assert code == 1013
    else:  # admitted: then it is counted and in history
        assert peer.peer_id in {p["peerId"] for p in project.participants(p0.session_id or "")}
    p0.close()
