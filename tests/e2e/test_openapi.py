"""The OpenAPI document: valid OpenAPI 3.1, in step with the router, and true
to what a real running server answers (checked by schemathesis).

The running servers are conftest's `Server`: one for the module (rate limits
off, seeded with rooms, live peers and egress jobs) and a strict one for the
rate-limit answers. `ApiClient` sends requests exactly as given (raw bodies,
any headers, with or without the key) and reads answers of any content type,
which the documented-answer checks need and conftest's `Project` does not give.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from livesessions.app import LiveSessionsApp
from livesessions.config import Settings
from livesessions.http.openapi import openapi_document
from livesessions.services import build_services
from support import Peer, Server, eventually

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
SDK = "/api/v2/sdk"
# For every server here: warnings and worse only in its log (which the
# schemathesis test reads for tracebacks), and the service's own ping pace
# (10 s) rather than conftest's 0.5 s, as the seeded peers stay connected
# through the whole module.
SERVER_OPTIONS = {"log-level": "warning", "ping-interval": 10, "ping-timeout": 10}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
SCHEMATHESIS_CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
]
# Per operation; the whole file takes about 65 s on two cores. Raise it (and
# change the seed) to search harder: LIVESESSIONS_SCHEMATHESIS_EXAMPLES=300.
SCHEMATHESIS_EXAMPLES = os.environ.get("LIVESESSIONS_SCHEMATHESIS_EXAMPLES", "40")
SCHEMATHESIS_SEED = os.environ.get("LIVESESSIONS_SCHEMATHESIS_SEED", "20240601")


# --- the document on its own ---------------------------------------------------


def test_document_is_valid_openapi_31() -> None:
    from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR  # the official OAS 3.1 schema

    document = openapi_document()
    assert document["openapi"].startswith("3.1.")
    errors = [
        f"/{'/'.join(map(str, e.instance_path))}: {e.message}" for e in OPENAPI_31_VALIDATOR.iter_errors(document)
    ]
    assert not errors, "\n".join(errors)
    json.dumps(document)  # served as JSON: plain data only

    # Every schema is valid JSON Schema 2020-12 (the OAS 3.1 dialect), and
    # every $ref points at something that exists.
    for name, schema in document["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), f"components/schemas/{name} is not valid JSON Schema"
    for pointer in _refs(document):
        assert pointer.startswith("#/"), pointer
        node: Any = document
        for part in pointer[2:].split("/"):
            assert isinstance(node, dict) and part in node, f"dangling $ref {pointer}"
            node = node[part]

    # Operation ids are unique, links name real operations, path parameters
    # are in their paths, and every response says what JSON it carries.
    operations = list(_operations(document))
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids))
    for path, method, op in operations:
        for status, answer in op["responses"].items():
            answer = _resolve(document, answer)
            assert re.fullmatch(r"[1-5]\d\d", status), (path, method, status)
            assert answer.get("content") or status == "204", (path, method, status)
            for media in answer.get("content", {}).values():
                assert "schema" in media, (path, method, status)
            for target in answer.get("links", {}).values():
                assert target["operationId"] in ids, target
        for parameter in op.get("parameters", []):
            if parameter["in"] == "path":
                assert f"{{{parameter['name']}}}" in path
                assert parameter["required"] is True
    assert "/ws" in document["info"]["description"]


def test_document_matches_router(tmp_path: Path) -> None:
    services = build_services(Settings(data_dir=tmp_path))
    try:
        routes = LiveSessionsApp(services).router.routes
    finally:
        services.store.close()
    document = openapi_document()

    registered = {(route.pattern, route.method.lower()) for route in routes}
    documented = {(path, method) for path, method, _ in _operations(document)}
    assert registered - documented == set(), "routes missing from the document"
    assert documented - registered == set(), "documented operations the app does not have"
    assert "/ws" not in document["paths"]

    # The API key is asked for exactly where the router asks for it.
    scheme = document["components"]["securitySchemes"]["apiKey"]
    assert (scheme["type"], scheme["in"], scheme["name"]) == ("apiKey", "header", "x-api-key")
    bearer = document["components"]["securitySchemes"]["accountSession"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    schemes = {
        "api_key": [{"apiKey": []}],
        "account": [{"accountSession": []}],
        "key_or_account": [{"apiKey": []}, {"accountSession": []}],
        "none": [],
    }
    for route in routes:
        op = document["paths"][route.pattern][route.method.lower()]
        assert op["security"] == schemes[route.auth], (route.pattern, route.method)
        if route.auth != "none":
            assert "401" in op["responses"], (route.pattern, route.method)
        if route.auth == "api_key":
            assert "429" in op["responses"], (route.pattern, route.method)


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                yield path, method, op


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


def _assert_documented(path: str, method: str, status: int, body: Any) -> None:
    """`body` is what the document says `method path` answers with `status`."""
    document = openapi_document()
    answer = _resolve(document, document["paths"][path][method]["responses"][str(status)])
    schema = answer["content"]["application/json"]["schema"]
    validator = jsonschema_rs.Draft202012Validator({"components": document["components"], "allOf": [schema]})
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
    assert not errors, (method, path, status, body, errors)


# --- real servers ------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: Any  # decoded JSON, else the raw bytes


@dataclass
class ApiClient:
    """Requests to a running conftest `Server`, with `api_key` unless told not to."""

    server: Server
    api_key: str
    peers: ExitStack = field(default_factory=ExitStack)  # WebSocket peers kept connected

    @property
    def log_path(self) -> Path:
        """The server's log (where conftest's `Server` writes it)."""
        return Path(self.server.log.name)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        key: bool = True,
    ) -> Reply:
        data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
        sent = {"content-type": "application/json"} if data is not None else {}
        if key:
            sent["x-api-key"] = self.api_key
        sent.update(headers or {})
        request = urllib.request.Request(self.server.base + path, data=data, method=method, headers=sent)
        try:
            response = urllib.request.urlopen(request, timeout=10)
        except urllib.error.HTTPError as exc:
            response = exc
        with response:
            answer = response.read()
            got = {k.lower(): v for k, v in response.headers.items()}
            is_json = got.get("content-type") == "application/json" and answer
            return Reply(response.status, got, json.loads(answer) if is_json else answer)

    def join(self, room_id: str, role: str) -> Peer:
        """A peer connected to the room over the WebSocket."""
        reply = self.request("POST", f"{SDK}/create-peer-token", {"roomId": room_id, "role": role})
        assert reply.status == 200, reply
        return Peer.connect(self.server, reply.body["token"])

    def sign_in(self) -> Reply:
        """A new wallet signs in (EIP-4361): its own project, its first API key."""
        wallet = Account.create()
        nonce = self.request("GET", f"/api/v2/auth/nonce?address={wallet.address}", key=False)
        assert nonce.status == 200, nonce
        signed = Account.sign_message(encode_defunct(text=nonce.body["message"]), wallet.key)
        body = {"message": nonce.body["message"], "signature": "0x" + signed.signature.hex().removeprefix("0x")}
        reply = self.request("POST", "/api/v2/auth/verify", body, key=False)
        assert reply.status == 200, reply
        return reply


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiClient]:
    # Rate limits off: schemathesis should reach the routes, not the limiter
    # (whose answers test_rate_limit_answers_are_documented checks).
    options = {"grace-period": 0.2, "rate-limit": 0, "sign-ins-per-minute": 1000000}
    server = Server(tmp_path_factory.mktemp("openapi-server") / "data", **SERVER_OPTIONS, **options).start()
    try:
        client = ApiClient(server, server.create_key())
        with client.peers:  # the peers leave before the server stops
            yield client
    finally:
        server.stop()


@dataclass
class Seeds:
    room_ids: list[str]
    live_room_id: str
    ended_room_id: str
    session_ids: list[str]
    finished_recording_id: str
    active_livestream_playback_url: str
    ended_livestream_playback_url: str
    job_ids: list[str]
    bearer_token: str
    key_ids: list[str]


@pytest.fixture(scope="module")
def seeds(api: ApiClient) -> Seeds:
    """Rooms of every kind the routes care about: plain, locked, with metadata
    (given as an object and as a string), live right now (peers and a bot stay
    connected until the server stops), with a finished session; and egress
    jobs: a finished recording, an ended livestream, and a livestream and a
    recording still going on (their media parts claimable by workers)."""
    room_ids = []
    for body in ({}, {"roomLocked": True}, {"metadata": {"title": "standup", "n": 3}}, {"metadata": '{"a": [1]}'}):
        reply = api.request("POST", f"{SDK}/rooms/create-room", body)
        assert reply.status == 201, reply
        room_ids.append(reply.body["data"]["roomId"])
    live_room, ended_room = room_ids[0], room_ids[2]

    leaving = api.join(ended_room, "speaker")
    ended_session = leaving.session_id
    leaving.close()
    joins = [api.join(live_room, role) for role in ("host", "guest", "bot")]
    other_live_room = room_ids[3]
    joins.append(api.join(other_live_room, "speaker"))
    for peer in joins:
        api.peers.enter_context(peer.ws)

    def start(room_id: str, kind: str) -> dict[str, Any]:
        token = api.request("POST", f"{SDK}/create-peer-token", {"roomId": room_id}).body["token"]
        reply = api.request("POST", "/api/v1/recording/start", {"roomId": room_id, "token": token, "type": kind})
        assert reply.status == 200, reply
        return reply.body

    def stop(room_id: str, kind: str) -> None:
        reply = api.request("POST", "/api/v1/recording/stop", {"roomId": room_id, "type": kind})
        assert reply.status == 200, reply

    finished_recording = start(live_room, "recording")
    stop(live_room, "recording")
    active_livestream = start(live_room, "livestream")
    ended_livestream = start(other_live_room, "livestream")
    stop(other_live_room, "livestream")
    active_recording = start(other_live_room, "recording")

    def session_ended() -> bool:
        reply = api.request("GET", f"{SDK}/rooms/session-details?roomId={ended_room}")
        assert reply.status == 200, reply
        sessions = reply.body["sessions"]
        return bool(sessions) and sessions[0]["endTime"] is not None

    # The grace period (0.2 s) runs out.
    assert eventually(session_ended, timeout=10), f"the session of {ended_room} never ended"
    # Another wallet's account session (so that revoking its keys never touches
    # the key the run uses), with keys of its own to read and revoke.
    account = api.sign_in().body
    bearer = {"authorization": f"Bearer {account['token']}"}
    key_ids = [
        api.request("POST", "/api/v2/keys", {"name": f"k{i}"}, headers=bearer, key=False).body["id"] for i in range(3)
    ]
    return Seeds(
        bearer_token=account["token"],
        key_ids=key_ids,
        room_ids=room_ids,
        live_room_id=live_room,
        ended_room_id=ended_room,
        session_ids=[ended_session, joins[0].session_id, joins[3].session_id],
        finished_recording_id=finished_recording["id"],
        active_livestream_playback_url=active_livestream["playbackUrl"],
        ended_livestream_playback_url=ended_livestream["playbackUrl"],
        job_ids=[job["id"] for job in (finished_recording, active_livestream, ended_livestream, active_recording)],
    )


def test_served_document_is_the_document(api: ApiClient) -> None:
    reply = api.request("GET", "/openapi.json", key=False)
    assert reply.status == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.body == json.loads(json.dumps(openapi_document()))


def test_core_answers_are_documented(api: ApiClient, seeds: Seeds) -> None:
    live = f"{SDK}/live-sessions/{{roomId}}"
    # x-sdk-version switches `liveSessions` from a one-item list to one object.
    plain = api.request("GET", f"{SDK}/live-sessions/{seeds.live_room_id}")
    sdk = api.request("GET", f"{SDK}/live-sessions/{seeds.live_room_id}", headers={"x-sdk-version": "2.6.0"})
    assert plain.status == sdk.status == 200
    assert isinstance(plain.body["liveSessions"], list) and len(plain.body["liveSessions"]) == 1
    assert sdk.body["liveSessions"] == plain.body["liveSessions"][0]
    assert sdk.body["liveSessions"]["currentPeerCount"] == 2  # the bot is not counted
    _assert_documented(live, "get", 200, plain.body)
    _assert_documented(live, "get", 200, sdk.body)
    # nextCursor only on paged requests.
    everything = api.request("GET", f"{SDK}/live-sessions")
    paged = api.request("GET", f"{SDK}/live-sessions?limit=1")
    assert "nextCursor" not in everything.body and "nextCursor" in paged.body
    _assert_documented(f"{SDK}/live-sessions", "get", 200, everything.body)
    _assert_documented(f"{SDK}/live-sessions", "get", 200, paged.body)
    # exitTime only once the peer has left.
    sessions = api.request("GET", f"{SDK}/rooms/session-details?roomId={seeds.ended_room_id}").body["sessions"]
    ended = api.request("GET", f"{SDK}/rooms/participant-list?sessionId={sessions[0]['sessionId']}")
    ongoing = api.request("GET", f"{SDK}/rooms/participant-list?sessionId={seeds.session_ids[1]}")
    assert all("exitTime" in p for p in ended.body["participants"])
    assert not any("exitTime" in p for p in ongoing.body["participants"])
    for reply in (ended, ongoing):
        _assert_documented(f"{SDK}/rooms/participant-list", "get", 200, reply.body)

    create = f"{SDK}/rooms/create-room"
    too_big = api.request("POST", create, raw=b'{"metadata": "' + b"x" * 70_000 + b'"}')
    assert too_big.status == 413
    _assert_documented(create, "post", 413, too_big.body)
    not_json = api.request("POST", create, raw=b"{}", headers={"content-type": "text/plain"})
    assert not_json.status == 415
    _assert_documented(create, "post", 415, not_json.body)
    malformed = api.request("POST", create, raw=b'{"roomLocked": tru')
    assert malformed.status == 400
    _assert_documented(create, "post", 400, malformed.body)
    empty = api.request("POST", f"{SDK}/create-peer-token", raw=b"")
    assert empty.status == 400
    _assert_documented(f"{SDK}/create-peer-token", "post", 400, empty.body)
    invalid = api.request("POST", f"{SDK}/create-peer-token", {"roomId": 5, "ttl": 0})
    assert invalid.status == 400
    _assert_documented(f"{SDK}/create-peer-token", "post", 400, invalid.body)

    # A path parameter holding a `/` changes the path's shape: the router's 404.
    odd = api.request("GET", f"{SDK}/rooms/room-details/abc%2Fdefg")
    assert odd.status == 404
    _assert_documented(f"{SDK}/rooms/room-details/{{roomId}}", "get", 404, odd.body)
    # A known path with another method: 405 with Allow.
    wrong = api.request("DELETE", f"{SDK}/rooms/metadata/{seeds.room_ids[0]}")
    assert wrong.status == 405 and wrong.headers["allow"] == "GET, POST"
    document = openapi_document()
    method_not_allowed = document["components"]["responses"]["MethodNotAllowed"]["content"]["application/json"]
    validator = jsonschema_rs.Draft202012Validator(
        {"components": document["components"], "allOf": [method_not_allowed["schema"]]}
    )
    assert validator.is_valid(wrong.body)
    # No key: 401, on every authenticated operation alike.
    unauthorized = api.request("GET", f"{SDK}/metrics", key=False)
    assert unauthorized.status == 401
    _assert_documented(f"{SDK}/metrics", "get", 401, unauthorized.body)


def test_egress_answers_are_documented(api: ApiClient, seeds: Seeds) -> None:
    status = api.request("GET", f"/api/v1/recording/status?roomId={seeds.live_room_id}")
    assert status.status == 200 and status.body["status"] == "ongoing" and "playbackUrl" in status.body
    _assert_documented("/api/v1/recording/status", "get", 200, status.body)
    idle = api.request("GET", f"/api/v1/recording/status?roomId={seeds.ended_room_id}")
    assert idle.body == {"status": "stopped"}
    _assert_documented("/api/v1/recording/status", "get", 200, idle.body)
    nothing = api.request("POST", "/api/v1/recording/stop", {"roomId": seeds.ended_room_id})
    assert nothing.status == 404
    _assert_documented("/api/v1/recording/stop", "post", 404, nothing.body)
    bad_token = api.request("POST", "/api/v1/recording/start", {"roomId": seeds.ended_room_id, "token": "x"})
    assert bad_token.status == 401
    _assert_documented("/api/v1/recording/start", "post", 401, bad_token.body)

    recordings = api.request("GET", f"{SDK}/recordings")
    assert recordings.status == 200
    _assert_documented(f"{SDK}/recordings", "get", 200, recordings.body)
    (recording,) = [r for r in recordings.body["recordings"] if r["id"] == seeds.finished_recording_id]
    download = urllib.request.urlopen(recording["recordingUrl"], timeout=10)
    assert download.status == 200
    assert download.headers["content-type"] == "application/x-ndjson"
    timeline = download.read()
    assert len(timeline) == int(download.headers["content-length"]) == recording["recordingSize"] > 0
    assert all(set(json.loads(line)) == {"t", "event"} for line in timeline.splitlines())
    forged = api.request("GET", f"/api/v1/recordings/{recording['id']}/download?expires=1&signature=00", key=False)
    assert forged.status == 403
    _assert_documented("/api/v1/recordings/{jobId}/download", "get", 403, forged.body)

    playback = "/" + seeds.active_livestream_playback_url.split("/", 3)[3]
    with urllib.request.urlopen(api.server.base + playback, timeout=10) as stream:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream"
        assert stream.readline().startswith(b":")
    ended = api.request("GET", "/" + seeds.ended_livestream_playback_url.split("/", 3)[3], key=False)
    assert ended.status == 410
    _assert_documented("/live/{playbackId}", "get", 410, ended.body)
    unknown = api.request("GET", "/live/nothing-here", key=False)
    assert unknown.status == 404
    _assert_documented("/live/{playbackId}", "get", 404, unknown.body)

    jobs = api.request("GET", "/api/v1/workers/jobs?status=pending")
    assert jobs.status == 200 and jobs.body["jobs"]
    _assert_documented("/api/v1/workers/jobs", "get", 200, jobs.body)
    bad_status = api.request("GET", "/api/v1/workers/jobs?status=lost")
    assert bad_status.status == 400
    _assert_documented("/api/v1/workers/jobs", "get", 400, bad_status.body)
    missing = api.request("POST", "/api/v1/workers/jobs/job_00/claim", {"workerId": "w"})
    assert missing.status == 404
    _assert_documented("/api/v1/workers/jobs/{jobId}/claim", "post", 404, missing.body)

    # A worker's whole round on the recording still going on.
    job = f"/api/v1/workers/jobs/{seeds.job_ids[3]}"
    for step, body, answer in (
        ("claim", {"workerId": "edge"}, 200),
        ("claim", {"workerId": "other"}, 409),
        ("progress", {"workerId": "edge", "progress": 50, "message": None}, 200),
        ("progress", {"workerId": "edge", "progress": 101}, 400),
        ("complete", {"workerId": "edge", "location": "s3://b/k", "size": 2**63}, 400),  # beyond the documented maximum
        ("complete", {"workerId": "edge", "location": "s3://b/k", "size": 12}, 200),
        ("progress", {"workerId": "edge", "progress": 1}, 409),
    ):
        reply = api.request("POST", f"{job}/{step}", body)
        assert reply.status == answer, (step, body, reply)
        _assert_documented(f"/api/v1/workers/jobs/{{jobId}}/{step}", "post", answer, reply.body)


def test_account_answers_are_documented(api: ApiClient, seeds: Seeds) -> None:
    page = api.request("GET", "/connect", key=False)
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    nonce = api.request("GET", "/api/v2/auth/nonce", key=False)
    assert nonce.status == 200 and set(nonce.body) == {"nonce"}
    _assert_documented("/api/v2/auth/nonce", "get", 200, nonce.body)
    bad_address = api.request("GET", "/api/v2/auth/nonce?address=0x12", key=False)
    assert bad_address.status == 400
    _assert_documented("/api/v2/auth/nonce", "get", 400, bad_address.body)

    first = api.sign_in()
    assert "apiKey" in first.body
    _assert_documented("/api/v2/auth/verify", "post", 200, first.body)
    forged = api.request("POST", "/api/v2/auth/verify", {"message": "hello", "signature": "0x00"}, key=False)
    assert forged.status == 400
    _assert_documented("/api/v2/auth/verify", "post", 400, forged.body)

    bearer = {"authorization": f"Bearer {first.body['token']}"}
    created = api.request("POST", "/api/v2/keys", {"name": "ci"}, headers=bearer, key=False)
    assert created.status == 201
    _assert_documented("/api/v2/keys", "post", 201, created.body)
    listed = api.request("GET", "/api/v2/keys", headers=bearer, key=False)
    assert listed.status == 200 and len(listed.body["keys"]) == 2
    _assert_documented("/api/v2/keys", "get", 200, listed.body)
    revoked = api.request("DELETE", f"/api/v2/keys/{created.body['id']}", headers=bearer, key=False)
    assert revoked.status == 204 and revoked.body == b""
    again = api.request("DELETE", f"/api/v2/keys/{created.body['id']}", headers=bearer, key=False)
    assert again.status == 404
    _assert_documented("/api/v2/keys/{keyId}", "delete", 404, again.body)
    anonymous = api.request("GET", "/api/v2/keys", key=False)
    assert anonymous.status == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    _assert_documented("/api/v2/keys", "get", 401, anonymous.body)


def test_rate_limit_answers_are_documented(tmp_path: Path) -> None:
    options = {"rate-limit": 0.01, "rate-burst": 1, "sign-ins-per-minute": 1}
    server = Server(tmp_path / "data", **SERVER_OPTIONS, **options).start()
    try:
        strict = ApiClient(server, server.create_key())
        assert strict.request("GET", f"{SDK}/metrics").status == 200
        limited = strict.request("GET", f"{SDK}/metrics")
        assert limited.status == 429 and int(limited.headers["retry-after"]) >= 1
        _assert_documented(f"{SDK}/metrics", "get", 429, limited.body)
        assert strict.request("GET", "/api/v2/auth/nonce", key=False).status == 200
        sign_ins = strict.request("GET", "/api/v2/auth/nonce", key=False)
        assert sign_ins.status == 429 and int(sign_ins.headers["retry-after"]) >= 1
        _assert_documented("/api/v2/auth/nonce", "get", 429, sign_ins.body)
    finally:
        server.stop()


def _schemathesis_config(seeds: Seeds) -> str:
    """Known ids are offered alongside generated ones, so that room and session
    routes are exercised on both sides of their 404."""
    return f"""
