"""Create-room: requests/s and latency of POST /api/v2/sdk/rooms/create-room
next to a raw ASGI app answering the same POST with the same bytes on the
same server, then a check that every room the service acknowledged is stored.

    .venv/bin/python benchmarks/create_room.py [--duration 10] [--threads 2] [--connections 64]
                                               [--repeat 1] [--target 0.6] [--no-restart-check]
                                               [--output create_room.json]

What it does (loopback only, stops by itself):
  1. starts `livesessions serve` on a free port with a temporary data dir
     (rate limit off) and creates an API key;
  2. captures the service's answer to one create-room POST (a 201 and its
     JSON body, 72 bytes) and starts benchmarks/raw_asgi.py under uvicorn with
     the service's options, answering that POST path with those bytes after
     reading the request body in full, as the service does;
  3. runs wrk (benchmarks/wrk_post.lua: POST with the API key header and the
     body {"roomLocked":false,"metadata":{"title":"x"}}) against the service
     and against the raw app, alternating (the order reversed every other
     round with --repeat). The Lua script counts the answers by status
     exactly and keeps the roomId of every 201 the service sent;
  4. prints req/s, p50/p99, non-2xx, socket errors and the server's CPU for
     both, the ratio service/raw (medians of the runs) and whether it meets
     --target (issue 12: >= 0.6);
  5. verifies durability as far as a test on one machine can: pages through
     GET /api/v2/sdk/rooms/get-rooms and checks that every acknowledged
     roomId is stored; then SIGKILLs the service (no shutdown, nothing
     flushed), starts it again on the same data dir and checks again.
     A power cut cannot be simulated here; the output states the SQLite
     settings the code uses (read from src/livesessions/stores/sqlite_database.py)
     and the fsync time of the data dir's file system;
  6. writes benchmarks/results/create_room.json. Exit status 1 on non-2xx,
     socket errors, an acknowledged room missing, or error lines in the server
     log (not on a missed target).

A few rooms more than acknowledged may be stored: requests still in flight
when wrk stopped were committed, but wrk never counted their answers.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import shutil
import signal
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
    write_json,
)
from hot_gets import body_len, capture, median_run, need_wrk, run_wrk, start_raw

PATH = "/api/v2/sdk/rooms/create-room"
BODY = '{"roomLocked":false,"metadata":{"title":"x"}}'
WRK_SCRIPT = BENCH_DIR / "wrk_post.lua"
SQLITE_DATABASE = BENCH_DIR.parent / "src" / "livesessions" / "stores" / "sqlite_database.py"


def sqlite_pragmas() -> dict[str, str]:
    """The PRAGMAs the service's SQLite connections set, as written in the source."""
    try:
        text = SQLITE_DATABASE.read_text()
    except OSError:
        return {}
    return {m[1].lower(): m[2] for m in re.finditer(r"PRAGMA\s+(\w+)\s*=\s*(\w+)", text)}


def filesystem_of(path: Path) -> dict[str, str]:
    """Mount point, device and type of the file system holding `path` (from /proc/mounts)."""
    best: tuple[str, str, str] = ("", "?", "?")
    resolved = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        device, mount, fstype, *_ = line.split()
        if (resolved == mount or resolved.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best[0]):
            best = (mount, device, fstype)
    return {"mount": best[0], "device": best[1], "type": best[2]}


def fsync_ms(directory: Path, count: int = 50) -> dict[str, float]:
    """How long an fsync of a 4 KiB overwrite takes in `directory` (median, p90, ms)."""
    path = directory / "fsync-probe"
    times = []
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for i in range(count):
            os.pwrite(fd, bytes([i % 256]) * 4096, 0)
            started = time.perf_counter()
            os.fsync(fd)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(len(times) * 0.9)], "count": count}


