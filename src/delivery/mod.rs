//! Queued delivery (issue 14): a verified request on a `delivery = "queued"`
//! route is stored durably, the sender gets 202 once it is on disk, and each of
//! its upstreams gets it in the background until it answers 2xx or the event
//! is dead.
//!
//! Owns: the [`Queue`] runtime — opening the store at start, resuming the
//! pending deliveries found in it, the timers of due deliveries, one attempt at
//! a time per delivery under a per-upstream concurrency limit, the retry
//! decision after each attempt, replay, retention purges, the take-over of
//! deliveries another instance stopped holding (a shared store), and shutdown.
//! The store itself is behind [`store::EventStore`]: `redb_store` (embedded,
//! one instance) or `redis_store` (shared by every instance; its leases).
//! Does not own: the `[storage]`/`retry` config (`config::storage`), the
//! upstream exchange (`proxy`'s [`Deliver`], the same as fan-out copies), the
//! retry classes and the jittered backoff (`fanout`: [`AttemptOutcome::class`],
//! [`FanoutConfig::backoff_delay`]), or the admin endpoints (`events_api`).
//!
//! # What is guaranteed
//! - A 202 is sent only after [`Queue::accept`] returned, i.e. after the
//!   event's transaction was committed with fsync (redb), or after Redis
//!   answered the script that stored it (as durable as Redis's `appendfsync`).
//!   A full store or a storage error is an `Err`, answered 503 by the proxy.
//! - With a shared store, each pending delivery is held by one instance at a
//!   time; one whose holder stopped renewing its lease is taken over by
//!   another ([`store::EventStore::claim`], every `claim_every`), so a killed
//!   instance strands nothing.
//! - Delivery is at least once: an attempt that timed out or broke after the
//!   request was written may have reached the app, and a crash between an
//!   upstream's 2xx and its record means one more try. Every try carries the
//!   same `X-Hookgate-Event-Id` and its number in `X-Hookgate-Attempt`.
//! - Retried: connect failures, timeouts, I/O errors, 5xx, 429, 408, with
//!   `backoff × 2^(n-1)` jittered into its upper half, at most `max_backoff`,
//!   and at least a `Retry-After`. Final: other answers (4xx). After
//!   `retry.attempts` tries, after `retry.max_age`, or when its upstream was
//!   removed by a reload, a delivery is dead: kept, counted and logged.
//! - No order between events is promised: retries and the per-upstream
//!   concurrency let a later event overtake an earlier one.
//!
//! # Cost
//! The 202 waits for one group commit and nothing else. The backlog gauges
//! come from counts kept in memory ([`Backlog`]), not from rereading the store.
//! A fresh event's head and body stay in memory ([`Hot`], within
//! [`HOT_MAX_BYTES`]) until each of its deliveries has started its first
//! attempt, so the usual case (delivered at the first try) reads nothing back
//! from the store; retries, replays and events resumed after a start read it.
//!
//! # Shutdown
//! [`Queue::stop`] starts no new attempt; attempts in progress go on until they
//! end (the server waits for [`Queue::in_progress`] within `shutdown_grace`).
//! Everything else stays pending in the store for the next start.

pub mod client;
pub mod events_api;
pub mod redb_store;
pub mod redis_store;
pub mod store;

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify, Semaphore};

use crate::config::{Delivery, RetryPolicy, StorageSettings};
use crate::fanout::{AttemptOutcome, Class, Deliver, FanoutConfig, Job, Payload};
use crate::metrics::Metrics;
use crate::state::SharedState;
use store::{
    now_ms, AttemptRecord, EventKey, EventRecord, EventStore, Filter, NewEvent, Next, Status,
    StoreError,
};

/// How often the backlog gauges are refreshed and expired events purged.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
const PURGE_EVERY: Duration = Duration::from_secs(60);
/// The wait before trying again after the store failed to record an attempt.
const STORE_RETRY: Duration = Duration::from_secs(5);
/// Events one replay by filter covers at most.
pub const MAX_REPLAY: usize = 10_000;

