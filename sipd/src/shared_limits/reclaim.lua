-- Gives back the leases and reservations of nodes whose heartbeat key has expired, and
-- counts the live nodes. Run by any live node, periodically.
-- KEYS[1]: the set of lease and reservation hashes; KEYS[2]: the set of node names
-- ARGV[1]: the heartbeat key prefix (a node N is alive while ARGV[1] .. N exists);
-- ARGV[2]: this node (never reclaimed by itself, and counted live)
-- Returns {fields reclaimed, live nodes}
local prefix = ARGV[1]
local me = ARGV[2]
local alive = {}
local function is_alive(n)
  if n == me then return true end
  local a = alive[n]
  if a == nil then
    a = redis.call('EXISTS', prefix .. n) == 1
    alive[n] = a
  end
  return a
end
local removed = 0
for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  for _, n in ipairs(redis.call('HKEYS', h)) do
    if not is_alive(n) then
      redis.call('HDEL', h, n)
      removed = removed + 1
    end
  end
  if redis.call('EXISTS', h) == 0 then
    redis.call('SREM', KEYS[1], h)
  end
end
local live = 0
local me_listed = false
for _, n in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if n == me then me_listed = true end
  if is_alive(n) then live = live + 1 end
end
if not me_listed then live = live + 1 end
return {removed, live}
