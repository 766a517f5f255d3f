"""The Lua scripts behind RedisPresence (see redis_presence.py for the key
layout, the member record and the event messages).

Project scripts get one key, the project's base `<prefix>:{<project>}`, and
build every other key they touch from it: all carry the same hash tag, so they
live in one slot and the script is atomic in Redis Cluster too. The global
scripts get `<prefix>:{g}` the same way. Numbers go into JSON and records
through `int()` (string.format %d): Lua's own number-to-string conversion
keeps only 14 digits.
"""

from __future__ import annotations

# How many of a project's latest events its log keeps (about), and for how
# long after the last one: what a node whose subscription was cut can catch
# up on (livesessions.cluster.fanout).
EVENT_LOG_LENGTH = 1000
EVENT_LOG_TTL_MS = 10 * 60 * 1000

# Shared by every project script: KEYS[1] is the project's base key (a hash
# holding the listing version `ver`, the event sequence `ev`, and the counts
# `rooms` and `peers` for totals).
_PROJECT_PRELUDE = r"""
local base = KEYS[1]
local US = '\031'

local function int(x) return string.format('%d', x) end
local function js(s) return cjson.encode(s) end

-- conn, node, seq, join time, role, metadata (the last may hold anything)
local function parse(rec)
  return string.match(rec, '^([^\031]*)\031([^\031]*)\031([^\031]*)\031([^\031]*)\031([^\031]*)\031(.*)$')
end

local function room_key(room) return base .. ':r:' .. room end
local function members_key(room, bot) return base .. (bot and ':b:' or ':p:') .. room end
local function node_key(node) return base .. ':n:' .. node end
local function entry(bot, room, peer) return (bot and 'b' or 'p') .. room .. US .. peer end
local function listing(start, room) return string.format('%015d', start) .. ':' .. room end

-- Published for the nodes listening now, and kept a while in the project's
-- log for a node whose subscription was cut to catch up from.
local function publish(body)
  local seq = redis.call('HINCRBY', base, 'ev', 1)
  local event = '{"seq":' .. int(seq) .. ',' .. body .. '}'
  redis.call('PUBLISH', base .. ':events', event)
  redis.call('XADD', base .. ':log', 'MAXLEN', '~', @EVENT_LOG_LENGTH@, '*', 'e', event)
  redis.call('PEXPIRE', base .. ':log', @EVENT_LOG_TTL_MS@)
end

-- The listing version starts from a random base, so that after Redis comes
-- back empty a version is not handed out again for another list.
local function changed(verbase)
  if redis.call('HINCRBY', base, 'ver', 1) == 1 then
    redis.call('HSET', base, 'ver', verbase)
  end
end

local function forget_if_unused(room)
  if redis.call('HLEN', members_key(room, false)) == 0 and redis.call('HLEN', members_key(room, true)) == 0
      and redis.call('HEXISTS', room_key(room), 'sid') == 0 then
    redis.call('DEL', room_key(room))
  end
end

-- End the room's session if its grace period is over; its id and end time.
local function end_if_over(room, now, grace)
  local rkey = room_key(room)
  local idle = redis.call('HGET', rkey, 'idle')
  if not idle or now - tonumber(idle) < grace then return false, false end
  local sid = redis.call('HGET', rkey, 'sid')
  local at = tonumber(idle)
  redis.call('HDEL', rkey, 'sid', 'start', 'idle', 'lock', 'ls', 'rec')
  redis.call('ZREM', base .. ':idle', room)
  -- Ended sessions are remembered a day, so a re-registering node does not
  -- bring one back.
  redis.call('ZADD', base .. ':ended', at, sid)
  redis.call('ZREMRANGEBYSCORE', base .. ':ended', '-inf', '(' .. int(at - 86400000))
  publish('"type":"session-ended","room":' .. js(room) .. ',"session":' .. js(sid) .. ',"endTime":' .. int(at))
  return sid, at
end

-- Put a member in: a new one, or in place of `prev` (the same peer's
-- previous connection, which keeps its place and join time). Returns the
-- replaced connection and node, and the join time.
local function put_member(room, peer, conn, node, bot, role, meta, jt, prev)
  local seq
  local rconn, rnode = false, false
  if prev then
    local pconn, pnode, pseq, pjoin = parse(prev)
    rconn, rnode, seq, jt = pconn, pnode, pseq, pjoin
    if pnode ~= node then redis.call('SREM', node_key(pnode), entry(bot, room, peer)) end
    publish('"type":"replaced","room":' .. js(room) .. ',"peerId":' .. js(peer) .. ',"bot":' .. tostring(bot)
      .. ',"node":' .. js(pnode) .. ',"conn":' .. js(pconn) .. ',"byNode":' .. js(node) .. ',"byConn":' .. js(conn))
  else
    seq = int(redis.call('HINCRBY', room_key(room), 'seq', 1))
  end
  redis.call('HSET', members_key(room, bot), peer, table.concat({conn, node, seq, jt, role, meta}, US))
  redis.call('SADD', node_key(node), entry(bot, room, peer))
  return rconn, rnode, jt
end

-- A non-bot peer is in: its session starts (unless one runs or waits out its
-- grace) and the room is listed. `fresh`: a peer not there before.
local function peer_in(room, fresh, now, new_sid, new_start, resumed, verbase)
  local rkey = room_key(room)
  local sid = redis.call('HGET', rkey, 'sid')
  local started = 0
  if not sid then
    sid = new_sid
    redis.call('HSET', rkey, 'sid', sid, 'start', int(new_start), 'ls', 0, 'rec', 0)
    redis.call('HDEL', rkey, 'lock')
    if not resumed then started = 1 end
  end
  if not redis.call('ZSCORE', base .. ':live', listing(redis.call('HGET', rkey, 'start'), room)) then
    redis.call('HDEL', rkey, 'idle')
    redis.call('ZREM', base .. ':idle', room)
    redis.call('ZADD', base .. ':live', 0, listing(redis.call('HGET', rkey, 'start'), room))
    redis.call('HINCRBY', base, 'rooms', 1)
  end
  if fresh then redis.call('HINCRBY', base, 'peers', 1) end
  local last = tonumber(redis.call('HGET', rkey, 'last') or now)
  if last < now then last = now end
  redis.call('HSET', rkey, 'last', int(last))
  changed(verbase)
  return sid, started
end

local function announce_join(room, sid, node, conn, peer, role, meta, jt)
  publish('"type":"peer-joined","room":' .. js(room) .. ',"session":' .. js(sid) .. ',"node":' .. js(node)
    .. ',"conn":' .. js(conn) .. ',"peer":{"peerId":' .. js(peer) .. ',"role":' .. js(role)
    .. ',"metadata":' .. js(meta) .. ',"joinTime":' .. jt .. '}')
end

-- Take a member out at `at`. Returns its session id, whether the room lost
-- its last peer, and since when it is idle.
local function remove(room, peer, bot, rec, at, verbase, reason)
  local rkey = room_key(room)
  local conn, node = parse(rec)
  redis.call('HDEL', members_key(room, bot), peer)
  redis.call('SREM', node_key(node), entry(bot, room, peer))
  local sid = redis.call('HGET', rkey, 'sid')
  local emptied, idle = false, false
  if not bot then
    redis.call('HINCRBY', base, 'peers', -1)
    emptied = redis.call('HLEN', members_key(room, false)) == 0
    -- A reaped node's peers leave when it was last known alive, which may
    -- be before a later leave of someone else: the room went quiet at the
    -- later of the two.
    local last = tonumber(redis.call('HGET', rkey, 'last') or at)
    if last < at then last = at end
    redis.call('HSET', rkey, 'last', int(last))
    if sid then
      changed(verbase)
      if emptied then
        redis.call('ZREM', base .. ':live', listing(redis.call('HGET', rkey, 'start'), room))
        redis.call('HINCRBY', base, 'rooms', -1)
        idle = last
        redis.call('HSET', rkey, 'idle', int(idle))
        redis.call('ZADD', base .. ':idle', idle, room)
      end
    end
    publish('"type":"peer-left","room":' .. js(room) .. ',"session":' .. (sid and js(sid) or 'null')
      .. ',"peerId":' .. js(peer) .. ',"node":' .. js(node) .. ',"conn":' .. js(conn)
      .. ',"reason":' .. js(reason) .. ',"time":' .. int(at))
  end
  forget_if_unused(room)
  return sid, emptied, idle
end

-- What a join or re-registration tells the joiner: status, session id, start,
-- started (0/1), replaced connection and node, ended session and its end,
-- the project's event sequence after it (its events up to there are what the
-- joiner is told), then the other peers as (peer id, record) pairs.
local function outcome(status, room, peer, sid, started, rconn, rnode, ended_sid, ended_at)
  local out = {status, sid or false, false, started, rconn, rnode, ended_sid, ended_at,
    tonumber(redis.call('HGET', base, 'ev') or '0')}
  if sid then out[3] = tonumber(redis.call('HGET', room_key(room), 'start')) end
  local all = redis.call('HGETALL', members_key(room, false))
  for i = 1, #all, 2 do
    if all[i] ~= peer then
      out[#out + 1] = all[i]
      out[#out + 1] = all[i + 1]
    end
  end
  return out
end
""".replace("@EVENT_LOG_LENGTH@", str(EVENT_LOG_LENGTH)).replace("@EVENT_LOG_TTL_MS@", str(EVENT_LOG_TTL_MS))

