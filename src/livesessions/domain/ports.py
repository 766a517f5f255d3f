"""The ports the service is written against, one per concern.

`Presence` is who is in which room right now (memory on one node; Redis when
scaled out). The others are what must outlive a restart, by concern: rooms,
history, accounts, egress jobs (SQLite embedded; PostgreSQL when scaled out).
The domain, HTTP and realtime layers know only these; a component asks for
the narrowest one it needs. `Store` is all durable ports in one object, for
the code that builds the service.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from livesessions.domain.egress import EgressJob
from livesessions.domain.events import StoredEvent
from livesessions.domain.live import (
    Admission,
    EndedSession,
    JoinOutcome,
    LeaveOutcome,
    LiveSession,
    PeerPresence,
    Removal,
    RoomKey,
)
from livesessions.domain.records import ApiKeyRecord, Metrics, Participant, Project, Room, SessionRecord
from livesessions.domain.webhooks import (
    AttemptResult,
    Delivery,
    DeliveryLogEntry,
    Settlement,
    Webhook,
    WebhookState,
)

if TYPE_CHECKING:
    from livesessions.telemetry import Telemetry


EventsListener = Callable[[list[StoredEvent]], None]


class Presence(Protocol):
    async def join(self, key: RoomKey, admission: Admission, now: int) -> JoinOutcome: ...

    async def leave(self, key: RoomKey, peer_id: str, connection_id: str, now: int) -> LeaveOutcome | None: ...

    async def update_metadata(self, key: RoomKey, peer_id: str, connection_id: str, metadata: str) -> bool: ...

    async def expire(self, now: int) -> list[EndedSession]: ...

    async def count_egress(self, key: RoomKey, kind: str) -> bool: ...

    async def remove(self, key: RoomKey, peer_id: str, now: int) -> tuple[Removal, LeaveOutcome] | None:
        """Take a (non-bot) peer out of the room whatever its connection (moderation);
        None when it is not in the room."""
        ...

    async def end_session(self, key: RoomKey, now: int) -> tuple[EndedSession, list[Removal]] | None:
        """End the room's live session now, with no grace: every member (bots
        too) out. None when the room has no peers."""
        ...

    async def live_sessions(
        self, project_id: str, after: tuple[int, str] | None = None, limit: int | None = None
    ) -> list[LiveSession]:
        """Live rooms, oldest session first; `after` is a (start_time, room_id)
        place in that order to continue after."""
        ...

    async def live_sessions_json(self, project_id: str) -> list[bytes]:
        """Every live room of the project, oldest session first, as the JSON
        array the Live Sessions API shows, in pieces (`b"".join` them: a
        caller joins them once with the rest of its answer)."""
        ...

    async def listing_version(self, project_id: str) -> int:
        """A number that changes whenever the project's list of live sessions
        could: lets a caller reuse an encoded answer while it is unchanged."""
        ...

    async def live_session(self, key: RoomKey) -> LiveSession | None: ...

    async def session_of(self, key: RoomKey) -> str | None: ...

    async def peers(self, key: RoomKey) -> list[PeerPresence] | None: ...

    async def live_session_ids(self) -> list[str]: ...

    async def totals(self) -> tuple[int, int]:
        """(live rooms, peers in them) across every project."""

    async def ping(self) -> None:
        """Raise unless presence can be used right now."""


class Accounts(Protocol):
    """Projects, API keys, sign-in nonces and account sessions."""

    async def project_for_wallet(self, wallet_address: str, now: int) -> Project: ...

    async def add_api_key(
        self, project_id: str, key_id: str, name: str, key_hash: str, masked_key: str, now: int
    ) -> ApiKeyRecord: ...

    async def project_for_key_hash(self, key_hash: str) -> tuple[str, str] | None:
        """(project id, key id) of a key that is not revoked."""

    async def api_key_active(self, key_id: str) -> bool:
        """True for a key that exists and is not revoked."""

    async def keys_revoked_since(self, since: int) -> list[tuple[str, str, int]]:
        """(key hash, key id, revoked at) of keys revoked at or after `since`."""

    async def list_api_keys(self, project_id: str) -> list[ApiKeyRecord]: ...

    async def all_api_keys(self, wallet_address: str | None) -> list[tuple[str, str, ApiKeyRecord]]:
        """(project id, wallet, key) of every working key, or of one wallet's, oldest first."""

    async def api_key_project(self, key_id: str) -> str | None:
        """The project of a working key."""

    async def api_key_hash(self, project_id: str, key_id: str) -> str | None: ...

    async def revoke_api_key(self, key_hash: str, now: int) -> None: ...

    async def record_key_use(self, last_used: dict[str, int]) -> None: ...

    async def first_sign_in(self, project_id: str, now: int) -> bool: ...

    async def add_nonce(self, nonce: str, expires_at: int) -> None: ...

    async def consume_nonce(self, nonce: str, now: int) -> bool: ...

    async def add_account_session(self, token_hash: str, project_id: str, address: str, expires_at: int) -> None: ...

    async def account_session(self, token_hash: str, now: int) -> tuple[str, str] | None: ...

    async def end_account_sessions(self, token_hash: str, everywhere: bool) -> None: ...

    async def forget_expired_sign_ins(self, now: int) -> None: ...

    async def whitelisted_domains(self, project_id: str) -> list[str]:
        """The project's allowed browser origins, in the order set (empty: any
        origin; also for a project that does not exist)."""

    async def set_whitelisted_domains(self, project_id: str, domains: list[str]) -> None:
        """Replace the project's list (already normalised); empty clears it."""

    async def all_whitelisted_domains(self, wallet_address: str | None) -> list[tuple[str, str, list[str]]]:
        """(project id, wallet, domains) of every project whose list is not
        empty, oldest project first; or, given a (lower-case) wallet, of its
        project whatever its list."""


