"""The Live Sessions API: which rooms are live, since when, and who is inside."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

import msgspec

from livesessions.domain.errors import NotFound
from livesessions.domain.ids import is_room_id
from livesessions.domain.live import LiveSession, RoomKey
from livesessions.domain.ports import Presence
from livesessions.http.core import Request
from livesessions.http.errors import ErrorMessage
from livesessions.http.fields import EpochMillis
from livesessions.http.params import OptionalInteger, OptionalText
from livesessions.http.responses import Out, Response, encode
from livesessions.http.routing import Operation, PathParam, Reply
from livesessions.http.validation import ValidationFailed, issue

MAX_PAGE = 1000
TAG = "live sessions"
SDK = "/api/v2/sdk"

LIMIT = OptionalInteger("limit", "How many live rooms a page holds.", 1, MAX_PAGE)
CURSOR = OptionalText("cursor", "`nextCursor` of the previous page (opaque; anything else is a 400).")
ROOM_ID = PathParam(
    "roomId", "A room id (`abc-defg-hij`). A malformed one is answered like an unknown room.", "abc-defg-hij"
)
NOT_LIVE = Reply("The room is not live (or unknown).", ErrorMessage)


class LiveSessionList(Out):
    """`nextCursor` is present only when query parameters were given (a paged
    request); null on the last page."""

    liveSessions: list[LiveSession]
    nextCursor: (
        Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9_-]+$", description="Pass as `cursor` for the next page.")]
        | msgspec.UnsetType
        | None
    ) = msgspec.UNSET


class LiveSessionOne(Out):
    liveSessions: Annotated[
        list[LiveSession] | LiveSession,
        msgspec.Meta(
            description="A one-item list; a single object when the request has an `x-sdk-version` header "
            "(what the official server SDK expects)."
        ),
    ]


class LivePeer(Out):
    peerId: str
    joinTime: EpochMillis
    metadata: str


class LiveParticipants(Out):
    """`count` is the number of `participants`: the peers connected now, bots not counted."""

    count: Annotated[int, msgspec.Meta(ge=1)]
    participants: Annotated[list[LivePeer], msgspec.Meta(min_length=1)]


class LiveListings:
    """The whole-list answer, encoded, per project, reused while the project's
    listing version stays the same: the version changes with every join,
    leave or count, so the answer is never stale."""

    def __init__(self) -> None:
        self._answers: dict[str, tuple[int, Response]] = {}

    def get(self, project_id: str, version: int) -> Response | None:
        cached = self._answers.get(project_id)
        return cached[1] if cached is not None and cached[0] == version else None

    def put(self, project_id: str, version: int, live_json: list[bytes]) -> Response:
        """`live_json`: the rooms as a JSON array in pieces (Presence.live_sessions_json)."""
        answer = Response(200, b"".join([b'{"liveSessions":', *live_json, b"}"]))
        self._answers[project_id] = (version, answer)
        return answer


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


async def list_live_sessions(request: Request, presence: Presence, listings: LiveListings) -> Response:
    if not request.query:
        project_id = request.project_id
        version = await presence.listing_version(project_id)
        cached = listings.get(project_id, version)
        return cached or listings.put(project_id, version, await presence.live_sessions_json(project_id))
    limit = LIMIT.read(request)
    cursor = CURSOR.read(request)
    after = decode_cursor(cursor) if cursor else None
    # One extra tells whether there is a next page.
    page = await presence.live_sessions(request.project_id, after, None if limit is None else limit + 1)
    next_cursor = None
    if limit is not None and len(page) > limit:
        page = page[:limit]
        next_cursor = encode_cursor(page[-1].start_time, page[-1].room_id)
    return Response(200, encode(LiveSessionList(liveSessions=page, nextCursor=next_cursor)))


async def get_live_session(request: Request, presence: Presence) -> LiveSessionOne:
    room_id = request.path_params["roomId"]
    live = await presence.live_session(RoomKey(request.project_id, room_id)) if is_room_id(room_id) else None
    if live is None:
        raise NotFound("No live sessions found for this room id")
    # The official SDK's types expect one object; the public docs show a list.
    if request.header(b"x-sdk-version") is not None:
        return LiveSessionOne(liveSessions=live)
    return LiveSessionOne(liveSessions=[live])


async def live_participants(request: Request, presence: Presence) -> LiveParticipants:
    room_id = request.path_params["roomId"]
    peers = await presence.peers(RoomKey(request.project_id, room_id)) if is_room_id(room_id) else None
    if peers is None:
        raise NotFound("Session Not Found")
    return LiveParticipants(
        count=len(peers),
        participants=[LivePeer(peerId=p.peer_id, joinTime=p.join_time, metadata=p.metadata) for p in peers],
    )


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        f"{SDK}/live-sessions",
        list_live_sessions,
        "listLiveSessions",
        "Live rooms of the project",
        TAG,
        auth="key_or_account",
        answer=Reply("Live rooms, oldest session first.", LiveSessionList),
        query=(LIMIT, CURSOR),
        description="Without query parameters every live room is listed and there is no `nextCursor`; with any, "
        "the list is paged and `nextCursor` is given.",
    ),
    Operation(
        "GET",
        f"{SDK}/live-sessions/{{roomId}}",
        get_live_session,
        "getLiveSession",
        "One live room",
        TAG,
        auth="key_or_account",
        answer=Reply("The room is live."),
        errors={404: NOT_LIVE},
        path_params=(ROOM_ID,),
        headers=(
            {
                "name": "x-sdk-version",
                "in": "header",
                "required": False,
                "schema": {"type": "string"},
                "description": "Sent by the official server SDK; when present `liveSessions` is one object instead of "
                "a one-item list.",
            },
        ),
    ),
    Operation(
        "GET",
        f"{SDK}/live-sessions/participants/{{roomId}}",
        live_participants,
        "getLiveParticipants",
        "Peers in a live room",
        TAG,
        auth="key_or_account",
        answer=Reply("The peers connected now (bots excluded)."),
        errors={404: NOT_LIVE},
        path_params=(ROOM_ID,),
    ),
)
