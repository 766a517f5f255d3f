"""Attacks from outside, against real server processes: each of these got
through once (issue "Hardening"), and each test drives the attack again."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from eth_account import Account

from livesessions.auth.siwe import SiweMessage, format_time
from support import BIN, Peer, Project, Server, sign, wait_closed


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with small limits, so each attack trips them quickly."""
    server = Server(
        tmp_path_factory.mktemp("hostile") / "data",
        **{
            "sign-ins-per-minute": 10_000,
            "peer-message-rate": 20,
            "peer-message-burst": 40,
            "failed-auths-per-minute": 5,
        },
    ).start()
    yield server
    server.stop()


# --- 1. the sign-in domain comes from configuration, never from headers ------


def _siwe(server: Server, account: Any, domain: str, uri: str) -> str:
    nonce = httpx.get(server.base + "/api/v2/auth/nonce").json()["nonce"]
    return SiweMessage(
        domain=domain,
        address=account.address,
        uri=uri,
        chain_id=1,
        nonce=nonce,
        issued_at=format_time(int(time.time() * 1000)),
        statement="Sign in",
    ).text()


def test_a_phishing_sites_message_is_refused_whatever_the_host_header(tight: Server) -> None:
    victim = Account.create()
    for headers in (
        {"host": "evil.example"},
        {"host": "evil.example", "x-forwarded-host": "evil.example", "x-forwarded-proto": "https"},
        {"x-forwarded-host": "evil.example", "x-forwarded-proto": "https", "forwarded": "host=evil.example"},
    ):
        scheme = headers.get("x-forwarded-proto", "http")
        text = _siwe(tight, victim, "evil.example", f"{scheme}://evil.example")
        response = httpx.post(
            tight.base + "/api/v2/auth/verify",
            headers=headers,
            json={"message": text, "signature": sign(text, victim.key)},
        )
        assert response.status_code == 401, (headers, response.text)
        assert "token" not in response.json()
    # The message the service prepares names the service, not the Host asked with.
    prepared = httpx.get(
        tight.base + "/api/v2/auth/nonce", headers={"host": "evil.example"}, params={"address": victim.address}
    ).json()["message"]
    assert prepared.startswith(f"127.0.0.1:{tight.port} wants you") and f"URI: {tight.base}" in prepared


def test_the_public_url_is_what_messages_must_name(fresh_server: Server) -> None:
    fresh_server.options["public-url"] = "https://live.example.com"
    fresh_server.start()
    account = Account.create()
    good = _siwe(fresh_server, account, "live.example.com", "https://live.example.com")
    answer = httpx.post(
        fresh_server.base + "/api/v2/auth/verify", json={"message": good, "signature": sign(good, account.key)}
    )
    assert answer.status_code == 200, answer.text
    local = _siwe(fresh_server, account, f"127.0.0.1:{fresh_server.port}", fresh_server.base)
    refused = httpx.post(
        fresh_server.base + "/api/v2/auth/verify", json={"message": local, "signature": sign(local, account.key)}
    )
    assert refused.status_code == 401 and "live.example.com" in refused.json()["message"]


# --- 2. one peer cannot flood the others out --------------------------------


def test_a_flooding_peer_is_throttled_then_cut_off_and_the_others_stay(tight: Server) -> None:
    project = tight.project()
    room = project.create_room()
    flooder = project.join(room)
    readers = [project.join(room) for _ in range(3)]
    frame = json.dumps({"type": "data", "to": "*", "label": "spam", "payload": "x" * 200})
    code = None
    from websockets.exceptions import ConnectionClosed

    try:
        for _ in range(20_000):
            flooder.ws.send(frame)
    except ConnectionClosed as closed:
        code = closed.rcvd.code if closed.rcvd else None
    if code is None:
        code, _reason = wait_closed(flooder.ws, timeout=10)
    assert code == 4008, code
    # Every well-behaved reader is still connected, got at most the burst
    # (plus what the rate refilled), and hears the flooder leave.
    for reader in readers:
        received = 0
        while True:
            message = reader.recv(timeout=5)
            if message["type"] == "peer-left":
                break
            if message["type"] == "data":
                received += 1
        assert 0 < received <= 100, received
        reader.send({"type": "ping"})
        assert reader.recv_type("pong")["type"] == "pong"
    assert project.live_counts() == {room: 3}
    for reader in readers:
        reader.close()


