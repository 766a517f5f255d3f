"""Committed events handed to this node's live event stream clients.

The store tells `ProjectEvents.publish` of events once they can be read back
(in order); each client of the project gets them in its own bounded buffer.
A client that falls `limit` events behind is marked overflowed and gets
nothing more: its buffer, not the server's memory, is what it costs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from livesessions.domain.events import StoredEvent


@dataclass(frozen=True, slots=True)
class RoomChanged:
    """A room's counts changed with no event of its own (a recording counted
    just after its start was recorded): its list item is sent again."""

    room_id: str


Item = StoredEvent | RoomChanged


class Subscription:
    __slots__ = ("_limit", "buffer", "closed", "overflowed", "project_id", "ready")

    def __init__(self, project_id: str, limit: int) -> None:
        self.project_id = project_id
        self._limit = limit
        self.buffer: deque[Item] = deque()
        self.ready = asyncio.Event()
        # Set once the client fell too far behind (it is then cut off).
        self.overflowed = asyncio.Event()
        # The server is shutting down: the stream ends.
        self.closed = False

    def push(self, event: Item) -> None:
        if self.overflowed.is_set():
            return
        if len(self.buffer) >= self._limit:
            self.buffer.clear()
            self.overflowed.set()
            self.ready.set()
            return
        self.buffer.append(event)
        self.ready.set()

    def take(self) -> list[Item]:
        taken = list(self.buffer)
        self.buffer.clear()
        self.ready.clear()
        return taken


class ProjectEvents:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._subscriptions: dict[str, set[Subscription]] = {}

    def subscribe(self, project_id: str) -> Subscription:
        subscription = Subscription(project_id, self.limit)
        self._subscriptions.setdefault(project_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        found = self._subscriptions.get(subscription.project_id)
        if found is not None:
            found.discard(subscription)
            if not found:
                del self._subscriptions[subscription.project_id]

    def publish(self, events: list[StoredEvent]) -> None:
        for event in events:
            for subscription in self._subscriptions.get(event.project_id, ()):
                subscription.push(event)

    def room_changed(self, project_id: str, room_id: str) -> None:
        for subscription in self._subscriptions.get(project_id, ()):
            subscription.push(RoomChanged(room_id))

    def close(self) -> None:
        """End every stream (the server is shutting down)."""
        for found in self._subscriptions.values():
            for subscription in found:
                subscription.closed = True
                subscription.ready.set()

    def clients(self) -> int:
        return sum(len(found) for found in self._subscriptions.values())
