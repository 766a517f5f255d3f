"""Many `livesessions serve` nodes in scale-out mode, for the multi-node tests
(tests/e2e/test_cluster*.py).

* `Cluster(root, database_url, n=3, redis=None, **server_options)`: n node
  processes on free loopback ports, sharing one PostgreSQL database and one
  Redis (a `RedisServer` of its own unless given), with short timings
  (CLUSTER_OPTIONS, overridden by `server_options`) so that what the
  contract bounds in seconds happens in about one (node lease 2 s, grace 1 s,
  pings every 0.5 s). A node can be killed (SIGKILL), paused (SIGSTOP, as if
  cut off), resumed and started again on the same port; Redis can be killed
  and started again on the same port, empty.
* `RedisServer` (tests/backends.py): a private redis-server, nothing on disk, that comes back
  on the same port.
* `PrivatePostgres`: a PostgreSQL of the test's own (Debian's initdb/pg_ctl in
  a temporary directory, run as `postgres` when the tests run as root), to
  stop and start again. `PrivatePostgres.missing()` says why one cannot be
  made here, if it cannot.

`cluster_on_fresh_database(root)` starts one on a fresh database of the local
PostgreSQL (tests/backends.py), skipping (or failing where required) without
PostgreSQL or redis-server. `ClusterProject` is one project's view: a
`Project` per node, peers joined through a given node, every node's counts.
`RowLock` holds a row lock in PostgreSQL from the test, to slow a node's writes.

Every client helper is the one of tests/support.py: a `Node` has the `base`
and `ws_base` a `Project` and `Peer` need.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from backends import RedisServer, fresh_database, postgres_admin, require_redis_server
from support import BIN, Peer, Project, free_port, new_wallet

__all__ = [
    "CLUSTER_OPTIONS",
    "Cluster",
    "ClusterProject",
    "Node",
    "PrivatePostgres",
    "RedisServer",
    "RowLock",
    "cluster_on_fresh_database",
    "in_threads",
]

# Short timings, so that a dead node is reaped within about 2.5 s (lease plus
# one heartbeat), a room's grace ends after 1 s and a silent peer goes in 1 s.
CLUSTER_OPTIONS: dict[str, Any] = {
    "node-lease": 2.0,
    "grace-period": 1.0,
    "ping-interval": 0.5,
    "ping-timeout": 0.5,
    "failed-auths-per-minute": 100_000,
    "rate-limit": 0,
    "peer-message-rate": 1000,
    "peer-message-burst": 1000,
    # webhook tests deliver to a receiver on 127.0.0.1
    "allow-private-webhook-urls": "yes",
}


# --- Redis ---------------------------------------------------------------------


# --- PostgreSQL of the test's own ----------------------------------------------------


def _postgres_bin() -> Path | None:
    """The directory of initdb and pg_ctl: on PATH, or Debian's newest."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
    for directory in versions:
        if (directory / "initdb").exists() and (directory / "pg_ctl").exists():
            return directory
    return None