JOIN = (
    _PROJECT_PRELUDE
    + r"""
local room, peer, conn, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local bot, internal = ARGV[5] == '1', ARGV[6] == '1'
local role, meta, join_time = ARGV[7], ARGV[8], ARGV[9]
local room_locked, admin, lock_room = ARGV[10] == '1', ARGV[11] == '1', ARGV[12] == '1'
local max_peers, now, grace = tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])
local new_sid, verbase = ARGV[16], ARGV[17]

local ended_sid, ended_at = end_if_over(room, now, grace)
local rkey = room_key(room)
local prev = redis.call('HGET', members_key(room, bot), peer)
if not prev and not internal then
  -- A bot takes no peer's place, but it may not slip into a room its token
  -- says is full: for bots every member counts.
  local counted = redis.call('HLEN', members_key(room, false))
  if bot then counted = counted + redis.call('HLEN', members_key(room, true)) end
  local refused = false
  if (room_locked or redis.call('HGET', rkey, 'lock') == '1') and not admin then
    refused = 'locked'
  elseif max_peers >= 0 and counted >= max_peers then
    refused = 'full'
  end
  if refused then
    forget_if_unused(room)
    return {refused, false, false, 0, false, false, ended_sid, ended_at}
  end
end

local rconn, rnode, jt = put_member(room, peer, conn, node, bot, role, meta, join_time, prev)
local sid, started = redis.call('HGET', rkey, 'sid'), 0
if not bot then
  sid, started = peer_in(room, not prev, now, new_sid, now, false, verbase)
  if lock_room and admin then redis.call('HSET', rkey, 'lock', '1') end
  if not prev then announce_join(room, sid, node, conn, peer, role, meta, jt) end
end
return outcome(false, room, peer, sid, started, rconn, rnode, ended_sid, ended_at)
"""
)

