"""A connection's messages reach its socket in the order they were pushed,
whether they go straight to the transport (`send_frame`) or through the
writer task; and a broadcast's frame is the one websockets would write."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from websockets.frames import Frame, Opcode

from livesessions.domain.live import RoomKey
from livesessions.realtime.hub import Close, Connection, Hub
from livesessions.realtime.peer_socket import _open
from livesessions.realtime.protocol import PeerLeft, encode, text_frame
from livesessions.telemetry import Tally

KEY = RoomKey("prj_a", "abc-defg-hij")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_the_frame_is_what_websockets_writes(size: int) -> None:
    payload = bytes(random.Random(size).randrange(32, 127) for _ in range(size))
    assert text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False)


def connection(peer_id: str = "p1") -> Connection:
    return Connection(key=KEY, peer_id=peer_id, role="host", permissions={})


def test_a_message_finding_the_writer_idle_goes_straight_out() -> None:
    conn, written = connection(), []
    conn.send_frame = lambda frame: written.append(frame) or True
    conn.sent = Tally(Counter("out", "", registry=CollectorRegistry()))
    conn.push(b'{"type":"a"}')
    assert written == [text_frame(b'{"type":"a"}')] and conn.sent.count == 1 and not conn.outbox


def test_it_queues_behind_a_busy_writer_a_queue_or_a_refusal() -> None:
    conn, written = connection(), []
    accept = [True]
    conn.send_frame = lambda frame: accept[0] and (written.append(frame) or True)
    conn.writing = True
    conn.push(b"1")
    conn.writing = False
    conn.push(b"2")  # behind 1
    assert list(conn.outbox) == [b"1", b"2"] and written == []
    conn.outbox.clear()
    conn.queued_bytes = 0
    accept[0] = False  # the peer is not reading
    conn.push(b"3")
    assert list(conn.outbox) == [b"3"] and conn.queued_bytes == 1


def test_nothing_goes_out_once_closing() -> None:
    conn, written = connection(), []
    conn.send_frame = lambda frame: written.append(frame) or True
    conn.close(1000, "bye")
    conn.push(b"late")
    assert written == [] and list(conn.outbox) == [Close(1000, "bye")]


def test_order_holds_across_both_paths_under_interleaving() -> None:
    """Pushes land while the writer is idle, waiting, or in the middle of a
    slow send; the socket sees them all, in push order, each once."""

    async def scenario(seed: int) -> list[bytes]:
        rng = random.Random(seed)
        conn = connection()
        wire: list[bytes] = []
        slow = [False]

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "websocket.send":
                for _ in range(rng.randrange(3)):
                    await asyncio.sleep(0)
                wire.append(message["text"].encode())

        def send_frame(frame: bytes) -> bool:
            if slow[0]:
                return False
            wire.append(frame[2:])  # payloads here are under 126 bytes
            return True

        # Queued before the writer starts (before the join is in history).
        conn.push(b"0")
        conn.push(b"1")
        _open(conn, send, Tally(Counter("out", "", registry=CollectorRegistry())), send_frame)
        for number in range(2, 300):
            slow[0] = rng.random() < 0.2
            conn.push(str(number).encode())
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
        slow[0] = False
        conn.close(1000, "")
        while conn.writer is not None:
            await asyncio.wait_for(conn.writer, 5)
        return wire

    for seed in range(20):
        assert asyncio.run(scenario(seed)) == [str(n).encode() for n in range(300)]


def test_a_broadcast_frames_once_and_skips_the_sender() -> None:
    hub, written = Hub(), {}
    for peer in ("p1", "p2", "p3"):
        conn = connection(peer)
        written[peer] = []
        conn.send_frame = lambda frame, peer=peer: written[peer].append(frame) or True
        hub.add(conn)
    hub.broadcast(KEY, PeerLeft("p9"), exclude="p1")
    frame = text_frame(encode(PeerLeft("p9")))
    assert written == {"p1": [], "p2": [frame], "p3": [frame]}
    # The very same bytes object for every receiver: framed once.
    assert written["p2"][0] is written["p3"][0]


def test_an_idle_connection_holds_no_writer_task() -> None:
    async def scenario() -> None:
        conn, wire = connection(), []

        async def send(message: dict[str, Any]) -> None:
            await asyncio.sleep(0)
            wire.append(message)

        conn.push(b'{"type":"joined"}')  # queued before the join is in history
        _open(conn, send, Tally(Counter("out", "", registry=CollectorRegistry())), lambda frame: True)
        assert conn.writer is not None
        await asyncio.wait_for(conn.writer, 5)
        assert conn.writer is None and [m["text"] for m in wire] == ['{"type":"joined"}']
        conn.push(b'{"type":"pong"}')  # straight out: no task made
        assert conn.writer is None and not conn.outbox
        conn.close(1000, "left")
        assert conn.writer is not None
        await asyncio.wait_for(conn.writer, 5)
        assert wire[-1] == {"type": "websocket.close", "code": 1000, "reason": "left"}

    asyncio.run(scenario())
