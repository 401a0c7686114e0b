//! The background health checker: every second it runs the checks of each pool
//! of the current snapshot whose interval has passed, and publishes
//! `hookgate_upstream_targets_healthy`.
//!
//! Owns the schedule only; what a check is (TCP connect or HTTP GET) is set up
//! in `upstream`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::metrics::Metrics;
use crate::state::SharedState;
use crate::upstream::UpstreamPool;

const TICK: Duration = Duration::from_millis(250);

pub struct HealthChecker {
    state: SharedState,
    metrics: Arc<Metrics>,
    first_round_done: Arc<AtomicBool>,
}

impl HealthChecker {
    /// `first_round_done` turns true once every pool was checked once (readiness).
    pub fn new(
        state: SharedState,
        metrics: Arc<Metrics>,
        first_round_done: Arc<AtomicBool>,
    ) -> Self {
        HealthChecker {
            state,
            metrics,
            first_round_done,
        }
    }

    /// Runs the checks that are due; returns when each due pool was checked once.
    /// A pool replaced by a reload (same name, new settings) is due at once.
    async fn check_due(&self, last_run: &mut HashMap<String, (Arc<UpstreamPool>, Instant)>) {
        let snapshot = self.state.load_full();
        for (name, pool) in &snapshot.pools {
            let due = last_run.get(name).is_none_or(|(checked, last)| {
                !Arc::ptr_eq(checked, pool) || last.elapsed() >= pool.health_interval()
            });
            if !due {
                continue;
            }
            pool.check_health().await;
            last_run.insert(name.clone(), (pool.clone(), Instant::now()));
            self.metrics
                .upstream_targets_healthy
                .with_label_values(&[name])
                .set(pool.healthy_targets() as i64);
        }
        // Upstreams removed by a reload stop being published.
        last_run.retain(|name, _| {
            let kept = snapshot.pools.contains_key(name);
            if !kept {
                let _ = self
                    .metrics
                    .upstream_targets_healthy
                    .remove_label_values(&[name]);
            }
            kept
        });
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut last_run = HashMap::new();
        loop {
            self.check_due(&mut last_run).await;
            self.first_round_done.store(true, Ordering::Release);
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }
}
