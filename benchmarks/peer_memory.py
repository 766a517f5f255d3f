"""Server memory with many live peers: resident set size (VmRSS from
/proc/<pid>/status) of an idle service vs the same service holding N peers.

    .venv/bin/python benchmarks/peer_memory.py [--peers 1000] [--rooms N] [--rounds 3] [--no-compression]

What it does (loopback only, stops by itself):
  1. starts `livesessions serve` (free port, temporary data dir, rate limit
     off), creates an API key, reads RSS (idle);
  2. creates --rooms rooms (default: one per peer) and reads RSS;
  3. connects --peers WebSocket peers (round-robin over the rooms), waits for
     each one's "joined", lets the server settle, reads RSS; times a few
     GET /api/v2/sdk/live-sessions with that many live rooms;
  4. has every peer leave, waits for the closes, checks the list is empty and
     reads RSS again; repeats 3-4 for --rounds rounds with fresh tokens, so a
     leak (RSS keeps climbing) shows apart from allocator high-water marks;
  5. writes benchmarks/results/peer_memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Api, Service, machine_info, memory_kib, rss_kib, write_json


async def join(ws_base: str, token: str, gate: asyncio.Semaphore, compression: str | None) -> Any:
    from websockets.asyncio.client import connect

    async with gate:
        ws = await connect(f"{ws_base}/ws?token={token}", open_timeout=30, max_size=None, compression=compression)
        first = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if first.get("type") != "joined":
            raise RuntimeError(f"expected joined, got {first}")
        return ws


async def drain(ws: Any) -> None:
    try:
        async for _ in ws:  # peer-joined / peer-left notices when rooms are shared
            pass
    except Exception:  # noqa: BLE001
        pass


async def leave(ws: Any, reader: asyncio.Task[None]) -> None:
    await ws.send('{"type":"leave"}')
    await asyncio.wait_for(reader, 15)  # ends when the server closes


def settle_rss(pid: int, seconds: float = 1.5) -> int:
    time.sleep(seconds)
    return rss_kib(pid)


async def main_async(args: argparse.Namespace) -> int:
    service = Service(rate_limit=0).start()
    peers: list[Any] = []
    readers: list[asyncio.Task[None]] = []
    try:
        key = service.create_key()
        api = Api(service.port, key)
        api.live_sessions()  # warm the request path once
        rss = {"idle": settle_rss(service.pid)}
        n_rooms = args.rooms or args.peers
        rooms = [api.create_room() for _ in range(n_rooms)]
        rss["rooms_created"] = settle_rss(service.pid)
        compression = None if args.no_compression else "deflate"
        rounds = []
        live: list[Any] = []
        live_after: list[Any] = []
        timings: list[float] = []
        body_bytes = 0
        for round_no in range(1, args.rounds + 1):
            tokens = [api.peer_token(rooms[i % n_rooms]) for i in range(args.peers)]
            before = settle_rss(service.pid)
            t = time.perf_counter()
            gate = asyncio.Semaphore(50)
            peers = list(await asyncio.gather(*(join(service.ws_base, tok, gate, compression) for tok in tokens)))
            join_s = time.perf_counter() - t
            readers = [asyncio.create_task(drain(ws)) for ws in peers]
            await asyncio.sleep(1.5)
            with_peers = rss_kib(service.pid)

            live = api.live_sessions()
            timings = []
            for _ in range(5):
                t0 = time.perf_counter()
                api.live_sessions()
                timings.append((time.perf_counter() - t0) * 1000)
            _status, body = api.request("GET", "/api/v2/sdk/live-sessions")
            body_bytes = len(json.dumps(body, separators=(",", ":")))

            t = time.perf_counter()
            await asyncio.gather(*(leave(ws, r) for ws, r in zip(peers, readers, strict=False)))
            leave_s = time.perf_counter() - t
            peers, readers = [], []
            live_after = api.live_sessions()
            after = settle_rss(service.pid)
            parts = memory_kib(service.pid)
            rounds.append(
                {
                    "memory_after_leave_kib": parts,
                    "round": round_no,
                    "rss_before_kib": before,
                    "rss_with_peers_kib": with_peers,
                    "rss_after_leave_kib": after,
                    "join_all_s": join_s,
                    "leave_all_s": leave_s,
                    "live_rooms_with_peers": len(live),
                    "live_rooms_after_leave": len(live_after),
                    "list_get_ms": timings,
                }
            )
            print(
                f"round {round_no}: {args.peers} peers in {n_rooms} rooms joined in {join_s:.1f} s, "
                f"left in {leave_s:.1f} s; RSS {before / 1024:.1f} -> {with_peers / 1024:.1f} MiB with peers "
                f"-> {after / 1024:.1f} MiB after all left (anon {parts['RssAnon'] / 1024:.1f}, "
                f"file {parts['RssFile'] / 1024:.1f}, shmem {parts['RssShmem'] / 1024:.1f}); "
                f"live rooms {len(live)} -> {len(live_after)}",
                flush=True,
            )
            if len(live) != n_rooms or live_after:
                break

        rss["with_peers"] = rounds[0]["rss_with_peers_kib"]
        rss["after_leave"] = rounds[-1]["rss_after_leave_kib"]
        per_peer = (rss["with_peers"] - rounds[0]["rss_before_kib"]) / args.peers
        print(
            f"server RSS (MiB): idle {rss['idle'] / 1024:.1f}, after {n_rooms} rooms "
            f"{rss['rooms_created'] / 1024:.1f}, with {args.peers} live peers {rss['with_peers'] / 1024:.1f} "
            f"(first round), after the last round {rss['after_leave'] / 1024:.1f}"
        )
        print(
            f"  ~{per_peer:.1f} KiB per live peer (first round: with peers - before joins); "
            f"client permessage-deflate {'off' if args.no_compression else 'on'}"
        )
        print(
            f"GET live-sessions with {len(live)} live rooms: {body_bytes} bytes, "
            f"{min(timings):.1f}-{max(timings):.1f} ms per request (single client)"
        )

        problems = []
        if len(live) != n_rooms:
            problems.append(f"expected {n_rooms} live rooms with all peers in, listed {len(live)}")
        if live_after:
            problems.append(f"{len(live_after)} live rooms leaked after every peer left")
        log_problems = service.log_problems()
        if log_problems:
            problems.append(f"server log has {len(log_problems)} error lines, e.g. {log_problems[0]}")
        for p in problems:
            print(f"PROBLEM: {p}")
        path = write_json(
            "peer_memory.json",
            {
                "benchmark": "peer_memory",
                "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": machine_info(),
                "settings": {"peers": args.peers, "rooms": n_rooms},
                "server_rss_kib": rss,
                "kib_per_live_peer": per_peer,
                "client_compression": not args.no_compression,
                "rounds": rounds,
                "list_body_bytes": body_bytes,
                "problems": problems,
            },
        )
        print(f"wrote {path}")
        return 1 if problems else 0
    finally:
        for task in readers:
            task.cancel()
        for ws in peers:
            try:
                await asyncio.wait_for(ws.close(), 1)
            except Exception:  # noqa: BLE001
                pass
        service.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=1000, help="live peers to hold (default 1000)")
    parser.add_argument("--rooms", type=int, default=0, help="rooms they are spread over (default: one per peer)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="join-everyone / leave-everyone rounds, to tell a leak from a high-water mark (default 3)",
    )
    parser.add_argument(
        "--no-compression",
        action="store_true",
        help="peers do not offer permessage-deflate (default: offer it, as browsers do)",
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.peers < 1 or args.rooms < 0:
        parser.error("--peers must be positive")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
