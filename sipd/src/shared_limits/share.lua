-- Sets this node's share of a cluster-wide cap: a lease of a limit (calls up, calls per
-- second) or a reservation of a balance (money). The nodes' shares never add up to more than
-- the cap. Absolute (not a delta), so a retried call changes nothing.
-- KEYS[1]: the share hash (field: node, value: units); KEYS[2]: the set of share hashes
--          (what reclaim walks); KEYS[3]: the hash of nodes waiting for units (field: node,
--          value: Redis time in ms when it last asked in vain); KEYS[4], for a balance: the
--          balance (integer micro-units), read here so cap and shares are judged together
-- ARGV[1]: this node; ARGV[2]: units wanted;
-- ARGV[3]: units this node holds now (calls up, money its calls hold): granted even above
--          the room left (after an outage), so the other nodes see them and take nothing
--          until they drain
-- ARGV[4]: the cap (a limit); for a balance, the value to seed it with when Redis has none
--          (an emptied Redis), '' for none
-- ARGV[5]: '1' if this node has calls waiting for a unit it does not hold
-- ARGV[6]: how long (ms) a waiting node's mark counts
-- ARGV[7]: '1' if this node yields its idle units now (its core already admits no more than
--          ARGV[3]): only then are they given back to the waiting nodes; before, a node that
--          learns of them only stops growing (its core may be admitting within them)
-- Returns {granted, cap, others' units, nodes waiting}
local node = ARGV[1]
local want = tonumber(ARGV[2])
local floor = tonumber(ARGV[3])
local needy = ARGV[5] == '1'
local fresh = tonumber(ARGV[6])
local yield = ARGV[7] == '1'
local cap
if KEYS[4] then
  local b = redis.call('GET', KEYS[4])
  if not b and ARGV[4] ~= '' then
    redis.call('SET', KEYS[4], ARGV[4])
    b = ARGV[4]
  end
  cap = tonumber(b or '0')
else
  cap = tonumber(ARGV[4])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Other nodes that asked in vain lately: this one keeps no idle units while they wait.
local waiting = 0
local marks = redis.call('HGETALL', KEYS[3])
for i = 1, #marks, 2 do
  if marks[i] ~= node then
    if now - tonumber(marks[i + 1]) <= fresh then
      waiting = waiting + 1
    else
      redis.call('HDEL', KEYS[3], marks[i])
    end
  end
end
local others = 0
local mine = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if all[i] ~= node then
    others = others + tonumber(all[i + 1])
  else
    mine = tonumber(all[i + 1])
  end
end
local room = cap - others
if room < 0 then room = 0 end
local grant = want
if waiting > 0 and not needy then
  if yield then
    grant = floor
  elseif grant > mine then
    grant = mine
  end
end
if grant > room then grant = room end
if grant < floor then grant = floor end
if grant > 0 then
  redis.call('HSET', KEYS[1], node, grant)
  redis.call('SADD', KEYS[2], KEYS[1])
else
  redis.call('HDEL', KEYS[1], node)
end
if needy and grant <= floor then
  redis.call('HSET', KEYS[3], node, now)
  redis.call('PEXPIRE', KEYS[3], fresh)
else
  redis.call('HDEL', KEYS[3], node)
end
return {grant, cap, others, waiting}
