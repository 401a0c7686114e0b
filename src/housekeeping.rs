//! Periodic upkeep of per-key state: every 10 s, prune the keyed rate limiters of
//! the current snapshot (dropping keys whose buckets are full again), close idle
//! upstream connections past their idle timeout, and publish
//! `hookgate_rate_limit_keys`, `hookgate_dedupe_entries` and `hookgate_fanout_queued`.
//!
//! Owns the schedule only; what pruning means is `ratelimit`'s business.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::fanout::Fanout;
use crate::metrics::Metrics;
use crate::proxy::UpstreamConnections;
use crate::state::SharedState;

const PRUNE_EVERY: Duration = Duration::from_secs(10);

pub struct Housekeeping {
    state: SharedState,
    metrics: Arc<Metrics>,
    fanout: Arc<Fanout>,
    connections: Vec<Arc<UpstreamConnections>>,
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
        }
    }

    fn upkeep(&self) {
        for connections in &self.connections {
            connections.prune();
        }
        let snapshot = self.state.load_full();
        self.metrics.fanout_queued.set(self.fanout.held() as i64);
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
            }
        }
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
