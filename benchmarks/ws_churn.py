"""WebSocket churn: how fast peers join and leave, next to a raw WebSocket
ceiling on the same server options, in one run; and whether anything leaks.

    .venv/bin/python benchmarks/ws_churn.py [--workers 64] [--duration 5] [--repeat 3] [--rooms W]
                                           [--client node|python] [--no-compression] [--ws-compression]

Issue 12, target 1: join+leave cycles/s >= 0.7 x the raw ASGI WebSocket
ceiling on the same server; join p99 at 64 concurrent peers <= 2 x the
ceiling's.

What it does (loopback only, stops by itself):
  1. starts `livesessions serve` on a free port with a temporary data dir
     (rate limit off, so pre-creating tokens is not throttled), creates an API
     key and one room per worker (or --rooms rooms, shared round-robin);
  2. warms the service up with a short churn, which also shows what it
     negotiates (the `sec-websocket-extensions` of its handshakes: the client
     offers permessage-deflate, as browsers do, unless --no-compression);
  3. starts the ceiling, benchmarks/raw_ws.py: uvicorn with the service's own
     server config (protocol classes, uvloop, one worker, access log off, ping
     interval) serving an app that only accepts, sends one `joined`-shaped
     message, waits for the client's message and closes with 1000; it
     negotiates permessage-deflate exactly when the service did; warms it up;
  4. pre-creates the peer tokens (one per join, not timed);
  5. --repeat times, alternating which goes first: churns the ceiling, then
     the service, for --duration seconds each. W workers each connect (to /ws
     with a fresh token for the service), wait for {"type":"joined"}, send
     {"type":"leave"} and wait for the server's close. The client is Node.js
     with the `ws` package (benchmarks/node/, installed on first use with
     `npm ci`), or the Python `websockets` client with --client python;
  6. reports for each: cycles/s, join latency (connect -> joined) and leave
     latency (leave -> close) p50/p99, the server's CPU per cycle, failures;
     the medians over the repeats; the ratios service/ceiling and whether the
     targets are met (a missed target is reported, not an error). Then checks
     GET /api/v2/sdk/live-sessions is empty (nothing leaked) and compares the
     service's RSS before and after;
  7. writes benchmarks/results/ws_churn.json (--output).

The exit status is 1 on a real problem (failed cycles, unexpected close
codes, leaked peers, error lines in a server log, the ceiling negotiating
something else than the service), not on a missed target.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import fcntl
import hashlib
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_DIR,
    HOST,
    Api,
    Service,
    cpu_seconds,
    free_port,
    machine_info,
    percentile,
    rss_kib,
    stop_process,
    wait_http_ok,
    write_json,
)

STEP_TIMEOUT = 10.0
NODE_DIR = BENCH_DIR / "node"
NODE_SCRIPT = NODE_DIR / "churn.mjs"
NODE_LOCK = NODE_DIR / "package-lock.json"
NODE_STAMP = NODE_DIR / "node_modules" / ".livesessions-installed"
WS_VERSION = "8.18.3"
TOKEN_THREADS = 3
CYCLES_TARGET = 0.7  # service cycles/s >= 0.7 x the ceiling's
P99_TARGET = 2.0  # service join p99 <= 2 x the ceiling's


# --- the Python client (--client python; cluster.py and webhooks.py use it too) ---


class Stats:
    def __init__(self) -> None:
        self.join_ms: list[float] = []
        self.leave_ms: list[float] = []
        self.cycle_ms: list[float] = []
        self.close_codes: collections.Counter[str] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.extensions: collections.Counter[str] = collections.Counter()
        self.peer_joined_seen = 0  # other peers' join notices (only when rooms are shared)
        self.first_message: str | None = None


async def one_cycle(ws_base: str, token: str, stats: Stats, compression: str | None) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    t0 = time.perf_counter()
    ws = await connect(
        f"{ws_base}/ws?token={token}", open_timeout=STEP_TIMEOUT, ping_interval=None, compression=compression
    )
    try:
        response = ws.response
        if response is not None:
            stats.extensions[response.headers.get("Sec-WebSocket-Extensions", "none")] += 1
        text = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
        first = json.loads(text)
        t1 = time.perf_counter()
        if first.get("type") != "joined":
            stats.failures[f"first message {first.get('type')!r}"] += 1
            return
        if stats.first_message is None:
            stats.first_message = text if isinstance(text, str) else repr(text)
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
        "count": len(ordered),
        "p50_ms": percentile(ordered, 50),
        "p90_ms": percentile(ordered, 90),
        "p99_ms": percentile(ordered, 99),
        "max_ms": ordered[-1] if ordered else float("nan"),
        "mean_ms": sum(ordered) / len(ordered) if ordered else float("nan"),
    }


def run_python_client(ws_base: str, queues: list[Any], duration: float, no_compression: bool) -> dict[str, Any]:
    """The Python client's churn, in the shape the Node client prints."""
    from importlib.metadata import version

    stats = Stats()
    compression = None if no_compression else "deflate"

    async def churn() -> float:
        start = time.perf_counter()
        deadline = start + duration
        await asyncio.gather(*(worker(ws_base, q, stats, deadline, compression) for q in queues))
        return time.perf_counter() - start

    cpu0 = time.process_time()
    elapsed = asyncio.run(churn())
    cycles = len(stats.join_ms)
    return {
        "client": f"python {sys.version.split()[0]}, websockets {version('websockets')}",
        "workers": len(queues),
        "per_message_deflate_offered": not no_compression,
        "elapsed_s": elapsed,
        "cycles": cycles,
        "cycles_per_s": cycles / elapsed,
        "join_latency": summary(stats.join_ms),
        "leave_latency": summary(stats.leave_ms),
        "cycle_latency": summary(stats.cycle_ms),
        "close_codes": dict(stats.close_codes),
        "failures": dict(stats.failures),
        "negotiated_extensions": dict(stats.extensions),
        "other_messages": stats.peer_joined_seen,
        "first_message": stats.first_message,
        "client_cpu_s": time.process_time() - cpu0,
    }


