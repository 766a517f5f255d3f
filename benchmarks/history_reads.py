"""History reads on a big project: how long the history routes take on a
SQLite database holding one project with 50 000 sessions and 500 000
participants, and how late the event loop runs a 2 ms probe timer meanwhile.

    .venv/bin/python benchmarks/history_reads.py [--repeat 20] [--sessions 50000] [--participants 500000]

Issue 12's targets: history reads (metrics, session lists, participants,
recordings) never run on the event loop; the 500k-participant metrics query
answers in <= 50 ms while a 2 ms probe sees no stall (<= 50 ms late).

What it does (loopback only, stops by itself):
  1. builds the data directory once and caches it under
     /tmp/livesessions-bench-history/<hash of the schema and the sizes>/:
     starts `livesessions serve` so that it creates the schema, makes an API
     key and --rooms rooms over the CLI and REST API, stops it, then
     bulk-inserts with sqlite3 what years of use would leave: --sessions
     ended sessions spread over the rooms and the last 30 days (oldest first,
     as the service numbers them), --participants stints (one session of
     --big-session stints, the others 1-19 each; peer ids drawn from a pool
     of --users, so peers come back), inserted in join-time order as the
     service writes them, and one finished recording for every 10th session.
     The events table (webhook outbox) is left empty: no route here reads it.
     Times are relative to when the cache was made, so after an hour the
     concurrent-peers read finds no recent stints (its scan stays the same);
  2. copies that directory fresh, starts `livesessions serve
     --loop-probe-interval 0.002` on it (rate limit off) and reads the lag
     metrics from GET /metrics for an idle baseline;
  3. for each read, --repeat times in a row (one client, sequential):
       GET /api/v2/sdk/metrics
       GET /api/v2/sdk/metrics/concurrent-peers
       GET /api/v2/sdk/rooms/session-details?roomId=…            (first page, 20)
       GET /api/v2/sdk/rooms/session-details?roomId=…&cursor=…   (a page further back)
       GET /api/v2/sdk/rooms/participant-list?sessionId=…        (a typical session)
       GET /api/v2/sdk/rooms/participant-list?sessionId=…        (the big session)
       GET /api/v2/sdk/recordings                                 (first page)
       GET /api/v2/sdk/recordings?sessionId=…
     and the probe's figures between the first and last of them;
  4. prints p50/max ms of each, the probe's max lateness during each, the
     targets (metrics <= 50 ms; lag max <= 50 ms) and whether they were met,
     and writes benchmarks/results/history_reads.json.

--rebuild makes the cached database again. Without the lag metric (or with
the probe off), a NOTE says so and only the response times are reported.
Exit 1 only on real problems (non-2xx answers, wrong totals, server errors).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sqlite3
import string
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Api, Service, machine_info, new_wallet, percentile, write_json
from livesessions.stores import sqlite as sqlite_store
from loop_stall import LAG, PROBE_INTERVAL, describe_lag, lag_between, probe_flag_known, probe_running, read_lag

TARGET_METRICS_MS = 50.0
TARGET_LAG_S = 0.050
CACHE_ROOT = Path("/tmp/livesessions-bench-history")
GENERATOR_VERSION = 1
DAY_MS = 86_400_000
_ALNUM = string.ascii_lowercase + string.digits


def cache_key(args: argparse.Namespace) -> str:
    schema = "\n".join(sqlite_store._SCHEMA)  # the store's own migrations: a change makes a new database
    text = (
        f"{GENERATOR_VERSION}|{args.sessions}|{args.participants}|{args.rooms}|{args.users}|{args.big_session}|{schema}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _rand(rng: random.Random, prefix: str, length: int) -> str:
    return prefix + "".join(rng.choice(_ALNUM) for _ in range(length))


def generate(args: argparse.Namespace, target: Path) -> dict[str, Any]:
    """Make the data directory at `target` and return what the reads need."""
    service = Service(rate_limit=0, keep_data=True).start()
    try:
        key = service.create_key(new_wallet())
        api = Api(service.port, key)
        rooms = [api.create_room() for _ in range(args.rooms)]
        api.close()
    finally:
        service.stop()
    data_dir = service.data_dir
    rng = random.Random(20261130)
    now = int(time.time() * 1000)
    conn = sqlite3.connect(data_dir / "livesessions.sqlite3", isolation_level=None)
    try:
        ((project_id,),) = conn.execute("SELECT project_id FROM projects").fetchall()
        # Stints per session: the big one, the others 1..19 summing to the rest.
        rest = args.participants - args.big_session
        counts = [rng.randint(1, 19) for _ in range(args.sessions - 1)]
        diff = rest - sum(counts)
        i = 0
        while diff:
            step = 1 if diff > 0 else -1
            if 1 <= counts[i] + step <= 40:
                counts[i] += step
                diff -= step
            i = (i + 1) % len(counts)
        big_index = args.sessions // 2
        counts.insert(big_index, args.big_session)
        users = [_rand(rng, "peerId-", 16) for _ in range(args.users)]
        roles = ["host", "co-host", "speaker", "listener", "guest"]
        starts = sorted(rng.randrange(now - 30 * DAY_MS, now - 3_600_000) for _ in range(args.sessions))
        # The newest few sessions end within the last hour (concurrent-peers has something to count).
        sessions = []
        stints = []
        for index, (start, count) in enumerate(zip(starts, counts, strict=True)):
            duration = rng.randrange(5 * 60_000, 120 * 60_000) if index != big_index else 3 * 3_600_000
            if index >= args.sessions - 20:
                start = now - rng.randrange(10 * 60_000, 50 * 60_000)
                duration = rng.randrange(5 * 60_000, 9 * 60_000)
            end = start + duration
            session_id = _rand(rng, "ses_", 20)
            room_id = rooms[index % len(rooms)]
            peak = 0
            for _ in range(count):
                joined = rng.randrange(start, end - 1000)
                left = rng.randrange(joined + 1000, end + 1)
                metadata = "" if rng.random() < 0.7 else json.dumps({"displayName": _rand(rng, "user ", 6)})
                stints.append((joined, session_id, rng.choice(users), rng.choice(roles), metadata, left))
                peak += 1
            sessions.append((session_id, project_id, room_id, start, end, end, min(peak, count)))
        stints.sort()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO sessions (session_id, project_id, room_id, start_time, end_time, last_seen, max_participants)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            sessions,
        )
        conn.executemany(
            "INSERT INTO participants (session_id, peer_id, role, metadata, join_time, exit_time)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(s, p, r, m, j, e) for j, s, p, r, m, e in stints],
        )
        recordings = []
        for index in range(0, args.sessions, 10):
            session_id, _, room_id, start, end, _, _ = sessions[index]
            done = rng.random() < 0.5
            recordings.append(
                (
                    "job_" + rng.randbytes(10).hex(),
                    project_id,
                    room_id,
                    session_id,
                    "recording",
                    0,
                    start + 1000,
                    end,
                    "[]",
                    None,
                    rng.randrange(1 << 20, 1 << 30),
                    "completed" if done else "pending",
                    f"s3://bench/{session_id}.webm" if done else None,
                    rng.randrange(1 << 20, 1 << 30) if done else None,
                )
            )
        conn.executemany(
            "INSERT INTO egress_jobs (id, project_id, room_id, session_id, type, active, started_at, stopped_at,"
            " rtmp_urls, playback_id, size, media_status, media_location, media_size)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            recordings,
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        typical = next(s for s, c in zip(sessions, counts, strict=True) if c == 10)
        recorded = recordings[len(recordings) // 2][3]
        deep_room = rooms[len(rooms) // 2]
    finally:
        conn.close()
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(data_dir), str(target))
    shutil.rmtree(service.tmp, ignore_errors=True)
    return {
        "api_key": key,
        "project_id": project_id,
        "room": deep_room,
        "typical_session": typical[0],
        "big_session": sessions[big_index][0],
        "recorded_session": recorded,
        "sessions": args.sessions,
        "participants": args.participants,
        "distinct_peers": len({p for _, _, p, _, _, _ in stints}),
        "recordings": len(recordings),
        "generated_at_ms": now,
    }


def prepared(args: argparse.Namespace) -> tuple[Path, dict[str, Any], bool]:
    """The cached data directory (made if missing) and what it holds."""
    base = CACHE_ROOT / cache_key(args)
    data, meta_path = base / "data", base / "meta.json"
    if args.rebuild:
        shutil.rmtree(base, ignore_errors=True)
    if meta_path.exists() and data.exists():
        return data, json.loads(meta_path.read_text()), True
    shutil.rmtree(base, ignore_errors=True)
    meta = generate(args, data)
    meta_path.write_text(json.dumps(meta, indent=2))
    return data, meta, False


def timing_summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "first_ms": values[0],
        "p50_ms": percentile(ordered, 50),
        "max_ms": ordered[-1],
        "mean_ms": sum(ordered) / len(ordered),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20, help="times each read is made (default 20)")
    parser.add_argument("--sessions", type=int, default=50_000, help="sessions in the project (default 50000)")
    parser.add_argument("--participants", type=int, default=500_000, help="participant stints (default 500000)")
    parser.add_argument("--rooms", type=int, default=500, help="rooms the sessions are spread over (default 500)")
    parser.add_argument("--users", type=int, default=100_000, help="distinct peer ids stints are drawn from")
    parser.add_argument("--big-session", type=int, default=2000, help="stints of the one big session (default 2000)")
    parser.add_argument("--rebuild", action="store_true", help="make the cached database again")
    parser.add_argument("--output", default="history_reads.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    if args.sessions < 100 or args.participants < args.sessions + args.big_session or args.repeat < 1:
        parser.error("need at least 100 sessions, participants >= sessions + --big-session, --repeat >= 1")

    t = time.perf_counter()
    source, meta, cached = prepared(args)
    print(
        f"database: {meta['sessions']} sessions, {meta['participants']} participants "
        f"({meta['distinct_peers']} distinct peers), {meta['recordings']} recordings; "
        f"{'cached' if cached else 'generated'} in {source.parent} ({time.perf_counter() - t:.1f} s)",
        flush=True,
    )
    has_probe_flag = probe_flag_known()
    extra = ["--loop-probe-interval", str(PROBE_INTERVAL)] if has_probe_flag else []
    service = Service(rate_limit=0, extra=extra)
    shutil.copytree(source, service.data_dir)
    db_bytes = (service.data_dir / "livesessions.sqlite3").stat().st_size
    problems: list[str] = []
    notes: list[str] = []
    try:
        service.start()
        probe = has_probe_flag and probe_running(service.port)
        if not probe:
            notes.append(
                f"the service has no running {LAG} probe"
                + ("" if has_probe_flag else " (no --loop-probe-interval flag)")
                + ": only the response times are measured"
            )
            print(f"NOTE: {notes[-1]}", flush=True)
        api = Api(service.port, meta["api_key"])
        status, body = api.request("GET", "/api/v2/sdk")
        baseline = None
        if probe:
            before = read_lag(service.port)
            time.sleep(2.0)
            baseline = lag_between(before, read_lag(service.port))
            print(describe_lag("loop lag, idle baseline", baseline, 2.0), flush=True)

        # A cursor a few pages back in the room's session list.
        cursor = None
        for _ in range(3):
            status, body = api.request(
                "GET",
                f"/api/v2/sdk/rooms/session-details?roomId={meta['room']}" + (f"&cursor={cursor}" if cursor else ""),
            )
            if status != 200:
                problems.append(f"session-details answered {status}: {body}")
                break
            cursor = body["nextCursor"]
        reads = [
            ("metrics", "/api/v2/sdk/metrics"),
            ("concurrent peers (last hour)", "/api/v2/sdk/metrics/concurrent-peers"),
            ("sessions of a room, first page", f"/api/v2/sdk/rooms/session-details?roomId={meta['room']}"),
            (
                "sessions of a room, 4th page",
                f"/api/v2/sdk/rooms/session-details?roomId={meta['room']}&cursor={cursor}",
            ),
            (
                "participants, typical session",
                f"/api/v2/sdk/rooms/participant-list?sessionId={meta['typical_session']}",
            ),
            (
                f"participants, big session ({args.big_session})",
                f"/api/v2/sdk/rooms/participant-list?sessionId={meta['big_session']}",
            ),
            ("recordings, first page", "/api/v2/sdk/recordings"),
            ("recordings of a session", f"/api/v2/sdk/recordings?sessionId={meta['recorded_session']}"),
        ]
        results: dict[str, Any] = {}
        for name, path in reads:
            before = read_lag(service.port) if probe else None
            times: list[float] = []
            statuses: dict[int, int] = {}
            last_body: Any = None
            for _ in range(args.repeat):
                started = time.perf_counter()
                status, last_body = api.request("GET", path)
                times.append((time.perf_counter() - started) * 1000)
                statuses[status] = statuses.get(status, 0) + 1
            lag = lag_between(before, read_lag(service.port)) if probe and before else None
            results[name] = {"path": path, "statuses": statuses, "lag": lag, **timing_summary(times)}
            if set(statuses) != {200}:
                problems.append(f"{name}: answers {statuses}, e.g. {str(last_body)[:200]}")
            elif name == "metrics":
                results[name]["answer"] = last_body
                if (
                    last_body.get("totalSessions") != meta["sessions"]
                    or last_body.get("totalUsers") != meta["distinct_peers"]
                ):
                    problems.append(
                        f"metrics answered {last_body}, expected {meta['sessions']} sessions and "
                        f"{meta['distinct_peers']} users"
                    )

        print(f"\n{'GET (one client, sequential; ms)':44} {'first':>8} {'p50':>8} {'max':>8}  {'loop lag max':>14}")
        for name, r in results.items():
            lag = r["lag"]
            if lag and lag["ticks"]:
                lag_text = f"{'' if lag['max_exact'] else '<='}{lag['max_s'] * 1000:.1f} ms"
            else:
                lag_text = "n/a"
            print(f"{name:44} {r['first_ms']:8.1f} {r['p50_ms']:8.1f} {r['max_ms']:8.1f}  {lag_text:>14}")

        metrics = results["metrics"]
        metrics_met = metrics["max_ms"] <= TARGET_METRICS_MS
        print(
            f"\nmetrics over {meta['participants']} participants: p50 {metrics['p50_ms']:.1f} ms, max "
            f"{metrics['max_ms']:.1f} ms vs limit {TARGET_METRICS_MS:.0f} ms: ratio "
            f"{metrics['max_ms'] / TARGET_METRICS_MS:.2f}, target {'met' if metrics_met else 'missed'}"
        )
        lag_met = None
        lags = [r["lag"] for r in results.values() if r["lag"] and r["lag"]["ticks"]]
        if lags:
            worst = max(lag["max_s"] for lag in lags)
            lag_met = worst <= TARGET_LAG_S
            worst_name = next(n for n, r in results.items() if r["lag"] and r["lag"]["max_s"] == worst)
            exact = results[worst_name]["lag"]["max_exact"]
            print(
                f"loop lag max during the reads: {'' if exact else '<= '}{worst * 1000:.1f} ms (during {worst_name}) "
                f"vs limit "
                f"{TARGET_LAG_S * 1000:.0f} ms: ratio {worst / TARGET_LAG_S:.2f}, target "
                f"{'met' if lag_met else 'missed'}"
            )
            if metrics["lag"] and metrics["lag"]["ticks"]:
                print(describe_lag("  during the metrics reads", metrics["lag"]))

        log_problems = service.log_problems()
        if log_problems:
            problems.append(f"server log has {len(log_problems)} error lines, e.g. {log_problems[0]}")
        for problem in problems:
            print(f"PROBLEM: {problem}")
        path = write_json(
            args.output,
            {
                "benchmark": "history_reads",
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": machine_info(),
                "settings": {
                    "repeat": args.repeat,
                    "sessions": args.sessions,
                    "participants": args.participants,
                    "rooms": args.rooms,
                    "users": args.users,
                    "big_session": args.big_session,
                    "probe_interval_s": PROBE_INTERVAL if probe else None,
                    "server_args": extra,
                },
                "database": {k: v for k, v in meta.items() if k != "api_key"} | {"bytes": db_bytes},
                "targets": {"metrics_ms": TARGET_METRICS_MS, "loop_lag_s": TARGET_LAG_S},
                "metrics_target_met": metrics_met,
                "loop_lag_target_met": lag_met,
                "idle_baseline_lag": baseline,
                "results": results,
                "notes": notes,
                "problems": problems,
            },
        )
        print(f"wrote {path}")
        return 1 if problems else 0
    finally:
        service.stop()


if __name__ == "__main__":
    sys.exit(main())
