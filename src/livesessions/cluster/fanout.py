"""Room events between nodes, through Redis.

The presence scripts publish each join, leave, metadata change, replacement
and session end on the project's channel in the same atomic step that makes
it (livesessions.stores.redis_presence); data messages are published on the
same channel by `data`. Every node subscribes to all projects' channels and
hands each event to its own connections in that room, so every member, on
whichever node, sees a room's events in the one order Redis gave them.

A joiner is told the room in its `joined`, as of the project's event number
its join returned: it is handed only later events. Events this node received
before the joiner was attached are kept for a moment (`RECENT` per project)
and replayed to it, so none falls between the two.

Pub/sub keeps nothing for a subscriber that is not connected. A node whose
subscription was cut (a network blip, Redis dropping a slow subscriber) finds
what it missed in the project's log in Redis when it subscribes again, or
when the next event's number shows a gap; only events older than the log
(about EVENT_LOG_LENGTH per project) are lost, and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import orjson
from redis.asyncio import Redis

from livesessions.domain.live import EndedSession, JoinOutcome, PeerPresence, Removal, RoomKey
from livesessions.realtime import protocol
from livesessions.realtime.fanout import receives_data
from livesessions.realtime.hub import Connection, Hub
from livesessions.realtime.protocol import EVICTION_CLOSE, CloseCode, text_frame
from livesessions.stores.redis_presence import (
    DataEvent,
    EvictedEvent,
    MetadataUpdatedEvent,
    PeerJoinedEvent,
    PeerLeftEvent,
    RedisPresence,
    ReplacedEvent,
    RoomEvent,
    SessionEndedEvent,
    decode_event,
)
from livesessions.telemetry import Telemetry

log = logging.getLogger(__name__)

# Events kept per project for joiners attached after this node received them.
RECENT = 256
RECONNECT_DELAY_MAX = 1.0

SessionEndListener = Callable[[EndedSession], Awaitable[None]]


@dataclass(slots=True)
class _Stream:
    """What this node received of one project's events."""

    last: int = 0
    recent: deque[tuple[RoomEvent, bytes | None]] = field(default_factory=lambda: deque(maxlen=RECENT))


