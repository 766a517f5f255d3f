"""The live event stream over a real socket: snapshot, changes as they
happen, resuming with Last-Event-ID, the account token, a slow reader."""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from support import Project, Server

EVENTS = "/api/v2/sdk/live-sessions/events"


@dataclass
class Message:
    event: str
    data: Any
    id: str | None


class Stream:
    """An SSE client on a thread of its own; messages arrive on a queue."""

    def __init__(self, server: Server, headers: dict[str, str]) -> None:
        self.messages: queue.Queue[Message | None] = queue.Queue()
        self.status: int | None = None
        self.content_type = ""
        self._client = httpx.Client(base_url=server.base, headers=headers, timeout=httpx.Timeout(5, read=60))
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self._started.wait(10)

    def _read(self) -> None:
        try:
            with self._client.stream("GET", EVENTS) as answer:
                self.status = answer.status_code
                self.content_type = answer.headers.get("content-type", "")
                self._started.set()
                fields: dict[str, str] = {}
                for line in answer.iter_lines():
                    if line == "":
                        if "event" in fields:
                            self.messages.put(Message(fields["event"], json.loads(fields["data"]), fields.get("id")))
                        fields = {}
                    elif not line.startswith(":"):
                        name, _, value = line.partition(": ")
                        fields[name] = value
        except httpx.HTTPError:
            pass
        finally:
            self._started.set()
            self.messages.put(None)

    def next(self, timeout: float = 10) -> Message:
        message = self.messages.get(timeout=timeout)
        assert message is not None, "the stream ended"
        return message

    def until(self, event: str, timeout: float = 10) -> list[Message]:
        """Messages up to and including the next `event`."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.1, deadline - time.monotonic()))
            seen.append(message)
            if message.event == event:
                return seen

    def close(self) -> None:
        self._client.close()


def test_snapshot_then_each_change_as_it_happens(server: Server, project: Project) -> None:
    room = project.create_room()
    first = project.join(room)
    stream = Stream(server, {"x-api-key": project.key})
    try:
        assert stream.status == 200 and stream.content_type.startswith("text/event-stream")
        snapshot = stream.next()
        assert snapshot.event == "snapshot"
        (item,) = snapshot.data["liveSessions"]
        assert item["roomId"] == room and item["currentPeerCount"] == 1
        second = project.join(room)
        seen = stream.until("live-session:updated")
        joined = next(m for m in seen if m.event == "peer:joined")
        assert joined.data["id"] == second.peer_id and joined.id and joined.id.startswith("evt_")
        assert seen[-1].data == {**item, "currentPeerCount": 2}
        second.leave()
        first.leave()
        # Scaled out, the room may leave the list (presence) a moment before
        # the second peer:left is read back from the log: the order of those
        # two is not fixed, but both come, then the session's end.
        seen = stream.until("meeting:ended", timeout=15)
        assert [m.data["id"] for m in seen if m.event == "peer:left"] == [second.peer_id, first.peer_id]
        assert {"roomId": room} in [m.data for m in seen if m.event == "live-session:removed"]
        ended = seen[-1]
        assert ended.data["roomId"] == room and ended.data["participants"] == 2
    finally:
        stream.close()


def test_resuming_with_last_event_id_misses_nothing(server: Server, project: Project) -> None:
    room = project.create_room()
    stream = Stream(server, {"x-api-key": project.key})
    peers = [project.join(room)]
    seen = stream.until("peer:joined")
    last_id = seen[-1].id
    assert last_id is not None
    stream.close()
    # while nobody listens
    peers.append(project.join(room))
    peers[0].leave()
    resumed = Stream(server, {"x-api-key": project.key, "last-event-id": last_id})
    try:
        replayed = resumed.until("peer:left")
        events = [m for m in replayed if m.id is not None]
        assert [m.event for m in events] == ["peer:joined", "peer:left"]
        assert events[0].data["id"] == peers[1].peer_id and events[1].data["id"] == peers[0].peer_id
        assert all(m.event != "snapshot" for m in replayed)
    finally:
        resumed.close()
    # an id that is not (or no longer) in the log: a fresh snapshot
    unknown = Stream(server, {"x-api-key": project.key, "last-event-id": "evt_gone"})
    try:
        snapshot = unknown.next()
        assert snapshot.event == "snapshot" and [s["roomId"] for s in snapshot.data["liveSessions"]] == [room]
    finally:
        unknown.close()
    peers[1].leave()


def test_another_projects_events_never_show(server: Server, project: Project, other_project: Project) -> None:
    stream = Stream(server, {"x-api-key": project.key})
    try:
        assert stream.next().event == "snapshot"
        other_project.join(other_project.create_room()).leave()
        mine = project.create_room()
        project.join(mine).leave()
        seen = stream.until("peer:left")
        assert {m.data["roomId"] for m in seen if "roomId" in m.data} == {mine}
    finally:
        stream.close()


def test_without_a_key_or_token_it_is_401(server: Server) -> None:
    assert httpx.get(server.base + EVENTS).status_code == 401
    assert httpx.get(server.base + EVENTS, headers={"x-api-key": "nope"}).status_code == 401
    assert httpx.get(server.base + EVENTS, headers={"authorization": "Bearer nope"}).status_code == 401


def test_revoking_the_key_ends_its_stream(server: Server) -> None:
    import subprocess

    from support import BIN, new_wallet

    wallet = new_wallet()
    project = Project(server, server.create_key(wallet))
    where = ["--database-url", server.database_url] if server.database_url else ["--data-dir", str(server.data_dir)]
    stream = Stream(server, {"x-api-key": project.key})
    try:
        assert stream.next().event == "snapshot"
        listed = subprocess.run(
            [str(BIN), "keys", "list", "--wallet", wallet, "--json", *where], check=True, capture_output=True, text=True
        ).stdout
        (key_id,) = [json.loads(line)["id"] for line in listed.splitlines() if line.strip()]
        subprocess.run([str(BIN), "keys", "revoke", key_id, *where], check=True, capture_output=True)
        # looked at again by the next keep-alive (every 15 s; the server
        # hears of the revocation within its heartbeat): the stream ends
        assert stream.messages.get(timeout=45) is None
    finally:
        stream.close()
