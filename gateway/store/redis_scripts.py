"""The Lua scripts of the Redis token store (value layouts in ``gateway.store.redis``).

Redis runs a script atomically, so no other client sees an item half-written. A key that does
not exist in Redis is also how an expired record or index entry looks, because Redis removes
keys at their ``PEXPIREAT`` time.
"""

from __future__ import annotations

from typing import Final

PUT_SCRIPT: Final = """
-- Item i (from 1) has KEYS[2i-1] = record key and KEYS[2i] = index entry key ('' if none),
-- ARGV[3i-2] = record value, ARGV[3i-1] = expiry in Unix ms ('0' for never) and
-- ARGV[3i] = index entry value. Each reply is 1 (stored), 0 (collision) or the sealed token
-- of the live index entry that already exists.
local replies = {}
for i = 1, #KEYS / 2 do
  local record_key, entry_key = KEYS[2 * i - 1], KEYS[2 * i]
  local record, expiry, entry = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
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
      reply = 1
    end
  end
  replies[i] = reply
end
return replies
"""

ERASE_SCRIPT: Final = """
-- KEYS are index entry keys. Deletes each entry and the record it leads to, and returns how
-- many records existed.
local erased = 0
for i = 1, #KEYS do
  local entry = redis.call('GET', KEYS[i])
  if entry then
    local target = string.sub(entry, 2, 1 + string.byte(entry, 1))
    erased = erased + redis.call('DEL', target)
    redis.call('DEL', KEYS[i])
  end
end
return erased
"""

DELETE_SCRIPT: Final = """
-- KEYS are record keys. Deletes each record and the index entry that points at it, and
-- returns how many records existed.
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
    deleted = deleted + 1
  end
end
return deleted
"""
