"""WebSocket churn: how fast peers can join and leave, and whether anything leaks.

    .venv/bin/python benchmarks/ws_churn.py [--workers 16] [--count 2000] [--duration 15] [--rooms W]
                                           [--no-compression]

What it does (loopback only, stops by itself):
  1. starts `livesessions serve` on a free port with a temporary data dir
     (rate limit off, so pre-creating tokens is not throttled), creates an API
     key and one room per worker (or --rooms rooms, shared round-robin);
  2. pre-creates --count peer tokens (one per join, not timed);
  3. runs --workers asyncio workers; each repeatedly takes a fresh token,
     connects to /ws, waits for {"type":"joined"}, sends {"type":"leave"} and
     waits for the server's close; stops after --count joins or --duration
     seconds, whichever first;
  4. reports joins+leaves per second (completed cycles), p50/p99 join latency
     (connect -> joined) and leave latency (leave sent -> close), close codes
     and failures; then checks GET /api/v2/sdk/live-sessions is empty (nothing
     leaked) and compares the server's RSS before and after;
  5. writes benchmarks/results/ws_churn.json.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Api, Service, cpu_seconds, machine_info, percentile, rss_kib, write_json

STEP_TIMEOUT = 10.0


class Stats:
    def __init__(self) -> None:
        self.join_ms: list[float] = []
        self.leave_ms: list[float] = []
        self.cycle_ms: list[float] = []
        self.close_codes: collections.Counter[str] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.peer_joined_seen = 0  # other peers' join notices (only when rooms are shared)


async def one_cycle(ws_base: str, token: str, stats: Stats, compression: str | None) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    t0 = time.perf_counter()
    ws = await connect(
        f"{ws_base}/ws?token={token}", open_timeout=STEP_TIMEOUT, ping_interval=None, compression=compression
    )
    try:
        first = json.loads(await asyncio.wait_for(ws.recv(), STEP_TIMEOUT))
        t1 = time.perf_counter()
        if first.get("type") != "joined":
            stats.failures[f"first message {first.get('type')!r}"] += 1
            return
        await ws.send('{"type":"leave"}')
        try:
            while True:  # drain until the server closes
                message = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
                if '"peer-joined"' in message:
                    stats.peer_joined_seen += 1
        except ConnectionClosed as closed:
            t2 = time.perf_counter()
            rcvd = closed.rcvd
            stats.close_codes[f"{rcvd.code} {rcvd.reason}".strip() if rcvd else "no close frame"] += 1
        stats.join_ms.append((t1 - t0) * 1000)
        stats.leave_ms.append((t2 - t1) * 1000)
        stats.cycle_ms.append((t2 - t0) * 1000)
    finally:
        await ws.close()


async def worker(
    ws_base: str, tokens: collections.deque[str], stats: Stats, deadline: float, compression: str | None
) -> None:
    while tokens and time.perf_counter() < deadline:
        token = tokens.popleft()
        try:
            await one_cycle(ws_base, token, stats, compression)
        except TimeoutError:
            stats.failures["timeout"] += 1
        except Exception as exc:  # noqa: BLE001 - counted and reported
            stats.failures[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": percentile(ordered, 50),
        "p90_ms": percentile(ordered, 90),
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1] if ordered else float("nan"),
        "mean_ms": sum(ordered) / len(ordered) if ordered else float("nan"),
    }


async def main_async(args: argparse.Namespace) -> int:
    service = Service(rate_limit=0).start()
    try:
        key = service.create_key()
        api = Api(service.port, key)
        rss_idle = rss_kib(service.pid)
        rooms = [api.create_room() for _ in range(args.rooms or args.workers)]
        t = time.perf_counter()
        # Worker i uses tokens of room i % rooms; tokens are handed out in order.
        queues = [collections.deque[str]() for _ in range(args.workers)]
        for n in range(args.count):
            w = n % args.workers
            queues[w].append(api.peer_token(rooms[w % len(rooms)]))
        token_s = time.perf_counter() - t
        print(
            f"pre-created {args.count} peer tokens in {token_s:.1f} s ({args.count / token_s:.0f}/s, not timed); "
            f"{args.workers} workers, {len(rooms)} rooms, cap {args.duration} s, client permessage-deflate "
            f"{'off' if args.no_compression else 'on'}",
            flush=True,
        )

        stats = Stats()
        cpu0 = cpu_seconds(service.pid)
        start = time.perf_counter()
        deadline = start + args.duration
        compression = None if args.no_compression else "deflate"
        await asyncio.gather(*(worker(service.ws_base, q, stats, deadline, compression) for q in queues))
        elapsed = time.perf_counter() - start
        server_cpu = (cpu_seconds(service.pid) - cpu0) / elapsed

        live_now = api.live_sessions()
        await asyncio.sleep(1.0)
        live_later = api.live_sessions()
        rss_after = rss_kib(service.pid)

        cycles = len(stats.join_ms)
        result: dict[str, Any] = {
            "benchmark": "ws_churn",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(),
            "settings": {
                "workers": args.workers,
                "count": args.count,
                "duration_cap_s": args.duration,
                "rooms": len(rooms),
                "client_compression": not args.no_compression,
            },
            "elapsed_s": elapsed,
            "cycles": cycles,
            "cycles_per_s": cycles / elapsed,
            "joins_plus_leaves_per_s": 2 * cycles / elapsed,
            "join_latency": summary(stats.join_ms),
            "leave_latency": summary(stats.leave_ms),
            "cycle_latency": summary(stats.cycle_ms),
            "close_codes": dict(stats.close_codes),
            "failures": dict(stats.failures),
            "peer_joined_seen": stats.peer_joined_seen,
            "live_sessions_right_after": live_now,
            "live_sessions_1s_later": live_later,
            "server_rss_kib": {"idle": rss_idle, "after_churn": rss_after},
            "token_creation_per_s": args.count / token_s,
            "server_cpu_share": server_cpu,
        }
        jl, ll = result["join_latency"], result["leave_latency"]
        print()
        print(f"cycles (join + leave) completed: {cycles} in {elapsed:.2f} s")
        print(f"  {result['cycles_per_s']:.0f} cycles/s = {result['joins_plus_leaves_per_s']:.0f} joins+leaves/s")
        print(
            f"  join latency  (connect -> joined): p50 {jl['p50_ms']:.2f} ms  p99 {jl['p99_ms']:.2f} ms  "
            f"max {jl['max_ms']:.2f} ms"
        )
        print(
            f"  leave latency (leave -> close):    p50 {ll['p50_ms']:.2f} ms  p99 {ll['p99_ms']:.2f} ms  "
            f"max {ll['max_ms']:.2f} ms"
        )
        print(
            f"  server CPU while churning: {server_cpu * 100:.0f}% of one core (the client shares this machine's cores)"
        )
        print(f"  close codes: {dict(stats.close_codes)}")
        print(f"  failures: {dict(stats.failures) or 'none'}")
        print(f"  live sessions right after: {len(live_now)}, 1 s later: {len(live_later)}")
        print(f"  server RSS: {rss_idle / 1024:.1f} MiB idle, {rss_after / 1024:.1f} MiB after the churn")

        problems = []
        if stats.failures:
            problems.append(f"{sum(stats.failures.values())} failed cycles: {dict(stats.failures)}")
        unexpected = {c: n for c, n in stats.close_codes.items() if not c.startswith("1000")}
        if unexpected:
            problems.append(f"unexpected close codes: {unexpected}")
        if live_now or live_later:
            problems.append(
                f"leaked live sessions: {len(live_now)} right after, {len(live_later)} 1 s later: "
                f"{live_later or live_now}"
            )
        log_problems = service.log_problems()
        if log_problems:
            problems.append(f"server log has {len(log_problems)} error lines, e.g. {log_problems[0]}")
        for p in problems:
            print(f"PROBLEM: {p}")
        result["problems"] = problems
        path = write_json("ws_churn.json", result)
        print(f"wrote {path}")
        return 1 if problems else 0
    finally:
        service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=16, help="concurrent peers churning (default 16)")
    parser.add_argument("--count", type=int, default=2000, help="joins in total, tokens pre-created (default 2000)")
    parser.add_argument("--duration", type=float, default=15.0, help="stop after this many seconds anyway (default 15)")
    parser.add_argument(
        "--rooms", type=int, default=0, help="rooms the workers use, round-robin (default: one per worker)"
    )
    parser.add_argument(
        "--no-compression",
        action="store_true",
        help="peers do not offer permessage-deflate (default: offer it, as browsers do)",
    )
    args = parser.parse_args()
    if args.workers < 1 or args.count < 1 or args.duration <= 0 or args.rooms < 0:
        parser.error("--workers, --count and --duration must be positive")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
