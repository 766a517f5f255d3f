"""The scaled-out store's outbox and webhook queue (PostgreSQL), for many nodes.

Writing: a history or egress write inserts its events (`emit`) in its own
transaction, unnumbered (`position` NULL), and signals
`livesessions_unsequenced` (PostgreSQL delivers a NOTIFY at commit, and drops
it with a rolled-back savepoint). Writers take no counters: nodes' batches
commit in any order and never wait for each other over numbering.

Sequencing (`sequence_events`): one transaction at a time cluster-wide (an
advisory lock) takes the committed unnumbered events in the order they were
written and gives each the next number of its project (`position`), of its
room (`room_seq`, 1, 2, 3...) and of the cluster (`stream_order`), queues it
for the project's active webhooks that want it, and signals
`livesessions_events` with each project touched. Only the sequencer touches
the counters and unnumbered rows, so it never waits for a writer nor a
writer for it.

Listening (`_EventFeed`): each node keeps one connection LISTENing on both
channels. "unsequenced" runs the sequencer (bursts coalesce); "events" reads
what was sequenced after the last event this node told its listeners of, in
`stream_order`, and tells them: every event once, in order, on every node,
the writing node included (it learns of its own events the same way). A lost
connection is made again, backing off, and then assumes it missed
everything: it sequences and reads from where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import asyncpg

from livesessions.domain.events import WEBHOOK_TEST, StoredEvent, new_event_id, to_json
from livesessions.domain.webhooks import (
    BEHIND_HEAD,
    AttemptResult,
    Delivery,
    DeliveryLogEntry,
    LastDelivery,
    Settlement,
    Webhook,
    WebhookState,
    saturated,
    within_room,
)

if TYPE_CHECKING:
    from livesessions.domain.ports import EventsListener

log = logging.getLogger(__name__)

T = TypeVar("T")
# A write: run on the writer's connection, inside the batch's transaction.
Write = Callable[[Any], Awaitable[T]]

UNSEQUENCED = "livesessions_unsequenced"
SEQUENCED = "livesessions_events"
# How long closing waits for the listener's loop to end by itself.
STOP_WAIT_S = 5.0
# pg_advisory_xact_lock key of the sequencer: "lsevents" in ASCII.
SEQUENCER_LOCK = int.from_bytes(b"lsevents", "big")
# event_counters lanes: a project's own, and the cluster's (project '').
PROJECT_LANE = "*"
STREAM = ("", "")
# Events numbered per sequencer transaction, and read per listener call.
SEQUENCE_BATCH = 2000
READ_BATCH = 1000
_NO_CURSOR = 2**62


def rowcount(status: str) -> int:
    """Rows touched, from a command status such as "UPDATE 3"."""
    return int(status.rsplit(" ", 1)[-1])


class NewEvent(NamedTuple):
    """An event to record; `webhook_id`: a test event, for that webhook alone."""

    project_id: str
    room_id: str
    event: str
    payload: dict[str, Any]
    created_at: int
    webhook_id: str | None = None


def insert_events(first: int) -> str:
    """SQL inserting events (unnumbered, in the order given) from seven
    arrays, parameters `$first`.. (see `event_arrays`), returning 1 a row."""
    arrays = ", ".join(f"${first + n}::{kind}[]" for n, kind in enumerate(("text",) * 5 + ("bigint", "text")))
    return (
        "INSERT INTO events (id, project_id, room_id, event, payload, created_at, webhook_id)"
        " SELECT id, project_id, room_id, event, payload, created_at, webhook_id"
        f" FROM unnest({arrays}) WITH ORDINALITY"
        " AS v(id, project_id, room_id, event, payload, created_at, webhook_id, n) ORDER BY n RETURNING 1"
    )


def event_arrays(new: list[NewEvent]) -> list[list[Any]]:
    """The parameters of `insert_events`: ids made here, payloads as JSON."""
    return [
        [new_event_id() for _ in new],
        [e.project_id for e in new],
        [e.room_id for e in new],
        [e.event for e in new],
        [to_json(e.payload) for e in new],
        [e.created_at for e in new],
        [e.webhook_id for e in new],
    ]


# A NOTIFY is delivered at commit, and dropped with a rolled-back savepoint;
# the same one many times in a transaction is delivered once.
NOTIFY_UNSEQUENCED = f"SELECT pg_notify('{UNSEQUENCED}', '') FROM e LIMIT 1"
_EMIT = f"WITH e AS ({insert_events(1)}) {NOTIFY_UNSEQUENCED}"


async def emit(conn: Any, new: list[NewEvent]) -> list[str]:
    """Record events, unnumbered, in the write's transaction (one statement);
    their ids."""
    if not new:
        return []
    arrays = event_arrays(new)
    await conn.execute(_EMIT, *arrays)
    ids: list[str] = arrays[0]
    return ids


_EVENT_COLUMNS = "id, project_id, room_id, event, payload, created_at, position, room_seq"


def _event(row: Any) -> StoredEvent:
    return StoredEvent(*row)


_WEBHOOK_COLUMNS = "id, project_id, key_id, name, url, events, sealed_key, status, created_at"


def _webhook(row: Any) -> Webhook:
    webhook_id, project_id, key_id, name, url, events, sealed_key, status, created_at = row
    return Webhook(
        id=webhook_id,
        project_id=project_id,
        key_id=key_id,
        name=name,
        url=url,
        events=list(events) if events is not None else None,
        sealed_key=bytes(sealed_key),
        status=status,
        created_at=created_at,
    )


def _delivery(row: Any) -> Delivery:
    values = dict(zip(Delivery.__struct_fields__, row, strict=True))
    values["sealed_key"] = bytes(values["sealed_key"])
    return Delivery(**values)


def _log_entry(row: Any) -> DeliveryLogEntry:
    return DeliveryLogEntry(**dict(zip(DeliveryLogEntry.__struct_fields__, row, strict=True)))


# The head of each (webhook, room) lane (only heads are ever due: the others
# wait BEHIND_HEAD), if it is due and unclaimed. SKIP
# LOCKED: a head another node is claiming right now is left to it (and once
# that claim commits, its claimed_until keeps it out).
_CLAIM = (
    "SELECT q.webhook_id, w.url, w.sealed_key, q.event_seq, e.id, e.event, e.room_id, e.room_seq,"
    " e.payload, e.created_at, q.attempts + 1"
    " FROM webhook_queue q JOIN webhooks w ON w.id = q.webhook_id JOIN events e ON e.seq = q.event_seq"
    " WHERE q.next_at <= $1 AND q.claimed_until <= $1 AND w.status = 'active'"
    " AND NOT (q.webhook_id = ANY($3::text[]))"
    " ORDER BY q.next_at, q.event_seq LIMIT $2"
    " FOR UPDATE OF q SKIP LOCKED"
)

# Queue freshly numbered events for the webhooks that want them (a test
# event for its one webhook only).
_QUEUE = (
    "INSERT INTO webhook_queue (webhook_id, event_seq, room_id, room_seq, next_at)"
    f" SELECT w.id, e.seq, e.room_id, e.room_seq, {BEHIND_HEAD}"
    " FROM events e JOIN webhooks w ON w.project_id = e.project_id"
    " WHERE e.seq = ANY($1::bigint[]) AND w.status = 'active'"
    " AND CASE WHEN e.webhook_id IS NULL THEN w.events IS NULL OR e.event = ANY(w.events)"
    " ELSE w.id = e.webhook_id END"
)


# Then the lanes it queued into that have no head yet get one: their oldest
# delivery is due at once. (Settling a head does the same for its lane, under
# the sequencer's lock, so that the two never miss each other's rows.)
_PROMOTE = (
    "WITH lanes AS (SELECT DISTINCT webhook_id, room_id FROM webhook_queue WHERE event_seq = ANY($1::bigint[])),"
    " heads AS (SELECT q.webhook_id, q.room_id, min(q.room_seq) AS head FROM webhook_queue q"
    " JOIN lanes l ON l.webhook_id = q.webhook_id AND l.room_id = q.room_id"
    f" GROUP BY q.webhook_id, q.room_id HAVING min(q.next_at) = {BEHIND_HEAD})"
    " UPDATE webhook_queue q SET next_at = 0 FROM heads h"
    " WHERE q.webhook_id = h.webhook_id AND q.room_id = h.room_id AND q.room_seq = h.head"
)


async def _sequence_batch(conn: Any) -> int:
    """Number the oldest committed unnumbered events (the caller holds the
    sequencer's lock, in a transaction); how many."""
    rows = await conn.fetch(
        "SELECT seq, project_id, room_id FROM events WHERE position IS NULL ORDER BY seq LIMIT $1", SEQUENCE_BATCH
    )
    if not rows:
        return 0
    lanes = {STREAM}
    for _, project_id, room_id in rows:
        lanes.add((project_id, PROJECT_LANE))
        lanes.add((project_id, room_id))
    keys = sorted(lanes)
    last: dict[tuple[str, str], int] = {
        (project_id, room_id): number
        for project_id, room_id, number in await conn.fetch(
            "SELECT c.project_id, c.room_id, c.last FROM event_counters c"
            " JOIN unnest($1::text[], $2::text[]) AS k(project_id, room_id)"
            " ON c.project_id = k.project_id AND c.room_id = k.room_id",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
    }

    def bump(lane: tuple[str, str]) -> int:
        last[lane] = last.get(lane, 0) + 1
        return last[lane]

    seqs, positions, room_seqs, orders = [], [], [], []
    for seq, project_id, room_id in rows:
        seqs.append(seq)
        positions.append(bump((project_id, PROJECT_LANE)))
        room_seqs.append(bump((project_id, room_id)))
        orders.append(bump(STREAM))
    await conn.execute(
        "UPDATE events e SET position = v.position, room_seq = v.room_seq, stream_order = v.stream_order"
        " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[]) AS v(seq, position, room_seq,"
        " stream_order) WHERE e.seq = v.seq",
        seqs,
        positions,
        room_seqs,
        orders,
    )
    await conn.execute(
        "INSERT INTO event_counters (project_id, room_id, last)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])"
        " ON CONFLICT (project_id, room_id) DO UPDATE SET last = EXCLUDED.last",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [last[k] for k in keys],
    )
    await conn.execute(_QUEUE, seqs)
    await conn.execute(_PROMOTE, seqs)
    projects = sorted({project_id for _, project_id, _ in rows})
    await conn.execute("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", SEQUENCED, projects)
    return len(rows)


class _EventFeed:
    """This node's LISTEN connection and the task that follows it: tells
    the listeners of every sequenced event once, in order."""

    def __init__(
        self,
        store: PostgresEvents,
        dsn: str,
        *,
        connect_timeout: float,
        poll_interval: float,
        retry_delay: float,
        max_retry_delay: float,
    ) -> None:
        self._store = store
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._poll_interval = poll_interval
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        # The stream_order of the last event the listeners were told of
        # (None until first connected: events from then on are told).
        self.cursor: int | None = None
        self._sequence = True
        self._read = True
        self._wake = asyncio.Event()
        self._stopping = False
        self._listening = asyncio.Event()
        self._conn: Any = None
        self._connected = False
        # Times the LISTEN connection was made (again).
        self.connections = 0
        self._task = store._loop.create_task(self._run(), name="postgres-events")

    async def listening(self, timeout: float) -> bool:
        """Wait (at most `timeout` s) until the first LISTEN is in place."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), timeout)
        return self._listening.is_set()

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if channel == UNSEQUENCED:
            self._sequence = True
        else:
            self._read = True
        self._wake.set()

    def _lost(self, conn: Any) -> None:
        self._wake.set()

    async def _run(self) -> None:
        delay = self._retry_delay
        warned = False
        while not self._stopping:
            self._connected = False
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - made again below
                # Once per outage, not at every attempt.
                if not warned or self._connected:
                    log.warning("the event listener lost PostgreSQL (%s: %s); listening again", type(exc).__name__, exc)
                warned = True
            finally:
                self._drop_connection()
            if self._stopping:
                return
            if self._connected:
                delay = self._retry_delay
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_retry_delay)

    async def _follow(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
        self._conn = conn
        conn.add_termination_listener(self._lost)
        await conn.add_listener(UNSEQUENCED, self._notified)
        await conn.add_listener(SEQUENCED, self._notified)
        if self.cursor is None:
            self.cursor = await self._store._stream_position()
        self.connections += 1
        self._connected = True
        # Whatever was signalled while nobody here listened.
        self._sequence = self._read = True
        self._listening.set()
        while not self._stopping:
            if conn.is_closed():
                raise ConnectionError("the LISTEN connection was closed")
            if self._sequence:
                self._sequence = False
                if await self._store.sequence_events():
                    self._read = True
            if self._read:
                self._read = False
                await self._tell()
            if self._sequence or self._read:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            except TimeoutError:
                # Quiet for a while: is the connection still there? And in
                # case a signal went missing, look anyway.
                await conn.execute("SELECT 1", timeout=self._connect_timeout)
                self._sequence = self._read = True
            self._wake.clear()

    async def _tell(self) -> None:
        assert self.cursor is not None
        while True:
            rows = await self._store._pool.fetch(
                f"SELECT stream_order, {_EVENT_COLUMNS} FROM events WHERE stream_order > $1"
                " ORDER BY stream_order LIMIT $2",
                self.cursor,
                READ_BATCH,
            )
            if not rows:
                return
            self.cursor = rows[-1][0]
            told = [_event(tuple(row)[1:]) for row in rows if row["event"] != WEBHOOK_TEST]
            if told:
                for listener in list(self._store._event_listeners):
                    try:
                        listener(told)
                    except Exception:
                        log.exception("an events listener failed")
            if len(rows) < READ_BATCH:
                return

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(RuntimeError):  # its loop is already closed
                conn.terminate()

    async def aclose(self) -> None:
        """Ask the loop to end, and cancel it only if it does not: cancelling
        a pool query half-way can leave its connection resetting while the
        pool closes, and a shutdown must not wait on that."""
        self._stopping = True
        self._wake.set()
        _, late = await asyncio.wait({self._task}, timeout=STOP_WAIT_S)
        for task in late:
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_WAIT_S)
        self._drop_connection()

    def terminate(self) -> None:
        if not self._task.done():
            with contextlib.suppress(RuntimeError):  # its loop is already closed
                self._task.cancel()
        self._drop_connection()


class PostgresEvents:
    """The Outbox and WebhookRegistry ports of the scaled-out store."""

    _pool: Any
    _loop: asyncio.AbstractEventLoop
    _dsn: str
    _connect_timeout: float
    _event_listeners: list[EventsListener]
    _feed: _EventFeed | None
    # How often a quiet listener checks its connection and looks for events
    # anyway (a safety net: signals are what it goes by).
    events_poll_interval: float = 5.0

    if TYPE_CHECKING:

        def _write(self, fn: Write[T]) -> Awaitable[T]: ...

    # --- the listener -------------------------------------------------------

    async def start_events(self, timeout: float = 10.0) -> None:
        """Start this node's listener (once; later calls just wait for it):
        from now on every event any node writes is sequenced and told to the
        `on_committed` listeners. Returns once it listens, or after `timeout`
        seconds if PostgreSQL cannot be reached (it keeps trying)."""
        feed = self._start_feed()
        if not await feed.listening(timeout):
            log.warning("the event listener could not reach PostgreSQL yet; it keeps trying")

    def _start_feed(self) -> _EventFeed:
        if self._feed is None:
            self._feed = _EventFeed(
                self,
                self._dsn,
                connect_timeout=self._connect_timeout,
                poll_interval=self.events_poll_interval,
                retry_delay=0.05,
                max_retry_delay=2.0,
            )
        return self._feed

    def on_committed(self, listener: EventsListener) -> None:
        """Also starts the listener if `start_events` was not called (it
        learns of events from when it is listening)."""
        self._event_listeners.append(listener)
        self._start_feed()

    async def _stop_events(self) -> None:
        feed, self._feed = self._feed, None
        if feed is not None:
            await feed.aclose()

    async def _sequence_at_close(self, timeout: float) -> None:
        """Number (and queue for webhooks) what this node wrote last, rather
        than leave it to another node or the next start."""
        try:
            await asyncio.wait_for(self.sequence_events(), timeout)
        except Exception:
            log.info("events left unsequenced at close; the next listener sequences them", exc_info=True)

    def _terminate_events(self) -> None:
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.terminate()

    async def _stream_position(self) -> int:
        last: int | None = await self._pool.fetchval(
            "SELECT last FROM event_counters WHERE project_id = $1 AND room_id = $2", *STREAM
        )
        return last or 0

    # --- Outbox -------------------------------------------------------------

    async def events_after(self, project_id: str, position: int, limit: int) -> list[StoredEvent]:
        rows = await self._pool.fetch(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE project_id = $1 AND position > $2 AND event <> $3"
            " ORDER BY position LIMIT $4",
            project_id,
            position,
            WEBHOOK_TEST,
            limit,
        )
        return [_event(row) for row in rows]

    async def event_position(self, project_id: str, event_id: str) -> int | None:
        position: int | None = await self._pool.fetchval(
            "SELECT position FROM events WHERE id = $1 AND project_id = $2", event_id, project_id
        )
        if position is None:
            return None
        # Positions have no gaps: fewer rows after it than numbers means some
        # were pruned (this one was kept for a webhook), so no resuming here.
        count, last = await self._pool.fetchrow(
            "SELECT count(*), coalesce(max(position), $3) FROM events WHERE project_id = $1 AND position > $2",
            project_id,
            position,
            position,
        )
        return position if count == last - position else None

    async def latest_event(self, project_id: str) -> StoredEvent | None:
        row = await self._pool.fetchrow(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE project_id = $1 AND position IS NOT NULL AND event <> $2"
            " ORDER BY position DESC LIMIT 1",
            project_id,
            WEBHOOK_TEST,
        )
        return _event(row) if row else None

    async def sequence_events(self) -> int:
        """Number (and queue) the committed unnumbered events, one sequencer
        at a time cluster-wide; how many. Runs on a pool connection, not the
        writer: it waits for nothing a writer holds, and no writer for it."""
        total = 0
        async with self._pool.acquire() as conn:
            # Without the lock first: nothing to do is the common answer (the
            # signal that woke every node was for what one has numbered).
            while await conn.fetchval("SELECT EXISTS (SELECT 1 FROM events WHERE position IS NULL)"):
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", SEQUENCER_LOCK)
                    count = await _sequence_batch(conn)
                total += count
                if count < SEQUENCE_BATCH:
                    break
        return total

    async def prune_events(self, before: int) -> int:
        async def write(conn: Any) -> int:
            # Queued for a webhook deleted while its events were numbered.
            await conn.execute(
                "DELETE FROM webhook_queue q WHERE NOT EXISTS (SELECT 1 FROM webhooks w WHERE w.id = q.webhook_id)"
            )
            status = await conn.execute(
                "DELETE FROM events e WHERE created_at < $1 AND position IS NOT NULL"
                " AND NOT EXISTS (SELECT 1 FROM webhook_queue q WHERE q.event_seq = e.seq)",
                before,
            )
            return rowcount(status)

        return await self._write(write)

    # --- WebhookRegistry ----------------------------------------------------

    async def add_webhook(self, webhook: Webhook) -> None:
        values = (
            webhook.id,
            webhook.project_id,
            webhook.key_id,
            webhook.name,
            webhook.url,
            list(webhook.events) if webhook.events is not None else None,
            webhook.sealed_key,
            webhook.status,
            webhook.created_at,
        )

        async def write(conn: Any) -> None:
            await conn.execute(
                f"INSERT INTO webhooks ({_WEBHOOK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", *values
            )

        await self._write(write)

    async def webhook(self, project_id: str, webhook_id: str) -> Webhook | None:
        row = await self._pool.fetchrow(
            f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1 AND project_id = $2", webhook_id, project_id
        )
        return _webhook(row) if row else None

    async def list_webhooks(self, project_id: str) -> list[WebhookState]:
        rows = await self._pool.fetch(
            f"SELECT {', '.join('w.' + c for c in _WEBHOOK_COLUMNS.split(', '))},"
            " (SELECT count(*) FROM webhook_queue q WHERE q.webhook_id = w.id),"
            " d.at, d.event_id, d.response_status, d.error"
            " FROM webhooks w LEFT JOIN LATERAL (SELECT at, event_id, response_status, error"
            " FROM webhook_deliveries x WHERE x.webhook_id = w.id ORDER BY x.seq DESC LIMIT 1) d ON true"
            " WHERE w.project_id = $1 ORDER BY w.seq",
            project_id,
        )
        states = []
        for row in rows:
            at, event_id, status, error = tuple(row)[10:]
            last = None if at is None else LastDelivery(at=at, event_id=event_id, response_status=status, error=error)
            states.append(WebhookState(webhook=_webhook(tuple(row)[:9]), pending=row[9], last_delivery=last))
        return states

    async def delete_webhook(self, project_id: str, webhook_id: str) -> bool:
        async def write(conn: Any) -> bool:
            deleted = rowcount(
                await conn.execute("DELETE FROM webhooks WHERE id = $1 AND project_id = $2", webhook_id, project_id)
            )
            if deleted:
                await conn.execute("DELETE FROM webhook_queue WHERE webhook_id = $1", webhook_id)
                await conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = $1", webhook_id)
            return deleted == 1

        return await self._write(write)

    async def queue_test_event(self, project_id: str, webhook_id: str, payload: dict[str, Any], now: int) -> str | None:
        async def write(conn: Any) -> str | None:
            found = await conn.fetchval(
                "SELECT 1 FROM webhooks WHERE id = $1 AND project_id = $2 AND status = 'active'", webhook_id, project_id
            )
            if found is None:
                return None
            [event_id] = await emit(conn, [NewEvent(project_id, "", WEBHOOK_TEST, payload, now, webhook_id)])
            return event_id

        event_id = await self._write(write)
        if event_id is not None:
            # Queued before this returns (the listeners would do it soon too).
            try:
                await self.sequence_events()
            except Exception:
                log.warning("could not sequence the test event %s now", event_id, exc_info=True)
        return event_id

    async def next_delivery_at(self) -> int | None:
        # Lane heads only (the others wait BEHIND_HEAD).
        at: int | None = await self._pool.fetchval(
            "SELECT min(GREATEST(q.next_at, q.claimed_until)) FROM webhook_queue q"
            " JOIN webhooks w ON w.id = q.webhook_id WHERE w.status = 'active' AND q.next_at < $1",
            BEHIND_HEAD,
        )
        return at

    async def claim_deliveries(
        self, now: int, lease_ms: int, room_for: dict[str, int], default_room: int, limit: int
    ) -> list[Delivery]:
        async def write(conn: Any) -> list[Delivery]:
            rows = await conn.fetch(_CLAIM, now, limit * 4, saturated(room_for))
            chosen = within_room([_delivery(row) for row in rows], room_for, default_room, limit)
            if chosen:
                await conn.execute(
                    "UPDATE webhook_queue q SET claimed_until = $1"
                    " FROM unnest($2::text[], $3::bigint[]) AS c(webhook_id, event_seq)"
                    " WHERE q.webhook_id = c.webhook_id AND q.event_seq = c.event_seq",
                    now + lease_ms,
                    [d.webhook_id for d in chosen],
                    [d.event_seq for d in chosen],
                )
            return chosen

        return await self._write(write)

    async def settle_delivery(self, delivery: Delivery, result: AttemptResult, settled: Settlement, now: int) -> None:
        async def write(conn: Any) -> None:
            await conn.execute(
                "INSERT INTO webhook_deliveries (webhook_id, event_id, event, room_id, attempt, at, response_status,"
                " error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                delivery.webhook_id,
                delivery.event_id,
                delivery.event,
                delivery.room_id,
                delivery.attempt,
                now,
                result.status,
                settled.error,
            )
            if settled.outcome == "retry":
                await conn.execute(
                    "UPDATE webhook_queue SET attempts = $1, next_at = $2, claimed_until = 0"
                    " WHERE webhook_id = $3 AND event_seq = $4",
                    delivery.attempt,
                    settled.next_at,
                    delivery.webhook_id,
                    delivery.event_seq,
                )
            else:
                # The sequencer's lock: a lane it queues into while this head
                # goes gets its next head from one of the two, never neither.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SEQUENCER_LOCK)
                await conn.execute(
                    "DELETE FROM webhook_queue WHERE webhook_id = $1 AND event_seq = $2",
                    delivery.webhook_id,
                    delivery.event_seq,
                )
                # the room's next event is its head now: due at once
                await conn.execute(
                    "UPDATE webhook_queue SET next_at = 0 WHERE webhook_id = $1 AND room_id = $2 AND room_seq ="
                    " (SELECT min(room_seq) FROM webhook_queue WHERE webhook_id = $1 AND room_id = $2)",
                    delivery.webhook_id,
                    delivery.room_id,
                )
            if settled.outcome == "disable":
                # Nothing more is sent to it: what waited is dropped.
                await conn.execute("UPDATE webhooks SET status = 'disabled' WHERE id = $1", delivery.webhook_id)
                await conn.execute("DELETE FROM webhook_queue WHERE webhook_id = $1", delivery.webhook_id)

        await self._write(write)

    async def webhook_deliveries(
        self, project_id: str, webhook_id: str, before: int | None, limit: int
    ) -> tuple[list[DeliveryLogEntry], int | None] | None:
        found = await self._pool.fetchval(
            "SELECT 1 FROM webhooks WHERE id = $1 AND project_id = $2", webhook_id, project_id
        )
        if found is None:
            return None
        rows = await self._pool.fetch(
            "SELECT seq, event_id, event, room_id, attempt, at, response_status, error FROM webhook_deliveries"
            " WHERE webhook_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3",
            webhook_id,
            before if before is not None else _NO_CURSOR,
            limit + 1,
        )
        page = [_log_entry(row) for row in rows[:limit]]
        return page, (page[-1].seq if len(rows) > limit else None)

    async def prune_deliveries(self, before: int) -> int:
        async def write(conn: Any) -> int:
            return rowcount(await conn.execute("DELETE FROM webhook_deliveries WHERE at < $1", before))

        return await self._write(write)
