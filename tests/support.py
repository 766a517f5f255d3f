"""Helpers shared by every test directory (unit, api, e2e).

Two ways to reach the service, with the same client classes on top:

* `Server`: a real `livesessions serve` process on a free loopback port, for
  what needs one (WebSocket transport, crashes and restarts, the stateful
  model test, schemathesis, the browser test).
* `LocalApp`: the ASGI app built in this process by `build_services` with a
  `ManualClock`, driven on an event loop thread of its own: HTTP goes through
  httpx's ASGITransport, peers through the app's own WebSocket handler
  (`LocalSocket`). No port, no subprocess, and time moves when a test says so.

`Project` and `Peer` work with either. This is a plain module, not a conftest:
conftest.py files in several directories are all imported as the module
`conftest` and would shadow one another, so test files import from here.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from websockets.sync.client import ClientConnection, connect

from livesessions.auth.api_keys import ApiKeys
from livesessions.clock import now_ms
from livesessions.config import Settings

__all__ = [
    "BIN",
    "LocalApp",
    "LocalSocket",
    "ManualClock",
    "Peer",
    "Project",
    "Server",
    "create_key",
    "eventually",
    "free_port",
    "new_wallet",
    "sign",
    "wait_closed",
]

BIN = Path(sys.executable).parent / "livesessions"
T = TypeVar("T")

# The whole suite runs twice in CI: on the embedded stores, and scaled out
# (every `Server` and `LocalApp` on a PostgreSQL database of its own and a
# private Redis). Tests of the embedded store itself are marked
# `embedded_only` and skipped in the second run.
SCALE_OUT = os.environ.get("LIVESESSIONS_TEST_SCALE_OUT") == "1"


def scale_out_settings(own_redis: bool = False) -> dict[str, str]:
    """Settings for a scaled-out service: a fresh database, and the shared test
    Redis or (`own_redis`) one of its own, so that limits kept in Redis (wrong
    keys per address, say) do not carry over from other tests' servers."""
    from backends import RedisServer, new_database, redis_server, require_redis_server

    require_redis_server()
    if own_redis:
        redis = RedisServer()
        atexit.register(redis.stop)
    else:
        redis = redis_server()
    return {"database_url": new_database(), "redis_url": redis.url}


async def _create_key_in(store: Any, wallet: str | None, name: str) -> str:
    now = now_ms()
    project = await store.project_for_wallet(wallet or new_wallet(), now)
    key, _record = await ApiKeys(store, now_ms).create(project.project_id, name, now)
    return key


def create_key_in_postgres(database_url: str, wallet: str | None = None, name: str = "cli") -> str:
    from livesessions.stores.postgres import PostgresStore

    async def run() -> str:
        store = await PostgresStore.connect(database_url)
        try:
            return await _create_key_in(store, wallet, name)
        finally:
            await store.aclose()

    return asyncio.run(run())


def required() -> bool:
    """Is every service and tool the tests use required here? In CI it is
    (.ci/run sets LIVESESSIONS_REQUIRE_SERVICES=1; CI's machine sets CI):
    a missing one is then a failure, not a skip."""
    return os.environ.get("LIVESESSIONS_REQUIRE_SERVICES") == "1" or bool(os.environ.get("CI"))


