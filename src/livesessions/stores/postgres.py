"""The scaled-out durable store: the embedded store's records, in PostgreSQL.

Same methods and meanings as `SQLiteStore` (stores/sqlite.py), shared by every
node of a cluster:

- Reads go through an asyncpg pool; asyncpg prepares each statement once per
  connection and reuses it.
- Writes go through one writer task per process, the equivalent of the SQLite
  store's writer thread: whatever is queued when it wakes is committed in one
  transaction, each write in its own savepoint (one bad write fails alone), in
  the order the writes were queued. A write is queued when its method is
  called (`record_*`, `end_sessions`, `touch_sessions` return an awaitable
  without being coroutines), and its awaitable resolves only once committed.
- While PostgreSQL is unreachable the writer keeps its batch and retries it,
  backing off, and new writes wait behind it in a bounded buffer. When the
  buffer is full a write fails at once with `WriteBufferFull`, so a caller can
  refuse what it cannot keep instead of accepting it and losing it.
- A batch whose COMMIT was sent when the connection broke may or may not have
  landed: the writer asks PostgreSQL what became of that transaction (by its
  id) before doing anything, so a retried batch never lands twice.

Open one with `await PostgresStore.connect(url)`; it applies the schema
migrations first (stores/postgres_schema.py), under an advisory lock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import msgspec
import orjson

from livesessions.domain import events
from livesessions.domain.egress import EgressJob
from livesessions.domain.ids import new_project_id, new_room_id
from livesessions.domain.records import ApiKeyRecord, Metrics, Participant, Project, Room, SessionRecord
from livesessions.stores.postgres_events import (
    NOTIFY_UNSEQUENCED,
    SEQUENCER_LOCK,
    NewEvent,
    PostgresEvents,
    emit,
    event_arrays,
    insert_events,
)
from livesessions.stores.postgres_events import rowcount as _rowcount
from livesessions.stores.postgres_schema import migrate
from livesessions.telemetry import Telemetry

log = logging.getLogger(__name__)

T = TypeVar("T")
# A write: run on the writer's connection, inside the batch's transaction.
Write = Callable[[Any], Awaitable[T]]


class WriteTimedOut(Exception):
    """A write was not committed within the store's write deadline (PostgreSQL
    unreachable or stalled): the caller stops waiting, answering 503 rather than
    hanging. The write stays queued and may still be committed later."""


class WriteBufferFull(Exception):
    """The write was not queued: PostgreSQL has been unreachable (or too slow)
    long enough that the buffer of writes waiting for it is full. Nothing was
    written; `PostgresStore.accepting_writes()` says so before trying."""


# Errors meaning the connection (or the server) is gone or not taking work,
# rather than that one write was wrong: the batch is kept and retried.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08, and a connection lost mid-query
    asyncpg.exceptions.CannotConnectNowError,  # starting up, shutting down
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby, during a failover
)
# A write that lost a deadlock or serialization race with another node is
# run again (in its own savepoint) rather than failed.
_RACE_LOST = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)
_RACE_RETRIES = 3

_MAX_BATCH = 1024


def _unreachable(exc: BaseException, conn: Any) -> bool:
    return isinstance(exc, _UNREACHABLE) or (conn is not None and conn.is_closed())


class _CommitUnknown(Exception):
    """The connection broke while COMMIT was in flight."""

    def __init__(self, xid: int, server_pid: int, outcomes: list[_Outcome]) -> None:
        super().__init__(f"connection lost during the commit of transaction {xid}")
        self.xid = xid
        self.server_pid = server_pid
        self.outcomes = outcomes


_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class _Writer:
    """One task committing queued writes in order, in batches, retrying
    while the database is unreachable."""

    def __init__(
        self,
        dsn: str,
        *,
        max_pending: int,
        max_batch: int,
        retry_delay: float,
        max_retry_delay: float,
        command_timeout: float,
        connect_timeout: float,
    ) -> None:
        self._dsn = dsn
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._command_timeout = command_timeout
        self._connect_timeout = connect_timeout
        self._queue: collections.deque[tuple[Write[Any], asyncio.Future[Any]]] = collections.deque()
        self._in_flight: list[tuple[Write[Any], asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._conn: Any = None
        # Told how long each commit took.
        self.observe_commit: Callable[[float], None] = _ignore
        # Attempts that failed because the database was unreachable.
        self.retries = 0
        self._task = asyncio.get_running_loop().create_task(self._run(), name="postgres-writer")

    def pending(self) -> int:
        """Writes queued or being committed, not yet committed."""
        return len(self._queue) + len(self._in_flight)

    def accepting(self) -> bool:
        return not self._closing and self.pending() < self._max_pending

    def submit(self, fn: Write[T]) -> asyncio.Future[T]:
        """Queue a write; the future resolves after the commit that holds it."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if self._closing:
            future.set_exception(RuntimeError("the database is closed"))
        elif self.pending() >= self._max_pending:
            future.set_exception(
                WriteBufferFull(
                    f"PostgreSQL is unreachable or not keeping up: {self.pending()} writes are already"
                    " waiting for it, and no more are taken until they are written"
                )
            )
        else:
            self._queue.append((fn, future))
            self._wake.set()
        return future

    def stop_taking(self) -> None:
        """Refuse new writes from now on; the queued ones still go in."""
        self._closing = True
        self._wake.set()

    async def aclose(self, timeout: float) -> None:
        """Commit what is queued (for at most `timeout` seconds), then stop."""
        self.stop_taking()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_left(RuntimeError("the database was closed before this write was committed"))
        self._drop_connection()

    def terminate(self) -> None:
        """Stop now, without waiting for anything."""
        self._closing = True
        if not self._task.done():
            with contextlib.suppress(RuntimeError):  # its loop is already closed
                self._task.cancel()
        self._fail_left(RuntimeError("the database was closed before this write was committed"))
        self._drop_connection()

    def _fail_left(self, error: BaseException) -> None:
        left = self._in_flight + list(self._queue)
        self._in_flight = []
        self._queue.clear()
        for _, future in left:
            _settle(future, None, error)

    async def _run(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
                self._in_flight = batch
                try:
                    outcomes = await self._commit_until_done(batch)
                except Exception as exc:  # a bug here must not leave callers waiting forever
                    log.exception("the PostgreSQL writer failed a batch")
                    outcomes = [(future, None, exc) for _, future in batch]
                self._in_flight = []
                for future, result, error in outcomes:
                    _settle(future, result, error)
        finally:
            self._drop_connection()

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = None
            self._conn = await asyncpg.connect(
                self._dsn, timeout=self._connect_timeout, command_timeout=self._command_timeout
            )
        return self._conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(RuntimeError):  # its loop is already closed
                conn.terminate()

    async def _commit_until_done(self, batch: list[tuple[Write[Any], asyncio.Future[Any]]]) -> list[_Outcome]:
        delay = self._retry_delay
        failed_since: float | None = None
        while True:
            conn = None
            try:
                conn = await self._connection()
                outcomes = await self._commit(conn, batch)
            except _CommitUnknown as unknown:
                self._drop_connection()
                status = await self._transaction_status(unknown.xid, unknown.server_pid)
                log.warning(
                    "the connection broke while transaction %d was committing; it was %s",
                    unknown.xid,
                    status or "forgotten",
                )
                if status == "committed":
                    outcomes = unknown.outcomes
                elif status is None:
                    error = RuntimeError(f"the outcome of transaction {unknown.xid} cannot be known")
                    outcomes = [(future, None, error) for _, future in batch]
                else:
                    continue  # it did not land: run the batch again
            except Exception as exc:  # noqa: BLE001 - handed to the callers, or retried
                if not _unreachable(exc, conn):
                    outcomes = [(future, None, exc) for _, future in batch]  # the whole batch failed
                else:
                    self._drop_connection()
                    self.retries += 1
                    if failed_since is None:
                        failed_since = time.monotonic()
                        log.warning(
                            "PostgreSQL is unreachable (%s: %s); %d write(s) waiting, retrying",
                            type(exc).__name__,
                            exc,
                            self.pending(),
                        )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_retry_delay)
                    continue
            if failed_since is not None:
                log.warning(
                    "PostgreSQL is reachable again after %.1f s; the waiting writes are being committed",
                    time.monotonic() - failed_since,
                )
            return outcomes

    async def _commit(self, conn: Any, batch: list[tuple[Write[Any], asyncio.Future[Any]]]) -> list[_Outcome]:
        started = time.perf_counter()
        outcomes: list[_Outcome] = []
        try:
            # Savepoint `w` is always open between writes: released and set
            # again after a good write, rolled back to (and so kept) after a bad one.
            await conn.execute("BEGIN; SAVEPOINT w")
            for fn, future in batch:
                races = 0
                while True:
                    try:
                        result = await fn(conn)
                    except Exception as exc:
                        if _unreachable(exc, conn):
                            raise
                        await conn.execute("ROLLBACK TO SAVEPOINT w")
                        if isinstance(exc, _RACE_LOST) and races < _RACE_RETRIES:
                            races += 1
                            continue
                        outcomes.append((future, None, exc))
                    else:
                        await conn.execute("RELEASE SAVEPOINT w; SAVEPOINT w")
                        outcomes.append((future, result, None))
                    break
            xid = await conn.fetchval("SELECT txid_current()")
        except Exception:
            if not conn.is_closed() and conn.is_in_transaction():
                try:
                    await conn.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 - the connection is dropped instead
                    self._drop_connection()
            raise
        except BaseException:  # cancelled: nothing was committed, and the connection's state is unknown
            self._drop_connection()
            raise
        try:
            await conn.execute("COMMIT")
        except Exception as exc:
            if _unreachable(exc, conn):
                raise _CommitUnknown(xid, conn.get_server_pid(), outcomes) from exc
            raise  # PostgreSQL refused the commit: nothing landed
        self.observe_commit(time.perf_counter() - started)
        return outcomes

    async def _transaction_status(self, xid: int, server_pid: int) -> str | None:
        """What became of a transaction whose COMMIT may not have arrived:
        "committed", "aborted", or None when PostgreSQL no longer knows."""
        delay = self._retry_delay
        while True:
            try:
                conn = await self._connection()
                status: str | None = await conn.fetchval("SELECT txid_status($1)", xid)
                if status != "in progress":
                    return status
                log.info("transaction %d is still open on backend %d: ending that backend", xid, server_pid)
                # Its backend has not noticed the broken connection yet and
                # may be holding the transaction open: end it, so the
                # transaction commits (if COMMIT got there) or aborts for good.
                await conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE pid = $1 AND backend_xid::text = ($2::bigint % 4294967296)::text",
                    server_pid,
                    xid,
                )
            except Exception as exc:
                if not _unreachable(exc, self._conn):
                    log.exception("could not learn the outcome of transaction %d", xid)
                    return None
                self._drop_connection()
                self.retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_retry_delay)


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    with contextlib.suppress(RuntimeError):  # its loop is already closed
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def _ignore(seconds: float) -> None:
    pass


