-- Compare-and-set ownership of a context.
-- KEYS[1] owner:<uuid>  KEYS[2] owned:<node>  KEYS[3] owned:<expected owner> (or a dummy key)
-- KEYS[4] parked:<node>  KEYS[5] parked:<expected owner> (or a dummy key)
-- ARGV: uuid, node, expected owner ("" = none), capacity (0 = unlimited)
-- Returns {"ok", node} | {"full", node} | {"lost", current owner}.
-- owned:<node> holds what counts against a node's capacity; parked:<node> what it owns but
-- does not run (a permanent error). The owner re-claiming a parked context (its spec changed)
-- moves it back into owned:<node>, within capacity.
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[3] then
  return {'lost', cur}
end
local cap = tonumber(ARGV[4])
if cur == ARGV[2] and redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  return {'ok', cur}
end
if cap > 0 and redis.call('SCARD', KEYS[2]) >= cap then
  return {'full', ARGV[2]}
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[4], ARGV[1])
if cur ~= '' and cur ~= ARGV[2] then
  redis.call('SREM', KEYS[3], ARGV[1])
  redis.call('SREM', KEYS[5], ARGV[1])
end
return {'ok', ARGV[2]}
