-- Lease lock. KEYS[1] lock:<uuid>  KEYS[2] dirty:<uuid>   ARGV: token, ttl_ms
-- Returns {1, token} on success; else marks the context dirty (so the holder runs once more
-- before it lets go) and returns {0, holder}.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('DEL', KEYS[2])
  return {1, ARGV[1]}
end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return {0, redis.call('GET', KEYS[1]) or ''}
