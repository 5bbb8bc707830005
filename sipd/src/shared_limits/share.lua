-- Sets this node's share of a cluster-wide cap: a lease of a limit (calls up, calls per
-- second) or a reservation of a balance (money). The nodes' shares never add up to more than
-- the cap. Absolute (not a delta), so a retried call changes nothing.
-- KEYS[1]: the share hash (field: node, value: units); KEYS[2]: the set of share hashes
--          (what reclaim walks); KEYS[3], for a balance: the balance (integer micro-units),
--          read here so cap and shares are judged together
-- ARGV[1]: this node; ARGV[2]: units wanted;
-- ARGV[3]: units this node holds now (calls up, money its calls hold): granted even above
--          the room left (after an outage), so the other nodes see them and take nothing
--          until they drain
-- ARGV[4]: the cap, without KEYS[3] (a limit)
-- Returns {granted, cap, others' units}
local node = ARGV[1]
local want = tonumber(ARGV[2])
local floor = tonumber(ARGV[3])
local cap
if KEYS[3] then
  cap = tonumber(redis.call('GET', KEYS[3]) or '0')
else
  cap = tonumber(ARGV[4])
end
local others = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= node then
    others = others + tonumber(all[i + 1])
  end
end
local room = cap - others
if room < 0 then room = 0 end
local grant = want
if grant > room then grant = room end
if grant < floor then grant = floor end
if grant > 0 then
  redis.call('HSET', KEYS[1], node, grant)
  redis.call('SADD', KEYS[2], KEYS[1])
else
  redis.call('HDEL', KEYS[1], node)
end
return {grant, cap, others}
