"""Bad input that only a real connection can carry: a body sent chunked with
no length, a body cut short by the client going away."""

from __future__ import annotations

import socket

import httpx

from support import Project, Server


def test_oversize_body_without_length_is_413(server: Server, project: Project) -> None:
    def chunks():
        for _ in range(70):
            yield b"x" * 1024

    response = project.post(
        "/api/v2/sdk/rooms/create-room", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_half_sent_body_does_not_hang_the_server(server: Server, project: Project) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(
        b"POST /api/v2/sdk/rooms/create-room HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"x-api-key: " + project.key.encode() + b'\r\nContent-Length: 100\r\n\r\n{"roomLocked"'
    )
    sock.close()  # the client goes away mid-body
    assert httpx.get(server.base + "/api/v2/sdk", timeout=5).status_code == 200
    assert project.get("/api/v2/sdk/rooms/get-rooms").json()["count"] == 0
