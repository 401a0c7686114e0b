//! Rate limits of routes (governor's GCRA), with bounded per-key state.
//!
//! Owns: what a route's `rate_limit` means ([`RateLimit`], [`Rate`], [`LimitBy`]; the keys
//! are documented below); the per-route limiter ([`RouteLimiter`]) that decides 429 and the
//! `Retry-After` value before the body is read; keeping keyed state bounded
//! ([`RouteLimiter::prune`] and the key cap). Does not own: the table's file layer and its
//! validation (`config::ratelimit`), the `[server]` in-flight cap (`admission`), which client
//! address a request has (`allowlist::client_addr`), answering 429/503 or setting headers
//! (the proxy), running the prune timer (the proxy calls [`RouteLimiter::prune`] every few
//! seconds; this module needs no runtime), the connection to Redis (`cluster`), or metrics
//! names.
//!
//! # Configuration
//! ```toml
//! rate_limit = { rate = "100/s" }                                  # whole route, burst 100
//! rate_limit = { rate = "100/s", burst = 200, per = "ip" }         # per client address
//! rate_limit = { rate = "6000/min", per = "header:X-Shop-Domain" } # per header value
//! rate_limit = { rate = "10/h", per = "ip", max_keys = 500000 }    # larger key table
//! ```
//! - `rate`: `"<count>/<unit>"` with unit `s`, `min` (or `m`), `h`, `d` (also spelled out,
//!   e.g. `second`, `minutes`), or `"<count>/<duration>"` such as `"10/30s"`. The count is
//!   spread evenly: `"6000/min"` refills one request every 10 ms.
//! - `burst`: how many requests may arrive at once. **Defaults to the rate's count**: `"100/s"`
//!   lets 100 through at once, then one every 10 ms. Must be at least 1.
//! - `per`: `"route"` (default; one bucket for the route), `"ip"` (one bucket per client
//!   address; IPv6 clients are grouped by their /64, since one host usually owns a whole /64;
//!   IPv4-mapped IPv6 is IPv4), or `"header:<Name>"` (one bucket per value of that header, all
//!   its lines together; requests without the header share one "missing" bucket).
//! - `max_keys`: the cap on per-key buckets, default [`DEFAULT_MAX_KEYS`] (100 000); only for
//!   `per = "ip"` or `"header:..."`.
//!
//! # Bounded state
//! A per-key bucket costs about [`BYTES_PER_KEY_BOUND`] bytes at most (a 16-byte key and an
//! 8-byte GCRA state in a hash table; header values are hashed with a per-process random key,
//! never stored, so a giant header costs nothing). A bucket is dropped by
//! [`RouteLimiter::prune`] once it is indistinguishable from a fresh one (its burst fully
//! refilled), which the proxy should call on a timer (every 10 s is plenty).
//!
//! When the table holds `max_keys` buckets and a **new** key arrives: the table is pruned at
//! once (at most once per [`FULL_PRUNE_INTERVAL`], so a flood cannot make every request pay
//! for a scan); if it is still full, the new key is checked against one shared **overflow
//! bucket** with the same rate and burst as a single key. Keys already in the table keep their
//! own buckets. So a flood of distinct addresses or header values can neither exhaust memory
//! nor get more than one key's rate while the table is full. The price: while the table is
//! full, genuinely new clients share that bucket with the flood (clients already in the table
//! are unaffected). [`RouteLimiter::overflow_hits`] counts how often a new key was refused a
//! bucket; export it so operators see when `max_keys` is too small.
//!
//! Measured by `tests/ratelimit_memory.rs` (one million distinct IPv4 clients): about 33 bytes
//! per key at the default cap (3.3 MB for 100 000 keys) and 52 bytes per key with the cap
//! raised to one million (52 MB); hash table growth in powers of two makes it vary between
//! about 29 and 57 bytes per key.
//!
//! # Several instances (`[cluster]`)
//! With `[cluster]`, [`check_shared`] decides instead of the route's [`RouteLimiter`]: the
//! same GCRA runs in one Lua script in Redis (on Redis's clock), so the limit holds across
//! every instance. One `EVALSHA` may take several tokens at once ([`Grants`]): the instance
//! spends them locally within [`GRANT_LIFETIME`] (10 ms), so at high rates most requests
//! cost no round trip. The bound: in any window `W`, all instances together admit at most
//! `burst + (W + 10 ms) × rate`, i.e. at most `⌈rate × 10 ms⌉` more than one instance
//! would, whatever the number of instances; below 200/s (or with `burst = 1`) every
//! request asks Redis and the limit is exact. Keys are [`shared_key`]s (named after the
//! route, the interval and the burst, so a reload that changes the limit starts afresh, as
//! on one instance) and expire once their burst refilled. `max_keys` bounds them per
//! instance as it bounds the local table: an instance uses at most `max_keys` per-key
//! buckets of a route in Redis at once (each counted until Redis drops it); a new key beyond
//! that shares the route's one overflow bucket (counted in [`RouteLimiter::overflow_hits`]).
//! So Redis holds at most `instances × (max_keys + 1)` keys of a route (about 100 bytes
//! each), whatever a flood of distinct addresses or header values sends. While Redis does
//! not answer, `[cluster]
//! on_unavailable` decides: `"local"` uses the [`RouteLimiter`] (counted), `"reject"`
//! answers 503.
//!
//! # Time
//! [`RouteLimiter`] is generic over governor's [`Clock`]; production uses the default
//! (quanta) clock, tests use `governor::clock::FakeRelativeClock` and never sleep.

use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{NotUntil, Quota, RateLimiter};
use http::{HeaderMap, HeaderName};

/// Default cap on per-key buckets of one route limiter.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Planning figure for the memory of one per-key bucket, including hash table slack
/// (asserted by `tests/ratelimit_memory.rs`).
pub const BYTES_PER_KEY_BOUND: usize = 64;

