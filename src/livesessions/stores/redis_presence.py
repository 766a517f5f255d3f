"""Presence in Redis, for any number of nodes serving the same projects.

`RedisPresence` answers the `Presence` port (domain/ports.py) exactly as `MemoryPresence`
does (grace periods, session continuation, bots not counted, replacements,
refusals, oldest-first listings with paging, listing versions, totals), with
every node seeing every peer of every node. Beyond the protocol it keeps node
leases, reaps the members of nodes that died, and puts back what a node still
holds after Redis lost its data.

Each mutation (join, leave, metadata, expiry, egress count, reap, restore) is
one Lua script (redis_lua.py) over one project's keys, so it is atomic across
nodes: admission can never let one peer too many in. Every project key carries
the project as its hash tag, so a script's keys share one slot and Redis
Cluster works; the few global keys share the tag `{g}` and are touched by
separate calls.

Key layout (prefix `ls` by default; P a project, R a room, N a node id):

    ls:{P}                  hash: ver (listing version), ev (event sequence),
                            rooms (listed rooms), peers (peers in them)
    ls:{P}:live             zset, all scores 0: "<start, 15 digits>:R" for every
                            listed room, so lexical order is oldest first
    ls:{P}:idle             zset R -> idle since (rooms waiting out their grace)
    ls:{P}:r:R              hash: sid, start, idle, lock (locked for the session),
                            ls / rec (egress counts), seq (member order), last
                            (latest non-bot join or leave)
    ls:{P}:p:R, ls:{P}:b:R  hash peer id -> member record, peers and bots
    ls:{P}:n:N              set of "p|b" + R + US + peer: members node N holds
    ls:{P}:log              stream of the project's latest events (about
                            EVENT_LOG_LENGTH, kept EVENT_LOG_TTL_MS after the last)
    ls:{P}:ended            zset session id -> end time (kept a day)
    ls:{P}:reaped           zset connection id -> reaped at (kept a day)
    ls:{g}:projects         set of projects with presence (totals, sweeps)
    ls:{g}:idle             zset P -> earliest grace deadline; ls:{g}:idlegen
                            hash P -> generation (see `expire`)
    ls:{g}:alive            zset N -> last heartbeat time (the caller's clock)
    ls:{g}:lease:N          string with a TTL: N is alive while it exists
    ls:{g}:np:N             set of projects N holds members in
    ls:{g}:epoch            random, set when Redis is found empty

A member record is six fields joined by the unit separator "\\x1f":
connection id, node id, seq, join time, role, metadata (ids and roles may not
contain it; metadata, last, may hold anything).

Events. Each script PUBLISHes the room events it causes, inside the script,
on the channel `ls:{P}:events` (`events_channel(project_id)`), so every
subscriber sees a project's events in the order its rooms saw them; each is
also appended to the project's log (`recent_events`), for a subscriber that
missed some to catch up. Each
message is one JSON object; `seq` counts the project's messages (1, 2, ...;
a gap means messages were missed) and `room` names the room:

    {"seq", "type": "peer-joined", "room", "session", "node", "conn",
     "peer": {"peerId", "role", "metadata", "joinTime"}}
        a non-bot peer came in (not sent when it replaced its own connection)
    {"seq", "type": "peer-left", "room", "session" (or null), "peerId", "node",
     "conn", "reason": "left" | "reaped", "time"}
        a non-bot peer went out; "reaped" when its node died (time: when the
        node was last known alive)
    {"seq", "type": "metadata-updated", "room", "peerId", "metadata", "node", "conn"}
        a non-bot peer's metadata changed
    {"seq", "type": "replaced", "room", "peerId", "bot", "node", "conn",
     "byNode", "byConn"}
        the peer (or bot) connected again: node `node` closes `conn` with 4009
    {"seq", "type": "session-ended", "room", "session", "endTime"}
        a session's grace period ran out (found by an expiry or a join)
    {"seq", "type": "data", "room", "sender", "to" (peer ids, or null), "message"}
        a data message (`publish_data`), `message` exactly as peers receive it
    {"seq", "type": "evicted", "room", "peerId", "conn", "reason": "removed" | "ended"}
        the project took the member out (`remove`, `end_session`): the node
        holding `conn` closes it
        a data message (`publish_data`), `message` exactly as peers receive it

`decode_event` reads one into the `RoomEvent` structs below.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, cast

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from livesessions.domain.ids import new_session_id
from livesessions.domain.live import (
    Admission,
    EndedSession,
    JoinOutcome,
    LeaveOutcome,
    LiveSession,
    PeerPresence,
    Refusal,
    Removal,
    RoomKey,
)
from livesessions.stores import redis_lua

if TYPE_CHECKING:
    from livesessions.domain.ports import Presence

US = "\x1f"
_MAX_START = 10**15  # listings hold start times in 15 digits
_RESTORE_BATCH = 256


class PresenceUnavailable(Exception):
    """This node cannot vouch for its lease (no heartbeat got through for a
    lease period), so it changes nothing until a heartbeat renews it or
    registers it again. Answer as for Redis being unreachable (503)."""


class Lease(Enum):
    """What a heartbeat found."""

    REGISTERED = "registered"  # the node's first registration
    RENEWED = "renewed"
    # The lease had run out (the node may have been reaped): the node is
    # registered again under a new id. Call `reregister` with what it holds.
    LOST = "lost"
    # Redis came back empty: registered again under a new id. Call `reregister`.
    EMPTIED = "emptied"


@dataclass(slots=True)
class RedisJoinOutcome(JoinOutcome):
    # The node holding `replaced_connection`: when it is not this one, that
    # node closes it on the "replaced" event.
    replaced_node: str | None = None
    # The project's event sequence number after this join: the joiner's
    # `joined` tells everything up to it, so it is sent only later events.
    event_seq: int = 0


@dataclass(frozen=True, slots=True)
class Departure:
    """A member of a dead node, taken out by `reap_dead_nodes`."""

    key: RoomKey
    peer_id: str
    connection_id: str
    node_id: str
    # When the node was last known alive: the member's exit time.
    left_at: int
    outcome: LeaveOutcome


@dataclass(frozen=True, slots=True)
class HeldConnection:
    """A connection a node still holds, to put back by `reregister`: the
    admission it joined with, and the session it was told it is in."""

    key: RoomKey
    admission: Admission
    session_id: str | None = None
    start_time: int | None = None


RestoreStatus = Literal["present", "restored", "rejoined", "superseded", "full"]


@dataclass(frozen=True, slots=True)
class Restored:
    """What `reregister` did with one held connection:

    - present: it was there (now under this node's id); nothing to do.
    - restored: lost with Redis' data and put back as it was, in its session
      when that had not ended (`outcome.started_session` when a new one had
      to start: record the join in it). No event: nobody saw it leave.
    - rejoined: it had been reaped and announced as gone; it is in again, as
      a join (published peer-joined; record the join in history).
    - superseded: the peer is there on another connection: close this one
      (4009), nothing else.
    - full: it had been reaped and its place is taken: close it (4029).
    """

    connection: HeldConnection
    status: RestoreStatus
    outcome: RedisJoinOutcome


# --- events -----------------------------------------------------------------


class PeerJoinedEvent(msgspec.Struct, tag="peer-joined", tag_field="type", frozen=True):
    seq: int
    room: str
    session: str
    node: str
    conn: str
    peer: PeerPresence


class PeerLeftEvent(msgspec.Struct, tag="peer-left", tag_field="type", rename="camel", frozen=True):
    seq: int
    room: str
    session: str | None
    peer_id: str
    node: str
    conn: str
    reason: str
    time: int


class MetadataUpdatedEvent(msgspec.Struct, tag="metadata-updated", tag_field="type", rename="camel", frozen=True):
    seq: int
    room: str
    peer_id: str
    metadata: str
    node: str
    conn: str


class ReplacedEvent(msgspec.Struct, tag="replaced", tag_field="type", rename="camel", frozen=True):
    seq: int
    room: str
    peer_id: str
    bot: bool
    node: str
    conn: str
    by_node: str
    by_conn: str


class EvictedEvent(msgspec.Struct, tag="evicted", tag_field="type", rename="camel", frozen=True):
    seq: int
    room: str
    peer_id: str
    conn: str
    reason: Literal["removed", "ended"]


class SessionEndedEvent(msgspec.Struct, tag="session-ended", tag_field="type", rename="camel", frozen=True):
    seq: int
    room: str
    session: str
    end_time: int


class DataEvent(msgspec.Struct, tag="data", tag_field="type", frozen=True):
    seq: int
    room: str
    sender: str
    to: list[str] | None
    message: msgspec.Raw


RoomEvent = (
    PeerJoinedEvent
    | PeerLeftEvent
    | MetadataUpdatedEvent
    | ReplacedEvent
    | SessionEndedEvent
    | DataEvent
    | EvictedEvent
)

_event_decoder = msgspec.json.Decoder(RoomEvent)


def decode_event(message: bytes | str) -> RoomEvent:
    """One message of a project's events channel."""
    event: RoomEvent = _event_decoder.decode(message)
    return event


# --- the presence -----------------------------------------------------------


class RedisPresence:
    def __init__(
        self,
        redis: Redis,
        grace_period_ms: int,
        *,
        node_name: str | None = None,
        lease_ms: int = 10_000,
        prefix: str = "ls",
        sweep_interval_ms: int = 60_000,
    ) -> None:
        """`redis` may decode responses or not. `lease_ms`: how long a node
        stays counted after its last heartbeat (heartbeat several times in it).
        `sweep_interval_ms`: how often `expire` looks at every project, not
        only those it was told about (in case a node died between emptying a
        room and saying so)."""
        if "{" in prefix or "}" in prefix or US in prefix:
            raise ValueError(f"the key prefix may not contain braces or \\x1f: {prefix!r}")
        self._redis = redis
        self._grace_ms = grace_period_ms
        self._lease_ms = lease_ms
        self._prefix = prefix
        self._g = f"{prefix}:{{g}}"
        self._sweep_ms = sweep_interval_ms
        self._last_sweep: int | None = None
        self._name = node_name or f"{socket.gethostname()}-{os.getpid()}"
        _check_id("node name", self._name)
        self.node_id = self._new_node_id()
        self._noted: set[str] = set()
        self._epoch: str | None = None
        self._registered = False
        self._valid_until = 0.0
        self._owns_client = False

        script = redis.register_script
        self._join = script(redis_lua.JOIN)
        self._leave = script(redis_lua.LEAVE)
        self._update_metadata = script(redis_lua.UPDATE_METADATA)
        self._expire = script(redis_lua.EXPIRE)
        self._count_egress = script(redis_lua.COUNT_EGRESS)
        self._reap = script(redis_lua.REAP)
        self._restore = script(redis_lua.RESTORE)
        self._list = script(redis_lua.LIST)
        self._room = script(redis_lua.ROOM)
        self._session_ids = script(redis_lua.SESSION_IDS)
        self._note_project = script(redis_lua.NOTE_PROJECT)
        self._idle_add = script(redis_lua.IDLE_ADD)
        self._idle_due = script(redis_lua.IDLE_DUE)
        self._idle_settle = script(redis_lua.IDLE_SETTLE)
        self._register = script(redis_lua.REGISTER)
        self._heartbeat = script(redis_lua.HEARTBEAT)
        self._dead_nodes = script(redis_lua.DEAD_NODES)
        self._settle_node = script(redis_lua.SETTLE_NODE)
        self._deregister = script(redis_lua.DEREGISTER)
        self._publish_data = script(redis_lua.PUBLISH_DATA)
        self._end_unknown = script(redis_lua.END_UNKNOWN)
        self._publish_left = script(redis_lua.PUBLISH_LEFT)
        self._remove_peer = script(redis_lua.REMOVE_PEER)
        self._end_session_now = script(redis_lua.END_SESSION)

    @classmethod
    def from_url(cls, url: str, grace_period_ms: int, **options: Any) -> RedisPresence:
        """A presence on its own client (hiredis parses replies when installed)."""
        presence = cls(Redis.from_url(url, decode_responses=True), grace_period_ms, **options)
        presence._owns_client = True
        return presence

    async def aclose(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

    async def ping(self) -> None:
        """Raise unless Redis answers and this node's lease holds."""
        await self._redis.ping()
        self._check_lease()

    def events_channel(self, project_id: str) -> str:
        """The channel a project's room events are published on."""
        return f"{self._base(project_id)}:events"

    async def recent_events(self, project_id: str, after: int) -> list[RoomEvent]:
        """The project's events after number `after` still in its log, oldest first."""
        log_key = f"{self._base(project_id)}:log"
        entries: list[Any] = await self._redis.xrevrange(log_key, count=redis_lua.EVENT_LOG_LENGTH * 2) or []
        events = []
        for _id, fields in entries:
            event = decode_event(fields.get("e") or fields[b"e"])
            if event.seq <= after:
                break
            events.append(event)
        events.reverse()
        return events

    async def epoch(self) -> str:
        """Changes whenever Redis came back empty: set here if no node has yet
        (a node's next heartbeat then finds it is not the one it knew)."""
        key = f"{self._g}:epoch"
        await self._redis.set(key, secrets.token_hex(8), nx=True)
        value = await self._redis.get(key)
        return _text(value)

    @property
    def events_pattern(self) -> str:
        """A PSUBSCRIBE pattern for every project's events channel."""
        return f"{self._prefix}:{{*}}:events"

    # --- joins and leaves -------------------------------------------------

    async def join(self, key: RoomKey, admission: Admission, now: int) -> RedisJoinOutcome:
        self._check_lease()
        peer = admission.peer
        _check_id("room id", key.room_id)
        _check_id("peer id", peer.peer_id)
        _check_id("role", peer.role)
        _check_id("connection id", admission.connection_id)
        await self._note(key.project_id)
        reply = await self._join(
            keys=[self._base(key.project_id)],
            args=[
                key.room_id,
                peer.peer_id,
                admission.connection_id,
                self.node_id,
                _flag(admission.is_bot),
                _flag(admission.internal),
                peer.role,
                peer.metadata,
                int(peer.join_time),
                _flag(admission.room_locked),
                _flag(admission.is_admin),
                _flag(admission.lock_room),
                -1 if admission.max_peers is None else admission.max_peers,
                now,
                self._grace_ms,
                new_session_id(),
                _version_base(),
            ],
        )
        status, outcome = _join_outcome(key, reply)
        if status is not None:
            outcome.refused = Refusal(status)
        return outcome

    async def leave(self, key: RoomKey, peer_id: str, connection_id: str, now: int) -> LeaveOutcome | None:
        """Take the peer out, unless another connection has replaced this one."""
        self._check_lease()
        reply = await self._leave(
            keys=[self._base(key.project_id)],
            args=[key.room_id, peer_id, connection_id, now, _version_base()],
        )
        if reply is None:
            return None
        session_id, was_bot, emptied, idle_since = reply
        if emptied and idle_since is not None:
            await self._became_idle(key.project_id, int(idle_since))
        return LeaveOutcome(session_id=_opt_text(session_id), was_bot=bool(was_bot), room_emptied=bool(emptied))

    async def update_metadata(self, key: RoomKey, peer_id: str, connection_id: str, metadata: str) -> bool:
        self._check_lease()
        changed = await self._update_metadata(
            keys=[self._base(key.project_id)], args=[key.room_id, peer_id, connection_id, metadata]
        )
        return bool(changed)

    async def expire(self, now: int) -> list[EndedSession]:
        """End every session whose grace period is over.

        Projects with idle rooms are in `{g}:idle` by their earliest deadline.
        After expiring a project, its entry is set to the next deadline only if
        no room went idle in the meantime (its generation is unchanged):
        otherwise it is left as it was, early, and looked at again. A stale
        entry costs one script call; a missing one would leave a session open."""
        reply = await self._idle_due(keys=[self._g], args=[now])
        due = dict(zip(map(_text, reply[::2]), map(_text, reply[1::2]), strict=True))
        sweep = self._last_sweep is None or now - self._last_sweep >= self._sweep_ms
        others: list[str] = []
        if sweep:
            self._last_sweep = now
            others = sorted(p for p in map(_text, await self._redis.smembers(f"{self._g}:projects")) if p not in due)
        ended: list[EndedSession] = []
        for project_id in [*due, *others]:
            reply = await self._expire(keys=[self._base(project_id)], args=[now, self._grace_ms])
            following = reply[0]
            for room_id, session_id, end_time in zip(reply[1::3], reply[2::3], reply[3::3], strict=True):
                ended.append(EndedSession(RoomKey(project_id, _text(room_id)), _text(session_id), int(end_time)))
            if project_id in due:
                await self._idle_settle(
                    keys=[self._g], args=[project_id, due[project_id], "" if following is None else int(following)]
                )
            elif following is not None:
                await self._idle_add(keys=[self._g], args=[project_id, int(following)])
        return ended

    async def count_egress(self, key: RoomKey, kind: str) -> bool:
        """Count a recording or livestream started in the room's live session."""
        self._check_lease()
        counted = await self._count_egress(keys=[self._base(key.project_id)], args=[key.room_id, kind, _version_base()])
        return bool(counted)

    async def publish_data(self, key: RoomKey, sender: str, recipients: bytes, message: bytes) -> None:
        """Publish a data message among the project's events (type "data",
        with `to`: the JSON array of recipients or null, and `message`: the
        message as peers receive it, both given already encoded)."""
        await self._publish_data(keys=[self._base(key.project_id)], args=[key.room_id, sender, recipients, message])

    async def remove(self, key: RoomKey, peer_id: str, now: int) -> tuple[Removal, LeaveOutcome] | None:
        """Take a peer out whatever its connection (moderation): its node
        closes that connection on the "evicted" event (reason "removed")."""
        self._check_lease()
        reply = await self._remove_peer(
            keys=[self._base(key.project_id)],
            args=[key.room_id, peer_id, now, _version_base()],
        )
        if reply is None:
            return None
        connection_id, session_id, emptied, idle_since = reply
        if emptied and idle_since is not None:
            await self._became_idle(key.project_id, int(idle_since))
        outcome = LeaveOutcome(session_id=_opt_text(session_id), was_bot=False, room_emptied=bool(emptied))
        return Removal(peer_id, _text(connection_id), was_bot=False), outcome

    async def end_session(self, key: RoomKey, now: int) -> tuple[EndedSession, list[Removal]] | None:
        """End the room's session now (moderation): every member out, their
        nodes closing their connections on the "evicted" events (reason "ended")."""
        self._check_lease()
        reply = await self._end_session_now(keys=[self._base(key.project_id)], args=[key.room_id, now, _version_base()])
        if reply is None:
            return None
        session_id, members = reply
        removed = [Removal(_text(peer), _text(conn), bool(bot)) for peer, conn, bot in members]
        return EndedSession(key, _text(session_id), now), removed

    async def end_unknown_session(self, key: RoomKey, session_id: str, at: int) -> bool:
        """End a session presence lost track of (see redis_lua.END_UNKNOWN):
        True when it is ended now, and history should say so."""
        ended = await self._end_unknown(keys=[self._base(key.project_id)], args=[key.room_id, session_id, at])
        return bool(ended)

    async def announce_left(
        self, key: RoomKey, peer_id: str, connection_id: str, session_id: str | None, at: int
    ) -> None:
        """Publish the peer-left of a peer presence no longer holds (unless it
        is back in the room): its leave could not reach Redis, which then lost it."""
        await self._publish_left(
            keys=[self._base(key.project_id)],
            args=[key.room_id, peer_id, connection_id, self.node_id, session_id or "", at],
        )

    async def bot_present(self, key: RoomKey, peer_id: str) -> bool:
        """Whether the bot (a recorder or livestream) is in the room, on any node."""
        return bool(await self._redis.hexists(f"{self._base(key.project_id)}:b:{key.room_id}", peer_id))

    # --- reads ------------------------------------------------------------

    async def live_sessions(
        self, project_id: str, after: tuple[int, str] | None = None, limit: int | None = None
    ) -> list[LiveSession]:
        if after is None:
            lower = "-"
        elif after[0] < 0:
            lower = "-"  # every start time is after it
        elif after[0] >= _MAX_START:
            return []
        else:
            lower = f"({_listing(*after)}"
        reply = await self._list(keys=[self._base(project_id)], args=[lower, -1 if limit is None else max(limit, 0)])
        return [
            LiveSession(_text(reply[i]), int(reply[i + 1]), int(reply[i + 2]), int(reply[i + 3]), int(reply[i + 4]))
            for i in range(0, len(reply), 5)
        ]

    async def live_sessions_json(self, project_id: str) -> list[bytes]:
        return [msgspec.json.encode(await self.live_sessions(project_id))]

    async def listing_version(self, project_id: str) -> int:
        version = await self._redis.hget(self._base(project_id), "ver")
        return 0 if version is None else int(version)

    async def live_session(self, key: RoomKey) -> LiveSession | None:
        reply = await self._room(keys=[self._base(key.project_id)], args=[key.room_id])
        if reply is None:
            return None
        count, _sid, start, livestreams, recordings = reply
        return LiveSession(key.room_id, int(start), int(count), int(livestreams), int(recordings))

    async def session_of(self, key: RoomKey) -> str | None:
        """The id of the room's live session, if it has peers right now."""
        reply = await self._room(keys=[self._base(key.project_id)], args=[key.room_id])
        return None if reply is None else _opt_text(reply[1])

    async def peers(self, key: RoomKey) -> list[PeerPresence] | None:
        records = await self._redis.hgetall(f"{self._base(key.project_id)}:p:{key.room_id}")
        if not records:
            return None
        return _peers(records.items())

    async def live_session_ids(self) -> list[str]:
        """Sessions with peers in them now (not those waiting out their grace), across every project."""
        projects = sorted(map(_text, await self._redis.smembers(f"{self._g}:projects")))
        if not projects:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for project_id in projects:
                await self._session_ids(keys=[self._base(project_id)], client=pipe)
            replies = await pipe.execute()
        return [_text(sid) for reply in replies for sid in reply]

    async def totals(self) -> tuple[int, int]:
        """(live rooms, peers in them) across every project."""
        projects = sorted(map(_text, await self._redis.smembers(f"{self._g}:projects")))
        if not projects:
            return 0, 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for project_id in projects:
                pipe.hmget(self._base(project_id), ["rooms", "peers"])
            replies = await pipe.execute()
        rooms = sum(int(r or 0) for r, _ in replies)
        peers = sum(int(p or 0) for _, p in replies)
        return rooms, peers

    # --- nodes: leases, reaping, re-registration ----------------------------

    async def heartbeat(self, now: int) -> Lease:
        """Register this node (the first time) or renew its lease. Call it
        several times per lease period; `now` is recorded as the time the node
        was last known alive, its members' exit time should it die.

        A lease that ran out is never renewed: the node takes a new id and
        registers again (LOST, or EMPTIED when Redis lost its data), and the
        caller puts back what it still holds with `reregister`."""
        sent = time.monotonic()
        if self._registered:
            renewed, epoch = await self._heartbeat(
                keys=[self._g], args=[self.node_id, now, self._lease_ms, secrets.token_hex(8)]
            )
            if renewed and _text(epoch) == self._epoch:
                self._valid_until = sent + self._lease_ms / 1000
                return Lease.RENEWED
            lost = Lease.LOST if _text(epoch) == self._epoch else Lease.EMPTIED
            self.node_id = self._new_node_id()
            self._noted.clear()
        else:
            lost = Lease.REGISTERED
        epoch = await self._register(keys=[self._g], args=[self.node_id, now, self._lease_ms, secrets.token_hex(8)])
        self._epoch = _text(epoch)
        self._registered = True
        self._valid_until = sent + self._lease_ms / 1000
        return lost

    async def deregister(self) -> None:
        """Give up the lease (on shutdown, after the node's connections left):
        whatever it still held is reaped by the next `reap_dead_nodes`."""
        await self._deregister(keys=[self._g], args=[self.node_id])
        self._registered = False

    async def reap_dead_nodes(self, now: int) -> list[Departure]:
        """Take out the members of every node whose lease is gone (not this
        one's), as leaving when their node was last known alive. Each
        departure is returned by exactly one reaper, even when several nodes
        reap at once: record its exit; its peer-left is published. Rooms it
        emptied end after their grace, through `expire`."""
        departures: list[Departure] = []
        for node_id, last_alive, projects in await self._dead_nodes(keys=[self._g], args=[self.node_id]):
            node = _text(node_id)
            left_at = min(int(float(last_alive)), now)
            done = []
            try:
                for project in map(_text, projects):
                    reply = await self._reap(keys=[self._base(project)], args=[node, left_at, _version_base()])
                    done.append(project)
                    idle = []
                    for room_id, peer_id, connection_id, was_bot, session_id, emptied, idle_since in reply:
                        departures.append(
                            Departure(
                                key=RoomKey(project, _text(room_id)),
                                peer_id=_text(peer_id),
                                connection_id=_text(connection_id),
                                node_id=node,
                                left_at=left_at,
                                outcome=LeaveOutcome(_opt_text(session_id), bool(was_bot), bool(emptied)),
                            )
                        )
                        if emptied and idle_since is not None:
                            idle.append(int(idle_since))
                    for since in idle:
                        await self._became_idle(project, since)
            except RedisError:
                # What was taken out is handed back all the same (it is out of
                # Redis: nobody else gets it); the rest of the node next time.
                if done:
                    await self._settle_node(keys=[self._g], args=[node, *done])
                return departures
            await self._settle_node(keys=[self._g], args=[node, *done])
        return departures

    async def reregister(self, connections: Iterable[HeldConnection], now: int) -> list[Restored]:
        """Put back the connections this node still holds, after a heartbeat
        said LOST or EMPTIED. Only these come back: members the node no longer
        holds stay gone. See `Restored` for what each status asks of the caller."""
        self._check_lease()
        held = list(connections)
        for project_id in sorted({c.key.project_id for c in held}):
            await self._note(project_id)
        restored: list[Restored] = []
        for start in range(0, len(held), _RESTORE_BATCH):
            batch = held[start : start + _RESTORE_BATCH]
            async with self._redis.pipeline(transaction=False) as pipe:
                for connection in batch:
                    await self._restore(
                        keys=[self._base(connection.key.project_id)],
                        args=self._restore_args(connection, now),
                        client=pipe,
                    )
                replies = await pipe.execute()
            for connection, reply in zip(batch, replies, strict=True):
                status, outcome = _join_outcome(connection.key, reply)
                if status == "full":
                    outcome.refused = Refusal.FULL
                restored.append(Restored(connection, cast(RestoreStatus, status), outcome))
        return restored

    # --- internals --------------------------------------------------------

    def _base(self, project_id: str) -> str:
        if "{" in project_id or "}" in project_id:
            raise ValueError(f"a project id may not contain braces: {project_id!r}")
        return f"{self._prefix}:{{{project_id}}}"

    def _new_node_id(self) -> str:
        return f"{self._name}.{secrets.token_hex(4)}"

    def _check_lease(self) -> None:
        if self._registered and time.monotonic() >= self._valid_until:
            raise PresenceUnavailable("this node's presence lease lapsed; waiting for a heartbeat to renew it")

    async def _note(self, project_id: str) -> None:
        """Record (once per node id) that this node holds members in the
        project, before it holds any: a node dying right after a join still
        has that member reaped."""
        if project_id not in self._noted:
            self._base(project_id)
            await self._note_project(keys=[self._g], args=[project_id, self.node_id])
            self._noted.add(project_id)

    async def _became_idle(self, project_id: str, idle_since: int) -> None:
        await self._idle_add(keys=[self._g], args=[project_id, idle_since + self._grace_ms])

    def _restore_args(self, connection: HeldConnection, now: int) -> list[str | int]:
        admission = connection.admission
        peer = admission.peer
        for what, value in (
            ("room id", connection.key.room_id),
            ("peer id", peer.peer_id),
            ("role", peer.role),
            ("connection id", admission.connection_id),
        ):
            _check_id(what, value)
        resumable = connection.session_id is not None and connection.start_time is not None
        return [
            connection.key.room_id,
            peer.peer_id,
            admission.connection_id,
            self.node_id,
            _flag(admission.is_bot),
            peer.role,
            peer.metadata,
            int(peer.join_time),
            connection.session_id if resumable and connection.session_id else "",
            connection.start_time if resumable and connection.start_time is not None else "",
            -1 if admission.max_peers is None or admission.internal else admission.max_peers,
            _flag(admission.is_admin),
            _flag(admission.lock_room),
            now,
            self._grace_ms,
            new_session_id(),
            _version_base(),
        ]


# --- replies ------------------------------------------------------------------


def _join_outcome(key: RoomKey, reply: Sequence[Any]) -> tuple[str | None, RedisJoinOutcome]:
    """A join or restore reply: status (None when admitted) and the outcome."""
    status, session_id, start, started, replaced, replaced_node, ended_id, ended_at = reply[:8]
    outcome = RedisJoinOutcome()
    if ended_id is not None:
        outcome.ended = EndedSession(key=key, session_id=_text(ended_id), end_time=int(ended_at))
    state = _opt_text(status)
    if state in ("locked", "full"):
        return state, outcome
    outcome.session_id = _opt_text(session_id)
    outcome.start_time = None if start is None else int(start)
    outcome.started_session = bool(started)
    outcome.replaced_connection = _opt_text(replaced)
    outcome.replaced_node = _opt_text(replaced_node)
    outcome.event_seq = int(reply[8])
    rest = reply[9:]
    outcome.peers = _peers(zip(rest[::2], rest[1::2], strict=True))
    return state, outcome


def _peers(records: Iterable[tuple[Any, Any]]) -> list[PeerPresence]:
    """Peers from (peer id, record) pairs, in the order they came in."""
    peers = []
    for peer_id, record in records:
        _conn, _node, seq, join_time, role, metadata = _text(record).split(US, 5)
        peers.append((int(seq), PeerPresence(_text(peer_id), role, metadata, int(join_time))))
    peers.sort(key=lambda pair: pair[0])
    return [peer for _, peer in peers]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else bytes(value).decode()


def _opt_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _flag(value: bool) -> int:
    return 1 if value else 0


def _version_base() -> int:
    return secrets.randbits(40) + 2


def _listing(start: int, room_id: str) -> str:
    return f"{start:015d}:{room_id}"


def _check_id(what: str, value: str) -> None:
    if US in value:
        raise ValueError(f"{what} may not contain \\x1f: {value!r}")


if TYPE_CHECKING:

    def _is_a_presence(presence: RedisPresence) -> Presence:
        return presence