LEAVE = (
    _PROJECT_PRELUDE
    + r"""
local room, peer, conn, now, verbase = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local bot = false
local rec = redis.call('HGET', members_key(room, false), peer)
if not rec or parse(rec) ~= conn then
  bot = true
  rec = redis.call('HGET', members_key(room, true), peer)
  if not rec or parse(rec) ~= conn then return false end
end
local sid, emptied, idle = remove(room, peer, bot, rec, now, verbase, 'left')
return {sid, bot and 1 or 0, emptied and 1 or 0, idle}
"""
)

UPDATE_METADATA = (
    _PROJECT_PRELUDE
    + r"""
local room, peer, conn, meta = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local bot = false
local rec = redis.call('HGET', members_key(room, false), peer)
if not rec then
  bot = true
  rec = redis.call('HGET', members_key(room, true), peer)
end
if not rec then return 0 end
local rconn, rnode, seq, jt, role = parse(rec)
if rconn ~= conn then return 0 end
redis.call('HSET', members_key(room, bot), peer, table.concat({rconn, rnode, seq, jt, role, meta}, US))
if not bot then
  publish('"type":"metadata-updated","room":' .. js(room) .. ',"peerId":' .. js(peer) .. ',"metadata":' .. js(meta)
    .. ',"node":' .. js(rnode) .. ',"conn":' .. js(rconn))
end
return 1
"""
)

