//! [`EventStore`] on Redis (`[storage] backend = "redis"`, issue 15): every
//! instance that shares one Redis (and one `key_prefix`) sees every event, and
//! any of them delivers what another accepted.
//!
//! Owns: the keys, the Lua scripts that change them atomically, this
//! instance's leases on deliveries (renewed every third of `[storage] lease`)
//! and the take-over of deliveries whose holder stopped renewing them. Does
//! not own the Redis URL, credentials or the connection settings (`[cluster]`),
//! nor when an attempt is made (`delivery`).
//!
//! # Keys (under the prefix `P`)
//! ```text
//! P q:seq        INCR counter: the event keys, unique across instances
//! P q:ev:KEY     hash: base (the JSON record without deliveries), d0..dN-1
//!                (one JSON DeliveryRecord each), s0..sN-1 (the stream entry of
//!                each pending delivery), head, body, n, size
//! P q:events     sorted set of every stored key (listing, newest first)
//! P q:finished   sorted set: key -> when its last delivery finished (retention)
//! P q:stream     stream: one entry per pending delivery {k, i}, group "delivery"
//! P q:bytes      bytes of stored events, as counted against max_bytes
//! P q:ap:R:N     string, for APPEND_TOKEN_TTL or longer: the key that append
//!                N of the store opened with random id R stored (a re-run of
//!                that append answers it)
//! ```
//!
//! # Leases (Streams consumer group)
//! The script that appends an event also `XADD`s one stream entry per
//! delivery and reads them at once with `XREADGROUP` as this instance's
//! consumer, so the entries sit in this instance's pending list from the
//! start: the instance that accepted an event makes its first attempt, with
//! nothing read back. Every `lease / 3` this instance renews its entries
//! (`XCLAIM … JUSTID` of those still its own, which resets their idle time),
//! and takes over (`XAUTOCLAIM`) every entry idle longer than `lease`: those of
//! an instance that was killed, hung, or cut off from Redis. An entry is
//! `XACK`ed and `XDEL`eted in the same script that records its delivery as
//! delivered or dead. A clean stop (SIGTERM) releases the instance's entries
//! (`XCLAIM … IDLE`), so the others take them over within seconds.
//!
//! # What is guaranteed
//! - A 202 is sent after Redis answered the append script. That is durable
//!   only as far as Redis is: `appendonly yes` with `appendfsync always` loses
//!   nothing on a Redis crash; `everysec` may lose the last second;
//!   `maxmemory-policy` must be `noeviction` (an evicted event is lost). The
//!   settings are read at start (`CONFIG GET`) and a warning names each one
//!   that weakens the guarantee, or says they could not be read (managed
//!   Redis often renames `CONFIG`).
//! - A 503 is not a proof that nothing was stored: an append whose answer
//!   came after `command_timeout` may have run. With a route's dedupe, the
//!   append script remembers the delivery id as forwarded in the same step
//!   ([`Remember`]), so the sender's retry is answered `duplicate` exactly
//!   when the event was stored.
//! - Delivery is at least once across instances: a delivery is made by one
//!   instance at a time while its lease is renewed; an instance that stops
//!   renewing (killed, paused, cut off from Redis for a whole lease) may see
//!   its delivery taken over while its own attempt is still under way, so
//!   the upstream may get that event twice, with the same
//!   `X-Hookgate-Event-Id`.
//! - Every command has a deadline (`command_timeout`): an unreachable Redis
//!   is a [`StoreError::Io`] (503 `storage_unavailable`), never a hang. The
//!   connection manager reconnects with backoff; nothing needs a restart.
//!   A connection that died while idle (`CLIENT KILL`, Redis's `timeout`, a
//!   restart) fails its next command although Redis is up: the command is
//!   then sent once more on the reconnected connection, within the same
//!   deadline ([`Shared::run`]), so every command here is safe to run twice.
//!   With `[cluster] sentinel`, a failed command (or a `READONLY` answer)
//!   makes the store's [`Link`] ask the Sentinels for the master, and the
//!   next commands go to the new one. Replication is asynchronous: an event
//!   acknowledged just before the master died may be missing on the replica
//!   that replaces it, unless the master runs with `min-replicas-to-write`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::ConnectionManager;
use tokio::runtime::Handle;

use crate::cluster::sentinel::{Link, Target};

use super::store::{
    now_ms, AttemptRecord, DeliveryRecord, EventKey, EventRecord, EventStore, Filter, NewEvent,
    Next, Remember, Status, StoreError,
};

/// The consumer group every instance reads the delivery stream in.
const GROUP: &str = "delivery";
/// Records read per round trip when listing.
const LIST_BATCH: usize = 200;
/// Events a listing reads at most before it gives up (filters match few).
const LIST_SCAN_MAX: usize = 100_000;
/// Entries taken over per `XAUTOCLAIM`, and rounds per take-over.
const CLAIM_BATCH: usize = 100;
const CLAIM_ROUNDS: usize = 10;
/// The longest wait between two take-over checks.
const CLAIM_EVERY_MAX: Duration = Duration::from_secs(2);
/// Leases renewed per script call.
const RENEW_BATCH: usize = 1000;
/// Events purged per script call, and calls per purge.
const PURGE_BATCH: usize = 1000;
const PURGE_ROUNDS: usize = 10;
/// Tries of a record whose delivery another instance changed meanwhile.
const RECORD_TRIES: usize = 3;
/// The shortest life of an append's token (`P q:ap:…`): it must outlast
/// every run of that append, the re-run included, which is sent within
/// `command_timeout` of the first; twice that is used when longer.
const APPEND_TOKEN_TTL: Duration = Duration::from_secs(10);

