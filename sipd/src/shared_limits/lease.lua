-- Sets this node's lease of a cluster-wide limit, never letting the nodes' leases add up
-- to more than the limit. Absolute (not a delta), so a retried call changes nothing.
-- KEYS[1]: the lease hash (field: node, value: units); KEYS[2]: the set of lease hashes
--          (what reclaim walks)
-- ARGV[1]: this node; ARGV[2]: units wanted; ARGV[3]: the cluster limit;
-- ARGV[4]: units this node has in use now: recorded even above the room left (after an
--          outage), so the other nodes see them and take nothing until they drain
-- Returns {granted, others' units}
local node = ARGV[1]
local want = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local floor = tonumber(ARGV[4])
local others = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= node then
    others = others + tonumber(all[i + 1])
  end
end
local room = limit - others
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
return {grant, others}
