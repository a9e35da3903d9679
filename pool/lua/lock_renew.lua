-- Extend a lease its holder still holds. KEYS[1] lock:<uuid>  ARGV: token, ttl_ms
-- Returns 1 when renewed, 0 when the lease is no longer the holder's (expired or taken).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
