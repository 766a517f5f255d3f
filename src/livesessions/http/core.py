"""A deliberately small ASGI toolkit: requests and routing.

The hot GETs of this service must stay close to raw ASGI speed, so this is
all the framework there is: a dict lookup for fixed paths, a segment match for
paths with parameters, and pre-encoded bytes out (livesessions.http.responses).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl

import msgspec

from livesessions.auth.rate_limits import client_key
from livesessions.digits import parse_decimal
from livesessions.domain.values import NUL_REFUSED, holds_nul, json_holds_nul
from livesessions.http.errors import ROUTE_NOT_FOUND, Abort, method_not_allowed, refusal
from livesessions.http.responses import Receive
from livesessions.http.validation import ValidationFailed, issue, issue_from_msgspec

# Who may call a route: an API key, a wallet sign-in's account session, either
# (read routes a browser page uses), or anyone.
Auth = Literal["api_key", "account", "key_or_account", "none"]
T = TypeVar("T")


class ClientDisconnected(Exception):
    pass


class Request:
    __slots__ = ("_query", "_receive", "account", "key_id", "max_body", "path_params", "project_id", "scope")

    def __init__(self, scope: dict[str, Any], receive: Receive, max_body: int) -> None:
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
    def receive(self) -> Receive:
        return self._receive

    def header(self, name: bytes) -> str | None:
        """A request header by lower-case name (ASGI lower-cases them)."""
        headers: list[tuple[bytes, bytes]] = self.scope["headers"]
        for key, value in headers:
            if key == name:
                return value.decode("latin-1")
        return None

    @property
    def bearer_token(self) -> str | None:
        """The token of an `Authorization: Bearer <token>` header."""
        scheme, _, token = (self.header(b"authorization") or "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None

    @property
    def client_key(self) -> str:
        """Who the client is for per-client limits: its address (an IPv6
        client by its /64, which one subscriber usually holds whole)."""
        return client_key(self.client_address)

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
            for name, value in self._query.items():
                if holds_nul(name) or holds_nul(value):
                    self._query = None
                    raise ValidationFailed([issue([name.replace("\x00", "")], NUL_REFUSED, "custom")])
        return self._query

    async def body(self) -> bytes:
        declared = self.header(b"content-length")
        if declared is not None:
            length = parse_decimal(declared)
            if length is None:
                raise Abort(refusal(400, "Content-Length must be a decimal number"))
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

    async def json_as(self, kind: type[T], empty_ok: bool = False) -> T:
        """The body, decoded and validated as `kind` (a msgspec Struct);
        `empty_ok`: no body at all is taken as `{}`."""
        body = await self.body()
        if not body.strip():
            if empty_ok:
                return msgspec.convert({}, kind)
            raise Abort(refusal(400, "A JSON body is required"))
        content_type = (self.header(b"content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise Abort(refusal(415, "Content-Type must be application/json"))
        if json_holds_nul(body):
            raise Abort(refusal(400, f"Malformed JSON body: {NUL_REFUSED}"))
        try:
            return msgspec.json.decode(body, type=kind)
        except msgspec.ValidationError as exc:
            raise ValidationFailed([issue_from_msgspec(str(exc))]) from None
        except msgspec.DecodeError as exc:
            raise Abort(refusal(400, f"Malformed JSON body: {exc}")) from None
        except UnicodeDecodeError:
            raise Abort(refusal(400, "Malformed JSON body: it is not valid UTF-8")) from None


def _too_large(limit: int) -> Abort:
    return Abort(refusal(413, f"Request body is larger than {limit} bytes"))


# Answers a Response, or (for a route with an `encode_as` status) a value
# to encode as JSON with that status.
Endpoint = Callable[[Request], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    """One method on one path, ready to serve (see livesessions.http.routing)."""

    method: str
    pattern: str
    endpoint: Endpoint
    auth: Auth
    # The status of a value the endpoint answers with; None: it answers a Response.
    encode_as: int | None = None
    regex: re.Pattern[str] | None = None


class Router:
    """Fixed paths by dict lookup; paths with `{param}` segments by a regex,
    among the routes with as many segments."""

    def __init__(self) -> None:
        self._fixed: dict[str, list[Route]] = {}
        self._patterned: dict[int, list[Route]] = {}
        self.routes: list[Route] = []

    def add(self, method: str, pattern: str, endpoint: Endpoint, auth: Auth, encode_as: int | None = None) -> None:
        patterned = "{" in pattern
        route = Route(method, pattern, endpoint, auth, encode_as, _path_regex(pattern) if patterned else None)
        self.routes.append(route)
        if patterned:
            self._patterned.setdefault(pattern.count("/"), []).append(route)
        else:
            self._fixed.setdefault(pattern, []).append(route)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for this request, or Abort with 404 / 405."""
        candidates = self._fixed.get(path)
        if candidates:
            for route in candidates:
                if route.method == method:
                    return route, {}
            raise _not_allowed(candidates)
        allowed: list[Route] = []
        for route in self._patterned.get(path.count("/"), ()):
            found = route.regex.fullmatch(path)  # type: ignore[union-attr]
            if found is not None:
                if route.method == method:
                    return route, found.groupdict()
                allowed.append(route)
        if allowed:
            raise _not_allowed(allowed)
        raise Abort(ROUTE_NOT_FOUND)


def _path_regex(pattern: str) -> re.Pattern[str]:
    """`/a/{name}/b` matches `/a/<one non-empty segment>/b`, captured as `name`."""
    parts = [f"(?P<{part[1:-1]}>[^/]+)" if part.startswith("{") else re.escape(part) for part in pattern.split("/")]
    return re.compile("/".join(parts))


def _not_allowed(routes: list[Route]) -> Abort:
    return Abort(method_not_allowed(sorted({route.method for route in routes})))
