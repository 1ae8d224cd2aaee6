"""The Lua of the Redis broker for group members: join, claim, ack, nack, extend, reject, leave.

Per group and partition (keys in `tidings.adapters.redis.broker_keys`) a member's view is:

- the stream's consumer group (named after the tidings group): its last-delivered id is the
  cursor, its PEL the pending entries, each PEL entry's delivery counter the attempt;
- ``held:<p>``, the offsets a member holds, scored by their deadline, and ``lease:<p>``, the
  lease each is held under; ``owner`` names the member holding partition p. A member claims
  only from partitions no other member holds in flight (a held offset whose deadline has not
  passed), so a group gets a partition's events in offset order, one member at a time. A held
  offset whose deadline passed is visible again;
- ``due:<p>``, the pending offsets nobody holds (nacked with a delay, or handed back by a
  leaving member), scored by when each becomes visible again. Together with the expired
  entries of ``held`` it is the scheduler. (A held offset is not also kept here: that doubled
  the sorted-set work of every claim and ack. Entries held before that change are in both,
  which every script tolerates: claims take an offset once, settlements remove it from both.)
- ``members``, the live members scored by when their session ends, for fair shares.

A settlement whose lease no longer matches (the entry was handed out again, or the group was
replayed) changes nothing.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ACK", "ACK_MANY", "CLAIM", "DEAD_LETTER", "EXTEND", "JOIN", "LEAVE", "NACK"]

JOIN: Final = """
-- ARGV: prefix, topic, group, member, start id ('0' or '$'), session_us, default partitions
local P, topic, group, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local parts = ensure_topic(P, topic, ARGV[7])
for p = 0, parts - 1 do
  local made = redis.pcall('XGROUP', 'CREATE', stream_key(P, topic, p), group, ARGV[5], 'MKSTREAM')
  if made.err and not string.find(made.err, 'BUSYGROUP', 1, true) then
    return redis.error_reply(made.err)
  end
end
local members = P .. ':g:' .. topic .. ':' .. group .. ':members'
redis.call('ZADD', members, fmt(now_us() + tonumber(ARGV[6])), member)
return parts
"""
"""Create the topic and the group's consumer group on every partition; start a session."""