/// A delivery due at a time: (due ms, event, delivery index).
type Due = (u64, EventKey, usize);

/// Bytes of heads and bodies kept in memory for first attempts, at most;
/// beyond it, an attempt reads its event from the store.
pub const HOT_MAX_BYTES: usize = 64 << 20;

/// A fresh event kept in memory for the first attempt of each delivery.
struct HotEvent {
    record: EventRecord,
    head: Bytes,
    body: Bytes,
    /// Deliveries whose first attempt has not taken it yet.
    unstarted: Vec<bool>,
}

/// Fresh events by key, within [`HOT_MAX_BYTES`].
#[derive(Default)]
struct Hot {
    events: HashMap<EventKey, HotEvent>,
    bytes: usize,
}

impl Hot {
    fn insert(&mut self, key: EventKey, record: EventRecord, head: Bytes, body: Bytes) {
        let size = head.len() + body.len();
        if self.bytes + size > HOT_MAX_BYTES {
            return;
        }
        self.bytes += size;
        let unstarted = vec![true; record.deliveries.len()];
        self.events.insert(
            key,
            HotEvent {
                record,
                head,
                body,
                unstarted,
            },
        );
    }

    /// The record as accepted, while delivery `index` has not started its first attempt.
    fn record(&self, key: EventKey, index: usize) -> Option<EventRecord> {
        let hot = self.events.get(&key)?;
        (*hot.unstarted.get(index)?).then(|| hot.record.clone())
    }

    /// The head and body for the first attempt of delivery `index`, once: it
    /// has started (or ended without one). The event leaves memory when every
    /// delivery has taken it.
    fn take(&mut self, key: EventKey, index: usize) -> Option<(Bytes, Bytes)> {
        let hot = self.events.get_mut(&key)?;
        if !std::mem::replace(hot.unstarted.get_mut(index)?, false) {
            return None;
        }
        let taken = (hot.head.clone(), hot.body.clone());
        if hot.unstarted.iter().all(|u| !u) {
            self.bytes -= hot.head.len() + hot.body.len();
            self.events.remove(&key);
        }
        Some(taken)
    }
}

/// Pending deliveries counted in memory, for the backlog gauges: kept in step
/// with the store by [`Queue::accept`], [`Inner::finish`] and [`Queue::replay`],
/// and rebuilt from the store at start.
#[derive(Default)]
struct Backlog {
    /// Pending deliveries per (route, upstream).
    deliveries: HashMap<(String, String), i64>,
    /// Events with a pending delivery: key -> (route, received ms, pending deliveries).
    events: HashMap<EventKey, (String, u64, usize)>,
    /// The same events per route, oldest first.
    by_route: HashMap<String, BTreeSet<(u64, EventKey)>>,
}

impl Backlog {
    /// A delivery of `key` (received at `received_ms`, or again after a replay) is pending.
    fn add(&mut self, key: EventKey, route: &str, received_ms: u64, upstream: &str) {
        *self
            .deliveries
            .entry((route.to_string(), upstream.to_string()))
            .or_default() += 1;
        let entry = self
            .events
            .entry(key)
            .or_insert_with(|| (route.to_string(), received_ms, 0));
        let oldest = self.by_route.entry(route.to_string()).or_default();
        // A replay starts a new max_age: the event's age starts again too.
        oldest.remove(&(entry.1, key));
        entry.1 = received_ms;
        entry.2 += 1;
        oldest.insert((received_ms, key));
    }

    /// A pending delivery of `key` was delivered or went dead.
    fn done(&mut self, key: EventKey, route: &str, upstream: &str) {
        if let Some(count) = self
            .deliveries
            .get_mut(&(route.to_string(), upstream.to_string()))
        {
            *count = (*count - 1).max(0);
        }
        let Some(entry) = self.events.get_mut(&key) else {
            return;
        };
        entry.2 = entry.2.saturating_sub(1);
        if entry.2 == 0 {
            let (route, received_ms, _) = self.events.remove(&key).expect("present");
            if let Some(oldest) = self.by_route.get_mut(&route) {
                oldest.remove(&(received_ms, key));
            }
        }
    }