class Rooms(Protocol):
    """Rooms and their metadata."""

    async def create_room(self, project_id: str, metadata: dict[str, Any] | None, locked: bool, now: int) -> Room: ...

    async def get_room(self, project_id: str, room_id: str) -> Room | None: ...

    async def list_rooms(self, project_id: str, offset: int, limit: int) -> tuple[list[Room], int]: ...

    async def set_room_metadata(self, project_id: str, room_id: str, metadata: dict[str, Any]) -> bool: ...

    async def set_room_locked(self, project_id: str, room_id: str, locked: bool) -> bool: ...


class History(Protocol):
    """Sessions and who took part, as they happened. The record_* / end_* / touch_*
    writes are queued when called (not when awaited) and land in the order they
    were called."""

    def record_join(
        self,
        project_id: str,
        room_id: str,
        session_id: str,
        session_start: int | None,
        peer_id: str,
        role: str,
        metadata: str,
        now: int,
    ) -> Awaitable[None]: ...

    def record_exit(self, session_id: str, peer_id: str, now: int) -> Awaitable[None]: ...

    def record_peer_metadata(self, session_id: str, peer_id: str, metadata: str) -> Awaitable[None]: ...

    def end_sessions(self, ended: list[tuple[str, int]]) -> Awaitable[None]: ...

    def touch_sessions(self, session_ids: list[str], now: int) -> Awaitable[None]: ...

    async def close_interrupted_sessions(self) -> int: ...

    async def list_sessions(
        self, project_id: str, room_id: str, before: int | None, limit: int
    ) -> tuple[list[SessionRecord], int | None]: ...

    async def list_participants(self, project_id: str, session_id: str) -> list[Participant] | None: ...

    async def metrics(self, project_id: str, now: int) -> Metrics: ...

    async def session_end_time(self, session_id: str) -> int | None: ...

    async def stints_since(self, project_id: str, since: int) -> list[tuple[int, int | None]]:
        """(join time, exit time or None) of every stint of the project's
        peers that had not ended by `since`."""

    # recordings and livestreams


