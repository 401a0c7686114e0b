//! Fan-out copies: background delivery of a request to the secondary upstreams of a rule
//! (`upstream = ["ci", "audit"]`: `ci` answers the sender, `audit` gets a copy from here).
//!
//! Owns: what the `[server] fanout = { ... }` keys mean ([`FanoutConfig`], documented
//! below; the file layer and its validation are `config::fanout`); the
//! bounded background queue ([`Fanout`]) with its concurrency cap, retries with exponential
//! backoff and jitter, and shutdown; the classification of attempt outcomes
//! ([`AttemptOutcome::class`]); the [`Deliver`] trait the proxy implements and the
//! [`Observer`] trait through which it counts. Does not own: the upstream exchange itself
//! (the proxy's [`Deliver`] implementation: pools, timeouts, headers), the primary upstream's
//! answer to the sender, metric names, or logging.
//!
//! # Configuration
//! ```toml
//! [server]
//! fanout = { queue = 1000, concurrency = 4, attempts = 5, backoff = "500ms", max_backoff = "30s" }
//! ```
//! Every key is optional (defaults shown, plus `max_bytes = "64MiB"`, `attempt_timeout = "30s"`).
//! - `queue`: copies held at once — waiting for a worker, being sent, or waiting to retry.
//! - `max_bytes`: body bytes held at once (each copy counts its body; a body shared by two
//!   copies counts twice). With `queue` this bounds memory whatever `max_body` is.
//! - `concurrency`: attempts in progress at once, over all upstreams.
//! - `attempts`: tries per copy, the first included (1 = no retries).
//! - `backoff`, `max_backoff`: the wait before retry *n* is `backoff × 2^(n-1)`, at most
//!   `max_backoff`, then jittered to a uniformly random point in its upper half (so copies
//!   that failed together do not retry together). A `Retry-After` from a 429/503 lengthens
//!   the wait, up to `max_backoff`.
//! - `attempt_timeout`: a guard around each [`Deliver::deliver`] call, counted as a timeout.
//!
//! # Retry policy
//! [`AttemptOutcome::class`]: 2xx is delivered. Retried: connect failures, timeouts, I/O
//! errors after connecting, 5xx, 429 and 408. Not retried (failed at once): other 4xx, 1xx and 3xx.
//! Delivery is at-least-once: a timeout or I/O error may hide a copy the upstream did get.
//!
//! # Nothing is dropped silently
//! - [`Fanout::enqueue`] returns [`Dropped`] when the queue (or `max_bytes`) is full or the
//!   queue is shutting down: the caller counts it (`hookgate_fanout_dropped_total`) and logs.
//! - Every copy that was accepted ends in exactly one [`Observer`] call — `delivered` or
//!   `failed` — or, at shutdown, in [`ShutdownReport::abandoned`]. Each retry is reported by
//!   `retried` first. Totals for all routes are in [`Fanout::counts`].
//!
//! # Shutdown
//! [`Fanout::shutdown`] refuses new copies, lets the held ones go on for up to `grace`
//! (attempts and backoff waits included), then stops the rest — including attempts in
//! progress — and reports each of them ([`Abandoned`], with `in_progress` when an attempt was
//! cut off and the upstream may have received it).
//!
//! # Runtime
//! Each accepted copy is one task on the runtime handle given to [`Fanout::start`]; the
//! task sleeps during backoff without holding a concurrency slot, so a dead upstream delays
//! nothing else. Call [`Fanout::shutdown`] before that runtime stops: copies still held when
//! it is dropped are lost without a report.

use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, StatusCode};
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify, Semaphore};

// ---------------------------------------------------------------------------------------------
// Compiled configuration (the file layer and its validation: `config::fanout`)

/// A validated fan-out configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanoutConfig {
    pub queue: usize,
    pub max_bytes: u64,
    pub concurrency: usize,
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub attempt_timeout: Duration,
    /// With a `[storage]` table: copies are stored (fsynced) before the
    /// primary's answer is relayed and delivered by the queued-delivery
    /// runtime, instead of this in-memory queue. Default `true`.
    pub stored: bool,
}

impl Default for FanoutConfig {
    fn default() -> Self {
        FanoutConfig {
            queue: 1000,
            max_bytes: 64 << 20,
            concurrency: 4,
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(30),
            stored: true,
        }
    }
}

impl FanoutConfig {
    /// The wait before retry `retry` (1 = after the first attempt), before jitter:
    /// `backoff × 2^(retry-1)`, at most `max_backoff`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }

