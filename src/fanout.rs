//! Fan-out copies: background delivery of a request to the secondary upstreams of a rule
//! (`upstream = ["ci", "audit"]`: `ci` answers the sender, `audit` gets a copy from here).
//!
//! Owns: the `[server] fanout = { ... }` table ([`FanoutSpec`] → [`FanoutConfig`]); the
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
use serde::Deserialize;
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify, Semaphore};

use crate::config::Problem;
use crate::units::{parse_duration, parse_size};

// ---------------------------------------------------------------------------------------------
// Configuration

/// The `[server] fanout` table, as written. Every key is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanoutSpec {
    pub queue: Option<usize>,
    pub max_bytes: Option<String>,
    pub concurrency: Option<usize>,
    pub attempts: Option<u32>,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub attempt_timeout: Option<String>,
}

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
        }
    }
}

impl FanoutSpec {
    /// Validates the table. Problem keys: `"queue"`, `"max_bytes"`, `"concurrency"`,
    /// `"attempts"`, `"backoff"`, `"max_backoff"`, `"attempt_timeout"`; the loader prefixes
    /// `"server.fanout"`. Every problem is reported.
    pub fn compile(&self) -> Result<FanoutConfig, Vec<Problem>> {
        let mut problems = Vec::new();
        let defaults = FanoutConfig::default();
        let mut range =
            |key: &str, value: Option<u64>, min: u64, max: u64, default: u64| match value {
                None => default,
                Some(v) if (min..=max).contains(&v) => v,
                Some(v) => {
                    problems.push(Problem::new(
                        key,
                        format!(
                            "{key} = {v} is out of range; use {min} to {max} (default {default})"
                        ),
                    ));
                    default
                }
            };
        let queue = range("queue", self.queue.map(|v| v as u64), 1, 1_000_000, 1000) as usize;
        let concurrency = range(
            "concurrency",
            self.concurrency.map(|v| v as u64),
            1,
            1024,
            4,
        ) as usize;
        let attempts = range("attempts", self.attempts.map(u64::from), 1, 100, 5) as u32;
        let mut duration = |key: &str, value: &Option<String>, default: Duration| match value {
            None => default,
            Some(text) => {
                match parse_duration(text) {
                    Ok(d) if !d.is_zero() && d <= Duration::from_secs(24 * 3600) => d,
                    Ok(_) => {
                        problems.push(Problem::new(
                        key,
                        format!("{key} = {text:?} is out of range; use more than 0 and at most \"24h\""),
                    ));
                        default
                    }
                    Err(m) => {
                        problems.push(Problem::new(key, m));
                        default
                    }
                }
            }
        };
        let backoff = duration("backoff", &self.backoff, defaults.backoff);
        let max_backoff = duration("max_backoff", &self.max_backoff, defaults.max_backoff);
        let attempt_timeout = duration(
            "attempt_timeout",
            &self.attempt_timeout,
            defaults.attempt_timeout,
        );
        if max_backoff < backoff {
            problems.push(Problem::new(
                "max_backoff",
                format!(
                    "max_backoff ({}) is shorter than backoff ({}); raise it or lower backoff",
                    humantime::format_duration(max_backoff),
                    humantime::format_duration(backoff)
                ),
            ));
        }
        let max_bytes = match self.max_bytes.as_deref() {
            None => defaults.max_bytes,
            Some(text) => match parse_size(text) {
                Ok(0) => {
                    problems.push(Problem::new("max_bytes", "max_bytes must be more than 0"));
                    0
                }
                Ok(n) => n,
                Err(m) => {
                    problems.push(Problem::new("max_bytes", m));
                    0
                }
            },
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(FanoutConfig {
            queue,
            max_bytes,
            concurrency,
            attempts,
            backoff,
            max_backoff,
            attempt_timeout,
        })
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
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tokio::time::Instant;

    fn payload(body: &'static str) -> Arc<Payload> {
        Arc::new(Payload {
            method: Method::POST,
            head: Bytes::from_static(b"POST /webhooks/github HTTP/1.1\r\n\r\n"),
            body: Bytes::from_static(body.as_bytes()),
        })
    }

    /// Answers from a script per upstream (then 200), records each attempt's time.
    #[derive(Default)]
    struct Fake {
        scripts: Mutex<std::collections::HashMap<String, VecDeque<AttemptOutcome>>>,
        calls: Mutex<Vec<(String, u32, Instant)>>,
        /// How long each attempt takes.
        latency: Duration,
        running: AtomicUsize,
        max_running: AtomicUsize,
    }

    impl Fake {
        fn script(&self, upstream: &str, outcomes: Vec<AttemptOutcome>) {
            lock(&self.scripts).insert(upstream.into(), outcomes.into());
        }
        fn calls(&self, upstream: &str) -> Vec<(u32, Instant)> {
            lock(&self.calls)
                .iter()
                .filter(|(u, _, _)| u == upstream)
                .map(|(_, a, t)| (*a, *t))
                .collect()
        }
    }

    #[async_trait]
    impl Deliver for Fake {
        async fn deliver(&self, job: &Job, attempt: u32) -> AttemptOutcome {
            lock(&self.calls).push((job.upstream.to_string(), attempt, Instant::now()));
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
            lock(&self.scripts)
                .get_mut(&*job.upstream)
                .and_then(VecDeque::pop_front)
                .unwrap_or(AttemptOutcome::response(200))
        }
    }

    #[derive(Default)]
    struct Recorder {
        events: Mutex<Vec<String>>,
    }

    impl Observer for Recorder {
        fn delivered(&self, job: &Job, attempts: u32) {
            lock(&self.events).push(format!(
                "delivered {}/{} after {attempts}",
                job.route, job.upstream
            ));
        }
        fn retried(&self, job: &Job, attempt: u32, outcome: &AttemptOutcome, _delay: Duration) {
            lock(&self.events).push(format!(
                "retry {} #{attempt} {}",
                job.upstream,
                outcome.label()
            ));
        }
        fn failed(&self, job: &Job, attempts: u32, last: &AttemptOutcome, why: Failure) {
            lock(&self.events).push(format!(
                "failed {} after {attempts} {} {why:?}",
                job.upstream,
                last.label()
            ));
        }
    }

    fn start(config: FanoutConfig, fake: &Arc<Fake>, rec: &Arc<Recorder>) -> Fanout {
        Fanout::start(
            config,
            Arc::clone(fake) as Arc<dyn Deliver>,
            Arc::clone(rec) as Arc<dyn Observer>,
            Handle::current(),
        )
    }

    fn config() -> FanoutConfig {
        FanoutConfig {
            queue: 10,
            concurrency: 2,
            attempts: 4,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            ..FanoutConfig::default()
        }
    }

    async fn settle(fanout: &Fanout) {
        tokio::time::timeout(Duration::from_secs(3600), fanout.wait_idle())
            .await
            .expect("copies did not finish");
    }

    #[test]
    fn classification_table() {
        use AttemptOutcome as O;
        let table = [
            (O::response(200), Class::Delivered),
            (O::response(204), Class::Delivered),
            (O::response(500), Class::Retry),
            (O::response(502), Class::Retry),
            (O::response(503), Class::Retry),
            (O::response(429), Class::Retry),
            (O::response(408), Class::Retry),
            (O::response(400), Class::Fail),
            (O::response(401), Class::Fail),
            (O::response(404), Class::Fail),
            (O::response(422), Class::Fail),
            (O::response(301), Class::Fail),
            (O::response(101), Class::Fail),
            (O::ConnectFailed("refused".into()), Class::Retry),
            (O::TimedOut, Class::Retry),
            (O::Io("reset".into()), Class::Retry),
        ];
        for (outcome, class) in table {
            assert_eq!(outcome.class(), class, "{outcome:?}");
        }
        assert_eq!(O::response(503).label(), "5xx");
        assert_eq!(O::TimedOut.label(), "timeout");
    }

    #[test]
    fn backoff_table() {
        let c = config();
        let ms = Duration::from_millis;
        let table = [
            (1, ms(500)),
            (2, ms(1000)),
            (3, ms(2000)),
            (4, ms(4000)),
            (7, ms(30_000)),
            (40, ms(30_000)),
        ];
        for (retry, ceiling) in table {
            assert_eq!(c.backoff_ceiling(retry), ceiling, "retry {retry}");
            // Jitter stays in the upper half.
            assert_eq!(c.backoff_delay(retry, 0, None), ceiling / 2);
            let span = (ceiling - ceiling / 2).as_nanos() as u64;
            assert_eq!(c.backoff_delay(retry, span, None), ceiling);
            for r in [1, 12345, u64::MAX] {
                let d = c.backoff_delay(retry, r, None);
                assert!(d >= ceiling / 2 && d <= ceiling, "{retry} {r} {d:?}");
            }
        }
        // Retry-After lengthens the wait, up to max_backoff.
        assert_eq!(
            c.backoff_delay(1, 0, Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            c.backoff_delay(1, 0, Some(Duration::from_secs(600))),
            Duration::from_secs(30)
        );
        assert_eq!(c.backoff_delay(1, 0, Some(ms(1))), ms(250));
    }

    #[test]
    fn spec_defaults_and_problems() {
        assert_eq!(
            FanoutSpec::default().compile().unwrap(),
            FanoutConfig::default()
        );
        #[derive(Deserialize)]
        struct Server {
            fanout: FanoutSpec,
        }
        let s: Server = toml::from_str(
            "fanout = { queue = 1000, concurrency = 4, attempts = 5, backoff = \"500ms\", max_backoff = \"30s\" }",
        )
        .unwrap();
        assert_eq!(s.fanout.compile().unwrap(), FanoutConfig::default());
        let s: Server = toml::from_str(
            "fanout = { queue = 5, max_bytes = \"1MiB\", attempts = 1, attempt_timeout = \"2s\" }",
        )
        .unwrap();
        let c = s.fanout.compile().unwrap();
        assert_eq!((c.queue, c.max_bytes, c.attempts), (5, 1 << 20, 1));
        assert_eq!(c.attempt_timeout, Duration::from_secs(2));
        let err = toml::from_str::<Server>("fanout = { queue = 5, retries = 3 }")
            .err()
            .unwrap();
        assert!(err.to_string().contains("retries"), "{err}");

        let bad = FanoutSpec {
            queue: Some(0),
            max_bytes: Some("lots".into()),
            concurrency: Some(0),
            attempts: Some(0),
            backoff: Some("10s".into()),
            max_backoff: Some("1s".into()),
            attempt_timeout: Some("0s".into()),
        };
        let keys: Vec<String> = bad
            .compile()
            .unwrap_err()
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            [
                "queue",
                "concurrency",
                "attempts",
                "attempt_timeout",
                "max_backoff",
                "max_bytes"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn delivers_copies_once_each() {
        let fake = Arc::new(Fake::default());
        let rec = Arc::new(Recorder::default());
        let fanout = start(config(), &fake, &rec);
        let p = payload("{\"action\":\"opened\"}");
        fanout.enqueue("github", "audit", Arc::clone(&p)).unwrap();
        fanout.enqueue("github", "archive", p).unwrap();
        settle(&fanout).await;
        let mut events = lock(&rec.events).clone();
        events.sort();
        assert_eq!(
            events,
            [
                "delivered github/archive after 1",
                "delivered github/audit after 1"
            ]
        );
        let c = fanout.counts();
        assert_eq!(
            (
                c.accepted,
                c.delivered,
                c.retried,
                c.failed,
                c.dropped,
                c.held
            ),
            (2, 2, 0, 0, 0, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_exponential_backoff_then_delivers() {
        let fake = Arc::new(Fake::default());
        fake.script(
            "audit",
            vec![
                AttemptOutcome::ConnectFailed("connection refused".into()),
                AttemptOutcome::response(503),
                AttemptOutcome::TimedOut,
            ],
        );
        let rec = Arc::new(Recorder::default());
        let fanout = start(config(), &fake, &rec);
        let t0 = Instant::now();
        fanout.enqueue("github", "audit", payload("x")).unwrap();
        settle(&fanout).await;
        let calls = fake.calls("audit");
        assert_eq!(calls.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
        // Gaps: jittered into [ceiling/2, ceiling] for ceilings 0.5 s, 1 s, 2 s.
        let ms = Duration::from_millis;
        for (i, ceiling) in [ms(500), ms(1000), ms(2000)].into_iter().enumerate() {
            let gap = calls[i + 1].1 - calls[i].1;
            assert!(gap >= ceiling / 2 && gap <= ceiling, "gap {i}: {gap:?}");
        }
        assert!(calls[0].1 - t0 < ms(1));
        assert_eq!(
            *lock(&rec.events),
            [
                "retry audit #1 connect",
                "retry audit #2 5xx",
                "retry audit #3 timeout",
                "delivered github/audit after 4"
            ]
        );
        assert_eq!(fanout.counts().retried, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_attempts_and_never_retries_4xx() {
        let fake = Arc::new(Fake::default());
        fake.script("down", vec![AttemptOutcome::response(500); 10]);
        fake.script("strict", vec![AttemptOutcome::response(400)]);
        fake.script(
            "busy",
            vec![AttemptOutcome::Response {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(Duration::from_secs(20)),
            }],
        );
        let rec = Arc::new(Recorder::default());
        let fanout = start(config(), &fake, &rec);
        for upstream in ["down", "strict", "busy"] {
            fanout.enqueue("r", upstream, payload("x")).unwrap();
        }
        settle(&fanout).await;
        assert_eq!(fake.calls("down").len(), 4);
        assert_eq!(fake.calls("strict").len(), 1);
        let busy = fake.calls("busy");
        assert_eq!(busy.len(), 2);
        assert!(
            busy[1].1 - busy[0].1 >= Duration::from_secs(20),
            "Retry-After honoured"
        );
        let events = lock(&rec.events).clone();
        assert!(
            events.contains(&"failed down after 4 5xx Exhausted".to_string()),
            "{events:?}"
        );
        assert!(
            events.contains(&"failed strict after 1 4xx NotRetryable".to_string()),
            "{events:?}"
        );
        assert!(
            events.contains(&"delivered r/busy after 2".to_string()),
            "{events:?}"
        );
        let c = fanout.counts();
        assert_eq!((c.delivered, c.failed, c.retried), (1, 2, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_drops_are_reported_not_silent() {
        let fake = Arc::new(Fake {
            latency: Duration::from_secs(1),
            ..Fake::default()
        });
        let rec = Arc::new(Recorder::default());
        let fanout = start(
            FanoutConfig {
                queue: 3,
                ..config()
            },
            &fake,
            &rec,
        );
        let mut dropped = Vec::new();
        for i in 0..5 {
            if let Err(d) = fanout.enqueue("github", &format!("u{i}"), payload("x")) {
                dropped.push(d);
            }
        }
        assert_eq!(dropped.len(), 2);
        assert_eq!(dropped[0].reason, DropReason::QueueFull);
        assert_eq!(&*dropped[0].upstream, "u3");
        assert_eq!(
            dropped[0].to_string(),
            "fan-out copy for route github to upstream u3 dropped: queue_full"
        );
        assert_eq!(fanout.counts().dropped, 2);
        assert_eq!(fanout.held(), 3);
        settle(&fanout).await;
        // Room again once copies finish.
        fanout.enqueue("github", "u5", payload("x")).unwrap();
        settle(&fanout).await;
        assert_eq!(fanout.counts().delivered, 4);

        // The byte bound.
        let fanout = start(
            FanoutConfig {
                max_bytes: 10,
                ..config()
            },
            &fake,
            &rec,
        );
        fanout.enqueue("r", "a", payload("123456")).unwrap();
        let d = fanout.enqueue("r", "b", payload("123456")).unwrap_err();
        assert_eq!(d.reason, DropReason::BytesFull);
        fanout.enqueue("r", "c", payload("1234")).unwrap();
        settle(&fanout).await;
        fanout.enqueue("r", "d", payload("123456")).unwrap();
        settle(&fanout).await;
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_capped_and_backoff_frees_the_slot() {
        let fake = Arc::new(Fake {
            latency: Duration::from_millis(100),
            ..Fake::default()
        });
        // "dead" keeps failing; its backoff waits must not hold the two workers.
        fake.script(
            "dead",
            vec![AttemptOutcome::ConnectFailed("refused".into()); 10],
        );
        let rec = Arc::new(Recorder::default());
        let fanout = start(
            FanoutConfig {
                queue: 100,
                ..config()
            },
            &fake,
            &rec,
        );
        fanout.enqueue("r", "dead", payload("x")).unwrap();
        fanout.enqueue("r", "dead", payload("x")).unwrap();
        let t0 = Instant::now();
        for _ in 0..8 {
            fanout.enqueue("r", "live", payload("x")).unwrap();
        }
        settle(&fanout).await;
        assert_eq!(fake.max_running.load(Ordering::SeqCst), 2);
        let live = fake.calls("live");
        assert_eq!(live.len(), 8);
        // 8 copies of 100 ms on 2 workers, after the dead ones' first attempts: ≤ 500 ms.
        assert!(
            live.last().unwrap().1 - t0 <= Duration::from_millis(500),
            "{:?}",
            live.last().unwrap().1 - t0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_finishes_in_grace_then_reports_the_rest() {
        let fake = Arc::new(Fake {
            latency: Duration::from_millis(200),
            ..Fake::default()
        });
        fake.script("flaky", vec![AttemptOutcome::response(503); 10]);
        let rec = Arc::new(Recorder::default());
        let fanout = start(
            FanoutConfig {
                concurrency: 1,
                ..config()
            },
            &fake,
            &rec,
        );
        fanout.enqueue("github", "ok", payload("x")).unwrap();
        fanout.enqueue("github", "flaky", payload("x")).unwrap();
        for _ in 0..20 {
            let _ = fanout.enqueue("github", "slow", payload("x"));
        }
        let report = fanout.shutdown(Duration::from_millis(500)).await;
        // In 500 ms at 200 ms per attempt with one worker: "ok" is delivered, flaky's first
        // attempt fails (it then waits to retry), one "slow" is cut off mid-attempt.
        assert_eq!(report.finished_in_grace, 1, "{report:?}");
        assert!(!report.abandoned.is_empty());
        assert!(report
            .abandoned
            .iter()
            .any(|a| &*a.upstream == "flaky" && a.attempts == 1 && !a.in_progress));
        let cut_off = report.abandoned.iter().filter(|a| a.in_progress).count();
        assert_eq!(cut_off, 1, "{report:?}");
        let c = fanout.counts();
        assert_eq!(c.held, 0);
        assert_eq!(
            c.accepted,
            c.delivered + c.failed + report.abandoned.len() as u64
        );
        assert_eq!(c.dropped, report.abandoned.len() as u64 + (22 - c.accepted));
        // Closed: new copies are refused with a reason.
        let d = fanout.enqueue("github", "ok", payload("x")).unwrap_err();
        assert_eq!(d.reason, DropReason::ShuttingDown);
        assert_eq!(
            fanout.shutdown(Duration::ZERO).await,
            ShutdownReport::default()
        );
    }

    #[test]
    fn copies_lost_with_their_runtime_release_the_queue() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let fake = Arc::new(Fake {
            latency: Duration::from_secs(3600),
            ..Fake::default()
        });
        let rec = Arc::new(Recorder::default());
        let fanout = Fanout::start(
            config(),
            Arc::clone(&fake) as Arc<dyn Deliver>,
            Arc::clone(&rec) as Arc<dyn Observer>,
            runtime.handle().clone(),
        );
        fanout.enqueue("r", "a", payload("x")).unwrap();
        fanout.enqueue("r", "b", payload("x")).unwrap();
        assert_eq!(fanout.held(), 2);
        drop(runtime);
        assert_eq!(fanout.held(), 0);
        assert_eq!(fanout.shared.bytes.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_upstream_is_cut_by_the_attempt_timeout() {
        let fake = Arc::new(Fake {
            latency: Duration::from_secs(3600),
            ..Fake::default()
        });
        let rec = Arc::new(Recorder::default());
        let config = FanoutConfig {
            attempts: 2,
            attempt_timeout: Duration::from_secs(1),
            ..config()
        };
        let fanout = start(config, &fake, &rec);
        fanout.enqueue("r", "hung", payload("x")).unwrap();
        settle(&fanout).await;
        assert_eq!(
            *lock(&rec.events),
            [
                "retry hung #1 timeout",
                "failed hung after 2 timeout Exhausted"
            ]
        );
    }
}
