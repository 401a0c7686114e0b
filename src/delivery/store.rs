//! The store of queued deliveries behind one small trait, [`EventStore`], so a
//! shared multi-node backend sits behind the same calls.
//!
//! Owns: the records ([`NewEvent`] in, [`EventRecord`] with one
//! [`DeliveryRecord`] per upstream and its [`AttemptRecord`]s out), event ids,
//! the [`Filter`] for listings, and [`StoreError`]. Does not own when an
//! attempt is made or what its outcome means (`delivery::worker`).
//!
//! Every write returns once it is durable (on disk, fsynced; for Redis, once
//! the server answered the script that wrote it): a caller may answer the
//! sender 202 after [`EventStore::append`] returned `Ok`.
//!
//! Backends: [`super::redb_store::RedbStore`] (one instance, embedded) and
//! [`super::redis_store::RedisStore`] (any number of instances sharing one
//! Redis; the reads are network calls, hence async).

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::config::RetryPolicy;

/// The store's own key of an event: its append order.
pub type EventKey = u64;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    ms(SystemTime::now())
}

pub fn ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A verified request to store: what the upstream(s) will get, and where it came from.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub route: String,
    /// Each gets its own tracked delivery; the first is the rule's primary.
    pub upstreams: Vec<String>,
    /// The request method (a `HEAD` answer is read without a body).
    pub method: String,
    /// The request head in HTTP/1.1 wire form, exactly as direct mode forwards it.
    pub head: Bytes,
    /// The exact verified body.
    pub body: Bytes,
    pub request_id: String,
    /// The event type as extracted, if the route reads one.
    pub event: Option<String>,
    pub received_ms: u64,
    /// The route's retry policy when it was accepted (a reload may change the route's).
    pub retry: RetryPolicy,
}

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Delivered,
    Dead,
}

impl Status {
    pub const ALL: [Status; 3] = [Status::Pending, Status::Delivered, Status::Dead];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// One try of one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// When it started, ms since the epoch.
    pub at_ms: u64,
    pub duration_ms: u64,
    /// The upstream's status, when it answered.
    pub status: Option<u16>,
    /// What went wrong without an answer (connect, timeout, I/O), or why a status was final.
    pub error: Option<String>,
}

/// The delivery of an event to one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub upstream: String,
    pub status: Status,
    /// When a pending delivery is next due, ms since the epoch.
    pub next_ms: u64,
    /// Tries since it was accepted or last replayed (what `retry.attempts` counts).
    pub tries: u32,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptRecord>,
    /// Why it is dead.
    pub reason: Option<String>,
    /// When it was delivered or went dead.
    pub finished_ms: Option<u64>,
}

/// Attempts kept per delivery; older ones are dropped (`tries` still counts them).
pub const MAX_ATTEMPT_RECORDS: usize = 100;

impl DeliveryRecord {
    /// Records `attempt` (when one was made) and what follows it: due again at
    /// a time, delivered, or dead with its reason. Every backend applies a
    /// recorded attempt through this.
    pub fn apply(&mut self, attempt: Option<AttemptRecord>, next: Next) {
        if let Some(attempt) = attempt {
            self.tries += 1;
            if self.attempts.len() >= MAX_ATTEMPT_RECORDS {
                self.attempts.remove(0);
            }
            self.attempts.push(attempt);
        }
        match next {
            Next::RetryAt(at) => {
                self.status = Status::Pending;
                self.next_ms = at;
            }
            Next::Delivered => {
                self.status = Status::Delivered;
                self.finished_ms = Some(now_ms());
                self.reason = None;
            }
            Next::Dead(reason) => {
                self.status = Status::Dead;
                self.finished_ms = Some(now_ms());
                self.reason = Some(reason);
            }
        }
    }
}

