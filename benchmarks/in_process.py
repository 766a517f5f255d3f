"""Per-request cost of the hot GETs inside the app, with no server or socket:
the ASGI app is called directly with a fake scope, N times per route.

    .venv/bin/python benchmarks/in_process.py [--rooms 20] [--requests 20000] [--profile]

What it shows is the app's own share of a request; uvicorn's parsing and the
socket come on top (see hot_gets.py for the whole thing).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

from livesessions.app import create_app
from livesessions.config import Settings
from livesessions.domain.live import Admission, PeerPresence, RoomKey
from livesessions.services import build_services


async def run(rooms: int, requests: int, profile: bool) -> None:
    services = build_services(Settings(data_dir=Path(tempfile.mkdtemp(prefix="ls-bench-")), rate_limit=0))
    app = create_app(services)
    await app.startup()
    project = await services.store.project_for_wallet("0x" + "1" * 40, 1)
    key, _ = await services.api_keys.create(project.project_id, "bench", 1)
    room_ids = []
    for index in range(rooms):
        room = await services.store.create_room(project.project_id, None, False, 1)
        room_ids.append(room.room_id)
        admission = Admission(PeerPresence(f"peer-{index}", "speaker", "", 1), {}, f"conn-{index}", False)
        await services.presence.join(RoomKey(project.project_id, room.room_id), admission, 1)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    def scope(path: str) -> dict[str, Any]:
        headers = [(b"host", b"127.0.0.1"), (b"x-api-key", key.encode()), (b"user-agent", b"bench")]
        return {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": headers}

    paths = ["/api/v2/sdk", "/api/v2/sdk/live-sessions", f"/api/v2/sdk/live-sessions/{room_ids[0]}"]
    for path in paths:
        started = time.perf_counter()
        for _ in range(requests):
            await app(scope(path), receive, send)
        per_request = (time.perf_counter() - started) / requests * 1e6
        assert sent[-2]["status"] == 200, sent[-2]
        sent.clear()
        print(f"{path:60} {per_request:7.2f} µs per request")
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(requests):
            await app(scope(paths[2]), receive, send)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    await app.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=20)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--profile", action="store_true", help="profile the single-room route too")
    args = parser.parse_args()
    asyncio.run(run(args.rooms, args.requests, args.profile))


if __name__ == "__main__":
    main()
