"""A real HTTP receiver for webhook tests: a server on a free loopback port
that records every request and answers as the test says (a status, a delay,
a redirect, or not at all while it is down)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from support import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str
    at: float

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def event(self) -> str:
        return self.data["event"]

    @property
    def payload(self) -> dict[str, Any]:
        return self.data["payload"]

    @property
    def sequence(self) -> int:
        return int(self.headers["x-livesessions-sequence"])


def js_stringify(value: Any) -> str:
    """JSON.stringify of a parsed body, as Huddle01's WebhookReceiver does it."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def verify(received: Received, api_key: str) -> bool:
    """Huddle01's WebhookReceiver check: HMAC-SHA256 over "<id>.<t>.<JSON.stringify(parsed body)>"."""
    t_part, sig_part = received.headers["huddle01-signature"].split(",", 1)
    timestamp = t_part.split("=", 1)[1]
    data = json.loads(received.body)
    message = f"{data['id']}.{timestamp}.{js_stringify(data)}"
    expected = "sha256=" + hmac.new(api_key.encode(), message.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, sig_part)


# (status, delay in seconds, extra headers) for one request
Answer = tuple[int, float, dict[str, str]]


class Receiver:
    """Records requests; `answer` decides each answer (default 200 at once)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[Received] = []
        self.attempts = 0
        self.answer: Callable[[Received], Answer] = lambda _: (200, 0.0, {})
        # the body of every answer
        self.body = b"ok"
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.start()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length).decode()
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                status, delay, headers = receiver.answer(got)
                with receiver._lock:
                    receiver.attempts += 1
                    if 200 <= status < 300:
                        receiver.received.append(got)
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(receiver.body)))
                    self.end_headers()
                    self.wfile.write(receiver.body)
                except OSError:
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.allow_reuse_address = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Down: connections are refused until start() again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self, name: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if name is None or r.event == name]

    def wait_for(self, count: int, name: str | None = None, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise AssertionError(f"got {len(self.events(name))} of {count} {name or 'events'}: {self.events()}")
