"""Which ASGI server: uvicorn, granian and hypercorn measured in one run on
churn, hot GETs, memory per peer and liveness, each serving a raw ASGI app
(the server's ceiling) and the livesessions app itself.

    .venv/bin/python benchmarks/servers.py [--servers uvicorn,granian,hypercorn] [--repeat 2]
                                           [--duration 3] [--churn-duration 3] [--peers 1000]
                                           [--liveness-interval 1] [--output servers.json]

What it does (loopback only, every phase bounded, ~3 min by default):
  1. starts, for each server, two processes on free ports: the raw app
     (benchmarks/servers/bench_raw_app.py: fixed JSON GET; a WebSocket that
     accepts, sends {"type":"joined"}, and closes on "leave") and the service
     (embedded SQLite, temporary data dir, rate limit off, the flags of
     benchmarks/_common.py's Service):
       uvicorn    raw: stock uvicorn (httptools, websockets-sansio, uvloop);
                  service: `livesessions serve` itself (its hardened protocol classes)
       granian    `granian --interface asgi --workers 1 --loop uvloop --http 1 --ws`,
                  service via benchmarks/servers/bench_service_app.py (same app, lifespan)
       hypercorn  `hypercorn -k uvloop`, same entry points
     WebSocket pings every --liveness-interval s (timeout the same) where the
     server has the setting (uvicorn: interval and timeout; hypercorn: interval
     only; granian: none, so its raw app pings at the application level,
     RAW_APP_PING_INTERVAL, to price that);
  2. --repeat rounds, the server order rotated each round; in each, per server:
     wrk on the raw GET and on GET /api/v2/sdk/live-sessions/{roomId} (x-api-key,
     a room with one live peer, as benchmarks/hot_gets.py), then join+leave
     churn over WebSocket against the raw app and the service (as
     benchmarks/ws_churn.py: fresh pre-made token per join, joined, leave, close);
     medians over the rounds are reported, every run kept in the JSON;
  3. per server and app: --peers idle WebSocket peers (the service: one room
     each, as benchmarks/peer_memory.py); RSS of the server's process tree
     before/after, so KiB per peer, the server's CPU while they sit idle (the
     cost of the pings), and the negotiated permessage-deflate;
  4. liveness probe, per server and app: a raw-socket peer that reads but never
     answers a ping; counts WebSocket pings and app-level pings received, when
     the server closes it, and (service) when it is gone from its room; bounded
     by --liveness-wait;
  5. prints a table and writes benchmarks/results/servers.json.

A server that cannot be found or started is reported and skipped; a figure
that is missed is None (printed "-"), not a failure. The exit status is 1 only
when something errored (a server died, a check failed).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import resource
import secrets
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_DIR,
    BIN_DIR,
    HOST,
    LIVESESSIONS,
    Api,
    free_port,
    log_problems,
    machine_info,
    new_wallet,
    service_args,
    wait_http_ok,
    write_json,
)

APPS_DIR = BENCH_DIR / "servers"
WRK_SCRIPT = BENCH_DIR / "wrk_report.lua"
PYTHON = sys.executable
STEP_TIMEOUT = 10.0
SERVERS = ("uvicorn", "granian", "hypercorn")


# --- processes --------------------------------------------------------------


def tree_pids(root: int) -> list[int]:
    """A process and its descendants (granian and hypercorn run a worker child)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def tree_rss_kib(root: int) -> int:
    total = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def tree_cpu_s(root: int) -> float:
    total = 0.0
    for pid in tree_pids(root):
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def service_flags(data_dir: Path, port: int, interval: float) -> list[str]:
    """`livesessions serve` flags: those of _common.Service, plus the ping settings."""
    return [*service_args(port, data_dir), "--ping-interval", str(interval), "--ping-timeout", str(interval)]


