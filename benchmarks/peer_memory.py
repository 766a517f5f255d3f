"""Memory per idle WebSocket peer, next to the raw floor, and memory given back
after the peers leave (issue 12, target 2: per idle peer <= 1.5 x the floor).

    .venv/bin/python benchmarks/peer_memory.py [--peers 1000] [--rounds 3] [--settle 13]
                                              [--no-compression] [--ws-compression] [--floor-deflate]
                                              [--output peer_memory.json]

Server memory is the resident set size (VmRSS in /proc/<pid>/status). One
run measures two servers, one after the other, with the same client:

  (a) the floor: benchmarks/raw_ws.py, a raw ASGI app that accepts a
      WebSocket, sends one small message and then waits, served by uvicorn
      with the service's own transport (livesessions.cli._server_config: the
      service's protocol classes, ping interval, frame limit), compression
      OFF (with --floor-deflate it is also measured with compression on);
  (b) the service: `livesessions serve` (free port, temporary data dir, rate
      limit off), with --peers rooms made first, then --peers peers, one per
      room. Add --ws-compression to start it with `--ws-compression yes`.

Each client peer behaves like a browser: it offers permessage-deflate
(`permessage-deflate; client_max_window_bits`, what Chrome sends; not with
--no-compression) and the run reports what each server answered in
Sec-WebSocket-Extensions. Peers are Python asyncio `websockets` clients, at
most 50 connecting at once; the client raises its own open-files limit.

For each server, --rounds rounds of: RSS before; all peers connect and get
their first message; 1.5 s later RSS "with peers"; every peer sends
{"type":"leave"} and waits for the close; RSS 1.5 s later and after --settle
seconds (the service keeps an emptied room's session for its 10 s grace
period, so the default settle is 13 s; the floor gets 3 s). Reported:

  KiB per peer   = (RSS with peers - RSS before) / peers, first round;
  ratio          = service / floor, "target met" when <= 1.5;
  returned       = (RSS with peers - RSS settled) as MiB and as a fraction of
                   (RSS with peers - RSS before the first round); the rounds
                   show whether RSS keeps climbing (a leak) or reuses what it
                   kept (a high-water mark).

Also times GET /api/v2/sdk/live-sessions with all rooms live. Exits 1 with
"PROBLEM: ..." on failed joins, unexpected close codes, rooms still live after
every peer left, or error lines in a server log; a missed target is not one.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    HOST,
    Api,
    Service,
    free_port,
    log_problems,
    machine_info,
    memory_kib,
    rss_kib,
    stop_process,
    wait_http_ok,
    write_json,
)

TARGET_RATIO = 1.5
GATE = 50  # connections opening at once
FLOOR_SETTLE = 3.0


class Floor:
    """benchmarks/raw_ws.py on a free loopback port (its peers wait until they leave)."""

    def __init__(self, compression: bool) -> None:
        self.port = free_port()
        self.compression = compression
        self.tmp = Path(tempfile.mkdtemp(prefix="livesessions-floor-"))
        self.log_path = self.tmp / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ws_base = f"ws://{HOST}:{self.port}"

    def start(self) -> Floor:
        args = [sys.executable, str(Path(__file__).resolve().parent / "raw_ws.py"), "--port", str(self.port)]
        if self.compression:
            args.append("--ws-compression")
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        wait_http_ok(self.port, "/", self.process)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log_problems(self) -> list[str]:
        return log_problems(self.log_path)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None
        if getattr(self, "_log", None):
            self._log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class Peers:
    """A crowd of idle client peers: connected, first message read, then only
    answering pings (the websockets client does that by itself)."""

    def __init__(self, compression: str | None) -> None:
        self.compression = compression
        self.sockets: list[Any] = []
        self.readers: list[asyncio.Task[None]] = []
        self.negotiated: collections.Counter[str] = collections.Counter()
        self.failures: collections.Counter[str] = collections.Counter()
        self.close_codes: collections.Counter[str] = collections.Counter()

    async def _join(self, url: str, gate: asyncio.Semaphore) -> Any:
        from websockets.asyncio.client import connect

        async with gate:
            ws = await connect(url, open_timeout=30, max_size=None, compression=self.compression, ping_interval=None)
            try:
                first = json.loads(await asyncio.wait_for(ws.recv(), 30))
            except BaseException:
                await ws.close()
                raise
            extensions = ws.response.headers.get("Sec-WebSocket-Extensions") or "(none)"
            self.negotiated[extensions] += 1
            if first.get("type") != "joined":
                await ws.close()
                raise RuntimeError(f"expected joined, got {first.get('type')!r}")
            return ws

    async def join(self, urls: list[str]) -> float:
        gate = asyncio.Semaphore(GATE)
        t = time.perf_counter()
        results = await asyncio.gather(*(self._join(url, gate) for url in urls), return_exceptions=True)
        elapsed = time.perf_counter() - t
        for result in results:
            if isinstance(result, BaseException):
                self.failures[f"join: {type(result).__name__}: {str(result)[:80]}"] += 1
            else:
                self.sockets.append(result)
        self.readers = [asyncio.create_task(_drain(ws)) for ws in self.sockets]
        return elapsed

    async def leave(self) -> float:
        t = time.perf_counter()
        results = await asyncio.gather(
            *(self._leave(ws, r) for ws, r in zip(self.sockets, self.readers, strict=True)), return_exceptions=True
        )
        elapsed = time.perf_counter() - t
        for result in results:
            if isinstance(result, BaseException):
                self.failures[f"leave: {type(result).__name__}: {str(result)[:80]}"] += 1
        self.sockets, self.readers = [], []
        return elapsed

    async def _leave(self, ws: Any, reader: asyncio.Task[None]) -> None:
        await ws.send('{"type":"leave"}')
        await asyncio.wait_for(reader, 15)  # ends when the server closes
        rcvd = ws.protocol.close_rcvd
        self.close_codes[f"{rcvd.code} {rcvd.reason}".strip() if rcvd else "no close frame"] += 1

    async def abandon(self) -> None:
        for task in self.readers:
            task.cancel()
        for ws in self.sockets:
            try:
                await asyncio.wait_for(ws.close(), 1)
            except Exception:  # noqa: BLE001
                pass
        self.sockets, self.readers = [], []


async def _drain(ws: Any) -> None:
    try:
        async for _ in ws:  # nothing comes to an idle peer in a room of its own
            pass
    except Exception:  # noqa: BLE001
        pass


async def measure(
    name: str,
    pid: int,
    urls_for_round: Callable[[], list[str]],
    args: argparse.Namespace,
    settle: float,
    compression: str | None,
    with_peers_check: Callable[[dict[str, Any]], None] | None = None,
    after_leave_check: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Rounds of join-everyone / leave-everyone on one server; RSS throughout."""
    idle = await settle_rss(pid, 1.0)
    rounds: list[dict[str, Any]] = []
    peers = Peers(compression)
    try:
        for round_no in range(1, args.rounds + 1):
            urls = urls_for_round()
            before = await settle_rss(pid, 1.0)
            join_s = await peers.join(urls)
            with_peers = await settle_rss(pid, 1.5)
            row: dict[str, Any] = {"round": round_no, "rss_before_kib": before, "rss_with_peers_kib": with_peers}
            if with_peers_check:
                with_peers_check(row)
            held = len(peers.sockets)
            leave_s = await peers.leave()
            right_after = await settle_rss(pid, 1.5)
            settled = await settle_rss(pid, max(0.0, settle - 1.5))
            growth = with_peers - before
            start = rounds[0]["rss_before_kib"] if rounds else before
            above = with_peers - start  # all the peers' memory above the first round's start
            row.update(
                {
                    "peers_held": held,
                    "join_all_s": join_s,
                    "leave_all_s": leave_s,
                    "rss_after_leave_1_5s_kib": right_after,
                    "rss_after_leave_settled_kib": settled,
                    "settle_s": settle,
                    "memory_after_leave_kib": memory_kib(pid),
                    "kib_per_peer": growth / max(1, held),
                    "returned_kib": with_peers - settled,
                    "returned_fraction": (with_peers - settled) / above if above > 0 else None,
                }
            )
            if after_leave_check:
                after_leave_check(row)
            rounds.append(row)
            frac = row["returned_fraction"]
            print(
                f"  {name} round {round_no}: {held} peers joined in {join_s:.1f} s, left in {leave_s:.1f} s; "
                f"RSS {before / 1024:.1f} -> {with_peers / 1024:.1f} MiB with peers "
                f"({row['kib_per_peer']:.1f} KiB/peer) -> {right_after / 1024:.1f} after 1.5 s -> "
                f"{settled / 1024:.1f} after {settle:g} s; returned {(with_peers - settled) / 1024:.1f} MiB"
                + (f" = {frac:.0%} of what it held above its start" if frac is not None else ""),
                flush=True,
            )
            if held != len(urls):
                break
    finally:
        await peers.abandon()
    first, last = rounds[0], rounds[-1]
    return {
        "pid_rss_idle_kib": idle,
        "kib_per_peer": first["kib_per_peer"],
        "rss_with_peers_kib": first["rss_with_peers_kib"],
        "retained_after_last_round_kib": last["rss_after_leave_settled_kib"] - first["rss_before_kib"],
        "returned_fraction_first_round": first["returned_fraction"],
        "negotiated_extensions": dict(peers.negotiated),
        "close_codes": dict(peers.close_codes),
        "failures": dict(peers.failures),
        "rounds": rounds,
    }


