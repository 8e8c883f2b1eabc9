//! The Lua scripts that make the fleet's races safe: Redis runs each one atomically, so of two
//! replicas rotating the same refresh token, or counting failures of the same username, one
//! goes entirely first.

/// Each script's keys and arguments are listed where it is invoked.
pub(super) const CREATE: &str = r"
redis.call('HSET', KEYS[1], 'sub', ARGV[1], 'scopes', ARGV[2], 'cv', ARGV[3], 'exp', ARGV[4], 'revoked', '0')
redis.call('EXPIREAT', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], 'fam', ARGV[5], 'state', 'c', 'exp', ARGV[6])
redis.call('EXPIREAT', KEYS[2], ARGV[6])
redis.call('ZADD', KEYS[3], ARGV[8], ARGV[7])
redis.call('EXPIREAT', KEYS[3], ARGV[4])
return 1
";

pub(super) const ROTATE: &str = r"
local revoked = redis.call('HGET', KEYS[3], 'revoked')
if not revoked or revoked == '1' then return {'gone'} end
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'gone'} end
if state == 'r' then
  return {'rotated', redis.call('HGET', KEYS[1], 'at'), redis.call('HGET', KEYS[1], 'sealed')}
end
redis.call('HSET', KEYS[1], 'state', 'r', 'at', ARGV[1], 'sealed', ARGV[3])
redis.call('HSET', KEYS[2], 'fam', ARGV[6], 'state', 'c', 'exp', ARGV[2])
redis.call('EXPIREAT', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
return {'ok'}
";

pub(super) const REVOKE_FAMILY: &str = r"
if redis.call('HGET', KEYS[1], 'revoked') ~= '0' then return 0 end
redis.call('HSET', KEYS[1], 'revoked', '1')
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'WITHSCORES')
for i = 1, #live, 2 do
  local until_ = tonumber(live[i + 1]) + tonumber(ARGV[3])
  redis.call('ZADD', KEYS[3], until_, live[i])
  redis.call('PUBLISH', ARGV[2], until_ .. ' ' .. live[i])
end
redis.call('DEL', KEYS[2])
return #live / 2
";

/// Lockout entry fields: failures, window_end, locked_until (ms), in_flight.
/// ARGV: now_ms, threshold, window_ms, duration_ms. Returns {0} admitted, {1, ms} locked,
/// {2} settling (enough guesses in flight to lock).
pub(super) const LOGIN_BEGIN: &str = r"
local now = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local duration = tonumber(ARGV[4])
for _, key in ipairs(KEYS) do
  local locked = tonumber(redis.call('HGET', key, 'locked_until') or '0')
  if locked > now then return {1, locked - now} end
  local failures = tonumber(redis.call('HGET', key, 'failures') or '0')
  if tonumber(redis.call('HGET', key, 'window_end') or '0') <= now then failures = 0 end
  local in_flight = tonumber(redis.call('HGET', key, 'in_flight') or '0')
  if duration > 0 and failures + in_flight >= threshold then return {2, 1000} end
end
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('HGET', key, 'window_end') or '0') <= now then
    redis.call('HSET', key, 'failures', 0, 'window_end', 0)
  end
  redis.call('HINCRBY', key, 'in_flight', 1)
  if redis.call('PTTL', key) < 60000 then redis.call('PEXPIRE', key, 60000) end
end
return {0, 0}
";

/// ARGV: now_ms, threshold, window_ms, duration_ms, outcome (`fail`, `ok` or `refund`).
/// Returns the lock left in ms (0: none). On `ok` only the first key (the username) has its
/// failures cleared: a valid account must not reset its address's count.
pub(super) const LOGIN_SETTLE: &str = r"
local now = tonumber(ARGV[1])
local threshold = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local duration = tonumber(ARGV[4])
local outcome = ARGV[5]
local left = 0
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('HINCRBY', key, 'in_flight', -1)) < 0 then
    redis.call('HSET', key, 'in_flight', 0)
  end
  local locked = tonumber(redis.call('HGET', key, 'locked_until') or '0')
  if locked > now then
    left = math.max(left, locked - now)
  elseif outcome == 'fail' then
    if tonumber(redis.call('HGET', key, 'window_end') or '0') <= now then
      redis.call('HSET', key, 'failures', 0, 'window_end', now + window)
    end
    local failures = redis.call('HINCRBY', key, 'failures', 1)
    if duration > 0 and failures >= threshold then
      redis.call('HSET', key, 'locked_until', now + duration)
      left = math.max(left, duration)
    end
  elseif outcome == 'ok' and i == 1 then
    redis.call('HSET', key, 'failures', 0)
  end
  local until_ = math.max(tonumber(redis.call('HGET', key, 'window_end') or '0'),
                          tonumber(redis.call('HGET', key, 'locked_until') or '0'))
  redis.call('PEXPIRE', key, math.max(until_ - now, 0) + 60000)
end
return left
";

/// A caller's fleet-wide GCRA timestamp (unix microseconds; Lua numbers are doubles, exact to
/// 2^53, which microseconds stay far below). ARGV: now, arrivals, interval. Arrivals were
/// already let through: they only push the timestamp forward. 0 arrivals only reads it.
pub(super) const RATE_MERGE: &str = r"
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local arrivals = tonumber(ARGV[2])
if arrivals == 0 then return tat end
local now = tonumber(ARGV[1])
if tat < now then tat = now end
tat = tat + arrivals * tonumber(ARGV[3])
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1000)
return tat
";