def test_a_burst_past_the_limit_is_dropped_with_one_warning(tight: Server) -> None:
    project = tight.project()
    room = project.create_room()
    sender, reader = project.join(room), project.join(room)
    sender.recv_type("peer-joined")
    for i in range(45):  # the burst is 40: a few over, far from the cut-off
        sender.send({"type": "data", "to": "*", "label": "n", "payload": i})
    warning = sender.recv_type("error")
    assert "too fast" in warning["message"]
    payloads = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            message = reader.recv(timeout=0.3)
        except TimeoutError:
            break
        if message["type"] == "data":
            payloads.append(message["payload"])
    assert 40 <= len(payloads) < 45 and payloads == sorted(payloads)
    time.sleep(1.0)  # the bucket refills: the sender may talk again
    sender.send({"type": "data", "to": "*", "label": "n", "payload": "later"})
    assert reader.recv_type("data")["payload"] == "later"
    sender.close()
    reader.close()


# --- 7. one server per data directory ----------------------------------------


@pytest.mark.embedded_only
def test_a_second_server_on_the_same_data_directory_refuses_to_start(tight: Server) -> None:
    second = subprocess.run(
        [str(BIN), "serve", "--port", "1", "--data-dir", str(tight.data_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert "in use by another livesessions server" in lines[0]
    assert f"pid {tight.process.pid}" in lines[0] and str(tight.data_dir.resolve()) in lines[0]
    # the first one is unharmed
    assert httpx.get(tight.base + "/api/v2/sdk").status_code == 200


# --- 8. bad bytes are a 400, never a 500 --------------------------------------


def test_invalid_utf8_in_json_strings_is_a_400(tight: Server) -> None:
    project = tight.project()
    room = project.create_room()
    bad = b'{"roomId": "' + room.encode() + b'\xff", "metadata": "caf\xe9", "token": "\xff\xfe"}'
    headers = {"x-api-key": project.key, "content-type": "application/json"}
    for path in (
        "/api/v2/sdk/rooms/create-room",
        f"/api/v2/sdk/rooms/metadata/{room}",
        "/api/v2/sdk/create-peer-token",
        "/api/v1/recording/start",
        "/api/v1/recording/stop",
    ):
        response = httpx.post(tight.base + path, content=bad, headers=headers)
        assert response.status_code == 400, (path, response.status_code, response.text)
        assert "UTF-8" in response.json()["message"]
    session = _sign_in(tight)
    response = httpx.post(
        tight.base + "/api/v2/keys",
        content=b'{"name": "k\xff"}',
        headers={"authorization": f"Bearer {session['token']}", "content-type": "application/json"},
    )
    assert response.status_code == 400 and "UTF-8" in response.json()["message"]
    for path in ("/api/v2/auth/verify",):
        response = httpx.post(
            tight.base + path,
            content=b'{"message": "\xc3\x28", "signature": "0x"}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400, response.text


@pytest.mark.parametrize("chain_id", ["¹", "١", "１", "1¹"])
def test_chain_ids_in_other_digits_are_a_400(tight: Server, chain_id: str) -> None:
    account = Account.create()
    text = _siwe(tight, account, f"127.0.0.1:{tight.port}", tight.base).replace("Chain ID: 1", f"Chain ID: {chain_id}")
    response = httpx.post(
        tight.base + "/api/v2/auth/verify", json={"message": text, "signature": sign(text, account.key)}
    )
    assert response.status_code == 400, response.text
    assert "Chain ID" in response.json()["message"]


def test_a_content_length_in_other_digits_is_a_4xx(tight: Server) -> None:
    import socket

    project = tight.project()
    with socket.create_connection(("127.0.0.1", tight.port), timeout=5) as sock:
        sock.sendall(
            b"POST /api/v2/sdk/rooms/create-room HTTP/1.1\r\nhost: x\r\nx-api-key: "
            + project.key.encode()
            + "\r\ncontent-type: application/json\r\ncontent-length: ¹\r\n\r\n{}".encode()
        )
        status = sock.recv(4096).split(b" ", 2)[1]
    assert status.startswith(b"4"), status


# --- 9. bots, revoked keys' tokens, sign-out, guessing keys ---------------------


def test_bot_tokens_obey_locks_and_full_rooms_and_cannot_message_by_default(tight: Server) -> None:
    project = tight.project()
    locked = project.create_room(roomLocked=True)
    code, _ = wait_closed(_connect(tight, project.token(locked, role="bot")))
    assert code == 4003
    room = project.create_room()
    human = project.join(room)
    code, _ = wait_closed(_connect(tight, project.token(room, role="bot", options={"maxPeersAllowed": 1})))
    assert code == 4029
    bot = project.join(room, role="bot")
    bot.send({"type": "data", "to": "*", "label": "x", "payload": "pretending"})
    assert "canSendData" in bot.recv_type("error")["message"]
    bot.send({"type": "update-metadata", "metadata": "someone else"})
    assert "canUpdateMetadata" in bot.recv_type("error")["message"]
    with pytest.raises(TimeoutError):
        human.recv_type("data", timeout=0.3)
    bot.close()
    human.close()


def _connect(server: Server, token: str) -> Any:
    from websockets.sync.client import connect

    return connect(f"{server.ws_base}/ws?token={token}", open_timeout=10)


def _sign_in(server: Server) -> dict[str, Any]:
    account = Account.create()
    text = _siwe(server, account, f"127.0.0.1:{server.port}", server.base)
    response = httpx.post(
        server.base + "/api/v2/auth/verify", json={"message": text, "signature": sign(text, account.key)}
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_a_revoked_keys_peer_tokens_stop_working(tight: Server) -> None:
    session = _sign_in(tight)
    account = httpx.Client(base_url=tight.base, headers={"authorization": f"Bearer {session['token']}"})
    created = account.post("/api/v2/keys", json={"name": "doomed"}).json()
    doomed = Project(tight, created["apiKey"])
    keeper = Project(tight, session["apiKey"])
    room = doomed.create_room()
    tokens = [doomed.token(room) for _ in range(2)]
    kept = keeper.token(room)
    Peer.connect(tight, tokens[0]).close()  # works while the key does
    assert account.delete(f"/api/v2/keys/{created['id']}").status_code == 204
    code, reason = wait_closed(_connect(tight, tokens[1]))
    assert code == 4001 and "revoked" in reason
    # the project's other keys' tokens still work
    Peer.connect(tight, kept).close()


def test_a_key_revoked_by_another_process_stops_its_tokens_within_a_heartbeat(fresh_server: Server) -> None:
    fresh_server.options["heartbeat-interval"] = 0.5
    fresh_server.start()
    import sqlite3

    project = fresh_server.project()
    room = project.create_room()
    token = project.token(room)
    Peer.connect(fresh_server, token).close()
    # Revoked straight in the database, as the command line on the same
    # database does (another process: the data directory's, or scaled out the
    # PostgreSQL one).
    if fresh_server.database_url is not None:
        import asyncpg

        async def revoke() -> None:
            conn = await asyncpg.connect(fresh_server.database_url)
            try:
                await conn.execute(
                    "UPDATE api_keys SET revoked_at = $1 WHERE revoked_at IS NULL", int(time.time() * 1000)
                )
            finally:
                await conn.close()

        asyncio.run(revoke())
    else:
        with sqlite3.connect(fresh_server.data_dir / "livesessions.sqlite3") as db:
            db.execute("UPDATE api_keys SET revoked_at = ? WHERE revoked_at IS NULL", (int(time.time() * 1000),))
    time.sleep(1.5)
    code, _ = wait_closed(_connect(fresh_server, token))
    assert code == 4001
    assert project.get("/api/v2/sdk/live-sessions").status_code == 401


def test_sign_out_ends_the_account_session_here_or_everywhere(tight: Server) -> None:
    first = _sign_in(tight)
    client = lambda token: httpx.Client(base_url=tight.base, headers={"authorization": f"Bearer {token}"})  # noqa: E731
    assert client(first["token"]).post("/api/v2/auth/logout").status_code == 204
    assert client(first["token"]).get("/api/v2/keys").status_code == 401
    # everywhere: every session of the wallet ends, other wallets' do not
    account = Account.create()
    sessions = []
    for _ in range(2):
        text = _siwe(tight, account, f"127.0.0.1:{tight.port}", tight.base)
        sessions.append(
            httpx.post(
                tight.base + "/api/v2/auth/verify", json={"message": text, "signature": sign(text, account.key)}
            ).json()["token"]
        )
    other = _sign_in(tight)["token"]
    assert client(sessions[0]).post("/api/v2/auth/logout", json={"everywhere": True}).status_code == 204
    assert [client(t).get("/api/v2/keys").status_code for t in sessions] == [401, 401]
    assert client(other).get("/api/v2/keys").status_code == 200
    # the API keys live on: revoking keys and signing out are separate
    assert (
        httpx.get(tight.base + "/api/v2/sdk/live-sessions", headers={"x-api-key": first["apiKey"]}).status_code == 200
    )


def test_guessing_keys_is_throttled_per_client_address(fresh_server: Server) -> None:
    fresh_server.options.update({"failed-auths-per-minute": 60, "trusted-proxies": "127.0.0.1"})
    fresh_server.start()
    good = fresh_server.create_key()
    url = fresh_server.base + "/api/v2/sdk/live-sessions"
    # 60 a minute is one a second: on a slow machine the budget refills a
    # little while the guesses go out, and the count allows exactly that.
    started = time.monotonic()
    statuses: list[int] = []
    client = httpx.Client()
    while 429 not in statuses and len(statuses) < 200:
        statuses.append(client.get(url, headers={"x-api-key": f"lsk_guess{len(statuses)}"}).status_code)
    refilled = int(time.monotonic() - started) + 1
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401}
    assert 60 <= len(statuses) - 1 <= 60 + refilled

    def exhausted() -> None:
        """Spend whatever refilled since (one a second), so the next request
        meets an empty budget however slow this machine is."""
        for _ in range(10):
            if client.get(url, headers={"x-api-key": "lsk_again"}).status_code == 429:
                return
        raise AssertionError("the budget never ran out again")

    exhausted()
    assert int(client.get(url, headers={"x-api-key": "lsk_again"}).headers["retry-after"]) >= 1
    exhausted()
    assert (
        client.get(fresh_server.base + "/api/v2/keys", headers={"authorization": "Bearer lss_guess"}).status_code == 429
    )
    # Not even the right key gets in from there until the budget refills:
    # otherwise guessing would go on at full speed, only answered 429.
    exhausted()
    assert client.get(url, headers={"x-api-key": good}).status_code == 429
    client.close()
    # behind a trusted proxy, each forwarded client has its own budget
    other_client = {"x-api-key": "lsk_guess", "x-forwarded-for": "203.0.113.7"}
    assert httpx.get(url, headers=other_client).status_code == 401
    assert httpx.get(url, headers={"x-api-key": good, "x-forwarded-for": "203.0.113.8"}).status_code == 200
    time.sleep(1.2)  # 60 a minute: one attempt back every second
    assert httpx.get(url, headers={"x-api-key": good}).status_code == 200
