package quota

import "github.com/redis/go-redis/v9"

// limiterLua is the whole limiter, the Lua function check(). checkScript runs it for one
// check (one EVALSHA, keys and arguments below); admitScript runs it after authenticating.
//
// Keys:
//   - KEYS[1]: the sliding-window log, a sorted set (member = request id, score = Redis time
//     in µs);
//   - KEYS[2]: the day counter, a hash {d = UTC day number, n = accepted resolves that day};
//     touched only when a quota applies or the request counts, so other callers pass one key.
//
// Arguments:
//   - ARGV[1]: per-window limit (0 = unlimited: the log is neither read nor written);
//   - ARGV[2]: window length in µs;
//   - ARGV[3]: the member to record when admitted;
//   - ARGV[4]: daily quota (<0 = none);
//   - ARGV[5]: "1" when this request counts against the daily quota (counted with or without
//     a quota, so that daily_used is always true);
//   - ARGV[6]: "" in production; tests pass a fixed time in µs to probe exact boundaries.
//
// Reply: {allowed, code, now_us, log_count, slot_free_us, day_used, day}, where code 0 =
// admitted, 1 = per-window limit, 2 = daily quota; slot_free_us is when the entry whose leaving
// frees the next slot leaves the window (0 when unlimited); day_used is -1 when the day
// counter was not read.
// Only integers: Lua prints numbers with 14 significant digits and a time in µs has 16, which
// is also why scores are written with %d (an integral double to a C long: exact, and integer
// formatting, where %.0f or a number handed to redis.call, which Redis prints with %.17g, cost
// a floating-point conversion each: a tenth of the script's instructions with five of them).
//
// Both budgets are checked before either is written, so a rejected request records nothing.
// The window is (now - window, now]: an entry leaves exactly at score + window.
const limiterLua = `
local function check(LK, DK, limit, win, member, quota, countDay, fixed)
local now, sec
if fixed ~= '' then
  now = tonumber(fixed)
  sec = math.floor(now / 1000000)
else
  -- Strings become numbers by arithmetic (x + 0) in the limiter's scripts, not by
  -- tonumber(x): Lua 5.1's tonumber parses its argument twice (a test, then the conversion),
  -- with strtod each time, a few hundred instructions per call (docs/benchmarks.md).
  local t = redis.call('TIME')
  sec = t[1] + 0
  now = sec * 1000000 + t[2]
end
local today = math.floor(sec / 86400)

local count = 0
if limit > 0 then
  redis.call('ZREMRANGEBYSCORE', LK, '-inf', string.format('%d', now - win))
  count = redis.call('ZCARD', LK)
end
local used, ofToday = -1, false
if quota >= 0 or countDay then
  used = 0
  local h = redis.call('HMGET', DK, 'd', 'n')
  if h[1] and h[1] + 0 == today then used, ofToday = (h[2] or 0) + 0, true end
end

-- With c entries logged, the next slot frees when entry number c - limit (0-based, oldest
-- first) leaves; that is the oldest one unless the limit was lowered below the log's size.
local function slotFree(c)
  if limit <= 0 then return 0 end
  if c == 0 then return now end
  local i = c - limit
  if i < 0 then i = 0 end
  local is = '0'
  if i > 0 then is = string.format('%d', i) end
  local e = redis.call('ZRANGE', LK, is, is, 'WITHSCORES')
  return e[2] + win
end

if limit > 0 and count >= limit then
  return {0, 1, now, count, slotFree(count), used, today}
end
if countDay and quota >= 0 and used >= quota then
  return {0, 2, now, count, slotFree(count), used, today}
end
if limit > 0 then
  redis.call('ZADD', LK, string.format('%d', now), member)
  redis.call('PEXPIRE', LK, string.format('%d', math.ceil(win / 1000)))
  count = count + 1
end
if countDay then
  used = used + 1
  redis.call('HSET', DK, 'd', string.format('%d', today), 'n', string.format('%d', used))
  -- The expiry only with the day's first count: a counter of today has it (DayLua says why).
  if not ofToday then
    redis.call('EXPIREAT', DK, string.format('%d', (today + 1) * 86400 + 3600))
  end
end
local free = 0
if count == 1 then free = now + win else free = slotFree(count) end
return {1, 0, now, count, free, used, today}
end
`

var checkScript = redis.NewScript(limiterLua + `
return check(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), ARGV[5] == '1', ARGV[6])
`)

// refundScript undoes an admission: it removes the log entry (ARGV[1], "" = keep it) and gives
// back one unit of the day counter when it still counts the day of the admission (ARGV[2],
// "" = keep it). A refund after midnight gives nothing back: the new day started from zero.
var refundScript = redis.NewScript(`
if ARGV[1] ~= '' then redis.call('ZREM', KEYS[1], ARGV[1]) end
if ARGV[2] ~= '' then
  local h = redis.call('HMGET', KEYS[2], 'd', 'n')
  local n = tonumber(h[2])
  if tonumber(h[1]) == tonumber(ARGV[2]) and n and n > 0 then
    redis.call('HINCRBY', KEYS[2], 'n', -1)
  end
end
return 0
`)

// dayUsedScript reads the day counter against Redis time: a counter of an earlier day reads 0.
var dayUsedScript = redis.NewScript(`
local t = redis.call('TIME')
local today = math.floor(tonumber(t[1]) / 86400)
local h = redis.call('HMGET', KEYS[1], 'd', 'n')
if tonumber(h[1]) == today then return tonumber(h[2]) or 0 end
return 0
`)
