"""The SQLite plumbing: batched commits, per-write isolation, read-your-writes."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from livesessions.stores.sqlite_database import SQLiteDatabase


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER PRIMARY KEY)")


def test_concurrent_writes_commit_together_and_fail_alone(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "x.sqlite3", _migrate)

    async def scenario() -> list[object]:
        def insert(n: int):
            return lambda conn: conn.execute("INSERT INTO t (n) VALUES (?)", (n,)).lastrowid

        writes = [db.write(insert(n)) for n in range(200)] + [db.write(insert(5))]  # 5 again: a conflict
        return await asyncio.gather(*writes, return_exceptions=True)

    results = asyncio.run(scenario())
    assert results[:200] == list(range(200))
    assert isinstance(results[200], sqlite3.IntegrityError)
    # every good write landed, and is visible to the reader right away
    assert db.read_one("SELECT count(*) FROM t") == (200,)
    db.close()


def test_a_write_that_raises_leaves_nothing_behind(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "x.sqlite3", _migrate)

    def half_then_fail(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (n) VALUES (1)")
        raise ValueError("changed my mind")

    async def scenario() -> None:
        with pytest.raises(ValueError):
            await db.write(half_then_fail)
        await db.write(lambda conn: conn.execute("INSERT INTO t (n) VALUES (2)"))

    asyncio.run(scenario())
    assert db.read("SELECT n FROM t") == [(2,)]
    db.close()