/// Appends an event, its deliveries' stream entries, and reads them as this
/// consumer. KEYS: seq, events, stream, bytes, this append's token, and
/// optionally a key to remember ([`Remember`]: a dedupe claim made
/// "forwarded"). ARGV: max_bytes, size, base, head, body, group, consumer,
/// event key prefix, the remembered value and its TTL in ms (ignored without
/// the sixth key), the token's TTL in ms, then one delivery JSON each.
/// Returns `{0, used, nil}` when full (nothing written), else
/// `{key, used, {stream ids}}`.
///
/// Idempotent for its token: the token is set to the event's key in the
/// same step, so a re-run (the first run's answer was lost with its
/// connection, [`Shared::run`]) writes nothing and answers the first run's
/// key and stream ids (`''` for an entry already gone).
const APPEND: &str = r#"
local done = redis.call('GET', KEYS[5])
if done then
  local ev = ARGV[8] .. done
  local ids = {}
  for i = 0, tonumber(redis.call('HGET', ev, 'n') or '0') - 1 do
    ids[#ids + 1] = redis.call('HGET', ev, 's' .. i) or ''
  end
  return {tonumber(done), tonumber(redis.call('GET', KEYS[4]) or '0'), ids}
end
local used = tonumber(redis.call('GET', KEYS[4]) or '0')
local size = tonumber(ARGV[2])
if used + size > tonumber(ARGV[1]) then return {0, used, false} end
redis.pcall('XGROUP', 'CREATE', KEYS[3], ARGV[6], '0', 'MKSTREAM')
local key = redis.call('INCR', KEYS[1])
local ev = ARGV[8] .. key
local n = #ARGV - 11
redis.call('HSET', ev, 'base', ARGV[3], 'head', ARGV[4], 'body', ARGV[5], 'n', n, 'size', size)
local ids = {}
for i = 0, n - 1 do
  local id = redis.call('XADD', KEYS[3], '*', 'k', key, 'i', i)
  redis.call('HSET', ev, 'd' .. i, ARGV[12 + i], 's' .. i, id)
  ids[#ids + 1] = id
end
local last = ids[#ids]
for _ = 1, 1000 do
  local read = redis.call('XREADGROUP', 'GROUP', ARGV[6], ARGV[7], 'COUNT', 100, 'STREAMS', KEYS[3], '>')
  if not read then break end
  local entries = read[1][2]
  if #entries == 0 or entries[#entries][1] == last then break end
end
redis.call('ZADD', KEYS[2], key, key)
used = redis.call('INCRBY', KEYS[4], size)
redis.call('SET', KEYS[5], key, 'PX', ARGV[11])
if #KEYS > 5 then
  redis.call('SET', KEYS[6], ARGV[9], 'PX', ARGV[10])
end
return {key, used, ids}
"#;

/// Records delivery ARGV[1] if it is still ARGV[2] (compare and set).
/// KEYS: event, stream, finished, bytes. ARGV: index, old, new, done (0/1),
/// now ms, group, key. Returns 1 (set, or already `new`: a re-run whose first
/// run did it all), 0 (changed meanwhile), -1 (no event).
const RECORD: &str = r#"
local f = 'd' .. ARGV[1]
local cur = redis.call('HGET', KEYS[1], f)
if not cur then return -1 end
if cur == ARGV[3] and cur ~= ARGV[2] then return 1 end
if cur ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], f, ARGV[3])
local delta = string.len(ARGV[3]) - string.len(cur)
redis.call('HINCRBY', KEYS[1], 'size', delta)
redis.call('INCRBY', KEYS[4], delta)
if ARGV[4] == '1' then
  local s = 's' .. ARGV[1]
  local sid = redis.call('HGET', KEYS[1], s)
  if sid then
    redis.call('XACK', KEYS[2], ARGV[6], sid)
    redis.call('XDEL', KEYS[2], sid)
    redis.call('HDEL', KEYS[1], s)
  end
  local n = tonumber(redis.call('HGET', KEYS[1], 'n'))
  local open = false
  for j = 0, n - 1 do
    local d = redis.call('HGET', KEYS[1], 'd' .. j)
    if d and string.find(d, '"status":"pending"', 1, true) then open = true end
  end
  if not open then redis.call('ZADD', KEYS[3], ARGV[5], ARGV[7]) end
end
return 1
"#;

/// Makes finished deliveries pending again, held by this consumer.
/// KEYS: event, stream, finished, bytes. ARGV: group, consumer, key, new base,
/// then (index, old, new) triples. Returns {0, {}} if one changed meanwhile,
/// {-1, {}} if the event is gone, else {1, the new stream ids}. A re-run
/// whose first run did it all (every delivery is its `new` already) changes
/// nothing and answers the same (`''` for an entry already gone).
const REPLAY: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, {}} end
local again = true
for t = 5, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], 'd' .. ARGV[t]) ~= ARGV[t + 2] then again = false end
end
if again then
  local ids = {}
  for t = 5, #ARGV, 3 do ids[#ids + 1] = redis.call('HGET', KEYS[1], 's' .. ARGV[t]) or '' end
  return {1, ids}
end
for t = 5, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], 'd' .. ARGV[t]) ~= ARGV[t + 1] then return {0, {}} end
end
redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[1], '0', 'MKSTREAM')
local delta = string.len(ARGV[4]) - string.len(redis.call('HGET', KEYS[1], 'base'))
redis.call('HSET', KEYS[1], 'base', ARGV[4])
local ids = {}
for t = 5, #ARGV, 3 do
  local id = redis.call('XADD', KEYS[2], '*', 'k', ARGV[3], 'i', ARGV[t])
  redis.call('HSET', KEYS[1], 'd' .. ARGV[t], ARGV[t + 2], 's' .. ARGV[t], id)
  delta = delta + string.len(ARGV[t + 2]) - string.len(ARGV[t + 1])
  ids[#ids + 1] = id
end
local last = ids[#ids]
for _ = 1, 1000 do
  local read = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 100, 'STREAMS', KEYS[2], '>')
  if not read then break end
  local entries = read[1][2]
  if #entries == 0 or entries[#entries][1] == last then break end
end
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('HINCRBY', KEYS[1], 'size', delta)
redis.call('INCRBY', KEYS[4], delta)
return {1, ids}
"#;

/// Renews this consumer's leases on the given entries (those still its own).
/// KEYS: stream, bytes. ARGV: group, consumer, ids. Returns {lost ids, bytes}.
const RENEW: &str = r#"
local lost = {}
for t = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[t], ARGV[t], 1)
  if #p > 0 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[t], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[t]
  end
end
return {lost, tonumber(redis.call('GET', KEYS[2]) or '0')}
"#;

