//! The Lua scripts that change a distributed job's state. Each runs
//! atomically in Redis, reads the clock with `TIME` (so no worker's clock
//! matters), and touches only keys under the job's prefix
//! `spindle:{JOB}:`, whose hash tag puts them all in one Redis Cluster slot.
//!
//! Keys (after the prefix):
//! - `req`: hash, request id → the request, serialized with postcard;
//! - `q:<slot>`: sorted set of the slot's waiting request ids, scored
//!   `-priority * 2^32 + id` (higher priority first, then oldest first);
//! - `slot:<slot>`: hash with the slot's `cap`, `delay` (µs), `rnd` (1 when
//!   the delay is randomized), `floor` (robots.txt Crawl-delay, µs: no drawn
//!   gap goes under it), `inflight` and `next` (the Redis time in µs
//!   before which the slot starts nothing);
//! - `ready`: sorted set of the slots that have requests waiting and room
//!   under their cap, scored by their `next`;
//! - `lease`: hash, request id → `token|slot|score|worker` of the request's
//!   current holder; `leases`: sorted set, request id → lease expiry (µs);
//! - `seen:<bucket>`: the duplicate filter, as 65,536 sets of 64-bit
//!   fingerprints (as signed integers) by their top 16 bits: Redis keeps a
//!   small set of integers as an intset, 8 bytes an entry, while one big set
//!   is a hash table at about 80 bytes an entry (measured, docs/distributed.md);
//! - `items`: list of the job's items, one JSON object each;
//! - `robots`: hash, origin → robots.txt answer (`status` newline body);
//! - `slots`: set of every slot's name;
//! - `workers`: sorted set, worker → the Redis time it last took or renewed;
//! - `nextid`, `token`: counters; `stats`: hash of counters; `epoch`: bumped
//!   by every step that queues, finishes or takes back a request, so a worker
//!   can tell that nothing happened between two looks at all partitions.
//!
//! With `REDIS_PARTITIONS=N` above 1, each crawl slot belongs to one of N
//! partitions (a hash of its key), each with all of the keys above under its
//! own hash tag `spindle:{JOB/k}:`; a URL always falls in its slot's
//! partition, so its duplicate check and its queueing stay one step.

/// Helpers every script starts with.
const PRELUDE: &str = r#"
local p = KEYS[1]
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- Files the slot in `ready` when it has requests waiting and room under its cap.
local function refile(slot)
  local sk = p .. 'slot:' .. slot
  local s = redis.call('HMGET', sk, 'inflight', 'cap', 'next')
  local inflight = tonumber(s[1]) or 0
  local cap = tonumber(s[2]) or 1
  local nxt = tonumber(s[3]) or 0
  if inflight < cap and redis.call('ZCARD', p .. 'q:' .. slot) > 0 then
    redis.call('ZADD', p .. 'ready', nxt, slot)
  else
    redis.call('ZREM', p .. 'ready', slot)
  end
end
-- Admits one request unless its fingerprint ('<bucket hex>:<i64>') was seen ('' skips the filter).
local function push(fp, slot, prio, bytes, cap, delay, rnd)
  if fp ~= '' then
    local bucket, value = string.match(fp, '^(%x+):(.+)$')
    if redis.call('SADD', p .. 'seen:' .. bucket, value) == 0 then
      return 0
    end
    redis.call('HINCRBY', p .. 'stats', 'seen', 1)
  end
  local id = redis.call('INCR', p .. 'nextid')
  redis.call('HSET', p .. 'req', id, bytes)
  redis.call('ZADD', p .. 'q:' .. slot, -tonumber(prio) * 4294967296 + id, id)
  local sk = p .. 'slot:' .. slot
  if redis.call('EXISTS', sk) == 0 then
    redis.call('HSET', sk, 'cap', cap, 'delay', delay, 'rnd', rnd, 'inflight', 0, 'next', 0)
    redis.call('SADD', p .. 'slots', slot)
  end
  refile(slot)
  return 1
