"""The Lua scripts of the Redis token store (value layouts in ``gateway.store.redis``).

Redis runs a script atomically, so no other client sees an item half-written. A key that does
not exist in Redis is also how an expired record or index entry looks, because Redis removes
keys at their ``PEXPIREAT`` time.

Every script that writes or removes a record also updates the counts of records by key version,
with the key prefix in ``ARGV[1]``. The hash ``<prefix>:v`` contains the number of records
without expiry for each version. The sorted set ``<prefix>:e:<version>`` contains the keys of
the records with an expiry, scored by it. The count of a version is its hash field plus the
members of its set that are scored in the future. The scripts also call ``SCAN`` and ``TIME``,
which Redis 7.0, the tested version, allows in scripts.
"""

from __future__ import annotations

from typing import Final

_KEY_VERSION_TRACKING: Final = """
-- Returns the unsigned big-endian integer in bytes first..last of s (exact up to 2^53).
local function be_number(s, first, last)
  local n = 0
  for i = first, last do n = n * 256 + string.byte(s, i) end
  return n
end

-- Adds delta (1 or -1) to the count of records under key version `version`, for the record at
-- record_key that expires at expiry_ms (0 for never).
local function track(prefix, version, expiry_ms, record_key, delta)
  local counts = prefix .. ':v'
  if expiry_ms == 0 then
    redis.call('HINCRBY', counts, version, delta)
    return
  end
  local expiring = prefix .. ':e:' .. version
  if delta > 0 then
    -- The hash field lists the version for the count script even when all its records expire.
    redis.call('HSETNX', counts, version, 0)
    redis.call('ZADD', expiring, expiry_ms, record_key)
  else
    redis.call('ZREM', expiring, record_key)
  end
end
"""

PUT_SCRIPT: Final = (
    _KEY_VERSION_TRACKING
    + """
-- ARGV[1] is the key prefix. Item i (from 1) has KEYS[2i-1] = record key and KEYS[2i] = index
-- entry key ('' if none), ARGV[3i-1] = record value, ARGV[3i] = expiry in Unix ms ('0' for
-- never) and ARGV[3i+1] = index entry value. Each reply is 1 (stored), 0 (collision) or the
-- sealed token of the live index entry that already exists.
local prefix = ARGV[1]
local replies = {}
for i = 1, #KEYS / 2 do
  local record_key, entry_key = KEYS[2 * i - 1], KEYS[2 * i]
  local record, expiry, entry = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
  local reply = nil

  if entry_key ~= '' then
    local existing = redis.call('GET', entry_key)
    if existing then
      local name_length = string.byte(existing, 1)
      local target = string.sub(existing, 2, 1 + name_length)
      if redis.call('EXISTS', target) == 1 then
        reply = string.sub(existing, 2 + name_length)
      end
    end
  end

  if reply == nil then
    if redis.call('EXISTS', record_key) == 1 then
      reply = 0
    else
      redis.call('SET', record_key, record)
      if expiry ~= '0' then redis.call('PEXPIREAT', record_key, expiry) end
      if entry_key ~= '' then
        redis.call('SET', entry_key, entry)
        if expiry ~= '0' then redis.call('PEXPIREAT', entry_key, expiry) end
      end
      track(prefix, be_number(record, 1, 4), tonumber(expiry), record_key, 1)
      reply = 1
    end
  end
  replies[i] = reply
end
return replies
"""
)

ERASE_SCRIPT: Final = (
    _KEY_VERSION_TRACKING
    + """
-- ARGV[1] is the key prefix and KEYS are index entry keys. Deletes each entry and the record it
-- leads to, and returns how many records existed.
local prefix = ARGV[1]
local erased = 0
for i = 1, #KEYS do
  local entry = redis.call('GET', KEYS[i])
  if entry then
    local target = string.sub(entry, 2, 1 + string.byte(entry, 1))
    local record = redis.call('GET', target)
    if record then
      redis.call('DEL', target)
      track(prefix, be_number(record, 1, 4), be_number(record, 5, 12), target, -1)
      erased = erased + 1
    end
    redis.call('DEL', KEYS[i])
  end
end
return erased
"""
)