/// Records of the given keys: for each, {base, d0, …} or {} when gone.
/// ARGV: event key prefix, keys.
const RECORDS: &str = r#"
local out = {}
for t = 2, #ARGV do
  local ev = ARGV[1] .. ARGV[t]
  local n = redis.call('HGET', ev, 'n')
  if not n then
    out[#out + 1] = {}
  else
    local fields = {'base'}
    for j = 0, tonumber(n) - 1 do fields[#fields + 1] = 'd' .. j end
    out[#out + 1] = redis.call('HMGET', ev, unpack(fields))
  end
end
return out
"#;

/// Removes events finished before ARGV[1]. KEYS: finished, events, bytes.
/// ARGV: before ms, event key prefix, batch. Returns how many.
const PURGE: &str = r#"
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local freed = 0
for _, k in ipairs(keys) do
  local ev = ARGV[2] .. k
  freed = freed + tonumber(redis.call('HGET', ev, 'size') or '0')
  redis.call('DEL', ev)
  redis.call('ZREM', KEYS[1], k)
  redis.call('ZREM', KEYS[2], k)
end
if freed > 0 then redis.call('DECRBY', KEYS[3], freed) end
return #keys
"#;

/// What the store needs to reach Redis; `[cluster]` gives it.
#[derive(Clone)]
pub struct RedisOptions {
    /// Every key starts with it (`[cluster] key_prefix`, e.g. `"hookgate:"`).
    pub key_prefix: String,
    /// The deadline of each command; past it the operation fails (503).
    pub command_timeout: Duration,
    /// `[storage] lease`.
    pub lease: Duration,
    /// `[storage] max_bytes`.
    pub max_bytes: u64,
    /// Counts each command that failed, got no answer within
    /// `command_timeout`, or was not sent because no Redis node was known
    /// (`hookgate_cluster_errors_total{operation="store"}`).
    pub errors: Option<prometheus::IntCounter>,
}

struct Keys {
    seq: String,
    events: String,
    finished: String,
    stream: String,
    bytes: String,
    /// Prefix of an event's hash: append the key.
    event: String,
    /// Prefix of this store's append tokens, its random id included: append
    /// a number.
    token: String,
}

struct Scripts {
    append: redis::Script,
    record: redis::Script,
    replay: redis::Script,
    renew: redis::Script,
    records: redis::Script,
    purge: redis::Script,
}

/// The Redis-backed store. Cheap to share; its lease renewal runs on the
/// runtime it was opened on until the store is dropped.
pub struct RedisStore {
    inner: Arc<Shared>,
}

struct Shared {
    /// The node commands go to; followed across failovers with Sentinel.
    link: Arc<Link>,
    keys: Keys,
    scripts: Scripts,
    options: RedisOptions,
    /// This instance's consumer name in the group (unique per process).
    consumer: String,
    /// Deliveries this instance holds: (key, index) -> stream entry id.
    held: Mutex<HashMap<(EventKey, usize), String>>,
    bytes: AtomicU64,
    /// The last command reached Redis.
    up: AtomicBool,
    /// A clean stop released every lease: renew none, hold none.
    released: AtomicBool,
    /// Tag of this store's event ids (from the prefix: the same on every instance).
    tag: u32,
    /// Appends made so far: numbers each append's token.
    appends: AtomicU64,
    /// Tests: run every command twice, as when its first answer was lost
    /// with its connection after Redis ran it.
    #[cfg(test)]
    run_twice: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io(error: impl std::fmt::Display) -> StoreError {
    StoreError::Io(error.to_string())
}

/// FNV-1a of the prefix: the same id tag on every instance sharing it.
fn tag_of(prefix: &str) -> u32 {
    prefix.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

/// This process's consumer name: host, process id and start time.
fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string());
    format!("{host}-{}-{}", std::process::id(), now_ms())
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(io)
}

/// A record from its `base` and delivery fields (as [`RECORDS`] returns them).
fn assemble(fields: &[Option<String>]) -> Result<Option<EventRecord>, StoreError> {
    let Some((Some(base), deliveries)) = fields.split_first() else {
        return Ok(None);
    };
    let mut record: EventRecord = serde_json::from_str(base).map_err(io)?;
    record.deliveries = deliveries
        .iter()
        .map(|d| {
            d.as_deref()
                .ok_or_else(|| io("a delivery field is missing"))
                .and_then(|d| serde_json::from_str(d).map_err(io))
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(record))
}

impl RedisStore {
    /// Opens the store on `target` (`[cluster]`'s URL or Sentinels,
    /// credentials and TLS; or a `redis::Client` through `into()`) with
    /// `config` (its timeouts and reconnect backoff), without waiting for
    /// Redis: a Redis that is down at start makes queued routes answer 503
    /// until it is reachable. Its own connection (not the one rate limits and
    /// dedupe share), the lease renewal and the settings check run on `runtime`.
    pub fn open(
        target: Target,
        config: redis::aio::ConnectionManagerConfig,
        options: RedisOptions,
        runtime: &Handle,
    ) -> Result<RedisStore, StoreError> {
        let _entered = runtime.enter();
        let link = Link::new(&target, config, runtime).map_err(io)?;
        // With Sentinel, start finding the master now.
        link.suspect();
        let prefix = format!("{}q:", options.key_prefix);
        let keys = Keys {
            seq: format!("{prefix}seq"),
            events: format!("{prefix}events"),
            finished: format!("{prefix}finished"),
            stream: format!("{prefix}stream"),
            bytes: format!("{prefix}bytes"),
            event: format!("{prefix}ev:"),
            // Random: unlike consumer names, never the same for two stores.
            token: format!("{prefix}ap:{}:", uuid::Uuid::new_v4().simple()),
        };
        let inner = Arc::new(Shared {
            link,
            keys,
            scripts: Scripts {
                append: redis::Script::new(APPEND),
                record: redis::Script::new(RECORD),
                replay: redis::Script::new(REPLAY),
                renew: redis::Script::new(RENEW),
                records: redis::Script::new(RECORDS),
                purge: redis::Script::new(PURGE),
            },
            tag: tag_of(&options.key_prefix),
            options,
            consumer: consumer_name(),
            held: Mutex::new(HashMap::new()),
            bytes: AtomicU64::new(0),
            up: AtomicBool::new(false),
            released: AtomicBool::new(false),
            appends: AtomicU64::new(0),
            #[cfg(test)]
            run_twice: AtomicBool::new(false),
        });
        runtime.spawn(renew_leases(Arc::downgrade(&inner)));
        Ok(RedisStore { inner })
    }

    /// Whether the last command reached Redis.
    pub fn reachable(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }
}

impl Shared {
    /// The connection of the node commands go to now; an error while the
    /// Sentinels have named no master yet (one is being looked for).
    fn conn(&self) -> Result<ConnectionManager, StoreError> {
        self.link.manager().ok_or_else(|| {
            self.up.store(false, Ordering::Release);
            self.link.suspect();
            StoreError::Io(format!(
                "redis: the Sentinels name no master yet{}",
                self.link
                    .last_error()
                    .map_or(String::new(), |e| format!(" ({e})"))
            ))
        })
    }

    /// Runs `call` on the connection within the command deadline; marks
    /// Redis up or down.
    ///
    /// A connection that died while idle (Redis restarted, closed an idle
    /// client under its `timeout` setting, `CLIENT KILL`) fails the next
    /// command with a dropped-connection error although Redis is fine; the
    /// manager then reconnects, and `call` runs once more on the new
    /// connection, within the same deadline, as `ClusterClient::run` does.
    /// Redis-rs gives the same error whether the command never left or the
    /// connection dropped after Redis ran it, so **every `call` must be safe
    /// to run twice**: an append is idempotent for its token ([`APPEND`]), a
    /// record or a replay for its new value ([`RECORD`], [`REPLAY`]); reads,
    /// lease renewals, releases and acks are the same again; a purge only
    /// removes more of what qualifies; a take-over (`XAUTOCLAIM`) run twice
    /// leaves what the lost run claimed idle under this consumer, so it is
    /// taken over again a lease later (late, never lost or doubled).
    async fn run<T, F, Fut>(&self, what: &str, call: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().inspect_err(|_| self.count_error())?;
        let attempts = async {
            #[cfg(test)]
            if self.run_twice.load(Ordering::Acquire) {
                let _ = call(conn.clone()).await;
            }
            match call(conn).await {
                Err(error) if crate::cluster::is_dropped(&error) => match self.link.manager() {
                    Some(fresh) => call(fresh).await,
                    None => Err(error),
                },
                answer => answer,
            }
        };
        match tokio::time::timeout(self.options.command_timeout, attempts).await {
            Ok(Ok(value)) => {
                self.up.store(true, Ordering::Release);
                Ok(value)
            }
            Ok(Err(error)) => {
                self.count_error();
                // A server-side error (a script's) means Redis is reachable.
                let reachable =
                    !(error.is_io_error() || error.is_connection_dropped() || error.is_timeout());
                self.up.store(reachable, Ordering::Release);
                if Link::is_suspect(&error) {
                    self.link.suspect();
                }
                if error.code() == Some("OOM") {
                    return Err(StoreError::OutOfMemory(format!("redis {what}: {error}")));
                }
                Err(StoreError::Io(format!("redis {what}: {error}")))
            }
            Err(_) => {
                self.count_error();
                self.up.store(false, Ordering::Release);
                self.link.suspect();
                Err(StoreError::Io(format!(
                    "redis {what}: no answer within {:?}",
                    self.options.command_timeout
                )))
            }
        }
    }

    fn count_error(&self) {
        if let Some(errors) = &self.options.errors {
            errors.inc();
        }
    }

    /// [`Shared::run`] of one command.
    async fn query<T: redis::FromRedisValue>(
        &self,
        what: &str,
        command: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.run(what, |mut conn| async move {
            command.query_async(&mut conn).await
        })
        .await
    }

    /// [`Shared::run`] of one script.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        what: &str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.run(what, |mut conn| async move {
            invocation.invoke_async(&mut conn).await
        })
        .await
    }

    fn event_key(&self, key: EventKey) -> String {
        format!("{}{key}", self.keys.event)
    }

    /// `script` with the four keys a change of an event's deliveries touches:
    /// the event, the stream, the finished set and the byte count.
    fn on_deliveries<'s>(
        &self,
        script: &'s redis::Script,
        key: EventKey,
    ) -> redis::ScriptInvocation<'s> {
        let mut invocation = script.prepare_invoke();
        invocation
            .key(self.event_key(key))
            .key(&self.keys.stream)
            .key(&self.keys.finished)
            .key(&self.keys.bytes);
        invocation
    }

    async fn records(&self, keys: &[EventKey]) -> Result<Vec<Option<EventRecord>>, StoreError> {
        let mut invocation = self.scripts.records.prepare_invoke();
        invocation.arg(&self.keys.event);
        for key in keys {
            invocation.arg(*key);
        }
        let rows: Vec<Vec<Option<String>>> = self.invoke("read", &invocation).await?;
        rows.iter().map(|fields| assemble(fields)).collect()
    }

    async fn delivery(&self, key: EventKey, index: usize) -> Result<Option<String>, StoreError> {
        let mut command = redis::cmd("HGET");
        command.arg(self.event_key(key)).arg(format!("d{index}"));
        self.query("read", &command).await
    }

    /// Renews every lease this instance holds; forgets those it lost.
    async fn renew(&self) -> Result<(), StoreError> {
        let ids: Vec<((EventKey, usize), String)> = lock(&self.held)
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let mut lost_all = Vec::new();
        let mut chunks: Vec<&[((EventKey, usize), String)]> = ids.chunks(RENEW_BATCH).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for chunk in chunks {
            let mut invocation = self.scripts.renew.prepare_invoke();
            invocation
                .key(&self.keys.stream)
                .key(&self.keys.bytes)
                .arg(GROUP)
                .arg(&self.consumer);
            for (_, id) in chunk {
                invocation.arg(id);
            }
            let (lost, bytes): (Vec<String>, u64) =
                self.invoke("lease renewal", &invocation).await?;
            self.bytes.store(bytes, Ordering::Release);
            lost_all.extend(lost);
        }
        if !lost_all.is_empty() {
            tracing::warn!(
                deliveries = lost_all.len(),
                "another instance took over queued deliveries whose lease this one could not renew in time"
            );
            let mut held = lock(&self.held);
            held.retain(|_, id| !lost_all.contains(id));
        }
        Ok(())
    }

    /// Reads the durability settings once and warns about each that weakens
    /// the acknowledgement. Returns whether Redis answered.
    async fn check_settings(&self) -> bool {
        let mut append = redis::cmd("CONFIG");
        append.arg("GET").arg("append*");
        let answer: Result<Vec<String>, StoreError> = self.query("CONFIG GET", &append).await;
        let mut policy = redis::cmd("CONFIG");
        policy.arg("GET").arg("maxmemory-policy");
        let policy: Result<Vec<String>, StoreError> = self.query("CONFIG GET", &policy).await;
        match (answer, policy) {
            (Ok(append), Ok(policy)) => {
                let settings: HashMap<String, String> = append
                    .chunks(2)
                    .chain(policy.chunks(2))
                    .filter_map(|pair| match pair {
                        [name, value] => Some((name.clone(), value.clone())),
                        _ => None,
                    })
                    .collect();
                for problem in settings_problems(&settings) {
                    tracing::warn!(problem, "[storage] backend = \"redis\": Redis is not set up for the acknowledgement's guarantee");
                }
                true
            }
            (Err(StoreError::Io(error)), _) | (_, Err(StoreError::Io(error)))
                if self.up.load(Ordering::Acquire) =>
            {
                tracing::warn!(%error, "[storage] backend = \"redis\": cannot read Redis's durability settings (CONFIG may be renamed or disabled); check appendonly yes, appendfsync always (or everysec: up to 1 s of acknowledged events at risk) and maxmemory-policy noeviction by hand");
                true
            }
            _ => false,
        }
    }
}

