"""Query and path parameters, checked with the same 400 shape as bodies."""

from __future__ import annotations

from livesessions.digits import parse_decimal
from livesessions.http.core import Request
from livesessions.http.validation import ValidationFailed, issue


def required(request: Request, name: str) -> str:
    value = request.query.get(name)
    if not value:
        raise ValidationFailed([issue([name], "Required", "invalid_type", expected="string", received="undefined")])
    return value


def integer(request: Request, name: str, default: int | None, minimum: int, maximum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = parse_decimal(raw)
    if value is None or not minimum <= value <= maximum:
        raise ValidationFailed(
            [issue([name], f"{name} must be an integer from {minimum} to {maximum}", "invalid_type",
                   expected="integer", received=raw[:32])]
        )
    return value
