"""The projection registry in Redis: key names and the Lua scripts that keep it consistent.

Per projection version (``P`` = ``{prefix}:projection:{name}:{version}``):

- ``P`` is a hash: position, status, error, lease_owner, lease_until_us, last_recorded_us,
  updated_at_us;
- ``P:failures`` is a list of skipped events (JSON);
- ``{prefix}:projection:{name}:active`` holds the active version; ``{prefix}:projections`` is
  the set of ``name:version`` members.

Scripts run atomically, and read the server's clock (``TIME``) for lease expiry, so runners on
several machines agree. A projection's own keys are ``{prefix}:{name}:v{version}:...``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ACQUIRE", "ACTIVATE", "APPLY", "LOOKUP", "REGISTER", "RELEASE", "STATUS"]

_NOW: Final = """
local t = redis.call('TIME')
local now = string.format('%.0f', t[1] * 1000000 + t[2])
"""

REGISTER: Final = (
    _NOW
    + """
-- KEYS: state, index, active; ARGV: member, version
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'position', '0', 'status', 'running', 'last_recorded_us', '0',
             'updated_at_us', now)
  redis.call('SADD', KEYS[2], ARGV[1])
end
if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('SET', KEYS[3], ARGV[2]) end
return 1
"""
)

LOOKUP: Final = """
-- KEYS: state, active; returns {exists, fields..., active version}
if redis.call('EXISTS', KEYS[1]) == 0 then return {0} end
return {1, redis.call('HGETALL', KEYS[1]), redis.call('GET', KEYS[2]) or ''}
"""

STATUS: Final = (
    _NOW
    + """
-- KEYS: state; ARGV: status, error
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'error', ARGV[2], 'updated_at_us', now)
return 1
"""
)

ACTIVATE: Final = (
    _NOW
    + """
-- KEYS: state, active; ARGV: version
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'updated_at_us', now)
return 1
"""
)

ACQUIRE: Final = (
    _NOW
    + """
-- KEYS: state; ARGV: owner, ttl_us
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local owner = redis.call('HGET', KEYS[1], 'lease_owner')
local untl = tonumber(redis.call('HGET', KEYS[1], 'lease_until_us') or '0')
if owner and owner ~= ARGV[1] and untl > tonumber(now) then return 0 end
redis.call('HSET', KEYS[1], 'lease_owner', ARGV[1],
           'lease_until_us', string.format('%.0f', tonumber(now) + tonumber(ARGV[2])))
return 1
"""
)

RELEASE: Final = """
-- KEYS: state; ARGV: owner
if redis.call('HGET', KEYS[1], 'lease_owner') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'lease_owner', 'lease_until_us')
end
return 1
"""

APPLY: Final = (
    _NOW
    + """
-- KEYS: state, failures
-- ARGV: owner, after, up_to, last_recorded_us, failure JSON or '', record count, then per
--       record: position before it, command count, then per command: argc, args...
-- Returns {'ok'}, {'lease', holder}, {'position', stored}, or {'error', record index, text}
-- after committing the records before the failing one (Redis cannot roll back).
local holder = redis.call('HGET', KEYS[1], 'lease_owner')
if holder ~= ARGV[1] then return {'lease', holder or ''} end
local stored = redis.call('HGET', KEYS[1], 'position')
if stored ~= ARGV[2] then return {'position', stored or ''} end
local i = 7
for r = 1, tonumber(ARGV[6]) do
  local before = ARGV[i]
  local commands = tonumber(ARGV[i + 1])
  i = i + 2
  for c = 1, commands do
    local argc = tonumber(ARGV[i])
    local ok, err = pcall(redis.call, unpack(ARGV, i + 1, i + argc))
    if not ok then
      redis.call('HSET', KEYS[1], 'position', before, 'updated_at_us', now)
      return {'error', r - 1, tostring(err)}
    end
    i = i + argc + 1
  end
end
if ARGV[5] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[5]) end
redis.call('HSET', KEYS[1], 'position', ARGV[3], 'last_recorded_us', ARGV[4], 'updated_at_us', now)
return {'ok'}
"""
)
