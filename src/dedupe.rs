//! Duplicate-delivery suppression: a route remembers the delivery ids it forwarded
//! successfully and answers a repeat within the TTL without forwarding it again.
//!
//! Owns: what a route's `dedupe` keys mean ([`DedupeConfig`], documented below; the file
//! layer and its validation are `config::dedupe`); taking the delivery id from a
//! [`Verified`] request and its headers; the bounded, TTL-expiring store ([`DedupeStore`])
//! and the [`Claim`] a forwarding request holds.
//! Does not own: answering (the proxy sends 200 `{"status":"duplicate"}`, 409
//! `duplicate_in_flight`, 400 `bad_request`), deciding what "forwarded successfully" means
//! (the proxy calls [`Claim::forwarded`] on a 2xx from the primary upstream), metrics
//! registration, or running anything in the background (expiry is done by the store's own
//! calls; no timer is needed).
//!
//! # Configuration
//! ```toml
//! dedupe = { key = "standard-webhooks" }                                  # signed id, 24h, 100000
//! dedupe = { key = "header:X-GitHub-Delivery", ttl = "72h", max_entries = 500000 }
//! dedupe = { key = "json:/id", ttl = "24h" }                             # Stripe's evt_… id
//! ```
//! - `key`: `"standard-webhooks"` (alias `"signed"`): the delivery id the signature covers,
//!   [`Verified::signed_id`] (Standard Webhooks/Svix `webhook-id`, Twitch message id, the
//!   generic `hmac` scheme's `{id}`, GitLab signing tokens). `"header:<Name>"`: a header's
//!   value. `"json:<pointer>"`: a string or number in the JSON body.
//! - `ttl`: how long a forwarded id is remembered, from the moment it was forwarded. Default
//!   [`DEFAULT_TTL`] (24 h); at most [`MAX_TTL`]. Pick it longer than the provider's retry
//!   window for the same delivery.
//! - `max_entries`: cap on remembered ids (forwarded or in flight); default
//!   [`DEFAULT_MAX_ENTRIES`]. When full, the **oldest** entry is evicted.
//!
//! # Which id to trust
//! Prefer ids the signature covers. `standard-webhooks` ids are signed; `json:` ids are inside
//! the signed body, so a replay of the same body (even with fresh headers) is caught. A
//! `header:` id is **not** covered by most signatures (GitHub signs only the body): it stops
//! the provider's own redeliveries, but someone who can replay a signed body can give it a
//! fresh header id and pass, or reuse a known id to have a genuine delivery answered as a
//! duplicate. So an unsigned header id protects only as far as the signature goes: the body.
//! On routes without `verify`, anyone can pre-send ids; dedupe there is only for honest senders.
//!
//! # Behaviour
//! - **New id** → [`Admission::Forward`] with a [`Claim`]; the id is *in flight*.
//! - The forward succeeded → [`Claim::forwarded`]: the id is remembered for `ttl`. A repeat is
//!   [`Admission::Duplicate`] (answer 200 `{"status":"duplicate"}`, forward nothing).
//! - The forward failed (upstream error, non-2xx, 422, the request was dropped or cancelled)
//!   → [`Claim::failed`] or simply dropping the claim: the id is forgotten, so the provider's
//!   retry gets through.
//! - **Same id while the first is in flight** → [`Admission::InFlight`]: answer 409
//!   `duplicate_in_flight` (with `Retry-After`), forward nothing. Letting it through would
//!   run the action twice if both succeed; answering "duplicate" (2xx) would lose the delivery
//!   if the first then fails, since the provider would not retry. 409 makes the provider try
//!   again later, when the first has either succeeded (→ duplicate) or failed (→ forwarded).
//!   Providers retry non-2xx answers with backoff, so nothing is lost.
//! - **No id** (header absent, pointer absent or `null`, unsigned scheme, empty value) →
//!   [`Admission::Forward`] without a claim: forwarded without deduplication, counted in
//!   [`Stats::no_id`] so a misconfigured key shows up.
//! - With a `json:` key, the id must have one reading, or the request is a [`DedupeError`]
//!   (answer 400 `bad_request`, forward nothing): the **whole body** is validated (one JSON
//!   text, UTF-8, nothing after it; [`Scope::Document`], on every route, verified or not), the
//!   key may not repeat in any object on the pointer's path, and the id is a string or an
//!   integer within `i64`/`u64` (rendered in decimal: `"12345"` and `12345` are the same id).
//!   A number with a fraction or exponent, `-0` or a larger integer is refused, never
//!   rounded. An id that is an object or array is refused too. See `events::pointer`.
//!
//! # Bounded memory
//! Ids of any length are stored as a 16-byte SHA-256 prefix (collision-free in practice, and
//! not steerable by a sender), so a 1 MiB header costs the same as a UUID. An entry is a
//! 33-byte hash table bucket (16-byte digest, 16-byte slot, control byte) plus a 24-byte age
//! record. Measured by `memory_per_entry` at the default 100 000 entries: 7.5 MB (75 bytes
//! per entry) while filling, **11.8 MB (118 bytes per entry) in steady churn** at the cap
//! (evicting one entry per new one leaves tombstones, so the table doubles once and then
//! rehashes in place); [`BYTES_PER_ENTRY_BOUND`] is the planning figure and
//! [`DedupeStore::approx_bytes`] measures a live store. Expired entries are dropped on every
//! call, oldest first; a full table evicts the oldest entry, counted in [`Stats::evicted`] (if that
//! grows, deliveries are forgotten before their TTL: raise `max_entries`).
//!
//! # Several instances (`[cluster]`)
//! With `[cluster]`, [`DedupeStore::admit_clustered`] keeps claims and forwarded ids in
//! Redis instead, with the same rules across every instance: a claim is `SET key token NX
//! PX lease` (that also tells a forwarded id from one in flight, and that answers
//! "claimed" again when re-run with the same token: a command whose connection dropped is
//! sent once more, see `ClusterClient::run`), a successful forward `SET key "f" PX ttl`
//! before the answer is relayed ([`Claim::confirm`]), a failed one deletes the key if it
//! still holds this claim's token. The operations a worker's requests issue in one turn of
//! its event loop go to Redis as one Lua script call (`batch`): each still waits for its
//! own answer, so the rules are those of one command per operation. A forwarded mark that
//! fails does not change the answer (the upstream has the delivery): the claim holds (409)
//! while the mark is sent again until it lands or the lease ends (`retry_mark`); with
//! `on_unavailable = "local"` the id is remembered in this store too, for the fallback. An instance that dies
//! holding a claim blocks that id (409) for at most the lease. Redis bounds the entries by
//! their TTL, not `max_entries` (about 100 bytes each): size its `maxmemory` for the ids of
//! one TTL. While Redis does not answer, `[cluster] on_unavailable` decides: this store
//! (`"local"`, counted) or 503. A claim whose answer timed out may still run (a paused Redis
//! runs what is queued on its sockets when it resumes), so its release is sent right behind
//! it on the same connection ([`ClusterClient::send_behind`]).
//!
//! On a queued route with the Redis store, the store's append script makes the claim
//! "forwarded" in the same step as it stores the event ([`Claim::remember`]). When the
//! append's answer is lost (a timeout: Redis may have run it, or may run it later), the
//! claim is kept, never released ([`Claim::keep`]): a retry gets 409 until the append
//! lands (then `duplicate`) or the lease ends (nothing was stored: the retry goes through).
//!
//! # Time
//! Every call takes `now: Instant`, so tests run on a fake timeline without sleeping. The
//! store lives in memory: a restart forgets everything.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

