"""Moderation, beyond Huddle01's API (as LiveKit and 100ms have it): end a
live session for everyone, or remove one peer."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from livesessions.domain.errors import NotFound
from livesessions.domain.ids import is_room_id
from livesessions.domain.live import RoomKey
from livesessions.domain.ports import Rooms
from livesessions.http.core import Request
from livesessions.http.errors import ErrorMessage
from livesessions.http.responses import Out
from livesessions.http.routes.live_sessions import NOT_LIVE, ROOM_ID, SDK, TAG
from livesessions.http.routing import Operation, PathParam, Reply
from livesessions.realtime.membership import Membership

PEER_ID = PathParam("peerId", "The peer's id, as its `joined` and the participants route show it.")
PEER_NOT_FOUND = "Peer Not Found"


class EndBody(msgspec.Struct):
    lock: Annotated[bool, msgspec.Meta(description="Leave the room locked (admins may still join).")] = False


class Done(Out):
    ok: Literal[True]


async def end_live_session(request: Request, rooms: Rooms, membership: Membership, body: EndBody) -> Done:
    room_id = request.path_params["roomId"]
    room = await rooms.get_room(request.project_id, room_id) if is_room_id(room_id) else None
    if room is None:
        raise NotFound("No live sessions found for this room id")
    if body.lock:
        # Locked first: nobody gets back in between.
        await rooms.set_room_locked(request.project_id, room_id, True)
    if not await membership.end_session(RoomKey(request.project_id, room_id)):
        raise NotFound("No live sessions found for this room id")
    return Done(ok=True)


async def remove_peer(request: Request, membership: Membership) -> Done:
    room_id, peer_id = request.path_params["roomId"], request.path_params["peerId"]
    if not is_room_id(room_id) or not await membership.remove(RoomKey(request.project_id, room_id), peer_id):
        raise NotFound(PEER_NOT_FOUND)
    return Done(ok=True)


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        f"{SDK}/live-sessions/{{roomId}}/end",
        end_live_session,
        "endLiveSession",
        "End a live session for everyone",
        TAG,
        answer=Reply(
            "Every peer was disconnected (close code 4010), the session ended now (no grace period) and its "
            "recordings and livestreams stopped; with `lock`, the room stays locked."
        ),
        errors={404: NOT_LIVE},
        path_params=(ROOM_ID,),
    ),
    Operation(
        "POST",
        f"{SDK}/live-sessions/{{roomId}}/peers/{{peerId}}/remove",
        remove_peer,
        "removePeer",
        "Remove one peer from a live room",
        TAG,
        answer=Reply("The peer was disconnected (close code 4011) and left the room now."),
        errors={404: Reply("The peer is not in the room (or the room is unknown).", ErrorMessage)},
        path_params=(ROOM_ID, PEER_ID),
    ),
)
