"""Webhooks: events delivered per second to a local receiver, next to that
receiver's own ceiling, and what one and ten registered webhooks add to the
cost of a join, next to none, all in one run.

    .venv/bin/python benchmarks/webhooks.py [--quick] [--repeat 3] [--count 1000] [--workers 16]
                                            [--ceiling-duration 5] [--ceiling-connections 16]
                                            [--max-others 0.2] [--retries 2] [--output webhooks.json]

What it does (loopback only, stops by itself):
  1. starts a receiver in a process of its own: a bare asyncio Protocol on
     uvloop that answers 200 to every POST and counts them. It checks each
     room's order as it goes (`x-livesessions-sequence` per webhook and room:
     no step back, no gap) and counts duplicate event ids;
  2. its ceiling: `wrk -t1 -c16` POSTs a 300-byte body shaped like a delivery,
     with the same headers, to the receiver, each on a new connection as the
     service's sender makes them (`Connection: close`). Also measured with
     keep-alive, for information;
  3. starts `livesessions serve` (embedded, fresh data dir, rate limit off,
     `--allow-private-webhook-urls yes` so that it may call 127.0.0.1, and a
     long `--grace-period` so that no `meeting:ended` lands in a later
     phase). Three projects: one with no webhook, one with 1 and one with 10
     (all events, each its own URL path on the receiver);
  4. per project (0, 1, 10 webhooks; --repeat times, the order rotated each
     round): ws_churn.py's client churns --count join+leave cycles in
     --workers fresh rooms (tokens made first, not timed). Measured: cycles/s,
     the server's CPU per cycle during the churn, deliveries made during the
     churn, then the wait until the receiver has every event of the phase once
     per webhook (counted in the service's own events table), the server's
     CPU per cycle over churn and delivery together, and the delivery rate
     from the first delivery to the last, and from the churn's end to the last
     (the backlog drained with nothing else running);
  5. prints each figure with its ratio to no webhook (churn) or to the
     receiver's ceiling (deliveries), and writes
     benchmarks/results/webhooks.json.

A phase run while other processes (someone's tests on a shared machine) used
more than --max-others of a core is run again, up to --retries times, and the
least disturbed try is kept (as cluster.py does). Needs `wrk`
(apt-get install -y wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import http.client
import json
import os
import resource
import shutil
import sqlite3
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
    LIVESESSIONS,
    Api,
    Service,
    cpu_seconds,
    free_port,
    machine_info,
    new_wallet,
    stop_process,
    write_json,
)
from cluster import ForeignCpu
from hot_gets import need_wrk
from ws_churn import Stats, worker

HOOK_COUNTS = (0, 1, 10)
# The receiver answers every POST with this, and closes when asked to.
_OK_CLOSE = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_OK_KEEP = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
_ROOM_ID = b'"roomId":"'
# Deliveries are counted per this many seconds (the receiver's timeline).
TICK_S = 0.1
# No new delivery for this long while some are missing: the deliveries stalled.
STALL_S = 30.0
# And the wait for them ends after this long in any case.
DRAIN_TIMEOUT_S = 900.0


# --- the receiver (a process of its own) ---------------------------------------


class ReceiverState:
    """What the receiver has seen since the last reset."""

    def __init__(self) -> None:
        self.reset()
        self.ceiling = 0

    def reset(self) -> None:
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self.max_gap = 0.0
        self.by_prefix: collections.Counter[str] = collections.Counter()
        self.ids: set[tuple[bytes, bytes]] = set()
        self.duplicates = 0
        self.out_of_order = 0
        self.gaps = 0
        self.last_seq: dict[tuple[bytes, bytes], int] = {}
        self.missing_headers = 0
        # deliveries per TICK_S since the first one
        self.timeline: collections.Counter[int] = collections.Counter()

    def hook(self, path: bytes, seq: int | None, event_id: bytes | None, body: bytes) -> None:
        """One delivery to /h/<label>/<i>."""
        now = time.monotonic()
        if self.last is not None:
            self.max_gap = max(self.max_gap, now - self.last)
        else:
            self.first = now
        self.last = now
        self.count += 1
        self.timeline[int((now - self.first) / TICK_S)] += 1
        self.by_prefix[path.rsplit(b"/", 1)[0].decode()] += 1
        at = body.find(_ROOM_ID)
        if seq is None or event_id is None or at < 0:
            self.missing_headers += 1
            return
        start = at + len(_ROOM_ID)
        room = body[start : body.find(b'"', start)]
        if (path, event_id) in self.ids:
            self.duplicates += 1
        else:
            self.ids.add((path, event_id))
        lane = (path, room)
        previous = self.last_seq.get(lane, 0)
        if seq < previous:
            self.out_of_order += 1
        elif seq > previous + 1:
            self.gaps += 1
        if seq > previous:
            self.last_seq[lane] = seq

    def stats(self) -> bytes:
        return json.dumps(
            {
                "count": self.count,
                "unique": len(self.ids),
                "duplicates": self.duplicates,
                "out_of_order": self.out_of_order,
                "gaps": self.gaps,
                "missing_headers": self.missing_headers,
                "lanes": len(self.last_seq),
                "first": self.first,
                "last": self.last,
                "max_gap_s": self.max_gap,
                "by_prefix": dict(self.by_prefix),
                "ceiling": self.ceiling,
                "timeline": [self.timeline[i] for i in range(max(self.timeline, default=-1) + 1)],
            }
        ).encode()


class Receiver(asyncio.Protocol):
    """HTTP/1.1, just enough of it: the request line, four headers, the body."""

    def __init__(self, state: ReceiverState) -> None:
        self.state = state
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = self.buffer[:end].split(b"\r\n")
            method, path, _ = lines[0].split(b" ", 2)
            length, close, seq, event_id = 0, False, None, None
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
                elif name == b"x-livesessions-sequence":
                    seq = int(value)
                elif name == b"x-livesessions-event-id":
                    event_id = value.strip()
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[end + 4 : total]
            self.buffer = self.buffer[total:]
            reply = _OK_CLOSE if close else _OK_KEEP
            if path.startswith(b"/h/"):
                self.state.hook(path, seq, event_id, body)
            elif path == b"/ceiling":
                self.state.ceiling += 1
                body.find(_ROOM_ID)  # the same work as for a delivery
            elif method == b"GET" and path in (b"/stats", b"/reset"):
                if path == b"/reset":
                    self.state.reset()
                payload = self.state.stats()
                head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(payload)}\r\n"
                reply = head.encode() + (b"connection: close\r\n\r\n" if close else b"\r\n") + payload
            self.transport.write(reply)
            if close:
                self.transport.close()
                self.transport = None


def receiver_main(port: int) -> None:
    import uvloop

    state = ReceiverState()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: Receiver(state), HOST, port, backlog=4096)
        print("ready", flush=True)
        await server.serve_forever()

    uvloop.run(serve())


class ReceiverProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--receiver-port", str(self.port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != b"ready":
            self.stop()
            raise RuntimeError(f"the receiver did not start: {line!r}")
        self.conn = http.client.HTTPConnection(HOST, self.port, timeout=10)

    def url(self, label: str, i: int) -> str:
        return f"http://{HOST}:{self.port}/h/{label}/{i}"

    def _get(self, path: str) -> dict[str, Any]:
        self.conn.request("GET", path)
        return json.loads(self.conn.getresponse().read())

    def stats(self) -> dict[str, Any]:
        return self._get("/stats")

    def reset(self) -> dict[str, Any]:
        return self._get("/reset")

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass
        stop_process(self.process)


# --- the receiver's ceiling ------------------------------------------------------


def sample_body() -> str:
    """A peer:joined delivery as the service sends it (~300 bytes)."""
    payload = {
        "id": "0123456789abcdefghijkl",
        "sessionId": "ses_0123456789abcdefghijklmn",
        "roomId": "abc-defg-hij",
        "joinedAt": 1764460800000,
        "metadata": '{"displayName":"benchmark peer"}',
        "role": "host",
    }
    body = json.dumps(
        {"id": "evt_0123456789abcdefghijklmnop", "event": "peer:joined", "payload": payload}, separators=(",", ":")
    )
    return body + " " * max(0, 300 - len(body))


def lua_script(keep_alive: bool) -> str:
    headers = {
        "Content-Type": "text/plain",
        "User-Agent": "livesessions-webhooks/1",
        "huddle01-signature": "t=1764460800000,sha256=" + "0" * 64,
        "x-livesessions-event-id": "evt_0123456789abcdefghijklmnop",
        "x-livesessions-sequence": "1",
    }
    if not keep_alive:
        headers["Connection"] = "close"
    lines = [f'dofile("{BENCH_DIR / "wrk_report.lua"}")', 'wrk.method = "POST"']
    lines.append(f"wrk.body = {json.dumps(sample_body())}")
    lines += [f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}" for name, value in headers.items()]
    return "\n".join(lines) + "\n"


async def ceiling(wrk: str, receiver: ReceiverProcess, args: argparse.Namespace, keep_alive: bool) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="webhooks-bench-", delete=False) as script:
        script.write(lua_script(keep_alive))
    try:
        before = receiver.stats()["ceiling"]
        cpu0 = cpu_seconds(receiver.pid)
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cmd = [wrk, "-t1", f"-c{args.ceiling_connections}", f"-d{args.ceiling_duration}s", "--timeout", "5s"]
        cmd += ["-s", script.name, f"http://{HOST}:{receiver.port}/ceiling"]
        process = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await process.communicate()
        line = next((row for row in out.decode().splitlines() if row.startswith("WRKJSON ")), None)
        if process.returncode != 0 or line is None:
            raise RuntimeError(f"wrk failed ({process.returncode}): {out.decode()}\n{err.decode()}")
        result = json.loads(line[len("WRKJSON ") :])
        seconds = result["duration_us"] / 1e6
        result["rps"] = result["requests"] / seconds
        result["receiver_cpu_share"] = (cpu_seconds(receiver.pid) - cpu0) / seconds
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, reaped by now
        wrk_cpu = children.ru_utime + children.ru_stime - children0.ru_utime - children0.ru_stime
        result["wrk_cpu_share"] = wrk_cpu / seconds
        result["receiver_counted"] = receiver.stats()["ceiling"] - before
        result["socket_errors"] = sum(
            result[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout")
        )
        result["keep_alive"] = keep_alive
        return result
    finally:
        os.unlink(script.name)


# --- the service -------------------------------------------------------------------


class Project:
    def __init__(self, service: Service, hooks: int, receiver: ReceiverProcess) -> None:
        command = [str(LIVESESSIONS), "keys", "create", "--wallet", new_wallet(), "--json"]
        out = subprocess.run(
            [*command, "--data-dir", str(service.data_dir)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        created = json.loads(out)
        self.hooks = hooks
        self.key = created["apiKey"]
        self.project_id = created["projectId"]
        self.api = Api(service.port, self.key)
        self.label = f"n{hooks}"
        self.webhook_ids = []
        for i in range(hooks):
            status, body = self.api.request(
                "POST", "/api/v2/sdk/webhooks", {"url": receiver.url(self.label, i), "name": f"bench {i}"}
            )
            if status != 201:
                raise RuntimeError(f"registering a webhook answered {status}: {body}")
            self.webhook_ids.append(body["webhook"]["id"])

    def webhooks(self) -> list[dict[str, Any]]:
        status, body = self.api.request("GET", "/api/v2/sdk/webhooks")
        if status != 200:
            raise RuntimeError(f"GET webhooks answered {status}: {body}")
        return body["webhooks"]


class EventCount:
    """The service's own count of a project's events (its events table, read only)."""

    def __init__(self, service: Service) -> None:
        self.path = service.data_dir / "livesessions.sqlite3"

    def __call__(self, project_id: str) -> int:
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            (n,) = conn.execute(
                "SELECT count(*) FROM events WHERE project_id = ? AND event <> 'webhook:test'", (project_id,)
            ).fetchone()
            return int(n)
        finally:
            conn.close()


async def phase(
    service: Service,
    project: Project,
    receiver: ReceiverProcess,
    events: EventCount,
    args: argparse.Namespace,
    others: ForeignCpu,
) -> dict[str, Any]:
    """Churn in the project's fresh rooms; then wait for every delivery."""
    api = project.api
    rooms = [api.create_room() for _ in range(args.workers)]
    queues = [collections.deque[str]() for _ in range(args.workers)]
    for n in range(args.count):
        queues[n % args.workers].append(api.peer_token(rooms[n % args.workers]))
    events_before = events(project.project_id)
    receiver.reset()
    await asyncio.sleep(0.3)  # let the token requests' work settle

    stats = Stats()
    foreign0 = others.total()
    cpu0, rcpu0, loop0 = cpu_seconds(service.pid), cpu_seconds(receiver.pid), main_thread_cpu(service.pid)
    start = time.monotonic()
    deadline = time.perf_counter() + args.duration
    await asyncio.gather(*(worker(service.ws_base, q, stats, deadline, "deflate") for q in queues))
    churn_end = time.monotonic()
    cpu_churn = cpu_seconds(service.pid) - cpu0
    at_churn_end = receiver.stats()
    churn_s = churn_end - start

    emitted = events(project.project_id) - events_before
    expected = emitted * project.hooks
    final = at_churn_end
    stalled = False
    progress = (final["unique"], time.monotonic())
    while final["unique"] < expected:
        now = time.monotonic()
        if now - progress[1] > STALL_S or now - churn_end > DRAIN_TIMEOUT_S:
            stalled = True
            break
        await asyncio.sleep(0.05)
        final = receiver.stats()
        if final["unique"] > progress[0]:
            progress = (final["unique"], time.monotonic())
    await asyncio.sleep(0.2)  # the last settles' writes
    end = time.monotonic()
    cpu_total = cpu_seconds(service.pid) - cpu0
    cpu_loop = main_thread_cpu(service.pid) - loop0
    rcpu = cpu_seconds(receiver.pid) - rcpu0
    final = receiver.stats()
    foreign = (others.total() - foreign0) / (end - start)

    cycles = len(stats.join_ms)
    result: dict[str, Any] = {
        "hooks": project.hooks,
        "cycles": cycles,
        "churn_s": churn_s,
        "cycles_per_s": cycles / churn_s,
        "server_cpu_share_churn": cpu_churn / churn_s,
        "server_cpu_ms_per_cycle_churn": 1000 * cpu_churn / cycles if cycles else None,
        "server_cpu_ms_per_cycle_total": 1000 * cpu_total / cycles if cycles else None,
        "server_loop_cpu_ms_per_cycle_total": 1000 * cpu_loop / cycles if cycles else None,
        "server_other_threads_cpu_ms_per_cycle_total": 1000 * (cpu_total - cpu_loop) / cycles if cycles else None,
        "join_p50_ms": statistics.median(stats.join_ms) if stats.join_ms else None,
        "failures": dict(stats.failures),
        "close_codes": dict(stats.close_codes),
        "events_emitted": emitted,
        "deliveries_expected": expected,
        "deliveries_during_churn": at_churn_end["count"],
        "receiver": final,
        "receiver_cpu_s": rcpu,
        "stalled": stalled,
        "wait_s": end - churn_end,
        "backlog_at_churn_end": expected - at_churn_end["unique"],
        "foreign_cpu_share": foreign,
        "window_s": end - start,
    }
    if project.hooks and final["first"] is not None:
        span = final["last"] - final["first"]
        result["delivered_per_s"] = final["count"] / span if span > 0 else None
        after = final["count"] - at_churn_end["count"]
        drain = final["last"] - churn_end
        result["drain_deliveries"] = after
        result["drain_s"] = drain
        result["drain_per_s"] = after / drain if drain > 0 and after else None
        halves = drain_halves(final, churn_end, at_churn_end["count"])
        result["drain_first_half_per_s"], result["drain_second_half_per_s"] = halves or (None, None)
        result["receiver_cpu_share"] = rcpu / (final["last"] - start)
        states = project.webhooks()
        result["pending_after"] = [w["pending"] for w in states]
        result["last_errors"] = [w["lastDelivery"].get("error") for w in states if w["lastDelivery"]]
    return result


