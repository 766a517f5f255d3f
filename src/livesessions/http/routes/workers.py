"""The worker API: external media workers take the audio/video part of jobs.

A worker lists pending jobs, claims one (a lease), reports progress (which
renews the lease), and reports completion with where the file is and its
size. A worker silent for longer than the lease loses the job to the queue.
"""

from __future__ import annotations

from typing import Annotated, get_args

import msgspec

from livesessions.domain.egress import EgressJob, EgressType, MediaStatus
from livesessions.domain.ports import EgressJobs
from livesessions.egress.service import EgressService
from livesessions.http.core import Request
from livesessions.http.errors import ErrorMessage
from livesessions.http.fields import EpochMillis, RoomId
from livesessions.http.params import Choice, Integer
from livesessions.http.responses import Out
from livesessions.http.routes.egress import JobId
from livesessions.http.routing import Handler, Operation, PathParam, Reply

TAG = "workers"
V1 = "/api/v1"
# What SQLite can store; the worker API takes no larger size.
SQLITE_INTEGER_MAX = 2**63 - 1

WorkerId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
STATUS = Choice("status", "The media state to list.", get_args(MediaStatus), "pending")
LIMIT = Integer("limit", "How many jobs a page holds.", 50, 1, 500)
JOB_ID = PathParam("jobId")


class ClaimBody(msgspec.Struct):
    workerId: WorkerId


class ProgressBody(msgspec.Struct):
    workerId: WorkerId
    progress: Annotated[int, msgspec.Meta(ge=0, le=100, description="Percent done.")]
    message: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


class CompleteBody(msgspec.Struct):
    workerId: WorkerId
    location: Annotated[str, msgspec.Meta(min_length=1, max_length=2048, description="Where the media file is.")]
    size: Annotated[int, msgspec.Meta(ge=0, le=SQLITE_INTEGER_MAX, description="Bytes.")]


class WorkerJob(Out):
    id: JobId
    roomId: RoomId
    sessionId: str
    type: EgressType
    active: Annotated[bool, msgspec.Meta(description="Whether the recording or livestream is still going on.")]
    startedAt: EpochMillis
    stoppedAt: EpochMillis | None
    rtmpUrls: list[str]
    mediaStatus: Annotated[
        MediaStatus, msgspec.Meta(description="The media part of a job, as external workers see it.")
    ]
    workerId: str | None
    leaseExpiresAt: EpochMillis | None
    progress: Annotated[int, msgspec.Meta(ge=0, le=100)]
    progressMessage: str | None
    mediaLocation: str | None
    mediaSize: Annotated[int, msgspec.Meta(ge=0)] | None


class WorkerJobList(Out):
    jobs: list[WorkerJob]


class WorkerJobReply(Out):
    job: WorkerJob


def job_view(job: EgressJob) -> WorkerJob:
    return WorkerJob(
        id=job.id,
        roomId=job.room_id,
        sessionId=job.session_id,
        type=job.type,
        active=job.active,
        startedAt=job.started_at,
        stoppedAt=job.stopped_at,
        rtmpUrls=job.rtmp_urls,
        mediaStatus=job.media_status,
        workerId=job.worker_id,
        leaseExpiresAt=job.lease_expires_at,
        progress=job.progress,
        progressMessage=job.progress_message,
        mediaLocation=job.media_location,
        mediaSize=job.media_size,
    )


async def list_jobs(request: Request, jobs: EgressJobs) -> WorkerJobList:
    status = STATUS.read(request)
    limit = LIMIT.read(request)
    return WorkerJobList(jobs=[job_view(job) for job in await jobs.media_jobs(request.project_id, status, limit)])


async def claim(request: Request, egress: EgressService, body: ClaimBody) -> WorkerJobReply:
    job = await egress.claim(request.project_id, request.path_params["jobId"], body.workerId)
    return WorkerJobReply(job=job_view(job))


async def progress(request: Request, egress: EgressService, body: ProgressBody) -> WorkerJobReply:
    job = await egress.progress(
        request.project_id, request.path_params["jobId"], body.workerId, body.progress, body.message
    )
    return WorkerJobReply(job=job_view(job))


async def complete(request: Request, egress: EgressService, body: CompleteBody) -> WorkerJobReply:
    job = await egress.complete(
        request.project_id, request.path_params["jobId"], body.workerId, body.location, body.size
    )
    return WorkerJobReply(job=job_view(job))


def _step(name: str, handler: Handler, summary: str) -> Operation:
    return Operation(
        "POST",
        f"{V1}/workers/jobs/{{jobId}}/{name}",
        handler,
        f"{name}WorkerJob",
        summary,
        TAG,
        answer=Reply("The job now."),
        errors={
            404: Reply("No such job in the project.", ErrorMessage),
            409: Reply(
                "The job is claimed by another worker, finished, or no longer claimable; or this worker does "
                "not hold it (its lease may have run out).",
                ErrorMessage,
            ),
        },
        path_params=(JOB_ID,),
    )


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET",
        f"{V1}/workers/jobs",
        list_jobs,
        "listWorkerJobs",
        "Jobs whose media part is in a given state",
        TAG,
        answer=Reply("Jobs, oldest first."),
        query=(STATUS, LIMIT),
    ),
    _step("claim", claim, "Claim a job's media part (a lease, renewed by progress reports)"),
    _step("progress", progress, "Report progress on a claimed job (renews the lease)"),
    _step("complete", complete, "Report a claimed job's media file done"),
)
