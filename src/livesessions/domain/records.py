"""Durable records as clients see them: rooms, past sessions, participants."""

from __future__ import annotations

from typing import Any

import msgspec

from livesessions.domain.values import Count, EpochMillis, Millis, PeerId, RoomId, SessionId


class Room(msgspec.Struct, rename="camel"):
    room_id: RoomId
    created_at: EpochMillis
    room_locked: bool
    metadata: dict[str, Any] | None


class SessionRecord(msgspec.Struct, rename="camel"):
    session_id: SessionId
    start_time: EpochMillis
    end_time: EpochMillis | None


class Participant(msgspec.Struct, rename="camel", omit_defaults=True):
    peer_id: PeerId
    join_time: EpochMillis
    metadata: str
    # Absent (not null) while the peer is still in the session.
    exit_time: EpochMillis | msgspec.UnsetType = msgspec.UNSET


class Metrics(msgspec.Struct, rename="camel"):
    total_sessions: Count
    total_duration: Millis
    total_users: Count
    recording_count: Count
    livestream_count: Count


class Project(msgspec.Struct):
    project_id: str
    wallet_address: str
    created_at: int


class ApiKeyRecord(msgspec.Struct, rename="camel"):
    id: str
    name: str
    masked_key: str
    created_at: EpochMillis
    last_used_at: EpochMillis | None
