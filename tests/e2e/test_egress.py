"""Recordings and livestreams over real connections: live streams read as
they are written, jobs ended with the session, and what survives a crash (the
recorder and worker APIs in this process: api/test_egress_http.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from support import Project, Server, eventually

START = "/api/v1/recording/start"
STOP = "/api/v1/recording/stop"
STATUS = "/api/v1/recording/status"


@pytest.fixture(scope="module")
def egress_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("egress") / "data", **{"worker-lease": 1}).start()
    yield server
    server.stop()


@pytest.fixture
def proj(egress_server: Server) -> Project:
    return egress_server.project()


def start(project: Project, room: str, kind: str = "recording", **extra: object) -> httpx.Response:
    return project.post(START, json={"roomId": room, "token": project.token(room), "type": kind, **extra})


def metrics(project: Project) -> dict:
    return project.get("/api/v2/sdk/metrics").json()


class Viewer:
    """A livestream viewer: reads the SSE stream on a thread, like `curl -N`."""

    def __init__(self, url: str) -> None:
        self.events: list[dict] = []
        self.ended = threading.Event()
        self.status: int | None = None
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()
        assert self._opened.wait(5)

    def _run(self, url: str) -> None:
        with httpx.stream("GET", url, timeout=30) as response:
            self.status = response.status_code
            self.content_type = response.headers.get("content-type")
            self._opened.set()
            event = None
            for line in response.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    if event == "end":
                        self.ended.set()
                    else:
                        self.events.append(json.loads(line[6:]))
                    event = None
        self.ended.set()

    def wait_for(self, count: int, timeout: float = 5) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.events


def test_a_livestream_is_live_for_any_number_of_viewers(proj: Project) -> None:
    room = proj.create_room()
    host = proj.join(room)
    response = start(proj, room, "livestream", rtmpUrls=["rtmp://a.example/live/key"])
    assert response.status_code == 200
    playback = response.json()["playbackUrl"]
    assert len(playback.rsplit("/", 1)[1]) >= 32
    status = proj.get(STATUS, params={"roomId": room}).json()
    assert status["status"] == "ongoing" and status["type"] == "livestream" and status["playbackUrl"] == playback
    early = Viewer(playback)
    assert early.status == 200 and early.content_type.startswith("text/event-stream")
    host.send({"type": "data", "to": "*", "label": "chat", "payload": "first"})
    assert [e.get("payload") for e in early.wait_for(1)] == ["first"]
    late = Viewer(playback)
    host.send({"type": "data", "to": "*", "label": "chat", "payload": "second"})
    assert [e.get("payload") for e in early.wait_for(2)] == ["first", "second"]
    assert [e.get("payload") for e in late.wait_for(1)] == ["second"]  # from its join onward
    assert proj.live()[0]["livestreamCount"] == 1
    proj.post(STOP, json={"roomId": room, "type": "livestream"})
    assert early.ended.wait(5) and late.ended.wait(5)
    assert httpx.get(playback).status_code == 410
    assert proj.get(STATUS, params={"roomId": room}).json() == {"status": "stopped"}
    jobs = proj.get("/api/v1/workers/jobs", params={"status": "cancelled"}).json()["jobs"]
    assert jobs[0]["rtmpUrls"] == ["rtmp://a.example/live/key"]
    assert httpx.get(playback.rsplit("/", 1)[0] + "/not-a-stream").status_code == 404
    host.close()


def test_the_session_ending_finalizes_jobs(proj: Project) -> None:
    room = proj.create_room()
    peer = proj.join(room)
    assert start(proj, room).status_code == 200
    stream = start(proj, room, "livestream").json()["playbackUrl"]
    viewer = Viewer(stream)
    peer.leave()
    # grace is 1 s on this server: the session, and with it the jobs, then end
    assert viewer.ended.wait(5)
    deadline = time.monotonic() + 5
    while not proj.get("/api/v2/sdk/recordings").json()["recordings"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(proj.get("/api/v2/sdk/recordings").json()["recordings"]) == 1
    assert proj.get(STATUS, params={"roomId": room}).json() == {"status": "stopped"}
    assert metrics(proj)["recordingCount"] == 1 and metrics(proj)["livestreamCount"] == 1


def test_a_crash_mid_recording_keeps_what_was_written(fresh_server: Server) -> None:
    fresh_server.start()
    proj = fresh_server.project()
    room = proj.create_room()
    peer = proj.join(room)
    other = proj.join(room)
    job_id = start(proj, room).json()["id"]
    stream = start(proj, room, "livestream").json()["id"]
    for i in range(3):
        peer.send({"type": "data", "to": "*", "label": "chat", "payload": i})
        other.recv_type("data")
    # Written by the recorder's own thread a moment after the peers have it:
    # the crash comes once it is on disk (what a crash keeps is what was written).
    path = fresh_server.data_dir / "recordings" / f"{job_id}.jsonl"
    assert eventually(lambda: path.exists() and path.read_bytes().count(b'"label":"chat"') == 3)
    fresh_server.stop(kill=True)
    peer.close()
    other.close()
    fresh_server.start()
    # Finalized at the start (embedded), or once the dead node's lease has
    # run out and its bots are reaped (scaled out: within seconds).
    (item,) = eventually(lambda: proj.get("/api/v2/sdk/recordings").json()["recordings"], timeout=20)
    assert item["id"] == job_id
    events = [json.loads(line)["event"] for line in httpx.get(item["recordingUrl"]).content.splitlines()]
    assert [e["payload"] for e in events if e["type"] == "data"] == [0, 1, 2]
    assert proj.get(STATUS, params={"roomId": room}).json() == {"status": "stopped"}
    cancelled = proj.get("/api/v1/workers/jobs", params={"status": "cancelled"}).json()["jobs"]
    assert {j["id"] for j in cancelled} == {job_id, stream}
    assert all(not j["active"] and j["stoppedAt"] >= j["startedAt"] for j in cancelled)
