"""What happened to a project's rooms, as webhooks and the live event stream
tell it: event names, payloads, and the exact bytes of a delivery's body.

The stores write an event in the same transaction as the history change it
belongs to (a session's start or end, a peer's stint, an egress job's start
or stop), so there is no second bookkeeping and no event without its change.
"""

from __future__ import annotations

import json
import string
from typing import Any

import msgspec

from livesessions.domain.egress import EgressJob
from livesessions.domain.ids import random_text

MEETING_STARTED = "meeting:started"
MEETING_ENDED = "meeting:ended"
PEER_JOINED = "peer:joined"
PEER_LEFT = "peer:left"
RECORDING_STARTED = "recording:started"
RECORDING_ENDED = "recording:ended"
# Sent only by the test route, to the one webhook named.
WEBHOOK_TEST = "webhook:test"

# The events a webhook may subscribe to (all of them when it names none).
EVENT_NAMES: tuple[str, ...] = (
    MEETING_STARTED,
    MEETING_ENDED,
    PEER_JOINED,
    PEER_LEFT,
    RECORDING_STARTED,
    RECORDING_ENDED,
)

EVENT_ID_PREFIX = "evt_"
_ALNUM = string.ascii_letters + string.digits


def new_event_id() -> str:
    return EVENT_ID_PREFIX + random_text(_ALNUM, 24)


def to_json(value: Any) -> str:
    """What JavaScript's JSON.stringify gives for the same object: compact,
    keys in insertion order, non-ASCII characters as they are. Huddle01's
    WebhookReceiver parses a body and signs JSON.stringify of the result, so
    a body must already be in that form for its signature to verify."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class StoredEvent(msgspec.Struct, frozen=True):
    """An event as the outbox holds it. `position` orders a project's events
    (the live event stream resumes after one); `room_seq` numbers a room's
    events 1, 2, 3… (x-livesessions-sequence). `payload` is already JSON."""

    id: str
    project_id: str
    room_id: str
    event: str
    payload: str
    created_at: int
    position: int
    room_seq: int


def delivery_body(event_id: str, event: str, payload_json: str) -> str:
    """The body of a webhook delivery: `{"id","event","payload"}` in that order."""
    return f'{{"id":{to_json(event_id)},"event":{to_json(event)},"payload":{payload_json}}}'


def recording_location(job_id: str) -> str:
    """Where a recording is downloaded from, relative to the service's URL
    (the link itself must be signed: `GET /api/v2/sdk/recordings` gives one)."""
    return f"/api/v1/recordings/{job_id}/download"


# --- payloads, in the contract's key order ----------------------------------


def meeting_started(session_id: str, room_id: str, created_at: int) -> dict[str, Any]:
    return {"sessionId": session_id, "roomId": room_id, "createdAt": created_at}


def meeting_ended(
    session_id: str, room_id: str, created_at: int, ended_at: int, participants: int, max_participants: int
) -> dict[str, Any]:
    return {
        "sessionId": session_id,
        "roomId": room_id,
        "createdAt": created_at,
        "endedAt": ended_at,
        "duration": max(0, ended_at - created_at),
        "participants": participants,
        "maxParticipants": max_participants,
    }


def peer_joined(
    peer_id: str, session_id: str, room_id: str, joined_at: int, metadata: str, role: str
) -> dict[str, Any]:
    return {
        "id": peer_id,
        "sessionId": session_id,
        "roomId": room_id,
        "joinedAt": joined_at,
        "metadata": metadata,
        "role": role,
    }


def peer_left(
    peer_id: str, session_id: str, room_id: str, joined_at: int, left_at: int, metadata: str, role: str
) -> dict[str, Any]:
    return {
        "id": peer_id,
        "sessionId": session_id,
        "roomId": room_id,
        "leftAt": left_at,
        "duration": max(0, left_at - joined_at),
        "metadata": metadata,
        "role": role,
    }


def egress_job(
    job_id: str,
    room_id: str,
    session_id: str,
    kind: str,
    started_at: int,
    stopped_at: int | None,
    size: int,
    file_location: str,
    rtmp_urls: list[str],
) -> dict[str, Any]:
    """`recording:started` / `recording:ended`: a recording lists its file, a
    livestream its streams (one per RTMP destination). Both lists are empty
    at the start: nothing is written or streamed yet."""
    files: list[dict[str, Any]] = []
    streams: list[dict[str, Any]] = []
    if stopped_at is not None:
        duration = max(0, stopped_at - started_at)
        if kind == "recording":
            files.append({"duration": duration, "size": size, "filename": f"{job_id}.json", "location": file_location})
        else:
            streams.extend(
                {"duration": duration, "url": url, "startedAt": started_at, "endedAt": stopped_at} for url in rtmp_urls
            )
    return {"id": job_id, "roomId": room_id, "sessionId": session_id, "files": files, "streams": streams}


def egress_payload(job: EgressJob) -> dict[str, Any]:
    return egress_job(
        job.id,
        job.room_id,
        job.session_id,
        job.type,
        job.started_at,
        job.stopped_at,
        job.size,
        recording_location(job.id),
        job.rtmp_urls,
    )


def webhook_test(webhook_id: str, now: int) -> dict[str, Any]:
    return {"webhookId": webhook_id, "sentAt": now}