def unavailable(reason: str) -> NoReturn:
    """A test needs what this machine lacks: skip, saying why; fail where it is required."""
    if required():
        pytest.fail(f"{reason} (required here: LIVESESSIONS_REQUIRE_SERVICES or CI is set)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_wallet() -> str:
    return "0x" + secrets.token_hex(20)


def sign(text: str, key: bytes) -> str:
    """An EIP-191 personal_sign signature of `text`, as a wallet makes it."""
    return "0x" + Account.sign_message(encode_defunct(text=text), key).signature.hex().removeprefix("0x")


def create_key(data_dir: Path, wallet: str | None = None, name: str = "cli") -> str:
    """An API key for the wallet's project, written straight into the data
    directory's database, as `livesessions keys create` does (SQLite's WAL lets
    this run beside a server using the same database)."""
    from livesessions.services import open_store

    store = open_store(Settings(data_dir=data_dir))
    try:
        return asyncio.run(_create_key_in(store, wallet, name))
    finally:
        store.close()


class Server:
    """A service process on a free loopback port, with its own data directory."""

    def __init__(self, data_dir: Path, **options: Any) -> None:
        self.data_dir = data_dir
        # Every test client comes from 127.0.0.1: the per-address limit on
        # wrong keys is raised here and tested on servers of its own.
        self.options = {
            "grace-period": 1.0,
            "ping-interval": 0.5,
            "ping-timeout": 0.5,
            "failed-auths-per-minute": 100_000,
            **options,
        }
        if SCALE_OUT and "database-url" not in self.options:
            self.options.update({k.replace("_", "-"): v for k, v in scale_out_settings(own_redis=True).items()})
        self.database_url: str | None = self.options.get("database-url")
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
                time.sleep(0.02)
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
        """A key made in this process, straight into the server's database."""
        if self.database_url is not None:
            return create_key_in_postgres(self.database_url, wallet)
        return create_key(self.data_dir, wallet)

    def create_key_with_cli(self, wallet: str | None = None) -> str:
        """A key made by the real `livesessions keys create` command."""
        out = subprocess.run(
            [
                str(BIN),
                "keys",
                "create",
                "--wallet",
                wallet or new_wallet(),
                *(("--database-url", self.database_url) if self.database_url else ("--data-dir", str(self.data_dir))),
                "--json",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out)["apiKey"]

    def project(self, wallet: str | None = None) -> Project:
        return Project(self, self.create_key(wallet))


class ManualClock:
    """The service's clock in in-process tests: real time, plus however far the
    test has moved it on. Waiting out a grace period or a TTL is `advance`."""

    def __init__(self) -> None:
        self.offset_ms = 0

    def __call__(self) -> int:
        return now_ms() + self.offset_ms

    def advance(self, seconds: float) -> None:
        self.offset_ms += round(seconds * 1000)


class _Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk


class _LocalTransport(httpx.BaseTransport):
    """A sync httpx transport that hands each request to the app's event loop
    through httpx.ASGITransport. The body goes in the chunks the client made
    (a generator body stays chunked, with no content-length)."""

    def __init__(self, app: LocalApp) -> None:
        self._app = app
        self._asgi = httpx.ASGITransport(app=app.asgi, client=("127.0.0.1", 50000))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        chunks = [bytes(chunk) for chunk in request.stream]  # type: ignore[union-attr]
        forwarded = httpx.Request(
            request.method, request.url, headers=request.headers, stream=_Chunks(chunks), extensions=request.extensions
        )

        async def exchange() -> tuple[int, httpx.Headers, bytes]:
            response = await self._asgi.handle_async_request(forwarded)
            return response.status_code, response.headers, await response.aread()

        status, headers, content = self._app.run(exchange())
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(content), request=request)


class LocalApp:
    """The service built in this process, on an event loop thread of its own.

    `settings` are Settings fields; by default the grace period is 1 s and
    wrong keys are not throttled per address, as on a test `Server`."""

    DEFAULTS: ClassVar[dict[str, Any]] = {"grace_period": 1.0, "failed_auths_per_minute": 100_000}

    def __init__(self, data_dir: Path, **settings: Any) -> None:
        from livesessions.app import create_app
        from livesessions.services import build_services

        if SCALE_OUT and "database_url" not in settings:
            settings = {**scale_out_settings(), **settings}
        self.settings = Settings(data_dir=data_dir, **{**self.DEFAULTS, **settings})
        self.data_dir = data_dir
        self.clock = ManualClock()
        self.base = self.settings.base_url  # what sign-in messages name; no socket listens there
        self.port = self.settings.port
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="local-app", daemon=True)
        self._thread.start()
        self._clients: list[httpx.Client] = []

        async def build() -> Any:
            if self.settings.scaled_out:
                from livesessions.cluster.services import build_scaled_out_services

                services = await build_scaled_out_services(self.settings, clock=self.clock)
            else:
                services = build_services(self.settings, clock=self.clock)
            app = create_app(services)
            await app.startup()
            return services, app

        try:
            self.services, self.asgi = self.run(build())
        except BaseException:
            self._stop_loop()
            raise
        self.http = self.client()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the app's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def client(self, **kwargs: Any) -> httpx.Client:
        """An httpx.Client whose requests go to the app in this process."""
        kwargs.setdefault("timeout", 10)
        client = httpx.Client(base_url=self.base, transport=_LocalTransport(self), **kwargs)
        self._clients.append(client)
        return client

    def advance(self, seconds: float) -> None:
        """Let time pass for the service: move its clock on, then run what its
        maintenance tick would soon run in real time: sessions whose grace is
        over end, media workers silent past their lease lose their jobs (and
        peer tokens expire: they are checked by the service's clock too)."""
        self.clock.advance(seconds)

        async def tick() -> None:
            await self.services.keeper.expire()
            await self.services.egress.release_silent_workers()

        self.run(tick())

    def create_key(self, wallet: str | None = None) -> str:
        async def create() -> str:
            now = self.clock()
            project = await self.services.store.project_for_wallet(wallet or new_wallet(), now)
            key, _record = await self.services.api_keys.create(project.project_id, "cli", now)
            return key

        return self.run(create())

    def project(self, wallet: str | None = None) -> Project:
        return Project(self, self.create_key(wallet))

    def close(self) -> None:
        for client in self._clients:
            client.close()

        async def shutdown() -> None:
            await self.asgi.shutdown()
            # Peer handlers still running end with the loop.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            if others:  # a task that does not end within 10 s ends with the loop
                await asyncio.wait(others, timeout=10)

        try:
            self.run(shutdown())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class LocalClosed(Exception):
    """The in-process WebSocket is closed; `code` and `reason` as the app sent them."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"closed with {code} {reason!r}")
        self.code, self.reason = code, reason


_APP_ENDED = {"type": "test.app-ended"}


class LocalSocket:
    """A WebSocket client of the app in this process: the ASGI messages a
    server would pass it, with the sync interface of websockets' client that
    the tests use (send, recv with a timeout, close)."""

    def __init__(self, app: LocalApp, token: str, path: str = "/ws", headers: dict[str, str] | None = None) -> None:
        self._app = app
        self.closed: tuple[int | None, str | None] | None = None
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": f"token={token}".encode(),
            "headers": [(b"host", b"127.0.0.1:8080")]
            + [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
            "subprotocols": [],
            "state": {},
        }

        async def start() -> None:
            self._inbound: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            self._outbound: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            self._inbound.put_nowait({"type": "websocket.connect"})
            self._task = asyncio.create_task(self._serve(scope))

        app.run(start())

    async def _serve(self, scope: dict[str, Any]) -> None:
        try:
            await self._app.asgi(scope, self._inbound.get, self._send)
        finally:
            self._outbound.put_nowait(_APP_ENDED)

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.close":
            # A client answers the server's close with its own; the app's next
            # receive then sees the disconnect, as behind a real server.
            self._inbound.put_nowait({"type": "websocket.disconnect", "code": message.get("code", 1000)})
        self._outbound.put_nowait(message)

    def recv(self, timeout: float | None = None) -> str | bytes:
        """The next message; TimeoutError if none comes in time, LocalClosed once closed."""
        while True:
            if self.closed is not None:
                raise LocalClosed(*self.closed)

            async def next_message() -> dict[str, Any]:
                return await asyncio.wait_for(self._outbound.get(), timeout)

            message = self._app.run(next_message(), timeout=None)
            kind = message["type"]
            if kind == "websocket.send":
                return message["text"] if message.get("text") is not None else message["bytes"]
            if kind == "websocket.close":
                self.closed = (message.get("code", 1000), message.get("reason", ""))
            elif message is _APP_ENDED:
                self.closed = (1006, "")

    def send(self, message: str | bytes) -> None:
        if self.closed is not None:
            raise LocalClosed(*self.closed)
        event = (
            {"type": "websocket.receive", "text": message}
            if isinstance(message, str)
            else {"type": "websocket.receive", "bytes": message}
        )
        self._app.loop.call_soon_threadsafe(self._inbound.put_nowait, event)

    def wait_closed(self, timeout: float = 5) -> tuple[int | None, str | None]:
        """Drain until the app closes; the close code and reason."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.recv(max(0.01, deadline - time.monotonic()))
        except LocalClosed as closed:
            return closed.code, closed.reason

    def close(self) -> None:
        """Go away (a close frame from the client), and wait until the app has
        let go of the connection."""
        if self.closed is None:
            self.closed = (1000, "")
            disconnect = {"type": "websocket.disconnect", "code": 1000}
            self._app.loop.call_soon_threadsafe(self._inbound.put_nowait, disconnect)

        async def finished() -> None:
            await asyncio.wait_for(asyncio.shield(self._task), 5)

        self._app.run(finished(), timeout=None)


