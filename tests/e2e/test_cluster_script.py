"""scripts/cluster as a newcomer runs it: three scale-out nodes on one
PostgreSQL and one Redis behind HAProxy (deploy/haproxy-cluster.cfg), started,
used through the balancer, and stopped with one command each.

The script gets its ports, run directory, database and Redis from the
environment; here a fresh database, a private redis-server and free ports, so
it never touches the defaults (8080-8083, .cluster/, livesessions_cluster)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import httpx
import pytest

from backends import RedisServer, fresh_database, postgres_admin, require_redis_server, with_database
from support import BIN, Peer, Project, eventually, free_port, new_wallet, unavailable

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cluster"
HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)


@dataclass
class Cluster:
    env: dict[str, str]
    run_dir: Path
    lb: str
    nodes: list[str]
    database_url: str
    started: str = ""  # what `start` printed

    def run(self, command: str) -> subprocess.CompletedProcess[str]:
        # From a directory that is not the repository: the script finds its own way.
        return subprocess.run(
            [str(SCRIPT), command],
            env=self.env,
            cwd=self.run_dir.parent,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def pids(self) -> dict[str, int]:
        return {path.stem: int(path.read_text()) for path in sorted(self.run_dir.glob("*.pid"))}

    def create_key(self) -> str:
        out = subprocess.run(
            [str(BIN), "keys", "create", "--wallet", new_wallet(), "--database-url", self.database_url, "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out)["apiKey"]

    def through(self, base: str) -> SimpleNamespace:
        """What `Project` and `Peer` need to reach the service at `base`."""
        return SimpleNamespace(base=base, ws_base=base.replace("http://", "ws://"))


def running(pid: int) -> bool:
    """Alive, and not an exited process waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(") ", 1)[1][0] != "Z"


def joins_per_node(cluster: Cluster) -> list[int]:
    """Peers each node has admitted so far: its own counter, not the cluster's."""
    counts = []
    for node in cluster.nodes:
        text = httpx.get(node + "/metrics", timeout=5).text
        samples = [line for line in text.splitlines() if line.startswith("livesessions_joins_total")]
        counts.append(round(sum(float(line.split()[-1]) for line in samples)))
    return counts


@pytest.fixture
def services() -> Iterator[tuple[str, RedisServer]]:
    """A PostgreSQL admin URL and a private Redis."""
    if HAPROXY is None:
        unavailable("haproxy is not installed (apt-get install haproxy); scripts/cluster runs its nodes behind it")
    require_redis_server()
    admin = postgres_admin()
    redis = RedisServer()
    try:
        yield admin, redis
    finally:
        redis.stop()


