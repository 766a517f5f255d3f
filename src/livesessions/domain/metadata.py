"""Room and peer metadata: what is accepted, and how it is kept.

Room metadata is kept as a JSON object; the official SDK sends it as a
JSON-encoded string and plain REST callers send an object, so both are taken.
Peer metadata is kept as the string the token or the peer gave.
"""

from __future__ import annotations

from typing import Any

import orjson

from livesessions.domain.values import NUL_REFUSED, holds_nul

MAX_ROOM_METADATA_BYTES = 10 * 1024
MAX_PEER_METADATA_BYTES = 5 * 1024


class MetadataError(ValueError):
    pass


def _encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:  # e.g. an integer beyond 64 bits, which JSON parsers disagree on
        raise MetadataError(f"metadata cannot be stored as JSON: {exc}") from None


def room_metadata(value: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise MetadataError("metadata must be a JSON object or a string holding one") from None
        if not isinstance(value, dict):
            raise MetadataError("metadata must be a JSON object or a string holding one")
    if len(_encode(value)) > MAX_ROOM_METADATA_BYTES:
        raise MetadataError(f"metadata must be at most {MAX_ROOM_METADATA_BYTES} bytes as JSON")
    return value


def peer_metadata_text(value: Any) -> str:
    """Peer metadata as kept: a string as given, anything else JSON-encoded."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else _encode(value).decode()
    if holds_nul(text):
        raise MetadataError(f"peer metadata: {NUL_REFUSED}")
    if len(text.encode()) > MAX_PEER_METADATA_BYTES:
        raise MetadataError(f"peer metadata must be at most {MAX_PEER_METADATA_BYTES} bytes")
    return text
