"""What the service counts and measures, for Prometheus at /metrics.

One `Telemetry` per running service, with a registry of its own (so two
services in one process, as in tests, never mix their figures). Components
get the instance and record into it; nothing here knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# `*_created` timestamps double the series and say nothing a scraper needs.
disable_created_metrics()  # type: ignore[no-untyped-call]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Request latencies are tens of microseconds to a few milliseconds here.
_HTTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LAG_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class Tally:
    """A count kept as a plain number on a hot path (a Prometheus counter
    takes a lock on every increment) and added to its counter before a scrape."""

    __slots__ = ("_counter", "_reported", "count")

    def __init__(self, counter: Counter) -> None:
        self.count = 0
        self._reported = 0
        self._counter = counter

    async def report(self) -> None:
        if self.count != self._reported:
            self._counter.inc(self.count - self._reported)
            self._reported = self.count


class Telemetry:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry(auto_describe=True)
        self.live_rooms = Gauge("livesessions_live_rooms", "Rooms with at least one peer now.", registry=registry)
        self.peers = Gauge("livesessions_peers", "Peers connected now (bots not counted).", registry=registry)
        self.joins = Counter(
            "livesessions_joins", "Peers admitted to a room (bots included).", ["role"], registry=registry
        )
        self.leaves = Counter("livesessions_leaves", "Members that left a room (bots included).", registry=registry)
        self.refusals = Counter(
            "livesessions_join_refusals", "WebSocket joins refused, by reason.", ["reason"], registry=registry
        )
        self.disconnects = Counter(
            "livesessions_peer_disconnects",
            "Peers cut off by the server, by reason (too slow, too fast).",
            ["reason"],
            registry=registry,
        )
        self.ws_messages = Counter(
            "livesessions_websocket_messages", "WebSocket messages, by direction.", ["direction"], registry=registry
        )
        self.http_requests = Histogram(
            "livesessions_http_request_duration_seconds",
            "HTTP requests by route and status, and how long they took.",
            ["method", "route", "status"],
            buckets=_HTTP_BUCKETS,
            registry=registry,
        )
        self.write_queue = Gauge(
            "livesessions_write_queue_depth", "Database writes queued and not yet committed.", registry=registry
        )
        self.commits = Histogram(
            "livesessions_commit_duration_seconds",
            "Database commits (each a batch of queued writes) and how long they took.",
            buckets=_COMMIT_BUCKETS,
            registry=registry,
        )
        self.recordings_active = Gauge(
            "livesessions_egress_active", "Recordings and livestreams going on now.", ["type"], registry=registry
        )
        self.sign_ins = Counter("livesessions_sign_ins", "Wallet sign-ins, by outcome.", ["outcome"], registry=registry)
        self.cluster_events = Counter(
            "livesessions_cluster_events",
            "Scale-out mode: room events received from Redis, and those found missing (a gap in a project's "
            "sequence, e.g. while the connection to Redis was down).",
            ["outcome"],
            registry=registry,
        )
        self.reaped = Counter(
            "livesessions_reaped_members",
            "Scale-out mode: members of dead nodes this node took out of their rooms.",
            registry=registry,
        )
        self.webhook_attempts = Counter(
            "livesessions_webhook_attempts",
            "Webhook delivery attempts made by this node, by outcome: delivered, retry, given-up, disable (410).",
            ["outcome"],
            registry=registry,
        )
        self.event_stream_clients = Gauge(
            "livesessions_event_stream_clients", "Live event stream clients connected to this node.", registry=registry
        )
        self.loop_lag = Histogram(
            "livesessions_event_loop_lag_seconds",
            "How late the event loop ran a timer (see --loop-probe-interval): while it is late, every peer and "
            "request waits.",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self.loop_lag_max = Gauge(
            "livesessions_event_loop_lag_max_seconds",
            "The longest the event loop has run a timer late since the service started.",
            registry=registry,
        )
        self.ws_in = self.ws_messages.labels("in")
        self.ws_out = self.ws_messages.labels("out")
        # Messages sent to peers: counted on the hot path, reported at scrapes.
        self.ws_sent = Tally(self.ws_out)
        # Brought up to date just before each scrape (see `render`).
        self._refreshers: list[Callable[[], Awaitable[None]]] = [self.ws_sent.report]
        # Label children by (method, route, status): labels() costs a lock
        # and a tuple build, which a hot GET should not pay every time.
        self._http_children: dict[tuple[str, str, int], Histogram] = {}

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        child = self._http_children.get(key)
        if child is None:
            child = self._http_children[key] = self.http_requests.labels(method, route, str(status))
        child.observe(seconds)

    def refresh_before_scrape(self, refresher: Callable[[], Awaitable[None]]) -> None:
        self._refreshers.append(refresher)

    async def render(self) -> bytes:
        for refresh in self._refreshers:
            await refresh()
        return generate_latest(self.registry)
