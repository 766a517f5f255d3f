"""Peer tokens: what create-peer-token signs, and that /jwks.json verifies it."""

from __future__ import annotations

import httpx
import jwt
import pytest

from conftest import Project, Server
from livesessions.domain.permissions import ROLE_PERMISSIONS, resolve_permissions


def _claims(server: Server, token: str) -> dict:
    jwks = httpx.get(server.base + "/jwks.json").json()
    key = jwt.PyJWK(jwks["keys"][0])
    assert jwt.get_unverified_header(token)["kid"] == jwks["keys"][0]["kid"]
    return jwt.decode(token, key.key, algorithms=["ES256"])


def test_token_claims_verify_against_the_published_key(server: Server, project: Project) -> None:
    room = project.create_room()
    token = project.token(room, role="listener", metadata='{"name":"l"}', ttl=60)
    claims = _claims(server, token)
    assert claims["roomId"] == room
    assert claims["role"] == "listener"
    assert claims["metadata"] == '{"name":"l"}'
    assert claims["permissions"] == ROLE_PERMISSIONS["listener"]
    assert claims["peerId"].startswith("peerId-")
    assert claims["exp"] - claims["iat"] == 60
    assert claims["projectId"].startswith("prj_")


def test_explicit_permissions_override_role_defaults(server: Server, project: Project) -> None:
    room = project.create_room()
    token = project.token(room, role="host", permissions={"canSendData": False, "canProduceSources": {"screen": False}})
    permissions = _claims(server, token)["permissions"]
    assert permissions["admin"] is True
    assert permissions["canSendData"] is False
    assert permissions["canProduceSources"] == {"cam": True, "mic": True, "screen": False}


def test_each_token_is_a_new_peer(project: Project) -> None:
    room = project.create_room()
    ids = {jwt.decode(project.token(room), options={"verify_signature": False})["peerId"] for _ in range(5)}
    assert len(ids) == 5


def test_the_signing_key_survives_restarts(fresh_server: Server) -> None:
    fresh_server.start()
    before = httpx.get(fresh_server.base + "/jwks.json").json()
    project = fresh_server.project()
    token = project.token(project.create_room())
    fresh_server.stop()
    fresh_server.start()
    assert httpx.get(fresh_server.base + "/jwks.json").json() == before
    _claims(fresh_server, token)


@pytest.mark.parametrize(
    "body, path",
    [
        ({}, ["roomId"]),
        ({"roomId": 5}, ["roomId"]),
        ({"roomId": "abc-defg-hij", "role": "king"}, ["role"]),
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


def test_resolve_permissions_defaults_to_speaker() -> None:
    assert resolve_permissions(None, None) == ROLE_PERMISSIONS["speaker"]
    assert resolve_permissions("guest", {"canSendData": True})["canSendData"] is True
    # the role table itself is never changed by an override
    assert ROLE_PERMISSIONS["guest"]["canSendData"] is False
