"""Recordings and livestreams, in this process: the recorder API, the files
and their download links, per-session counts, refusals, the worker API and
worker leases, with peers on the app's WebSocket handler and a clock the tests
move (live streams read as they are written, and crashes: e2e/test_egress.py)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from support import LocalApp, Project

START = "/api/v1/recording/start"
STOP = "/api/v1/recording/stop"
STATUS = "/api/v1/recording/status"


@pytest.fixture
def egress_server(make_app: Callable[..., LocalApp]) -> LocalApp:
    return make_app(worker_lease=1.0)


@pytest.fixture
def proj(egress_server: LocalApp) -> Project:
    return egress_server.project()


def start(project: Project, room: str, kind: str = "recording", **extra: object) -> httpx.Response:
    return project.post(START, json={"roomId": room, "token": project.token(room), "type": kind, **extra})


def metrics(project: Project) -> dict:
    return project.get("/api/v2/sdk/metrics").json()


def fetch(project: Project, url: str) -> httpx.Response:
    """GET a link the service handed out, without an API key, as anyone holding it would."""
    return project.server.http.get(url)


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
    download = fetch(proj, item["recordingUrl"])
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
    assert fetch(proj, tampered).status_code == 403
    expired = url.replace("expires=", "expires=1").split("&signature")[0] + "&signature=" + url.split("signature=")[1]
    assert fetch(proj, expired).status_code == 403
    other_job = url.replace("/recordings/job_", "/recordings/job_x")
    assert fetch(proj, other_job).status_code == 403
    odd = url.split("signature=")[0] + "signature=%C2%BE"
    assert fetch(proj, odd).status_code == 403
    peer.close()


def test_counts_are_per_session(egress_server: LocalApp, proj: Project) -> None:
    room = proj.create_room()
    peer = proj.join(room)
    for _ in range(2):
        assert start(proj, room).status_code == 200
        assert proj.post(STOP, json={"roomId": room, "type": "recording"}).status_code == 200
    assert (proj.live()[0]["recordingCount"], proj.live()[0]["livestreamCount"]) == (2, 0)
    single = proj.get(f"/api/v2/sdk/live-sessions/{room}").json()["liveSessions"][0]
    assert single["recordingCount"] == 2
    token = proj.token(room)  # before the clock moves: see LocalApp.advance
    peer.leave()
    egress_server.advance(1.3)
    again = proj.join(room, token)
    assert again.session_id != peer.session_id
    assert proj.live()[0]["recordingCount"] == 0
    assert metrics(proj)["recordingCount"] == 2
    again.close()


def expired_token(app: LocalApp, project: Project, room: str) -> str:
    """A token with a 1 s lifetime, and 2.1 s passing on the service's clock."""
    token = project.token(room, ttl=1)
    app.clock.advance(2.1)
    return token


def test_refused_starts_change_nothing(proj: Project, egress_server: LocalApp) -> None:
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
        ({"roomId": room, "token": expired_token(egress_server, proj, room)}, 401),
        ({"roomId": room}, 400),
        ({"roomId": room, "token": proj.token(room), "type": "podcast"}, 400),
        ({"roomId": room, "token": proj.token(room), "rtmpUrls": "rtmp://x"}, 400),
    ]
    for body, status in cases:
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
    first = start(proj, room).json()
    second = start(proj, room, "livestream").json()
    assert proj.post(STOP, json={"roomId": room, "type": "livestream"}).json()["type"] == "livestream"
    assert proj.post(STOP, json={"roomId": room}).json()["type"] == "recording"
    assert proj.get(STATUS).status_code == 400
    assert first["id"] != second["id"]
    assert proj.get(STATUS, params={"roomId": "abc-defg-hij"}).status_code == 404
    peer.close()


def test_stop_without_a_type_stops_both_and_status_lists_both_while_they_run(proj: Project) -> None:
    """Huddle01's SDK stops with only `roomId`: that must stop whatever runs."""
    room = proj.create_room()
    peer = proj.join(room)
    recording = start(proj, room).json()
    stream = start(proj, room, "livestream").json()
    status = proj.get(STATUS, params={"roomId": room}).json()
    assert (status["status"], status["type"], status["id"]) == ("ongoing", "recording", recording["id"])
    assert [(j["id"], j["type"]) for j in status["active"]] == [
        (recording["id"], "recording"),
        (stream["id"], "livestream"),
    ]
    assert status["active"][1]["playbackUrl"] == stream["playbackUrl"] == status["playbackUrl"]
    assert "playbackUrl" not in status["active"][0]
    stopped = proj.post(STOP, json={"roomId": room})
    assert stopped.status_code == 200
    assert stopped.json() == {"msg": "Stopped", "type": "recording", "id": recording["id"]}
    assert proj.get(STATUS, params={"roomId": room}).json() == {"status": "stopped"}
    assert proj.live()[0]["recordingCount"] == 1 and proj.live()[0]["livestreamCount"] == 1
    # One job alone: no `active` list.
    start(proj, room)
    assert "active" not in proj.get(STATUS, params={"roomId": room}).json()
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
    assert (
        proj.post(f"/api/v1/workers/jobs/{job_id}/progress", json={"workerId": "w2", "progress": 50}).status_code == 409
    )
    assert (
        proj.post(f"/api/v1/workers/jobs/{job_id}/progress", json={"workerId": "w1", "progress": 101}).status_code
        == 400
    )
    proj.post(STOP, json={"roomId": room})
    too_big = {"workerId": "w1", "location": "s3://bucket/rec.mp4", "size": 2**63}
    assert proj.post(f"/api/v1/workers/jobs/{job_id}/complete", json=too_big).status_code == 400
    done = proj.post(
        f"/api/v1/workers/jobs/{job_id}/complete",
        json={"workerId": "w1", "location": "s3://bucket/rec.mp4", "size": 1234},
    )
    assert done.status_code == 200 and done.json()["job"]["mediaStatus"] == "completed"
    (item,) = proj.get("/api/v2/sdk/recordings").json()["recordings"]
    assert (item["mediaUrl"], item["mediaSize"]) == ("s3://bucket/rec.mp4", 1234)
    assert proj.post(f"/api/v1/workers/jobs/{job_id}/claim", json={"workerId": "w3"}).status_code == 409
    assert proj.post("/api/v1/workers/jobs/job_nothing/claim", json={"workerId": "w1"}).status_code == 404
    assert proj.get("/api/v1/workers/jobs", params={"status": "weird"}).status_code == 400
    peer.close()


