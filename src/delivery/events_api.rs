//! The admin API over the store of queued deliveries, served on the admin
//! listener behind its guard (`admin`):
//!
//! ```text
//! GET  /events?route=R&status=dead&since=1h&limit=50&before=ID   newest first; "next" pages on
//! GET  /events/ID                    one event: head, body, every delivery and attempt
//! POST /events/ID/replay             every finished delivery of the event, pending again
//! POST /events/replay?route=R&status=dead&since=1h   every matching event (at most MAX_REPLAY)
//! ```
//! `POST`s need a JSON content type (the guard's rule for state changes).
//! Bodies are shown as stored (text, or base64 when not UTF-8). Header values
//! that carry credentials (`Authorization`, `Cookie`, and names containing
//! `token`, `secret`, `password`, `auth` or `key`, which includes the `token`
//! scheme's usual headers) are shown as `[redacted]`; signatures are the
//! sender's HMACs, not secrets, and are shown.
//!
//! Owns the request parsing and the JSON shapes; the store and replay are
//! [`super::Queue`]'s.

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use http::StatusCode;
use serde_json::{json, Value};

use super::store::{now_ms, DeliveryRecord, EventKey, EventRecord, Filter, Status};
use super::{Queue, MAX_REPLAY};

/// Events in one page when `limit` is not given, and at most.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 1000;

/// An answer: status and JSON body.
pub type Answer = (StatusCode, Value);

fn bad(message: impl Into<String>) -> Answer {
    (
        StatusCode::BAD_REQUEST,
        json!({"error": "bad_request", "reason": message.into()}),
    )
}

fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `?route=&status=&since=&before=&limit=` → a filter and a limit.
fn parse_query(queue: &Queue, query: Option<&str>) -> Result<(Filter, usize), Answer> {
    let mut filter = Filter::default();
    let mut limit = DEFAULT_LIMIT;
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*name {
            "route" => filter.route = Some(value.into_owned()),
            "status" => {
                filter.status = Some(
                    Status::parse(&value)
                        .ok_or_else(|| bad("status must be pending, delivered or dead"))?,
                )
            }
            "since" => {
                let ago = crate::units::parse_duration(&value).map_err(bad)?;
                filter.since_ms = Some(now_ms().saturating_sub(ago.as_millis() as u64));
            }
            "before" => {
                filter.before = Some(
                    queue
                        .store()
                        .key_of(&value)
                        .ok_or_else(|| bad("before must be an event id of this store"))?,
                )
            }
            "limit" => {
                limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad(format!("limit must be 1 to {MAX_LIMIT}")))?
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter {other:?}; use route, status, since, before, limit"
                )))
            }
        }
    }
    Ok((filter, limit))
}

fn delivery_json(delivery: &DeliveryRecord, attempts: bool) -> Value {
    let mut value = json!({
        "upstream": delivery.upstream,
        "status": delivery.status.as_str(),
        "tries": delivery.tries,
    });
    if delivery.status == Status::Pending {
        value["next_attempt_at"] = time(delivery.next_ms).into();
    }
    if let Some(reason) = &delivery.reason {
        value["reason"] = reason.as_str().into();
    }
    if let Some(finished) = delivery.finished_ms {
        value["finished_at"] = time(finished).into();
    }
    if attempts {
        value["attempts"] = delivery
            .attempts
            .iter()
            .map(|a| {
                json!({
                    "at": time(a.at_ms),
                    "duration_ms": a.duration_ms,
                    "status": a.status,
                    "error": a.error,
                })
            })
            .collect();
    }
    value
}

fn summary(queue: &Queue, key: EventKey, record: &EventRecord, attempts: bool) -> Value {
    json!({
        "id": queue.store().event_id(key),
        "route": record.route,
        "status": record.status().as_str(),
        "event": record.event,
        "request_id": record.request_id,
        "received_at": time(record.received_ms),
        "replayed_at": record.replayed_ms.map(time),
        "body_bytes": record.body_bytes,
        "deliveries": record.deliveries.iter().map(|d| delivery_json(d, attempts)).collect::<Vec<_>>(),
    })
}

/// Whether a header's value is a credential and is never shown.
fn is_credential(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie"
    ) || ["token", "secret", "password", "auth", "key"]
        .iter()
        .any(|part| name.contains(part))
}

