-- A finished call's debit (or, negative, a top-up), applied once: takes the cost off the
-- balance and, for a debit, off this node's reservation, and remembers the entry so a retry
-- (after a crash, a timeout or an outage) is a no-op.
-- KEYS[1]: the balance; KEYS[2]: the reservation hash; KEYS[3]: the entry's "applied" mark
-- ARGV[1]: this node; ARGV[2]: the cost (integer micro-units, negative for a top-up);
-- ARGV[3]: how long the mark is kept (seconds); ARGV[4]: the balance to seed the key with
--          when Redis has none (an emptied Redis), before this entry and every other one
--          still queued here; '' for none
-- Returns {1 if applied now / 0 if it already was, balance after}
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {0, tonumber(redis.call('GET', KEYS[1]) or '0')}
end
if ARGV[4] ~= '' and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[1], ARGV[4])
end
local cost = tonumber(ARGV[2])
local balance = redis.call('DECRBY', KEYS[1], ARGV[2])
if cost > 0 then
  local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
  if held > cost then
    redis.call('HINCRBY', KEYS[2], ARGV[1], -cost)
  else
    redis.call('HDEL', KEYS[2], ARGV[1])
  end
end
redis.call('SET', KEYS[3], '1', 'EX', ARGV[3])
return {1, balance}