def drain_halves(final: dict[str, Any], churn_end: float, delivered_by_then: int) -> tuple[float, float] | None:
    """Deliveries/s over the first and the second half of the backlog left at
    the churn's end (from the receiver's timeline, to TICK_S): whether a
    delivery costs more while the queue is long."""
    backlog = final["count"] - delivered_by_then
    if backlog < 4 or final["first"] is None:
        return None
    target, total, t_half = delivered_by_then + backlog / 2, 0, None
    for i, n in enumerate(final["timeline"]):
        total += n
        if total >= target:
            t_half = final["first"] + (i + 1) * TICK_S
            break
    if t_half is None or not churn_end < t_half < final["last"]:
        return None
    return (backlog / 2) / (t_half - churn_end), (backlog / 2) / (final["last"] - t_half)


def main_thread_cpu(pid: int) -> float:
    """CPU time of a process's main thread: the service's event loop (the
    rest of its CPU is the SQLite writer's thread and uvloop's helpers)."""
    text = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def code_version() -> dict[str, Any]:
    """The commit and the state of src/ the service runs from (the working
    tree is shared: someone may change it during a run)."""

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(["git", *argv], cwd=BENCH_DIR.parent, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "src_tree": git("rev-parse", "HEAD:src"),
        "src_changes": git("status", "--porcelain", "--", "src").splitlines(),
        "pythonpath": os.environ.get("PYTHONPATH"),
    }


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


