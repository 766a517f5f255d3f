"""A deliberately small ASGI toolkit: requests, responses, errors, routing.

The hot GETs of this service must stay close to raw ASGI speed, so this is
all the framework there is: a dict lookup for fixed paths, a segment match for
paths with parameters, and pre-encoded bytes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl

import msgspec

from livesessions.digits import parse_decimal
from livesessions.http.validation import ValidationFailed, issue_from_msgspec

Auth = Literal["api_key", "account", "none"]
_encode = msgspec.json.encode


class HTTPError(Exception):
    """Raised anywhere in a handler to answer with `status` and `body`."""

    def __init__(self, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or []


class ClientDisconnected(Exception):
    pass


class Response:
    __slots__ = ("status", "body", "headers", "content_type")

    def __init__(
        self,
        status: int,
        body: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
        content_type: bytes = b"application/json",
    ) -> None:
        self.status = status
        self.body = body
        self.headers = headers
        self.content_type = content_type

    async def send(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if self.status == 204:  # no content: no content headers either
            headers = []
        else:
            headers = [(b"content-type", self.content_type), (b"content-length", str(len(self.body)).encode())]
        if self.headers:
            headers.extend(self.headers)
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


class StreamingResponse(Response):
    """A body sent as it is produced; stops producing when the client goes away."""

    __slots__ = ("_chunks", "_receive")

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        content_type: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
        status: int = 200,
    ) -> None:
        super().__init__(status, b"", headers, content_type)
        self._chunks = chunks
        self._receive = receive

    async def send(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        headers = [(b"content-type", self.content_type), *(self.headers or [])]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        gone = asyncio.ensure_future(self._until_disconnect())
        try:
            while True:
                step = asyncio.ensure_future(anext(self._chunks))
                await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    return
                try:
                    chunk = step.result()
                except StopAsyncIteration:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    async def _until_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass


class JSONResponse(Response):
    __slots__ = ()

    def __init__(self, data: Any, status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(status, _encode(data), headers)


def error_message(status: int, message: str, **extra: Any) -> HTTPError:
    return HTTPError(status, {"ok": False, "message": message, **extra})


class Request:
    __slots__ = ("scope", "_receive", "path_params", "project_id", "key_id", "account", "_query", "max_body")

    def __init__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]], max_body: int):
        self.scope = scope
        self._receive = receive
        self.path_params: dict[str, str] = {}
        self.project_id: str = ""
        # The API key the request was made with, when it needed one.
        self.key_id: str = ""
        self.account: Any = None
        self._query: dict[str, str] | None = None
        self.max_body = max_body

    @property
    def receive(self) -> Callable[[], Awaitable[dict[str, Any]]]:
        return self._receive

    @property
    def method(self) -> str:
        return self.scope["method"]

    def header(self, name: bytes) -> str | None:
        """A request header by lower-case name (ASGI lower-cases them)."""
        for key, value in self.scope["headers"]:
            if key == name:
                return value.decode("latin-1")
        return None

    @property
    def bearer_token(self) -> str | None:
        """The token of an `Authorization: Bearer <token>` header."""
        scheme, _, token = (self.header(b"authorization") or "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    @property
    def client_address(self) -> str:
        """The client's IP address (a trusted proxy's X-Forwarded-For already applied)."""
        client = self.scope.get("client")
        return client[0] if client else "unknown"

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            raw = self.scope.get("query_string", b"").decode("latin-1")
            self._query = dict(parse_qsl(raw, keep_blank_values=True)) if raw else {}
        return self._query

    async def body(self) -> bytes:
        declared = self.header(b"content-length")
        if declared is not None:
            length = parse_decimal(declared)
            if length is None:
                raise error_message(400, "Content-Length must be a decimal number")
            if length > self.max_body:
                raise _too_large(self.max_body)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _too_large(self.max_body)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def json_as(self, kind: type[Any], empty_ok: bool = False) -> Any:
        """The body, decoded and validated as `kind` (a msgspec Struct)."""
        body = await self.body()
        if not body.strip():
            if empty_ok:
                return msgspec.convert({}, kind)
            raise error_message(400, "A JSON body is required")
        content_type = (self.header(b"content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise error_message(415, "Content-Type must be application/json")
        try:
            return msgspec.json.decode(body, type=kind)
        except msgspec.ValidationError as exc:
            raise ValidationFailed([issue_from_msgspec(str(exc))]) from None
        except msgspec.DecodeError as exc:
            raise error_message(400, f"Malformed JSON body: {exc}") from None
        except UnicodeDecodeError:
            raise error_message(400, "Malformed JSON body: it is not valid UTF-8") from None


def _too_large(limit: int) -> HTTPError:
    return error_message(413, f"Request body is larger than {limit} bytes")


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route:
    methods: frozenset[str]
    pattern: str
    handler: Handler
    auth: Auth
    regex: re.Pattern[str] | None = None


class Router:
    """Fixed paths by dict lookup; paths with `{param}` segments by a regex,
    among the routes with as many segments."""

    def __init__(self) -> None:
        self._fixed: dict[str, list[Route]] = {}
        self._patterned: dict[int, list[Route]] = {}
        self.routes: list[Route] = []

    def add(self, methods: str | tuple[str, ...], pattern: str, handler: Handler, auth: Auth = "api_key") -> None:
        methods = (methods,) if isinstance(methods, str) else methods
        patterned = "{" in pattern
        route = Route(frozenset(methods), pattern, handler, auth, _path_regex(pattern) if patterned else None)
        self.routes.append(route)
        if patterned:
            self._patterned.setdefault(pattern.count("/"), []).append(route)
        else:
            self._fixed.setdefault(pattern, []).append(route)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for this request, or HTTPError 404 / 405."""
        candidates = self._fixed.get(path)
        if candidates:
            for route in candidates:
                if method in route.methods:
                    return route, {}
            raise _not_allowed(candidates)
        allowed: list[Route] = []
        for route in self._patterned.get(path.count("/"), ()):
            found = route.regex.fullmatch(path)  # type: ignore[union-attr]
            if found is not None:
                if method in route.methods:
                    return route, found.groupdict()
                allowed.append(route)
        if allowed:
            raise _not_allowed(allowed)
        raise error_message(404, "Not Found")


def _path_regex(pattern: str) -> re.Pattern[str]:
    """`/a/{name}/b` matches `/a/<one non-empty segment>/b`, captured as `name`."""
    parts = [
        f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part) for part in pattern.split("/")
    ]
    return re.compile("/".join(parts))


def _not_allowed(routes: list[Route]) -> HTTPError:
    methods = sorted({m for route in routes for m in route.methods})
    return HTTPError(
        405, {"ok": False, "message": "Method Not Allowed"}, [(b"allow", ", ".join(methods).encode())]
    )
