-- Write the desired state of one context.
-- KEYS[1] ctx:<uuid>  KEYS[2] contexts index
-- ARGV: uuid, desired, spec_json, spec_hash, tag, explicit_generation ("" = bump), now,
--       preferred node ("" = none; a placement hint, refreshed on every present write)
-- Returns {generation, changed(0/1)}. A write whose explicit generation is not newer than the
-- stored one is stale and ignored. Same desired state + same spec hash keeps the generation
-- (the spec is still refreshed: a renewed token must reach the next container).
local cur = redis.call('HMGET', KEYS[1], 'desired', 'spec_hash', 'generation')
local cur_gen = tonumber(cur[3]) or 0
local explicit = tonumber(ARGV[6])
if explicit and cur[3] and explicit <= cur_gen then
  return {cur_gen, 0}
end
if ARGV[2] == 'present' then
  if ARGV[8] ~= '' then
    redis.call('HSET', KEYS[1], 'preferred', ARGV[8])
  else
    redis.call('HDEL', KEYS[1], 'preferred')
  end
end
if cur[1] == ARGV[2] and (ARGV[2] == 'absent' or cur[2] == ARGV[4]) then
  if ARGV[2] == 'present' then
    -- the tag is not part of the spec hash (placement does not change the container): keep
    -- the field in step, sweeps and removals route by it
    redis.call('HSET', KEYS[1], 'spec', ARGV[3], 'tag', ARGV[5])
  end
  if explicit then
    -- an ordered writer moved on without a change: remember it so older writes stay stale
    redis.call('HSET', KEYS[1], 'generation', explicit)
    return {explicit, 0}
  end
  return {cur_gen, 0}
end
local gen = explicit or (cur_gen + 1)
redis.call('HSET', KEYS[1], 'uuid', ARGV[1], 'desired', ARGV[2], 'generation', gen,
  'updated_at', ARGV[7])
if ARGV[2] == 'present' then
  -- an absent context keeps its last tag: that is where a removal nudge goes
  redis.call('HSET', KEYS[1], 'spec', ARGV[3], 'spec_hash', ARGV[4], 'tag', ARGV[5])
end
redis.call('PERSIST', KEYS[1])
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[1])
return {gen, 1}
