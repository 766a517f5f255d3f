"""The embedded durable store: projects, keys, rooms and session history in SQLite."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import msgspec
import orjson

from livesessions.domain import events
from livesessions.domain.egress import EgressJob
from livesessions.domain.events import StoredEvent
from livesessions.domain.ids import new_project_id, new_room_id
from livesessions.domain.records import ApiKeyRecord, Metrics, Participant, Project, Room, SessionRecord
from livesessions.stores import sqlite_events
from livesessions.stores.sqlite_events import SQLiteEvents, emit
from livesessions.telemetry import Telemetry

_SCHEMA = [
    # version 1
    """
    CREATE TABLE projects (
        project_id TEXT PRIMARY KEY,
        wallet_address TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(project_id),
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        masked_key TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER,
        revoked_at INTEGER
    );
    CREATE INDEX api_keys_by_project ON api_keys(project_id, created_at);
    -- AUTOINCREMENT: a row number is never handed out twice, so pages and
    -- cursors stay stable.
    CREATE TABLE rooms (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        room_id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL REFERENCES projects(project_id),
        created_at INTEGER NOT NULL,
        room_locked INTEGER NOT NULL,
        metadata TEXT
    );
    CREATE INDEX rooms_by_project ON rooms(project_id, seq);
    CREATE TABLE sessions (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        start_time INTEGER NOT NULL,
        end_time INTEGER,
        -- the latest time the session was known to be live: where a session
        -- left open by a crash is closed at the next start
        last_seen INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_room ON sessions(project_id, room_id, seq);
    CREATE INDEX sessions_open ON sessions(end_time) WHERE end_time IS NULL;
    CREATE TABLE participants (
        id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions(session_id),
        peer_id TEXT NOT NULL,
        role TEXT NOT NULL,
        metadata TEXT NOT NULL,
        join_time INTEGER NOT NULL,
        exit_time INTEGER
    );
    CREATE INDEX participants_by_session ON participants(session_id, peer_id);
    """,
    # version 2: recordings and livestreams
    """
    CREATE TABLE egress_jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        project_id TEXT NOT NULL,
        room_id TEXT NOT NULL,
        session_id TEXT NOT NULL,
        type TEXT NOT NULL CHECK (type IN ('recording', 'livestream')),
        active INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        stopped_at INTEGER,
        rtmp_urls TEXT NOT NULL,
        playback_id TEXT UNIQUE,
        size INTEGER NOT NULL DEFAULT 0,
        media_status TEXT NOT NULL,
        worker_id TEXT,
        lease_expires_at INTEGER,
        progress INTEGER NOT NULL DEFAULT 0,
        progress_message TEXT,
        media_location TEXT,
        media_size INTEGER
    );
    -- at most one active job of each type per room, whatever races happen
    CREATE UNIQUE INDEX egress_one_active ON egress_jobs(project_id, room_id, type) WHERE active = 1;
    CREATE INDEX egress_by_session ON egress_jobs(project_id, session_id, seq);
    CREATE INDEX egress_by_media ON egress_jobs(project_id, media_status, seq);
    """,
    # version 3: wallet sign-in
    """
    ALTER TABLE projects ADD COLUMN first_sign_in_at INTEGER;
    CREATE TABLE sign_in_nonces (
        nonce TEXT PRIMARY KEY,
        expires_at INTEGER NOT NULL,
        used_at INTEGER
    );
    CREATE TABLE account_sessions (
        token_hash TEXT PRIMARY KEY,
        project_id TEXT NOT NULL REFERENCES projects(project_id),
        wallet_address TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
    """,
    # version 4: why and when a recording's storage failed
    """
    ALTER TABLE egress_jobs ADD COLUMN failed_reason TEXT;
    ALTER TABLE egress_jobs ADD COLUMN failed_at INTEGER;
    """,
    # version 5: the browser origins a project's peers may join from (a JSON
    # list of hosts; empty: any)
    """
    ALTER TABLE projects ADD COLUMN whitelisted_domains TEXT NOT NULL DEFAULT '[]';
    """,
    # version 6: events for webhooks and the live event stream, and the
    # webhooks with their delivery queue
    sqlite_events.SCHEMA,
    # version 7: running totals for a project's metrics, kept by triggers so
    # that no writer can forget them: sessions, the time of ended ones,
    # distinct peers, recordings and livestreams.
    """
    CREATE TABLE project_totals (
        project_id TEXT PRIMARY KEY,
        sessions INTEGER NOT NULL DEFAULT 0,
        ended_duration INTEGER NOT NULL DEFAULT 0,
        users INTEGER NOT NULL DEFAULT 0,
        recordings INTEGER NOT NULL DEFAULT 0,
        livestreams INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE TABLE project_peers (
        project_id TEXT NOT NULL,
        peer_id TEXT NOT NULL,
        PRIMARY KEY (project_id, peer_id)
    ) WITHOUT ROWID;
    CREATE INDEX sessions_open_by_project ON sessions(project_id) WHERE end_time IS NULL;
    CREATE INDEX finished_recordings ON egress_jobs(project_id, seq) WHERE type = 'recording' AND active = 0;
    INSERT INTO project_peers (project_id, peer_id)
        SELECT DISTINCT s.project_id, p.peer_id FROM participants p JOIN sessions s ON s.session_id = p.session_id;
    INSERT INTO project_totals (project_id, sessions, ended_duration)
        SELECT project_id, count(*), coalesce(sum(end_time - start_time), 0) FROM sessions GROUP BY project_id;
    INSERT INTO project_totals (project_id, users)
        SELECT project_id, count(*) FROM project_peers GROUP BY project_id
        ON CONFLICT (project_id) DO UPDATE SET users = excluded.users;
    INSERT INTO project_totals (project_id, recordings, livestreams)
        SELECT project_id, sum(type = 'recording'), sum(type = 'livestream') FROM egress_jobs WHERE true
        GROUP BY project_id
        ON CONFLICT (project_id) DO UPDATE SET recordings = excluded.recordings, livestreams = excluded.livestreams;
    CREATE TRIGGER totals_session_added AFTER INSERT ON sessions BEGIN
        INSERT INTO project_totals (project_id) VALUES (NEW.project_id) ON CONFLICT DO NOTHING;
        UPDATE project_totals SET sessions = sessions + 1,
            ended_duration = ended_duration + coalesce(NEW.end_time - NEW.start_time, 0)
            WHERE project_id = NEW.project_id;
    END;
    CREATE TRIGGER totals_session_changed AFTER UPDATE OF start_time, end_time ON sessions BEGIN
        UPDATE project_totals SET ended_duration = ended_duration
            + coalesce(NEW.end_time - NEW.start_time, 0) - coalesce(OLD.end_time - OLD.start_time, 0)
            WHERE project_id = NEW.project_id;
    END;
    CREATE TRIGGER totals_session_removed AFTER DELETE ON sessions BEGIN
        UPDATE project_totals SET sessions = sessions - 1,
            ended_duration = ended_duration - coalesce(OLD.end_time - OLD.start_time, 0)
            WHERE project_id = OLD.project_id;
    END;
    CREATE TRIGGER totals_participant_added AFTER INSERT ON participants BEGIN
        INSERT OR IGNORE INTO project_peers (project_id, peer_id)
            SELECT project_id, NEW.peer_id FROM sessions WHERE session_id = NEW.session_id;
    END;
    CREATE TRIGGER totals_peer_added AFTER INSERT ON project_peers BEGIN
        INSERT INTO project_totals (project_id) VALUES (NEW.project_id) ON CONFLICT DO NOTHING;
        UPDATE project_totals SET users = users + 1 WHERE project_id = NEW.project_id;
    END;
    CREATE TRIGGER totals_egress_added AFTER INSERT ON egress_jobs BEGIN
        INSERT INTO project_totals (project_id) VALUES (NEW.project_id) ON CONFLICT DO NOTHING;
        UPDATE project_totals SET recordings = recordings + (NEW.type = 'recording'),
            livestreams = livestreams + (NEW.type = 'livestream') WHERE project_id = NEW.project_id;
    END;
    CREATE TRIGGER totals_egress_removed AFTER DELETE ON egress_jobs BEGIN
        UPDATE project_totals SET recordings = recordings - (OLD.type = 'recording'),
            livestreams = livestreams - (OLD.type = 'livestream') WHERE project_id = OLD.project_id;
    END;
    """,
]


def _migrate(conn: sqlite3.Connection) -> None:
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    for number, script in enumerate(_SCHEMA[version:], start=version + 1):
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")


def _statements(script: str) -> list[str]:
    """A script's statements, one by one (a trigger's body holds `;` too)."""
    statements, pending = [], ""
    for part in script.split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending)
            pending = ""
    if pending.strip(" \n;"):
        statements.append(pending)
    return statements


def _room(row: tuple[Any, ...]) -> Room:
    room_id, created_at, locked, metadata = row
    return Room(
        room_id=room_id,
        created_at=created_at,
        room_locked=bool(locked),
        metadata=orjson.loads(metadata) if metadata is not None else None,
    )


_ROOM_COLUMNS = "room_id, created_at, room_locked, metadata"

_JOB_FIELDS = EgressJob.__struct_fields__
_JOB_COLUMNS = ", ".join(_JOB_FIELDS)


def _job(row: tuple[Any, ...]) -> EgressJob:
    values = dict(zip(_JOB_FIELDS, row, strict=True))
    values["active"] = bool(values["active"])
    values["rtmp_urls"] = orjson.loads(values["rtmp_urls"])
    return EgressJob(**values)


class SQLiteStore(SQLiteEvents):
    def __init__(self, path: Path) -> None:
        from livesessions.stores.sqlite_database import SQLiteDatabase

        self.db = SQLiteDatabase(path, _migrate)
        self._event_listeners = []

    def close(self) -> None:
        self.db.close()

    async def ping(self) -> None:
        # A real table read, and an (empty) transaction through the writer:
        # a stopped writer thread or a database that cannot be locked fails.
        self.db.read_one("SELECT 1 FROM projects LIMIT 1")
        await self.db.write(_nothing)

    def instrument(self, telemetry: Telemetry) -> None:
        self.db.observe_commit = telemetry.commits.observe

        async def queue_depth() -> None:
            telemetry.write_queue.set(self.db.queue_depth())

        telemetry.refresh_before_scrape(queue_depth)

    # --- projects and keys ------------------------------------------------

    async def project_for_wallet(self, wallet_address: str, now: int) -> Project:
        """The wallet's project, created on first use."""
        address = wallet_address.lower()

        def write(conn: sqlite3.Connection) -> Project:
            row = conn.execute(
                "SELECT project_id, wallet_address, created_at FROM projects WHERE wallet_address = ?",
                (address,),
            ).fetchone()
            if row is not None:
                return Project(*row)
            project = Project(project_id=new_project_id(), wallet_address=address, created_at=now)
            conn.execute(
                "INSERT INTO projects (project_id, wallet_address, created_at) VALUES (?, ?, ?)",
                (project.project_id, project.wallet_address, project.created_at),
            )
            return project

        return await self.db.write(write)

    async def add_api_key(
        self, project_id: str, key_id: str, name: str, key_hash: str, masked_key: str, now: int
    ) -> ApiKeyRecord:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_keys (id, project_id, name, key_hash, masked_key, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, project_id, name, key_hash, masked_key, now),
            )

        await self.db.write(write)
        return ApiKeyRecord(id=key_id, name=name, masked_key=masked_key, created_at=now, last_used_at=None)

    async def list_api_keys(self, project_id: str) -> list[ApiKeyRecord]:
        rows = self.db.read(
            "SELECT id, name, masked_key, created_at, last_used_at FROM api_keys"
            " WHERE project_id = ? AND revoked_at IS NULL ORDER BY created_at, id",
            (project_id,),
        )
        return [ApiKeyRecord(id=i, name=n, masked_key=m, created_at=c, last_used_at=u) for i, n, m, c, u in rows]

    async def all_api_keys(self, wallet_address: str | None) -> list[tuple[str, str, ApiKeyRecord]]:
        """(project id, wallet, key) of every working key, or of one wallet's, oldest first."""
        rows = self.db.read(
            "SELECT p.project_id, p.wallet_address, k.id, k.name, k.masked_key, k.created_at, k.last_used_at"
            " FROM api_keys k JOIN projects p ON p.project_id = k.project_id"
            " WHERE k.revoked_at IS NULL AND (? IS NULL OR p.wallet_address = ?) ORDER BY k.created_at, k.id",
            (wallet_address, wallet_address),
        )
        return [
            (project_id, wallet, ApiKeyRecord(id=i, name=n, masked_key=m, created_at=c, last_used_at=u))
            for project_id, wallet, i, n, m, c, u in rows
        ]

    async def api_key_project(self, key_id: str) -> str | None:
        row = self.db.read_one("SELECT project_id FROM api_keys WHERE id = ? AND revoked_at IS NULL", (key_id,))
        return row[0] if row else None

    async def api_key_hash(self, project_id: str, key_id: str) -> str | None:
        row = self.db.read_one(
            "SELECT key_hash FROM api_keys WHERE id = ? AND project_id = ? AND revoked_at IS NULL", (key_id, project_id)
        )
        return row[0] if row else None

    async def revoke_api_key(self, key_hash: str, now: int) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_hash = ? AND revoked_at IS NULL", (now, key_hash)
            )
            # Its webhooks were signed with it: nothing more is sent to them.
            disabled = conn.execute(
                "UPDATE webhooks SET status = 'disabled' WHERE status = 'active'"
                " AND key_id IN (SELECT id FROM api_keys WHERE key_hash = ?) RETURNING id",
                (key_hash,),
            ).fetchall()
            conn.executemany("DELETE FROM webhook_queue WHERE webhook_id = ?", disabled)

        await self.db.write(write)

    async def record_key_use(self, last_used: dict[str, int]) -> None:
        await self.db.write(
            lambda conn: conn.executemany(
                "UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?) WHERE key_hash = ?",
                [(when, key_hash) for key_hash, when in last_used.items()],
            )
        )

    async def first_sign_in(self, project_id: str, now: int) -> bool:
        """Mark the project's first wallet sign-in; False if it had one before."""
        return await self.db.write(
            lambda conn: (
                conn.execute(
                    "UPDATE projects SET first_sign_in_at = ? WHERE project_id = ? AND first_sign_in_at IS NULL",
                    (now, project_id),
                ).rowcount
                == 1
            )
        )

    async def add_nonce(self, nonce: str, expires_at: int) -> None:
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT INTO sign_in_nonces (nonce, expires_at) VALUES (?, ?)", (nonce, expires_at)
            )
        )

    async def consume_nonce(self, nonce: str, now: int) -> bool:
        """Use a nonce up: True only the first time, and only before it expires."""
        return await self.db.write(
            lambda conn: (
                conn.execute(
                    "UPDATE sign_in_nonces SET used_at = ? WHERE nonce = ? AND used_at IS NULL AND expires_at > ?",
                    (now, nonce, now),
                ).rowcount
                == 1
            )
        )

    async def add_account_session(self, token_hash: str, project_id: str, address: str, expires_at: int) -> None:
        await self.db.write(
            lambda conn: conn.execute(
                "INSERT INTO account_sessions (token_hash, project_id, wallet_address, expires_at) VALUES (?, ?, ?, ?)",
                (token_hash, project_id, address, expires_at),
            )
        )

    async def account_session(self, token_hash: str, now: int) -> tuple[str, str] | None:
        row = self.db.read_one(
            "SELECT project_id, wallet_address FROM account_sessions WHERE token_hash = ? AND expires_at > ?",
            (token_hash, now),
        )
        return (row[0], row[1]) if row else None

    async def end_account_sessions(self, token_hash: str, everywhere: bool) -> None:
        """End this account session, or with `everywhere` every session of its project."""

        def write(conn: sqlite3.Connection) -> None:
            if everywhere:
                conn.execute(
                    "DELETE FROM account_sessions WHERE project_id ="
                    " (SELECT project_id FROM account_sessions WHERE token_hash = ?)",
                    (token_hash,),
                )
            else:
                conn.execute("DELETE FROM account_sessions WHERE token_hash = ?", (token_hash,))

        await self.db.write(write)

    async def forget_expired_sign_ins(self, now: int) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM sign_in_nonces WHERE expires_at < ?", (now,))
            conn.execute("DELETE FROM account_sessions WHERE expires_at < ?", (now,))

        await self.db.write(write)

    async def project_for_key_hash(self, key_hash: str) -> tuple[str, str] | None:
        row = self.db.read_one(
            "SELECT project_id, id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,)
        )
        return (row[0], row[1]) if row else None

    async def api_key_active(self, key_id: str) -> bool:
        row = self.db.read_one("SELECT revoked_at IS NULL FROM api_keys WHERE id = ?", (key_id,))
        return bool(row and row[0])

    async def keys_revoked_since(self, since: int) -> list[tuple[str, str, int]]:
        rows = self.db.read("SELECT key_hash, id, revoked_at FROM api_keys WHERE revoked_at >= ?", (since,))
        return [(key_hash, key_id, revoked_at) for key_hash, key_id, revoked_at in rows]

    async def whitelisted_domains(self, project_id: str) -> list[str]:
        row = self.db.read_one("SELECT whitelisted_domains FROM projects WHERE project_id = ?", (project_id,))
        return list(orjson.loads(row[0])) if row else []

    async def set_whitelisted_domains(self, project_id: str, domains: list[str]) -> None:
        encoded = orjson.dumps(list(domains)).decode()
        await self.db.write(
            lambda conn: conn.execute(
                "UPDATE projects SET whitelisted_domains = ? WHERE project_id = ?", (encoded, project_id)
            )
        )

    async def all_whitelisted_domains(self, wallet_address: str | None) -> list[tuple[str, str, list[str]]]:
        rows = self.db.read(
            "SELECT project_id, wallet_address, whitelisted_domains FROM projects"
            " WHERE (? IS NULL AND whitelisted_domains <> '[]') OR wallet_address = ?"
            " ORDER BY created_at, project_id",
            (wallet_address, wallet_address),
        )
        return [(project_id, wallet, list(orjson.loads(domains))) for project_id, wallet, domains in rows]

    # --- rooms ------------------------------------------------------------

    async def create_room(self, project_id: str, metadata: dict[str, Any] | None, locked: bool, now: int) -> Room:
        encoded = orjson.dumps(metadata).decode() if metadata is not None else None

        def write(conn: sqlite3.Connection) -> str:
            while True:
                room_id = new_room_id()
                try:
                    conn.execute(
                        "INSERT INTO rooms (room_id, project_id, created_at, room_locked, metadata)"
                        " VALUES (?, ?, ?, ?, ?)",
                        (room_id, project_id, now, int(locked), encoded),
                    )
                except sqlite3.IntegrityError:
                    continue  # that id was taken once: ids are never reused
                return room_id

        room_id = await self.db.write(write)
        return Room(room_id=room_id, created_at=now, room_locked=locked, metadata=metadata)

    async def get_room(self, project_id: str, room_id: str) -> Room | None:
        row = self.db.read_one(
            f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE room_id = ? AND project_id = ?", (room_id, project_id)
        )
        return _room(row) if row else None

    async def list_rooms(self, project_id: str, offset: int, limit: int) -> tuple[list[Room], int]:
        """A page of the project's rooms, newest first, and how many there are."""
        rows = self.db.read(
            f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE project_id = ? ORDER BY seq DESC LIMIT ? OFFSET ?",
            (project_id, limit, offset),
        )
        (total,) = self.db.read_one("SELECT count(*) FROM rooms WHERE project_id = ?", (project_id,)) or (0,)
        return [_room(row) for row in rows], total

    async def set_room_metadata(self, project_id: str, room_id: str, metadata: dict[str, Any]) -> bool:
        encoded = orjson.dumps(metadata).decode()

        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE rooms SET metadata = ? WHERE room_id = ? AND project_id = ?",
                (encoded, room_id, project_id),
            )
            return cursor.rowcount == 1

        return await self.db.write(write)

    async def set_room_locked(self, project_id: str, room_id: str, locked: bool) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE rooms SET room_locked = ? WHERE room_id = ? AND project_id = ?",
                (int(locked), room_id, project_id),
            )
            return cursor.rowcount == 1

        return await self.db.write(write)

    # --- session history --------------------------------------------------
    # These writes queue when called, not when awaited: callers call them
    # right after the presence change they record, so disk order is event order.

    def record_join(
        self,
        project_id: str,
        room_id: str,
        session_id: str,
        session_start: int | None,
        peer_id: str,
        role: str,
        metadata: str,
        now: int,
    ) -> Awaitable[None]:
        """A peer's stint begins; with `session_start`, so does the session."""

        def write(conn: sqlite3.Connection, emitted: list[StoredEvent]) -> None:
            if session_start is not None:
                conn.execute(
                    "INSERT INTO sessions (session_id, project_id, room_id, start_time, last_seen)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (session_id, project_id, room_id, session_start, now),
                )
                emit(
                    conn,
                    emitted,
                    project_id,
                    room_id,
                    events.MEETING_STARTED,
                    events.meeting_started(session_id, room_id, session_start),
                    now,
                )
            conn.execute(
                "INSERT INTO participants (session_id, peer_id, role, metadata, join_time) VALUES (?, ?, ?, ?, ?)",
                (session_id, peer_id, role, metadata, now),
            )
            # The most peers in the session at once, for `meeting:ended`.
            conn.execute(
                "UPDATE sessions SET last_seen = max(last_seen, ?), max_participants = max(max_participants,"
                " (SELECT count(DISTINCT peer_id) FROM participants WHERE session_id = ? AND exit_time IS NULL))"
                " WHERE session_id = ?",
                (now, session_id, session_id),
            )
            emit(
                conn,
                emitted,
                project_id,
                room_id,
                events.PEER_JOINED,
                events.peer_joined(peer_id, session_id, room_id, now, metadata, role),
                now,
            )

        return self._write_emitting(write)

    def record_exit(self, session_id: str, peer_id: str, now: int) -> Awaitable[None]:
        def write(conn: sqlite3.Connection, emitted: list[StoredEvent]) -> None:
            stints = conn.execute(
                "UPDATE participants SET exit_time = ? WHERE session_id = ? AND peer_id = ? AND exit_time IS NULL"
                " RETURNING join_time, metadata, role",
                (now, session_id, peer_id),
            ).fetchall()
            conn.execute("UPDATE sessions SET last_seen = max(last_seen, ?) WHERE session_id = ?", (now, session_id))
            _emit_exits(conn, emitted, session_id, [(peer_id, *stint, now) for stint in stints], now)

        return self._write_emitting(write)

    def record_peer_metadata(self, session_id: str, peer_id: str, metadata: str) -> Awaitable[None]:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE participants SET metadata = ? WHERE session_id = ? AND peer_id = ? AND exit_time IS NULL",
                (metadata, session_id, peer_id),
            )

        return self.db.write(write)

    def end_sessions(self, ended: list[tuple[str, int]]) -> Awaitable[None]:
        """Close sessions: (session_id, end_time) pairs."""

        def write(conn: sqlite3.Connection, emitted: list[StoredEvent]) -> None:
            for session_id, end in ended:
                closed = conn.execute(
                    "UPDATE sessions SET end_time = ?, last_seen = ? WHERE session_id = ? AND end_time IS NULL"
                    " RETURNING session_id",
                    (end, end, session_id),
                ).fetchall()
                if closed:
                    # Stints still open end with the session, before it ends (an
                    # exit recorded later, scaled out after a node was reaped,
                    # then finds nothing to close): peer:left comes first.
                    stints = conn.execute(
                        "UPDATE participants SET exit_time = max(join_time, ?) WHERE session_id = ?"
                        " AND exit_time IS NULL RETURNING peer_id, join_time, metadata, role, exit_time",
                        (end, session_id),
                    ).fetchall()
                    _emit_exits(conn, emitted, session_id, sorted(stints, key=lambda s: (s[4], s[1])), end)
                    _emit_ended(conn, emitted, session_id, end)

        return self._write_emitting(write)

    def touch_sessions(self, session_ids: list[str], now: int) -> Awaitable[None]:
        def write(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE sessions SET last_seen = max(last_seen, ?) WHERE session_id = ? AND end_time IS NULL",
                [(now, session_id) for session_id in session_ids],
            )

        return self.db.write(write)

    async def close_interrupted_sessions(self) -> int:
        """Close what a stopped or crashed process left open, at its last known time."""

        def write(conn: sqlite3.Connection, emitted: list[StoredEvent]) -> int:
            exits = conn.execute(
                "UPDATE participants SET exit_time = (SELECT max(s.last_seen, participants.join_time)"
                " FROM sessions s WHERE s.session_id = participants.session_id) WHERE exit_time IS NULL"
                " RETURNING session_id, peer_id, join_time, metadata, role, exit_time"
            ).fetchall()
            by_session: dict[str, list[tuple[str, int, str, str, int]]] = {}
            for session_id, *stint in sorted(exits, key=lambda row: (row[5], row[0])):
                by_session.setdefault(session_id, []).append(tuple(stint))
            closed = conn.execute(
                "UPDATE sessions SET end_time = last_seen WHERE end_time IS NULL RETURNING session_id, end_time"
            ).fetchall()
            for session_id, end in closed:
                _emit_exits(conn, emitted, session_id, by_session.pop(session_id, []), end)
                _emit_ended(conn, emitted, session_id, end)
            for session_id, stints in by_session.items():
                _emit_exits(conn, emitted, session_id, stints, stints[-1][4])
            return len(closed)

        return await self._write_emitting(write)

    async def list_sessions(
        self, project_id: str, room_id: str, before: int | None, limit: int
    ) -> tuple[list[SessionRecord], int | None]:
        """A page of the room's sessions, newest first, and the cursor of the next."""
        rows = await self.db.scan(
            "SELECT seq, session_id, start_time, end_time FROM sessions"
            " WHERE project_id = ? AND room_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
            (project_id, room_id, before if before is not None else 2**62, limit + 1),
        )
        page = rows[:limit]
        next_cursor = page[-1][0] if len(rows) > limit else None
        return [SessionRecord(session_id=s, start_time=st, end_time=e) for _, s, st, e in page], next_cursor

    async def list_participants(self, project_id: str, session_id: str) -> list[Participant] | None:
        if (
            self.db.read_one("SELECT 1 FROM sessions WHERE session_id = ? AND project_id = ?", (session_id, project_id))
            is None
        ):
            return None
        rows = await self.db.scan(
            "SELECT peer_id, join_time, metadata, exit_time FROM participants WHERE session_id = ? ORDER BY id",
            (session_id,),
        )
        return [
            Participant(peer_id=p, join_time=j, metadata=m, exit_time=msgspec.UNSET if e is None else e)
            for p, j, m, e in rows
        ]

    async def metrics(self, project_id: str, now: int) -> Metrics:
        # Running totals kept by triggers (schema version 7), plus the time
        # so far of the sessions still open: no scan of the project's history.
        row = await self.db.scan_one(
            "SELECT t.sessions, t.ended_duration + (SELECT coalesce(sum(? - s.start_time), 0) FROM sessions s"
            " WHERE s.project_id = t.project_id AND s.end_time IS NULL), t.users, t.recordings, t.livestreams"
            " FROM project_totals t WHERE t.project_id = ?",
            (now, project_id),
        )
        sessions, duration, users, recordings, livestreams = row or (0, 0, 0, 0, 0)
        return Metrics(
            total_sessions=sessions,
            total_duration=duration,
            total_users=users,
            recording_count=recordings,
            livestream_count=livestreams,
        )

    # --- recordings and livestreams ----------------------------------------

    async def add_egress_job(self, job: EgressJob) -> bool:
        """Store a new active job; False if the room already has one of its type."""
        values = msgspec.to_builtins(job)
        values["rtmp_urls"] = orjson.dumps(job.rtmp_urls).decode()
        values["active"] = int(job.active)

        def write(conn: sqlite3.Connection, emitted: list[StoredEvent]) -> bool:
            try:
                conn.execute(
                    f"INSERT INTO egress_jobs ({_JOB_COLUMNS}) VALUES ({', '.join('?' * len(_JOB_FIELDS))})",
                    [values[name] for name in _JOB_FIELDS],
                )
            except sqlite3.IntegrityError:
                return False
            payload = events.egress_payload(job)
            emit(conn, emitted, job.project_id, job.room_id, events.RECORDING_STARTED, payload, job.started_at)
            return True

        return await self._write_emitting(write)

    async def delete_egress_job(self, job_id: str) -> None:
        """Take back a job that never ran (its start failed after it was
        stored): `recording:ended`, with nothing recorded, follows its start."""

        def write(conn: sqlite3.Connection, emitted: list[StoredEvent]) -> None:
            row = conn.execute(f"DELETE FROM egress_jobs WHERE id = ? RETURNING {_JOB_COLUMNS}", (job_id,)).fetchone()
            if row is not None:
                job = _job(row)
                payload = events.egress_payload(msgspec.structs.replace(job, stopped_at=None))
                emit(conn, emitted, job.project_id, job.room_id, events.RECORDING_ENDED, payload, job.started_at)

        await self._write_emitting(write)

    async def stints_since(self, project_id: str, since: int) -> list[tuple[int, int | None]]:
        rows = await self.db.scan(
            "SELECT p.join_time, p.exit_time FROM participants p JOIN sessions s ON s.session_id = p.session_id"
            " WHERE s.project_id = ? AND (s.end_time IS NULL OR s.end_time >= ?)"
            " AND (p.exit_time IS NULL OR p.exit_time >= ?)",
            (project_id, since, since),
        )
        return [(join, leave) for join, leave in rows]

    async def session_end_time(self, session_id: str) -> int | None:
        row = self.db.read_one("SELECT coalesce(end_time, last_seen) FROM sessions WHERE session_id = ?", (session_id,))
        return row[0] if row else None

    async def recording(self, job_id: str) -> EgressJob | None:
        """A finished recording, by id alone (its download link was checked)."""
        row = self.db.read_one(
            f"SELECT {_JOB_COLUMNS} FROM egress_jobs WHERE id = ? AND type = 'recording' AND active = 0", (job_id,)
        )
        return _job(row) if row else None

    async def egress_job_by_playback(self, playback_id: str) -> EgressJob | None:
        row = self.db.read_one(f"SELECT {_JOB_COLUMNS} FROM egress_jobs WHERE playback_id = ?", (playback_id,))
        return _job(row) if row else None

    async def active_egress_jobs(self) -> list[EgressJob]:
        return [_job(row) for row in self.db.read(f"SELECT {_JOB_COLUMNS} FROM egress_jobs WHERE active = 1")]

    async def stop_egress_job(
        self, job_id: str, stopped_at: int, size: int, failed_reason: str | None = None, failed_at: int | None = None
    ) -> bool:
        """Mark a job stopped (failed, with a reason); its media part is
        cancelled unless a worker has it."""

        def write(conn: sqlite3.Connection, emitted: list[StoredEvent]) -> bool:
            row = conn.execute(
                "UPDATE egress_jobs SET active = 0, stopped_at = ?, size = ?, failed_reason = ?, failed_at = ?,"
                " media_status = CASE media_status WHEN 'pending' THEN 'cancelled' ELSE media_status END"
                f" WHERE id = ? AND active = 1 RETURNING {_JOB_COLUMNS}",
                (stopped_at, size, failed_reason, failed_at, job_id),
            ).fetchone()
            if row is None:
                return False
            job = _job(row)
            emit(
                conn,
                emitted,
                job.project_id,
                job.room_id,
                events.RECORDING_ENDED,
                events.egress_payload(job),
                stopped_at,
            )
            return True

        return await self._write_emitting(write)

    async def list_recordings(
        self, project_id: str, session_id: str | None, before: int | None, limit: int
    ) -> tuple[list[EgressJob], int | None]:
        """Finished recordings, newest first, and the cursor of the next page."""
        # One query per case, each walking an index in page order (a
        # "session_id = ? OR ? IS NULL" would sort all the project's jobs).
        before = before if before is not None else 2**62
        if session_id is None:
            rows = await self.db.scan(
                f"SELECT seq, {_JOB_COLUMNS} FROM egress_jobs INDEXED BY finished_recordings WHERE project_id = ?"
                " AND type = 'recording' AND active = 0 AND seq < ? ORDER BY seq DESC LIMIT ?",
                (project_id, before, limit + 1),
            )
        else:
            rows = await self.db.scan(
                f"SELECT seq, {_JOB_COLUMNS} FROM egress_jobs INDEXED BY egress_by_session WHERE project_id = ?"
                " AND session_id = ? AND type = 'recording' AND active = 0 AND seq < ? ORDER BY seq DESC LIMIT ?",
                (project_id, session_id, before, limit + 1),
            )
        page = rows[:limit]
        next_cursor = page[-1][0] if len(rows) > limit else None
        return [_job(row[1:]) for row in page], next_cursor

    async def media_jobs(self, project_id: str, status: str | None, limit: int) -> list[EgressJob]:
        rows = self.db.read(
            f"SELECT {_JOB_COLUMNS} FROM egress_jobs WHERE project_id = ? AND (? IS NULL OR media_status = ?)"
            " ORDER BY seq LIMIT ?",
            (project_id, status, status, limit),
        )
        return [_job(row) for row in rows]

    async def update_media(
        self, project_id: str, job_id: str, worker_id: str, now: int, changes: dict[str, Any], claim: bool = False
    ) -> EgressJob | str:
        """Apply a worker's change to a job's media part, if that worker may.

        Returns the updated job, or why not: "missing", "taken" (another worker
        holds a live lease, or the job is past claiming) or "not-claimed".
        """

        def write(conn: sqlite3.Connection) -> EgressJob | str:
            row = conn.execute(
                f"SELECT {_JOB_COLUMNS} FROM egress_jobs WHERE id = ? AND project_id = ?", (job_id, project_id)
            ).fetchone()
            if row is None:
                return "missing"
            job = _job(row)
            if claim:
                claimable = job.media_status == "pending" and job.active
                if not claimable and not (job.media_status == "claimed" and job.worker_id == worker_id):
                    return "taken"
            elif job.media_status != "claimed" or job.worker_id != worker_id:
                return "not-claimed"
            assignments = ", ".join(f"{name} = ?" for name in changes)
            conn.execute(f"UPDATE egress_jobs SET {assignments} WHERE id = ?", [*changes.values(), job_id])
            return _job(conn.execute(f"SELECT {_JOB_COLUMNS} FROM egress_jobs WHERE id = ?", (job_id,)).fetchone())

        return await self.db.write(write)

    async def release_expired_leases(self, now: int) -> int:
        """Give claimed media parts whose worker went silent back to the queue."""

        def write(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE egress_jobs SET media_status = CASE active WHEN 1 THEN 'pending' ELSE 'cancelled' END,"
                " worker_id = NULL, lease_expires_at = NULL"
                " WHERE media_status = 'claimed' AND lease_expires_at < ?",
                (now,),
            ).rowcount

        return await self.db.write(write)


