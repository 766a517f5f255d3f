"""What survives a restart or a crash of the server process: the signing key,
rooms, keys and finished sessions; sessions live at a crash or a stop are
closed at their last known time.

The tests take turns with one server: each finds it running, restarts it
(stop or SIGKILL, then start) and leaves it running for the next. Each works
in a project of its own."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from support import Project, Server, eventually


@pytest.fixture(scope="module")
def restarting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A short grace, so sessions end soon after their last peer leaves; no
    # heartbeat while a test runs, so what a crash leaves behind is the join.
    instance = Server(tmp_path_factory.mktemp("restarts") / "data", **{"grace-period": 0.2, "heartbeat-interval": 3600})
    yield instance
    instance.stop()


@pytest.fixture
def fresh_server(restarting: Server) -> Server:
    """The module's server, running (whatever the last test left)."""
    if restarting.process is None:
        restarting.start()
    return restarting


def _claims(server: Server, token: str) -> dict:
    jwks = httpx.get(server.base + "/jwks.json").json()
    key = jwt.PyJWK(jwks["keys"][0])
    assert jwt.get_unverified_header(token)["kid"] == jwks["keys"][0]["kid"]
    return jwt.decode(token, key.key, algorithms=["ES256"])


def _sessions(project: Project, room: str, **params: object) -> dict:
    response = project.get("/api/v2/sdk/rooms/session-details", params={"roomId": room, **params})
    assert response.status_code == 200, response.text
    return response.json()


def test_the_signing_key_survives_restarts(fresh_server: Server) -> None:
    before = httpx.get(fresh_server.base + "/jwks.json").json()
    project = fresh_server.project()
    token = project.token(project.create_room())
    fresh_server.stop()
    fresh_server.start()
    assert httpx.get(fresh_server.base + "/jwks.json").json() == before
    _claims(fresh_server, token)


def test_restart_keeps_rooms_keys_and_finished_sessions(fresh_server: Server) -> None:
    project = fresh_server.project()
    room = project.create_room(metadata={"keep": "me"})
    peer = project.join(room)
    peer.leave()
    eventually(lambda: _sessions(project, room)["sessions"][0]["endTime"] is not None)
    finished = _sessions(project, room)["sessions"]
    assert finished[0]["endTime"] is not None
    fresh_server.stop()
    fresh_server.start()
    assert project.get(f"/api/v2/sdk/rooms/room-details/{room}").json()["metadata"] == {"keep": "me"}
    assert _sessions(project, room)["sessions"] == finished


# Scaled out, a crashed node's peers are reaped by the nodes that outlive it,
# at its last heartbeat (tests/e2e/test_cluster.py).
@pytest.mark.embedded_only
def test_sessions_live_at_a_crash_are_closed_at_their_last_known_time(fresh_server: Server) -> None:
    project = fresh_server.project()
    room = project.create_room()
    peer = project.join(room)
    time.sleep(0.1)
    joined_at = project.live()[0]["startTime"]
    fresh_server.stop(kill=True)  # SIGKILL: no chance to tidy up
    peer.close()
    fresh_server.start()
    assert project.live() == []
    (session,) = _sessions(project, room)["sessions"]
    assert session["sessionId"] == peer.session_id
    # The last thing known before the crash was the join (no heartbeat on this server).
    assert session["endTime"] == joined_at
    participants = project.get("/api/v2/sdk/rooms/participant-list", params={"sessionId": session["sessionId"]}).json()
    assert participants["participants"][0]["exitTime"] == joined_at
    # A rejoin starts a new session rather than reviving the closed one.
    again = project.join(room)
    assert again.session_id != peer.session_id
    again.close()


def test_graceful_stop_closes_live_sessions_at_shutdown(fresh_server: Server) -> None:
    project = fresh_server.project()
    room = project.create_room()
    peer = project.join(room)
    before_stop = int(time.time() * 1000)
    fresh_server.stop()
    peer.close()
    fresh_server.start()
    # At once (embedded), or once its grace is over (scaled out: the room
    # emptied as the node stopped, and another node, here the restarted one,
    # ends the session).
    (session,) = eventually(lambda: [s for s in _sessions(project, room)["sessions"] if s["endTime"]], timeout=10)
    assert session["endTime"] >= before_stop - 50
