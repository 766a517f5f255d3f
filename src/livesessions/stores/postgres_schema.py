"""The PostgreSQL schema, as numbered migrations, and the code that applies them.

Every node runs `migrate` when it starts. It holds a session-level advisory
lock while it reads the version and applies what is missing, so many nodes
starting at once apply each version exactly once (the others wait, then find
nothing to do). Each version is applied in its own transaction together with
its row in `schema_migrations`: a crash half-way leaves the previous version.

Version 1 is everything the embedded (SQLite) schema has, with PostgreSQL
types: BIGINT epoch milliseconds, BOOLEAN flags, identity columns for the
`seq` row numbers (never handed out twice, so pages and cursors stay stable).
Room metadata is `JSON`, not `JSONB`: JSON keeps the text as written, so a
room's metadata comes back with its keys in the order they were given and its
numbers spelled as they were, as the embedded store returns them (JSONB
reorders keys and rewrites numbers such as 1e100).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

# pg_advisory_lock key for migrations: "lsmigrat" in ASCII, unlikely to collide
# with another application's key on a shared database.
MIGRATION_LOCK = int.from_bytes(b"lsmigrat", "big")

MIGRATIONS: list[str] = [
    # version 1: the embedded store's schema (its versions 1 to 4) and the
    # service's secrets
    """
    CREATE TABLE projects (
        project_id TEXT PRIMARY KEY,
        wallet_address TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        first_sign_in_at BIGINT
    );
    CREATE TABLE api_keys (
        -- byte order, as SQLite compares text: keys are listed by (created_at, id)
        id TEXT COLLATE "C" PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(project_id),
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        masked_key TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT,
        revoked_at BIGINT
    );
    CREATE INDEX api_keys_by_project ON api_keys(project_id, created_at);
    -- every node polls for revocations (keys_revoked_since)
    CREATE INDEX api_keys_revoked ON api_keys(revoked_at) WHERE revoked_at IS NOT NULL;
    CREATE TABLE rooms (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        room_id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL REFERENCES projects(project_id),
        created_at BIGINT NOT NULL,
        room_locked BOOLEAN NOT NULL,
        metadata JSON
    );
    CREATE INDEX rooms_by_project ON rooms(project_id, seq);
    CREATE TABLE sessions (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        start_time BIGINT NOT NULL,
        end_time BIGINT,
        -- the latest time the session was known to be live: where a session
        -- left open by a crash is closed
        last_seen BIGINT NOT NULL
    );
    CREATE INDEX sessions_by_room ON sessions(project_id, room_id, seq);
    CREATE INDEX sessions_open ON sessions(end_time) WHERE end_time IS NULL;
    CREATE TABLE participants (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(session_id),
        peer_id TEXT NOT NULL,
        role TEXT NOT NULL,
        metadata TEXT NOT NULL,
        join_time BIGINT NOT NULL,
        exit_time BIGINT
    );
    CREATE INDEX participants_by_session ON participants(session_id, peer_id);
    CREATE TABLE egress_jobs (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        type TEXT NOT NULL CHECK (type IN ('recording', 'livestream')),
        active BOOLEAN NOT NULL,
        started_at BIGINT NOT NULL,
        stopped_at BIGINT,
        rtmp_urls JSONB NOT NULL,
        playback_id TEXT UNIQUE,
        size BIGINT NOT NULL DEFAULT 0,
        media_status TEXT NOT NULL,
        worker_id TEXT,
        lease_expires_at BIGINT,
        progress BIGINT NOT NULL DEFAULT 0,
        progress_message TEXT,
        media_location TEXT,
        media_size BIGINT,
        failed_reason TEXT,
        failed_at BIGINT
    );
    -- at most one active job of each type per room, whatever races happen
    CREATE UNIQUE INDEX egress_one_active ON egress_jobs(project_id, room_id, type) WHERE active;
    CREATE INDEX egress_by_session ON egress_jobs(project_id, session_id, seq);
    CREATE INDEX egress_by_media ON egress_jobs(project_id, media_status, seq);
    CREATE TABLE sign_in_nonces (
        nonce TEXT PRIMARY KEY,
        expires_at BIGINT NOT NULL,
        used_at BIGINT
    );
    CREATE TABLE account_sessions (
        token_hash TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(project_id),
        wallet_address TEXT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    -- the peer-token signing key, the download-link secret: made once, by
    -- whichever node needs one first, and shared by all
    CREATE TABLE service_secrets (
        name TEXT PRIMARY KEY,
        value BYTEA NOT NULL,
        created_at BIGINT NOT NULL
    );
    """,
    # version 2: every node reads the active jobs (a status asked of any node,
    # the sweep for jobs of dead nodes) while finished ones pile up
    """
    CREATE INDEX egress_active ON egress_jobs(seq) WHERE active;
    """,
    # version 3: the browser origins a project's peers may join from (the
    # embedded store's version 5; empty: any)
    """
    ALTER TABLE projects ADD COLUMN whitelisted_domains TEXT[] NOT NULL DEFAULT '{}';
    """,
    # version 4: events for webhooks and the live event stream, and the
    # webhooks with their delivery queue (the embedded store's version 6).
    # Nodes write events unnumbered (position NULL) in the transaction of
    # their change; the sequencer numbers them afterwards, one at a time
    # cluster-wide (stores/postgres_events.py).
    """
    ALTER TABLE sessions ADD COLUMN max_participants INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX participants_open ON participants(session_id) WHERE exit_time IS NULL;
    CREATE TABLE webhooks (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL REFERENCES projects(project_id),
        key_id TEXT NOT NULL REFERENCES api_keys(id),
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        -- NULL: every event
        events TEXT[],
        sealed_key BYTEA NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'disabled')),
        created_at BIGINT NOT NULL
    );
    CREATE INDEX webhooks_by_project ON webhooks(project_id, seq);
    CREATE INDEX webhooks_by_key ON webhooks(key_id);
    CREATE TABLE events (
        -- the order events were written in (not their commit order)
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        event TEXT NOT NULL,
        -- JSON, exactly as delivered
        payload TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        -- a test event's one webhook (NULL: every webhook that wants it)
        webhook_id TEXT,
        -- NULL until sequenced: the project's order, the room's 1, 2, 3...,
        -- and the cluster's order (what each node's listener follows)
        position BIGINT,
        room_seq BIGINT,
        stream_order BIGINT
    );
    CREATE UNIQUE INDEX events_by_project ON events(project_id, position);
    CREATE UNIQUE INDEX events_by_stream ON events(stream_order);
    CREATE INDEX events_unsequenced ON events(seq) WHERE position IS NULL;
    CREATE INDEX events_by_time ON events(created_at);
    -- the last number handed out per project (room '*'), per room ('' is the
    -- lane of test events), and cluster-wide (project '', room '')
    CREATE TABLE event_counters (
        project_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        last BIGINT NOT NULL,
        PRIMARY KEY (project_id, room_id)
    );
    CREATE TABLE webhook_queue (
        webhook_id TEXT NOT NULL,
        event_seq BIGINT NOT NULL,
        room_id TEXT NOT NULL,
        room_seq BIGINT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at BIGINT NOT NULL,
        claimed_until BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (webhook_id, event_seq)
    );
    CREATE INDEX webhook_queue_lanes ON webhook_queue(webhook_id, room_id, room_seq);
    CREATE INDEX webhook_queue_due ON webhook_queue(next_at);
    -- what pruning asks: is this event still waited for
    CREATE INDEX webhook_queue_by_event ON webhook_queue(event_seq);
    CREATE TABLE webhook_deliveries (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        webhook_id TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event TEXT NOT NULL,
        room_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        at BIGINT NOT NULL,
        response_status INTEGER,
        error TEXT
    );
    CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries(webhook_id, seq);
    CREATE INDEX webhook_deliveries_by_time ON webhook_deliveries(at);
    """,
]

LATEST = len(MIGRATIONS)


async def schema_version(conn: Any) -> int:
    """The version a database is at (0: never migrated)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def migrate(conn: Any, target: int = LATEST) -> int:
    """Bring the database up to `target` (by default the latest version);
    returns the version it is at. `conn` is an asyncpg connection outside any
    transaction. Safe to run from many connections at once."""
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY,"
            " applied_at BIGINT NOT NULL DEFAULT (extract(epoch FROM clock_timestamp()) * 1000)::bigint)"
        )
        current = await schema_version(conn)
        if current > LATEST:
            log.warning("the database's schema is at version %d, newer than this build's %d", current, LATEST)
        for number in range(current + 1, target + 1):
            async with conn.transaction():
                # no arguments: the simple query protocol, which runs a whole script
                await conn.execute(MIGRATIONS[number - 1])
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", number)
            log.info("database schema migrated to version %d", number)
        return max(current, target)
    finally:
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