# --- the Node client (default) ---------------------------------------------------


def node_client() -> str:
    """Node.js, with benchmarks/node's `ws` installed from its lock file (`npm ci`,
    offline from npm's cache when it can be) unless already installed from
    this very lock file (a stamp holds its hash)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise SystemExit("ws_churn: the default client needs Node.js (18 or later) and npm; or use --client python")
    wanted = hashlib.sha256(NODE_LOCK.read_bytes()).hexdigest()
    with NODE_LOCK.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # parallel runs install once
        if NODE_STAMP.exists() and NODE_STAMP.read_text().strip() == wanted:
            return node
        print("installing benchmarks/node's dependencies (npm ci) ...", flush=True)
        command = [npm, "ci", "--prefix", str(NODE_DIR), "--prefer-offline", "--no-audit", "--no-fund"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise SystemExit("ws_churn: `npm ci` in benchmarks/node took over 10 minutes") from None
        if done.returncode != 0:
            raise SystemExit(
                "ws_churn: `npm ci` in benchmarks/node failed (no npm registry and nothing in npm's cache?): "
                + done.stderr.strip()[-1500:]
            )
        installed = json.loads((NODE_DIR / "node_modules/ws/package.json").read_text())
        if installed["version"] != WS_VERSION:
            raise SystemExit(f"ws_churn: benchmarks/node installed ws {installed['version']}, not {WS_VERSION}")
        NODE_STAMP.write_text(wanted + "\n")
    return node


def run_node_client(node: str, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        [node, str(NODE_SCRIPT)], input=json.dumps(job), capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise RuntimeError(f"the Node client failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# --- measuring -------------------------------------------------------------------


def busy_seconds() -> float:
    """CPU time all cores have spent busy so far (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Target:
    """One server to churn: the ceiling or the service."""

    def __init__(self, name: str, pid: int, ws_base: str, next_queues: Callable[[int], list[list[str]] | None]) -> None:
        self.name = name
        self.pid = pid
        self.ws_base = ws_base
        # next_queues(workers): per-worker lists of the tokens for one run, or
        # None to use one URL (token "raw") over and over until the run ends.
        self.next_queues = next_queues


class Endless:
    """A token queue that never runs out (the ceiling takes any token)."""

    def __bool__(self) -> bool:
        return True

    def popleft(self) -> str:
        return "raw"


def churn(target: Target, args: argparse.Namespace, node: str | None, duration: float) -> dict[str, Any]:
    """One churn run against a target, with the CPU the server, the client and
    everything else on the machine used meanwhile."""
    queues = target.next_queues(args.workers)
    busy0, server0, wall0 = busy_seconds(), cpu_seconds(target.pid), time.perf_counter()
    if node is not None:
        children0 = children_cpu()
        job: dict[str, Any] = {
            "duration": duration,
            "perMessageDeflate": not args.no_compression,
            "stepTimeout": STEP_TIMEOUT,
        }
        if queues is None:
            job.update(url=f"{target.ws_base}/ws?token=raw", workers=args.workers)
        else:
            job["queues"] = [[f"{target.ws_base}/ws?token={t}" for t in q] for q in queues]
        result = run_node_client(node, job, timeout=duration + 4 * STEP_TIMEOUT + 30)
        client_cpu = children_cpu() - children0  # the whole Node process, start-up included
    else:
        workers: list[Any] = (
            [Endless() for _ in range(args.workers)] if queues is None else [collections.deque(q) for q in queues]
        )
        result = run_python_client(target.ws_base, workers, duration, args.no_compression)
        client_cpu = result["client_cpu_s"]
    wall = time.perf_counter() - wall0
    server_cpu = cpu_seconds(target.pid) - server0
    others = busy_seconds() - busy0 - server_cpu - client_cpu
    cycles = result["cycles"]
    tokens = math.inf if queues is None else sum(len(q) for q in queues)
    result.update(
        target=target.name,
        server_cpu_s=server_cpu,
        server_cpu_ms_per_cycle=server_cpu / cycles * 1000 if cycles else None,
        server_cpu_share=server_cpu / result["elapsed_s"],
        client_process_cpu_s=client_cpu,
        # What the client says it used while churning (Node's start-up left out).
        client_cpu_ms_per_cycle=result["client_cpu_s"] / cycles * 1000 if cycles else None,
        client_cpu_share=client_cpu / wall,
        others_cpu_share=max(0.0, others) / wall,
        ran_out=cycles + sum(result["failures"].values()) >= tokens,
    )
    return result


def phase_line(r: dict[str, Any]) -> str:
    jl, ll = r["join_latency"], r["leave_latency"]
    cpu = r["server_cpu_ms_per_cycle"]
    failed = sum(r["failures"].values())
    return (
        f"{r['target']:<8} {r['cycles_per_s']:>8.0f} {jl['p50_ms'] or float('nan'):>8.2f} "
        f"{jl['p99_ms'] or float('nan'):>8.2f} {ll['p50_ms'] or float('nan'):>8.2f} "
        f"{ll['p99_ms'] or float('nan'):>8.2f} {cpu if cpu is not None else float('nan'):>9.3f} "
        f"{r['client_cpu_ms_per_cycle'] or float('nan'):>9.3f} "
        f"{r['server_cpu_share'] * 100:>6.0f}% {r['client_cpu_share'] * 100:>6.0f}% "
        f"{r['others_cpu_share'] * 100:>6.0f}% {failed:>6}" + ("  (tokens ran out)" if r["ran_out"] else "")
    )


HEADER = (
    f"{'target':<8} {'cycles/s':>8} {'join p50':>8} {'join p99':>8} {'lv p50':>8} {'lv p99':>8} "
    f"{'srv ms/c':>9} {'cli ms/c':>9} {'srv':>7} {'client':>7} {'others':>7} {'failed':>6}"
)


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(get: Callable[[dict[str, Any]], Any]) -> float | None:
        values = [v for v in map(get, runs) if v is not None]
        return statistics.median(values) if values else None

    return {
        "runs": len(runs),
        "cycles_per_s": med(lambda r: r["cycles_per_s"]),
        "join_p50_ms": med(lambda r: r["join_latency"]["p50_ms"]),
        "join_p99_ms": med(lambda r: r["join_latency"]["p99_ms"]),
        "leave_p50_ms": med(lambda r: r["leave_latency"]["p50_ms"]),
        "leave_p99_ms": med(lambda r: r["leave_latency"]["p99_ms"]),
        "server_cpu_ms_per_cycle": med(lambda r: r["server_cpu_ms_per_cycle"]),
        "client_cpu_ms_per_cycle": med(lambda r: r["client_cpu_ms_per_cycle"]),
        "server_cpu_share": med(lambda r: r["server_cpu_share"]),
        "client_cpu_share": med(lambda r: r["client_cpu_share"]),
        "others_cpu_share": med(lambda r: r["others_cpu_share"]),
        "failures": sum(sum(r["failures"].values()) for r in runs),
    }


def start_ceiling(compression: bool, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [sys.executable, str(BENCH_DIR / "raw_ws.py"), "--host", HOST, "--port", str(port)]
    if compression:
        command.append("--ws-compression")
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http_ok(port, "/", process)
    except BaseException:
        stop_process(process)
        raise
    return process, port


def log_problems(path: Path) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if "Traceback" in line or "ERROR" in line or "Exception" in line]


def run(args: argparse.Namespace) -> int:
    node = node_client() if args.client == "node" else None
    loadavg_at_start = list(os.getloadavg())
    extra = ["--ws-compression"] if args.ws_compression else []
    service = Service(rate_limit=0, extra=extra).start()
    ceiling: subprocess.Popen[bytes] | None = None
    ceiling_log = service.tmp / "raw_ws.log"
    try:
        key = service.create_key()
        api = Api(service.port, key)
        rss_idle = rss_kib(service.pid)
        rooms = [api.create_room() for _ in range(args.rooms or args.workers)]

        local = threading.local()

        def tokens_for(w: int, n: int) -> list[str]:
            if not hasattr(local, "api"):
                local.api = Api(service.port, key)
            return [local.api.peer_token(rooms[w % len(rooms)]) for _ in range(n)]

        def make_tokens(per_worker: int) -> list[list[str]]:
            # Worker i uses tokens of room i % rooms. A few HTTP clients at once:
            # one alone waits on its own round trips.
            with ThreadPoolExecutor(TOKEN_THREADS) as pool:
                return list(pool.map(tokens_for, range(args.workers), [per_worker] * args.workers))

        # Warm-up of the service, which also shows what it negotiates.
        warm = Target("service", service.pid, service.ws_base, lambda _w: make_tokens(args.warmup_cycles))
        service_warm = churn(warm, args, node, duration=30.0)
        negotiated = service_warm["negotiated_extensions"]
        compression = any("permessage-deflate" in value for value in negotiated)
        print(
            f"client: {service_warm['client']}, offers permessage-deflate: {'no' if args.no_compression else 'yes'}; "
            f"service negotiated (sec-websocket-extensions): {', '.join(negotiated) or '-'}",
            flush=True,
        )
        print(f"service's joined message: {service_warm['first_message']}", flush=True)

        ceiling, ceiling_port = start_ceiling(compression, ceiling_log)
        ceiling_base = f"ws://{HOST}:{ceiling_port}"
        # No queue: cycles on the one URL until --duration ends.
        ceiling_target = Target("ceiling", ceiling.pid, ceiling_base, lambda _w: None)
        ceiling_warm = churn(
            Target("ceiling", ceiling.pid, ceiling_base, lambda _w: [["raw"] * args.warmup_cycles] * args.workers),
            args,
            node,
            duration=30.0,
        )
        print(
            f"ceiling (benchmarks/raw_ws.py, permessage-deflate {'on' if compression else 'off'}) negotiated: "
            f"{', '.join(ceiling_warm['negotiated_extensions']) or '-'}",
            flush=True,
        )

        # Tokens for the timed service runs, made before any timing.
        if args.count:
            per_run = args.count
        else:
            # The ceiling bounds the service's rate; its warm-up, though short, is a fair guess.
            rate = max(2 * service_warm["cycles_per_s"], ceiling_warm["cycles_per_s"])
            per_run = math.ceil(rate * args.duration) + 2 * args.workers
        per_worker = math.ceil(per_run / args.workers)
        t = time.perf_counter()
        token_sets = [make_tokens(per_worker) for _ in range(args.repeat)]
        token_s = time.perf_counter() - t
        made = per_worker * args.workers * args.repeat
        print(
            f"pre-created {made} peer tokens in {token_s:.1f} s ({made / token_s:.0f}/s, not timed); "
            f"{args.workers} workers, {len(rooms)} rooms, {args.repeat} x {args.duration:g} s per target",
            flush=True,
        )
        service_target = Target("service", service.pid, service.ws_base, lambda _w: token_sets.pop())

        print()
        print(HEADER)
        runs: list[dict[str, Any]] = []
        for r in range(args.repeat):
            order = [ceiling_target, service_target] if r % 2 == 0 else [service_target, ceiling_target]
            for target in order:
                result = churn(target, args, node, args.duration)
                result["round"] = r + 1
                runs.append(result)
                print(phase_line(result), flush=True)

        live_now = api.live_sessions()
        time.sleep(1.0)
        live_later = api.live_sessions()
        rss_after = rss_kib(service.pid)

        by_target = {name: medians([r for r in runs if r["target"] == name]) for name in ("ceiling", "service")}
        c, s = by_target["ceiling"], by_target["service"]
        cycles_ratio = s["cycles_per_s"] / c["cycles_per_s"] if c["cycles_per_s"] else None
        p99_ratio = s["join_p99_ms"] / c["join_p99_ms"] if c["join_p99_ms"] else None
        cycles_met = cycles_ratio is not None and cycles_ratio >= CYCLES_TARGET
        p99_met = p99_ratio is not None and p99_ratio <= P99_TARGET
        pairs = [
            (a["cycles_per_s"] and b["cycles_per_s"] / a["cycles_per_s"])
            for a, b in zip(
                [r for r in runs if r["target"] == "ceiling"],
                [r for r in runs if r["target"] == "service"],
                strict=True,
            )
        ]

        print()
        what = "medians of" if args.repeat > 1 else "one run each,"
        print(f"{what} {args.repeat} x {args.duration:g} s, {args.workers} concurrent peers:")
        print(
            f"{'':<8} {'cycles/s':>8} {'join p50':>8} {'join p99':>8} {'lv p50':>8} {'lv p99':>8} "
            f"{'srv ms/c':>9} {'cli ms/c':>9}"
        )
        for name, m in by_target.items():
            print(
                f"{name:<8} {m['cycles_per_s']:>8.0f} {m['join_p50_ms']:>8.2f} {m['join_p99_ms']:>8.2f} "
                f"{m['leave_p50_ms']:>8.2f} {m['leave_p99_ms']:>8.2f} {m['server_cpu_ms_per_cycle']:>9.3f} "
                f"{m['client_cpu_ms_per_cycle']:>9.3f}"
            )
        print(
            f"cycles/s service / ceiling: {cycles_ratio:.2f} (target >= {CYCLES_TARGET}): "
            f"{'target met' if cycles_met else 'target missed'}"
            + (f"  [per round: {', '.join(f'{p:.2f}' for p in pairs)}]" if len(pairs) > 1 else "")
        )
        print(
            f"join p99 service / ceiling: {p99_ratio:.2f} (target <= {P99_TARGET:g}): "
            f"{'target met' if p99_met else 'target missed'}"
        )
        print(
            f"server CPU per cycle service / ceiling: {s['server_cpu_ms_per_cycle'] / c['server_cpu_ms_per_cycle']:.2f}"
        )
        # What the CPU costs alone predict with the server on one core and the
        # client on another (an upper bound for each; noise-free but optimistic).
        bound = {
            name: 1000 / max(m["server_cpu_ms_per_cycle"], m["client_cpu_ms_per_cycle"])
            for name, m in by_target.items()
        }
        cpu_bound_ratio = bound["service"] / bound["ceiling"]
        print(
            f"CPU-bound estimate (1 / the larger of server and client CPU per cycle): ceiling {bound['ceiling']:.0f}, "
            f"service {bound['service']:.0f} cycles/s, ratio {cpu_bound_ratio:.2f}"
        )
        others = statistics.median(r["others_cpu_share"] for r in runs)
        if others > 0.2:
            print(
                f"NOTE: other processes used {others * 100:.0f}% of a core meanwhile (median of the runs): "
                "the servers did not have the CPU to themselves, so cycles/s, latencies and the targets are not "
                "meaningful in this run; CPU per cycle is the steadier figure"
            )
        print(f"live sessions right after: {len(live_now)}, 1 s later: {len(live_later)}")
        print(f"service RSS: {rss_idle / 1024:.1f} MiB idle, {rss_after / 1024:.1f} MiB after the churn")

        problems = []
        for result in [service_warm, ceiling_warm, *runs]:
            label = f"{result['target']}" + (f" round {result['round']}" if "round" in result else " warm-up")
            if result["failures"]:
                problems.append(f"{label}: {sum(result['failures'].values())} failed cycles: {result['failures']}")
            unexpected = {code: n for code, n in result["close_codes"].items() if not code.startswith("1000")}
            if unexpected:
                problems.append(f"{label}: unexpected close codes: {unexpected}")
        ceiling_negotiated = ceiling_warm["negotiated_extensions"]
        if set(ceiling_negotiated) != set(negotiated):
            problems.append(f"the ceiling negotiated {ceiling_negotiated}, the service {negotiated}")
        if live_now or live_later:
            problems.append(
                f"leaked live sessions: {len(live_now)} right after, {len(live_later)} 1 s later: "
                f"{live_later or live_now}"
            )
        for name, lines in (("service", service.log_problems()), ("ceiling", log_problems(ceiling_log))):
            if lines:
                problems.append(f"{name} log has {len(lines)} error lines, e.g. {lines[0]}")
        for p in problems:
            print(f"PROBLEM: {p}")

        result_json: dict[str, Any] = {
            "benchmark": "ws_churn",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(),  # its load average is the one at the end
            "loadavg_at_start": loadavg_at_start,
            "settings": {
                "client": args.client,
                "workers": args.workers,
                "duration_s": args.duration,
                "repeat": args.repeat,
                "rooms": len(rooms),
                "tokens_per_service_run": per_worker * args.workers,
                "client_offers_compression": not args.no_compression,
                "service_ws_compression_flag": args.ws_compression,
            },
            "negotiated": {"service": negotiated, "ceiling": ceiling_negotiated},
            "ceiling_compression": compression,
            "service_joined_message": service_warm["first_message"],
            "targets": {
                "cycles_ratio": cycles_ratio,
                "cycles_ratio_target": CYCLES_TARGET,
                "cycles_target_met": cycles_met,
                "cycles_ratio_per_round": pairs,
                "join_p99_ratio": p99_ratio,
                "join_p99_ratio_target": P99_TARGET,
                "join_p99_target_met": p99_met,
                "cpu_bound_cycles_per_s": bound,
                "cpu_bound_ratio": cpu_bound_ratio,
                "others_cpu_share_median": others,
            },
            "medians": by_target,
            "runs": runs,
            "warmups": [service_warm, ceiling_warm],
            "token_creation_per_s": made / token_s,
            "live_sessions_right_after": live_now,
            "live_sessions_1s_later": live_later,
            "service_rss_kib": {"idle": rss_idle, "after_churn": rss_after},
            "problems": problems,
        }
        path = write_json(args.output, result_json)
        print(f"wrote {path}")
        return 1 if problems else 0
    finally:
        stop_process(ceiling)
        service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=64, help="concurrent peers churning (default 64)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of churn per target and round (default 5)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds of ceiling + service, alternating; medians (default 3)"
    )
    parser.add_argument(
        "--count",
        type=int,
        default=0,
        help="peer tokens per timed service run (default: enough for --duration at the rate the warm-up saw)",
    )
    parser.add_argument(
        "--rooms", type=int, default=0, help="rooms the workers use, round-robin (default: one per worker)"
    )
    parser.add_argument(
        "--warmup-cycles", type=int, default=4, help="untimed cycles per worker on each target first (default 4)"
    )
    parser.add_argument(
        "--client",
        choices=("node", "python"),
        default="node",
        help="node: Node.js with the `ws` package (default); python: the `websockets` client in this process",
    )
    parser.add_argument(
        "--no-compression",
        action="store_true",
        help="peers do not offer permessage-deflate (default: offer it, as browsers do)",
    )
    parser.add_argument(
        "--ws-compression",
        action="store_true",
        help="start the service with --ws-compression (it negotiates permessage-deflate); the ceiling follows",
    )
    parser.add_argument("--output", default="ws_churn.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    if args.workers < 1 or args.duration <= 0 or args.repeat < 1 or args.rooms < 0 or args.count < 0:
        parser.error("--workers, --duration and --repeat must be positive")
    if args.warmup_cycles < 1:
        parser.error("--warmup-cycles must be positive")
    if not Path(args.output).name.startswith("ws_churn"):
        parser.error("--output must name a ws_churn*.json file")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
