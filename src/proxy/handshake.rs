//! The request path's handshake steps: a route with `handshake` answers its provider's setup
//! handshake itself and forwards nothing (`crate::handshake` recognises it and builds the
//! answer).
//!
//! Owns: where the steps sit (unsigned handshakes after the body is read, before
//! verification; signed ones on the verified body, before dedupe and events), writing the
//! answer, and counting `hookgate_handshakes_total`. Does not own recognising a handshake or
//! its answer's bytes (`crate::handshake`), nor the refusals' JSON (`reply`).

use bytes::Bytes;
use pingora::Result;

use super::downstream::{AnswerHead, Downstream};

use super::{Refusal, Reply, RequestContext};
use crate::handshake::{self, Answer, Handshake, Refused};
use crate::metrics::{Metrics, Outcome};
use crate::state::Route;

/// Step 5b: an unsigned handshake (Meta, Dropbox, X, Microsoft Graph, Asana) on a route that
/// answers them. `Ok(None)`: not one, go on.
pub(super) fn unsigned(
    metrics: &Metrics,
    route: &Route,
    session: &Downstream,
    body: &[u8],
    secrets: Option<&dyn handshake::SecretStore>,
) -> Result<Option<Answer>, Refusal> {
    let Some(shake) = &route.settings.handshake else {
        return Ok(None);
    };
    let head = session.req_header();
    let query = crate::target::read_target(head.raw_path())
        .ok()
        .and_then(|target| target.query);
    let request = handshake::Request {
        method: &head.method,
        query,
        headers: &head.headers,
        body,
        secrets,
    };
    match shake.unsigned(&request) {
        None => Ok(None),
        Some(result) => decided(metrics, route, shake, result).map(Some),
    }
}

/// Step 6b: a signed handshake (Slack, Zoom, Twitch, Discord) in a verified body.
pub(super) fn signed(
    metrics: &Metrics,
    route: &Route,
    headers: &http::HeaderMap,
    verified_body: &[u8],
) -> Result<Option<Answer>, Refusal> {
    let Some(shake) = &route.settings.handshake else {
        return Ok(None);
    };
    match shake.signed(headers, verified_body) {
        None => Ok(None),
        Some(result) => decided(metrics, route, shake, result).map(Some),
    }
}

/// Counts the handshake and turns a refusal into the proxy's.
fn decided(
    metrics: &Metrics,
    route: &Route,
    shake: &Handshake,
    result: Result<Answer, Refused>,
) -> Result<Answer, Refusal> {
    let outcome = if result.is_ok() {
        "answered"
    } else {
        "refused"
    };
    metrics
        .handshakes
        .with_label_values(&[route.name(), shake.provider(), outcome])
        .inc();
    result.map_err(|refused| {
        let refusal = match &refused {
            Refused::Malformed(_) => Refusal::new(Reply::BAD_REQUEST),
            Refused::TokenMismatch => Refusal::new(Reply::HANDSHAKE_REFUSED),
            Refused::SecretHeld => Refusal::new(Reply::HANDSHAKE_SECRET_HELD),
            Refused::Store(_) => Refusal::new(Reply::STORAGE_UNAVAILABLE).retry_after(60),
        };
        let refusal = match refused.reason() {
            Some(reason) => refusal.reason(reason),
            None => refusal,
        };
        refusal.detail(format!("{} handshake: {refused}", shake.kind().as_str()))
    })
}

/// Writes a handshake's answer: its status, body and headers, plus `nosniff`, `no-store` and
/// the request id; the connection is closed when the request body was not all read.
pub(super) async fn answer(
    session: &mut Downstream,
    ctx: &mut RequestContext,
    answer: Answer,
) -> Result<()> {
    ctx.outcome = Some(Outcome::Handshake);
    ctx.status = Some(answer.status);
    let close = ctx.close || !session.is_body_done();
    let mut header = AnswerHead::new(answer.status, 6 + answer.headers.len());
    if let Some(content_type) = answer.content_type {
        header.copied("Content-Type", content_type.as_bytes());
    }
    header.number("Content-Length", answer.body.len());
    header.field("X-Content-Type-Options", Bytes::from_static(b"nosniff"));
    header.field("Cache-Control", Bytes::from_static(b"no-store"));
    header.copied("X-Request-Id", ctx.request_id.as_bytes());
    for (name, value) in &answer.headers {
        // Written as they are: one that could split the head is not sent.
        if !value
            .bytes()
            .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
        {
            return pingora::Error::e_explain(
                pingora::ErrorType::InvalidHTTPHeader,
                "a handshake answer header value cannot be sent",
            );
        }
        header.copied(name, value.as_bytes());
    }
    session.write_answer(header, answer.body, close).await
}