class PrivatePostgres:
    """A PostgreSQL server of the test's own, in a temporary directory, on a
    free port (trust authentication, user `postgres`, no fsync): it can be
    stopped and started again with its data, which the system one cannot."""

    def __init__(self) -> None:
        reason = self.missing()
        if reason is not None:
            raise RuntimeError(reason)
        bin_dir = _postgres_bin()
        assert bin_dir is not None
        self._bin = bin_dir
        self._as_root = os.geteuid() == 0
        self._tmp = tempfile.mkdtemp(prefix="livesessions-pg-")
        self.data = Path(self._tmp, "data")
        self.socket_dir = Path(self._tmp, "run")
        self.log = Path(self._tmp, "postgres.log")
        self.socket_dir.mkdir()
        if self._as_root:
            shutil.chown(self._tmp, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self.port = free_port()
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        self.start()

    @staticmethod
    def missing() -> str | None:
        """Why no private PostgreSQL can be made here (None: it can)."""
        bin_dir = _postgres_bin()
        if bin_dir is None:
            return "PostgreSQL's server binaries (initdb, pg_ctl) are not installed (apt-get install postgresql)"
        if os.geteuid() == 0:
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no `postgres` user to run a private PostgreSQL as"
            if shutil.which("runuser") is None:
                return "running as root and `runuser` is missing: cannot run a private PostgreSQL as `postgres`"
        return None

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self._bin / tool), *args]
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=60)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += " -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        args = ("-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "-o", options, "start")
        started = self._run("pg_ctl", *args, check=False)
        if started.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {started.stdout}{started.stderr}{self._log_tail()}")

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def start_if_stopped(self) -> None:
        if not self.running:
            self.start()

    def stop(self, mode: str = "fast") -> None:
        """Stop it: `fast` (clients are disconnected) or `immediate` (a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", check=False)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text()[-2000:]
        return ""

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self._tmp, ignore_errors=True)


# --- nodes -----------------------------------------------------------------------------


class Node:
    """One `livesessions serve` process of a cluster, on a port of its own
    that it keeps across restarts."""

    def __init__(self, cluster: Cluster, index: int) -> None:
        self.cluster = cluster
        self.index = index
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.ws_base = f"ws://127.0.0.1:{self.port}"
        self.data_dir = cluster.root / f"node{index}"
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self._log: Any = None

    def __repr__(self) -> str:
        return f"<node {self.index} :{self.port}>"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        """Start the process; `wait_ready` waits for it to answer."""
        assert not self.running
        args = [
            *(str(BIN), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)),
            *("--database-url", self.cluster.database_url, "--redis-url", self.cluster.redis.url),
        ]
        for name, value in self.cluster.options.items():
            args += [f"--{name}", str(value)]
        self._log = open(self.cluster.root / f"node{self.index}.log", "ab")  # kept open while it runs
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        self.paused = False

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.base + "/api/v2/sdk", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"{self} did not start in time:\n{self.log_tail()}")

    def start(self) -> Node:
        self.spawn()
        self.wait_ready()
        return self

    def kill(self) -> None:
        """SIGKILL: no chance to tidy up; its lease runs out in Redis."""
        if self.process is None:
            return
        if self.paused:
            self.process.send_signal(signal.SIGCONT)
        self.process.kill()
        self.process.wait()
        self._closed()

    def stop(self) -> None:
        """SIGTERM, as an operator stops it."""
        if self.process is None:
            return
        if self.paused:
            self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._closed()

    def pause(self) -> None:
        """SIGSTOP: the node neither serves nor renews its lease, as if it
        were cut off, and its sockets stay open."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def _closed(self) -> None:
        self.process = None
        self.paused = False
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, chars: int = 3000) -> str:
        path = self.cluster.root / f"node{self.index}.log"
        with contextlib.suppress(OSError):
            return path.read_text(errors="replace")[-chars:]
        return ""


