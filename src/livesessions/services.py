"""Everything a running service holds, built once from its settings: on the
embedded stores (`build_services`), or scaled out on PostgreSQL and Redis
(livesessions.cluster.services). Both put the same parts together
(`assemble`); only the stores, the fan-out and what runs beside them differ."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from livesessions.auth.api_keys import ApiKeys
from livesessions.auth.origins import WhitelistedDomains
from livesessions.auth.peer_tokens import PeerTokenCheck, PeerTokenSigner, load_or_create_key
from livesessions.auth.rate_limits import Limiter, RateLimiter
from livesessions.auth.wallet_sign_in import SignInPolicy, WalletSignIn
from livesessions.clock import Clock, now_ms
from livesessions.config import Settings
from livesessions.domain.egress import EGRESS_TYPES
from livesessions.domain.ports import Accounts, EgressJobs, History, Outbox, Presence, Rooms, Store, WebhookRegistry
from livesessions.domain.sessions import SessionKeeper
from livesessions.egress.links import LinkSigner, load_or_create_secret
from livesessions.egress.service import EgressService
from livesessions.logs import context
from livesessions.realtime.event_stream import ProjectEvents
from livesessions.realtime.fanout import Fanout, LocalFanout
from livesessions.realtime.hub import Hub
from livesessions.realtime.membership import Membership
from livesessions.stores.memory_presence import MemoryPresence
from livesessions.stores.sqlite import SQLiteStore
from livesessions.telemetry import Telemetry
from livesessions.webhooks.dispatcher import Dispatcher
from livesessions.webhooks.sealing import Sealer, read_secret_file

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[None]]


@dataclass
class Services:
    settings: Settings
    # The database behind the durable ports below; components take the
    # narrowest port they need (see domain/ports.py).
    store: Store
    rooms: Rooms
    history: History
    accounts: Accounts
    jobs: EgressJobs
    outbox: Outbox
    webhooks: WebhookRegistry
    presence: Presence
    keeper: SessionKeeper
    api_keys: ApiKeys
    signer: PeerTokenSigner
    peer_tokens: PeerTokenCheck
    hub: Hub
    fanout: Fanout
    membership: Membership
    egress: EgressService
    links: LinkSigner
    sign_in: WalletSignIn
    # Keeps the API keys that sign webhook deliveries encrypted at rest.
    sealer: Sealer
    dispatcher: Dispatcher
    # This node's live event stream clients, by project.
    project_events: ProjectEvents
    # Each project's allowed browser origins, checked on WebSocket joins.
    whitelisted_domains: WhitelistedDomains
    key_limiter: Limiter
    sign_in_limiter: Limiter
    # Requests with a wrong API key or token, per client address.
    failed_auth_limiter: Limiter
    clock: Clock
    telemetry: Telemetry
    # What the stores raise while one they need cannot be reached: answered
    # 503 (or close 1013 to a joining peer) rather than 500.
    outages: tuple[type[BaseException], ...] = ()
    # Run once serving starts (recovery from the last run, background work),
    # and at shutdown after every connection was closed, in order.
    on_start: list[Step] = field(default_factory=list)
    on_stop: list[Step] = field(default_factory=list)

    async def aclose(self) -> None:
        for step in self.on_stop:
            try:
                await step()
            except Exception:
                log.exception("a shutdown step failed")


def open_store(settings: Settings) -> SQLiteStore:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(settings.database_path)


@dataclass
class Backends:
    """What `assemble` is given: the stores and how room events travel."""

    store: Store
    presence: Presence
    fanout: Fanout
    signing_key: ec.EllipticCurvePrivateKey
    link_secret: bytes
    # seals the API keys kept for signing webhook deliveries
    sealing_secret: bytes
    key_limiter: Limiter
    sign_in_limiter: Limiter
    failed_auth_limiter: Limiter


def memory_limiters(settings: Settings) -> tuple[RateLimiter, RateLimiter, RateLimiter]:
    """The API-key, sign-in and failed-authentication limits, in this process."""
    per_minute = settings.sign_ins_per_minute
    return (
        RateLimiter(settings.rate_limit, settings.rate_burst),
        RateLimiter(per_minute / 60, per_minute),
        RateLimiter(settings.failed_auths_per_minute / 60, settings.failed_auths_per_minute),
    )


def assemble(settings: Settings, backends: Backends, telemetry: Telemetry, clock: Clock) -> Services:
    store, presence, fanout = backends.store, backends.presence, backends.fanout
    keeper = SessionKeeper(presence, store, clock)
    store.instrument(telemetry)
    membership = Membership(keeper, fanout, telemetry)
    signer = PeerTokenSigner(backends.signing_key)
    api_keys = ApiKeys(store, clock)
    peer_tokens = PeerTokenCheck(signer, api_keys.is_active)
    egress = EgressService(
        store,
        store,
        presence,
        membership,
        peer_tokens,
        settings.recordings_dir,
        clock,
        int(settings.worker_lease * 1000),
    )

    async def refresh_gauges() -> None:
        rooms, peers = await presence.totals()
        telemetry.live_rooms.set(rooms)
        telemetry.peers.set(peers)
        for kind in EGRESS_TYPES:
            telemetry.recordings_active.labels(kind).set(egress.active_count(kind))
        telemetry.event_stream_clients.set(project_events.clients())

    telemetry.refresh_before_scrape(refresh_gauges)
    sealer = Sealer(backends.sealing_secret)
    dispatcher = Dispatcher(
        store,
        sealer,
        clock,
        int(settings.webhook_retry_for * 1000),
        settings.allow_private_webhook_urls,
        lambda outcome: telemetry.webhook_attempts.labels(outcome).inc(),
    )
    project_events = ProjectEvents(settings.event_stream_buffer)
    # Events reach the stream's clients, and wake the dispatcher, once they
    # are committed (and, scaled out, put in order).
    store.on_committed(project_events.publish)
    store.on_committed(dispatcher.wake)
    egress.counts_changed = lambda key: project_events.room_changed(key.project_id, key.room_id)
    policy = SignInPolicy(
        domain=settings.siwe_domain or urlsplit(settings.base_url).netloc,
        uri=settings.siwe_uri or settings.base_url,
        chain_ids=settings.chain_ids,
    )
    return Services(
        settings=settings,
        store=store,
        rooms=store,
        history=store,
        accounts=store,
        jobs=store,
        outbox=store,
        webhooks=store,
        presence=presence,
        keeper=keeper,
        api_keys=api_keys,
        signer=signer,
        peer_tokens=peer_tokens,
        hub=fanout.hub,
        fanout=fanout,
        membership=membership,
        egress=egress,
        links=LinkSigner(backends.link_secret),
        sign_in=WalletSignIn(store, api_keys, clock, policy, telemetry),
        sealer=sealer,
        dispatcher=dispatcher,
        project_events=project_events,
        whitelisted_domains=WhitelistedDomains(store, clock),
        key_limiter=backends.key_limiter,
        sign_in_limiter=backends.sign_in_limiter,
        failed_auth_limiter=backends.failed_auth_limiter,
        clock=clock,
        telemetry=telemetry,
    )


def build_services(settings: Settings, clock: Clock = now_ms) -> Services:
    """The embedded service: SQLite in the data directory, presence in memory."""
    store = open_store(settings)
    key_limiter, sign_in_limiter, failed_auth_limiter = memory_limiters(settings)
    backends = Backends(
        store=store,
        presence=MemoryPresence(grace_period_ms=int(settings.grace_period * 1000)),
        fanout=LocalFanout(Hub()),
        signing_key=load_or_create_key(settings.signing_key_path),
        link_secret=load_or_create_secret(settings.link_secret_path),
        sealing_secret=(
            read_secret_file(settings.webhook_sealing_key_file)
            if settings.webhook_sealing_key_file
            else load_or_create_secret(settings.webhook_sealing_key_path)
        ),
        key_limiter=key_limiter,
        sign_in_limiter=sign_in_limiter,
        failed_auth_limiter=failed_auth_limiter,
    )
    services = assemble(settings, backends, Telemetry(), clock)
    services.keeper.session_end_listeners.append(services.egress.session_ended)

    async def recover() -> None:
        # This process is the only one: whatever history holds open is ours,
        # left by the last run.
        closed = await services.history.close_interrupted_sessions()
        if closed:
            log.info("closed sessions left open by the previous run", extra=context(count=closed))
        finalized = await services.egress.recover()
        if finalized:
            log.info(
                "finalized recordings and livestreams left active by the previous run", extra=context(count=finalized)
            )

    async def close() -> None:
        await services.dispatcher.stop()
        store.close()

    async def dispatch() -> None:
        # Deliveries the last run was sending when it stopped go again now.
        await store.release_claims()
        services.dispatcher.start()

    services.on_start.extend([recover, dispatch])
    services.on_stop.append(close)
    return services
