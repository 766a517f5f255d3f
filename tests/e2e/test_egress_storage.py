"""Recordings when their storage fails: a full disk (a small tmpfs as the
recordings directory of a real server) or a stalled one (in-process, a file
whose writes wait). The recording fails cleanly and says why; the room, its
peers and its counts carry on as if nothing happened; no file work runs on
the event loop."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from livesessions.config import Settings
from livesessions.domain.egress import EgressJob
from livesessions.domain.errors import NotFound
from livesessions.domain.live import Admission, PeerPresence, RoomKey
from livesessions.domain.permissions import resolve_permissions
from livesessions.egress import timeline
from livesessions.realtime.hub import Connection
from livesessions.services import Services, build_services
from support import Peer, Project, Server, eventually, unavailable

START = "/api/v1/recording/start"
STOP = "/api/v1/recording/stop"
STATUS = "/api/v1/recording/status"
RECORDINGS = "/api/v2/sdk/recordings"


# --- a full disk, on a real server -------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs for the recordings directory."""
    disk = tmp_path / "recordings"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        unavailable(f"cannot mount a small tmpfs to fill up (needs root): {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


@pytest.fixture
def server(small_disk: Path, tmp_path: Path) -> Iterator[Server]:
    # Torn down before small_disk: no file of it is open at the unmount.
    instance = Server(tmp_path / "data", **{"recordings-dir": str(small_disk)}).start()
    yield instance
    instance.stop()


def fill(disk: Path) -> None:
    """Use up every page of the disk."""
    with open(disk / "filler", "ab", buffering=0) as file:
        try:
            while True:
                file.write(b"x" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def free(disk: Path) -> None:
    (disk / "filler").unlink()


def start(project: Project, room: str) -> httpx.Response:
    return project.post(START, json={"roomId": room, "token": project.token(room)})


def chat(sender: Peer, receivers: list[Peer], payload: Any) -> None:
    """A data message from `sender`, which every receiver gets."""
    sender.send({"type": "data", "to": "*", "label": "chat", "payload": payload})
    for peer in receivers:
        assert peer.recv_type("data")["payload"] == payload


def recording(project: Project, job_id: str) -> dict[str, Any] | None:
    items = project.get(RECORDINGS).json()["recordings"]
    return next((item for item in items if item["id"] == job_id), None)


def failed(project: Project, job_id: str) -> dict[str, Any]:
    item = eventually(lambda: (r := recording(project, job_id)) and "failedReason" in r and r)
    assert item, f"the recording did not fail: {recording(project, job_id)}"
    return item


def test_a_full_disk_fails_the_recording_not_the_room(server: Server, small_disk: Path) -> None:
    proj = server.project()
    room = proj.create_room()
    alice = proj.join(room, metadata="alice")
    bob = proj.join(room, metadata="bob")
    alice.recv_type("peer-joined")
    fill(small_disk)

    began_ms = time.time() * 1000
    response = start(proj, room)
    assert response.status_code == 200, response.text
    job_id = response.json()["id"]
    # The recorder's first line (its `joined`) finds no room: the job fails.
    # The room carries on: messages, a join and a leave, all as usual.
    chat(alice, [bob], "one")
    carol = proj.join(room, metadata="carol")
    assert alice.recv_type("peer-joined")["peer"]["peerId"] == carol.peer_id
    assert bob.recv_type("peer-joined")["peer"]["peerId"] == carol.peer_id
    chat(carol, [alice, bob], "two")
    item = failed(proj, job_id)
    assert "No space left on device" in item["failedReason"] and str(small_disk) not in item["failedReason"]
    assert item["failedAt"] >= began_ms - 1000 and item["recordingSize"] == 0
    assert httpx.get(item["recordingUrl"]).content == b""
    assert proj.get(STATUS, params={"roomId": room}).json() == {"status": "stopped"}
    assert proj.post(STOP, json={"roomId": room}).status_code == 404  # nothing active: not 500
    assert proj.live_counts()[room] == 3
    carol.leave()
    assert alice.recv_type("peer-left")["peerId"] == carol.peer_id
    assert bob.recv_type("peer-left")["peerId"] == carol.peer_id
    # No ghost: counted peers are exactly those connected, the bot included nowhere.
    assert proj.live_counts()[room] == 2
    assert proj.get(f"/api/v2/sdk/live-sessions/participants/{room}").json()["count"] == 2
    live = proj.live()[0]
    assert live["recordingCount"] == 1  # it did start

    # Space again: a new recording starts, records and stops as usual.
    free(small_disk)
    again = start(proj, room)
    assert again.status_code == 200, again.text
    chat(bob, [alice], "three")
    stopped = proj.post(STOP, json={"roomId": room})
    assert stopped.status_code == 200 and stopped.json()["id"] == again.json()["id"]
    good = recording(proj, again.json()["id"])
    assert good is not None and "failedReason" not in good
    events = [json.loads(line)["event"] for line in httpx.get(good["recordingUrl"]).content.splitlines()]
    assert [e["payload"] for e in events if e["type"] == "data"] == ["three"]
    chat(alice, [bob], "still here")
    alice.close()
    bob.close()


def test_a_disk_filling_mid_recording_keeps_what_was_written(server: Server, small_disk: Path) -> None:
    proj = server.project()
    room = proj.create_room()
    alice = proj.join(room)
    bob = proj.join(room)
    assert alice.recv_type("peer-joined")["peer"]["peerId"] == bob.peer_id
    job_id = start(proj, room).json()["id"]
    for i in range(3):
        chat(alice, [bob], i)
    # The writer has caught up: the three lines are on disk before it fills.
    path = small_disk / f"{job_id}.jsonl"
    assert eventually(lambda: path.read_bytes().count(b'"type":"data"') == 3)
    fill(small_disk)
    # A join whose `peer-joined` (5 KB of metadata) is more than the free bytes
    # left in the file's last page: the recording fails on it, the join does not.
    dave = proj.join(room, metadata="d" * 5000)
    assert alice.recv_type("peer-joined")["peer"]["peerId"] == dave.peer_id
    assert bob.recv_type("peer-joined")["peer"]["peerId"] == dave.peer_id
    chat(alice, [bob, dave], "x" * 10_000)
    chat(dave, [alice, bob], "after")
    dave.leave()
    assert alice.recv_type("peer-left")["peerId"] == bob.recv_type("peer-left")["peerId"] == dave.peer_id
    assert proj.live_counts()[room] == 2  # no ghost of dave
    assert proj.get(f"/api/v2/sdk/live-sessions/participants/{room}").json()["count"] == 2
    # A stop racing the failure: whichever ends the job, never a 500.
    assert proj.post(STOP, json={"roomId": room}).status_code in (200, 404)
    item = failed(proj, job_id)
    content = httpx.get(item["recordingUrl"]).content
    assert len(content) == item["recordingSize"] > 0 and content.endswith(b"\n")
    events = [json.loads(line)["event"] for line in content.splitlines()]  # whole lines only
    assert [e["payload"] for e in events if e["type"] == "data"] == [0, 1, 2]
    assert path.stat().st_size == item["recordingSize"]  # cut back to its last whole line
    free(small_disk)
    assert start(proj, room).status_code == 200
    chat(alice, [bob], "on")
    assert proj.post(STOP, json={"roomId": room}).status_code == 200
    alice.close()
    bob.close()


# --- a stalled disk, in-process ---------------------------------------------


class GatedFiles:
    """Stands in for `open` in the timeline module: files whose writes wait
    for a gate, noting which threads did file work."""

    def __init__(self, wait_s: float) -> None:
        self.gate = threading.Event()
        self.wait_s = wait_s
        self.threads: set[int] = set()

    def open(self, path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> GatedFile:
        self.threads.add(threading.get_ident())
        return GatedFile(self, open(path, mode, *args, **kwargs))


class GatedFile:
    def __init__(self, files: GatedFiles, real: Any) -> None:
        self._files = files
        self._real = real

    def write(self, data: bytes) -> int:
        self._files.threads.add(threading.get_ident())
        self._files.gate.wait(self._files.wait_s)  # bounded: old code must not hang the test
        return self._real.write(data)

    def __getattr__(self, name: str) -> Any:
        self._files.threads.add(threading.get_ident())
        return getattr(self._real, name)

    def __enter__(self) -> GatedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._real.close()


class LoopLag:
    """How late the event loop ran a 5 ms timer, at worst."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.monotonic() - began - 0.005)

    def stop(self) -> None:
        self._task.cancel()


class Room:
    """A room with one peer in it, on in-process services."""

    def __init__(self, services: Services, key: RoomKey, peer: Connection, key_id: str) -> None:
        self.services = services
        self.key = key
        self.peer = peer
        self.key_id = key_id

    @classmethod
    async def open(cls, services: Services) -> Room:
        now = services.clock()
        project = await services.store.project_for_wallet("0x" + "ab" * 20, now)
        _, api_key = await services.api_keys.create(project.project_id, "test", now)
        room = await services.store.create_room(project.project_id, None, False, now)
        key = RoomKey(project.project_id, room.room_id)
        permissions = resolve_permissions("speaker", None)
        peer = Connection(key=key, peer_id="peer-alice", role="speaker", permissions=permissions)
        admission = Admission(
            peer=PeerPresence(peer_id=peer.peer_id, role="speaker", metadata="", join_time=now),
            permissions=permissions,
            connection_id=peer.id,
            room_locked=False,
        )
        outcome, persisted = await services.membership.enter(peer, admission)
        await persisted
        assert outcome.refused is None
        return cls(services, key, peer, api_key.id)

    def token(self) -> str:
        claims = {
            "peerId": "peer-host",
            "roomId": self.key.room_id,
            "projectId": self.key.project_id,
            "keyId": self.key_id,
            "role": "host",
            "permissions": resolve_permissions("host", None),
            "metadata": "",
        }
        return self.services.signer.issue(claims, self.services.clock() // 1000, 600)

    async def record(self) -> EgressJob:
        return await self.services.egress.start(self.key.project_id, self.key.room_id, self.token(), "recording", [])

    def say(self, payload: Any) -> float:
        """Send a data message to the room as peers do; how long it took."""
        began = time.monotonic()
        self.services.hub.broadcast(
            self.key,
            {"type": "data", "from": "peer-bob", "label": "chat", "payload": payload},
            only=lambda connection: connection.can("canRecvData"),
        )
        return time.monotonic() - began

    def received(self) -> list[dict[str, Any]]:
        messages = []
        while self.peer.outbox:
            message = self.peer.outbox.popleft()
            assert isinstance(message, bytes), message  # a close frame: the peer was dropped
            messages.append(json.loads(message))
        return messages


def run_services(tmp_path: Path, scenario: Any) -> None:
    async def main() -> None:
        services = build_services(Settings(data_dir=tmp_path / "data"))
        try:
            await scenario(services)
        finally:
            await services.egress.stop_all()
            await services.aclose()

    asyncio.run(main())


def test_recording_file_work_stays_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = GatedFiles(wait_s=1.0)
    monkeypatch.setattr(timeline, "open", files.open, raising=False)

    async def scenario(services: Services) -> None:
        loop_thread = threading.get_ident()
        room = await Room.open(services)
        room.received()
        lag = LoopLag()
        job = await room.record()
        # The disk is stalled: every send still goes at once, the loop runs on.
        took = [room.say(i) for i in range(5)]
        await asyncio.sleep(0.1)
        lag.stop()
        # Bounds, not speed measures: the disk stays stalled until the gate
        # opens below, so file work on the loop would stall it that long.
        assert max(took) < 1.0 and lag.worst < 1.0, (took, lag.worst)
        assert [m["payload"] for m in room.received()] == list(range(5))
        files.gate.set()  # the disk is back: everything handed over gets written
        (stopped,) = await services.egress.stop(room.key.project_id, room.key.room_id, "recording")
        assert stopped.id == job.id and stopped.failed_reason is None
        path = services.egress.recording_path(job.id)
        content = path.read_bytes()
        assert len(content) == stopped.size
        events = [json.loads(line)["event"] for line in content.splitlines()]
        assert [e["payload"] for e in events if e["type"] == "data"] == list(range(5))
        assert files.threads and loop_thread not in files.threads

    run_services(tmp_path, scenario)


def test_a_stalled_disk_fails_the_recording_not_the_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    files = GatedFiles(wait_s=10.0)
    monkeypatch.setattr(timeline, "open", files.open, raising=False)
    monkeypatch.setattr(timeline, "PENDING_LIMIT_BYTES", 4096, raising=False)
    monkeypatch.setattr(timeline, "CLOSE_TIMEOUT_S", 0.3, raising=False)
    caplog.set_level(logging.ERROR)

    async def scenario(services: Services) -> None:
        room = await Room.open(services)
        room.received()
        token = room.token()
        job = await services.egress.start(room.key.project_id, room.key.room_id, token, "recording", [])
        payloads = [f"{i}:" + "y" * 200 for i in range(40)]  # far more than the 4 KiB that may wait
        for payload in payloads:
            # The disk stays stalled all along: a send that waited on it would
            # not return before the gate opens (a bound, not a speed measure).
            assert room.say(payload) < 2.0, "a send waited on the disk"
            await asyncio.sleep(0)

        async def ended() -> EgressJob:
            while True:  # finished recordings only
                stored, _ = await services.store.list_recordings(room.key.project_id, None, None, 10)
                if stored:
                    return stored[0]
                await asyncio.sleep(0.02)

        stored = await asyncio.wait_for(ended(), 5)
        assert await services.egress.status(room.key.project_id, room.key.room_id) == []
        # The peer got everything, and is still in the room; the recorder is not.
        assert [m["payload"] for m in room.received()] == payloads
        assert not room.peer.closing
        assert [p.peer_id for p in await services.presence.peers(room.key) or []] == [room.peer.peer_id]
        assert stored.id == job.id and not stored.active
        assert stored.failed_reason is not None and "too slow" in stored.failed_reason
        assert stored.failed_at is not None and stored.stopped_at is not None
        assert stored.failed_at <= stored.stopped_at
        with pytest.raises(NotFound):
            await services.egress.stop(room.key.project_id, room.key.room_id, "recording")
        # Logged once, with what it was about, and no token.
        logged = [
            r
            for r in caplog.records
            if getattr(r, "livesessions_context", {}).get("job") == job.id and r.levelname == "ERROR"
        ]
        assert len(logged) == 1 and logged[0].livesessions_context["room"] == room.key.room_id
        assert token not in logged[0].getMessage() and token not in str(logged[0].livesessions_context)

        files.gate.set()
        again = await room.record()
        room.say("again")
        (stopped,) = await services.egress.stop(room.key.project_id, room.key.room_id, "recording")
        assert stopped.failed_reason is None
        assert again.id != job.id

    run_services(tmp_path, scenario)
