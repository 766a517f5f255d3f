"""The live event stream: a project's live sessions as Server-Sent Events.

A snapshot of the live list first, then every event as webhooks get it, and
after each change of a room's counts that room's new list item. Each event
carries its id: a client that reconnects with `Last-Event-ID` gets what it
missed from the durable log (a fresh snapshot if that id is no longer there).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from livesessions.auth.api_keys import ApiKeys
from livesessions.auth.wallet_sign_in import WalletSignIn
from livesessions.domain import events
from livesessions.domain.events import StoredEvent
from livesessions.domain.live import RoomKey
from livesessions.domain.ports import Outbox, Presence
from livesessions.http.core import Request
from livesessions.http.responses import Response, StreamingResponse, encode
from livesessions.http.routes.live_sessions import SDK, TAG
from livesessions.http.routing import Operation, Reply
from livesessions.logs import context
from livesessions.realtime.event_stream import ProjectEvents, RoomChanged, Subscription

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0
# Read back from the log this many events at a time when resuming.
REPLAY_PAGE = 500
UPDATED = "live-session:updated"
REMOVED = "live-session:removed"
# The events after which a room's list item may have changed.
_COUNTED = frozenset({events.PEER_JOINED, events.PEER_LEFT, events.RECORDING_STARTED})


def frame(event: str, data: bytes | str, event_id: str | None = None) -> bytes:
    """One SSE message. `data` is compact JSON: one line."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    body = data.encode() if isinstance(data, str) else data
    return head.encode() + b"data: " + body + b"\n\n"


async def live_events(
    request: Request,
    outbox: Outbox,
    presence: Presence,
    project_events: ProjectEvents,
    api_keys: ApiKeys,
    sign_in: WalletSignIn,
) -> Response:
    project_id = request.project_id
    last_event_id = request.header(b"last-event-id")
    # Looked at again as the stream goes on: a revoked key or an ended
    # account session stops it.
    if request.account is not None:
        token = request.bearer_token

        async def allowed() -> bool:
            return await sign_in.session(token) is not None

    else:
        key = request.header(b"x-api-key")

        async def allowed() -> bool:
            return await api_keys.project_for(key) is not None

    # Subscribed before reading the log: nothing falls between the two (what
    # is in both is skipped by position).
    subscription = project_events.subscribe(project_id)
    try:
        position = await outbox.event_position(project_id, last_event_id) if last_event_id else None
    except BaseException:
        project_events.unsubscribe(subscription)
        raise
    chunks = _stream(project_id, position, outbox, presence, project_events, subscription, allowed)
    headers = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
    return StreamingResponse(chunks, request.receive, b"text/event-stream", headers)


async def _stream(
    project_id: str,
    position: int | None,
    outbox: Outbox,
    presence: Presence,
    project_events: ProjectEvents,
    subscription: Subscription,
    allowed: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    checked = loop.time()
    try:
        if position is None:
            latest = await outbox.latest_event(project_id)
            position = latest.position if latest else 0
            listing = encode({"liveSessions": await presence.live_sessions(project_id)})
            yield frame("snapshot", listing, latest.id if latest else None)
        else:
            while True:
                missed = await outbox.events_after(project_id, position, REPLAY_PAGE)
                if not missed:
                    break
                for chunk in await _frames(project_id, missed, [], presence):
                    yield chunk
                position = missed[-1].position
        while True:
            if not subscription.ready.is_set():
                try:
                    await asyncio.wait_for(subscription.ready.wait(), KEEPALIVE_S)
                except TimeoutError:
                    if not await allowed():
                        return
                    checked = loop.time()
                    yield b": keep-alive\n\n"
                    continue
            if subscription.closed:
                return
            if loop.time() - checked >= KEEPALIVE_S:
                if not await allowed():
                    return
                checked = loop.time()
            if subscription.overflowed.is_set():
                yield frame("overflow", b'{"reason":"the client fell too far behind; reconnect with Last-Event-ID"}')
                return
            taken = subscription.take()
            fresh = [e for e in taken if isinstance(e, StoredEvent) and e.position > position]
            changed = [e.room_id for e in taken if isinstance(e, RoomChanged)]
            if fresh or changed:
                for chunk in await _frames(project_id, fresh, changed, presence):
                    yield chunk
            if fresh:
                position = fresh[-1].position
    except Exception:
        # Once the stream has begun there is no status left to answer with:
        # it ends, and the client resumes with Last-Event-ID (missing nothing).
        log.warning("live event stream ended: a store failed", extra=context(project=project_id), exc_info=True)
    finally:
        project_events.unsubscribe(subscription)


async def _frames(project_id: str, batch: list[StoredEvent], changed: list[str], presence: Presence) -> list[bytes]:
    """The events, then the current list item of each room whose counts they
    may have changed (or its removal from the list)."""
    chunks = [frame(event.event, event.payload, event.id) for event in batch]
    rooms = dict.fromkeys([*(event.room_id for event in batch if event.event in _COUNTED), *changed])
    for room_id in rooms:
        live = await presence.live_session(RoomKey(project_id, room_id))
        if live is not None:
            chunks.append(frame(UPDATED, encode(live)))
        else:
            chunks.append(frame(REMOVED, encode({"roomId": room_id})))
    return chunks


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        f"{SDK}/live-sessions/events",
        live_events,
        "liveSessionEvents",
        "The project's live sessions as they change (Server-Sent Events)",
        TAG,
        auth="key_or_account",
        answer=Reply(
            '`event: snapshot` with `data: {"liveSessions": [...]}` (the live list), then each event as webhooks '
            "get it (`event: peer:joined` and so on, `id:` its event id, `data:` its payload), and after a change "
            f"of a room's counts `event: {UPDATED}` with the room's list item (or `event: {REMOVED}` with "
            '`{"roomId"}` when it left the list). A comment line every 15 s. `Last-Event-ID` resumes after that '
            "event, from the durable log (a fresh snapshot when it is too old). A client that falls more than "
            "`--event-stream-buffer` events behind gets `event: overflow` and is disconnected.",
            media_types=("text/event-stream",),
        ),
        headers=(
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "The id of the last event received: resume after it.",
                "schema": {"type": "string", "maxLength": 64},
            },
        ),
    ),
)
