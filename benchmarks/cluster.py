"""Scale-out mode next to the embedded mode, in one run: WebSocket churn and
hot-GET throughput with 1, 2 and 3 nodes, and how long a SIGKILLed node's
peers stay in a surviving node's live answer.

    .venv/bin/python benchmarks/cluster.py [--repeat 1] [--count 3000] [--duration 5] [--rooms 20]
                                           [--kill-runs 5] [--short-lease 2] [--skip-failover]
                                           [--postgres-url postgresql://postgres@127.0.0.1:5432/postgres]

What it does (loopback only, stops by itself):
  1. for each mode -- embedded (one process, SQLite), then scale-out with 1, 2
     and 3 nodes (a fresh PostgreSQL database made here and dropped at the end,
     and a private redis-server on a free port, nothing on disk) -- starts the
     nodes with the same flags as the other benchmarks (rate limit off, no
     per-client caps), then:
       * churn: as ws_churn.py, --workers workers join with a fresh token, wait
         for `joined`, leave and wait for the close; worker i uses node i % N
         directly (no load balancer, so it is not the bottleneck); reports
         cycles (join + leave) per second and checks nothing leaked;
       * hot GETs: holds one peer in each of --rooms rooms (spread over the
         nodes), then runs one wrk per node at once, -c64 split between them,
         on GET /api/v2/sdk/live-sessions; reports the summed req/s;
     with --repeat R the modes are run R times, interleaved, and each figure
     is the median; a mode measured while other processes (someone's tests
     on a shared machine) used more than --max-others of a core is measured
     again, up to --retries times, and the least disturbed try is kept;
  2. failover: two scale-out nodes; peers on both (one room shared, one only on
     the victim); SIGKILL one node and poll the survivor's GET live-sessions
     every 20 ms until the victim's peers are gone; --kill-runs times with the
     default --node-lease and with --short-lease; reports the median;
  3. prints each figure with its ratio to the embedded mode, and writes
     benchmarks/results/cluster.json.

PostgreSQL must answer at --postgres-url (an admin URL: databases are made in
it) and `redis-server` and `wrk` must be installed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
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
from hot_gets import drain, hold_peers, need_wrk, run_wrk
from ws_churn import Stats, worker

DEFAULT_POSTGRES = os.environ.get("LIVESESSIONS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
POLL_S = 0.02


# --- PostgreSQL and Redis ------------------------------------------------------


async def _admin(admin_url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


class Databases:
    """Fresh databases in the PostgreSQL at `admin_url`, dropped by `drop_all`."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.names: list[str] = []

    async def new(self) -> str:
        name = f"livesessions_bench_{os.urandom(6).hex()}"
        await _admin(self.admin_url, f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return urlunsplit(urlsplit(self.admin_url)._replace(path="/" + name))

    async def drop_all(self) -> None:
        for name in self.names:
            try:
                await _admin(self.admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                print(f"could not drop the database {name}: {exc}", file=sys.stderr)
        self.names.clear()


class RedisProcess:
    """A private redis-server on a free loopback port, nothing on disk."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("cluster: redis-server is not installed (apt-get install -y redis-server)")
        self.dir = tempfile.mkdtemp(prefix="livesessions-bench-redis-")
        self.port = free_port()
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        from redis import Redis

        client = Redis(host=HOST, port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- what else runs on the machine -------------------------------------------


class ForeignCpu:
    """CPU used meanwhile by processes this benchmark did not start, sampled
    every second from /proc: on a shared machine someone's test run skews the
    figures, and this says by how much. Its own processes are its descendants
    and the PostgreSQL backends of its databases (livesessions_bench_*)."""

    def __init__(self) -> None:
        self.foreign_s = 0.0
        self.by_name: collections.Counter[str] = collections.Counter()
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="foreign-cpu", daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> ForeignCpu:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def total(self) -> float:
        """Foreign CPU seconds so far; the difference of two readings is a window's."""
        with self._lock:
            return self.foreign_s

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def _sample(self) -> None:
        parents: dict[int, int] = {}
        cpu: dict[int, float] = {}
        names: dict[int, str] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            try:
                text = Path(f"/proc/{pid}/stat").read_text()
                names[pid] = text[text.index("(") + 1 : text.rindex(")")]
            except (OSError, ValueError):
                continue
            fields = text[text.rindex(")") + 2 :].split()
            parents[pid] = int(fields[1])
            cpu[pid] = (int(fields[11]) + int(fields[12])) / self._tick
        own = {os.getpid()}
        for pid in cpu:
            chain, seen = pid, 0
            while chain > 1 and seen < 64:
                if chain in own:
                    own.add(pid)
                    break
                chain, seen = parents.get(chain, 0), seen + 1
        foreign = 0.0
        by_name: collections.Counter[str] = collections.Counter()
        for pid, used in cpu.items():
            delta = max(0.0, used - self._last.get(pid, 0.0))
            if pid in own or not delta:
                continue
            name = names.get(pid, "?")
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                cmdline = name
            if name == "postgres" and "livesessions_bench_" in cmdline:
                continue
            foreign += delta
            by_name[cmdline[:60] or name] += delta
        with self._lock:
            if self._last:  # the first sample only sets the baseline
                self.foreign_s += foreign
                self.by_name.update(by_name)
            self._last = cpu


# --- one mode: its nodes -------------------------------------------------------


class Mode:
    """The nodes of one mode: embedded (one process, SQLite) or scale-out with
    n nodes on one fresh database and one private Redis."""

    def __init__(self, name: str, nodes: int, scale_out: bool) -> None:
        self.name, self.n, self.scale_out = name, nodes, scale_out
        self.services: list[Service] = []
        self.redis: RedisProcess | None = None
        self.database_url: str | None = None

    async def start(self, databases: Databases, extra: list[str] | None = None) -> Mode:
        extra = list(extra or [])
        if self.scale_out:
            self.redis = RedisProcess()
            self.database_url = await databases.new()
            extra += ["--database-url", self.database_url, "--redis-url", self.redis.url]
        # Started one after the other: the first migrates the database.
        for _ in range(self.n):
            self.services.append(Service(rate_limit=0, extra=extra).start())
        return self

    def add_node(self, extra: list[str] | None = None) -> Service:
        assert self.scale_out and self.redis is not None and self.database_url is not None
        flags = ["--database-url", self.database_url, "--redis-url", self.redis.url, *(extra or [])]
        service = Service(rate_limit=0, extra=flags).start()
        self.services.append(service)
        return service

    def create_key(self) -> str:
        where = (
            ["--database-url", self.database_url]
            if self.database_url
            else ["--data-dir", str(self.services[0].data_dir)]
        )
        out = subprocess.run(
            [str(LIVESESSIONS), "keys", "create", "--wallet", new_wallet(), *where, "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out)["apiKey"]

    def cpu(self) -> float:
        total = 0.0
        for service in self.services:
            if service.process is not None and service.process.poll() is None:
                total += cpu_seconds(service.pid)
        return total

    def redis_cpu(self) -> float:
        return cpu_seconds(self.redis.process.pid) if self.redis is not None else 0.0

    def log_problems(self) -> list[str]:
        return [line for service in self.services for line in service.log_problems()]

    def stop(self) -> None:
        for service in self.services:
            service.stop()
        self.services.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None


# --- the measurements ----------------------------------------------------------


async def churn(mode: Mode, api: Api, args: argparse.Namespace) -> dict[str, Any]:
    rooms = [api.create_room() for _ in range(args.workers)]
    queues = [collections.deque[str]() for _ in range(args.workers)]
    for n in range(args.count):
        queues[n % args.workers].append(api.peer_token(rooms[n % args.workers]))
    stats = Stats()
    cpu0, redis0 = mode.cpu(), mode.redis_cpu()
    start = time.perf_counter()
    deadline = start + args.duration
    await asyncio.gather(
        *(
            worker(mode.services[i % mode.n].ws_base, queue, stats, deadline, "deflate")
            for i, queue in enumerate(queues)
        )
    )
    elapsed = time.perf_counter() - start
    cycles = len(stats.join_ms)
    await asyncio.sleep(1.0)
    leaked = {service.port: len(Api(service.port, api.key).live_sessions()) for service in mode.services}
    return {
        "cycles": cycles,
        "elapsed_s": elapsed,
        "cycles_per_s": cycles / elapsed,
        "join_p50_ms": statistics.median(stats.join_ms) if stats.join_ms else None,
        "server_cpu_share": (mode.cpu() - cpu0) / elapsed,
        "redis_cpu_share": (mode.redis_cpu() - redis0) / elapsed,
        "failures": dict(stats.failures),
        "close_codes": dict(stats.close_codes),
        "live_rooms_1s_later": leaked,
    }


async def hot_gets(mode: Mode, api: Api, wrk: str, args: argparse.Namespace) -> dict[str, Any]:
    rooms = [api.create_room() for _ in range(args.rooms)]
    peers: list[Any] = []
    for i, room in enumerate(rooms):
        peers += await hold_peers(mode.services[i % mode.n].ws_base, [api.peer_token(room)])
    drainer = asyncio.create_task(drain(peers))
    try:
        for service in mode.services:
            live = Api(service.port, api.key).live_sessions()
            if len(live) != args.rooms:
                raise RuntimeError(f"node :{service.port} lists {len(live)} live rooms, expected {args.rooms}")
        shares = [args.connections // mode.n + (1 if i < args.connections % mode.n else 0) for i in range(mode.n)]
        cpu0, redis0 = mode.cpu(), mode.redis_cpu()
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                run_wrk(
                    wrk,
                    f"{service.base}/api/v2/sdk/live-sessions",
                    argparse.Namespace(
                        threads=args.threads if mode.n == 1 else 1, connections=share, duration=args.duration
                    ),
                    {"x-api-key": api.key},
                )
                for service, share in zip(mode.services, shares, strict=True)
            )
        )
        elapsed = time.perf_counter() - started
        after = [len(Api(service.port, api.key).live_sessions()) for service in mode.services]
        return {
            "rps": sum(r["rps"] for r in results),
            "rps_per_node": [r["rps"] for r in results],
            "p99_ms": max(r["p99_us"] for r in results) / 1000,
            "non_2xx": sum(r["non_2xx"] for r in results),
            "socket_errors": sum(r["socket_errors"] for r in results),
            "server_cpu_share": (mode.cpu() - cpu0) / elapsed,
            "redis_cpu_share": (mode.redis_cpu() - redis0) / elapsed,
            "live_rooms_after": after,
        }
    finally:
        for ws in peers:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:  # noqa: BLE001
                pass
        drainer.cancel()


async def measure_mode(
    mode: Mode, databases: Databases, wrk: str, args: argparse.Namespace, others: ForeignCpu
) -> dict[str, Any]:
    await mode.start(databases, args.serve_args.split())
    try:
        api = Api(mode.services[0].port, mode.create_key())
        t0, foreign0 = time.perf_counter(), others.total()
        result: dict[str, Any] = {"churn": await churn(mode, api, args)}
        await asyncio.sleep(0.5)
        result["hot_gets"] = await hot_gets(mode, api, wrk, args)
        result["foreign_cpu_share"] = (others.total() - foreign0) / (time.perf_counter() - t0)
        result["log_problems"] = mode.log_problems()[:5]
        api.close()
        return result
    finally:
        mode.stop()


async def _connect(ws_base: str, token: str) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(f"{ws_base}/ws?token={token}", open_timeout=10, ping_interval=None)
    first = json.loads(await asyncio.wait_for(ws.recv(), 10))
    if first.get("type") != "joined":
        raise RuntimeError(f"expected joined, got {first}")
    return ws


async def failover(databases: Databases, lease: float | None, runs: int) -> dict[str, Any]:
    """Two nodes; SIGKILL the second with peers on it, `runs` times (a new
    second node each time); how long the survivor still counts them."""
    extra = [] if lease is None else ["--node-lease", str(lease)]
    mode = await Mode(f"failover lease={lease}", 1, scale_out=True).start(databases, extra)
    times: list[float] = []
    peer_left: list[float] = []
    try:
        survivor = mode.services[0]
        api = Api(survivor.port, mode.create_key())
        for _ in range(runs):
            victim = mode.add_node(extra)
            shared, alone = api.create_room(), api.create_room()
            watcher = await _connect(survivor.ws_base, api.peer_token(shared))
            doomed = [await _connect(victim.ws_base, api.peer_token(shared)) for _ in range(3)]
            doomed += [await _connect(victim.ws_base, api.peer_token(alone)) for _ in range(2)]
            expected_before = {shared: 4, alone: 2}
            live = {s["roomId"]: s["currentPeerCount"] for s in api.live_sessions()}
            if live != expected_before:
                raise RuntimeError(f"before the kill the survivor answered {live}, expected {expected_before}")
            left: list[float] = []

            async def listen(ws: Any, left: list[float] = left) -> None:
                async for message in ws:
                    if '"peer-left"' in message:
                        left.append(time.perf_counter())

            listener = asyncio.create_task(listen(watcher))
            os.kill(victim.pid, signal.SIGKILL)
            killed = time.perf_counter()
            assert victim.process is not None
            victim.process.wait()
            gone = None
            while time.perf_counter() - killed < 60:
                live = {s["roomId"]: s["currentPeerCount"] for s in api.live_sessions()}
                if live == {shared: 1}:
                    gone = time.perf_counter() - killed
                    break
                await asyncio.sleep(POLL_S)
            if gone is None:
                raise RuntimeError(f"the killed node's peers were still counted after 60 s: {live}")
            times.append(gone)
            await asyncio.sleep(0.3)
            if len(left) >= 3:
                peer_left.append(left[2] - killed)
            listener.cancel()
            for ws in [watcher, *doomed]:
                try:
                    await asyncio.wait_for(ws.close(), 1)
                except Exception:  # noqa: BLE001 - the victim's are dead already
                    pass
            mode.services.remove(victim)
            victim.stop()
        api.close()
        return {
            "node_lease_s": lease,
            "runs_s": times,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "max_s": max(times),
            "third_peer_left_median_s": statistics.median(peer_left) if peer_left else None,
            "log_problems": mode.log_problems()[:5],
        }
    finally:
        mode.stop()


# --- the run ---------------------------------------------------------------------


def median_of(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(value)
    return statistics.median(values)


def default_lease() -> float:
    from livesessions.config import Settings

    return float(Settings.__dataclass_fields__["node_lease"].default)


async def main_async(args: argparse.Namespace) -> int:
    wrk = need_wrk()
    databases = Databases(args.postgres_url)
    try:
        await _admin(args.postgres_url, "SELECT 1")
    except Exception as exc:  # noqa: BLE001 - one line for the person running it
        raise SystemExit(f"cluster: PostgreSQL does not answer at {args.postgres_url}: {exc}") from None
    modes = [("embedded (SQLite)", 1, False), ("scale-out, 1 node", 1, True)]
    modes += [(f"scale-out, {n} nodes", n, True) for n in (2, 3)]
    cpus = os.cpu_count()
    print(
        f"{len(modes)} modes x {args.repeat}; churn: {args.workers} workers, {args.count} cycles or "
        f"{args.duration} s; hot GETs: wrk -c{args.connections} split over the nodes, {args.duration} s, "
        f"{args.rooms} live rooms; this machine has {cpus} CPUs, shared by every node, PostgreSQL, Redis "
        "and the clients",
        flush=True,
    )
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in modes}
    failovers: list[dict[str, Any]] = []
    with ForeignCpu() as others:
        try:
            for rep in range(args.repeat):
                for name, nodes, scale_out in modes:
                    print(f"  [{rep + 1}/{args.repeat}] {name} ...", flush=True)
                    tries: list[dict[str, Any]] = []
                    while True:
                        run = await measure_mode(Mode(name, nodes, scale_out), databases, wrk, args, others)
                        tries.append(run)
                        print(
                            f"      churn {run['churn']['cycles_per_s']:.0f} cycles/s, GETs "
                            f"{run['hot_gets']['rps']:.0f} req/s; other processes used "
                            f"{run['foreign_cpu_share'] * 100:.0f}% of a core meanwhile",
                            flush=True,
                        )
                        await asyncio.sleep(1.0)
                        if run["foreign_cpu_share"] <= args.max_others or len(tries) > args.retries:
                            break
                        print("      measuring it again: the machine was busy with something else", flush=True)
                    # The try least disturbed by other processes stands for this round.
                    chosen = min(tries, key=lambda r: r["foreign_cpu_share"])
                    chosen["tries"] = len(tries)
                    runs[name].append(chosen)
            if not args.skip_failover:
                for lease in (None, args.short_lease):
                    label = f"--node-lease {lease:g}" if lease is not None else f"default ({default_lease():g} s)"
                    print(f"  failover, {label}: {args.kill_runs} kills ...", flush=True)
                    result = await failover(databases, lease, args.kill_runs)
                    result["label"] = label
                    failovers.append(result)
        finally:
            await databases.drop_all()
    load_after = os.getloadavg()

    summary = []
    for name, _, _ in modes:
        summary.append(
            {
                "mode": name,
                "churn_cycles_per_s": median_of(runs[name], "churn", "cycles_per_s"),
                "churn_server_cpu_share": median_of(runs[name], "churn", "server_cpu_share"),
                "get_rps": median_of(runs[name], "hot_gets", "rps"),
                "get_p99_ms": median_of(runs[name], "hot_gets", "p99_ms"),
                "get_server_cpu_share": median_of(runs[name], "hot_gets", "server_cpu_share"),
                "redis_cpu_share": median_of(runs[name], "hot_gets", "redis_cpu_share"),
                "foreign_cpu_share": median_of(runs[name], "foreign_cpu_share"),
            }
        )
    base = summary[0]
    for row in summary:
        row["churn_vs_embedded"] = row["churn_cycles_per_s"] / base["churn_cycles_per_s"]
        row["get_vs_embedded"] = row["get_rps"] / base["get_rps"]

    print()
    header = (
        f"{'mode':<22} {'cycles/s':>9} {'vs emb':>7} {'srv CPU':>8}   {'GET req/s':>10} {'vs emb':>7} "
        f"{'p99 ms':>7} {'srv CPU':>8} {'redis':>6} {'others':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in summary:
        print(
            f"{row['mode']:<22} {row['churn_cycles_per_s']:>9.0f} {row['churn_vs_embedded']:>7.2f} "
            f"{row['churn_server_cpu_share'] * 100:>7.0f}%   {row['get_rps']:>10.0f} {row['get_vs_embedded']:>7.2f} "
            f"{row['get_p99_ms']:>7.1f} {row['get_server_cpu_share'] * 100:>7.0f}% "
            f"{row['redis_cpu_share'] * 100:>5.0f}% {row['foreign_cpu_share'] * 100:>6.0f}%"
        )
    print(
        f"(medians of {args.repeat}; srv CPU: all nodes together, in % of one core; redis: the redis-server "
        f"during the GETs; others: processes this benchmark did not start, during the churn and GETs; "
        f"{cpus} CPUs in all, so more nodes share the same cores)"
    )
    for f in failovers:
        runs_text = ", ".join(f"{t:.2f}" for t in f["runs_s"])
        print(
            f"killed node's peers gone from the survivor's live answer, {f['label']}: median {f['median_s']:.2f} s "
            f"(min {f['min_s']:.2f}, max {f['max_s']:.2f}; runs {runs_text})"
            + (
                f"; peer-left reached a survivor's peer after {f['third_peer_left_median_s']:.2f} s"
                if f["third_peer_left_median_s"] is not None
                else ""
            )
        )
    print(f"load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {cpus} CPUs")
    top = ", ".join(f"{name.strip()} {seconds:.0f} s" for name, seconds in others.by_name.most_common(4))
    print(f"CPU time of other processes over the whole run: {others.total():.0f} s, most by: {top}")

    problems = []
    for name, _, _ in modes:
        for run in runs[name]:
            c, g = run["churn"], run["hot_gets"]
            if c["failures"]:
                problems.append(f"{name}: churn failures {c['failures']}")
            if any(c["live_rooms_1s_later"].values()):
                problems.append(f"{name}: leaked live rooms after the churn {c['live_rooms_1s_later']}")
            if g["non_2xx"] or g["socket_errors"]:
                problems.append(f"{name}: GETs had {g['non_2xx']} non-2xx, {g['socket_errors']} socket errors")
            if any(n != args.rooms for n in g["live_rooms_after"]):
                problems.append(f"{name}: live rooms after the GETs {g['live_rooms_after']}, expected {args.rooms}")
            if run["log_problems"]:
                problems.append(f"{name}: server log error lines, e.g. {run['log_problems'][0]}")
    for f in failovers:
        if f["log_problems"]:
            # A killed node's peers and a dead node are logged by the survivor as warnings, not errors.
            problems.append(f"failover {f['label']}: server log error lines, e.g. {f['log_problems'][0]}")
    for p in problems:
        print(f"PROBLEM: {p}")

    path = write_json(
        args.output,
        {
            "benchmark": "cluster",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(),
            "settings": {k: v for k, v in vars(args).items() if k != "postgres_url"},
            "loadavg_before": list(load_before),
            "loadavg_after": list(load_after),
            "summary": summary,
            "runs": runs,
            "failover": failovers,
            "other_processes_cpu_s": dict(others.by_name.most_common(20)),
            "problems": problems,
        },
    )
    print(f"wrote {path}")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1, help="run every mode this many times; medians (default 1)")
    parser.add_argument("--workers", type=int, default=16, help="churning peers at once (default 16)")
    parser.add_argument("--count", type=int, default=3000, help="join+leave cycles per mode at most (default 3000)")
    parser.add_argument(
        "--duration", type=int, default=5, help="seconds of churn at most, and of wrk, per mode (default 5)"
    )
    parser.add_argument("--rooms", type=int, default=20, help="live rooms during the GETs (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads with one node (default 2; 1 per wrk else)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections in all (default 64)")
    parser.add_argument("--kill-runs", type=int, default=5, help="node kills per lease setting (default 5)")
    parser.add_argument("--short-lease", type=float, default=2.0, help="the shorter --node-lease tried (default 2)")
    parser.add_argument("--skip-failover", action="store_true", help="measure throughput only")
    parser.add_argument(
        "--max-others",
        type=float,
        default=0.2,
        help="a mode measured while other processes used more than this share of a core is measured again "
        "(default 0.2)",
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="at most this many more tries per mode and round (default 2)"
    )
    parser.add_argument(
        "--serve-args",
        default="",
        help='more `livesessions serve` flags for every node of the throughput runs, e.g. "--access-log yes"',
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES,
        help="an admin URL of the PostgreSQL to make databases in (default $LIVESESSIONS_BENCH_POSTGRES_URL "
        "or postgresql://postgres@127.0.0.1:5432/postgres)",
    )
    parser.add_argument("--output", default="cluster.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    if min(args.repeat, args.workers, args.count, args.duration, args.rooms, args.kill_runs) < 1:
        parser.error("counts and durations must be at least 1")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
