-- Hold a bucket back: no token before now + delay (the target said Retry-After, or failed).
-- KEYS[1] tat  ARGV: delay_ms, interval_ms, burst
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tau = tonumber(ARGV[2]) * (tonumber(ARGV[3]) - 1)
local want = now + tonumber(ARGV[1]) + tau
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < want then
  redis.call('SET', KEYS[1], string.format('%.3f', want), 'PX', math.ceil(want - now) + 1000)
end
return 1