    /// The age of the oldest event with a pending delivery per route, in ms.
    fn oldest(&self, now_ms: u64) -> HashMap<&str, u64> {
        self.by_route
            .iter()
            .filter_map(|(route, events)| {
                let (received, _) = events.first()?;
                Some((route.as_str(), now_ms.saturating_sub(*received)))
            })
            .collect()
    }
}

/// The queued-delivery runtime. Cheap to share (`Arc`).
pub struct Queue {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    deliver: Arc<dyn Deliver>,
    state: SharedState,
    metrics: Arc<Metrics>,
    settings: StorageSettings,
    attempt_timeout: Duration,
    runtime: Handle,
    timers: Mutex<BTreeSet<Due>>,
    wake: Notify,
    limits: Mutex<HashMap<String, Arc<Semaphore>>>,
    stopping: AtomicBool,
    stop: watch::Sender<bool>,
    in_progress: AtomicUsize,
    jitter: RandomState,
    retries: AtomicU64,
    backlog: Mutex<Backlog>,
    hot: Mutex<Hot>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Queue {
    /// Schedules every pending delivery found in `store` and starts the
    /// dispatcher and the purger on `runtime`. `deliver` makes one attempt (the
    /// same exchange as fan-out copies).
    pub fn start(
        store: Arc<dyn EventStore>,
        settings: StorageSettings,
        attempt_timeout: Duration,
        deliver: Arc<dyn Deliver>,
        state: SharedState,
        metrics: Arc<Metrics>,
        runtime: Handle,
    ) -> Result<Queue, StoreError> {
        let pending = runtime.block_on(store.pending())?;
        let mut timers = BTreeSet::new();
        let mut backlog = Backlog::default();
        for (key, record) in &pending {
            for (index, delivery) in record.deliveries.iter().enumerate() {
                if delivery.status == Status::Pending {
                    timers.insert((delivery.next_ms, *key, index));
                    backlog.add(*key, &record.route, record.started_ms(), &delivery.upstream);
                }
            }
        }
        if !timers.is_empty() {
            tracing::info!(
                events = pending.len(),
                deliveries = timers.len(),
                "resuming queued deliveries found in the store"
            );
        }
        let (stop, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            store,
            deliver,
            state,
            metrics,
            settings,
            attempt_timeout,
            runtime: runtime.clone(),
            timers: Mutex::new(timers),
            wake: Notify::new(),
            limits: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
            stop,
            in_progress: AtomicUsize::new(0),
            jitter: RandomState::new(),
            retries: AtomicU64::new(0),
            backlog: Mutex::new(backlog),
            hot: Mutex::new(Hot::default()),
        });
        inner.refresh_gauges();
        runtime.spawn(dispatch(inner.clone()));
        runtime.spawn(housekeep(inner.clone()));
        Ok(Queue { inner })
    }

    /// Stores `event` durably and schedules its deliveries; its event id once on disk.
    pub async fn accept(&self, event: NewEvent) -> Result<String, StoreError> {
        self.accept_remembering(event, None).await
    }

    /// Whether [`Queue::accept_remembering`] writes its [`store::Remember`]
    /// atomically with the event (the store is on Redis).
    pub fn remembers(&self) -> bool {
        self.inner.store.remembers()
    }

