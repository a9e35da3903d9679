-- A resync finished: every context DRP wants has desired state. Recorded only when the store
-- kept its data since the resync began (same epoch): a resync that spanned a data loss proves
-- nothing. KEYS[1] epoch  KEYS[2] resync-done   ARGV: epoch of the resync, now (unix s)
-- Returns 1 when recorded.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
