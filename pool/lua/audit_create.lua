-- Create an audit batch record, once (idempotent: a second create of the same id is a no-op,
-- so two beat processes firing one schedule make one batch).
-- KEYS[1] audit:<batch>  KEYS[2] audit:<batch>:targets  KEYS[3] audits (index)
-- ARGV[1] batch id, ARGV[2] now (unix s), ARGV[3] ttl_s, ARGV[4] n meta pairs,
-- ARGV[5 .. 4+2n] meta field/value pairs, then the targets (item i = i-th target, from 0).
-- Returns 1 when created, 0 when the batch existed.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local npairs = tonumber(ARGV[4])
local first = 5 + 2 * npairs
local total = #ARGV - first + 1
for i = 5, 4 + 2 * npairs, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'total', total, 'pending', total, 'running', 0, 'pass', 0,
  'fail', 0, 'error', 0, 'timeout', 0, 'done', 0, 'attempts', 0, 'resent', 0,
  'created_at', ARGV[2], 'progress_at', ARGV[2], 'enqueued_at', ARGV[2])
local chunk = {}
for j = first, #ARGV do
  chunk[#chunk + 1] = tostring(j - first)
  chunk[#chunk + 1] = ARGV[j]
  if #chunk >= 2000 then
    redis.call('HSET', KEYS[2], unpack(chunk))
    chunk = {}
  end
end
if #chunk > 0 then
  redis.call('HSET', KEYS[2], unpack(chunk))
end
if total == 0 then
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
if total > 0 then
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
return 1
