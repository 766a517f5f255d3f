"""Query parameters: each declared once, with what reads it (and answers a
bad value with the same 400 shape as a bad body) and what documents it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from livesessions.digits import parse_decimal
from livesessions.http.core import Request
from livesessions.http.validation import ValidationFailed, issue

Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RequiredText:
    """A string the request must give, not empty."""

    name: str
    description: str
    example: str | None = None

    def read(self, request: Request) -> str:
        value = request.query.get(self.name)
        if not value:
            raise ValidationFailed([issue([self.name], "Required", "invalid_type", "string", "undefined")])
        return value

    def document(self) -> Document:
        example = {"example": self.example} if self.example else {}
        return {
            "name": self.name,
            "in": "query",
            "required": True,
            "description": self.description,
            "schema": {"type": "string", "minLength": 1},
            **example,
        }


@dataclass(frozen=True, slots=True)
class OptionalText:
    """A string the request may give; given empty, it counts as not given."""

    name: str
    description: str
    pattern: str | None = None

    def read(self, request: Request) -> str | None:
        return request.query.get(self.name) or None

    def document(self) -> Document:
        schema: Document = {"type": "string"}
        if self.pattern:
            schema["pattern"] = self.pattern
        return _optional(self.name, self.description, schema)


@dataclass(frozen=True, slots=True)
class Integer:
    """A decimal integer within bounds; `default` when not given (or empty)."""

    name: str
    description: str
    default: int
    minimum: int
    maximum: int

    def read(self, request: Request) -> int:
        value = _integer(request, self.name, self.minimum, self.maximum)
        return self.default if value is None else value

    def document(self) -> Document:
        schema = {"type": "integer", "minimum": self.minimum, "maximum": self.maximum, "default": self.default}
        return _optional(self.name, self.description, schema)


@dataclass(frozen=True, slots=True)
class OptionalInteger:
    """A decimal integer within bounds, or None when not given (or empty)."""

    name: str
    description: str
    minimum: int
    maximum: int

    def read(self, request: Request) -> int | None:
        return _integer(request, self.name, self.minimum, self.maximum)

    def document(self) -> Document:
        schema = {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}
        return _optional(self.name, self.description, schema)


@dataclass(frozen=True, slots=True)
class Choice:
    """One of a few strings; `default` when not given."""

    name: str
    description: str
    choices: tuple[str, ...]
    default: str

    def read(self, request: Request) -> str:
        value = request.query.get(self.name, self.default)
        if value not in self.choices:
            raise ValidationFailed(
                [issue([self.name], f"{self.name} must be one of {', '.join(self.choices)}", "invalid_enum_value")]
            )
        return value

    def document(self) -> Document:
        return {
            "name": self.name,
            "in": "query",
            "required": False,
            "description": self.description,
            "schema": {"enum": list(self.choices), "default": self.default},
        }


QueryParam = RequiredText | OptionalText | Integer | OptionalInteger | Choice


# Where a page follows the `nextCursor` of the one before (session history,
# recordings). 0, which Huddle01's SDK sends by default, means the first page.
PAGE_CURSOR = OptionalInteger("cursor", "`nextCursor` of the previous page; 0 or none for the first page.", 0, 2**62)


def _integer(request: Request, name: str, minimum: int, maximum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    value = parse_decimal(raw)
    if value is None or not minimum <= value <= maximum:
        raise ValidationFailed(
            [
                issue(
                    [name],
                    f"{name} must be an integer from {minimum} to {maximum}",
                    "invalid_type",
                    "integer",
                    raw[:32],
                )
            ]
        )
    return value


def _optional(name: str, description: str, schema: Document) -> Document:
    # allowEmptyValue: `?limit=` is accepted, as if the parameter were not given.
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
        "allowEmptyValue": True,
    }
