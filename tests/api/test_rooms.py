"""Rooms: create, list, details, metadata, validate (the app in this process)."""

from __future__ import annotations

import json
import re

from support import Project

ROOM_NOT_FOUND = {"message": "Room Not Found"}


def test_create_room_with_object_string_or_no_metadata(project: Project) -> None:
    response = project.post("/api/v2/sdk/rooms/create-room", json={"roomLocked": True, "metadata": {"title": "a"}})
    assert response.status_code == 201
    body = response.json()
    assert body["message"] == "Room Created Successfully"
    room = body["data"]["roomId"]
    assert re.fullmatch(r"[a-z]{3}-[a-z]{4}-[a-z]{3}", room)
    details = project.get(f"/api/v2/sdk/rooms/room-details/{room}").json()
    assert details == {"roomId": room, "roomLocked": True, "metadata": {"title": "a"}}

    from_sdk = project.create_room(metadata=json.dumps({"title": "b"}))
    assert project.get(f"/api/v2/sdk/rooms/room-details/{from_sdk}").json()["metadata"] == {"title": "b"}

    bare = project.post("/api/v2/sdk/rooms/create-room")  # no body at all
    assert bare.status_code == 201
    bare_id = bare.json()["data"]["roomId"]
    assert project.get(f"/api/v2/sdk/rooms/room-details/{bare_id}").json() == {
        "roomId": bare_id,
        "roomLocked": False,
        "metadata": None,
    }


def test_room_ids_are_unique(project: Project) -> None:
    ids = {project.create_room() for _ in range(50)}
    assert len(ids) == 50


def test_get_rooms_pages_newest_first(project: Project) -> None:
    rooms = [project.create_room() for _ in range(5)]
    first = project.get("/api/v2/sdk/rooms/get-rooms", params={"limit": 2}).json()
    assert [r["roomId"] for r in first["rooms"]] == rooms[::-1][:2]
    assert (first["pageSize"], first["current"], first["nextCursor"], first["prevCursor"], first["count"]) == (
        2,
        1,
        2,
        None,
        5,
    )
    assert project.get("/api/v2/sdk/rooms/get-rooms", params={"limit": 2, "cursor": 0}).json() == first
    last = project.get("/api/v2/sdk/rooms/get-rooms", params={"limit": 2, "cursor": 3}).json()
    assert [r["roomId"] for r in last["rooms"]] == [rooms[0]]
    assert (last["nextCursor"], last["prevCursor"]) == (None, 2)
    default = project.get("/api/v2/sdk/rooms/get-rooms").json()
    assert default["pageSize"] == 10 and len(default["rooms"]) == 5
    assert set(default["rooms"][0]) == {"roomId", "createdAt", "roomLocked", "metadata"}
    beyond = project.get("/api/v2/sdk/rooms/get-rooms", params={"cursor": 99}).json()
    assert beyond["rooms"] == [] and beyond["count"] == 5
    for bad in ({"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"cursor": "-1"}, {"cursor": "1.5"}):
        response = project.get("/api/v2/sdk/rooms/get-rooms", params=bad)
        assert response.status_code == 400, bad
        assert response.json()["error"]["issues"][0]["path"] == [next(iter(bad))]


def test_metadata_read_and_update_both_addressings(project: Project) -> None:
    room = project.create_room(metadata={"a": 1})
    assert project.get(f"/api/v2/sdk/rooms/metadata/{room}").json() == {"metadata": {"a": 1}}
    assert project.get("/api/v2/sdk/rooms/metadata", params={"roomId": room}).json() == {"metadata": {"a": 1}}
    updated = project.post(f"/api/v2/sdk/rooms/metadata/{room}", json={"metadata": {"b": 2}})
    assert (updated.status_code, updated.json()) == (200, {"metadata": {"b": 2}})
    updated = project.post("/api/v2/sdk/rooms/metadata", params={"roomId": room}, json={"metadata": '{"c": 3}'})
    assert updated.json() == {"metadata": {"c": 3}}
    assert project.get(f"/api/v2/sdk/rooms/room-details/{room}").json()["metadata"] == {"c": 3}
    bare = project.create_room()
    assert project.get(f"/api/v2/sdk/rooms/metadata/{bare}").json() == {"metadata": {}}


def test_validate_room(project: Project, other_project: Project) -> None:
    room = project.create_room()
    theirs = other_project.create_room()
    assert project.get("/api/v2/sdk/validate-room", params={"roomId": room}).json() == {"ok": True, "validated": True}
    for other in (theirs, "abc-defg-hij", "nonsense"):
        assert project.get("/api/v2/sdk/validate-room", params={"roomId": other}).json() == {
            "ok": True,
            "validated": False,
        }
    assert project.get("/api/v2/sdk/validate-room").status_code == 400


def test_other_projects_rooms_look_like_missing_rooms(project: Project, other_project: Project) -> None:
    theirs = other_project.create_room(metadata={"secret": True})
    missing = "xyz-wxyz-xyz"
    for method, path, body in [
        ("GET", "/api/v2/sdk/rooms/room-details/{}", None),
        ("GET", "/api/v2/sdk/rooms/metadata/{}", None),
        ("POST", "/api/v2/sdk/rooms/metadata/{}", {"metadata": {"x": 1}}),
        ("GET", "/api/v2/sdk/rooms/session-details?roomId={}", None),
        ("POST", "/api/v2/sdk/create-peer-token", "room"),
    ]:
        answers = []
        for room in (theirs, missing):
            json_body = {"roomId": room} if body == "room" else body
            response = project.http.request(method, path.format(room), json=json_body)
            answers.append((response.status_code, response.json()))
        assert answers[0] == answers[1] == (404, ROOM_NOT_FOUND), path
    assert other_project.get(f"/api/v2/sdk/rooms/metadata/{theirs}").json() == {"metadata": {"secret": True}}
    assert project.get("/api/v2/sdk/rooms/get-rooms").json()["count"] == 0
