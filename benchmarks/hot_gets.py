"""Hot GETs: requests/s and latency of the cheap read routes, each next to a
raw ASGI app serving the same bytes on the same server, all in one run.

    .venv/bin/python benchmarks/hot_gets.py [--duration 5] [--rooms 20] [--threads 2] [--connections 64]
                                            [--repeat 1] [--rate-limit 0] [--target 0.85]
                                            [--output hot_gets.json]

What it does (loopback only, stops by itself):
  1. starts `livesessions serve` on a free port with a temporary data dir
     (rate limit off by default: the per-key limiter would otherwise answer
     most of the load with 429; see --rate-limit), creates an API key and
     N rooms, and holds one WebSocket peer in each room, so the list has N
     live rooms;
  2. fetches the service's actual answers (status, content-type, body bytes)
     to GET /api/v2/sdk, GET /api/v2/sdk/live-sessions and
     GET /api/v2/sdk/live-sessions/{roomId} (with the API key header), writes
     them to a temporary file and starts benchmarks/raw_asgi.py under uvicorn
     with the service's options and `--responses FILE`: at those very paths
     the raw app answers those very bytes (other paths: the historical
     41-byte body);
  3. runs wrk against, one after the other (the order reversed every other
     round with --repeat, so slow drift hits both sides alike):
       raw ASGI baseline (41 B)     GET / on the raw app
       health                       GET /api/v2/sdk, service then raw same bytes
       live-sessions (N rooms)      GET /api/v2/sdk/live-sessions, service then raw
       live-sessions/{roomId}       GET /api/v2/sdk/live-sessions/{roomId}, service then raw
     The raw app gets the same request (path and x-api-key header) as the
     service;
  4. prints, per route, requests/s, p50/p99, non-2xx/socket errors and the
     server's CPU for the service and the raw app, the ratio service/raw
     (medians of the runs with --repeat) and whether it meets --target
     (issue 12: >= 0.85 for the list and the single room); writes
     benchmarks/results/hot_gets.json. Exit status 1 on non-2xx, socket
     errors, lost rooms or error lines in the server log (not on a missed
     target).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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


async def run_wrk(
    wrk: str,
    url: str,
    args: argparse.Namespace,
    headers: dict[str, str],
    script: Path = WRK_SCRIPT,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    cmd = [
        wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
    ]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(url)
    # Run wrk as a subprocess of the event loop so the held WebSocket peers
    # keep answering the server's pings meanwhile.
    process = await asyncio.create_subprocess_exec(
        *cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **env} if env else None,
    )
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


def capture(
    port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> dict[str, Any]:
    """The service's exact answer to one request: status, headers (without
    date/server/content-length, which uvicorn adds) and body bytes, in the
    form `raw_asgi.py --responses` reads."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        kept = [[k, v] for k, v in response.getheaders() if k.lower() not in ("date", "server", "content-length")]
        return {"status": response.status, "headers": kept, "body_b64": base64.b64encode(data).decode()}
    finally:
        conn.close()