class Project:
    """One project's view of the service: its key and helpers that use it."""

    def __init__(self, server: Server | LocalApp, key: str) -> None:
        self.server = server
        self.key = key
        if isinstance(server, LocalApp):
            self.http = server.client(headers={"x-api-key": key})
        else:
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

    def join(self, room_id: str, token: str | None = None, headers: dict[str, str] | None = None, **body: Any) -> Peer:
        return Peer.connect(self.server, token or self.token(room_id, **body), headers)

    def live(self) -> list[dict[str, Any]]:
        response = self.get("/api/v2/sdk/live-sessions")
        assert response.status_code == 200, response.text
        return response.json()["liveSessions"]

    def live_counts(self) -> dict[str, int]:
        return {item["roomId"]: item["currentPeerCount"] for item in self.live()}


class Peer:
    def __init__(self, ws: ClientConnection | LocalSocket, joined: dict[str, Any]) -> None:
        self.ws = ws
        self.joined = joined
        self.peer_id: str = joined["peerId"]
        self.session_id: str | None = joined["sessionId"]

    @classmethod
    def connect(cls, server: Any, token: str, headers: dict[str, str] | None = None) -> Peer:
        """A peer that has joined: over a real WebSocket to a `Server` (or
        anything with a `ws_base`), or in process to a `LocalApp`; `headers`
        go with the opening request (an `Origin`, say)."""
        ws: ClientConnection | LocalSocket
        if isinstance(server, LocalApp):
            ws = LocalSocket(server, token, headers=headers)
        else:
            ws = connect(f"{server.ws_base}/ws?token={token}", open_timeout=10, additional_headers=headers)
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


def wait_closed(ws: ClientConnection | LocalSocket, timeout: float = 5) -> tuple[int | None, str | None]:
    """Drain until the server closes; the close code and reason."""
    if isinstance(ws, LocalSocket):
        return ws.wait_closed(timeout)
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
