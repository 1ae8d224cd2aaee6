"""The Lua of the Redis broker for topics: create, publish, replay, retention, group positions.

Every script builds its keys from the prefix and names in ARGV (see
`tidings.adapters.redis.broker_keys` for the layout), so the broker needs one Redis server,
not a Redis Cluster. Times are the server's (``TIME``, in µs), so processes with skewed clocks
agree on deadlines and ages.

A partition is one stream whose entry ids are ``0-<offset + 1>`` (``XADD key 0-*`` numbers
them), so offsets are dense from 0 and ``XTRIM MINID`` removes exactly the offsets below a cut.
An entry's fields: ``e`` the envelope, ``f`` its flags, ``t`` the publish time (µs), and when
present ``k`` the key, ``i`` the event id, ``h`` headers as JSON.
"""

from __future__ import annotations

from typing import Final

__all__ = ["COMMON", "ENSURE_TOPIC", "GROUP_POSITIONS", "PUBLISH", "REPLAY", "RETENTION"]

COMMON: Final = """
local function fmt(n) return string.format('%d', n) end
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function sid(o) return '0-' .. fmt(o + 1) end
local function off(id) return tonumber(string.match(id, '%-(%d+)$')) - 1 end
local function stream_key(P, topic, p) return P .. ':t:' .. topic .. ':' .. p end
-- redis.call(command, key, [first,] items...) in slices of 1000 items (pairs stay whole): one
-- call with more arguments than Lua's C stack holds (8000) fails; returns the replies joined
local function each_slice(items, command, key, first)
  if #items <= 1000 then  -- the common case, without copying the items
    local reply
    if first then
      reply = redis.call(command, key, first, unpack(items))
    else
      reply = redis.call(command, key, unpack(items))
    end
    if type(reply) == 'table' then return reply end
    return {}
  end
  local out = {}
  for i = 1, #items, 1000 do
    local args = {}
    if first then args[1] = first end
    for k = i, math.min(i + 999, #items) do args[#args + 1] = items[k] end
    local reply = redis.call(command, key, unpack(args))
    if type(reply) == 'table' then
      for _, value in ipairs(reply) do out[#out + 1] = value end
    end
  end
  return out
end
local function field(fields, name)
  for j = 1, #fields, 2 do if fields[j] == name then return fields[j + 1] end end
  return nil
end
local function head(stream)
  local info = redis.pcall('XINFO', 'STREAM', stream)
  if info.err then return 0 end
  for j = 1, #info, 2 do
    if info[j] == 'last-generated-id' then return off(info[j + 1]) + 1 end
  end
  return 0
end
local function first_since(stream, since)
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #first == 0 then return head(stream) end
  local lo, hi = off(first[1][1]), head(stream)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local entry = redis.call('XRANGE', stream, sid(mid), sid(mid))[1]
    if tonumber(field(entry[2], 't')) >= since then hi = mid else lo = mid + 1 end
  end
  return lo
end
local function committed(stream, info)
  local g = {}
  for j = 1, #info, 2 do g[info[j]] = info[j + 1] end
  if tonumber(g['pending']) > 0 then
    local summary = redis.call('XPENDING', stream, g['name'])
    return off(summary[2])
  end
  return off(g['last-delivered-id']) + 1
end
local function ensure_topic(P, topic, partitions)
  local meta = P .. ':topic:' .. topic
  if redis.call('HSETNX', meta, 'partitions', partitions) == 1 then
    redis.call('SADD', P .. ':topics', topic)
  end
  return tonumber(redis.call('HGET', meta, 'partitions'))
end
"""
"""Helpers every script starts with."""

ENSURE_TOPIC: Final = """
-- ARGV: prefix, topic, partitions, max_age_us or '', max_count or ''
local P, topic = ARGV[1], ARGV[2]
local meta = P .. ':topic:' .. topic
if redis.call('HSETNX', meta, 'partitions', ARGV[3]) == 1 then
  redis.call('SADD', P .. ':topics', topic)
  if ARGV[4] ~= '' then redis.call('HSET', meta, 'max_age_us', ARGV[4]) end
  if ARGV[5] ~= '' then redis.call('HSET', meta, 'max_count', ARGV[5]) end
  if ARGV[4] ~= '' or ARGV[5] ~= '' then redis.call('SADD', P .. ':retained', topic) end
end
return redis.call('HMGET', meta, 'partitions', 'max_age_us', 'max_count')
"""
"""Create a topic unless it exists; return its partitions, max age and max count."""