/// What in Redis's settings weakens a 202, one sentence each.
pub fn settings_problems(settings: &HashMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    let get = |name: &str| settings.get(name).map(String::as_str);
    if get("appendonly") != Some("yes") {
        problems.push("appendonly is not yes: a Redis restart loses every event written since its last snapshot".to_string());
    } else {
        match get("appendfsync") {
            Some("always") => {}
            Some("everysec") => problems.push("appendfsync is everysec: a Redis crash may lose up to 1 s of acknowledged events; use always for none".to_string()),
            other => problems.push(format!("appendfsync is {}: a Redis crash may lose acknowledged events; use always", other.unwrap_or("unknown"))),
        }
    }
    if get("maxmemory-policy") != Some("noeviction") {
        problems.push(format!(
            "maxmemory-policy is {}: Redis may evict stored events; use noeviction (a full Redis then refuses writes, answered 503)",
            get("maxmemory-policy").unwrap_or("unknown")
        ));
    }
    problems
}

/// Renews this instance's leases every third of the lease, until the store is
/// dropped; checks Redis's settings once it first answers.
async fn renew_leases(store: std::sync::Weak<Shared>) {
    let mut checked = false;
    loop {
        let Some(inner) = store.upgrade() else { return };
        if inner.released.load(Ordering::Acquire) {
            return;
        }
        let every = inner.options.lease / 3;
        if !checked {
            checked = inner.check_settings().await;
        }
        if let Err(error) = inner.renew().await {
            tracing::warn!(%error, "cannot renew the leases of queued deliveries");
        }
        drop(inner);
        tokio::time::sleep(every).await;
    }
}

