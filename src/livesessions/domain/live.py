"""What presence knows about a room that is live right now, and what a join or
leave changes. These are the values every presence store speaks in."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import msgspec

from livesessions.domain.permissions import BOT_ROLE
from livesessions.domain.values import Count, EpochMillis, PeerId, RoomId


class PeerPresence(msgspec.Struct, rename="camel"):
    """A connected peer as other peers and the participants route see it."""

    peer_id: PeerId
    role: str
    metadata: str
    join_time: EpochMillis


class LiveSession(msgspec.Struct, rename="camel"):
    """One item of the Live Sessions API."""

    room_id: RoomId
    start_time: EpochMillis
    current_peer_count: Count
    livestream_count: Count
    recording_count: Count


class Refusal(Enum):
    """Why a join was refused (each transport says it in its own words)."""

    LOCKED = "locked"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class RoomKey:
    project_id: str
    room_id: str


@dataclass(frozen=True, slots=True)
class Admission:
    """Everything presence needs to decide on one join."""

    peer: PeerPresence
    permissions: dict[str, Any]
    connection_id: str
    room_locked: bool
    max_peers: int | None = None
    lock_room: bool = False
    # The service's own bots (recorder, livestream): never refused.
    internal: bool = False

    @property
    def is_bot(self) -> bool:
        return self.peer.role == BOT_ROLE

    @property
    def is_admin(self) -> bool:
        return bool(self.permissions.get("admin"))


@dataclass(frozen=True, slots=True)
class EndedSession:
    key: RoomKey
    session_id: str
    end_time: int


@dataclass(slots=True)
class JoinOutcome:
    # Set when the join is refused. Nothing else about the room changed,
    # except that `ended` may be set.
    refused: Refusal | None = None
    session_id: str | None = None
    start_time: int | None = None
    started_session: bool = False
    # The previous connection of the same peer, which this join replaces.
    replaced_connection: str | None = None
    # A session whose grace period had run out, found and closed by this join.
    ended: EndedSession | None = None
    # Peers visible to the joiner (other non-bot peers).
    peers: list[PeerPresence] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class LeaveOutcome:
    session_id: str | None
    was_bot: bool
    # True when this leave took the last non-bot peer out: the room stops being
    # listed now, and the session ends unless someone rejoins within grace.
    room_emptied: bool


@dataclass(frozen=True, slots=True)
class Removal:
    """A member taken out of a room by the project (moderation), whatever its connection."""

    peer_id: str
    connection_id: str
    was_bot: bool
