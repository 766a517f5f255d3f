"""Recording and livestream jobs: start, stop, status, and the bots that do them.

A job's built-in part is a bot member of the room: the recorder writes the
timeline it receives to a file, the livestream publishes it to viewers. Jobs
end when stopped or when their session ends; after a crash, jobs left active
are finalized at the next start with what was written.

A recording whose storage fails (a full, broken or stalled disk) ends like a
stop, stored with why: its bot leaves the room as usual, and the peers see
nothing of it but that the recording stopped. File work never runs on the
event loop (see timeline).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from livesessions.auth.peer_tokens import InvalidPeerToken, PeerTokenCheck
from livesessions.clock import Clock
from livesessions.domain.egress import EGRESS_TYPES, EgressJob, EgressType
from livesessions.domain.errors import Conflict, NotFound, Unauthorized
from livesessions.domain.live import Admission, EndedSession, PeerPresence, RoomKey
from livesessions.domain.permissions import BOT_ROLE, resolve_permissions
from livesessions.domain.ports import EgressJobs, History, Presence
from livesessions.egress import timeline
from livesessions.egress.livestream import Broadcast
from livesessions.egress.timeline import TimelineFile
from livesessions.logs import context
from livesessions.realtime.hub import Connection
from livesessions.realtime.membership import Membership
from livesessions.realtime.protocol import CloseCode

log = logging.getLogger(__name__)

# The service's own recorder and livestream take in everything the room says.
BOT_PERMISSIONS = resolve_permissions(BOT_ROLE, {"canRecvData": True})


@dataclass(eq=False)
class ActiveJob:
    job: EgressJob
    connection: Connection
    timeline: TimelineFile | None = None
    broadcast: Broadcast | None = None

    async def end(self) -> int:
        """Finish the output; the recording's final size. Never raises."""
        if self.broadcast is not None:
            self.broadcast.end()
        return await self.timeline.close() if self.timeline is not None else 0


class RemoteJobs(Protocol):
    """Scaled out: the jobs that run on other nodes (livesessions.cluster.egress)."""

    async def status(self, key: RoomKey) -> list[EgressJob]: ...

    async def stop(self, key: RoomKey, kind: EgressType | None) -> list[EgressJob]: ...

    async def relay(self, playback_id: str) -> Broadcast | None: ...

    async def ended(self, job: EgressJob) -> None: ...


