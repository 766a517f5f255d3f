"""The services of one node in scale-out mode: durable state in PostgreSQL,
presence and room events in Redis, shared by every node."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import asyncpg
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import RedisError

from livesessions.auth.peer_tokens import key_from_pem, new_key_pem
from livesessions.auth.redis_rate_limits import RedisRateLimiter
from livesessions.clock import Clock, now_ms
from livesessions.cluster.egress import ClusterEgress
from livesessions.cluster.fanout import RedisFanout
from livesessions.cluster.node import NodeKeeper
from livesessions.config import Settings
from livesessions.domain.errors import Unavailable
from livesessions.egress.links import new_secret
from livesessions.realtime.hub import Hub
from livesessions.services import Backends, Services, assemble
from livesessions.stores.postgres import PostgresStore, WriteBufferFull, WriteTimedOut
from livesessions.stores.redis_presence import PresenceUnavailable, RedisPresence
from livesessions.telemetry import Telemetry
from livesessions.webhooks.sealing import read_secret_file

log = logging.getLogger(__name__)

# What the stores raise while PostgreSQL or Redis cannot be reached.
OUTAGES: tuple[type[BaseException], ...] = (
    Unavailable,
    RedisError,
    PresenceUnavailable,
    WriteBufferFull,
    WriteTimedOut,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.InterfaceError,
    ConnectionError,
    TimeoutError,
)


def where(url: str) -> str:
    """A database or Redis URL without its password, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


async def open_postgres(url: str) -> PostgresStore:
    try:
        return await PostgresStore.connect(url)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ConnectionError(f"cannot use the PostgreSQL database at {where(url)}: {exc}") from None


async def build_scaled_out_services(settings: Settings, clock: Clock = now_ms) -> Services:
    """Connect to PostgreSQL (migrating it) and Redis (registering this node);
    raises ConnectionError, in one line, when either cannot be used."""
    assert settings.database_url is not None and settings.redis_url is not None
    store = await open_postgres(settings.database_url)
    # Fail fast while Redis is down: a request is answered 503 in about a
    # second rather than after redis-py's default retries.
    redis: Redis = Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=2,
        socket_connect_timeout=1,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 1),
        health_check_interval=5,
    )
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        await store.aclose()
        await redis.aclose()
        raise ConnectionError(f"cannot reach Redis at {where(settings.redis_url)}: {exc}") from None
    telemetry = Telemetry()
    presence = RedisPresence(redis, int(settings.grace_period * 1000), lease_ms=int(settings.node_lease * 1000))
    # Subscriptions on a client of their own that never reconnects behind
    # their back: a cut subscription must surface, so that what was published
    # meanwhile is caught up from the projects' logs (cluster/fanout.py).
    subscriptions: Redis = Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=5,
    )
    fanout = RedisFanout(Hub(), presence, subscriptions, telemetry)
    per_minute = settings.sign_ins_per_minute
    backends = Backends(
        store=store,
        presence=presence,
        fanout=fanout,
        # Made once for the whole cluster, by whichever node asks first.
        signing_key=key_from_pem(await store.secret("peer-token-key", new_key_pem), "the stored signing key"),
        link_secret=await store.secret("link-signing", new_secret),
        sealing_secret=(
            read_secret_file(settings.webhook_sealing_key_file)
            if settings.webhook_sealing_key_file
            else await store.secret("webhook-sealing", new_secret)
        ),
        # Limits hold across nodes (each falls back to this node's own
        # count while Redis is unreachable).
        key_limiter=RedisRateLimiter(redis, "key", settings.rate_limit, settings.rate_burst),
        sign_in_limiter=RedisRateLimiter(redis, "sign-in", per_minute / 60, per_minute),
        failed_auth_limiter=RedisRateLimiter(
            redis, "failed-auth", settings.failed_auths_per_minute / 60, settings.failed_auths_per_minute
        ),
    )
    services = assemble(settings, backends, telemetry, clock)
    services.outages = OUTAGES
    services.keeper.history_writable = store.accepting_writes
    node = NodeKeeper(
        presence,
        services.membership,
        store,
        clock,
        telemetry,
        settings.node_lease,
        orphans=store,
        # Live sessions are marked every heartbeat interval; idle ones end
        # after their grace: older than both (with a margin) is nobody's.
        orphan_age_s=2 * settings.heartbeat_interval + settings.grace_period + 2 * settings.node_lease,
    )
    egress = ClusterEgress(services.egress, store, presence, redis, subscriptions, fanout)
    # The node running a session's recording stops it, whichever node saw
    # the session end.
    fanout.session_end_listeners.append(services.egress.session_ended)
    node.bot_departed.append(egress.bot_departed)

    async def start() -> None:
        # Registered first, so that Redis has the epoch the fan-out goes by.
        await node.start()
        await fanout.start()
        await egress.start()
        # Listening for (and putting in order) every node's events first.
        await store.start_events()
        # Every node delivers; the store's claims keep one event to one node.
        services.dispatcher.start()

    async def stop() -> None:
        await services.dispatcher.stop()
        await egress.aclose()
        await node.stop()
        await fanout.aclose()
        await store.aclose()
        await subscriptions.aclose()
        await redis.aclose()

    services.on_start.append(start)
    services.on_stop.append(stop)
    return services