EXPIRE = (
    _PROJECT_PRELUDE
    + r"""
local now, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {false}
for _, room in ipairs(redis.call('ZRANGEBYSCORE', base .. ':idle', '-inf', int(now - grace))) do
  local sid, at = end_if_over(room, now, grace)
  if sid then
    out[#out + 1] = room
    out[#out + 1] = sid
    out[#out + 1] = at
  end
  forget_if_unused(room)
end
-- When the next idle room's grace runs out, if there is one.
local first = redis.call('ZRANGE', base .. ':idle', 0, 0, 'WITHSCORES')
if first[2] then out[1] = tonumber(first[2]) + grace end
return out
"""
)

COUNT_EGRESS = (
    _PROJECT_PRELUDE
    + r"""
local room, kind, verbase = ARGV[1], ARGV[2], ARGV[3]
local rkey = room_key(room)
if redis.call('HEXISTS', rkey, 'sid') == 0 or redis.call('HEXISTS', rkey, 'idle') == 1 then return 0 end
redis.call('HINCRBY', rkey, kind == 'livestream' and 'ls' or 'rec', 1)
changed(verbase)
return 1
"""
)

# The members a dead node held in this project leave at `at`, when the node
# was last known alive. Each is reported once, to whichever reaper took it out.
REAP = (
    _PROJECT_PRELUDE
    + r"""
local node, at, verbase = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local out = {}
for _, e in ipairs(redis.call('SMEMBERS', node_key(node))) do
  local bot = string.sub(e, 1, 1) == 'b'
  local room, peer = string.match(string.sub(e, 2), '^([^\031]*)\031(.*)$')
  local rec = redis.call('HGET', members_key(room, bot), peer)
  if rec then
    local conn, rnode = parse(rec)
    if rnode == node then
      local sid, emptied, idle = remove(room, peer, bot, rec, at, verbase, 'reaped')
      -- Remembered a day: the node may come back still holding it.
      redis.call('ZADD', base .. ':reaped', at, conn)
      out[#out + 1] = {room, peer, conn, bot and 1 or 0, sid, emptied and 1 or 0, idle}
    end
  end
end
redis.call('ZREMRANGEBYSCORE', base .. ':reaped', '-inf', '(' .. int(at - 86400000))
redis.call('DEL', node_key(node))
return out
"""
)

