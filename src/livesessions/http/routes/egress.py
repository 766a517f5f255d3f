"""Recordings and livestreams: Huddle01's recorder API, the recordings list,
recording downloads and the livestream's public event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from livesessions.domain.egress import EgressJob
from livesessions.domain.ids import is_room_id
from livesessions.egress.livestream import END
from livesessions.http import params
from livesessions.http.core import (
    JSONResponse,
    Request,
    Response,
    Router,
    StreamingResponse,
    error_message,
)
from livesessions.http.routes.rooms import room_not_found
from livesessions.services import Services

MAX_PAGE = 100
KEEPALIVE_S = 15.0
CHUNK = 64 * 1024

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


class StartBody(msgspec.Struct):
    roomId: str
    token: str
    type: Literal["recording", "livestream"] = "recording"
    rtmpUrls: Annotated[list[Url], msgspec.Meta(max_length=16)] = []


class StopBody(msgspec.Struct):
    roomId: str
    type: Literal["recording", "livestream"] | None = None


def register(router: Router, services: Services) -> None:
    egress = services.egress
    settings = services.settings

    def playback_url(request: Request, job: EgressJob) -> str:
        return f"{settings.base_url}/live/{job.playback_id}"

    def recording_url(request: Request, job: EgressJob) -> str:
        expires = services.clock() // 1000 + int(settings.download_link_ttl)
        signature = services.links.signature(job.id, expires)
        return (f"{settings.base_url}/api/v1/recordings/{job.id}/download"
                f"?expires={expires}&signature={signature}")

    async def require_room(request: Request, room_id: str) -> None:
        if not is_room_id(room_id) or await services.store.get_room(request.project_id, room_id) is None:
            raise room_not_found()

    async def start(request: Request) -> Response:
        body = await request.json_as(StartBody)
        await require_room(request, body.roomId)
        job = await egress.start(request.project_id, body.roomId, body.token, body.type, body.rtmpUrls)
        answer = {"msg": f"{body.type.capitalize()} started", "id": job.id}
        if job.playback_id:
            answer["playbackUrl"] = playback_url(request, job)
        return JSONResponse(answer)

    async def stop(request: Request) -> Response:
        body = await request.json_as(StopBody)
        await require_room(request, body.roomId)
        job = await egress.stop(request.project_id, body.roomId, body.type)
        return JSONResponse({"msg": "Stopped", "type": job.type, "id": job.id})

    async def status(request: Request) -> Response:
        room_id = params.required(request, "roomId")
        await require_room(request, room_id)
        active = egress.status(request.project_id, room_id)
        if not active:
            return JSONResponse({"status": "stopped"})
        first = min(active, key=lambda job: job.started_at)
        answer: dict[str, object] = {"status": "ongoing", "type": first.type, "startTime": first.started_at,
                                     "id": first.id}
        for job in active:
            if job.playback_id:
                answer["playbackUrl"] = playback_url(request, job)
        return JSONResponse(answer)

    async def recordings(request: Request) -> Response:
        session_id = request.query.get("sessionId") or None
        limit = params.integer(request, "limit", 20, 1, MAX_PAGE)
        before = params.integer(request, "cursor", None, 1, 2**62)
        assert limit is not None
        jobs, next_cursor = await services.store.list_recordings(request.project_id, session_id, before, limit)
        items = []
        for job in jobs:
            item: dict[str, object] = {"id": job.id, "recordingUrl": recording_url(request, job),
                                       "recordingSize": job.size}
            if job.media_status == "completed":
                item["mediaUrl"] = job.media_location
                item["mediaSize"] = job.media_size
            if job.failed_reason is not None:
                # The recording ended early because its storage failed; it
                # holds what was written until then.
                item["failedReason"] = job.failed_reason
                item["failedAt"] = job.failed_at
            items.append(item)
        return JSONResponse({"recordings": items, "nextCursor": next_cursor})

    async def download(request: Request) -> Response:
        job_id = request.path_params["jobId"]
        expires = params.integer(request, "expires", 0, 0, 2**62)
        signature = request.query.get("signature", "")
        assert expires is not None
        if not services.links.valid(job_id, expires, signature, services.clock() // 1000):
            raise error_message(403, "This link is not valid or has expired; list the recordings again for a new one")
        job = await services.store.recording(job_id)
        if job is None:
            raise error_message(404, "Recording Not Found")
        path = egress.recording_path(job.id)
        # A failed recording may have no file at all (size 0).
        if job.size > 0 and not await asyncio.to_thread(path.is_file):
            raise error_message(404, "Recording Not Found")
        headers = [(b"content-length", str(job.size).encode()),
                   (b"content-disposition", f'attachment; filename="{job.id}.jsonl"'.encode())]
        return StreamingResponse(_file_chunks(path, job.size), request.receive, b"application/x-ndjson", headers)

    async def watch(request: Request) -> Response:
        playback_id = request.path_params["playbackId"]
        broadcast = egress.broadcast_for(playback_id)
        if broadcast is None:
            job = await services.store.egress_job_by_playback(playback_id)
            if job is None:
                raise error_message(404, "Livestream Not Found")
            raise error_message(410, "This livestream has ended")
        queue = broadcast.watch()

        async def events() -> AsyncIterator[bytes]:
            try:
                yield b": livestream of the room's timeline\n\n"
                while True:
                    try:
                        frame = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if frame == END:
                        yield b"event: end\ndata: {}\n\n"
                        return
                    yield frame
            finally:
                broadcast.unwatch(queue)

        headers = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        return StreamingResponse(events(), request.receive, b"text/event-stream", headers)

    router.add("POST", "/api/v1/recording/start", start)
    router.add("POST", "/api/v1/recording/stop", stop)
    router.add("GET", "/api/v1/recording/status", status)
    router.add("GET", "/api/v2/sdk/recordings", recordings)
    router.add("GET", "/api/v1/recordings/{jobId}/download", download, auth="none")
    router.add("GET", "/live/{playbackId}", watch, auth="none")


async def _file_chunks(path: Path, size: int) -> AsyncIterator[bytes]:
    """Exactly `size` bytes of the file: what was final when it was listed.

    Read on a worker thread, never on the event loop (a slow disk must not
    hold up the rest of the service), a chunk at a time, each read opening
    the file on its own: a download that is abandoned mid-read leaves no
    file open behind it.
    """
    offset = 0
    while offset < size:
        chunk = await asyncio.to_thread(_read_at, path, offset, min(CHUNK, size - offset))
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


def _read_at(path: Path, offset: int, length: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read(length)
