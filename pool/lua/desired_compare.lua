-- Compare many contexts' desired state with what a producer expects, in one call (the bridge:
-- one call per listed page of 500 machines). Read-only. Returns only what differs, so the
-- reply for an unchanged page is empty.
-- KEYS: ctx:<uuid> of n contexts.
-- ARGV[1]: JSON array, per context in KEYS order: [context, image, tag] when the producer
--          wants it present with those, or false when it wants no container.
-- Returns one JSON string: an object "<index in KEYS, 1-based>" ->
-- [desired, generation, context, image, tag] (false where absent) for each context whose
-- stored state is not what is expected. Context, image and tag are read from the stored spec
-- (the hash's own tag field keeps the tag of the last change of generation: a tag-only
-- change rewrites the spec but keeps the generation).
local want = cjson.decode(ARGV[1])
local out = {}
local found = false
for i = 1, #KEYS do
  local h = redis.call('HMGET', KEYS[i], 'desired', 'generation', 'spec')
  local present = h[1] == 'present'
  local w = want[i]
  local context, image, tag = false, false, false
  if present and h[3] then
    local ok, spec = pcall(cjson.decode, h[3])
    if ok and type(spec) == 'table' then
      if type(spec['context']) == 'string' then context = spec['context'] end
      if type(spec['image']) == 'string' then image = spec['image'] end
      if type(spec['tag']) == 'string' then tag = spec['tag'] end
    end
  end
  local differs = present
  if type(w) == 'table' then
    differs = not present or context ~= w[1] or image ~= w[2] or tag ~= w[3]
  end
  if differs then
    out[tostring(i)] = {h[1], h[2], context, image, tag}
    found = true
  end
end
if not found then
  return '{}'
end
return cjson.encode(out)
