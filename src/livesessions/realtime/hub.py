"""The connections on this node, by room, and fan-out of messages to them.

Sending never blocks the sender: a message goes straight to the peer's socket
when nothing is queued before it, else into the connection's own outbox,
drained by a task of its own while anything is in it; a peer too slow to keep
up is disconnected rather than allowed to hold the room back (or the server's
memory: the outbox is bounded in messages and in bytes).
"""

from __future__ import annotations

import asyncio
import collections
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from livesessions.domain.live import Admission, RoomKey
from livesessions.domain.permissions import BOT_ROLE
from livesessions.realtime.protocol import CloseCode, ServerMessage, encode, text_frame
from livesessions.telemetry import Tally

OUTBOX_LIMIT = 1024
OUTBOX_BYTES_LIMIT = 4 * 1024 * 1024
CLOSE_TOO_SLOW = (CloseCode.TOO_SLOW, "too slow to receive messages")


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


@dataclass(eq=False, slots=True)
class Connection:
    key: RoomKey
    peer_id: str
    role: str
    permissions: dict[str, Any]
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    # Messages waiting for the socket (a plain deque: an asyncio.Queue per
    # peer cost 3 KiB), and the task writing them out, which exists only
    # while there is something to write (`start_writer` makes it).
    outbox: collections.deque[bytes | Close] = field(default_factory=collections.deque)
    writer: asyncio.Task[None] | None = None
    start_writer: Callable[[], None] | None = None
    closing: bool = False
    # Bytes in the outbox not yet handed to the socket.
    queued_bytes: int = 0
    # Once the socket may send (its join is in history): writes a framed
    # message to the transport now, or says it cannot (handshake not done,
    # closing, compression, the peer not reading). A message that finds
    # nothing queued and the writer idle goes this way, with no task switch.
    send_frame: Callable[[bytes], bool] | None = None
    # The writer is handing a message to the socket right now.
    writing: bool = False
    # Counts the messages handed to the socket.
    sent: Tally | None = None
    # For the service's own bots: messages handed over at once, in the same
    # step that sends them to everyone else, instead of queued for a socket.
    sink: Callable[[bytes], None] | None = None
    # Told when the connection is cut off at once (see `abort`), so the
    # member leaves the room now rather than when its socket gives up.
    on_abort: Callable[[int], None] | None = None
    # What it was admitted with and the session it was told it is in: what a
    # scaled-out node puts back in Redis should Redis lose it.
    admission: Admission | None = None
    session_id: str | None = None
    session_start: int | None = None
    # Scaled out: the room event (by its project's sequence) up to which the
    # connection's `joined` already tells; only later events are sent to it.
    seen_events: int = 0

    @property
    def is_bot(self) -> bool:
        return self.role == BOT_ROLE

    def can(self, permission: str) -> bool:
        return bool(self.permissions.get(permission))

    def push(self, message: ServerMessage | bytes, frame: bytes | None = None) -> None:
        """Send a message (`frame`: its wire form, when the caller made it
        once for many receivers)."""
        if self.closing:
            return
        encoded = message if isinstance(message, bytes) else encode(message)
        if self.sink is not None:
            self.sink(encoded)
            return
        if (
            self.send_frame is not None
            and not self.outbox
            and not self.writing
            and self.send_frame(frame if frame is not None else text_frame(encoded))
        ):
            if self.sent is not None:
                self.sent.count += 1
            return
        if len(self.outbox) >= OUTBOX_LIMIT or self.queued_bytes + len(encoded) > OUTBOX_BYTES_LIMIT:
            self.abort(*CLOSE_TOO_SLOW)
            return
        self.queued_bytes += len(encoded)
        self.outbox.append(encoded)
        self._wake()

    def close(self, code: int, reason: str) -> None:
        """Send a close frame after what is already queued; nothing after it."""
        if not self.closing:
            self.closing = True
            if self.sink is None:
                self.outbox.append(Close(code, reason))
                self._wake()

    def abort(self, code: int, reason: str) -> None:
        """End now: what is queued is dropped and the close frame goes next."""
        if self.closing:
            return
        self.closing = True
        if self.sink is None:
            self.outbox.clear()
            self.queued_bytes = 0
            self.outbox.append(Close(code, reason))
            self._wake()
        if self.on_abort is not None:
            self.on_abort(code)

    def _wake(self) -> None:
        if (self.writer is None or self.writer.done()) and self.start_writer is not None:
            self.start_writer()


class Hub:
    def __init__(self) -> None:
        self._rooms: dict[RoomKey, dict[str, Connection]] = {}

    def add(self, connection: Connection) -> Connection | None:
        """Register a connection; returns the one it replaces, if any."""
        room = self._rooms.setdefault(connection.key, {})
        previous = room.get(connection.peer_id)
        room[connection.peer_id] = connection
        return previous

    def remove(self, connection: Connection) -> bool:
        room = self._rooms.get(connection.key)
        if room is None or room.get(connection.peer_id) is not connection:
            return False
        del room[connection.peer_id]
        if not room:
            del self._rooms[connection.key]
        return True

    def find(self, key: RoomKey, peer_id: str) -> Connection | None:
        room = self._rooms.get(key)
        return None if room is None else room.get(peer_id)

    def room(self, key: RoomKey) -> Iterable[Connection]:
        """The room's connections on this node."""
        return self._rooms.get(key, {}).values()

    def connections(self) -> list[Connection]:
        """Every connection on this node."""
        return [connection for room in self._rooms.values() for connection in room.values()]

    def broadcast(
        self,
        key: RoomKey,
        message: ServerMessage,
        exclude: str | None = None,
        only: Callable[[Connection], bool] | None = None,
    ) -> None:
        room = self._rooms.get(key)
        if not room:
            return
        # Encoded and framed once for every receiver.
        encoded = encode(message)
        frame = text_frame(encoded)
        for peer_id, connection in room.items():
            if peer_id != exclude and (only is None or only(connection)):
                connection.push(encoded, frame)

    def close_all(self, code: int, reason: str) -> None:
        for room in self._rooms.values():
            for connection in room.values():
                connection.close(code, reason)
