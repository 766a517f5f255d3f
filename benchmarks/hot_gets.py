"""Hot GETs: requests/s and latency of the cheap read routes, next to a raw
ASGI ceiling, all in one run on this machine.

    .venv/bin/python benchmarks/hot_gets.py [--duration 5] [--rooms 20] [--threads 2] [--connections 64]
                                            [--repeat 1] [--rate-limit 0] [--output hot_gets.json]

What it does (loopback only, stops by itself):
  1. starts `livesessions serve` on a free port with a temporary data dir
     (rate limit off by default: the per-key limiter would otherwise answer
     most of the load with 429; see --rate-limit), creates an API key and
     N rooms, and holds one WebSocket peer in each room, so the list has N
     live rooms;
  2. starts benchmarks/raw_asgi.py under uvicorn with the same options;
  3. runs wrk against, one after the other:
       raw ASGI baseline            GET /
       health                       GET /api/v2/sdk
       live-sessions (N rooms)      GET /api/v2/sdk/live-sessions
       live-sessions/{roomId}       GET /api/v2/sdk/live-sessions/{roomId}
  4. prints requests/s, p50/p99 latency, non-2xx/socket errors and the ratio to
     the raw baseline, and writes benchmarks/results/hot_gets.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
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
    rss_kib,
    stop_process,
    wait_http_ok,
    write_json,
)

WRK_SCRIPT = BENCH_DIR / "wrk_report.lua"


def need_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        print(
            "hot_gets: `wrk` is not installed, and this benchmark drives its load with it.\n"
            "Install it (Debian/Ubuntu): apt-get update && apt-get install -y wrk",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return wrk


async def run_wrk(wrk: str, url: str, args: argparse.Namespace, headers: dict[str, str]) -> dict[str, Any]:
    cmd = [
        wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--timeout",
        "5s",
        "-s",
        str(WRK_SCRIPT),
    ]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(url)
    # Run wrk as a subprocess of the event loop so the held WebSocket peers
    # keep answering the server's pings meanwhile.
    process = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await process.communicate()
    text = out.decode()
    line = next((row for row in text.splitlines() if row.startswith("WRKJSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {text}\n{err.decode()}")
    result = json.loads(line[len("WRKJSON ") :])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["non_2xx"] = result["errors_status"]  # wrk counts responses with status >= 400
    result["socket_errors"] = sum(
        result[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout")
    )
    return result


async def hold_peers(ws_base: str, tokens: list[str]) -> list[Any]:
    from websockets.asyncio.client import connect

    peers = []
    for token in tokens:
        ws = await connect(f"{ws_base}/ws?token={token}", open_timeout=10, max_size=None)
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if first.get("type") != "joined":
            raise RuntimeError(f"expected joined, got {first}")
        peers.append(ws)
    return peers


async def drain(peers: list[Any]) -> None:
    """Read (and drop) whatever the server sends the held peers."""

    async def one(ws: Any) -> None:
        try:
            async for _ in ws:
                pass
        except Exception:  # noqa: BLE001 - a closed peer is checked afterwards
            pass

    await asyncio.gather(*(one(ws) for ws in peers))


def check(api: Api, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, body = api.request("GET", path, headers=headers)
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status} before the load: {body}")
    return status, body


async def main_async(args: argparse.Namespace) -> int:
    wrk = need_wrk()
    service = Service(rate_limit=args.rate_limit).start()
    raw_port = free_port()
    raw: subprocess.Popen[bytes] | None = None
    peers: list[Any] = []
    drainer: asyncio.Task[None] | None = None
    try:
        key = service.create_key()
        api = Api(service.port, key)
        rss_idle = rss_kib(service.pid)
        rooms = [api.create_room() for _ in range(args.rooms)]
        tokens = [api.peer_token(room) for room in rooms]
        peers = await hold_peers(service.ws_base, tokens)
        drainer = asyncio.create_task(drain(peers))
        live = api.live_sessions()
        if len(live) != args.rooms:
            raise RuntimeError(f"expected {args.rooms} live rooms, the list has {len(live)}")
        room = rooms[len(rooms) // 2]
        _, one = check(api, f"/api/v2/sdk/live-sessions/{room}")
        _, health = check(api, "/api/v2/sdk")
        list_bytes = len(json.dumps(live, separators=(",", ":")))
        rss_with_peers = rss_kib(service.pid)

        raw = subprocess.Popen(
            [sys.executable, str(BENCH_DIR / "raw_asgi.py"), "--host", HOST, "--port", str(raw_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_http_ok(raw_port, "/", raw)

        targets = [
            ("raw ASGI baseline", f"http://{HOST}:{raw_port}/", {}),
            ("GET /api/v2/sdk (health)", f"{service.base}/api/v2/sdk", {}),
            (f"GET live-sessions ({args.rooms} rooms)", f"{service.base}/api/v2/sdk/live-sessions", {"x-api-key": key}),
            ("GET live-sessions/{roomId}", f"{service.base}/api/v2/sdk/live-sessions/{room}", {"x-api-key": key}),
        ]
        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s per target; "
            f"{args.rooms} live rooms, one WebSocket peer each; service rate limit "
            f"{'off' if not args.rate_limit else f'{args.rate_limit}/s'}",
            flush=True,
        )
        load_before = os.getloadavg()
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in targets}
        for rep in range(args.repeat):
            for name, url, headers in targets:
                print(f"  {'' if args.repeat == 1 else f'[{rep + 1}/{args.repeat}] '}running {name} ...", flush=True)
                pid = raw.pid if url.startswith(f"http://{HOST}:{raw_port}/") else service.pid
                cpu0 = cpu_seconds(pid)
                result = await run_wrk(wrk, url, args, headers)
                result["server_cpu_share"] = (cpu_seconds(pid) - cpu0) / (result["duration_us"] / 1e6)
                result.update(name=name, url=url.replace(key, "<key>"), headers=sorted(headers))
                runs[name].append(result)
                await asyncio.sleep(0.5)  # let the server settle between targets
        # With --repeat, each target's median run (by requests/s) stands for it.
        results = []
        for name, _, _ in targets:
            ordered = sorted(runs[name], key=lambda r: r["rps"])
            chosen = dict(ordered[len(ordered) // 2])
            chosen["rps_all_runs"] = [r["rps"] for r in runs[name]]
            chosen["non_2xx"] = sum(r["non_2xx"] for r in runs[name])
            chosen["socket_errors"] = sum(r["socket_errors"] for r in runs[name])
            results.append(chosen)
        load_after = os.getloadavg()

        # The peers must still be there after the load.
        live_after = api.live_sessions()
        rss_after = rss_kib(service.pid)
        base_rps = results[0]["rps"]
        for r in results:
            r["ratio_to_raw"] = r["rps"] / base_rps if base_rps else None

        header = (
            f"{'target':<34} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'sock err':>8} "
            f"{'srv CPU':>8} {'vs raw':>7}"
        )
        print()
        print(header)
        print("-" * len(header))
        for r in results:
            print(
                f"{r['name']:<34} {r['rps']:>10.0f} {r['p50_us'] / 1000:>8.2f} {r['p99_us'] / 1000:>8.2f} "
                f"{r['non_2xx']:>8} {r['socket_errors']:>8} {r['server_cpu_share'] * 100:>7.0f}% "
                f"{r['ratio_to_raw']:>7.2f}"
            )
        print()
        print(
            f"load average (1 min) before/after the load: {load_before[0]:.2f} / {load_after[0]:.2f} "
            f"on {os.cpu_count()} CPUs (anything else running skews the figures)"
        )
        print(
            f"live-sessions list body: {list_bytes} bytes for {len(live)} rooms; "
            f"live rooms after the load: {len(live_after)}"
        )
        print(
            f"server RSS: {rss_idle / 1024:.1f} MiB idle (key made), {rss_with_peers / 1024:.1f} MiB with "
            f"{args.rooms} peers, {rss_after / 1024:.1f} MiB after the load"
        )

        problems = []
        notes = []
        for r in results:
            if r["socket_errors"] or (r["non_2xx"] and not (args.rate_limit and "x-api-key" in r["headers"])):
                problems.append(f"{r['name']}: {r['non_2xx']} non-2xx, {r['socket_errors']} socket errors")
            elif r["non_2xx"]:
                notes.append(
                    f"{r['name']}: {r['non_2xx']} of {r['requests']} answered >= 400 (expected: the "
                    f"per-key limiter at --rate-limit {args.rate_limit}/s answers 429)"
                )
        for n in notes:
            print(f"NOTE: {n}")
        if len(live_after) != args.rooms:
            problems.append(f"{len(live_after)} live rooms after the load, expected {args.rooms}")
        log_problems = service.log_problems()
        if log_problems:
            problems.append(f"server log has {len(log_problems)} error lines, e.g. {log_problems[0]}")
        for p in problems:
            print(f"PROBLEM: {p}")

        path = write_json(
            args.output,
            {
                "benchmark": "hot_gets",
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": machine_info(),
                "settings": {
                    "duration_s": args.duration,
                    "threads": args.threads,
                    "connections": args.connections,
                    "rooms": args.rooms,
                    "rate_limit": args.rate_limit,
                    "repeat": args.repeat,
                },
                "loadavg_before": list(load_before),
                "loadavg_after": list(load_after),
                "results": results,
                "all_runs": runs,
                "live_rooms_before": len(live),
                "live_rooms_after": len(live_after),
                "list_body_bytes": list_bytes,
                "single_body": one,
                "health_body": health,
                "server_rss_kib": {"idle": rss_idle, "with_peers": rss_with_peers, "after_load": rss_after},
                "problems": problems,
                "notes": notes,
            },
        )
        print(f"wrote {path}")
        return 1 if problems else 0
    finally:
        for ws in peers:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:  # noqa: BLE001
                pass
        if drainer is not None:
            drainer.cancel()
        stop_process(raw)
        service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk per target (default 5)")
    parser.add_argument("--rooms", type=int, default=20, help="live rooms, one held peer each (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=0.0,
        help="the service's --rate-limit per key (default 0 = off, to measure the routes)",
    )
    parser.add_argument(
        "--output",
        default="hot_gets.json",
        help="file name under benchmarks/results/ for the JSON (default hot_gets.json)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the whole target sequence this many times; report each target's median (default 1)",
    )
    args = parser.parse_args()
    if args.rooms < 1 or args.duration < 1 or args.repeat < 1:
        parser.error("--rooms and --duration must be at least 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