/// A full key table is pruned on demand at most this often.
pub const FULL_PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// IPv6 clients are keyed by this prefix length (a multiple of 8).
pub const IPV6_KEY_PREFIX_LEN: u8 = 64;
const _: () = assert!(IPV6_KEY_PREFIX_LEN.is_multiple_of(8) && IPV6_KEY_PREFIX_LEN <= 128);

/// The longest refill time (`burst` × interval) accepted.
pub const MAX_REFILL: Duration = Duration::from_secs(366 * 24 * 3600);

// ---------------------------------------------------------------------------------------------
// Compiled configuration (the file layer and its validation: `config::ratelimit`)

/// A parsed rate: `count` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl Rate {
    /// The time to refill one request.
    pub fn interval(&self) -> Duration {
        self.period / self.count.get()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(self.period)
        )
    }
}

/// What a route's requests are counted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitBy {
    /// One bucket for the whole route.
    Route,
    /// One bucket per client address (IPv6 by /64).
    Ip,
    /// One bucket per value of this header; absent header → one shared bucket.
    Header(HeaderName),
}

impl fmt::Display for LimitBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitBy::Route => f.write_str("route"),
            LimitBy::Ip => f.write_str("ip"),
            LimitBy::Header(name) => write!(f, "header:{name}"),
        }
    }
}

/// A validated rate limit. Comparable, so a reload can keep a route's [`RouteLimiter`] (and
/// its state) when the limit did not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    pub rate: Rate,
    pub burst: NonZeroU32,
    pub by: LimitBy,
    /// Cap on per-key buckets (unused for [`LimitBy::Route`]).
    pub max_keys: usize,
}

impl RateLimit {
    /// The governor quota: one request per `rate.interval()`, `burst` at once.
    pub fn quota(&self) -> Quota {
        Quota::with_period(self.rate.interval())
            .expect("interval checked non-zero at compile time")
            .allow_burst(self.burst)
    }
}

// ---------------------------------------------------------------------------------------------
// Limiter

/// The key of a request under one route's limit; from [`RouteLimiter::key`], and only
/// meaningful to the limiter that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitKey(KeyKind);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum KeyKind {
    Route,
    Bucket(BucketKey),
    MissingHeader,
    /// The shared overflow bucket (`[cluster]`): a new key while this
    /// instance already uses `max_keys` shared buckets of the route.
    Overflow,
}

/// 16 bytes: an IPv6 address (IPv4 mapped, IPv6 cut to its /64) or a 64-bit header hash.
type BucketKey = [u8; 16];

/// A request refused by a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// How long until one more request would be allowed (exact).
    pub wait: Duration,
}

impl RateLimited {
    /// The `Retry-After` value: whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        secs.max(1)
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited; retry after {}s", self.retry_after_secs())
    }
}

type DirectLimiter<C> =
    RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;
type KeyedLimiter<C> =
    RateLimiter<BucketKey, CappedStore, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The limiter of one route. Share it behind an `Arc`; all methods take `&self`.
pub struct RouteLimiter<C: Clock = DefaultClock> {
    config: RateLimit,
    state: LimiterState<C>,
    /// Tokens of the shared bucket (`[cluster]`) granted to this instance.
    grants: Grants,
}

enum LimiterState<C: Clock> {
    Route(DirectLimiter<C>),
    Keyed(Box<KeyedState<C>>),
}

struct KeyedState<C: Clock> {
    limiter: KeyedLimiter<C>,
    counters: Arc<Counters>,
    /// The bucket of requests without the header (`per = "header:..."`).
    missing: DirectLimiter<C>,
    hasher: RandomState,
    created: C::Instant,
    /// Nanoseconds after `created` of the last prune forced by a full table; `NEVER` if none.
    last_full_prune: AtomicU64,
    /// The shared buckets (`[cluster]`) this instance uses, bounded like the table.
    shared: SharedKeys,
}

const NEVER: u64 = u64::MAX;

