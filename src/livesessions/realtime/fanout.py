"""How a room's events reach the connections of its members.

On one node (`LocalFanout`) every member's connection is in this process's
hub, and an event is handed to them in the same step that made it. Scaled out
(livesessions.cluster.fanout), members sit on many nodes: the presence scripts
publish joins, leaves and metadata changes in Redis as they make them, data
messages are published the same way, and every node hands what it receives to
its own connections, in the order Redis saw it.
"""

from __future__ import annotations

from typing import Protocol

from livesessions.domain.live import JoinOutcome, PeerPresence, Removal, RoomKey
from livesessions.realtime import protocol
from livesessions.realtime.hub import Connection, Hub


class Fanout(Protocol):
    hub: Hub

    def attach(self, connection: Connection, outcome: JoinOutcome) -> Connection | None:
        """Start handing the room's events to an admitted connection (after its
        `joined`); returns the connection on this node that it replaces."""

    def detach(self, connection: Connection) -> bool:
        """Stop; False when the connection was not attached (or was replaced)."""

    def peer_joined(self, key: RoomKey, peer: PeerPresence) -> None:
        """Presence admitted a new peer (not a replacement of its own connection)."""

    def peer_left(self, key: RoomKey, peer_id: str) -> None:
        """Presence took a peer out."""

    def metadata_updated(self, key: RoomKey, peer_id: str, metadata: str) -> None:
        """Presence changed a peer's metadata."""

    async def peer_gone(self, key: RoomKey, peer_id: str, connection_id: str, session_id: str | None, at: int) -> None:
        """A peer presence no longer holds has left (its leave could not be
        taken while presence was out of reach): tell the others."""

    def evicted(self, key: RoomKey, removal: Removal, why: str) -> None:
        """Presence took a member out for the project (moderation; `why` is a
        key of protocol.EVICTION_CLOSE): its connection is closed, wherever it is."""

    async def data(self, key: RoomKey, message: protocol.Data, recipients: set[str] | None) -> None:
        """A data message from `message.sender` to the room (or only `recipients`),
        for the members allowed to receive data."""


class LocalFanout:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def attach(self, connection: Connection, outcome: JoinOutcome) -> Connection | None:
        return self.hub.add(connection)

    def detach(self, connection: Connection) -> bool:
        return self.hub.remove(connection)

    def peer_joined(self, key: RoomKey, peer: PeerPresence) -> None:
        self.hub.broadcast(key, protocol.PeerJoined(peer), exclude=peer.peer_id)

    def peer_left(self, key: RoomKey, peer_id: str) -> None:
        self.hub.broadcast(key, protocol.PeerLeft(peer_id))

    def metadata_updated(self, key: RoomKey, peer_id: str, metadata: str) -> None:
        self.hub.broadcast(key, protocol.MetadataUpdated(peer_id, metadata))

    async def peer_gone(self, key: RoomKey, peer_id: str, connection_id: str, session_id: str | None, at: int) -> None:
        self.peer_left(key, peer_id)

    def evicted(self, key: RoomKey, removal: Removal, why: str) -> None:
        close_evicted(self.hub, key, removal.peer_id, removal.connection_id, why)
        if not removal.was_bot:
            self.peer_left(key, removal.peer_id)

    async def data(self, key: RoomKey, message: protocol.Data, recipients: set[str] | None) -> None:
        self.hub.broadcast(key, message, exclude=message.sender, only=lambda c: receives_data(c, recipients))


def close_evicted(hub: Hub, key: RoomKey, peer_id: str, connection_id: str, why: str) -> None:
    """Close the evicted member's connection, if this node holds it."""
    holder = hub.find(key, peer_id)
    if holder is not None and holder.id == connection_id:
        holder.close(*protocol.EVICTION_CLOSE[why])


def receives_data(connection: Connection, recipients: set[str] | None) -> bool:
    return connection.can("canRecvData") and (recipients is None or connection.peer_id in recipients)
