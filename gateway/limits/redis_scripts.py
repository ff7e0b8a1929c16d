"""The Lua scripts of `redis_store`: each operation is one script, so it is atomic across every node sharing the
Redis. They compute exactly what `gcra` computes in Python (same formulas, same order of operations on doubles;
numbers cross as strings formatted `%.17g` so that nothing is rounded), checked by tests/limits/test_stores.py.

The time is Redis's own (`TIME`), not the nodes' clocks, unless the caller passes one (tests). A rate limit's key
holds its TAT as a string; a concurrency limit's key is a sorted set of holder -> lease expiry, plus the member
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

local function clock(arg)
  if arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local function interval(amount)
  return PERIOD / amount
end

local function keep_ms(idle, now)
  return math.ceil((math.max(idle, now) - now + GRACE) * 1000)
end

-- A rate's cell is {{tat}}; a concurrency limit's {{leases = {{holder = expiry}}, n = live leases, blocked}}.
local function load(key, kind, now)
  if kind ~= 'concurrency' then
    return {{tat = tonumber(redis.call('GET', key)) or 0}}
  end
  local cell = {{leases = {{}}, n = 0, blocked = 0}}
  local flat = redis.call('ZRANGEBYSCORE', key, '(' .. fmt(now), '+inf', 'WITHSCORES')
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
    return {{tat = cell.tat}}
  end
  local leases = {{}}
  for holder, expiry in pairs(cell.leases) do
    leases[holder] = expiry
  end
  return {{leases = leases, n = cell.n, blocked = cell.blocked}}
end

local function rate_take(tat, amount, cost, now)
  local new_tat = math.max(tat, now) + cost * interval(amount)
  if new_tat - now > PERIOD + EPSILON then
    return nil, new_tat - now - PERIOD
  end
  return new_tat, 0
end

local function lease_take(cell, amount, holder, now)
  if cell.blocked > now then
    return cell.blocked - now
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
  return math.min(earliest - now, RETRY_CAP)
end

-- remaining, reset (as gcra.state)
local function state(cell, kind, amount, now)
  if kind == 'concurrency' then
    if cell.blocked > now then
      return 0, math.max(0, cell.blocked - now)
    end
    return math.max(0, amount - cell.n), 0
  end
  local ahead = math.max(0, cell.tat - now)
  local units = math.floor((PERIOD - ahead + EPSILON) / interval(amount))
  return math.min(amount, math.max(0, units)), math.max(0, cell.tat - now)
end

local function save_rate(key, tat, now)
  redis.call('SET', key, fmt(tat), 'PX', keep_ms(tat, now))
end

local function keep_leases(key, now)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #last == 0 then
    return
  end
  redis.call('PEXPIRE', key, keep_ms(tonumber(last[2]), now))
end
"""

# KEYS: one per want. ARGV: now ('' = Redis's time), holder, lease seconds, then kind, amount, cost of each want.
# Returns {ok, index of the refused want (1-based, 0: none), retry_after, too_large, then remaining and reset of
# each want}: the states after taking (ok) or as they stand (refused).
ACQUIRE = (
    PRELUDE
    + """
local now = clock(ARGV[1])
local holder, lease = ARGV[2], tonumber(ARGV[3])
local kinds, amounts, costs = {}, {}, {}
local before, work = {}, {}
for i = 1, #KEYS do
  kinds[i], amounts[i], costs[i] = ARGV[1 + 3 * i], tonumber(ARGV[2 + 3 * i]), tonumber(ARGV[3 + 3 * i])
  local key = KEYS[i]
  if before[key] == nil then
    before[key] = load(key, kinds[i], now)
    work[key] = copy(before[key])
  end
end

local function answer(ok, index, retry_after, too_large, cells)
  local reply = {ok, index, fmt(retry_after), too_large}
  for i = 1, #KEYS do
    local remaining, reset = state(cells[KEYS[i]], kinds[i], amounts[i], now)
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
    local retry_after = lease_take(cell, amounts[i], holder, now)
    if retry_after ~= nil then
      return answer(0, i, retry_after, 0, before)
    end
    if cell.leases[holder] == nil then
      cell.n = cell.n + 1
    end
    cell.leases[holder] = now + lease
  else
    local tat, retry_after = rate_take(cell.tat, amounts[i], costs[i], now)
    if tat == nil then
      return answer(0, i, retry_after, 0, before)
    end
    cell.tat = tat
  end
end

local saved = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  if saved[key] == nil then
    saved[key] = true
    local cell = work[key]
    if kinds[i] == 'concurrency' then
      redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
      redis.call('ZADD', key, fmt(cell.leases[holder]), holder)
      keep_leases(key, now)
    else
      save_rate(key, cell.tat, now)
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
local now = clock(ARGV[1])
if ARGV[2] == 'concurrency' then
  return 0
end
local amount, delta = tonumber(ARGV[3]), tonumber(ARGV[4])
local tat = load(KEYS[1], ARGV[2], now).tat
save_rate(KEYS[1], math.max(math.max(tat, now) + delta * interval(amount), now), now)
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

# KEYS: the limits. ARGV: now, then kind and amount of each. Returns remaining and reset of each. Writes nothing.
PEEK = (
    PRELUDE
    + """
local now = clock(ARGV[1])
local reply = {}
for i = 1, #KEYS do
  local kind, amount = ARGV[2 * i], tonumber(ARGV[1 + 2 * i])
  local remaining, reset = state(load(KEYS[i], kind, now), kind, amount, now)
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
local now = clock(ARGV[1])
local kind, seconds = ARGV[2], tonumber(ARGV[3])
local key = KEYS[1]
if kind == 'concurrency' then
  local blocked = math.max(load(key, kind, now).blocked, now + seconds)
  redis.call('ZADD', key, fmt(blocked), BLOCK)
  keep_leases(key, now)
else
  save_rate(key, math.max(load(key, kind, now).tat, now + seconds + PERIOD), now)
end
return 1
"""
)
