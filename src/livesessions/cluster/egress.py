"""Recordings and livestreams when nodes are many.

A job runs on the node that started it: its bot is a member there, its
recording is written there (to the recordings directory, which every node
must share to serve downloads). The other nodes reach it through a channel in
Redis: a stop asks the node running the job and waits for its answer; a
livestream viewer on another node is served by a relay there, fed by the
room's events as every node receives them. When a node dies, the node that
reaps its members finalizes its jobs, with what the recording holds, as a
restart does on one node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import msgspec
from redis.asyncio import Redis

from livesessions.cluster.fanout import RedisFanout
from livesessions.domain.egress import EgressJob, EgressType
from livesessions.domain.errors import NotFound, Unavailable
from livesessions.domain.live import RoomKey
from livesessions.domain.permissions import BOT_ROLE
from livesessions.domain.ports import EgressJobs
from livesessions.egress.livestream import Broadcast
from livesessions.egress.service import BOT_PERMISSIONS, EgressService
from livesessions.realtime.hub import Connection
from livesessions.stores.redis_presence import Departure, RedisPresence

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 5.0
# An active job whose bot is in no room is finalized when two sweeps this far
# apart find it so (its node died and the reaper did not get to it).
ORPHAN_SWEEP_S = 30.0


class _Request(msgspec.Struct, tag_field="op"):
    job: str


class _Stop(_Request, tag="stop"):
    reply: str


class _Ended(_Request, tag="ended"):
    pass


class _Stopped(msgspec.Struct):
    job: EgressJob | None
    error: str | None = None


_decode_request = msgspec.json.Decoder(_Stop | _Ended).decode
_decode_stopped = msgspec.json.Decoder(_Stopped).decode


def bot_peer_id(kind: EgressType, job_id: str) -> str:
    return f"{kind}-{job_id}"


class ClusterEgress:
    def __init__(
        self,
        service: EgressService,
        jobs: EgressJobs,
        presence: RedisPresence,
        redis: Redis,
        subscriptions: Redis,
        fanout: RedisFanout,
    ) -> None:
        self.service = service
        self.jobs = jobs
        self.presence = presence
        self.redis = redis
        self.subscriptions = subscriptions
        self.fanout = fanout
        self.channel = presence.events_pattern.replace("{*}:events", "{g}:egress")
        self._relays: dict[str, tuple[Broadcast, Connection]] = {}
        self._suspects: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._requests: set[asyncio.Task[None]] = set()
        self._ready = asyncio.Event()
        service.remote = self

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._sweep())]
        await asyncio.wait_for(self._ready.wait(), 10)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for broadcast, connection in self._relays.values():
            broadcast.end()
            self.fanout.hub.remove(connection)
        self._relays.clear()

    # --- RemoteJobs -------------------------------------------------------------

    async def status(self, key: RoomKey) -> list[EgressJob]:
        return [
            job
            for job in await self.jobs.active_egress_jobs()
            if job.project_id == key.project_id and job.room_id == key.room_id
        ]

    async def stop(self, key: RoomKey, kind: EgressType | None) -> list[EgressJob]:
        running = [job for job in await self.status(key) if kind is None or job.type == kind]
        if not running:
            raise NotFound(f"no {kind or 'recording or livestream'} is active in this room")
        running.sort(key=lambda job: job.started_at)
        return [await self._stop_one(key, job) for job in running]

    async def _stop_one(self, key: RoomKey, job: EgressJob) -> EgressJob:
        """Ask the node running the job to stop it, and wait for its answer."""
        reply = f"{self.channel}:reply:{secrets.token_hex(8)}"
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(reply)
            await self.redis.publish(self.channel, msgspec.json.encode(_Stop(job=job.id, reply=reply)))
            answer = await asyncio.wait_for(_first(pubsub), STOP_TIMEOUT_S)
        except TimeoutError:
            answer = None
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
        if answer is not None:
            stopped = _decode_stopped(answer)
            if stopped.job is not None:
                return stopped.job
        # No node runs it: its node is gone (or going); finish it here.
        if not await self.presence.bot_present(key, bot_peer_id(job.type, job.id)):
            current = await self._active_job(job.id)
            return job if current is None else await self._finalize(current)
        raise Unavailable("the node running this job did not answer; retry shortly")

    async def relay(self, playback_id: str) -> Broadcast | None:
        job = await self.jobs.egress_job_by_playback(playback_id)
        if job is None or not job.active:
            return None
        found = self._relays.get(job.id)
        if found is not None:
            return found[0]
        broadcast = Broadcast()
        key = RoomKey(job.project_id, job.room_id)
        connection = Connection(
            key=key,
            peer_id=f"relay-{job.id}",
            role=BOT_ROLE,
            permissions=BOT_PERMISSIONS,
            sink=broadcast.publish,
        )
        # Only what happens from now on: a viewer watches from when it starts.
        connection.seen_events = self.fanout.received_up_to(job.project_id)
        self.fanout.hub.add(connection)
        self._relays[job.id] = (broadcast, connection)
        return broadcast

    async def ended(self, job: EgressJob) -> None:
        self._end_relay(job.id)
        try:
            await self.redis.publish(self.channel, msgspec.json.encode(_Ended(job=job.id)))
        except Exception:  # noqa: BLE001 - the relays also end when they find the job over
            log.warning("could not tell the other nodes a job ended", extra={"job": job.id})

    # --- dead nodes -------------------------------------------------------------

    async def bot_departed(self, departure: Departure) -> None:
        """A recording's or livestream's bot was reaped with its node: finish the job."""
        kind, _, job_id = departure.peer_id.partition("-")
        if kind not in ("recording", "livestream") or not job_id:
            return
        job = await self._active_job(job_id)
        if job is not None:
            await self._finalize(job)

    async def _active_job(self, job_id: str) -> EgressJob | None:
        return next((job for job in await self.jobs.active_egress_jobs() if job.id == job_id), None)

    async def _finalize(self, job: EgressJob) -> EgressJob:
        finished = await self.service.finalize_left(job)
        log.info("finalized a job whose node is gone", extra={"job": job.id, "room": job.room_id})
        await self.ended(finished)
        return finished

    async def _sweep(self) -> None:
        """Finalize active jobs whose bot is in no room (twice in a row)."""
        while True:
            await asyncio.sleep(ORPHAN_SWEEP_S)
            try:
                suspects = set()
                active = await self.jobs.active_egress_jobs()
                # Relays of jobs that ended, should their "ended" have been missed.
                for job_id in set(self._relays) - {job.id for job in active}:
                    self._end_relay(job_id)
                for job in active:
                    if self.service.running(job.id) is not None:
                        continue
                    key = RoomKey(job.project_id, job.room_id)
                    if not await self.presence.bot_present(key, bot_peer_id(job.type, job.id)):
                        if job.id in self._suspects:
                            await self._finalize(job)
                        else:
                            suspects.add(job.id)
                self._suspects = suspects
            except Exception:
                log.warning("the sweep for jobs of dead nodes failed", exc_info=True)

    # --- requests from other nodes ---------------------------------------------

    async def _listen(self) -> None:
        while True:
            pubsub = self.subscriptions.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._ready.set()
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message["type"] == "message":
                        # Each on its own: one slow stop does not hold up the others.
                        task = asyncio.get_running_loop().create_task(self._on_request(message["data"]))
                        self._requests.add(task)
                        task.add_done_callback(self._requests.discard)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - reconnect whatever broke
                log.warning("egress requests from Redis interrupted; reconnecting")
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(0.5)

    async def _on_request(self, data: str | bytes) -> None:
        try:
            request = _decode_request(data)
        except msgspec.ValidationError:
            log.warning("an unreadable egress request was ignored")
            return
        if isinstance(request, _Ended):
            self._end_relay(request.job)
            return
        active = self.service.running(request.job)
        if active is None:
            return  # another node's, or already over
        try:
            job = await self.service.finish(active)
            answer = _Stopped(job=job)
        except Exception as exc:
            log.exception("stopping a job for another node failed")
            answer = _Stopped(job=None, error=str(exc))
        await self.redis.publish(request.reply, msgspec.json.encode(answer))

    def _end_relay(self, job_id: str) -> None:
        found = self._relays.pop(job_id, None)
        if found is not None:
            broadcast, connection = found
            broadcast.end()
            self.fanout.hub.remove(connection)


async def _first(pubsub: object) -> str | bytes:
    while True:
        message = await pubsub.get_message(timeout=None)  # type: ignore[attr-defined]
        if message is not None and message["type"] == "message":
            data: str | bytes = message["data"]
            return data
