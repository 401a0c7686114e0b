//! Background copies for fan-out: the [`Deliver`] that sends one copy to an
//! upstream pool of the current snapshot with the same exchange as the primary
//! request, and the [`Observer`] that counts what became of each copy.
//!
//! Queueing, concurrency, retries and backoff are `fanout`'s; this module only
//! connects them to the upstream pools and the metrics.

use std::sync::Arc;

use async_trait::async_trait;

use super::connections::UpstreamConnections;
use super::forward::{self, ForwardError};
use super::headers::UpstreamHead;
use crate::fanout::{AttemptOutcome, Deliver, Failure, Job, Observer};
use crate::metrics::Metrics;
use crate::state::SharedState;

/// Sends copies through the upstream pools of whatever snapshot is current.
pub struct CopySender {
    state: SharedState,
    /// Its own connections: copies run on the fan-out runtime.
    connections: Arc<UpstreamConnections>,
}

impl CopySender {
    pub fn new(state: SharedState, connections: Arc<UpstreamConnections>) -> Self {
        CopySender { state, connections }
    }
}

#[async_trait]
impl Deliver for CopySender {
    async fn deliver(&self, job: &Job, _attempt: u32) -> AttemptOutcome {
        let snapshot = self.state.load_full();
        let Some(pool) = snapshot.pools.get(&*job.upstream) else {
            return AttemptOutcome::ConnectFailed(format!(
                "upstream {} is no longer configured",
                job.upstream
            ));
        };
        let payload = &job.payload;
        let head = UpstreamHead::from_parts(payload.method.clone(), payload.head.clone());
        let mut target = None;
        match forward::send(&self.connections, pool, &head, &payload.body, &mut target).await {
            Ok(exchange) => {
                let status = exchange.status;
                let retry_after = exchange.retry_after();
                match exchange.drain(&self.connections, pool).await {
                    Ok(()) => AttemptOutcome::Response {
                        status: http::StatusCode::from_u16(status)
                            .unwrap_or(http::StatusCode::BAD_GATEWAY),
                        retry_after,
                    },
                    Err(e) => AttemptOutcome::Io(describe(&e)),
                }
            }
            Err(ForwardError::Unavailable) => {
                AttemptOutcome::ConnectFailed("no healthy target".to_string())
            }
            Err(ForwardError::TimedOut(_)) => AttemptOutcome::TimedOut,
            Err(ForwardError::Failed(e)) if is_connect_error(&e) => {
                AttemptOutcome::ConnectFailed(e.to_string())
            }
            Err(e) => AttemptOutcome::Io(describe(&e)),
        }
    }
}

fn is_connect_error(error: &pingora::Error) -> bool {
    use pingora::ErrorType::*;
    matches!(
        error.etype(),
        ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeFailure
    )
}

fn describe(error: &ForwardError) -> String {
    match error {
        ForwardError::Unavailable => "no healthy target".to_string(),
        ForwardError::Failed(e) | ForwardError::TimedOut(e) => e.to_string(),
    }
}

/// Counts copies in `hookgate_fanout_copies_total{route,upstream,result}`.
pub struct CopyMetrics {
    metrics: Arc<Metrics>,
}

impl CopyMetrics {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        CopyMetrics { metrics }
    }

    fn count(&self, job: &Job, result: &str) {
        self.metrics
            .fanout_copies
            .with_label_values(&[&job.route, &job.upstream, result])
            .inc();
    }
}

impl Observer for CopyMetrics {
    fn delivered(&self, job: &Job, _attempts: u32) {
        self.count(job, "delivered");
    }

    fn retried(
        &self,
        job: &Job,
        attempt: u32,
        outcome: &AttemptOutcome,
        delay: std::time::Duration,
    ) {
        self.count(job, "retried");
        tracing::info!(route = %job.route, upstream = %job.upstream, attempt, ?outcome, delay_ms = delay.as_millis() as u64, "fan-out copy will be retried");
    }

    fn failed(&self, job: &Job, attempts: u32, last: &AttemptOutcome, why: Failure) {
        self.count(job, "failed");
        tracing::warn!(route = %job.route, upstream = %job.upstream, attempts, ?last, ?why, "fan-out copy given up");
    }
}
