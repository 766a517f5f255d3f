"""Requests the service cannot do, by kind of refusal.

Raised anywhere below the HTTP layer (domain, auth, egress) and by route
handlers; each kind is answered by one table in livesessions.http.errors. No
status code lives here: how a refusal looks on the wire is the HTTP layer's
business.
"""

from __future__ import annotations


class Refused(Exception):
    """The base of every kind; `message` is shown to the client as it is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(Refused):
    """The request is malformed in a way only the domain can tell."""


class Unauthorized(Refused):
    """A credential in the request (a signature, a token) does not check out."""


class Forbidden(Refused):
    """The caller is known, but this is not theirs to do."""


class NotFound(Refused):
    """What the request names does not exist (or is not the caller's)."""


class Conflict(Refused):
    """The request clashes with the state things are in now."""


class Gone(Refused):
    """What the request names existed but is over."""


class Unavailable(Refused):
    """Something the service depends on cannot be reached right now (scale-out
    mode: Redis or PostgreSQL); nothing was changed, try again shortly."""


class TooMany(Refused):
    """Too many requests of this kind; `retry_after` seconds until one is let through."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