end
-- Returns requests whose lease expired to their slot's queue, and releases
-- their place under the slot's cap; at most `max`. Returns how many.
local function reap(now, max)
  local expired = redis.call('ZRANGEBYSCORE', p .. 'leases', '-inf', now, 'LIMIT', 0, max)
  for _, id in ipairs(expired) do
    local held = redis.call('HGET', p .. 'lease', id)
    redis.call('ZREM', p .. 'leases', id)
    redis.call('HDEL', p .. 'lease', id)
    if held then
      local lease = {}
      for part in string.gmatch(held, '([^|]+)') do lease[#lease + 1] = part end
      local slot = lease[2]
      redis.call('ZADD', p .. 'q:' .. slot, lease[3], id)
      redis.call('HINCRBY', p .. 'slot:' .. slot, 'inflight', -1)
      redis.call('HINCRBY', p .. 'stats', 'reaped', 1)
      refile(slot)
    end
  end
  if #expired > 0 then redis.call('INCR', p .. 'epoch') end
  return #expired
end
local function split(s)
  local out = {}
  for part in string.gmatch(s, '([^|]+)') do
    out[#out + 1] = part
  end
  return out
end
"#;

/// Admits requests. ARGV: n, then n times (fp, slot, priority, bytes, cap,
/// delay µs, randomize 0/1). Returns how many were new.
const SEED: &str = r#"
local n = tonumber(ARGV[1])
local added = 0
local i = 2
for _ = 1, n do
  added = added + push(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6])
  i = i + 7
end
if added > 0 then redis.call('INCR', p .. 'epoch') end
return added
"#;

/// Takes up to `max` requests whose slots allow one now, after returning up
/// to `reap` expired leases' requests to the frontier (so a dead worker's
/// requests come back without a round trip of their own). ARGV: worker,
/// lease µs, max, send margin µs, reap, then `max` random numbers in [0, 1)
/// for randomized delays. Per request taken: the slot's in-flight count goes
/// up, its `next` becomes now + its delay (+ margin), and a lease with a
/// fresh fencing token is recorded. Returns {wait µs until the next slot is
/// ready (-1: none), leases held in the partition, its epoch, then id, token,
/// slot, request and the gap set after it (µs) per request taken}.
const TAKE: &str = r#"
local now = now_us()
local worker = ARGV[1]
local lease = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local margin = tonumber(ARGV[4])
redis.call('ZADD', p .. 'workers', now, worker)
reap(now, tonumber(ARGV[5]))
local out = {}
local n = 0
while n < max do
  local ready = redis.call('ZRANGEBYSCORE', p .. 'ready', '-inf', now, 'LIMIT', 0, 1)
  if #ready == 0 then break end
  local slot = ready[1]
  local q = p .. 'q:' .. slot
  local first = redis.call('ZRANGE', q, 0, 0, 'WITHSCORES')
  local id, score = first[1], first[2]
  redis.call('ZREM', q, id)
  local sk = p .. 'slot:' .. slot
  local s = redis.call('HMGET', sk, 'delay', 'rnd', 'floor')
  local delay = tonumber(s[1]) or 0
  if tonumber(s[2]) == 1 then
    delay = delay * (0.5 + tonumber(ARGV[6 + n]))
  end
  -- robots.txt Crawl-delay is a floor under the drawn gap, as in one process.
  delay = math.max(delay, tonumber(s[3]) or 0)
  local gap = 0
  if delay > 0 then gap = math.floor(delay + margin) end
  redis.call('HINCRBY', sk, 'inflight', 1)
  redis.call('HSET', sk, 'next', now + gap)
  local token = redis.call('INCR', p .. 'token')
  redis.call('HSET', p .. 'lease', id, token .. '|' .. slot .. '|' .. score .. '|' .. worker)
  redis.call('ZADD', p .. 'leases', now + lease, id)
  refile(slot)
  n = n + 1
  out[#out + 1] = id
  out[#out + 1] = token
  out[#out + 1] = slot
  out[#out + 1] = redis.call('HGET', p .. 'req', id)
  out[#out + 1] = gap
end
local head = redis.call('ZRANGE', p .. 'ready', 0, 0, 'WITHSCORES')
local wait = -1
if #head > 0 then wait = math.max(0, tonumber(head[2]) - now) end
table.insert(out, 1, tonumber(redis.call('GET', p .. 'epoch') or '0'))
table.insert(out, 1, redis.call('ZCARD', p .. 'leases'))
table.insert(out, 1, wait)
return out
"#;

/// Finishes a request, if its lease is still this token's. ARGV: id, token,
/// pause µs (the slot starts nothing before now + pause), the request to
/// put back in its slot ('' when done: a retry keeps its id), whether it was
/// a page (1/0), robots origin ('' for none), answer and Crawl-delay µs (the
/// slot's delay floor from then on), n items then the
/// items, n pushes then 7 fields each (as SEED). Returns 1, or 0 when the
/// lease was lost (expired and reaped): then nothing is changed, so a page
/// is never committed twice.
const FINISH: &str = r#"
local now = now_us()
local id, token = ARGV[1], ARGV[2]
local held = redis.call('HGET', p .. 'lease', id)
if not held then return 0 end
local lease = split(held)
if lease[1] ~= token then return 0 end
local slot, score = lease[2], lease[3]
redis.call('INCR', p .. 'epoch')
redis.call('HDEL', p .. 'lease', id)
redis.call('ZREM', p .. 'leases', id)
local sk = p .. 'slot:' .. slot
redis.call('HINCRBY', sk, 'inflight', -1)
local pause = tonumber(ARGV[3])
if pause > 0 then
  local nxt = tonumber(redis.call('HGET', sk, 'next')) or 0
  if now + pause > nxt then redis.call('HSET', sk, 'next', now + pause) end
end
if ARGV[4] ~= '' then
  redis.call('HSET', p .. 'req', id, ARGV[4])
  redis.call('ZADD', p .. 'q:' .. slot, score, id)
  redis.call('HINCRBY', p .. 'stats', 'retries', 1)
else
  redis.call('HDEL', p .. 'req', id)
end
if ARGV[5] == '1' then redis.call('HINCRBY', p .. 'stats', 'pages', 1) end
if ARGV[6] ~= '' then
  redis.call('HSET', p .. 'robots', ARGV[6], ARGV[7])
  local floor = tonumber(ARGV[8])
  if floor > (tonumber(redis.call('HGET', sk, 'floor')) or 0) then
    redis.call('HSET', sk, 'floor', floor)
  end
end
local i = 9
local nitems = tonumber(ARGV[i])
i = i + 1
for _ = 1, nitems do
  redis.call('RPUSH', p .. 'items', ARGV[i])
  i = i + 1
end
if nitems > 0 then redis.call('HINCRBY', p .. 'stats', 'items', nitems) end
local npush = tonumber(ARGV[i])
i = i + 1
for _ = 1, npush do
  push(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6])
  i = i + 7
end
refile(slot)
return 1
"#;

/// Extends the leases a worker still holds. ARGV: worker, lease µs, then
/// (id, token) pairs. Returns the ids whose lease is lost.
const RENEW: &str = r#"
local now = now_us()
redis.call('ZADD', p .. 'workers', now, ARGV[1])
local lease = tonumber(ARGV[2])
local lost = {}
local i = 3
while i < #ARGV do
  local id, token = ARGV[i], ARGV[i + 1]
  local held = redis.call('HGET', p .. 'lease', id)
  if held and split(held)[1] == token then
    redis.call('ZADD', p .. 'leases', now + lease, id)
  else
    lost[#lost + 1] = id
  end
  i = i + 2
end
return lost
"#;

/// The scripts, compiled once (EVALSHA, with EVAL when Redis lost its
/// script cache, e.g. after a restart).
pub(crate) struct Scripts {
    pub seed: redis::Script,
    pub take: redis::Script,
    pub finish: redis::Script,
    pub renew: redis::Script,
}

impl Scripts {
    pub fn new() -> Self {
        let with = |body: &str| redis::Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            seed: with(SEED),
            take: with(TAKE),
            finish: with(FINISH),
            renew: with(RENEW),
        }
    }

    /// Every script, to load them again into a Redis that lost them.
    pub fn all(&self) -> [&redis::Script; 4] {
        [&self.seed, &self.take, &self.finish, &self.renew]
    }
}
