-- Put a running item back to pending (its limited call was deferred: 429, 5xx), if the run
-- named by the token still holds it.
-- KEYS[1] audit:<batch>  KEYS[2] :state  KEYS[3] :running  KEYS[4] :run
-- ARGV[1] item index, ARGV[2] run token. Returns 1 when released, 0 otherwise.
if redis.call('HGET', KEYS[2], ARGV[1]) ~= 'running' then
  return 0
end
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'running', -1)
redis.call('HINCRBY', KEYS[1], 'pending', 1)
return 1
