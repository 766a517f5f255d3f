"""The command line: help everywhere, clear one-line errors, keys that work."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx

from support import BIN, Server, new_wallet


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=60)


def test_every_command_has_help() -> None:
    for args in ([], ["serve"], ["keys"], ["keys", "create"]):
        result = run(*args, "--help")
        assert result.returncode == 0, args
        assert "usage: livesessions" in result.stdout


def test_keys_create_prints_the_key_last_and_stores_only_a_hash(tmp_path: Path) -> None:
    wallet = new_wallet()
    result = run("keys", "create", "--wallet", wallet, "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("lsk_") and len(key) > 40
    database = (tmp_path / "d" / "livesessions.sqlite3").read_bytes()
    assert key.encode() not in database
    as_json = json.loads(run("keys", "create", "--wallet", wallet, "--data-dir", str(tmp_path / "d"), "--json").stdout)
    assert as_json["wallet"] == wallet.lower() and as_json["apiKey"].startswith("lsk_")


def test_keys_of_one_wallet_share_a_project(server: Server) -> None:
    # Made by the command, into the data directory of a server that is running.
    wallet = new_wallet()
    first, second = server.create_key_with_cli(wallet), server.create_key_with_cli(wallet.upper().replace("0X", "0x"))
    room = httpx.post(server.base + "/api/v2/sdk/rooms/create-room", headers={"x-api-key": first}, json={})
    room_id = room.json()["data"]["roomId"]
    details = httpx.get(f"{server.base}/api/v2/sdk/rooms/room-details/{room_id}", headers={"x-api-key": second})
    assert details.status_code == 200


def test_errors_are_one_line_without_traceback(tmp_path: Path) -> None:
    for args in (
        ["keys", "create", "--wallet", "0x123", "--data-dir", str(tmp_path)],
        ["keys", "create", "--wallet", new_wallet(), "--name", "", "--data-dir", str(tmp_path)],
        ["keys", "create", "--wallet", new_wallet(), "--data-dir", "/proc/nope"],
        ["serve", "--grace-period", "-1"],
        ["serve", "--port", "http"],
        ["bogus"],
    ):
        result = run(*args)
        assert result.returncode != 0, args
        assert "Traceback" not in result.stderr, args
        assert "error" in result.stderr.splitlines()[-1], (args, result.stderr)


def test_serve_on_a_taken_port_fails_cleanly(server: Server, tmp_path: Path) -> None:
    result = run("serve", "--port", str(server.port), "--data-dir", str(tmp_path / "d"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
