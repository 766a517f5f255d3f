"""Bad input across the HTTP API: always a clear 4xx, never a 500 or a hang,
and nothing half-written (the app in this process; bodies cut short or sent
chunked over a real connection: e2e/test_bad_input_wire.py)."""

from __future__ import annotations

import pytest

from support import Project

BODY_ROUTES = [
    "/api/v2/sdk/rooms/create-room",
    "/api/v2/sdk/create-peer-token",
]


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_malformed_json_is_400(project: Project, path: str) -> None:
    response = project.post(path, content=b'{"roomId": ', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["ok"] is False
    assert "Malformed JSON" in response.json()["message"]


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_wrong_content_type_is_415(project: Project, path: str) -> None:
    response = project.post(path, content=b"roomId=abc", headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415
    assert "application/json" in response.json()["message"]


@pytest.mark.parametrize("path", BODY_ROUTES)
def test_body_over_64_kib_is_413(project: Project, path: str) -> None:
    response = project.post(path, json={"metadata": "x" * (65 * 1024)})
    assert response.status_code == 413
    assert "larger than 65536 bytes" in response.json()["message"]


def test_wrong_types_are_400_with_zod_issues(project: Project) -> None:
    response = project.post("/api/v2/sdk/rooms/create-room", json={"roomLocked": "yes"})
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": {
            "issues": [
                {
                    "code": "invalid_type",
                    "expected": "boolean",
                    "received": "string",
                    "path": ["roomLocked"],
                    "message": "Expected boolean, received string",
                }
            ]
        },
    }
    for body in ([], "x", 5, {"metadata": 5}, {"metadata": "not json"}, {"metadata": "[1, 2]"}):
        response = project.post("/api/v2/sdk/rooms/create-room", json=body)
        assert response.status_code == 400, body
        assert response.json()["success"] is False


def test_oversize_metadata_is_rejected_and_nothing_is_created(project: Project) -> None:
    big = {"blob": "x" * (10 * 1024)}
    response = project.post("/api/v2/sdk/rooms/create-room", json={"metadata": big})
    assert response.status_code == 400
    assert response.json()["error"]["issues"][0]["path"] == ["metadata"]
    assert project.get("/api/v2/sdk/rooms/get-rooms").json()["count"] == 0
    room = project.create_room(metadata={"small": 1})
    response = project.post(f"/api/v2/sdk/rooms/metadata/{room}", json={"metadata": big})
    assert response.status_code == 400
    assert project.get(f"/api/v2/sdk/rooms/metadata/{room}").json() == {"metadata": {"small": 1}}
    response = project.post(f"/api/v2/sdk/rooms/metadata/{room}", json={})
    assert response.status_code == 400
    assert response.json()["error"]["issues"][0]["path"] == ["metadata"]


def test_unknown_routes_and_methods(project: Project) -> None:
    assert project.get("/api/v2/sdk/nothing-here").status_code == 404
    response = project.http.delete("/api/v2/sdk/live-sessions")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert project.post("/api/v2/sdk/rooms/room-details/abc-defg-hij").status_code == 405


def test_integers_beyond_64_bits_in_metadata_are_400(project: Project) -> None:
    huge = 123456789012345678901234567890
    response = project.post("/api/v2/sdk/rooms/create-room", json={"metadata": {"a": huge}})
    assert response.status_code == 400
    assert response.json()["error"]["issues"][0]["path"] == ["metadata"]
    room = project.create_room()
    assert project.post(f"/api/v2/sdk/rooms/metadata/{room}", json={"metadata": {"a": huge}}).status_code == 400
    assert (
        project.post("/api/v2/sdk/create-peer-token", json={"roomId": room, "metadata": {"a": huge}}).status_code == 400
    )
    peer = project.join(room)
    # Over the WebSocket, such a number is read as a float, as JSON.parse would.
    peer.ws.send('{"type": "update-metadata", "metadata": {"a": 123456789012345678901234567890}}')
    assert peer.recv_type("metadata-updated")["metadata"] == '{"a":1.2345678901234568e+29}'
    peer.send({"type": "ping"})
    assert peer.recv_type("pong")  # still connected
    peer.close()


def test_text_holding_nul_is_400_and_nothing_is_stored(project: Project) -> None:
    """U+0000 is refused everywhere text comes in (PostgreSQL cannot store
    it; the embedded store answers the same), and nothing is half-written."""
    response = project.post("/api/v2/sdk/rooms/create-room", json={"metadata": {"a": "x\u0000y"}})
    assert response.status_code == 400 and "NUL" in response.json()["message"]
    assert project.get("/api/v2/sdk/rooms/get-rooms").json()["count"] == 0
    # An escaped backslash before u0000 is not a NUL: that text is kept as it is.
    room = project.create_room(metadata={"a": "\\u0000"})
    assert project.get(f"/api/v2/sdk/rooms/metadata/{room}").json() == {"metadata": {"a": "\\u0000"}}
    assert project.post("/api/v2/sdk/create-peer-token", json={"roomId": room, "metadata": "\u0000"}).status_code == 400
    answer = project.get("/api/v2/sdk/rooms/participant-list", params={"sessionId": "ses_\u0000"})
    assert answer.status_code == 400 and answer.json()["error"]["issues"][0]["path"] == ["sessionId"]
    assert project.get("/api/v2/sdk/rooms/get-room-details/abc%00").status_code == 400
    peer = project.join(room)
    peer.send({"type": "update-metadata", "metadata": "a\u0000b"})
    assert "NUL" in peer.recv_type("error")["message"]
    peer.send({"type": "update-metadata", "metadata": {"fine": "\u0000 inside JSON is kept escaped"}})
    assert peer.recv_type("metadata-updated")["metadata"] == '{"fine":"\\u0000 inside JSON is kept escaped"}'
