"""Hostile clients against the HTTP/WebSocket server, from outside, over
loopback: oversized heads, slowloris, connection floods from one address,
and WebSocket peers that stop reading."""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from support import Peer, Project, Server, eventually

READ_TIMEOUT = 1.0
PING_INTERVAL = 0.5
PING_TIMEOUT = 1.0
LIVENESS_BOUND = PING_INTERVAL + PING_TIMEOUT
FLOOD = {"peer-message-rate": 100000, "peer-message-burst": 100000}


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Short read timeout and keep-alive pings: the slowloris and slow-reader tests."""
    server = Server(
        tmp_path_factory.mktemp("strict") / "data",
        **{"read-timeout": READ_TIMEOUT, "ping-interval": PING_INTERVAL, "ping-timeout": PING_TIMEOUT, **FLOOD},
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict_project(strict: Server) -> Project:
    return strict.project()


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Few connections per client, and timeouts long enough that none of them
    ends while a test holds it."""
    server = Server(
        tmp_path_factory.mktemp("patient") / "data",
        **{
            "max-connections-per-client": 6,
            "read-timeout": 30,
            "trusted-proxies": "127.0.0.4",
            "ping-interval": 30,
            "ping-timeout": 30,
            **FLOOD,
        },
    ).start()
    yield server
    server.stop()


# Raw HTTP over sockets


def _connect(server: Server, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5, source_address=(source, 0))


