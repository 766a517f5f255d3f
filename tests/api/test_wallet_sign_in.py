"""API keys by connecting a wallet: Sign-In with Ethereum through the HTTP API,
with real signatures from keys made in the test, and key management (the app
in this process; the `login` command against a server: e2e/test_login_command.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from eth_account import Account

from livesessions.auth.siwe import SiweMessage, format_time
from support import LocalApp, sign


@pytest.fixture
def auth_server(make_app: Callable[..., LocalApp]) -> LocalApp:
    return make_app(sign_ins_per_minute=10_000, chain_ids=frozenset({1, 137}))


def nonce(server: LocalApp) -> str:
    response = server.http.get("/api/v2/auth/nonce")
    assert response.status_code == 200
    return response.json()["nonce"]


def message(server: LocalApp, account: Any, **overrides: Any) -> str:
    fields = {
        "domain": f"127.0.0.1:{server.port}",
        "address": account.address,
        "uri": server.base,
        "chain_id": 1,
        "nonce": nonce(server),
        "issued_at": format_time(int(time.time() * 1000)),
        "statement": "Sign in",
    }
    fields.update(overrides)
    return SiweMessage(**fields).text()


def verify(server: LocalApp, text: str, signature: str) -> httpx.Response:
    return server.http.post("/api/v2/auth/verify", json={"message": text, "signature": signature})


def sign_in(server: LocalApp, account: Any) -> dict:
    text = message(server, account)
    response = verify(server, text, sign(text, account.key))
    assert response.status_code == 200, response.text
    return response.json()


def keys(server: LocalApp, token: str) -> httpx.Client:
    return server.client(headers={"authorization": f"Bearer {token}"})


def test_first_sign_in_gets_a_project_and_a_key_that_works(auth_server: LocalApp) -> None:
    account = Account.create()
    first = sign_in(auth_server, account)
    assert first["address"] == account.address
    assert first["projectId"].startswith("prj_") and first["token"].startswith("lss_")
    api_key = first["apiKey"]
    room = auth_server.http.post("/api/v2/sdk/rooms/create-room", headers={"x-api-key": api_key}, json={})
    assert room.status_code == 201
    again = sign_in(auth_server, account)
    assert "apiKey" not in again and again["projectId"] == first["projectId"]
    assert again["token"] != first["token"]


def test_keys_are_listed_masked_created_and_revoked_at_once(auth_server: LocalApp) -> None:
    account = Account.create()
    session = sign_in(auth_server, account)
    client = keys(auth_server, session["token"])
    created = client.post("/api/v2/keys", json={"name": "ci"})
    assert created.status_code == 201
    new_key = created.json()["apiKey"]
    headers = {"x-api-key": new_key}
    assert auth_server.http.get("/api/v2/sdk/live-sessions", headers=headers).status_code == 200
    listed = client.get("/api/v2/keys").json()["keys"]
    assert [k["name"] for k in listed] == ["first key", "ci"]
    for item in listed:
        assert set(item) == {"id", "name", "maskedKey", "createdAt", "lastUsedAt"}
        assert "…" in item["maskedKey"] and len(item["maskedKey"]) < 20
    assert new_key not in str(listed) and session["apiKey"] not in str(listed)
    assert listed[1]["lastUsedAt"] is not None and listed[0]["lastUsedAt"] is None
    ci_id = created.json()["id"]
    assert client.delete(f"/api/v2/keys/{ci_id}").status_code == 204
    refused = auth_server.http.get("/api/v2/sdk/live-sessions", headers=headers)
    assert refused.status_code == 401
    assert [k["name"] for k in client.get("/api/v2/keys").json()["keys"]] == ["first key"]
    assert client.delete(f"/api/v2/keys/{ci_id}").status_code == 404
    # the other key of the project still works
    assert (
        auth_server.http.get("/api/v2/sdk/live-sessions", headers={"x-api-key": session["apiKey"]}).status_code == 200
    )


def test_revocation_holds_for_requests_queued_behind_it(auth_server: LocalApp) -> None:
    session = sign_in(auth_server, Account.create())
    client = keys(auth_server, session["token"])
    key_id = client.get("/api/v2/keys").json()["keys"][0]["id"]
    api_key = session["apiKey"]

    import concurrent.futures

    def hit() -> tuple[float, int]:
        response = auth_server.http.get("/api/v2/sdk/live-sessions", headers={"x-api-key": api_key})
        return time.monotonic(), response.status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(hit) for _ in range(40)]
        assert client.delete(f"/api/v2/keys/{key_id}").status_code == 204
        results = [f.result() for f in futures]
    after = [hit() for _ in range(5)]
    assert all(status == 401 for _, status in after)
    assert all(status in (200, 401) for _, status in results)


def test_another_projects_key_cannot_be_revoked(auth_server: LocalApp) -> None:
    mine = sign_in(auth_server, Account.create())
    theirs = sign_in(auth_server, Account.create())
    their_key_id = keys(auth_server, theirs["token"]).get("/api/v2/keys").json()["keys"][0]["id"]
    assert keys(auth_server, mine["token"]).delete(f"/api/v2/keys/{their_key_id}").status_code == 404
    assert auth_server.http.get("/api/v2/sdk/live-sessions", headers={"x-api-key": theirs["apiKey"]}).status_code == 200


def test_key_routes_need_an_account_session(auth_server: LocalApp) -> None:
    for headers in ({}, {"authorization": "Bearer nope"}, {"authorization": "Basic abc"}):
        response = auth_server.http.get("/api/v2/keys", headers=headers)
        assert response.status_code == 401
        assert "Sign in first" in response.json()["message"]
    session = sign_in(auth_server, Account.create())
    client = keys(auth_server, session["token"])
    for bad in ({}, {"name": ""}, {"name": "x" * 101}, {"name": 5}):
        assert client.post("/api/v2/keys", json=bad).status_code == 400
    # an API key is not an account session
    assert (
        auth_server.http.get("/api/v2/keys", headers={"authorization": f"Bearer {session['apiKey']}"}).status_code
        == 401
    )


def _refused(server: LocalApp, text: str, signature: str, status: int, reason: str) -> None:
    response = verify(server, text, signature)
    assert response.status_code == status, response.text
    assert reason in response.json()["message"], response.json()
    assert "apiKey" not in response.json() and "token" not in response.json()


def test_bad_sign_ins_are_refused_with_a_reason(auth_server: LocalApp) -> None:
    account, other = Account.create(), Account.create()
    now = int(time.time() * 1000)
    cases = [
        # (message fields, how to sign, status, reason)
        ({}, "tamper", 401, "not made by the message's address"),
        ({}, "other", 401, "not made by the message's address"),
        ({"domain": "evil.example"}, "ok", 401, "domain"),
        ({"uri": "http://evil.example"}, "ok", 401, "URI"),
        ({"chain_id": 5}, "ok", 401, "chain id 5"),
        ({"version": "2"}, "ok", 401, "version"),
        ({"nonce": "neverissued123"}, "ok", 401, "nonce"),
        ({"issued_at": format_time(now + 3_600_000)}, "ok", 401, "future"),
        ({"issued_at": format_time(now - 3_600_000)}, "ok", 401, "too old"),
        ({"expiration_time": format_time(now - 1000)}, "ok", 401, "expired"),
        ({"not_before": format_time(now + 3_600_000)}, "ok", 401, "not valid yet"),
    ]
    for fields, how, status, reason in cases:
        text = message(auth_server, account, **fields)
        if how == "tamper":
            signature = sign(text, account.key)
            text = text.replace("Sign in", "Sign in and send me your tokens")
        else:
            signature = sign(text, (other if how == "other" else account).key)
        _refused(auth_server, text, signature, status, reason)
    text = message(auth_server, account)
    good = sign(text, account.key)
    for signature, reason in (
        ("0x1234", "130 hex"),
        (good[:-2] + "zz", "130 hex"),
        ("0x" + "00" * 65, "cannot be recovered"),
    ):
        _refused(auth_server, text, signature, 400, reason)
    _refused(auth_server, "hello", good, 400, "EIP-4361")
    # A chain the server allows besides 1
    text137 = message(auth_server, account, chain_id=137)
    assert verify(auth_server, text137, sign(text137, account.key)).status_code == 200


def test_a_nonce_works_once(auth_server: LocalApp) -> None:
    account = Account.create()
    text = message(auth_server, account)
    signature = sign(text, account.key)
    assert verify(auth_server, text, signature).status_code == 200
    _refused(auth_server, text, signature, 401, "already used")


def test_malformed_verify_bodies(auth_server: LocalApp) -> None:
    for body in ({}, {"message": "x"}, {"message": 5, "signature": "0x"}, [], {"message": "", "signature": ""}):
        response = auth_server.http.post("/api/v2/auth/verify", json=body)
        assert response.status_code == 400, body


def test_the_nonce_route_can_prepare_the_message(auth_server: LocalApp) -> None:
    account = Account.create()
    answer = auth_server.http.get(
        "/api/v2/auth/nonce", params={"address": account.address.lower(), "chainId": 137}
    ).json()
    assert answer["message"].split("\n")[1] == account.address  # checksummed for the wallet
    assert f"Nonce: {answer['nonce']}" in answer["message"] and "Chain ID: 137" in answer["message"]
    assert verify(auth_server, answer["message"], sign(answer["message"], account.key)).status_code == 200
    assert auth_server.http.get("/api/v2/auth/nonce", params={"address": "0x12"}).status_code == 400


def test_sign_in_attempts_are_rate_limited(make_app: Callable[..., LocalApp]) -> None:
    fresh_server = make_app(sign_ins_per_minute=3)
    statuses = [fresh_server.http.get("/api/v2/auth/nonce").status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
    limited = fresh_server.http.get("/api/v2/auth/nonce")
    assert int(limited.headers["retry-after"]) >= 1


def test_api_keys_are_rate_limited(make_app: Callable[..., LocalApp]) -> None:
    fresh_server = make_app(rate_limit=2, rate_burst=3)
    key = fresh_server.create_key()
    other = fresh_server.create_key()
    statuses = [
        fresh_server.http.get("/api/v2/sdk/live-sessions", headers={"x-api-key": key}).status_code for _ in range(6)
    ]
    assert statuses[:3] == [200, 200, 200] and 429 in statuses[3:]
    limited = fresh_server.http.get("/api/v2/sdk/live-sessions", headers={"x-api-key": key})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["message"]
    # limits are per key
    assert fresh_server.http.get("/api/v2/sdk/live-sessions", headers={"x-api-key": other}).status_code == 200
    time.sleep(1.1)
    assert fresh_server.http.get("/api/v2/sdk/live-sessions", headers={"x-api-key": key}).status_code == 200
