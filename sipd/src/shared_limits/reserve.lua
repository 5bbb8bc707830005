-- Sets this node's money reservation on an account: what its calls may spend. The nodes'
-- reservations never add up to more than the balance. Absolute, so a retry changes nothing.
-- KEYS[1]: the balance (integer micro-units); KEYS[2]: the reservation hash (field: node);
-- KEYS[3]: the set of hashes reclaim walks
-- ARGV[1]: this node; ARGV[2]: micro-units wanted;
-- ARGV[3]: what this node's calls in progress already hold (kept whatever the room)
-- Returns {granted, balance, others' reservations}
local node = ARGV[1]
local want = tonumber(ARGV[2])
local floor = tonumber(ARGV[3])
local balance = tonumber(redis.call('GET', KEYS[1]) or '0')
local others = 0
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  if all[i] ~= node then
    others = others + tonumber(all[i + 1])
  end
end
local room = balance - others
if room < 0 then room = 0 end
local grant = want
if grant > room then grant = room end
if grant < floor then grant = floor end
if grant > 0 then
  redis.call('HSET', KEYS[2], node, grant)
  redis.call('SADD', KEYS[3], KEYS[2])
else
  redis.call('HDEL', KEYS[2], node)
end
return {grant, balance, others}
