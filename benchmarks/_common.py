"""Shared helpers for the benchmarks: start the service on a free loopback
port with a throwaway data directory, make an API key, call the REST API.

Only the standard library and what the service itself depends on
(`websockets`, `uvicorn`) are used, so the benchmarks run from the service's
own virtualenv without the test extras.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"  # the benchmarks never leave loopback
BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
BIN_DIR = Path(sys.executable).parent
LIVESESSIONS = BIN_DIR / "livesessions"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def new_wallet() -> str:
    return "0x" + secrets.token_hex(20)


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc/<pid>/status (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def machine_info() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "loadavg_1_5_15": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def wait_http_ok(port: int, path: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=1)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
            conn.close()
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered on {HOST}:{port}{path} in {timeout} s")


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """Stop a process this script started (by its own handle, never by name)."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def service_args(port: int, data_dir: Path, rate_limit: float = 0.0) -> list[str]:
    """The `livesessions serve` flags every benchmark runs the service with."""
    return [
        "--host",
        HOST,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--rate-limit",
        str(rate_limit),
        "--log-level",
        "warning",
        # Every benchmark client comes from 127.0.0.1; thousands of peers
        # would trip the per-address cap, and a flood of churn the message
        # budget, which exist against hostile clients, not this one.
        "--max-connections-per-client",
        "0",
        "--peer-message-rate",
        "1000000",
        "--peer-message-burst",
        "1000000",
    ]


def log_problems(path: Path, words: tuple[str, ...] = ("Traceback", "ERROR", "Exception")) -> list[str]:
    """Lines of a server log that look like errors."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if any(word in line for word in words)]


class Service:
    """`livesessions serve` on a free loopback port with a temporary data dir."""

    def __init__(self, *, rate_limit: float = 0.0, extra: list[str] | None = None, keep_data: bool = False) -> None:
        if not LIVESESSIONS.exists():
            raise SystemExit(f"{LIVESESSIONS} not found: run this with the project's venv (.venv/bin/python)")
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="livesessions-bench-"))
        self.data_dir = self.tmp / "data"
        self.log_path = self.tmp / "server.log"
        self.rate_limit = rate_limit
        self.extra = extra or []
        self.keep_data = keep_data
        self.process: subprocess.Popen[bytes] | None = None
        self.base = f"http://{HOST}:{self.port}"
        self.ws_base = f"ws://{HOST}:{self.port}"

    def start(self) -> Service:
        args = [str(LIVESESSIONS), "serve", *service_args(self.port, self.data_dir, self.rate_limit), *self.extra]
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        wait_http_ok(self.port, "/api/v2/sdk", self.process)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def create_key(self, wallet: str | None = None) -> str:
        out = subprocess.run(
            [
                str(LIVESESSIONS),
                "keys",
                "create",
                "--wallet",
                wallet or new_wallet(),
                "--data-dir",
                str(self.data_dir),
                "--json",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return json.loads(out)["apiKey"]

    def log_problems(self) -> list[str]:
        return log_problems(self.log_path)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None
        if getattr(self, "_log", None):
            self._log.close()
        if not self.keep_data:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Api:
    """A keep-alive HTTP/1.1 client for one API key (setup and checks, not load)."""

    def __init__(self, port: int, key: str | None = None) -> None:
        self.port = port
        self.key = key
        self.conn = http.client.HTTPConnection(HOST, port, timeout=30)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        all_headers = {"x-api-key": self.key} if self.key else {}
        all_headers.update(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["content-type"] = "application/json"
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=all_headers)
                response = self.conn.getresponse()
                raw = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
                if attempt:
                    raise
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return response.status, parsed

    def create_room(self) -> str:
        status, body = self.request("POST", "/api/v2/sdk/rooms/create-room", {})
        if status != 201:
            raise RuntimeError(f"create-room answered {status}: {body}")
        return body["data"]["roomId"]

    def peer_token(self, room_id: str, **extra: Any) -> str:
        status, body = self.request("POST", "/api/v2/sdk/create-peer-token", {"roomId": room_id, **extra})
        if status != 200:
            raise RuntimeError(f"create-peer-token answered {status}: {body}")
        return body["token"]

    def live_sessions(self) -> list[dict[str, Any]]:
        status, body = self.request("GET", "/api/v2/sdk/live-sessions")
        if status != 200:
            raise RuntimeError(f"live-sessions answered {status}: {body}")
        return body["liveSessions"]

    def close(self) -> None:
        self.conn.close()


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / Path(name).name  # always under benchmarks/results/
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (from /proc/<pid>/stat)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and its parts (RssAnon: heap; RssFile: mapped files such as the
    SQLite -shm; RssShmem) from /proc/<pid>/status, in KiB."""
    wanted = {"VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"}
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in wanted:
            out[name] = int(rest.split()[0])
    return out
