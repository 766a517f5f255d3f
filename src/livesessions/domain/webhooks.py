"""Webhooks: what is registered, what is waiting to be delivered, and the
rules that decide what happens after each attempt (pure, so that every store
and the dispatcher agree on them)."""

from __future__ import annotations

import re
import secrets
import string
from typing import Literal

import msgspec

WEBHOOK_ID_PREFIX = "whk_"
WEBHOOK_ID_PATTERN = re.compile(r"^whk_[A-Za-z0-9]{20}$")
_ALNUM = string.ascii_letters + string.digits

WebhookStatus = Literal["active", "disabled"]

# Retries: the first within 2 s, then doubling, at most 5 minutes apart.
FIRST_RETRY_MS = 2_000
LONGEST_RETRY_MS = 300_000
# An attempt that takes longer has failed.
ATTEMPT_TIMEOUT_S = 10.0
# A claimed delivery is another node's again after this long: well past an
# attempt's timeout, so that one event is sent by one node at a time.
CLAIM_LEASE_MS = 30_000
# A queued delivery waits behind its room's head with this as its due time
# (never due); the head, and only it, has a real one. So "due" is one index
# range, however long a failing endpoint's queue grows.
BEHIND_HEAD = 2**62
# At most this many attempts at once to one endpoint.
PER_ENDPOINT_CONCURRENCY = 4
# Only this much of a receiver's answer is read (and at most 200 characters of
# it kept in an error).
MAX_RESPONSE_BYTES = 1024


def new_webhook_id() -> str:
    return WEBHOOK_ID_PREFIX + "".join(secrets.choice(_ALNUM) for _ in range(20))


class Webhook(msgspec.Struct, kw_only=True):
    id: str
    project_id: str
    # The API key that registered it: deliveries are signed with that key,
    # and revoking it disables the webhook.
    key_id: str
    name: str
    url: str
    # None: every event
    events: list[str] | None
    # The API key, encrypted with the service's own secret (never returned).
    sealed_key: bytes
    status: WebhookStatus
    created_at: int


class LastDelivery(msgspec.Struct, kw_only=True):
    at: int
    event_id: str
    response_status: int | None
    error: str | None


class WebhookState(msgspec.Struct, kw_only=True):
    webhook: Webhook
    # Events queued for it and not yet delivered or given up.
    pending: int
    last_delivery: LastDelivery | None


class Delivery(msgspec.Struct, kw_only=True):
    """One attempt to make, claimed by this node until `claimed_until`."""

    webhook_id: str
    url: str
    sealed_key: bytes
    # the event's row (events are queued per webhook by it)
    event_seq: int
    event_id: str
    event: str
    room_id: str
    room_seq: int
    payload: str
    created_at: int
    # 1 for the first attempt
    attempt: int


class DeliveryLogEntry(msgspec.Struct, kw_only=True):
    seq: int
    event_id: str
    event: str
    room_id: str
    attempt: int
    at: int
    response_status: int | None
    error: str | None


class AttemptResult(msgspec.Struct, frozen=True):
    """What an attempt got: the receiver's status, or why there was none."""

    status: int | None
    error: str | None = None


Outcome = Literal["delivered", "retry", "given-up", "disable"]


class Settlement(msgspec.Struct, frozen=True):
    outcome: Outcome
    # when to try again ("retry")
    next_at: int | None = None
    # what the deliveries log says (None for a 2xx)
    error: str | None = None


def saturated(room_for: dict[str, int]) -> list[str]:
    """The webhooks with no free place: a claim skips their deliveries (in the
    query, so that one busy endpoint's backlog does not hide the others')."""
    return [webhook_id for webhook_id, free in room_for.items() if free <= 0]


def within_room(candidates: list[Delivery], room_for: dict[str, int], default_room: int, limit: int) -> list[Delivery]:
    """The candidates (in order) that fit each webhook's free places
    (`room_for`, else `default_room`), at most `limit` in all."""
    free = dict(room_for)
    chosen = []
    for delivery in candidates:
        left = free.get(delivery.webhook_id, default_room)
        if left <= 0:
            continue
        free[delivery.webhook_id] = left - 1
        chosen.append(delivery)
        if len(chosen) == limit:
            break
    return chosen


def retry_delay_ms(failed_attempts: int) -> int:
    """How long to wait after the n-th failed attempt."""
    return min(LONGEST_RETRY_MS, FIRST_RETRY_MS << min(failed_attempts - 1, 20))


def settle(delivery: Delivery, result: AttemptResult, now: int, retry_for_ms: int) -> Settlement:
    """What happens after an attempt: a 2xx is delivered; 410 disables the
    webhook; anything else is retried until `retry_for_ms` after the event,
    then given up."""
    status = result.status
    if status is not None and 200 <= status < 300:
        return Settlement("delivered")
    reason = result.error or f"answered {status}"
    if status == 410:
        return Settlement("disable", error="answered 410 Gone: webhook disabled")
    next_at = now + retry_delay_ms(delivery.attempt)
    if next_at - delivery.created_at > retry_for_ms:
        return Settlement("given-up", error=f"given up after {delivery.attempt} attempts: {reason}")
    return Settlement("retry", next_at=next_at, error=reason)
