"""The worker API: external media workers take the audio/video part of jobs.

A worker lists pending jobs, claims one (a lease), reports progress (which
renews the lease), and reports completion with where the file is and its
size. A worker silent for longer than the lease loses the job to the queue.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from livesessions.domain.egress import EgressJob
from livesessions.http import params
from livesessions.http.core import JSONResponse, Request, Response, Router
from livesessions.http.validation import ValidationFailed, issue
from livesessions.services import Services

WorkerId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


class ClaimBody(msgspec.Struct):
    workerId: WorkerId


class ProgressBody(msgspec.Struct):
    workerId: WorkerId
    progress: Annotated[int, msgspec.Meta(ge=0, le=100)]
    message: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


class CompleteBody(msgspec.Struct):
    workerId: WorkerId
    location: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
    size: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


STATUSES = ("pending", "claimed", "completed", "cancelled")


def job_view(job: EgressJob) -> dict[str, object]:
    return {
        "id": job.id,
        "roomId": job.room_id,
        "sessionId": job.session_id,
        "type": job.type,
        "active": job.active,
        "startedAt": job.started_at,
        "stoppedAt": job.stopped_at,
        "rtmpUrls": job.rtmp_urls,
        "mediaStatus": job.media_status,
        "workerId": job.worker_id,
        "leaseExpiresAt": job.lease_expires_at,
        "progress": job.progress,
        "progressMessage": job.progress_message,
        "mediaLocation": job.media_location,
        "mediaSize": job.media_size,
    }


def register(router: Router, services: Services) -> None:
    egress = services.egress

    async def list_jobs(request: Request) -> Response:
        status = request.query.get("status", "pending")
        if status not in STATUSES:
            raise ValidationFailed([issue(["status"], f"status must be one of {', '.join(STATUSES)}",
                                          "invalid_enum_value")])
        limit = params.integer(request, "limit", 50, 1, 500)
        assert limit is not None
        jobs = await services.store.media_jobs(request.project_id, status, limit)
        return JSONResponse({"jobs": [job_view(job) for job in jobs]})

    async def claim(request: Request) -> Response:
        body = await request.json_as(ClaimBody)
        job = await egress.claim(request.project_id, request.path_params["jobId"], body.workerId)
        return JSONResponse({"job": job_view(job)})

    async def progress(request: Request) -> Response:
        body = await request.json_as(ProgressBody)
        job = await egress.progress(
                request.project_id, request.path_params["jobId"], body.workerId, body.progress, body.message
            )
        return JSONResponse({"job": job_view(job)})

    async def complete(request: Request) -> Response:
        body = await request.json_as(CompleteBody)
        job = await egress.complete(
                request.project_id, request.path_params["jobId"], body.workerId, body.location, body.size
            )
        return JSONResponse({"job": job_view(job)})

    router.add("GET", "/api/v1/workers/jobs", list_jobs)
    router.add("POST", "/api/v1/workers/jobs/{jobId}/claim", claim)
    router.add("POST", "/api/v1/workers/jobs/{jobId}/progress", progress)
    router.add("POST", "/api/v1/workers/jobs/{jobId}/complete", complete)
