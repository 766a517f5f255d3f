"""Everything a running service holds, built once from its settings."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from livesessions.auth.api_keys import ApiKeys
from livesessions.auth.peer_tokens import PeerTokenCheck, PeerTokenSigner, load_or_create_key
from livesessions.auth.rate_limits import RateLimiter
from livesessions.auth.wallet_sign_in import SignInPolicy, WalletSignIn
from livesessions.clock import Clock, now_ms
from livesessions.config import Settings
from livesessions.domain.egress import EGRESS_TYPES
from livesessions.domain.ports import Accounts, EgressJobs, History, Presence, Rooms, Store
from livesessions.domain.sessions import SessionKeeper
from livesessions.egress.links import LinkSigner, load_or_create_secret
from livesessions.egress.service import EgressService
from livesessions.realtime.hub import Hub
from livesessions.realtime.membership import Membership
from livesessions.stores.memory_presence import MemoryPresence
from livesessions.stores.sqlite import SQLiteStore
from livesessions.telemetry import Telemetry


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
    presence: Presence
    keeper: SessionKeeper
    api_keys: ApiKeys
    signer: PeerTokenSigner
    peer_tokens: PeerTokenCheck
    hub: Hub
    membership: Membership
    egress: EgressService
    links: LinkSigner
    sign_in: WalletSignIn
    key_limiter: RateLimiter
    sign_in_limiter: RateLimiter
    # Requests with a wrong API key or account token, per client address.
    failed_auth_limiter: RateLimiter
    clock: Clock
    telemetry: Telemetry

    def close(self) -> None:
        self.store.close()


def open_store(settings: Settings) -> SQLiteStore:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return SQLiteStore(settings.database_path)


def build_services(settings: Settings, clock: Clock = now_ms) -> Services:
    store = open_store(settings)
    presence = MemoryPresence(grace_period_ms=int(settings.grace_period * 1000))
    keeper = SessionKeeper(presence, store, clock)
    hub = Hub()
    telemetry = Telemetry()
    store.instrument(telemetry)
    membership = Membership(keeper, hub, telemetry)
    signer = PeerTokenSigner(load_or_create_key(settings.signing_key_path))
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
    keeper.session_end_listeners.append(egress.session_ended)

    async def refresh_gauges() -> None:
        rooms, peers = await presence.totals()
        telemetry.live_rooms.set(rooms)
        telemetry.peers.set(peers)
        for kind in EGRESS_TYPES:
            telemetry.recordings_active.labels(kind).set(egress.active_count(kind))

    telemetry.refresh_before_scrape(refresh_gauges)
    policy = SignInPolicy(
        domain=settings.siwe_domain or urlsplit(settings.base_url).netloc,
        uri=settings.siwe_uri or settings.base_url,
        chain_ids=settings.chain_ids,
    )
    per_minute = settings.sign_ins_per_minute
    return Services(
        settings=settings,
        store=store,
        rooms=store,
        history=store,
        accounts=store,
        jobs=store,
        presence=presence,
        keeper=keeper,
        api_keys=api_keys,
        signer=signer,
        peer_tokens=peer_tokens,
        hub=hub,
        membership=membership,
        egress=egress,
        links=LinkSigner(load_or_create_secret(settings.link_secret_path)),
        sign_in=WalletSignIn(store, api_keys, clock, policy, telemetry),
        key_limiter=RateLimiter(settings.rate_limit, settings.rate_burst),
        sign_in_limiter=RateLimiter(per_minute / 60, per_minute),
        failed_auth_limiter=RateLimiter(settings.failed_auths_per_minute / 60, settings.failed_auths_per_minute),
        clock=clock,
        telemetry=telemetry,
    )