def commit_metrics(port: int) -> tuple[float, float]:
    """(commits so far, seconds spent in them) from the service's /metrics."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith("livesessions_commit_duration_seconds_count"):
            count = float(line.split()[-1])
        elif line.startswith("livesessions_commit_duration_seconds_sum"):
            total = float(line.split()[-1])
    return count, total


def stored_room_ids(api: Api) -> tuple[list[str], int]:
    """Every room of the key's project, paging GET /rooms/get-rooms (100 a page), and its `count`."""
    ids: list[str] = []
    page, count = 1, 0
    while True:
        status, body = api.request("GET", f"/api/v2/sdk/rooms/get-rooms?limit=100&cursor={page}")
        if status != 200:
            raise RuntimeError(f"get-rooms page {page} answered {status}: {body}")
        ids += [room["roomId"] for room in body["rooms"]]
        count = body["count"]
        if body["nextCursor"] is None:
            return ids, count
        page = body["nextCursor"]


def durability_check(acked: list[str], before: set[str], stored: list[str]) -> dict[str, Any]:
    stored_set = set(stored)
    acked_set = set(acked)
    return {
        "acknowledged": len(acked),
        "acknowledged_distinct": len(acked_set),
        "acknowledged_missing": len(acked_set - stored_set),
        "missing_examples": sorted(acked_set - stored_set)[:5],
        "stored_new": len(stored_set - before),
        "stored_not_acknowledged": len(stored_set - before - acked_set),
        "stored_duplicates_in_listing": len(stored) - len(stored_set),
    }