async def settle_rss(pid: int, seconds: float) -> int:
    await asyncio.sleep(seconds)  # the client peers keep answering pings meanwhile
    return rss_kib(pid)


def raise_client_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, need)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < need:
        raise SystemExit(f"PROBLEM: the open-files limit is {soft}, {need} are needed; raise it (ulimit -n)")


def describe_extensions(negotiated: dict[str, int]) -> str:
    return ", ".join(f"{value!r} x{count}" for value, count in negotiated.items()) or "nothing (no peer joined)"


async def run_floor(
    args: argparse.Namespace, compression: str | None, deflate: bool
) -> tuple[dict[str, Any], list[str]]:
    label = "floor (raw ASGI WebSocket, compression " + ("on)" if deflate else "off)")
    print(f"{label}:", flush=True)
    floor = Floor(deflate).start()
    try:
        url = f"{floor.ws_base}/ws"
        result = await measure("floor", floor.pid, lambda: [url] * args.peers, args, FLOOR_SETTLE, compression)
        return result, [f"floor: {p}" for p in floor.log_problems()[:3]]
    finally:
        floor.stop()


async def run_service(args: argparse.Namespace, compression: str | None) -> tuple[dict[str, Any], list[str]]:
    extra = ["--ws-compression", "yes"] if args.ws_compression else []
    print("service (livesessions serve" + (" --ws-compression yes" if extra else "") + "):", flush=True)
    service = Service(rate_limit=0, extra=extra).start()
    problems: list[str] = []
    try:
        key = service.create_key()
        api = Api(service.port, key)
        api.live_sessions()  # warm the request path once
        t = time.perf_counter()
        rooms = [api.create_room() for _ in range(args.peers)]
        print(f"  made {len(rooms)} rooms in {time.perf_counter() - t:.1f} s (not timed further)", flush=True)

        def urls() -> list[str]:
            return [f"{service.ws_base}/ws?token={api.peer_token(room)}" for room in rooms]

        list_ms: list[float] = []
        body_bytes = 0

        def with_peers(row: dict[str, Any]) -> None:
            nonlocal body_bytes
            live = api.live_sessions()
            row["live_rooms_with_peers"] = len(live)
            if len(live) != len(rooms):
                problems.append(f"round {row['round']}: {len(live)} live rooms with all peers in, not {len(rooms)}")
            if row["round"] == 1:
                for _ in range(5):
                    t0 = time.perf_counter()
                    _status, body = api.request("GET", "/api/v2/sdk/live-sessions")
                    list_ms.append((time.perf_counter() - t0) * 1000)
                body_bytes = len(json.dumps(body, separators=(",", ":")))

        def after_leave(row: dict[str, Any]) -> None:
            live = api.live_sessions()
            row["live_rooms_after_leave"] = len(live)
            if live:
                problems.append(f"round {row['round']}: {len(live)} live rooms leaked after every peer left")

        result = await measure("service", service.pid, urls, args, args.settle, compression, with_peers, after_leave)
        result["list_get_ms"] = list_ms
        result["list_body_bytes"] = body_bytes
        problems.extend(f"service log: {p}" for p in service.log_problems()[:3])
        return result, problems
    finally:
        service.stop()


