"""Session history: past and present sessions of a room, their participants,
and the project's totals."""

from __future__ import annotations

import bisect
from typing import Annotated

import msgspec

from livesessions.clock import Clock
from livesessions.domain.ports import History, Rooms
from livesessions.domain.records import Metrics, Participant, SessionRecord
from livesessions.domain.sessions import SessionKeeper
from livesessions.http.core import Request
from livesessions.http.errors import SESSION_NOT_FOUND, Abort, SessionNotFound
from livesessions.http.fields import EpochMillis
from livesessions.http.params import PAGE_CURSOR, Integer, RequiredText
from livesessions.http.responses import Out
from livesessions.http.routes.rooms import NO_SUCH_ROOM, ROOM_ID, find_room
from livesessions.http.routing import Operation, Reply

MAX_PAGE = 100
TAG = "session history"
SDK = "/api/v2/sdk"

LIMIT = Integer("limit", "How many sessions a page holds.", 20, 1, MAX_PAGE)
SESSION_ID = RequiredText("sessionId", "The session's id.")


class SessionPage(Out):
    sessions: list[SessionRecord]
    nextCursor: int | None


class ParticipantList(Out):
    participants: list[Participant]


async def session_details(request: Request, rooms: Rooms, history: History, keeper: SessionKeeper) -> SessionPage:
    room_id = ROOM_ID.read(request)
    limit = LIMIT.read(request)
    before = PAGE_CURSOR.read(request) or None
    await find_room(rooms, request.project_id, room_id)
    # Sessions whose grace just ran out are ended before anyone reads them,
    # not whenever the maintenance task next wakes.
    await keeper.expire()
    sessions, next_cursor = await history.list_sessions(request.project_id, room_id, before, limit)
    return SessionPage(sessions=sessions, nextCursor=next_cursor)


async def participant_list(request: Request, history: History, keeper: SessionKeeper) -> ParticipantList:
    session_id = SESSION_ID.read(request)
    await keeper.expire()
    participants = await history.list_participants(request.project_id, session_id)
    if participants is None:
        raise Abort(SESSION_NOT_FOUND)
    return ParticipantList(participants=participants)


async def metrics(request: Request, history: History, keeper: SessionKeeper, clock: Clock) -> Metrics:
    await keeper.expire()
    return await history.metrics(request.project_id, clock())


class PeersAt(Out):
    at: EpochMillis
    peers: Annotated[int, msgspec.Meta(ge=0)]


class ConcurrentPeers(Out):
    points: Annotated[
        list[PeersAt],
        msgspec.Meta(
            description="One point a minute, oldest first; the last is now. Each counts the peers (not bots) "
            "connected at that instant."
        ),
    ]


HOUR_MS = 3_600_000
MINUTE_MS = 60_000


async def concurrent_peers(request: Request, history: History, clock: Clock) -> ConcurrentPeers:
    now = clock()
    since = now - HOUR_MS
    stints = await history.stints_since(request.project_id, since)
    instants = [now - MINUTE_MS * back for back in range(HOUR_MS // MINUTE_MS, -1, -1)]
    counts = peers_at(stints, instants)
    return ConcurrentPeers(points=[PeersAt(at=at, peers=count) for at, count in zip(instants, counts, strict=True)])


def peers_at(stints: list[tuple[int, int | None]], instants: list[int]) -> list[int]:
    """How many of the (join, leave) stints were going on at each instant:
    joined at or before it and not left at or before it. Sorted once, each
    instant is two bisections, not a pass over every stint."""
    joins = sorted(joined for joined, _ in stints)
    leaves = sorted(left for _, left in stints if left is not None)
    return [bisect.bisect_right(joins, at) - bisect.bisect_right(leaves, at) for at in instants]


def _participants(path: str, operation_id: str, summary: str) -> Operation:
    return Operation(
        "GET",
        path,
        participant_list,
        operation_id,
        summary,
        TAG,
        auth="key_or_account",
        answer=Reply("Every stint of every peer, in join order."),
        errors={404: Reply("No such session in the project.", SessionNotFound)},
        query=(SESSION_ID,),
    )


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        f"{SDK}/rooms/session-details",
        session_details,
        "getSessionDetails",
        "A room's sessions",
        TAG,
        auth="key_or_account",
        answer=Reply("A page of the room's sessions, newest first."),
        errors={404: NO_SUCH_ROOM},
        query=(ROOM_ID, LIMIT, PAGE_CURSOR),
    ),
    _participants(f"{SDK}/rooms/participant-list", "getParticipantList", "Who took part in a session"),
    _participants(
        f"{SDK}/rooms/participant-lists",
        "getParticipantLists",
        "Who took part in a session (alias of participant-list)",
    ),
    Operation(
        "GET",
        f"{SDK}/metrics",
        metrics,
        "getMetrics",
        "The project's totals",
        TAG,
        auth="key_or_account",
        answer=Reply("Totals over every session of the project."),
    ),
    Operation(
        "GET",
        f"{SDK}/metrics/concurrent-peers",
        concurrent_peers,
        "getConcurrentPeers",
        "How many peers were connected, minute by minute over the last hour",
        TAG,
        auth="key_or_account",
        answer=Reply("61 points, a minute apart, the last one now."),
    ),
)
