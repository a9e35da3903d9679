-- Read a bucket without changing it. KEYS[1] tat  KEYS[2] slots
-- Returns {ahead_ms, slots in use}: ahead_ms = how far the bucket's TAT is past now.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local ahead = tat - now
if ahead < 0 then ahead = 0 end
local used = redis.call('ZCOUNT', KEYS[2], string.format('%.3f', now), '+inf')
return {string.format('%.3f', ahead), used}
