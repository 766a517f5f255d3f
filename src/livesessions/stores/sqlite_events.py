"""The embedded store's outbox and webhook queue (SQLite).

`emit` runs inside a history or egress write, on the writer thread: the
event is numbered (per project and per room) and queued for every active
webhook of the project that wants it, in the transaction of the change it
tells of. One writer means the numbers are handed out in commit order.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

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
    from livesessions.stores.sqlite_database import SQLiteDatabase

T = TypeVar("T")

SCHEMA = """
    ALTER TABLE sessions ADD COLUMN max_participants INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX participants_open ON participants(session_id) WHERE exit_time IS NULL;
    CREATE TABLE webhooks (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL REFERENCES projects(project_id),
        key_id TEXT NOT NULL REFERENCES api_keys(id),
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        events TEXT,
        sealed_key BLOB NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX webhooks_by_project ON webhooks(project_id, seq);
    CREATE INDEX webhooks_by_key ON webhooks(key_id);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        room_id TEXT NOT NULL,
        room_seq INTEGER NOT NULL,
        event TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX events_by_project ON events(project_id, position);
    CREATE INDEX events_by_time ON events(created_at);
    -- the last number handed out per project (room '*') and per room ('' is
    -- the lane of test events)
    CREATE TABLE event_counters (
        project_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        last INTEGER NOT NULL,
        PRIMARY KEY (project_id, room_id)
    ) WITHOUT ROWID;
    CREATE TABLE webhook_queue (
        webhook_id TEXT NOT NULL,
        event_seq INTEGER NOT NULL,
        room_id TEXT NOT NULL,
        room_seq INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        claimed_until INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (webhook_id, event_seq)
    ) WITHOUT ROWID;
    CREATE INDEX webhook_queue_lanes ON webhook_queue(webhook_id, room_id, room_seq);
    CREATE INDEX webhook_queue_due ON webhook_queue(next_at);
    CREATE INDEX webhook_queue_events ON webhook_queue(event_seq);
    CREATE TABLE webhook_deliveries (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        webhook_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event TEXT NOT NULL,
        room_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        at INTEGER NOT NULL,
        response_status INTEGER,
        error TEXT
    );
    CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries(webhook_id, seq);
    CREATE INDEX webhook_deliveries_by_time ON webhook_deliveries(at);
"""

PROJECT_LANE = "*"
# A new delivery is due at once in an empty lane, else behind its head.
_DUE_UNLESS_BEHIND = (
    "CASE WHEN EXISTS (SELECT 1 FROM webhook_queue h WHERE h.webhook_id = w.id AND h.room_id = e.room_id)"
    " THEN ? ELSE 0 END"
)


def _bump(conn: sqlite3.Connection, project_id: str, lane: str) -> int:
    (number,) = conn.execute(
        "INSERT INTO event_counters (project_id, room_id, last) VALUES (?, ?, 1)"
        " ON CONFLICT (project_id, room_id) DO UPDATE SET last = last + 1 RETURNING last",
        (project_id, lane),
    ).fetchone()
    return int(number)


def emit(
    conn: sqlite3.Connection,
    emitted: list[StoredEvent],
    project_id: str,
    room_id: str,
    event: str,
    payload: dict[str, Any],
    now: int,
) -> StoredEvent:
    """Record an event and queue it for the project's webhooks that want it."""
    stored = _insert(conn, project_id, room_id, event, to_json(payload), now)
    conn.execute(
        f"INSERT INTO webhook_queue (webhook_id, event_seq, room_id, room_seq, next_at)"
        f" SELECT w.id, e.seq, e.room_id, e.room_seq, {_DUE_UNLESS_BEHIND} FROM webhooks w, events e"
        " WHERE e.id = ? AND w.project_id = ? AND w.status = 'active'"
        " AND (w.events IS NULL OR EXISTS (SELECT 1 FROM json_each(w.events) j WHERE j.value = ?))",
        (BEHIND_HEAD, stored.id, project_id, event),
    )
    emitted.append(stored)
    return stored


def _insert(
    conn: sqlite3.Connection, project_id: str, room_id: str, event: str, payload_json: str, now: int
) -> StoredEvent:
    stored = StoredEvent(
        id=new_event_id(),
        project_id=project_id,
        room_id=room_id,
        event=event,
        payload=payload_json,
        created_at=now,
        position=_bump(conn, project_id, PROJECT_LANE),
        room_seq=_bump(conn, project_id, room_id),
    )
    conn.execute(
        "INSERT INTO events (id, project_id, position, room_id, room_seq, event, payload, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            stored.id,
            project_id,
            stored.position,
            room_id,
            stored.room_seq,
            event,
            payload_json,
            now,
        ),
    )
    return stored