def check_peers(name: str, result: dict[str, Any]) -> list[str]:
    problems = []
    if result["failures"]:
        problems.append(f"{name}: peer failures {result['failures']}")
    odd = {code: n for code, n in result["close_codes"].items() if not code.startswith("1000")}
    if odd:
        problems.append(f"{name}: unexpected close codes {odd}")
    return problems


async def main_async(args: argparse.Namespace) -> int:
    raise_client_fd_limit(args.peers + 256)
    compression = None if args.no_compression else "deflate"
    problems: list[str] = []
    floor, found = await run_floor(args, compression, deflate=False)
    problems += found + check_peers("floor", floor)
    floor_deflate = None
    if args.floor_deflate:
        floor_deflate, found = await run_floor(args, compression, deflate=True)
        problems += found + check_peers("floor with deflate", floor_deflate)
    service, found = await run_service(args, compression)
    problems += found + check_peers("service", service)

    ratio = service["kib_per_peer"] / floor["kib_per_peer"] if floor["kib_per_peer"] > 0 else float("inf")
    offered = "offered permessage-deflate" if compression else "offered no compression"
    print()
    print(f"{args.peers} idle peers, one per room; clients {offered}")
    print(
        f"  floor:   {floor['kib_per_peer']:6.1f} KiB per peer; negotiated "
        f"{describe_extensions(floor['negotiated_extensions'])}"
    )
    if floor_deflate:
        print(
            f"  floor, deflate on: {floor_deflate['kib_per_peer']:6.1f} KiB per peer; "
            f"negotiated {describe_extensions(floor_deflate['negotiated_extensions'])}"
        )
    print(
        f"  service: {service['kib_per_peer']:6.1f} KiB per peer; negotiated "
        f"{describe_extensions(service['negotiated_extensions'])}"
    )
    met = ratio <= TARGET_RATIO
    print(f"  ratio service / floor: {ratio:.2f} (target <= {TARGET_RATIO}: {'met' if met else 'MISSED'})")
    for name, result in (("floor", floor), ("service", service)):
        fractions = " / ".join(
            f"{r['returned_fraction']:.0%}" if r["returned_fraction"] is not None else "-" for r in result["rounds"]
        )
        print(
            f"  {name} memory returned after all left, by round: {fractions}; RSS after the last round is "
            f"{result['retained_after_last_round_kib'] / 1024:+.1f} MiB over the first round's start"
        )
    if service["list_get_ms"]:
        print(
            f"  GET live-sessions with {args.peers} live rooms: {service['list_body_bytes']} bytes, "
            f"{min(service['list_get_ms']):.1f}-{max(service['list_get_ms']):.1f} ms (single client)"
        )
    for p in problems:
        print(f"PROBLEM: {p}")
    path = write_json(
        args.output,
        {
            "benchmark": "peer_memory",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(),
            "settings": {
                "peers": args.peers,
                "rounds": args.rounds,
                "settle_s": args.settle,
                "floor_settle_s": FLOOR_SETTLE,
                "client_offers_deflate": compression is not None,
                "service_ws_compression": args.ws_compression,
            },
            "floor": floor,
            "floor_deflate": floor_deflate,
            "service": service,
            "kib_per_peer": {"floor": floor["kib_per_peer"], "service": service["kib_per_peer"]},
            "ratio_service_to_floor": ratio,
            "target_ratio": TARGET_RATIO,
            "target_met": met,
            "client_peak_rss_kib": client_peak_rss_kib(),
            "problems": problems,
        },
    )
    print(f"wrote {path}")
    return 1 if problems else 0


def client_peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=1000, help="idle peers to hold, one room each (default 1000)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="join-everyone / leave-everyone rounds per server, to tell a leak from a high-water mark (default 3)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=13.0,
        help="seconds after the service's peers left before its RSS counts as settled (default 13: the 10 s "
        "grace period, the 1 s maintenance tick and some slack)",
    )
    parser.add_argument(
        "--no-compression",
        action="store_true",
        help="peers do not offer permessage-deflate (default: offer it, as browsers do)",
    )
    parser.add_argument("--ws-compression", action="store_true", help="start the service with --ws-compression yes")
    parser.add_argument(
        "--floor-deflate", action="store_true", help="also measure the floor with permessage-deflate negotiated"
    )
    parser.add_argument("--output", default="peer_memory.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    if args.rounds < 1 or args.peers < 1 or args.settle < 1.5:
        parser.error("--peers and --rounds must be positive, --settle at least 1.5")
    if not Path(args.output).name.startswith("peer_memory"):
        parser.error("--output must be named peer_memory*.json")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
