"""Every error answer the HTTP layer gives, and the one table that turns the
domain's refusals (livesessions.domain.errors) into them."""

from __future__ import annotations

from typing import Literal

from livesessions.auth.rate_limits import retry_after
from livesessions.domain.errors import (
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    Refused,
    TooMany,
    Unauthorized,
    Unavailable,
)
from livesessions.http.responses import Headers, Out, Response, json_response

# A refusal's kind -> its status; the body is always an ErrorMessage.
STATUS_OF: dict[type[Refused], int] = {
    Invalid: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Gone: 410,
    TooMany: 429,
    Unavailable: 503,
}


class ErrorMessage(Out):
    """A request the service refuses, and why."""

    ok: Literal[False]
    message: str


class RoomNotFound(Out):
    """Huddle01's answer for a room that is not the project's (no `ok`)."""

    message: Literal["Room Not Found"]


class SessionNotFound(Out):
    """Huddle01's answer for a session that is not the project's (no `ok`)."""

    message: Literal["Session Not Found"]


class RouteNotFound(Out):
    """No route has this path."""

    ok: Literal[False]
    message: Literal["Not Found"]


class MethodNotAllowed(Out):
    """The path exists, but not with this method; `Allow` names those it has."""

    ok: Literal[False]
    message: Literal["Method Not Allowed"]


class BadApiKey(Out):
    """Missing or unknown `x-api-key` (Huddle01's answer)."""

    ok: Literal[False]
    message: Literal["Incorrect or no API key provided"]
    validated: Literal[False]


class SignInFirst(Out):
    """No valid account session: sign in with a wallet first."""

    ok: Literal[False]
    message: Literal["Sign in first: this needs 'Authorization: Bearer <token>' from /api/v2/auth/verify"]


class Abort(Exception):
    """Answer with `response` now, whatever the handler was doing: refusals
    that are the HTTP layer's own (routing, reading the body, Huddle01's
    shapes of not-found)."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


def refusal(status: int, message: str, headers: Headers | None = None) -> Response:
    return json_response(status, ErrorMessage(ok=False, message=message), headers)


def answer_refused(exc: Refused) -> Response:
    """The table at work: a domain refusal as the client sees it."""
    headers = [(b"retry-after", retry_after(exc.retry_after).encode())] if isinstance(exc, TooMany) else None
    # By the nearest kind in its ancestry: a narrower refusal declared later
    # is answered as the kind it refines.
    status = next((STATUS_OF[kind] for kind in type(exc).__mro__ if kind in STATUS_OF), 400)
    return refusal(status, exc.message, headers)


def too_many(message: str, wait: float) -> Response:
    return answer_refused(TooMany(message, wait))


# Prepared once: these are answered often (a 404 per unknown room, a 401 per
# wrong key), so they are encoded once.
ROOM_NOT_FOUND = json_response(404, RoomNotFound(message="Room Not Found"))
SESSION_NOT_FOUND = json_response(404, SessionNotFound(message="Session Not Found"))
ROUTE_NOT_FOUND = json_response(404, RouteNotFound(ok=False, message="Not Found"))
BAD_API_KEY = json_response(401, BadApiKey(ok=False, message="Incorrect or no API key provided", validated=False))
SIGN_IN_FIRST = json_response(
    401,
    SignInFirst(ok=False, message="Sign in first: this needs 'Authorization: Bearer <token>' from /api/v2/auth/verify"),
    [(b"www-authenticate", b"Bearer")],
)
INTERNAL_ERROR = refusal(500, "Internal Server Error")
# Scale-out mode, while Redis or PostgreSQL cannot be reached: no answer
# rather than a wrong one (counts without the peers of other nodes).
UNAVAILABLE = refusal(
    503,
    "Service Unavailable: the live state store cannot be reached right now; nothing was changed, retry shortly",
    [(b"retry-after", b"2")],
)


def method_not_allowed(methods: list[str]) -> Response:
    return json_response(
        405, MethodNotAllowed(ok=False, message="Method Not Allowed"), [(b"allow", ", ".join(methods).encode())]
    )
