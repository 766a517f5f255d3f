"""The embedded store's metrics come from running totals kept by triggers
(schema version 7). They must always equal what scanning the history says,
whatever writes came before, and a database of version 6 is brought up to date
with its history counted."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from livesessions.domain.egress import EgressJob
from livesessions.stores import sqlite as embedded
from livesessions.stores.sqlite import SQLiteStore

PROJECTS = ("prj_a", "prj_b")


def scanned(conn: sqlite3.Connection, project_id: str, now: int) -> dict[str, int]:
    """The metrics as the history says them, by the queries the totals replaced."""
    sessions, duration = conn.execute(
        "SELECT count(*), coalesce(sum(coalesce(end_time, ?) - start_time), 0) FROM sessions WHERE project_id = ?",
        (now, project_id),
    ).fetchone()
    (users,) = conn.execute(
        "SELECT count(DISTINCT p.peer_id) FROM participants p"
        " JOIN sessions s ON s.session_id = p.session_id WHERE s.project_id = ?",
        (project_id,),
    ).fetchone()
    counts = dict(
        conn.execute("SELECT type, count(*) FROM egress_jobs WHERE project_id = ? GROUP BY type", (project_id,))
    )
    return {
        "totalSessions": sessions,
        "totalDuration": duration,
        "totalUsers": users,
        "recordingCount": counts.get("recording", 0),
        "livestreamCount": counts.get("livestream", 0),
    }


def job(job_id: str, project_id: str, session_id: str, kind: str, now: int) -> EgressJob:
    return EgressJob(
        id=job_id,
        project_id=project_id,
        room_id="abc-defg-hij",
        session_id=session_id,
        type=kind,
        active=True,
        started_at=now,
        rtmp_urls=["rtmp://example.com/live/x"] if kind == "livestream" else [],
    )


async def random_history(store: SQLiteStore, seed: int, steps: int, check: Any) -> None:
    """Joins, exits, ends, crashes and egress jobs in a random order, the
    totals checked against a scan after each step."""
    rng = random.Random(seed)
    now = 1_000
    open_sessions: dict[str, tuple[str, str, set[str]]] = {}
    jobs: list[str] = []
    for counter in range(1, steps + 1):
        now += rng.randrange(1, 500)
        action = rng.random()
        if action < 0.25 or not open_sessions:
            project = rng.choice(PROJECTS)
            session_id = f"ses_{counter}"
            peer = f"peer-{rng.randrange(12)}"
            await store.record_join(project, f"abc-defg-{counter:03d}", session_id, now, peer, "host", "", now)
            open_sessions[session_id] = (project, peer, {peer})
        elif action < 0.5:
            session_id = rng.choice(sorted(open_sessions))
            project, _, peers = open_sessions[session_id]
            peer = f"peer-{rng.randrange(12)}"
            if peer not in peers:
                await store.record_join(project, "abc-defg-hij", session_id, None, peer, "guest", "", now)
                peers.add(peer)
        elif action < 0.6:
            session_id = rng.choice(sorted(open_sessions))
            _, _, peers = open_sessions[session_id]
            await store.record_exit(session_id, sorted(peers)[0], now)
        elif action < 0.75:
            session_id = rng.choice(sorted(open_sessions))
            await store.end_sessions([(session_id, now)])
            del open_sessions[session_id]
        elif action < 0.8:
            await store.close_interrupted_sessions()
            open_sessions.clear()
        elif action < 0.93:
            session_id = rng.choice(sorted(open_sessions))
            project = open_sessions[session_id][0]
            kind = rng.choice(("recording", "livestream"))
            job_id = f"job_{counter}"
            if await store.add_egress_job(job(job_id, project, session_id, kind, now)):
                jobs.append(job_id)
        elif jobs:
            await store.delete_egress_job(jobs.pop(rng.randrange(len(jobs))))
        await check(now)


@pytest.mark.parametrize("seed", range(6))
def test_totals_equal_a_scan_of_the_history_after_every_write(tmp_path: Path, seed: int) -> None:
    async def scenario() -> None:
        store = SQLiteStore(tmp_path / "db.sqlite3")
        scan = sqlite3.connect(tmp_path / "db.sqlite3")

        async def check(now: int) -> None:
            for project in (*PROJECTS, "prj_none"):
                later = now + 777
                assert msgspec.to_builtins(await store.metrics(project, later)) == scanned(scan, project, later)

        try:
            await random_history(store, seed, 120, check)
        finally:
            scan.close()
            store.close()

    asyncio.run(scenario())


def test_a_database_of_version_6_gets_totals_of_its_whole_history(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"

    async def write_history() -> None:
        store = SQLiteStore(path)
        try:
            await random_history(store, 99, 150, _nothing)
        finally:
            store.close()

    asyncio.run(write_history())
    # Back to version 6: as if the history had been written before the totals.
    conn = sqlite3.connect(path)
    expected = {project: scanned(conn, project, 10**6) for project in PROJECTS}
    assert any(e["totalSessions"] and e["totalUsers"] and e["recordingCount"] for e in expected.values())
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP INDEX sessions_open_by_project")
    conn.execute("DROP INDEX finished_recordings")
    conn.execute("DROP TABLE project_totals")
    conn.execute("DROP TABLE project_peers")
    conn.execute(f"PRAGMA user_version = {len(embedded._SCHEMA) - 1}")
    conn.commit()
    conn.close()

    async def read() -> None:
        store = SQLiteStore(path)
        try:
            for project in PROJECTS:
                assert msgspec.to_builtins(await store.metrics(project, 10**6)) == expected[project]
        finally:
            store.close()

    asyncio.run(read())


async def _nothing(now: int) -> None:
    pass