async def main_async(args: argparse.Namespace) -> int:
    wrk = need_wrk()
    code_before = code_version()
    receiver = ReceiverProcess()
    service: Service | None = None
    try:
        service = Service(
            rate_limit=0, extra=["--allow-private-webhook-urls", "yes", "--grace-period", str(args.grace_period)]
        ).start()
        projects = {n: Project(service, n, receiver) for n in HOOK_COUNTS}
        events = EventCount(service)
        cpus = os.cpu_count()
        print(
            f"receiver: uvloop asyncio.Protocol (pid {receiver.pid}); service pid {service.pid}; "
            f"churn: {args.workers} workers in {args.workers} fresh rooms, {args.count} cycles (cap {args.duration} s) "
            f"per phase; webhooks 0 / 1 / 10, {args.repeat} round(s); {cpus} CPUs shared by the service, "
            "the receiver, wrk and the churn client",
            flush=True,
        )
        load_before = os.getloadavg()
        ceilings: list[dict[str, Any]] = []
        keep_alive: list[dict[str, Any]] = []
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in HOOK_COUNTS}
        with ForeignCpu() as others:
            for rep in range(args.repeat):
                c = await ceiling(wrk, receiver, args, keep_alive=False)
                ceilings.append(c)
                k = await ceiling(wrk, receiver, args, keep_alive=True)
                keep_alive.append(k)
                print(
                    f"  [{rep + 1}/{args.repeat}] receiver ceiling: {c['rps']:.0f} POST/s on a new connection each "
                    f"(receiver CPU {c['receiver_cpu_share'] * 100:.0f}%, wrk {c['wrk_cpu_share'] * 100:.0f}%), "
                    f"{k['rps']:.0f} POST/s keep-alive",
                    flush=True,
                )
                order = HOOK_COUNTS[rep % 3 :] + HOOK_COUNTS[: rep % 3]
                for n in order:
                    tries: list[dict[str, Any]] = []
                    while True:
                        await asyncio.sleep(0.5)
                        run = await phase(service, projects[n], receiver, events, args, others)
                        tries.append(run)
                        delivered = (
                            f"; {run['deliveries_during_churn']} delivered during the churn, "
                            f"{run['receiver']['count']}/{run['deliveries_expected']} in all, "
                            f"{run.get('delivered_per_s') or 0:.0f}/s first to last, "
                            f"{run.get('drain_per_s') or 0:.0f}/s after the churn "
                            f"(backlog {run['backlog_at_churn_end']})"
                            if n
                            else ""
                        )
                        print(
                            f"  [{rep + 1}/{args.repeat}] {n:>2} webhooks: {run['cycles_per_s']:.0f} cycles/s, "
                            f"{run['server_cpu_ms_per_cycle_churn']:.2f} ms CPU/cycle churning, "
                            f"{run['server_cpu_ms_per_cycle_total']:.2f} with deliveries{delivered}; others "
                            f"{run['foreign_cpu_share'] * 100:.0f}%",
                            flush=True,
                        )
                        if run["foreign_cpu_share"] <= args.max_others or len(tries) > args.retries:
                            break
                        print("      measuring it again: the machine was busy with something else", flush=True)
                    chosen = min(tries, key=lambda r: r["foreign_cpu_share"])
                    chosen["tries"] = len(tries)
                    runs[n].append(chosen)
        load_after = os.getloadavg()
        code_after = code_version()

        ceiling_rps = statistics.median(c["rps"] for c in ceilings)
        keep_alive_rps = statistics.median(k["rps"] for k in keep_alive)
        summary = []
        for n in HOOK_COUNTS:
            row: dict[str, Any] = {"hooks": n}
            for key in (
                "cycles_per_s",
                "server_cpu_share_churn",
                "server_cpu_ms_per_cycle_churn",
                "server_cpu_ms_per_cycle_total",
                "server_loop_cpu_ms_per_cycle_total",
                "server_other_threads_cpu_ms_per_cycle_total",
                "join_p50_ms",
                "delivered_per_s",
                "drain_per_s",
                "drain_first_half_per_s",
                "drain_second_half_per_s",
                "receiver_cpu_share",
                "foreign_cpu_share",
            ):
                row[key] = median_of(runs[n], key)
            row["deliveries_during_churn"] = [r["deliveries_during_churn"] for r in runs[n]]
            row["deliveries_expected"] = [r["deliveries_expected"] for r in runs[n]]
            summary.append(row)
        base = summary[0]
        for row in summary:
            row["cycles_vs_none"] = row["cycles_per_s"] / base["cycles_per_s"]
            row["cpu_churn_vs_none"] = row["server_cpu_ms_per_cycle_churn"] / base["server_cpu_ms_per_cycle_churn"]
            row["cpu_total_vs_none"] = row["server_cpu_ms_per_cycle_total"] / base["server_cpu_ms_per_cycle_total"]
            if row["hooks"]:
                per_cycle = statistics.median(r["deliveries_expected"] / r["cycles"] for r in runs[row["hooks"]])
                added = row["server_cpu_ms_per_cycle_total"] - base["server_cpu_ms_per_cycle_total"]
                row["deliveries_per_cycle"] = per_cycle
                row["server_cpu_us_per_delivery"] = 1000 * added / per_cycle
                row["delivered_vs_ceiling"] = (row["delivered_per_s"] or 0) / ceiling_rps
                row["drain_vs_ceiling"] = (row["drain_per_s"] or 0) / ceiling_rps

        print()
        print(
            f"receiver ceiling: {ceiling_rps:.0f} POST/s (wrk -t1 -c{args.ceiling_connections}, "
            f"{len(sample_body())}-byte body, a new connection per POST as the service makes them; "
            f"median of {len(ceilings)}: "
            + " / ".join(f"{c['rps']:.0f}" for c in ceilings)
            + f"); keep-alive {keep_alive_rps:.0f} POST/s"
        )
        print()
        header = (
            f"{'webhooks':>8} {'cycles/s':>9} {'vs 0':>5} {'CPU ms/cycle':>13} {'vs 0':>5} {'+deliveries':>12} "
            f"{'vs 0':>5} {'µs/delivery':>12} {'during churn':>13} {'delivered/s':>12} {'vs ceil':>8} "
            f"{'drain/s':>8} {'vs ceil':>8} {'others':>7}"
        )
        print(header)
        print("-" * len(header))
        for row in summary:
            n = row["hooks"]
            print(
                f"{n:>8} {row['cycles_per_s']:>9.0f} {row['cycles_vs_none']:>5.2f} "
                f"{row['server_cpu_ms_per_cycle_churn']:>13.2f} {row['cpu_churn_vs_none']:>5.2f} "
                f"{row['server_cpu_ms_per_cycle_total']:>12.2f} {row['cpu_total_vs_none']:>5.2f} "
                + (
                    f"{row['server_cpu_us_per_delivery']:>12.0f} "
                    f"{statistics.median(row['deliveries_during_churn']):>13.0f} "
                    f"{row['delivered_per_s'] or 0:>12.0f} {row['delivered_vs_ceiling']:>8.2f} "
                    f"{row['drain_per_s'] or 0:>8.0f} {row['drain_vs_ceiling']:>8.2f} "
                    if n
                    else f"{'':>12} {'':>13} {'':>12} {'':>8} {'':>8} {'':>8} "
                )
                + f"{row['foreign_cpu_share'] * 100:>6.0f}%"
            )
        print(
            f"(medians of {args.repeat}; CPU: the service process, all threads, per join+leave cycle, during the "
            "churn and over churn + delivery of all its events; µs/delivery: the added CPU per delivery; "
            "delivered/s: the receiver's count from first to last delivery, drain/s: from the churn's end to "
            "the last; others: CPU of processes this benchmark did not start, % of one core)"
        )
        for row in summary:
            print(
                f"{row['hooks']:>2} webhooks: server CPU per cycle, churn + deliveries: "
                f"{row['server_loop_cpu_ms_per_cycle_total']:.2f} ms on the event loop's thread, "
                f"{row['server_other_threads_cpu_ms_per_cycle_total']:.2f} ms on the others (the SQLite writer)"
                + (
                    f"; receiver CPU {row['receiver_cpu_share'] * 100:.0f}% of a core; backlog at the churn's end "
                    f"{statistics.median(r['backlog_at_churn_end'] for r in runs[row['hooks']]):.0f}, drained at "
                    f"{row['drain_first_half_per_s'] or 0:.0f}/s (first half) then "
                    f"{row['drain_second_half_per_s'] or 0:.0f}/s (second half)"
                    if row["hooks"]
                    else ""
                )
            )
        print(f"load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {cpus} CPUs")
        changes = code_before["src_changes"]
        dirty = f", uncommitted changes in src/: {len(changes)}" if changes else ""
        print(f"service code: commit {code_before['commit']}{dirty}")

        problems = []
        for c in ceilings + keep_alive:
            if c["socket_errors"] or c["errors_status"]:
                problems.append(f"receiver ceiling: {c['socket_errors']} socket errors, {c['errors_status']} non-2xx")
        for n in HOOK_COUNTS:
            for run in runs[n]:
                tag = f"{n} webhooks"
                if run["failures"]:
                    problems.append(f"{tag}: churn failures {run['failures']}")
                rec = run["receiver"]
                if n and run["stalled"]:
                    problems.append(
                        f"{tag}: deliveries stalled: {rec['unique']} of {run['deliveries_expected']} reached the "
                        f"receiver, {run['wait_s']:.0f} s after the churn (none new for {STALL_S:.0f} s, or "
                        f"{DRAIN_TIMEOUT_S:.0f} s in all); pending {run.get('pending_after')}"
                    )
                if n and not run["deliveries_during_churn"]:
                    problems.append(f"{tag}: no delivery reached the receiver during the churn")
                if rec["out_of_order"] or rec["gaps"] or rec["missing_headers"]:
                    problems.append(
                        f"{tag}: {rec['out_of_order']} out of order, {rec['gaps']} gaps in a room's sequence, "
                        f"{rec['missing_headers']} without sequence or event id"
                    )
                if n and rec["unique"] != run["deliveries_expected"]:
                    problems.append(
                        f"{tag}: {rec['unique']} distinct deliveries, {run['deliveries_expected']} expected"
                    )
                if not n and rec["count"]:
                    problems.append(f"{tag}: the receiver got {rec['count']} deliveries")
                if any(run.get("pending_after") or []):
                    problems.append(f"{tag}: still pending afterwards {run['pending_after']}")
                if any(run.get("last_errors") or []):
                    problems.append(f"{tag}: last delivery errors {run['last_errors']}")
        log_problems = service.log_problems()
        if log_problems:
            problems.append(f"server log has {len(log_problems)} error lines, e.g. {log_problems[0]}")
        if any(code_after[k] != code_before[k] for k in ("src_tree", "src_changes")):
            print(f"NOTE: src/ changed during the run: {code_before} -> {code_after}")
        duplicates = sum(r["receiver"]["duplicates"] for n in HOOK_COUNTS for r in runs[n])
        if duplicates:
            print(f"NOTE: {duplicates} deliveries were duplicates (at-least-once)")
        for p in problems:
            print(f"PROBLEM: {p}")

        path = write_json(
            args.output,
            {
                "benchmark": "webhooks",
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": machine_info(),
                "code": code_before,
                "code_after": code_after,
                "settings": {k: v for k, v in vars(args).items() if k != "receiver_port"},
                "loadavg_before": list(load_before),
                "loadavg_after": list(load_after),
                "receiver_ceiling_rps": ceiling_rps,
                "receiver_keep_alive_rps": keep_alive_rps,
                "ceiling_runs": ceilings,
                "keep_alive_runs": keep_alive,
                "summary": summary,
                "runs": {str(n): runs[n] for n in HOOK_COUNTS},
                "other_processes_cpu_s": dict(others.by_name.most_common(20)),
                "problems": problems,
            },
        )
        print(f"wrote {path}")
        return 1 if problems else 0
    finally:
        if service is not None:
            service.stop()
        receiver.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (under a minute)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every phase; medians (default 3)")
    parser.add_argument("--count", type=int, default=1000, help="join+leave cycles per phase (default 1000)")
    parser.add_argument("--workers", type=int, default=16, help="churning peers at once, one room each (default 16)")
    parser.add_argument("--duration", type=float, default=30.0, help="stop a churn after this long anyway (default 30)")
    parser.add_argument("--ceiling-duration", type=int, default=5, help="seconds of wrk per ceiling run (default 5)")
    parser.add_argument("--ceiling-connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument(
        "--grace-period",
        type=float,
        default=3600.0,
        help="the service's --grace-period: long, so no meeting:ended is emitted in a later phase (default 3600)",
    )
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.2,
        help="a phase run while other processes used more than this share of a core is run again (default 0.2)",
    )
    parser.add_argument("--retries", type=int, default=2, help="at most this many more tries per phase (default 2)")
    parser.add_argument("--output", default="", help="file name under benchmarks/results/ (default webhooks.json)")
    parser.add_argument("--receiver-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver_port:
        receiver_main(args.receiver_port)
        return 0
    if args.quick:
        args.repeat, args.count, args.ceiling_duration, args.retries = 1, 300, 2, 0
        args.output = args.output or "webhooks_quick.json"
    args.output = args.output or "webhooks.json"
    if min(args.repeat, args.count, args.workers, args.ceiling_duration, args.ceiling_connections) < 1:
        parser.error("counts and durations must be at least 1")
    if shutil.which("wrk") is None:
        need_wrk()
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
