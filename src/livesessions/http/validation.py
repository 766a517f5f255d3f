"""Validation errors in the shape Huddle01's API answers with (zod issues)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from livesessions.http.errors import Abort
from livesessions.http.responses import Out, json_response

_TYPE_NAMES = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "object": "object",
    "array": "array",
    "null": "null",
}

_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_EXPECTED_GOT = re.compile(r"^Expected `(?P<expected>[^`]+)`, got `(?P<received>[^`]+)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`$")
_BOUND = re.compile(r"^Expected `(?P<expected>[^`]+)`(?: of length)? (?P<op>[<>]=?) (?P<bound>\S+)$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\[\"?([^\]\"]*)\"?\]")


class ValidationIssue(Out, kw_only=True):
    code: Annotated[
        str, msgspec.Meta(description="A zod issue code: invalid_type, invalid_enum_value, too_small, too_big, custom.")
    ]
    expected: str | msgspec.UnsetType = msgspec.UNSET
    received: str | msgspec.UnsetType = msgspec.UNSET
    path: list[str | int]
    message: str


class ValidationIssues(Out):
    issues: Annotated[list[ValidationIssue], msgspec.Meta(min_length=1)]


class ValidationError(Out):
    """The request body or a query parameter failed validation."""

    success: Literal[False]
    error: ValidationIssues


class ValidationFailed(Abort):
    """A request failed validation; answered as 400 with these issues."""

    def __init__(self, issues: list[ValidationIssue]) -> None:
        super().__init__(json_response(400, ValidationError(success=False, error=ValidationIssues(issues))))


def issue(
    path: list[str | int],
    message: str,
    code: str = "custom",
    expected: str | msgspec.UnsetType = msgspec.UNSET,
    received: str | msgspec.UnsetType = msgspec.UNSET,
) -> ValidationIssue:
    return ValidationIssue(code=code, expected=expected, received=received, path=path, message=message)


def _parse_path(raw: str) -> list[str | int]:
    path: list[str | int] = []
    for name, index, quoted in _PATH_PART.findall(raw):
        path.append(int(index) if index else (name or quoted))
    return path


def issue_from_msgspec(message: str) -> ValidationIssue:
    """Turn one msgspec validation message into one zod-style issue."""
    path: list[str | int] = []
    at = _AT.search(message)
    if at:
        path = _parse_path(at.group("path"))
        message = message[: at.start()]
    if m := _EXPECTED_GOT.match(message):
        expected = _type_name(m.group("expected"))
        received = _type_name(m.group("received"))
        return issue(path, f"Expected {expected}, received {received}", "invalid_type", expected, received)
    if m := _MISSING.match(message):
        return issue([*path, m.group("field")], "Required", "invalid_type", "defined", "undefined")
    if m := _BOUND.match(message):
        code = "too_small" if m.group("op").startswith(">") else "too_big"
        return issue(path, message, code)
    if message.startswith("Invalid enum value"):
        return issue(path, message, "invalid_enum_value")
    return issue(path, message)


def _type_name(name: str) -> str:
    # msgspec writes unions as "str | object"; name each part in zod's words.
    return " | ".join(_TYPE_NAMES.get(part.strip(), part.strip()) for part in name.split("|"))
