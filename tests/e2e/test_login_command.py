"""The `login` command: Sign-In with Ethereum from a key file, against a
running server."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import httpx
import pytest
from eth_account import Account

from support import BIN, Server


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(
        tmp_path_factory.mktemp("auth") / "data", **{"sign-ins-per-minute": 10_000, "chain-ids": "1,137"}
    ).start()
    yield server
    server.stop()


def test_login_command_signs_in_from_a_key_file(auth_server: Server, tmp_path) -> None:
    account = Account.create()
    key_file = tmp_path / "wallet.key"
    key_file.write_text(account.key.hex())

    def run(*extra):
        return subprocess.run(
            [str(BIN), "login", "--url", auth_server.base, *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )

    first = run("--key-file", str(key_file))
    assert first.returncode == 0, first.stderr
    api_key = first.stdout.strip().splitlines()[-1]
    assert httpx.get(auth_server.base + "/api/v2/sdk/live-sessions", headers={"x-api-key": api_key}).status_code == 200
    second = run("--key-file", str(key_file), "--json")
    assert second.returncode == 0 and '"apiKey"' in second.stdout and api_key not in second.stdout
    missing = run()
    assert missing.returncode != 0 and "LIVESESSIONS_WALLET_KEY" in missing.stderr
    key_file.write_text("not a key")
    bad = run("--key-file", str(key_file))
    assert bad.returncode != 0 and "not a key" not in bad.stderr and "Traceback" not in bad.stderr
    assert "--private-key" not in subprocess.run([str(BIN), "login", "--help"], capture_output=True, text=True).stdout


def test_login_names_the_public_url_of_a_server_behind_a_proxy(tmp_path) -> None:
    server = Server(tmp_path / "data", **{"public-url": "https://live.example.com"}).start()
    try:
        key_file = tmp_path / "wallet.key"
        key_file.write_text(Account.create().key.hex())
        base = ["login", "--url", server.base, "--key-file", str(key_file)]
        plain = subprocess.run([str(BIN), *base], capture_output=True, text=True, timeout=60)
        assert plain.returncode != 0 and "live.example.com" in plain.stderr
        named = subprocess.run(
            [str(BIN), *base, "--public-url", "https://live.example.com"], capture_output=True, text=True, timeout=60
        )
        assert named.returncode == 0, named.stderr
        api_key = named.stdout.strip().splitlines()[-1]
        assert httpx.get(server.base + "/api/v2/sdk/live-sessions", headers={"x-api-key": api_key}).status_code == 200
    finally:
        server.stop()
