"""The peer WebSocket protocol, in one place: every close code, every message a
peer may send (parsed and validated here) and every message it is sent.

Messages are JSON text frames with a `type` field; msgspec's tagged unions
decode and encode them, so a frame is checked once, in C, on the way in.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Annotated, Any, Literal, get_args

import msgspec
import orjson

from livesessions.domain.live import PeerPresence, Refusal

MAX_RECIPIENTS = 1024
MAX_LABEL_CHARS = 256


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    TOO_SLOW = 1008
    INTERNAL = 1011
    TRY_AGAIN_LATER = 1013
    BAD_TOKEN = 4001
    LOCKED = 4003
    ROOM_NOT_FOUND = 4004
    TOO_FAST = 4008
    REPLACED = 4009
    SESSION_ENDED = 4010
    REMOVED = 4011
    FULL = 4029
    NO_SUCH_ENDPOINT = 4404


# What each close code tells a peer (the API reference lists these).
CLOSE_MEANING: dict[CloseCode, str] = {
    CloseCode.NORMAL: "left, or the recording/livestream bot's job stopped",
    CloseCode.GOING_AWAY: "the server is shutting down",
    CloseCode.TOO_SLOW: "too slow to receive its messages",
    CloseCode.INTERNAL: "the server could not serve the connection",
    CloseCode.TRY_AGAIN_LATER: "scale-out mode: Redis or PostgreSQL cannot be reached right now; reconnect shortly",
    CloseCode.BAD_TOKEN: "missing, malformed or expired token, or its API key was revoked",
    CloseCode.LOCKED: "the room is locked (admins may still join), or the browser page's Origin is not among "
    "the project's whitelisted domains",
    CloseCode.ROOM_NOT_FOUND: "the token's room does not exist",
    CloseCode.TOO_FAST: "kept sending past its message budget",
    CloseCode.REPLACED: "the same peer connected again",
    CloseCode.SESSION_ENDED: "the project ended the live session for everyone (moderation)",
    CloseCode.REMOVED: "the project removed this peer from the room (moderation)",
    CloseCode.FULL: "the room is full (the token's maxPeersAllowed)",
    CloseCode.NO_SUCH_ENDPOINT: "a WebSocket anywhere but /ws",
}


# What a member the project took out is closed with, by why (moderation).
EVICTION_CLOSE: dict[str, tuple[CloseCode, str]] = {
    "removed": (CloseCode.REMOVED, "removed from the room"),
    "ended": (CloseCode.SESSION_ENDED, "the session was ended"),
}

# What a refused join is closed with.
REFUSAL_CLOSE: dict[Refusal, tuple[CloseCode, str]] = {
    Refusal.LOCKED: (CloseCode.LOCKED, "room is locked"),
    Refusal.FULL: (CloseCode.FULL, "room is full"),
}


# --- peer -> server ---------------------------------------------------------

Label = Annotated[str, msgspec.Meta(max_length=MAX_LABEL_CHARS)]
Recipients = Annotated[list[str], msgspec.Meta(max_length=MAX_RECIPIENTS)]


# A value passed on as the peer wrote it: forwarded without being decoded and
# encoded again, and read (when it must be) the way JavaScript's JSON.parse
# reads it, integers beyond 64 bits as floats (see `read_json`).
NULL = msgspec.Raw(b"null")


class SendData(msgspec.Struct, tag="data", tag_field="type"):
    """A data message to everyone else ("*") or to the peers listed."""

    to: Literal["*"] | Recipients = "*"
    label: Label | None = None
    payload: msgspec.Raw = NULL


class UpdateMetadata(msgspec.Struct, tag="update-metadata", tag_field="type"):
    metadata: msgspec.Raw = NULL


def read_json(raw: msgspec.Raw) -> Any:
    """A raw value as JSON.parse reads it (orjson turns huge integers into floats)."""
    return orjson.loads(bytes(raw))


class Leave(msgspec.Struct, tag="leave", tag_field="type"):
    pass


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    pass


ClientMessage = SendData | UpdateMetadata | Leave | Ping

_decoder = msgspec.json.Decoder(ClientMessage)


class BadMessage(ValueError):
    """A frame that is not a valid peer message; the text says why."""


def parse(text: str) -> ClientMessage:
    try:
        message: ClientMessage = _decoder.decode(text)
    except msgspec.ValidationError as exc:
        raise BadMessage(_explain(str(exc))) from None
    except msgspec.DecodeError:
        raise BadMessage("malformed JSON") from None
    if isinstance(message, SendData):
        message.payload = one_line(message.payload)
    return message


def one_line(raw: msgspec.Raw) -> msgspec.Raw:
    """The value without line breaks between its tokens (strings cannot hold
    raw ones): the recorder writes one event a line and the livestream one
    event a frame, so a payload must not be able to start a line of its own."""
    data = bytes(raw)
    if b"\n" in data or b"\r" in data:
        return msgspec.Raw(msgspec.json.format(data, indent=0))
    return raw


def _explain(problem: str) -> str:
    """msgspec's account of a bad frame, in the protocol's words."""
    _, at, where = problem.partition(" - at `")
    where = where.rstrip("`")
    if not at:  # not an object, or no type at all
        return "a message is a JSON object with a string 'type'"
    if where == "$.type":
        if problem.startswith("Invalid value"):
            return f"unknown message type; use one of: {', '.join(TYPES)}"
        return "a message is a JSON object with a string 'type'"
    if where.startswith("$.to"):
        return f"'to' must be \"*\" or a list of at most {MAX_RECIPIENTS} peer ids"
    if where.startswith("$.label"):
        return f"'label' must be a string of at most {MAX_LABEL_CHARS} characters"
    return problem


def _tags(union: Any) -> tuple[str, ...]:
    return tuple(str(kind.__struct_config__.tag) for kind in get_args(union))


TYPES = _tags(ClientMessage)


# --- server -> peer ---------------------------------------------------------


class Joined(msgspec.Struct, tag="joined", tag_field="type", rename="camel"):
    room_id: str
    session_id: str | None
    peer_id: str
    peers: list[PeerPresence]


class PeerJoined(msgspec.Struct, tag="peer-joined", tag_field="type"):
    peer: PeerPresence


class PeerLeft(msgspec.Struct, tag="peer-left", tag_field="type", rename="camel"):
    peer_id: str


class Data(msgspec.Struct, tag="data", tag_field="type", rename={"sender": "from"}):
    sender: str
    label: str | None
    payload: msgspec.Raw


class MetadataUpdated(msgspec.Struct, tag="metadata-updated", tag_field="type", rename="camel"):
    peer_id: str
    metadata: str


class Pong(msgspec.Struct, tag="pong", tag_field="type"):
    pass


class Error(msgspec.Struct, tag="error", tag_field="type"):
    message: str


ServerMessage = Joined | PeerJoined | PeerLeft | Data | MetadataUpdated | Pong | Error
SERVER_TYPES = _tags(ServerMessage)

encode = msgspec.json.Encoder().encode

PONG = encode(Pong())


# The ASGI scope extension under which the server offers a WebSocket's
# `send_frame(frame) -> bool`: write a frame made by `text_frame` now, or say
# it cannot (the app then sends the message the ASGI way).
SEND_FRAME = "livesessions.send_frame"


def text_frame(payload: bytes) -> bytes:
    """A message's wire form: one final, unmasked, uncompressed text frame
    (RFC 6455 §5.2), what a server sends. Made once for a broadcast, written
    as it is to every receiver's transport."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload
