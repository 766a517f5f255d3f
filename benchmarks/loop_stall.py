"""Event-loop stalls with many idle peers: how late the service's event loop
runs a 2 ms probe timer while 10 000 idle WebSocket peers sit in 10 000 rooms
and the heartbeat, the grace expiry and live-list GETs run.

    .venv/bin/python benchmarks/loop_stall.py [--peers 10000] [--steady 30] [--gets-every 0.5]

Issue 12's target: no event-loop stall over 50 ms with 10k idle peers in 10k
rooms while the heartbeat, expiry and live-list GETs run (probe: a 2 ms
timer; the max is reported).

What it does (loopback only, stops by itself):
  1. starts `livesessions serve --loop-probe-interval 0.002` (free port,
     temporary data dir, rate limit off; heartbeat, ping and grace at their
     defaults unless given) and raises this process's open-file limit (the
     server inherits it);
  2. creates --peers rooms and one peer token for each over the REST API
     (4 threads, not timed), reads RSS (idle);
  3. ramp: connects one WebSocket peer per room (asyncio `websockets`, no
     permessage-deflate, no client pings; the library answers the server's
     pings), waits for each `joined`;
  4. steady: for --steady seconds the peers stay idle while a thread GETs
     /api/v2/sdk/live-sessions (every room) every --gets-every seconds and
     /api/v2/sdk/live-sessions/{roomId} (a random live room) in between;
     the maintenance loop runs the expiry every second and the heartbeat
     (every live session written to SQLite) every --heartbeat-interval;
  5. leave: every peer sends `leave` (10k rooms start their grace period);
  6. expiry: waits for the grace period to run out, so one maintenance tick
     ends ~10k sessions at once, then until the list is empty;
  7. reads `livesessions_event_loop_lag_seconds` (histogram) and
     `livesessions_event_loop_lag_max_seconds` (gauge) from GET /metrics
     between the phases: the max of a phase is the gauge when it rose during
     the phase, else the upper bound of the highest histogram bucket that
     gained a tick; prints each phase's max and the target (steady max <= 50 ms),
     the GETs' client-observed latency, RSS idle / with peers / after all left,
     and writes benchmarks/results/loop_stall.json.

If the service has no lag metric (or the probe is off), a NOTE says so and
only the client-observed GET latencies are reported. A missed target is
reported, not an exit status; exit 1 means a real problem (errors, non-2xx,
peers not joined, rooms left live, error lines in the server log).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import random
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import HOST, LIVESESSIONS, Api, Service, machine_info, memory_kib, percentile, rss_kib, write_json

TARGET_S = 0.050
PROBE_INTERVAL = 0.002
LAG = "livesessions_event_loop_lag_seconds"
LAG_MAX = "livesessions_event_loop_lag_max_seconds"


# --- the lag metrics (also used by history_reads.py) ------------------------


def probe_flag_known() -> bool:
    """Whether `livesessions serve` has --loop-probe-interval."""
    out = subprocess.run([str(LIVESESSIONS), "serve", "--help"], capture_output=True, text=True).stdout
    return "--loop-probe-interval" in out


def scrape(port: int) -> str:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        if response.status != 200:
            raise RuntimeError(f"GET /metrics answered {response.status}")
        return body
    finally:
        conn.close()


def parse_lag(text: str) -> dict[str, Any] | None:
    """The lag histogram's cumulative buckets, count and sum, and the max
    gauge, from Prometheus text; None if the service has no such metric."""
    buckets: list[tuple[float, float]] = []
    found: dict[str, Any] = {}
    for line in text.splitlines():
        if line.startswith(LAG + "_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(LAG + "_count"):
            found["count"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(LAG + "_sum"):
            found["sum"] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(LAG_MAX + " "):
            found["max"] = float(line.rsplit(" ", 1)[1])
    if not buckets or "count" not in found:
        return None
    found["buckets"] = sorted(buckets)
    found.setdefault("max", float("nan"))
    return found


def read_lag(port: int) -> dict[str, Any] | None:
    return parse_lag(scrape(port))


def lag_between(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What the probe saw between two scrapes: ticks, mean lateness, and the
    max (exact when the all-time max gauge rose meanwhile, else the upper
    bound of the highest bucket that gained a tick)."""
    ticks = after["count"] - before["count"]
    out: dict[str, Any] = {"ticks": int(ticks), "mean_s": (after["sum"] - before["sum"]) / ticks if ticks else None}
    counts = dict(after["buckets"])
    diffs = [(le, counts[le] - n) for le, n in before["buckets"]]
    lower, upper = 0.0, None
    for le, cumulative in diffs:
        if cumulative >= ticks:
            upper = le
            break
        lower = le
    out["max_bucket_s"] = [lower, upper]
    out["over_target_ticks"] = int(ticks - next((c for le, c in diffs if le >= TARGET_S), ticks))
    if after["max"] > before["max"]:
        out["max_s"], out["max_exact"] = after["max"], True
    else:
        out["max_s"], out["max_exact"] = upper, False
    return out


def describe_lag(name: str, lag: dict[str, Any] | None, seconds: float | None = None) -> str:
    if lag is None:
        return f"{name}: no probe figures"
    if not lag["ticks"]:
        return f"{name}: the probe did not tick"
    span = f" over {seconds:.1f} s" if seconds else ""
    lo, hi = lag["max_bucket_s"]
    if lag["max_exact"]:
        worst = f"max {lag['max_s'] * 1000:.1f} ms"
    else:
        worst = f"max <= {hi * 1000:.0f} ms (bucket {lo * 1000:g}-{hi * 1000:g} ms; below the all-time max)"
    return (
        f"{name}: {lag['ticks']} probe ticks{span}, mean lateness {lag['mean_s'] * 1000:.2f} ms, {worst}, "
        f"{lag['over_target_ticks']} ticks over {TARGET_S * 1000:.0f} ms"
    )


def probe_running(port: int, wait: float = 0.5) -> bool:
    first = read_lag(port)
    if first is None:
        return False
    time.sleep(wait)
    second = read_lag(port)
    return second is not None and second["count"] > first["count"]


# --- peers -------------------------------------------------------------------


def raise_nofile(needed: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, needed))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def make_tokens(port: int, key: str, count: int, threads: int = 4) -> tuple[list[str], list[str]]:
    """`count` rooms and one peer token for each, over the REST API."""
    local = threading.local()

    def one(_: int) -> tuple[str, str]:
        api = getattr(local, "api", None)
        if api is None:
            api = local.api = Api(port, key)
        room = api.create_room()
        return room, api.peer_token(room)

    with ThreadPoolExecutor(threads) as pool:
        made = list(pool.map(one, range(count), chunksize=64))
    return [room for room, _ in made], [token for _, token in made]


async def join(ws_base: str, token: str, gate: asyncio.Semaphore, latencies: list[float]) -> Any:
    from websockets.asyncio.client import connect

    async with gate:
        started = time.perf_counter()
        ws = await connect(
            f"{ws_base}/ws?token={token}",
            open_timeout=60,
            max_size=None,
            compression=None,
            ping_interval=None,  # the server pings; the library answers
            close_timeout=5,
        )
        first = json.loads(await asyncio.wait_for(ws.recv(), 60))
        if first.get("type") != "joined":
            raise RuntimeError(f"expected joined, got {first}")
        latencies.append(time.perf_counter() - started)
        return ws


async def leave(ws: Any) -> None:
    await ws.send('{"type":"leave"}')
    await asyncio.wait_for(ws.wait_closed(), 30)


class Reader(threading.Thread):
    """GETs the whole live list every `every` s and one room in between. The
    list's body is counted, not parsed: parsing 1 MB of JSON here would add
    tens of ms of this process's time to what is measured."""

    def __init__(self, port: int, key: str, rooms: list[str], every: float) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.headers = {"x-api-key": key}
        self.conn = http.client.HTTPConnection(HOST, port, timeout=30)
        self.rooms = rooms
        self.every = every
        self.stopping = threading.Event()
        self.list_ms: list[float] = []
        self.room_ms: list[float] = []
        self.list_sizes: list[int] = []
        self.bad: dict[str, int] = {}
        self.errors: list[str] = []

    def _get(self, path: str, into: list[float]) -> bytes | None:
        started = time.perf_counter()
        try:
            self.conn.request("GET", path, headers=self.headers)
            response = self.conn.getresponse()
            body = response.read()
        except Exception as exc:  # noqa: BLE001 - reported
            self.errors.append(f"GET {path}: {exc!r}")
            self.conn.close()
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
            return None
        into.append((time.perf_counter() - started) * 1000)
        if response.status != 200:
            label = f"{path.rsplit('/', 1)[0]} {response.status}"
            self.bad[label] = self.bad.get(label, 0) + 1
            return None
        return body

    def run(self) -> None:
        rng = random.Random(12)
        next_at = time.monotonic()
        while not self.stopping.is_set():
            body = self._get("/api/v2/sdk/live-sessions", self.list_ms)
            if body is not None:
                self.list_sizes.append(body.count(b'"roomId"'))
            self.stopping.wait(self.every / 2)
            self._get(f"/api/v2/sdk/live-sessions/{rng.choice(self.rooms)}", self.room_ms)
            next_at += self.every
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)
        self.conn.close()


