"""The kinds of value the domain's records hold, with what a reader of the
API reference needs to know of each (msgspec carries it into the schemas)."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from livesessions.domain.ids import PEER_ID_PREFIX, ROOM_ID_PATTERN, SESSION_ID_PREFIX

EpochMillis = Annotated[int, msgspec.Meta(ge=0, description="A time, in milliseconds since the Unix epoch.")]
Millis = Annotated[int, msgspec.Meta(ge=0, description="A duration, in milliseconds.")]
Count = Annotated[int, msgspec.Meta(ge=0)]
RoomId = Annotated[
    str,
    msgspec.Meta(
        pattern=ROOM_ID_PATTERN.pattern,
        examples=["abc-defg-hij"],
        description="A room id as the service hands them out.",
    ),
]
SessionId = Annotated[str, msgspec.Meta(pattern=f"^{SESSION_ID_PREFIX}[a-z0-9]+$", description="A session id.")]
PeerId = Annotated[str, msgspec.Meta(min_length=1, description=f"A peer id (`{PEER_ID_PREFIX}…` unless a token says).")]


# Text in this service never holds U+0000: PostgreSQL cannot store it, and the
# embedded store refuses it the same way so both modes answer alike.
NUL_REFUSED = "text may not contain the NUL character (U+0000)"
# In JSON, U+0000 is written \u0000 (an escape not itself escaped).
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)


def holds_nul(text: str) -> bool:
    return "\x00" in text


def json_holds_nul(raw: bytes) -> bool:
    """Whether JSON text, once decoded, would hold U+0000 anywhere."""
    return b"\\u0000" in raw.lower() and _NUL_ESCAPE.search(raw) is not None
