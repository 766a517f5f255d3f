"""The live event stream's bound: a client whose connection stops taking
bytes (its send blocks, as on a full socket) costs at most the stream buffer,
then gets `overflow` and the stream ends. Driven through the ASGI interface,
where a blocked send can be made exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from support import LocalApp

EVENTS = "/api/v2/sdk/live-sessions/events"
LIMIT = 5


def test_a_client_that_stops_taking_bytes_is_cut_off_with_bounded_memory(
    make_app: Callable[..., LocalApp],
) -> None:
    app = make_app(event_stream_buffer=LIMIT)
    project = app.project()
    room = project.create_room()
    sent: list[dict[str, Any]] = []
    unblock = asyncio.Event()
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and len(sent) == 2:
            await unblock.wait()  # the snapshot went out; then the socket is full

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": EVENTS,
        "raw_path": EVENTS.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8080"), (b"x-api-key", project.key.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    streaming = asyncio.run_coroutine_threadsafe(app.asgi(scope, receive, send), app.loop)
    stream_clients = app.services.project_events
    assert _eventually(lambda: len(sent) == 2)
    for _ in range(10):
        project.join(room).leave()  # 20 events and more, none of them taken
    subscriptions = [s for found in stream_clients._subscriptions.values() for s in found]
    (subscription,) = subscriptions
    assert _eventually(subscription.overflowed.is_set)
    assert len(subscription.buffer) <= LIMIT  # what it costs the server
    app.loop.call_soon_threadsafe(unblock.set)
    streaming.result(timeout=10)  # the stream ended by itself
    bodies = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert bodies.startswith(b"event: snapshot")
    assert bodies.rstrip().endswith(b'reconnect with Last-Event-ID"}')
    assert b"event: overflow" in bodies
    assert sent[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert stream_clients.clients() == 0
    app.loop.call_soon_threadsafe(gone.set)


def _eventually(check: Callable[[], bool], timeout: float = 10) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False