impl RouteLimiter<DefaultClock> {
    /// A limiter on the real (quanta) clock.
    pub fn new(config: &RateLimit) -> Self {
        Self::with_clock(config, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RouteLimiter<C> {
    /// A limiter on the given clock (tests: `FakeRelativeClock`).
    pub fn with_clock(config: &RateLimit, clock: C) -> Self {
        let quota = config.quota();
        let state = match &config.by {
            LimitBy::Route => {
                LimiterState::Route(RateLimiter::direct_with_clock(quota, clock.clone()))
            }
            LimitBy::Ip | LimitBy::Header(_) => {
                let counters = Arc::new(Counters {
                    len: AtomicUsize::new(0),
                    max: config.max_keys.max(1),
                    overflow_hits: AtomicU64::new(0),
                });
                let store = CappedStore {
                    map: DashMap::new(),
                    overflow: InMemoryState::default(),
                    counters: Arc::clone(&counters),
                };
                LimiterState::Keyed(Box::new(KeyedState {
                    created: clock.now(),
                    limiter: RateLimiter::new(quota, store, clock.clone()),
                    counters,
                    missing: RateLimiter::direct_with_clock(quota, clock),
                    hasher: RandomState::new(),
                    last_full_prune: AtomicU64::new(NEVER),
                    shared: SharedKeys::new(config.max_keys.max(1)),
                }))
            }
        };
        RouteLimiter {
            config: config.clone(),
            state,
            grants: Grants::new(config),
        }
    }
}

impl<C: Clock> RouteLimiter<C> {
    /// The limit this limiter enforces.
    pub fn config(&self) -> &RateLimit {
        &self.config
    }

    /// The key of a request: nothing (per route), the client address, or the header value.
    pub fn key(&self, client: IpAddr, headers: &HeaderMap) -> LimitKey {
        let LimiterState::Keyed(keyed) = &self.state else {
            return LimitKey(KeyKind::Route);
        };
        match &self.config.by {
            LimitBy::Route => LimitKey(KeyKind::Route),
            LimitBy::Ip => LimitKey(KeyKind::Bucket(ip_key(client))),
            LimitBy::Header(name) => {
                let mut values = headers.get_all(name).iter().peekable();
                if values.peek().is_none() {
                    return LimitKey(KeyKind::MissingHeader);
                }
                let mut hasher = keyed.hasher.build_hasher();
                for value in values {
                    hasher.write_usize(value.len());
                    hasher.write(value.as_bytes());
                }
                let mut key = [0u8; 16];
                key[..8].copy_from_slice(&hasher.finish().to_le_bytes());
                LimitKey(KeyKind::Bucket(key))
            }
        }
    }

    /// Takes one request from the key's bucket, or says how long to wait.
    pub fn check_key(&self, key: &LimitKey) -> Result<(), RateLimited> {
        match (&self.state, key.0) {
            (LimiterState::Route(limiter), _) => check_direct(limiter),
            (LimiterState::Keyed(keyed), KeyKind::Bucket(bucket)) => {
                keyed.prune_if_full();
                keyed
                    .limiter
                    .check_key(&bucket)
                    .map_err(|not_until| limited(&not_until, keyed.limiter.clock()))
            }
            (LimiterState::Keyed(keyed), KeyKind::MissingHeader | KeyKind::Route) => {
                check_direct(&keyed.missing)
            }
            // Only `check_shared` makes it, and asks Redis with it.
            (LimiterState::Keyed(keyed), KeyKind::Overflow) => keyed
                .limiter
                .check_key(&OVERFLOW_BUCKET)
                .map_err(|not_until| limited(&not_until, keyed.limiter.clock())),
        }
    }

    /// `check_key(&key(client, headers))`: what the proxy calls before reading the body.
    pub fn check(&self, client: IpAddr, headers: &HeaderMap) -> Result<(), RateLimited> {
        self.check_key(&self.key(client, headers))
    }

    /// Drops buckets that are indistinguishable from fresh ones and releases table memory,
    /// and the shared buckets' grants that ran out. O(number of keys); call it on a timer.
    /// Returns the number of keys left.
    pub fn prune(&self) -> usize {
        let now = std::time::Instant::now();
        self.grants.prune(now);
        match &self.state {
            LimiterState::Route(_) => 0,
            LimiterState::Keyed(keyed) => {
                keyed.limiter.retain_recent();
                keyed.limiter.shrink_to_fit();
                keyed.shared.prune(now);
                self.keys()
            }
        }
    }

    /// Number of per-key buckets held (0 per route): in the local table, plus
    /// the shared buckets (`[cluster]`) this instance uses in Redis.
    pub fn keys(&self) -> usize {
        match &self.state {
            LimiterState::Route(_) => 0,
            LimiterState::Keyed(keyed) => {
                keyed.counters.len.load(Ordering::Acquire) + keyed.shared.len()
            }
        }
    }

    /// How many new keys were checked against the overflow bucket because the table was full
    /// (the local table, or with `[cluster]` this instance's shared buckets).
    pub fn overflow_hits(&self) -> u64 {
        match &self.state {
            LimiterState::Route(_) => 0,
            LimiterState::Keyed(keyed) => keyed.counters.overflow_hits.load(Ordering::Relaxed),
        }
    }
}

impl<C: Clock> fmt::Debug for RouteLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouteLimiter")
            .field("config", &self.config)
            .field("keys", &self.keys())
            .finish()
    }
}

impl<C: Clock> KeyedState<C> {
    /// When the table is full, prune it, unless that was done less than
    /// `FULL_PRUNE_INTERVAL` ago. One thread prunes; the others go on.
    fn prune_if_full(&self) {
        if self.counters.len.load(Ordering::Acquire) < self.counters.max {
            return;
        }
        let now = self
            .limiter
            .clock()
            .now()
            .duration_since(self.created)
            .as_u64();
        let last = self.last_full_prune.load(Ordering::Acquire);
        let interval = FULL_PRUNE_INTERVAL.as_nanos() as u64;
        if last != NEVER && now.saturating_sub(last) < interval {
            return;
        }
        if self
            .last_full_prune
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            self.limiter.retain_recent();
        }
    }
}

fn check_direct<C: Clock>(limiter: &DirectLimiter<C>) -> Result<(), RateLimited> {
    limiter
        .check()
        .map_err(|not_until| limited(&not_until, limiter.clock()))
}

fn limited<C: Clock>(not_until: &NotUntil<C::Instant>, clock: &C) -> RateLimited {
    RateLimited {
        wait: not_until.wait_time_from(clock.now()),
    }
}

/// IPv4 (and IPv4-mapped IPv6) as `::ffff:a.b.c.d`; IPv6 cut to its /64.
fn ip_key(addr: IpAddr) -> BucketKey {
    match addr.to_canonical() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[usize::from(IPV6_KEY_PREFIX_LEN / 8)..].fill(0);
            octets
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The capped keyed state store

struct Counters {
    /// Keys in the map (exact: slots are reserved before insertion).
    len: AtomicUsize,
    max: usize,
    overflow_hits: AtomicU64,
}

/// A governor state store: a `DashMap` of per-key GCRA states that never holds more than
/// `max` keys; new keys beyond that share the `overflow` state.
struct CappedStore {
    map: DashMap<BucketKey, InMemoryState>,
    overflow: InMemoryState,
    counters: Arc<Counters>,
}

impl StateStore for CappedStore {
    type Key = BucketKey;

    fn measure_and_replace<T, F, E>(&self, key: &BucketKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        if let Some(state) = self.map.get(key) {
            return StateStore::measure_and_replace(&*state, &NotKeyed::NonKey, f);
        }
        // Reserve a slot before inserting so concurrent inserts cannot exceed the cap.
        let counters = &self.counters;
        let reserved = counters
            .len
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < counters.max).then_some(n + 1)
            });
        if reserved.is_err() {
            counters.overflow_hits.fetch_add(1, Ordering::Relaxed);
            return StateStore::measure_and_replace(&self.overflow, &NotKeyed::NonKey, f);
        }
        match self.map.entry(*key) {
            Entry::Occupied(entry) => {
                // Another thread inserted it meanwhile: give the slot back.
                counters.len.fetch_sub(1, Ordering::AcqRel);
                StateStore::measure_and_replace(entry.get(), &NotKeyed::NonKey, f)
            }
            Entry::Vacant(entry) => {
                let state = entry.insert(InMemoryState::default());
                StateStore::measure_and_replace(&*state, &NotKeyed::NonKey, f)
            }
        }
    }
}