CLAIM: Final = """
-- ARGV: prefix, topic, group, member, partitions, limit, lease, deadline_us, session_us, first
local P, topic, group, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local parts, limit, lease = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local G = P .. ':g:' .. topic .. ':' .. group
local now = now_us()
local until_ = fmt(now + tonumber(ARGV[8]))
local members = G .. ':members'
redis.call('ZADD', members, fmt(now + tonumber(ARGV[9])), member)
redis.call('ZREMRANGEBYSCORE', members, '-inf', fmt(now))
local share = math.ceil(parts / math.max(1, redis.call('ZCARD', members)))
local out = {0}
local got = 0

local function hold(p, o, attempt, fields)
  out[#out + 1] = p; out[#out + 1] = o; out[#out + 1] = attempt; out[#out + 1] = fields
  got = got + 1
end

local function again(p, stream, n)
  local offsets, seen = {}, {}
  for _, set in ipairs({G .. ':due:' .. p, G .. ':held:' .. p}) do
    for _, o in ipairs(redis.call('ZRANGEBYSCORE', set, '-inf', fmt(now))) do
      if not seen[o] then seen[o] = true; offsets[#offsets + 1] = tonumber(o) end
    end
  end
  table.sort(offsets)
  local taken = 0
  for j = 1, #offsets do
    if taken >= n then break end
    local o = offsets[j]
    local pel = redis.call('XPENDING', stream, group, sid(o), sid(o), 1)
    local attempt = 1
    if #pel > 0 then attempt = pel[1][4] + 1 end
    local entry = {}
    if #pel > 0 then
      entry = redis.call('XCLAIM', stream, group, member, 0, sid(o), 'RETRYCOUNT', attempt)
    end
    if #entry > 0 and entry[1] then
      redis.call('ZREM', G .. ':due:' .. p, o)
      redis.call('ZADD', G .. ':held:' .. p, until_, o)
      redis.call('HSET', G .. ':lease:' .. p, o, lease)
      hold(p, o, attempt, entry[1][2])
      taken = taken + 1
    else  -- gone from the stream or the PEL (replayed): nothing to redeliver
      redis.call('ZREM', G .. ':due:' .. p, o)
      redis.call('ZREM', G .. ':held:' .. p, o)
      redis.call('HDEL', G .. ':lease:' .. p, o)
    end
  end
  return taken
end

local function fresh(p, stream, n)
  local read = redis.pcall('XREADGROUP', 'GROUP', group, member, 'COUNT', n, 'STREAMS', stream, '>')
  if read and read.err then
    if not string.find(read.err, 'NOGROUP', 1, true) then error(read.err) end
    redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
    read = redis.call('XREADGROUP', 'GROUP', group, member, 'COUNT', n, 'STREAMS', stream, '>')
  end
  if not read then return 0 end
  local entries = read[1][2]
  if #entries == 0 then return 0 end
  local scored, leases = {}, {}
  for _, entry in ipairs(entries) do
    local o = off(entry[1])
    scored[#scored + 1] = until_; scored[#scored + 1] = o
    leases[#leases + 1] = o; leases[#leases + 1] = lease
    hold(p, o, 1, entry[2])
  end
  each_slice(scored, 'ZADD', G .. ':held:' .. p)
  each_slice(leases, 'HSET', G .. ':lease:' .. p)
  return #entries
end

local mine, free, is_mine = {}, {}, {}
local owners = G .. ':owner'
for j = 0, parts - 1 do
  local p = (tonumber(ARGV[10]) + j) % parts
  local holder = redis.call('HGET', owners, p)
  local busy = false
  if holder then
    local held = G .. ':held:' .. p
    local live = redis.call('ZRANGEBYSCORE', held, '(' .. fmt(now), '+inf', 'LIMIT', 0, 1)
    busy = #live > 0
  end
  if busy and holder == member then
    mine[#mine + 1] = p; is_mine[p] = true
  elseif not busy then
    free[#free + 1] = p
  end
end

local used = 0
for _, list in ipairs({mine, free}) do
  for _, p in ipairs(list) do
    if used >= share or got >= limit then break end
    local stream = stream_key(P, topic, p)
    local took = again(p, stream, limit - got)
    if got < limit then took = took + fresh(p, stream, limit - got) end
    if took > 0 then redis.call('HSET', owners, p, member) end
    if took > 0 or is_mine[p] then used = used + 1 end
  end
end

local due = -1
for p = 0, parts - 1 do
  for _, set in ipairs({G .. ':due:' .. p, G .. ':held:' .. p}) do
    local next_ = redis.call('ZRANGEBYSCORE', set, '(' .. fmt(now), '+inf',
      'WITHSCORES', 'LIMIT', 0, 1)
    if #next_ > 0 then
      local at = tonumber(next_[2]) - now
      if due < 0 or at < due then due = at end
    end
  end
end
out[1] = due
return out
"""
"""Hand a member visible entries, then new ones, partition by partition in offset order.

Returns ``[µs until the group's next entry is due or -1, then per entry: partition, offset,
attempt, fields]``.
"""

_HELD: Final = """
local P, topic, group, p, o, lease = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local G = P .. ':g:' .. topic .. ':' .. group
local leases = G .. ':lease:' .. p
if redis.call('HGET', leases, o) ~= lease then return 0 end
"""

_SETTLE: Final = """
redis.call('XACK', stream_key(P, topic, p), group, sid(tonumber(o)))
redis.call('ZREM', G .. ':due:' .. p, o)
redis.call('ZREM', G .. ':held:' .. p, o)
redis.call('HDEL', leases, o)
if redis.call('ZCARD', G .. ':held:' .. p) == 0 then
  redis.call('PUBLISH', P .. ':wake:' .. topic, '1')
end
"""

ACK: Final = f"""
-- ARGV: prefix, topic, group, partition, offset, lease
{_HELD}
{_SETTLE}
return 1
"""
"""XACK an entry held under the lease and forget its schedule; wake others if p is free."""

ACK_MANY: Final = """
-- ARGV: prefix, topic, group, then one MessagePack array of [partition, offsets, ids, leases]
local P, topic, group = ARGV[1], ARGV[2], ARGV[3]
local G = P .. ':g:' .. topic .. ':' .. group

local freed, acked = false, 0
for _, batch in ipairs(cmsgpack.unpack(ARGV[4])) do
  local p, offsets, ids, leases = fmt(batch[1]), batch[2], batch[3], batch[4]
  local held = G .. ':lease:' .. p
  local current = each_slice(offsets, 'HMGET', held)
  local n = 0
  for k = 1, #offsets do
    if current[k] == leases[k] then n = n + 1 end
  end
  if n < #offsets then  -- some were handed out again meanwhile: settle only those still held
    local still, still_ids = {}, {}
    for k = 1, #offsets do
      if current[k] == leases[k] then
        still[#still + 1] = offsets[k]
        still_ids[#still_ids + 1] = ids[k]
      end
    end
    offsets, ids = still, still_ids
  end
  if n > 0 then
    each_slice(ids, 'XACK', stream_key(P, topic, p), group)
    each_slice(offsets, 'ZREM', G .. ':due:' .. p)
    each_slice(offsets, 'ZREM', G .. ':held:' .. p)
    each_slice(offsets, 'HDEL', held)
    acked = acked + n
    if redis.call('ZCARD', G .. ':held:' .. p) == 0 then freed = true end
  end
end
if freed then redis.call('PUBLISH', P .. ':wake:' .. topic, '1') end
return acked
"""
"""`ACK` for several entries of one group in one call (what the ack batcher sends).

The client sends the entries grouped by partition, their offsets, stream ids and leases as
strings, in one MessagePack argument: the script then checks a partition's leases with one
HMGET and settles the entries still held with one XACK, ZREM, ZREM and HDEL each, and formats
nothing per entry. Per-entry calls and formatting in Lua were most of an ack's server time.
"""

