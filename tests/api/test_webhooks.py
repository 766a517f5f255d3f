"""Webhooks (the contract's "Webhooks"): registration, the events and their
payloads, signing, per-room order, retries, 410, revocation, and bad input,
delivered to a real HTTP receiver."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from receiver import Receiver, verify
from support import LocalApp, Project, eventually

HOOKS = "/api/v2/sdk/webhooks"


@pytest.fixture
def hooks_app(make_app: Callable[..., LocalApp]) -> LocalApp:
    return make_app(allow_private_webhook_urls=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.stop()


def register(project: Project, url: str, **body: Any) -> dict[str, Any]:
    answer = project.post(HOOKS, json={"url": url, **body})
    assert answer.status_code == 201, answer.text
    return answer.json()["webhook"]


def listed(project: Project) -> list[dict[str, Any]]:
    answer = project.get(HOOKS)
    assert answer.status_code == 200, answer.text
    return answer.json()["webhooks"]


def deliveries(project: Project, webhook_id: str, **params: Any) -> dict[str, Any]:
    answer = project.get(f"{HOOKS}/{webhook_id}/deliveries", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_session_life_is_delivered_in_order_signed_with_the_registering_key(
    hooks_app: LocalApp, receiver: Receiver
) -> None:
    project = hooks_app.project()
    hook = register(project, receiver.url, name="mine")
    assert hook["id"].startswith("whk_") and hook["status"] == "active" and hook["name"] == "mine"
    assert hook["events"] == [
        "meeting:started",
        "meeting:ended",
        "peer:joined",
        "peer:left",
        "recording:started",
        "recording:ended",
    ]
    room = project.create_room()
    metadata = '{"displayName":"Zoë 🎥 \\"quoted\\""}'
    first = project.join(room, metadata=metadata, role="host")
    second = project.join(room)
    first.leave()
    second.leave()
    hooks_app.advance(2)  # past the grace period: the session ends
    got = receiver.wait_for(6)
    assert [r.event for r in got] == [
        "meeting:started",
        "peer:joined",
        "peer:joined",
        "peer:left",
        "peer:left",
        "meeting:ended",
    ]
    assert [r.sequence for r in got] == [1, 2, 3, 4, 5, 6]
    for r in got:
        assert verify(r, project.key)
        assert r.headers["content-type"] == "text/plain"
        assert r.headers["x-livesessions-event-id"] == r.data["id"]
        assert list(r.data) == ["id", "event", "payload"]
        # byte for byte what JSON.stringify gives: compact, non-ASCII as is
        assert "\\u" not in r.body and ", " not in r.body
    started, joined = got[0].payload, got[1].payload
    session_id = first.session_id
    assert started == {"sessionId": session_id, "roomId": room, "createdAt": started["createdAt"]}
    assert list(joined) == ["id", "sessionId", "roomId", "joinedAt", "metadata", "role"]
    assert joined["id"] == first.peer_id and joined["metadata"] == metadata and joined["role"] == "host"
    left = got[3].payload
    assert list(left) == ["id", "sessionId", "roomId", "leftAt", "duration", "metadata", "role"]
    assert left["duration"] == left["leftAt"] - joined["joinedAt"]
    ended = got[5].payload
    assert list(ended) == [
        "sessionId",
        "roomId",
        "createdAt",
        "endedAt",
        "duration",
        "participants",
        "maxParticipants",
    ]
    assert ended["participants"] == 2 and ended["maxParticipants"] == 2
    assert ended["duration"] == ended["endedAt"] - ended["createdAt"]
    # the list shows it settled
    (state,) = eventually(lambda: [w for w in listed(project) if w["pending"] == 0])
    assert state["lastDelivery"]["responseStatus"] == 200 and "error" not in state["lastDelivery"]
    log = deliveries(project, hook["id"])
    assert len(log["deliveries"]) == 6 and log["nextCursor"] is None
    assert {d["roomId"] for d in log["deliveries"]} == {room}
    page = deliveries(project, hook["id"], limit=4)
    assert len(page["deliveries"]) == 4 and page["nextCursor"] is not None
    rest = deliveries(project, hook["id"], limit=4, cursor=page["nextCursor"])
    assert rest["nextCursor"] is None
    assert [d["eventId"] for d in page["deliveries"] + rest["deliveries"]] == [d["eventId"] for d in log["deliveries"]]
    metrics = hooks_app.http.get("/metrics").text
    assert 'livesessions_webhook_attempts_total{outcome="delivered"} 6.0' in metrics


def test_a_webhook_gets_only_the_events_it_asked_for_and_only_its_project(
    hooks_app: LocalApp, receiver: Receiver
) -> None:
    project, other = hooks_app.project(), hooks_app.project()
    register(project, receiver.url, events=["peer:joined"])
    room, elsewhere = project.create_room(), other.create_room()
    other.join(elsewhere).leave()
    project.join(room).leave()
    (got,) = receiver.wait_for(1)
    assert got.event == "peer:joined" and got.payload["roomId"] == room
    # the room's second event: sequences count every event of the room
    assert got.sequence == 2
    hooks_app.advance(2)
    test = project.post(f"{HOOKS}/{listed(project)[0]['id']}/test")
    receiver.wait_for(2)
    assert [r.event for r in receiver.events()] == ["peer:joined", "webhook:test"]
    assert receiver.events()[1].data["id"] == test.json()["eventId"]


def test_recordings_and_livestreams_are_told(hooks_app: LocalApp, receiver: Receiver) -> None:
    project = hooks_app.project()
    register(project, receiver.url, events=["recording:started", "recording:ended"])
    room = project.create_room()
    peer = project.join(room)
    token = project.token(room)
    start = {"roomId": room, "token": token}
    assert project.post("/api/v1/recording/start", json={**start, "type": "recording"}).status_code == 200
    answer = project.post(
        "/api/v1/recording/start", json={**start, "type": "livestream", "rtmpUrls": ["rtmp://example.com/live/x"]}
    )
    assert answer.status_code == 200, answer.text
    assert project.post("/api/v1/recording/stop", json={"roomId": room}).status_code == 200
    got = receiver.wait_for(4)
    by_event: dict[str, list[dict[str, Any]]] = {}
    for r in got:
        by_event.setdefault(r.event, []).append(r.payload)
    assert len(by_event["recording:started"]) == 2 and len(by_event["recording:ended"]) == 2
    for payload in by_event["recording:started"]:
        assert payload["files"] == [] and payload["streams"] == []
        assert payload["roomId"] == room and payload["sessionId"] == peer.session_id
    files = [p for p in by_event["recording:ended"] if p["files"]]
    streams = [p for p in by_event["recording:ended"] if p["streams"]]
    assert len(files) == 1 and len(streams) == 1
    assert files[0]["files"][0]["location"] == f"/api/v1/recordings/{files[0]['id']}/download"
    assert streams[0]["streams"][0]["url"] == "rtmp://example.com/live/x"
    peer.leave()


def test_a_failing_endpoint_is_retried_in_order_and_other_rooms_are_not_held_back(
    hooks_app: LocalApp, receiver: Receiver
) -> None:
    project = hooks_app.project()
    hook = register(project, receiver.url, events=["peer:joined"])
    stuck, free = project.create_room(), project.create_room()
    failures = {"left": 2}

    def answer(got: Any) -> tuple[int, float, dict[str, str]]:
        if got.payload["roomId"] == stuck and failures["left"] > 0:
            failures["left"] -= 1
            return 503, 0.0, {}
        return 200, 0.0, {}

    receiver.answer = answer
    a = project.join(stuck)
    b = project.join(stuck)
    c = project.join(free)
    # the free room's event is not held back behind the stuck room's retries
    assert receiver.wait_for(1)[0].payload["roomId"] == free
    got = receiver.wait_for(3, timeout=20)
    stuck_peers = [r.payload["id"] for r in got if r.payload["roomId"] == stuck]
    assert stuck_peers == [a.peer_id, b.peer_id]  # in order, after 2 retries of the first
    # the last attempt is logged just after the receiver answered it
    assert eventually(
        lambda: len([d for d in deliveries(project, hook["id"])["deliveries"] if d["responseStatus"] == 200]) == 3
    )
    log = deliveries(project, hook["id"])["deliveries"]
    assert len([d for d in log if d["responseStatus"] == 200]) == 3
    failed = [d for d in log if d["responseStatus"] == 503]
    assert len(failed) == 2 and all(d["error"].startswith("answered 503") for d in failed)
    assert [d["attempt"] for d in log if d["roomId"] == stuck][::-1] == [1, 2, 3, 1]
    for peer in (a, b, c):
        peer.leave()


def test_410_disables_the_webhook_and_revoking_its_key_too(hooks_app: LocalApp, receiver: Receiver) -> None:
    project = hooks_app.project()
    gone = register(project, receiver.url)
    receiver.answer = lambda _: (410, 0.0, {})
    assert project.post(f"{HOOKS}/{gone['id']}/test").status_code == 200
    eventually(lambda: listed(project)[0]["status"] == "disabled")
    assert project.post(f"{HOOKS}/{gone['id']}/test").status_code == 409
    (entry,) = deliveries(project, gone["id"])["deliveries"]
    assert entry["responseStatus"] == 410 and "disabled" in entry["error"]

    # Revoking the key a webhook was registered with disables it; the
    # project's other keys see that.
    receiver.answer = lambda _: (200, 0.0, {})
    kept = register(project, receiver.url)
    wallet = hooks_app.run(hooks_app.services.store.all_api_keys(None))
    project_id, _, record = next(found for found in wallet if found[2].id == key_id_of(hooks_app, project))
    second = Project(hooks_app, hooks_app.run(create_key_for(hooks_app, project_id)))
    assert hooks_app.run(hooks_app.services.api_keys.revoke(project_id, record.id))
    states = {w["id"]: w for w in listed(second)}
    assert states[kept["id"]]["status"] == "disabled"
    assert second.post(f"{HOOKS}/{kept['id']}/test").status_code == 409


def key_id_of(app: LocalApp, project: Project) -> str:
    found = app.run(app.services.api_keys.project_for(project.key))
    assert found is not None
    return found.key_id


async def create_key_for(app: LocalApp, project_id: str) -> str:
    key, _ = await app.services.api_keys.create(project_id, "second", app.clock())
    return key


def test_redirects_are_not_followed_and_a_timeout_is_a_failure(
    make_app: Callable[..., LocalApp], receiver: Receiver
) -> None:
    hooks_app = make_app(allow_private_webhook_urls=True)
    project = hooks_app.project()
    hook = register(project, receiver.url)
    receiver.answer = lambda _: (302, 0.0, {"location": "http://127.0.0.1:9/elsewhere"})
    project.post(f"{HOOKS}/{hook['id']}/test")
    entry = eventually(lambda: deliveries(project, hook["id"])["deliveries"])[0]
    assert entry["responseStatus"] == 302 and "redirects are not followed" in entry["error"]
    assert receiver.attempts == 1


def test_private_addresses_are_refused_unless_allowed(app: LocalApp, project: Project) -> None:
    for url in (
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://224.0.0.1/hook",
        "http://0.0.0.0/hook",
    ):
        answer = project.post(HOOKS, json={"url": url})
        assert answer.status_code == 400, (url, answer.text)
        (problem,) = answer.json()["error"]["issues"]
        assert problem["path"] == ["url"], url
    assert listed(project) == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": ""},
        {"url": 5},
        {"url": "ftp://example.com/x"},
        {"url": "http://user:pw@example.com/x"},
        {"url": "http:///nohost"},
        {"url": "https://example.com/" + "a" * 2100},
        {"url": "https://example.com/x", "events": []},
        {"url": "https://example.com/x", "events": ["peer:exploded"]},
        {"url": "https://example.com/x", "events": "peer:joined"},
        {"url": "https://example.com/x", "name": "n" * 101},
        {"url": "https://example.com/x", "unknown": 1},
        {"url": "https://example.com/x\u0000"},
        {"url": "https://example.com/日本"},
        {"url": "https://example.com/a\r\nx-injected: 1"},
    ],
)
def test_bad_registrations_get_400_and_change_nothing(app: LocalApp, project: Project, body: dict[str, Any]) -> None:
    answer = project.post(HOOKS, json=body)
    assert answer.status_code == 400, answer.text
    refusal = answer.json()
    assert refusal.get("success") is False or refusal.get("ok") is False  # text holding U+0000: the latter
    assert listed(project) == []


def test_unknown_or_foreign_webhooks_are_404(hooks_app: LocalApp, receiver: Receiver) -> None:
    project, other = hooks_app.project(), hooks_app.project()
    hook = register(project, receiver.url)
    for who, webhook_id in ((other, hook["id"]), (project, "whk_nope"), (project, "whk_" + "a" * 20)):
        assert who.http.delete(f"{HOOKS}/{webhook_id}").status_code == 404
        assert who.get(f"{HOOKS}/{webhook_id}/deliveries").status_code == 404
        assert who.post(f"{HOOKS}/{webhook_id}/test").status_code == 404
    assert listed(other) == []
    assert project.get(f"{HOOKS}/{hook['id']}/deliveries", params={"limit": 0}).status_code == 400
    assert project.get(f"{HOOKS}/{hook['id']}/deliveries", params={"cursor": "x"}).status_code == 400
    assert project.http.delete(f"{HOOKS}/{hook['id']}").status_code == 204
    assert listed(project) == []
    assert project.http.delete(f"{HOOKS}/{hook['id']}").status_code == 404


def test_bots_make_no_peer_events(hooks_app: LocalApp, receiver: Receiver) -> None:
    project = hooks_app.project()
    register(project, receiver.url)
    room = project.create_room()
    peer = project.join(room)
    start = {"roomId": room, "token": project.token(room), "type": "recording"}
    assert project.post("/api/v1/recording/start", json=start).status_code == 200
    assert project.post("/api/v1/recording/stop", json={"roomId": room}).status_code == 200
    peer.leave()
    hooks_app.advance(2)
    got = receiver.wait_for(6)
    assert [r.event for r in got] == [
        "meeting:started",
        "peer:joined",
        "recording:started",
        "recording:ended",
        "peer:left",
        "meeting:ended",
    ]
    assert {r.payload["id"] for r in got if r.event.startswith("peer:")} == {peer.peer_id}


def test_an_event_refused_past_the_retry_window_is_given_up_and_logged(
    make_app: Callable[..., LocalApp], receiver: Receiver
) -> None:
    hooks_app = make_app(allow_private_webhook_urls=True, webhook_retry_for=5)
    project = hooks_app.project()
    hook = register(project, receiver.url)
    receiver.answer = lambda _: (500, 0.0, {})
    test = project.post(f"{HOOKS}/{hook['id']}/test").json()["eventId"]
    # 2 s, then 4 s: the second retry would fall past the 5 s window
    log = eventually(
        lambda: [d for d in deliveries(project, hook["id"])["deliveries"] if "given up" in (d["error"] or "")],
        timeout=15,
    )
    (given_up,) = log
    assert given_up["eventId"] == test and given_up["attempt"] == 2
    assert given_up["error"].startswith("given up after 2 attempts: answered 500")
    assert listed(project)[0]["pending"] == 0 and listed(project)[0]["status"] == "active"


def test_an_endpoint_gets_at_most_four_attempts_at_once_and_never_slows_joins_or_reads(
    hooks_app: LocalApp, receiver: Receiver
) -> None:
    import threading

    project = hooks_app.project()
    register(project, receiver.url, events=["peer:joined"])
    release = threading.Event()
    at_once = {"now": 0, "most": 0}
    lock = threading.Lock()

    def answer(got: Any) -> tuple[int, float, dict[str, str]]:
        with lock:
            at_once["now"] += 1
            at_once["most"] = max(at_once["most"], at_once["now"])
        release.wait(20)  # stuck until the test lets go
        with lock:
            at_once["now"] -= 1
        return 200, 0.0, {}

    receiver.answer = answer
    rooms = [project.create_room() for _ in range(8)]
    peers = [project.join(room) for room in rooms]  # 8 rooms: 8 lanes due at once
    assert eventually(lambda: at_once["now"] == 4)
    # While the endpoint holds every place it may have, the service answers.
    late = project.join(rooms[0])
    assert len(project.live()) == 8
    assert at_once["most"] == 4
    release.set()
    receiver.wait_for(9)
    assert at_once["most"] == 4
    for peer in (*peers, late):
        peer.leave()


def test_a_host_that_resolves_to_a_private_address_at_delivery_is_not_called(
    make_app: Callable[..., LocalApp], receiver: Receiver
) -> None:
    import socket

    app = make_app()  # private targets refused
    public = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80))]
    private = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", receiver.port))]
    answers = {"now": public}

    async def resolve(host: str, port: Any, **kwargs: Any) -> list[Any]:
        assert host == "hooks.example.net"
        return answers["now"]

    app.loop.getaddrinfo = resolve  # type: ignore[method-assign]
    project = app.project()
    hook = register(project, f"http://hooks.example.net:{receiver.port}/hook")
    answers["now"] = private  # DNS rebinding: public when checked, loopback when called
    project.post(f"{HOOKS}/{hook['id']}/test")
    entry = eventually(lambda: deliveries(project, hook["id"])["deliveries"])[0]
    assert entry["responseStatus"] is None and "resolves to 127.0.0.1" in entry["error"]
    assert receiver.attempts == 0


def test_only_a_little_of_an_answer_is_read(hooks_app: LocalApp, receiver: Receiver) -> None:
    project = hooks_app.project()
    hook = register(project, receiver.url)
    receiver.answer = lambda _: (500, 0.0, {})
    receiver.body = b"<html>" + b"x" * 5_000_000
    project.post(f"{HOOKS}/{hook['id']}/test")
    entry = eventually(lambda: deliveries(project, hook["id"])["deliveries"])[0]
    assert entry["responseStatus"] == 500
    assert entry["error"].startswith("answered 500: <html>xxx") and len(entry["error"]) <= 220


def test_an_endpoint_that_does_not_answer_within_10_s_has_failed(hooks_app: LocalApp, receiver: Receiver) -> None:
    project = hooks_app.project()
    hook = register(project, receiver.url)
    receiver.answer = lambda _: (200, 12.0, {})  # answers, but too late
    project.post(f"{HOOKS}/{hook['id']}/test")
    entry = eventually(lambda: deliveries(project, hook["id"])["deliveries"], timeout=15)[0]
    assert entry["responseStatus"] is None and entry["error"] == "no answer within 10 s"
    assert entry["attempt"] == 1