def _room(row: Any) -> Room:
    room_id, created_at, locked, metadata = row
    return Room(
        room_id=room_id,
        created_at=created_at,
        room_locked=locked,
        metadata=orjson.loads(metadata) if metadata is not None else None,
    )


_ROOM_COLUMNS = "room_id, created_at, room_locked, metadata"

_JOB_FIELDS: tuple[str, ...] = EgressJob.__struct_fields__
_JOB_COLUMNS = ", ".join(_JOB_FIELDS)
_NO_CURSOR = 2**62


def _job(row: Any) -> EgressJob:
    values = dict(zip(_JOB_FIELDS, row, strict=True))
    values["rtmp_urls"] = orjson.loads(values["rtmp_urls"])
    return EgressJob(**values)


def _job_value(name: str, value: Any) -> Any:
    """A job field as its column takes it."""
    return orjson.dumps(value).decode() if name == "rtmp_urls" else value


def _placeholders(count: int, start: int = 1) -> str:
    return ", ".join(f"${n}" for n in range(start, start + count))


class PostgresStore(PostgresEvents):
    """Open with `await PostgresStore.connect(url)`; then `await
    start_events()` to follow the events every node writes (see
    stores/postgres_events.py)."""

    def __init__(
        self,
        pool: Any,
        writer: _Writer,
        write_deadline: float = 10.0,
        *,
        dsn: str | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self._pool = pool
        self._writer = writer
        self._write_deadline = write_deadline
        self._loop = asyncio.get_running_loop()
        self._closing: asyncio.Task[None] | None = None
        self._dsn = dsn if dsn is not None else writer._dsn
        self._connect_timeout = connect_timeout
        self._event_listeners = []
        self._feed = None

    @classmethod
    async def connect(
        cls,
        dsn: str,
        *,
        pool_size: int = 10,
        max_pending_writes: int = 10_000,
        max_batch: int = _MAX_BATCH,
        retry_delay: float = 0.05,
        max_retry_delay: float = 2.0,
        command_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        write_deadline: float = 10.0,
    ) -> PostgresStore:
        """Migrate the database (under an advisory lock), then open the read
        pool and start the writer. `max_pending_writes` bounds the writes
        waiting while PostgreSQL is unreachable; `retry_delay` is the first
        wait between attempts, doubling up to `max_retry_delay`."""
        conn = await asyncpg.connect(dsn, timeout=connect_timeout)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=pool_size, timeout=connect_timeout, command_timeout=command_timeout
        )
        writer = _Writer(
            dsn,
            max_pending=max_pending_writes,
            max_batch=max_batch,
            retry_delay=retry_delay,
            max_retry_delay=max_retry_delay,
            command_timeout=command_timeout,
            connect_timeout=connect_timeout,
        )
        return cls(pool, writer, write_deadline, dsn=dsn, connect_timeout=connect_timeout)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Commit what is queued (waiting at most `timeout` seconds), then
        close every connection. Writes still waiting then fail."""
        if self._closing is None:
            self._writer.stop_taking()
            self._closing = asyncio.get_running_loop().create_task(self._close(timeout))
        await asyncio.shield(self._closing)

    async def _close(self, timeout: float) -> None:
        await self._stop_events()
        await self._writer.aclose(timeout)
        await self._sequence_at_close(timeout)
        try:
            await asyncio.wait_for(self._pool.close(), timeout)
        except TimeoutError:
            self._pool.terminate()

    def close(self) -> None:
        """The synchronous close of the `Store` interface. Called on the
        store's event loop it cannot wait: it starts `aclose()` and returns
        (await `aclose()` instead to know the queue was committed). Called
        with no loop running, it drops the connections at once."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._writer.stop_taking()
            if self._closing is None:
                self._closing = self._loop.create_task(self._close(10.0))
            return
        self._terminate_events()
        self._writer.terminate()
        with contextlib.suppress(RuntimeError):  # the pool's loop is already closed
            self._pool.terminate()

    async def ping(self) -> None:
        await self._pool.fetchval("SELECT 1")

    def instrument(self, telemetry: Telemetry) -> None:
        self._writer.observe_commit = telemetry.commits.observe

        async def queue_depth() -> None:
            telemetry.write_queue.set(self._writer.pending())

        telemetry.refresh_before_scrape(queue_depth)

    def _write(self, fn: Write[T]) -> Awaitable[T]:
        """Queue a write now (in call order); awaiting it waits for its commit,
        at most the write deadline (`write_deadline`, then WriteTimedOut)."""
        future = self._writer.submit(fn)
        # Retrieved here too, so that a write nobody waits for any more (its
        # caller timed out) does not log an unretrieved exception.
        future.add_done_callback(_consume)
        return self._committed(future)

    async def _committed(self, future: asyncio.Future[T]) -> T:
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._write_deadline)
        except TimeoutError:
            raise WriteTimedOut(
                f"PostgreSQL did not commit the write within {self._write_deadline:g} s; it stays queued"
            ) from None

    def accepting_writes(self) -> bool:
        """False while a write would fail with `WriteBufferFull` (or the store
        is closed): lets a caller refuse a join before admitting it."""
        return self._writer.accepting()

    def pending_writes(self) -> int:
        """Writes queued and not yet committed."""
        return self._writer.pending()

    async def secret(self, name: str, create: Callable[[], bytes]) -> bytes:
        """The service's secret called `name`, made with `create` the first
        time any node asks (once for the whole cluster)."""
        async with self._pool.acquire() as conn:
            value = await conn.fetchval("SELECT value FROM service_secrets WHERE name = $1", name)
            if value is not None:
                return bytes(value)
            async with conn.transaction():
                # Two nodes starting at once must not each make their own.
                await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"secret:{name}")
                value = await conn.fetchval("SELECT value FROM service_secrets WHERE name = $1", name)
                if value is None:
                    value = create()
                    await conn.execute(
                        "INSERT INTO service_secrets (name, value, created_at) VALUES ($1, $2, $3)",
                        name,
                        value,
                        int(time.time() * 1000),
                    )
            return bytes(value)

    # --- projects and keys ------------------------------------------------

    async def project_for_wallet(self, wallet_address: str, now: int) -> Project:
        """The wallet's project, created on first use."""
        address = wallet_address.lower()
        select = "SELECT project_id, wallet_address, created_at FROM projects WHERE wallet_address = $1"

        async def write(conn: Any) -> Project:
            row = await conn.fetchrow(select, address)
            if row is not None:
                return Project(*row)
            project = Project(project_id=new_project_id(), wallet_address=address, created_at=now)
            inserted = await conn.fetchval(
                "INSERT INTO projects (project_id, wallet_address, created_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (wallet_address) DO NOTHING RETURNING project_id",
                project.project_id,
                project.wallet_address,
                project.created_at,
            )
            if inserted is not None:
                return project
            return Project(*await conn.fetchrow(select, address))  # another node made it first

        return await self._write(write)

    async def add_api_key(
        self, project_id: str, key_id: str, name: str, key_hash: str, masked_key: str, now: int
    ) -> ApiKeyRecord:
        async def write(conn: Any) -> None:
            await conn.execute(
                "INSERT INTO api_keys (id, project_id, name, key_hash, masked_key, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                key_id,
                project_id,
                name,
                key_hash,
                masked_key,
                now,
            )

        await self._write(write)
        return ApiKeyRecord(id=key_id, name=name, masked_key=masked_key, created_at=now, last_used_at=None)

    async def list_api_keys(self, project_id: str) -> list[ApiKeyRecord]:
        rows = await self._pool.fetch(
            "SELECT id, name, masked_key, created_at, last_used_at FROM api_keys"
            " WHERE project_id = $1 AND revoked_at IS NULL ORDER BY created_at, id",
            project_id,
        )
        return [ApiKeyRecord(id=i, name=n, masked_key=m, created_at=c, last_used_at=u) for i, n, m, c, u in rows]

    async def all_api_keys(self, wallet_address: str | None) -> list[tuple[str, str, ApiKeyRecord]]:
        """(project id, wallet, key) of every working key, or of one wallet's, oldest first."""
        rows = await self._pool.fetch(
            "SELECT p.project_id, p.wallet_address, k.id, k.name, k.masked_key, k.created_at, k.last_used_at"
            " FROM api_keys k JOIN projects p ON p.project_id = k.project_id"
            " WHERE k.revoked_at IS NULL AND ($1::text IS NULL OR p.wallet_address = $1)"
            " ORDER BY k.created_at, k.id",
            wallet_address,
        )
        return [
            (project_id, wallet, ApiKeyRecord(id=i, name=n, masked_key=m, created_at=c, last_used_at=u))
            for project_id, wallet, i, n, m, c, u in rows
        ]

    async def api_key_project(self, key_id: str) -> str | None:
        project_id: str | None = await self._pool.fetchval(
            "SELECT project_id FROM api_keys WHERE id = $1 AND revoked_at IS NULL", key_id
        )
        return project_id

    async def api_key_hash(self, project_id: str, key_id: str) -> str | None:
        key_hash: str | None = await self._pool.fetchval(
            "SELECT key_hash FROM api_keys WHERE id = $1 AND project_id = $2 AND revoked_at IS NULL",
            key_id,
            project_id,
        )
        return key_hash

    async def revoke_api_key(self, key_hash: str, now: int) -> None:
        async def write(conn: Any) -> None:
            await conn.execute(
                "UPDATE api_keys SET revoked_at = $1 WHERE key_hash = $2 AND revoked_at IS NULL", now, key_hash
            )
            # Its webhooks were signed with it: nothing more is sent to them
            # (what waited is dropped). Under the sequencer's lock, so that it
            # queues nothing more for them either.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", SEQUENCER_LOCK)
            await conn.execute(
                "WITH disabled AS (UPDATE webhooks SET status = 'disabled'"
                " WHERE key_id IN (SELECT id FROM api_keys WHERE key_hash = $1) AND status <> 'disabled' RETURNING id)"
                " DELETE FROM webhook_queue WHERE webhook_id IN (SELECT id FROM disabled)",
                key_hash,
            )

        await self._write(write)

    async def record_key_use(self, last_used: dict[str, int]) -> None:
        uses = [(when, key_hash) for key_hash, when in last_used.items()]

        async def write(conn: Any) -> None:
            if uses:
                await conn.executemany(
                    "UPDATE api_keys SET last_used_at = GREATEST(coalesce(last_used_at, 0), $1) WHERE key_hash = $2",
                    uses,
                )

        await self._write(write)

    async def first_sign_in(self, project_id: str, now: int) -> bool:
        """Mark the project's first wallet sign-in; False if it had one before."""

        async def write(conn: Any) -> bool:
            status = await conn.execute(
                "UPDATE projects SET first_sign_in_at = $1 WHERE project_id = $2 AND first_sign_in_at IS NULL",
                now,
                project_id,
            )
            return _rowcount(status) == 1

        return await self._write(write)

    async def add_nonce(self, nonce: str, expires_at: int) -> None:
        async def write(conn: Any) -> None:
            await conn.execute("INSERT INTO sign_in_nonces (nonce, expires_at) VALUES ($1, $2)", nonce, expires_at)

        await self._write(write)

    async def consume_nonce(self, nonce: str, now: int) -> bool:
        """Use a nonce up: True only the first time, and only before it expires.
        Single-use across nodes: a concurrent UPDATE of the same row waits for
        the first to commit, then finds it used."""

        async def write(conn: Any) -> bool:
            status = await conn.execute(
                "UPDATE sign_in_nonces SET used_at = $1 WHERE nonce = $2 AND used_at IS NULL AND expires_at > $1",
                now,
                nonce,
            )
            return _rowcount(status) == 1

        return await self._write(write)

    async def add_account_session(self, token_hash: str, project_id: str, address: str, expires_at: int) -> None:
        async def write(conn: Any) -> None:
            await conn.execute(
                "INSERT INTO account_sessions (token_hash, project_id, wallet_address, expires_at)"
                " VALUES ($1, $2, $3, $4)",
                token_hash,
                project_id,
                address,
                expires_at,
            )

        await self._write(write)

    async def account_session(self, token_hash: str, now: int) -> tuple[str, str] | None:
        row = await self._pool.fetchrow(
            "SELECT project_id, wallet_address FROM account_sessions WHERE token_hash = $1 AND expires_at > $2",
            token_hash,
            now,
        )
        return (row[0], row[1]) if row else None

    async def end_account_sessions(self, token_hash: str, everywhere: bool) -> None:
        """End this account session, or with `everywhere` every session of its project."""

        async def write(conn: Any) -> None:
            if everywhere:
                await conn.execute(
                    "DELETE FROM account_sessions WHERE project_id ="
                    " (SELECT project_id FROM account_sessions WHERE token_hash = $1)",
                    token_hash,
                )
            else:
                await conn.execute("DELETE FROM account_sessions WHERE token_hash = $1", token_hash)

        await self._write(write)

    async def forget_expired_sign_ins(self, now: int) -> None:
        async def write(conn: Any) -> None:
            await conn.execute("DELETE FROM sign_in_nonces WHERE expires_at < $1", now)
            await conn.execute("DELETE FROM account_sessions WHERE expires_at < $1", now)

        await self._write(write)

    async def project_for_key_hash(self, key_hash: str) -> tuple[str, str] | None:
        row = await self._pool.fetchrow(
            "SELECT project_id, id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", key_hash
        )
        return (row[0], row[1]) if row else None

    async def api_key_active(self, key_id: str) -> bool:
        active = await self._pool.fetchval("SELECT revoked_at IS NULL FROM api_keys WHERE id = $1", key_id)
        return bool(active)

    async def keys_revoked_since(self, since: int) -> list[tuple[str, str, int]]:
        rows = await self._pool.fetch("SELECT key_hash, id, revoked_at FROM api_keys WHERE revoked_at >= $1", since)
        return [(key_hash, key_id, revoked_at) for key_hash, key_id, revoked_at in rows]

    async def whitelisted_domains(self, project_id: str) -> list[str]:
        domains = await self._pool.fetchval(
            "SELECT whitelisted_domains FROM projects WHERE project_id = $1", project_id
        )
        return list(domains) if domains is not None else []

    async def set_whitelisted_domains(self, project_id: str, domains: list[str]) -> None:
        listed = list(domains)

        async def write(conn: Any) -> None:
            await conn.execute("UPDATE projects SET whitelisted_domains = $1 WHERE project_id = $2", listed, project_id)

        await self._write(write)

    async def all_whitelisted_domains(self, wallet_address: str | None) -> list[tuple[str, str, list[str]]]:
        rows = await self._pool.fetch(
            "SELECT project_id, wallet_address, whitelisted_domains FROM projects"
            " WHERE ($1::text IS NULL AND cardinality(whitelisted_domains) > 0) OR wallet_address = $1"
            " ORDER BY created_at, project_id",
            wallet_address,
        )
        return [(project_id, wallet, list(domains)) for project_id, wallet, domains in rows]

    # --- rooms ------------------------------------------------------------

    async def create_room(self, project_id: str, metadata: dict[str, Any] | None, locked: bool, now: int) -> Room:
        encoded = orjson.dumps(metadata).decode() if metadata is not None else None

        async def write(conn: Any) -> str:
            while True:
                room_id = new_room_id()
                inserted: str | None = await conn.fetchval(
                    "INSERT INTO rooms (room_id, project_id, created_at, room_locked, metadata)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id) DO NOTHING RETURNING room_id",
                    room_id,
                    project_id,
                    now,
                    locked,
                    encoded,
                )
                if inserted is not None:
                    return inserted
                # that id was taken once: ids are never reused

        room_id = await self._write(write)
        return Room(room_id=room_id, created_at=now, room_locked=locked, metadata=metadata)

    async def get_room(self, project_id: str, room_id: str) -> Room | None:
        row = await self._pool.fetchrow(
            f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE room_id = $1 AND project_id = $2", room_id, project_id
        )
        return _room(row) if row else None

    async def list_rooms(self, project_id: str, offset: int, limit: int) -> tuple[list[Room], int]:
        """A page of the project's rooms, newest first, and how many there are."""
        rows = await self._pool.fetch(
            f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE project_id = $1 ORDER BY seq DESC LIMIT $2 OFFSET $3",
            project_id,
            limit,
            offset,
        )
        total: int = await self._pool.fetchval("SELECT count(*) FROM rooms WHERE project_id = $1", project_id)
        return [_room(row) for row in rows], total

    async def set_room_metadata(self, project_id: str, room_id: str, metadata: dict[str, Any]) -> bool:
        encoded = orjson.dumps(metadata).decode()

        async def write(conn: Any) -> bool:
            status = await conn.execute(
                "UPDATE rooms SET metadata = $1 WHERE room_id = $2 AND project_id = $3", encoded, room_id, project_id
            )
            return _rowcount(status) == 1

        return await self._write(write)

    async def set_room_locked(self, project_id: str, room_id: str, locked: bool) -> bool:
        async def write(conn: Any) -> bool:
            status = await conn.execute(
                "UPDATE rooms SET room_locked = $1 WHERE room_id = $2 AND project_id = $3", locked, room_id, project_id
            )
            return _rowcount(status) == 1

        return await self._write(write)

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

        # Scaled out, the join that started the session may be written by
        # another node, after this one: whichever comes first makes the row
        # (and says the meeting started), and the starting join sets its
        # start time.
        upsert = (
            "INSERT INTO sessions (session_id, project_id, room_id, start_time, last_seen) VALUES ($1, $2, $3, $4, $5)"
            " ON CONFLICT (session_id) DO UPDATE SET last_seen = GREATEST(sessions.last_seen, EXCLUDED.last_seen)"
        )
        if session_start is not None:
            upsert += ", start_time = EXCLUDED.start_time"
        upsert += " RETURNING (xmax = 0)"
        start = now if session_start is None else session_start

        async def write(conn: Any) -> None:
            inserted = await conn.fetchval(upsert, session_id, project_id, room_id, start, now)
            told = []
            if inserted:
                payload = events.meeting_started(session_id, room_id, start)
                told.append(NewEvent(project_id, room_id, events.MEETING_STARTED, payload, now))
            payload = events.peer_joined(peer_id, session_id, room_id, now, metadata, role)
            told.append(NewEvent(project_id, room_id, events.PEER_JOINED, payload, now))
            await conn.execute(_JOIN, session_id, peer_id, role, metadata, now, *event_arrays(told))

        return self._write(write)

    def record_exit(self, session_id: str, peer_id: str, now: int) -> Awaitable[None]:
        async def write(conn: Any) -> None:
            stints = await conn.fetch(
                "WITH stint AS (UPDATE participants SET exit_time = $1"
                " WHERE session_id = $2 AND peer_id = $3 AND exit_time IS NULL"
                " RETURNING id, join_time, metadata, role),"
                " session AS (UPDATE sessions SET last_seen = GREATEST(last_seen, $1) WHERE session_id = $2"
                " RETURNING project_id, room_id)"
                " SELECT stint.id, join_time, metadata, role, project_id, room_id FROM stint, session"
                " ORDER BY stint.id",
                now,
                session_id,
                peer_id,
            )
            await emit(
                conn,
                [
                    NewEvent(
                        project_id,
                        room_id,
                        events.PEER_LEFT,
                        events.peer_left(peer_id, session_id, room_id, joined_at, now, metadata, role),
                        now,
                    )
                    for _, joined_at, metadata, role, project_id, room_id in stints
                ],
            )

        return self._write(write)

    def record_peer_metadata(self, session_id: str, peer_id: str, metadata: str) -> Awaitable[None]:
        async def write(conn: Any) -> None:
            await conn.execute(
                "UPDATE participants SET metadata = $1 WHERE session_id = $2 AND peer_id = $3 AND exit_time IS NULL",
                metadata,
                session_id,
                peer_id,
            )

        return self._write(write)

    def end_sessions(self, ended: list[tuple[str, int]]) -> Awaitable[None]:
        """Close sessions: (session_id, end_time) pairs."""
        rows = list(ended)

        async def write(conn: Any) -> None:
            told: list[NewEvent] = []
            for session_id, end in rows:
                closed = await conn.fetchrow(
                    "UPDATE sessions SET end_time = $1, last_seen = $1 WHERE session_id = $2 AND end_time IS NULL"
                    f" RETURNING {_ENDED_COLUMNS}",
                    end,
                    session_id,
                )
                if closed is not None:
                    project_id, room_id, start, most, participants = closed
                    # Stints still open end with the session, before it ends:
                    # the exits of a reaped node's peers may be recorded after
                    # its rooms' sessions ended; they then find nothing open.
                    stints = await conn.fetch(
                        "UPDATE participants SET exit_time = GREATEST(join_time, $1) WHERE session_id = $2"
                        " AND exit_time IS NULL RETURNING peer_id, join_time, metadata, role, exit_time, id",
                        end,
                        session_id,
                    )
                    ordered = [tuple(r)[:5] for r in sorted(stints, key=lambda r: (r[4], r[5]))]
                    told += _exits(session_id, project_id, room_id, ordered, end)
                    told.append(_ended(session_id, project_id, room_id, start, most, participants, end))
            await emit(conn, told)

        return self._write(write)

    def touch_sessions(self, session_ids: list[str], now: int) -> Awaitable[None]:
        ids = list(session_ids)

        async def write(conn: Any) -> None:
            await conn.execute(
                "UPDATE sessions SET last_seen = GREATEST(last_seen, $1)"
                " WHERE session_id = ANY($2::text[]) AND end_time IS NULL",
                now,
                ids,
            )

        return self._write(write)

    async def close_interrupted_sessions(self) -> int:
        """Close what a stopped or crashed process left open, at its last known time."""

        async def write(conn: Any) -> int:
            return await _close_sessions(conn, None)

        return await self._write(write)

    async def close_orphaned_sessions(self, known: list[str], stale_before: int) -> int:
        """Scaled out: close the sessions presence no longer knows (their nodes
        died while Redis lost its data, say) and nobody marked live since
        `stale_before`, at the last time they were known live."""

        async def write(conn: Any) -> int:
            ids = await conn.fetch(
                "SELECT session_id FROM sessions WHERE end_time IS NULL AND last_seen < $1"
                " AND NOT (session_id = ANY($2::text[])) FOR UPDATE",
                stale_before,
                known,
            )
            if not ids:
                return 0
            return await _close_sessions(conn, [row[0] for row in ids])

        return await self._write(write)

    async def list_sessions(
        self, project_id: str, room_id: str, before: int | None, limit: int
    ) -> tuple[list[SessionRecord], int | None]:
        """A page of the room's sessions, newest first, and the cursor of the next."""
        rows = await self._pool.fetch(
            "SELECT seq, session_id, start_time, end_time FROM sessions"
            " WHERE project_id = $1 AND room_id = $2 AND seq < $3 ORDER BY seq DESC LIMIT $4",
            project_id,
            room_id,
            before if before is not None else _NO_CURSOR,
            limit + 1,
        )
        page = rows[:limit]
        next_cursor: int | None = page[-1][0] if len(rows) > limit else None
        return [SessionRecord(session_id=s, start_time=st, end_time=e) for _, s, st, e in page], next_cursor

    async def list_participants(self, project_id: str, session_id: str) -> list[Participant] | None:
        found = await self._pool.fetchval(
            "SELECT 1 FROM sessions WHERE session_id = $1 AND project_id = $2", session_id, project_id
        )
        if found is None:
            return None
        rows = await self._pool.fetch(
            "SELECT peer_id, join_time, metadata, exit_time FROM participants WHERE session_id = $1 ORDER BY id",
            session_id,
        )
        return [
            Participant(peer_id=p, join_time=j, metadata=m, exit_time=msgspec.UNSET if e is None else e)
            for p, j, m, e in rows
        ]

    async def metrics(self, project_id: str, now: int) -> Metrics:
        sessions, duration = await self._pool.fetchrow(
            "SELECT count(*), coalesce(sum(coalesce(end_time, $1) - start_time), 0)::bigint"
            " FROM sessions WHERE project_id = $2",
            now,
            project_id,
        )
        users = await self._pool.fetchval(
            "SELECT count(DISTINCT p.peer_id) FROM participants p"
            " JOIN sessions s ON s.session_id = p.session_id WHERE s.project_id = $1",
            project_id,
        )
        counts = dict(
            await self._pool.fetch(
                "SELECT type, count(*) FROM egress_jobs WHERE project_id = $1 GROUP BY type", project_id
            )
        )
        return Metrics(
            total_sessions=sessions,
            total_duration=duration,
            total_users=users,
            recording_count=counts.get("recording", 0),
            livestream_count=counts.get("livestream", 0),
        )

    # --- recordings and livestreams ----------------------------------------

    async def add_egress_job(self, job: EgressJob) -> bool:
        """Store a new active job; False if the room already has one of its type."""
        builtins = msgspec.to_builtins(job)
        values = [_job_value(name, builtins[name]) for name in _JOB_FIELDS]
        insert = f"INSERT INTO egress_jobs ({_JOB_COLUMNS}) VALUES ({_placeholders(len(_JOB_FIELDS))})"

        async def write(conn: Any) -> bool:
            # Its own savepoint: a refused insert must not fail the write
            # (the batch's savepoint would roll it back and raise).
            await conn.execute("SAVEPOINT egress_insert")
            try:
                await conn.execute(insert, *values)
            except asyncpg.IntegrityConstraintViolationError:
                await conn.execute("ROLLBACK TO SAVEPOINT egress_insert; RELEASE SAVEPOINT egress_insert")
                return False
            await conn.execute("RELEASE SAVEPOINT egress_insert")
            await emit(
                conn,
                [
                    NewEvent(
                        job.project_id,
                        job.room_id,
                        events.RECORDING_STARTED,
                        events.egress_payload(job),
                        job.started_at,
                    )
                ],
            )
            return True

        return await self._write(write)

    async def delete_egress_job(self, job_id: str) -> None:
        """Take back a job that never ran (its start failed after it was
        stored): `recording:ended`, with nothing recorded, follows its start."""

        async def write(conn: Any) -> None:
            row = await conn.fetchrow(f"DELETE FROM egress_jobs WHERE id = $1 RETURNING {_JOB_COLUMNS}", job_id)
            if row is not None:
                job = msgspec.structs.replace(_job(row), stopped_at=None)
                ended = NewEvent(
                    job.project_id, job.room_id, events.RECORDING_ENDED, events.egress_payload(job), job.started_at
                )
                await emit(conn, [ended])

        await self._write(write)

    async def stints_since(self, project_id: str, since: int) -> list[tuple[int, int | None]]:
        rows = await self._pool.fetch(
            "SELECT p.join_time, p.exit_time FROM participants p JOIN sessions s ON s.session_id = p.session_id"
            " WHERE s.project_id = $1 AND (s.end_time IS NULL OR s.end_time >= $2)"
            " AND (p.exit_time IS NULL OR p.exit_time >= $2)",
            project_id,
            since,
        )
        return [(join, leave) for join, leave in rows]

    async def session_end_time(self, session_id: str) -> int | None:
        end: int | None = await self._pool.fetchval(
            "SELECT coalesce(end_time, last_seen) FROM sessions WHERE session_id = $1", session_id
        )
        return end

    async def recording(self, job_id: str) -> EgressJob | None:
        """A finished recording, by id alone (its download link was checked)."""
        row = await self._pool.fetchrow(
            f"SELECT {_JOB_COLUMNS} FROM egress_jobs WHERE id = $1 AND type = 'recording' AND NOT active", job_id
        )
        return _job(row) if row else None

    async def egress_job_by_playback(self, playback_id: str) -> EgressJob | None:
        row = await self._pool.fetchrow(f"SELECT {_JOB_COLUMNS} FROM egress_jobs WHERE playback_id = $1", playback_id)
        return _job(row) if row else None

    async def active_egress_jobs(self) -> list[EgressJob]:
        return [_job(row) for row in await self._pool.fetch(f"SELECT {_JOB_COLUMNS} FROM egress_jobs WHERE active")]

    async def stop_egress_job(
        self, job_id: str, stopped_at: int, size: int, failed_reason: str | None = None, failed_at: int | None = None
    ) -> bool:
        """Mark a job stopped (failed, with a reason); its media part is
        cancelled unless a worker has it."""

        async def write(conn: Any) -> bool:
            row = await conn.fetchrow(
                "UPDATE egress_jobs SET active = false, stopped_at = $1, size = $2, failed_reason = $3,"
                " failed_at = $4,"
                " media_status = CASE media_status WHEN 'pending' THEN 'cancelled' ELSE media_status END"
                f" WHERE id = $5 AND active RETURNING {_JOB_COLUMNS}",
                stopped_at,
                size,
                failed_reason,
                failed_at,
                job_id,
            )
            if row is None:
                return False
            stopped = _job(row)
            payload = events.egress_payload(stopped)
            await emit(
                conn, [NewEvent(stopped.project_id, stopped.room_id, events.RECORDING_ENDED, payload, stopped_at)]
            )
            return True

        return await self._write(write)

    async def list_recordings(
        self, project_id: str, session_id: str | None, before: int | None, limit: int
    ) -> tuple[list[EgressJob], int | None]:
        """Finished recordings, newest first, and the cursor of the next page."""
        rows = await self._pool.fetch(
            f"SELECT seq, {_JOB_COLUMNS} FROM egress_jobs WHERE project_id = $1 AND type = 'recording'"
            " AND NOT active AND ($2::text IS NULL OR session_id = $2) AND seq < $3 ORDER BY seq DESC LIMIT $4",
            project_id,
            session_id,
            before if before is not None else _NO_CURSOR,
            limit + 1,
        )
        page = rows[:limit]
        next_cursor: int | None = page[-1][0] if len(rows) > limit else None
        return [_job(tuple(row)[1:]) for row in page], next_cursor

    async def media_jobs(self, project_id: str, status: str | None, limit: int) -> list[EgressJob]:
        rows = await self._pool.fetch(
            f"SELECT {_JOB_COLUMNS} FROM egress_jobs WHERE project_id = $1 AND ($2::text IS NULL OR media_status = $2)"
            " ORDER BY seq LIMIT $3",
            project_id,
            status,
            limit,
        )
        return [_job(row) for row in rows]

    async def update_media(
        self, project_id: str, job_id: str, worker_id: str, now: int, changes: dict[str, Any], claim: bool = False
    ) -> EgressJob | str:
        """Apply a worker's change to a job's media part, if that worker may.

        Returns the updated job, or why not: "missing", "taken" (another worker
        holds a live lease, or the job is past claiming) or "not-claimed".
        """
        unknown = set(changes) - set(_JOB_FIELDS)
        if unknown:
            raise ValueError(f"not a job field: {', '.join(sorted(unknown))}")
        assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(changes, start=1))
        values = [_job_value(name, value) for name, value in changes.items()]

        async def write(conn: Any) -> EgressJob | str:
            # FOR UPDATE: a worker on another node checking the same job
            # waits for this decision instead of making its own.
            row = await conn.fetchrow(
                f"SELECT {_JOB_COLUMNS} FROM egress_jobs WHERE id = $1 AND project_id = $2 FOR UPDATE",
                job_id,
                project_id,
            )
            if row is None:
                return "missing"
            job = _job(row)
            if claim:
                claimable = job.media_status == "pending" and job.active
                if not claimable and not (job.media_status == "claimed" and job.worker_id == worker_id):
                    return "taken"
            elif job.media_status != "claimed" or job.worker_id != worker_id:
                return "not-claimed"
            updated = await conn.fetchrow(
                f"UPDATE egress_jobs SET {assignments} WHERE id = ${len(values) + 1} RETURNING {_JOB_COLUMNS}",
                *values,
                job_id,
            )
            return _job(updated)

        return await self._write(write)

    async def release_expired_leases(self, now: int) -> int:
        """Give claimed media parts whose worker went silent back to the queue."""

        async def write(conn: Any) -> int:
            status = await conn.execute(
                "UPDATE egress_jobs SET media_status = CASE WHEN active THEN 'pending' ELSE 'cancelled' END,"
                " worker_id = NULL, lease_expires_at = NULL"
                " WHERE media_status = 'claimed' AND lease_expires_at < $1",
                now,
            )
            return _rowcount(status)

        return await self._write(write)


