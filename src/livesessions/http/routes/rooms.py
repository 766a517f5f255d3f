"""Rooms: create, list, read, metadata, validate."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from livesessions.clock import Clock
from livesessions.domain.ids import is_room_id
from livesessions.domain.metadata import MetadataError, room_metadata
from livesessions.domain.ports import Rooms
from livesessions.domain.records import Room
from livesessions.http.core import Request
from livesessions.http.errors import ROOM_NOT_FOUND, Abort, RoomNotFound
from livesessions.http.fields import RoomId, RoomMetadata, RoomMetadataInput
from livesessions.http.params import Integer, RequiredText
from livesessions.http.responses import Out
from livesessions.http.routing import Operation, PathParam, Reply
from livesessions.http.validation import ValidationFailed, issue

MAX_PAGE = 100
TAG = "rooms"

LIMIT = Integer("limit", "How many rooms a page holds.", 10, 1, MAX_PAGE)
PAGE = Integer("cursor", "The page number, from 1 (0, as Huddle01's SDK may send it, is page 1).", 1, 0, 10**9)
ROOM_ID = RequiredText("roomId", "The room's id.", "abc-defg-hij")
PATH_ROOM_ID = PathParam(
    "roomId", "A room id (`abc-defg-hij`). A malformed one is answered like an unknown room.", "abc-defg-hij"
)
NO_SUCH_ROOM = Reply("No such room in the project.", RoomNotFound)


class CreateRoomBody(msgspec.Struct):
    roomLocked: Annotated[
        bool, msgspec.Meta(description="A locked room admits no new peers except admins (default false).")
    ] = False
    metadata: RoomMetadataInput | None = None


class MetadataBody(msgspec.Struct):
    metadata: RoomMetadataInput


class CreatedRoom(Out):
    roomId: RoomId


class RoomCreated(Out):
    message: Literal["Room Created Successfully"]
    data: CreatedRoom


class RoomPage(Out):
    rooms: list[Room]
    pageSize: int
    current: int
    nextCursor: int | None
    prevCursor: int | None
    count: int


class RoomDetails(Out):
    roomId: RoomId
    roomLocked: bool
    metadata: RoomMetadata | None


class MetadataAnswer(Out):
    metadata: RoomMetadata


class RoomValidation(Out):
    ok: Literal[True]
    validated: bool


async def find_room(rooms: Rooms, project_id: str, room_id: str) -> Room:
    """The project's room, or the 404 for a room that is not."""
    room = await rooms.get_room(project_id, room_id) if is_room_id(room_id) else None
    if room is None:
        raise Abort(ROOM_NOT_FOUND)
    return room


def _metadata(value: str | dict[str, Any] | None) -> dict[str, Any] | None:
    try:
        return room_metadata(value)
    except MetadataError as exc:
        raise ValidationFailed([issue(["metadata"], str(exc))]) from None


async def create_room(request: Request, rooms: Rooms, clock: Clock, body: CreateRoomBody) -> RoomCreated:
    room = await rooms.create_room(request.project_id, _metadata(body.metadata), body.roomLocked, clock())
    return RoomCreated(message="Room Created Successfully", data=CreatedRoom(roomId=room.room_id))


async def get_rooms(request: Request, rooms: Rooms) -> RoomPage:
    limit = LIMIT.read(request)
    page = max(1, PAGE.read(request))
    found, total = await rooms.list_rooms(request.project_id, (page - 1) * limit, limit)
    return RoomPage(
        rooms=found,
        pageSize=limit,
        current=page,
        nextCursor=page + 1 if page * limit < total else None,
        prevCursor=page - 1 if page > 1 else None,
        count=total,
    )


async def room_details(request: Request, rooms: Rooms) -> RoomDetails:
    room = await find_room(rooms, request.project_id, request.path_params["roomId"])
    return RoomDetails(roomId=room.room_id, roomLocked=room.room_locked, metadata=room.metadata)


def _room_id(request: Request) -> str:
    """The room, named in the path or (on the query-string routes) by `roomId`."""
    return request.path_params.get("roomId") or ROOM_ID.read(request)


async def get_metadata(request: Request, rooms: Rooms) -> MetadataAnswer:
    room = await find_room(rooms, request.project_id, _room_id(request))
    return MetadataAnswer(metadata=room.metadata or {})


async def set_metadata(request: Request, rooms: Rooms) -> MetadataAnswer:
    # The room first: an unknown room is a 404 whatever the body.
    room = await find_room(rooms, request.project_id, _room_id(request))
    body = await request.json_as(MetadataBody)
    value = _metadata(body.metadata)
    assert value is not None
    if not await rooms.set_room_metadata(request.project_id, room.room_id, value):
        raise Abort(ROOM_NOT_FOUND)
    return MetadataAnswer(metadata=value)


async def validate_room(request: Request, rooms: Rooms) -> RoomValidation:
    room_id = ROOM_ID.read(request)
    exists = is_room_id(room_id) and await rooms.get_room(request.project_id, room_id) is not None
    return RoomValidation(ok=True, validated=exists)


def _room_link(operation_id: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": {"roomId": "$response.body#/data/roomId"}}


def _metadata_operations(path: str, suffix: str) -> tuple[Operation, ...]:
    query = () if "{" in path else (ROOM_ID,)
    path_params = (PATH_ROOM_ID,) if "{" in path else ()
    return (
        Operation(
            "GET",
            path,
            get_metadata,
            f"getRoomMetadata{suffix}",
            "A room's metadata",
            TAG,
            answer=Reply("The metadata ({} when none was set)."),
            errors={404: NO_SUCH_ROOM},
            query=query,
            path_params=path_params,
        ),
        Operation(
            "POST",
            path,
            set_metadata,
            f"updateRoomMetadata{suffix}",
            "Replace a room's metadata",
            TAG,
            answer=Reply("The metadata now stored."),
            errors={404: NO_SUCH_ROOM},
            query=query,
            path_params=path_params,
            reads_body=MetadataBody,
            description="The room is looked up before the body is read: an unknown room is a 404 whatever the body.",
        ),
    )


SDK = "/api/v2/sdk"
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        f"{SDK}/rooms/create-room",
        create_room,
        "createRoom",
        "Create a room",
        TAG,
        status=201,
        answer=Reply(
            "The room was created.",
            links={
                name: _room_link(name)
                for name in (
                    "getRoomDetails",
                    "getRoomMetadata",
                    "updateRoomMetadata",
                    "getSessionDetails",
                    "validateRoom",
                )
            },
        ),
        description="An empty body creates an unlocked room without metadata.",
    ),
    Operation(
        "GET",
        f"{SDK}/rooms/get-rooms",
        get_rooms,
        "getRooms",
        "The project's rooms, a page at a time",
        TAG,
        auth="key_or_account",
        answer=Reply("A page of rooms, newest first."),
        query=(LIMIT, PAGE),
    ),
    Operation(
        "GET",
        f"{SDK}/rooms/room-details/{{roomId}}",
        room_details,
        "getRoomDetails",
        "One room",
        TAG,
        answer=Reply("The room."),
        errors={404: NO_SUCH_ROOM},
        path_params=(PATH_ROOM_ID,),
    ),
    *_metadata_operations(f"{SDK}/rooms/metadata/{{roomId}}", ""),
    *_metadata_operations(f"{SDK}/rooms/metadata", "ByQuery"),
    Operation(
        "GET",
        f"{SDK}/validate-room",
        validate_room,
        "validateRoom",
        "Whether a room exists in the project",
        TAG,
        answer=Reply("`validated` tells whether the project has the room."),
        query=(ROOM_ID,),
    ),
)
