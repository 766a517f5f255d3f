"""Validation errors in the shape Huddle01's API answers with (zod issues)."""

from __future__ import annotations

import re
from typing import Any

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


class ValidationFailed(Exception):
    """A request failed validation; answered as 400 with these issues."""

    def __init__(self, issues: list[dict[str, Any]]) -> None:
        super().__init__(issues)
        self.issues = issues

    @property
    def body(self) -> dict[str, Any]:
        return {"success": False, "error": {"issues": self.issues}}


def issue(path: list[str | int], message: str, code: str = "custom", **extra: Any) -> dict[str, Any]:
    return {"code": code, **extra, "path": path, "message": message}


def _parse_path(raw: str) -> list[str | int]:
    path: list[str | int] = []
    for name, index, quoted in _PATH_PART.findall(raw):
        path.append(int(index) if index else (name or quoted))
    return path


def issue_from_msgspec(message: str) -> dict[str, Any]:
    """Turn one msgspec validation message into one zod-style issue."""
    path: list[str | int] = []
    at = _AT.search(message)
    if at:
        path = _parse_path(at.group("path"))
        message = message[: at.start()]
    if m := _EXPECTED_GOT.match(message):
        expected = _type_name(m.group("expected"))
        received = _type_name(m.group("received"))
        return issue(path, f"Expected {expected}, received {received}", "invalid_type",
                     expected=expected, received=received)
    if m := _MISSING.match(message):
        return issue([*path, m.group("field")], "Required", "invalid_type", expected="defined",
                     received="undefined")
    if m := _BOUND.match(message):
        code = "too_small" if m.group("op").startswith(">") else "too_big"
        return issue(path, message, code)
    if message.startswith("Invalid enum value"):
        return issue(path, message, "invalid_enum_value")
    return issue(path, message)


def _type_name(name: str) -> str:
    # msgspec writes unions as "str | object"; name each part in zod's words.
    return " | ".join(_TYPE_NAMES.get(part.strip(), part.strip()) for part in name.split("|"))