# The stint and the most peers in the session at once (for `meeting:ended`),
# counting this one (the statement does not see the row it inserts), and the
# join's events (`insert_events`).
_JOIN = (
    "WITH stint AS (INSERT INTO participants (session_id, peer_id, role, metadata, join_time)"
    " VALUES ($1, $2, $3, $4, $5) RETURNING session_id),"
    " most AS (UPDATE sessions SET max_participants = GREATEST(max_participants, (SELECT count(*) FROM"
    " (SELECT peer_id FROM participants WHERE session_id = $1 AND exit_time IS NULL UNION SELECT $2) o))"
    " WHERE session_id = (SELECT session_id FROM stint)),"
    f" e AS ({insert_events(6)}) {NOTIFY_UNSEQUENCED}"
)

# What `meeting:ended` says of a session, read as it ends.
_ENDED_COLUMNS = (
    "project_id, room_id, start_time, max_participants,"
    " (SELECT count(DISTINCT p.peer_id) FROM participants p WHERE p.session_id = sessions.session_id)"
)


def _ended(
    session_id: str, project_id: str, room_id: str, start: int, most: int, participants: int, end: int
) -> NewEvent:
    payload = events.meeting_ended(session_id, room_id, start, end, participants, most)
    return NewEvent(project_id, room_id, events.MEETING_ENDED, payload, end)


