#include "limits/redis/internal/scripts.h"

#include <stdexcept>
#include <string>

namespace concurry {
namespace limits_internal {
namespace redis {
namespace {

// What every script starts with: number formatting, the clock, waking waiters.
constexpr char kBase[] = R"lua(
local base = KEYS[1]
local call, floor = redis.call, math.floor  -- Locals: each global lookup costs a table search.
local MAXW = 9007199254740991
-- Lua's own number-to-string keeps 14 digits; TATs in µs need 16.
local function fmt(x)
  if x == floor(x) and x > -9e18 and x < 9e18 then return string.format('%d', x) end
  return string.format('%.17g', x)
end
local function clock()
  local t = call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- A new id from counter `key` ('acq': leases, 'seq': tickets). A counter starts at the server's
-- time in µs, so that ids given out after Redis lost its data (a restart without persistence)
-- never repeat older ones still held. 'acq' also counts the acquisitions: from stats field 'a0'.
local function NextId(key, now)
  local id = call('INCR', base .. key)
  if id > 1 then return id end
  call('SET', base .. key, fmt(now))  -- Created just now.
  if key == 'acq' then call('HSET', base .. 'stats', 'a0', fmt(now - 1)) end
  return now
end
local function Wake()
  if call('ZCARD', base .. 'qexp') > 0 then call('PUBLISH', base .. 'wake', '1') end
end
local function CountMissing(v)
  if tonumber(v) > 0 then call('HINCRBY', base .. 'stats', 'mu', v) end
end
)lua";

// What the scripts that touch limits add: the items and their state. The five algorithms (kRates)
// mirror their classes in limits/internal/rate_algorithms.{h,cc} with µs for ns (Lua numbers are
// doubles: times since the epoch in µs are exact integers). An item's state is loaded once (Load),
// changed in the item's table, and written back (Save) when it changed. Each script carries only
// the parts it uses: Redis runs the whole script, definitions included, at every call.
constexpr char kState[] = R"lua(
local function items(p, n)
  local list = {}
  for j = 0, n - 1 do
    local q = p + j * 7
    list[j + 1] = {i = ARGV[q], a = ARGV[q + 1], cap = tonumber(ARGV[q + 2]),
                   w = tonumber(ARGV[q + 3]), b = tonumber(ARGV[q + 4]),
                   tau = tonumber(ARGV[q + 5]), n = tonumber(ARGV[q + 6])}
  end
  return list
end
local function entry(e)
  local sp = string.find(e, ' ')
  return tonumber(string.sub(e, 1, sp - 1)), tonumber(string.sub(e, sp + 1))
end
local function Load(it)
  if it.a == 'r' then
    it.u = tonumber(call('HGET', base .. 'use', it.i)) or 0
    return
  end
  it.k = base .. 'rate:' .. it.i
  if it.a == 'g' then
    it.t = tonumber(call('GET', it.k))
    return
  end
  local v = call('HMGET', it.k, 't', 'l', 'o', 'k', 'i', 'n', 's')
  it.t = tonumber(v[1])
  it.l, it.o, it.lk = tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0
  it.fi, it.cnt = tonumber(v[5]), tonumber(v[6]) or 0
  it.sl = tonumber(v[7]) or -math.huge
  if it.a == 's' then
    it.log = it.k .. ':log'
    it.size = call('LLEN', it.log)
    it.slots = math.max(1, math.min(4096, math.ceil(it.cap)))
    it.merge = 0
    if it.cap > 4096 then it.merge = math.ceil(it.w / 4096) end
  end
end
-- Writes the item's state back when it changed. The keys expire a second after the state stops
-- mattering (a full bucket, an empty window: what no key means), so that a set nobody uses any
-- more leaves no rate state behind.
local function Save(it, now)
  if not it.dirty then return end
  it.dirty = false
  local a, stale = it.a, now
  if a == 'g' then
    -- One word: a string key, written with its expiry in one command.
    local ms = math.min(math.ceil(math.max(0, it.t - now) / 1000), 1e13) + 1000
    call('SET', it.k, fmt(it.t), 'PX', fmt(ms))
    return
  elseif a == 'l' then
    if it.l <= 0 then call('DEL', it.k) return end
    call('HSET', it.k, 'l', fmt(it.l), 'o', fmt(it.o), 'k', fmt(it.lk))
    stale = it.o + math.ceil((it.lk + it.l) * it.w / it.cap)
  elseif a == 'f' then
    call('HSET', it.k, 'i', fmt(it.fi), 'n', fmt(it.cnt))
    stale = (it.fi + 1) * it.w
  elseif a == 's' then
    if it.size == 0 then call('DEL', it.k) return end
    if it.sl > -math.huge then
      call('HSET', it.k, 'n', fmt(it.cnt), 's', fmt(it.sl))
    else
      call('HSET', it.k, 'n', fmt(it.cnt))
    end
    stale = entry(call('LINDEX', it.log, -1)) + it.w
  else
    return
  end
  local ms = fmt(math.min(math.ceil(math.max(0, stale - now) / 1000), 1e13) + 1000)
  call('PEXPIRE', it.k, ms)
  if a == 's' then call('PEXPIRE', it.log, ms) end
end
-- GCRA: cost = floor(amount / capacity * window) clamped to [1, tau].
local function Cost(it, amount)
  local c = floor(amount / it.cap * it.w)
  if not (c < it.tau) then return it.tau end
  if c < 1 then return 1 end
  return c
end
local function GcraBase(it, now)
  if it.t ~= nil and it.t > now then return it.t end
  return now
end
)lua";

// The algorithms' decisions and changes: what take, charge and stats add.
constexpr char kRates[] = R"lua(
-- LeakyBucket: the k-th token leaks ceil(k * W / C) after the origin.
local function Leak(it, now)
  if it.l <= 0 then it.l, it.o, it.lk = 0, now, 0 return end
  if now <= it.o then return end
  local total = floor((now - it.o) * it.cap / it.w)
  if total <= it.lk then return end
  if total - it.lk >= it.l then it.l, it.o, it.lk = 0, now, 0 else
    it.l, it.lk = it.l - (total - it.lk), total end
  it.dirty = true
end
-- FixedWindow: window i covers [i * W, (i + 1) * W) since the epoch.
local function Roll(it, now)
  local index = floor(now / it.w)
  if it.fi == nil or index > it.fi then it.fi, it.cnt, it.dirty = index, 0, true end
end
-- SlidingWindow: a log of (time, amount), entries at or before now - W expire.
local function Expire(it, now)
  while it.size > 0 do
    local t, a = entry(call('LINDEX', it.log, 0))
    if now - t < it.w then break end
    it.cnt, it.size, it.dirty = it.cnt - a, it.size - 1, true
    call('LPOP', it.log)
  end
  if it.size == 0 and it.cnt ~= 0 then it.cnt, it.dirty = 0, true end
end
local function SliceLast(it, t) return floor(t / it.merge) * it.merge + (it.merge - 1) end
local function Record(it, now, amount)
  it.cnt, it.dirty = it.cnt + amount, true
  if it.size > 0 then
    local t, a = entry(call('LINDEX', it.log, -1))
    if t >= now or now <= it.sl or it.size == it.slots then
      if t < now then
        t = now
        if it.merge > 0 and now > it.sl then it.sl = SliceLast(it, now) end
      end
      call('LSET', it.log, -1, fmt(t) .. ' ' .. fmt(a + amount))
      return
    end
  end
  call('RPUSH', it.log, fmt(now) .. ' ' .. fmt(amount))
  it.size = it.size + 1
  if it.merge > 0 then it.sl = SliceLast(it, now) end
end
-- The µs until the item's amount fits (0: now), -1 for a resource that is short.
local function Wait(it, now)
  local a = it.a
  if a == 'r' then
    if it.u + it.n > it.cap then return -1 end
    return 0
  elseif a == 'g' then
    local w = (GcraBase(it, now) - now) - (it.tau - Cost(it, it.n))
    if w > 0 then return math.ceil(w) end
    return 0
  elseif a == 'l' then
    Leak(it, now)
    local excess = (it.l - it.b) + it.n
    if excess <= 0 then return 0 end
    local at = it.o + math.ceil((it.lk + math.ceil(excess)) * it.w / it.cap)
    return math.max(math.ceil(at - now), 1)
  elseif a == 'f' then
    Roll(it, now)
    if (it.cnt - it.cap) + it.n <= 0 then return 0 end
    return math.max(math.ceil((it.fi + 1) * it.w - now), 1)
  end
  Expire(it, now)
  local excess = (it.cnt - it.cap) + it.n
  if excess <= 0 then return 0 end
  local log = call('LRANGE', it.log, 0, -1)
  for _, e in ipairs(log) do
    local t, x = entry(e)
    excess = excess - x
    if excess <= 0 then return math.max(math.ceil(t - now + it.w), 1) end
  end
  return math.ceil(it.w)
end
-- Takes the item's amount at `now` (Wait() returned 0 at the same `now`).
local function Take(it, now)
  local a = it.a
  if a == 'g' then it.t = GcraBase(it, now) + Cost(it, it.n)
  elseif a == 'l' then it.l = it.l + it.n
  elseif a == 'f' then it.cnt = it.cnt + it.n
  elseif a == 's' then Record(it, now, it.n) return end
  it.dirty = true
end
-- Charges `x` at `now` whether or not it fits (over-use reported after the fact).
local function Charge(it, now, x)
  local a = it.a
  if a == 'g' then it.t = GcraBase(it, now) + math.max(1, floor(x / it.cap * it.w))
  elseif a == 'l' then Leak(it, now) it.l = math.min(it.l + x, MAXW)
  elseif a == 'f' then Roll(it, now) it.cnt = math.min(it.cnt + x, MAXW)
  elseif a == 's' then
    Expire(it, now)
    x = math.min(x, MAXW - it.cnt)
    if x > 0 then Record(it, now, x) end
    return
  else return end
  it.dirty = true
end
)lua";

// Resource units and leases: what take, release and stats add.
constexpr char kLeases[] = R"lua(
local function AddUse(index, delta)
  local left = (tonumber(call('HGET', base .. 'use', index)) or 0) + delta
  if left > 0 then call('HSET', base .. 'use', index, fmt(left))
  else call('HDEL', base .. 'use', index) end
end
-- Gives back the units of lease `id` and deletes it; returns whether it held any.
local function DropLease(id)
  local lk = base .. 'lease:' .. id
  local units = call('HGETALL', lk)
  for j = 1, #units, 2 do AddUse(units[j], -tonumber(units[j + 1])) end
  if #units > 0 then call('DEL', lk) end
  return #units > 0
end
-- Reaps up to 100 expired leases (their units come back) and tickets; returns whether waiters
-- should look again.
local function Reap(now)
  local changed = false
  local ids = call('ZRANGEBYSCORE', base .. 'leases', '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(ids) do
    if DropLease(id) then
      call('HINCRBY', base .. 'stats', 'rh', 1)
      changed = true
    end
    call('ZREM', base .. 'leases', id)
  end
  local tickets = call('ZRANGEBYSCORE', base .. 'qexp', '-inf', now, 'LIMIT', 0, 100)
  for _, t in ipairs(tickets) do
    call('ZREM', base .. 'qexp', t)
    if call('ZREM', base .. 'queue', t) == 1 then changed = true end
  end
  return changed
end
)lua";

constexpr char kTake[] = R"lua(
local ttl, fifo, exempt = tonumber(ARGV[1]), ARGV[2] == '1', ARGV[3] == '1'
local ticket, mode = tonumber(ARGV[4]), ARGV[5]
local list = items(7, tonumber(ARGV[6]))
-- The set's definition: written back when Redis lost it (a restart without persistence), so that
-- a host opening the name with other limits is told; a different one refuses the take.
local def = ARGV[7 + #list * 7]
if def ~= nil and def ~= '' then
  local known = call('GET', base .. 'def')
  if not known then call('SET', base .. 'def', def)
  elseif known ~= def then return {-3, known, 0} end
end
local now = clock()
local queue, qexp = base .. 'queue', base .. 'qexp'
local queued = fifo and not exempt
local notify = false
-- A waiter whose ticket expired (it could not renew in time) gets its place back.
if ticket > 0 and mode == '0' and queued and not call('ZSCORE', queue, ticket) then
  call('ZADD', queue, ticket, ticket)
end
-- The µs until every item fits (0: now), -1 when only a release or a new queue head helps.
local function Check()
  if queued then
    local head = call('ZRANGE', queue, 0, 0)[1]
    if head ~= nil and tonumber(head) ~= ticket then return -1 end
  end
  local wait = 0
  for _, it in ipairs(list) do
    Load(it)
    -- Kept below 2^53 µs (as the in-process engine saturates): Redis turns a reply beyond int64
    -- into INT64_MIN, which would read as "no wait".
    local w = math.min(Wait(it, now), MAXW)
    if w < 0 or (wait >= 0 and w > wait) then wait = w end
  end
  return wait
end
local wait = Check()
-- What dead holders and waiters left behind is reaped when it may be in the way: when the
-- request cannot go. Bookkeeping (leaks, expiries, window roll-over) is kept either way.
if wait ~= 0 then
  for _, it in ipairs(list) do Save(it, now) end
  if Reap(now) then
    notify = true
    wait = Check()
  end
  if wait < 0 then
    -- Waiting for a release or a new queue head, which the expiry of a lease or ticket whose
    -- owner died also brings: try again when the first one expires.
    local first = math.huge
    for _, key in ipairs({base .. 'leases', qexp}) do
      local e = call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
      if e then first = math.min(first, tonumber(e)) end
    end
    if first < math.huge then wait = math.max(1, math.ceil(first - now)) end
  end
end
if wait == 0 then
  -- A lease for resource units (a string: Lua's own concatenation would round the number).
  local id = fmt(NextId('acq', now))
  local lease = '0'
  local units = {}  -- The lease's fields: index, units, ...
  for _, it in ipairs(list) do
    if it.a == 'r' then
      -- it.u is the units in use as Check() just read them (after any reaping).
      local left = it.u + it.n
      if left > 0 then call('HSET', base .. 'use', it.i, fmt(left))
      else call('HDEL', base .. 'use', it.i) end
      units[#units + 1] = it.i
      units[#units + 1] = fmt(it.n)
    else
      Take(it, now)
      Save(it, now)
    end
  end
  if #units > 0 then
    lease = id
    call('ZADD', base .. 'leases', now + ttl, lease)
    call('HSET', base .. 'lease:' .. lease, unpack(units))
  end
  if ticket > 0 then
    call('ZREM', qexp, ticket)
    if call('ZREM', queue, ticket) == 1 then notify = true end
  end
  if notify then Wake() end
  return {0, lease, now}
end
for _, it in ipairs(list) do Save(it, now) end
if mode == '0' then
  if ticket == 0 then ticket = NextId('seq', now) end
  call('ZADD', qexp, now + ttl, ticket)
  if queued then call('ZADD', queue, ticket, ticket) end
else
  if ticket > 0 then
    call('ZREM', qexp, ticket)
    if call('ZREM', queue, ticket) == 1 then notify = true end
  end
  ticket = 0
  if mode == '2' then call('HINCRBY', base .. 'stats', 'to', 1) end
end
if notify then Wake() end
return {wait, ticket, now}
)lua";

constexpr char kRelease[] = R"lua(
local lease = ARGV[1]
CountMissing(ARGV[2])
local list = items(5, tonumber(ARGV[4]))
local notify = false
local live = 1
if lease ~= '0' then
  live = call('ZREM', base .. 'leases', lease)
  if live == 1 and DropLease(lease) then notify = true end
end
if #list > 0 then
  local now = clock()
  for _, it in ipairs(list) do
    Load(it)
    if it.t ~= nil and it.t > now then
      it.t, it.dirty = math.max(now, it.t - Cost(it, it.n)), true
      Save(it, now)
    end
  end
  notify = true
end
if notify then Wake() end
return live
)lua";

constexpr char kCharge[] = R"lua(
CountMissing(ARGV[1])
local list = items(3, tonumber(ARGV[2]))
local now = clock()
for _, it in ipairs(list) do
  Load(it)
  Charge(it, now, it.n)
  Save(it, now)
end
call('HINCRBY', base .. 'stats', 'ou', 1)
return now
)lua";

constexpr char kRenew[] = R"lua(
local expiry = clock() + tonumber(ARGV[1])
local lost = {}
for j = 2, #ARGV do
  local id = string.sub(ARGV[j], 2)
  local key = base .. 'leases'
  if string.sub(ARGV[j], 1, 1) == 'T' then key = base .. 'qexp' end
  if call('ZSCORE', key, id) then
    call('ZADD', key, expiry, id)
  else
    lost[#lost + 1] = ARGV[j]
  end
end
return lost
)lua";

constexpr char kLeave[] = R"lua(
local ticket = ARGV[1]
local present = call('ZREM', base .. 'qexp', ticket)
local head = call('ZREM', base .. 'queue', ticket)
if ARGV[2] == '1' then call('HINCRBY', base .. 'stats', 'to', 1) end
if present == 1 or head == 1 then Wake() end
return present
)lua";

constexpr char kStats[] = R"lua(
CountMissing(ARGV[1])
local list = items(3, tonumber(ARGV[2]))
local now = clock()
if Reap(now) then Wake() end
local s = call('HMGET', base .. 'stats', 'a0', 'to', 'mu', 'ou', 'rh')
local acq = tonumber(call('GET', base .. 'acq'))
local out = {fmt(now), '0'}
if acq and s[1] then out[2] = fmt(acq - tonumber(s[1])) end
for j = 2, 5 do out[#out + 1] = s[j] or '0' end
out[#out + 1] = fmt(call('ZCARD', base .. 'qexp'))
out[#out + 1] = fmt(call('ZCARD', base .. 'leases'))
for _, it in ipairs(list) do
  Load(it)
  local a = it.a
  local used, x, y = 0, '', ''
  if a == 'r' then
    used = it.u
  elseif a == 'g' then
    if it.t ~= nil then
      x = fmt(it.t)
      if it.t > now then used = it.b - math.max(0, it.b * (1 - (it.t - now) / it.tau)) end
    end
  elseif a == 'l' then
    Leak(it, now)
    used = it.l
    x = fmt(used)
  elseif a == 'f' then
    Roll(it, now)
    used = it.cnt
    x, y = fmt(floor(now / it.w) * it.w), fmt(used)
  else
    Expire(it, now)
    used = it.cnt
    x, y = fmt(now - it.w), fmt(used)
  end
  Save(it, now)
  out[#out + 1] = fmt(used)
  out[#out + 1] = x
  out[#out + 1] = y
end
return out
)lua";

}  // namespace

const std::string& TakeScript() {
  static const std::string* const script =
      new std::string(std::string(kBase) + kState + kRates + kLeases + kTake);
  return *script;
}

const std::string& ReleaseScript() {
  static const std::string* const script =
      new std::string(std::string(kBase) + kState + kLeases + kRelease);
  return *script;
}

const std::string& ChargeScript() {
  static const std::string* const script =
      new std::string(std::string(kBase) + kState + kRates + kCharge);
  return *script;
}

const std::string& RenewScript() {
  static const std::string* const script = new std::string(std::string(kBase) + kRenew);
  return *script;
}

const std::string& LeaveScript() {
  static const std::string* const script = new std::string(std::string(kBase) + kLeave);
  return *script;
}

const std::string& StatsScript() {
  static const std::string* const script =
      new std::string(std::string(kBase) + kState + kRates + kLeases + kStats);
  return *script;
}

namespace {

// Put right after kBase by WithTestClock(): the clock is the last ARGV, and the commands that set
// or drop an expiry go through a wrapper that keeps expiries on that clock (see scripts.h). The
// later pieces see these locals instead of kBase's.
constexpr char kTestClock[] = R"lua(
local redis_call = call
local test_now = tonumber(ARGV[#ARGV])
local test_expiry = base .. 'test:expiry'
local function clock() return test_now end
do
  local recorded = redis_call('HGETALL', test_expiry)
  for j = 1, #recorded, 2 do
    if test_now > tonumber(recorded[j + 1]) then
      redis_call('DEL', recorded[j])
      redis_call('HDEL', test_expiry, recorded[j])
    end
  end
end
local function expire_at(key, ms)
  redis_call('HSET', test_expiry, key, string.format('%d', test_now + tonumber(ms) * 1000))
end
call = function(command, ...)
  local args = {...}
  if command == 'PEXPIRE' then
    if redis_call('EXISTS', args[1]) == 0 then return 0 end
    expire_at(args[1], args[2])
    return 1
  elseif command == 'SET' then
    local reply = redis_call('SET', args[1], args[2])
    if args[3] == 'PX' then expire_at(args[1], args[4])
    else redis_call('HDEL', test_expiry, args[1]) end
    return reply
  elseif command == 'DEL' then
    for _, key in ipairs(args) do redis_call('HDEL', test_expiry, key) end
  end
  return redis_call(command, ...)
end
)lua";

}  // namespace

std::string WithTestClock(const std::string& script) {
  const std::string base(kBase);
  if (script.compare(0, base.size(), base) != 0 || script == RenewScript()) {
    throw std::invalid_argument("WithTestClock: not a script of limits/redis/internal/scripts.h");
  }
  return base + kTestClock + script.substr(base.size());
}

}  // namespace redis
}  // namespace limits_internal
}  // namespace concurry