def start_raw(port: int, responses: dict[str, dict[str, Any]], tmp: Path) -> subprocess.Popen[bytes]:
    """raw_asgi.py on `port`, answering each path of `responses` with those bytes."""
    path = tmp / "raw_responses.json"
    path.write_text(json.dumps(responses))
    process = subprocess.Popen(
        [
            sys.executable,
            str(BENCH_DIR / "raw_asgi.py"),
            "--host",
            HOST,
            "--port",
            str(port),
            "--responses",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    wait_http_ok(port, "/", process)
    return process


def body_len(spec: dict[str, Any]) -> int:
    return len(base64.b64decode(spec["body_b64"]))


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median requests/s stands for a target; errors summed over all runs."""
    ordered = sorted(runs, key=lambda r: r["rps"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["rps_all_runs"] = [r["rps"] for r in runs]
    chosen["non_2xx"] = sum(r["non_2xx"] for r in runs)
    chosen["socket_errors"] = sum(r["socket_errors"] for r in runs)
    return chosen


async def main_async(args: argparse.Namespace) -> int:
    wrk = need_wrk()
    service = Service(rate_limit=args.rate_limit).start()
    raw_port = free_port()
    raw: subprocess.Popen[bytes] | None = None
    peers: list[Any] = []
    drainer: asyncio.Task[None] | None = None
    tmp = Path(tempfile.mkdtemp(prefix="hot-gets-raw-"))
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
        rss_with_peers = rss_kib(service.pid)

        keyed = {"x-api-key": key}
        routes = [
            # (label, path, request headers, target applies)
            ("GET /api/v2/sdk (health)", "/api/v2/sdk", {}, False),
            (f"GET live-sessions ({args.rooms} rooms)", "/api/v2/sdk/live-sessions", keyed, True),
            ("GET live-sessions/{roomId}", f"/api/v2/sdk/live-sessions/{room}", keyed, True),
        ]
        # The service's own bytes for each route, served by the raw app at the same path.
        responses = {path: capture(service.port, "GET", path, headers) for _, path, headers, _ in routes}
        for path, spec in responses.items():
            if spec["status"] != 200:
                raise RuntimeError(f"GET {path} answered {spec['status']} while capturing its bytes")
        raw = start_raw(raw_port, responses, tmp)
        raw_base = f"http://{HOST}:{raw_port}"
        for path, spec in responses.items():  # the raw app answers exactly the captured bytes
            if capture(raw_port, "GET", path)["body_b64"] != spec["body_b64"]:
                raise RuntimeError(f"the raw app does not answer the captured bytes at {path}")

        # (name, url, headers, server pid, route label or None, "service"/"raw")
        targets: list[tuple[str, str, dict[str, str], int, str | None, str]] = [
            ("raw ASGI baseline (41 B)", f"{raw_base}/", {}, raw.pid, None, "raw")
        ]
        for label, path, headers, _ in routes:
            targets.append((label, f"{service.base}{path}", headers, service.pid, label, "service"))
            targets.append((f"raw, same bytes as {label}", f"{raw_base}{path}", headers, raw.pid, label, "raw"))
        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s per target; "
            f"{args.rooms} live rooms, one WebSocket peer each; service rate limit "
            f"{'off' if not args.rate_limit else f'{args.rate_limit}/s'}; "
            f"{len(targets)} targets x {args.repeat} round(s)",
            flush=True,
        )
        load_before = os.getloadavg()
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in targets}
        for rep in range(args.repeat):
            order = targets if rep % 2 == 0 else list(reversed(targets))
            for name, url, headers, pid, _, _ in order:
                prefix = "" if args.repeat == 1 else f"[{rep + 1}/{args.repeat}] "
                print(f"  {prefix}running {name} ...", flush=True)
                cpu0 = cpu_seconds(pid)
                result = await run_wrk(wrk, url, args, headers)
                result["server_cpu_share"] = (cpu_seconds(pid) - cpu0) / (result["duration_us"] / 1e6)
                result.update(name=name.strip(), url=url, headers=sorted(headers), round=rep)
                runs[name].append(result)
                await asyncio.sleep(0.5)  # let the servers settle between targets
        results = {name: median_run(runs[name]) for name, *_ in targets}
        load_after = os.getloadavg()

        # The peers must still be there after the load, and the bytes the same.
        live_after = api.live_sessions()
        rss_after = rss_kib(service.pid)
        bytes_after = {path: capture(service.port, "GET", path, headers) for _, path, headers, _ in routes}
        changed = [p for p in responses if body_len(bytes_after[p]) != body_len(responses[p])]

        baseline = results["raw ASGI baseline (41 B)"]["rps"]
        route_rows = []
        for label, path, _, applies in routes:
            svc = results[label]
            raw_name = next(n for n, _, _, _, lbl, kind in targets if lbl == label and kind == "raw")
            raw_r = results[raw_name]
            paired = [s["rps"] / r["rps"] for s, r in zip(runs[label], runs[raw_name], strict=True) if r["rps"]]
            ratio = svc["rps"] / raw_r["rps"] if raw_r["rps"] else None
            route_rows.append(
                {
                    "route": label,
                    "path": path.replace(room, "{roomId}"),
                    "body_bytes": body_len(responses[path]),
                    "content_type": {k.lower(): v for k, v in responses[path]["headers"]}.get("content-type"),
                    "service": svc,
                    "raw_same_bytes": raw_r,
                    "ratio": ratio,
                    "ratio_paired_runs": paired,
                    "ratio_paired_median": statistics.median(paired) if paired else None,
                    "target": args.target if applies else None,
                    "target_met": (ratio is not None and ratio >= args.target) if applies else None,
                }
            )

        header = (
            f"{'target':<34} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7} {'sockerr':>7} "
            f"{'srv CPU':>7} {'/41B':>5} {'/same':>6}  target"
        )
        print()
        print(header)
        print("-" * len(header))

        def row(r: dict[str, Any], name: str, ratio: str, verdict: str) -> None:
            print(
                f"{name:<34} {r['rps']:>9.0f} {r['p50_us'] / 1000:>7.2f} {r['p99_us'] / 1000:>7.2f} "
                f"{r['non_2xx']:>7} {r['socket_errors']:>7} {r['server_cpu_share'] * 100:>6.0f}% "
                f"{r['rps'] / baseline:>5.2f} {ratio:>6}  {verdict}"
            )

        row(results["raw ASGI baseline (41 B)"], "raw ASGI baseline (41 B)", "", "")
        for rr in route_rows:
            if rr["target"] is None:
                verdict = "(no target)"
            else:
                verdict = f"{'met' if rr['target_met'] else 'MISSED'} (>= {rr['target']:.2f})"
            row(rr["service"], rr["route"], f"{rr['ratio']:.2f}", verdict)
            row(rr["raw_same_bytes"], f"  raw, same {rr['body_bytes']} B", "1.00", "")
        print()
        if args.repeat > 1:
            for rr in route_rows:
                print(
                    f"{rr['route']}: service/raw per round "
                    + ", ".join(f"{x:.2f}" for x in rr["ratio_paired_runs"])
                    + f" (median {rr['ratio_paired_median']:.2f}); req/s service "
                    + " / ".join(f"{x:.0f}" for x in rr["service"]["rps_all_runs"])
                    + ", raw "
                    + " / ".join(f"{x:.0f}" for x in rr["raw_same_bytes"]["rps_all_runs"])
                )
        print(
            f"load average (1 min) before/after the load: {load_before[0]:.2f} / {load_after[0]:.2f} "
            f"on {os.cpu_count()} CPUs (anything else running skews the figures)"
        )
        print(
            "bodies served (service = raw): "
            + ", ".join(f"{rr['path']} {rr['body_bytes']} B" for rr in route_rows)
            + f"; live rooms after the load: {len(live_after)}"
        )
        print(
            f"server RSS: {rss_idle / 1024:.1f} MiB idle (key made), {rss_with_peers / 1024:.1f} MiB with "
            f"{args.rooms} peers, {rss_after / 1024:.1f} MiB after the load"
        )

        problems = []
        notes = []
        for name, *_ in targets:
            r = results[name]
            if r["socket_errors"] or (r["non_2xx"] and not (args.rate_limit and "x-api-key" in r["headers"])):
                problems.append(f"{r['name']}: {r['non_2xx']} non-2xx, {r['socket_errors']} socket errors")
            elif r["non_2xx"]:
                notes.append(
                    f"{r['name']}: {r['non_2xx']} of {r['requests']} answered >= 400 (expected: the "
                    f"per-key limiter at --rate-limit {args.rate_limit}/s answers 429)"
                )
        if changed:
            notes.append(f"body size changed during the run at {changed}: the raw app served the earlier bytes")
        for n in notes:
            print(f"NOTE: {n}")
        if len(live_after) != args.rooms:
            problems.append(f"{len(live_after)} live rooms after the load, expected {args.rooms}")
        log_problems = service.log_problems()
        if log_problems:
            problems.append(f"server log has {len(log_problems)} error lines, e.g. {log_problems[0]}")
        for p in problems:
            print(f"PROBLEM: {p}")

        def scrub(value: Any) -> Any:
            return json.loads(json.dumps(value).replace(key, "<key>"))

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
                    "target_ratio": args.target,
                },
                "loadavg_before": list(load_before),
                "loadavg_after": list(load_after),
                "raw_baseline_41b": results["raw ASGI baseline (41 B)"],
                "routes": scrub(route_rows),
                "all_runs": scrub(runs),
                "live_rooms_before": len(live),
                "live_rooms_after": len(live_after),
                "list_body_bytes": body_len(responses["/api/v2/sdk/live-sessions"]),
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
        shutil.rmtree(tmp, ignore_errors=True)


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
        "--target",
        type=float,
        default=0.85,
        help="service/raw-same-bytes ratio the list and single-room routes should reach (default 0.85)",
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
        help="run the whole target sequence this many times, alternating its order; "
        "report each target's median (default 1)",
    )
    args = parser.parse_args()
    if args.rooms < 1 or args.duration < 1 or args.repeat < 1:
        parser.error("--rooms, --duration and --repeat must be at least 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