#[async_trait]
impl EventStore for RedisStore {
    async fn append(&self, event: NewEvent) -> Result<EventKey, StoreError> {
        self.append_remembering(event, None).await
    }

    fn remembers(&self) -> bool {
        true
    }

    /// Stores the event and writes `remember` in one script: a sender that
    /// got no answer (a timeout while Redis ran it) and retries finds its
    /// delivery id remembered exactly when the event was stored.
    async fn append_remembering(
        &self,
        event: NewEvent,
        remember: Option<&Remember>,
    ) -> Result<EventKey, StoreError> {
        let s = &self.inner;
        let record = EventRecord::new(&event);
        let mut base = record.clone();
        base.deliveries.clear();
        let base = to_json(&base)?;
        let deliveries: Vec<String> = record
            .deliveries
            .iter()
            .map(to_json)
            .collect::<Result<_, _>>()?;
        let size = (event.head.len()
            + event.body.len()
            + base.len()
            + deliveries.iter().map(String::len).sum::<usize>()) as u64;
        let token = format!(
            "{}{}",
            s.keys.token,
            s.appends.fetch_add(1, Ordering::Relaxed)
        );
        let token_ttl_ms = (2 * s.options.command_timeout)
            .max(APPEND_TOKEN_TTL)
            .as_millis()
            .max(1);
        let mut invocation = s.scripts.append.prepare_invoke();
        invocation
            .key(&s.keys.seq)
            .key(&s.keys.events)
            .key(&s.keys.stream)
            .key(&s.keys.bytes)
            .key(&token)
            .arg(s.options.max_bytes)
            .arg(size)
            .arg(&base)
            .arg(&event.head[..])
            .arg(&event.body[..])
            .arg(GROUP)
            .arg(&s.consumer)
            .arg(&s.keys.event);
        match remember {
            Some(remember) => {
                let ttl_ms = u64::try_from(remember.ttl.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1);
                invocation
                    .key(&remember.key)
                    .arg(remember.value)
                    .arg(ttl_ms);
            }
            None => {
                invocation.arg("").arg(0);
            }
        }
        invocation.arg(u64::try_from(token_ttl_ms).unwrap_or(u64::MAX));
        for delivery in &deliveries {
            invocation.arg(delivery);
        }
        let (key, used, ids): (u64, u64, Option<Vec<String>>) =
            s.invoke("append", &invocation).await?;
        s.bytes.store(used, Ordering::Release);
        let Some(ids) = ids.filter(|_| key > 0) else {
            return Err(StoreError::Full {
                max_bytes: s.options.max_bytes,
            });
        };
        let mut held = lock(&s.held);
        for (index, id) in ids.into_iter().enumerate() {
            if !id.is_empty() {
                held.insert((key, index), id);
            }
        }
        Ok(key)
    }

    async fn record(
        &self,
        key: EventKey,
        index: usize,
        attempt: Option<AttemptRecord>,
        next: Next,
    ) -> Result<(), StoreError> {
        let s = &self.inner;
        for _ in 0..RECORD_TRIES {
            let Some(old) = s.delivery(key, index).await? else {
                lock(&s.held).remove(&(key, index));
                return Err(StoreError::NotFound(format!("{key}/{index}")));
            };
            let mut delivery: DeliveryRecord = serde_json::from_str(&old).map_err(io)?;
            delivery.apply(attempt.clone(), next.clone());
            let done = delivery.status != Status::Pending;
            let new = to_json(&delivery)?;
            let mut invocation = s.on_deliveries(&s.scripts.record, key);
            invocation
                .arg(index)
                .arg(&old)
                .arg(&new)
                .arg(if done { "1" } else { "0" })
                .arg(now_ms())
                .arg(GROUP)
                .arg(key);
            let set: i64 = s.invoke("record", &invocation).await?;
            match set {
                1 => {
                    if done {
                        lock(&s.held).remove(&(key, index));
                    }
                    return Ok(());
                }
                -1 => {
                    lock(&s.held).remove(&(key, index));
                    return Err(StoreError::NotFound(format!("{key}/{index}")));
                }
                _ => continue,
            }
        }
        Err(io("the delivery kept changing under this record"))
    }

