"""Rooms: create, list, read, metadata, validate."""

from __future__ import annotations

from typing import Any

import msgspec

from livesessions.domain.ids import is_room_id
from livesessions.domain.metadata import MetadataError, room_metadata
from livesessions.domain.records import Room
from livesessions.http import params
from livesessions.http.core import HTTPError, JSONResponse, Request, Response, Router
from livesessions.http.validation import ValidationFailed, issue
from livesessions.services import Services

MAX_PAGE = 100


class CreateRoomBody(msgspec.Struct):
    roomLocked: bool = False
    metadata: str | dict[str, Any] | None = None


class MetadataBody(msgspec.Struct):
    metadata: str | dict[str, Any]


def room_not_found() -> HTTPError:
    return HTTPError(404, {"message": "Room Not Found"})


def _metadata(value: str | dict[str, Any] | None) -> dict[str, Any] | None:
    try:
        return room_metadata(value)
    except MetadataError as exc:
        raise ValidationFailed([issue(["metadata"], str(exc))]) from None


def register(router: Router, services: Services) -> None:
    store = services.store

    async def find_room(request: Request, room_id: str) -> Room:
        room = await store.get_room(request.project_id, room_id) if is_room_id(room_id) else None
        if room is None:
            raise room_not_found()
        return room

    async def create_room(request: Request) -> Response:
        body = await request.json_as(CreateRoomBody, empty_ok=True)
        room = await store.create_room(request.project_id, _metadata(body.metadata), body.roomLocked, services.clock())
        return JSONResponse({"message": "Room Created Successfully", "data": {"roomId": room.room_id}}, 201)

    async def get_rooms(request: Request) -> Response:
        limit = params.integer(request, "limit", 10, 1, MAX_PAGE)
        page = params.integer(request, "cursor", 1, 1, 10**9)
        assert limit is not None and page is not None
        rooms, total = await store.list_rooms(request.project_id, (page - 1) * limit, limit)
        return JSONResponse(
            {
                "rooms": rooms,
                "pageSize": limit,
                "current": page,
                "nextCursor": page + 1 if page * limit < total else None,
                "prevCursor": page - 1 if page > 1 else None,
                "count": total,
            }
        )

    async def room_details(request: Request) -> Response:
        room = await find_room(request, request.path_params["roomId"])
        return JSONResponse({"roomId": room.room_id, "roomLocked": room.room_locked, "metadata": room.metadata})

    async def metadata(request: Request) -> Response:
        room_id = request.path_params.get("roomId") or params.required(request, "roomId")
        room = await find_room(request, room_id)
        if request.method == "GET":
            return JSONResponse({"metadata": room.metadata or {}})
        body = await request.json_as(MetadataBody)
        value = _metadata(body.metadata)
        assert value is not None
        if not await store.set_room_metadata(request.project_id, room.room_id, value):
            raise room_not_found()
        return JSONResponse({"metadata": value})

    async def validate_room(request: Request) -> Response:
        room_id = params.required(request, "roomId")
        exists = is_room_id(room_id) and await store.get_room(request.project_id, room_id) is not None
        return JSONResponse({"ok": True, "validated": exists})

    router.add("POST", "/api/v2/sdk/rooms/create-room", create_room)
    router.add("GET", "/api/v2/sdk/rooms/get-rooms", get_rooms)
    router.add("GET", "/api/v2/sdk/rooms/room-details/{roomId}", room_details)
    router.add(("GET", "POST"), "/api/v2/sdk/rooms/metadata/{roomId}", metadata)
    router.add(("GET", "POST"), "/api/v2/sdk/rooms/metadata", metadata)
    router.add("GET", "/api/v2/sdk/validate-room", validate_room)