impl ShrinkableKeyedStateStore<BucketKey> for CappedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        self.map.retain(|_, state| {
            let keep = theoretical_arrival(state).is_some_and(|tat| tat > drop_below);
            if !keep {
                self.counters.len.fetch_sub(1, Ordering::AcqRel);
            }
            keep
        });
    }

    fn shrink_to_fit(&self) {
        self.map.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.counters.len.load(Ordering::Acquire)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads a state's theoretical arrival time without changing it: the closure refuses the
/// update and hands back what it saw.
fn theoretical_arrival(state: &InMemoryState) -> Option<Nanos> {
    StateStore::measure_and_replace(state, &NotKeyed::NonKey, |tat| {
        Err::<((), Nanos), Option<Nanos>>(tat)
    })
    .err()
    .flatten()
}

// ---------------------------------------------------------------------------------------------
// One limit across instances (`[cluster]`)

/// How long tokens granted by a shared bucket may be spent on the instance that
/// asked for them, counted from the moment it asked (before Redis granted them).
pub const GRANT_LIFETIME: Duration = Duration::from_millis(10);

/// The most tokens one request to Redis takes from a shared bucket.
pub const MAX_GRANT: u32 = 256;

impl RateLimit {
    /// How many tokens one `EVALSHA` may take from the shared bucket at most:
    /// `min(MAX_GRANT, burst, ⌊GRANT_LIFETIME / interval⌋)`, at least 1 (the
    /// interval as the script sees it, in whole microseconds). 1 below
    /// 200 requests a second: every request then asks Redis.
    pub fn max_grant(&self) -> u32 {
        let interval = shared_interval_micros(self);
        let in_lifetime = (GRANT_LIFETIME.as_micros() as u64 / interval).min(u64::from(MAX_GRANT));
        (in_lifetime as u32).min(self.burst.get()).max(1)
    }
}

/// The interval `T` of the shared GCRA in microseconds, at least 1.
/// Rounded up: a shared bucket refills no faster than the configured rate
/// (7000/s has an interval of 142.857 µs: 143, not 142, which refilled at
/// 7042/s).
fn shared_interval_micros(limit: &RateLimit) -> u64 {
    u64::try_from(limit.rate.interval().as_nanos().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The GCRA of governor, run atomically in Redis on Redis's clock (`TIME`), so
/// every instance and every clock skew between them sees one bucket. Times are
/// microseconds. `KEYS[1]`: the bucket. `ARGV[1]`: the interval `T`, `ARGV[2]`:
/// the tolerance `tau = T × (burst − 1)`, `ARGV[3]`: how many tokens the
/// instance wants (at least 1). The key holds the theoretical arrival time
/// (TAT) and expires when it is reached: a bucket whose burst refilled is the
/// same as no bucket. Grants as many of the wanted tokens as the bucket holds
/// (the n-th is there while `TAT + (n − 1) × T − now ≤ tau`), each as if one
/// request had arrived now. Returns `{granted, 0, life}` or, when not even one
/// is there, `{0, wait, life}`: for one token, exactly the one-request GCRA.
/// `life` is how long the key lives from now (0: it does not exist).
const GCRA_SCRIPT: &str = r#"
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1])) or now, now)
local there = math.floor((tau - (tat - now)) / interval) + 1
if there < 1 then
  return {0, tat - tau - now, tat - now}
end
local granted = math.min(want, there)
local next_tat = tat + granted * interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000))
return {granted, 0, next_tat - now}
"#;

fn gcra_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(GCRA_SCRIPT))
}

/// The Redis key of a request's bucket under `route`'s limit, the same on every
/// instance: `<prefix>rl:<route>:<T>-<burst>:route`, `…:ip:<32 hex>` (the
/// address as the local limiter keys it, IPv6 by /64) or `…:h:<32 hex>` (a
/// SHA-256 prefix of the header's lines, so key names stay short whatever the
/// header holds) and `…:h:missing`. `<T>` is the emission interval in
/// microseconds and `<burst>` the burst: a reload that changes either starts
/// from fresh buckets, as a single instance does (`state` keeps a route's local
/// limiter only when its `rate_limit` is unchanged), instead of keeping the old
/// bucket's timing (a `2/min` bucket made `Retry-After: 59` answers after a
/// reload to `100/s`).
pub fn shared_key(
    cluster: &crate::cluster::ClusterClient,
    route: &str,
    limit: &RateLimit,
    client: IpAddr,
    headers: &HeaderMap,
) -> String {
    shared_key_of(
        cluster,
        route,
        limit,
        &shared_bucket(limit, client, headers),
    )
}

/// The last part of a [`shared_key`]: the request's bucket.
fn shared_bucket(limit: &RateLimit, client: IpAddr, headers: &HeaderMap) -> String {
    match &limit.by {
        LimitBy::Route => "route".to_string(),
        LimitBy::Ip => format!("ip:{}", hex::encode(ip_key(client))),
        LimitBy::Header(name) => {
            let mut values = headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                "h:missing".to_string()
            } else {
                use sha2::Digest;
                let mut hasher = sha2::Sha256::new();
                for value in values {
                    hasher.update((value.len() as u64).to_le_bytes());
                    hasher.update(value.as_bytes());
                }
                format!("h:{}", hex::encode(&hasher.finalize()[..16]))
            }
        }
    }
}

