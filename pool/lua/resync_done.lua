-- Record the start time of a complete resync; never moves back (a slow, older resync that
-- finishes late must not hide a newer one). KEYS[1] resync-done  ARGV: started_at (unix s)
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
