"""Settings that trade memory and CPU for features, through real processes:
permessage-deflate only when asked for, and the event loop's lag at /metrics."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from support import Server, eventually

DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"


def start(tmp_path: Path, **options: object) -> Iterator[Server]:
    (tmp_path / "data").mkdir()
    server = Server(tmp_path / "data", **options).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def default(tmp_path: Path) -> Iterator[Server]:
    yield from start(tmp_path)


@pytest.fixture
def compressing(tmp_path: Path) -> Iterator[Server]:
    yield from start(tmp_path, **{"ws-compression": "yes"})


@pytest.fixture
def unprobed(tmp_path: Path) -> Iterator[Server]:
    yield from start(tmp_path, **{"loop-probe-interval": 0})


def negotiated(server: Server) -> str | None:
    """What the server answers a browser-like offer of compression with, once
    the peer has joined."""
    project = server.project()
    token = project.token(project.create_room())
    with connect(f"{server.ws_base}/ws?token={token}", open_timeout=10, compression="deflate") as ws:
        assert '"type":"joined"' in str(ws.recv(timeout=10))
        assert ws.response is not None
        return ws.response.headers.get("sec-websocket-extensions")


def test_peers_are_not_offered_compression_by_default(default: Server) -> None:
    assert negotiated(default) is None


def test_compression_is_negotiated_when_turned_on(compressing: Server) -> None:
    assert (negotiated(compressing) or "").startswith("permessage-deflate")


def lag_samples(server: Server) -> int:
    text = httpx.get(server.base + "/metrics", timeout=5).text
    found = re.search(r"^livesessions_event_loop_lag_seconds_count (\S+)$", text, re.MULTILINE)
    assert found is not None, "the lag histogram is missing"
    return int(float(found.group(1)))


def test_the_event_loop_lag_is_sampled_and_reported(default: Server) -> None:
    first = lag_samples(default)
    # Sampled ten times a second by default.
    assert eventually(lambda: lag_samples(default) >= first + 5, timeout=10)
    text = httpx.get(default.base + "/metrics", timeout=5).text
    longest = re.search(r"^livesessions_event_loop_lag_max_seconds (\S+)$", text, re.MULTILINE)
    assert longest is not None and 0 <= float(longest.group(1)) < 5


def test_the_probe_can_be_turned_off(unprobed: Server) -> None:
    assert lag_samples(unprobed) == 0