class Sampler(threading.Thread):
    """Scrapes the lag metrics every `every` s, so that the windows in which
    the probe saw a stall can be placed in time."""

    def __init__(self, port: int, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.every = every
        self.stopping = threading.Event()
        self.samples: list[tuple[float, dict[str, Any]]] = []

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                lag = read_lag(self.port)
            except Exception:  # noqa: BLE001 - a missed sample only
                lag = None
            if lag is not None:
                self.samples.append((time.monotonic(), lag))
            self.stopping.wait(self.every)

    def stalls(self, since: float, until: float) -> list[dict[str, Any]]:
        """The sampling windows within [since, until] whose probe ticks ran
        more than the target late: when (s from `since`), how many, how late."""
        found = []
        window = [(t, lag) for t, lag in self.samples if since - self.every <= t <= until + self.every]
        for (t0, a), (t1, b) in itertools.pairwise(window):
            diff = lag_between(a, b)
            if diff["over_target_ticks"]:
                found.append(
                    {
                        "at_s": round(t0 - since, 1),
                        "to_s": round(t1 - since, 1),
                        "ticks_over_target": diff["over_target_ticks"],
                        "max_s": diff["max_s"],
                        "max_exact": diff["max_exact"],
                    }
                )
        return found

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)


def latency_summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": percentile(ordered, 50),
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1],
    }