class EgressService:
    def __init__(
        self,
        jobs: EgressJobs,
        history: History,
        presence: Presence,
        membership: Membership,
        tokens: PeerTokenCheck,
        recordings_dir: Path,
        clock: Clock,
        worker_lease_ms: int,
    ) -> None:
        self.jobs = jobs
        self.history = history
        self.presence = presence
        self.membership = membership
        self.tokens = tokens
        self.recordings_dir = recordings_dir
        self.clock = clock
        self.worker_lease_ms = worker_lease_ms
        self._active: dict[tuple[RoomKey, EgressType], ActiveJob | None] = {}
        # Jobs being ended because their recording failed: kept so the tasks
        # are not collected mid-way.
        self._failing: set[asyncio.Task[EgressJob]] = set()
        # Scaled out: jobs of other nodes are reached through this.
        self.remote: RemoteJobs | None = None
        # Told of a room whose list counts changed without an event of their
        # own (a job counted after its start was recorded).
        self.counts_changed: Callable[[RoomKey], None] = lambda key: None

    def recording_path(self, job_id: str) -> Path:
        return self.recordings_dir / f"{job_id}.jsonl"

    # --- start, stop, status ------------------------------------------------

    async def start(
        self, project_id: str, room_id: str, token: str, kind: EgressType, rtmp_urls: list[str]
    ) -> EgressJob:
        key = RoomKey(project_id, room_id)
        try:
            claims = await self.tokens.claims(token, self.clock() // 1000)
        except InvalidPeerToken as exc:
            raise Unauthorized(f"invalid peer token: {exc}") from None
        if claims.project_id != project_id or claims.room_id != room_id:
            raise Unauthorized("the peer token is not for this room")
        session_id = await self.presence.session_of(key)
        if session_id is None:
            raise Conflict("the room is not live: only a live room can be recorded or streamed")
        if (key, kind) in self._active:
            raise Conflict(f"a {kind} is already active in this room")
        # Claimed before the first await, so a concurrent start sees it.
        self._active[(key, kind)] = None
        try:
            return await self._launch(key, session_id, kind, rtmp_urls)
        except BaseException as exc:
            active = self._active.pop((key, kind), None)
            if active is not None:
                if active.timeline is not None:
                    active.timeline.end_writing()  # its writer thread ends too
                if isinstance(exc, Exception):
                    await self._abandon(active)
            raise

    async def _abandon(self, active: ActiveJob) -> None:
        """A start that failed after its bot entered the room: the bot leaves
        and the stored job ends (as failed), so nothing is left active."""
        try:
            await self.membership.depart(active.connection)
            now = self.clock()
            await self.jobs.stop_egress_job(active.job.id, now, 0, "the job could not start", now)
        except Exception:
            log.exception("cleaning up a failed start failed", extra=context(job=active.job.id))

    async def _launch(self, key: RoomKey, session_id: str, kind: EgressType, rtmp_urls: list[str]) -> EgressJob:
        now = self.clock()
        job = EgressJob(
            id="job_" + secrets.token_hex(10),
            project_id=key.project_id,
            room_id=key.room_id,
            session_id=session_id,
            type=kind,
            active=True,
            started_at=now,
            rtmp_urls=rtmp_urls,
            playback_id=secrets.token_urlsafe(24) if kind == "livestream" else None,
        )
        if not await self.jobs.add_egress_job(job):
            raise Conflict(f"a {kind} is already active in this room")
        # Counted only once the job is stored and while the session is still
        # live: a start that fails anywhere changes no count.
        if not await self.presence.count_egress(key, kind):
            await self.jobs.delete_egress_job(job.id)
            raise Conflict("the room is not live: only a live room can be recorded or streamed")
        self.counts_changed(key)

        # The bot writes or publishes each event in the same step that sends it
        # to the peers: once any peer has an event, so does the recording.
        if kind == "livestream":
            broadcast, timeline_file = Broadcast(), None
            sink = broadcast.publish
        else:
            timeline_file = TimelineFile(
                self.recording_path(job.id), self.clock, lambda _reason: self._recording_failed(key, job.id)
            )
            broadcast, sink = None, timeline_file.append
        connection = Connection(
            key=key, peer_id=f"{kind}-{job.id}", role=BOT_ROLE, permissions=BOT_PERMISSIONS, sink=sink
        )
        admission = Admission(
            peer=PeerPresence(peer_id=connection.peer_id, role=BOT_ROLE, metadata="", join_time=now),
            permissions=BOT_PERMISSIONS,
            connection_id=connection.id,
            room_locked=False,
            internal=True,
        )
        self._active[(key, kind)] = ActiveJob(job, connection, timeline_file, broadcast)
        _, persisted = await self.membership.enter(connection, admission)
        await persisted
        log.info(
            f"{kind} started", extra=context(project=key.project_id, room=key.room_id, session=session_id, job=job.id)
        )
        return job

    async def stop(self, project_id: str, room_id: str, kind: EgressType | None) -> list[EgressJob]:
        """Stop the room's job of `kind`, or (None) every job it has: the
        stopped jobs, the earliest started first."""
        key = RoomKey(project_id, room_id)
        kinds: list[EgressType] = [kind] if kind else list(EGRESS_TYPES)
        running = [a for k in kinds if (a := self._active.get((key, k))) is not None]
        if not running and self.remote is not None:
            return await self.remote.stop(key, kind)
        if not running:
            what = kind or "recording or livestream"
            raise NotFound(f"no {what} is active in this room")
        running.sort(key=lambda active: active.job.started_at)
        return [await self._finish(active) for active in running]

    async def status(self, project_id: str, room_id: str) -> list[EgressJob]:
        key = RoomKey(project_id, room_id)
        if self.remote is not None:
            return await self.remote.status(key)
        return [a.job for k in ("recording", "livestream") if (a := self._active.get((key, k))) is not None]

    def running(self, job_id: str) -> ActiveJob | None:
        """The job, if it runs on this node."""
        return next((a for a in self._active.values() if a is not None and a.job.id == job_id), None)

    async def finish(self, active: ActiveJob) -> EgressJob:
        return await self._finish(active)

    def active_count(self, kind: EgressType) -> int:
        """Jobs of this type going on now (or starting)."""
        return sum(1 for (_, k) in self._active if k == kind)

    async def broadcast_for(self, playback_id: str) -> Broadcast | None:
        for active in self._active.values():
            if active is not None and active.job.playback_id == playback_id:
                return active.broadcast
        return None if self.remote is None else await self.remote.relay(playback_id)

    def _recording_failed(self, key: RoomKey, job_id: str) -> None:
        """The recording's file cannot be written: end the job, as a stop would."""
        active = self._active.get((key, "recording"))
        if active is None or active.job.id != job_id:
            return  # already ending; `_finish` stores why
        task = asyncio.ensure_future(self._finish(active))
        self._failing.add(task)
        task.add_done_callback(self._failing.discard)
        task.add_done_callback(_log_if_raised)

    async def _finish(self, active: ActiveJob) -> EgressJob:
        key = active.connection.key
        job = active.job
        if self._active.get((key, job.type)) is not active:
            return job  # someone else is finishing it
        del self._active[(key, job.type)]
        await self.membership.depart(active.connection)
        active.connection.close(CloseCode.NORMAL, "job stopped")
        size = await active.end()
        now = self.clock()
        if active.timeline is not None and active.timeline.failed_reason is not None:
            job.failed_reason = active.timeline.failed_reason
            job.failed_at = active.timeline.failed_at
            # Once per job (here, where every failure ends up); no tokens in it.
            log.error(
                "recording failed and was stopped",
                extra=context(project=key.project_id, room=key.room_id, job=job.id, reason=job.failed_reason),
            )
        await self.jobs.stop_egress_job(job.id, now, size, job.failed_reason, job.failed_at)
        job.active = False
        job.stopped_at = now
        job.size = size
        if self.remote is not None:
            await self.remote.ended(job)
        if job.failed_reason is None:
            log.info(
                f"{job.type} stopped", extra=context(project=key.project_id, room=key.room_id, job=job.id, size=size)
            )
        return job

    async def session_ended(self, ended: EndedSession) -> None:
        """A session is over: so are its jobs."""
        for kind in ("recording", "livestream"):
            active = self._active.get((ended.key, kind))
            if active is not None and active.job.session_id == ended.session_id:
                await self._finish(active)

    async def stop_all(self) -> None:
        # Together: a stalled disk costs the shutdown one close timeout, not one a job.
        await asyncio.gather(*(self._finish(active) for active in list(self._active.values()) if active is not None))
        # Failed recordings being ended: let them be stored as such.
        await asyncio.gather(*self._failing, return_exceptions=True)

    # --- after a crash ------------------------------------------------------

    async def recover(self) -> int:
        """Finalize jobs that were active when the last process stopped."""
        jobs = await self.jobs.active_egress_jobs()
        for job in jobs:
            await self.finalize_left(job)
        return len(jobs)

    async def finalize_left(self, job: EgressJob) -> EgressJob:
        """End a job whose process is gone (a crash, a dead node), with what it wrote."""
        size, written_at, failed = 0, None, None
        if job.type == "recording":
            try:
                size, written_at = await asyncio.to_thread(timeline.recover, self.recording_path(job.id))
            except OSError as exc:
                # Unreadable: the job is still finalized, as failed and
                # empty; the service must start all the same.
                failed = timeline.describe(exc, "the recording could not be read back after a restart")
                log.error(
                    "recording could not be recovered",
                    extra=context(project=job.project_id, room=job.room_id, job=job.id, reason=failed),
                )
        ended_at = await self.history.session_end_time(job.session_id)
        stopped_at = max(job.started_at, written_at or ended_at or job.started_at)
        await self.jobs.stop_egress_job(job.id, stopped_at, size, failed, stopped_at if failed else None)
        job.active, job.stopped_at, job.size = False, stopped_at, size
        job.failed_reason, job.failed_at = failed, stopped_at if failed else None
        return job

    # --- external media workers ---------------------------------------------

    async def claim(self, project_id: str, job_id: str, worker_id: str) -> EgressJob:
        now = self.clock()
        return _worker_result(
            await self.jobs.update_media(
                project_id,
                job_id,
                worker_id,
                now,
                {"media_status": "claimed", "worker_id": worker_id, "lease_expires_at": now + self.worker_lease_ms},
                claim=True,
            )
        )

    async def progress(
        self, project_id: str, job_id: str, worker_id: str, percent: int, message: str | None
    ) -> EgressJob:
        now = self.clock()
        return _worker_result(
            await self.jobs.update_media(
                project_id,
                job_id,
                worker_id,
                now,
                {"progress": percent, "progress_message": message, "lease_expires_at": now + self.worker_lease_ms},
            )
        )

    async def complete(self, project_id: str, job_id: str, worker_id: str, location: str, size: int) -> EgressJob:
        return _worker_result(
            await self.jobs.update_media(
                project_id,
                job_id,
                worker_id,
                self.clock(),
                {
                    "media_status": "completed",
                    "progress": 100,
                    "media_location": location,
                    "media_size": size,
                    "lease_expires_at": None,
                },
            )
        )

    async def release_silent_workers(self) -> int:
        return await self.jobs.release_expired_leases(self.clock())


def _log_if_raised(task: asyncio.Task[EgressJob]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("ending a failed recording failed", exc_info=exc)


def _worker_result(result: EgressJob | str) -> EgressJob:
    if isinstance(result, EgressJob):
        return result
    raise {
        "missing": NotFound("Job Not Found"),
        "taken": Conflict("the job is claimed by another worker, finished, or no longer claimable"),
        "not-claimed": Conflict("this worker does not hold the job (its lease may have run out)"),
    }[result]
