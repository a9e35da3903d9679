-- Drop ownership if (and only if) NODE still owns the context.
-- KEYS[1] owner:<uuid>  KEYS[2] owned:<node>  KEYS[3] parked:<node>   ARGV: uuid, node
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[3], ARGV[1])
if redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
