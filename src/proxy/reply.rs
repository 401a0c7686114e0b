//! Answers the gateway writes itself: the fixed JSON error body for every
//! rejection and upstream failure, and the [`Refusal`] each step of the
//! request path returns to ask for one.
//!
//! Bodies are `{"error":"<code>","route":"<name>","request_id":"<id>"}` (a
//! duplicate delivery gets `{"status":"duplicate",…}`), plus a `reason` that
//! says what to fix where the code alone does not: 400s about the request's
//! head, target, framing, body, encoding or delivery id, an ambiguous signed
//! request, a refused handshake. A `reason` is written from the rule that
//! refused, never from a value of the request. No secret and no expected
//! signature ever; other details go to the log.

use bytes::Bytes;
use pingora::Result;

use super::downstream::{AnswerHead, Downstream};

use crate::metrics::Outcome;
use crate::verify::VerifyError;

/// A rejection or failure the gateway answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    /// The code, under `error` (or under `status` for a non-error such as `duplicate`).
    pub error: &'static str,
    pub outcome: Outcome,
    is_error: bool,
}

impl Reply {
    pub const NO_ROUTE: Reply = Reply::new(404, "no_route", Outcome::NoRoute);
    pub const METHOD_NOT_ALLOWED: Reply =
        Reply::new(405, "method_not_allowed", Outcome::MethodNotAllowed);
    pub const DUPLICATE: Reply = Reply {
        is_error: false,
        ..Reply::new(200, "duplicate", Outcome::Duplicate)
    };
    pub const DUPLICATE_IN_FLIGHT: Reply =
        Reply::new(409, "duplicate_in_flight", Outcome::DuplicateInFlight);
    pub const EVENT_UNMATCHED: Reply = Reply::new(422, "event_unmatched", Outcome::EventUnmatched);
    pub const IP_NOT_ALLOWED: Reply = Reply::new(403, "ip_not_allowed", Outcome::IpDenied);
    pub const RATE_LIMITED: Reply = Reply::new(429, "rate_limited", Outcome::RateLimited);
    pub const OVERLOADED: Reply = Reply::new(503, "overloaded", Outcome::Overloaded);
    pub const BODY_TOO_LARGE: Reply = Reply::new(413, "body_too_large", Outcome::BodyTooLarge);
    pub const HEADER_TOO_LARGE: Reply =
        Reply::new(431, "header_too_large", Outcome::HeaderTooLarge);
    pub const BAD_REQUEST: Reply = Reply::new(400, "bad_request", Outcome::BadRequest);
    /// A `Content-Encoding` the route cannot read through (unknown, or several codings).
    pub const UNSUPPORTED_CONTENT_ENCODING: Reply =
        Reply::new(415, "unsupported_content_encoding", Outcome::BadRequest);
    pub const REQUEST_TIMEOUT: Reply = Reply::new(408, "request_timeout", Outcome::BadRequest);
    pub const SIGNATURE_MISSING: Reply =
        Reply::new(401, "signature_missing", Outcome::SignatureInvalid);
    pub const SIGNATURE_INVALID: Reply =
        Reply::new(401, "signature_invalid", Outcome::SignatureInvalid);
    pub const TIMESTAMP_OUT_OF_RANGE: Reply =
        Reply::new(401, "timestamp_out_of_range", Outcome::SignatureInvalid);
    pub const UPSTREAM_ERROR: Reply = Reply::new(502, "upstream_error", Outcome::UpstreamError);
    pub const UPSTREAM_UNAVAILABLE: Reply =
        Reply::new(503, "upstream_unavailable", Outcome::UpstreamUnavailable);
    pub const UPSTREAM_TIMEOUT: Reply =
        Reply::new(504, "upstream_timeout", Outcome::UpstreamTimeout);
    /// A queued route could not store the delivery: the sender should retry.
    pub const STORAGE_UNAVAILABLE: Reply =
        Reply::new(503, "storage_unavailable", Outcome::StorageUnavailable);
    /// A setup handshake whose verify token did not match (Meta).
    pub const HANDSHAKE_REFUSED: Reply =
        Reply::new(403, "handshake_refused", Outcome::SignatureInvalid);
    /// An Asana handshake offering a secret while another is held for the route.
    pub const HANDSHAKE_SECRET_HELD: Reply =
        Reply::new(409, "handshake_secret_held", Outcome::SignatureInvalid);
    /// `[cluster]` Redis did not answer and `on_unavailable = "reject"`.
    pub const CLUSTER_UNAVAILABLE: Reply =
        Reply::new(503, "cluster_unavailable", Outcome::ClusterUnavailable);

    /// The 401 answer for a verification failure.
    pub fn for_verify_error(error: &VerifyError) -> Reply {
        match error {
            VerifyError::Missing(_) => Reply::SIGNATURE_MISSING,
            VerifyError::Malformed(_) | VerifyError::Mismatch(_) => Reply::SIGNATURE_INVALID,
            VerifyError::Ambiguous(_) => Reply::BAD_REQUEST,
            VerifyError::Expired(_) => Reply::TIMESTAMP_OUT_OF_RANGE,
        }
    }

    const fn new(status: u16, error: &'static str, outcome: Outcome) -> Reply {
        Reply {
            status,
            error,
            outcome,
            is_error: true,
        }
    }
}