# Put back a connection a node still holds (after Redis came back empty, or
# after the node was cut off and reaped). Statuses: present (nothing to do),
# superseded (the peer is there on another connection: close this one),
# full (it was reaped and its place taken), restored (lost with Redis' data:
# put back silently, in its session), rejoined (it had been reaped and
# announced as gone: in again, announced as a join).
RESTORE = (
    _PROJECT_PRELUDE
    + r"""
local room, peer, conn, node = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local bot, role, meta, join_time = ARGV[5] == '1', ARGV[6], ARGV[7], ARGV[8]
local hint_sid, hint_start = ARGV[9], ARGV[10]
local max_peers, admin, lock_room = tonumber(ARGV[11]), ARGV[12] == '1', ARGV[13] == '1'
local now, grace, new_sid, verbase = tonumber(ARGV[14]), tonumber(ARGV[15]), ARGV[16], ARGV[17]

local ended_sid, ended_at = end_if_over(room, now, grace)
local rkey = room_key(room)
local mkey = members_key(room, bot)
local prev = redis.call('HGET', mkey, peer)
if prev then
  local pconn, pnode, pseq, pjoin, prole, pmeta = parse(prev)
  if pconn ~= conn then
    return outcome('superseded', room, peer, redis.call('HGET', rkey, 'sid'), 0, pconn, pnode, ended_sid, ended_at)
  end
  if pnode ~= node then
    redis.call('SREM', node_key(pnode), entry(bot, room, peer))
    redis.call('HSET', mkey, peer, table.concat({conn, node, pseq, pjoin, prole, pmeta}, US))
    redis.call('SADD', node_key(node), entry(bot, room, peer))
  end
  return outcome('present', room, peer, redis.call('HGET', rkey, 'sid'), 0, false, false, ended_sid, ended_at)
end

local reaped = redis.call('ZSCORE', base .. ':reaped', conn)
if reaped then
  redis.call('ZREM', base .. ':reaped', conn)
  local counted = redis.call('HLEN', members_key(room, false))
  if bot then counted = counted + redis.call('HLEN', members_key(room, true)) end
  if max_peers >= 0 and counted >= max_peers then
    forget_if_unused(room)
    return {'full', false, false, 0, false, false, ended_sid, ended_at}
  end
  join_time = int(now)
end

put_member(room, peer, conn, node, bot, role, meta, join_time, false)
local sid, started = redis.call('HGET', rkey, 'sid'), 0
if not bot then
  local sid_new, start_new, resumed = new_sid, now, false
  if hint_sid ~= '' and not reaped and not redis.call('ZSCORE', base .. ':ended', hint_sid) then
    sid_new, start_new, resumed = hint_sid, tonumber(hint_start), true
  end
  sid, started = peer_in(room, true, now, sid_new, start_new, resumed, verbase)
  if lock_room and admin then redis.call('HSET', rkey, 'lock', '1') end
  if reaped then announce_join(room, sid, node, conn, peer, role, meta, join_time) end
end
return outcome(reaped and 'rejoined' or 'restored', room, peer, sid, started, false, false, ended_sid, ended_at)
"""
)

# A data message, published in the project's event sequence so that it
# reaches every node in order with the joins and leaves around it. ARGV: room,
# sender, the recipients (a JSON array, or null for everyone), the message as sent.
PUBLISH_DATA = (
    _PROJECT_PRELUDE
    + r"""
publish('"type":"data","room":' .. js(ARGV[1]) .. ',"sender":' .. js(ARGV[2]) .. ',"to":' .. ARGV[3]
  .. ',"message":' .. ARGV[4])
return 1
"""
)

# Moderation. The node holding an evicted member's connection closes it on
# the "evicted" event; the peer-left (non-bots) goes to the others.
_EVICT = r"""
local function evict(room, peer, conn, reason)
  publish('"type":"evicted","room":' .. js(room) .. ',"peerId":' .. js(peer) .. ',"conn":' .. js(conn)
    .. ',"reason":' .. js(reason))
end
"""

# Take one peer (not a bot) out, whatever its connection. ARGV: room, peer,
# now, verbase. Returns false, or {conn, session, emptied, idle since}.
REMOVE_PEER = (
    _PROJECT_PRELUDE
    + _EVICT
    + r"""
local room, peer, now, verbase = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local rec = redis.call('HGET', members_key(room, false), peer)
if not rec then return false end
local conn = parse(rec)
local sid, emptied, idle = remove(room, peer, false, rec, now, verbase, 'removed')
evict(room, peer, conn, 'removed')
return {conn, sid, emptied and 1 or 0, idle}
"""
)

# End the room's live session now, no grace: every member (bots too) out.
# ARGV: room, now, verbase. Returns false when the room has no peers,
# else {session, {peer, conn, bot (0/1)}...}.
END_SESSION = (
    _PROJECT_PRELUDE
    + _EVICT
    + r"""
local room, now, verbase = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local rkey = room_key(room)
local sid = redis.call('HGET', rkey, 'sid')
if not sid or redis.call('HLEN', members_key(room, false)) == 0 then return false end
local out = {}
for _, bot in ipairs({false, true}) do
  local all = redis.call('HGETALL', members_key(room, bot))
  for i = 1, #all, 2 do
    local peer, rec = all[i], all[i + 1]
    local conn = parse(rec)
    remove(room, peer, bot, rec, now, verbase, 'ended')
    evict(room, peer, conn, 'ended')
    out[#out + 1] = {peer, conn, bot and 1 or 0}
  end
end
-- The last peer's leave made the room idle as of now: it ends at once.
redis.call('HDEL', rkey, 'sid', 'start', 'idle', 'lock', 'ls', 'rec')
redis.call('ZREM', base .. ':idle', room)
redis.call('ZADD', base .. ':ended', now, sid)
publish('"type":"session-ended","room":' .. js(room) .. ',"session":' .. js(sid) .. ',"endTime":' .. int(now))
forget_if_unused(room)
return {sid, out}
"""
)

