-- Give one item its final state, once. KEYS[1] audit:<batch>  KEYS[2] :state  KEYS[3] :running
-- KEYS[4] :run  KEYS[5] :results  KEYS[6] :targets
-- ARGV[1] item index, ARGV[2] final state (pass|fail|error|timeout), ARGV[3] result JSON,
-- ARGV[4] now (unix s), ARGV[5] retention ttl_s (applied to every key once the batch completes)
-- Returns 0 (no-op: already final, or the batch is gone), 1 (recorded), 2 (recorded, and the
-- batch is complete).
local ttl = redis.call('TTL', KEYS[1])
if ttl == -2 then
  return 0
end
local idx = ARGV[1]
local state = redis.call('HGET', KEYS[2], idx)
if state and state ~= 'running' then
  return 0
end
if state == 'running' then
  redis.call('HINCRBY', KEYS[1], 'running', -1)
else
  redis.call('HINCRBY', KEYS[1], 'pending', -1)
end
redis.call('HSET', KEYS[2], idx, ARGV[2])
redis.call('HSET', KEYS[5], idx, ARGV[3])
redis.call('ZREM', KEYS[3], idx)
redis.call('HDEL', KEYS[4], idx)
redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
local done = redis.call('HINCRBY', KEYS[1], 'done', 1)
redis.call('HSET', KEYS[1], 'progress_at', ARGV[4])
local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
if done >= total then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[4])
  for i = 1, 6 do
    redis.call('EXPIRE', KEYS[i], ARGV[5])
  end
  return 2
end
if ttl > 0 then
  for i = 2, 5 do
    if redis.call('TTL', KEYS[i]) == -1 then
      redis.call('EXPIRE', KEYS[i], ttl)
    end
  end
end
return 1
