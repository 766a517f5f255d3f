"""Moderation: ending a live session for everyone, removing one peer (the
contract's "Moderation"), with the history and counts they leave."""

from __future__ import annotations

import pytest

from support import LocalApp, Project, eventually

SDK = "/api/v2/sdk"
START = "/api/v1/recording/start"
STATUS = "/api/v1/recording/status"


def end(project: Project, room: str, **body: object) -> tuple[int, dict]:
    answer = project.post(f"{SDK}/live-sessions/{room}/end", json=body)
    return answer.status_code, answer.json()


def remove(project: Project, room: str, peer_id: str) -> tuple[int, dict]:
    answer = project.post(f"{SDK}/live-sessions/{room}/peers/{peer_id}/remove")
    return answer.status_code, answer.json()


def sessions(project: Project, room: str) -> list[dict]:
    return project.get(f"{SDK}/rooms/session-details", params={"roomId": room}).json()["sessions"]


def participants(project: Project, session_id: str) -> dict[str, dict]:
    listed = project.get(f"{SDK}/rooms/participant-list", params={"sessionId": session_id}).json()["participants"]
    return {p["peerId"]: p for p in listed}


def test_ending_a_session_disconnects_everyone_at_once_and_stops_its_recording(app: LocalApp, project: Project) -> None:
    room = project.create_room()
    peers = [project.join(room) for _ in range(3)]
    session_id = peers[0].session_id
    assert (
        project.post(START, json={"roomId": room, "token": project.token(room), "type": "recording"}).status_code == 200
    )
    before = app.clock()
    assert end(project, room) == (200, {"ok": True})
    for peer in peers:
        assert peer.ws.wait_closed()[0] == 4010
    # No grace: the session is over now, in the live answers and in history.
    assert project.live() == []
    (session,) = sessions(project, room)
    assert session["sessionId"] == session_id and before <= session["endTime"] <= app.clock()
    assert all(p["exitTime"] == session["endTime"] for p in participants(project, session_id).values())
    recordings = eventually(lambda: project.get(f"{SDK}/recordings").json()["recordings"])
    assert len(recordings) == 1
    assert project.get(STATUS, params={"roomId": room}).json() == {"status": "stopped"}
    # Not locked: anyone may come back, into a new session.
    again = project.join(room)
    assert again.session_id != session_id
    again.close()


def test_ending_with_lock_leaves_the_room_locked_for_all_but_admins(project: Project) -> None:
    room = project.create_room()
    peer = project.join(room)
    assert end(project, room, lock=True) == (200, {"ok": True})
    assert peer.ws.wait_closed()[0] == 4010
    assert project.get(f"{SDK}/rooms/room-details/{room}").json()["roomLocked"] is True
    with pytest.raises(Exception, match="4003"):
        project.join(room, role="speaker")
    host = project.join(room, role="host")
    host.close()


def test_ending_what_is_not_live_is_404(project: Project) -> None:
    room = project.create_room()
    assert end(project, room)[0] == 404
    assert end(project, "abc-defg-hij")[0] == 404
    assert end(project, "not a room")[0] == 404
    peer = project.join(room)
    other = project.server.project()
    assert end(other, room)[0] == 404  # another project's room is invisible
    assert project.post(f"{SDK}/live-sessions/{room}/end", json={"lock": "yes"}).status_code == 400
    assert project.live()[0]["currentPeerCount"] == 1
    peer.close()


def test_removing_a_peer_closes_it_and_tells_the_others(app: LocalApp, project: Project) -> None:
    room = project.create_room()
    alice, bob = project.join(room), project.join(room)
    alice.recv_type("peer-joined")
    assert remove(project, room, bob.peer_id) == (200, {"ok": True})
    assert bob.ws.wait_closed()[0] == 4011
    assert alice.recv_type("peer-left")["peerId"] == bob.peer_id
    assert project.live()[0]["currentPeerCount"] == 1
    exits = participants(project, alice.session_id)
    assert exits[bob.peer_id]["exitTime"] is not None and exits[alice.peer_id].get("exitTime") is None
    # Gone: a second removal, a stranger, another project, a bot: all "Peer Not Found".
    not_found = (404, {"ok": False, "message": "Peer Not Found"})
    assert remove(project, room, bob.peer_id) == not_found
    assert remove(project, room, "peerId-nobody") == not_found
    assert remove(project, "abc-defg-hij", alice.peer_id) == not_found
    assert remove(app.project(), room, alice.peer_id) == not_found
    job = project.post(START, json={"roomId": room, "token": project.token(room), "type": "recording"}).json()
    assert remove(project, room, f"recording-{job['id']}") == not_found
    # The peer may join again with a new token; its session goes on.
    back = project.join(room)
    assert back.session_id == alice.session_id
    alice.close()
    back.close()


@pytest.mark.parametrize(
    "path",
    [
        "/live-sessions/abc-defg-hij/peers/%20/remove",
        "/live-sessions/abc-defg-hij/peers/" + "x" * 500 + "/remove",
        "/live-sessions/ABC-DEFG-HIJ/end",
        "/live-sessions/abc-defg-hij/peers/a%2Fb/remove",
    ],
)
def test_moderation_of_odd_ids_is_a_clean_404(project: Project, path: str) -> None:
    answer = project.post(SDK + path, json={})
    assert answer.status_code == 404 and answer.json()["ok"] is False


def test_moderation_needs_the_api_key(app: LocalApp, project: Project) -> None:
    room = project.create_room()
    peer = project.join(room)
    anonymous = app.client()
    assert anonymous.post(f"{SDK}/live-sessions/{room}/end", headers={"x-api-key": "nope"}).status_code == 401
    assert anonymous.post(f"{SDK}/live-sessions/{room}/peers/{peer.peer_id}/remove").status_code == 401
    assert project.live()[0]["currentPeerCount"] == 1
    peer.close()