[auth.openapi.apiKey]
api_key = "${{LIVESESSIONS_TEST_API_KEY}}"

[auth.openapi.accountSession]
bearer = "${{LIVESESSIONS_TEST_BEARER}}"

[dictionaries.rooms]
values = {json.dumps(seeds.room_ids)}

[dictionaries.sessions]
values = {json.dumps(seeds.session_ids)}

[dictionaries.jobs]
values = {json.dumps(seeds.job_ids)}

[dictionaries.keys]
values = {json.dumps(seeds.key_ids)}

[parameters]
"path.roomId" = {{ dictionary = "rooms", probability = 0.6 }}
"query.roomId" = {{ dictionary = "rooms", probability = 0.6 }}
"body.roomId" = {{ dictionary = "rooms", probability = 0.6 }}
"query.sessionId" = {{ dictionary = "sessions", probability = 0.6 }}
"path.jobId" = {{ dictionary = "jobs", probability = 0.6 }}
"path.keyId" = {{ dictionary = "keys", probability = 0.6 }}
"""


def test_schemathesis_against_running_server(api: ApiClient, seeds: Seeds, tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(_schemathesis_config(seeds))
    events = tmp_path / "events.ndjson"
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{api.server.base}/openapi.json",
        "--header",
        f"x-api-key: {api.api_key}",
        "--checks",
        ",".join(SCHEMATHESIS_CHECKS),
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        SCHEMATHESIS_EXAMPLES,
        "--seed",
        SCHEMATHESIS_SEED,
        "--continue-on-failure",
        "--workers",
        "2",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(events),
        # Signing out would end the one account session the run has; it is
        # tested on its own (test_hostile_clients.py).
        "--exclude-operation-id",
        "signOut",
        # Moderation ends or empties the seeded live rooms every other
        # operation is checked against; its answers and bad input are tested
        # on their own (tests/api/test_moderation.py).
        "--exclude-operation-id",
        "endLiveSession",
        "--exclude-operation-id",
        "removePeer",
        # The live event stream never ends (each call would wait out the
        # request timeout); tested on its own (tests/e2e/test_live_events.py).
        "--exclude-operation-id",
        "liveSessionEvents",
    ]
    env = {
        **os.environ,
        "LIVESESSIONS_TEST_API_KEY": api.api_key,
        "LIVESESSIONS_TEST_BEARER": seeds.bearer_token,
        # Only 127.0.0.1 is ever spoken to: never through a proxy.
        "NO_PROXY": "*",
        "no_proxy": "*",
        "HTTP_PROXY": "",
        "HTTPS_PROXY": "",
        "http_proxy": "",
        "https_proxy": "",
        "ALL_PROXY": "",
        "all_proxy": "",
        "COLUMNS": "160",
    }
    log_before = api.log_path.stat().st_size  # only what this run provokes counts
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    output = result.stdout + result.stderr
    print(output)  # shown by pytest -s, or with the failure
    with open(api.log_path, encoding="utf-8", errors="replace") as log:
        log.seek(log_before)
        server_log = log.read()
    assert result.returncode == 0, f"schemathesis found problems:\n{output}\n--- server log ---\n{server_log}"
    assert "Traceback" not in server_log, server_log

    # The run really reached the API's logic with a valid key and real ids:
    # success answers came back, not only 401s and 404s.
    statuses = _statuses_by_operation(events)
    for operation in (
        f"GET {SDK}/rooms/get-rooms",
        f"GET {SDK}/rooms/room-details/{{roomId}}",
        f"GET {SDK}/live-sessions/{{roomId}}",
        f"GET {SDK}/live-sessions/participants/{{roomId}}",
        f"GET {SDK}/rooms/session-details",
        f"GET {SDK}/rooms/participant-list",
        f"POST {SDK}/create-peer-token",
        f"GET {SDK}/recordings",
        "GET /api/v1/recording/status",
        "GET /api/v1/workers/jobs",
        "GET /api/v2/keys",
        "GET /api/v2/auth/nonce",
    ):
        assert 200 in statuses.get(operation, set()), (operation, statuses)


def _statuses_by_operation(events: Path) -> dict[str, set[int]]:
    """Status codes seen per operation label, from schemathesis' NDJSON events."""
    statuses: dict[str, set[int]] = {}

    def walk(node: Any, label: str | None) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("label"), str):
                label = node["label"]
            response = node.get("response")
            if label and isinstance(response, dict) and isinstance(response.get("status_code"), int):
                statuses.setdefault(label, set()).add(response["status_code"])
            for value in node.values():
                walk(value, label)
        elif isinstance(node, list):
            for value in node:
                walk(value, label)

    for line in events.read_text().splitlines():
        if line.strip():
            walk(json.loads(line), None)
    return statuses