    /// [`Queue::accept`], writing `remember` in the same atomic step as the
    /// event when the store [`Queue::remembers`].
    pub async fn accept_remembering(
        &self,
        event: NewEvent,
        remember: Option<&store::Remember>,
    ) -> Result<String, StoreError> {
        let record = EventRecord::new(&event);
        let (head, body) = (event.head.clone(), event.body.clone());
        let route = event.route.clone();
        match self.inner.store.append_remembering(event, remember).await {
            Ok(key) => {
                let now = now_ms();
                {
                    let mut backlog = lock(&self.inner.backlog);
                    for delivery in &record.deliveries {
                        backlog.add(key, &record.route, record.started_ms(), &delivery.upstream);
                    }
                }
                let upstreams = record.deliveries.len();
                lock(&self.inner.hot).insert(key, record, head, body);
                {
                    let mut timers = lock(&self.inner.timers);
                    for index in 0..upstreams {
                        timers.insert((now, key, index));
                    }
                }
                self.inner.wake.notify_one();
                Ok(self.inner.store.event_id(key))
            }
            Err(error) => {
                let kind = match error {
                    StoreError::Full { .. } | StoreError::OutOfMemory(_) => "full",
                    _ => "io",
                };
                self.inner
                    .metrics
                    .store_errors
                    .with_label_values(&[kind])
                    .inc();
                tracing::warn!(route, %error, "queued delivery refused: not stored");
                Err(error)
            }
        }
    }

    /// Makes every finished delivery of the event pending again, due now.
    /// Returns how many deliveries were replayed.
    pub async fn replay(&self, key: EventKey) -> Result<usize, StoreError> {
        let replayed = self.inner.store.replay(key).await?;
        if !replayed.is_empty() {
            // On a read error only the gauges miss it; the deliveries are scheduled below.
            if let Ok(Some(record)) = self.inner.store.get(key).await {
                let mut backlog = lock(&self.inner.backlog);
                for index in &replayed {
                    if let Some(delivery) = record.deliveries.get(*index) {
                        backlog.add(key, &record.route, record.started_ms(), &delivery.upstream);
                    }
                }
            }
        }
        let now = now_ms();
        {
            let mut timers = lock(&self.inner.timers);
            for index in &replayed {
                timers.insert((now, key, *index));
            }
        }
        if !replayed.is_empty() {
            tracing::info!(event_id = %self.inner.store.event_id(key), deliveries = replayed.len(), "event replayed");
            self.inner.wake.notify_one();
        }
        Ok(replayed.len())
    }

    /// The store, for listing and showing events.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// Starts no new attempt from now on (SIGTERM); pending deliveries stay in the store.
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.stop.send_replace(true);
    }

    /// Makes every attempt recorded so far durable (for a clean stop, once
    /// no attempt is in progress). Blocks; call it off the runtime.
    pub fn sync(&self) {
        if let Err(error) = self.inner.runtime.block_on(self.inner.store.sync()) {
            tracing::warn!(%error, "cannot make the last attempt records durable");
        }
    }

    /// Attempts being made now.
    pub fn in_progress(&self) -> usize {
        self.inner.in_progress.load(Ordering::Acquire)
    }

    /// Events matching `filter`, newest first (see [`EventStore::list`]).
    pub async fn list(
        &self,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<(EventKey, EventRecord)>, StoreError> {
        self.inner.store.list(filter, limit).await
    }
}

