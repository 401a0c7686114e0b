//! Step 9 for a `delivery = "queued"` route: store the verified request and
//! answer `202 {"status":"accepted","event_id":…,"request_id":…}` once it is
//! durable, or 503 `storage_unavailable` (full store, failing store, or no
//! store opened at start). The background delivery is `delivery`'s.

use std::time::Instant;

use bytes::Bytes;
use pingora::Result;

use super::downstream::{AnswerHead, Downstream};
use super::headers::UpstreamHead;
use super::{Admitted, Gateway, Refusal, Relayed, Reply, RequestContext};
use crate::delivery::store::{now_ms, NewEvent, StoreError};
use crate::metrics::Outcome;
use crate::state::Route;

/// How long a sender is asked to wait after a 503 from a full store.
const FULL_RETRY_AFTER_SECS: u64 = 60;

impl Gateway {
    /// Stores `admitted` for every upstream of its rule and answers the sender.
    pub(super) async fn accept_queued(
        &self,
        session: &mut Downstream,
        ctx: &mut RequestContext,
        route: &Route,
        admitted: Admitted<'_>,
        head: &UpstreamHead,
        retry: crate::config::RetryPolicy,
    ) -> std::result::Result<Relayed, Refusal> {
        let Some(queue) = &self.queue else {
            return Err(Refusal::new(Reply::STORAGE_UNAVAILABLE)
                .detail("no store is open: [storage] was added after start; restart hookgate"));
        };
        let upstreams: Vec<String> = std::iter::once(admitted.primary)
            .chain(admitted.copies.iter().map(String::as_str))
            .map(str::to_string)
            .collect();
        ctx.upstream = Some(upstreams.join("+"));
        let event = NewEvent {
            route: route.name().to_string(),
            upstreams,
            method: head.method().as_str().to_string(),
            head: head.wire().clone(),
            body: admitted.body.bytes().clone(),
            request_id: ctx.request_id.clone(),
            event: ctx.event.clone(),
            received_ms: now_ms().saturating_sub(ctx.started.elapsed().as_millis() as u64),
            retry,
        };
        // Dedupe: a queued event counts as forwarded once it is stored. A claim
        // held in Redis is made "forwarded" by the store's own append script
        // when the store is on Redis: stored and remembered in one step.
        let claim = admitted.claim;
        let remember = claim
            .as_ref()
            .filter(|_| queue.remembers())
            .and_then(|claim| claim.remember());
        match queue.accept_remembering(event, remember.as_ref()).await {
            Ok(event_id) => {
                if let Some(claim) = claim {
                    if remember.is_some() {
                        claim.keep();
                    } else {
                        claim.confirm(Instant::now()).await;
                    }
                }
                ctx.outcome = Some(Outcome::Queued);
                ctx.status = Some(202);
                ctx.detail = Some(format!("event_id={event_id}"));
                let body = serde_json::json!({
                    "status": "accepted",
                    "event_id": event_id,
                    "request_id": ctx.request_id,
                })
                .to_string();
                Ok(answer_accepted(session, ctx, &event_id, body).await)
            }
            Err(error) => {
                let stored_nothing =
                    matches!(error, StoreError::Full { .. } | StoreError::OutOfMemory(_));
                if let Some(claim) = claim {
                    if remember.is_some() && !stored_nothing {
                        // The append may have run (an answer lost to a timeout or a
                        // dropped connection): never release the claim, or the
                        // sender's retry would be stored again as a second event.
                        // It ends with its lease, or was made "forwarded".
                        claim.keep();
                    }
                    // Otherwise dropped here: released, so the retry gets through.
                }
                let refusal = Refusal::new(Reply::STORAGE_UNAVAILABLE).detail(error.to_string());
                Err(match error {
                    StoreError::Full { .. } | StoreError::OutOfMemory(_) => {
                        refusal.retry_after(FULL_RETRY_AFTER_SECS)
                    }
                    _ => refusal,
                })
            }
        }
    }
}

/// The 202 answer of a stored event.
async fn answer_accepted(
    session: &mut Downstream,
    ctx: &RequestContext,
    event_id: &str,
    body: String,
) -> Result<()> {
    let mut answer = AnswerHead::new(202, 4);
    answer.field("Content-Type", Bytes::from_static(b"application/json"));
    answer.number("Content-Length", body.len());
    answer.copied("x-request-id", ctx.request_id.as_bytes());
    answer.copied("x-hookgate-event-id", event_id.as_bytes());
    session.write_answer(answer, body.into(), ctx.close).await
}
