"""The API reference, the docs page, health and readiness, and the one table
of refusals: in this process, through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from livesessions.app import create_app
from livesessions.config import Settings
from livesessions.domain import errors
from livesessions.http.core import Request
from livesessions.http.errors import STATUS_OF
from livesessions.http.openapi import document_text, openapi_document
from livesessions.http.routes import rooms
from livesessions.services import Services, build_services

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"

Check = Callable[[httpx.AsyncClient, Services], Awaitable[None]]


def serve(tmp_path: Path, check: Check) -> None:
    """Run `check` against a started app of its own."""

    async def run() -> None:
        services = build_services(Settings(data_dir=tmp_path / "data"))
        app = create_app(services)
        await app.startup()
        try:
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as client:
                await check(client, services)
        finally:
            await app.shutdown()

    asyncio.run(run())


def test_the_committed_reference_is_what_the_code_generates() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == document_text(openapi_document()), (
        "docs/openapi.json is out of date: python -m livesessions.http.openapi > docs/openapi.json"
    )


def test_the_served_document_is_the_reference(tmp_path: Path) -> None:
    async def check(client: httpx.AsyncClient, services: Services) -> None:
        answer = await client.get("/openapi.json")
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
        assert answer.json() == openapi_document()

    serve(tmp_path, check)


def test_docs_page_loads_only_what_this_service_serves(tmp_path: Path) -> None:
    async def check(client: httpx.AsyncClient, services: Services) -> None:
        page = await client.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        # Whatever the scripts might ask for, the browser lets them load and
        # fetch only from here.
        assert "default-src 'self'" in page.headers["content-security-policy"]
        referenced = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert referenced, page.text
        for url in referenced:
            assert url.startswith("/") and not url.startswith("//"), f"{url} is not on this origin"
            asset = await client.get(url)
            assert asset.status_code == 200, url
            assert asset.headers["content-type"].startswith(("text/javascript", "text/css")), url
        assert "/openapi.json" in (await client.get("/docs/docs.js")).text
        missing = await client.get("/docs/nothing.js")
        assert missing.status_code == 404 and missing.json() == {"ok": False, "message": "Not Found"}

        # The page people land on links to it.
        assert 'href="/docs"' in (await client.get("/")).text

    serve(tmp_path, check)


def test_health_and_readiness(tmp_path: Path) -> None:
    async def check(client: httpx.AsyncClient, services: Services) -> None:
        alive = await client.get("/healthz")
        assert (alive.status_code, alive.json()) == (200, {"ok": True})
        ready = await client.get("/readyz")
        assert (ready.status_code, ready.json()) == (200, {"ok": True})

        # The writer thread stops (the database still reads): not ready.
        database = services.store.db  # type: ignore[attr-defined]
        database._queue.put(None)
        database._thread.join(timeout=5)
        stalled = await client.get("/readyz")
        assert stalled.status_code == 503 and stalled.json()["failed"] == ["database"]

        services.store.close()  # the database stops answering
        unready = await client.get("/readyz")
        assert unready.status_code == 503
        body = unready.json()
        assert body["ok"] is False and body["failed"] == ["database"] and "database" in body["message"]
        assert (await client.get("/healthz")).status_code == 200

    serve(tmp_path, check)


def test_every_kind_of_refusal_has_one_status() -> None:
    kinds = {
        kind
        for kind in vars(errors).values()
        if isinstance(kind, type) and issubclass(kind, errors.Refused) and kind is not errors.Refused
    }
    assert kinds == set(STATUS_OF)
    assert len(set(STATUS_OF.values())) == len(STATUS_OF)


def test_refusals_are_answered_by_kind(tmp_path: Path) -> None:
    async def check(client: httpx.AsyncClient, services: Services) -> None:
        # The domain's Conflict, as egress raises it: a room that is not live.
        key, _ = await services.api_keys.create(
            (await services.store.project_for_wallet("0x" + "2" * 40, 1)).project_id, "test", 1
        )
        headers = {"x-api-key": key}
        room = (await client.post("/api/v2/sdk/rooms/create-room", headers=headers)).json()["data"]["roomId"]
        token = (await client.post("/api/v2/sdk/create-peer-token", headers=headers, json={"roomId": room})).json()
        started = await client.post(
            "/api/v1/recording/start", headers=headers, json={"roomId": room, "token": token["token"]}
        )
        assert started.status_code == 409
        assert started.json() == {
            "ok": False,
            "message": "the room is not live: only a live room can be recorded or streamed",
        }
        # Unauthorized, from the same place: a token that is not a token.
        forged = await client.post("/api/v1/recording/start", headers=headers, json={"roomId": room, "token": "x"})
        assert forged.status_code == 401 and forged.json()["ok"] is False
        # NotFound from a worker route, and Huddle01's own shape for rooms.
        claim = await client.post("/api/v1/workers/jobs/job_00/claim", headers=headers, json={"workerId": "w"})
        assert (claim.status_code, claim.json()) == (404, {"ok": False, "message": "Job Not Found"})
        unknown = await client.get("/api/v2/sdk/rooms/room-details/abc-defg-hij", headers=headers)
        assert (unknown.status_code, unknown.json()) == (404, {"message": "Room Not Found"})

    serve(tmp_path, check)


def test_a_handler_is_a_plain_function(tmp_path: Path) -> None:
    """Handlers take their dependencies as arguments: one can be called on its own."""

    async def run() -> None:
        services = build_services(Settings(data_dir=tmp_path / "data"))
        try:
            project = await services.store.project_for_wallet("0x" + "3" * 40, 1)
            room = await services.store.create_room(project.project_id, {"a": 1}, True, 1)

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b""}

            request = Request({"type": "http", "headers": [], "query_string": b""}, receive, 1024)
            request.project_id = project.project_id
            request.path_params = {"roomId": room.room_id}
            details = await rooms.room_details(request, services.store)
            assert (details.roomId, details.roomLocked, details.metadata) == (room.room_id, True, {"a": 1})
        finally:
            await services.aclose()

    asyncio.run(run())
