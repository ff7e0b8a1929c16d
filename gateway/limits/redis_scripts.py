"""The Lua scripts of `redis_store`: each operation is one script, so it is atomic across every node sharing the
Redis. They compute exactly what `gcra` computes in Python (same formulas, same order of operations on doubles;
numbers cross as strings formatted `%.17g` so that nothing is rounded), checked by tests/limits/test_stores.py.

The time is Redis's own (`TIME`), not the nodes' clocks, unless the caller passes one (tests). A rate limit's key
holds its TAT as the string "SECONDS OFFSET" (`gcra.Cell`: whole seconds and the rest); a concurrency limit's key is a sorted set of holder -> lease expiry, plus the member
`gcra.BLOCK_MEMBER` whose score is the end of a block. Every key written is given an expiry (its state's idle time
plus `gcra.IDLE_GRACE_SECONDS`), so limits nobody uses disappear.
"""

from __future__ import annotations

from gateway.limits import gcra
from gateway.limits.base import PERIOD_SECONDS

PRELUDE = f"""
local PERIOD = {PERIOD_SECONDS!r}
local EPSILON = {gcra.EPSILON!r}
local RETRY_CAP = {gcra.CONCURRENCY_RETRY_SECONDS!r}
local GRACE = {gcra.IDLE_GRACE_SECONDS!r}
local BLOCK = '\\0block'

local function fmt(x)
  return string.format('%.17g', x)
end

-- The time of this call, and its whole seconds and the rest (gcra.split); set by each script with clock().
local NOW, NOW_SEC, NOW_FRAC

local function clock(arg)
  if arg ~= '' then
    local now = tonumber(arg)
    local whole = math.floor(now)
    return now, whole, now - whole
  end
  local t = redis.call('TIME')
  local whole, frac = tonumber(t[1]), tonumber(t[2]) / 1000000
  return whole + frac, whole, frac
end

local function interval(amount)
  return PERIOD / amount
end

-- Milliseconds to keep a key whose state is idle `ahead` seconds from now.
local function keep_ms(ahead)
  return math.ceil((math.max(ahead, 0) + GRACE) * 1000)
end

-- A rate's cell is {{sec, off}} (its TAT, as gcra.Cell); a concurrency limit's
-- {{leases = {{holder = expiry}}, n = live leases, blocked}}.
local function load(key, kind)
  if kind ~= 'concurrency' then
    local value = redis.call('GET', key)
    if not value then
      return {{sec = 0, off = 0}}
    end
    local sec, off = string.match(value, '^(%S+) (%S+)$')
    return {{sec = tonumber(sec), off = tonumber(off)}}
  end
  local cell = {{leases = {{}}, n = 0, blocked = 0}}
  local flat = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(NOW), '+inf', 'WITHSCORES')
  for i = 1, #flat, 2 do
    local member, score = flat[i], tonumber(flat[i + 1])
    if member == BLOCK then
      cell.blocked = score
    else
      cell.leases[member] = score
      cell.n = cell.n + 1
    end
  end
  return cell
end

local function copy(cell)
  if cell.leases == nil then
    return {{sec = cell.sec, off = cell.off}}
  end
  local leases = {{}}
  for holder, expiry in pairs(cell.leases) do
    leases[holder] = expiry
  end
  return {{leases = leases, n = cell.n, blocked = cell.blocked}}
end

local function ahead(cell)
  return (cell.sec - NOW_SEC) + (cell.off - NOW_FRAC)
end

local function set_ahead(cell, value)
  cell.sec, cell.off = NOW_SEC, NOW_FRAC + value
end

local function rate_take(value, amount, cost)
  local new_ahead = math.max(value, 0) + cost * interval(amount)
  if new_ahead > PERIOD + EPSILON then
    return nil, new_ahead - PERIOD
  end
  return new_ahead, 0
end

local function lease_take(cell, amount, holder)
  if cell.blocked > NOW then
    return cell.blocked - NOW
  end
  if cell.leases[holder] ~= nil or cell.n < amount then
    return nil
  end
  local earliest = nil
  for _, expiry in pairs(cell.leases) do
    if earliest == nil or expiry < earliest then
      earliest = expiry
    end
  end
  return math.min(earliest - NOW, RETRY_CAP)
end

-- remaining, reset (as gcra.state)
local function state(cell, kind, amount)
  if kind == 'concurrency' then
    if cell.blocked > NOW then
      return 0, math.max(0, cell.blocked - NOW)
    end
    return math.max(0, amount - cell.n), 0
  end
  local value = ahead(cell)
  local units = math.floor((PERIOD - math.max(value, 0) + EPSILON) / interval(amount))
  return math.min(amount, math.max(0, units)), math.max(value, 0)
end

local function save_rate(key, cell)
  redis.call('SET', key, fmt(cell.sec) .. ' ' .. fmt(cell.off), 'PX', keep_ms(ahead(cell)))
end

local function keep_leases(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #last == 0 then
    return
  end
  redis.call('PEXPIRE', key, keep_ms(tonumber(last[2]) - NOW))
end
"""