# A peer-left for a member presence no longer holds (Redis lost it while its
# leave could not reach Redis): the others still think it is there. Not for a
# member back in the room, or one reaped with its node (announced then). ARGV:
# room, peer, conn, node, session (or ''), time.
PUBLISH_LEFT = (
    _PROJECT_PRELUDE
    + r"""
local room, peer, conn, node, sid, at = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
if redis.call('HEXISTS', members_key(room, false), peer) == 1 then return 0 end
-- Reaped with its node: its peer-left went out then.
if redis.call('ZSCORE', base .. ':reaped', conn) then return 0 end
publish('"type":"peer-left","room":' .. js(room) .. ',"session":' .. (sid ~= '' and js(sid) or 'null')
  .. ',"peerId":' .. js(peer) .. ',"node":' .. js(node) .. ',"conn":' .. js(conn)
  .. ',"reason":"left","time":' .. int(at))
return 1
"""
)

# A session presence lost track of (Redis came back empty after its last peer
# left): ended at ARGV[3] unless it is the room's session again (put back by a
# node's re-registration); remembered as ended, so no later re-registration
# brings it back. 1 if it was ended here.
END_UNKNOWN = (
    _PROJECT_PRELUDE
    + r"""
local room, sid, at = ARGV[1], ARGV[2], tonumber(ARGV[3])
if redis.call('HGET', room_key(room), 'sid') == sid then return 0 end
if redis.call('ZSCORE', base .. ':ended', sid) then return 0 end
redis.call('ZADD', base .. ':ended', at, sid)
return 1
"""
)

# --- reads: one script each, so the answer is one moment's ---------------

LIST = (
    _PROJECT_PRELUDE
    + r"""
local min, limit = ARGV[1], tonumber(ARGV[2])
local ids
if limit >= 0 then
  ids = redis.call('ZRANGEBYLEX', base .. ':live', min, '+', 'LIMIT', 0, limit)
else
  ids = redis.call('ZRANGEBYLEX', base .. ':live', min, '+')
end
local out = {}
for _, id in ipairs(ids) do
  local room = string.sub(id, 17)
  local v = redis.call('HMGET', room_key(room), 'start', 'ls', 'rec')
  out[#out + 1] = room
  out[#out + 1] = v[1]
  out[#out + 1] = redis.call('HLEN', members_key(room, false))
  out[#out + 1] = v[2]
  out[#out + 1] = v[3]
end
return out
"""
)

ROOM = (
    _PROJECT_PRELUDE
    + r"""
local room = ARGV[1]
local count = redis.call('HLEN', members_key(room, false))
if count == 0 then return false end
local v = redis.call('HMGET', room_key(room), 'sid', 'start', 'ls', 'rec')
return {count, v[1], v[2], v[3], v[4]}
"""
)

SESSION_IDS = (
    _PROJECT_PRELUDE
    + r"""
local out = {}
for _, id in ipairs(redis.call('ZRANGE', base .. ':live', 0, -1)) do
  local sid = redis.call('HGET', room_key(string.sub(id, 17)), 'sid')
  if sid then out[#out + 1] = sid end
end
return out
"""
)

# --- global scripts: KEYS[1] is `<prefix>:{g}` ----------------------------

_GLOBAL_PRELUDE = r"""
local g = KEYS[1]
"""