def wait_live(api: Api, expected: int, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    while True:
        live = len(api.live_sessions())
        if live == expected or time.monotonic() - started > timeout:
            return live, time.monotonic() - started
        time.sleep(0.5)


async def main_async(args: argparse.Namespace) -> int:
    limits = raise_nofile(2 * args.peers + 1000)
    if limits[0] < args.peers + 200:
        print(f"PROBLEM: the open-file limit is {limits[0]}, too low for {args.peers} peers (raise ulimit -n)")
        return 1
    extra = ["--grace-period", str(args.grace_period), "--heartbeat-interval", str(args.heartbeat_interval)]
    has_probe_flag = probe_flag_known()
    if has_probe_flag:
        extra += ["--loop-probe-interval", str(PROBE_INTERVAL)]
    service = Service(rate_limit=0, extra=extra).start()
    peers: list[Any] = []
    reader: Reader | None = None
    sampler: Sampler | None = None
    problems: list[str] = []
    notes: list[str] = []
    phases: dict[str, Any] = {}
    try:
        probe = has_probe_flag and probe_running(service.port)
        if not probe:
            notes.append(
                f"the service has no running {LAG} probe"
                + ("" if has_probe_flag else " (no --loop-probe-interval flag)")
                + ": only the client-observed GET latencies are measured"
            )
            print(f"NOTE: {notes[-1]}", flush=True)
        key = service.create_key()
        api = Api(service.port, key)
        api.live_sessions()
        t = time.perf_counter()
        rooms, tokens = make_tokens(service.port, key, args.peers)
        print(f"created {args.peers} rooms and peer tokens in {time.perf_counter() - t:.1f} s (not timed)", flush=True)
        time.sleep(1.0)
        rss = {"idle_rooms_created": rss_kib(service.pid)}

        def mark() -> tuple[float, dict[str, Any] | None]:
            return time.monotonic(), (read_lag(service.port) if probe else None)

        if probe:
            sampler = Sampler(service.port)
            sampler.start()

        def close_phase(name: str, start: tuple[float, dict[str, Any] | None], **more: Any) -> None:
            end = mark()
            lag = lag_between(start[1], end[1]) if start[1] and end[1] else None
            stalls = sampler.stalls(start[0], end[0]) if sampler is not None else []
            phases[name] = {"seconds": end[0] - start[0], "lag": lag, "stall_windows": stalls, **more}
            print(describe_lag(f"  loop lag, {name}", lag, end[0] - start[0]), flush=True)
            if stalls:
                where = ", ".join(
                    f"{w['at_s']:.0f}-{w['to_s']:.0f} s: {w['ticks_over_target']} "
                    f"({'' if w['max_exact'] else '<='}{w['max_s'] * 1000:.0f} ms)"
                    for w in stalls[:12]
                )
                more_text = f" and {len(stalls) - 12} more" if len(stalls) > 12 else ""
                limit = TARGET_S * 1000
                print(f"    1-s windows with ticks over {limit:.0f} ms (s from the phase start): {where}{more_text}")

        # Ramp-up.
        start = mark()
        join_latencies: list[float] = []
        gate = asyncio.Semaphore(args.concurrency)
        results = await asyncio.gather(
            *(join(service.ws_base, token, gate, join_latencies) for token in tokens), return_exceptions=True
        )
        peers = [r for r in results if not isinstance(r, BaseException)]
        failures = [r for r in results if isinstance(r, BaseException)]
        ramp_s = time.monotonic() - start[0]
        print(
            f"ramp: {len(peers)} of {args.peers} peers joined in {ramp_s:.1f} s "
            f"({len(peers) / ramp_s:.0f}/s, {args.concurrency} connecting at once)",
            flush=True,
        )
        if failures:
            problems.append(f"{len(failures)} peers failed to join, e.g. {failures[0]!r}")
        close_phase("ramp-up", start, joined=len(peers), join=latency_summary([x * 1000 for x in join_latencies]))

        # Steady: idle peers, GETs, heartbeat and expiry on their own.
        live_before, _ = wait_live(api, len(peers), 10)
        await asyncio.sleep(1.0)
        rss["with_peers"] = rss_kib(service.pid)
        start = mark()
        reader = Reader(service.port, key, rooms, args.gets_every)
        reader.start()
        await asyncio.sleep(args.steady)
        reader.stop()
        list_get, room_get = latency_summary(reader.list_ms), latency_summary(reader.room_ms)
        close_phase(
            "steady",
            start,
            list_get=list_get,
            room_get=room_get,
            heartbeats=int(args.steady // args.heartbeat_interval),
        )
        rss["with_peers_after_steady"] = rss_kib(service.pid)
        if list_get and room_get:
            print(
                f"  client-observed GETs during steady: live list ({max(reader.list_sizes or [0])} rooms) "
                f"p50 {list_get['p50_ms']:.1f} p99 {list_get['p99_ms']:.1f} max {list_get['max_ms']:.1f} ms "
                f"(n={list_get['n']}); one room p50 {room_get['p50_ms']:.1f} p99 {room_get['p99_ms']:.1f} "
                f"max {room_get['max_ms']:.1f} ms (n={room_get['n']})",
                flush=True,
            )
        if reader.bad:
            problems.append(f"non-200 GETs during steady: {reader.bad}")
        if reader.errors:
            problems.append(f"{len(reader.errors)} GETs failed during steady, e.g. {reader.errors[0]}")
        if live_before != len(peers) or any(size != len(peers) for size in reader.list_sizes):
            problems.append(
                f"expected {len(peers)} live rooms during steady, saw {live_before} then "
                f"{min(reader.list_sizes or [0])}-{max(reader.list_sizes or [0])}"
            )

        # Leave: every peer at once (10k rooms start their grace).
        start = mark()
        left = await asyncio.gather(*(leave(ws) for ws in peers), return_exceptions=True)
        leave_failures = [r for r in left if isinstance(r, BaseException)]
        print(f"leave: {len(peers)} peers left in {time.monotonic() - start[0]:.1f} s", flush=True)
        if leave_failures:
            problems.append(f"{len(leave_failures)} leaves failed, e.g. {leave_failures[0]!r}")
        live_after_leave, _ = wait_live(api, 0, 10)
        leave_s = time.monotonic() - start[0]
        peers = []
        close_phase("leave", start, live_after=live_after_leave)
        if leave_s > args.grace_period:
            notes.append(
                f"the leaves took {leave_s:.1f} s, longer than the grace period ({args.grace_period} s): the first "
                "rooms' sessions expired during the leave phase, not only in the expiry phase"
            )
            print(f"NOTE: {notes[-1]}", flush=True)

        # Expiry: the grace period runs out for every room at about once.
        start = mark()
        await asyncio.sleep(args.grace_period + 3.0)
        close_phase("grace expiry", start)
        await asyncio.sleep(1.0)
        rss["after_all_left"] = rss_kib(service.pid)
        memory_after = memory_kib(service.pid)
        if live_after_leave:
            problems.append(f"{live_after_leave} rooms still live 10 s after every peer left")

        steady = phases["steady"]["lag"]
        ramp = phases["ramp-up"]["lag"]
        print(
            f"\nserver RSS (MiB): idle with {args.peers} rooms {rss['idle_rooms_created'] / 1024:.1f}, with "
            f"{phases['ramp-up']['joined']} idle peers {rss['with_peers'] / 1024:.1f} "
            f"(~{(rss['with_peers'] - rss['idle_rooms_created']) / args.peers:.1f} KiB per peer), "
            f"after all left and expired {rss['after_all_left'] / 1024:.1f} "
            f"(returned {(rss['with_peers_after_steady'] - rss['after_all_left']) / 1024:.1f} MiB of "
            f"{(rss['with_peers_after_steady'] - rss['idle_rooms_created']) / 1024:.1f})"
        )
        target_met = None
        if steady is not None and steady["ticks"]:
            worst = steady["max_s"]
            target_met = worst <= TARGET_S
            print(
                f"steady-phase loop stall max {'' if steady['max_exact'] else '<= '}{worst * 1000:.1f} ms "
                f"vs limit {TARGET_S * 1000:.0f} ms: ratio {worst / TARGET_S:.2f}, target "
                f"{'met' if target_met else 'missed'}"
            )
            if ramp is not None and ramp["ticks"]:
                print(f"ramp-up loop stall max {'' if ramp['max_exact'] else '<= '}{ramp['max_s'] * 1000:.1f} ms")
        elif list_get:
            print(
                f"no probe: worst client-observed GET during steady "
                f"{max(list_get['max_ms'], room_get['max_ms']):.1f} ms "
                f"(an upper bound on a stall a GET met, not the loop's max lateness) vs limit {TARGET_S * 1000:.0f} ms"
            )

        log_problems = service.log_problems()
        if log_problems:
            problems.append(f"server log has {len(log_problems)} error lines, e.g. {log_problems[0]}")
        for problem in problems:
            print(f"PROBLEM: {problem}")
        path = write_json(
            args.output,
            {
                "benchmark": "loop_stall",
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": machine_info(),
                "settings": {
                    "peers": args.peers,
                    "rooms": args.peers,
                    "steady_s": args.steady,
                    "gets_every_s": args.gets_every,
                    "probe_interval_s": PROBE_INTERVAL if probe else None,
                    "grace_period_s": args.grace_period,
                    "heartbeat_interval_s": args.heartbeat_interval,
                    "concurrency": args.concurrency,
                    "client": "python websockets, no compression, no client pings",
                    "server_args": extra,
                },
                "target_s": TARGET_S,
                "target_met": target_met,
                "phases": phases,
                "server_rss_kib": rss,
                "memory_after_all_left_kib": memory_after,
                "notes": notes,
                "problems": problems,
            },
        )
        print(f"wrote {path}")
        return 1 if problems else 0
    finally:
        if reader is not None and reader.is_alive():
            reader.stop()
        if sampler is not None:
            sampler.stop()
        for ws in peers:
            try:
                await asyncio.wait_for(ws.close(), 1)
            except Exception:  # noqa: BLE001
                pass
        service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=10_000, help="idle peers, each in its own room (default 10000)")
    parser.add_argument("--steady", type=float, default=30.0, help="seconds of the steady phase (default 30)")
    parser.add_argument(
        "--gets-every", type=float, default=0.5, help="seconds between GETs of the whole live list (default 0.5)"
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=15.0,
        help="the service's --heartbeat-interval (default 15, the service's own default)",
    )
    parser.add_argument(
        "--grace-period", type=float, default=10.0, help="the service's --grace-period (default 10, its default)"
    )
    parser.add_argument("--concurrency", type=int, default=100, help="peers connecting at once (default 100)")
    parser.add_argument("--output", default="loop_stall.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    if args.peers < 1 or args.steady <= 0 or args.gets_every <= 0:
        parser.error("--peers, --steady and --gets-every must be positive")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
