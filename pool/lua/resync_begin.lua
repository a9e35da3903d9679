-- Start a resync: return the store's epoch, creating one when there is none (first start, or
-- Redis lost its data). KEYS[1] epoch   ARGV: new epoch id
-- Returns {epoch, 1 when it was just created (the store is fresh) else 0}.
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  return {ARGV[1], 1}
end
return {redis.call('GET', KEYS[1]), 0}