def _response(sock: socket.socket, timeout: float = 3.0) -> tuple[int, dict[str, str], bytes]:
    """Read one response (status, lower-cased headers, body)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a response: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def _error_answer(sock: socket.socket, status: int, timeout: float = 3.0) -> str:
    """Expect a JSON error answer with `status` that closes the connection; its message."""
    got, headers, body = _response(sock, timeout)
    assert got == status, (got, body[:200])
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    answer = json.loads(body)
    assert answer["ok"] is False
    return answer["message"]


def _send_all(sock: socket.socket, data: bytes) -> bool:
    """Send what the server will take; False once it stops taking it."""
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _get(path: str = "/api/v2/sdk", *headers: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: x\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()


def _upgrade(path: str, *headers: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return _get(
        path,
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *headers,
    )


def _status(server: Server, source: str) -> int:
    """The status a one-off GET from `source` gets (503 when refused)."""
    with _connect(server, source) as sock:
        _send_all(sock, _get("/api/v2/sdk", "Connection: close"))
        return _response(sock)[0]


def _hold(server: Server, source: str) -> socket.socket:
    """An open connection from `source` in the middle of a request line."""
    sock = _connect(server, source)
    sock.sendall(b"GET /api/v2/sdk HT")
    return sock


def _closed_at(
    socks: dict[str, socket.socket], limit: float, drip: socket.socket | None = None
) -> dict[str, tuple[float, bytes]]:
    """When the server closed each socket (seconds from now) and what it sent;
    meanwhile one more byte to `drip` every 0.2 s."""
    start = time.monotonic()
    got: dict[str, bytes] = dict.fromkeys(socks, b"")
    closed: dict[str, tuple[float, bytes]] = {}
    next_drip = start
    while len(closed) < len(socks) and time.monotonic() - start < limit:
        if drip is not None and time.monotonic() >= next_drip:
            _send_all(drip, b"x")
            next_drip += 0.2
        open_socks = {sock: name for name, sock in socks.items() if name not in closed}
        ready, _, _ = select.select(list(open_socks), [], [], 0.05)
        for sock in ready:
            name = open_socks[sock]
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                got[name] += chunk
            else:
                closed[name] = (time.monotonic() - start, got[name])
    return closed


# 3. Request line and headers are bounded before they are buffered


def test_huge_header_is_refused_at_once_while_others_are_served(strict: Server) -> None:
    with _connect(strict) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /api/v2/sdk HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000)
        # The server is not busy with it: another client is answered meanwhile.
        assert httpx.get(strict.base + "/api/v2/sdk", timeout=2).status_code == 200
        for _ in range(16):  # 1 MiB more of the same header, then its end
            if not _send_all(sock, b"a" * 65536):
                break
        _send_all(sock, b"\r\n\r\n")
        message = _error_answer(sock, 431)
        assert time.monotonic() - started < 2
    assert "16384" in message and "headers" in message


def test_over_long_url_is_414_and_many_headers_431(strict: Server) -> None:
    with _connect(strict) as sock:
        _send_all(sock, _get("/api/v2/sdk?q=" + "a" * 20_000))
        message = _error_answer(sock, 414)
    assert "16384" in message and "URL" in message
    with _connect(strict) as sock:
        _send_all(sock, _get("/api/v2/sdk", *(f"X-Filler-{i}: {'b' * 500}" for i in range(40))))
        assert "16384" in _error_answer(sock, 431)
    # Just under the limit is an ordinary request.
    with _connect(strict) as sock:
        sock.sendall(_get("/api/v2/sdk?q=" + "a" * 15_000, *(f"X-Filler-{i}: b" for i in range(40))))
        assert _response(sock)[0] == 200


def test_websocket_upgrade_with_over_long_url_or_header_is_answered(strict: Server) -> None:
    # Past our limit, and past websockets' own 8 KiB line limit which uvicorn
    # used to leave unanswered: both get an answer, not a hang.
    for url_bytes in (20_000, 10_000):
        with _connect(strict) as sock:
            _send_all(sock, _upgrade("/ws?token=" + "a" * url_bytes))
            assert "URL" in _error_answer(sock, 414)
    with _connect(strict) as sock:
        _send_all(sock, _upgrade("/ws?token=abc", "X-Big: " + "c" * 9000))
        assert "header" in _error_answer(sock, 431)


# 4. Slowloris: heads and bodies must keep coming


def test_partial_heads_and_handshakes_are_cut_after_the_read_timeout(strict: Server) -> None:
    socks = {name: _connect(strict) for name in ("silent", "request-line", "headers", "handshake", "drip")}
    socks["request-line"].sendall(b"GET /api/v2/sd")
    socks["headers"].sendall(b"GET /api/v2/sdk HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
    socks["handshake"].sendall(_upgrade("/ws?token=abc")[:-30])
    socks["drip"].sendall(b"GET /api/v2/sdk HTTP/1.1\r\n")
    try:
        # The drip keeps sending, a byte every 0.2 s: the head's deadline holds.
        closed = _closed_at(socks, limit=4, drip=socks["drip"])
    finally:
        for sock in socks.values():
            sock.close()
    assert set(closed) == set(socks), f"still open after 4 s: {set(socks) - set(closed)}"
    for name, (after, answer) in closed.items():
        assert READ_TIMEOUT * 0.8 < after < READ_TIMEOUT + 1.5, (name, after)
        if name == "silent":
            assert answer == b""  # an idle connection is just closed
        else:
            assert answer.startswith(b"HTTP/1.1 408 "), (name, answer[:100])
            assert b"connection: close" in answer


def test_keep_alive_connection_must_send_its_next_head_in_time(strict: Server) -> None:
    with _connect(strict) as sock:
        sock.sendall(_get())
        assert _response(sock)[0] == 200
        answered = time.monotonic()
        sock.sendall(b"GET /api/v2/sdk HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        closed = _closed_at({"next": sock}, limit=4)
    assert "next" in closed, "a partial head after a response kept the connection open"
    _after, answer = closed["next"]
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - answered < READ_TIMEOUT + 1.5

    # Answered (401, no key) before its body came: the body trickles in past
    # the point where the next head's clock would have started, then a next
    # head begins and stalls. Its deadline runs from the body's end.
    with _connect(strict) as sock:
        sock.sendall(b"POST /api/v2/sdk/rooms/create-room HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\n")
        assert _response(sock)[0] == 401
        for byte in b"{    }":
            time.sleep(READ_TIMEOUT / 4)
            sock.sendall(bytes([byte]))
        body_done = time.monotonic()
        sock.sendall(b"GET /api/v2/sdk HTTP/1.1\r\n")
        closed = _closed_at({"next": sock}, limit=4)
    assert "next" in closed, "a partial head after an early answer kept the connection open"
    assert time.monotonic() - body_done < READ_TIMEOUT + 1.5


def test_stalled_bodies_get_408_while_slow_ones_go_through(strict: Server, strict_project: Project) -> None:
    post = (
        f"POST /api/v2/sdk/rooms/create-room HTTP/1.1\r\nHost: x\r\nx-api-key: {strict_project.key}\r\n"
        "Content-Type: application/json\r\n"
    )
    socks = {name: _connect(strict) for name in ("length", "chunked")}
    socks["length"].sendall((post + 'Content-Length: 100\r\n\r\n{"roomLocked"').encode())
    socks["chunked"].sendall((post + 'Transfer-Encoding: chunked\r\n\r\n20\r\n{"roomLock').encode())
    try:
        closed = _closed_at(socks, limit=4)
    finally:
        for sock in socks.values():
            sock.close()
    assert set(closed) == set(socks), f"still open after 4 s: {set(socks) - set(closed)}"
    for name, (after, answer) in closed.items():
        assert READ_TIMEOUT * 0.8 < after < READ_TIMEOUT + 1.5, (name, after)
        assert answer.startswith(b"HTTP/1.1 408 "), (name, answer[:100])
        assert b"stalled" in answer
    # The timeout is for silence, not for the whole body: a body trickling
    # in slower than that in total, but never pausing as long, is read.
    body = b"{" + b" " * 8 + b"}"
    with _connect(strict) as sock:
        sock.sendall((post + f"Content-Length: {len(body)}\r\n\r\n").encode())
        for byte in body:
            time.sleep(READ_TIMEOUT / 4)
            sock.sendall(bytes([byte]))
        assert _response(sock)[0] == 201


# 4. Connections per client address


def _ws_peer(server: Server, project: Project, room: str, source: str) -> Peer:
    sock = _connect(server, source)
    ws = connect(f"{server.ws_base}/ws?token={project.token(room)}", sock=sock, open_timeout=10)
    joined = json.loads(ws.recv(timeout=10))
    assert joined["type"] == "joined", joined
    return Peer(ws, joined)


def test_connections_per_client_are_capped_and_released_once(patient: Server) -> None:
    project = patient.project()
    room = project.create_room()
    holders = [_hold(patient, "127.0.0.3") for _ in range(4)]
    # Upgraded WebSockets count as well.
    peers = [_ws_peer(patient, project, room, "127.0.0.3") for _ in range(2)]
    try:
        with _connect(patient, "127.0.0.3") as sock:  # the seventh
            assert "limit 6" in _error_answer(sock, 503)
        # Another address is not held back by this one.
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=5) as other:
            assert other.get(patient.base + "/api/v2/sdk").status_code == 200

        # A WebSocket that ends gives back its place, once.
        peers.pop().close()
        assert eventually(lambda: _status(patient, "127.0.0.3") == 200, timeout=5)
        holders.append(_hold(patient, "127.0.0.3"))
        assert _status(patient, "127.0.0.3") == 503

        # All ended: exactly the limit again, no place leaked or counted twice.
        for sock in holders:
            sock.close()
        for peer in peers:
            peer.close()
        assert eventually(lambda: _status(patient, "127.0.0.3") == 200, timeout=5)
        holders = [_hold(patient, "127.0.0.3") for _ in range(6)]
        assert _status(patient, "127.0.0.3") == 503
        # A trusted proxy speaks for many clients: it is not capped.
        holders += [_hold(patient, "127.0.0.4") for _ in range(8)]
        assert _status(patient, "127.0.0.4") == 200
    finally:
        for sock in holders:
            sock.close()
        for peer in peers:
            peer.close()


# 5. WebSocket peers that stop reading


def _slow_reader(server: Server, project: Project, room: str) -> Peer:
    """A peer whose client stops reading from the network once 16 messages
    wait unread (websockets' max_queue), with a small receive buffer so that
    what the server sends it piles up on the server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    ws = connect(
        f"{server.ws_base}/ws?token={project.token(room)}", sock=sock, open_timeout=10, max_queue=16, compression=None
    )
    joined = json.loads(ws.recv(timeout=10))
    assert joined["type"] == "joined"
    return Peer(ws, joined)


def _drain(peer: Peer, counts: dict[str, int]) -> threading.Thread:
    def run() -> None:
        try:
            while True:
                kind = json.loads(peer.ws.recv())["type"]
                counts[kind] = counts.get(kind, 0) + 1
        except Exception:  # noqa: BLE001 - closed: the thread ends
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _flood(sender: Peer, messages: int) -> None:
    # Frames just under the 64 KiB limit, and incompressible: permessage-deflate
    # would shrink repeated characters to nothing.
    payload = base64.b64encode(os.urandom(45_000)).decode()
    for i in range(messages):
        sender.ws.send(json.dumps({"type": "data", "to": "*", "label": str(i), "payload": payload}))


def test_peer_that_stops_reading_is_cut_off_within_the_liveness_bound(strict: Server, strict_project: Project) -> None:
    project = strict_project
    room = project.create_room()
    sender = project.join(room)
    good = project.join(room)
    counts: dict[str, int] = {}
    _drain(good, counts)
    slow = _slow_reader(strict, project, room)
    assert project.live_counts() == {room: 3}
    try:
        # 6 MB to each peer: more than socket buffers hold, so the rest waits
        # on the server, and less than the app's own outbox limit (4 MB), so
        # that it is the transport that lets the slow peer go.
        _flood(sender, 100)
        flooded = time.monotonic()
        assert eventually(lambda: project.live_counts() == {room: 2}, timeout=LIVENESS_BOUND + 3)
        assert time.monotonic() - flooded < LIVENESS_BOUND + 2
        # The peer that reads got everything and stays.
        assert eventually(lambda: counts.get("data") == 100, timeout=5), counts
        assert eventually(lambda: counts.get("peer-left") == 1, timeout=2), counts
        time.sleep(LIVENESS_BOUND)
        assert project.live_counts() == {room: 2}
    finally:
        slow.ws.socket.close()
        sender.close()
        good.close()


def _reset_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the server resets this connection within `seconds` (checked
    without reading, which the client has stopped doing)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET:
            return True
        time.sleep(0.05)
    return False


def test_closing_a_peer_that_does_not_read_does_not_wait_for_it(patient: Server) -> None:
    # Pings are 30 s apart on this server: only the bound on closing acts.
    project = patient.project()
    room = project.create_room()
    sender = project.join(room)
    slow = _slow_reader(patient, project, room)
    try:
        _flood(sender, 100)
        time.sleep(0.5)
        # It leaves, and the service closes its socket: a close frame behind
        # megabytes it will never read. uvicorn waited for that to flush.
        slow.send({"type": "leave"})
        assert eventually(lambda: project.live_counts() == {room: 1}, timeout=3)
        assert _reset_within(slow.ws.socket, 8), "the connection was never let go"
    finally:
        slow.ws.socket.close()
        sender.close()


# The app's own close, frame by frame: hard to time from outside (the close
# frame must be written while the buffer is short of full, and then never
# leave), so driven in process against the protocol with a stand-in transport.


class _StuckTransport(asyncio.Transport):
    """A transport whose peer reads nothing once `stuck` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.stuck = False
        self.closed = self.aborted = False
        self.protocol: asyncio.Protocol | None = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.9", 4000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 100 if self.stuck else 0

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        if not self.is_closing():
            self.closed = True
            if not self.stuck:  # flushed: the connection ends
                asyncio.get_running_loop().call_soon(self._lost)

    def abort(self) -> None:
        if not self.aborted:
            self.aborted = True
            asyncio.get_running_loop().call_soon(self._lost)

    def _lost(self) -> None:
        assert self.protocol is not None
        self.protocol.connection_lost(None)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


@pytest.mark.parametrize("stuck", [False, True])
def test_app_close_that_cannot_be_flushed_is_aborted(stuck: bool) -> None:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from livesessions.http.protocols import ClientLimiter, LimitedWebSocketProtocol, TransportLimits

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        transport.stuck = stuck  # the peer stops reading now
        await send({"type": "websocket.close", "code": 1000})
        assert (await receive())["type"] == "websocket.disconnect"

    limits = TransportLimits(max_header_bytes=16384, read_timeout=1, write_stall_timeout=30, close_timeout=0.2)
    protocol_class = type("WS", (LimitedWebSocketProtocol,), {"limits": limits, "limiter": ClientLimiter(0)})
    transport = _StuckTransport()

    async def run() -> float:
        config = Config(app, lifespan="off", ws_ping_interval=None)
        config.load()
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        transport.protocol = protocol
        protocol.connection_made(transport)
        protocol.data_received(_upgrade("/ws"))
        started = time.monotonic()
        while not protocol.disconnected and time.monotonic() - started < 5:
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    took = asyncio.run(run())
    assert took < 1, "the connection never ended"
    # The peer did not answer our close: it is let go after close_timeout,
    # gently if the close frame went out, at once if it is still queued.
    assert took > 0.15
    assert transport.aborted is stuck
    assert transport.closed is not stuck


# 6. HTTP responses to clients that stop reading, and what the cut-offs leave


EGRESS_START = "/api/v1/recording/start"
EGRESS_STOP = "/api/v1/recording/stop"


def _scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    answer = httpx.get(server.base + "/metrics", timeout=5)
    assert answer.status_code == 200
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def _cut_offs(server: Server, reason: str) -> float:
    return _scrape(server).get(("livesessions_peer_disconnects_total", (("reason", reason),)), 0.0)


def _not_reading(server: Server, request: bytes) -> socket.socket:
    """A client that sends `request` and never reads a byte of the answer,
    with a small receive buffer so that the answer piles up on the server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(request)
    return sock


class _SSEReader:
    """A livestream viewer that reads: counts the data events it is sent."""

    def __init__(self, url: str) -> None:
        self.data = 0
        self.ended = threading.Event()
        opened = threading.Event()

        def run() -> None:
            try:
                with httpx.stream("GET", url, timeout=30) as response:
                    assert response.status_code == 200
                    opened.set()
                    for line in response.iter_lines():
                        if line.startswith("event: end"):
                            break
                        if line.startswith("data: ") and json.loads(line[6:]).get("type") == "data":
                            self.data += 1
            finally:
                opened.set()
                self.ended.set()

        threading.Thread(target=run, daemon=True).start()
        assert opened.wait(5)


def test_livestream_viewer_that_stops_reading_is_cut_off_within_the_liveness_bound(
    strict: Server, strict_project: Project
) -> None:
    project = strict_project
    room = project.create_room()
    sender = project.join(room)
    started = project.post(
        EGRESS_START, json={"roomId": room, "token": project.token(room), "type": "livestream"}
    ).json()
    playback = httpx.URL(started["playbackUrl"])
    reader = _SSEReader(str(playback))
    stalled_before = _cut_offs(strict, "stalled-writer")
    viewer = _not_reading(strict, _get(playback.raw_path.decode()))
    try:
        time.sleep(0.2)  # the viewer is watching before the flood
        # 6 MB to each viewer: more than socket buffers hold, and more than a
        # viewer's backlog in the livestream (4 MiB): the server must let the
        # one that does not read go, and drop what it queued for it.
        _flood(sender, 100)
        flooded = time.monotonic()
        assert _reset_within(viewer, LIVENESS_BOUND + 2), "the viewer that does not read was never let go"
        assert time.monotonic() - flooded < LIVENESS_BOUND + 2
        assert eventually(lambda: _cut_offs(strict, "stalled-writer") > stalled_before, timeout=2)
        # The viewer that reads got everything, and keeps getting events.
        assert eventually(lambda: reader.data == 100, timeout=5), reader.data
        sender.send({"type": "data", "to": "*", "label": "after", "payload": "still live"})
        assert eventually(lambda: reader.data == 101, timeout=5), reader.data
        assert not reader.ended.is_set()
    finally:
        viewer.close()
        project.post(EGRESS_STOP, json={"roomId": room, "type": "livestream"})
        sender.close()
    assert reader.ended.wait(5)


def test_download_that_is_not_read_is_cut_off_within_the_liveness_bound(
    strict: Server, strict_project: Project
) -> None:
    project = strict_project
    room = project.create_room()
    sender = project.join(room)
    assert project.post(EGRESS_START, json={"roomId": room, "token": project.token(room)}).status_code == 200
    # A peer in the room hears the data as the recorder does: once it has all
    # of it, so has the recorder (scaled out it comes by way of Redis, and a
    # stop right after the last send would beat the last of it there).
    witness = project.join(room)
    counts: dict[str, int] = {}
    _drain(witness, counts)
    try:
        _flood(sender, 100)  # a recording of some 6 MB
        assert eventually(lambda: counts.get("data", 0) >= 100, timeout=20), counts
        assert project.post(EGRESS_STOP, json={"roomId": room}).status_code == 200
    finally:
        sender.close()
        witness.close()
    session = eventually(
        lambda: [
            r for r in project.get("/api/v2/sdk/recordings").json()["recordings"] if r["recordingSize"] > 5_000_000
        ],
        timeout=5,
    )
    assert session, "no recording of the flood"
    url = httpx.URL(session[0]["recordingUrl"])
    client = _not_reading(strict, _get(url.raw_path.decode()))
    requested = time.monotonic()
    try:
        assert _reset_within(client, LIVENESS_BOUND + 2), "the download that is not read was never let go"
        assert time.monotonic() - requested < LIVENESS_BOUND + 2
    finally:
        client.close()
    # A download that is read is not held back by that.
    assert len(httpx.get(str(url), timeout=10).content) == session[0]["recordingSize"]


def test_peer_that_does_not_answer_pings_is_cut_off_counted_and_logged(strict: Server, strict_project: Project) -> None:
    project = strict_project
    room = project.create_room()
    before = _cut_offs(strict, "ping-timeout")
    # A raw WebSocket handshake, and then silence: no pong ever comes back.
    silent = _connect(strict)
    try:
        silent.sendall(_upgrade(f"/ws?token={project.token(room)}"))
        silent.settimeout(5)
        assert silent.recv(12) == b"HTTP/1.1 101"
        joined = time.monotonic()
        assert _reset_within(silent, PING_INTERVAL + PING_TIMEOUT + 2), "the silent peer was never let go"
        assert time.monotonic() - joined < PING_INTERVAL + PING_TIMEOUT + 2
    finally:
        silent.close()
    assert eventually(lambda: _cut_offs(strict, "ping-timeout") >= before + 1, timeout=2)
    assert eventually(lambda: project.live_counts().get(room, 0) == 0, timeout=5)
    # Logged by the service at info, with its reason, and not with the URL.
    log = (strict.data_dir.parent / f"server-{strict.port}.log").read_text()
    lines = [line for line in log.splitlines() if "connection cut off" in line]
    assert any("reason=ping-timeout" in line and "client=127.0.0.1:" in line for line in lines), lines
    assert not any("token" in line for line in lines)


def test_livestream_drops_a_viewer_by_bytes_and_frees_its_queue_at_once() -> None:
    from livesessions.egress.livestream import END, VIEWER_BACKLOG, VIEWER_BACKLOG_BYTES, Broadcast

    async def run() -> None:
        broadcast = Broadcast()
        slow, reading = broadcast.watch(), broadcast.watch()
        event = b"x" * 60_000
        sent = 0
        while sent < VIEWER_BACKLOG:  # far fewer frames than the frame cap
            broadcast.publish(event)
            sent += 1
            while not reading.empty():
                assert await reading.get() != END
            if slow.qsize() == 1 and slow.nbytes == 0:
                break
        # Dropped on bytes, well before the frame cap: what it held is gone,
        # and all that is left for it is the end.
        assert sent <= VIEWER_BACKLOG_BYTES // len(event) + 2
        assert slow.get_nowait() == END and slow.empty() and slow.nbytes == 0
        broadcast.publish(event)
        assert slow.empty()
        # The viewer that reads is still watching.
        assert (await reading.get()).startswith(b"data: ")
        assert reading.nbytes == 0

    asyncio.run(run())