def _nothing(conn: sqlite3.Connection) -> None:
    pass


def _emit_exits(
    conn: sqlite3.Connection,
    emitted: list[StoredEvent],
    session_id: str,
    stints: list[tuple[str, int, str, str, int]],
    now: int,
) -> None:
    """`peer:left` for each (peer, joined at, metadata, role, left at)."""
    if not stints:
        return
    project_id, room_id = conn.execute(
        "SELECT project_id, room_id FROM sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    for peer_id, joined_at, metadata, role, left_at in stints:
        payload = events.peer_left(peer_id, session_id, room_id, joined_at, left_at, metadata, role)
        emit(conn, emitted, project_id, room_id, events.PEER_LEFT, payload, now)


def _emit_ended(conn: sqlite3.Connection, emitted: list[StoredEvent], session_id: str, end: int) -> None:
    project_id, room_id, start, most = conn.execute(
        "SELECT project_id, room_id, start_time, max_participants FROM sessions WHERE session_id = ?", (session_id,)
    ).fetchone()
    (participants,) = conn.execute(
        "SELECT count(DISTINCT peer_id) FROM participants WHERE session_id = ?", (session_id,)
    ).fetchone()
    payload = events.meeting_ended(session_id, room_id, start, end, participants, most)
    emit(conn, emitted, project_id, room_id, events.MEETING_ENDED, payload, end)
