-- Read the gist of many contexts' desired state in one call (a producer comparing its view
-- with the store: the bridge's resync, one call per listed page). Read-only.
-- KEYS: ctx:<uuid> for n contexts, then owner:<uuid> for the same n, in the same order.
-- ARGV: none.
-- Returns one JSON string: an array with, per context in KEYS order, the array
-- [desired, generation, tag, context, image, owner] (false where absent; context and image
-- are read from the stored spec). One string, not 6 n replies: the caller parses it at once.
local n = #KEYS / 2
local out = {}
for i = 1, n do
  local h = redis.call('HMGET', KEYS[i], 'desired', 'generation', 'tag', 'spec')
  local context, image = false, false
  if h[4] then
    local ok, spec = pcall(cjson.decode, h[4])
    if ok and type(spec) == 'table' then
      if type(spec['context']) == 'string' then context = spec['context'] end
      if type(spec['image']) == 'string' then image = spec['image'] end
    end
  end
  out[i] = {h[1], h[2], h[3], context, image, redis.call('GET', KEYS[n + i])}
end
if n == 0 then
  return '[]'
end
return cjson.encode(out)