/// The stored wire head as the request line and `[name, value]` pairs, credentials redacted:
/// those [`is_credential`] names, and `secret_header`, the header the route's verifier reads
/// its secret itself from (a `token` route's `header`, whatever it is called).
fn head_json(head: &[u8], secret_header: Option<&str>) -> (String, Vec<Value>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("").to_string();
    let headers = lines
        .filter(|line| !line.is_empty())
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| {
            let secret = secret_header.is_some_and(|h| h.eq_ignore_ascii_case(name.trim()));
            let value = if secret || is_credential(name) {
                "[redacted]"
            } else {
                value.trim()
            };
            json!([name, value])
        })
        .collect();
    (request_line, headers)
}

/// `GET /events?…`
pub async fn list(queue: &Queue, query: Option<&str>) -> Answer {
    let (filter, limit) = match parse_query(queue, query) {
        Ok(parsed) => parsed,
        Err(answer) => return answer,
    };
    match queue.list(&filter, limit).await {
        Ok(events) => {
            let next = (events.len() == limit)
                .then(|| events.last().map(|(key, _)| queue.store().event_id(*key)))
                .flatten();
            let events: Vec<Value> = events
                .iter()
                .map(|(key, record)| summary(queue, *key, record, false))
                .collect();
            (StatusCode::OK, json!({"events": events, "next": next}))
        }
        Err(error) => storage_error(error),
    }
}

fn storage_error(error: super::store::StoreError) -> Answer {
    tracing::error!(%error, "events API: storage error");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": "storage_unavailable"}),
    )
}

fn not_found() -> Answer {
    (StatusCode::NOT_FOUND, json!({"error": "event_not_found"}))
}

/// `GET /events/ID`
pub async fn show(queue: &Queue, id: &str) -> Answer {
    let Some(key) = queue.store().key_of(id) else {
        return not_found();
    };
    let record = match queue.store().get(key).await {
        Ok(Some(record)) => record,
        Ok(None) => return not_found(),
        Err(error) => return storage_error(error),
    };
    let mut value = summary(queue, key, &record, true);
    value["method"] = record.method.as_str().into();
    if let Ok(Some((head, body))) = queue.store().payload(key).await {
        // The route as configured now: a reload that renamed the token header leaves an
        // older event's header to the name heuristic alone.
        let snapshot = queue.inner.state.load();
        let secret_header = snapshot
            .config
            .route(&record.route)
            .and_then(|route| route.verifier.credential_header())
            .map(http::HeaderName::as_str);
        let (request_line, headers) = head_json(&head, secret_header);
        value["request_line"] = request_line.into();
        value["headers"] = headers.into();
        value["body"] = match std::str::from_utf8(&body) {
            Ok(text) => text.into(),
            Err(_) => json!({"base64": base64::engine::general_purpose::STANDARD.encode(&body)}),
        };
    }
    (StatusCode::OK, value)
}

/// `POST /events/ID/replay`
pub async fn replay_one(queue: &Queue, id: &str) -> Answer {
    let Some(key) = queue.store().key_of(id) else {
        return not_found();
    };
    match queue.replay(key).await {
        Ok(deliveries) => (
            StatusCode::OK,
            json!({"status": "replayed", "events": usize::from(deliveries > 0), "deliveries": deliveries}),
        ),
        Err(super::store::StoreError::NotFound(_)) => not_found(),
        Err(error) => storage_error(error),
    }
}

/// `POST /events/replay?route=&status=&since=`: every matching event.
pub async fn replay_matching(queue: &Queue, query: Option<&str>) -> Answer {
    // `limit` pages a list; a replay covers every match, so a `limit` here would be
    // silently ignored and replay more than the operator asked for.
    if form_urlencoded::parse(query.unwrap_or("").as_bytes()).any(|(name, _)| name == "limit") {
        return bad(format!(
            "limit is not a replay parameter: a replay covers every matching event (at most \
             {MAX_REPLAY}); narrow it with route, status, since or before, or replay one id"
        ));
    }
    let (filter, _) = match parse_query(queue, query) {
        Ok(parsed) => parsed,
        Err(answer) => return answer,
    };
    if filter.route.is_none() && filter.status.is_none() && filter.since_ms.is_none() {
        return bad("name at least one of route, status, since (replaying every event is refused)");
    }
    let events = match queue.list(&filter, MAX_REPLAY).await {
        Ok(events) => events,
        Err(error) => return storage_error(error),
    };
    let (mut replayed, mut deliveries) = (0usize, 0usize);
    for (key, _) in events {
        match queue.replay(key).await {
            Ok(0) => {}
            Ok(n) => {
                replayed += 1;
                deliveries += n;
            }
            Err(super::store::StoreError::NotFound(_)) => {}
            Err(error) => return storage_error(error),
        }
    }
    (
        StatusCode::OK,
        json!({"status": "replayed", "events": replayed, "deliveries": deliveries}),
    )
}

