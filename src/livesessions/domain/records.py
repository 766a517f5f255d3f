"""Durable records as clients see them: rooms, past sessions, participants."""

from __future__ import annotations

from typing import Any

import msgspec


class Room(msgspec.Struct, rename="camel"):
    room_id: str
    created_at: int
    room_locked: bool
    metadata: dict[str, Any] | None


class SessionRecord(msgspec.Struct, rename="camel"):
    session_id: str
    start_time: int
    end_time: int | None


class Participant(msgspec.Struct, rename="camel", omit_defaults=True):
    peer_id: str
    join_time: int
    metadata: str
    exit_time: int | None = None


class Metrics(msgspec.Struct, rename="camel"):
    total_sessions: int
    total_duration: int
    total_users: int
    recording_count: int
    livestream_count: int


class Project(msgspec.Struct):
    project_id: str
    wallet_address: str
    created_at: int


class ApiKeyRecord(msgspec.Struct, rename="camel"):
    id: str
    name: str
    masked_key: str
    created_at: int
    last_used_at: int | None
