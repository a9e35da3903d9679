-- Take over a lease whose holder is known dead. KEYS[1] lock:<uuid>
-- ARGV: expected holder token, new token, ttl_ms. Returns 1 when taken.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