/// An answer of [`handle`]: status, JSON body, and for a 405 the `Allow` value
/// (RFC 9110 §15.5.6: the methods the path takes).
pub type Routed = (StatusCode, Value, Option<&'static str>);

/// Routes an admin request under `/events`; `None` when `path` is not ours.
pub async fn handle(
    queue: Option<&Queue>,
    method: &http::Method,
    path: &str,
    query: Option<&str>,
) -> Option<Routed> {
    let rest = path.strip_prefix("/events")?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let Some(queue) = queue else {
        return Some((
            StatusCode::NOT_FOUND,
            json!({"error": "no_store", "hint": "queued delivery is off: configure [storage] and a route with delivery = \"queued\", then restart"}),
            None,
        ));
    };
    let segments = segments(rest);
    let answer = match endpoint(&segments, method) {
        Ok(Endpoint::List) => list(queue, query).await,
        Ok(Endpoint::ReplayMatching) => replay_matching(queue, query).await,
        Ok(Endpoint::ReplayOne(id)) => replay_one(queue, id).await,
        Ok(Endpoint::Show(id)) => show(queue, id).await,
        Err(allow) => {
            let (status, error) = match allow {
                Some(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
                None => (StatusCode::NOT_FOUND, "not_found"),
            };
            return Some((
                status,
                json!({"error": error, "endpoints": ["GET /events", "GET /events/ID", "POST /events/ID/replay", "POST /events/replay?route=&status=&since="]}),
                allow,
            ));
        }
    };
    Some((answer.0, answer.1, None))
}

/// What a request under `/events` asks for.
#[derive(Debug, PartialEq, Eq)]
enum Endpoint<'p> {
    /// `GET /events`
    List,
    /// `GET /events/ID`
    Show(&'p str),
    /// `POST /events/ID/replay`
    ReplayOne(&'p str),
    /// `POST /events/replay`
    ReplayMatching,
}

/// The endpoint `method` names at these segments of a path under `/events`;
/// else `Err` with the methods the segments take (a 405's `Allow`), or
/// `Err(None)` when they name no endpoint (404). The one table of the API.
fn endpoint<'p>(
    segments: &[&'p str],
    method: &http::Method,
) -> Result<Endpoint<'p>, Option<&'static str>> {
    let (get, post) = (method == http::Method::GET, method == http::Method::POST);
    match *segments {
        [] if get => Ok(Endpoint::List),
        ["replay"] if post => Ok(Endpoint::ReplayMatching),
        // Never an event's id (20 hex digits): only POST.
        ["replay"] => Err(Some("POST")),
        [id] if get => Ok(Endpoint::Show(id)),
        [id, "replay"] if post => Ok(Endpoint::ReplayOne(id)),
        [] | [_] => Err(Some("GET")),
        [_, "replay"] => Err(Some("POST")),
        _ => Err(None),
    }
}

fn segments(rest: &str) -> Vec<&str> {
    rest.split('/').filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_redacted_signatures_shown() {
        let head = b"POST /hook HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cret\r\nX-Webhook-Token: t0k\r\nX-Hub-Signature-256: sha256=ab\r\n\r\n";
        let (line, headers) = head_json(head, None);
        assert_eq!(line, "POST /hook HTTP/1.1");
        assert_eq!(
            Value::from(headers),
            json!([
                ["Host", "a"],
                ["Authorization", "[redacted]"],
                ["X-Webhook-Token", "[redacted]"],
                ["X-Hub-Signature-256", "sha256=ab"]
            ])
        );
    }

    #[test]
    fn the_routes_own_secret_header_is_redacted_whatever_its_name() {
        let head = b"POST /hook HTTP/1.1\r\nX-Shared-Pass: s3cret\r\nX-Other: shown\r\n\r\n";
        let (_, headers) = head_json(head, Some("x-shared-pass"));
        assert_eq!(
            Value::from(headers),
            json!([["X-Shared-Pass", "[redacted]"], ["X-Other", "shown"]])
        );
    }
}