/// An event as stored, without its head and body ([`EventStore::payload`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    pub route: String,
    pub method: String,
    pub request_id: String,
    pub event: Option<String>,
    /// When the sender's request was accepted (Unix ms); a replay keeps it.
    pub received_ms: u64,
    /// When the event was last replayed (Unix ms): `retry.max_age` and the
    /// backlog age count from here after a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_ms: Option<u64>,
    pub retry_attempts: u32,
    pub retry_backoff_ms: u64,
    pub retry_max_backoff_ms: u64,
    pub retry_max_age_ms: u64,
    pub head_bytes: u64,
    pub body_bytes: u64,
    pub deliveries: Vec<DeliveryRecord>,
}

impl EventRecord {
    /// Where the current round of deliveries started (Unix ms): the replay, or
    /// else the receipt. `retry.max_age` and the backlog age count from it.
    pub fn started_ms(&self) -> u64 {
        self.replayed_ms.unwrap_or(self.received_ms)
    }

    /// A new event's record: every delivery pending and due now.
    pub fn new(event: &NewEvent) -> EventRecord {
        EventRecord {
            route: event.route.clone(),
            method: event.method.clone(),
            request_id: event.request_id.clone(),
            event: event.event.clone(),
            received_ms: event.received_ms,
            replayed_ms: None,
            retry_attempts: event.retry.attempts,
            retry_backoff_ms: event.retry.backoff.as_millis() as u64,
            retry_max_backoff_ms: event.retry.max_backoff.as_millis() as u64,
            retry_max_age_ms: event.retry.max_age.as_millis() as u64,
            head_bytes: event.head.len() as u64,
            body_bytes: event.body.len() as u64,
            deliveries: event
                .upstreams
                .iter()
                .map(|upstream| DeliveryRecord {
                    upstream: upstream.clone(),
                    status: Status::Pending,
                    next_ms: event.received_ms,
                    tries: 0,
                    attempts: Vec::new(),
                    reason: None,
                    finished_ms: None,
                })
                .collect(),
        }
    }

    /// The policy it was accepted with.
    pub fn retry(&self) -> RetryPolicy {
        use std::time::Duration;
        RetryPolicy {
            attempts: self.retry_attempts,
            backoff: Duration::from_millis(self.retry_backoff_ms),
            max_backoff: Duration::from_millis(self.retry_max_backoff_ms),
            max_age: Duration::from_millis(self.retry_max_age_ms),
        }
    }

    /// Pending while any delivery is; else dead if any is; else delivered.
    pub fn status(&self) -> Status {
        let any = |s| self.deliveries.iter().any(|d| d.status == s);
        if any(Status::Pending) {
            Status::Pending
        } else if any(Status::Dead) {
            Status::Dead
        } else {
            Status::Delivered
        }
    }

    /// When the last delivery finished, if none is pending.
    pub fn finished_ms(&self) -> Option<u64> {
        if self.status() == Status::Pending {
            return None;
        }
        self.deliveries.iter().filter_map(|d| d.finished_ms).max()
    }
}

/// What became of an attempt, for [`EventStore::record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Try again at this time (ms since the epoch).
    RetryAt(u64),
    Delivered,
    /// Given up, with the reason.
    Dead(String),
}

/// Which events a listing or a replay covers. Every field narrows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub route: Option<String>,
    pub status: Option<Status>,
    /// Received at or after this time (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Paging: only events appended before this key (the previous page's `next`).
    pub before: Option<EventKey>,
}

impl Filter {
    pub fn matches(&self, record: &EventRecord) -> bool {
        self.route.as_ref().is_none_or(|r| *r == record.route)
            && self.status.is_none_or(|s| s == record.status())
            && self
                .since_ms
                .is_none_or(|since| record.received_ms >= since)
    }
}

/// Why a store operation failed. The message never holds event content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Storing the event would pass `[storage] max_bytes`.
    #[error("the store is full ([storage] max_bytes {max_bytes} B)")]
    Full { max_bytes: u64 },
    /// The shared store (Redis) refused the write for lack of memory
    /// (`maxmemory` with `noeviction`): full too, though below `max_bytes`.
    #[error("the Redis store is out of memory (its maxmemory): {0}")]
    OutOfMemory(String),
    /// The database failed (disk full, I/O error, corruption) or is closed.
    #[error("storage error: {0}")]
    Io(String),
    /// No event with this id.
    #[error("no event {0}")]
    NotFound(String),
}

