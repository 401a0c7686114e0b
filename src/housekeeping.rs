//! Periodic upkeep of per-key state: every 10 s, prune the keyed rate limiters of
//! the current snapshot (dropping keys whose buckets are full again), close idle
//! upstream connections past their idle timeout, and publish
//! `hookgate_rate_limit_keys`, `hookgate_rate_limit_overflow_total`,
//! `hookgate_dedupe_entries` and `hookgate_fanout_queued`.
//!
//! Owns the schedule, and how far each route's overflow counter was
//! published; what pruning means is `ratelimit`'s business.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::fanout::Fanout;
use crate::metrics::Metrics;
use crate::proxy::UpstreamConnections;
use crate::ratelimit::RouteLimiter;
use crate::state::SharedState;

const PRUNE_EVERY: Duration = Duration::from_secs(10);

pub struct Housekeeping {
    state: SharedState,
    metrics: Arc<Metrics>,
    fanout: Arc<Fanout>,
    connections: Vec<Arc<UpstreamConnections>>,
    /// Per route name: the limiter whose `overflow_hits` were last added to
    /// `hookgate_rate_limit_overflow_total`, and how many. A reload that keeps
    /// the limiter goes on from there; a new limiter starts from 0. (A `Weak`
    /// keeps the allocation, so a new limiter never shares its address.)
    overflow_published: Mutex<HashMap<String, (Weak<RouteLimiter>, u64)>>,
}

impl Housekeeping {
    pub fn new(
        state: SharedState,
        metrics: Arc<Metrics>,
        fanout: Arc<Fanout>,
        connections: Vec<Arc<UpstreamConnections>>,
    ) -> Self {
        Housekeeping {
            state,
            metrics,
            fanout,
            connections,
            overflow_published: Mutex::new(HashMap::new()),
        }
    }

    fn upkeep(&self) {
        for connections in &self.connections {
            connections.prune();
        }
        let snapshot = self.state.load_full();
        self.metrics.fanout_queued.set(self.fanout.held() as i64);
        let mut published = self
            .overflow_published
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        published.retain(|name, _| snapshot.routes.iter().any(|r| r.name() == name));
        for route in &snapshot.routes {
            if let Some(store) = &route.dedupe {
                self.metrics
                    .dedupe_entries
                    .with_label_values(&[route.name()])
                    .set(store.stats().entries as i64);
            }
            if let Some(limiter) = &route.limiter {
                limiter.prune();
                self.metrics
                    .rate_limit_keys
                    .with_label_values(&[route.name()])
                    .set(limiter.keys() as i64);
                if route.metrics.series().keyed_rate_limit {
                    self.publish_overflow(&mut published, route.name(), limiter);
                }
            }
        }
    }
}

impl Housekeeping {
    /// Adds the overflow hits of `limiter` since the last upkeep to
    /// `route`'s `hookgate_rate_limit_overflow_total`.
    fn publish_overflow(
        &self,
        published: &mut HashMap<String, (Weak<RouteLimiter>, u64)>,
        route: &str,
        limiter: &Arc<RouteLimiter>,
    ) {
        let hits = limiter.overflow_hits();
        let before = match published.get(route) {
            Some((seen, count)) if std::ptr::eq(seen.as_ptr(), Arc::as_ptr(limiter)) => *count,
            _ => 0,
        };
        self.metrics
            .rate_limit_overflow
            .with_label_values(&[route])
            .inc_by(hits.saturating_sub(before));
        published.insert(route.to_string(), (Arc::downgrade(limiter), hits));
    }
}

#[async_trait]
impl BackgroundService for Housekeeping {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(PRUNE_EVERY) => self.upkeep(),
            }
        }
    }
}