class RedisFanout:
    def __init__(self, hub: Hub, presence: RedisPresence, redis: Redis, telemetry: Telemetry) -> None:
        self.hub = hub
        self._presence = presence
        self._redis = redis
        self._telemetry = telemetry
        self._streams: dict[str, _Stream] = {}
        # Told of every session that ends, on every node (the node running a
        # session's recording stops it).
        self.session_end_listeners: list[SessionEndListener] = []
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_gap_log = 0.0
        # Which Redis the events came from (see `_resume`).
        self._epoch: str | None = None

    # --- lifecycle ------------------------------------------------------------

    async def start(self, timeout: float = 10.0) -> None:
        """Subscribe; returns once events are being received."""
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait_for(self._subscribed.wait(), timeout)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- the Fanout port ------------------------------------------------------

    def attach(self, connection: Connection, outcome: JoinOutcome) -> Connection | None:
        replaced = self.hub.add(connection)
        seen = getattr(outcome, "event_seq", 0)
        connection.seen_events = seen
        stream = self._streams.get(connection.key.project_id)
        if stream is not None and stream.last > seen:
            for event, encoded in list(stream.recent):
                if event.seq <= seen or event.room != connection.key.room_id:
                    continue
                if isinstance(event, ReplacedEvent | EvictedEvent):
                    # Replaced or taken out before it was even attached.
                    if event.conn == connection.id:
                        self._close(connection, event)
                else:
                    self._hand(connection, event, encoded)
        return replaced

    def detach(self, connection: Connection) -> bool:
        return self.hub.remove(connection)

    # Joins, leaves and metadata changes are published by presence itself,
    # atomically with the change: nothing to add here.
    def peer_joined(self, key: RoomKey, peer: PeerPresence) -> None:
        pass

    def peer_left(self, key: RoomKey, peer_id: str) -> None:
        pass

    def metadata_updated(self, key: RoomKey, peer_id: str, metadata: str) -> None:
        pass

    async def peer_gone(self, key: RoomKey, peer_id: str, connection_id: str, session_id: str | None, at: int) -> None:
        await self._presence.announce_left(key, peer_id, connection_id, session_id, at)

    # Presence publishes an "evicted" event: the node holding the connection closes it.
    def evicted(self, key: RoomKey, removal: Removal, why: str) -> None:
        pass

    async def data(self, key: RoomKey, message: protocol.Data, recipients: set[str] | None) -> None:
        to = b"null" if recipients is None else orjson.dumps(sorted(recipients))
        await self._presence.publish_data(key, message.sender, to, protocol.encode(message))

    # --- receiving ------------------------------------------------------------

    def received_up_to(self, project_id: str) -> int:
        """The last of the project's events this node received."""
        stream = self._streams.get(project_id)
        return 0 if stream is None else stream.last

    def forget_received(self) -> None:
        """Forget what was received (Redis restarted: sequences start again)."""
        self._streams.clear()
        for connection in self.hub.connections():
            connection.seen_events = 0

    async def _run(self) -> None:
        delay = 0.05
        pattern = self._presence.events_pattern
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(pattern)
                # Subscribed: nothing published from now on is missed, and
                # what was published while the subscription was down is in
                # the projects' logs.
                await self._resume()
                self._subscribed.set()
                delay = 0.05
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is not None and message["type"] == "pmessage":
                        await self._receive(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect whatever broke
                log.warning("room events from Redis interrupted; reconnecting", extra={"error": repr(exc)})
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_DELAY_MAX)

    async def _resume(self) -> None:
        """After (re)subscribing: catch up on what the logs hold past what was
        received, or, if this is not the Redis it was (it came back empty,
        counting from 1 again), start over."""
        epoch = await self._presence.epoch()
        if epoch != self._epoch:
            if self._streams:
                log.info("Redis is not the one room events came from before; starting over")
            self.forget_received()
            self._epoch = epoch
            return
        for project_id in list(self._streams):
            await self._catch_up(project_id, None)

    async def _receive(self, channel: str | bytes, data: str | bytes) -> None:
        name = channel if isinstance(channel, str) else channel.decode()
        project_id = name[name.index("{") + 1 : name.rindex("}")]
        try:
            event = decode_event(data)
        except msgspec.ValidationError:
            log.exception("an unreadable room event was ignored")
            return
        stream = self._streams.get(project_id)
        if stream is None:
            stream = self._streams[project_id] = _Stream()
        if event.seq <= stream.last:
            if event.seq != 1:
                return  # had it already, from the log
            # Only a Redis started again from empty numbers a project's events from 1 twice.
            stream = self._streams[project_id] = _Stream()
            for connection in self.hub.connections():
                if connection.key.project_id == project_id:
                    connection.seen_events = 0
        elif stream.last and event.seq > stream.last + 1:
            await self._catch_up(project_id, event.seq - 1)
        self._accept(project_id, event)

    async def _catch_up(self, project_id: str, upto: int | None) -> None:
        """Hand on the project's events after the last one received (up to
        `upto`), from its log; count those it no longer holds."""
        stream = self._streams[project_id]
        after = stream.last
        events = [e for e in await self._presence.recent_events(project_id, after) if upto is None or e.seq <= upto]
        first = events[0].seq if events else (upto + 1 if upto is not None else after + 1)
        if first > after + 1:
            self._missed(project_id, first - after - 1)
        for event in events:
            if event.seq > stream.last:
                self._accept(project_id, event)

    def _missed(self, project_id: str, count: int) -> None:
        self._telemetry.cluster_events.labels("missed").inc(count)
        now = time.monotonic()
        if now - self._last_gap_log > 10:
            self._last_gap_log = now
            log.warning(
                "room events were lost (missed and no longer in the log)",
                extra={"project": project_id, "missed": count},
            )

    def _accept(self, project_id: str, event: RoomEvent) -> None:
        """Hand a project's next event to this node's connections."""
        stream = self._streams[project_id]
        self._telemetry.cluster_events.labels("received").inc()
        stream.last = event.seq
        encoded = _wire(event)
        stream.recent.append((event, encoded))
        key = RoomKey(project_id, event.room)
        if isinstance(event, SessionEndedEvent):
            self._spawn(self._session_ended(EndedSession(key, event.session, event.end_time)))
            return
        if isinstance(event, ReplacedEvent | EvictedEvent):
            holder = self.hub.find(key, event.peer_id)
            if holder is not None and holder.id == event.conn:
                self._close(holder, event)
            return
        # Framed once for every receiver on this node.
        frame = text_frame(encoded) if encoded is not None else None
        for connection in list(self.hub.room(key)):
            self._hand(connection, event, encoded, frame)

    @staticmethod
    def _close(connection: Connection, event: ReplacedEvent | EvictedEvent) -> None:
        if isinstance(event, EvictedEvent):
            connection.close(*EVICTION_CLOSE[event.reason])
        else:
            connection.close(CloseCode.REPLACED, "replaced by a newer connection of the same peer")

    def _hand(
        self, connection: Connection, event: RoomEvent, encoded: bytes | None, frame: bytes | None = None
    ) -> None:
        """Give one event to one connection, if it is one for it."""
        if encoded is None or connection.seen_events >= event.seq:
            return
        if isinstance(event, PeerJoinedEvent):
            if connection.peer_id != event.peer.peer_id:
                connection.push(encoded, frame)
        elif isinstance(event, PeerLeftEvent):
            if connection.peer_id != event.peer_id:
                connection.push(encoded, frame)
        elif isinstance(event, DataEvent):
            recipients = None if event.to is None else set(event.to)
            if connection.peer_id != event.sender and receives_data(connection, recipients):
                connection.push(encoded, frame)
        elif isinstance(event, MetadataUpdatedEvent):
            connection.push(encoded)

    async def _session_ended(self, ended: EndedSession) -> None:
        for listener in self.session_end_listeners:
            try:
                await listener(ended)
            except Exception:
                log.exception("session end listener failed for %s", ended.session_id)

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _wire(event: RoomEvent) -> bytes | None:
    """The message members are sent for an event, encoded once for all of them."""
    if isinstance(event, PeerJoinedEvent):
        return protocol.encode(protocol.PeerJoined(event.peer))
    if isinstance(event, PeerLeftEvent):
        return protocol.encode(protocol.PeerLeft(event.peer_id))
    if isinstance(event, MetadataUpdatedEvent):
        return protocol.encode(protocol.MetadataUpdated(event.peer_id, event.metadata))
    if isinstance(event, DataEvent):
        return bytes(event.message)
    return None