PUBLISH: Final = """
-- ARGV: prefix, topic, default partitions, count, then per message:
--   partition, event id or '', has key ('1'/'0'), key, flags, envelope, headers or ''
local P, topic, n = ARGV[1], ARGV[2], tonumber(ARGV[4])
ensure_topic(P, topic, ARGV[3])
local ids = P .. ':ids:' .. topic
local now = fmt(now_us())
local out = {}
local i = 5
for _ = 1, n do
  local p, eid = ARGV[i], ARGV[i + 1]
  local known = false
  if eid ~= '' then known = redis.call('HGET', ids, eid) end
  if known then
    local sep = string.find(known, ':', 1, true)
    out[#out + 1] = tonumber(string.sub(known, 1, sep - 1))
    out[#out + 1] = tonumber(string.sub(known, sep + 1))
    out[#out + 1] = 1
  else
    local fields = {'e', ARGV[i + 5], 'f', ARGV[i + 4], 't', now}
    if ARGV[i + 2] == '1' then fields[#fields + 1] = 'k'; fields[#fields + 1] = ARGV[i + 3] end
    if eid ~= '' then fields[#fields + 1] = 'i'; fields[#fields + 1] = eid end
    if ARGV[i + 6] ~= '' then fields[#fields + 1] = 'h'; fields[#fields + 1] = ARGV[i + 6] end
    local o = off(redis.call('XADD', stream_key(P, topic, p), '0-*', unpack(fields)))
    if eid ~= '' then redis.call('HSET', ids, eid, p .. ':' .. fmt(o)) end
    out[#out + 1] = tonumber(p)
    out[#out + 1] = o
    out[#out + 1] = 0
  end
  i = i + 7
end
redis.call('PUBLISH', P .. ':wake:' .. topic, '1')
return out
"""
"""Append messages with dense offsets, skipping event ids the topic holds; wake the readers."""

REPLAY: Final = """
-- ARGV: prefix, topic, group, default partitions, since_us or '', then (partition, offset)...
local P, topic, group = ARGV[1], ARGV[2], ARGV[3]
local parts = ensure_topic(P, topic, ARGV[4])
local G = P .. ':g:' .. topic .. ':' .. group
local targets = {}
if ARGV[5] ~= '' then
  for p = 0, parts - 1 do
    targets[#targets + 1] = {p, first_since(stream_key(P, topic, p), tonumber(ARGV[5]))}
  end
else
  for j = 6, #ARGV, 2 do targets[#targets + 1] = {tonumber(ARGV[j]), tonumber(ARGV[j + 1])} end
end
for _, target in ipairs(targets) do
  local p, o = target[1], target[2]
  local stream = stream_key(P, topic, p)
  redis.pcall('XGROUP', 'DESTROY', stream, group)
  redis.call('XGROUP', 'CREATE', stream, group, '0-' .. fmt(o), 'MKSTREAM')
  redis.call('DEL', G .. ':due:' .. p, G .. ':held:' .. p, G .. ':lease:' .. p)
  redis.call('HDEL', G .. ':owner', p)
end
redis.call('PUBLISH', P .. ':wake:' .. topic, '1')
return #targets
"""
"""Recreate a group's consumer group at an offset (or time) per partition, dropping its PEL."""

RETENTION: Final = """
-- ARGV: prefix, topic, batch size
local P, topic, batch = ARGV[1], ARGV[2], tonumber(ARGV[3])
local meta = redis.call('HMGET', P .. ':topic:' .. topic, 'partitions', 'max_age_us', 'max_count')
if not meta[1] then return 0 end
local parts, max_age, max_count = tonumber(meta[1]), tonumber(meta[2]), tonumber(meta[3])
local ids = P .. ':ids:' .. topic
local now = now_us()
local removed = 0
for p = 0, parts - 1 do
  local stream = stream_key(P, topic, p)
  local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #first > 0 then
    local lo = off(first[1][1])
    local cut = lo
    if max_count then cut = math.max(cut, head(stream) - max_count) end
    if max_age then cut = math.max(cut, first_since(stream, now - max_age)) end
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      cut = math.min(cut, committed(stream, info))
    end
    local upto = math.min(cut, lo + batch)
    if upto > lo then
      for _, entry in ipairs(redis.call('XRANGE', stream, '-', sid(upto - 1))) do
        local eid = field(entry[2], 'i')
        if eid then redis.call('HDEL', ids, eid) end
      end
      removed = removed + redis.call('XTRIM', stream, 'MINID', sid(upto))
    end
  end
end
return removed
"""
"""Trim each partition by age and count, never at or past any group's committed offset.

Removes at most ``batch`` entries per partition per call (the caller repeats while it removes
a full batch), forgetting their event ids so the id table shrinks with the topic.
"""

GROUP_POSITIONS: Final = """
-- ARGV: prefix, topic
local P, topic = ARGV[1], ARGV[2]
local parts = tonumber(redis.call('HGET', P .. ':topic:' .. topic, 'partitions') or '0')
local out = {}
for p = 0, parts - 1 do
  local stream = stream_key(P, topic, p)
  if redis.call('EXISTS', stream) == 1 then
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      out[#out + 1] = info[2]
      out[#out + 1] = p
      out[#out + 1] = committed(stream, info)
    end
  end
end
return out
"""
"""Return (group, partition, committed offset) triples, flattened."""
