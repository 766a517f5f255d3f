"""Egress jobs: recordings and livestreams of a room's session.

This service carries no audio or video. Its built-in recorder and livestream
work on what it does carry — the room's timeline of joins, leaves, metadata
changes and data messages — and the media part of each job waits for an
external media worker to claim it (see the worker API).
"""

from __future__ import annotations

from typing import Literal

import msgspec

EgressType = Literal["recording", "livestream"]
EGRESS_TYPES: tuple[EgressType, ...] = ("recording", "livestream")

# The media part of a job, as external workers see it.
MediaStatus = Literal["pending", "claimed", "completed", "cancelled"]


class EgressJob(msgspec.Struct, kw_only=True):
    id: str
    project_id: str
    room_id: str
    session_id: str
    type: EgressType
    active: bool
    started_at: int
    stopped_at: int | None = None
    rtmp_urls: list[str] = []
    # livestream: the secret part of its public playback address
    playback_id: str | None = None
    # recording: bytes of timeline written, final once stopped
    size: int = 0
    media_status: MediaStatus = "pending"
    worker_id: str | None = None
    lease_expires_at: int | None = None
    progress: int = 0
    progress_message: str | None = None
    media_location: str | None = None
    media_size: int | None = None
    # recording: why and when its storage failed (it then ended like a stop);
    # None for a recording that ended normally
    failed_reason: str | None = None
    failed_at: int | None = None