async def main_async(args: argparse.Namespace) -> int:
    wrk = need_wrk()
    service = Service(keep_data=True).start()
    restarted: Service | None = None
    raw_port = free_port()
    raw: subprocess.Popen[bytes] | None = None
    tmp = Path(tempfile.mkdtemp(prefix="create-room-bench-"))
    pragmas = sqlite_pragmas()
    try:
        key = service.create_key()
        api = Api(service.port, key)
        headers = {"x-api-key": key}
        spec = capture(service.port, "POST", PATH, {**headers, "content-type": "application/json"}, BODY.encode())
        if spec["status"] != 201:
            raise RuntimeError(f"create-room answered {spec['status']} while capturing its bytes")
        raw = start_raw(raw_port, {PATH: spec}, tmp)
        raw_spec = capture(raw_port, "POST", PATH, {"content-type": "application/json"}, BODY.encode())
        if raw_spec["status"] != 201 or raw_spec["body_b64"] != spec["body_b64"]:
            raise RuntimeError("the raw app does not answer the captured create-room bytes")
        before, _ = stored_room_ids(api)
        fs = filesystem_of(service.data_dir)
        fsync = fsync_ms(service.data_dir)
        rss_before = rss_kib(service.pid)

        targets = [
            ("service", f"{service.base}{PATH}", service.pid),
            ("raw", f"http://{HOST}:{raw_port}{PATH}", raw.pid),
        ]
        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s per target, POST {PATH} "
            f"body {BODY} ({len(BODY)} B); service rate limit off; answer {body_len(spec)} B; "
            f"{args.repeat} round(s)",
            flush=True,
        )
        load_before = os.getloadavg()
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in targets}
        id_files: list[Path] = []
        for rep in range(args.repeat):
            for name, url, pid in targets if rep % 2 == 0 else list(reversed(targets)):
                prefix = "" if args.repeat == 1 else f"[{rep + 1}/{args.repeat}] "
                print(f"  {prefix}running {name} ...", flush=True)
                ids_file = tmp / f"ids-{name}-{rep}.txt"
                commits0 = commit_metrics(service.port) if name == "service" else None
                cpu0 = cpu_seconds(pid)
                result = await run_wrk(
                    wrk, url, args, headers, script=WRK_SCRIPT, env={"WRK_IDS_FILE": str(ids_file), "WRK_BODY": BODY}
                )
                result["server_cpu_share"] = (cpu_seconds(pid) - cpu0) / (result["duration_us"] / 1e6)
                result["non_2xx"] = result["requests"] - result["status_201"] - result["status_2xx_other"]
                result["non_201"] = result["requests"] - result["status_201"]
                if commits0 is not None:
                    commits1 = commit_metrics(service.port)
                    n, seconds = commits1[0] - commits0[0], commits1[1] - commits0[1]
                    result["commits"] = n
                    result["writes_per_commit"] = result["status_201"] / n if n else None
                    result["commit_ms_mean"] = seconds / n * 1000 if n else None
                    result["commit_share_of_wall"] = seconds / (result["duration_us"] / 1e6)
                    id_files.append(ids_file)
                result.update(name=name, url=url, round=rep)
                runs[name].append(result)
                await asyncio.sleep(0.5)
        load_after = os.getloadavg()
        results = {name: median_run(runs[name]) for name, _, _ in targets}
        for name in results:  # median_run sums non_2xx; sum the exact counts too
            results[name]["non_201"] = sum(r["non_201"] for r in runs[name])
        svc, raw_r = results["service"], results["raw"]
        ratio = svc["rps"] / raw_r["rps"] if raw_r["rps"] else None
        paired = [s["rps"] / r["rps"] for s, r in zip(runs["service"], runs["raw"], strict=True) if r["rps"]]
        met = ratio is not None and ratio >= args.target
        rss_after = rss_kib(service.pid)

        # Every 201 the service sent names a room that must be stored.
        acked = [line for f in id_files for line in f.read_text().split()]
        wrk_201 = sum(r["status_201"] for r in runs["service"])
        print("  checking the stored rooms ...", flush=True)
        stored, count = stored_room_ids(api)
        check_live = durability_check(acked, set(before), stored)
        check_live["count_field"] = count
        check_restart: dict[str, Any] | None = None
        if not args.no_restart_check:
            print("  SIGKILL the service, start it again on the same data dir, check again ...", flush=True)
            assert service.process is not None
            service.process.send_signal(signal.SIGKILL)
            service.process.wait()
            service.stop()  # keep_data: the data dir stays
            restarted = Service()
            shutil.rmtree(restarted.tmp, ignore_errors=True)
            restarted.tmp, restarted.data_dir = service.tmp, service.data_dir
            restarted.log_path = service.tmp / "server-restarted.log"
            restarted.start()
            stored2, count2 = stored_room_ids(Api(restarted.port, key))
            check_restart = durability_check(acked, set(before), stored2)
            check_restart["count_field"] = count2

        header = (
            f"{'target':<32} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'201':>8} {'non-2xx':>7} "
            f"{'sockerr':>7} {'srv CPU':>7} {'ratio':>6}"
        )
        print()
        print(header)
        print("-" * len(header))
        for label, r, shown in (
            ("POST create-room (service)", svc, f"{ratio:.2f}" if ratio is not None else "-"),
            (f"raw ASGI, same {body_len(spec)} B 201", raw_r, "1.00"),
        ):
            print(
                f"{label:<32} {r['rps']:>8.0f} {r['p50_us'] / 1000:>7.2f} {r['p99_us'] / 1000:>7.2f} "
                f"{r['status_201']:>8} {r['non_2xx']:>7} {r['socket_errors']:>7} "
                f"{r['server_cpu_share'] * 100:>6.0f}% {shown:>6}"
            )
        print()
        print(f"target service/raw >= {args.target:.2f}: {'met' if met else 'MISSED'} (ratio {ratio:.2f})")
        if args.repeat > 1:
            print(
                "service/raw per round: "
                + ", ".join(f"{x:.2f}" for x in paired)
                + f" (median {statistics.median(paired):.2f}); req/s service "
                + " / ".join(f"{r['rps']:.0f}" for r in runs["service"])
                + ", raw "
                + " / ".join(f"{r['rps']:.0f}" for r in runs["raw"])
            )
        if svc.get("commits"):
            print(
                f"service commits (median run): {svc['commits']:.0f}, {svc['writes_per_commit']:.1f} rooms per "
                f"commit, {svc['commit_ms_mean']:.2f} ms per commit, writer thread committing "
                f"{svc['commit_share_of_wall'] * 100:.0f}% of the time"
            )
        print(
            "durability: SQLite as set in src/livesessions/stores/sqlite_database.py: "
            + (", ".join(f"{k}={v}" for k, v in pragmas.items()) or "(not found)")
        )
        print(
            f"  data dir on {fs['type']} ({fs['device']} at {fs['mount']}); fsync of 4 KiB there: "
            f"median {fsync['median_ms']:.2f} ms, p90 {fsync['p90_ms']:.2f} ms"
        )

        def say(label: str, c: dict[str, Any]) -> None:
            print(
                f"  {label}: {c['acknowledged']} rooms acknowledged (201), {c['acknowledged_missing']} of them "
                f"missing; {c['stored_new']} new rooms stored ({c['stored_not_acknowledged']} not acknowledged: "
                f"in flight when wrk stopped), count field {c['count_field']}"
            )

        say("live service", check_live)
        if check_restart is not None:
            say("after SIGKILL + restart", check_restart)
        print(
            f"load average (1 min) before/after the load: {load_before[0]:.2f} / {load_after[0]:.2f} "
            f"on {os.cpu_count()} CPUs; server RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB"
        )

        problems = []
        for name, r in results.items():
            if r["non_201"] or r["socket_errors"]:
                problems.append(
                    f"{name}: {r['non_201']} answers other than 201 (4xx {sum(x['status_4xx'] for x in runs[name])}, "
                    f"5xx {sum(x['status_5xx'] for x in runs[name])}), {r['socket_errors']} socket errors"
                )
        if len(acked) != wrk_201:
            problems.append(f"wrk counted {wrk_201} answers 201 but kept {len(acked)} room ids")
        if len(set(acked)) != len(acked) or "?" in acked:
            problems.append(f"{len(acked) - len(set(acked))} room ids acknowledged twice, or a 201 without roomId")
        for label, c in (("live service", check_live), ("after SIGKILL + restart", check_restart)):
            if c is None:
                continue
            if c["acknowledged_missing"]:
                problems.append(
                    f"{label}: {c['acknowledged_missing']} acknowledged rooms are not stored, "
                    f"e.g. {c['missing_examples']}"
                )
            if c["stored_duplicates_in_listing"]:
                problems.append(f"{label}: the listing named {c['stored_duplicates_in_listing']} rooms twice")
            if c["count_field"] != len(before) + c["stored_new"]:
                problems.append(f"{label}: count {c['count_field']} but {len(before) + c['stored_new']} listed")
        for s in (service, restarted):
            if s is not None and s.log_problems():
                problems.append(f"server log has {len(s.log_problems())} error lines, e.g. {s.log_problems()[0]}")
        for p in problems:
            print(f"PROBLEM: {p}")

        path = write_json(
            args.output,
            {
                "benchmark": "create_room",
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": machine_info(),
                "settings": {
                    "duration_s": args.duration,
                    "threads": args.threads,
                    "connections": args.connections,
                    "repeat": args.repeat,
                    "target_ratio": args.target,
                    "request_body": BODY,
                    "restart_check": not args.no_restart_check,
                },
                "loadavg_before": list(load_before),
                "loadavg_after": list(load_after),
                "service": svc,
                "raw_same_bytes": raw_r,
                "ratio": ratio,
                "ratio_paired_runs": paired,
                "target_met": met,
                "response_bytes": body_len(spec),
                "all_runs": runs,
                "durability": {
                    "sqlite_pragmas_in_source": pragmas,
                    "filesystem": fs,
                    "fsync_4k": fsync,
                    "rooms_before": len(before),
                    "wrk_201": wrk_201,
                    "live": check_live,
                    "after_sigkill_restart": check_restart,
                },
                "server_rss_kib": {"before": rss_before, "after_load": rss_after},
                "problems": problems,
            },
        )
        print(f"wrote {path}")
        return 1 if problems else 0
    finally:
        stop_process(raw)
        if restarted is not None:
            restarted.stop()  # removes the shared data dir
        service.stop()
        shutil.rmtree(service.tmp, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk per target and round (default 10)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of service + raw, the order alternating; medians reported (default 1)",
    )
    parser.add_argument(
        "--target", type=float, default=0.6, help="service/raw ratio create-room should reach (default 0.6)"
    )
    parser.add_argument(
        "--no-restart-check",
        action="store_true",
        help="skip the SIGKILL + restart check (the live check still runs)",
    )
    parser.add_argument(
        "--output",
        default="create_room.json",
        help="file name under benchmarks/results/ for the JSON (default create_room.json)",
    )
    args = parser.parse_args()
    if args.duration < 1 or args.repeat < 1:
        parser.error("--duration and --repeat must be at least 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
