"""One behaviour suite for the outbox (events for webhooks and the live event
stream) and the webhook queue, run against every durable store (SQLite,
embedded; PostgreSQL, scaled out), then what only PostgreSQL has: many nodes
writing, sequencing, listening and claiming at once.

The stores and PostgreSQL databases are test_store_conformance.py's own
(`backend`, `pg_url`): when there is no PostgreSQL its variants skip, unless
LIVESESSIONS_REQUIRE_SERVICES=1 or CI is set: then they fail.

Scaled out, events are written unnumbered and put in order afterwards by
`sequence_events()` (each node's listener runs it when told of new events);
the tests call it where they read the log back at once. The embedded store
numbers them as it writes them (`sequence_events()` is 0 there).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
import test_store_conformance as conformance

from livesessions.domain.events import StoredEvent, to_json
from livesessions.domain.webhooks import (
    CLAIM_LEASE_MS,
    AttemptResult,
    Delivery,
    Settlement,
    Webhook,
    new_webhook_id,
    settle,
)
from livesessions.stores.postgres import PostgresStore
from livesessions.stores.postgres_events import SEQUENCED, UNSEQUENCED

Backend = conformance.Backend
# test_store_conformance.py's fixtures: the two stores, and a PostgreSQL
# database of this module's own
backend = conformance.backend
pg_admin = conformance.pg_admin
pg_url = conformance.pg_url
job = conformance.job
WALLET = conformance.WALLET
OTHER_WALLET = conformance.OTHER_WALLET

ROOM = "abc-defg-hij"
OTHER_ROOM = "bcd-efgh-ijk"
LATER = 10**9  # a time when everything queued is due


# --- helpers --------------------------------------------------------------------


async def project_with_key(store: Any, wallet: str = WALLET) -> tuple[str, str]:
    """A project and one API key of it: (project id, key id)."""
    pid = (await store.project_for_wallet(wallet, 1)).project_id
    key_id = "key_" + secrets.token_hex(4)
    await store.add_api_key(pid, key_id, "signing", "hash_" + key_id, "lsk_…x", 1)
    return pid, key_id


async def add_webhook(store: Any, pid: str, key_id: str, events: list[str] | None = None) -> Webhook:
    webhook = Webhook(
        id=new_webhook_id(),
        project_id=pid,
        key_id=key_id,
        name="hook",
        url="https://receiver.example/hook",
        events=events,
        sealed_key=b"sealed\x00key",
        status="active",
        created_at=5,
    )
    await store.add_webhook(webhook)
    return webhook


async def log_of(store: Any, pid: str) -> list[StoredEvent]:
    """The project's whole log, in order (sequenced first, scaled out)."""
    await store.sequence_events()
    return await store.events_after(pid, 0, 10_000)


async def start_listening(store: Any, told: list[StoredEvent]) -> None:
    if isinstance(store, PostgresStore):
        await store.start_events()
    store.on_committed(told.extend)


async def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("not in time")
        await asyncio.sleep(0.01)


async def deliver(store: Any, delivery: Delivery, status: int | None, now: int) -> Settlement:
    settled = settle(delivery, AttemptResult(status, None if status else "refused"), now, 86_400_000)
    await store.settle_delivery(delivery, AttemptResult(status, None if status else "refused"), settled, now)
    return settled


async def drain(store: Any, now: int = LATER) -> list[Delivery]:
    """Claim and deliver (2xx) until nothing is due: everything delivered, in claim order."""
    delivered: list[Delivery] = []
    while batch := await store.claim_deliveries(now, CLAIM_LEASE_MS, {}, 100, 100):
        for delivery in batch:
            await deliver(store, delivery, 200, now)
        delivered += batch
    return delivered


def lane_place(delivery: Delivery) -> tuple[str, int]:
    return delivery.webhook_id, delivery.event_seq


def names(events: list[Any]) -> list[str]:
    return [e.event for e in events]


# --- the log ------------------------------------------------------------------------


