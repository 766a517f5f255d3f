"""The README's reverse-proxy example (deploy/nginx.conf), run in Debian's nginx
in front of a real server: routes, the peer WebSocket, client addresses."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support import Peer, Server, free_port, unavailable

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[Server, str]]:
    if NGINX is None:
        unavailable("nginx is not installed: apt-get install nginx-light")
    port = free_port()
    server = Server(
        tmp_path / "data",
        **{"public-url": f"http://127.0.0.1:{port}", "trusted-proxies": "127.0.0.1", "failed-auths-per-minute": 2},
    )
    site = EXAMPLE.read_text()
    site = site.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{server.port};")
    site = re.sub(r"listen 80;", f"listen 127.0.0.1:{port};", site)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(f"""
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/error.log;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    include {tmp_path}/site.conf;
}}
""")
    server.start()
    nginx = subprocess.Popen([NGINX, "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"], stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if httpx.get(base + "/api/v2/sdk", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert nginx.poll() is None, nginx.stderr.read().decode() if nginx.stderr else ""
            assert time.monotonic() < deadline, "nginx did not come up"
            time.sleep(0.05)
        yield server, base
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        server.stop()


def test_routes_and_websockets_work_through_the_example_proxy(proxied: tuple[Server, str]) -> None:
    server, base = proxied
    project = server.project()
    project.http = httpx.Client(base_url=base, headers={"x-api-key": project.key}, timeout=10)
    room = project.create_room()
    through = Server(server.data_dir)  # a handle that points the WebSocket at the proxy
    through.ws_base = base.replace("http://", "ws://")
    peer = Peer.connect(through, project.token(room))
    assert project.live_counts() == {room: 1}
    peer.send({"type": "ping"})
    assert peer.recv_type("pong")["type"] == "pong"
    peer.leave()
    assert project.live_counts() == {}
    # Links and sign-in messages name the public address, not the upstream one.
    message = httpx.get(base + "/api/v2/auth/nonce", params={"address": "0x" + "11" * 20}).json()["message"]
    assert message.startswith(base.removeprefix("http://") + " wants you")
    # Metrics stay private: not through the proxy, only on the service itself.
    assert httpx.get(base + "/metrics").status_code == 404
    assert httpx.get(server.base + "/metrics").status_code == 200


def test_each_client_behind_the_proxy_has_its_own_limits(proxied: tuple[Server, str]) -> None:
    _, base = proxied
    url = base + "/api/v2/sdk/live-sessions"

    def guess(source: str, **headers: str) -> int:
        transport = httpx.HTTPTransport(local_address=source)
        with httpx.Client(transport=transport) as client:
            return client.get(url, headers={"x-api-key": "lsk_guess", **headers}).status_code

    assert [guess("127.0.0.2") for _ in range(3)] == [401, 401, 429]
    # A forged X-Forwarded-For is replaced by the proxy: no way out of the limit.
    assert guess("127.0.0.2", **{"x-forwarded-for": "198.51.100.9"}) == 429
    # Another client is not held back by the first.
    assert guess("127.0.0.3") == 401