/// `<prefix>rl:<route>:<T>-<burst>:<bucket>` (see [`shared_key`]).
fn shared_key_of(
    cluster: &crate::cluster::ClusterClient,
    route: &str,
    limit: &RateLimit,
    bucket: &str,
) -> String {
    let timing = format!("{}-{}", shared_interval_micros(limit), limit.burst);
    cluster.key(&["rl", route, &timing, bucket])
}

/// Takes one request from the shared bucket of the request's key under
/// `route`'s limit: from the tokens Redis granted this instance less than
/// [`GRANT_LIFETIME`] ago, else with one `EVALSHA` that asks for up to
/// [`RateLimit::max_grant`] tokens (see [`Grants`]). Same GCRA and
/// `Retry-After` as [`RouteLimiter`]. `Err` when Redis did not answer in time;
/// the caller applies `on_unavailable`.
///
/// `max_keys` bounds the shared buckets as it bounds the local table: this
/// instance uses at most `max_keys` per-key buckets of the route in Redis
/// (each counted until Redis drops it, as the script reports); a new key
/// while they are all in use is checked against the route's one overflow
/// bucket `…:<T>-<burst>:overflow` (counted in
/// [`RouteLimiter::overflow_hits`]). So a flood of distinct addresses or
/// header values adds at most `max_keys + 1` keys per instance to Redis.
pub async fn check_shared(
    cluster: &crate::cluster::ClusterClient,
    route: &str,
    limiter: &RouteLimiter,
    client: IpAddr,
    headers: &HeaderMap,
) -> Result<Result<(), RateLimited>, crate::cluster::ClusterError> {
    let limit = &limiter.config;
    let mut now = std::time::Instant::now();
    let mut local = limiter.key(client, headers);
    let shared = match (&limiter.state, local.0) {
        (LimiterState::Keyed(keyed), KeyKind::Bucket(bucket)) => {
            if !keyed.shared.admit(bucket, now) {
                keyed.counters.overflow_hits.fetch_add(1, Ordering::Relaxed);
                local = LimitKey(KeyKind::Overflow);
            }
            Some(&keyed.shared)
        }
        _ => None,
    };
    let (mut waits, mut wakes) = (0, 0);
    let mut ticket = None;
    let asking = loop {
        match (limiter.grants).take_after_wait(local, now, waits < MAX_WAITS, ticket) {
            Take::Spent => return Ok(Ok(())),
            Take::Refused(wait) => return Ok(Err(RateLimited { wait })),
            Take::Ask(mut asking) if asking.is_lead() => {
                // The requests of this turn of the event loop find the lead on
                // its way and wait: it asks once they are counted.
                tokio::task::yield_now().await;
                asking.count_waiting();
                break asking;
            }
            Take::Ask(asking) => break asking,
            Take::Wait(answered, place) => {
                // A wake by another key's answer keeps the place and is not
                // a wait of its own; bounded too (`MAX_WAKES`).
                if ticket == Some(place) && wakes < MAX_WAKES {
                    wakes += 1;
                } else {
                    waits += 1;
                }
                ticket = Some(place);
                // One round trip at most; a lead that never answers ends
                // within `command_timeout` and wakes this one too.
                let _ =
                    pingora::prelude::timeout(cluster.settings().command_timeout, answered).await;
                now = std::time::Instant::now();
            }
        }
    };
    let key = match local.0 {
        KeyKind::Overflow => shared_key_of(cluster, route, limit, "overflow"),
        _ => shared_key(cluster, route, limit, client, headers),
    };
    let interval = shared_interval_micros(limit);
    let tau = interval.saturating_mul(u64::from(limit.burst.get() - 1));
    let mut command = crate::cluster::evalsha(gcra_script(), &key);
    command.arg(interval).arg(tau).arg(asking.tokens());
    let command = &command;
    let (granted, wait, life): (i64, i64, i64) = cluster
        .run(
            crate::cluster::Operation::RateLimit,
            |mut connection| async move {
                crate::cluster::invoke(&mut connection, gcra_script(), command).await
            },
        )
        .await?;
    let wait = Duration::from_micros(wait.max(1) as u64);
    if granted >= 1 {
        asking.granted(u32::try_from(granted).unwrap_or(u32::MAX));
    } else {
        asking.refused(wait);
    }
    if let (Some(shared), KeyKind::Bucket(bucket)) = (shared, local.0) {
        shared.lives_until(bucket, now + Duration::from_micros(life.max(0) as u64));
    }
    Ok(if granted >= 1 {
        Ok(())
    } else {
        Err(RateLimited { wait })
    })
}

/// The bucket key of the local overflow state (never a real key's: `check_key`
/// of [`KeyKind::Overflow`] is not called in practice).
const OVERFLOW_BUCKET: BucketKey = [0xff; 16];

/// The per-key shared buckets (`[cluster]`) of one route this instance uses in
/// Redis, each until Redis drops it (as the script last reported, or
/// [`FULL_PRUNE_INTERVAL`] while the first answer is awaited): at most `max`.
struct SharedKeys {
    max: usize,
    table: std::sync::Mutex<SharedTable>,
}

#[derive(Default)]
struct SharedTable {
    until: std::collections::HashMap<BucketKey, std::time::Instant>,
    /// The last prune forced by a full table.
    last_full_prune: Option<std::time::Instant>,
}