    /// The wait before retry `retry`: the ceiling jittered into its upper half by `random`
    /// (any u64), raised to `retry_after` if given, never above `max_backoff`.
    pub fn backoff_delay(
        &self,
        retry: u32,
        random: u64,
        retry_after: Option<Duration>,
    ) -> Duration {
        let ceiling = self.backoff_ceiling(retry);
        let half = ceiling / 2;
        let span = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        let jittered = half + Duration::from_nanos(if span == 0 { 0 } else { random % (span + 1) });
        jittered
            .max(retry_after.unwrap_or(Duration::ZERO))
            .min(self.max_backoff)
    }
}

// ---------------------------------------------------------------------------------------------
// Jobs and outcomes

/// The request to copy: what was received and verified. Shared by the copies of one request.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The request method (a `HEAD` response is read without a body).
    pub method: Method,
    /// The request head in HTTP/1.1 wire form, exactly as the primary upstream got
    /// it (the proxy decides the headers: forwarded ones plus X-Hookgate-*).
    pub head: Bytes,
    /// The exact verified body.
    pub body: Bytes,
}

/// One copy for one upstream, as handed to [`Deliver::deliver`].
#[derive(Debug, Clone)]
pub struct Job {
    pub route: Arc<str>,
    pub upstream: Arc<str>,
    pub payload: Arc<Payload>,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The upstream answered. `retry_after` from its `Retry-After` header, when present.
    Response {
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    /// No connection could be made (nothing was sent).
    ConnectFailed(String),
    /// No answer within the upstream's timeout (or the attempt guard).
    TimedOut,
    /// The connection failed after the request started (the upstream may have it).
    Io(String),
}

/// How an outcome counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Delivered,
    Retry,
    Fail,
}

impl AttemptOutcome {
    pub fn response(status: u16) -> Self {
        AttemptOutcome::Response {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            retry_after: None,
        }
    }

    /// 2xx → delivered; connect failure, timeout, I/O error, 5xx, 429, 408 → retry;
    /// anything else → fail.
    pub fn class(&self) -> Class {
        match self {
            AttemptOutcome::Response { status, .. } => {
                if status.is_success() {
                    Class::Delivered
                } else if status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
                {
                    Class::Retry
                } else {
                    Class::Fail
                }
            }
            AttemptOutcome::ConnectFailed(_) | AttemptOutcome::TimedOut | AttemptOutcome::Io(_) => {
                Class::Retry
            }
        }
    }

    /// Short label for logs and metrics: `"2xx"`…`"5xx"`, `"connect"`, `"timeout"`, `"io"`.
    pub fn label(&self) -> &'static str {
        match self {
            AttemptOutcome::Response { status, .. } => match status.as_u16() / 100 {
                1 => "1xx",
                2 => "2xx",
                3 => "3xx",
                4 => "4xx",
                _ => "5xx",
            },
            AttemptOutcome::ConnectFailed(_) => "connect",
            AttemptOutcome::TimedOut => "timeout",
            AttemptOutcome::Io(_) => "io",
        }
    }

    /// The wait a `Retry-After` asked for, if the upstream sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AttemptOutcome::Response { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Sends one copy to its upstream, once. Implemented by the proxy with the real exchange
/// (its pools and timeouts); retries are the queue's business, not the implementation's.
#[async_trait]
pub trait Deliver: Send + Sync + 'static {
    /// `attempt` counts from 1.
    async fn deliver(&self, job: &Job, attempt: u32) -> AttemptOutcome;
}

/// Why a copy ended without delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The last allowed attempt failed with a retryable outcome.
    Exhausted,
    /// A non-retryable answer (4xx other than 408/429, 1xx, 3xx).
    NotRetryable,
}

/// Hooks for counting per (route, upstream). All default to doing nothing. Called from the
/// copy's task; keep them cheap (increment a counter, write a log line).
pub trait Observer: Send + Sync + 'static {
    /// Delivered (2xx) after `attempts` attempts.
    fn delivered(&self, _job: &Job, _attempts: u32) {}
    /// Attempt `attempt` failed with `outcome`; the next one starts after `delay`.
    fn retried(&self, _job: &Job, _attempt: u32, _outcome: &AttemptOutcome, _delay: Duration) {}
    /// Given up after `attempts` attempts; `last` is the final outcome.
    fn failed(&self, _job: &Job, _attempts: u32, _last: &AttemptOutcome, _why: Failure) {}
}

