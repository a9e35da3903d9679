-- Extend a held concurrency slot. KEYS[1] slots zset  ARGV: holder, slot_ttl_ms
-- Returns 1 when renewed, 0 when the slot was lost (expired and taken back).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local ttl = tonumber(ARGV[2])
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry or tonumber(expiry) < now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', string.format('%.3f', now + ttl), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(ttl) * 2)
return 1
