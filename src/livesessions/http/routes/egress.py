"""Recordings and livestreams: Huddle01's recorder API, the recordings list,
recording downloads and the livestream's public event stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from livesessions.clock import Clock
from livesessions.config import Settings
from livesessions.domain.egress import EgressJob, EgressType
from livesessions.domain.errors import Forbidden, Gone, NotFound
from livesessions.domain.ports import EgressJobs, Rooms
from livesessions.egress.links import LinkSigner
from livesessions.egress.livestream import END
from livesessions.egress.service import EgressService
from livesessions.http.core import Request
from livesessions.http.errors import ErrorMessage, RoomNotFound
from livesessions.http.fields import EpochMillis, GivenRoomId
from livesessions.http.params import PAGE_CURSOR, Integer, OptionalText
from livesessions.http.responses import Out, Response, StreamingResponse
from livesessions.http.routes.rooms import NO_SUCH_ROOM, ROOM_ID, find_room
from livesessions.http.routing import Operation, PathParam, Reply

MAX_PAGE = 100
KEEPALIVE_S = 15.0
CHUNK = 64 * 1024
TAG = "recordings"
V1 = "/api/v1"

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
JobId = Annotated[str, msgspec.Meta(pattern="^job_[0-9a-f]+$", description="A job id.")]
Link = Annotated[str, msgspec.Meta(extra_json_schema={"format": "uri"})]

SESSION_ID = OptionalText("sessionId", "Only this session's recordings.")
LIMIT = Integer("limit", "How many recordings a page holds.", 20, 1, MAX_PAGE)
EXPIRES = Integer("expires", "When the link stops working, epoch seconds (part of the signed link).", 0, 0, 2**62)
SIGNATURE = OptionalText("signature", "The link's signature.")


class StartBody(msgspec.Struct):
    roomId: GivenRoomId
    token: Annotated[str, msgspec.Meta(description="A peer token for this room (from create-peer-token).")]
    type: EgressType = "recording"
    rtmpUrls: Annotated[
        list[Url],
        msgspec.Meta(max_length=16, description="Where a livestream should also go (kept for media workers)."),
    ] = []


class StopBody(msgspec.Struct):
    roomId: GivenRoomId
    type: Annotated[
        EgressType | None, msgspec.Meta(description="Which job to stop; needed only when both kinds are active.")
    ] = None


class EgressStarted(Out):
    msg: Literal["Recording started", "Livestream started"]
    id: JobId
    playbackUrl: (
        Annotated[Link, msgspec.Meta(description="Where viewers watch a livestream (livestreams only).")]
        | msgspec.UnsetType
    ) = msgspec.UNSET


class EgressStopped(Out):
    msg: Literal["Stopped"]
    type: EgressType
    id: JobId


class EgressIdle(Out, tag_field="status", tag="stopped"):
    """Nothing is being recorded or streamed."""


class ActiveJob(Out):
    id: JobId
    type: EgressType
    startTime: EpochMillis
    playbackUrl: Annotated[Link, msgspec.Meta(description="A livestream's.")] | msgspec.UnsetType = msgspec.UNSET


class EgressOngoing(Out, tag_field="status", tag="ongoing"):
    """`type`, `startTime` and `id` are those of the job that started first;
    `active` lists every job while a recording and a livestream both run."""

    type: EgressType
    startTime: EpochMillis
    id: JobId
    playbackUrl: (
        Annotated[Link, msgspec.Meta(description="Present while a livestream is active.")] | msgspec.UnsetType
    ) = msgspec.UNSET
    active: Annotated[list[ActiveJob], msgspec.Meta(min_length=2)] | msgspec.UnsetType = msgspec.UNSET


class Recording(Out):
    """`mediaUrl` and `mediaSize` are present once a media worker has completed
    the job; `failedReason` and `failedAt` once the recording failed."""

    id: JobId
    recordingUrl: Annotated[
        Link, msgspec.Meta(description="A signed download link of the timeline recording; it expires.")
    ]
    recordingSize: Annotated[int, msgspec.Meta(ge=0, description="Bytes.")]
    mediaUrl: (
        Annotated[str, msgspec.Meta(description="Where a media worker put the audio/video file.")]
        | msgspec.UnsetType
        | None
    ) = msgspec.UNSET
    mediaSize: Annotated[int, msgspec.Meta(ge=0, description="Bytes.")] | msgspec.UnsetType | None = msgspec.UNSET
    failedReason: (
        Annotated[
            str, msgspec.Meta(description="Why the recording ended early: its storage failed (disk full or stalled).")
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    failedAt: EpochMillis | msgspec.UnsetType | None = msgspec.UNSET


class RecordingPage(Out):
    recordings: Annotated[list[Recording], msgspec.Meta(max_length=MAX_PAGE, description="Newest first.")]
    nextCursor: Annotated[int, msgspec.Meta(ge=1, description="Pass as `cursor` for the next page.")] | None


def playback_url(settings: Settings, job: EgressJob) -> str | msgspec.UnsetType:
    return f"{settings.base_url}/live/{job.playback_id}" if job.playback_id else msgspec.UNSET


async def start(
    request: Request, rooms: Rooms, egress: EgressService, settings: Settings, body: StartBody
) -> EgressStarted:
    await find_room(rooms, request.project_id, body.roomId)
    job = await egress.start(request.project_id, body.roomId, body.token, body.type, body.rtmpUrls)
    started: Literal["Recording started", "Livestream started"] = (
        "Recording started" if body.type == "recording" else "Livestream started"
    )
    return EgressStarted(msg=started, id=job.id, playbackUrl=playback_url(settings, job))


async def stop(request: Request, rooms: Rooms, egress: EgressService, body: StopBody) -> EgressStopped:
    await find_room(rooms, request.project_id, body.roomId)
    # Without a type, every job the room has (Huddle01's SDK cannot name one).
    first, *_ = await egress.stop(request.project_id, body.roomId, body.type)
    return EgressStopped(msg="Stopped", type=first.type, id=first.id)


async def status(
    request: Request, rooms: Rooms, egress: EgressService, settings: Settings
) -> EgressIdle | EgressOngoing:
    room_id = ROOM_ID.read(request)
    await find_room(rooms, request.project_id, room_id)
    active = await egress.status(request.project_id, room_id)
    if not active:
        return EgressIdle()
    jobs = sorted(active, key=lambda job: job.started_at)
    first = jobs[0]
    url: str | msgspec.UnsetType = msgspec.UNSET
    for job in jobs:
        if job.playback_id:
            url = playback_url(settings, job)
    both: list[ActiveJob] | msgspec.UnsetType = msgspec.UNSET
    if len(jobs) > 1:
        both = [
            ActiveJob(id=j.id, type=j.type, startTime=j.started_at, playbackUrl=playback_url(settings, j)) for j in jobs
        ]
    return EgressOngoing(type=first.type, startTime=first.started_at, id=first.id, playbackUrl=url, active=both)


async def recordings(
    request: Request, jobs: EgressJobs, links: LinkSigner, settings: Settings, clock: Clock
) -> RecordingPage:
    session_id = SESSION_ID.read(request)
    limit = LIMIT.read(request)
    before = PAGE_CURSOR.read(request) or None
    found, next_cursor = await jobs.list_recordings(request.project_id, session_id, before, limit)
    expires = clock() // 1000 + int(settings.download_link_ttl)
    items = []
    for job in found:
        item = Recording(
            id=job.id,
            recordingUrl=(
                f"{settings.base_url}/api/v1/recordings/{job.id}/download"
                f"?expires={expires}&signature={links.signature(job.id, expires)}"
            ),
            recordingSize=job.size,
        )
        if job.media_status == "completed":
            item.mediaUrl = job.media_location
            item.mediaSize = job.media_size
        if job.failed_reason is not None:
            # The recording ended early because its storage failed; it holds
            # what was written until then.
            item.failedReason = job.failed_reason
            item.failedAt = job.failed_at
        items.append(item)
    return RecordingPage(recordings=items, nextCursor=next_cursor)


async def download(
    request: Request, jobs: EgressJobs, egress: EgressService, links: LinkSigner, clock: Clock
) -> Response:
    job_id = request.path_params["jobId"]
    expires = EXPIRES.read(request)
    signature = SIGNATURE.read(request) or ""
    if not links.valid(job_id, expires, signature, clock() // 1000):
        raise Forbidden("This link is not valid or has expired; list the recordings again for a new one")
    job = await jobs.recording(job_id)
    if job is None:
        raise NotFound("Recording Not Found")
    path = egress.recording_path(job.id)
    # A failed recording may have no file at all (size 0).
    if job.size > 0 and not await asyncio.to_thread(path.is_file):
        raise NotFound("Recording Not Found")
    headers = [
        (b"content-length", str(job.size).encode()),
        (b"content-disposition", f'attachment; filename="{job.id}.jsonl"'.encode()),
    ]
    return StreamingResponse(_file_chunks(path, job.size), request.receive, b"application/x-ndjson", headers)


async def watch(request: Request, jobs: EgressJobs, egress: EgressService) -> Response:
    playback_id = request.path_params["playbackId"]
    broadcast = await egress.broadcast_for(playback_id)
    if broadcast is None:
        if await jobs.egress_job_by_playback(playback_id) is None:
            raise NotFound("Livestream Not Found")
        raise Gone("This livestream has ended")
    queue = broadcast.watch()

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b": livestream of the room's timeline\n\n"
            while True:
                try:
                    frame = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
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


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        f"{V1}/recording/start",
        start,
        "startRecording",
        "Start a recording or a livestream of a live room",
        TAG,
        answer=Reply("The job started."),
        errors={
            401: Reply("The peer token is invalid or not for this room.", ErrorMessage),
            404: NO_SUCH_ROOM,
            409: Reply(
                "The room is not live (only a live room can be recorded or streamed), or a job of this type "
                "is already active.",
                ErrorMessage,
            ),
        },
    ),
    Operation(
        "POST",
        f"{V1}/recording/stop",
        stop,
        "stopRecording",
        "Stop a room's recording or livestream",
        TAG,
        answer=Reply("The job stopped; without `type`, every job of the room stopped (the earliest started is named)."),
        errors={
            404: Reply(
                "No such room in the project, or nothing of that type is active in it.", RoomNotFound | ErrorMessage
            ),
        },
    ),
    Operation(
        "GET",
        f"{V1}/recording/status",
        status,
        "getRecordingStatus",
        "Whether a room is being recorded or streamed",
        TAG,
        answer=Reply("The room's egress now."),
        errors={404: NO_SUCH_ROOM},
        query=(ROOM_ID,),
    ),
    Operation(
        "GET",
        "/api/v2/sdk/recordings",
        recordings,
        "listRecordings",
        "Finished recordings of the project",
        TAG,
        auth="key_or_account",
        answer=Reply("A page of finished recordings, newest first."),
        query=(SESSION_ID, LIMIT, PAGE_CURSOR),
    ),
    Operation(
        "GET",
        f"{V1}/recordings/{{jobId}}/download",
        download,
        "downloadRecording",
        "Download a recording (a signed link from the recordings list)",
        TAG,
        auth="none",
        answer=Reply(
            'The room\'s timeline as JSON Lines: one `{"t": <epoch ms>, "event": <message as peers got it>}` a line.',
            media_types=("application/x-ndjson",),
            headers={
                "Content-Disposition": {"schema": {"type": "string", "pattern": "^attachment; "}},
                "Content-Length": {"schema": {"type": "integer", "minimum": 0}},
            },
        ),
        errors={
            403: Reply("The link is not valid or has expired.", ErrorMessage),
            404: Reply("No such finished recording.", ErrorMessage),
        },
        query=(EXPIRES, SIGNATURE),
        path_params=(PathParam("jobId"),),
    ),
    Operation(
        "GET",
        "/live/{playbackId}",
        watch,
        "watchLivestream",
        "Watch a livestream",
        TAG,
        auth="none",
        answer=Reply(
            "Server-Sent Events: each `data:` is a message of the room's timeline as peers get it; `event: end` when "
            "the livestream ends; comments keep it alive.",
            media_types=("text/event-stream",),
        ),
        errors={
            404: Reply("No such livestream.", ErrorMessage),
            410: Reply("The livestream has ended.", ErrorMessage),
        },
        path_params=(PathParam("playbackId", "The last part of a livestream's `playbackUrl`."),),
    ),
)
