"""uvicorn's HTTP and WebSocket protocols, hardened against hostile clients.

Stock uvicorn (httptools + websockets-sansio) lets a client:
- send request lines and headers of any size: httptools hands them over in
  pieces that are concatenated, so a 200 MB header costs minutes of CPU;
- hold a connection forever with a request that never ends (slowloris);
- open as many connections as the process has file descriptors;
- stop reading: a send() (HTTP response body or WebSocket message) waits
  for the write buffer to drain without end, and every WebSocket close (ping
  timeout, app close, peer close) goes through transport.close(), which
  first waits for it too, so such a client is never let go and pins all that
  is queued for it (a livestream viewer, a download).

The subclasses here bound each of these; `protocol_classes(settings, on_cut_off)`
gives the pair to pass to uvicorn.Config(http=..., ws=...). The request fast
path gains only a few attribute checks and no timer or task per request.

Connections the transport cuts off are logged on this module's logger
("connection cut off", with the reason and the client's address; never a
URL, which may carry a token) and reported to `on_cut_off` with the reason:
"ping-timeout" (a WebSocket peer did not answer a ping in time),
"stalled-writer" (a client did not read what was written to it for the
liveness bound) or "stalled-reader" (a client stopped sending in the middle
of a request's head or body for the read timeout).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets import http11

from livesessions.auth.rate_limits import client_key
from livesessions.config import Settings
from livesessions.logs import context
from livesessions.realtime.protocol import SEND_FRAME

log = logging.getLogger(__name__)

# Why the transport cut a connection off (the label of the disconnects counter).
PING_TIMEOUT = "ping-timeout"
STALLED_WRITER = "stalled-writer"
STALLED_READER = "stalled-reader"

# Bytes of a request line besides its URL: the method, two spaces,
# "HTTP/1.1" and CRLF. Used to tell an over-long URL (414) from over-long
# headers (431) when the limit is hit before the request line has ended.
_REQUEST_LINE_OVERHEAD = 32


@dataclass(frozen=True, slots=True)
class TransportLimits:
    # The request line plus headers, in bytes (414 / 431 past it).
    max_header_bytes: int
    # Headers must arrive in full this long after the connection opens or
    # the previous response ends; a body may not pause for longer (408).
    read_timeout: float
    # A connection (HTTP or WebSocket) whose write buffer stays full this
    # long is cut off: the liveness bound, ping_interval + ping_timeout.
    write_stall_timeout: float
    # How long a closing WebSocket gets to flush its close frame (and hear the
    # peer's close) before the connection is aborted.
    close_timeout: float = 2.0


class ClientLimiter:
    """Open connections per client (an IPv4 address, an IPv6 /64: see
    client_key), shared by the HTTP and WebSocket protocols of one server.

    Counted by transport, not by protocol object: an upgrade hands the
    transport from the HTTP protocol to the WebSocket one, and whichever of
    them sees the connection end releases it; a second release is a no-op.
    """

    def __init__(self, limit: int, exempt: tuple[str, ...] = ()) -> None:
        # limit <= 0: no cap.
        self.limit = limit
        # Trusted reverse proxies are exempt: every client behind a proxy
        # reaches us from the proxy's address, so a per-address cap would cap
        # all of them together. (Their X-Forwarded-For is not used here: at
        # connection time no header has arrived, and a cap must act then.)
        self._exempt = tuple(ipaddress.ip_network(a, strict=False) for a in exempt)
        self._counts: dict[str, int] = {}
        self._held: dict[object, str] = {}
        self._last_warning = -1e9

    def acquire(self, transport: object, host: str | None) -> bool:
        """Count a new connection from `host`; False if it is over the cap."""
        if self.limit <= 0 or host is None or self._is_exempt(host):
            return True
        key = client_key(host)
        count = self._counts.get(key, 0)
        if count >= self.limit:
            return False
        self._counts[key] = count + 1
        self._held[transport] = key
        return True

    def release(self, transport: object) -> None:
        key = self._held.pop(transport, None)
        if key is None:
            return
        count = self._counts[key] - 1
        if count:
            self._counts[key] = count
        else:
            del self._counts[key]

    def warn_refused(self, host: str, now: float) -> None:
        # One line per minute at most: a flood must not become a log flood.
        if now - self._last_warning >= 60:
            self._last_warning = now
            log.warning("refusing connections from %s: %d already open (the limit)", client_key(host), self.limit)

    def _is_exempt(self, host: str) -> bool:
        if not self._exempt:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._exempt)


def cut_off(transport: asyncio.Transport) -> None:
    """End a connection now, dropping whatever it still has to send.

    abort() rather than close(): close() waits until the write buffer is
    flushed, which never happens with a peer that does not read. SO_LINGER 0
    makes the kernel reset the connection too, instead of keeping the unsent
    bytes of an orphaned socket around for minutes.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


