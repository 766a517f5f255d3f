"""Broadcast cost: the service's CPU per join (and per data message) in rooms of
100 peers vs rooms of 2 (issue 12, target 8: a join in a room of 100 costs
<= 2 x what a join in a room of 2 costs).

    .venv/bin/python benchmarks/broadcast.py [--rooms 8] [--sizes 2,100] [--churn 8] [--data 4]
                                            [--repeat 1] [--no-compression] [--ws-compression]
                                            [--output broadcast.json]

What it does (loopback only, stops by itself; ~50 s with the defaults):
  1. starts `livesessions serve` (free port, temporary data dir, rate limit
     and peer message budget off), creates an API key;
  2. for each room size S (2, then 100; --repeat alternates them again):
     a. makes --rooms fresh rooms and fills each with S-1 resident peers that
        stay connected and read every message sent to them;
     b. churn (--churn seconds): one churner per room joins (connect, wait
        for `joined`), sends {"type":"leave"} and waits for the close, again
        and again. Every join makes the server send `peer-joined` to the S-1
        residents, every leave `peer-left` to them; the churner's own
        `joined` lists the S-1 others;
     c. data (--data seconds): the churner joins once more and stays, so each
        room holds S peers, and sends {"type":"data","to":"*",...} in batches
        of 20, waiting each time until all S-1 others have read the batch;
     d. everyone leaves; the rooms must be gone from GET live-sessions.
  3. reports, per size: µs of server CPU (utime+stime of the server process,
     /proc/<pid>/stat) per join, per data message and per delivered message,
     cycles/s and messages/s, server RSS with the rooms full; and the ratio
     of the 100-room to the 2-room figure (target <= 2.0 for joins).

"Per join" is one join+leave cycle of the churner: a join in a steady room
implies its leave, and measuring the pair keeps every room at S-1 or S
peers, so every join and every leave is seen by exactly S-1 others (joining
alone while peers pile up would average over rooms of 1..S). Its cost with
S=2 is the floor the 100-room figure is compared with.

Every resident must read every notice: each counts `peer-joined`, `peer-left`
and `data` messages as they arrive, and the counts are checked against the
cycles and batches the churners and senders completed. The residents and
churners are a minimal raw WebSocket client on asyncio (handshake, frame
parsing, answering pings; inflating when permessage-deflate was negotiated)
on uvloop, so that on a small machine the client costs less CPU than the server.
Each peer offers permessage-deflate as browsers do (not with
--no-compression); what the server negotiated is reported. Churners reuse
one peer token each (peer tokens are reusable JWTs; the server checks each
one on every join).

Exits 1 with "PROBLEM: ..." on failed joins, residents cut off or missing
messages, rooms still live at the end, or error lines in the server log; a
missed target is not one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import os
import resource
import statistics
import sys
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import HOST, Api, Service, cpu_seconds, machine_info, rss_kib, write_json

TARGET_RATIO = 2.0
BATCH = 20  # data messages a sender sends before waiting for its room to read them
STEP_TIMEOUT = 15.0
DATA_MESSAGE = b'{"type":"data","to":"*","label":"chat","payload":{"text":"hello, everyone in the room"}}'
KINDS = {b"peer-joined": "peer-joined", b"peer-left": "peer-left", b"data": "data", b"joined": "joined"}


class Room:
    """What the residents of one room have read, for the checks and the waits."""

    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.counts: collections.Counter[str] = collections.Counter()
        self.data_wanted = 0
        self.data_done = asyncio.Event()

    def read(self, kind: str) -> None:
        self.counts[kind] += 1
        if kind == "data" and self.counts["data"] >= self.data_wanted:
            self.data_done.set()


class RawPeer(asyncio.Protocol):
    """A minimal WebSocket client: enough to join, read, answer pings and leave."""

    def __init__(self, path: str, port: int, offer_deflate: bool, room: Room | None) -> None:
        self.path = path
        self.port = port
        self.offer_deflate = offer_deflate
        self.room = room
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.handshaken = False
        self.extensions = "(none)"
        self.inflater: Any = None
        self.fragments: list[bytes] = []
        self.fragment_compressed = False
        loop = asyncio.get_running_loop()
        self.joined: asyncio.Future[bytes] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self.close_code = ""
        self.others: collections.Counter[str] = collections.Counter()

    # asyncio

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if self.offer_deflate else ""
        self.transport.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: http://{HOST}:{self.port}\r\n{offer}\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish(self.close_code or f"connection lost ({exc or 'no close frame'})")

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.handshaken:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
            del buffer[: end + 4]
            if not head[0].startswith("HTTP/1.1 101"):
                self._fail(f"handshake answered {head[0]!r}")
                return
            self.handshaken = True
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-extensions":
                    self.extensions = value.strip()
                    if "permessage-deflate" in value:
                        self.inflater = zlib.decompressobj(-15)
        while len(buffer) >= 2:
            first, second = buffer[0], buffer[1]
            length = second & 0x7F
            start = 2
            if length == 126:
                if len(buffer) < 4:
                    return
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            elif length == 127:
                if len(buffer) < 10:
                    return
                length, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + length:
                return
            payload = bytes(buffer[start : start + length])
            del buffer[: start + length]
            self._frame(first & 0x80, first & 0x40, first & 0x0F, payload)

    # frames

    def _frame(self, fin: int, rsv1: int, opcode: int, payload: bytes) -> None:
        if opcode in (1, 2) or opcode == 0:
            if opcode:
                self.fragment_compressed = bool(rsv1)
            self.fragments.append(payload)
            if not fin:
                return
            message = b"".join(self.fragments)
            self.fragments = []
            if self.fragment_compressed:
                message = self.inflater.decompress(message + b"\x00\x00\xff\xff")
            self._message(message)
        elif opcode == 9:  # ping: pong with the same payload
            self._send(0x8A, payload)
        elif opcode == 8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.close_code = f"{code} {payload[2:].decode(errors='replace')}".strip()
            self._send(0x88, payload[:2])
            assert self.transport is not None
            self.transport.close()
            self._finish(self.close_code)

    def _message(self, message: bytes) -> None:
        # {"type":"<kind>",...}: the type is the first field the server writes.
        end = message.find(b'"', 9)
        kind = KINDS.get(message[9:end], "other") if message.startswith(b'{"type":"') else "other"
        if kind == "joined" and not self.joined.done():
            self.joined.set_result(message)
        elif self.room is not None and kind != "joined":
            self.room.read(kind)
        else:
            self.others[kind] += 1

    # sending (client frames are masked; an all-zero mask leaves the payload as is)

    def _send(self, head: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        n = len(payload)
        if n < 126:
            header = bytes((head, 0x80 | n))
        elif n < 65536:
            header = bytes((head, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            header = bytes((head, 0x80 | 127)) + n.to_bytes(8, "big")
        self.transport.write(header + b"\x00\x00\x00\x00" + payload)

    def send_text(self, payload: bytes) -> None:
        self._send(0x81, payload)

    def _fail(self, why: str) -> None:
        if not self.joined.done():
            self.joined.set_exception(RuntimeError(why))
        assert self.transport is not None
        self.transport.close()
        self._finish(why)

    def _finish(self, why: str) -> None:
        if not self.joined.done():
            self.joined.set_exception(RuntimeError(f"closed before joined: {why}"))
        if not self.closed.done():
            self.closed.set_result(why)

    async def leave(self) -> str:
        self.send_text(b'{"type":"leave"}')
        return await asyncio.wait_for(asyncio.shield(self.closed), STEP_TIMEOUT)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def connect(port: int, token: str, offer_deflate: bool, room: Room | None) -> RawPeer:
    loop = asyncio.get_running_loop()
    _, peer = await loop.create_connection(lambda: RawPeer(f"/ws?token={token}", port, offer_deflate, room), HOST, port)
    try:
        await asyncio.wait_for(asyncio.shield(peer.joined), STEP_TIMEOUT)
    except BaseException:
        peer.abort()
        raise
    return peer


class Tally:
    def __init__(self) -> None:
        self.failures: collections.Counter[str] = collections.Counter()
        self.close_codes: collections.Counter[str] = collections.Counter()
        self.extensions: collections.Counter[str] = collections.Counter()

    def fail(self, where: str, exc: BaseException) -> None:
        self.failures[f"{where}: {type(exc).__name__}: {str(exc)[:100]}"] += 1


async def churn(port: int, token: str, until: float, offer: bool, tally: Tally, cycles: list[int], i: int) -> None:
    while time.perf_counter() < until:
        try:
            peer = await connect(port, token, offer, None)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            tally.fail("churn join", exc)
            await asyncio.sleep(0.05)
            continue
        tally.extensions[peer.extensions] += 1
        try:
            tally.close_codes[await peer.leave()] += 1
            cycles[i] += 1
        except Exception as exc:  # noqa: BLE001
            tally.fail("churn leave", exc)
            peer.abort()


async def send_data(sender: RawPeer, room: Room, receivers: int, until: float, sent: list[int], i: int) -> None:
    while time.perf_counter() < until:
        room.data_wanted = room.counts["data"] + BATCH * receivers
        room.data_done.clear()
        for _ in range(BATCH):
            sender.send_text(DATA_MESSAGE)
        await asyncio.wait_for(room.data_done.wait(), STEP_TIMEOUT)
        sent[i] += BATCH


async def measure_size(
    service: Service, api: Api, size: int, args: argparse.Namespace, tally: Tally, problems: list[str]
) -> dict[str, Any]:
    port, offer = service.port, not args.no_compression
    rooms = [Room(api.create_room()) for _ in range(args.rooms)]
    resident_tokens = [[api.peer_token(room.room_id) for _ in range(size - 1)] for room in rooms]
    churn_tokens = [api.peer_token(room.room_id) for room in rooms]
    rss_before = rss_kib(service.pid)

    gate = asyncio.Semaphore(50)

    async def join_resident(token: str, room: Room) -> RawPeer:
        async with gate:
            return await connect(port, token, offer, room)

    t = time.perf_counter()
    joined = await asyncio.gather(
        *(join_resident(tok, room) for room, toks in zip(rooms, resident_tokens, strict=True) for tok in toks),
        return_exceptions=True,
    )
    residents: list[RawPeer] = []
    for peer in joined:
        if isinstance(peer, BaseException):
            tally.fail("resident join", peer)
        else:
            residents.append(peer)
            tally.extensions[peer.extensions] += 1
    fill_s = time.perf_counter() - t
    # Filling the rooms made earlier residents read the later ones' joins: start counting now.
    await asyncio.sleep(0.5)
    for room in rooms:
        room.counts.clear()
    rss_full = rss_kib(service.pid)
    # what the server burns with the rooms full and nothing happening (pings, maintenance)
    idle0, t0 = cpu_seconds(service.pid), time.perf_counter()
    await asyncio.sleep(1.0)
    idle_share = (cpu_seconds(service.pid) - idle0) / (time.perf_counter() - t0)

    # churn
    cycles = [0] * len(rooms)
    cpu0, own0, t0 = cpu_seconds(service.pid), time.process_time(), time.perf_counter()
    until = t0 + args.churn
    await asyncio.gather(*(churn(port, tok, until, offer, tally, cycles, i) for i, tok in enumerate(churn_tokens)))
    churn_s, churn_cpu = time.perf_counter() - t0, cpu_seconds(service.pid) - cpu0
    churn_client_cpu = time.process_time() - own0
    total_cycles = sum(cycles)
    # every notice should reach every resident; give the last ones a moment
    deadline = time.perf_counter() + 5
    while time.perf_counter() < deadline:
        if all(room.counts["peer-left"] >= cycles[i] * (size - 1) for i, room in enumerate(rooms)):
            break
        await asyncio.sleep(0.05)
    missing = 0
    for i, room in enumerate(rooms):
        for kind in ("peer-joined", "peer-left"):
            missing += max(0, cycles[i] * (size - 1) - room.counts[kind])
    if missing:
        problems.append(f"rooms of {size}: residents missed {missing} of the churn's peer-joined/peer-left notices")

    # data
    senders: list[RawPeer] = []
    for tok in churn_tokens:
        try:
            peer = await connect(port, tok, offer, None)
            senders.append(peer)
        except Exception as exc:  # noqa: BLE001
            tally.fail("sender join", exc)
            senders.append(None)  # type: ignore[arg-type]
    await asyncio.sleep(0.3)
    for room in rooms:
        room.counts["data"] = 0
    sent = [0] * len(rooms)
    cpu0, own0, t0 = cpu_seconds(service.pid), time.process_time(), time.perf_counter()
    until = t0 + args.data
    results = await asyncio.gather(
        *(
            send_data(sender, room, size - 1, until, sent, i)
            for i, (sender, room) in enumerate(zip(senders, rooms, strict=True))
            if sender is not None
        ),
        return_exceptions=True,
    )
    data_s, data_cpu = time.perf_counter() - t0, cpu_seconds(service.pid) - cpu0
    data_client_cpu = time.process_time() - own0
    for result in results:
        if isinstance(result, BaseException):
            tally.fail("data", result)
    total_sent = sum(sent)
    delivered = sum(room.counts["data"] for room in rooms)
    expected = total_sent * (size - 1)
    if delivered < expected:
        problems.append(f"rooms of {size}: {expected - delivered} of {expected} data messages not read")

    # everyone leaves
    everyone = residents + [s for s in senders if s is not None]
    codes = await asyncio.gather(*(p.leave() for p in everyone), return_exceptions=True)
    for code in codes:
        if isinstance(code, BaseException):
            tally.fail("leave", code)
        else:
            tally.close_codes[code] += 1
    cut = sum(n for kind, n in collections.Counter(p.close_code for p in residents).items() if kind.startswith("1008"))
    if cut:
        problems.append(f"rooms of {size}: {cut} residents were cut off as too slow")

    per_join_us = churn_cpu / total_cycles * 1e6 if total_cycles else float("nan")
    per_msg_us = data_cpu / total_sent * 1e6 if total_sent else float("nan")
    per_delivery_us = data_cpu / delivered * 1e6 if delivered else float("nan")
    row = {
        "room_size": size,
        "rooms": len(rooms),
        "residents": len(residents),
        "fill_s": fill_s,
        "rss_before_kib": rss_before,
        "rss_rooms_full_kib": rss_full,
        "kib_per_resident": (rss_full - rss_before) / max(1, len(residents)),
        "server_idle_cpu_share": idle_share,
        "churn": {
            "seconds": churn_s,
            "cycles": total_cycles,
            "cycles_per_s": total_cycles / churn_s,
            "server_cpu_s": churn_cpu,
            "server_cpu_share": churn_cpu / churn_s,
            "client_cpu_s": churn_client_cpu,
            "server_cpu_us_per_join": per_join_us,
            "notices_read": {k: sum(r.counts[k] for r in rooms) for k in ("peer-joined", "peer-left")},
            "notices_missing": missing,
        },
        "data": {
            "seconds": data_s,
            "sent": total_sent,
            "delivered": delivered,
            "delivered_per_s": delivered / data_s,
            "server_cpu_s": data_cpu,
            "server_cpu_share": data_cpu / data_s,
            "client_cpu_s": data_client_cpu,
            "server_cpu_us_per_message": per_msg_us,
            "server_cpu_us_per_delivery": per_delivery_us,
        },
    }
    print(
        f"  rooms of {size:3d}: {len(rooms)} rooms, {len(residents)} residents (filled in {fill_s:.1f} s, "
        f"RSS {rss_before / 1024:.1f} -> {rss_full / 1024:.1f} MiB)\n"
        f"    churn: {total_cycles} joins+leaves in {churn_s:.1f} s = {total_cycles / churn_s:.0f}/s, "
        f"server CPU {churn_cpu / churn_s:.0%} of a core, {per_join_us:.0f} µs per join "
        f"(client {churn_client_cpu:.1f} s)\n"
        f"    data:  {total_sent} sent, {delivered} read in {data_s:.1f} s = {delivered / data_s:.0f} deliveries/s, "
        f"server {data_cpu / data_s:.0%}, {per_msg_us:.0f} µs per message, {per_delivery_us:.1f} µs per delivery "
        f"(client {data_client_cpu:.1f} s)",
        flush=True,
    )
    return row


def median(rows: list[dict[str, Any]], part: str, field: str) -> float:
    return statistics.median(row[part][field] for row in rows)


async def main_async(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    need = args.rooms * max(sizes) + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need and (hard == resource.RLIM_INFINITY or hard >= need):
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else hard, hard))
    extra = ["--ws-compression", "yes"] if args.ws_compression else []
    service = Service(rate_limit=0, extra=extra).start()
    problems: list[str] = []
    tally = Tally()
    rows: list[dict[str, Any]] = []
    try:
        api = Api(service.port, service.create_key())
        api.live_sessions()
        rss_idle = rss_kib(service.pid)
        print(
            f"service on :{service.port}{' --ws-compression yes' if extra else ''}, "
            f"idle RSS {rss_idle / 1024:.1f} MiB; "
            f"{args.rooms} rooms per size, churn {args.churn:g} s, data {args.data:g} s, "
            f"peers {'offer' if not args.no_compression else 'do not offer'} permessage-deflate",
            flush=True,
        )
        order = [s for r in range(args.repeat) for s in (sizes if r % 2 == 0 else sizes[::-1])]
        for size in order:
            rows.append(await measure_size(service, api, size, args, tally, problems))
        await asyncio.sleep(0.5)
        live = api.live_sessions()
        if live:
            problems.append(f"{len(live)} rooms still live after every peer left")
        rss_end = rss_kib(service.pid)
        problems.extend(f"server log: {p}" for p in service.log_problems()[:3])
    finally:
        service.stop()

    if tally.failures:
        problems.append(f"peer failures: {dict(tally.failures)}")
    odd = {c: n for c, n in tally.close_codes.items() if not c.startswith("1000")}
    if odd:
        problems.append(f"unexpected close codes: {odd}")

    by_size = {size: [r for r in rows if r["room_size"] == size] for size in sizes}
    summary: dict[str, Any] = {}
    for size, sized in by_size.items():
        summary[str(size)] = {
            "server_cpu_us_per_join": median(sized, "churn", "server_cpu_us_per_join"),
            "cycles_per_s": median(sized, "churn", "cycles_per_s"),
            "server_cpu_us_per_data_message": median(sized, "data", "server_cpu_us_per_message"),
            "server_cpu_us_per_delivery": median(sized, "data", "server_cpu_us_per_delivery"),
            "deliveries_per_s": median(sized, "data", "delivered_per_s"),
            "kib_per_resident": statistics.median(r["kib_per_resident"] for r in sized),
        }
    small, big = str(min(sizes)), str(max(sizes))
    join_ratio = summary[big]["server_cpu_us_per_join"] / summary[small]["server_cpu_us_per_join"]
    data_ratio = summary[big]["server_cpu_us_per_data_message"] / summary[small]["server_cpu_us_per_data_message"]
    receivers = int(big) - int(small)
    marginal = (summary[big]["server_cpu_us_per_join"] - summary[small]["server_cpu_us_per_join"]) / (2 * receivers)
    met = join_ratio <= TARGET_RATIO
    print()
    note = f" (medians of {args.repeat})" if args.repeat > 1 else ""
    print(f"server CPU per join (one join + its leave){note}:")
    print(f"  rooms of {small:>3}: {summary[small]['server_cpu_us_per_join']:7.0f} µs   (the floor)")
    print(f"  rooms of {big:>3}: {summary[big]['server_cpu_us_per_join']:7.0f} µs")
    print(f"  ratio {big}/{small}: {join_ratio:.2f} (target <= {TARGET_RATIO}: {'met' if met else 'MISSED'})")
    print(f"  each extra receiver of a notice costs ~{marginal:.1f} µs (2 notices per cycle)")
    print(f"server CPU per data message to everyone ('to': '*'){note}:")
    print(
        f"  rooms of {small:>3}: {summary[small]['server_cpu_us_per_data_message']:7.0f} µs "
        f"({summary[small]['server_cpu_us_per_delivery']:.1f} µs per delivery)"
    )
    print(
        f"  rooms of {big:>3}: {summary[big]['server_cpu_us_per_data_message']:7.0f} µs "
        f"({summary[big]['server_cpu_us_per_delivery']:.1f} µs per delivery)"
    )
    print(f"  ratio {big}/{small}: {data_ratio:.1f} (receivers: {int(small) - 1} vs {int(big) - 1})")
    print(f"negotiated: {', '.join(f'{k!r} x{n}' for k, n in tally.extensions.items())}")
    print(f"server RSS: idle {rss_idle / 1024:.1f} MiB, at the end {rss_end / 1024:.1f} MiB")
    for p in problems:
        print(f"PROBLEM: {p}")
    path = write_json(
        args.output,
        {
            "benchmark": "broadcast",
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(),
            "settings": {
                "rooms": args.rooms,
                "sizes": sizes,
                "churn_s": args.churn,
                "data_s": args.data,
                "repeat": args.repeat,
                "data_batch": BATCH,
                "data_message": DATA_MESSAGE.decode(),
                "client_offers_deflate": not args.no_compression,
                "service_ws_compression": args.ws_compression,
            },
            "summary": summary,
            "join_ratio": join_ratio,
            "data_message_ratio": data_ratio,
            "marginal_us_per_notice_receiver": marginal,
            "target_ratio": TARGET_RATIO,
            "target_met": met,
            "negotiated_extensions": dict(tally.extensions),
            "close_codes": dict(tally.close_codes),
            "server_rss_kib": {"idle": rss_idle, "end": rss_end},
            "runs": rows,
            "problems": problems,
        },
    )
    print(f"wrote {path}")
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=8, help="rooms per size, one churner each (default 8)")
    parser.add_argument("--sizes", default="2,100", help="room sizes to compare, smallest first (default 2,100)")
    parser.add_argument("--churn", type=float, default=8.0, help="seconds of join/leave churn per size (default 8)")
    parser.add_argument("--data", type=float, default=4.0, help="seconds of data broadcasts per size (default 4)")
    parser.add_argument("--repeat", type=int, default=1, help="measure the sizes this many times, alternating")
    parser.add_argument(
        "--no-compression", action="store_true", help="peers do not offer permessage-deflate (default: they do)"
    )
    parser.add_argument("--ws-compression", action="store_true", help="start the service with --ws-compression yes")
    parser.add_argument("--output", default="broadcast.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes takes comma-separated whole numbers")
    if len(sizes) < 2 or min(sizes) < 2 or args.rooms < 1 or args.repeat < 1:
        parser.error("--sizes needs two sizes of at least 2; --rooms and --repeat must be positive")
    if not Path(args.output).name.startswith("broadcast"):
        parser.error("--output must be named broadcast*.json")
    try:  # the client's own loop: uvloop when installed (the service's default), as cheap as it gets
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