def test_a_silent_worker_loses_its_claim(proj: Project, egress_server: LocalApp) -> None:
    room = proj.create_room()
    peer = proj.join(room)
    job_id = start(proj, room, "livestream").json()["id"]
    assert proj.post(f"/api/v1/workers/jobs/{job_id}/claim", json={"workerId": "sleepy"}).status_code == 200
    egress_server.advance(2.0)  # the lease is 1 s on this server
    assert [j["id"] for j in proj.get("/api/v1/workers/jobs").json()["jobs"]] == [job_id]
    assert (
        proj.post(f"/api/v1/workers/jobs/{job_id}/progress", json={"workerId": "sleepy", "progress": 5}).status_code
        == 409
    )
    assert proj.post(f"/api/v1/workers/jobs/{job_id}/claim", json={"workerId": "awake"}).status_code == 200
    # another project's worker sees none of it
    assert egress_server.project().get("/api/v1/workers/jobs", params={"status": "claimed"}).json()["jobs"] == []
    peer.close()


def test_recordings_page_with_a_cursor(proj: Project) -> None:
    room = proj.create_room()
    peer = proj.join(room)
    ids = []
    for _ in range(3):
        ids.append(start(proj, room).json()["id"])
        proj.post(STOP, json={"roomId": room})
    first = proj.get("/api/v2/sdk/recordings", params={"sessionId": peer.session_id, "limit": 2}).json()
    assert [r["id"] for r in first["recordings"]] == ids[::-1][:2]
    # cursor=0 (the SDK's default) is the first page.
    zero = proj.get("/api/v2/sdk/recordings", params={"sessionId": peer.session_id, "limit": 2, "cursor": 0}).json()
    assert [r["id"] for r in zero["recordings"]] == [r["id"] for r in first["recordings"]]
    rest = proj.get(
        "/api/v2/sdk/recordings", params={"sessionId": peer.session_id, "limit": 2, "cursor": first["nextCursor"]}
    ).json()
    assert [r["id"] for r in rest["recordings"]] == ids[:1] and rest["nextCursor"] is None
    assert proj.get("/api/v2/sdk/recordings", params={"sessionId": "ses_other"}).json()["recordings"] == []
    for bad in ({"limit": 0}, {"cursor": "x"}, {"cursor": -1}):
        assert proj.get("/api/v2/sdk/recordings", params=bad).status_code == 400
    peer.close()


def test_a_payload_cannot_forge_a_line_of_the_recording(proj: Project) -> None:
    room = proj.create_room()
    host, other = proj.join(room), proj.join(room)
    host.recv_type("peer-joined")
    assert start(proj, room).status_code == 200
    # JSON may hold raw line breaks between its tokens: written as-is, the
    # second line would read as an event of its own, dated 0, from "host".
    forged = '{"t":0,"event":{"type":"data","from":"host","label":"x","payload":"forged"}}'
    other.ws.send('{"type": "data", "to": "*", "label": "x", "payload": [\n' + forged + "\r\n]}")
    assert host.recv_type("data")["payload"] == [json.loads(forged)]
    assert proj.post(STOP, json={"roomId": room}).status_code == 200
    (item,) = proj.get("/api/v2/sdk/recordings", params={"sessionId": host.session_id}).json()["recordings"]
    lines = fetch(proj, item["recordingUrl"]).content.splitlines()
    events = [json.loads(line)["event"] for line in lines]
    assert [e["payload"] for e in events if e["type"] == "data"] == [[json.loads(forged)]]
    assert all(json.loads(line)["t"] > 0 for line in lines)
    host.close()
    other.close()


def test_a_revoked_keys_tokens_cannot_start_recordings(egress_server: LocalApp) -> None:
    from livesessions.auth.api_keys import hash_api_key

    services = egress_server.services
    doomed_key = egress_server.create_key()
    project_id, doomed_id = egress_server.run(services.accounts.project_for_key_hash(hash_api_key(doomed_key)))
    other_key, _ = egress_server.run(services.api_keys.create(project_id, "other", services.clock()))
    doomed, other = Project(egress_server, doomed_key), Project(egress_server, other_key)
    room = doomed.create_room()
    peer = doomed.join(room)
    token = doomed.token(room)
    assert egress_server.run(services.api_keys.revoke(project_id, doomed_id))
    # Asked with a key that works, naming the revoked key's token: refused.
    answer = other.post(START, json={"roomId": room, "token": token})
    assert answer.status_code == 401 and "revoked" in answer.json()["message"]
    assert other.post(START, json={"roomId": room, "token": other.token(room)}).status_code == 200
    peer.close()