def _close_soon(transport: asyncio.Transport) -> None:
    """Close after a last small write; cut off if even that cannot be sent."""
    if transport.get_write_buffer_size():
        cut_off(transport)
    else:
        transport.close()


class WriteStallLimit:
    """Cuts off a connection whose client stops reading: mixed into both
    protocol classes, ahead of uvicorn's.

    uvicorn's send() (an HTTP response body, a WebSocket message) awaits the
    write buffer's drain with no bound, and a transport.close() waits for it
    too, so a client that stops reading blocks the app's sends forever. The
    transport says when its buffer is full (pause_writing); if it stays full
    for the liveness bound, the client is cut off. connection_lost then wakes
    the blocked send (an HTTP response's send returns and the app's receive()
    gets http.disconnect; a WebSocket send raises ClientDisconnected and its
    receive() gets websocket.disconnect).
    """

    limits: ClassVar[TransportLimits]
    limiter: ClassVar[ClientLimiter]
    # Set by uvicorn's protocol classes.
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    client: tuple[str, int] | None

    _stall_timer: asyncio.TimerHandle | None = None
    _was_cut_off = False

    @staticmethod
    def report_cut_off(reason: str) -> None:
        """Counts a cut-off by its reason; protocol_classes puts the caller's
        hook here."""

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.limits.write_stall_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        self._stop_stall_timer()

    def _stop_stall_timer(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def _write_stalled(self) -> None:
        # Still paused (resume_writing and connection_lost stop the timer),
        # closing or not: a close waits for the same buffer to drain.
        self._stall_timer = None
        self._cut_off(STALLED_WRITER)

    def _cut_off(self, reason: str) -> None:
        if self._was_cut_off:  # aborted already; connection_lost is on its way
            return
        self._was_cut_off = True
        log.info("connection cut off", extra=context(reason=reason, client=_client(self.client)))
        self.report_cut_off(reason)
        cut_off(self.transport)


class LimitedHttpProtocol(WriteStallLimit, HttpToolsProtocol):
    """httptools protocol with bounded heads, read timeouts, a bound on
    clients that stop reading, and a per-client cap."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._max_head = self.limits.max_header_bytes
        self._read_timeout = self.limits.read_timeout
        # uvicorn's keep-alive timer doubles as the header timer: it runs from
        # connection open (read_timeout) and from each response's end (the
        # shorter of the two timeouts; see timeout_keep_alive_handler) until
        # the next request's headers are complete, not just until their first
        # byte. Still one timer per request, as in uvicorn.
        # uvicorn annotates it as int; asyncio timers take any number of seconds.
        self.timeout_keep_alive = min(self.timeout_keep_alive, self._read_timeout)  # type: ignore[assignment]
        # Where the parser is: reading a request's head (request line and
        # headers), or between head and end of a message (a body).
        self._in_head = True
        # Bytes of the head being read, counted before the parser sees them.
        self._head_bytes = 0
        # False once a message ended inside the last chunk fed: the next head
        # began somewhere in it, at an offset httptools does not tell.
        self._head_exact = True
        self._head_begun = False
        # An error answer was sent (or the connection refused): read no more.
        self._answered = False
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0

    # Connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else None
        if not self.limiter.acquire(transport, host):
            assert host is not None
            self.limiter.warn_refused(host, self.loop.time())
            self._answered = True
            self._send_error(503, f"too many open connections from this address (limit {self.limiter.limit})")
            return
        self.timeout_keep_alive_task = self.loop.call_later(self._read_timeout, self._head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.limiter.release(self.transport)
        self._stop_stall_timer()
        # uvicorn cancels its keep-alive timer only on a clean close.
        self._unset_keepalive_if_required()
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # Reading

    def data_received(self, data: bytes) -> None:
        # uvicorn's data_received, feeding the parser no more head bytes than
        # allowed: a head over the limit is refused before it is buffered, so
        # its cost is linear and bounded. It does not cancel the keep-alive
        # timer on the first byte: that now waits for the headers' end.
        if self._answered:
            return
        limit = self._max_head
        view: bytes | memoryview = data
        while view:
            # While in a head, up to the limit; in a body, in limit-sized
            # pieces, so a pipelined head that starts inside one is bounded.
            room = limit - self._head_bytes if self._in_head else limit
            piece: bytes | memoryview
            if len(view) > room:
                whole = view if isinstance(view, memoryview) else memoryview(view)
                piece, view = whole[:room], whole[room:]
            else:
                piece, view = view, b""
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade:
                if not self._answered:
                    if self._should_upgrade():
                        self.handle_websocket_upgrade()
                    else:
                        self._unsupported_upgrade_warning()
                return
            except httptools.HttpParserError:
                if not self._answered:
                    msg = "Invalid HTTP request received."
                    self.logger.warning(msg)
                    self.send_400_response(msg)
                return
            if self._answered:
                return
            if self._in_head:
                if self._head_exact:
                    self._head_bytes += len(piece)
                else:
                    self._head_exact = True
                    self._head_bytes = self._head_seen() if self._head_begun else 0
                if self._head_bytes >= limit:
                    self._head_too_large()
                    return
        if not self._in_head:
            # Part of a body arrived (or the headers just ended): its next
            # bytes are due within read_timeout.
            self._body_seen = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self._read_timeout, self._body_timeout)

    def _head_seen(self) -> int:
        """A lower bound for the bytes of a head that began inside a chunk."""
        return max(1, len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers))

    def _head_too_large(self) -> None:
        limit = self._max_head
        if self._head_begun and not self.headers and len(self.url) + _REQUEST_LINE_OVERHEAD >= self._head_bytes:
            self._answer(414, f"request line (method and URL) longer than {limit} bytes")
        else:
            self._answer(431, f"request line and headers longer than {limit} bytes")

    # Parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_begun = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        task = self.timeout_keep_alive_task
        if task is not None:
            task.cancel()
            self.timeout_keep_alive_task = None
        if self.parser.should_upgrade() and self._should_upgrade():
            problem = self._handshake_problem()
            if problem is not None:
                self._answer(*problem)
                return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_exact = False
        self._head_begun = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        cycle = self.cycle
        if (
            cycle is not None
            and cycle.response_complete
            and self.timeout_keep_alive_task is None
            and not self.parser.should_upgrade()
        ):
            # The app answered before the body ended, so the timer uvicorn
            # armed at the response's end may be spent: the next head's
            # deadline runs from now.
            self.timeout_keep_alive_task = self.loop.call_later(self._read_timeout, self._head_timeout)

    def handle_websocket_upgrade(self) -> None:
        # The transport is the WebSocket protocol's from now on: nothing of
        # ours may act on it (the per-client count goes with the transport).
        self._answered = True
        self._unset_keepalive_if_required()
        self._stop_stall_timer()
        super().handle_websocket_upgrade()

    def _handshake_problem(self) -> tuple[int, str] | None:
        """websockets re-parses the handshake with line and count limits of its
        own, and uvicorn never sends its refusal: check them here, so such a
        handshake is answered rather than left hanging."""
        line_limit = http11.MAX_LINE_LENGTH
        if len(self.parser.get_method()) + len(self.url) + 12 > line_limit:
            return 414, f"WebSocket request line (method and URL) longer than {line_limit} bytes"
        if len(self.headers) > http11.MAX_NUM_HEADERS:
            return 431, f"more than {http11.MAX_NUM_HEADERS} headers in a WebSocket request"
        for name, value in self.headers:
            if len(name) + len(value) + 4 > line_limit:
                return 431, f"WebSocket request header line longer than {line_limit} bytes"
        return None

    # Timeouts

    def timeout_keep_alive_handler(self) -> None:
        """Fires timeout_keep_alive (at most read_timeout) after the connection
        opened or the last response ended, unless a request's headers have
        arrived in full since."""
        self.timeout_keep_alive_task = None
        remaining = self._read_timeout - self.timeout_keep_alive
        if remaining > 0 and self._in_head and self._head_bytes and not self._answered:
            # A request has begun: it has until read_timeout to end its head.
            self.timeout_keep_alive_task = self.loop.call_later(remaining, self._head_timeout)
        else:
            self._head_timeout()

    def _head_timeout(self) -> None:
        self.timeout_keep_alive_task = None
        if self.transport.is_closing() or not self._in_head or self._answered:
            return
        if not self._head_bytes:
            # Nothing of a request: an idle connection, closed quietly as
            # uvicorn does (a client may reuse it at this very moment; it
            # retries on a closed connection, not on an error answer).
            _close_soon(self.transport)
            return
        self._reader_stalled()
        self._answer(408, f"request headers not received in full within {self._read_timeout:g} s")

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self._in_head or self._answered or self.transport.is_closing():
            return
        cycle = self.cycle
        now = self.loop.time()
        if self.flow.read_paused or cycle.waiting_for_100_continue:
            # The wait is ours (the app has not read what came, or has not
            # asked for the body yet), not the client's: look again soon.
            self._body_seen = now
            self._body_timer = self.loop.call_later(self._read_timeout / 4, self._body_timeout)
            return
        idle = now - self._body_seen
        if idle < self._read_timeout:
            self._body_timer = self.loop.call_later(self._read_timeout - idle, self._body_timeout)
            return
        self._answered = True
        self._reader_stalled()
        if cycle.response_started:
            # Too late for an error answer: just end the connection.
            cycle.keep_alive = False
            _close_soon(self.transport)
            return
        # The app is left waiting for the body: it gets http.disconnect, and
        # anything it sends is dropped rather than written after our answer.
        cycle.disconnected = True
        self._send_error(408, f"request body stalled: no bytes for {self._read_timeout:g} s")

    def _reader_stalled(self) -> None:
        """A request stopped coming: it is answered 408 (or its connection
        closed) rather than cut off, but it ends the same way."""
        log.info("connection cut off", extra=context(reason=STALLED_READER, client=_client(self.client)))
        self.report_cut_off(STALLED_READER)

    # Answers

    def _answer(self, status: int, message: str) -> None:
        """Refuse what the client is sending with an error, and close."""
        self._answered = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A response to an earlier, pipelined request is still being
            # written: let it finish, then close; read nothing more.
            cycle.keep_alive = False
            self.flow.pause_reading()
            return
        self._send_error(status, message)

    def _send_error(self, status: int, message: str) -> None:
        body = json.dumps({"ok": False, "message": message}, separators=(",", ":")).encode()
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: ",
                str(len(body)).encode(),
                b"\r\n",
                b"connection: close\r\n\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        _close_soon(self.transport)


class LimitedWebSocketProtocol(WriteStallLimit, WebSocketsSansIOProtocol):
    """websockets-sansio protocol that lets go of peers it cannot write to."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        # uvicorn waits 10 s for the peer's answer to our close frame.
        self.close_timeout = self.limits.close_timeout
        self._abort_timer: asyncio.TimerHandle | None = None
        self._close_timer_bounded = False

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][SEND_FRAME] = self.send_frame

    def send_frame(self, frame: bytes) -> bool:
        """Write an already framed text message (realtime.protocol.text_frame)
        now, skipping the ASGI send; False when it must go the ASGI way: before
        the handshake is done or once closing, with compression negotiated
        (the frame is not compressed), or while the peer is not reading."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.transport.is_closing()
            or self.conn.extensions
        ):
            return False
        self.transport.write(frame)
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.limiter.release(self.transport)
        self._stop_stall_timer()
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None

    # Closing: every uvicorn path ends in transport.close(), which waits for
    # the write buffer to drain, without end for a peer that does not read.

    def keepalive_timeout(self) -> None:
        # uvicorn sends a close frame here and waits to flush it; the ping
        # itself is still queued behind what the peer did not read.
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        self._cut_off(PING_TIMEOUT)

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.close_sent and not self._close_timer_bounded:
            self._close_timer_bounded = True
            if self.close_timer is not None:
                # The app sent websocket.close: uvicorn would close (and wait
                # to flush) after close_timeout; we abort if the close frame
                # has still not gone out by then.
                self.close_timer.cancel()
                self.close_timer = self.loop.call_later(self.close_timeout, self._close_timer_expired)
            else:
                self._bound_close()

    def _close_timer_expired(self) -> None:
        if self.transport.get_write_buffer_size():
            # Not counted as a cut-off: whoever closed has counted it (the
            # app's "too-slow", say); this only bounds the close.
            log.debug("close frame not flushed in time; aborted", extra=context(client=_client(self.client)))
            cut_off(self.transport)
        else:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None and not self.transport.is_closing():
            # websockets refused the handshake (it prepared a 4xx or an EOF),
            # and uvicorn neither sends that nor closes.
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()
        self._bound_close()

    async def run_asgi(self) -> None:
        try:
            await super().run_asgi()
        finally:
            self._bound_close()

    def shutdown(self) -> None:
        super().shutdown()
        self._bound_close()

    def _bound_close(self) -> None:
        """If the transport is closing, give it close_timeout to flush."""
        if self._abort_timer is None and not self.disconnected and self.transport.is_closing():
            self._abort_timer = self.loop.call_later(self.close_timeout, self._abort_if_open)

    def _abort_if_open(self) -> None:
        self._abort_timer = None
        if not self.disconnected:
            log.debug("close not flushed in time; aborted", extra=context(client=_client(self.client)))
            cut_off(self.transport)


def _client(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"


def protocol_classes(
    settings: Settings, on_cut_off: Callable[[str], None] | None = None
) -> tuple[type[LimitedHttpProtocol], type[LimitedWebSocketProtocol]]:
    """The HTTP and WebSocket protocol classes for uvicorn.Config, sharing one
    per-client connection count; `on_cut_off(reason)` is called for each
    connection they cut off (PING_TIMEOUT, STALLED_WRITER, STALLED_READER)."""
    limits = TransportLimits(
        max_header_bytes=settings.max_header_bytes,
        read_timeout=settings.read_timeout,
        write_stall_timeout=settings.ping_interval + settings.ping_timeout,
    )
    limiter = ClientLimiter(settings.max_connections_per_client, settings.trusted_proxies)
    shared: dict[str, object] = {"limits": limits, "limiter": limiter}
    if on_cut_off is not None:
        shared["report_cut_off"] = staticmethod(on_cut_off)
    http = cast("type[LimitedHttpProtocol]", type("HttpProtocol", (LimitedHttpProtocol,), dict(shared)))
    ws = cast("type[LimitedWebSocketProtocol]", type("WebSocketProtocol", (LimitedWebSocketProtocol,), dict(shared)))
    return http, ws


def raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard one: each connection is a
    file descriptor, and the soft default (often 1024) is far below what the
    per-client cap and the hard limit allow."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):  # e.g. macOS refuses an infinite hard limit
        log.debug("could not raise the open files limit from %s to %s", soft, hard)
