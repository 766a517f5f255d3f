"""The ceiling for benchmarks/servers.py: a raw ASGI app, the same under every
server.

- HTTP: every request gets a fixed small JSON body (as benchmarks/raw_asgi.py).
- WebSocket (any path): accept, send {"type":"joined"}, then read; a text
  frame holding "leave" is answered with a close (1000 "left"), a text frame
  holding "ping" with {"type":"pong"}; anything else is ignored. So a churn
  cycle (connect, joined, leave, close) is the service's, minus the service.

Application-level liveness, for servers without WebSocket pings (granian):
with RAW_APP_PING_INTERVAL=S (seconds, > 0), one task sends every open peer
{"type":"ping"} each S seconds and closes (1011 "ping timeout") those that
have sent nothing for RAW_APP_PING_TIMEOUT seconds after that (default S): a
peer stays if it answers with any frame. This is what the service would have to
do itself under granian (and what its clients would have to answer).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

BODY = b'{"ok":true,"message":"raw asgi baseline"}'
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
}
RESPONSE_BODY = {"type": "http.response.body", "body": BODY}
JOINED = {"type": "websocket.send", "text": '{"type":"joined"}'}
PONG = {"type": "websocket.send", "text": '{"type":"pong"}'}
PING = {"type": "websocket.send", "text": '{"type":"ping"}'}
LEFT = {"type": "websocket.close", "code": 1000, "reason": "left"}
TIMED_OUT = {"type": "websocket.close", "code": 1011, "reason": "ping timeout"}

PING_INTERVAL = float(os.environ.get("RAW_APP_PING_INTERVAL", "0") or 0)
PING_TIMEOUT = float(os.environ.get("RAW_APP_PING_TIMEOUT", "0") or 0) or PING_INTERVAL


class Peer:
    __slots__ = ("closed", "last_seen", "send", "task")

    def __init__(self, send: Any) -> None:
        self.send = send
        self.last_seen = time.monotonic()
        self.closed = False
        # The task reading this peer: cancelled to end a peer that went silent.
        self.task = asyncio.current_task()


_peers: set[Peer] = set()
_pinger: list[asyncio.Task[None]] = []
_sends: set[asyncio.Task[None]] = set()


async def _send(peer: Peer, message: dict[str, Any]) -> None:
    try:
        await peer.send(message)
    except Exception:  # noqa: BLE001 - the peer is gone; its reader ends it
        peer.closed = True


def _spawn_send(peer: Peer, message: dict[str, Any]) -> None:
    task = asyncio.get_running_loop().create_task(_send(peer, message))
    _sends.add(task)
    task.add_done_callback(_sends.discard)


async def _ping_all() -> None:
    """One sweep per interval over every peer: the whole cost of app-level liveness."""
    while True:
        await asyncio.sleep(PING_INTERVAL)
        now = time.monotonic()
        for peer in list(_peers):
            if peer.closed:
                continue
            if now - peer.last_seen > PING_INTERVAL + PING_TIMEOUT:
                # Closed by its own reader (a close sent from another task while the
                # reader waits in receive() is not delivered by granian 2.5).
                peer.closed = True
                if peer.task is not None:
                    peer.task.cancel()
            else:
                # Not awaited in turn: a peer that stops reading must not hold up the sweep.
                _spawn_send(peer, PING)


async def _websocket(receive: Any, send: Any) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send(JOINED)
    peer = Peer(send)
    if PING_INTERVAL > 0:
        _peers.add(peer)
        if not _pinger:
            _pinger.append(asyncio.get_running_loop().create_task(_ping_all()))
    try:
        while True:
            try:
                message = await receive()
            except asyncio.CancelledError:
                if not peer.closed:
                    raise
                await send(TIMED_OUT)  # the pinger found it silent
                return
            if message["type"] == "websocket.disconnect":
                return
            peer.last_seen = time.monotonic()
            text = message.get("text") or ""
            if "leave" in text:
                peer.closed = True
                await send(LEFT)
                return
            if '"ping"' in text:
                await send(PONG)
    finally:
        peer.closed = True
        _peers.discard(peer)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "http":
        await send(START)
        await send(RESPONSE_BODY)
    elif kind == "websocket":
        await _websocket(receive, send)
    elif kind == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