    async fn replay(&self, key: EventKey) -> Result<Vec<usize>, StoreError> {
        let s = &self.inner;
        for _ in 0..RECORD_TRIES {
            let fields: Vec<Option<String>> = {
                let mut read = s.scripts.records.prepare_invoke();
                read.arg(&s.keys.event).arg(key);
                let rows: Vec<Vec<Option<String>>> = s.invoke("read", &read).await?;
                rows.into_iter().next().unwrap_or_default()
            };
            let Some(mut record) = assemble(&fields)? else {
                return Err(StoreError::NotFound(key.to_string()));
            };
            let now = now_ms();
            let mut changes = Vec::new();
            for (index, delivery) in record.deliveries.iter_mut().enumerate() {
                if delivery.status != Status::Pending {
                    let old = fields.get(index + 1).cloned().flatten().unwrap_or_default();
                    delivery.status = Status::Pending;
                    delivery.next_ms = now;
                    delivery.tries = 0;
                    delivery.reason = None;
                    delivery.finished_ms = None;
                    changes.push((index, old, to_json(delivery)?));
                }
            }
            if changes.is_empty() {
                return Ok(Vec::new());
            }
            // A replayed event starts a new max_age; its receipt time stays.
            record.replayed_ms = Some(now);
            record.deliveries.clear();
            let mut invocation = s.on_deliveries(&s.scripts.replay, key);
            invocation
                .arg(GROUP)
                .arg(&s.consumer)
                .arg(key)
                .arg(to_json(&record)?);
            for (index, old, new) in &changes {
                invocation.arg(*index).arg(old).arg(new);
            }
            let (status, ids): (i64, Vec<String>) = s.invoke("replay", &invocation).await?;
            match status {
                -1 => return Err(StoreError::NotFound(key.to_string())),
                0 => continue,
                _ => {
                    let mut held = lock(&s.held);
                    for ((index, _, _), id) in changes.iter().zip(ids) {
                        if !id.is_empty() {
                            held.insert((key, *index), id);
                        }
                    }
                    return Ok(changes.into_iter().map(|(index, _, _)| index).collect());
                }
            }
        }
        Err(io("the event kept changing under this replay"))
    }

    /// Every write was answered by Redis already (its durability is Redis's
    /// `appendfsync`). Called at a clean stop, once no attempt is in progress:
    /// releases every delivery this instance holds (marks its entry idle past
    /// the lease), so another instance takes it over at its next claim rather
    /// than a lease later.
    async fn sync(&self) -> Result<(), StoreError> {
        let s = &self.inner;
        s.released.store(true, Ordering::Release);
        let ids: Vec<String> = lock(&s.held).drain().map(|(_, id)| id).collect();
        let idle_ms = 2 * s.options.lease.as_millis() as u64;
        for chunk in ids.chunks(RENEW_BATCH) {
            let mut release = redis::cmd("XCLAIM");
            release
                .arg(&s.keys.stream)
                .arg(GROUP)
                .arg(&s.consumer)
                .arg(0)
                .arg(chunk)
                .arg("IDLE")
                .arg(idle_ms)
                .arg("JUSTID");
            let _: Vec<String> = s.query("release", &release).await?;
        }
        if !ids.is_empty() {
            tracing::info!(
                deliveries = ids.len(),
                "released the leases of pending deliveries for the other instances"
            );
        }
        Ok(())
    }

    async fn purge(&self, before_ms: u64) -> Result<u64, StoreError> {
        let s = &self.inner;
        let mut purged = 0;
        for _ in 0..PURGE_ROUNDS {
            let mut invocation = s.scripts.purge.prepare_invoke();
            invocation
                .key(&s.keys.finished)
                .key(&s.keys.events)
                .key(&s.keys.bytes)
                .arg(before_ms)
                .arg(&s.keys.event)
                .arg(PURGE_BATCH);
            let n: u64 = s.invoke("purge", &invocation).await?;
            purged += n;
            if n < PURGE_BATCH as u64 {
                break;
            }
        }
        Ok(purged)
    }

    async fn get(&self, key: EventKey) -> Result<Option<EventRecord>, StoreError> {
        Ok(self.inner.records(&[key]).await?.pop().flatten())
    }

    async fn payload(&self, key: EventKey) -> Result<Option<(Bytes, Bytes)>, StoreError> {
        let s = &self.inner;
        let mut command = redis::cmd("HMGET");
        command.arg(s.event_key(key)).arg("head").arg("body");
        let (head, body): (Option<Vec<u8>>, Option<Vec<u8>>) = s.query("read", &command).await?;
        Ok(match (head, body) {
            (Some(head), Some(body)) => Some((head.into(), body.into())),
            _ => None,
        })
    }