# A stint that ended: (peer, joined at, metadata, role, left at).
_Stint = tuple[str, int, str, str, int]


def _exits(session_id: str, project_id: str, room_id: str, stints: list[_Stint], now: int) -> list[NewEvent]:
    """`peer:left` for each stint, in order."""
    return [
        NewEvent(
            project_id,
            room_id,
            events.PEER_LEFT,
            events.peer_left(peer_id, session_id, room_id, joined_at, left_at, metadata, role),
            now,
        )
        for peer_id, joined_at, metadata, role, left_at in stints
    ]


async def _close_sessions(conn: Any, only: list[str] | None) -> int:
    """End open sessions (all, or those of `only`) and their open stints at
    the last time each session was known live, saying so: each session's
    `peer:left`s (in the order they left), then its `meeting:ended`."""
    exits = await conn.fetch(
        "UPDATE participants p SET exit_time = GREATEST(s.last_seen, p.join_time) FROM sessions s"
        " WHERE s.session_id = p.session_id AND p.exit_time IS NULL"
        " AND ($1::text[] IS NULL OR s.session_id = ANY($1::text[]))"
        " RETURNING p.session_id, p.peer_id, p.join_time, p.metadata, p.role, p.exit_time, p.id",
        only,
    )
    by_session: dict[str, list[_Stint]] = {}
    for session_id, peer_id, joined, metadata, role, left, _ in sorted(exits, key=lambda r: (r[5], r[0], r[6])):
        by_session.setdefault(session_id, []).append((peer_id, joined, metadata, role, left))
    closed = await conn.fetch(
        "UPDATE sessions SET end_time = last_seen WHERE end_time IS NULL"
        " AND ($1::text[] IS NULL OR session_id = ANY($1::text[]))"
        f" RETURNING seq, session_id, end_time, {_ENDED_COLUMNS}",
        only,
    )
    told: list[NewEvent] = []
    for _, session_id, end, project_id, room_id, start, most, participants in sorted(closed):
        told += _exits(session_id, project_id, room_id, by_session.pop(session_id, []), end)
        told.append(_ended(session_id, project_id, room_id, start, most, participants, end))
    # Stints left open in sessions that had ended.
    for session_id, stints in by_session.items():
        project_id, room_id = await conn.fetchrow(
            "SELECT project_id, room_id FROM sessions WHERE session_id = $1", session_id
        )
        told += _exits(session_id, project_id, room_id, stints, stints[-1][4])
    await emit(conn, told)
    return len(closed)
