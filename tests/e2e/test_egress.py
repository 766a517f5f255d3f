"""Recordings and livestreams: the recorder API, the files, the live stream,
the worker API, and what survives a crash."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from support import Project, Server

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


def test_a_recording_holds_what_the_peers_sent(proj: Project) -> None:
    room = proj.create_room()
    alice = proj.join(room, metadata="alice")
    response = start(proj, room)
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    assert response.json()["msg"] == "Recording started"
    bob = proj.join(room, metadata="bob")
    sent = [{"n": i, "text": "hello"} for i in range(5)]
    for payload in sent:
        alice.send({"type": "data", "to": "*", "label": "chat", "payload": payload})
        bob.recv_type("data")
    bob.send({"type": "update-metadata", "metadata": "bobby"})
    alice.recv_type("metadata-updated")
    bob.leave()
    alice.recv_type("peer-left")
    # The recorder is a bot: not counted, not in the participants
    assert proj.live()[0]["currentPeerCount"] == 1
    assert proj.live()[0]["recordingCount"] == 1
    assert proj.get(f"/api/v2/sdk/live-sessions/participants/{room}").json()["count"] == 1

    stopped = proj.post(STOP, json={"roomId": room})
    assert stopped.json() == {"msg": "Stopped", "type": "recording", "id": job_id}
    listing = proj.get("/api/v2/sdk/recordings", params={"sessionId": alice.session_id}).json()
    (item,) = listing["recordings"]
    assert item["id"] == job_id and listing["nextCursor"] is None
    download = httpx.get(item["recordingUrl"])
    assert download.status_code == 200
    assert len(download.content) == item["recordingSize"]
    lines = [json.loads(line) for line in download.content.splitlines()]
    events = [line["event"] for line in lines]
    assert events[0]["type"] == "joined" and [p["peerId"] for p in events[0]["peers"]] == [alice.peer_id]
    assert [e["payload"] for e in events if e["type"] == "data"] == sent
    assert {"type": "metadata-updated", "peerId": bob.peer_id, "metadata": "bobby"} in events
    assert {"type": "peer-left", "peerId": bob.peer_id} in events
    assert events[1]["type"] == "peer-joined" and events[1]["peer"]["peerId"] == bob.peer_id
    times = [line["t"] for line in lines]
    assert times == sorted(times)
    participants = proj.get("/api/v2/sdk/rooms/participant-list", params={"sessionId": alice.session_id}).json()
    assert {p["peerId"] for p in participants["participants"]} == {alice.peer_id, bob.peer_id}
    alice.close()


def test_download_links_are_signed_and_expire(proj: Project) -> None:
    room = proj.create_room()
    peer = proj.join(room)
    start(proj, room)
    proj.post(STOP, json={"roomId": room})
    url = proj.get("/api/v2/sdk/recordings").json()["recordings"][0]["recordingUrl"]
    tampered = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    assert httpx.get(tampered).status_code == 403
    expired = url.replace("expires=", "expires=1").split("&signature")[0] + "&signature=" + url.split("signature=")[1]
    assert httpx.get(expired).status_code == 403
    other_job = url.replace("/recordings/job_", "/recordings/job_x")
    assert httpx.get(other_job).status_code == 403
    odd = url.split("signature=")[0] + "signature=%C2%BE"
    assert httpx.get(odd).status_code == 403
    peer.close()


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


def test_counts_are_per_session(proj: Project) -> None:
    room = proj.create_room()
    peer = proj.join(room)
    for _ in range(2):
        assert start(proj, room).status_code == 200
        assert proj.post(STOP, json={"roomId": room, "type": "recording"}).status_code == 200
    assert (proj.live()[0]["recordingCount"], proj.live()[0]["livestreamCount"]) == (2, 0)
    single = proj.get(f"/api/v2/sdk/live-sessions/{room}").json()["liveSessions"][0]
    assert single["recordingCount"] == 2
    peer.leave()
    time.sleep(1.3)
    again = proj.join(room)
    assert again.session_id != peer.session_id
    assert proj.live()[0]["recordingCount"] == 0
    assert metrics(proj)["recordingCount"] == 2
    again.close()


def test_refused_starts_change_nothing(proj: Project, egress_server: Server) -> None:
    room = proj.create_room()
    assert start(proj, room).status_code == 409  # not live
    peer = proj.join(room)
    other = egress_server.project()
    theirs = other.create_room()
    other_peer = other.join(theirs)
    cases = [
        ({"roomId": theirs, "token": other.token(theirs)}, 404),
        ({"roomId": "abc-defg-hij", "token": proj.token(room)}, 404),
        ({"roomId": room, "token": "garbage"}, 401),
        ({"roomId": room, "token": proj.token(proj.create_room())}, 401),
        ({"roomId": room, "token": proj.token(room, ttl=1), "_sleep": 2.1}, 401),
        ({"roomId": room}, 400),
        ({"roomId": room, "token": proj.token(room), "type": "podcast"}, 400),
        ({"roomId": room, "token": proj.token(room), "rtmpUrls": "rtmp://x"}, 400),
    ]
    for body, status in cases:
        if body.pop("_sleep", None):
            time.sleep(2.1)
        response = proj.post(START, json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["message"] if status != 400 else response.json()["success"] is False
    assert start(proj, room).status_code == 200
    second = start(proj, room)
    assert second.status_code == 409 and "already active" in second.json()["message"]
    assert proj.live()[0]["recordingCount"] == 1
    assert metrics(proj)["recordingCount"] == 1
    assert proj.post(START, content=b"{", headers={"content-type": "application/json"}).status_code == 400
    assert other.live()[0]["recordingCount"] == 0
    peer.close()
    other_peer.close()


def test_stop_and_status_errors(proj: Project) -> None:
    room = proj.create_room()
    peer = proj.join(room)
    assert proj.post(STOP, json={"roomId": room}).status_code == 404
    assert proj.post(STOP, json={"roomId": "abc-defg-hij"}).status_code == 404
    assert proj.post(STOP, json={}).status_code == 400
    assert proj.post(STOP, json={"roomId": room, "type": "tv"}).status_code == 400
    start(proj, room)
    start(proj, room, "livestream")
    both = proj.post(STOP, json={"roomId": room})
    assert both.status_code == 409
    assert proj.post(STOP, json={"roomId": room, "type": "livestream"}).json()["type"] == "livestream"
    assert proj.post(STOP, json={"roomId": room}).json()["type"] == "recording"
    assert proj.get(STATUS).status_code == 400
    assert proj.get(STATUS, params={"roomId": "abc-defg-hij"}).status_code == 404
    peer.close()


def test_media_workers_claim_report_and_complete(proj: Project) -> None:
    room = proj.create_room()
    peer = proj.join(room)
    job_id = start(proj, room).json()["id"]
    pending = proj.get("/api/v1/workers/jobs").json()["jobs"]
    assert [j["id"] for j in pending] == [job_id] and pending[0]["mediaStatus"] == "pending"
    claim = proj.post(f"/api/v1/workers/jobs/{job_id}/claim", json={"workerId": "w1"})
    assert claim.status_code == 200 and claim.json()["job"]["workerId"] == "w1"
    assert proj.post(f"/api/v1/workers/jobs/{job_id}/claim", json={"workerId": "w2"}).status_code == 409
    assert proj.get("/api/v1/workers/jobs").json()["jobs"] == []
    progress = proj.post(f"/api/v1/workers/jobs/{job_id}/progress", json={"workerId": "w1", "progress": 40})
    assert progress.json()["job"]["progress"] == 40
    assert proj.post(f"/api/v1/workers/jobs/{job_id}/progress", json={"workerId": "w2", "progress": 50}).status_code == 409
    assert proj.post(f"/api/v1/workers/jobs/{job_id}/progress", json={"workerId": "w1", "progress": 101}).status_code == 400
    proj.post(STOP, json={"roomId": room})
    too_big = {"workerId": "w1", "location": "s3://bucket/rec.mp4", "size": 2**63}
    assert proj.post(f"/api/v1/workers/jobs/{job_id}/complete", json=too_big).status_code == 400
    done = proj.post(f"/api/v1/workers/jobs/{job_id}/complete",
                     json={"workerId": "w1", "location": "s3://bucket/rec.mp4", "size": 1234})
    assert done.status_code == 200 and done.json()["job"]["mediaStatus"] == "completed"
    (item,) = proj.get("/api/v2/sdk/recordings").json()["recordings"]
    assert (item["mediaUrl"], item["mediaSize"]) == ("s3://bucket/rec.mp4", 1234)
    assert proj.post(f"/api/v1/workers/jobs/{job_id}/claim", json={"workerId": "w3"}).status_code == 409
    assert proj.post("/api/v1/workers/jobs/job_nothing/claim", json={"workerId": "w1"}).status_code == 404
    assert proj.get("/api/v1/workers/jobs", params={"status": "weird"}).status_code == 400
    peer.close()


def test_a_silent_worker_loses_its_claim(proj: Project, egress_server: Server) -> None:
    room = proj.create_room()
    peer = proj.join(room)
    job_id = start(proj, room, "livestream").json()["id"]
    assert proj.post(f"/api/v1/workers/jobs/{job_id}/claim", json={"workerId": "sleepy"}).status_code == 200
    time.sleep(2.0)  # the lease is 1 s on this server
    assert [j["id"] for j in proj.get("/api/v1/workers/jobs").json()["jobs"]] == [job_id]
    assert proj.post(f"/api/v1/workers/jobs/{job_id}/progress", json={"workerId": "sleepy", "progress": 5}).status_code == 409
    assert proj.post(f"/api/v1/workers/jobs/{job_id}/claim", json={"workerId": "awake"}).status_code == 200
    # another project's worker sees none of it
    assert egress_server.project().get("/api/v1/workers/jobs", params={"status": "claimed"}).json()["jobs"] == []
    peer.close()


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
    fresh_server.stop(kill=True)
    peer.close()
    other.close()
    fresh_server.start()
    (item,) = proj.get("/api/v2/sdk/recordings").json()["recordings"]
    assert item["id"] == job_id
    events = [json.loads(line)["event"] for line in httpx.get(item["recordingUrl"]).content.splitlines()]
    assert [e["payload"] for e in events if e["type"] == "data"] == [0, 1, 2]
    assert proj.get(STATUS, params={"roomId": room}).json() == {"status": "stopped"}
    cancelled = proj.get("/api/v1/workers/jobs", params={"status": "cancelled"}).json()["jobs"]
    assert {j["id"] for j in cancelled} == {job_id, stream}
    assert all(not j["active"] and j["stoppedAt"] >= j["startedAt"] for j in cancelled)




def test_recordings_page_with_a_cursor(proj: Project) -> None:
    room = proj.create_room()
    peer = proj.join(room)
    ids = []
    for _ in range(3):
        ids.append(start(proj, room).json()["id"])
        proj.post(STOP, json={"roomId": room})
    first = proj.get("/api/v2/sdk/recordings", params={"sessionId": peer.session_id, "limit": 2}).json()
    assert [r["id"] for r in first["recordings"]] == ids[::-1][:2]
    rest = proj.get("/api/v2/sdk/recordings", params={"sessionId": peer.session_id, "limit": 2,
                                                      "cursor": first["nextCursor"]}).json()
    assert [r["id"] for r in rest["recordings"]] == ids[:1] and rest["nextCursor"] is None
    assert proj.get("/api/v2/sdk/recordings", params={"sessionId": "ses_other"}).json()["recordings"] == []
    for bad in ({"limit": 0}, {"cursor": "x"}):
        assert proj.get("/api/v2/sdk/recordings", params=bad).status_code == 400
    peer.close()