def start_cluster(tmp_path: Path, database_url: str, redis_url: str, serve_args: str = "") -> Cluster:
    ports = [free_port() for _ in range(3)]
    lb_port = free_port()
    run_dir = tmp_path / "cluster"
    env = {
        **os.environ,
        "CLUSTER_DIR": str(run_dir),
        "NODE_PORTS": " ".join(map(str, ports)),
        "LB_PORT": str(lb_port),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LIVESESSIONS": str(BIN),
        "SERVE_ARGS": serve_args,
    }
    nodes = [f"http://127.0.0.1:{port}" for port in ports]
    cluster = Cluster(env, run_dir, f"http://127.0.0.1:{lb_port}", nodes, database_url)
    started = cluster.run("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"cluster is up: {cluster.lb}" in started.stdout
    assert f"keys create --wallet 0x<your wallet> --database-url '{database_url}'" in started.stdout
    cluster.started = started.stdout
    return cluster


def stop_cluster(cluster: Cluster) -> None:
    """Stop it, and check that every process it started is gone."""
    pids = cluster.pids()
    stopped = cluster.run("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert [name for name, pid in pids.items() if running(pid)] == []
    for base in [cluster.lb, *cluster.nodes]:
        with pytest.raises(httpx.ConnectError):
            httpx.get(base + "/healthz", timeout=2)
    status = cluster.run("status")
    assert status.returncode == 3, status.stdout
    assert "nothing runs" in status.stdout
    assert cluster.run("stop").returncode == 0  # stopping twice is fine


@pytest.fixture
def cluster(tmp_path: Path, services: tuple[str, RedisServer]) -> Iterator[Cluster]:
    admin, redis = services
    with fresh_database(admin) as database_url:
        cluster = start_cluster(tmp_path, database_url, redis.url)
        try:
            yield cluster
        finally:
            cluster.run("stop")


def test_one_command_starts_three_nodes_behind_a_balancer_and_one_stops_them(cluster: Cluster) -> None:
    # Started twice: the second says so and leaves the first alone.
    pids = cluster.pids()
    assert sorted(pids) == sorted(["haproxy", *(f"node-{node.rsplit(':', 1)[1]}" for node in cluster.nodes)])
    again = cluster.run("start")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stdout
    assert cluster.pids() == pids
    status = cluster.run("status")
    assert status.returncode == 0, status.stdout
    assert status.stdout.count(" ready ") == 3
    assert re.search(rf"balancer\s+{cluster.lb}\s+pid \d+\s+answers", status.stdout), status.stdout

    project = Project(cluster.through(cluster.lb), cluster.create_key())
    room = project.create_room()
    tokens = [project.token(room) for _ in range(6)]
    before = joins_per_node(cluster)
    peers = [Peer.connect(cluster.through(cluster.lb), token) for token in tokens]
    # Round-robin: each node holds some of them ...
    landed = [after - was for after, was in zip(joins_per_node(cluster), before, strict=True)]
    assert sum(landed) == 6 and all(landed), landed
    # ... and every node, asked directly, counts them all.
    for node in cluster.nodes:
        direct = Project(cluster.through(node), project.key)
        assert direct.live_counts() == {room: 6}, node
    assert project.live_counts() == {room: 6}
    # The first peer heard of each later one, wherever it connected.
    heard = {peers[0].recv_type("peer-joined")["peer"]["peerId"] for _ in peers[1:]}
    assert heard == {peer.peer_id for peer in peers[1:]}
    peers[-1].send({"type": "data", "to": "*", "label": "hello", "payload": 1})
    for peer in peers[:-1]:
        assert peer.recv_type("data")["from"] == peers[-1].peer_id

    for peer in peers[:3]:
        peer.leave()
    assert project.live_counts() == {room: 3}
    for peer in peers[3:]:
        peer.leave()
    assert project.live_counts() == {}

    # The balancer keeps metrics private; sign-in messages name the balancer.
    assert httpx.get(cluster.lb + "/metrics").status_code == 404
    message = httpx.get(cluster.lb + "/api/v2/auth/nonce", params={"address": "0x" + "11" * 20}).json()["message"]
    assert message.startswith(cluster.lb.removeprefix("http://") + " wants you")

    stop_cluster(cluster)


async def _drop(admin: str, name: str) -> None:
    conn = await asyncpg.connect(admin, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def test_a_missing_database_is_made_and_a_killed_node_is_routed_around(
    tmp_path: Path, services: tuple[str, RedisServer]
) -> None:
    admin, redis = services
    name = f"livesessions_test_{secrets.token_hex(6)}"
    cluster = None
    try:
        # A short node lease, so the killed node's peers go in about 2.5 s.
        cluster = start_cluster(tmp_path, with_database(admin, name), redis.url, "--node-lease 2 --grace-period 1")
        assert f"created the database {name}" in cluster.started
        project = Project(cluster.through(cluster.lb), cluster.create_key())
        room = project.create_room()
        tokens = [project.token(room) for _ in range(3)]
        peers = []
        victim = None
        for token in tokens:
            before = joins_per_node(cluster)
            peers.append(Peer.connect(cluster.through(cluster.lb), token))
            landed = [after - was for after, was in zip(joins_per_node(cluster), before, strict=True)]
            if landed[1]:
                victim = peers[-1]
        assert victim is not None, "no peer landed on the second node"
        survivors = [peer for peer in peers if peer is not victim]

        later = [project.token(room) for _ in range(3)]
        port = cluster.nodes[1].rsplit(":", 1)[1]
        os.kill(cluster.pids()[f"node-{port}"], signal.SIGKILL)
        killed_at = time.monotonic()
        # The balancer routes around it at once: a GET or WebSocket that meets
        # the dead node is tried again on another one.
        assert [project.get("/api/v2/sdk/live-sessions").status_code for _ in range(6)] == [200] * 6
        others = [Peer.connect(cluster.through(cluster.lb), token) for token in later]
        # Its peer is taken out by the survivors, and the others hear it left.
        assert eventually(lambda: project.live_counts() == {room: 5}, timeout=10), project.live_counts()
        assert time.monotonic() - killed_at < 10
        for peer in survivors:
            assert peer.recv_type("peer-left", timeout=5)["peerId"] == victim.peer_id

        status = cluster.run("status")
        assert status.returncode == 1, status.stdout
        assert re.search(rf"node\s+{cluster.nodes[1]}\s+not running", status.stdout), status.stdout
        # Part of it runs: start refuses rather than starting a second set.
        partial = cluster.run("start")
        assert partial.returncode == 1 and "part of the cluster runs" in partial.stderr, partial.stderr

        for peer in [*survivors, *others]:
            peer.close()
        victim.close()
        stop_cluster(cluster)
    finally:
        if cluster is not None:
            cluster.run("stop")
        asyncio.run(_drop(admin, name))


def test_with_redis_down_the_balancer_still_lets_the_nodes_answer(
    cluster: Cluster, services: tuple[str, RedisServer]
) -> None:
    _, redis = services
    project = Project(cluster.through(cluster.lb), cluster.create_key())
    assert project.live() == []
    redis.stop()
    # No node is ready (they all share that Redis), so none would get
    # traffic; the balancer then lets them answer for themselves.
    log = cluster.run_dir / "haproxy.log"
    assert eventually(lambda: "livesessions_ready has no server available" in log.read_text(), timeout=10)
    for _ in range(4):
        answer = project.get("/api/v2/sdk/live-sessions")
        assert answer.status_code == 503
        assert answer.headers["content-type"].startswith("application/json")
        assert "retry" in answer.json()["message"]
    status = cluster.run("status")
    assert status.stdout.count(" not ready ") == 3, status.stdout
    stop_cluster(cluster)