NACK: Final = f"""
-- ARGV: prefix, topic, group, partition, offset, lease, delay_us
{_HELD}
redis.call('ZADD', G .. ':due:' .. p, fmt(now_us() + tonumber(ARGV[7])), o)
redis.call('ZREM', G .. ':held:' .. p, o)
redis.call('HDEL', leases, o)
redis.call('PUBLISH', P .. ':wake:' .. topic, '1')
return 1
"""
"""Schedule a held entry to become visible after a delay (it stays in the PEL)."""

EXTEND: Final = f"""
-- ARGV: prefix, topic, group, partition, offset, lease, seconds_us
{_HELD}
local until_ = fmt(now_us() + tonumber(ARGV[7]))
redis.call('ZADD', G .. ':due:' .. p, 'XX', until_, o)
redis.call('ZADD', G .. ':held:' .. p, 'XX', until_, o)
return 1
"""
"""Move a held entry's deadline."""

DEAD_LETTER: Final = f"""
-- ARGV: prefix, topic, group, partition, offset, lease,
--   dead-letter topic, its partition, has key, key, flags, envelope, headers
{_HELD}
local fields = {{'e', ARGV[12], 'f', ARGV[11], 't', fmt(now_us()), 'h', ARGV[13]}}
if ARGV[9] == '1' then fields[#fields + 1] = 'k'; fields[#fields + 1] = ARGV[10] end
redis.call('XADD', stream_key(P, ARGV[7], ARGV[8]), '0-*', unpack(fields))
redis.call('PUBLISH', P .. ':wake:' .. ARGV[7], '1')
{_SETTLE}
return 1
"""
"""Append a held entry to the dead-letter topic and XACK it, in one step."""

LEAVE: Final = """
-- ARGV: prefix, topic, group, member, partitions, then (partition, offset, lease, attempt)...
local P, topic, group, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local G = P .. ':g:' .. topic .. ':' .. group
local now = fmt(now_us())
for j = 6, #ARGV, 4 do
  local p, o = ARGV[j], ARGV[j + 1]
  if redis.call('HGET', G .. ':lease:' .. p, o) == ARGV[j + 2] then
    redis.call('XCLAIM', stream_key(P, topic, p), group, member, 0, sid(tonumber(o)),
      'RETRYCOUNT', tonumber(ARGV[j + 3]) - 1, 'JUSTID')
  end
end
local owners = G .. ':owner'
for p = 0, tonumber(ARGV[5]) - 1 do
  local stream = stream_key(P, topic, p)
  if redis.call('HGET', owners, p) == member then
    for _, o in ipairs(redis.call('HKEYS', G .. ':lease:' .. p)) do
      redis.call('ZADD', G .. ':due:' .. p, now, o)
    end
    redis.call('DEL', G .. ':lease:' .. p, G .. ':held:' .. p)
    redis.call('HDEL', owners, p)
  end
  local pel = redis.pcall('XPENDING', stream, group, '-', '+', 100000, member)
  if not pel.err then
    local ids = {}
    for k, entry in ipairs(pel) do ids[k] = entry[1] end
    for i = 1, #ids, 1000 do  -- in slices, as each_slice does (JUSTID comes last)
      local args = {stream, group, 'tidings', 0}
      for k = i, math.min(i + 999, #ids) do args[#args + 1] = ids[k] end
      args[#args + 1] = 'JUSTID'
      redis.call('XCLAIM', unpack(args))
    end
    redis.call('XGROUP', 'DELCONSUMER', stream, group, member)
  end
end
redis.call('ZREM', G .. ':members', member)
redis.call('PUBLISH', P .. ':wake:' .. topic, '1')
return 1
"""
"""Release what a member holds (visible now), un-count unyielded attempts, drop the consumer.

The member's PEL entries move to the placeholder consumer ``tidings`` (JUSTID: their
delivery counters stay) before the consumer is deleted, so no pending entry is lost with it.
"""
