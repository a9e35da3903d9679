-- Park a context its owner cannot run (a permanent error): it stays owned (nudges still reach
-- the owner, no other node takes it) but stops counting against the owner's capacity.
-- KEYS[1] owner:<uuid>  KEYS[2] owned:<node>  KEYS[3] parked:<node>   ARGV: uuid, node
-- Returns 1 when parked, 0 when the node does not own the context.
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
  return 0
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