use self::batch::Op;
use crate::cluster::{ClusterClient, ClusterError, Operation};
use crate::config::cluster::OnUnavailable;
use crate::events::{JsonPointer, Scope};
use crate::verify::Verified;

/// Default `ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest `ttl` accepted.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default `max_entries`.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
/// Largest `max_entries` accepted.
pub const MAX_MAX_ENTRIES: usize = 100_000_000;
/// Planning figure for one entry's memory, table slack included (hash table at its lowest
/// load, age queue just grown).
pub const BYTES_PER_ENTRY_BOUND: usize = 128;
/// Added to the longest upstream `response_timeout` of a route for its claim lease in Redis
/// (`[cluster]` without `claim_lease`), unless `command_timeout` is longer
/// ([`claim_lease_margin`]).
pub const CLAIM_LEASE_MARGIN: Duration = Duration::from_secs(5);

/// What a derived claim lease adds to a route's longest `response_timeout`:
/// [`CLAIM_LEASE_MARGIN`], or `command_timeout` if longer, so the lease also
/// covers the forwarded mark written after the answer (the bound
/// `config::check_claim_lease` holds a set lease to).
pub fn claim_lease_margin(command_timeout: Duration) -> Duration {
    CLAIM_LEASE_MARGIN.max(command_timeout)
}
/// The `Retry-After` (seconds) to send with 409 `duplicate_in_flight`.
pub const IN_FLIGHT_RETRY_AFTER_SECS: u64 = 10;

