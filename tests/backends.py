"""The real PostgreSQL and Redis the tests use, found or started here.

* PostgreSQL: the one on 127.0.0.1:5432 (trust auth, as `postgres` or the
  current user), or LIVESESSIONS_TEST_POSTGRES_URL (an admin URL); tests make
  databases of their own in it (`fresh_database`).
* Redis: a `redis-server` this process starts on a free port, nothing on disk
  (`redis_server`, shared by the process; `RedisServer` for one of a test's
  own, to kill and restart).

Where either is missing, tests that need it skip saying why, or fail where
the services are required (`support.required`).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import getpass
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from redis import Redis as SyncRedis
from redis.exceptions import RedisError

from support import free_port, unavailable

REDIS_SERVER = shutil.which("redis-server")
SKIP_REASON = "redis-server is not installed (apt-get install redis-server); the Redis tests need it"


class RedisServer:
    """A throwaway redis-server on a free loopback port, nothing on disk, that
    can be killed and started again on the same port (coming back empty)."""

    def __init__(self) -> None:
        if REDIS_SERVER is None:
            raise RuntimeError(
                "redis-server is required here (LIVESESSIONS_REQUIRE_SERVICES or CI is set) but is not installed"
            )
        self._dir = tempfile.TemporaryDirectory(prefix="livesessions-redis-")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start it (again) on its port; returns once it answers."""
        assert not self.running
        log = Path(self._dir.name, "redis.log")
        deadline = time.monotonic() + 15
        while True:
            self.process = subprocess.Popen(
                [
                    *(str(REDIS_SERVER), "--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no", "--dir", self._dir.name, "--logfile", str(log)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_ready():
                return
            self.process.kill()
            self.process.wait()
            self.process = None
            if time.monotonic() > deadline:  # the port may be held a moment after a kill
                problem = log.read_text() if log.exists() else ""
                raise RuntimeError(f"redis-server did not start on {self.port}: {problem}")
            time.sleep(0.2)

    def _wait_ready(self) -> bool:
        client = SyncRedis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 5
        try:
            while time.monotonic() < deadline and self.process is not None and self.process.poll() is None:
                try:
                    if client.ping():
                        return True
                except RedisError:
                    time.sleep(0.02)
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: everything it held is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def client(self) -> SyncRedis:
        return SyncRedis(port=self.port, socket_connect_timeout=1, decode_responses=True)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        self._dir.cleanup()
        self._dir.cleanup()


_server: RedisServer | None = None


def redis_server() -> RedisServer:
    """The process's redis-server, started on first use."""
    global _server
    if _server is None:
        _server = RedisServer()
        atexit.register(_server.stop)
    return _server


def require_redis_server() -> None:
    """Skip (or fail, where required) unless redis-server is installed."""
    if REDIS_SERVER is None:
        unavailable(SKIP_REASON)


# --- PostgreSQL ------------------------------------------------------------------


def _admin_candidates() -> list[str]:
    given = os.environ.get("LIVESESSIONS_TEST_POSTGRES_URL")
    if given:
        return [given]
    users = dict.fromkeys(["postgres", getpass.getuser()])
    return [f"postgresql://{user}@127.0.0.1:5432/postgres" for user in users]


async def _answers(dsn: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=3)
    await conn.close()


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


def with_port(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


_admin_url: str | None = None


def postgres_admin() -> str:
    """An admin URL of a PostgreSQL that answers; skips (or fails) without one."""
    global _admin_url
    if _admin_url is not None:
        return _admin_url
    problems = []
    for dsn in _admin_candidates():
        try:
            asyncio.run(_answers(dsn))
        except Exception as exc:  # noqa: BLE001 - reported below
            problems.append(f"{dsn}: {type(exc).__name__}: {exc}")
        else:
            _admin_url = dsn
            return dsn
    unavailable("PostgreSQL is not reachable (" + "; ".join(problems) + ")")


async def _admin(admin: str, *statements: str) -> None:
    conn = await asyncpg.connect(admin, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_database(admin: str) -> Iterator[str]:
    name = f"livesessions_test_{secrets.token_hex(6)}"
    asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(admin, name)
    finally:
        asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


_made: list[str] = []


def new_database() -> str:
    """A database of its own (a URL), dropped when the test process ends."""
    admin = postgres_admin()
    name = f"livesessions_test_{secrets.token_hex(6)}"
    asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
    if not _made:
        atexit.register(_drop_made, admin)
    _made.append(name)
    return with_database(admin, name)


def _drop_made(admin: str) -> None:
    async def drop() -> None:
        for name in _made:
            with contextlib.suppress(Exception):
                await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    asyncio.run(drop())


if __name__ == "__main__":
    # `python tests/backends.py`: exit 0 when PostgreSQL answers and
    # redis-server is installed, else say why (scripts/test asks this).
    import sys

    if REDIS_SERVER is None:
        print(SKIP_REASON)
        sys.exit(1)
    for candidate in _admin_candidates():
        try:
            asyncio.run(_answers(candidate))
        except Exception as exc:  # noqa: BLE001 - said below
            last = f"PostgreSQL is not reachable at {candidate}: {type(exc).__name__}"
        else:
            sys.exit(0)
    print(last)
    sys.exit(1)
