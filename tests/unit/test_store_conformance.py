"""One behaviour suite that every durable store must pass (SQLite, embedded;
PostgreSQL, scaled out), then what only PostgreSQL has: versioned migrations
under an advisory lock, the bounded write buffer while it is unreachable,
commits lost in flight, shared secrets, and single use across nodes.

PostgreSQL is looked for on 127.0.0.1:5432 (trust auth, as `postgres` or the
current user), or at LIVESESSIONS_TEST_POSTGRES_URL (an admin URL); each
module run gets a database of its own, dropped at the end. When there is no
PostgreSQL its tests skip, unless LIVESESSIONS_REQUIRE_SERVICES=1 or CI is
set: then they fail.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import msgspec
import pytest

from backends import fresh_database, postgres_admin, with_port
from livesessions.domain.egress import EgressJob
from livesessions.stores.postgres import PostgresStore, WriteBufferFull, WriteTimedOut
from livesessions.stores.postgres_schema import LATEST, migrate, schema_version
from livesessions.stores.sqlite import SQLiteStore
from livesessions.telemetry import Telemetry

T = TypeVar("T")


# --- PostgreSQL: find it, and a database of this module's own ----------------


@pytest.fixture(scope="module")
def pg_admin() -> str:
    return postgres_admin()


@pytest.fixture(scope="module")
def pg_url(pg_admin: str) -> Iterator[str]:
    with fresh_database(pg_admin) as url:
        yield url


async def _truncate_all(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        await migrate(conn)
        tables = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'schema_migrations'"
        )
        await conn.execute("TRUNCATE " + ", ".join(f'"{row[0]}"' for row in tables) + " RESTART IDENTITY CASCADE")
    finally:
        await conn.close()


# --- the backends ----------------------------------------------------------------


class Backend:
    def __init__(self, kind: str, tmp_path: Path, pg_url: str | None) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.pg_url = pg_url

    async def open(self, **options: Any) -> Any:
        if self.kind == "sqlite":
            return SQLiteStore(self.tmp_path / "store.sqlite3")
        assert self.pg_url is not None
        return await PostgresStore.connect(self.pg_url, **options)

    async def close(self, store: Any) -> None:
        if isinstance(store, PostgresStore):
            await store.aclose()
        else:
            store.close()

    def run(self, scenario: Callable[[Any], Awaitable[T]], **options: Any) -> T:
        async def main() -> T:
            store = await self.open(**options)
            try:
                return await scenario(store)
            finally:
                await self.close(store)

        return asyncio.run(main())


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path, None)
    url: str = request.getfixturevalue("pg_url")
    asyncio.run(_truncate_all(url))
    return Backend("postgres", tmp_path, url)


WALLET = "0xAbC0000000000000000000000000000000000001"
OTHER_WALLET = "0xabc0000000000000000000000000000000000002"


def job(job_id: str, project_id: str, room_id: str = "abc-defg-hij", **fields: Any) -> EgressJob:
    values: dict[str, Any] = {
        "session_id": "ses_1",
        "type": "recording",
        "active": True,
        "started_at": 1000,
        **fields,
    }
    return EgressJob(id=job_id, project_id=project_id, room_id=room_id, **values)


# --- projects and keys ---------------------------------------------------------------


def test_a_wallet_has_one_project_made_on_first_use(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        first = await store.project_for_wallet(WALLET, 100)
        assert first.wallet_address == WALLET.lower()
        assert first.created_at == 100
        assert first.project_id.startswith("prj_")
        again = await store.project_for_wallet(WALLET.lower(), 200)
        assert again == first
        racing = await asyncio.gather(*(store.project_for_wallet(OTHER_WALLET, 300 + n) for n in range(5)))
        assert len({p.project_id for p in racing}) == 1
        assert racing[0].project_id != first.project_id
        assert await store.first_sign_in(first.project_id, 150) is True
        assert await store.first_sign_in(first.project_id, 160) is False
        assert await store.first_sign_in("prj_missing", 160) is False

    backend.run(scenario)


def test_api_keys_are_listed_looked_up_used_and_revoked(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        project = await store.project_for_wallet(WALLET, 1)
        other = await store.project_for_wallet(OTHER_WALLET, 1)
        # same created_at: listed by id in byte order ("B" before "a")
        for key_id, at in (("key_a", 10), ("key_B", 10), ("key_c", 20)):
            record = await store.add_api_key(
                project.project_id, key_id, f"name {key_id}", f"hash_{key_id}", "lsk_…x", at
            )
            assert record.id == key_id and record.created_at == at and record.last_used_at is None
        await store.add_api_key(other.project_id, "key_o", "other", "hash_key_o", "lsk_…o", 5)
        with pytest.raises(Exception):  # noqa: B017 - a duplicate hash: the driver's own error
            await store.add_api_key(project.project_id, "key_d", "dup", "hash_key_a", "lsk_…d", 30)

        assert [k.id for k in await store.list_api_keys(project.project_id)] == ["key_B", "key_a", "key_c"]
        everyone = await store.all_api_keys(None)
        assert [(p, w, k.id) for p, w, k in everyone] == [
            (other.project_id, OTHER_WALLET, "key_o"),
            (project.project_id, WALLET.lower(), "key_B"),
            (project.project_id, WALLET.lower(), "key_a"),
            (project.project_id, WALLET.lower(), "key_c"),
        ]
        assert [k.id for _, _, k in await store.all_api_keys(OTHER_WALLET)] == ["key_o"]
        assert await store.all_api_keys("0xnobody") == []
        assert await store.api_key_project("key_a") == project.project_id
        assert await store.api_key_project("key_missing") is None
        assert await store.api_key_hash(project.project_id, "key_a") == "hash_key_a"
        assert await store.api_key_hash(other.project_id, "key_a") is None
        assert await store.project_for_key_hash("hash_key_a") == (project.project_id, "key_a")
        assert await store.project_for_key_hash("hash_missing") is None
        assert await store.api_key_active("key_a") is True
        assert await store.api_key_active("key_missing") is False

        await store.record_key_use({"hash_key_a": 30, "hash_key_c": 31})
        await store.record_key_use({"hash_key_a": 25})  # an older use never moves it back
        await store.record_key_use({})
        used = {k.id: k.last_used_at for k in await store.list_api_keys(project.project_id)}
        assert used == {"key_a": 30, "key_B": None, "key_c": 31}

        await store.revoke_api_key("hash_key_a", 50)
        await store.revoke_api_key("hash_key_a", 60)  # revoked once: the first time stands
        assert await store.api_key_active("key_a") is False
        assert await store.api_key_project("key_a") is None
        assert await store.api_key_hash(project.project_id, "key_a") is None
        assert await store.project_for_key_hash("hash_key_a") is None
        assert [k.id for k in await store.list_api_keys(project.project_id)] == ["key_B", "key_c"]
        assert "key_a" not in [k.id for _, _, k in await store.all_api_keys(None)]
        assert await store.keys_revoked_since(50) == [("hash_key_a", "key_a", 50)]
        assert await store.keys_revoked_since(51) == []

    backend.run(scenario)


def test_nonces_are_single_use_and_expire(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        await store.add_nonce("n1", 1000)
        with pytest.raises(Exception):  # noqa: B017 - issued twice: the driver's own error
            await store.add_nonce("n1", 2000)
        assert await store.consume_nonce("n1", 999) is True
        assert await store.consume_nonce("n1", 999) is False
        await store.add_nonce("n2", 1000)
        assert await store.consume_nonce("n2", 1000) is False  # expired at its expiry time
        assert await store.consume_nonce("unknown", 1) is False
        await store.add_nonce("n3", 5000)
        racing = await asyncio.gather(*(store.consume_nonce("n3", 10) for _ in range(10)))
        assert sorted(racing) == [False] * 9 + [True]
        await store.forget_expired_sign_ins(1001)  # n1, n2 expired before then: gone
        await store.add_nonce("n1", 3000)
        assert await store.consume_nonce("n1", 1001) is True
        assert await store.consume_nonce("n3", 10) is False  # still there, still used

    backend.run(scenario)


def test_account_sessions_end_one_or_everywhere_and_expire(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        mine = await store.project_for_wallet(WALLET, 1)
        theirs = await store.project_for_wallet(OTHER_WALLET, 1)
        address = WALLET.lower()
        await store.add_account_session("t1", mine.project_id, address, 1000)
        await store.add_account_session("t2", mine.project_id, address, 2000)
        await store.add_account_session("t3", mine.project_id, address, 500)
        await store.add_account_session("o1", theirs.project_id, OTHER_WALLET, 1000)
        assert await store.account_session("t1", 999) == (mine.project_id, address)
        assert await store.account_session("t1", 1000) is None
        assert await store.account_session("missing", 1) is None

        await store.end_account_sessions("t1", False)
        assert await store.account_session("t1", 1) is None
        assert await store.account_session("t2", 1) == (mine.project_id, address)
        await store.add_account_session("t4", mine.project_id, address, 1000)
        await store.end_account_sessions("t2", True)
        assert await store.account_session("t4", 1) is None
        assert await store.account_session("t3", 1) is None
        assert await store.account_session("o1", 1) == (theirs.project_id, OTHER_WALLET)
        await store.end_account_sessions("missing", True)  # nothing to end: nothing happens

        await store.add_account_session("t5", mine.project_id, address, 100)
        await store.forget_expired_sign_ins(101)
        await store.add_account_session("t5", mine.project_id, address, 9000)  # the old one is gone
        assert await store.account_session("t5", 101) == (mine.project_id, address)

    backend.run(scenario)


def test_whitelisted_domains_are_kept_per_project_in_order(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        mine = await store.project_for_wallet(WALLET, 1)
        theirs = await store.project_for_wallet(OTHER_WALLET, 2)
        assert await store.whitelisted_domains(mine.project_id) == []
        assert await store.whitelisted_domains("prj_missing") == []
        assert await store.all_whitelisted_domains(None) == []
        # one's own project is listed whatever its list; an unknown wallet has none
        assert await store.all_whitelisted_domains(WALLET.lower()) == [(mine.project_id, WALLET.lower(), [])]
        assert await store.all_whitelisted_domains("0xnobody") == []

        domains = ["zeta.example.com", "localhost:3000", "[::1]:8080", "a.example.com"]
        await store.set_whitelisted_domains(mine.project_id, domains)
        await store.set_whitelisted_domains(theirs.project_id, ["theirs.example.com"])
        await store.set_whitelisted_domains("prj_missing", ["nobody.example.com"])  # nothing to change
        assert await store.whitelisted_domains(mine.project_id) == domains  # as given: not sorted
        assert await store.whitelisted_domains("prj_missing") == []
        assert await store.all_whitelisted_domains(None) == [
            (mine.project_id, WALLET.lower(), domains),
            (theirs.project_id, OTHER_WALLET, ["theirs.example.com"]),
        ]
        assert await store.all_whitelisted_domains(OTHER_WALLET) == [
            (theirs.project_id, OTHER_WALLET, ["theirs.example.com"])
        ]

        await store.set_whitelisted_domains(mine.project_id, [])
        assert await store.whitelisted_domains(mine.project_id) == []
        assert await store.whitelisted_domains(theirs.project_id) == ["theirs.example.com"]
        assert [p for p, _, _ in await store.all_whitelisted_domains(None)] == [theirs.project_id]

    backend.run(scenario)


# --- rooms ---------------------------------------------------------------------------


def test_rooms_are_created_found_paged_and_given_metadata(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        project = await store.project_for_wallet(WALLET, 1)
        other = await store.project_for_wallet(OTHER_WALLET, 1)
        # kept as given: key order, nesting, numbers
        metadata = {"title": "Standup", "a": 1, "nested": {"z": [1, 2.5, None, True, "é"]}, "big": 1e100}
        first = await store.create_room(project.project_id, metadata, True, 100)
        assert first.metadata == metadata and first.room_locked is True and first.created_at == 100
        found = await store.get_room(project.project_id, first.room_id)
        assert found == first
        assert list(found.metadata) == ["title", "a", "nested", "big"]
        assert isinstance(found.metadata["big"], float)
        assert await store.get_room(other.project_id, first.room_id) is None
        assert await store.get_room(project.project_id, "zzz-zzzz-zzz") is None

        rooms = [first] + [await store.create_room(project.project_id, None, False, 100 + n) for n in range(1, 5)]
        await store.create_room(other.project_id, None, False, 1)
        assert len({r.room_id for r in rooms}) == 5
        page, total = await store.list_rooms(project.project_id, 0, 2)
        assert total == 5 and [r.room_id for r in page] == [rooms[4].room_id, rooms[3].room_id]
        page, total = await store.list_rooms(project.project_id, 4, 2)
        assert total == 5 and page == [first]
        assert (await store.list_rooms(project.project_id, 5, 2)) == ([], 5)
        assert (await store.list_rooms("prj_missing", 0, 2)) == ([], 0)
        plain = (await store.list_rooms(project.project_id, 3, 1))[0][0]
        assert plain.metadata is None and plain.room_locked is False

        assert await store.set_room_metadata(project.project_id, rooms[1].room_id, {"b": 2, "a": 1}) is True
        assert await store.set_room_metadata(other.project_id, rooms[1].room_id, {"x": 1}) is False
        assert await store.set_room_metadata(project.project_id, "zzz-zzzz-zzz", {"x": 1}) is False
        updated = await store.get_room(project.project_id, rooms[1].room_id)
        assert updated.metadata == {"b": 2, "a": 1} and list(updated.metadata) == ["b", "a"]

    backend.run(scenario)


# --- session history -----------------------------------------------------------------


def test_sessions_and_participants_are_recorded_and_paged(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        project = await store.project_for_wallet(WALLET, 1)
        pid, room = project.project_id, "abc-defg-hij"
        await store.record_join(pid, room, "ses_1", 1000, "peer-a", "host", '{"name":"Ada"}', 1000)
        await store.record_join(pid, room, "ses_1", None, "peer-b", "guest", "", 1100)
        await store.record_peer_metadata("ses_1", "peer-b", "renamed")
        await store.record_exit("ses_1", "peer-a", 1500)
        await store.record_peer_metadata("ses_1", "peer-a", "too late")  # has left: unchanged
        await store.record_join(pid, room, "ses_1", None, "peer-a", "host", "back", 1600)  # a second stint
        assert await store.session_end_time("ses_1") == 1600  # open: the last time it was seen live
        await store.touch_sessions(["ses_1"], 1700)
        await store.touch_sessions(["ses_1", "ses_missing"], 1650)  # never moves back
        assert await store.session_end_time("ses_1") == 1700

        participants = await store.list_participants(pid, "ses_1")
        assert [(p.peer_id, p.join_time, p.metadata, p.exit_time) for p in participants] == [
            ("peer-a", 1000, '{"name":"Ada"}', 1500),
            ("peer-b", 1100, "renamed", msgspec.UNSET),
            ("peer-a", 1600, "back", msgspec.UNSET),
        ]
        assert await store.list_participants("prj_other", "ses_1") is None
        assert await store.list_participants(pid, "ses_missing") is None

        await store.end_sessions([("ses_1", 2000)])
        await store.end_sessions([("ses_1", 3000)])  # ended once: the first end stands
        await store.end_sessions([])
        await store.touch_sessions(["ses_1"], 4000)  # an ended session is not touched
        assert await store.session_end_time("ses_1") == 2000
        assert await store.session_end_time("ses_missing") is None

        for n in range(2, 6):
            await store.record_join(pid, room, f"ses_{n}", 2000 + n, "peer-c", "host", "", 2000 + n)
        await store.record_join(pid, "other-room-id", "ses_x", 2100, "peer-c", "host", "", 2100)
        page, cursor = await store.list_sessions(pid, room, None, 2)
        assert [(s.session_id, s.start_time, s.end_time) for s in page] == [
            ("ses_5", 2005, None),
            ("ses_4", 2004, None),
        ]
        assert cursor is not None
        page, cursor = await store.list_sessions(pid, room, cursor, 2)
        assert [s.session_id for s in page] == ["ses_3", "ses_2"]
        page, cursor = await store.list_sessions(pid, room, cursor, 2)
        assert [(s.session_id, s.end_time) for s in page] == [("ses_1", 2000)] and cursor is None
        assert await store.list_sessions("prj_other", room, None, 2) == ([], None)

    backend.run(scenario)


def test_interrupted_sessions_are_closed_at_their_last_known_time(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid = (await store.project_for_wallet(WALLET, 1)).project_id
        await store.record_join(pid, "abc-defg-hij", "ses_1", 1000, "peer-a", "host", "", 1000)
        await store.record_join(pid, "abc-defg-hij", "ses_1", None, "peer-b", "host", "", 1200)
        await store.record_exit("ses_1", "peer-a", 1300)
        await store.touch_sessions(["ses_1"], 1900)
        await store.record_join(pid, "bcd-efgh-ijk", "ses_2", 5000, "peer-c", "host", "", 5000)
        await store.record_join(pid, "cde-fghi-jkl", "ses_3", 100, "peer-d", "host", "", 100)
        await store.end_sessions([("ses_3", 200)])

        assert await store.close_interrupted_sessions() == 2
        assert await store.close_interrupted_sessions() == 0
        assert await store.session_end_time("ses_1") == 1900
        exits = [p.exit_time for p in await store.list_participants(pid, "ses_1")]
        assert exits == [1300, 1900]
        assert [p.exit_time for p in await store.list_participants(pid, "ses_2")] == [5000]
        page, _ = await store.list_sessions(pid, "cde-fghi-jkl", None, 5)
        assert page[0].end_time == 200

    backend.run(scenario)


def test_metrics_count_sessions_time_people_and_egress(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid = (await store.project_for_wallet(WALLET, 1)).project_id
        empty = await store.metrics(pid, 10_000)
        assert msgspec.to_builtins(empty) == {
            "totalSessions": 0,
            "totalDuration": 0,
            "totalUsers": 0,
            "recordingCount": 0,
            "livestreamCount": 0,
        }
        await store.record_join(pid, "abc-defg-hij", "ses_1", 1000, "peer-a", "host", "", 1000)
        await store.record_join(pid, "abc-defg-hij", "ses_1", None, "peer-b", "host", "", 1000)
        await store.end_sessions([("ses_1", 4000)])
        await store.record_join(pid, "abc-defg-hij", "ses_2", 8000, "peer-a", "host", "", 8000)  # still live
        await store.record_join("prj_other", "abc-defg-hij", "ses_o", 1, "peer-z", "host", "", 1)
        assert await store.add_egress_job(job("job_1", pid, session_id="ses_1"))
        assert await store.add_egress_job(job("job_2", pid, session_id="ses_1", type="livestream"))
        await store.stop_egress_job("job_1", 3000, 10)
        assert await store.add_egress_job(job("job_3", pid, session_id="ses_1"))
        metrics = await store.metrics(pid, 10_000)
        assert msgspec.to_builtins(metrics) == {
            "totalSessions": 2,
            "totalDuration": 3000 + 2000,
            "totalUsers": 2,
            "recordingCount": 2,
            "livestreamCount": 1,
        }

    backend.run(scenario)


def test_queued_writes_land_in_the_order_they_were_called(backend: Backend) -> None:
    """Called one after another without awaiting (as the realtime layer does),
    history writes land in call order, across as many batches as it takes; a
    bad one among them fails alone."""

    async def scenario(store: Any) -> None:
        pid = (await store.project_for_wallet(WALLET, 1)).project_id
        room = "abc-defg-hij"
        writes: list[Awaitable[None]] = [store.record_join(pid, room, "ses_1", 1, "peer-0000", "host", "m0", 1)]
        for n in range(1, 400):
            peer = f"peer-{n:04d}"
            writes.append(store.record_join(pid, room, "ses_1", None, peer, "guest", "", 1 + n))
            writes.append(store.record_peer_metadata("ses_1", "peer-0000", f"m{n}"))
            if n % 3 == 0:
                writes.append(store.record_exit("ses_1", peer, 1000 + n))
        # a stint ended, then begun again: the order decides which row each write hits
        writes.append(store.record_exit("ses_1", "peer-0001", 5000))
        writes.append(store.record_join(pid, room, "ses_1", None, "peer-0001", "guest", "again", 5001))
        writes.append(store.record_peer_metadata("ses_1", "peer-0001", "after rejoin"))
        bad = store.record_join(pid, room, "ses_1", None, "peer-late", "guest", "", 2**63)  # no 64-bit time
        writes.append(store.touch_sessions(["ses_1"], 6000))
        results = await asyncio.gather(*writes, return_exceptions=True)
        assert [r for r in results if r is not None] == []
        with pytest.raises(Exception):  # noqa: B017 - out of range: the driver's own error
            await bad

        participants = await store.list_participants(pid, "ses_1")
        assert [p.peer_id for p in participants] == [f"peer-{n:04d}" for n in range(400)] + ["peer-0001"]
        assert participants[0].metadata == "m399"
        assert participants[0].exit_time is msgspec.UNSET
        for n in range(1, 400):
            expected = 1000 + n if n % 3 == 0 else (5000 if n == 1 else msgspec.UNSET)
            assert participants[n].exit_time == expected, n
        assert (participants[1].metadata, participants[-1].metadata) == ("", "after rejoin")
        assert await store.session_end_time("ses_1") == 6000

    backend.run(scenario, **({"max_batch": 64} if backend.kind == "postgres" else {}))


# --- recordings and livestreams ------------------------------------------------------


def test_egress_jobs_one_active_per_type_stop_and_list(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid = (await store.project_for_wallet(WALLET, 1)).project_id
        room, other_room = "abc-defg-hij", "bcd-efgh-ijk"
        assert await store.add_egress_job(job("job_r1", pid, room)) is True
        assert await store.add_egress_job(job("job_r2", pid, room)) is False  # one active recording per room
        assert await store.add_egress_job(job("job_r1", pid, other_room)) is False  # ids are unique
        stream = job("job_l1", pid, room, type="livestream", rtmp_urls=["rtmp://a/x", "rtmp://b/y"], playback_id="pb1")
        assert await store.add_egress_job(stream) is True
        assert await store.add_egress_job(job("job_r3", pid, other_room, started_at=1001)) is True
        assert sorted(j.id for j in await store.active_egress_jobs()) == ["job_l1", "job_r1", "job_r3"]
        assert await store.egress_job_by_playback("pb1") == stream
        assert await store.egress_job_by_playback("missing") is None
        assert await store.recording("job_r1") is None  # not finished yet
        assert await store.recording("job_l1") is None

        assert await store.stop_egress_job("job_r1", 2000, 519) is True
        assert await store.stop_egress_job("job_r1", 3000, 1) is False  # stopped once
        finished = await store.recording("job_r1")
        assert finished is not None
        assert (finished.active, finished.stopped_at, finished.size, finished.media_status) == (
            False,
            2000,
            519,
            "cancelled",  # no worker had its media part
        )
        assert (finished.failed_reason, finished.failed_at) == (None, None)
        assert await store.add_egress_job(job("job_r2", pid, room, session_id="ses_2")) is True  # room free again
        assert await store.stop_egress_job("job_r2", 2500, 7, "disk full", 2400) is True
        failed = await store.recording("job_r2")
        assert failed is not None and (failed.failed_reason, failed.failed_at) == ("disk full", 2400)
        assert await store.stop_egress_job("job_l1", 2600, 0) is True
        assert await store.recording("job_l1") is None  # a livestream is not a recording

        page, cursor = await store.list_recordings(pid, None, None, 1)
        assert [j.id for j in page] == ["job_r2"] and cursor is not None
        page, cursor = await store.list_recordings(pid, None, cursor, 1)
        assert [j.id for j in page] == ["job_r1"] and cursor is None
        assert [j.id for j in (await store.list_recordings(pid, "ses_2", None, 10))[0]] == ["job_r2"]
        assert await store.list_recordings("prj_other", None, None, 10) == ([], None)

        assert [j.id for j in await store.media_jobs(pid, None, 10)] == ["job_r1", "job_l1", "job_r3", "job_r2"]
        assert [j.id for j in await store.media_jobs(pid, "pending", 10)] == ["job_r3"]
        assert [j.id for j in await store.media_jobs(pid, "cancelled", 1)] == ["job_r1"]

        await store.delete_egress_job("job_r3")
        assert [j.id for j in await store.active_egress_jobs()] == []
        assert await store.add_egress_job(job("job_r3", pid, other_room)) is True  # its id is free again

    backend.run(scenario)


def test_media_workers_claim_renew_progress_and_lose_leases(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid = (await store.project_for_wallet(WALLET, 1)).project_id
        await store.add_egress_job(job("job_1", pid))

        def claim(worker: str, now: int) -> Any:
            changes = {"media_status": "claimed", "worker_id": worker, "lease_expires_at": now + 100}
            return store.update_media(pid, "job_1", worker, now, changes, claim=True)

        claimed = await claim("w1", 10)
        assert isinstance(claimed, EgressJob)
        assert (claimed.media_status, claimed.worker_id, claimed.lease_expires_at) == ("claimed", "w1", 110)
        assert await claim("w2", 20) == "taken"
        renewed = await claim("w1", 30)
        assert isinstance(renewed, EgressJob) and renewed.lease_expires_at == 130
        progress = {"progress": 50, "progress_message": "half", "lease_expires_at": 150}
        assert await store.update_media(pid, "job_1", "w2", 40, progress) == "not-claimed"
        moved = await store.update_media(pid, "job_1", "w1", 40, progress)
        assert isinstance(moved, EgressJob) and (moved.progress, moved.progress_message) == (50, "half")
        assert await store.update_media(pid, "job_missing", "w1", 40, progress) == "missing"
        assert await store.update_media("prj_other", "job_1", "w1", 40, progress) == "missing"

        assert await store.release_expired_leases(150) == 0  # not before it runs out
        assert await store.release_expired_leases(151) == 1
        released = (await store.media_jobs(pid, None, 10))[0]
        assert (released.media_status, released.worker_id, released.lease_expires_at) == ("pending", None, None)
        assert await store.update_media(pid, "job_1", "w1", 160, progress) == "not-claimed"

        # a worker's job that stops keeps its worker; if the lease then runs out, it is cancelled
        assert isinstance(await claim("w2", 200), EgressJob)
        await store.stop_egress_job("job_1", 250, 10)
        stopped = (await store.media_jobs(pid, "claimed", 10))[0]
        assert stopped.active is False and stopped.worker_id == "w2"
        done = await store.update_media(
            pid,
            "job_1",
            "w2",
            260,
            {"media_status": "completed", "progress": 100, "media_location": "s3://x", "media_size": 9},
        )
        assert isinstance(done, EgressJob) and (done.media_status, done.media_size) == ("completed", 9)
        assert await claim("w3", 270) == "taken"  # past claiming

        await store.add_egress_job(job("job_2", pid, "bcd-efgh-ijk"))
        assert isinstance(
            await store.update_media(
                pid,
                "job_2",
                "w4",
                10,
                {"media_status": "claimed", "worker_id": "w4", "lease_expires_at": 20},
                claim=True,
            ),
            EgressJob,
        )
        await store.stop_egress_job("job_2", 15, 1)
        assert await store.release_expired_leases(21) == 1
        assert (await store.media_jobs(pid, "cancelled", 10))[0].id == "job_2"

    backend.run(scenario)


def test_ping_and_telemetry(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        telemetry = Telemetry()
        store.instrument(telemetry)
        await store.ping()
        await store.project_for_wallet(WALLET, 1)
        text = (await telemetry.render()).decode()
        assert "livesessions_write_queue_depth 0.0" in text
        count = [line for line in text.splitlines() if line.startswith("livesessions_commit_duration_seconds_count")]
        assert count and float(count[0].split()[-1]) >= 1

    backend.run(scenario)


# --- SQLite only --------------------------------------------------------------------


def test_an_embedded_database_of_the_previous_version_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    from livesessions.stores import sqlite as embedded

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    for number, script in enumerate(embedded._SCHEMA[:-1], start=1):
        conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute(
        "INSERT INTO projects (project_id, wallet_address, created_at) VALUES ('prj_old', ?, 1)", (WALLET.lower(),)
    )
    conn.commit()
    conn.close()

    async def scenario() -> None:
        store = SQLiteStore(path)
        try:
            assert store.db.read_one("PRAGMA user_version") == (len(embedded._SCHEMA),)
            assert await store.whitelisted_domains("prj_old") == []
            await store.set_whitelisted_domains("prj_old", ["app.example.com"])
            assert await store.whitelisted_domains("prj_old") == ["app.example.com"]
        finally:
            store.close()

    asyncio.run(scenario())


# --- PostgreSQL only ----------------------------------------------------------------


async def _versions(url: str) -> list[int]:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        return [row[0] for row in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]
    finally:
        await conn.close()


def test_a_database_at_the_previous_version_is_upgraded(pg_admin: str) -> None:
    with fresh_database(pg_admin) as url:

        async def scenario() -> None:
            conn = await asyncpg.connect(url, timeout=5)
            try:
                assert await schema_version(conn) == 0
                assert await migrate(conn, LATEST - 1) == LATEST - 1
                assert await schema_version(conn) == LATEST - 1
                # What a node of the previous version left: a project, a room
                # and a recording still active.
                await conn.execute(
                    "INSERT INTO projects (project_id, wallet_address, created_at) VALUES ('prj_old', $1, 1)",
                    WALLET.lower(),
                )
                await conn.execute(
                    "INSERT INTO rooms (room_id, project_id, metadata, room_locked, created_at)"
                    " VALUES ('old-room-abc', 'prj_old', '{\"a\": 1}', false, 1)"
                )
                await conn.execute(
                    "INSERT INTO egress_jobs (id, project_id, room_id, session_id, type, active, started_at,"
                    " rtmp_urls, media_status) VALUES ('job_old', 'prj_old', 'old-room-abc', 'ses_old', 'recording',"
                    " true, 5, '[]', 'pending')"
                )
            finally:
                await conn.close()
            for _ in range(2):  # a second start finds nothing to do
                store = await PostgresStore.connect(url)
                try:
                    project = await store.project_for_wallet(WALLET, 1)
                    assert project.project_id == "prj_old"
                    room = await store.get_room("prj_old", "old-room-abc")
                    assert room is not None and room.metadata == {"a": 1}
                    assert [job.id for job in await store.active_egress_jobs()] == ["job_old"]
                finally:
                    await store.aclose()
            assert await _versions(url) == list(range(1, LATEST + 1))

        asyncio.run(scenario())


def test_many_nodes_migrating_at_once_apply_each_version_once(pg_admin: str) -> None:
    with fresh_database(pg_admin) as url:

        async def scenario() -> None:
            conns = [await asyncpg.connect(url, timeout=5) for _ in range(6)]
            try:
                results = await asyncio.gather(
                    *(migrate(conn) for conn in conns), *(PostgresStore.connect(url) for _ in range(3))
                )
            finally:
                for conn in conns:
                    await conn.close()
            assert results[:6] == [LATEST] * 6
            for store in results[6:]:
                await store.aclose()
            assert await _versions(url) == list(range(1, LATEST + 1))

        asyncio.run(scenario())


class Proxy:
    """A loopback TCP proxy in front of PostgreSQL. `cut()` closes every
    connection and, until `restore()`, closes new ones as they come (counting
    them); `trap_commit` breaks the next connection that sends COMMIT, either
    after passing it on ("deliver": it lands, unseen) or instead ("drop": the
    server sees the connection close; "freeze": it does not, and waits)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.cut_off = False
        self.refused = 0
        self.trap_commit: str | None = None
        self.trapped = 0
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self._links):
            writer.transport.abort()

    def restore(self) -> None:
        self.cut_off = False

    async def close(self) -> None:
        self.cut()
        self._server.close()
        for task in list(self._tasks):
            task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            self.refused += 1
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._links |= {writer, up_writer}
        link = {"swallow": False}
        for task in (
            asyncio.create_task(self._pump(reader, up_writer, writer, link, upstream=True)),
            asyncio.create_task(self._pump(up_reader, writer, up_writer, link, upstream=False)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        other: asyncio.StreamWriter,
        link: dict[str, bool],
        upstream: bool,
    ) -> None:
        try:
            while data := await source.read(65536):
                if upstream and self.trap_commit and b"COMMIT\x00" in data:
                    mode, self.trap_commit = self.trap_commit, None
                    self.trapped += 1
                    link["swallow"] = True  # its answer never reaches the client
                    if mode == "deliver":
                        sink.write(data)
                    await asyncio.sleep(0.2)  # let PostgreSQL commit (or not)
                    other.transport.abort()
                    if mode != "freeze":  # frozen, PostgreSQL is told nothing and waits in the transaction
                        sink.transport.abort()
                    return
                if not upstream and link["swallow"]:
                    continue
                sink.write(data)
        except (ConnectionError, OSError):
            pass
        sink.transport.abort()
        other.transport.abort()


def _target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def test_a_write_is_waited_for_at_most_the_write_deadline_and_still_lands(pg_url: str) -> None:
    """No caller hangs on an unreachable database: past the deadline it is
    told so (503 for a request), and the write, still queued, lands later."""
    asyncio.run(_truncate_all(pg_url))

    async def scenario() -> None:
        proxy = Proxy(_target(pg_url))
        url = with_port(pg_url, await proxy.start())
        store = await PostgresStore.connect(
            url, retry_delay=0.01, max_retry_delay=0.05, connect_timeout=2, write_deadline=0.3
        )
        try:
            proxy.cut()
            with pytest.raises(WriteTimedOut):
                await store.add_nonce("late", 10**15)
            assert store.pending_writes() == 1
            proxy.restore()
            while store.pending_writes():
                await asyncio.sleep(0.02)
            assert await store.consume_nonce("late", 1) is True  # it was written after all
        finally:
            await store.aclose()
            await proxy.close()

    asyncio.run(scenario())


def test_writes_wait_while_postgres_is_unreachable_and_the_buffer_is_bounded(pg_url: str) -> None:
    asyncio.run(_truncate_all(pg_url))

    async def scenario() -> None:
        proxy = Proxy(_target(pg_url))
        url = with_port(pg_url, await proxy.start())
        store = await PostgresStore.connect(
            url, max_pending_writes=6, retry_delay=0.01, max_retry_delay=0.05, connect_timeout=2
        )
        try:
            pid = (await store.project_for_wallet(WALLET, 1)).project_id
            room = "abc-defg-hij"
            await store.record_join(pid, room, "ses_1", 1000, "peer-0", "host", "", 1000)

            proxy.cut()
            queued = [store.record_join(pid, room, "ses_1", None, f"peer-{n}", "guest", "", 1000 + n) for n in (1, 2)]
            queued.append(store.record_exit("ses_1", "peer-1", 1500))
            queued += [store.record_peer_metadata("ses_1", "peer-2", f"v{n}") for n in range(3)]
            writes = [asyncio.ensure_future(write) for write in queued]
            await asyncio.sleep(0.3)
            assert not any(w.done() for w in writes)  # held, not failed
            assert store.pending_writes() == 6 and not store.accepting_writes()
            assert proxy.refused >= 2  # and being retried

            started = time.perf_counter()
            refused = store.record_join(pid, room, "ses_1", None, "peer-x", "guest", "", 1600)
            with pytest.raises(WriteBufferFull, match="unreachable"):
                await refused
            with pytest.raises(WriteBufferFull):
                await store.add_nonce("n1", 10)
            assert time.perf_counter() - started < 0.1  # at once

            proxy.restore()
            await asyncio.wait_for(asyncio.gather(*writes), 5)
            assert store.accepting_writes() and store.pending_writes() == 0
            participants = await store.list_participants(pid, "ses_1")
            assert [(p.peer_id, p.exit_time, p.metadata) for p in participants] == [
                ("peer-0", msgspec.UNSET, ""),
                ("peer-1", 1500, ""),
                ("peer-2", msgspec.UNSET, "v2"),
            ]
            await store.add_nonce("n1", 10)  # taken again
        finally:
            await store.aclose()
            await proxy.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("mode", ["deliver", "drop", "freeze"])
def test_a_batch_whose_commit_was_lost_in_flight_lands_exactly_once(pg_url: str, mode: str) -> None:
    asyncio.run(_truncate_all(pg_url))

    async def scenario() -> None:
        proxy = Proxy(_target(pg_url))
        url = with_port(pg_url, await proxy.start())
        store = await PostgresStore.connect(url, retry_delay=0.01, max_retry_delay=0.05, connect_timeout=2)
        try:
            pid = (await store.project_for_wallet(WALLET, 1)).project_id
            proxy.trap_commit = mode
            writes = [
                store.record_join(pid, "abc-defg-hij", "ses_1", 1000, "peer-0", "host", "", 1000),
                store.record_join(pid, "abc-defg-hij", "ses_1", None, "peer-1", "host", "", 1001),
            ]
            await asyncio.wait_for(asyncio.gather(*writes), 5)
            assert proxy.trapped == 1
            participants = await store.list_participants(pid, "ses_1")
            assert [p.peer_id for p in participants] == ["peer-0", "peer-1"]
        finally:
            await store.aclose()
            await proxy.close()

    asyncio.run(scenario())


def test_secrets_are_made_once_for_every_node(pg_url: str) -> None:
    asyncio.run(_truncate_all(pg_url))

    async def scenario() -> None:
        made: list[bytes] = []

        def create() -> bytes:
            made.append(secrets.token_bytes(32))
            return made[-1]

        nodes = [await PostgresStore.connect(pg_url) for _ in range(3)]
        try:
            values = await asyncio.gather(*(node.secret("link-secret", create) for node in nodes for _ in range(3)))
            assert len(made) == 1 and set(values) == {made[0]}
            assert await nodes[0].secret("link-secret", create) == made[0]
            assert await nodes[1].secret("signing-key", lambda: b"-----PEM-----") == b"-----PEM-----"
            assert len(made) == 1
        finally:
            for node in nodes:
                await node.aclose()

    asyncio.run(scenario())


def test_nodes_share_single_use_and_one_active_job_rules(pg_url: str) -> None:
    asyncio.run(_truncate_all(pg_url))

    async def scenario() -> None:
        nodes = [await PostgresStore.connect(pg_url) for _ in range(3)]
        try:
            pid = (await nodes[0].project_for_wallet(WALLET, 1)).project_id
            await nodes[0].add_nonce("n1", 1000)
            used = await asyncio.gather(*(node.consume_nonce("n1", 10) for node in nodes for _ in range(4)))
            assert sorted(used) == [False] * 11 + [True]
            started = await asyncio.gather(*(node.add_egress_job(job(f"job_{n}", pid)) for n, node in enumerate(nodes)))
            assert sorted(started) == [False, False, True]
            projects = await asyncio.gather(*(node.project_for_wallet(OTHER_WALLET, 5) for node in nodes))
            assert len({p.project_id for p in projects}) == 1
        finally:
            for node in nodes:
                await node.aclose()

    asyncio.run(scenario())


def test_closing_commits_what_is_queued_and_refuses_more(pg_url: str) -> None:
    asyncio.run(_truncate_all(pg_url))

    async def scenario() -> None:
        store = await PostgresStore.connect(pg_url)
        pid = (await store.project_for_wallet(WALLET, 1)).project_id
        queued = store.record_join(pid, "abc-defg-hij", "ses_1", 1000, "peer-0", "host", "", 1000)
        store.close()  # on the loop: starts closing, commits the queue first
        late = store.record_join(pid, "abc-defg-hij", "ses_1", None, "peer-1", "host", "", 1001)
        await queued
        with pytest.raises(RuntimeError, match="closed"):
            await late
        await store.aclose()
        reopened = await PostgresStore.connect(pg_url)
        try:
            assert [p.peer_id for p in await reopened.list_participants(pid, "ses_1") or []] == ["peer-0"]
        finally:
            await reopened.aclose()

    asyncio.run(scenario())


def test_a_join_written_before_its_session_s_start_on_another_node_is_kept(pg_url: str) -> None:
    """Scaled out, the join that starts a session and a later join into it
    are written by different nodes, in either order."""
    asyncio.run(_truncate_all(pg_url))

    async def scenario() -> None:
        starter, joiner = await PostgresStore.connect(pg_url), await PostgresStore.connect(pg_url)
        try:
            pid = (await starter.project_for_wallet(WALLET, 1)).project_id
            room = "abc-defg-hij"
            # The later join lands first.
            await joiner.record_join(pid, room, "ses_x", None, "peer-b", "guest", "", 20)
            await starter.record_join(pid, room, "ses_x", 10, "peer-a", "host", "", 10)
            await joiner.record_exit("ses_x", "peer-b", 30)
            sessions, _ = await starter.list_sessions(pid, room, None, 10)
            assert [(s.session_id, s.start_time) for s in sessions] == [("ses_x", 10)]
            participants = await joiner.list_participants(pid, "ses_x")
            assert sorted((p.peer_id, p.join_time) for p in participants) == [("peer-a", 10), ("peer-b", 20)]
        finally:
            await starter.aclose()
            await joiner.aclose()

    asyncio.run(scenario())