// ---------------------------------------------------------------------------------------------
// Compiled configuration (the file layer and its validation: `config::dedupe`)

/// Where a route's delivery id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// [`Verified::signed_id`].
    Signed,
    /// All lines of this header, in order.
    Header(HeaderName),
    /// A scalar in the JSON body.
    Json(JsonPointer),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Signed => f.write_str("standard-webhooks"),
            KeySource::Header(name) => write!(f, "header:{name}"),
            KeySource::Json(pointer) => write!(f, "json:{pointer}"),
        }
    }
}

/// A validated `dedupe` table. Comparable, so a reload can keep a route's store when the
/// table did not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupeConfig {
    pub key: KeySource,
    pub ttl: Duration,
    pub max_entries: usize,
}

// ---------------------------------------------------------------------------------------------
// Delivery ids

/// A delivery id, reduced to a 16-byte digest. Opaque; its `Debug` shows a short prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeliveryId([u8; 16]);

impl DeliveryId {
    /// The digest of one id.
    pub fn of(id: &[u8]) -> DeliveryId {
        Self::of_parts(std::iter::once(id))
    }

    /// Length-prefixed parts, so `["ab", "c"]` and `["a", "bc"]` differ.
    fn of_parts<'p>(parts: impl Iterator<Item = &'p [u8]>) -> DeliveryId {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let digest = hasher.finalize();
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        DeliveryId(id)
    }
}

impl fmt::Debug for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeliveryId({}…)", hex::encode(&self.0[..4]))
    }
}

/// The id source could not be read; the proxy answers 400 `bad_request` with this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DedupeError(String);

impl DedupeError {
    pub fn error_code(&self) -> &'static str {
        "bad_request"
    }
}

