"""Living with the service as an operator: the commands, settings from the
environment, the start-up banner and the logs, all through real processes."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import BIN, Server, free_port, new_wallet, wait_closed


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}, cwd=cwd
    )


@pytest.mark.embedded_only
def test_keys_are_listed_and_revoked_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    wallet = new_wallet()
    made = run("keys", "create", "--wallet", wallet, "--data-dir", str(data), "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    # Says which directory it used, and that it had to make it.
    assert f"data directory {data.resolve()}" in made.stderr and "warning" in made.stderr
    again = run("keys", "create", "--wallet", wallet, "--data-dir", str(data))
    assert "warning" not in again.stderr
    listed = run("keys", "list", "--data-dir", str(data), "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert next(row["id"] for row in rows) == key["id"] and len(rows) == 2
    assert all(row["wallet"] == wallet.lower() and "…" in row["maskedKey"] for row in rows)
    assert key["apiKey"] not in listed.stdout
    table = run("keys", "list", "--data-dir", str(data), "--wallet", wallet)
    assert table.stdout.splitlines()[0].split() == ["ID", "NAME", "KEY", "WALLET", "CREATED", "LAST", "USED"]

    server = Server(data, **{"heartbeat-interval": 0.3}).start()
    try:
        headers = {"x-api-key": key["apiKey"]}
        room = httpx.post(server.base + "/api/v2/sdk/rooms/create-room", headers=headers, json={})
        token = httpx.post(
            server.base + "/api/v2/sdk/create-peer-token",
            headers=headers,
            json={"roomId": room.json()["data"]["roomId"]},
        ).json()["token"]
        revoked = run("keys", "revoke", key["id"], "--data-dir", str(data))
        assert revoked.returncode == 0 and key["id"] in revoked.stdout
        # The running server hears of it within its heartbeat: the key and its tokens stop working.
        deadline = time.monotonic() + 5
        while httpx.get(server.base + "/api/v2/sdk/live-sessions", headers=headers).status_code != 401:
            assert time.monotonic() < deadline, "the revocation did not reach the running server"
            time.sleep(0.1)
        from websockets.sync.client import connect

        code, _ = wait_closed(connect(f"{server.ws_base}/ws?token={token}"))
        assert code == 4001
        twice = run("keys", "revoke", key["id"], "--data-dir", str(data))
        assert twice.returncode == 2 and "no working API key" in twice.stderr
        where = run("data-dir", "--data-dir", str(data), "--json")
        info = json.loads(where.stdout)
        assert info["dataDir"] == str(data.resolve()) and info["server"] == str(server.process.pid)
        assert info["database"]["api_keys"] == 2 and info["database"]["rooms"] == 1
    finally:
        server.stop()
    assert json.loads(run("data-dir", "--data-dir", str(data), "--json").stdout)["server"] is None


def test_keys_commands_work_on_the_scale_out_database(tmp_path: Path) -> None:
    """Scaled out, `keys` works on the nodes' PostgreSQL database, and a
    running node hears of a revocation within its heartbeat."""
    from backends import new_database, redis_server, require_redis_server

    require_redis_server()
    database = new_database()
    wallet = new_wallet()
    made = run("keys", "create", "--wallet", wallet, "--database-url", database, "--json")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    # Says which database, without any password in the URL.
    assert "livesessions: database postgresql://" in made.stderr
    listed = run("keys", "list", env={"LIVESESSIONS_DATABASE_URL": database}, cwd=tmp_path)
    assert key["id"] in listed.stdout and key["apiKey"] not in listed.stdout
    assert not (tmp_path / "livesessions-data").exists()  # no data directory was made
    server = Server(
        tmp_path / "node", **{"heartbeat-interval": 0.3, "database-url": database, "redis-url": redis_server().url}
    )
    (tmp_path / "node").mkdir()
    server.start()
    try:
        headers = {"x-api-key": key["apiKey"]}
        assert httpx.get(server.base + "/api/v2/sdk/live-sessions", headers=headers).status_code == 200
        revoked = run("keys", "revoke", key["id"], "--database-url", database)
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 5
        while httpx.get(server.base + "/api/v2/sdk/live-sessions", headers=headers).status_code != 401:
            assert time.monotonic() < deadline, "the revocation did not reach the running node"
            time.sleep(0.1)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("flags", "env"),
    [
        (["--database-url", "postgresql://127.0.0.1/x"], {}),
        (["--redis-url", "redis://127.0.0.1:1"], {}),
        ([], {"LIVESESSIONS_REDIS_URL": "redis://127.0.0.1:1"}),
    ],
)
def test_one_scale_out_url_without_the_other_is_a_one_line_error(
    tmp_path: Path, flags: list[str], env: dict[str, str]
) -> None:
    done = run("serve", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()), *flags, env=env)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "without" in line and "--database-url" in line and "--redis-url" in line
    assert not (tmp_path / "data").exists()


def test_an_unreachable_database_is_a_one_line_error(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    done = run("keys", "list", "--database-url", url)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("livesessions: error: cannot use the PostgreSQL database")
    served = run("serve", "--database-url", url, "--redis-url", "redis://127.0.0.1:1", "--port", str(free_port()))
    assert served.returncode != 0 and "cannot use the PostgreSQL database" in served.stderr


def test_a_webhook_sealing_key_file_that_cannot_be_used_is_a_one_line_error(tmp_path: Path) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 10)
    for key_file, why in ((short, "must hold exactly 32 bytes"), (tmp_path / "missing.key", "cannot read")):
        done = run(
            "serve", "--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
            "--webhook-sealing-key-file", str(key_file),
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("livesessions: error: ") and why in done.stderr


def test_data_dir_command_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    shown = run("data-dir", "--data-dir", str(missing))
    assert shown.returncode == 0 and "does not exist" in shown.stdout and "none yet" in shown.stdout
    assert not missing.exists()


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    process = subprocess.Popen(
        [str(BIN), "serve", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v2/sdk", timeout=1).status_code == 200:
                return process, port
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)


def _stop(process: subprocess.Popen[str]) -> str:
    process.terminate()
    output, _ = process.communicate(timeout=15)
    return output


def test_settings_come_from_the_environment_and_flags_win(tmp_path: Path) -> None:
    env = {
        "LIVESESSIONS_DATA_DIR": str(tmp_path / "from-env"),
        "LIVESESSIONS_PUBLIC_URL": "https://live.example.com",
        "LIVESESSIONS_GRACE_PERIOD": "3",
    }
    process, port = _serve(tmp_path, "--public-url", "https://flag.example.com", env=env)
    try:
        message = httpx.get(f"http://127.0.0.1:{port}/api/v2/auth/nonce", params={"address": "0x" + "11" * 20}).json()[
            "message"
        ]
        assert message.startswith("flag.example.com wants you")
    finally:
        output = _stop(process)
    assert (tmp_path / "from-env" / "livesessions.sqlite3").exists()
    # The banner: version, absolute data directory, backend, address, docs, first key.
    assert f"data           {tmp_path / 'from-env'} (SQLite, embedded)" in output
    assert f"listening on   http://127.0.0.1:{port} (public URL https://flag.example.com)" in output
    assert "https://flag.example.com/docs" in output and "keys create --wallet" in output
    bad = run("serve", env={"LIVESESSIONS_GRACE_PERIOD": "soon"})
    assert bad.returncode == 2 and "LIVESESSIONS_GRACE_PERIOD" in bad.stderr
    help_text = run("serve", "--help").stdout
    for flag, variable, default in (
        ("--grace-period", "LIVESESSIONS_GRACE_PERIOD", "10"),
        ("--peer-message-rate", "LIVESESSIONS_PEER_MESSAGE_RATE", "50"),
        ("--log-format", "LIVESESSIONS_LOG_FORMAT", "text"),
    ):
        assert flag in help_text and variable in help_text and f"default: {default}" in " ".join(help_text.split())


def test_json_logs_tell_the_story_without_secrets(tmp_path: Path) -> None:
    process, port = _serve(
        tmp_path, "--data-dir", str(tmp_path / "data"), "--log-format", "json", "--grace-period", "0.2", "--access-log"
    )
    base = f"http://127.0.0.1:{port}"
    try:
        made = run("keys", "create", "--wallet", new_wallet(), "--data-dir", str(tmp_path / "data"), "--json")
        api_key = json.loads(made.stdout)["apiKey"]
        headers = {"x-api-key": api_key}
        room = httpx.post(base + "/api/v2/sdk/rooms/create-room", headers=headers, json={}).json()["data"]["roomId"]
        token = httpx.post(base + "/api/v2/sdk/create-peer-token", headers=headers, json={"roomId": room}).json()[
            "token"
        ]
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{port}/ws?token={token}") as ws:
            ws.recv(timeout=5)
        wait_closed(connect(f"ws://127.0.0.1:{port}/ws?token=not-a-token"))
        # A link's signature in a logged request line is cut out too.
        assert httpx.get(base + "/api/v1/recordings/job_x/download?expires=1&signature=SECRETSIG").status_code == 403
        time.sleep(1.0)  # the grace period runs out: the session ends
    finally:
        output = _stop(process)
    events: list[dict[str, Any]] = []
    for line in output.splitlines():
        events.append(json.loads(line))  # every line is a JSON object
    messages = [e["message"] for e in events]
    assert "livesessions started" in messages
    started = next(e for e in events if e["message"] == "session started")
    assert started["room"] == room and started["session"].startswith("ses_")
    assert any(e["message"] == "session ended" and e["room"] == room for e in events)
    refused = next(e for e in events if e["message"] == "peer refused")
    assert refused["reason"] == "bad-token" and refused["level"] == "info"
    assert token not in output and api_key not in output and "not-a-token" not in output
    access = [m for m in messages if "/api/v1/recordings/job_x/download" in m]
    assert access and "signature=…" in access[0] and "SECRETSIG" not in output
    # No line per connection from the server underneath.
    assert not any("connection open" in m or "[accepted]" in m for m in messages)


def _scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    answer = httpx.get(base + "/metrics")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def test_metrics_are_scraped_in_prometheus_format(server: Server) -> None:
    project = server.project()
    before = _scrape(server.base)
    room = project.create_room()
    peer = project.join(room)
    other = project.join(room)
    peer.send({"type": "data", "to": "*", "label": "x", "payload": 1})
    other.recv_type("data")
    from websockets.sync.client import connect

    wait_closed(connect(f"{server.ws_base}/ws?token=nonsense"))
    locked = project.create_room(roomLocked=True)
    wait_closed(connect(f"{server.ws_base}/ws?token={project.token(locked)}"))
    assert project.get("/api/v2/sdk/live-sessions").status_code == 200
    assert (
        httpx.post(server.base + "/api/v2/auth/verify", json={"message": "hi", "signature": "0x0"}).status_code == 400
    )
    during = _scrape(server.base)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return during.get(key, 0.0) - before.get(key, 0.0)

    assert during[("livesessions_live_rooms", ())] >= 1 and during[("livesessions_peers", ())] >= 2
    assert delta("livesessions_joins_total", role="speaker") == 2
    assert delta("livesessions_join_refusals_total", reason="bad-token") == 1
    assert delta("livesessions_join_refusals_total", reason="locked") == 1
    assert delta("livesessions_websocket_messages_total", direction="in") >= 1
    assert delta("livesessions_websocket_messages_total", direction="out") >= 3  # 2 joined, peer-joined, data
    requests = delta(
        "livesessions_http_request_duration_seconds_count",
        method="GET",
        route="/api/v2/sdk/live-sessions",
        status="200",
    )
    assert requests >= 1
    assert (
        delta(
            "livesessions_http_request_duration_seconds_count",
            method="POST",
            route="/api/v2/sdk/rooms/create-room",
            status="201",
        )
        == 2
    )
    assert during[("livesessions_commit_duration_seconds_count", ())] > before.get(
        ("livesessions_commit_duration_seconds_count", ()), 0
    )
    assert ("livesessions_write_queue_depth", ()) in during
    assert ("livesessions_egress_active", (("type", "recording"),)) in during
    assert delta("livesessions_sign_ins_total", outcome="refused") == 1
    peer.close()
    other.close()
    after = _scrape(server.base)
    assert after[("livesessions_leaves_total", ())] - before.get(("livesessions_leaves_total", ()), 0) >= 2


def test_whitelisted_domains_are_set_and_listed_from_the_command_line(tmp_path: Path) -> None:
    """`domains set` and `domains list` on a server's database (its data
    directory, or scaled out its PostgreSQL database), with the server
    running: the list holds at once for browser joins from then on, and a
    change reaches the running server within its few seconds of caching."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    server = Server(tmp_path / "data")
    where = ("--database-url", server.database_url) if server.database_url else ("--data-dir", str(server.data_dir))
    wallet = new_wallet()
    made = run("domains", "set", "--wallet", wallet, "App.Example.com", "localhost:3000", "app.example.com", *where)
    assert made.returncode == 0, made.stderr
    assert "app.example.com localhost:3000 only" in made.stdout
    for bad, says in (
        (("https://evil.example.com",), "'https://evil.example.com': give the host without a scheme"),
        (("ok.example.com", "*.example.com"), "'*.example.com': wildcards are not supported"),
    ):
        refused = run("domains", "set", "--wallet", wallet, *bad, *where)
        assert refused.returncode == 2 and says in refused.stderr, refused.stderr
    assert run("domains", "set", "--wallet", "0x12", "a.example.com", *where).returncode == 2
    listed = run("domains", "list", "--json", *where)
    assert listed.returncode == 0, listed.stderr
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["wallet"] == wallet.lower() and row["whitelistedDomains"] == ["app.example.com", "localhost:3000"]
    table = run("domains", "list", "--wallet", wallet.upper().replace("0X", "0x"), *where).stdout.splitlines()
    assert table[0].split() == ["PROJECT", "WALLET", "DOMAINS"]
    assert table[1].split() == [row["projectId"], wallet.lower(), "app.example.com", "localhost:3000"]

    def join_from(origin: str) -> tuple[int | None, str | None] | None:
        """None if a peer got in from this origin, else the close code and reason."""
        ws = connect(f"{server.ws_base}/ws?token={project.token(room)}", additional_headers={"Origin": origin})
        try:
            if json.loads(ws.recv(timeout=5))["type"] == "joined":
                ws.close()
                return None
        except ConnectionClosed:
            pass
        return wait_closed(ws)

    server.start()
    try:
        project = server.project(wallet)
        room = project.create_room()
        assert join_from("https://evil.example.com") == (4003, "origin not allowed")
        assert join_from("http://localhost:3000") is None
        project.join(room).close()  # no Origin: not a browser, not affected

        cleared = run("domains", "set", "--wallet", wallet, *where)
        assert cleared.returncode == 0 and "any origin may join" in cleared.stdout
        assert "no project has whitelisted domains" in run("domains", "list", *where).stdout
        deadline = time.monotonic() + 10
        while join_from("https://evil.example.com") is not None:
            assert time.monotonic() < deadline, "the running server did not apply the cleared list"
            time.sleep(0.2)
    finally:
        server.stop()
