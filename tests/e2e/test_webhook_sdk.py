"""Webhooks checked by Huddle01's own server SDK, through an outage and a crash.

tests/compat/webhook_receiver.mjs is an endpoint that hands every delivery to
the SDK's `WebhookReceiver` (npm `@huddle01/server-sdk`, pinned and installed
as for test_sdk_compat.py) and logs one JSON line per request. The test drives
rooms of a real `livesessions serve` (peer metadata full of what JSON escapes
and what it must not), takes the endpoint down, kills the service with SIGKILL
while events are undelivered, starts it again on the same data, brings the
endpoint back, and checks what arrived against the contract's "Webhooks":
every delivery verifies, every event arrives at least once, each room's in
order (x-livesessions-sequence 1, 2, 3…, no gaps), payloads as specified, and
the failed attempts are in the deliveries log.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_sdk_compat import COMPAT, _install, _node_and_npm

from livesessions.domain.webhooks import retry_delay_ms
from support import Peer, Project, Server, eventually, free_port

RECEIVER = COMPAT / "webhook_receiver.mjs"
HOOKS = "/api/v2/sdk/webhooks"

STARTED, ENDED = "meeting:started", "meeting:ended"
JOINED, LEFT = "peer:joined", "peer:left"
RECORDING_STARTED, RECORDING_ENDED = "recording:started", "recording:ended"

KEYS = {
    STARTED: ["sessionId", "roomId", "createdAt"],
    ENDED: ["sessionId", "roomId", "createdAt", "endedAt", "duration", "participants", "maxParticipants"],
    JOINED: ["id", "sessionId", "roomId", "joinedAt", "metadata", "role"],
    LEFT: ["id", "sessionId", "roomId", "leftAt", "duration", "metadata", "role"],
    RECORDING_STARTED: ["id", "roomId", "sessionId", "files", "streams"],
    RECORDING_ENDED: ["id", "roomId", "sessionId", "files", "streams"],
}


def _metadata(display_name: str, **more: Any) -> str:
    return json.dumps({"displayName": display_name, **more}, ensure_ascii=False)


# Peer metadata is text; in a delivery it is a JSON string inside the body, so
# what it escapes is escaped twice. Quotes, backslashes, newlines and tabs,
# a control character (\u0001 in both Python's and JavaScript's JSON), DEL and
# U+2028 (escaped by neither), accents and an emoji (astral: a surrogate pair
# in JavaScript) must all come out as JSON.stringify writes them.
ZOE = _metadata('Zoë "Z" 🎥\n', note="back\\slash\ttab \x01 \x7f \u2028 end")
ADA = _metadata("Ada Lovelace")
CHLOE = _metadata("Chloé 🚀", avatar='"quoted".png')
DMITRI = _metadata("Дмитрий \\ 東京 👩‍💻")
BAREFOOT = '{"displayName":"Zoë \\"Z\\" 🎥\\n"}'  # as written by hand: already escaped JSON text


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = _node_and_npm()
    _install(npm)
    return node


class NodeReceiver:
    """webhook_receiver.mjs on a port of its own; `kill` takes it down (the
    port refuses connections), `start` brings it back on the same port."""

    def __init__(self, node: str, api_key: str, directory: Path) -> None:
        self.node = node
        self.api_key = api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.log = directory / "deliveries.jsonl"
        self.output = directory / "receiver-output.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> NodeReceiver:
        with self.output.open("ab") as output:
            self.process = subprocess.Popen(
                [self.node, str(RECEIVER), str(self.port), str(self.log)],
                cwd=COMPAT,
                env={**os.environ, "LIVESESSIONS_API_KEY": self.api_key},
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"webhook_receiver.mjs exited with {self.process.returncode}: {self._output()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"webhook_receiver.mjs did not listen in time: {self._output()}")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def lines(self) -> list[dict[str, Any]]:
        """Every request it got, in the order it answered them."""
        if not self.log.exists():
            return []
        # Split at "\n" only (str.splitlines also splits at U+2028, which
        # JSON.stringify leaves as it is); a last line without one is unfinished.
        *complete, _unfinished = self.log.read_text(encoding="utf-8").split("\n")
        return [json.loads(line) for line in complete]

    def first_arrivals(self) -> list[dict[str, Any]]:
        """Verified deliveries, each event once (the first time it came)."""
        seen: set[str] = set()
        first = []
        for line in self.lines():
            if line["verified"] and line["id"] not in seen:
                seen.add(line["id"])
                first.append(line)
        return first

    def _output(self) -> str:
        return self.output.read_text(errors="replace")[-3000:] if self.output.exists() else ""


# --- the service's side --------------------------------------------------------


def register(project: Project, url: str) -> dict[str, Any]:
    answer = project.post(HOOKS, json={"url": url})
    assert answer.status_code == 201, answer.text
    hook: dict[str, Any] = answer.json()["webhook"]
    assert hook["status"] == "active" and hook["id"].startswith("whk_")
    return hook


def webhook_state(project: Project, hook_id: str) -> dict[str, Any]:
    answer = project.get(HOOKS)
    assert answer.status_code == 200, answer.text
    states: list[dict[str, Any]] = [w for w in answer.json()["webhooks"] if w["id"] == hook_id]
    (state,) = states
    return state


def delivery_log(project: Project, hook_id: str) -> list[dict[str, Any]]:
    """Every attempt, newest first (all pages)."""
    entries: list[dict[str, Any]] = []
    cursor: Any = None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor is not None else {})}
        answer = project.get(f"{HOOKS}/{hook_id}/deliveries", params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        entries += page["deliveries"]
        cursor = page["nextCursor"]
        if cursor is None:
            return entries


def session_ended(project: Project, room: str) -> bool:
    answer = project.get("/api/v2/sdk/rooms/session-details", params={"roomId": room})
    assert answer.status_code == 200, answer.text
    sessions = answer.json()["sessions"]
    return bool(sessions) and all(s.get("endTime") for s in sessions)


def wait_between_attempts(project: Project, hook_id: str, rooms: list[str], margin_ms: int = 400) -> None:
    """Return at a moment when each room's undelivered head has failed at least
    once and none is being attempted or due within `margin_ms`: a kill then
    leaves no attempt claimed (a claim outlives a crash by its 60 s lease)."""
    deadline = time.monotonic() + 15
    latest: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        latest = {}
        for entry in delivery_log(project, hook_id):  # newest first
            latest.setdefault(entry["roomId"], entry)
        heads = [latest.get(room) for room in rooms]
        if all(head is not None and head["responseStatus"] is None for head in heads):
            now = time.time() * 1000
            due = [head["at"] + retry_delay_ms(head["attempt"]) for head in heads if head is not None]
            settled = [head["at"] for head in heads if head is not None]
            if all(at - now > margin_ms for at in due) and all(now - at > 50 for at in settled):
                return
        time.sleep(0.05)
    raise AssertionError(f"no quiet moment between attempts: {latest}")


def recording(project: Project, room: str) -> None:
    token = project.token(room)
    started = project.post("/api/v1/recording/start", json={"roomId": room, "token": token, "type": "recording"})
    assert started.status_code == 200, started.text
    stopped = project.post("/api/v1/recording/stop", json={"roomId": room})
    assert stopped.status_code == 200, stopped.text


def hang_up(*peers: Peer) -> None:
    """Drop the client side of connections the crash cut."""
    for peer in peers:
        try:
            peer.close()
        except Exception:  # noqa: BLE001 - the server is gone; nothing to tidy
            pass


# --- the test -------------------------------------------------------------------


@pytest.fixture
def hooks_server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data", **{"allow-private-webhook-urls": "yes"}).start()
    yield server
    server.stop()


def test_every_delivery_verifies_with_the_sdk_through_an_outage_and_a_crash(
    node: str, hooks_server: Server, tmp_path: Path
) -> None:
    server = hooks_server
    project = server.project()
    receiver = NodeReceiver(node, project.key, tmp_path).start()
    try:
        _run(server, project, receiver)
    finally:
        receiver.kill()


def _run(server: Server, project: Project, receiver: NodeReceiver) -> None:
    hook = register(project, receiver.url)
    peers: dict[str, Peer] = {}
    metadata: dict[str, str] = {}
    roles: dict[str, str] = {}

    def join(name: str, room: str, meta: str, role: str = "guest") -> Peer:
        peer = project.join(room, metadata=meta, role=role)
        peers[name], metadata[name], roles[name] = peer, meta, role
        return peer

    # 1. The endpoint is up: a session with a recording in room A; room B's
    #    session begins and stays live.
    room_a, room_b = project.create_room(), project.create_room()
    a1 = join("a1", room_a, ZOE, role="host")
    a2 = join("a2", room_a, BAREFOOT)
    recording(project, room_a)
    a1.leave()
    a2.leave()
    b1 = join("b1", room_b, CHLOE, role="host")
    assert eventually(lambda: session_ended(project, room_a), timeout=10)
    assert eventually(lambda: len(receiver.first_arrivals()) >= 10, timeout=15), receiver.lines()
    # Settled on the service's side too, before the endpoint goes.
    assert eventually(lambda: webhook_state(project, hook["id"])["pending"] == 0, timeout=10)

    # 2. The endpoint goes down. Room B: a second peer comes and goes; room C:
    #    a whole session; room A: a new session that stays live.
    receiver.kill()
    down_since = time.time() * 1000
    b2 = join("b2", room_b, DMITRI)
    b2.leave()
    room_c = project.create_room()
    c1 = join("c1", room_c, ZOE, role="speaker")
    c1.leave()
    a3 = join("a3", room_a, ADA, role="host")
    assert eventually(lambda: session_ended(project, room_c), timeout=10)
    assert a3.session_id != a1.session_id

    # 3. SIGKILL while all that is undelivered (and between two attempts),
    #    then start again on the same data. Sessions live at the crash (A's
    #    second, B's) are closed by the restart: more events, queued behind.
    wait_between_attempts(project, hook["id"], [room_a, room_b, room_c])
    assert webhook_state(project, hook["id"])["pending"] >= 6
    server.stop(kill=True)
    hang_up(a3, b1)
    server.start()

    # 4. Still down: room D's session happens after the restart.
    room_d = project.create_room()
    d1 = join("d1", room_d, DMITRI, role="listener")
    d1.leave()
    assert eventually(lambda: session_ended(project, room_d), timeout=10)
    assert eventually(
        lambda: any(e["roomId"] == room_d and e["responseStatus"] is None for e in delivery_log(project, hook["id"])),
        timeout=5,
    )

    # 5. The endpoint comes back: everything arrives.
    receiver.start()
    back_at = time.time() * 1000
    expected = {
        room_a: [
            *(STARTED, JOINED, JOINED, RECORDING_STARTED, RECORDING_ENDED, LEFT, LEFT, ENDED),
            *(STARTED, JOINED, LEFT, ENDED),
        ],
        room_b: [STARTED, JOINED, JOINED, LEFT, LEFT, ENDED],
        room_c: [STARTED, JOINED, LEFT, ENDED],
        room_d: [STARTED, JOINED, LEFT, ENDED],
    }
    total = sum(len(names) for names in expected.values())
    arrived = eventually(lambda: len(receiver.first_arrivals()) >= total, timeout=40)
    assert arrived, f"{len(receiver.first_arrivals())} of {total} events arrived: {receiver.first_arrivals()}"
    assert eventually(lambda: webhook_state(project, hook["id"])["pending"] == 0, timeout=10)

    # --- what the SDK said -------------------------------------------------
    lines = receiver.lines()
    refused = [line for line in lines if not line["verified"]]
    assert not refused, f"the SDK's WebhookReceiver rejected {len(refused)} deliveries: {refused[:3]}"
    for line in lines:
        assert (line["method"], line["path"], line["contentType"]) == ("POST", "/hook", "text/plain"), line
        assert line["eventIdHeader"] == line["id"], line
        assert list(json.loads(line["body"])) == ["id", "event", "payload"], line
        assert line["id"].startswith("evt_"), line

    # --- every event, each room's in order -----------------------------------
    first = receiver.first_arrivals()
    assert len(first) == total, [(line["event"], line["payload"].get("roomId")) for line in first]
    by_room: dict[str, list[dict[str, Any]]] = {}
    for line in first:
        by_room.setdefault(line["payload"]["roomId"], []).append(line)
    assert set(by_room) == set(expected)
    for room, names in expected.items():
        got = by_room[room]
        told = [
            (line["sequence"], line["event"], line["payload"]["sessionId"], line["payload"].get("id")) for line in got
        ]
        assert [line["event"] for line in got] == names, f"room {room}: {told}"
        assert [line["sequence"] for line in got] == list(range(1, len(names) + 1)), room
    # Duplicates (at-least-once) are the same event: same sequence, same body.
    firsts = {line["id"]: line for line in first}
    for line in lines:
        assert (line["sequence"], line["body"]) == (firsts[line["id"]]["sequence"], firsts[line["id"]]["body"])

    # --- payloads ------------------------------------------------------------
    sessions = {
        room_a: [a1.session_id, a3.session_id],
        room_b: [b1.session_id],
        room_c: [c1.session_id],
        room_d: [d1.session_id],
    }
    peers_in = {
        a1.session_id: ["a1", "a2"],
        a3.session_id: ["a3"],
        b1.session_id: ["b1", "b2"],
        c1.session_id: ["c1"],
        d1.session_id: ["d1"],
    }
    assert b2.session_id == b1.session_id
    for room, got in by_room.items():
        _check_room(room, got, sessions[room], peers_in, peers, metadata, roles)
    # Non-ASCII is sent as it is (JSON.stringify's form), not \u-escaped.
    zoe = next(line for line in first if line["event"] == JOINED and line["payload"]["id"] == a1.peer_id)
    assert "Zoë" in zoe["body"] and "🎥" in zoe["body"] and "\u2028" in zoe["body"]
    assert "\\\\u0001" in zoe["body"]  # the control character: escaped in the metadata, then its backslash

    # --- the deliveries log --------------------------------------------------
    log = delivery_log(project, hook["id"])
    ids = set(firsts)
    assert {entry["eventId"] for entry in log} == ids
    for entry in log:
        event = firsts[entry["eventId"]]
        assert (entry["event"], entry["roomId"]) == (event["event"], event["payload"]["roomId"]), entry
    delivered = {entry["eventId"] for entry in log if entry["responseStatus"] == 200}
    assert delivered == ids
    failed = [entry for entry in log if entry["responseStatus"] is None]
    assert failed, "no failed attempt was recorded while the endpoint was down"
    assert {entry["roomId"] for entry in failed} == set(expected)
    for entry in failed:
        assert down_since <= entry["at"] <= back_at + 1000, entry
        assert entry["error"], entry
    # Each event's attempts are numbered 1, 2, 3…; the one that got through is the last.
    attempts: dict[str, list[dict[str, Any]]] = {}
    for entry in reversed(log):
        attempts.setdefault(entry["eventId"], []).append(entry)
    for event_id, tries in attempts.items():
        assert [t["attempt"] for t in tries] == list(range(1, len(tries) + 1)), tries
        assert tries[-1]["responseStatus"] == 200 and all(t["responseStatus"] is None for t in tries[:-1]), event_id
    assert any(len(tries) >= 2 for tries in attempts.values())
    last = webhook_state(project, hook["id"])["lastDelivery"]
    assert last["responseStatus"] == 200 and last["eventId"] in ids

    # The service answers as before on the same data.
    assert httpx.get(server.base + "/api/v2/sdk", timeout=5).status_code == 200


def _check_room(
    room: str,
    got: list[dict[str, Any]],
    session_ids: list[str | None],
    peers_in: dict[str | None, list[str]],
    peers: dict[str, Peer],
    metadata: dict[str, str],
    roles: dict[str, str],
) -> None:
    """A room's events: its sessions one after another, each from
    meeting:started to meeting:ended, with payloads as the contract says."""
    for line in got:
        assert list(line["payload"]) == KEYS[line["event"]], line
        assert line["payload"]["roomId"] == room, line
    per_session: dict[str, list[dict[str, Any]]] = {}
    for line in got:
        per_session.setdefault(line["payload"]["sessionId"], []).append(line)
    assert list(per_session) == session_ids, room
    for session_id, lines in per_session.items():
        events = [line["event"] for line in lines]
        assert events[0] == STARTED, f"{room} {session_id}: events before meeting:started: {events}"
        assert events[-1] == ENDED, f"{room} {session_id}: events after meeting:ended: {events}"
        assert events.count(STARTED) == events.count(ENDED) == 1, events
        started, ended = lines[0]["payload"], lines[-1]["payload"]
        names = peers_in[session_id]
        joined = {line["payload"]["id"]: line["payload"] for line in lines if line["event"] == JOINED}
        left = {line["payload"]["id"]: line["payload"] for line in lines if line["event"] == LEFT}
        # The peers joined in the order they did, and each left once.
        assert list(joined) == [peers[name].peer_id for name in names], session_id
        assert set(left) == set(joined), session_id
        for name in names:
            peer_id = peers[name].peer_id
            came, went = joined[peer_id], left[peer_id]
            assert (came["metadata"], came["role"]) == (metadata[name], roles[name]), name
            assert (went["metadata"], went["role"]) == (metadata[name], roles[name]), name
            assert started["createdAt"] <= came["joinedAt"] <= went["leftAt"] <= ended["endedAt"], name
            assert went["duration"] == went["leftAt"] - came["joinedAt"], name
        assert ended["createdAt"] == started["createdAt"]
        assert ended["duration"] == ended["endedAt"] - ended["createdAt"]
        assert ended["participants"] == len(names)
        assert ended["maxParticipants"] == len(names), ended
        for line in lines:
            if line["event"] in (RECORDING_STARTED, RECORDING_ENDED):
                assert line["payload"]["streams"] == []
        jobs = [line["payload"] for line in lines if line["event"] in (RECORDING_STARTED, RECORDING_ENDED)]
        if jobs:
            begun, done = jobs
            assert begun["id"] == done["id"] and begun["id"].startswith("job_")
            assert begun["files"] == []
            (file,) = done["files"]
            assert list(file) == ["duration", "size", "filename", "location"]
            assert file["location"] == f"/api/v1/recordings/{done['id']}/download"
            assert file["size"] > 0 and file["duration"] >= 0