impl DedupeConfig {
    /// The delivery id of a verified request, `None` when it carries none (see the module
    /// doc: such requests are forwarded without deduplication).
    pub fn delivery_id(
        &self,
        verified: &Verified<'_>,
        headers: &HeaderMap,
    ) -> Result<Option<DeliveryId>, DedupeError> {
        match &self.key {
            KeySource::Signed => Ok(verified
                .signed_id()
                .filter(|id| !id.is_empty())
                .map(|id| DeliveryId::of(id.as_bytes()))),
            KeySource::Header(name) => {
                let mut lines = headers.get_all(name).iter().peekable();
                if lines.peek().is_none_or(|first| first.is_empty()) {
                    return Ok(None);
                }
                Ok(Some(DeliveryId::of_parts(lines.map(|v| v.as_bytes()))))
            }
            KeySource::Json(_)
                if !crate::events::declares(headers, crate::events::Format::Json) =>
            {
                Err(DedupeError(format!(
                    "delivery id: the Content-Type is not {}",
                    crate::events::Format::Json.describe()
                )))
            }
            KeySource::Json(pointer) => match pointer.lookup(verified.body(), Scope::Document) {
                Ok(Some(id)) if !id.is_empty() => Ok(Some(DeliveryId::of(id.as_bytes()))),
                Ok(_) => Ok(None),
                Err(e) => Err(DedupeError(format!("delivery id: {e}"))),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Store

/// What to do with a request, from its delivery id.
#[derive(Debug)]
pub enum Admission {
    /// Forward it. With a claim (the request has an id): call [`Claim::forwarded`] after a
    /// successful forward; dropping it otherwise forgets the id. Without one: no id, no dedupe.
    Forward(Option<Claim>),
    /// Forwarded successfully within the TTL: answer 200 `{"status":"duplicate"}`.
    Duplicate,
    /// The same id is being forwarded right now: answer 409 `duplicate_in_flight` with
    /// `Retry-After: IN_FLIGHT_RETRY_AFTER_SECS`.
    InFlight,
}

/// Counters of one store (monotonic, except `entries`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Ids remembered or in flight now.
    pub entries: usize,
    /// Requests answered as duplicates.
    pub duplicates: u64,
    /// Requests refused because the same id was in flight.
    pub in_flight: u64,
    /// Requests forwarded without an id.
    pub no_id: u64,
    /// Entries evicted before their TTL because the table was full.
    pub evicted: u64,
}

/// A route's store of recent delivery ids. Cheap to clone (shared); all methods take `&self`.
#[derive(Clone)]
pub struct DedupeStore {
    shared: Arc<Shared>,
}

struct Shared {
    config: DedupeConfig,
    /// Time zero of the nanosecond timestamps below.
    origin: Instant,
    state: Mutex<State>,
    duplicates: AtomicU64,
    in_flight: AtomicU64,
    no_id: AtomicU64,
    evicted: AtomicU64,
}

#[derive(Default)]
struct State {
    slots: HashMap<DeliveryId, Slot>,
    /// Ids by age (claim time), oldest first, with the generation that was current then;
    /// entries whose generation no longer matches the slot are stale and skipped.
    ages: VecDeque<(DeliveryId, u64)>,
    next_generation: u64,
}

/// 16 bytes: with the 16-byte key, 33 bytes per hash table bucket.
#[derive(Clone, Copy)]
struct Slot {
    /// Generation of the claim, times two, plus one once forwarded.
    tag: u64,
    /// Nanoseconds after `origin`: claim time while in flight, then the time it was forwarded.
    at: u64,
}

impl Slot {
    fn generation(&self) -> u64 {
        self.tag >> 1
    }

    fn forwarded(&self) -> bool {
        self.tag & 1 == 1
    }
}

impl fmt::Debug for DedupeStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedupeStore")
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl DedupeStore {
    pub fn new(config: DedupeConfig) -> Self {
        Self::with_origin(config, Instant::now())
    }

    /// A store whose clock starts at `origin` (times before it count as `origin`).
    pub fn with_origin(config: DedupeConfig, origin: Instant) -> Self {
        DedupeStore {
            shared: Arc::new(Shared {
                config,
                origin,
                state: Mutex::new(State::default()),
                duplicates: AtomicU64::new(0),
                in_flight: AtomicU64::new(0),
                no_id: AtomicU64::new(0),
                evicted: AtomicU64::new(0),
            }),
        }
    }

    pub fn config(&self) -> &DedupeConfig {
        &self.shared.config
    }

    /// Takes the request's delivery id and checks it: the one call the proxy makes before
    /// forwarding (after verification).
    pub fn admit(
        &self,
        verified: &Verified<'_>,
        headers: &HeaderMap,
        now: Instant,
    ) -> Result<Admission, DedupeError> {
        match self.shared.config.delivery_id(verified, headers)? {
            Some(id) => Ok(self.check(id, now)),
            None => {
                self.shared.no_id.fetch_add(1, Ordering::Relaxed);
                Ok(Admission::Forward(None))
            }
        }
    }

    /// Checks an id and, when new, claims it as in flight.
    pub fn check(&self, id: DeliveryId, now: Instant) -> Admission {
        let shared = &self.shared;
        let now = shared.nanos(now);
        let ttl = duration_nanos(shared.config.ttl);
        let mut state = shared.lock();
        state.expire(now, ttl);
        if let Some(slot) = state.slots.get(&id) {
            // An entry older than the TTL is treated as gone, in flight or not (a claim is
            // never held that long; this only guards against a leaked one).
            if now.saturating_sub(slot.at) < ttl {
                return if slot.forwarded() {
                    shared.duplicates.fetch_add(1, Ordering::Relaxed);
                    Admission::Duplicate
                } else {
                    shared.in_flight.fetch_add(1, Ordering::Relaxed);
                    Admission::InFlight
                };
            }
        }
        let generation = state.insert(id, now, false, shared);
        drop(state);
        Admission::Forward(Some(Claim {
            inner: ClaimOf::Local {
                shared: Arc::clone(shared),
                generation,
            },
            id,
            done: false,
        }))
    }

    pub fn stats(&self) -> Stats {
        let shared = &self.shared;
        Stats {
            entries: shared.lock().slots.len(),
            duplicates: shared.duplicates.load(Ordering::Relaxed),
            in_flight: shared.in_flight.load(Ordering::Relaxed),
            no_id: shared.no_id.load(Ordering::Relaxed),
            evicted: shared.evicted.load(Ordering::Relaxed),
        }
    }

    /// Heap bytes held by the tables (from their capacities; allocator overhead excluded).
    pub fn approx_bytes(&self) -> usize {
        let state = self.shared.lock();
        // hashbrown: buckets = capacity * 8 / 7 (rounded to a power of two), one control
        // byte per bucket plus a group's worth.
        let buckets = if state.slots.capacity() == 0 {
            0
        } else {
            (state.slots.capacity() * 8 / 7).next_power_of_two()
        };
        let slot = std::mem::size_of::<(DeliveryId, Slot)>() + 1;
        buckets * slot + state.ages.capacity() * std::mem::size_of::<(DeliveryId, u64)>()
    }

    /// Drops expired entries now (the store also does this on every check).
    pub fn expire(&self, now: Instant) {
        let now = self.shared.nanos(now);
        let ttl = duration_nanos(self.shared.config.ttl);
        self.shared.lock().expire(now, ttl);
    }
}

impl Shared {
    fn nanos(&self, now: Instant) -> u64 {
        duration_nanos(now.saturating_duration_since(self.origin))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough data (at worst a stale
        // age entry); keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl State {
    /// Drops entries whose time is up, oldest first, and stale age records at the front.
    fn expire(&mut self, now: u64, ttl: u64) {
        while let Some(&(id, generation)) = self.ages.front() {
            match self.slots.get(&id) {
                Some(slot) if slot.generation() == generation => {
                    if now.saturating_sub(slot.at) < ttl {
                        break;
                    }
                    self.slots.remove(&id);
                }
                _ => {}
            }
            self.ages.pop_front();
        }
    }

    /// Inserts or replaces `id`, evicting the oldest entries to stay under the cap.
    fn insert(&mut self, id: DeliveryId, now: u64, forwarded: bool, shared: &Shared) -> u64 {
        let max = shared.config.max_entries;
        if !self.slots.contains_key(&id) {
            while self.slots.len() >= max {
                let Some((old, generation)) = self.ages.pop_front() else {
                    break;
                };
                if let Entry::Occupied(e) = self.slots.entry(old) {
                    if e.get().generation() == generation {
                        e.remove();
                        shared.evicted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        self.slots.insert(
            id,
            Slot {
                tag: generation << 1 | u64::from(forwarded),
                at: now,
            },
        );
        self.ages.push_back((id, generation));
        // Failed claims and replaced entries leave stale age records; keep the queue within
        // twice the table so it stays bounded whatever the traffic.
        if self.ages.len() > 2 * max.max(self.slots.len()) + 16 {
            let slots = &self.slots;
            self.ages
                .retain(|(id, g)| slots.get(id).is_some_and(|s| s.generation() == *g));
        }
        generation
    }
}

/// An id claimed as in flight by one request. Call [`Claim::forwarded`] (or, for a claim
/// that may be held in Redis, [`Claim::confirm`]) once the forward succeeded;
/// [`Claim::failed`] or dropping the claim forgets the id.
pub struct Claim {
    inner: ClaimOf,
    id: DeliveryId,
    done: bool,
}

enum ClaimOf {
    /// In this instance's store.
    Local {
        shared: Arc<Shared>,
        generation: u64,
    },
    /// In Redis (`[cluster]`): the key and the token that says the claim is ours.
    Cluster(Box<ClusterClaim>),
}

struct ClusterClaim {
    cluster: Arc<ClusterClient>,
    /// Shared with the batch that sends each write on it (no copy per write).
    key: Arc<str>,
    token: Arc<str>,
    ttl: Duration,
    /// When the claim ends in Redis unless it was made "forwarded".
    lease_end: Instant,
    /// This instance's store, which decides while Redis does not answer
    /// (`on_unavailable = "local"`), and the generation of the claim's mirror
    /// there: the id is in flight there too while Redis holds the claim, and
    /// remembered there once forwarded, so a fallback during an outage never
    /// forwards what this instance is forwarding or forwarded through Redis.
    local: Option<(Arc<Shared>, u64)>,
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claim").field("id", &self.id).finish()
    }
}

impl Claim {
    /// The delivery id.
    pub fn id(&self) -> DeliveryId {
        self.id
    }

    /// The forward succeeded: remember the id for the TTL from `now`. A claim
    /// held in Redis is remembered in the background; prefer [`Claim::confirm`].
    pub fn forwarded(self, now: Instant) {
        let cluster = match &self.inner {
            ClaimOf::Cluster(claim) => Some(claim.cluster.clone()),
            ClaimOf::Local { .. } => None,
        };
        if let (Some(cluster), Confirm(Some(pending))) = (cluster, self.confirm(now)) {
            cluster.spawn(pending);
        }
    }

    /// The forward succeeded: remember the id for the TTL. Awaiting the returned
    /// future writes a claim held in Redis there before the answer is relayed, so a
    /// retry on any instance is answered `duplicate`.
    pub fn confirm(mut self, now: Instant) -> Confirm {
        self.done = true;
        match &mut self.inner {
            ClaimOf::Local { shared, generation } => {
                mark_forwarded(shared, self.id, *generation, now);
                Confirm(None)
            }
            ClaimOf::Cluster(claim) => {
                if let Some((local, _)) = &claim.local {
                    remember_forwarded(local, self.id, now);
                }
                let cluster = claim.cluster.clone();
                let key = claim.key.clone();
                let (ttl, lease_end) = (claim.ttl, claim.lease_end);
                Confirm(Some(Box::pin(async move {
                    let written = batch::submit(&cluster, key.clone(), Op::Mark { ttl }).await;
                    if let Err(e) = written {
                        // The answer goes out: the upstream has the delivery. The
                        // claim holds (a retry gets 409) while the mark is sent
                        // again in the background.
                        tracing::warn!(error = %e, "dedupe: could not remember a forwarded delivery id in Redis; retrying until the claim's lease ends");
                        retry_mark(cluster, key, ttl, lease_end);
                    }
                })))
            }
        }
    }

    /// The forward failed: forget the id so a retry gets through. Same as dropping.
    pub fn failed(self) {}

    /// For a claim held in Redis: the write that remembers its id as forwarded
    /// for the TTL, for a store on that Redis to make in the same atomic step
    /// as it stores the event. `None` for a claim in this instance's store.
    pub fn remember(&self) -> Option<crate::delivery::store::Remember> {
        match &self.inner {
            ClaimOf::Cluster(claim) => Some(crate::delivery::store::Remember {
                key: claim.key.to_string(),
                value: FORWARDED,
                ttl: claim.ttl,
            }),
            ClaimOf::Local { .. } => None,
        }
    }

    /// Ends a claim held in Redis without a write of its own: the key stays as
    /// it is, either made "forwarded" by the store (see [`Claim::remember`]) or,
    /// when the store's answer was lost, held until its lease ends (a retry
    /// meanwhile gets 409; after it, `duplicate` if the event was stored, else
    /// it goes through). A claim in this instance's store is forgotten, as
    /// dropping it does.
    pub fn keep(mut self) {
        if let ClaimOf::Cluster(claim) = &self.inner {
            self.done = true;
            if let Some((local, generation)) = &claim.local {
                forget_claim(local, self.id, *generation);
            }
        }
    }

    /// The forward failed: forget the id. Awaiting the returned future deletes a
    /// claim held in Redis before the answer goes out, so the sender's retry, on any
    /// instance, gets through (dropping the claim deletes it in the background).
    pub fn release(mut self) -> Confirm {
        let ClaimOf::Cluster(claim) = &self.inner else {
            return Confirm(None); // dropped here: removed at once
        };
        self.done = true;
        if let Some((local, generation)) = &claim.local {
            forget_claim(local, self.id, *generation);
        }
        let (cluster, key, token) = (
            claim.cluster.clone(),
            claim.key.clone(),
            claim.token.clone(),
        );
        Confirm(Some(Box::pin(async move {
            release_claim(&cluster, key, token).await;
        })))
    }
}

/// Deletes a claim in Redis if it still holds `token`. If Redis does not answer,
/// the claim ends with its lease.
async fn release_claim(cluster: &Arc<ClusterClient>, key: Arc<str>, token: Arc<str>) {
    let _ = batch::submit(cluster, key, Op::Release { token }).await;
}

/// What is left to do after [`Claim::confirm`]: nothing for a local claim, the
/// Redis write for a claim held there. Await it.
pub struct Confirm(Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>);

impl Confirm {
    /// Nothing to do.
    pub fn done() -> Confirm {
        Confirm(None)
    }
}

impl std::future::Future for Confirm {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        match self.0.as_mut() {
            None => std::task::Poll::Ready(()),
            Some(pending) => pending.as_mut().poll(cx),
        }
    }
}

/// The most forwarded marks being retried at once ([`retry_mark`]); past it a
/// failed mark is counted as lost at once.
pub const MAX_PENDING_MARKS: usize = 10_000;

static PENDING_MARKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sends a forwarded mark that failed again ([`batch::resend`]: its failure
/// was counted once, when it was first sent), every [`crate::cluster::PING_INTERVAL`]
/// while Redis is up, until it lands or the claim's lease ends (after which
/// another instance may claim the id: the mark is counted as lost,
/// `hookgate_cluster_marks_lost_total`). The mark is the same write each
/// time. Redis paused, restarted, out of memory or refusing writes past the
/// lease is what can still lose it.
fn retry_mark(cluster: Arc<ClusterClient>, key: Arc<str>, ttl: Duration, lease_end: Instant) {
    if PENDING_MARKS.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_MARKS {
        PENDING_MARKS.fetch_sub(1, Ordering::AcqRel);
        cluster.count_lost_mark();
        return;
    }
    let task = cluster.clone();
    task.spawn(async move {
        let mut landed = false;
        // Bounded by the lease: one attempt per ping interval until it ends.
        while Instant::now() < lease_end {
            tokio::time::sleep(crate::cluster::PING_INTERVAL).await;
            if cluster.is_up()
                && batch::resend(&cluster, key.clone(), Op::Mark { ttl })
                    .await
                    .is_ok()
            {
                landed = true;
                break;
            }
        }
        if !landed {
            cluster.count_lost_mark();
            tracing::warn!("dedupe: a forwarded delivery id never reached Redis before its claim's lease ended; a retry of it may be forwarded again");
        }
        PENDING_MARKS.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Remembers `id` as forwarded in this instance's store (for the fallback of
/// `on_unavailable = "local"`), whatever it held.
fn remember_forwarded(shared: &Shared, id: DeliveryId, now: Instant) {
    let now = shared.nanos(now);
    let mut state = shared.lock();
    match state.slots.get_mut(&id) {
        Some(slot) => {
            slot.tag |= 1;
            slot.at = now;
        }
        None => {
            state.insert(id, now, true, shared);
        }
    }
}

/// Removes the in-flight claim of `id` made with `generation`, unless the id is
/// held by a newer claim (or was forwarded) meanwhile.
fn forget_claim(shared: &Shared, id: DeliveryId, generation: u64) {
    let mut state = shared.lock();
    if let Entry::Occupied(e) = state.slots.entry(id) {
        if e.get().generation() == generation && !e.get().forwarded() {
            e.remove();
        }
    }
}

fn mark_forwarded(shared: &Shared, id: DeliveryId, generation: u64, now: Instant) {
    let now = shared.nanos(now);
    let mut state = shared.lock();
    match state.slots.get_mut(&id) {
        Some(slot) if slot.generation() == generation => {
            slot.tag |= 1;
            slot.at = now;
        }
        // Another request holds the id now (ours expired as stale): leave it.
        Some(_) => {}
        // Evicted while in flight: remember it anyway, it is the newest knowledge.
        None => {
            state.insert(id, now, true, shared);
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match &self.inner {
            ClaimOf::Local { shared, generation } => forget_claim(shared, self.id, *generation),
            ClaimOf::Cluster(claim) => {
                if let Some((local, generation)) = &claim.local {
                    forget_claim(local, self.id, *generation);
                }
                // Deleted only while it is still our claim; if Redis does not answer,
                // the claim ends with its lease.
                let cluster = claim.cluster.clone();
                let key = claim.key.clone();
                let token = claim.token.clone();
                claim.cluster.spawn(async move {
                    release_claim(&cluster, key, token).await;
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Across instances (`[cluster]`)

/// The value of a remembered (forwarded) id in Redis; a claim holds its token instead.
const FORWARDED: &str = "f";

/// A claim token unique to this process and claim: a random process id and a counter.
fn claim_token() -> Arc<str> {
    static PROCESS: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| uuid::Uuid::new_v4().simple().to_string());
    let mut counter = itoa::Buffer::new();
    let counter = counter.format(NEXT.fetch_add(1, Ordering::Relaxed));
    // 32 hex digits, ':', at most 20 digits: always joined in one allocation.
    crate::cluster::joined("", &[process, counter])
        .unwrap_or_else(|| Arc::from(format!("{process}:{counter}")))
}

/// Redis did not answer a dedupe check and `on_unavailable = "reject"`: answer 503.
#[derive(Debug, thiserror::Error)]
#[error("dedupe: {0}")]
pub struct ClusterUnavailable(#[from] pub ClusterError);

impl DedupeStore {
    /// [`DedupeStore::admit`] across instances: the id is claimed in Redis under
    /// `<prefix>dd:<route>:<32 hex>` for `lease` (how long a claim outlives an
    /// instance that died holding it), and remembered there for the TTL once
    /// forwarded. While Redis does not answer: this store decides
    /// (`on_unavailable = "local"`, counted) or `Ok(Err(ClusterUnavailable))`.
    pub async fn admit_clustered(
        &self,
        cluster: &Arc<ClusterClient>,
        route: &str,
        lease: Duration,
        id: Result<Option<DeliveryId>, DedupeError>,
        now: Instant,
    ) -> Result<Result<Admission, ClusterUnavailable>, DedupeError> {
        let id = match id? {
            Some(id) => id,
            None => {
                self.shared.no_id.fetch_add(1, Ordering::Relaxed);
                return Ok(Ok(Admission::Forward(None)));
            }
        };
        let mut digest = [0u8; 32];
        let digest = hex::encode_to_slice(id.0, &mut digest)
            .ok()
            .and_then(|()| std::str::from_utf8(&digest).ok())
            .unwrap_or_default();
        let key = cluster.shared_key(&["dd", route, digest]);
        let token = claim_token();
        let claim = Op::Claim {
            token: token.clone(),
            lease,
        };
        let claimed = batch::submit(cluster, key.clone(), claim).await;
        let shared = &self.shared;
        let local = matches!(cluster.settings().on_unavailable, OnUnavailable::Local);
        // The claim Redis granted, with its mirror in this instance's store.
        let held = |key, token, mirror| {
            Admission::Forward(Some(Claim {
                inner: ClaimOf::Cluster(Box::new(ClusterClaim {
                    cluster: cluster.clone(),
                    key,
                    token,
                    ttl: shared.config.ttl,
                    lease_end: now + lease,
                    local: mirror,
                })),
                id,
                done: false,
            }))
        };
        Ok(Ok(match claimed {
            Ok(0) if local => {
                // What this instance decided on its own while Redis did not
                // answer is not in Redis: a delivery forwarded then is a
                // duplicate now (and Redis learns it), one still in flight is
                // 409, and the claim in Redis is given back.
                match self.check(id, now) {
                    Admission::Forward(Some(mut mirror)) => {
                        // The local claim lives on as the mirror of the Redis one
                        // (`check` claims in this instance's store).
                        mirror.done = true;
                        let generation = match mirror.inner {
                            ClaimOf::Local { generation, .. } => generation,
                            ClaimOf::Cluster(_) => 0,
                        };
                        held(key, token, Some((shared.clone(), generation)))
                    }
                    Admission::Duplicate => {
                        let ttl = shared.config.ttl;
                        let _ = batch::submit(cluster, key, Op::Mark { ttl }).await;
                        Admission::Duplicate
                    }
                    other => {
                        release_claim(cluster, key, token).await;
                        other
                    }
                }
            }
            Ok(0) => held(key, token, None),
            Ok(1) => {
                shared.duplicates.fetch_add(1, Ordering::Relaxed);
                Admission::Duplicate
            }
            Ok(_) => {
                shared.in_flight.fetch_add(1, Ordering::Relaxed);
                Admission::InFlight
            }
            Err(e) => {
                if !matches!(e, ClusterError::Down) {
                    // The claim was sent but not answered: a paused Redis runs it when
                    // it resumes, and the id would then be blocked (409) for the whole
                    // lease by a claim nobody holds. Delete it behind the claim.
                    let command = batch::command(&key, Op::Release { token });
                    cluster.send_behind(Operation::Dedupe, lease, |mut connection| async move {
                        crate::cluster::invoke::<Vec<i64>>(
                            &mut connection,
                            batch::script(),
                            &command,
                        )
                        .await
                    });
                }
                match cluster.settings().on_unavailable {
                    OnUnavailable::Local => {
                        cluster.count_fallback(Operation::Dedupe);
                        self.check(id, now)
                    }
                    OnUnavailable::Reject => return Ok(Err(ClusterUnavailable(e))),
                }
            }
        }))
    }
}

mod batch;

#[cfg(test)]
mod tests;
