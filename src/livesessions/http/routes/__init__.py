"""Route handlers and their tables, one module per area of the API."""

from __future__ import annotations

from livesessions.http.routes import (
    accounts,
    domains,
    egress,
    history,
    live_events,
    live_sessions,
    meta,
    moderation,
    peer_tokens,
    rooms,
    webhooks,
    workers,
)
from livesessions.http.routing import Operation

# Every operation the service serves, in the order the document lists them.
OPERATIONS: tuple[Operation, ...] = (
    *meta.OPERATIONS,
    *live_sessions.OPERATIONS,
    *live_events.OPERATIONS,
    *moderation.OPERATIONS,
    *rooms.OPERATIONS,
    *history.OPERATIONS,
    *peer_tokens.OPERATIONS,
    *egress.OPERATIONS,
    *workers.OPERATIONS,
    *accounts.OPERATIONS,
    *domains.OPERATIONS,
    *webhooks.OPERATIONS,
)