# KEYS: one per want. ARGV: now ('' = Redis's time), holder, lease seconds, then kind, amount, cost of each want.
# Returns {ok, index of the refused want (1-based, 0: none), retry_after, too_large, then remaining and reset of
# each want}: the states after taking (ok) or as they stand (refused).
ACQUIRE = (
    PRELUDE
    + """
NOW, NOW_SEC, NOW_FRAC = clock(ARGV[1])
local holder, lease = ARGV[2], tonumber(ARGV[3])
local kinds, amounts, costs = {}, {}, {}
local before, work = {}, {}
for i = 1, #KEYS do
  kinds[i], amounts[i], costs[i] = ARGV[1 + 3 * i], tonumber(ARGV[2 + 3 * i]), tonumber(ARGV[3 + 3 * i])
  local key = KEYS[i]
  if before[key] == nil then
    before[key] = load(key, kinds[i])
    work[key] = copy(before[key])
  end
end

local function answer(ok, index, retry_after, too_large, cells)
  local reply = {ok, index, fmt(retry_after), too_large}
  for i = 1, #KEYS do
    local remaining, reset = state(cells[KEYS[i]], kinds[i], amounts[i])
    reply[#reply + 1] = remaining
    reply[#reply + 1] = fmt(reset)
  end
  return reply
end

for i = 1, #KEYS do
  if costs[i] > amounts[i] then
    return answer(0, i, 0, 1, before)
  end
end
for i = 1, #KEYS do
  local cell = work[KEYS[i]]
  if kinds[i] == 'concurrency' then
    local retry_after = lease_take(cell, amounts[i], holder)
    if retry_after ~= nil then
      return answer(0, i, retry_after, 0, before)
    end
    if cell.leases[holder] == nil then
      cell.n = cell.n + 1
    end
    cell.leases[holder] = NOW + lease
  else
    local new_ahead, retry_after = rate_take(ahead(cell), amounts[i], costs[i])
    if new_ahead == nil then
      return answer(0, i, retry_after, 0, before)
    end
    set_ahead(cell, new_ahead)
  end
end

local saved = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  if saved[key] == nil then
    saved[key] = true
    local cell = work[key]
    if kinds[i] == 'concurrency' then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(NOW))
      redis.call('ZADD', key, fmt(cell.leases[holder]), holder)
      keep_leases(key)
    else
      save_rate(key, cell)
    end
  end
end
return answer(1, 0, 0, 0, work)
"""
)

# KEYS[1]: the limit. ARGV: now, kind, amount, delta (units; negative gives back).
SETTLE = (
    PRELUDE
    + """
NOW, NOW_SEC, NOW_FRAC = clock(ARGV[1])
if ARGV[2] == 'concurrency' then
  return 0
end
local amount, delta = tonumber(ARGV[3]), tonumber(ARGV[4])
local cell = load(KEYS[1], ARGV[2])
set_ahead(cell, math.max(math.max(ahead(cell), 0) + delta * interval(amount), 0))
save_rate(KEYS[1], cell)
return 1
"""
)

# KEYS: concurrency limits. ARGV[1]: the holder whose leases end.
RELEASE = """
for i = 1, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
return #KEYS
"""

# A request's end in one round trip: RELEASE then SETTLE. KEYS: the concurrency limits to release, then the rates to
# correct. ARGV: now, the holder, how many keys are concurrency limits, then kind, amount and delta of each rate.
GIVE_BACK = (
    PRELUDE
    + """
NOW, NOW_SEC, NOW_FRAC = clock(ARGV[1])
local holder, slots = ARGV[2], tonumber(ARGV[3])
for i = 1, slots do
  redis.call('ZREM', KEYS[i], holder)
end
for i = slots + 1, #KEYS do
  local j = 4 + 3 * (i - slots - 1)
  local kind, amount, delta = ARGV[j], tonumber(ARGV[j + 1]), tonumber(ARGV[j + 2])
  local cell = load(KEYS[i], kind)
  set_ahead(cell, math.max(math.max(ahead(cell), 0) + delta * interval(amount), 0))
  save_rate(KEYS[i], cell)
end
return #KEYS
"""
)

# KEYS: the limits. ARGV: now, then kind and amount of each. Returns remaining and reset of each. Writes nothing.
PEEK = (
    PRELUDE
    + """
NOW, NOW_SEC, NOW_FRAC = clock(ARGV[1])
local reply = {}
for i = 1, #KEYS do
  local kind, amount = ARGV[2 * i], tonumber(ARGV[1 + 2 * i])
  local remaining, reset = state(load(KEYS[i], kind), kind, amount)
  reply[#reply + 1] = remaining
  reply[#reply + 1] = fmt(reset)
end
return reply
"""
)

# KEYS[1]: the limit. ARGV: now, kind, seconds during which nothing fits.
BLOCK = (
    PRELUDE
    + """
NOW, NOW_SEC, NOW_FRAC = clock(ARGV[1])
local kind, seconds = ARGV[2], tonumber(ARGV[3])
local key = KEYS[1]
local cell = load(key, kind)
if kind == 'concurrency' then
  redis.call('ZADD', key, fmt(math.max(cell.blocked, NOW + seconds)), BLOCK)
  keep_leases(key)
else
  set_ahead(cell, math.max(ahead(cell), seconds + PERIOD))
  save_rate(key, cell)
end
return 1
"""
)
