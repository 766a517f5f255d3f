"""Shared test fixtures: a real `livesessions serve` process and clients for it."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

BIN = Path(sys.executable).parent / "livesessions"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_wallet() -> str:
    return "0x" + secrets.token_hex(20)


class Server:
    """A service process on a free loopback port, with its own data directory."""

    def __init__(self, data_dir: Path, **options: Any) -> None:
        self.data_dir = data_dir
        # Every test client comes from 127.0.0.1: the per-address limit on
        # wrong keys is raised here and tested on servers of its own.
        self.options = {"grace-period": 1.0, "ping-interval": 0.5, "ping-timeout": 0.5,
                        "failed-auths-per-minute": 100_000, **options}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_base = f"ws://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        args = [str(BIN), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        for name, value in self.options.items():
            args += [f"--{name}", str(value)]
        self.log = open(self.data_dir.parent / f"server-{self.port}.log", "ab")
        self.process = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            try:
                if httpx.get(self.base + "/api/v2/sdk", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("server did not start in time")

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        self.log.close()

    def create_key(self, wallet: str | None = None) -> str:
        out = subprocess.run(
            [str(BIN), "keys", "create", "--wallet", wallet or new_wallet(), "--data-dir", str(self.data_dir), "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out)["apiKey"]

    def project(self, wallet: str | None = None) -> Project:
        return Project(self, self.create_key(wallet))


class Project:
    """One project's view of the service: its key and helpers that use it."""

    def __init__(self, server: Server, key: str) -> None:
        self.server = server
        self.key = key
        self.http = httpx.Client(base_url=server.base, headers={"x-api-key": key}, timeout=10)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def create_room(self, **body: Any) -> str:
        response = self.post("/api/v2/sdk/rooms/create-room", json=body)
        assert response.status_code == 201, response.text
        return response.json()["data"]["roomId"]

    def token(self, room_id: str, **body: Any) -> str:
        response = self.post("/api/v2/sdk/create-peer-token", json={"roomId": room_id, **body})
        assert response.status_code == 200, response.text
        return response.json()["token"]

    def join(self, room_id: str, token: str | None = None, **body: Any) -> Peer:
        return Peer.connect(self.server, token or self.token(room_id, **body))

    def live(self) -> list[dict[str, Any]]:
        response = self.get("/api/v2/sdk/live-sessions")
        assert response.status_code == 200, response.text
        return response.json()["liveSessions"]

    def live_counts(self) -> dict[str, int]:
        return {item["roomId"]: item["currentPeerCount"] for item in self.live()}


class Peer:
    def __init__(self, ws: ClientConnection, joined: dict[str, Any]) -> None:
        self.ws = ws
        self.joined = joined
        self.peer_id: str = joined["peerId"]
        self.session_id: str | None = joined["sessionId"]

    @classmethod
    def connect(cls, server: Server, token: str) -> Peer:
        ws = connect(f"{server.ws_base}/ws?token={token}", open_timeout=10)
        message = json.loads(ws.recv(timeout=10))
        assert message["type"] == "joined", message
        return cls(ws, message)

    def send(self, message: dict[str, Any]) -> None:
        self.ws.send(json.dumps(message))

    def recv(self, timeout: float = 5) -> dict[str, Any]:
        return json.loads(self.ws.recv(timeout=timeout))

    def recv_type(self, kind: str, timeout: float = 5) -> dict[str, Any]:
        """The next message of this type, skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.01, deadline - time.monotonic()))
            if message["type"] == kind:
                return message

    def leave(self) -> None:
        """Leave and wait for the server's close: after it, no GET counts us."""
        self.send({"type": "leave"})
        wait_closed(self.ws)

    def close(self) -> None:
        self.ws.close()


def wait_closed(ws: ClientConnection, timeout: float = 5) -> tuple[int | None, str | None]:
    """Drain until the server closes; the close code and reason."""
    from websockets.exceptions import ConnectionClosed

    deadline = time.monotonic() + timeout
    try:
        while True:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    except ConnectionClosed as closed:
        rcvd = closed.rcvd
        return (rcvd.code, rcvd.reason) if rcvd else (None, None)


def eventually(check: Any, timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Poll until `check()` is truthy; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    instance = Server(tmp_path_factory.mktemp("shared") / "data").start()
    yield instance
    instance.stop()


@pytest.fixture
def project(server: Server) -> Project:
    """A fresh project (new wallet, new key) on the shared server."""
    return server.project()


@pytest.fixture
def other_project(server: Server) -> Project:
    return server.project()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    """A server of the test's own, for restarts and timing-sensitive checks."""
    instance = Server(tmp_path / "data")
    yield instance
    instance.stop()


os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(Path(__file__).parent.parent / ".hypothesis"))
