//! The Lua scripts: each runs atomically on the server and touches the keys of one hash slot (the
//! caller's keys share a hash tag), so that they work on Redis Cluster too.
//!
//! Times are the server's clock (`TIME`), in microseconds for the limiter and milliseconds for
//! breakers, unless a test passes its own.

use std::sync::LazyLock;

use redis::Script;

/// GCRA for `want` permits at most (a lease), on one key holding the theoretical arrival time.
///
/// KEYS[1]: the limit's key. ARGV: now in µs (empty: the server's `TIME`), the emission interval
/// in µs, the burst tolerance in µs, permits wanted, the key's extra lifetime in ms.
/// Returns `{granted, wait_us}`: `granted` permits (0 to `want`), or none and the wait until one.
pub(super) static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local emission = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then
  return {0, allow_at - now}
end
local n = math.floor((now - allow_at) / emission) + 1
if n > want then n = want end
tat = tat + n * emission
local ttl = math.ceil((tat - now) / 1000) + tonumber(ARGV[5])
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl)
return {n, 0}
",
    )
});

/// A throttled hint: no permit of the limit on one key before `now + pause`, for the fleet.
///
/// KEYS[1]: the limit's key. ARGV: now in µs (empty: the server's `TIME`), the pause in µs, the
/// burst tolerance in µs, the key's extra lifetime in ms. Moves the theoretical arrival time to
/// at least `now + pause + tolerance` (a shorter pause never shortens a longer one). Returns 1.
pub(super) static PAUSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local target = now + tonumber(ARGV[2]) + tonumber(ARGV[3])
if tat < target then
  local ttl = math.ceil((target - now) / 1000) + tonumber(ARGV[4])
  redis.call('SET', KEYS[1], string.format('%.0f', target), 'PX', ttl)
end
return 1
",
    )
});

/// A replica tripped a breaker locally: counted toward the quorum, and the breaker opened for the
/// fleet once `quorum` replicas tripped it within one cooldown.
///
/// KEYS[1]: the name's open set (member -> open until, ms); KEYS[2]: the member's trips (replica
/// -> when, ms). ARGV: member, replica, cooldown ms, quorum. Returns `{opened, trips}`.
pub(super) static TRIP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cooldown = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - cooldown)
redis.call('ZADD', KEYS[2], now, ARGV[2])
redis.call('PEXPIRE', KEYS[2], cooldown)
local n = redis.call('ZCARD', KEYS[2])
if n < tonumber(ARGV[4]) then
  return {0, n}
end
redis.call('ZADD', KEYS[1], now + cooldown, ARGV[1])
if redis.call('PTTL', KEYS[1]) < cooldown then
  redis.call('PEXPIRE', KEYS[1], cooldown)
end
return {1, n}
",
    )
});

/// A probe failed on the replica holding the fleet's probe: the breaker opens for the fleet again
/// (no quorum: the prober speaks for it), and the replica's probe slots are freed.
///
/// KEYS[1]: the open set; KEYS[2..]: the member's probe slots. ARGV: member, replica, cooldown ms.
pub(super) static REOPEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cooldown = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + cooldown, ARGV[1])
if redis.call('PTTL', KEYS[1]) < cooldown then
  redis.call('PEXPIRE', KEYS[1], cooldown)
end
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[2] then redis.call('DEL', KEYS[i]) end
end
return 1
",
    )
});

/// A probe closed a breaker: the fleet's breaker is closed, its trips forgotten, and the
/// replica's probe slots freed.
///
/// KEYS[1]: the open set; KEYS[2]: the member's trips; KEYS[3..]: its probe slots. ARGV: member,
/// replica.
pub(super) static CLOSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
for i = 3, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[2] then redis.call('DEL', KEYS[i]) end
end
return 1
",
    )
});

/// Probe slots: each a key set with NX and an expiry, its value the replica that holds it.
///
/// KEYS: the member's slots. ARGV: replica, lease ms, slots wanted (0: free every slot held).
/// Renews the slots the replica holds, takes free ones up to `wanted`, and returns how many it
/// holds now.
pub(super) static PROBES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local want = tonumber(ARGV[3])
local held = 0
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v == ARGV[1] then
    if want == 0 then
      redis.call('DEL', KEYS[i])
    else
      redis.call('PEXPIRE', KEYS[i], ARGV[2])
      held = held + 1
    end
  end
end
for i = 1, #KEYS do
  if held >= want then break end
  if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) then
    held = held + 1
  end
end
return held
",
    )
});

/// The members of a name whose breaker is open for the fleet, the expired ones dropped.
///
/// KEYS[1]: the open set.
pub(super) static OPEN_MEMBERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
",
    )
});

/// A replica's retry spends and refunds since its last sync, applied to the fleet's budget.
///
/// KEYS[1]: the budget's key (tokens, in thousandths). ARGV: capacity, deposits, spends (all in
/// thousandths), lifetime ms. Returns the fleet's tokens now.
pub(super) static BUDGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local cap = tonumber(ARGV[1])
local tokens = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
tokens = tokens + tonumber(ARGV[2])
if tokens > cap then tokens = cap end
tokens = tokens - tonumber(ARGV[3])
if tokens < 0 then tokens = 0 end
redis.call('SET', KEYS[1], string.format('%.0f', tokens), 'PX', ARGV[4])
return tokens
",
    )
});
