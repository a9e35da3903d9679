-- Take one token (GCRA) and, when the limit has one, one concurrency slot, together or not at all.
-- KEYS[1] tat (string: theoretical arrival time, ms)  KEYS[2] slots (zset holder -> expiry ms)
-- KEYS[3] keys index (zset bucket key -> last use ms)
-- ARGV: interval_ms, burst, concurrency (0 = none), holder, slot_ttl_ms, bucket key
-- Returns {1, "0", "ok"} or {0, wait_ms, "rate"|"concurrency"}. Times come from the server clock
-- so that nodes' clocks do not matter.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local conc = tonumber(ARGV[3])
local ttl = tonumber(ARGV[5])
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.3f', now))
  if not redis.call('ZSCORE', KEYS[2], ARGV[4]) and redis.call('ZCARD', KEYS[2]) >= conc then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {0, string.format('%.3f', tonumber(first[2]) - now), 'concurrency'}
  end
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local tau = interval * (burst - 1)
if tat - now > tau + 0.000001 then
  return {0, string.format('%.3f', tat - now - tau), 'rate'}
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1000)
if conc > 0 then
  redis.call('ZADD', KEYS[2], string.format('%.3f', now + ttl), ARGV[4])
  redis.call('PEXPIRE', KEYS[2], math.ceil(ttl) * 2)
end
redis.call('ZADD', KEYS[3], string.format('%.3f', now), ARGV[6])
return {1, '0', 'ok'}