DELETE_SCRIPT: Final = (
    _KEY_VERSION_TRACKING
    + """
-- ARGV[1] is the key prefix and KEYS are record keys. Deletes each record and the index entry
-- that points at it, and returns how many records existed.
local prefix = ARGV[1]
local deleted = 0
for i = 1, #KEYS do
  local record = redis.call('GET', KEYS[i])
  if record then
    local name_length = string.byte(record, 13)
    if name_length > 0 then
      local entry_key = string.sub(record, 14, 13 + name_length)
      local entry = redis.call('GET', entry_key)
      if entry and string.sub(entry, 2, 1 + string.byte(entry, 1)) == KEYS[i] then
        redis.call('DEL', entry_key)
      end
    end
    redis.call('DEL', KEYS[i])
    track(prefix, be_number(record, 1, 4), be_number(record, 5, 12), KEYS[i], -1)
    deleted = deleted + 1
  end
end
return deleted
"""
)

REPLACE_SCRIPT: Final = (
    _KEY_VERSION_TRACKING
    + """
-- ARGV[1] is the key prefix. Item i (from 1) has KEYS[i] = record key, ARGV[3i-1] = the blob
-- the record must still have, ARGV[3i] = the new key version in 4 bytes and ARGV[3i+1] = the
-- new blob. A record is replaced only if it exists and its blob is unchanged; it keeps its
-- expiry and index entry name. Returns how many records were replaced.
local prefix = ARGV[1]
local replaced = 0
for i = 1, #KEYS do
  local record = redis.call('GET', KEYS[i])
  if record then
    local blob_start = 14 + string.byte(record, 13)
    local expected, version, blob = ARGV[3 * i - 1], ARGV[3 * i], ARGV[3 * i + 1]
    if string.sub(record, blob_start) == expected then
      local header_rest = string.sub(record, 5, blob_start - 1)
      redis.call('SET', KEYS[i], version .. header_rest .. blob, 'KEEPTTL')
      local expiry = be_number(record, 5, 12)
      track(prefix, be_number(record, 1, 4), expiry, KEYS[i], -1)
      track(prefix, be_number(version, 1, 4), expiry, KEYS[i], 1)
      replaced = replaced + 1
    end
  end
end
return replaced
"""
)

COUNT_SCRIPT: Final = """
-- ARGV[1] is the key prefix. Returns a flat list of key version and live record count, for
-- versions with at least one live record. Members of expired records leave the sorted sets,
-- and versions without records leave the hash.
local prefix = ARGV[1]
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local counts_key = prefix .. ':v'
local counts = redis.call('HGETALL', counts_key)
local reply = {}
for i = 1, #counts, 2 do
  local version, without_expiry = counts[i], tonumber(counts[i + 1])
  local expiring = prefix .. ':e:' .. version
  -- Redis treats a key as expired only after its PEXPIREAT time, so that time itself is live.
  redis.call('ZREMRANGEBYSCORE', expiring, '-inf', '(' .. now_ms)
  local total = without_expiry + redis.call('ZCARD', expiring)
  if total > 0 then
    reply[#reply + 1] = version
    reply[#reply + 1] = total
  elseif without_expiry == 0 then
    redis.call('HDEL', counts_key, version)
  end
end
return reply
"""

SCAN_SCRIPT: Final = """
-- ARGV[1] = SCAN cursor, ARGV[2] = MATCH pattern of record keys, ARGV[3] = COUNT. Returns the
-- next cursor followed by record key and value pairs of the records that SCAN found.
local found = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local reply = {found[1]}
for _, key in ipairs(found[2]) do
  local value = redis.call('GET', key)
  if value then
    reply[#reply + 1] = key
    reply[#reply + 1] = value
  end
end
return reply
"""
