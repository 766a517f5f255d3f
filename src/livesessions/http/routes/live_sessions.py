"""The Live Sessions API: which rooms are live, since when, and who is inside."""

from __future__ import annotations

import base64
import binascii

from livesessions.domain.ids import is_room_id
from livesessions.domain.live import RoomKey
from livesessions.http import params
from livesessions.http.core import JSONResponse, Request, Response, Router, error_message
from livesessions.http.validation import ValidationFailed, issue
from livesessions.services import Services

MAX_PAGE = 1000


def encode_cursor(start_time: int, room_id: str) -> str:
    return base64.urlsafe_b64encode(f"{start_time}:{room_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """A place in the oldest-first order: (start_time, room_id)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        start, room_id = raw.split(":", 1)
        return int(start), room_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValidationFailed([issue(["cursor"], "cursor is not one this API handed out")]) from None


def register(router: Router, services: Services) -> None:
    presence = services.presence
    # The whole-list answer, encoded, per project: (listing version, response).
    # The version changes with every join, leave or count, so this is never stale.
    answers: dict[str, tuple[int, Response]] = {}

    async def list_live_sessions(request: Request) -> Response:
        if not request.query:
            project_id = request.project_id
            version = await presence.listing_version(project_id)
            cached = answers.get(project_id)
            if cached is None or cached[0] != version:
                body = JSONResponse({"liveSessions": await presence.live_sessions(project_id)})
                answers[project_id] = cached = (version, body)
            return cached[1]
        limit = params.integer(request, "limit", None, 1, MAX_PAGE)
        cursor = request.query.get("cursor")
        after = decode_cursor(cursor) if cursor else None
        # One extra tells whether there is a next page.
        page = await presence.live_sessions(request.project_id, after, None if limit is None else limit + 1)
        next_cursor = None
        if limit is not None and len(page) > limit:
            page = page[:limit]
            next_cursor = encode_cursor(page[-1].start_time, page[-1].room_id)
        return JSONResponse({"liveSessions": page, "nextCursor": next_cursor})

    async def get_live_session(request: Request) -> Response:
        room_id = request.path_params["roomId"]
        live = await presence.live_session(RoomKey(request.project_id, room_id)) if is_room_id(room_id) else None
        if live is None:
            raise error_message(404, "No live sessions found for this room id")
        # The official SDK's types expect one object; the public docs show a list.
        if request.header(b"x-sdk-version") is not None:
            return JSONResponse({"liveSessions": live})
        return JSONResponse({"liveSessions": [live]})

    async def live_participants(request: Request) -> Response:
        room_id = request.path_params["roomId"]
        peers = await presence.peers(RoomKey(request.project_id, room_id)) if is_room_id(room_id) else None
        if peers is None:
            raise error_message(404, "Session Not Found")
        return JSONResponse(
            {
                "count": len(peers),
                "participants": [{"peerId": p.peer_id, "joinTime": p.join_time, "metadata": p.metadata} for p in peers],
            }
        )

    router.add("GET", "/api/v2/sdk/live-sessions", list_live_sessions)
    router.add("GET", "/api/v2/sdk/live-sessions/{roomId}", get_live_session)
    router.add("GET", "/api/v2/sdk/live-sessions/participants/{roomId}", live_participants)