/// Waits for the earliest due delivery and starts its attempt.
async fn dispatch(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    loop {
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let now = now_ms();
        let next = {
            let mut timers = lock(&inner.timers);
            match timers.first().copied() {
                Some(due) if due.0 <= now => {
                    timers.remove(&due);
                    Some(Ok(due))
                }
                Some(due) => Some(Err(due.0 - now)),
                None => None,
            }
        };
        match next {
            Some(Ok((_, key, index))) => {
                inner.runtime.spawn(attempt(inner.clone(), key, index));
            }
            Some(Err(wait_ms)) => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
                    _ = inner.wake.notified() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            None => {
                tokio::select! {
                    _ = inner.wake.notified() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

/// Counts an attempt in progress while it lives.
struct InProgress<'a>(&'a AtomicUsize);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Inner {
    fn limit(&self, upstream: &str) -> Arc<Semaphore> {
        lock(&self.limits)
            .entry(upstream.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(self.settings.concurrency)))
            .clone()
    }

    fn schedule(&self, at_ms: u64, key: EventKey, index: usize) {
        lock(&self.timers).insert((at_ms, key, index));
        self.wake.notify_one();
    }

    /// The policy of the event's route as configured now, or the one it was accepted with.
    fn policy(&self, record: &EventRecord) -> RetryPolicy {
        let snapshot = self.state.load();
        match snapshot.config.route(&record.route).map(|r| r.delivery) {
            Some(Delivery::Queued(policy)) => policy,
            _ => record.retry(),
        }
    }

    /// Records what became of delivery `index` of `key`; on a store error the
    /// delivery is tried again later (it is still pending in the store).
    /// `next` comes with why it is dead (a `hookgate_queue_dead_total` reason),
    /// counted once recorded; `labels` are its route and upstream.
    async fn finish(
        &self,
        key: EventKey,
        index: usize,
        attempt: Option<AttemptRecord>,
        (next, dead): (Next, Option<&'static str>),
        (route, upstream): (&str, &str),
    ) {
        let retry_at = match &next {
            Next::RetryAt(at) => Some(*at),
            _ => None,
        };
        match self.store.record(key, index, attempt, next).await {
            Ok(()) => {
                match retry_at {
                    Some(at) => self.schedule(at, key, index),
                    None => lock(&self.backlog).done(key, route, upstream),
                }
                if let Some(why) = dead {
                    self.metrics
                        .queue_dead
                        .with_label_values(&[route, upstream, why])
                        .inc();
                }
            }
            Err(error) => {
                self.metrics.store_errors.with_label_values(&["io"]).inc();
                tracing::error!(%error, event_id = %self.store.event_id(key), "cannot record a delivery attempt; it will be tried again");
                self.schedule(now_ms() + STORE_RETRY.as_millis() as u64, key, index);
            }
        }
    }

    /// Schedules the deliveries this instance takes over from instances that
    /// stopped renewing their leases (a shared store only).
    async fn take_over(&self) {
        match self.store.claim().await {
            Ok(claimed) if claimed.is_empty() => {}
            Ok(claimed) => {
                tracing::info!(
                    deliveries = claimed.len(),
                    "took over queued deliveries whose lease had passed"
                );
                for (key, record, index) in claimed {
                    let Some(delivery) = record.deliveries.get(index) else {
                        continue;
                    };
                    lock(&self.backlog).add(
                        key,
                        &record.route,
                        record.started_ms(),
                        &delivery.upstream,
                    );
                    self.schedule(delivery.next_ms, key, index);
                }
            }
            Err(error) => {
                self.metrics.store_errors.with_label_values(&["io"]).inc();
                tracing::warn!(%error, "cannot take over queued deliveries of other instances now");
            }
        }
    }

    /// Sets the backlog gauges from the counts in memory (no store read).
    fn refresh_gauges(&self) {
        let now = now_ms();
        let backlog = lock(&self.backlog);
        let deliveries: HashMap<(&str, &str), i64> = backlog
            .deliveries
            .iter()
            .map(|((route, upstream), n)| ((route.as_str(), upstream.as_str()), *n))
            .collect();
        self.metrics.set_queue_gauges(
            &deliveries,
            &backlog.oldest(now),
            self.store.bytes_used(),
            self.settings.max_bytes,
        );
    }
}

/// Refreshes the gauges, and purges expired events, until stopped.
async fn housekeep(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    let mut last_purge = Instant::now();
    let claim_every = inner.store.claim_every();
    let tick = claim_every.map_or(REFRESH_EVERY, |every| every.min(REFRESH_EVERY));
    let mut last_claim = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if claim_every.is_some_and(|every| last_claim.elapsed() >= every) {
            last_claim = Instant::now();
            inner.take_over().await;
        }
        inner.refresh_gauges();
        if last_purge.elapsed() >= PURGE_EVERY {
            last_purge = Instant::now();
            let before = now_ms().saturating_sub(inner.settings.retention.as_millis() as u64);
            // The scan reads every record: off the runtime's only worker.
            let purged = tokio::task::block_in_place(|| {
                Handle::current().block_on(inner.store.purge(before))
            });
            match purged {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "purged events past [storage] retention"),
                Err(error) => tracing::warn!(%error, "retention purge failed"),
            }
        }
    }
}

/// `head` (ending in the empty line) with the event id and attempt headers added.
fn with_event_headers(head: &[u8], event_id: &str, attempt: u32) -> Bytes {
    let body_at = head.len().saturating_sub(2);
    let mut out = BytesMut::with_capacity(head.len() + 64);
    out.extend_from_slice(&head[..body_at]);
    out.extend_from_slice(b"X-Hookgate-Event-Id: ");
    out.extend_from_slice(event_id.as_bytes());
    out.extend_from_slice(b"\r\nX-Hookgate-Attempt: ");
    out.extend_from_slice(attempt.to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.freeze()
}

/// Drops what [`Hot`] keeps for a first attempt that ended before taking it.
struct ForgetHot<'a>(&'a Inner, EventKey, usize);

impl Drop for ForgetHot<'_> {
    fn drop(&mut self) {
        lock(&self.0.hot).take(self.1, self.2);
    }
}

/// One attempt of delivery `index` of event `key`, and what follows it.
async fn attempt(inner: Arc<Inner>, key: EventKey, index: usize) {
    // A fresh event's first attempt: as accepted, nothing to read back. Its
    // head and body are taken once the attempt has its permit (a task waiting
    // for one holds no body), or dropped if it ends before.
    let hot = lock(&inner.hot).record(key, index);
    let _forget = ForgetHot(&inner, key, index);
    let record = match hot {
        Some(record) => record,
        None => match inner.store.get(key).await {
            Ok(Some(record)) => record,
            Ok(None) => return, // purged or never stored
            Err(error) => {
                tracing::error!(%error, "cannot read a queued event; it will be tried again");
                inner.schedule(now_ms() + STORE_RETRY.as_millis() as u64, key, index);
                return;
            }
        },
    };
    let Some(delivery) = record.deliveries.get(index) else {
        return;
    };
    if delivery.status != Status::Pending {
        return;
    }
    let route = record.route.as_str();
    let upstream = delivery.upstream.as_str();
    let event_id = inner.store.event_id(key);
    let policy = inner.policy(&record);
    // Counted once the store has it (`Inner::finish`), so the metric never
    // runs ahead of what the events API shows.
    let dead = |reason: String, why: &'static str| {
        tracing::warn!(route, upstream, event_id = %event_id, reason, "queued delivery is dead");
        (Next::Dead(reason), Some(why))
    };
    if !inner.state.load().pools.contains_key(upstream) {
        let next = dead(
            format!("upstream {upstream:?} was removed by a reload"),
            "upstream_removed",
        );
        inner
            .finish(key, index, None, next, (route, upstream))
            .await;
        return;
    }
    let age = Duration::from_millis(now_ms().saturating_sub(record.started_ms()));
    if age > policy.max_age {
        let next = dead(
            format!("not delivered within retry.max_age {:?}", policy.max_age),
            "max_age",
        );
        inner
            .finish(key, index, None, next, (route, upstream))
            .await;
        return;
    }
    // The per-upstream limit: a slow or dead upstream holds only its own slots.
    let limit = inner.limit(upstream);
    let mut stop = inner.stop.subscribe();
    let permit = tokio::select! {
        permit = limit.acquire_owned() => permit,
        // Stopping: the delivery stays pending in the store for the next start.
        _ = stop.wait_for(|s| *s) => return,
    };
    let Ok(_permit) = permit else { return };
    if inner.stopping.load(Ordering::SeqCst) {
        return;
    }
    // A shared store: another instance took this delivery over (this one
    // could not renew its lease in time); it is that instance's now.
    if !inner.store.holds(key, index) {
        lock(&inner.backlog).done(key, route, upstream);
        return;
    }
    inner.in_progress.fetch_add(1, Ordering::AcqRel);
    let _counted = InProgress(&inner.in_progress);
    let hot = lock(&inner.hot).take(key, index);
    let stored = match hot {
        Some(payload) => Ok(Some(payload)),
        None => inner.store.payload(key).await,
    };
    let (head, body) = match stored {
        Ok(Some(payload)) => payload,
        Ok(None) => return,
        Err(error) => {
            tracing::error!(%error, "cannot read a queued event's payload; it will be tried again");
            inner.schedule(now_ms() + STORE_RETRY.as_millis() as u64, key, index);
            return;
        }
    };
    let number = delivery.tries + 1;
    let job = Job {
        route: route.into(),
        upstream: upstream.into(),
        payload: Arc::new(Payload {
            method: http::Method::from_bytes(record.method.as_bytes())
                .unwrap_or(http::Method::POST),
            head: with_event_headers(&head, &event_id, number),
            body,
        }),
    };
    let at_ms = now_ms();
    let started = Instant::now();
    let outcome = tokio::time::timeout(inner.attempt_timeout, inner.deliver.deliver(&job, number))
        .await
        .unwrap_or(AttemptOutcome::TimedOut);
    let (status, error) = match &outcome {
        AttemptOutcome::Response { status, .. } => (Some(status.as_u16()), None),
        AttemptOutcome::ConnectFailed(e) => (None, Some(format!("connect: {e}"))),
        AttemptOutcome::TimedOut => (None, Some("timeout".to_string())),
        AttemptOutcome::Io(e) => (None, Some(format!("i/o: {e}"))),
    };
    let record_attempt = AttemptRecord {
        at_ms,
        duration_ms: started.elapsed().as_millis() as u64,
        status,
        error: error.clone(),
    };
    let label = outcome.label();
    let next = match outcome.class() {
        Class::Delivered => {
            inner
                .metrics
                .queue_attempts
                .with_label_values(&[route, upstream, "delivered"])
                .inc();
            (Next::Delivered, None)
        }
        Class::Fail => {
            inner
                .metrics
                .queue_attempts
                .with_label_values(&[route, upstream, "failed"])
                .inc();
            dead(
                format!("the upstream answered {}: not retried", status.unwrap_or(0)),
                "final_status",
            )
        }
        Class::Retry => {
            inner
                .metrics
                .queue_attempts
                .with_label_values(&[route, upstream, "retried"])
                .inc();
            let age = Duration::from_millis(now_ms().saturating_sub(record.started_ms()));
            if number >= policy.attempts {
                dead(
                    format!("{number} attempts failed, the last with {label}"),
                    "exhausted",
                )
            } else if age >= policy.max_age {
                dead(
                    format!("not delivered within retry.max_age {:?}", policy.max_age),
                    "max_age",
                )
            } else {
                let backoff = FanoutConfig {
                    backoff: policy.backoff,
                    max_backoff: policy.max_backoff,
                    ..FanoutConfig::default()
                };
                let mut hasher = inner.jitter.build_hasher();
                hasher.write_u64(inner.retries.fetch_add(1, Ordering::Relaxed));
                let delay = backoff.backoff_delay(number, hasher.finish(), outcome.retry_after());
                tracing::info!(route, upstream, event_id = %event_id, attempt = number, outcome = label, error = error.as_deref().unwrap_or(""), delay_ms = delay.as_millis() as u64, "queued delivery will be retried");
                (Next::RetryAt(now_ms() + delay.as_millis() as u64), None)
            }
        }
    };
    inner
        .finish(key, index, Some(record_attempt), next, (route, upstream))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_headers_go_before_the_empty_line() {
        let head = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n";
        let out = with_event_headers(head, "00000001000000000002", 3);
        assert_eq!(
            &out[..],
            &b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Hookgate-Event-Id: 00000001000000000002\r\nX-Hookgate-Attempt: 3\r\n\r\n"[..]
        );
    }
}
