"""Recordings and livestreams across nodes: a job runs on the node that
started it and is reached from any other (status, stop, a livestream's
viewers, downloads from the shared recordings directory); when its node is
killed, another node finalizes it with what was written."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_egress import START, STATUS, STOP, Viewer

from cluster_support import Cluster, ClusterProject, cluster_on_fresh_database
from support import eventually


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    shared: Path = tmp_path_factory.mktemp("shared-recordings")
    with cluster_on_fresh_database(
        tmp_path_factory.mktemp("egress-cluster"), n=2, **{"recordings-dir": shared}
    ) as nodes:
        yield nodes


@pytest.fixture
def project(cluster: Cluster) -> Iterator[ClusterProject]:
    cluster.heal()
    instance = cluster.project()
    yield instance
    instance.close()


def start(project: ClusterProject, node: int, room: str, kind: str = "recording") -> dict:
    answer = project[node].post(START, json={"roomId": room, "token": project.token(room), "type": kind})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_recording_started_on_one_node_is_seen_stopped_and_downloaded_on_another(project: ClusterProject) -> None:
    room = project.create_room()
    alice = project.join(0, room)
    bob = project.join(1, room)
    alice.recv_type("peer-joined")
    job = start(project, 0, room)
    status = project[1].get(STATUS, params={"roomId": room}).json()
    assert status["status"] == "ongoing" and status["id"] == job["id"]
    # A second one is refused whichever node is asked.
    again = project[1].post(START, json={"roomId": room, "token": project.token(room), "type": "recording"})
    assert again.status_code == 409
    assert project[1].live()[0]["recordingCount"] == 1
    for i in range(3):
        bob.send({"type": "data", "to": "*", "label": "chat", "payload": i})
        alice.recv_type("data")
    # Stopped through the node that does not run it.
    stopped = project[1].post(STOP, json={"roomId": room})
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["id"] == job["id"]
    assert project[0].get(STATUS, params={"roomId": room}).json() == {"status": "stopped"}
    (item,) = project[1].get("/api/v2/sdk/recordings").json()["recordings"]
    download = httpx.get(item["recordingUrl"].replace(project.cluster[0].base, project.cluster[1].base))
    assert download.status_code == 200
    assert b'"payload":2' in download.content.replace(b" ", b"")
    assert project[0].post(STOP, json={"roomId": room}).status_code == 404


def test_a_livestream_is_watched_from_any_node_and_ends_everywhere(project: ClusterProject) -> None:
    room = project.create_room()
    host = project.join(0, room)
    playback = start(project, 0, room, "livestream")["playbackUrl"]
    here = Viewer(playback)
    there = Viewer(playback.replace(project.cluster[0].base, project.cluster[1].base))
    assert there.status == 200
    guest = project.join(1, room)
    host.recv_type("peer-joined")
    guest.send({"type": "data", "to": "*", "label": "chat", "payload": "from node 1"})
    host.send({"type": "data", "to": "*", "label": "chat", "payload": "from node 0"})
    # Two senders on two nodes: the room sees them in some order, and every
    # viewer, on either node, in that same one.
    seen = [[e.get("payload") for e in viewer.wait_for(3) if e.get("type") == "data"] for viewer in (here, there)]
    assert sorted(seen[0]) == ["from node 0", "from node 1"], here.events
    assert seen[1] == seen[0], there.events
    assert project[1].post(STOP, json={"roomId": room, "type": "livestream"}).status_code == 200
    assert here.ended.wait(5) and there.ended.wait(5)
    assert httpx.get(playback.replace(project.cluster[0].base, project.cluster[1].base)).status_code == 410


def test_the_jobs_of_a_killed_node_are_finalized_by_another(project: ClusterProject) -> None:
    cluster = project.cluster
    room = project.create_room()
    survivor = project.join(1, room)
    job = start(project, 0, room)
    stream = start(project, 0, room, "livestream")
    for i in range(3):
        survivor.send({"type": "data", "to": "*", "label": "chat", "payload": i})
    time.sleep(0.3)  # the recorder on node 0 writes them
    killed_at = time.monotonic()
    cluster[0].kill()
    recordings = eventually(
        lambda: project[1].get("/api/v2/sdk/recordings").json()["recordings"], timeout=cluster.lease + 10
    )
    took = time.monotonic() - killed_at
    print(f"jobs of the killed node finalized {took:.1f} s after the kill (lease {cluster.lease} s)")
    assert [r["id"] for r in recordings] == [job["id"]]
    content = httpx.get(recordings[0]["recordingUrl"].replace(cluster[0].base, cluster[1].base)).content
    assert content.replace(b" ", b"").count(b'"label":"chat"') == 3
    assert project[1].get(STATUS, params={"roomId": room}).json() == {"status": "stopped"}
    cancelled = project[1].get("/api/v1/workers/jobs", params={"status": "cancelled"}).json()["jobs"]
    assert {j["id"] for j in cancelled} == {job["id"], stream["id"]}
    # The survivor is still in the room; the counts no longer show the jobs.
    assert project[1].live()[0]["currentPeerCount"] == 1