class Cluster:
    """n nodes on one PostgreSQL database and one Redis."""

    def __init__(
        self, root: Path, database_url: str, n: int = 3, redis: RedisServer | None = None, **options: Any
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.database_url = database_url
        self.redis = redis or RedisServer()
        self._own_redis = redis is None
        self.options = {**CLUSTER_OPTIONS, **options}
        self.nodes = [Node(self, i) for i in range(n)]
        self._clients: list[httpx.Client] = []

    def __getitem__(self, index: int) -> Node:
        return self.nodes[index]

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def lease(self) -> float:
        return float(self.options["node-lease"])

    @property
    def grace(self) -> float:
        return float(self.options["grace-period"])

    @property
    def bases(self) -> list[str]:
        """Each node's base URL, http://127.0.0.1:PORT."""
        return [node.base for node in self.nodes]

    def restart_redis(self) -> None:
        """Kill Redis (SIGKILL) and start it again on the same port, empty."""
        self.redis.kill()
        self.redis.start()

    def start(self) -> Cluster:
        """Start every node (at once: migrations run under a lock) and wait for all."""
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.wait_ready()
        return self

    def heal(self) -> None:
        """Whatever a test broke, put back: Redis running, every node running and not paused."""
        if not self.redis.running:
            self.redis.start()
        for node in self.nodes:
            if node.paused:
                node.resume()
        starting = [node for node in self.nodes if not node.running]
        for node in starting:
            node.spawn()
        for node in starting:
            node.wait_ready()

    def create_key(self, wallet: str | None = None) -> str:
        """A key made by the real `livesessions keys create --database-url` command."""
        out = subprocess.run(
            [
                *(str(BIN), "keys", "create", "--wallet", wallet or new_wallet()),
                *("--database-url", self.database_url, "--json"),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        return json.loads(out)["apiKey"]

    def project(self, wallet: str | None = None) -> ClusterProject:
        return ClusterProject(self, self.create_key(wallet))

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
        if self._own_redis:
            self.redis.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {node} ---\n{node.log_tail()}" for node in self.nodes)


class ClusterProject:
    """One project's view of the cluster: a `Project` (tests/support.py) on each node."""

    def __init__(self, cluster: Cluster, key: str) -> None:
        self.cluster = cluster
        self.key = key
        self.on = [Project(node, key) for node in cluster.nodes]  # type: ignore[arg-type]
        self.peers: list[Peer] = []

    def __getitem__(self, index: int) -> Project:
        return self.on[index]

    def create_room(self, **body: Any) -> str:
        return self.on[0].create_room(**body)

    def token(self, room_id: str, **body: Any) -> str:
        return self.on[0].token(room_id, **body)

    def join(self, node: int, room_id: str, token: str | None = None, **body: Any) -> Peer:
        """A peer joined through node `node` (closed, if still open, by `close`)."""
        peer = Peer.connect(self.cluster.nodes[node], token or self.token(room_id, **body))
        # A node killed or paused never answers a close: do not wait 10 s for it.
        peer.ws.close_timeout = 1  # type: ignore[union-attr]
        self.peers.append(peer)
        return peer

    def connect(self, node: int, token: str) -> tuple[Peer | None, int | None]:
        """Try to join through node `node`: (the peer, None) when admitted,
        (None, close code) when refused."""
        ws = connect(f"{self.cluster.nodes[node].ws_base}/ws?token={token}", open_timeout=10, close_timeout=1)
        try:
            message = json.loads(ws.recv(timeout=10))
        except ConnectionClosed as closed:
            return None, closed.rcvd.code if closed.rcvd else None
        assert message["type"] == "joined", message
        peer = Peer(ws, message)
        self.peers.append(peer)
        return peer, None

    def live_counts(self, node: int) -> dict[str, int]:
        return self.on[node].live_counts()

    def running_nodes(self) -> list[int]:
        return [node.index for node in self.cluster.nodes if node.running and not node.paused]

    def counts_everywhere(self, nodes: list[int] | None = None) -> list[dict[str, int] | None]:
        """Each running node's {room: currentPeerCount} (None for an answer other than 200)."""
        answers: list[dict[str, int] | None] = []
        for index in self.running_nodes() if nodes is None else nodes:
            response = self.on[index].get("/api/v2/sdk/live-sessions")
            answers.append(
                {item["roomId"]: item["currentPeerCount"] for item in response.json()["liveSessions"]}
                if response.status_code == 200
                else None
            )
        return answers

    def sessions(self, room_id: str, node: int = 0) -> list[dict[str, Any]]:
        response = self.on[node].get("/api/v2/sdk/rooms/session-details", params={"roomId": room_id})
        assert response.status_code == 200, response.text
        return response.json()["sessions"]

    def participants(self, session_id: str, node: int = 0) -> list[dict[str, Any]]:
        response = self.on[node].get("/api/v2/sdk/rooms/participant-list", params={"sessionId": session_id})
        assert response.status_code == 200, response.text
        return response.json()["participants"]

    def close(self) -> None:
        """Close what the test left open (quickly, whatever state its node is in)."""
        for peer in self.peers:
            with contextlib.suppress(Exception):
                peer.ws.close_timeout = 0.2  # type: ignore[union-attr]
                peer.close()
        for project in self.on:
            project.http.close()


class RowLock:
    """A transaction of the test's own in PostgreSQL, holding what `statement`
    locks (e.g. `SELECT … FOR UPDATE`) until the `with` block ends: a node
    whose writes need it waits, as behind a slow or contended database."""

    def __init__(self, url: str, statement: str, *args: Any) -> None:
        self.url, self.statement, self.args = url, statement, args
        self._held = threading.Event()
        self._release = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    async def _hold(self) -> None:
        try:
            conn = await asyncpg.connect(self.url, timeout=5)
            try:
                transaction = conn.transaction()
                await transaction.start()
                await conn.execute(self.statement, *self.args)
                self._held.set()
                await asyncio.get_running_loop().run_in_executor(None, self._release.wait)
                await transaction.rollback()
            finally:
                await conn.close()
        except BaseException as exc:  # noqa: BLE001 - raised in the test's thread
            self._error = exc
            self._held.set()

    def __enter__(self) -> RowLock:
        self._thread.start()
        self._held.wait(10)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._thread.join(10)


@contextlib.contextmanager
def cluster_on_fresh_database(root: Path, n: int = 3, **options: Any) -> Iterator[Cluster]:
    """A started cluster on a fresh database of the local PostgreSQL and a
    Redis of its own; skips (or fails where required) without either."""
    require_redis_server()
    admin = postgres_admin()
    with fresh_database(admin) as url:
        cluster = Cluster(root, url, n, **options)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.close()


def in_threads(work: list[Callable[[], Any]]) -> list[Any]:
    """Run each callable in a thread of its own, started together (a barrier);
    their results (or the exception each raised) in the same order."""
    results: list[Any] = [None] * len(work)
    barrier = threading.Barrier(len(work))

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work[i]()
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results
