"""A model test of three scaled-out nodes: hypothesis drives joins, leaves,
abrupt disconnects and reconnections of the same peer through random nodes,
and after every step every node's live-sessions answer must equal the model.

Where the contract makes a change visible at once (a peer that has its
`joined`, a leave the server closed on, a replacement), every node is read at
once, with no waiting; only a client that just went away without a word is
waited for (its node has to notice the closed socket first).

Runs on a cluster of its own (tests/cluster_support.py); skips without
PostgreSQL or redis-server, fails where they are required.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test

from backends import REDIS_SERVER, SKIP_REASON
from cluster_support import Cluster, ClusterProject, cluster_on_fresh_database
from support import Peer, required, wait_closed

pytestmark = pytest.mark.skipif(REDIS_SERVER is None and not required(), reason=SKIP_REASON)

NODES = 3
ROOMS = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster_on_fresh_database(tmp_path_factory.mktemp("cluster-model")) as instance:
        yield instance


@dataclass
class Held:
    peer: Peer
    token: str
    node: int
    room: str


class LiveAcrossNodes(RuleBasedStateMachine):
    def __init__(self, project: ClusterProject) -> None:
        super().__init__()
        self.project = project
        self.rooms = [project.create_room() for _ in range(ROOMS)]
        self.held: dict[str, Held] = {}

    # --- the model ----------------------------------------------------------------

    def expected(self) -> dict[str, int]:
        return dict(collections.Counter(held.room for held in self.held.values()))

    def in_room(self, room: str) -> set[str]:
        return {peer_id for peer_id, held in self.held.items() if held.room == room}

    def check_now(self, step: str) -> None:
        """Every node answers exactly the model, at once."""
        expected = self.expected()
        answers = self.project.counts_everywhere(list(range(NODES)))
        assert answers == [expected] * NODES, f"after {step}: nodes answer {answers}, model {expected}"

    def check_soon(self, step: str, timeout: float = 5) -> None:
        expected = self.expected()
        deadline = time.monotonic() + timeout
        while True:
            answers = self.project.counts_everywhere(list(range(NODES)))
            if answers == [expected] * NODES:
                return
            assert time.monotonic() < deadline, f"after {step}: nodes answer {answers}, model {expected}"
            time.sleep(0.05)

    def session_of(self, room: str) -> str | None:
        sessions = {held.peer.session_id for held in self.held.values() if held.room == room}
        assert len(sessions) <= 1, f"peers of one room in different sessions: {sessions}"
        return next(iter(sessions), None)

    # --- steps --------------------------------------------------------------------

    @rule(node=st.integers(0, NODES - 1), room=st.integers(0, ROOMS - 1))
    def join(self, node: int, room: int) -> None:
        room_id = self.rooms[room]
        token = self.project.token(room_id)
        peer = self.project.join(node, room_id, token=token)
        # It is told exactly who is in the room, whichever nodes they joined through.
        assert {p["peerId"] for p in peer.joined["peers"]} == self.in_room(room_id)
        session = self.session_of(room_id)
        if session is not None:
            assert peer.session_id == session
        self.held[peer.peer_id] = Held(peer, token, node, room_id)
        self.check_now(f"a join through node {node}")

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        peer_id = data.draw(st.sampled_from(sorted(self.held)), label="peer")
        held = self.held.pop(peer_id)
        held.peer.leave()  # returns once the server closed: the leave is processed
        self.check_now(f"a leave through node {held.node}")

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        peer_id = data.draw(st.sampled_from(sorted(self.held)), label="peer")
        held = self.held.pop(peer_id)
        held.peer.close()
        self.check_soon(f"a disconnect from node {held.node}")

    @precondition(lambda self: self.held)
    @rule(data=st.data(), node=st.integers(0, NODES - 1))
    def reconnect(self, data: st.DataObject, node: int) -> None:
        """The same peer (same token, same peerId) connects again, through any node."""
        peer_id = data.draw(st.sampled_from(sorted(self.held)), label="peer")
        old = self.held[peer_id]
        again = self.project.join(node, old.room, token=old.token)
        assert again.peer_id == peer_id
        assert again.session_id == old.peer.session_id
        assert {p["peerId"] for p in again.joined["peers"]} == self.in_room(old.room) - {peer_id}
        self.held[peer_id] = Held(again, old.token, node, old.room)
        self.check_now(f"a reconnection through node {node} (was node {old.node})")
        assert wait_closed(old.peer.ws)[0] == 4009

    def teardown(self) -> None:
        for held in self.held.values():
            held.peer.close()
        self.held.clear()
        self.check_soon("closing every peer", timeout=10)


def test_every_node_answers_as_the_model_says(cluster: Cluster) -> None:
    project = cluster.project()
    try:
        run_state_machine_as_test(
            lambda: LiveAcrossNodes(project),
            settings=settings(
                max_examples=5,
                stateful_step_count=15,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        project.close()
