"""The peer WebSocket against a real server: joining, messaging, leaving, refusals."""

from __future__ import annotations

import base64
import json
import os
import socket
import time

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from support import Peer, Project, Server, eventually, wait_closed


def test_join_sees_present_peers_and_others_see_the_join(project: Project) -> None:
    room = project.create_room()
    alice = project.join(room, role="host", metadata="alice")
    assert alice.joined["roomId"] == room
    assert alice.joined["peers"] == []
    assert alice.session_id

    bob = project.join(room, role="guest", metadata="bob")
    assert bob.joined["sessionId"] == alice.session_id
    assert [(p["peerId"], p["role"], p["metadata"]) for p in bob.joined["peers"]] == [(alice.peer_id, "host", "alice")]
    joined = alice.recv_type("peer-joined")
    assert joined["peer"]["peerId"] == bob.peer_id
    assert joined["peer"]["metadata"] == "bob"
    assert isinstance(joined["peer"]["joinTime"], int)

    bob.leave()
    assert alice.recv_type("peer-left") == {"type": "peer-left", "peerId": bob.peer_id}
    alice.close()


def test_data_to_everyone_and_to_listed_peers(project: Project) -> None:
    room = project.create_room()
    a, b, c = (project.join(room) for _ in range(3))
    a.send({"type": "data", "to": "*", "label": "chat", "payload": {"text": "hi"}})
    for peer in (b, c):
        assert peer.recv_type("data") == {"type": "data", "from": a.peer_id, "label": "chat", "payload": {"text": "hi"}}

    a.send({"type": "data", "to": [c.peer_id], "label": "dm", "payload": 42})
    assert c.recv_type("data")["payload"] == 42
    # b must not get the direct message: the next data it sees is a later broadcast.
    a.send({"type": "data", "to": "*", "label": "after", "payload": None})
    assert b.recv_type("data")["label"] == "after"
    # the sender never receives its own broadcast
    c.send({"type": "ping"})
    with pytest.raises(TimeoutError):
        a.recv_type("data", timeout=0.3)
    for peer in (a, b, c):
        peer.close()


def test_permissions_are_enforced(project: Project) -> None:
    room = project.create_room()
    # A peer whose token takes sending data and metadata updates away.
    guest = project.join(room, role="guest", permissions={"canSendData": False, "canUpdateMetadata": False})
    mute = project.join(room, role="speaker", permissions={"canRecvData": False})
    speaker = project.join(room, role="speaker")

    guest.send({"type": "data", "to": "*", "payload": 1})
    assert guest.recv_type("error")["message"] == "not permitted: canSendData"
    guest.send({"type": "update-metadata", "metadata": "x"})
    assert guest.recv_type("error")["message"] == "not permitted: canUpdateMetadata"

    speaker.send({"type": "data", "to": "*", "label": "l", "payload": 1})
    assert guest.recv_type("data")["payload"] == 1
    with pytest.raises(TimeoutError):
        mute.recv_type("data", timeout=0.3)
    for peer in (guest, mute, speaker):
        peer.close()


def test_metadata_update_reaches_everyone_and_the_participants_route(project: Project) -> None:
    room = project.create_room()
    a = project.join(room, metadata="before")
    b = project.join(room)
    a.send({"type": "update-metadata", "metadata": "after"})
    expected = {"type": "metadata-updated", "peerId": a.peer_id, "metadata": "after"}
    assert a.recv_type("metadata-updated") == expected
    assert b.recv_type("metadata-updated") == expected
    participants = project.get(f"/api/v2/sdk/live-sessions/participants/{room}").json()["participants"]
    assert {p["peerId"]: p["metadata"] for p in participants}[a.peer_id] == "after"

    a.send({"type": "update-metadata", "metadata": "x" * (5 * 1024 + 1)})
    assert "at most" in a.recv_type("error")["message"]
    a.close()
    b.close()


def test_same_peer_reconnecting_replaces_its_old_connection(project: Project) -> None:
    room = project.create_room()
    token = project.token(room)
    other = project.join(room)
    first = project.join(room, token=token)
    other.recv_type("peer-joined")
    second = project.join(room, token=token)
    assert second.peer_id == first.peer_id
    assert second.session_id == first.session_id
    code, _ = wait_closed(first.ws)
    assert code == 4009
    assert project.live_counts() == {room: 2}
    # The replaced connection's end is not a leave.
    with pytest.raises(TimeoutError):
        other.recv_type("peer-left", timeout=0.3)
    second.leave()
    assert other.recv_type("peer-left")["peerId"] == second.peer_id
    assert project.live_counts() == {room: 1}
    other.close()


def _refusal(server: Server, token: str) -> tuple[int | None, str | None]:
    ws = connect(f"{server.ws_base}/ws?token={token}")
    return wait_closed(ws)


def test_bad_and_expired_tokens_are_refused_with_4001(server: Server, project: Project) -> None:
    room = project.create_room()
    assert _refusal(server, "not-a-jwt")[0] == 4001
    assert _refusal(server, "")[0] == 4001
    token = project.token(room, ttl=1)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["roomId"] = "aaa-aaaa-aaa"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert _refusal(server, f"{header}.{forged}.{signature}")[0] == 4001
    time.sleep(2.1)
    assert _refusal(server, token)[0] == 4001
    assert project.live() == []


