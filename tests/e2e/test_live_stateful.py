"""The Live Sessions API against a plain model, through a real server.

Hypothesis drives random joins, leaves, reconnects, dropped connections and
silent drops (the network freezes, nothing is closed) across several rooms of
two projects, and after every step compares what the API says with the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from websockets.sync.client import connect

from netfault import FreezableProxy
from support import Server, eventually

ROOMS_PER_PROJECT = 3


@dataclass
class LivePeer:
    project: int
    room: str
    token: str
    peer_id: str
    session_id: str
    ws: object


@dataclass
class Model:
    peers: dict[str, LivePeer] = field(default_factory=dict)  # peer_id -> peer
    sessions: dict[str, str] = field(default_factory=dict)  # room -> session id of this run

    def counts(self, project: int) -> dict[str, int]:
        counts: dict[str, int] = {}
        for peer in self.peers.values():
            if peer.project == project:
                counts[peer.room] = counts.get(peer.room, 0) + 1
        return counts


@pytest.fixture(scope="module")
def stateful_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, FreezableProxy]]:
    # A long grace keeps session continuity independent of test timing; fast
    # pings make silent drops quick to detect.
    server = Server(
        tmp_path_factory.mktemp("stateful") / "data", **{"grace-period": 600, "ping-interval": 0.2, "ping-timeout": 0.2}
    ).start()
    proxy = FreezableProxy(server.port)
    yield server, proxy
    proxy.close()
    server.stop()


def test_live_sessions_follow_the_model(stateful_server: tuple[Server, FreezableProxy]) -> None:
    server, proxy = stateful_server

    class LiveMachine(RuleBasedStateMachine):
        @initialize()
        def setup(self) -> None:
            self.projects = [server.project(), server.project()]
            self.rooms = [[p.create_room() for _ in range(ROOMS_PER_PROJECT)] for p in self.projects]
            self.model = Model()

        def _connect(self, token: str) -> tuple[object, dict]:
            ws = connect(f"ws://127.0.0.1:{proxy.port}/ws?token={token}", close_timeout=0.2)
            joined = json.loads(ws.recv(timeout=5))
            assert joined["type"] == "joined", joined
            return ws, joined

        def _expect_session(self, room: str, session_id: str) -> None:
            known = self.model.sessions.setdefault(room, session_id)
            assert session_id == known, "a rejoin within grace must continue the session"

        @rule(project=st.integers(0, 1), room=st.integers(0, ROOMS_PER_PROJECT - 1))
        def join(self, project: int, room: int) -> None:
            room_id = self.rooms[project][room]
            token = self.projects[project].token(room_id)
            ws, joined = self._connect(token)
            self._expect_session(room_id, joined["sessionId"])
            expected_others = {p.peer_id for p in self.model.peers.values() if p.room == room_id}
            assert {p["peerId"] for p in joined["peers"]} == expected_others
            self.model.peers[joined["peerId"]] = LivePeer(
                project, room_id, token, joined["peerId"], joined["sessionId"], ws
            )

        def _pick(self, data: st.DataObject) -> LivePeer:
            return data.draw(st.sampled_from(sorted(self.model.peers.values(), key=lambda p: p.peer_id)))

        @precondition(lambda self: self.model.peers)
        @rule(data=st.data())
        def leave(self, data: st.DataObject) -> None:
            peer = self._pick(data)
            peer.ws.send(json.dumps({"type": "leave"}))
            _drain(peer.ws)
            del self.model.peers[peer.peer_id]

        @precondition(lambda self: self.model.peers)
        @rule(data=st.data())
        def reconnect(self, data: st.DataObject) -> None:
            peer = self._pick(data)
            ws, joined = self._connect(peer.token)
            assert joined["peerId"] == peer.peer_id
            self._expect_session(peer.room, joined["sessionId"])
            _drain(peer.ws)
            peer.ws = ws

        @precondition(lambda self: self.model.peers)
        @rule(data=st.data())
        def drop_connection(self, data: st.DataObject) -> None:
            peer = self._pick(data)
            peer.ws.socket.close()  # the client process dies: its end closes
            del self.model.peers[peer.peer_id]
            self._await_model("a dropped connection")

        @precondition(lambda self: self.model.peers)
        @rule(data=st.data())
        def silent_drop(self, data: st.DataObject) -> None:
            peer = self._pick(data)
            proxy.freeze(peer.ws.socket.getsockname())
            del self.model.peers[peer.peer_id]
            self._await_model("a silent peer", timeout=3)
            peer.ws.socket.close()

        def _await_model(self, what: str, timeout: float = 5) -> None:
            """Removal has no moment the client sees: wait, boundedly, for it."""
            ok = eventually(lambda: all(self._api_counts(i) == self.model.counts(i) for i in range(2)), timeout)
            assert ok, f"{what} was not removed within {timeout} s"

        def _api_counts(self, project: int) -> dict[str, int]:
            return self.projects[project].live_counts()

        @invariant()
        def api_matches_model(self) -> None:
            if not hasattr(self, "model"):
                return
            for index, project in enumerate(self.projects):
                listed = project.live()
                assert {i["roomId"]: i["currentPeerCount"] for i in listed} == self.model.counts(index)
                starts = [i["startTime"] for i in listed]
                assert starts == sorted(starts)
                for room in self.rooms[1 - index]:
                    assert project.get(f"/api/v2/sdk/live-sessions/{room}").status_code == 404
                for room, count in self.model.counts(index).items():
                    participants = project.get(f"/api/v2/sdk/live-sessions/participants/{room}").json()
                    assert participants["count"] == count
                    assert {p["peerId"] for p in participants["participants"]} == {
                        p.peer_id for p in self.model.peers.values() if p.room == room
                    }

        def teardown(self) -> None:
            for peer in getattr(self, "model", Model()).peers.values():
                peer.ws.socket.close()

    LiveMachine.TestCase.settings = settings(
        max_examples=12,
        stateful_step_count=15,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    LiveMachine.TestCase().runTest()


def _drain(ws: object) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            ws.recv(timeout=5)
    except (ConnectionClosed, TimeoutError):
        pass