_EVENT_COLUMNS = "id, project_id, room_id, event, payload, created_at, position, room_seq"


def _event(row: tuple[Any, ...]) -> StoredEvent:
    return StoredEvent(*row)


_WEBHOOK_COLUMNS = "id, project_id, key_id, name, url, events, sealed_key, status, created_at"


def _webhook(row: tuple[Any, ...]) -> Webhook:
    webhook_id, project_id, key_id, name, url, events, sealed_key, status, created_at = row
    return Webhook(
        id=webhook_id,
        project_id=project_id,
        key_id=key_id,
        name=name,
        url=url,
        events=orjson.loads(events) if events is not None else None,
        sealed_key=bytes(sealed_key),
        status=status,
        created_at=created_at,
    )


class SQLiteEvents:
    """The Outbox and WebhookRegistry ports of the embedded store."""

    db: SQLiteDatabase
    _event_listeners: list[EventsListener]

    def on_committed(self, listener: EventsListener) -> None:
        self._event_listeners.append(listener)

    def _write_emitting(self, fn: Callable[[sqlite3.Connection, list[StoredEvent]], T]) -> asyncio.Future[T]:
        """Queue a write that may emit events; once it is committed, tell the
        listeners (in commit order: the order the events were numbered)."""
        emitted: list[StoredEvent] = []

        def committed() -> None:
            if emitted:
                for listener in self._event_listeners:
                    listener(emitted)

        return self.db.write(lambda conn: fn(conn, emitted), committed)

    # --- Outbox -------------------------------------------------------------

    async def events_after(self, project_id: str, position: int, limit: int) -> list[StoredEvent]:
        rows = self.db.read(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE project_id = ? AND position > ? AND event <> ?"
            " ORDER BY position LIMIT ?",
            (project_id, position, WEBHOOK_TEST, limit),
        )
        return [_event(row) for row in rows]

    async def event_position(self, project_id: str, event_id: str) -> int | None:
        row = self.db.read_one("SELECT position FROM events WHERE id = ? AND project_id = ?", (event_id, project_id))
        if row is None:
            return None
        position = int(row[0])
        # Positions have no gaps: fewer rows after it than numbers means some
        # were pruned (this one was kept for a webhook), so no resuming here.
        count, last = self.db.read_one(
            "SELECT count(*), coalesce(max(position), ?) FROM events WHERE project_id = ? AND position > ?",
            (position, project_id, position),
        ) or (0, position)
        return position if count == last - position else None

    async def latest_event(self, project_id: str) -> StoredEvent | None:
        row = self.db.read_one(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE project_id = ? AND event <> ? ORDER BY position DESC LIMIT 1",
            (project_id, WEBHOOK_TEST),
        )
        return _event(row) if row else None

    async def sequence_events(self) -> int:
        return 0

    async def prune_events(self, before: int) -> int:
        return await self.db.write(
            lambda conn: (
                conn.execute(
                    "DELETE FROM events WHERE created_at < ?"
                    " AND NOT EXISTS (SELECT 1 FROM webhook_queue q WHERE q.event_seq = events.seq)",
                    (before,),
                ).rowcount
            )
        )

    # --- WebhookRegistry ----------------------------------------------------

    async def add_webhook(self, webhook: Webhook) -> None:
        events = orjson.dumps(webhook.events).decode() if webhook.events is not None else None
        await self.db.write(
            lambda conn: conn.execute(
                f"INSERT INTO webhooks ({_WEBHOOK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    webhook.id,
                    webhook.project_id,
                    webhook.key_id,
                    webhook.name,
                    webhook.url,
                    events,
                    webhook.sealed_key,
                    webhook.status,
                    webhook.created_at,
                ),
            )
        )

    async def webhook(self, project_id: str, webhook_id: str) -> Webhook | None:
        row = self.db.read_one(
            f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE id = ? AND project_id = ?", (webhook_id, project_id)
        )
        return _webhook(row) if row else None

    async def list_webhooks(self, project_id: str) -> list[WebhookState]:
        rows = self.db.read(
            f"SELECT {_WEBHOOK_COLUMNS},"
            " (SELECT count(*) FROM webhook_queue q WHERE q.webhook_id = w.id),"
            " d.at, d.event_id, d.response_status, d.error"
            " FROM webhooks w LEFT JOIN webhook_deliveries d ON d.seq ="
            " (SELECT max(seq) FROM webhook_deliveries x WHERE x.webhook_id = w.id)"
            " WHERE w.project_id = ? ORDER BY w.seq",
            (project_id,),
        )
        states = []
        for row in rows:
            at, event_id, status, error = row[10:]
            last = None if at is None else LastDelivery(at=at, event_id=event_id, response_status=status, error=error)
            states.append(WebhookState(webhook=_webhook(row[:9]), pending=row[9], last_delivery=last))
        return states

    async def delete_webhook(self, project_id: str, webhook_id: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            deleted = conn.execute(
                "DELETE FROM webhooks WHERE id = ? AND project_id = ?", (webhook_id, project_id)
            ).rowcount
            if deleted:
                conn.execute("DELETE FROM webhook_queue WHERE webhook_id = ?", (webhook_id,))
                conn.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))
            return deleted == 1

        return await self.db.write(write)

    async def queue_test_event(self, project_id: str, webhook_id: str, payload: dict[str, Any], now: int) -> str | None:
        def write(conn: sqlite3.Connection) -> str | None:
            found = conn.execute(
                "SELECT 1 FROM webhooks WHERE id = ? AND project_id = ? AND status = 'active'", (webhook_id, project_id)
            ).fetchone()
            if found is None:
                return None
            stored = _insert(conn, project_id, "", WEBHOOK_TEST, to_json(payload), now)
            conn.execute(
                f"INSERT INTO webhook_queue (webhook_id, event_seq, room_id, room_seq, next_at)"
                f" SELECT w.id, e.seq, e.room_id, e.room_seq, {_DUE_UNLESS_BEHIND} FROM webhooks w, events e"
                " WHERE w.id = ? AND e.id = ?",
                (BEHIND_HEAD, webhook_id, stored.id),
            )
            return stored.id

        return await self.db.write(write)

    async def next_delivery_at(self) -> int | None:
        # Lane heads only (the others wait BEHIND_HEAD).
        row = self.db.read_one(
            "SELECT min(max(q.next_at, q.claimed_until)) FROM webhook_queue q"
            " JOIN webhooks w ON w.id = q.webhook_id WHERE w.status = 'active' AND q.next_at < ?",
            (BEHIND_HEAD,),
        )
        return int(row[0]) if row and row[0] is not None else None

    async def claim_deliveries(
        self, now: int, lease_ms: int, room_for: dict[str, int], default_room: int, limit: int
    ) -> list[Delivery]:
        def write(conn: sqlite3.Connection) -> list[Delivery]:
            # The head of each (webhook, room) lane (only heads are ever due),
            # if it is due and unclaimed.
            rows = conn.execute(
                "SELECT q.webhook_id, w.url, w.sealed_key, q.event_seq, e.id, e.event, e.room_id, e.room_seq,"
                " e.payload, e.created_at, q.attempts + 1"
                " FROM webhook_queue q JOIN webhooks w ON w.id = q.webhook_id JOIN events e ON e.seq = q.event_seq"
                " WHERE q.next_at <= ? AND q.claimed_until <= ? AND w.status = 'active'"
                " AND q.webhook_id NOT IN (SELECT value FROM json_each(?))"
                " ORDER BY q.next_at, q.event_seq LIMIT ?",
                (now, now, orjson.dumps(saturated(room_for)).decode(), limit * 4),
            ).fetchall()
            chosen = within_room([_delivery(row) for row in rows], room_for, default_room, limit)
            conn.executemany(
                "UPDATE webhook_queue SET claimed_until = ? WHERE webhook_id = ? AND event_seq = ?",
                [(now + lease_ms, d.webhook_id, d.event_seq) for d in chosen],
            )
            return chosen

        return await self.db.write(write)

    async def settle_delivery(self, delivery: Delivery, result: AttemptResult, settled: Settlement, now: int) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO webhook_deliveries (webhook_id, event_id, event, room_id, attempt, at, response_status,"
                " error) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    delivery.webhook_id,
                    delivery.event_id,
                    delivery.event,
                    delivery.room_id,
                    delivery.attempt,
                    now,
                    result.status,
                    settled.error,
                ),
            )
            key = (delivery.webhook_id, delivery.event_seq)
            if settled.outcome == "retry":
                conn.execute(
                    "UPDATE webhook_queue SET attempts = ?, next_at = ?, claimed_until = 0"
                    " WHERE webhook_id = ? AND event_seq = ?",
                    (delivery.attempt, settled.next_at, *key),
                )
            else:
                conn.execute("DELETE FROM webhook_queue WHERE webhook_id = ? AND event_seq = ?", key)
                # the room's next event is its head now: due at once
                conn.execute(
                    "UPDATE webhook_queue SET next_at = 0 WHERE webhook_id = ? AND room_id = ? AND room_seq ="
                    " (SELECT min(room_seq) FROM webhook_queue WHERE webhook_id = ? AND room_id = ?)",
                    (delivery.webhook_id, delivery.room_id, delivery.webhook_id, delivery.room_id),
                )
            if settled.outcome == "disable":
                # Nothing more is sent to it: what waited is dropped.
                conn.execute("UPDATE webhooks SET status = 'disabled' WHERE id = ?", (delivery.webhook_id,))
                conn.execute("DELETE FROM webhook_queue WHERE webhook_id = ?", (delivery.webhook_id,))

        await self.db.write(write)

    async def release_claims(self) -> int:
        """At start-up: claims left by the last run are nobody's (this process
        is the only one), so their deliveries go again now, not after the lease."""
        return await self.db.write(
            lambda conn: conn.execute("UPDATE webhook_queue SET claimed_until = 0 WHERE claimed_until > 0").rowcount
        )

    async def webhook_deliveries(
        self, project_id: str, webhook_id: str, before: int | None, limit: int
    ) -> tuple[list[DeliveryLogEntry], int | None] | None:
        if self.db.read_one("SELECT 1 FROM webhooks WHERE id = ? AND project_id = ?", (webhook_id, project_id)) is None:
            return None
        rows = self.db.read(
            "SELECT seq, event_id, event, room_id, attempt, at, response_status, error FROM webhook_deliveries"
            " WHERE webhook_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (webhook_id, before if before is not None else 2**62, limit + 1),
        )
        page = [_log_entry(row) for row in rows[:limit]]
        return page, (page[-1].seq if len(rows) > limit else None)

    async def prune_deliveries(self, before: int) -> int:
        return await self.db.write(
            lambda conn: conn.execute("DELETE FROM webhook_deliveries WHERE at < ?", (before,)).rowcount
        )


def _delivery(row: tuple[Any, ...]) -> Delivery:
    values = dict(zip(Delivery.__struct_fields__, row, strict=True))
    values["sealed_key"] = bytes(values["sealed_key"])
    return Delivery(**values)


def _log_entry(row: tuple[Any, ...]) -> DeliveryLogEntry:
    return DeliveryLogEntry(**dict(zip(DeliveryLogEntry.__struct_fields__, row, strict=True)))
