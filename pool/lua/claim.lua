-- Compare-and-set ownership of a context.
-- KEYS[1] owner:<uuid>  KEYS[2] owned:<node>  KEYS[3] owned:<expected owner> (or a dummy key)
-- ARGV: uuid, node, expected owner ("" = none), capacity (0 = unlimited)
-- Returns {"ok", node} | {"full", node} | {"lost", current owner}.
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[3] then
  return {'lost', cur}
end
if cur == ARGV[2] then
  redis.call('SADD', KEYS[2], ARGV[1])
  return {'ok', cur}
end
local cap = tonumber(ARGV[4])
if cap > 0 and redis.call('SCARD', KEYS[2]) >= cap then
  return {'full', ARGV[2]}
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
if cur ~= '' then
  redis.call('SREM', KEYS[3], ARGV[1])
end
return {'ok', ARGV[2]}