impl SharedKeys {
    fn new(max: usize) -> SharedKeys {
        SharedKeys {
            max,
            table: std::sync::Mutex::new(SharedTable::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SharedTable> {
        // Plain numbers: consistent after any panic.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `bucket` may use a shared bucket of its own: it already does,
    /// or there is room (after dropping the expired ones, at most once per
    /// [`FULL_PRUNE_INTERVAL`] while full), and it is counted from now.
    fn admit(&self, bucket: BucketKey, now: std::time::Instant) -> bool {
        let mut table = self.lock();
        if table.until.contains_key(&bucket) {
            return true;
        }
        if table.until.len() >= self.max {
            let due = table
                .last_full_prune
                .is_none_or(|at| now.saturating_duration_since(at) >= FULL_PRUNE_INTERVAL);
            if !due {
                return false;
            }
            table.last_full_prune = Some(now);
            table.until.retain(|_, until| *until > now);
            if table.until.len() >= self.max {
                return false;
            }
        }
        table.until.insert(bucket, now + FULL_PRUNE_INTERVAL);
        true
    }

    /// Redis keeps `bucket`'s key until `until` (from the script's answer).
    fn lives_until(&self, bucket: BucketKey, until: std::time::Instant) {
        if let Some(entry) = self.lock().until.get_mut(&bucket) {
            *entry = until;
        }
    }

    fn prune(&self, now: std::time::Instant) {
        let mut table = self.lock();
        table.until.retain(|_, until| *until > now);
        table.until.shrink_to_fit();
    }

    fn len(&self) -> usize {
        self.lock().until.len()
    }
}

/// The tokens of shared buckets that Redis granted this instance and that are
/// not spent yet, by the local key of the bucket: the bounded local budget of a
/// `[cluster]` rate limit.
///
/// A request spends a token held here if one is, without asking Redis. Else it
/// asks Redis for `want` tokens (one for itself, the rest kept here for
/// [`GRANT_LIFETIME`] from the moment of asking; unspent ones are then dropped,
/// never given back or kept longer). `want` adapts to this instance's own
/// traffic on the key: it starts at 1, doubles (up to
/// [`RateLimit::max_grant`]) each time the previous grant was whole and spent
/// within its lifetime, halves when tokens were left over, and falls back to 1
/// whenever Redis grants fewer than asked (the bucket is nearly empty: then
/// each request asks Redis for one, as without grants). One request on behalf
/// of a key (the lead) is on its way at a time. Requests that may wait
/// ([`MAX_WAITS`]) wait for its answer with a [`Ticket`]; the lead asks for one
/// more token per waiter, and its answer hands the spare tokens to the first
/// waiters (spent then, within the grant's lifetime, however late they run:
/// under saturation a woken task may run more than 10 ms later, and found its
/// token expired). Others ask for their own token only.
///
/// **Refusals are remembered.** When Redis refuses a key (not one token is
/// there), the GCRA also says when the next one will be: `wait` after the
/// script ran, which is no earlier than `wait` after this instance asked.
/// Until then, for at most [`REFUSAL_MEMORY`], every request of the key on
/// this instance is refused here, with the rest of that wait as its
/// `Retry-After`, and Redis is not asked: it would refuse them too, since a
/// bucket's TAT only moves forward (other instances can only spend tokens,
/// never add them). The waiters of a refused lead are refused the same way.
/// So a flood above the limit costs one round trip per key and refill, or per
/// second when the refill is slower, not one per request, and nothing is
/// admitted or refused that Redis would have decided otherwise, unless Redis
/// lost the bucket (a restart without persistence, a failover to a replica
/// behind it): then the key stays refused here for at most a second more.
/// This holds for `max_grant` 1 too.
///
/// **The bound.** Every request admitted spends a token the shared GCRA granted
/// at most [`GRANT_LIFETIME`] earlier. So in any window of length `W`, all
/// instances together admit at most what the GCRA alone admits in `W + 10 ms`:
/// `burst + (W + 10 ms) × rate`, i.e. at most `⌈rate × 10 ms⌉` more than one
/// instance would (1% of one second's rate), however many instances there are.
/// Handing a token to a waiter spends it at the lead's answer, which is
/// within that lifetime or hands nothing. When `max_grant` is 1 (rate under
/// 200/s, or `burst = 1`) nothing is held and the limit is exact. The other
/// way, an instance holds at most `max_grant − 1` tokens that another instance
/// might have used, for at most 10 ms.
///
/// Bounded: at most `max_keys` entries (1 per route), plus the route's
/// overflow bucket; a key without an entry when the table is full asks Redis
/// for one token per request, and its refusals are not remembered.
pub struct Grants {
    max_grant: u32,
    max_keys: usize,
    table: std::sync::Mutex<std::collections::HashMap<LimitKey, Grant>>,
    /// Woken each time a lead request's answer (or its failure) is recorded:
    /// the requests that found it on its way wait for it ([`Take::Wait`]).
    answered: tokio::sync::Notify,
    /// The last lead's round, over every key: a ticket never matches a round
    /// of an entry pruned and made again.
    rounds: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Grant {
    /// Tokens left to spend.
    tokens: u32,
    /// Until when they may be spent: the moment of asking plus [`GRANT_LIFETIME`].
    until: std::time::Instant,
    /// How many the next request to Redis asks for (1 ..= max_grant).
    want: u32,
    /// A request on behalf of this entry is on its way.
    asking: bool,
    /// The last such request got all it asked for.
    full: bool,
    /// The round of this entry's last lead (unique over all keys): the round
    /// a waiter's [`Ticket`] is for.
    round: u64,
    /// The last lead's answer came after its grant's lifetime (the event loop
    /// lags): the next lead asks for its `want` only, not one per waiter,
    /// whose tokens would be dropped unspent.
    late: bool,
    /// Requests waiting for the answer of this round's lead ([`Take::Wait`]),
    /// numbered 1.. by their tickets.
    waiting: u32,
    /// Redis refused the key: refused here until then (see [`Grants`]).
    refused_until: Option<std::time::Instant>,
    /// When Redis said the key's next token is due: the `Retry-After` of a
    /// refusal remembered here.
    next_token: std::time::Instant,
    /// The round whose waiters were last handed tokens, and how many of them
    /// (the tickets `1..=handed`).
    handed: (u64, u32),
}

impl Grant {
    /// A key's entry with nothing held, asked or refused.
    fn new(now: std::time::Instant) -> Grant {
        Grant {
            tokens: 0,
            until: now,
            want: 1,
            asking: false,
            full: false,
            round: 0,
            late: false,
            waiting: 0,
            handed: (0, 0),
            refused_until: None,
            next_token: now,
        }
    }

    /// The wait for the key's next token, if a refusal is remembered at `now`.
    fn refused(&mut self, now: std::time::Instant) -> Option<Duration> {
        let until = self.refused_until?;
        if now < until {
            return Some(self.next_token.saturating_duration_since(now));
        }
        self.refused_until = None;
        None
    }
}

/// A waiting request's place: its round and its number in it. A lead's answer
/// hands its spare tokens to the first of its waiters, so a waiter woken late
/// (behind a long run queue) is still admitted by the token spent for it while
/// the grant was valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    round: u64,
    number: u32,
}

/// What [`Grants::take`] decided for one request.
pub enum Take<'g> {
    /// A granted token was spent: admitted.
    Spent,
    /// Redis refused this key's last request for tokens and will until `wait`
    /// from now: refused without asking it again (see [`Grants`]).
    Refused(Duration),
    /// Ask Redis; report the answer with [`Asking::granted`].
    Ask(Asking<'g>),
    /// Another request is asking Redis for this key's tokens: wait for its
    /// answer (bounded by the caller), then take again with the ticket
    /// ([`Grants::take_after_wait`]).
    Wait(tokio::sync::futures::Notified<'g>, Ticket),
}

/// How long a refusal is remembered at most ([`Grants`]): a bucket Redis lost
/// (restarted without persistence, a failover to a replica behind it) is
/// asked again within this, whatever wait the lost bucket gave.
pub const REFUSAL_MEMORY: Duration = Duration::from_secs(1);

/// The route's one overflow bucket: always has an entry in [`Grants`], beside
/// its `max_keys`.
const OVERFLOW_KEY: LimitKey = LimitKey(KeyKind::Overflow);

/// How many times one request waits for another one's answer
/// ([`Take::Wait`]) before it asks Redis for its own token.
pub const MAX_WAITS: u32 = 3;

/// How many times one request, while waiting, may be woken by the answer of
/// another key's lead (one `Notify` wakes them all) without it counting as
/// one of its [`MAX_WAITS`].
pub const MAX_WAKES: u32 = 16;

/// One request to Redis for tokens of a shared bucket. Dropping it without
/// [`Asking::granted`] (no answer, cancelled) keeps nothing.
pub struct Asking<'g> {
    grants: &'g Grants,
    key: LimitKey,
    tokens: u32,
    at: std::time::Instant,
    /// Asks on behalf of the key's entry (else for its own token only).
    lead: bool,
    /// The entry's round this lead asks for (0 for others).
    round: u64,
    done: bool,
}

impl Asking<'_> {
    /// How many tokens to ask for (at least 1).
    pub fn tokens(&self) -> u32 {
        self.tokens
    }

    /// A lead asks, besides its entry's `want`, for one token per request
    /// waiting for it by now (up to [`RateLimit::max_grant`]), so a burst
    /// larger than `want` is served by one round trip, not by its requests
    /// asking one token each. Call it just before sending.
    pub fn count_waiting(&mut self) {
        if self.lead {
            self.tokens = self.grants.with_waiting(self.key, self.tokens);
            // The grant's lifetime counts from the ask, which is now, not
            // from before the yield.
            self.at = std::time::Instant::now();
        }
    }

    /// Whether it asks on behalf of its key's entry (else for its own token).
    pub fn is_lead(&self) -> bool {
        self.lead
    }

    /// Redis granted `granted` tokens (0: refused): one is this request's, the
    /// rest are kept until the moment of asking plus [`GRANT_LIFETIME`].
    pub fn granted(self, granted: u32) {
        self.granted_at(granted, std::time::Instant::now());
    }

    /// [`Asking::granted`], answered at `now`.
    pub fn granted_at(mut self, granted: u32, now: std::time::Instant) {
        self.done = true;
        self.grants.granted(&self, granted, None, now);
    }

    /// Redis refused: not one token is there, and the next one is `wait`
    /// after the script ran. The key is refused here until `wait` after this
    /// request asked (see [`Grants`]).
    pub fn refused(self, wait: Duration) {
        self.refused_at(wait, std::time::Instant::now());
    }

    /// [`Asking::refused`], answered at `now`.
    pub fn refused_at(mut self, wait: Duration, now: std::time::Instant) {
        self.done = true;
        self.grants.granted(&self, 0, Some(wait), now);
    }
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        if !self.done && self.lead {
            // No answer: nothing is kept, and the next request leads.
            self.grants
                .granted(self, 1, None, std::time::Instant::now());
        }
    }
}

impl Grants {
    fn new(limit: &RateLimit) -> Grants {
        Grants {
            max_grant: limit.max_grant(),
            max_keys: match limit.by {
                LimitBy::Route => 1,
                LimitBy::Ip | LimitBy::Header(_) => limit.max_keys.max(1),
            },
            table: std::sync::Mutex::new(std::collections::HashMap::new()),
            answered: tokio::sync::Notify::new(),
            rounds: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<LimitKey, Grant>> {
        // The table holds plain numbers: consistent after any panic.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spends a token granted for `key` if one is still valid at `now`, or says
    /// how many to ask Redis for.
    ///
    /// While a lead request for the key is on its way, a request that may
    /// still wait (`may_wait`) gets [`Take::Wait`] instead of asking Redis for
    /// its one token: under concurrency, the requests that arrive during a
    /// round trip then share the lead's grant instead of each costing one.
    pub fn take(&self, key: LimitKey, now: std::time::Instant, may_wait: bool) -> Take<'_> {
        self.take_after_wait(key, now, may_wait, None)
    }

    /// [`Grants::take`] for a request that waited with `ticket`: admitted if
    /// the lead it waited for handed it a token.
    pub fn take_after_wait(
        &self,
        key: LimitKey,
        now: std::time::Instant,
        may_wait: bool,
        ticket: Option<Ticket>,
    ) -> Take<'_> {
        let ask = |tokens, lead, round| {
            Take::Ask(Asking {
                grants: self,
                key,
                tokens,
                at: now,
                lead,
                round,
                done: false,
            })
        };
        let mut table = self.lock();
        if self.max_grant == 1 {
            // Nothing is held or waited for: an entry only remembers a refusal.
            return match table.get_mut(&key).and_then(|grant| grant.refused(now)) {
                Some(wait) => Take::Refused(wait),
                None => ask(1, false, 0),
            };
        }
        let Some(grant) = self.entry(&mut table, key, now) else {
            return ask(1, false, 0);
        };
        if let Some(ticket) = ticket {
            let (round, handed) = grant.handed;
            if ticket.round == round && ticket.number <= handed {
                return Take::Spent;
            }
        }
        if let Some(wait) = grant.refused(now) {
            return Take::Refused(wait);
        }
        let valid = now < grant.until;
        if grant.tokens > 0 && valid {
            grant.tokens -= 1;
            return Take::Spent;
        }
        if grant.asking {
            // Woken by another key's answer (one `Notify` for them all): the
            // same place in the same round.
            if let Some(ticket) = ticket.filter(|ticket| may_wait && ticket.round == grant.round) {
                return Take::Wait(self.answered.notified(), ticket);
            }
            if may_wait {
                grant.waiting = grant.waiting.saturating_add(1);
                let ticket = Ticket {
                    round: grant.round,
                    number: grant.waiting,
                };
                // Created under the lock: `notify_waiters` after the lead's
                // answer wakes it even before it is first polled.
                return Take::Wait(self.answered.notified(), ticket);
            }
            return ask(1, false, 0);
        }
        if grant.tokens > 0 {
            // Tokens ran out of time: this instance asked for more than it needed.
            grant.want = (grant.want / 2).max(1);
            grant.tokens = 0;
        } else if valid && grant.full {
            // All spent within their lifetime: ask for more.
            grant.want = grant.want.saturating_mul(2).min(self.max_grant);
        }
        grant.asking = true;
        grant.round = self.rounds.fetch_add(1, Ordering::Relaxed) + 1;
        grant.waiting = 0;
        ask(grant.want, true, grant.round)
    }

    /// `key`'s entry, made now if the table has room (`max_keys`; the route's
    /// overflow bucket always has room). `None`: full.
    fn entry<'t>(
        &self,
        table: &'t mut std::collections::HashMap<LimitKey, Grant>,
        key: LimitKey,
        now: std::time::Instant,
    ) -> Option<&'t mut Grant> {
        let full = table.len() >= self.max_keys && key != OVERFLOW_KEY;
        match table.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => Some(entry.into_mut()),
            std::collections::hash_map::Entry::Vacant(_) if full => None,
            std::collections::hash_map::Entry::Vacant(entry) => Some(entry.insert(Grant::new(now))),
        }
    }