    async fn list(
        &self,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<(EventKey, EventRecord)>, StoreError> {
        let s = &self.inner;
        let mut found = Vec::new();
        let mut max = match filter.before {
            Some(before) => format!("({before}"),
            None => "+inf".to_string(),
        };
        let mut scanned = 0;
        while found.len() < limit && scanned < LIST_SCAN_MAX {
            let mut command = redis::cmd("ZREVRANGEBYSCORE");
            command
                .arg(&s.keys.events)
                .arg(&max)
                .arg("-inf")
                .arg("LIMIT")
                .arg(0)
                .arg(LIST_BATCH);
            let keys: Vec<u64> = s.query("list", &command).await?;
            let Some(last) = keys.last() else { break };
            max = format!("({last}");
            scanned += keys.len();
            let records = s.records(&keys).await?;
            for (key, record) in keys.iter().zip(records) {
                let Some(record) = record else { continue };
                // Keys follow arrival order across instances; a minute of
                // slack covers requests that took long to arrive.
                if filter
                    .since_ms
                    .is_some_and(|since| record.received_ms.saturating_add(60_000) < since)
                {
                    return Ok(found);
                }
                if filter.matches(&record) && found.len() < limit {
                    found.push((*key, record));
                }
            }
            if keys.len() < LIST_BATCH {
                break;
            }
        }
        Ok(found)
    }

    async fn pending(&self) -> Result<Vec<(EventKey, EventRecord)>, StoreError> {
        // A fresh instance holds nothing: deliveries left by a stopped one
        // (this host's previous process included) come through `claim` once
        // their lease has passed.
        Ok(Vec::new())
    }

    async fn claim(&self) -> Result<Vec<(EventKey, EventRecord, usize)>, StoreError> {
        let s = &self.inner;
        let lease_ms = s.options.lease.as_millis() as u64;
        let mut cursor = "0-0".to_string();
        let mut entries: Vec<(String, EventKey, usize)> = Vec::new();
        for _ in 0..CLAIM_ROUNDS {
            let mut command = redis::cmd("XAUTOCLAIM");
            command
                .arg(&s.keys.stream)
                .arg(GROUP)
                .arg(&s.consumer)
                .arg(lease_ms)
                .arg(&cursor)
                .arg("COUNT")
                .arg(CLAIM_BATCH);
            let answer: Result<(String, Vec<(String, Option<Vec<String>>)>, redis::Value), _> =
                s.query("take-over", &command).await;
            let (next, claimed, _) = match answer {
                Ok(answer) => answer,
                // No stream or group yet: nothing was ever queued.
                Err(StoreError::Io(error)) if error.contains("NOGROUP") => break,
                Err(error) => return Err(error),
            };
            for (id, fields) in claimed {
                let fields = fields.unwrap_or_default();
                let field = |name: &str| {
                    fields
                        .chunks(2)
                        .find(|pair| pair[0] == name)
                        .and_then(|pair| pair.get(1))
                        .and_then(|v| v.parse::<u64>().ok())
                };
                if let (Some(key), Some(index)) = (field("k"), field("i")) {
                    entries.push((id, key, index as usize));
                }
            }
            if next == "0-0" {
                break;
            }
            cursor = next;
        }
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys: Vec<EventKey> = entries.iter().map(|(_, key, _)| *key).collect();
        keys.sort_unstable();
        keys.dedup();
        let records: HashMap<EventKey, EventRecord> = keys
            .iter()
            .copied()
            .zip(s.records(&keys).await?)
            .filter_map(|(key, record)| Some((key, record?)))
            .collect();
        let mut out = Vec::new();
        let mut stale = Vec::new();
        for (id, key, index) in entries {
            let pending = records.get(&key).and_then(|record| {
                (record.deliveries.get(index)?.status == Status::Pending).then_some(record)
            });
            match pending {
                Some(record) => {
                    // Its own entry, idle past the lease while Redis was out
                    // of reach: still scheduled here, only renewed.
                    if lock(&s.held).insert((key, index), id).is_none() {
                        out.push((key, record.clone(), index));
                    }
                }
                None => stale.push(id),
            }
        }
        if !stale.is_empty() {
            // Finished or purged: the entry outlived its delivery (e.g. a replay
            // replaced it); drop it so it is not taken over again.
            let mut pipe = redis::pipe();
            pipe.cmd("XACK")
                .arg(&s.keys.stream)
                .arg(GROUP)
                .arg(&stale)
                .ignore()
                .cmd("XDEL")
                .arg(&s.keys.stream)
                .arg(&stale)
                .ignore();
            let pipe = &pipe;
            let _: Result<(), _> = s
                .run("ack", |mut conn| async move {
                    pipe.query_async(&mut conn).await
                })
                .await;
        }
        Ok(out)
    }

    fn claim_every(&self) -> Option<Duration> {
        // Often enough that a released delivery (a clean stop) moves within
        // seconds; one XAUTOCLAIM per call when there is nothing to take.
        Some((self.inner.options.lease / 3).min(CLAIM_EVERY_MAX))
    }

    fn holds(&self, key: EventKey, index: usize) -> bool {
        !self.inner.released.load(Ordering::Acquire)
            && lock(&self.inner.held).contains_key(&(key, index))
    }

    fn bytes_used(&self) -> u64 {
        self.inner.bytes.load(Ordering::Acquire)
    }

    fn event_id(&self, key: EventKey) -> String {
        format!("{:08x}{key:012x}", self.inner.tag)
    }

    fn key_of(&self, id: &str) -> Option<EventKey> {
        if id.len() != 20 || !id.is_ascii() {
            return None;
        }
        let (tag, key) = id.split_at(8);
        (u32::from_str_radix(tag, 16).ok()? == self.inner.tag)
            .then(|| u64::from_str_radix(key, 16).ok())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_problems_name_each_weak_setting() {
        let settings = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let good = settings(&[
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("maxmemory-policy", "noeviction"),
        ]);
        assert!(settings_problems(&good).is_empty());
        let everysec = settings(&[
            ("appendonly", "yes"),
            ("appendfsync", "everysec"),
            ("maxmemory-policy", "noeviction"),
        ]);
        assert_eq!(settings_problems(&everysec).len(), 1);
        assert!(settings_problems(&everysec)[0].contains("1 s"));
        let bad = settings(&[("appendonly", "no"), ("maxmemory-policy", "allkeys-lru")]);
        assert_eq!(settings_problems(&bad).len(), 2);
    }

    /// A `redis-server` on a loopback port in a temp dir, killed on drop.
    struct Server {
        child: std::process::Child,
        port: u16,
        _dir: tempfile::TempDir,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn redis_server() -> Server {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let dir = tempfile::tempdir().unwrap();
            let child = std::process::Command::new("redis-server")
                .args([
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--save",
                    "",
                ])
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (the redis-server package) is installed");
            let server = Server {
                child,
                port,
                _dir: dir,
            };
            for _ in 0..200 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        panic!("redis-server did not start");
    }

    fn open(server: &Server, max_bytes: u64) -> RedisStore {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", server.port)).unwrap();
        let options = RedisOptions {
            key_prefix: "t:".into(),
            command_timeout: Duration::from_secs(2),
            lease: Duration::from_secs(1),
            max_bytes,
            errors: None,
        };
        let config = redis::aio::ConnectionManagerConfig::new();
        RedisStore::open(client.into(), config, options, &Handle::current()).unwrap()
    }

    fn event(body: &[u8], upstreams: &[&str]) -> NewEvent {
        NewEvent {
            route: "r".into(),
            upstreams: upstreams.iter().map(|u| u.to_string()).collect(),
            method: "POST".into(),
            head: Bytes::from_static(b"POST / HTTP/1.1\r\nHost: a\r\n\r\n"),
            body: Bytes::copy_from_slice(body),
            request_id: "req".into(),
            event: None,
            received_ms: now_ms(),
            retry: crate::config::RetryPolicy::default(),
        }
    }

    fn attempt() -> Option<AttemptRecord> {
        Some(AttemptRecord {
            at_ms: now_ms(),
            duration_ms: 1,
            status: Some(500),
            error: None,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_records_takes_over_replays_and_purges_on_real_redis() {
        let server = redis_server();
        let one = open(&server, 1 << 20);
        let two = open(&server, 1 << 20);
        let a = one.append(event(b"one", &["x", "y"])).await.unwrap();
        let b = two.append(event(b"two", &["x"])).await.unwrap();
        assert_ne!(a, b, "keys are unique across instances");
        assert_eq!(one.event_id(a), two.event_id(a));
        assert_eq!(two.key_of(&one.event_id(a)), Some(a));
        assert!(one.holds(a, 0) && one.holds(a, 1) && !two.holds(a, 0));
        assert!(two.holds(b, 0));
        // The other instance reads what this one stored.
        let (_, body) = two.payload(a).await.unwrap().unwrap();
        assert_eq!(&body[..], b"one");
        let record = two.get(a).await.unwrap().unwrap();
        assert_eq!(record.deliveries.len(), 2);
        assert_eq!(record.status(), Status::Pending);
        // A retry keeps the lease; delivered and dead release it.
        one.record(a, 0, attempt(), Next::RetryAt(now_ms()))
            .await
            .unwrap();
        one.record(a, 1, attempt(), Next::Dead("gone".into()))
            .await
            .unwrap();
        assert!(one.holds(a, 0) && !one.holds(a, 1));
        let record = two.get(a).await.unwrap().unwrap();
        assert_eq!(record.deliveries[0].tries, 1);
        assert_eq!(record.deliveries[1].status, Status::Dead);
        // Nothing to take over while the holders renew.
        assert!(two.claim().await.unwrap().is_empty());
        // Instance one stops (dropped: no more renewals); after the lease its
        // pending delivery is taken over, and only that one.
        drop(one);
        let mut claimed = Vec::new();
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            claimed = two.claim().await.unwrap();
            if !claimed.is_empty() {
                break;
            }
        }
        let claimed: Vec<(EventKey, usize)> = claimed.iter().map(|(k, _, i)| (*k, *i)).collect();
        assert_eq!(claimed, [(a, 0)]);
        assert!(two.holds(a, 0));
        two.record(a, 0, None, Next::Delivered).await.unwrap();
        two.record(b, 0, None, Next::Delivered).await.unwrap();
        // Listing, newest first, with a filter and paging.
        let all = two.list(&Filter::default(), 10).await.unwrap();
        assert_eq!(all.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [b, a]);
        let dead = Filter {
            status: Some(Status::Dead),
            ..Filter::default()
        };
        assert_eq!(two.list(&dead, 10).await.unwrap()[0].0, a);
        let page = Filter {
            before: Some(b),
            ..Filter::default()
        };
        assert_eq!(two.list(&page, 10).await.unwrap()[0].0, a);
        // A replay makes every finished delivery pending again, held by the replayer.
        assert_eq!(two.replay(a).await.unwrap(), [0, 1]);
        assert!(two.holds(a, 0) && two.holds(a, 1));
        assert_eq!(two.get(a).await.unwrap().unwrap().status(), Status::Pending);
        assert_eq!(two.replay(a).await.unwrap(), Vec::<usize>::new());
        // Purge: only finished events (b); a is pending again.
        assert_eq!(two.purge(now_ms() + 1).await.unwrap(), 1);
        assert!(two.get(b).await.unwrap().is_none());
        assert!(two.get(a).await.unwrap().is_some());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_store_refuses_and_a_down_redis_is_an_error_not_a_hang() {
        let mut server = redis_server();
        let store = open(&server, 400);
        store.append(event(b"small", &["x"])).await.unwrap();
        let full = store.append(event(&[b'x'; 400], &["x"])).await;
        assert_eq!(full, Err(StoreError::Full { max_bytes: 400 }));
        let _ = server.child.kill();
        let _ = server.child.wait();
        let started = std::time::Instant::now();
        let down = store.append(event(b"late", &["x"])).await;
        assert!(matches!(down, Err(StoreError::Io(_))), "{down:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(!store.reachable());
    }

    /// `Shared::run` sends a command once more on a fresh connection when the
    /// first one dropped, which may be after Redis ran it. With every command
    /// run twice, the store does what it does with each run once: one event
    /// (one key, its bytes counted once, one stream entry per delivery, all
    /// held), an attempt recorded once, a replay that reports and holds what
    /// it made pending. Guards the token check at the top of `APPEND` (without
    /// it: two events), `cur == ARGV[3]` in `RECORD` (the attempt counted
    /// twice, or the record given up as "kept changing") and the `again` answer of `REPLAY` (a replay reporting nothing).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_command_run_twice_does_what_it_does_once() {
        let server = redis_server();
        let store = open(&server, 1 << 20);
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", server.port)).unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        store.inner.run_twice.store(true, Ordering::Release);

        let remember = Remember {
            key: "t:seen:evt_1".into(),
            value: "forwarded",
            ttl: Duration::from_secs(60),
        };
        let a = store
            .append_remembering(event(b"one", &["x", "y"]), Some(&remember))
            .await
            .unwrap();
        let all = store.list(&Filter::default(), 10).await.unwrap();
        assert_eq!(all.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [a]);
        let entries: u64 = redis::cmd("XLEN")
            .arg("t:q:stream")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(entries, 2, "one stream entry per delivery");
        let size: u64 = redis::cmd("HGET")
            .arg(format!("t:q:ev:{a}"))
            .arg("size")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(store.bytes_used(), size, "the event's bytes counted once");
        assert!(store.holds(a, 0) && store.holds(a, 1));
        let remembered: Option<String> = redis::cmd("GET")
            .arg(&remember.key)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(remembered.as_deref(), Some("forwarded"));

        store
            .record(a, 0, attempt(), Next::RetryAt(now_ms()))
            .await
            .unwrap();
        assert_eq!(store.get(a).await.unwrap().unwrap().deliveries[0].tries, 1);
        store.record(a, 0, None, Next::Delivered).await.unwrap();
        store
            .record(a, 1, attempt(), Next::Dead("gone".into()))
            .await
            .unwrap();
        let record = store.get(a).await.unwrap().unwrap();
        assert_eq!(record.deliveries[1].tries, 1);
        assert_eq!(record.status(), Status::Dead);
        assert!(!store.holds(a, 0) && !store.holds(a, 1));

        assert_eq!(store.replay(a).await.unwrap(), [0, 1]);
        assert!(store.holds(a, 0) && store.holds(a, 1));
        let entries: u64 = redis::cmd("XLEN")
            .arg("t:q:stream")
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(entries, 2, "one new stream entry per replayed delivery");

        // Reads and lease upkeep run twice answer as once.
        assert_eq!(store.claim().await.unwrap().len(), 0);
        store.inner.renew().await.unwrap();
        assert!(store.holds(a, 0) && store.holds(a, 1));
        assert_eq!(store.payload(a).await.unwrap().unwrap().1, &b"one"[..]);
    }

    #[test]
    fn ids_carry_the_prefix_tag() {
        assert_ne!(tag_of("hookgate:"), tag_of("other:"));
        assert_eq!(tag_of("hookgate:"), tag_of("hookgate:"));
    }
}
