-- A node removed the container of an absent context: keep a tombstone with a TTL.
-- KEYS[1] ctx:<uuid>  KEYS[2] status:<uuid>  KEYS[3] owner:<uuid>  KEYS[4] owned:<node>
-- KEYS[5] parked:<node>
-- ARGV: uuid, node, generation removed, tombstone ttl (s), now
-- Returns 1 when finalized, 0 when the desired state changed meanwhile (caller loops).
local desired = redis.call('HMGET', KEYS[1], 'desired', 'generation')
if desired[1] and (desired[1] ~= 'absent' or desired[2] ~= ARGV[3]) then
  return 0
end
local owner = redis.call('GET', KEYS[3])
if owner and owner ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('HSET', KEYS[2], 'state', 'removed', 'applied_generation', ARGV[3],
  'updated_at', ARGV[5], 'container_id', '', 'last_error', '', 'error_generation', '',
  'permanent', '')
redis.call('HDEL', KEYS[2], 'owner')
local ttl = tonumber(ARGV[4])
if desired[1] then
  redis.call('EXPIRE', KEYS[1], ttl)
end
redis.call('EXPIRE', KEYS[2], ttl)
return 1