class Server:
    """One server process serving one app ("raw" or "service") on a free port."""

    def __init__(self, server: str, app: str, interval: float, tmp: Path) -> None:
        self.server, self.app = server, app
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        self.ws_base = f"ws://{HOST}:{self.port}"
        self.data_dir = tmp / f"{server}-{app}" / "data"
        self.log_path = tmp / f"{server}-{app}.log"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.process: subprocess.Popen[bytes] | None = None
        self.key: str | None = None
        env = dict(os.environ)
        module = "bench_raw_app:app" if app == "raw" else "bench_service_app:app"
        if app == "service":
            env["LIVESESSIONS_BENCH_ARGS"] = json.dumps(service_flags(self.data_dir, self.port, interval))
        ping = str(interval)
        if server == "uvicorn" and app == "service":
            cmd = [str(LIVESESSIONS), "serve", *service_flags(self.data_dir, self.port, interval)]
        elif server == "uvicorn":
            cmd = [
                PYTHON, "-m", "uvicorn", module, "--app-dir", str(APPS_DIR), "--host", HOST,
                "--port", str(self.port), "--http", "httptools", "--ws", "websockets-sansio", "--loop", "uvloop",
                "--no-access-log", "--log-level", "warning", "--lifespan", "on",
                "--ws-ping-interval", ping, "--ws-ping-timeout", ping,
            ]  # fmt: skip
        elif server == "granian":
            if app == "raw":  # granian has no WebSocket pings: the app sends its own
                env["RAW_APP_PING_INTERVAL"] = ping
            cmd = [
                str(BIN_DIR / "granian"), "--interface", "asgi", "--host", HOST, "--port", str(self.port),
                "--workers", "1", "--loop", "uvloop", "--http", "1", "--ws", "--no-access-log",
                "--log-level", "warning", "--working-dir", str(APPS_DIR), module,
            ]  # fmt: skip
        elif server == "hypercorn":
            cmd = [
                str(BIN_DIR / "hypercorn"), "-k", "uvloop", "-b", f"{HOST}:{self.port}", "--log-level", "warning",
                "--websocket-ping-interval", str(max(1, round(interval))), module,
            ]  # fmt: skip
        else:
            raise ValueError(server)
        self.cmd, self.env = cmd, env

    @property
    def name(self) -> str:
        return f"{self.server}/{self.app}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env, cwd=APPS_DIR, start_new_session=True
        )
        wait_http_ok(self.port, "/" if self.app == "raw" else "/api/v2/sdk", self.process)
        if self.app == "service":
            cmd = [str(LIVESESSIONS), "keys", "create", "--wallet", new_wallet(), "--json"]
            out = subprocess.run(
                [*cmd, "--data-dir", str(self.data_dir)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            self.key = json.loads(out)["apiKey"]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_problems(self) -> list[str]:
        return log_problems(self.log_path, ("Traceback", "ERROR", "Exception", "error"))

    def stop(self) -> None:
        """SIGTERM to the process this script started, then its own session
        (its worker children) if anything is left; nothing else is touched."""
        if self.process is not None and self.process.poll() is None:
            pids = tree_pids(self.process.pid)
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            for pid in pids[1:]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        if getattr(self, "_log", None):
            self._log.close()


# --- load -------------------------------------------------------------------


async def run_wrk(url: str, args: argparse.Namespace, headers: dict[str, str]) -> dict[str, Any]:
    cmd = [shutil.which("wrk") or "wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    cmd += ["--timeout", "5s", "-s", str(WRK_SCRIPT)]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cmd.append(url)
    process = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), args.duration + 30)
    line = next((row for row in out.decode().splitlines() if row.startswith("WRKJSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {out.decode()}\n{err.decode()}")
    result = json.loads(line[len("WRKJSON ") :])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["socket_errors"] = sum(
        result[k] for k in ("errors_connect", "errors_read", "errors_write", "errors_timeout")
    )
    return result


async def measure_get(server: Server, args: argparse.Namespace, room: str | None) -> dict[str, Any]:
    if server.app == "raw":
        url, headers = f"{server.base}/", {}
    else:
        assert server.key is not None
        url, headers = f"{server.base}/api/v2/sdk/live-sessions/{room}", {"x-api-key": server.key}
    cpu0 = tree_cpu_s(server.pid)
    result = await run_wrk(url, args, headers)
    result["server_cpu_share"] = (tree_cpu_s(server.pid) - cpu0) / (result["duration_us"] / 1e6)
    result["loadavg_1m_after"] = os.getloadavg()[0]
    return {k: result[k] for k in ("rps", "requests", "p50_us", "p99_us", "errors_status", "socket_errors")} | {
        "server_cpu_share": result["server_cpu_share"],
        "loadavg_1m_after": result["loadavg_1m_after"],
    }


async def churn_cycle(ws_base: str, token: str | None, failures: collections.Counter[str]) -> bool:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    url = f"{ws_base}/ws" + (f"?token={token}" if token else "")
    async with asyncio.timeout(STEP_TIMEOUT):
        ws = await connect(url, open_timeout=STEP_TIMEOUT, ping_interval=None)
        try:
            first = json.loads(await ws.recv())
            if first.get("type") != "joined":
                failures[f"first message {first.get('type')!r}"] += 1
                return False
            await ws.send('{"type":"leave"}')
            try:
                while True:
                    await ws.recv()
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                if code != 1000:
                    failures[f"close code {code}"] += 1
                    return False
            return True
        finally:
            await ws.close()


async def measure_churn(server: Server, args: argparse.Namespace, tokens: list[str] | None) -> dict[str, Any]:
    failures: collections.Counter[str] = collections.Counter()
    queue = collections.deque(tokens if tokens is not None else [None] * args.churn_count)
    done = 0

    async def worker(deadline: float) -> None:
        nonlocal done
        while queue and time.perf_counter() < deadline:
            token = queue.popleft()
            try:
                if await churn_cycle(server.ws_base, token, failures):
                    done += 1
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failures[f"{type(exc).__name__}: {str(exc)[:60]}"] += 1

    cpu0 = tree_cpu_s(server.pid)
    start = time.perf_counter()
    await asyncio.gather(*(worker(start + args.churn_duration) for _ in range(args.churn_workers)))
    elapsed = time.perf_counter() - start
    return {
        "cycles": done,
        "elapsed_s": elapsed,
        "cycles_per_s": done / elapsed,
        "failures": dict(failures),
        "server_cpu_share": (tree_cpu_s(server.pid) - cpu0) / elapsed,
        "ran_out_of_tokens": not queue,
        "loadavg_1m_after": os.getloadavg()[0],
    }


# --- idle peers -------------------------------------------------------------


async def hold(ws: Any) -> None:
    """Read what the server sends an idle peer, answering application-level pings."""
    try:
        async for message in ws:
            if isinstance(message, str) and '"ping"' in message:
                await ws.send('{"type":"pong"}')
    except Exception:  # noqa: BLE001 - a closed peer is counted by the caller
        pass


async def measure_memory(server: Server, args: argparse.Namespace, tokens: list[str] | None) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    gate = asyncio.Semaphore(50)
    compression = None if args.no_compression else "deflate"
    extensions: collections.Counter[str] = collections.Counter()

    async def join(token: str | None) -> Any:
        async with gate:
            url = f"{server.ws_base}/ws" + (f"?token={token}" if token else "")
            ws = await connect(url, open_timeout=30, max_size=None, compression=compression)
            first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if first.get("type") != "joined":
                raise RuntimeError(f"expected joined, got {first}")
            extensions[ws.response.headers.get("Sec-WebSocket-Extensions", "none")] += 1
            return ws

    await asyncio.sleep(1.0)
    rss_before = tree_rss_kib(server.pid)
    t = time.perf_counter()
    peers: list[Any] = []
    readers: list[asyncio.Task[None]] = []
    result: dict[str, Any] = {"peers": args.peers}
    try:
        async with asyncio.timeout(60):
            joined = await asyncio.gather(*(join(tok) for tok in (tokens or [None] * args.peers)))
        peers = list(joined)
        result["join_all_s"] = time.perf_counter() - t
        readers = [asyncio.create_task(hold(ws)) for ws in peers]
        await asyncio.sleep(1.5)
        rss_with = tree_rss_kib(server.pid)
        # The server's CPU while the peers sit idle: its liveness work (pings) and timers.
        cpu0, t0 = tree_cpu_s(server.pid), time.perf_counter()
        await asyncio.sleep(args.idle_seconds)
        idle_cpu = (tree_cpu_s(server.pid) - cpu0) / (time.perf_counter() - t0)
        still_open = sum(1 for r in readers if not r.done())
        result.update(
            rss_before_kib=rss_before,
            rss_with_peers_kib=rss_with,
            kib_per_peer=(rss_with - rss_before) / len(peers),
            idle_cpu_share=idle_cpu,
            open_after_idle=still_open,
            extensions=dict(extensions),
        )
    finally:

        async def leave(ws: Any, reader: asyncio.Task[None] | None) -> None:
            try:
                await ws.send('{"type":"leave"}')
                if reader is not None:
                    await asyncio.wait_for(reader, 15)
            except Exception:  # noqa: BLE001
                pass
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await asyncio.gather(
                    *(leave(ws, readers[i] if i < len(readers) else None) for i, ws in enumerate(peers))
                )
        for r in readers:
            r.cancel()
    return result


# --- liveness ---------------------------------------------------------------


async def liveness_probe(server: Server, token: str | None, room: str | None, wait: float) -> dict[str, Any]:
    """A peer that reads everything but never answers a ping (nor anything else)."""
    reader, writer = await asyncio.open_connection(HOST, server.port)
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    path = "/ws" + (f"?token={token}" if token else "")
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP_TIMEOUT)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"{server.name}: upgrade refused: {head[:80]!r}")
    out: dict[str, Any] = {"ws_pings": 0, "app_pings": 0, "closed_after_s": None, "close_code": None}
    start = time.monotonic()
    api = Api(server.port, server.key) if server.app == "service" else None

    def peers_in_room() -> int | None:
        assert api is not None
        status, body = api.request("GET", f"/api/v2/sdk/live-sessions/{room}")
        if status != 200 or not isinstance(body, dict):
            return 0
        for name in ("peers", "participants"):
            if isinstance(body.get(name), list):
                return len(body[name])
        data = body.get("data") if isinstance(body.get("data"), dict) else body
        for name in ("peers", "participants"):
            if isinstance(data.get(name), list):
                return len(data[name])
        return None

    async def frames() -> None:
        while True:
            b0, b1 = await reader.readexactly(2)
            size = b1 & 0x7F
            if size == 126:
                size = struct.unpack("!H", await reader.readexactly(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", await reader.readexactly(8))[0]
            payload = await reader.readexactly(size)
            opcode = b0 & 0x0F
            if opcode == 0x9:
                out["ws_pings"] += 1
            elif opcode == 0x1 and b'"ping"' in payload:
                out["app_pings"] += 1
            elif opcode == 0x8:
                out["close_code"] = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return

    task = asyncio.create_task(frames())
    gone_after = None
    try:
        if api is not None:
            out["peers_in_room_at_start"] = await asyncio.to_thread(peers_in_room)
        while time.monotonic() - start < wait:
            await asyncio.sleep(0.25)
            if task.done() and out["closed_after_s"] is None:
                out["closed_after_s"] = round(time.monotonic() - start, 2)
            if api is not None and gone_after is None and await asyncio.to_thread(peers_in_room) == 0:
                gone_after = round(time.monotonic() - start, 2)
            if task.done() and (api is None or gone_after is not None):
                break
    finally:
        task.cancel()
        writer.close()
        if api is not None:
            api.close()
    out["gone_from_room_after_s"] = gone_after
    out["detected"] = out["closed_after_s"] is not None or gone_after is not None
    return out


async def eviction_probe(server: Server, token: str, room: str) -> dict[str, Any]:
    """A reading peer whose session is ended over the REST API: how long until
    its close (4010) arrives. The close is sent by the service's writer task
    while its reader waits in receive()."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    ws = await connect(f"{server.ws_base}/ws?token={token}", open_timeout=10, ping_interval=None)
    out: dict[str, Any] = {"close_code": None, "closed_after_s": None}
    try:
        if json.loads(await asyncio.wait_for(ws.recv(), 10)).get("type") != "joined":
            raise RuntimeError("did not join")
        api = Api(server.port, server.key)
        start = time.monotonic()
        status, _ = await asyncio.to_thread(api.request, "POST", f"/api/v2/sdk/live-sessions/{room}/end", {})
        api.close()
        out["end_status"] = status
        try:
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
        except ConnectionClosed as closed:
            out["closed_after_s"] = round(time.monotonic() - start, 3)
            out["close_code"] = closed.rcvd.code if closed.rcvd else None
        except TimeoutError:
            pass
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(), 2)
    return out


# --- main -------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def prepare(svc: Server, args: argparse.Namespace) -> dict[str, Any]:
    """Rooms and peer tokens for every phase against one service (not timed)."""
    api = Api(svc.port, svc.key)
    try:
        get_room = api.create_room()
        churn_rooms = [api.create_room() for _ in range(args.churn_workers)]
        mem_rooms = [api.create_room() for _ in range(args.peers)]
        live_room = api.create_room()
        end_room = api.create_room()
        return {
            "get_room": get_room,
            "get_token": api.peer_token(get_room),
            "churn_tokens": [
                [api.peer_token(churn_rooms[n % len(churn_rooms)]) for n in range(args.churn_count)]
                for _ in range(args.repeat)
            ],
            "mem_tokens": [api.peer_token(room) for room in mem_rooms],
            "live_room": live_room,
            "live_token": api.peer_token(live_room),
            "end_room": end_room,
            "end_token": api.peer_token(end_room),
        }
    finally:
        api.close()


async def main_async(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        raise SystemExit("servers: `wrk` is not installed (apt-get update && apt-get install -y wrk)")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the peers, here and in the servers started
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    versions = {"uvicorn": None, "granian": None, "hypercorn": None}
    for name in versions:
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[name] = version(name)
    skipped = {s: "not installed" for s in wanted if versions.get(s) is None}
    names = [s for s in wanted if s not in skipped]
    problems: list[str] = []
    notes: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="livesessions-servers-"))
    procs: dict[tuple[str, str], Server] = {}
    held: list[Any] = []
    holders: list[asyncio.Task[None]] = []
    started = time.monotonic()
    try:
        for name in names:
            try:
                for app in ("raw", "service"):
                    proc = procs[name, app] = Server(name, app, args.liveness_interval, tmp)
                    proc.start()
            except Exception as exc:  # noqa: BLE001 - reported, the server skipped
                skipped[name] = f"did not start: {exc}"
                problems.append(f"{name} did not start: {exc}")
                for app in ("raw", "service"):
                    p = procs.pop((name, app), None)
                    if p is not None:
                        p.stop()
        names = [n for n in names if n not in skipped]
        print(f"servers: {', '.join(f'{n} {versions[n]}' for n in names)}; skipped: {skipped or 'none'}", flush=True)

        # Setup per service: a room with one held peer (for the GET), churn rooms
        # and tokens for every round, memory rooms and tokens, a liveness room.
        from websockets.asyncio.client import connect

        setup: dict[str, dict[str, Any]] = {}
        for name in names:
            svc = procs[name, "service"]
            t = time.perf_counter()
            # Made in a thread: the held peers' reads (and ping answers) go on meanwhile.
            setup[name] = await asyncio.to_thread(prepare, svc, args)
            api = Api(svc.port, svc.key)
            get_room = setup[name]["get_room"]
            ws = await connect(f"{svc.ws_base}/ws?token={setup[name]['get_token']}", open_timeout=10)
            if json.loads(await asyncio.wait_for(ws.recv(), 10)).get("type") != "joined":
                raise RuntimeError(f"{name}: the GET room's peer did not join")
            held.append(ws)
            holders.append(asyncio.create_task(hold(ws)))
            status, _ = await asyncio.to_thread(api.request, "GET", f"/api/v2/sdk/live-sessions/{get_room}")
            api.close()
            if status != 200:
                raise RuntimeError(f"{name}: GET live-sessions/{{roomId}} answered {status} before the load")
            print(f"  {name}: setup done in {time.perf_counter() - t:.1f} s (tokens are not timed)", flush=True)

        # Rounds: every server in turn, the order rotated each round.
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            n: {"get_raw": [], "get_service": [], "churn_raw": [], "churn_service": []} for n in names
        }
        load_before = os.getloadavg()
        for rep in range(args.repeat):
            order = names[rep % len(names) :] + names[: rep % len(names)] if names else []
            for name in order:
                print(f"  [{rep + 1}/{args.repeat}] {name}: GET raw, GET service, churn raw, churn service", flush=True)
                for app in ("raw", "service"):
                    try:
                        runs[name][f"get_{app}"].append(
                            await measure_get(procs[name, app], args, setup[name]["get_room"])
                        )
                    except Exception as exc:  # noqa: BLE001
                        problems.append(f"{name}/{app} GET: {exc}")
                    await asyncio.sleep(0.3)
                for app in ("raw", "service"):
                    tokens = setup[name]["churn_tokens"][rep] if app == "service" else None
                    try:
                        runs[name][f"churn_{app}"].append(await measure_churn(procs[name, app], args, tokens))
                    except Exception as exc:  # noqa: BLE001
                        problems.append(f"{name}/{app} churn: {exc}")
                    await asyncio.sleep(0.3)

        memory: dict[str, dict[str, Any]] = {n: {} for n in names}
        for name in names:
            for app in ("raw", "service"):
                print(f"  {name}/{app}: {args.peers} idle peers", flush=True)
                try:
                    tokens = setup[name]["mem_tokens"] if app == "service" else None
                    memory[name][app] = await measure_memory(procs[name, app], args, tokens)
                except Exception as exc:  # noqa: BLE001
                    problems.append(f"{name}/{app} memory: {type(exc).__name__}: {exc}")
                    memory[name][app] = {"error": f"{type(exc).__name__}: {exc}"}
        load_after = os.getloadavg()

        print(f"  liveness probes (all at once, up to {args.liveness_wait:g} s)", flush=True)
        probe_keys = [(n, a) for n in names for a in ("raw", "service")]
        probes = await asyncio.gather(
            *(
                liveness_probe(
                    procs[n, a],
                    setup[n]["live_token"] if a == "service" else None,
                    setup[n]["live_room"] if a == "service" else None,
                    args.liveness_wait,
                )
                for n, a in probe_keys
            ),
            return_exceptions=True,
        )
        liveness: dict[str, dict[str, Any]] = {n: {} for n in names}
        for (n, a), probe in zip(probe_keys, probes, strict=True):
            if isinstance(probe, BaseException):
                problems.append(f"{n}/{a} liveness probe: {type(probe).__name__}: {probe}")
                liveness[n][a] = {"error": str(probe)}
            else:
                liveness[n][a] = probe

        evictions: dict[str, Any] = {}
        for name in names:
            try:
                evictions[name] = await eviction_probe(
                    procs[name, "service"], setup[name]["end_token"], setup[name]["end_room"]
                )
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{name} eviction probe: {type(exc).__name__}: {exc}")
                evictions[name] = {"error": str(exc)}

        for proc in procs.values():
            if not proc.alive():
                problems.append(f"{proc.name} exited early ({proc.process.returncode if proc.process else '?'})")
            lines = proc.log_problems()
            if lines:
                problems.append(f"{proc.name}: {len(lines)} error lines in its log, e.g. {lines[0][:200]}")

        # Summary.
        summary: dict[str, dict[str, Any]] = {}
        for name in names:
            r = runs[name]
            row = {
                "get_raw_rps": median([x["rps"] for x in r["get_raw"]]),
                "get_service_rps": median([x["rps"] for x in r["get_service"]]),
                "churn_raw_cps": median([x["cycles_per_s"] for x in r["churn_raw"]]),
                "churn_service_cps": median([x["cycles_per_s"] for x in r["churn_service"]]),
                "kib_per_peer_raw": memory[name].get("raw", {}).get("kib_per_peer"),
                "kib_per_peer_service": memory[name].get("service", {}).get("kib_per_peer"),
                "idle_cpu_raw": memory[name].get("raw", {}).get("idle_cpu_share"),
                "idle_cpu_service": memory[name].get("service", {}).get("idle_cpu_share"),
                "dead_peer_raw_s": liveness[name].get("raw", {}).get("closed_after_s"),
                "dead_peer_service_s": liveness[name].get("service", {}).get("gone_from_room_after_s"),
                "ws_pings_seen_service": liveness[name].get("service", {}).get("ws_pings"),
                "session_end_close_s": evictions.get(name, {}).get("closed_after_s"),
                "session_end_close_code": evictions.get(name, {}).get("close_code"),
            }
            row["get_ratio"] = ratio(row["get_service_rps"], row["get_raw_rps"])
            row["churn_ratio"] = ratio(row["churn_service_cps"], row["churn_raw_cps"])
            for kind in ("get_raw", "get_service", "churn_raw", "churn_service"):
                key = "rps" if kind.startswith("get") else "cycles_per_s"
                row[f"{kind}_all"] = [round(x[key]) for x in r[kind]]
                for x in r[kind]:
                    if x.get("socket_errors") or x.get("errors_status") or x.get("failures"):
                        problems.append(f"{name} {kind}: errors {x.get('socket_errors')}/{x.get('errors_status')}"
                                        f"/{x.get('failures')}")  # fmt: skip
            summary[name] = row

        header = (
            f"{'server':<10} {'GET raw':>8} {'GET svc':>8} {'ratio':>5} | {'churn raw':>9} {'churn svc':>9} "
            f"{'ratio':>5} | {'KiB/peer raw':>12} {'svc':>6} | {'idle CPU raw':>12} {'svc':>5} | "
            f"{'dead peer out raw':>17} {'svc':>5}"
        )
        print()
        print(
            f"medians of {args.repeat} round(s); GET: wrk -t{args.threads} -c{args.connections} -d{args.duration}s; "
            f"churn: {args.churn_workers} Python clients, {args.churn_duration:g} s; {args.peers} idle peers "
            f"(client permessage-deflate {'off' if args.no_compression else 'on'}); pings every "
            f"{args.liveness_interval:g} s where the server can"
        )
        print(header)
        print("-" * len(header))
        for name, row in summary.items():
            idle_raw = None if row["idle_cpu_raw"] is None else row["idle_cpu_raw"] * 100
            idle_svc = None if row["idle_cpu_service"] is None else row["idle_cpu_service"] * 100
            print(
                f"{name:<10} {fmt(row['get_raw_rps']):>8} {fmt(row['get_service_rps']):>8} "
                f"{fmt(row['get_ratio'], '.2f'):>5} | {fmt(row['churn_raw_cps']):>9} "
                f"{fmt(row['churn_service_cps']):>9} {fmt(row['churn_ratio'], '.2f'):>5} | "
                f"{fmt(row['kib_per_peer_raw'], '.1f'):>12} {fmt(row['kib_per_peer_service'], '.1f'):>6} | "
                f"{fmt(idle_raw, '.1f') + '%':>12} {fmt(idle_svc, '.0f') + '%':>5} | "
                f"{fmt(row['dead_peer_raw_s'], '.1f') + ' s':>17} {fmt(row['dead_peer_service_s'], '.1f') + ' s':>5}"
            )
        print()
        for name, row in summary.items():
            print(
                f"{name}: all runs GET raw {row['get_raw_all']}, GET svc {row['get_service_all']}, "
                f"churn raw {row['churn_raw_all']}, churn svc {row['churn_service_all']}"
            )
            for app in ("raw", "service"):
                m, lv = memory[name].get(app, {}), liveness[name].get(app, {})
                print(
                    f"  {app:<7} extensions {m.get('extensions')}, open after idle {m.get('open_after_idle')}"
                    f"/{args.peers}; liveness: ws pings {lv.get('ws_pings')}, app pings {lv.get('app_pings')}, "
                    f"closed after {lv.get('closed_after_s')} s (code {lv.get('close_code')}), "
                    f"gone from room after {lv.get('gone_from_room_after_s')} s"
                )
            print(f"  session ended over REST: peer's close {evictions.get(name)}")
        print(
            f"load average (1 min) before/after the rounds: {load_before[0]:.2f} / {load_after[0]:.2f} on "
            f"{os.cpu_count()} CPUs; total {time.monotonic() - started:.0f} s"
        )
        for p in problems:
            print(f"PROBLEM: {p}")
        path = write_json(
            args.output,
            {
                "benchmark": "servers",
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": machine_info(),
                "versions": versions,
                "skipped": skipped,
                "settings": dict(vars(args)),
                "commands": {f"{n}/{a}": [c.replace(str(tmp), "<tmp>") for c in procs[n, a].cmd] for n, a in procs},
                "loadavg_before": list(load_before),
                "loadavg_after": list(load_after),
                "summary": summary,
                "runs": runs,
                "memory": memory,
                "liveness": liveness,
                "evictions": evictions,
                "problems": problems,
                "notes": notes,
                "total_s": time.monotonic() - started,
            },
        )
        print(f"wrote {path}")
        return 1 if problems else 0
    finally:
        for ws in held:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
        for task in holders:
            task.cancel()
        for proc in procs.values():
            proc.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated (default: all three)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of GET + churn, medians reported (default 2)")
    parser.add_argument("--duration", type=int, default=3, help="seconds of wrk per GET run (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    parser.add_argument("--churn-duration", type=float, default=3.0, help="seconds per churn run (default 3)")
    parser.add_argument("--churn-workers", type=int, default=16, help="concurrent churn clients (default 16)")
    parser.add_argument("--churn-count", type=int, default=1000, help="cap on cycles per churn run (default 1000)")
    parser.add_argument("--peers", type=int, default=1000, help="idle peers for the memory figure (default 1000)")
    parser.add_argument("--idle-seconds", type=float, default=2.0, help="CPU sampled with the peers idle (default 2)")
    parser.add_argument("--no-compression", action="store_true", help="peers do not offer permessage-deflate")
    parser.add_argument(
        "--liveness-interval", type=float, default=1.0, help="WebSocket ping interval and timeout, s (default 1)"
    )
    parser.add_argument("--liveness-wait", type=float, default=6.0, help="how long a probe waits (default 6)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    parser.add_argument(
        "--output", default="servers.json", help="file under benchmarks/results/ (default servers.json)"
    )
    args = parser.parse_args()
    if not args.output.startswith("servers"):
        parser.error("--output must start with 'servers'")
    if min(args.repeat, args.duration, args.churn_workers, args.churn_count, args.peers) < 1:
        parser.error("--repeat, --duration, --churn-workers, --churn-count and --peers must be at least 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
