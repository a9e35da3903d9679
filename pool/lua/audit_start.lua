-- Start one item: pending -> running (or take over a run that is stale: its worker died).
-- KEYS[1] audit:<batch>  KEYS[2] :state  KEYS[3] :running  KEYS[4] :run
-- ARGV[1] item index, ARGV[2] run token, ARGV[3] now (unix s), ARGV[4] stale_after_s
-- Returns 'run' (go), 'final' (already has its result: a redelivery, no-op), 'busy' (another
-- run is under way and not stale: no-op), 'gone' (no such batch: expired or lost, no-op).
local ttl = redis.call('TTL', KEYS[1])
if ttl == -2 then
  return 'gone'
end
local idx = ARGV[1]
local now = tonumber(ARGV[3])
local state = redis.call('HGET', KEYS[2], idx)
if state and state ~= 'running' then
  return 'final'
end
if state == 'running' then
  local since = tonumber(redis.call('ZSCORE', KEYS[3], idx) or '0')
  if now - since < tonumber(ARGV[4]) then
    return 'busy'
  end
else
  redis.call('HSET', KEYS[2], idx, 'running')
  redis.call('HINCRBY', KEYS[1], 'pending', -1)
  redis.call('HINCRBY', KEYS[1], 'running', 1)
end
redis.call('ZADD', KEYS[3], now, idx)
redis.call('HSET', KEYS[4], idx, ARGV[2])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'progress_at', ARGV[3])
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[3])
if ttl > 0 then
  for i = 2, 4 do
    if redis.call('TTL', KEYS[i]) == -1 then
      redis.call('EXPIRE', KEYS[i], ttl)
    end
  end
end
return 'run'