class EgressJobs(Protocol):
    """Recording and livestream jobs, and their media part for external workers."""

    async def add_egress_job(self, job: EgressJob) -> bool: ...

    async def delete_egress_job(self, job_id: str) -> None: ...

    async def recording(self, job_id: str) -> EgressJob | None: ...

    async def egress_job_by_playback(self, playback_id: str) -> EgressJob | None: ...

    async def active_egress_jobs(self) -> list[EgressJob]: ...

    async def stop_egress_job(
        self, job_id: str, stopped_at: int, size: int, failed_reason: str | None = None, failed_at: int | None = None
    ) -> bool: ...

    async def list_recordings(
        self, project_id: str, session_id: str | None, before: int | None, limit: int
    ) -> tuple[list[EgressJob], int | None]: ...

    async def media_jobs(self, project_id: str, status: str | None, limit: int) -> list[EgressJob]: ...

    async def update_media(
        self, project_id: str, job_id: str, worker_id: str, now: int, changes: dict[str, Any], claim: bool = False
    ) -> EgressJob | str: ...

    async def release_expired_leases(self, now: int) -> int: ...


class Outbox(Protocol):
    """The events the history and egress writes recorded (in the transaction
    of the change they tell of), as the live event stream reads them back.

    A project's events are ordered by `StoredEvent.position`. Test events
    (`webhook:test`) are for one webhook only and never read back here."""

    def on_committed(self, listener: EventsListener) -> None:
        """Call `listener` on this node with events once they can be read
        (in order): events this node wrote, and, scaled out, those other
        nodes wrote (`sequence_events` makes them readable)."""

    async def events_after(self, project_id: str, position: int, limit: int) -> list[StoredEvent]: ...

    async def event_position(self, project_id: str, event_id: str) -> int | None:
        """Where the project's event `event_id` is; None if it is not (or no
        longer) in the log."""

    async def latest_event(self, project_id: str) -> StoredEvent | None: ...

    async def sequence_events(self) -> int:
        """Scaled out, events are written by many nodes at once and put in
        order afterwards (here); how many were. The embedded store orders
        them as it writes them: 0."""

    async def prune_events(self, before: int) -> int:
        """Forget events older than `before` that no webhook still waits for."""


class WebhookRegistry(Protocol):
    """Registered webhooks and their delivery queue, one per webhook and room,
    each delivered in order."""

    async def add_webhook(self, webhook: Webhook) -> None: ...

    async def webhook(self, project_id: str, webhook_id: str) -> Webhook | None: ...

    async def list_webhooks(self, project_id: str) -> list[WebhookState]: ...

    async def delete_webhook(self, project_id: str, webhook_id: str) -> bool: ...

    async def queue_test_event(self, project_id: str, webhook_id: str, payload: dict[str, Any], now: int) -> str | None:
        """Queue a `webhook:test` event for this (active) webhook alone; its id,
        or None if there is no such active webhook."""

    async def next_delivery_at(self) -> int | None:
        """When the earliest unclaimed delivery is due (None: none waits)."""

    async def claim_deliveries(
        self, now: int, lease_ms: int, room_for: dict[str, int], default_room: int, limit: int
    ) -> list[Delivery]:
        """Claim due deliveries, each the oldest undelivered event of its
        webhook and room, for `lease_ms`: at most `room_for[webhook]` (else
        `default_room`) per webhook and `limit` in all."""

    async def settle_delivery(self, delivery: Delivery, result: AttemptResult, settled: Settlement, now: int) -> None:
        """Log the attempt and apply what `settle` decided."""

    async def webhook_deliveries(
        self, project_id: str, webhook_id: str, before: int | None, limit: int
    ) -> tuple[list[DeliveryLogEntry], int | None] | None:
        """The webhook's attempts, newest first, and the next page's cursor;
        None if the project has no such webhook."""

    async def prune_deliveries(self, before: int) -> int: ...


class Store(Accounts, Rooms, History, EgressJobs, Outbox, WebhookRegistry, Protocol):
    """Every durable port, and the database behind them."""

    def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise unless the database answers a trivial query."""

    def instrument(self, telemetry: Telemetry) -> None:
        """Record write-queue depth and commit times."""
