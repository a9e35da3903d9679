-- KEYS[1] lock:<uuid>  KEYS[2] dirty:<uuid>   ARGV: token
-- Returns 1 released, 2 released but dirty (work arrived meanwhile: run again), 0 not held.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if redis.call('DEL', KEYS[2]) == 1 then
  return 2
end
return 1
