"""SQLite plumbing: WAL mode, one writer thread with group commit, one reader.

Writes are functions run on the writer thread. Whatever is queued when the
writer wakes runs in one transaction, each in its own savepoint, so one bad
write fails alone while the batch shares one commit. A caller's future
resolves only after its commit, so any read made after it sees the write.
Reads run on the event loop's thread over their own connection: in WAL mode
they never wait for the writer.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], T]

_MAX_BATCH = 1024
# A write, its caller's future, and what to call once it is committed.
_Item = tuple[Write[Any], "asyncio.Future[Any]", Callable[[], None] | None]


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class SQLiteDatabase:
    def __init__(self, path: Path, migrate: Callable[[sqlite3.Connection], None]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        setup = connect(path)
        try:
            setup.execute("BEGIN IMMEDIATE")
            migrate(setup)
            setup.execute("COMMIT")
        finally:
            setup.close()
        self.reader = connect(path)
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run_writer, name="sqlite-writer", daemon=True)
        self._closed = False
        # Told how long each commit took (on the writer thread).
        self.observe_commit: Callable[[float], None] = _ignore
        self._thread.start()

    def queue_depth(self) -> int:
        """Writes queued and not yet picked up by the writer."""
        return self._queue.qsize()

    def write(self, fn: Write[T], on_commit: Callable[[], None] | None = None) -> asyncio.Future[T]:
        """Queue a write; the future resolves after the commit that holds it.

        Queue order is commit order, so callers that queue in the order their
        state changed get the same order on disk. `on_commit` is called on
        the event loop once the write is committed (whether or not anyone
        still waits for the future), in commit order.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._closed or not self._thread.is_alive():
            future.set_exception(RuntimeError("the database is closed"))
        else:
            self._queue.put((fn, future, on_commit))
        return future

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.reader.execute(sql, params).fetchall()

    def read_one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        # fetchall, not fetchone: a half-read statement would hold its read
        # transaction open and pin later reads to an old snapshot.
        rows = self.reader.execute(sql, params).fetchall()
        return rows[0] if rows else None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=10)
        self.reader.close()

    def _run_writer(self) -> None:
        conn = connect(self.path)
        running = True
        while running:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < _MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    running = False
                    break
                batch.append(item)
            self._commit(conn, batch)
        conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, future, _ in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result = fn(conn)
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((future, None, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((future, result, None))
            conn.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - the whole batch failed
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            outcomes = [(future, None, exc) for _, future, _ in batch]
        self.observe_commit(time.perf_counter() - started)
        for (_, _, on_commit), (future, result, error) in zip(batch, outcomes, strict=True):
            loop = future.get_loop()
            if on_commit is not None and error is None:
                loop.call_soon_threadsafe(on_commit)
            loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _ignore(seconds: float) -> None:
    pass