/// An [`Observer`] that does nothing.
pub struct NoObserver;
impl Observer for NoObserver {}

/// Why a copy was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// `queue` copies are held already.
    QueueFull,
    /// Accepting the body would exceed `max_bytes`.
    BytesFull,
    /// [`Fanout::shutdown`] has begun.
    ShuttingDown,
}

impl DropReason {
    /// Every reason, for creating `hookgate_fanout_dropped_total` at 0.
    pub const ALL: [DropReason; 3] = [
        DropReason::QueueFull,
        DropReason::BytesFull,
        DropReason::ShuttingDown,
    ];

    /// Metric label: `queue_full` | `bytes_full` | `shutting_down`.
    pub fn label(&self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::BytesFull => "bytes_full",
            DropReason::ShuttingDown => "shutting_down",
        }
    }
}

/// A copy [`Fanout::enqueue`] did not accept: count it and log it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fan-out copy for route {route} to upstream {upstream} dropped: {}", reason.label())]
pub struct Dropped {
    pub route: Arc<str>,
    pub upstream: Arc<str>,
    pub reason: DropReason,
}

/// A copy stopped by [`Fanout::shutdown`] after the grace period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abandoned {
    pub route: Arc<str>,
    pub upstream: Arc<str>,
    /// Attempts started (0: it never got a worker).
    pub attempts: u32,
    /// An attempt was cut off mid-way: the upstream may have received the copy.
    pub in_progress: bool,
}

/// What [`Fanout::shutdown`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Copies that ended (delivered or failed) during the grace period.
    pub finished_in_grace: u64,
    /// Copies still held when the grace period ran out, now stopped.
    pub abandoned: Vec<Abandoned>,
}

/// Totals over all routes and upstreams since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    pub delivered: u64,
    pub retried: u64,
    pub failed: u64,
    /// Refused by `enqueue` plus abandoned at shutdown.
    pub dropped: u64,
    /// Copies held now.
    pub held: usize,
}

// ---------------------------------------------------------------------------------------------
// The queue

/// The fan-out queue. Cheap to clone (shared).
#[derive(Clone)]
pub struct Fanout {
    shared: Arc<Shared>,
}

struct Shared {
    config: FanoutConfig,
    deliver: Arc<dyn Deliver>,
    observer: Arc<dyn Observer>,
    runtime: Handle,
    /// One permit per copy held; closed at shutdown.
    slots: Arc<Semaphore>,
    /// One permit per attempt in progress.
    workers: Semaphore,
    bytes: AtomicU64,
    held: AtomicUsize,
    idle: Notify,
    cancel: watch::Sender<bool>,
    abandoned: Mutex<Vec<Abandoned>>,
    jitter: RandomState,
    accepted: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl fmt::Debug for Fanout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fanout")
            .field("config", &self.shared.config)
            .field("counts", &self.counts())
            .finish()
    }
}