# A project this node holds members in (for reaping) and that has presence (for totals).
NOTE_PROJECT = (
    _GLOBAL_PRELUDE
    + r"""
redis.call('SADD', g .. ':projects', ARGV[1])
redis.call('SADD', g .. ':np:' .. ARGV[2], ARGV[1])
return 1
"""
)

# A room of the project went idle: its grace runs out at ARGV[2]. The
# generation tells an expiry that read the project before this that its
# picture is out of date.
IDLE_ADD = (
    _GLOBAL_PRELUDE
    + r"""
local project, deadline = ARGV[1], tonumber(ARGV[2])
redis.call('HINCRBY', g .. ':idlegen', project, 1)
local s = redis.call('ZSCORE', g .. ':idle', project)
if not s or tonumber(s) > deadline then redis.call('ZADD', g .. ':idle', deadline, project) end
return 1
"""
)

IDLE_DUE = (
    _GLOBAL_PRELUDE
    + r"""
local out = {}
for _, project in ipairs(redis.call('ZRANGEBYSCORE', g .. ':idle', '-inf', ARGV[1])) do
  out[#out + 1] = project
  out[#out + 1] = redis.call('HGET', g .. ':idlegen', project) or '0'
end
return out
"""
)

# After an expiry of the project: its next deadline (or none), unless a room
# went idle since the expiry read the generation.
IDLE_SETTLE = (
    _GLOBAL_PRELUDE
    + r"""
local project, gen, nxt = ARGV[1], ARGV[2], ARGV[3]
if (redis.call('HGET', g .. ':idlegen', project) or '0') ~= gen then return 0 end
if nxt ~= '' then
  redis.call('ZADD', g .. ':idle', nxt, project)
else
  redis.call('ZREM', g .. ':idle', project)
end
return 1
"""
)

REGISTER = (
    _GLOBAL_PRELUDE
    + r"""
local node, now, lease_ms, epoch = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call('SET', g .. ':lease:' .. node, now, 'PX', lease_ms)
redis.call('ZADD', g .. ':alive', now, node)
redis.call('SET', g .. ':epoch', epoch, 'NX')
return redis.call('GET', g .. ':epoch')
"""
)

# Renew the lease while it still exists: a lease that ran out is never
# renewed (its node may have been reaped). Returns {renewed, epoch}.
HEARTBEAT = (
    _GLOBAL_PRELUDE
    + r"""
local node, now, lease_ms, epoch = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local current = redis.call('GET', g .. ':epoch')
if not current then
  redis.call('SET', g .. ':epoch', epoch)
  current = epoch
end
local lease = g .. ':lease:' .. node
if redis.call('EXISTS', lease) == 0 then return {0, current} end
redis.call('SET', lease, now, 'PX', lease_ms)
redis.call('ZADD', g .. ':alive', now, node)
return {1, current}
"""
)

# Nodes without a lease: {node, last known alive, {projects}} each.
DEAD_NODES = (
    _GLOBAL_PRELUDE
    + r"""
local out = {}
local alive = redis.call('ZRANGE', g .. ':alive', 0, -1, 'WITHSCORES')
for i = 1, #alive, 2 do
  local node = alive[i]
  if node ~= ARGV[1] and redis.call('EXISTS', g .. ':lease:' .. node) == 0 then
    out[#out + 1] = {node, alive[i + 1], redis.call('SMEMBERS', g .. ':np:' .. node)}
  end
end
return out
"""
)

# The dead node's projects in ARGV[2..] are reaped; once none is left, forget it.
SETTLE_NODE = (
    _GLOBAL_PRELUDE
    + r"""
local node = ARGV[1]
local np = g .. ':np:' .. node
for i = 2, #ARGV do redis.call('SREM', np, ARGV[i]) end
if redis.call('SCARD', np) == 0 and redis.call('EXISTS', g .. ':lease:' .. node) == 0 then
  redis.call('ZREM', g .. ':alive', node)
  redis.call('DEL', np)
  return 1
end
return 0
"""
)

DEREGISTER = (
    _GLOBAL_PRELUDE
    + r"""
redis.call('DEL', g .. ':lease:' .. ARGV[1])
return 1
"""
)
