"""Session history and metrics (the app in this process, with peers on its
WebSocket handler and a clock the tests move; what survives a restart or a
crash: e2e/test_restarts.py)."""

from __future__ import annotations

import time

from support import LocalApp, Project


def _sessions(project: Project, room: str, **params: object) -> dict:
    response = project.get("/api/v2/sdk/rooms/session-details", params={"roomId": room, **params})
    assert response.status_code == 200, response.text
    return response.json()


def test_participant_list_records_joins_exits_and_metadata(project: Project) -> None:
    room = project.create_room()
    a = project.join(room, metadata="a0")
    b = project.join(room, metadata="b0")
    a.send({"type": "update-metadata", "metadata": "a1"})
    a.recv_type("metadata-updated")
    b.leave()
    session = _sessions(project, room)["sessions"][0]
    assert session["endTime"] is None
    participants = project.get("/api/v2/sdk/rooms/participant-list", params={"sessionId": session["sessionId"]}).json()
    rows = {p["peerId"]: p for p in participants["participants"]}
    assert rows[a.peer_id]["metadata"] == "a1" and "exitTime" not in rows[a.peer_id]
    assert rows[b.peer_id]["metadata"] == "b0" and rows[b.peer_id]["exitTime"] >= rows[b.peer_id]["joinTime"]
    alias = project.get("/api/v2/sdk/rooms/participant-lists", params={"sessionId": session["sessionId"]}).json()
    assert alias == participants
    a.leave()


def test_unknown_and_foreign_sessions_are_404(project: Project, other_project: Project) -> None:
    theirs = other_project.create_room()
    peer = other_project.join(theirs)
    for session_id in (peer.session_id, "ses_nothing"):
        response = project.get("/api/v2/sdk/rooms/participant-list", params={"sessionId": session_id})
        assert (response.status_code, response.json()) == (404, {"message": "Session Not Found"})
    assert project.get("/api/v2/sdk/rooms/participant-list").status_code == 400
    peer.close()


def test_session_details_pages_newest_first(app: LocalApp, project: Project) -> None:
    room = project.create_room()
    tokens = [project.token(room) for _ in range(3)]  # before the clock moves: see LocalApp.advance
    ids = []
    for token in tokens:
        peer = project.join(room, token)
        ids.append(peer.session_id)
        peer.leave()
        app.advance(1.15)  # past the 1 s grace: the next join is a new session
    first = _sessions(project, room, limit=2)
    assert [s["sessionId"] for s in first["sessions"]] == ids[::-1][:2]
    # cursor=0, as Huddle01's SDK sends it, is the first page.
    assert _sessions(project, room, limit=2, cursor=0) == first
    rest = _sessions(project, room, limit=2, cursor=first["nextCursor"])
    assert [s["sessionId"] for s in rest["sessions"]] == ids[:1]
    assert rest["nextCursor"] is None
    for s in first["sessions"] + rest["sessions"]:
        assert s["endTime"] >= s["startTime"]
    assert project.get("/api/v2/sdk/rooms/session-details", params={"roomId": room, "limit": "0"}).status_code == 400
    assert project.get("/api/v2/sdk/rooms/session-details").status_code == 400
    for bad in ("-1", "x", str(2**63)):
        params = {"roomId": room, "cursor": bad}
        assert project.get("/api/v2/sdk/rooms/session-details", params=params).status_code == 400, bad


def test_metrics_totals_for_the_project_only(project: Project, other_project: Project) -> None:
    empty = project.get("/api/v2/sdk/metrics").json()
    assert empty == {"totalSessions": 0, "totalDuration": 0, "totalUsers": 0, "recordingCount": 0, "livestreamCount": 0}
    room = project.create_room()
    a = project.join(room)
    b = project.join(room)
    time.sleep(0.05)
    b.leave()
    a.leave()
    other_room = other_project.create_room()
    other_project.join(other_room).leave()
    metrics = project.get("/api/v2/sdk/metrics").json()
    assert metrics["totalSessions"] == 1
    assert metrics["totalUsers"] == 2
    assert metrics["totalDuration"] >= 50
