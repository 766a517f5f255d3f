"""The peer WebSocket at /ws?token=…: joining a room, messaging, leaving.

A join: the token is checked, the peer enters the room (see membership), and
only once the join is committed to history does its outbox start flowing. So
a peer that has seen `joined` is counted by every later GET, and found in
history too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import msgspec

from livesessions.auth.origins import WhitelistedDomains, origin_header
from livesessions.auth.peer_tokens import InvalidPeerToken, PeerClaims, PeerTokenCheck, RevokedKey
from livesessions.clock import Clock
from livesessions.domain.live import Admission, PeerPresence, RoomKey
from livesessions.domain.metadata import MetadataError, peer_metadata_text
from livesessions.domain.ports import Rooms
from livesessions.domain.sessions import SessionKeeper
from livesessions.logs import context
from livesessions.realtime import protocol
from livesessions.realtime.hub import Close, Connection
from livesessions.realtime.membership import Membership
from livesessions.realtime.protocol import REFUSAL_CLOSE, SEND_FRAME, CloseCode
from livesessions.realtime.throttle import Throttle, Verdict
from livesessions.telemetry import Tally

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _error(message: str) -> bytes:
    return protocol.encode(protocol.Error(message))


class PeerSocket:
    def __init__(
        self,
        tokens: PeerTokenCheck,
        rooms: Rooms,
        keeper: SessionKeeper,
        membership: Membership,
        clock: Clock,
        message_rate: float,
        message_burst: float,
        outages: tuple[type[BaseException], ...] = (),
        origins: WhitelistedDomains | None = None,
    ):
        self.tokens = tokens
        self.rooms = rooms
        self.keeper = keeper
        self.membership = membership
        self.hub = membership.hub
        self.clock = clock
        self.message_rate = message_rate
        self.message_burst = message_burst
        self.telemetry = membership.telemetry
        # What the backends raise while a store they need is out of reach.
        self.outages = outages
        # The projects' whitelisted domains (None: every origin may join).
        self.origins = origins

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = (query.get("token") or [""])[0]
        origin = origin_header(scope)
        try:
            claims = await self.tokens.claims(token, self.clock() // 1000)
            # A browser's join names its page's origin. The project's list comes
            # from a per-project cache trusted for a few seconds, not a database
            # read per join: joins come in bursts, lists rarely change (see
            # WhitelistedDomains). Joins without an Origin skip it.
            origin_ok = self.origins is None or await self.origins.admits(claims.project_id, origin)
            room = await self.rooms.get_room(claims.project_id, claims.room_id)
        except InvalidPeerToken as exc:
            self._refused("revoked-key" if isinstance(exc, RevokedKey) else "bad-token", scope, detail=str(exc))
            return await _close(send, CloseCode.BAD_TOKEN, f"invalid peer token: {exc}"[:120])
        except self.outages as exc:
            self._refused("unavailable", scope, detail=type(exc).__name__)
            return await _close(send, CloseCode.TRY_AGAIN_LATER, "service unavailable; reconnect shortly")
        if not origin_ok:
            self._refused("origin-not-allowed", scope, claims, detail=(origin or "")[:200])
            return await _close(send, CloseCode.LOCKED, "origin not allowed")
        if room is None:
            self._refused("room-not-found", scope, claims)
            return await _close(send, CloseCode.ROOM_NOT_FOUND, "room not found")

        key = RoomKey(claims.project_id, claims.room_id)
        connection = Connection(key=key, peer_id=claims.peer_id, role=claims.role, permissions=claims.permissions)
        admission = Admission(
            peer=PeerPresence(
                peer_id=claims.peer_id, role=claims.role, metadata=claims.metadata, join_time=self.clock()
            ),
            permissions=claims.permissions,
            connection_id=connection.id,
            room_locked=room.room_locked,
            max_peers=claims.max_peers,
            lock_room=claims.lock_room,
        )
        try:
            outcome, persisted = await self.membership.enter(connection, admission)
        except self.outages as exc:
            self._refused("unavailable", scope, claims, detail=type(exc).__name__)
            return await _close(send, CloseCode.TRY_AGAIN_LATER, "service unavailable; reconnect shortly")
        if outcome.refused is not None:
            self._refused(outcome.refused.value, scope, claims)
            await persisted
            return await _close(send, *REFUSAL_CLOSE[outcome.refused])
        connection.on_abort = lambda code: self._cut_off(connection, code)
        # This frame lives as long as the peer: it keeps only what it uses.
        del query, token, room, outcome, admission

        flowing = False
        unrecorded = (CloseCode.INTERNAL, "could not record the join")
        try:
            await persisted
            flowing = True
            _open(connection, send, self.telemetry.ws_sent, scope.get("extensions", {}).get(SEND_FRAME))
            await self._receive_loop(connection, receive)
        except self.outages as exc:
            # The join could not be recorded in time (its database is out of
            # reach): the peer is told to come back, and leaves the room now.
            self._refused("unavailable", scope, claims, detail=type(exc).__name__)
            unrecorded = (CloseCode.TRY_AGAIN_LATER, "service unavailable; reconnect shortly")
            connection.close(*unrecorded)
        except Exception:
            log.exception("peer connection failed")
            connection.close(CloseCode.INTERNAL, "internal error")
        finally:
            await self.membership.depart(connection)
            if flowing:
                connection.close(CloseCode.NORMAL, "")
                writer = connection.writer
                if writer is not None:
                    try:
                        await asyncio.wait_for(writer, timeout=2)
                    except (TimeoutError, Exception):  # noqa: BLE001 - the socket is gone
                        writer.cancel()
            else:
                with contextlib.suppress(Exception):  # the client may be gone already
                    await _close(send, *unrecorded)

    def _refused(
        self, reason: str, scope: dict[str, Any], claims: PeerClaims | None = None, detail: str | None = None
    ) -> None:
        self.telemetry.refusals.labels(reason).inc()
        client = scope.get("client")
        log.info(
            "peer refused",
            extra=context(
                reason=reason,
                detail=detail,
                client=client[0] if client else None,
                project=claims.project_id if claims else None,
                room=claims.room_id if claims else None,
                peer=claims.peer_id if claims else None,
            ),
        )

    def _cut_off(self, connection: Connection, code: int) -> None:
        """The connection was ended at once: the member leaves the room now."""
        reason = CloseCode(code).name.lower().replace("_", "-")
        self.telemetry.disconnects.labels(reason).inc()
        log.info(
            "peer cut off",
            extra=context(
                reason=reason, project=connection.key.project_id, room=connection.key.room_id, peer=connection.peer_id
            ),
        )
        _spawn(self.membership.depart(connection))

    async def _receive_loop(self, connection: Connection, receive: Receive) -> None:
        throttle = Throttle(self.message_rate, self.message_burst)
        received = self.telemetry.ws_in
        while not connection.closing:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            received.inc()
            text = message.get("text")
            verdict = throttle.check(_size(text, message))
            if verdict is not Verdict.ADMIT:
                if verdict is Verdict.DISCONNECT:
                    connection.abort(CloseCode.TOO_FAST, "sending too fast: disconnected")
                elif verdict is Verdict.DROP_AND_WARN:
                    connection.push(
                        _error(
                            f"sending too fast: messages are dropped past {throttle.rate:g} a second "
                            f"(bursts of {throttle.burst:g}); keep going and you are disconnected"
                        )
                    )
                continue
            if text is None:
                connection.push(_error("binary frames are not supported; send JSON text"))
                continue
            await self._on_message(connection, text)

    async def _on_message(self, connection: Connection, text: str) -> None:
        try:
            message = protocol.parse(text)
        except protocol.BadMessage as exc:
            return connection.push(_error(str(exc)))
        try:
            await self._act(connection, message)
        except self.outages:
            connection.push(_error("not done: the service is unavailable right now; retry shortly"))

    async def _act(self, connection: Connection, message: protocol.ClientMessage) -> None:
        if isinstance(message, protocol.SendData):
            return await self._on_data(connection, message)
        if isinstance(message, protocol.UpdateMetadata):
            return await self._on_update_metadata(connection, message)
        if isinstance(message, protocol.Leave):
            await self.membership.depart(connection)
            return connection.close(CloseCode.NORMAL, "left")
        connection.push(protocol.PONG)

    async def _on_data(self, connection: Connection, message: protocol.SendData) -> None:
        if not connection.can("canSendData"):
            return connection.push(_error("not permitted: canSendData"))
        recipients = None if message.to == "*" else set(message.to)
        await self.membership.fanout.data(
            connection.key, protocol.Data(connection.peer_id, message.label, message.payload), recipients
        )

    async def _on_update_metadata(self, connection: Connection, message: protocol.UpdateMetadata) -> None:
        if not connection.can("canUpdateMetadata"):
            return connection.push(_error("not permitted: canUpdateMetadata"))
        try:
            metadata = peer_metadata_text(protocol.read_json(message.metadata))
        except MetadataError as exc:
            return connection.push(_error(str(exc)))
        changed, persisted = await self.keeper.update_metadata(
            connection.key, connection.peer_id, connection.id, metadata, connection.is_bot
        )
        if not changed:
            return
        if connection.admission is not None:
            # What the connection is put back with, should presence lose it.
            peer = msgspec.structs.replace(connection.admission.peer, metadata=metadata)
            connection.admission = dataclasses.replace(connection.admission, peer=peer)
        update = protocol.MetadataUpdated(connection.peer_id, metadata)
        if connection.is_bot:
            connection.push(protocol.encode(update))
        else:
            self.membership.fanout.metadata_updated(connection.key, connection.peer_id, metadata)
        await persisted


def _size(text: str | None, message: dict[str, Any]) -> int:
    """A frame's size in bytes, as it counts against the peer's budget."""
    if text is None:
        return len(message.get("bytes") or b"")
    return len(text) if text.isascii() else len(text.encode())


def _spawn(work: Awaitable[None]) -> None:
    async def run() -> None:
        try:
            await work
        except Exception:
            log.exception("departure of a cut-off peer failed")

    task = asyncio.get_running_loop().create_task(run())
    # The loop holds tasks only weakly: keep it until it is done.
    _departures.add(task)
    task.add_done_callback(_departures.discard)


_departures: set[asyncio.Task[None]] = set()


def _open(connection: Connection, send: Send, sent: Tally, send_frame: Callable[[bytes], bool] | None) -> None:
    """The join is in history: the connection's messages may flow. What was
    queued goes first, in order; from then on a message that finds nothing
    queued goes straight out through `send_frame`, and a writer task exists
    only while something is queued (an idle peer holds no task of its own)."""

    def start_writer() -> None:
        connection.writer = writer = asyncio.get_running_loop().create_task(_drain(connection, send, sent))
        writer.add_done_callback(_retrieve)

    connection.sent = sent
    connection.send_frame = send_frame
    connection.start_writer = start_writer
    if connection.outbox:
        start_writer()


async def _drain(connection: Connection, send: Send, sent: Tally) -> None:
    """Write out what is queued, then end (the next queued message starts another)."""
    try:
        while connection.outbox:
            item = connection.outbox.popleft()
            if isinstance(item, Close):
                await send({"type": "websocket.close", "code": item.code, "reason": item.reason})
                return
            connection.queued_bytes -= len(item)
            # Until this send is done, later messages queue behind it.
            connection.writing = True
            try:
                await send({"type": "websocket.send", "text": item.decode()})
            finally:
                connection.writing = False
            sent.count += 1
    finally:
        connection.writer = None


def _retrieve(task: asyncio.Task[None]) -> None:
    """A writer ends with an error when its socket went away: that is seen by
    the receive loop; the error itself is dropped here, not logged as lost."""
    if not task.cancelled():
        task.exception()


async def _close(send: Send, code: CloseCode, reason: str) -> None:
    await send({"type": "websocket.close", "code": int(code), "reason": reason})