/// A request the gateway answers itself, decided before anything was written:
/// what every step of the request path returns instead of its result. The
/// proxy's one writer turns it into the answer, the request metrics and the
/// access-log fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a refusal must be answered"]
pub struct Refusal {
    pub reply: Reply,
    /// Shown to the sender under `reason` (for 400s; never a secret or a value
    /// from the request).
    pub reason: Option<String>,
    /// For the access log only.
    pub detail: Option<String>,
    /// `Retry-After`, in seconds (RFC 9110 §10.2.3).
    pub retry_after: Option<u64>,
    /// The connection cannot be trusted to start another request (framing or
    /// body in doubt, RFC 9112 §9.6): answer with `Connection: close` and close it.
    pub close: bool,
}

impl Refusal {
    pub fn new(reply: Reply) -> Self {
        Refusal {
            reply,
            reason: None,
            detail: None,
            retry_after: None,
            close: false,
        }
    }

    /// 400 `bad_request` with the reason the sender sees.
    pub fn bad_request(reason: impl std::fmt::Display) -> Self {
        Refusal::new(Reply::BAD_REQUEST).reason(reason)
    }

    pub fn reason(mut self, reason: impl std::fmt::Display) -> Self {
        self.reason = Some(reason.to_string());
        self
    }

    /// What the access log says of the refusal (never the sender). Formatted
    /// only while the access log is on: a flood of refusals with the log off
    /// formats nothing.
    pub fn detail(mut self, detail: impl std::fmt::Display) -> Self {
        if tracing::enabled!(target: "hookgate::access", tracing::Level::INFO) {
            self.detail = Some(detail.to_string());
        }
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn close(mut self) -> Self {
        self.close = true;
        self
    }
}

/// The JSON body of a reply. Route names and request ids are restricted to
/// characters that need no JSON escaping (config validation and `request_id`);
/// a `reason` is escaped.
pub fn json_body(
    reply: &Reply,
    route: Option<&str>,
    request_id: &str,
    reason: Option<&str>,
) -> Bytes {
    let open = if reply.is_error {
        "{\"error\":\""
    } else {
        "{\"status\":\""
    };
    let reason = reason.map(|reason| serde_json::Value::from(reason).to_string());
    // Sized exactly: `Bytes` takes a full buffer over as it is, where one with
    // room to spare costs a second allocation (its shared header).
    let length = open.len()
        + reply.error.len()
        + 1
        + reason
            .as_ref()
            .map_or(0, |reason| ",\"reason\":".len() + reason.len())
        + route.map_or(0, |route| ",\"route\":\"".len() + route.len() + 1)
        + ",\"request_id\":\"".len()
        + request_id.len()
        + 2;
    let mut body = String::with_capacity(length);
    body.push_str(open);
    body.push_str(reply.error);
    body.push('"');
    if let Some(reason) = reason {
        body.push_str(",\"reason\":");
        body.push_str(&reason);
    }
    if let Some(route) = route {
        body.push_str(",\"route\":\"");
        body.push_str(route);
        body.push('"');
    }
    body.push_str(",\"request_id\":\"");
    body.push_str(request_id);
    body.push_str("\"}");
    debug_assert_eq!(body.len(), length, "json_body sized exactly");
    Bytes::from(body)
}

/// Writes `reply` as the whole response, with `extra` headers (`Retry-After`,
/// and `Allow`, which a 405 must have). When `close` is set the connection is
/// not kept alive (the request body was not read, so the stream is not reusable).
pub async fn send(
    session: &mut Downstream,
    reply: &Reply,
    route: Option<&str>,
    request_id: &str,
    close: bool,
    extra: impl IntoIterator<Item = (&'static str, Bytes)>,
    reason: Option<&str>,
) -> Result<()> {
    let body = json_body(reply, route, request_id, reason);
    // Names as Pingora's writer sent them: known ones title-cased, ours in
    // lower case (RFC 9110 §5.1: names are case-insensitive).
    let mut header = AnswerHead::new(reply.status, 6);
    header.field("Content-Type", Bytes::from_static(b"application/json"));
    header.number("Content-Length", body.len());
    header.copied("x-request-id", request_id.as_bytes());
    if reply.status == 415 {
        // The codings a request may use (RFC 9110 §12.5.3, §15.5.16).
        header.field(
            "Accept-Encoding",
            Bytes::from_static(crate::encoding::ACCEPTED.as_bytes()),
        );
    }
    for (name, value) in extra {
        header.field(name, value);
    }
    debug_assert!(
        reply.status != 405 || header.has(b"allow"),
        "a 405 names what is allowed"
    );
    session.write_answer(header, body, close).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal's detail is formatted only while the access log is on.
    #[test]
    fn details_are_formatted_only_for_the_access_log() {
        let off = Refusal::new(Reply::NO_ROUTE).detail("why");
        assert_eq!(off.detail, None);
        let on = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(on, || {
            let refusal = Refusal::new(Reply::NO_ROUTE).detail("why");
            assert_eq!(refusal.detail.as_deref(), Some("why"));
        });
    }

    #[test]
    fn bodies_are_valid_json_with_the_fixed_fields() {
        let body = json_body(&Reply::NO_ROUTE, None, "abc", None);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"error": "no_route", "request_id": "abc"})
        );
        let body = json_body(&Reply::UPSTREAM_TIMEOUT, Some("stripe"), "r-1", None);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"error": "upstream_timeout", "route": "stripe", "request_id": "r-1"})
        );
        let body = json_body(&Reply::DUPLICATE, Some("gh"), "r-2", None);
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"status": "duplicate", "route": "gh", "request_id": "r-2"})
        );
        let body = json_body(
            &Reply::BAD_REQUEST,
            Some("gh"),
            "r-3",
            Some("body is not valid JSON (\"x\")"),
        );
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["reason"], "body is not valid JSON (\"x\")");
    }
}