def test_locked_room_refuses_non_admins_with_4003(server: Server, project: Project) -> None:
    room = project.create_room(roomLocked=True)
    code, reason = _refusal(server, project.token(room, role="speaker"))
    assert (code, reason) == (4003, "room is locked")
    assert project.live() == []
    host = project.join(room, role="host")
    assert project.live_counts() == {room: 1}
    host.close()


def test_admin_token_option_locks_the_room_for_the_session(server: Server, project: Project) -> None:
    room = project.create_room()
    host = project.join(room, role="host", options={"roomLocked": True})
    assert _refusal(server, project.token(room, role="guest"))[0] == 4003
    host.close()


def test_full_room_refuses_with_4029(server: Server, project: Project) -> None:
    room = project.create_room()
    a = project.join(room)
    b = project.join(room)
    code, _ = _refusal(server, project.token(room, options={"maxPeersAllowed": 2}))
    assert code == 4029
    assert project.live_counts() == {room: 2}
    a.close()
    b.close()


def test_bots_are_not_peers(project: Project) -> None:
    room = project.create_room()
    bot = project.join(room, role="bot", permissions={"canRecvData": True})
    assert project.live() == []
    human = project.join(room)
    assert human.joined["peers"] == []
    assert project.live_counts() == {room: 1}
    human.send({"type": "data", "to": "*", "label": "chat", "payload": "for the recorder"})
    assert bot.recv_type("data")["payload"] == "for the recorder"
    bot.close()
    with pytest.raises(TimeoutError):
        human.recv_type("peer-left", timeout=0.3)
    participants = project.get(f"/api/v2/sdk/live-sessions/participants/{room}").json()
    assert participants["count"] == 1
    human.close()


def test_garbage_frames_get_errors_and_hurt_no_one(project: Project) -> None:
    room = project.create_room()
    noisy = project.join(room)
    calm = project.join(room)
    for frame in [
        "not json",
        "[]",
        "42",
        '{"type": 7}',
        '{"type": "bogus"}',
        '{"no": "type"}',
        json.dumps({"type": "data", "to": 5}),
        json.dumps({"type": "data", "to": "*", "label": ["x"]}),
    ]:
        noisy.ws.send(frame)
        assert noisy.recv_type("error")["message"]
    noisy.ws.send(b"\x00\x01binary")
    assert "binary" in noisy.recv_type("error")["message"]
    noisy.send({"type": "data", "to": "*", "label": "still", "payload": "alive"})
    assert calm.recv_type("data")["payload"] == "alive"
    assert project.live_counts() == {room: 2}
    noisy.close()
    calm.close()


def test_oversize_frame_closes_only_that_peer(project: Project) -> None:
    room = project.create_room()
    big = project.join(room)
    calm = project.join(room)
    big.ws.send(json.dumps({"type": "data", "to": "*", "payload": "x" * 70_000}))
    code, _ = wait_closed(big.ws)
    assert code == 1009
    assert calm.recv_type("peer-left")["peerId"] == big.peer_id
    assert project.live_counts() == {room: 1}
    calm.close()


def test_other_paths_are_not_websockets(server: Server) -> None:
    with pytest.raises(InvalidStatus):
        connect(f"{server.ws_base}/nope")


def _silent_peer(server: Server, token: str) -> socket.socket:
    """Open a WebSocket by hand, read `joined`, then never answer again."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"joined" not in response:
        response += sock.recv(65536)
    assert b" 101 " in response.split(b"\r\n", 1)[0]
    return sock


def test_silent_peer_is_removed_within_the_ping_bound(server: Server, project: Project) -> None:
    room = project.create_room()
    watcher = project.join(room)
    silent = _silent_peer(server, project.token(room))
    assert project.live_counts() == {room: 2}
    started = time.monotonic()
    # ping interval 0.5 s + timeout 0.5 s: gone well within 3 s
    assert eventually(lambda: project.live_counts() == {room: 1}, timeout=5)
    assert time.monotonic() - started < 3
    assert watcher.recv_type("peer-left")
    silent.close()
    watcher.close()


def test_dropped_connection_counts_as_leaving(project: Project) -> None:
    room = project.create_room()
    watcher = project.join(room)
    peer = project.join(room)
    peer.ws.socket.close()  # no close frame: the TCP connection just ends
    assert watcher.recv_type("peer-left")["peerId"] == peer.peer_id
    assert project.live_counts() == {room: 1}
    watcher.close()


def test_other_projects_tokens_only_reach_their_own_room(project: Project, other_project: Project) -> None:
    mine = project.create_room()
    theirs = other_project.create_room()
    peer = other_project.join(theirs)
    assert project.live() == []
    assert other_project.live_counts() == {theirs: 1}
    assert project.post("/api/v2/sdk/create-peer-token", json={"roomId": theirs}).status_code == 404
    me = project.join(mine)
    assert me.joined["peers"] == []
    peer.close()
    me.close()


def test_peer_recv_helper_roundtrip(project: Project) -> None:
    room = project.create_room()
    peer = project.join(room)
    peer.send({"type": "ping"})
    assert peer.recv_type("pong") == {"type": "pong"}
    peer.leave()
    assert project.live() == []
    assert isinstance(peer, Peer)
