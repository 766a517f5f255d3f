"""Session history: past and present sessions of a room, their participants,
and the project's totals."""

from __future__ import annotations

from livesessions.domain.ids import is_room_id
from livesessions.http import params
from livesessions.http.core import HTTPError, JSONResponse, Request, Response, Router
from livesessions.http.routes.rooms import room_not_found
from livesessions.services import Services

MAX_PAGE = 100


def register(router: Router, services: Services) -> None:
    store = services.store
    keeper = services.keeper

    async def session_details(request: Request) -> Response:
        room_id = params.required(request, "roomId")
        limit = params.integer(request, "limit", 20, 1, MAX_PAGE)
        before = params.integer(request, "cursor", None, 1, 2**62)
        assert limit is not None
        if not is_room_id(room_id) or await store.get_room(request.project_id, room_id) is None:
            raise room_not_found()
        # Sessions whose grace just ran out are ended before anyone reads them,
        # not whenever the maintenance task next wakes.
        await keeper.expire()
        sessions, next_cursor = await store.list_sessions(request.project_id, room_id, before, limit)
        return JSONResponse({"sessions": sessions, "nextCursor": next_cursor})

    async def participant_list(request: Request) -> Response:
        session_id = params.required(request, "sessionId")
        await keeper.expire()
        participants = await store.list_participants(request.project_id, session_id)
        if participants is None:
            raise HTTPError(404, {"message": "Session Not Found"})
        return JSONResponse({"participants": participants})

    async def metrics(request: Request) -> Response:
        await keeper.expire()
        return JSONResponse(await store.metrics(request.project_id, services.clock()))

    router.add("GET", "/api/v2/sdk/rooms/session-details", session_details)
    router.add("GET", "/api/v2/sdk/rooms/participant-list", participant_list)
    router.add("GET", "/api/v2/sdk/rooms/participant-lists", participant_list)
    router.add("GET", "/api/v2/sdk/metrics", metrics)