def test_a_session_s_life_is_told_in_order_with_its_payloads(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid, _ = await project_with_key(store)
        told: list[StoredEvent] = []
        await start_listening(store, told)
        fancy = '{"displayName":"Zoë 🎉","note":"naïve \\"quote\\""}'
        await store.record_join(pid, ROOM, "ses_1", 1000, "peer-a", "host", fancy, 1000)
        await store.record_join(pid, ROOM, "ses_1", None, "peer-b", "guest", "", 1100)
        await store.record_join(pid, ROOM, "ses_1", None, "peer-c", "guest", "ç", 1150)
        await store.record_exit("ses_1", "peer-b", 1200)
        await store.record_exit("ses_1", "peer-b", 1250)  # has left: nothing to tell
        assert await store.add_egress_job(job("job_r", pid, ROOM, started_at=1300))
        assert not await store.add_egress_job(job("job_dup", pid, ROOM, started_at=1310))  # refused: untold
        streams = ["rtmp://a.example/live/x", "rtmp://b.example/live/y"]
        assert await store.add_egress_job(
            job("job_l", pid, ROOM, type="livestream", started_at=1400, rtmp_urls=streams)
        )
        assert await store.stop_egress_job("job_l", 1500, 0)
        assert await store.stop_egress_job("job_r", 1800, 42)
        assert not await store.stop_egress_job("job_r", 1900, 42)  # stopped once
        await store.record_exit("ses_1", "peer-a", 2000)
        await store.record_join(pid, ROOM, "ses_1", None, "peer-a", "host", "back", 2050)  # a second stint
        await store.record_exit("ses_1", "peer-c", 2100)
        await store.record_exit("ses_1", "peer-a", 2100)
        await store.end_sessions([("ses_1", 2100)])
        await store.end_sessions([("ses_1", 2200)])  # ended once

        base = {"sessionId": "ses_1", "roomId": ROOM}
        job_r = {"id": "job_r", "roomId": ROOM, "sessionId": "ses_1"}
        job_l = {"id": "job_l", "roomId": ROOM, "sessionId": "ses_1"}
        expected: list[tuple[str, int, dict[str, Any]]] = [
            ("meeting:started", 1000, {**base, "createdAt": 1000}),
            ("peer:joined", 1000, {"id": "peer-a", **base, "joinedAt": 1000, "metadata": fancy, "role": "host"}),
            ("peer:joined", 1100, {"id": "peer-b", **base, "joinedAt": 1100, "metadata": "", "role": "guest"}),
            ("peer:joined", 1150, {"id": "peer-c", **base, "joinedAt": 1150, "metadata": "ç", "role": "guest"}),
            (
                "peer:left",
                1200,
                {"id": "peer-b", **base, "leftAt": 1200, "duration": 100, "metadata": "", "role": "guest"},
            ),
            ("recording:started", 1300, {**job_r, "files": [], "streams": []}),
            ("recording:started", 1400, {**job_l, "files": [], "streams": []}),
            (
                "recording:ended",
                1500,
                {
                    **job_l,
                    "files": [],
                    "streams": [
                        {"duration": 100, "url": streams[0], "startedAt": 1400, "endedAt": 1500},
                        {"duration": 100, "url": streams[1], "startedAt": 1400, "endedAt": 1500},
                    ],
                },
            ),
            (
                "recording:ended",
                1800,
                {
                    **job_r,
                    "files": [
                        {
                            "duration": 500,
                            "size": 42,
                            "filename": "job_r.json",
                            "location": "/api/v1/recordings/job_r/download",
                        }
                    ],
                    "streams": [],
                },
            ),
            (
                "peer:left",
                2000,
                {"id": "peer-a", **base, "leftAt": 2000, "duration": 1000, "metadata": fancy, "role": "host"},
            ),
            ("peer:joined", 2050, {"id": "peer-a", **base, "joinedAt": 2050, "metadata": "back", "role": "host"}),
            (
                "peer:left",
                2100,
                {"id": "peer-c", **base, "leftAt": 2100, "duration": 950, "metadata": "ç", "role": "guest"},
            ),
            (
                "peer:left",
                2100,
                {"id": "peer-a", **base, "leftAt": 2100, "duration": 50, "metadata": "back", "role": "host"},
            ),
            (
                "meeting:ended",
                2100,
                {
                    **base,
                    "createdAt": 1000,
                    "endedAt": 2100,
                    "duration": 1100,
                    "participants": 3,
                    "maxParticipants": 3,
                },
            ),
        ]
        log = await log_of(store, pid)
        assert [(e.event, e.created_at, json.loads(e.payload)) for e in log] == expected
        # Byte for byte what JSON.stringify gives: keys in the contract's
        # order, nothing escaped that need not be.
        assert [e.payload for e in log] == [to_json(payload) for _, _, payload in expected]
        assert "Zoë 🎉" in log[1].payload and "\\u" not in log[1].payload
        assert [e.position for e in log] == list(range(1, len(expected) + 1))
        assert [e.room_seq for e in log] == list(range(1, len(expected) + 1))
        assert all(e.id.startswith("evt_") and e.project_id == pid and e.room_id == ROOM for e in log)
        assert len({e.id for e in log}) == len(log)
        # the listener heard the same, in the same order
        await wait_for(lambda: len(told) >= len(log))
        assert told == log

    backend.run(scenario)


def test_a_crash_closed_session_says_who_left_and_that_it_ended(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid, _ = await project_with_key(store)
        await store.record_join(pid, ROOM, "ses_1", 1000, "peer-a", "host", "Ådne", 1000)
        await store.record_join(pid, ROOM, "ses_1", None, "peer-b", "guest", "", 1200)
        await store.record_join(pid, ROOM, "ses_1", None, "peer-a", "host", "twice", 1300)  # a second tab
        await store.touch_sessions(["ses_1"], 1900)
        # ended with a stint open (its leave not written yet): the session's
        # end closes it first, and says so before meeting:ended
        await store.record_join(pid, OTHER_ROOM, "ses_2", 100, "peer-z", "host", "", 100)
        await store.end_sessions([("ses_2", 300)])
        await store.record_exit("ses_2", "peer-z", 400)  # late: nothing left to close
        other_room = [e for e in await log_of(store, pid) if e.room_id == OTHER_ROOM]
        assert [e.event for e in other_room] == ["meeting:started", "peer:joined", "peer:left", "meeting:ended"]
        assert json.loads(other_room[2].payload)["leftAt"] == 300
        before = len(await log_of(store, pid))

        assert await store.close_interrupted_sessions() == 1
        assert await store.close_interrupted_sessions() == 0
        told = (await log_of(store, pid))[before:]
        base = {"sessionId": "ses_1", "roomId": ROOM}
        assert [(e.event, e.room_id, e.created_at, json.loads(e.payload)) for e in told] == [
            (
                "peer:left",
                ROOM,
                1900,
                {"id": "peer-a", **base, "leftAt": 1900, "duration": 900, "metadata": "Ådne", "role": "host"},
            ),
            (
                "peer:left",
                ROOM,
                1900,
                {"id": "peer-b", **base, "leftAt": 1900, "duration": 700, "metadata": "", "role": "guest"},
            ),
            (
                "peer:left",
                ROOM,
                1900,
                {"id": "peer-a", **base, "leftAt": 1900, "duration": 600, "metadata": "twice", "role": "host"},
            ),
            (
                "meeting:ended",
                ROOM,
                1900,
                {
                    **base,
                    "createdAt": 1000,
                    "endedAt": 1900,
                    "duration": 900,
                    "participants": 2,
                    "maxParticipants": 2,
                },
            ),
        ]
        assert [e.room_seq for e in told] == [5, 6, 7, 8]

    backend.run(scenario)


def test_positions_and_room_sequences_are_gapless_and_the_log_is_read_by_position(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid, _ = await project_with_key(store)
        other, _ = await project_with_key(store, OTHER_WALLET)
        assert await store.latest_event(pid) is None
        assert await store.events_after(pid, 0, 10) == []
        rooms = [ROOM, OTHER_ROOM, "cde-fghi-jkl"]
        started: set[str] = set()
        for n in range(12):
            room = rooms[n % 3]
            project = other if n % 4 == 0 else pid
            session = f"ses_{project}_{room}"
            start = None if session in started else 10 * n
            started.add(session)
            await store.record_join(project, room, session, start, f"peer-{n}", "host", "", 10 * n)
        mine, theirs = await log_of(store, pid), await log_of(store, other)
        assert len(mine) + len(theirs) == 12 + len(started)
        for log in (mine, theirs):
            assert [e.position for e in log] == list(range(1, len(log) + 1))
            by_room: dict[str, list[int]] = defaultdict(list)
            for e in log:
                by_room[e.room_id].append(e.room_seq)
            assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in by_room.values())
        assert {e.project_id for e in mine} == {pid} and {e.project_id for e in theirs} == {other}

        assert [e.position for e in await store.events_after(pid, 5, 3)] == [6, 7, 8]
        assert await store.events_after(pid, len(mine), 10) == []
        assert await store.event_position(pid, mine[6].id) == 7
        assert await store.event_position(other, mine[6].id) is None  # another project's
        assert await store.event_position(pid, "evt_missing") is None
        assert await store.latest_event(pid) == mine[-1]
        assert await store.latest_event(other) == theirs[-1]

    backend.run(scenario)


def test_history_since_a_time_lists_the_stints_not_ended_by_then(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid, _ = await project_with_key(store)
        other, _ = await project_with_key(store, OTHER_WALLET)
        await store.record_join(pid, ROOM, "ses_1", 100, "peer-a", "host", "", 100)
        await store.record_exit("ses_1", "peer-a", 200)
        await store.record_join(pid, ROOM, "ses_1", None, "peer-b", "host", "", 300)
        await store.record_exit("ses_1", "peer-b", 500)
        await store.record_join(pid, ROOM, "ses_1", None, "peer-c", "host", "", 400)
        await store.record_join(other, ROOM, "ses_o", 100, "peer-o", "host", "", 100)
        assert sorted(await store.stints_since(pid, 250), key=str) == sorted([(300, 500), (400, None)], key=str)
        assert len(await store.stints_since(pid, 0)) == 3
        await store.end_sessions([("ses_1", 600)])
        assert await store.stints_since(pid, 700) == []

    backend.run(scenario)


# --- the webhook queue -----------------------------------------------------------------


def test_webhooks_are_queued_only_the_events_they_want_of_their_own_project(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid, key = await project_with_key(store)
        other, other_key = await project_with_key(store, OTHER_WALLET)
        everything = await add_webhook(store, pid, key)
        joins = await add_webhook(store, pid, key, ["peer:joined"])
        theirs = await add_webhook(store, other, other_key, ["meeting:started", "meeting:ended"])
        assert await store.webhook(pid, joins.id) == joins
        assert await store.webhook(other, joins.id) is None  # another project's
        await store.record_join(pid, ROOM, "ses_1", 1000, "peer-a", "host", "", 1000)
        await store.record_join(pid, ROOM, "ses_1", None, "peer-b", "host", "", 1100)
        await store.record_exit("ses_1", "peer-a", 1400)
        await store.record_exit("ses_1", "peer-b", 1500)
        await store.record_join(other, ROOM, "ses_o", 1000, "peer-o", "host", "", 1000)
        await store.record_exit("ses_o", "peer-o", 1200)
        await store.end_sessions([("ses_1", 1500), ("ses_o", 1200)])
        await store.sequence_events()

        states = {s.webhook.id: s for s in await store.list_webhooks(pid)}
        assert list(states) == [everything.id, joins.id]
        assert (states[everything.id].pending, states[joins.id].pending) == (6, 2)
        assert states[joins.id].webhook == joins and states[joins.id].last_delivery is None
        assert [s.pending for s in await store.list_webhooks(other)] == [2]

        delivered = await drain(store)
        by_hook: dict[str, list[str]] = defaultdict(list)
        for d in delivered:
            by_hook[d.webhook_id].append(d.event)
        assert by_hook == {
            everything.id: ["meeting:started", "peer:joined", "peer:joined", "peer:left", "peer:left", "meeting:ended"],
            joins.id: ["peer:joined", "peer:joined"],
            theirs.id: ["meeting:started", "meeting:ended"],
        }
        log = {e.id: e for e in await log_of(store, pid) + await log_of(store, other)}
        for d in delivered:
            stored = log[d.event_id]
            assert (d.event, d.room_id, d.room_seq, d.payload, d.created_at) == (
                stored.event,
                stored.room_id,
                stored.room_seq,
                stored.payload,
                stored.created_at,
            )
            assert d.url == "https://receiver.example/hook" and d.sealed_key == b"sealed\x00key" and d.attempt == 1
        assert [s.pending for s in await store.list_webhooks(pid)] == [0, 0]
        assert await store.next_delivery_at() is None

    backend.run(scenario)


def test_a_room_s_next_event_waits_for_the_one_before_and_other_rooms_do_not(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid, key = await project_with_key(store)
        hook = await add_webhook(store, pid, key)
        for room, at in ((ROOM, 1000), (OTHER_ROOM, 1010)):
            await store.record_join(pid, room, f"ses_{room}", at, "peer-a", "host", "", at)  # two events each
        await store.sequence_events()
        assert await store.next_delivery_at() == 0  # due at once

        now = 5000
        heads = await store.claim_deliveries(now, 60_000, {}, 10, 10)
        assert [(d.room_id, d.room_seq, d.event) for d in heads] == [
            (ROOM, 1, "meeting:started"),
            (OTHER_ROOM, 1, "meeting:started"),
        ]
        # each room's second event waits for its first
        assert await store.claim_deliveries(now, 60_000, {}, 10, 10) == []
        first, second = heads
        settled = await deliver(store, first, 503, now)
        assert settled.outcome == "retry" and settled.next_at == now + 2000
        assert await store.claim_deliveries(now + 1999, 60_000, {}, 10, 10) == []
        await deliver(store, second, 200, now)
        [nxt] = await store.claim_deliveries(now, 60_000, {}, 10, 10)
        assert (nxt.room_id, nxt.room_seq, nxt.event) == (OTHER_ROOM, 2, "peer:joined")
        [again] = await store.claim_deliveries(now + 2000, 60_000, {}, 10, 10)
        assert (again.room_id, again.room_seq, again.attempt) == (ROOM, 1, 2)
        assert again.webhook_id == hook.id and again.event_id == first.event_id

    backend.run(scenario)


def test_the_next_delivery_is_a_room_s_head_not_an_event_behind_it(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    async def scenario(store: Any) -> None:
        pid, key = await project_with_key(store)
        await add_webhook(store, pid, key)
        await store.record_join(pid, ROOM, "ses_1", 1000, "peer-a", "host", "", 1000)  # two events
        await store.sequence_events()
        [head] = await store.claim_deliveries(5000, 60_000, {}, 10, 10)
        await deliver(store, head, 500, 5000)  # retried at 7000
        # the second event (due since 1000) is not due before its head
        assert await store.next_delivery_at() == 7000

    backend.run(scenario)


def test_a_claim_holds_a_delivery_for_its_lease_and_places_are_shared_per_webhook(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid, key = await project_with_key(store)
        busy = await add_webhook(store, pid, key)
        idle = await add_webhook(store, pid, key)
        rooms = [f"room-{n}" for n in range(5)]
        for n, room in enumerate(rooms):
            assert await store.add_egress_job(job(f"job_{n}", pid, room, started_at=100 + n))
        await store.sequence_events()

        claimed = await store.claim_deliveries(1000, 500, {busy.id: 2}, 3, 100)
        counts = Counter(d.webhook_id for d in claimed)
        assert counts == {busy.id: 2, idle.id: 3}
        assert len(await store.claim_deliveries(1200, 500, {}, 10, 4)) == 4  # `limit` in all
        assert len(await store.claim_deliveries(1499, 500, {}, 10, 100)) == 1  # the rest; the others held
        assert await store.claim_deliveries(1499, 500, {}, 10, 100) == []
        assert await store.next_delivery_at() == 1500
        again = await store.claim_deliveries(1500, 500, {}, 10, 100)  # the first leases ran out
        assert sorted(map(lane_place, again)) == sorted(map(lane_place, claimed))
        assert all(d.attempt == 1 for d in again)

    backend.run(scenario)


def test_settling_records_the_attempt_and_applies_the_outcome(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid, key = await project_with_key(store)
        hook = await add_webhook(store, pid, key)
        rooms = ["room-a", "room-b", "room-c"]
        for n, room in enumerate(rooms):
            assert await store.add_egress_job(job(f"job_{n}", pid, room, started_at=100))
        await store.sequence_events()
        by_room = {d.room_id: d for d in await store.claim_deliveries(1000, 60_000, {}, 10, 10)}

        await store.settle_delivery(by_room["room-a"], AttemptResult(204), Settlement("delivered"), 1001)
        await store.settle_delivery(
            by_room["room-b"], AttemptResult(None, "timed out"), Settlement("retry", 3000, "timed out"), 1002
        )
        await store.settle_delivery(
            by_room["room-c"], AttemptResult(500), Settlement("given-up", error="given up after 1 attempts"), 1003
        )
        [state] = await store.list_webhooks(pid)
        assert state.pending == 1  # room-b's, to retry
        assert state.last_delivery is not None
        assert (state.last_delivery.at, state.last_delivery.event_id) == (1003, by_room["room-c"].event_id)
        assert (state.last_delivery.response_status, state.last_delivery.error) == (500, "given up after 1 attempts")
        assert await store.next_delivery_at() == 3000
        assert await store.claim_deliveries(2999, 60_000, {}, 10, 10) == []
        [retry] = await store.claim_deliveries(3000, 60_000, {}, 10, 10)
        assert (retry.room_id, retry.attempt) == ("room-b", 2)

        await store.settle_delivery(retry, AttemptResult(410), Settlement("disable", error="gone"), 3001)
        disabled = await store.webhook(pid, hook.id)
        assert disabled is not None and disabled.status == "disabled"
        # nothing more is queued for it, nor claimed
        await store.record_join(pid, ROOM, "ses_1", 4000, "peer-a", "host", "", 4000)
        await store.sequence_events()
        [state] = await store.list_webhooks(pid)
        assert state.pending == 0 and state.webhook.status == "disabled"
        assert await store.claim_deliveries(LATER, 60_000, {}, 10, 10) == []
        assert await store.next_delivery_at() is None

        page, cursor = await store.webhook_deliveries(pid, hook.id, None, 10)
        assert cursor is None
        assert [(e.room_id, e.attempt, e.at, e.response_status, e.error) for e in page] == [
            ("room-b", 2, 3001, 410, "gone"),
            ("room-c", 1, 1003, 500, "given up after 1 attempts"),
            ("room-b", 1, 1002, None, "timed out"),
            ("room-a", 1, 1001, 204, None),
        ]
        assert all(e.event == "recording:started" for e in page)

    backend.run(scenario)


def test_deliveries_are_paged_newest_first(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid, key = await project_with_key(store)
        other, other_key = await project_with_key(store, OTHER_WALLET)
        hook = await add_webhook(store, pid, key)
        await add_webhook(store, other, other_key)
        for n in range(5):
            assert await store.add_egress_job(job(f"job_{n}", pid, f"room-{n}", started_at=100 + n))
        await store.sequence_events()
        attempts = await drain(store)
        assert len(attempts) == 5
        seen = []
        cursor = None
        while True:
            page, cursor = await store.webhook_deliveries(pid, hook.id, cursor, 2)
            assert len(page) <= 2
            seen += page
            if cursor is None:
                break
        assert [e.event_id for e in seen] == [d.event_id for d in reversed(attempts)]
        assert [e.seq for e in seen] == sorted((e.seq for e in seen), reverse=True)
        assert await store.webhook_deliveries(other, hook.id, None, 2) is None  # another project's
        assert await store.webhook_deliveries(pid, "whk_missing", None, 2) is None
        assert await store.prune_deliveries(LATER) == 0  # none older
        assert await store.prune_deliveries(LATER + 1) == 5
        assert await store.webhook_deliveries(pid, hook.id, None, 2) == ([], None)

    backend.run(scenario)


def test_revoking_the_signing_key_disables_its_webhooks(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid, key = await project_with_key(store)
        _, kept_key = await project_with_key(store)  # the same project: another key
        revoked = await add_webhook(store, pid, key)
        kept = await add_webhook(store, pid, kept_key)
        await store.revoke_api_key("hash_" + key, 50)
        states = {s.webhook.id: s.webhook.status for s in await store.list_webhooks(pid)}
        assert states == {revoked.id: "disabled", kept.id: "active"}
        await store.record_join(pid, ROOM, "ses_1", 1000, "peer-a", "host", "", 1000)
        await store.sequence_events()
        assert {d.webhook_id for d in await drain(store)} == {kept.id}

    backend.run(scenario)


def test_deleting_a_webhook_drops_its_queue_and_its_log(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid, key = await project_with_key(store)
        other, _ = await project_with_key(store, OTHER_WALLET)
        hook = await add_webhook(store, pid, key)
        kept = await add_webhook(store, pid, key)
        await store.record_join(pid, ROOM, "ses_1", 1000, "peer-a", "host", "", 1000)
        await store.sequence_events()
        [first, *_] = await store.claim_deliveries(2000, 60_000, {kept.id: 0}, 10, 10)
        await deliver(store, first, 500, 2000)
        assert await store.delete_webhook(other, hook.id) is False  # another project's
        assert await store.delete_webhook(pid, hook.id) is True
        assert await store.delete_webhook(pid, hook.id) is False
        assert await store.webhook(pid, hook.id) is None
        assert await store.webhook_deliveries(pid, hook.id, None, 10) is None
        assert [s.webhook.id for s in await store.list_webhooks(pid)] == [kept.id]
        assert {d.webhook_id for d in await drain(store)} == {kept.id}
        # nothing waits for the events any more
        assert await store.prune_events(LATER) == 2

    backend.run(scenario)


def test_a_test_event_goes_to_its_webhook_alone_and_stays_out_of_the_log(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid, key = await project_with_key(store)
        other, other_key = await project_with_key(store, OTHER_WALLET)
        hook = await add_webhook(store, pid, key)
        await add_webhook(store, pid, key)  # every event: not this one
        theirs = await add_webhook(store, other, other_key)
        await store.record_join(pid, ROOM, "ses_1", 1000, "peer-a", "host", "", 1000)
        latest = (await log_of(store, pid))[-1]

        event_id = await store.queue_test_event(pid, hook.id, {"webhookId": hook.id, "sentAt": 1500}, 1500)
        assert event_id is not None and event_id.startswith("evt_")
        second = await store.queue_test_event(pid, hook.id, {"webhookId": hook.id, "sentAt": 1600}, 1600)
        assert await store.queue_test_event(other, hook.id, {}, 1500) is None  # another project's
        assert await store.queue_test_event(pid, "whk_missing", {}, 1500) is None
        await store.revoke_api_key("hash_" + other_key, 1)
        assert await store.queue_test_event(other, theirs.id, {}, 1500) is None  # disabled

        tests = [d for d in await drain(store) if d.event == "webhook:test"]
        assert [(d.webhook_id, d.event_id, d.room_id, d.room_seq) for d in tests] == [
            (hook.id, event_id, "", 1),
            (hook.id, second, "", 2),
        ]
        assert json.loads(tests[0].payload) == {"webhookId": hook.id, "sentAt": 1500}
        assert tests[0].created_at == 1500
        assert await store.latest_event(pid) == latest
        assert "webhook:test" not in names(await log_of(store, pid))

    backend.run(scenario)


def test_old_events_are_forgotten_unless_a_webhook_still_waits_for_them(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid, key = await project_with_key(store)
        await add_webhook(store, pid, key, ["recording:started"])
        await store.record_join(pid, ROOM, "ses_1", 1000, "peer-a", "host", "", 1000)  # 2, not wanted
        assert await store.add_egress_job(job("job_1", pid, ROOM, started_at=1100))  # wanted
        await store.record_exit("ses_1", "peer-a", 5000)
        assert len(await log_of(store, pid)) == 4
        kept_id = (await log_of(store, pid))[2].id  # recording:started, position 3
        first_id = (await log_of(store, pid))[0].id
        assert await store.event_position(pid, kept_id) == 3
        assert await store.prune_events(2000) == 2
        assert names(await store.events_after(pid, 0, 10)) == ["recording:started", "peer:left"]
        # a stream client cannot resume after a pruned event, nor after a kept
        # one with pruned events... only where nothing after it is missing
        assert await store.event_position(pid, first_id) is None
        assert await store.event_position(pid, kept_id) == 3
        await drain(store)
        assert await store.prune_events(2000) == 1
        [left] = await store.events_after(pid, 0, 10)
        assert (left.event, left.position) == ("peer:left", 4)
        # numbering goes on where it was
        await store.record_join(pid, ROOM, "ses_1", None, "peer-b", "host", "", 6000)
        assert [(e.position, e.room_seq) for e in (await log_of(store, pid))[1:]] == [(5, 5)]

    backend.run(scenario)


def test_a_stream_cannot_resume_after_a_kept_event_when_later_ones_were_pruned(backend: Backend) -> None:
    async def scenario(store: Any) -> None:
        pid, key = await project_with_key(store)
        await add_webhook(store, pid, key, ["meeting:started"])
        await store.record_join(pid, ROOM, "ses_1", 1000, "peer-a", "host", "", 1000)  # 1 wanted, 2 not
        await store.record_exit("ses_1", "peer-a", 1500)  # 3, not wanted
        await store.record_join(pid, ROOM, "ses_1", None, "peer-b", "host", "", 5000)  # 4, not wanted
        await store.sequence_events()
        started = (await log_of(store, pid))[0]
        assert await store.event_position(pid, started.id) == 1
        assert await store.prune_events(2000) == 2  # 2 and 3; 1 waits for the webhook
        # resuming after 1 would skip 2 and 3 without saying so: not offered
        assert await store.event_position(pid, started.id) is None

    backend.run(scenario)


# --- PostgreSQL only: many nodes -------------------------------------------------


async def _nodes(url: str, count: int) -> list[PostgresStore]:
    return [await PostgresStore.connect(url) for _ in range(count)]


def test_events_are_unnumbered_until_sequenced_and_a_failed_write_leaves_none(pg_url: str) -> None:
    asyncio.run(conformance._truncate_all(pg_url))

    async def scenario() -> None:
        [store] = await _nodes(pg_url, 1)
        try:
            pid, _ = await project_with_key(store)
            await store.record_join(pid, ROOM, "ses_1", 1000, "peer-a", "host", "", 1000)
            bad = store.record_join(pid, ROOM, "ses_1", None, "peer-late", "guest", "", 2**63)  # fails alone
            await store.record_exit("ses_1", "peer-a", 1100)
            with pytest.raises(Exception):  # noqa: B017 - out of range: the driver's own error
                await bad
            assert await store.events_after(pid, 0, 10) == []
            assert await store.latest_event(pid) is None
            assert await store.prune_events(LATER) == 0  # not before they are numbered
            assert await store.sequence_events() == 3
            assert await store.sequence_events() == 0
            assert names(await store.events_after(pid, 0, 10)) == ["meeting:started", "peer:joined", "peer:left"]
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_a_session_started_on_another_node_after_its_first_join_starts_once(pg_url: str) -> None:
    asyncio.run(conformance._truncate_all(pg_url))

    async def scenario() -> None:
        starter, joiner = await _nodes(pg_url, 2)
        try:
            pid, _ = await project_with_key(starter)
            await joiner.record_join(pid, ROOM, "ses_x", None, "peer-b", "guest", "", 20)  # lands first
            await starter.record_join(pid, ROOM, "ses_x", 10, "peer-a", "host", "", 10)
            await starter.end_sessions([("ses_x", 30)])  # both still in: they leave with it
            log = await log_of(starter, pid)
            assert names(log) == [
                "meeting:started",
                "peer:joined",
                "peer:joined",
                "peer:left",
                "peer:left",
                "meeting:ended",
            ]
            assert json.loads(log[-1].payload)["createdAt"] == 10
            assert json.loads(log[-1].payload)["maxParticipants"] == 2
        finally:
            await starter.aclose()
            await joiner.aclose()

    asyncio.run(scenario())


def test_orphaned_sessions_closed_by_the_sweep_are_told_like_interrupted_ones(pg_url: str) -> None:
    asyncio.run(conformance._truncate_all(pg_url))

    async def scenario() -> None:
        [store] = await _nodes(pg_url, 1)
        try:
            pid, _ = await project_with_key(store)
            await store.record_join(pid, ROOM, "ses_1", 1000, "peer-a", "host", "", 1000)
            await store.record_join(pid, OTHER_ROOM, "ses_2", 1000, "peer-b", "host", "", 1000)
            await store.touch_sessions(["ses_1", "ses_2"], 1500)
            assert await store.close_orphaned_sessions(["ses_2"], 2000) == 1
            told = (await log_of(store, pid))[4:]
            assert [(e.event, e.room_id, json.loads(e.payload).get("leftAt")) for e in told] == [
                ("peer:left", ROOM, 1500),
                ("meeting:ended", ROOM, None),
            ]
            assert json.loads(told[1].payload)["endedAt"] == 1500
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_nodes_writing_at_once_number_gaplessly_and_each_hears_every_event_once_in_order(pg_url: str) -> None:
    asyncio.run(conformance._truncate_all(pg_url))

    async def scenario() -> None:
        nodes = await _nodes(pg_url, 3)
        heard: list[list[StoredEvent]] = [[], [], []]
        try:
            pid, _ = await project_with_key(nodes[0])
            other, _ = await project_with_key(nodes[0], OTHER_WALLET)
            for node, told in zip(nodes[:2], heard[:2], strict=True):
                await start_listening(node, told)
            # the third is started by its first listener alone
            nodes[2].on_committed(heard[2].extend)
            await wait_for(lambda: nodes[2]._feed is not None and nodes[2]._feed.connections == 1)
            rooms = [ROOM, OTHER_ROOM, "cde-fghi-jkl"]

            async def write(n: int, node: PostgresStore) -> None:
                # rooms shared between writers: every node writes into each
                for k in range(60):
                    project = pid if k % 2 else other
                    room = rooms[k % 3]
                    session = f"ses_{n}_{k}"
                    # queued together, as the realtime layer does
                    joins = [
                        node.record_join(project, room, session, k, "peer-a", "host", "", k),
                        node.record_join(project, room, session, None, "peer-b", "host", "", k),
                    ]
                    exit_ = node.record_exit(session, "peer-a", k + 1)
                    await asyncio.gather(*joins, exit_)

            await asyncio.gather(*(write(n, node) for n, node in enumerate(nodes[:2])))
            total = 2 * 60 * 4
            for told in heard:
                await wait_for(lambda told=told: len(told) >= total)
            await asyncio.sleep(0.3)  # nothing more comes
            everything = await log_of(nodes[2], pid) + await log_of(nodes[2], other)
            assert len(everything) == total
            for told in heard:
                assert len(told) == total
                assert sorted(e.id for e in told) == sorted(e.id for e in everything)
                for project in (pid, other):
                    mine = [e for e in told if e.project_id == project]
                    assert [e.position for e in mine] == list(range(1, len(mine) + 1))
                    for room in rooms:
                        seqs = [e.room_seq for e in mine if e.room_id == room]
                        assert seqs == list(range(1, len(seqs) + 1))
                    # each session's own events in the order they were written
                    by_session: dict[str, list[str]] = defaultdict(list)
                    for e in mine:
                        by_session[json.loads(e.payload)["sessionId"]].append(e.event)
                    assert set(map(tuple, by_session.values())) == {
                        ("meeting:started", "peer:joined", "peer:joined", "peer:left")
                    }
            assert heard[0] == heard[1] == heard[2]
        finally:
            for node in nodes:
                await node.aclose()

    asyncio.run(scenario())


def test_claims_from_many_nodes_never_hand_out_one_delivery_twice(pg_url: str) -> None:
    asyncio.run(conformance._truncate_all(pg_url))

    async def scenario() -> None:
        nodes = await _nodes(pg_url, 3)
        try:
            pid, key = await project_with_key(nodes[0])
            hooks = [await add_webhook(nodes[0], pid, key) for _ in range(2)]
            rooms = [f"room-{n:02d}" for n in range(20)]
            for n, room in enumerate(rooms):
                await nodes[n % 3].record_join(pid, room, f"ses_{n}", n, "peer-a", "host", "", n)
                await nodes[n % 3].record_exit(f"ses_{n}", "peer-a", n + 1)
            await nodes[0].sequence_events()
            expected = len(rooms) * 3 * len(hooks)
            claims: list[tuple[int, Delivery]] = []

            async def work(n: int, node: PostgresStore) -> None:
                idle = 0
                while idle < 20:
                    batch = await node.claim_deliveries(LATER, CLAIM_LEASE_MS, {}, 4, 5)
                    if not batch:
                        idle += 1
                        await asyncio.sleep(0.01)
                        continue
                    idle = 0
                    claims.extend((n, d) for d in batch)
                    await asyncio.sleep(0.001)
                    for d in batch:
                        await deliver(node, d, 200, LATER)

            await asyncio.gather(*(work(n, node) for n, node in enumerate(nodes)))
            keys = [(d.webhook_id, d.event_seq) for _, d in claims]
            assert len(keys) == expected
            assert len(set(keys)) == expected  # none twice
            assert len({n for n, _ in claims}) > 1  # the nodes shared the work
            # each (webhook, room) lane in order
            lanes: dict[tuple[str, str], list[int]] = defaultdict(list)
            for _, d in claims:
                lanes[(d.webhook_id, d.room_id)].append(d.room_seq)
            assert all(seqs == [1, 2, 3] for seqs in lanes.values())
        finally:
            for node in nodes:
                await node.aclose()

    asyncio.run(scenario())


def test_a_listener_that_loses_its_connection_catches_up_without_repeats(pg_url: str) -> None:
    asyncio.run(conformance._truncate_all(pg_url))

    async def scenario() -> None:
        listener, writer = await _nodes(pg_url, 2)
        heard: list[StoredEvent] = []
        try:
            pid, _ = await project_with_key(writer)
            await start_listening(listener, heard)
            await writer.record_join(pid, ROOM, "ses_1", 1000, "peer-a", "host", "", 1000)
            await wait_for(lambda: len(heard) == 2)
            feed = listener._feed
            assert feed is not None and feed.connections == 1
            admin = await asyncpg.connect(pg_url)
            try:
                # Cut its LISTEN connection and write while it is away.
                await admin.execute("SELECT pg_terminate_backend($1)", feed._conn.get_server_pid())
                for n in range(5):
                    await writer.record_join(pid, ROOM, "ses_1", None, f"peer-{n}", "guest", "", 1100 + n)
                await writer.sequence_events()  # and sequenced by someone else meanwhile
                await wait_for(lambda: len(heard) >= 7)
                assert feed.connections == 2
                # Unsequenced events written while nobody listens: sequenced
                # by whichever listener comes back.
                listeners = await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND datname = current_database()"
                )
                assert listeners >= 1
            finally:
                await admin.close()
            await writer.record_exit("ses_1", "peer-a", 2000)
            await wait_for(lambda: len(heard) >= 8)
            await asyncio.sleep(0.2)
            assert [e.position for e in heard] == list(range(1, 9))
        finally:
            await listener.aclose()
            await writer.aclose()

    asyncio.run(scenario())


def test_writers_signal_at_commit_and_the_sequencer_says_which_projects(pg_url: str) -> None:
    """What other tools (or nodes of a later version) can rely on."""
    asyncio.run(conformance._truncate_all(pg_url))

    async def scenario() -> None:
        [store] = await _nodes(pg_url, 1)
        conn = await asyncpg.connect(pg_url)
        signals: list[tuple[str, str]] = []
        try:
            await conn.add_listener(UNSEQUENCED, lambda *a: signals.append((a[2], a[3])))
            await conn.add_listener(SEQUENCED, lambda *a: signals.append((a[2], a[3])))
            pid, _ = await project_with_key(store)
            other, _ = await project_with_key(store, OTHER_WALLET)
            await store.record_join(pid, ROOM, "ses_1", 1000, "peer-a", "host", "", 1000)
            await store.record_join(other, ROOM, "ses_2", 1000, "peer-a", "host", "", 1000)
            # one a commit (two writes awaited one after the other: two)
            await wait_for(lambda: len(signals) >= 2)
            await asyncio.sleep(0.1)
            assert signals == [(UNSEQUENCED, "")] * 2
            signals.clear()
            assert await store.sequence_events() == 4
            await wait_for(lambda: len(signals) >= 2)
            assert sorted(signals) == sorted([(SEQUENCED, pid), (SEQUENCED, other)])
        finally:
            await conn.close()
            await store.aclose()

    asyncio.run(scenario())