    /// Records Redis's answer to `asking`: `granted` tokens, or the `refused`
    /// wait Redis gave when it granted none.
    fn granted(
        &self,
        asking: &Asking<'_>,
        granted: u32,
        refused: Option<Duration>,
        now: std::time::Instant,
    ) {
        let mut table = self.lock();
        if let Some(wait) = refused {
            let next_token = asking.at + wait;
            let until = asking.at + wait.min(REFUSAL_MEMORY);
            if let Some(grant) = self.entry(&mut table, asking.key, now) {
                grant.refused_until = grant.refused_until.max(Some(until));
                grant.next_token = grant.next_token.max(next_token);
            }
        }
        if self.max_grant == 1 {
            return;
        }
        let Some(grant) = table.get_mut(&asking.key) else {
            return;
        };
        if granted < asking.tokens {
            grant.want = 1;
        }
        if asking.lead {
            grant.asking = false;
            grant.full = granted >= asking.tokens;
            // One token is the lead's; the spare ones go first to the
            // requests that waited for it, in order, spent now however late
            // they run: only while the grant is valid, as any spending.
            let spare = granted.saturating_sub(1);
            let valid = now < asking.at + GRANT_LIFETIME;
            grant.late = !valid;
            let handed = if valid { spare.min(grant.waiting) } else { 0 };
            grant.handed = (asking.round, handed);
            grant.waiting = 0;
            grant.tokens = spare - handed;
            grant.until = asking.at + GRANT_LIFETIME;
            drop(table);
            self.answered.notify_waiters();
        }
    }

    /// `tokens` raised to one for the lead of `key` plus one per request
    /// waiting for it, at most `max_grant`; `tokens` alone after a late answer.
    fn with_waiting(&self, key: LimitKey, tokens: u32) -> u32 {
        let waiting = match self.lock().get(&key) {
            Some(grant) if !grant.late => grant.waiting,
            _ => 0,
        };
        tokens.max(waiting.saturating_add(1)).min(self.max_grant)
    }

    /// Drops the entries whose tokens ran out of time (their `want` with them)
    /// and whose refusal ended.
    fn prune(&self, now: std::time::Instant) {
        self.lock().retain(|_, grant| {
            grant.asking
                || now < grant.until
                || grant.refused_until.is_some_and(|until| now < until)
        });
    }

    /// Tokens held for `key` and still valid at `now`.
    #[cfg(test)]
    fn held(&self, key: LimitKey, now: std::time::Instant) -> u32 {
        self.lock()
            .get(&key)
            .filter(|grant| now < grant.until)
            .map_or(0, |grant| grant.tokens)
    }
}

#[cfg(test)]
mod tests;