/// A key a shared store writes in the same atomic step as it stores an event:
/// a route's dedupe claim, made "forwarded" (`SET key value PX ttl`), so the
/// event is stored exactly when its delivery id is remembered, whether or not
/// the sender hears the answer (see `proxy::queued`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remember {
    pub key: String,
    pub value: &'static str,
    pub ttl: std::time::Duration,
}

/// A durable store of queued events. Writes return once durable; reads see
/// every write that returned.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Stores `event` with every delivery pending; returns its key once on disk.
    async fn append(&self, event: NewEvent) -> Result<EventKey, StoreError>;

    /// [`EventStore::append`], also writing `remember` in the same atomic step
    /// when the store [`EventStore::remembers`]; other stores ignore it.
    async fn append_remembering(
        &self,
        event: NewEvent,
        _remember: Option<&Remember>,
    ) -> Result<EventKey, StoreError> {
        self.append(event).await
    }

    /// Whether [`EventStore::append_remembering`] writes its [`Remember`] (a
    /// store on the Redis that dedupe claims live in).
    fn remembers(&self) -> bool {
        false
    }

    /// Records an attempt of delivery `index` of event `key` and what follows it.
    async fn record(
        &self,
        key: EventKey,
        index: usize,
        attempt: Option<AttemptRecord>,
        next: Next,
    ) -> Result<(), StoreError>;

    /// Makes every dead delivery of `key` pending again, due now, with its tries
    /// reset (the attempts stay in its history). Returns the deliveries made
    /// pending (none if nothing was dead).
    async fn replay(&self, key: EventKey) -> Result<Vec<usize>, StoreError>;

    /// Makes every earlier write durable. Attempt records may be committed
    /// without an fsync of their own (at worst one more attempt after a crash);
    /// a clean stop calls this so it repeats none. A shared store also hands
    /// what this instance holds to the others here.
    async fn sync(&self) -> Result<(), StoreError>;

    /// Removes delivered and dead events finished before `before_ms`; returns how many.
    async fn purge(&self, before_ms: u64) -> Result<u64, StoreError>;

    /// One event's record.
    async fn get(&self, key: EventKey) -> Result<Option<EventRecord>, StoreError>;

    /// One event's head and body.
    async fn payload(&self, key: EventKey) -> Result<Option<(Bytes, Bytes)>, StoreError>;

    /// Events matching `filter`, newest first, at most `limit`.
    async fn list(
        &self,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<(EventKey, EventRecord)>, StoreError>;

    /// Every event with a pending delivery this instance resumes at start.
    async fn pending(&self) -> Result<Vec<(EventKey, EventRecord)>, StoreError>;

    /// Pending deliveries this instance takes over now from another one that
    /// stopped renewing its lease (a shared store; see `redis_store`), as
    /// (event, record, delivery index). A store of one instance has none.
    async fn claim(&self) -> Result<Vec<(EventKey, EventRecord, usize)>, StoreError> {
        Ok(Vec::new())
    }

    /// How often [`EventStore::claim`] is worth calling; `None` for a store
    /// of one instance.
    fn claim_every(&self) -> Option<std::time::Duration> {
        None
    }

    /// Whether this instance still holds delivery `index` of `key` (a shared
    /// store's lease may have passed to another instance). Checked before each
    /// attempt; a delivery not held is dropped from this instance's timers.
    fn holds(&self, _key: EventKey, _index: usize) -> bool {
        true
    }

    /// Bytes of stored events (heads, bodies, records), as counted against `max_bytes`.
    fn bytes_used(&self) -> u64;

    /// The event id senders and the admin API see for `key`.
    fn event_id(&self, key: EventKey) -> String;

    /// The key of an event id of this store.
    fn key_of(&self, id: &str) -> Option<EventKey>;
}
