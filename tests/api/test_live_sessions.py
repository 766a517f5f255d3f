"""The Live Sessions API routes, the seed of this service (the app in this
process, with peers on its WebSocket handler and a clock the tests move)."""

from __future__ import annotations

import time

from support import LocalApp, Project, new_wallet

NOT_LIVE = {"ok": False, "message": "No live sessions found for this room id"}


def test_lists_live_rooms_oldest_first_with_the_seed_fields(project: Project) -> None:
    rooms = [project.create_room() for _ in range(3)]
    peers = [project.join(room) for room in rooms]
    time.sleep(0.01)
    extra = project.join(rooms[0])
    listed = project.live()
    assert [item["roomId"] for item in listed] == rooms
    assert [item["currentPeerCount"] for item in listed] == [2, 1, 1]
    starts = [item["startTime"] for item in listed]
    assert starts == sorted(starts)
    for item in listed:
        assert set(item) == {"roomId", "startTime", "currentPeerCount", "livestreamCount", "recordingCount"}
        assert item["livestreamCount"] == 0 and item["recordingCount"] == 0
    for peer in [*peers, extra]:
        peer.leave()
    assert project.live() == []


def test_single_room_list_shape_and_sdk_object_shape(project: Project) -> None:
    room = project.create_room()
    peer = project.join(room)
    plain = project.get(f"/api/v2/sdk/live-sessions/{room}").json()
    assert plain == {"liveSessions": [project.live()[0]]}
    sdk = project.get(f"/api/v2/sdk/live-sessions/{room}", headers={"x-sdk-version": "2.6.2"}).json()
    assert sdk == {"liveSessions": plain["liveSessions"][0]}
    assert sdk["liveSessions"]["currentPeerCount"] == 1
    peer.leave()
    response = project.get(f"/api/v2/sdk/live-sessions/{room}")
    assert (response.status_code, response.json()) == (404, NOT_LIVE)


def test_not_live_unknown_and_malformed_rooms_are_404(project: Project) -> None:
    idle = project.create_room()
    for room in (idle, "zzz-zzzz-zzz", "not-a-room-id", "%20"):
        response = project.get(f"/api/v2/sdk/live-sessions/{room}")
        assert (response.status_code, response.json()) == (404, NOT_LIVE)
        response = project.get(f"/api/v2/sdk/live-sessions/participants/{room}")
        assert (response.status_code, response.json()) == (404, {"ok": False, "message": "Session Not Found"})


def test_participants_of_a_live_room(project: Project) -> None:
    room = project.create_room()
    a = project.join(room, metadata='{"name":"a"}')
    b = project.join(room, metadata="b")
    body = project.get(f"/api/v2/sdk/live-sessions/participants/{room}").json()
    assert body["count"] == 2
    assert [(p["peerId"], p["metadata"]) for p in body["participants"]] == [
        (a.peer_id, '{"name":"a"}'),
        (b.peer_id, "b"),
    ]
    assert all(isinstance(p["joinTime"], int) for p in body["participants"])
    a.close()
    b.close()


def test_another_projects_rooms_are_invisible(project: Project, other_project: Project) -> None:
    theirs = other_project.create_room()
    peer = other_project.join(theirs)
    assert project.live() == []
    for path in (f"/api/v2/sdk/live-sessions/{theirs}", f"/api/v2/sdk/live-sessions/participants/{theirs}"):
        mine = project.get(path)
        unknown = project.get(path.replace(theirs, "qqq-qqqq-qqq"))
        assert (mine.status_code, mine.json()) == (unknown.status_code, unknown.json())
    peer.close()


def test_every_key_of_a_project_sees_the_same_rooms(app: LocalApp) -> None:
    wallet = new_wallet()
    first, second = app.project(wallet), app.project(wallet)
    room = first.create_room()
    peer = first.join(room)
    assert second.live() == first.live()
    assert len(second.live()) == 1
    peer.close()


def test_paging_with_a_stable_cursor(project: Project) -> None:
    rooms = [project.create_room() for _ in range(5)]
    peers = [project.join(room) for room in rooms]
    page = project.get("/api/v2/sdk/live-sessions", params={"limit": 2}).json()
    assert [i["roomId"] for i in page["liveSessions"]] == rooms[:2]
    # A room that goes quiet before the cursor is used does not shift the pages.
    peers[0].leave()
    page2 = project.get("/api/v2/sdk/live-sessions", params={"limit": 2, "cursor": page["nextCursor"]}).json()
    assert [i["roomId"] for i in page2["liveSessions"]] == rooms[2:4]
    page3 = project.get("/api/v2/sdk/live-sessions", params={"limit": 2, "cursor": page2["nextCursor"]}).json()
    assert [i["roomId"] for i in page3["liveSessions"]] == rooms[4:]
    assert page3["nextCursor"] is None
    for bad in ({"limit": 0}, {"limit": "x"}, {"limit": -1}, {"cursor": "!!!"}, {"limit": 10**30}):
        response = project.get("/api/v2/sdk/live-sessions", params=bad)
        assert response.status_code == 400, bad
        assert response.json()["success"] is False
    for peer in peers[1:]:
        peer.close()


def test_rejoin_within_grace_keeps_the_session(project: Project) -> None:
    room = project.create_room()
    first = project.join(room)
    started = project.live()[0]["startTime"]
    first.leave()
    assert project.live() == []  # not listed the moment the last peer leaves
    again = project.join(room)  # grace is 1 s, and the app's clock does not move here
    assert again.session_id == first.session_id
    assert project.live()[0]["startTime"] == started
    again.leave()


def test_rejoin_after_grace_starts_a_new_session(app: LocalApp, project: Project) -> None:
    room = project.create_room()
    first = project.join(room)
    token = project.token(room)  # before the clock moves: see LocalApp.advance
    first.leave()
    app.advance(1.3)
    again = project.join(room, token)
    assert again.session_id != first.session_id
    sessions = project.get("/api/v2/sdk/rooms/session-details", params={"roomId": room}).json()["sessions"]
    assert [s["sessionId"] for s in sessions] == [again.session_id, first.session_id]
    assert sessions[1]["endTime"] is not None and sessions[0]["endTime"] is None
    again.leave()


def test_missing_or_wrong_key_is_401(app: LocalApp) -> None:
    expected = {"ok": False, "message": "Incorrect or no API key provided", "validated": False}
    for headers in ({}, {"x-api-key": ""}, {"x-api-key": "lsk_wrong"}, {"x-api-key": "x" * 10_000}):
        response = app.http.get("/api/v2/sdk/live-sessions", headers=headers)
        assert (response.status_code, response.json()) == (401, expected)
