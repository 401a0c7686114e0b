//! Periodic upkeep of per-key state: every 10 s, prune the keyed rate limiters of
//! the current snapshot (dropping keys whose buckets are full again) and publish
//! `hookgate_rate_limit_keys`.
//!
//! Owns the schedule only; what pruning means is `ratelimit`'s business.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::metrics::Metrics;
use crate::state::SharedState;

const PRUNE_EVERY: Duration = Duration::from_secs(10);

pub struct Housekeeping {
    state: SharedState,
    metrics: Arc<Metrics>,
}

impl Housekeeping {
    pub fn new(state: SharedState, metrics: Arc<Metrics>) -> Self {
        Housekeeping { state, metrics }
    }

    fn prune_limiters(&self) {
        let snapshot = self.state.load_full();
        for route in &snapshot.routes {
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
                _ = tokio::time::sleep(PRUNE_EVERY) => self.prune_limiters(),
            }
        }
    }
}
