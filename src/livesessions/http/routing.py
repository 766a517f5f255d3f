"""Route tables: each operation declared once, with what serves it and what
documents it (livesessions.http.openapi reads the same declarations).

A handler is a plain module-level function:

    async def room_details(request: Request, store: Store) -> RoomDetails: ...

Its first parameter is the request. A parameter named `body` gets the request
body, decoded and validated as its annotation (a msgspec Struct) before the
call; an empty body is taken as `{}` when that Struct has no required field.
Every other parameter is a dependency, bound by name when the router is built
(`build_router`): a member of `Services`, or state the HTTP layer keeps. The
handler returns a Struct, encoded with the operation's `status`, or a
prepared `Response`, documented by the operation's `answer`.

All of this is looked at once, when the router is built: serving a request
costs one call of the bound handler and (for a Struct) one encode.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from livesessions.http.core import Auth, Endpoint, Request, Router
from livesessions.http.params import QueryParam
from livesessions.http.responses import Response

Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Reply:
    """A documented answer: what it means, its body's type(s), its headers.

    `body` is a Struct type, a union of them (`A | B`: oneOf), or None for a
    body that is not JSON (`media_types` then say what it is) or no body."""

    description: str
    body: Any = None
    media_types: tuple[str, ...] = ("application/json",)
    headers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    links: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PathParam:
    name: str
    description: str = ""
    example: str | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    # Who may call it: an API key (x-api-key), a wallet sign-in's account
    # session (Authorization: Bearer), or anyone.
    auth: Auth = "api_key"
    status: int = 200
    # The success answer's meaning; its body type comes from the handler's
    # return annotation, unless the handler returns a prepared Response.
    answer: Reply = Reply("OK.")
    errors: Mapping[int, Reply] = field(default_factory=dict)
    query: tuple[QueryParam, ...] = ()
    path_params: tuple[PathParam, ...] = ()
    # Header parameters, documented as they are (the handler reads them).
    headers: tuple[Mapping[str, Any], ...] = ()
    # A body the handler reads itself, after checks that must come first
    # (otherwise: the handler's `body` parameter).
    reads_body: type[msgspec.Struct] | None = None
    description: str = ""

    @property
    def body(self) -> type[msgspec.Struct] | None:
        """The request body's type, if the operation takes one."""
        return self.reads_body or _hints(self.handler).get("body")

    @property
    def body_required(self) -> bool:
        body = self.body
        return body is not None and any(f.required for f in msgspec.structs.fields(body))

    @property
    def returns(self) -> Any:
        """The success body's type: the handler's, or the prepared answer's."""
        returned = _hints(self.handler)["return"]
        return self.answer.body if _is_response(returned) else returned


def build_router(operations: tuple[Operation, ...], dependencies: Mapping[str, object]) -> Router:
    router = Router()
    for operation in operations:
        prepared = _is_response(_hints(operation.handler)["return"])
        router.add(
            operation.method,
            operation.path,
            _endpoint(operation, dependencies),
            operation.auth,
            None if prepared else operation.status,
        )
    return router


def _endpoint(operation: Operation, dependencies: Mapping[str, object]) -> Endpoint:
    """The handler bound to its dependencies, by position, in a plain function
    that returns the handler's own coroutine (no extra frame per request);
    with a body to decode first, a coroutine that does that."""
    handler = operation.handler
    names = list(inspect.signature(handler).parameters)
    if names[:1] != ["request"] or ("body" in names and names[-1] != "body"):
        raise TypeError(f"{handler.__qualname__}: `request` comes first, `body` (if any) last")
    wanted = [name for name in names[1:] if name != "body"]
    missing = [name for name in wanted if name not in dependencies]
    if missing:
        raise TypeError(f"{handler.__qualname__}: no dependency named {', '.join(missing)}")
    deps = tuple(dependencies[name] for name in wanted)
    decoded = _hints(handler).get("body")
    if decoded is None:
        return typing.cast(Endpoint, lambda request: handler(request, *deps))
    empty_ok = not operation.body_required

    async def with_body(request: Request) -> Any:
        return await handler(request, *deps, await request.json_as(decoded, empty_ok))

    return with_body


@functools.cache
def _hints(handler: Handler) -> dict[str, Any]:
    return typing.get_type_hints(handler)


def _is_response(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Response)
