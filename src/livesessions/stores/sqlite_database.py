"""SQLite plumbing: WAL mode, one writer thread with group commit, one reader.

Writes are functions run on the writer thread. Whatever is queued when the
writer wakes runs in one transaction, each in its own savepoint, so one bad
write fails alone while the batch shares one commit. A caller's future
resolves only after its commit, so any read made after it sees the write.
Point reads run on the event loop's thread over their own connection: in WAL
mode they never wait for the writer. Reads that scan history run on a reader
thread of their own (`scan`), so the loop never waits for them.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], T]

_MAX_BATCH = 1024
# A write, its caller's future, and what to call once it is committed.
_Item = tuple[Write[Any], "asyncio.Future[Any]", Callable[[], None] | None]


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before its writer hears of it, so an
    # acknowledged write survives power loss, not only a crash of this process.
    # Group commit (below) spreads the sync over every write in the batch.
    conn.execute("PRAGMA synchronous=FULL")
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
        # Reads that may scan much (history, metrics) run here, off the event
        # loop, over a connection of their own.
        self._scanner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reader")
        self._scanner_conn: sqlite3.Connection | None = None
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

    async def scan(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Like `read`, on the reader thread: for reads whose cost grows with
        history, which would hold every peer and request while they ran."""
        return await asyncio.get_running_loop().run_in_executor(self._scanner, self._scan, sql, params)

    async def scan_one(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        rows = await self.scan(sql, params)
        return rows[0] if rows else None

    def _scan(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._closed:
            raise RuntimeError("the database is closed")
        if self._scanner_conn is None:
            self._scanner_conn = connect(self.path)
        return self._scanner_conn.execute(sql, params).fetchall()

    def _close_scanner(self) -> None:
        if self._scanner_conn is not None:
            self._scanner_conn.close()
            self._scanner_conn = None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=10)
        self._scanner.submit(self._close_scanner)
        self._scanner.shutdown(wait=True)
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
        # One hand-off to the event loop for the whole batch: waking the loop
        # from this thread costs far more than settling a future.
        settled = [
            (future, result, error, on_commit)
            for (_, _, on_commit), (future, result, error) in zip(batch, outcomes, strict=True)
        ]
        loops: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}
        for item in settled:
            loops.setdefault(item[0].get_loop(), []).append(item)
        for loop, items in loops.items():
            try:
                loop.call_soon_threadsafe(_settle_all, items)
            except RuntimeError:  # the loop is closed: no one waits any more
                pass


# A committed write's future, its result or error, and its commit callback.
_Settled = tuple["asyncio.Future[Any]", Any, BaseException | None, Callable[[], None] | None]


def _settle_all(items: list[_Settled]) -> None:
    """On the event loop, in commit order: each write's commit callback, then
    its caller's future."""
    for future, result, error, on_commit in items:
        if on_commit is not None and error is None:
            try:
                on_commit()
            except Exception:
                # Its own failure: the futures after it are settled all the same.
                log.exception("a commit callback failed")
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _ignore(seconds: float) -> None:
    pass
