"""Peer tokens: what create-peer-token signs, and that /jwks.json verifies it
(the app in this process; the key surviving a restart: e2e/test_restarts.py)."""

from __future__ import annotations

import json

import jwt
import pytest

from livesessions.domain.permissions import DEFAULT_PERMISSIONS, ROLE_PERMISSIONS
from support import LocalApp, Project


def _claims(app: LocalApp, token: str) -> dict:
    jwks = app.http.get("/jwks.json").json()
    key = jwt.PyJWK(jwks["keys"][0])
    assert jwt.get_unverified_header(token)["kid"] == jwks["keys"][0]["kid"]
    return jwt.decode(token, key.key, algorithms=["ES256"])


def test_token_claims_verify_against_the_published_key(app: LocalApp, project: Project) -> None:
    room = project.create_room()
    token = project.token(room, role="listener", metadata='{"name":"l"}', ttl=60)
    claims = _claims(app, token)
    assert claims["roomId"] == room
    assert claims["role"] == "listener"
    assert claims["metadata"] == '{"name":"l"}'
    assert claims["permissions"] == ROLE_PERMISSIONS["listener"]
    assert claims["peerId"].startswith("peerId-")
    assert claims["exp"] - claims["iat"] == 60
    assert claims["projectId"].startswith("prj_")


def test_explicit_permissions_override_role_defaults(app: LocalApp, project: Project) -> None:
    room = project.create_room()
    token = project.token(room, role="host", permissions={"canSendData": False, "canProduceSources": {"screen": False}})
    permissions = _claims(app, token)["permissions"]
    assert permissions["admin"] is True
    assert permissions["canSendData"] is False
    assert permissions["canProduceSources"] == {"cam": True, "mic": True, "screen": False}


def test_built_in_roles_get_exactly_the_sdk_s_permissions(app: LocalApp, project: Project) -> None:
    room = project.create_room()
    for role in ("host", "coHost", "speaker", "listener", "guest", "bot"):
        assert _claims(app, project.token(room, role=role))["permissions"] == ROLE_PERMISSIONS[role], role
    # A guest may send data and update its metadata, as on Huddle01.
    guest = project.join(room, role="guest")
    other = project.join(room)
    guest.send({"type": "data", "to": "*", "label": "hi", "payload": 1})
    assert other.recv_type("data")["payload"] == 1


def test_a_custom_role_takes_its_permissions_over_the_defaults(app: LocalApp, project: Project) -> None:
    room = project.create_room()
    token = project.token(room, role="moderator", permissions={"admin": True, "canProduce": False})
    claims = _claims(app, token)
    assert claims["role"] == "moderator"
    assert claims["permissions"] == {**DEFAULT_PERMISSIONS, "admin": True, "canProduce": False}
    peer = project.join(room, token=token)
    assert peer.joined["peers"] == []
    listed = project.get("/api/v2/sdk/live-sessions/participants/" + room).json()
    assert [p["peerId"] for p in listed["participants"]] == [peer.peer_id]  # counted as a peer
    # Its messages obey the permissions it was given.
    other = project.join(room)
    assert other.joined["peers"][0]["role"] == "moderator"


def test_each_token_is_a_new_peer(project: Project) -> None:
    room = project.create_room()
    ids = {jwt.decode(project.token(room), options={"verify_signature": False})["peerId"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize(
    "body, path",
    [
        ({}, ["roomId"]),
        ({"roomId": 5}, ["roomId"]),
        ({"roomId": "abc-defg-hij", "role": "king"}, ["permissions"]),  # a custom role needs permissions
        ({"roomId": "abc-defg-hij", "role": "k" * 21, "permissions": {}}, ["role"]),
        ({"roomId": "abc-defg-hij", "role": "", "permissions": {}}, ["role"]),
        ({"roomId": "abc-defg-hij", "role": "mod\n", "permissions": {}}, ["role"]),
        ({"roomId": "abc-defg-hij", "ttl": 0}, ["ttl"]),
        ({"roomId": "abc-defg-hij", "ttl": "1h"}, ["ttl"]),
        ({"roomId": "abc-defg-hij", "permissions": {"admin": "yes"}}, ["permissions", "admin"]),
        ({"roomId": "abc-defg-hij", "options": {"maxPeersAllowed": 0}}, ["options", "maxPeersAllowed"]),
        ({"roomId": "abc-defg-hij", "metadata": "x" * (5 * 1024 + 1)}, ["metadata"]),
    ],
)
def test_bad_token_requests_are_400_with_issues(project: Project, body: dict, path: list) -> None:
    response = project.post("/api/v2/sdk/create-peer-token", json=body)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["success"] is False
    issue = body["error"]["issues"][0]
    assert issue["path"] == path
    assert issue["message"] and issue["code"]


def test_join_room_token_gives_a_host_or_a_guest_for_half_an_hour(app: LocalApp, project: Project) -> None:
    room = project.create_room()
    answer = project.post(
        "/api/v2/sdk/join-room-token",
        json={"roomId": room, "displayName": "Ada", "avatarUrl": "https://img.example/a.png", "userType": "host"},
    )
    assert answer.status_code == 200
    claims = _claims(app, answer.json()["token"])
    assert claims["role"] == "host" and claims["permissions"] == ROLE_PERMISSIONS["host"]
    assert json.loads(claims["metadata"]) == {"displayName": "Ada", "avatarUrl": "https://img.example/a.png"}
    assert claims["exp"] - claims["iat"] == 30 * 60
    guest = _claims(app, project.post("/api/v2/sdk/join-room-token", json={"roomId": room}).json()["token"])
    assert (guest["role"], guest["permissions"], guest["metadata"]) == ("guest", ROLE_PERMISSIONS["guest"], "")
    promoted = project.post("/api/v2/sdk/join-room-token", json={"roomId": room, "guestAsHost": True}).json()
    assert _claims(app, promoted["token"])["permissions"]["admin"] is True
    # It joins like any peer token.
    peer = project.join(room, token=answer.json()["token"])
    assert peer.joined["roomId"] == room


@pytest.mark.parametrize(
    "body, status",
    [
        ({}, 400),
        ({"roomId": "abc-defg-hij"}, 404),
        ({"roomId": "abc-defg-hij", "userType": "admin"}, 400),
        ({"roomId": "abc-defg-hij", "avatarUrl": "javascript:alert(1)"}, 400),
        ({"roomId": "abc-defg-hij", "displayName": ""}, 400),
        ({"roomId": "abc-defg-hij", "displayName": "x" * 101}, 400),
        ({"roomId": "abc-defg-hij", "guestAsHost": "yes"}, 400),
    ],
)
def test_join_room_token_bad_input(project: Project, body: dict, status: int) -> None:
    assert project.post("/api/v2/sdk/join-room-token", json=body).status_code == status