impl Fanout {
    /// A queue whose copies run as tasks on `runtime`.
    pub fn start(
        config: FanoutConfig,
        deliver: Arc<dyn Deliver>,
        observer: Arc<dyn Observer>,
        runtime: Handle,
    ) -> Fanout {
        let (cancel, _) = watch::channel(false);
        Fanout {
            shared: Arc::new(Shared {
                config,
                deliver,
                observer,
                runtime,
                slots: Arc::new(Semaphore::new(config.queue)),
                workers: Semaphore::new(config.concurrency),
                bytes: AtomicU64::new(0),
                held: AtomicUsize::new(0),
                idle: Notify::new(),
                cancel,
                abandoned: Mutex::new(Vec::new()),
                jitter: RandomState::new(),
                accepted: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                retried: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    pub fn config(&self) -> &FanoutConfig {
        &self.shared.config
    }

    /// Accepts a copy of `payload` for `upstream`, or says why not. Never waits.
    pub fn enqueue(
        &self,
        route: &str,
        upstream: &str,
        payload: Arc<Payload>,
    ) -> Result<(), Dropped> {
        let shared = &self.shared;
        let dropped = |reason| {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            Err(Dropped {
                route: route.into(),
                upstream: upstream.into(),
                reason,
            })
        };
        let slot = match Arc::clone(&shared.slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(tokio::sync::TryAcquireError::Closed) => return dropped(DropReason::ShuttingDown),
            Err(tokio::sync::TryAcquireError::NoPermits) => return dropped(DropReason::QueueFull),
        };
        let size = payload.body.len() as u64;
        let before = shared.bytes.fetch_add(size, Ordering::AcqRel);
        if before.saturating_add(size) > shared.config.max_bytes {
            shared.bytes.fetch_sub(size, Ordering::AcqRel);
            return dropped(DropReason::BytesFull);
        }
        shared.held.fetch_add(1, Ordering::AcqRel);
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            route: route.into(),
            upstream: upstream.into(),
            payload,
        };
        // Releases the copy's accounting however the task ends (even if a stopping runtime
        // drops it unpolled), so `held` and `shutdown` never wait for a lost task.
        let held = Held {
            shared: Arc::clone(shared),
            size,
            _slot: slot,
        };
        shared.runtime.spawn(async move {
            if let Some(abandoned) = run(&held.shared, &job).await {
                held.shared.dropped.fetch_add(1, Ordering::Relaxed);
                lock(&held.shared.abandoned).push(abandoned);
            }
            drop(held);
        });
        Ok(())
    }

    /// Copies held now (waiting, in progress, or waiting to retry).
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::Acquire)
    }

    pub fn counts(&self) -> Counts {
        let s = &self.shared;
        Counts {
            accepted: s.accepted.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            retried: s.retried.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            held: self.held(),
        }
    }

    /// Refuses new copies, waits up to `grace` for the held ones, then stops the rest and
    /// reports them. Safe to call more than once (later calls report nothing new).
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let shared = &self.shared;
        shared.slots.close();
        let finished_before =
            shared.delivered.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
        let _ = tokio::time::timeout(grace, self.wait_idle()).await;
        let finished_in_grace = shared.delivered.load(Ordering::Relaxed)
            + shared.failed.load(Ordering::Relaxed)
            - finished_before;
        shared.cancel.send_replace(true);
        self.wait_idle().await;
        let mut abandoned = std::mem::take(&mut *lock(&shared.abandoned));
        abandoned.sort_by(|a, b| (&a.route, &a.upstream).cmp(&(&b.route, &b.upstream)));
        ShutdownReport {
            finished_in_grace,
            abandoned,
        }
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.shared.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.held() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One accepted copy's share of the queue: its slot, its bytes and the `held` count.
struct Held {
    shared: Arc<Shared>,
    size: u64,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.shared.bytes.fetch_sub(self.size, Ordering::AcqRel);
        if self.shared.held.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.idle.notify_waiters();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs one copy to its end. `Some` if it was stopped by shutdown.
async fn run(shared: &Shared, job: &Job) -> Option<Abandoned> {
    let mut cancel = shared.cancel.subscribe();
    let config = &shared.config;
    let abandoned = |attempts, in_progress| {
        Some(Abandoned {
            route: Arc::clone(&job.route),
            upstream: Arc::clone(&job.upstream),
            attempts,
            in_progress,
        })
    };
    let mut attempt = 1u32;
    loop {
        let worker = tokio::select! {
            biased;
            _ = cancel.wait_for(|c| *c) => return abandoned(attempt - 1, false),
            w = shared.workers.acquire() => w,
        };
        let Ok(worker) = worker else {
            return abandoned(attempt - 1, false);
        };
        let outcome = tokio::select! {
            biased;
            _ = cancel.wait_for(|c| *c) => return abandoned(attempt, true),
            o = tokio::time::timeout(config.attempt_timeout, shared.deliver.deliver(job, attempt)) => {
                o.unwrap_or(AttemptOutcome::TimedOut)
            }
        };
        drop(worker);
        match outcome.class() {
            Class::Delivered => {
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                shared.observer.delivered(job, attempt);
                return None;
            }
            Class::Fail => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                shared
                    .observer
                    .failed(job, attempt, &outcome, Failure::NotRetryable);
                return None;
            }
            Class::Retry if attempt >= config.attempts => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                shared
                    .observer
                    .failed(job, attempt, &outcome, Failure::Exhausted);
                return None;
            }
            Class::Retry => {
                let mut hasher = shared.jitter.build_hasher();
                hasher.write_u64(shared.retried.fetch_add(1, Ordering::Relaxed));
                let delay = config.backoff_delay(attempt, hasher.finish(), outcome.retry_after());
                shared.observer.retried(job, attempt, &outcome, delay);
                tokio::select! {
                    biased;
                    _ = cancel.wait_for(|c| *c) => return abandoned(attempt, false),
                    _ = tokio::time::sleep(delay) => {}
                }
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
