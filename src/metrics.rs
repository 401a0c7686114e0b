//! Every metric hookgate exports: names, help texts, label sets and buckets,
//! registered in one [`Metrics`] registry served by the admin listener; and
//! which series exist before their first use.
//!
//! Labels are bounded: `route` is a configured route name (or `_unmatched`),
//! `outcome` one of [`Outcome`]'s codes, `upstream` a configured upstream name,
//! `class` one of `1xx`..`5xx`. Never a raw path, address or header value.
//!
//! Owns: the names, the label sets, and the series a configuration implies
//! ([`RouteSeries`]): they are created at 0 when a snapshot is built (start
//! and reload, [`RouteHandles::register`]), so `increase()` counts the first
//! event and dashboards show 0 rather than "No data"; after a reload,
//! [`Metrics::retire`] removes the series of routes, upstreams, schemes and
//! event patterns the new configuration no longer has. Does not own: deciding
//! what a route's labels are from its settings (`state`), or when a gauge is
//! refreshed (`health`, `housekeeping`).

use std::collections::HashMap;
use std::sync::OnceLock;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::fanout::DropReason;

pub const REQUESTS_TOTAL: &str = "hookgate_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "hookgate_request_duration_seconds";
pub const REQUEST_BODY_BYTES: &str = "hookgate_request_body_bytes";
pub const RATE_LIMIT_KEYS: &str = "hookgate_rate_limit_keys";
pub const RATE_LIMIT_OVERFLOW_TOTAL: &str = "hookgate_rate_limit_overflow_total";
pub const EVENTS_TOTAL: &str = "hookgate_events_total";
pub const FANOUT_COPIES_TOTAL: &str = "hookgate_fanout_copies_total";
pub const FANOUT_DROPPED_TOTAL: &str = "hookgate_fanout_dropped_total";
pub const FANOUT_QUEUED: &str = "hookgate_fanout_queued";
pub const DEDUPE_ENTRIES: &str = "hookgate_dedupe_entries";
pub const SIGNATURE_FAILURES_TOTAL: &str = "hookgate_signature_failures_total";
pub const HANDSHAKES_TOTAL: &str = "hookgate_handshakes_total";
pub const DECODED_BODIES_TOTAL: &str = "hookgate_decoded_bodies_total";
pub const UPSTREAM_DURATION_SECONDS: &str = "hookgate_upstream_duration_seconds";
pub const UPSTREAM_RESPONSES_TOTAL: &str = "hookgate_upstream_responses_total";
pub const UPSTREAM_TARGETS_HEALTHY: &str = "hookgate_upstream_targets_healthy";
pub const INFLIGHT_REQUESTS: &str = "hookgate_inflight_requests";
pub const CLIENT_CONNECTIONS: &str = "hookgate_client_connections";
pub const CLIENT_LIMIT_HITS_TOTAL: &str = "hookgate_client_limit_hits_total";
pub const BUILD_INFO: &str = "hookgate_build_info";
pub const CONFIG_RELOADS_TOTAL: &str = "hookgate_config_reloads_total";
pub const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS: &str =
    "hookgate_config_last_reload_success_timestamp_seconds";

pub const QUEUE_BACKLOG: &str = "hookgate_queue_backlog";
pub const QUEUE_OLDEST_PENDING_AGE_SECONDS: &str = "hookgate_queue_oldest_pending_age_seconds";
pub const QUEUE_ATTEMPTS_TOTAL: &str = "hookgate_queue_attempts_total";
pub const QUEUE_DEAD_TOTAL: &str = "hookgate_queue_dead_total";
pub const STORE_BYTES: &str = "hookgate_store_bytes";
pub const STORE_MAX_BYTES: &str = "hookgate_store_max_bytes";
pub const STORE_ERRORS_TOTAL: &str = "hookgate_store_errors_total";

pub const CLUSTER_UP: &str = "hookgate_cluster_up";
pub const CLUSTER_ERRORS_TOTAL: &str = "hookgate_cluster_errors_total";
pub const CLUSTER_FALLBACKS_TOTAL: &str = "hookgate_cluster_fallbacks_total";
pub const CLUSTER_MARKS_LOST_TOTAL: &str = "hookgate_cluster_marks_lost_total";
pub const CLUSTER_COMMANDS_TOTAL: &str = "hookgate_cluster_commands_total";

/// `hookgate_queue_attempts_total{result}`: a 2xx, a retryable failure, a final answer.
pub const QUEUE_ATTEMPT_RESULTS: [&str; 3] = ["delivered", "retried", "failed"];
/// `hookgate_queue_dead_total{reason}`.
pub const QUEUE_DEAD_REASONS: [&str; 4] =
    ["exhausted", "final_status", "max_age", "upstream_removed"];
/// `hookgate_store_errors_total{kind}`: the store was full, or failed.
pub const STORE_ERROR_KINDS: [&str; 2] = ["full", "io"];

/// The route label for requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "_unmatched";

/// Latency buckets for a proxy: 100 µs to 30 s.
const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Body size buckets: 256 B to 16 MiB.
const BODY_BUCKETS: &[f64] = &[
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];

/// `hookgate_signature_failures_total{reason}` values, as
/// `verify::VerifyError::reason` names them.
pub const SIGNATURE_FAILURE_REASONS: [&str; 4] = ["missing", "malformed", "mismatch", "expired"];

/// `hookgate_handshakes_total{outcome}` values (`proxy::handshake`).
pub const HANDSHAKE_OUTCOMES: [&str; 2] = ["answered", "refused"];

/// `hookgate_fanout_copies_total{result}` values: a copy delivered, one retry,
/// a copy given up (`proxy::copies`).
pub const FANOUT_RESULTS: [&str; 3] = ["delivered", "retried", "failed"];

/// `hookgate_upstream_responses_total{class}` values created at 0 for each
/// route and upstream. `1xx` is never a final answer (the exchange skips
/// interim responses), so it is not created ahead of use.
pub const INITIALIZED_CLASSES: [&str; 4] = ["2xx", "3xx", "4xx", "5xx"];

/// How one request ended, as counted in `hookgate_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Forwarded,
    NoRoute,
    MethodNotAllowed,
    IpDenied,
    RateLimited,
    Overloaded,
    BodyTooLarge,
    HeaderTooLarge,
    SignatureInvalid,
    Duplicate,
    DuplicateInFlight,
    EventUnmatched,
    BadRequest,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    /// Stored on a queued route and answered 202.
    Queued,
    /// A queued route could not store it (full or failing store): 503.
    StorageUnavailable,
    /// A setup handshake the gateway answered itself (`handshake`); nothing was forwarded.
    Handshake,
    /// `[cluster]` Redis did not answer a rate limit or dedupe check and
    /// `on_unavailable = "reject"`: 503.
    ClusterUnavailable,
    /// Forwarded, but the answer was cut off on the sender's side after its
    /// head: the sender closed, or did not read within `send_timeout`.
    ClientInterrupted,
}

impl Outcome {
    /// How many outcomes there are (one cached counter each per route).
    const COUNT: usize = Outcome::ClientInterrupted as usize + 1;

    /// Every outcome, in declaration order.
    pub const ALL: [Outcome; Outcome::COUNT] = [
        Outcome::Forwarded,
        Outcome::NoRoute,
        Outcome::MethodNotAllowed,
        Outcome::IpDenied,
        Outcome::RateLimited,
        Outcome::Overloaded,
        Outcome::BodyTooLarge,
        Outcome::HeaderTooLarge,
        Outcome::SignatureInvalid,
        Outcome::Duplicate,
        Outcome::DuplicateInFlight,
        Outcome::EventUnmatched,
        Outcome::BadRequest,
        Outcome::UpstreamError,
        Outcome::UpstreamTimeout,
        Outcome::UpstreamUnavailable,
        Outcome::Queued,
        Outcome::StorageUnavailable,
        Outcome::Handshake,
        Outcome::ClusterUnavailable,
        Outcome::ClientInterrupted,
    ];

    /// The outcomes a request can have before a route matched, counted under
    /// `route="_unmatched"`: no route, the in-flight cap (checked first), a
    /// head that does not parse, arrives too late or is too large, and a
    /// target or framing refused before routing.
    pub const UNMATCHED: [Outcome; 4] = [
        Outcome::NoRoute,
        Outcome::Overloaded,
        Outcome::BadRequest,
        Outcome::HeaderTooLarge,
    ];

    /// Whether a request that matched a route can end this way (every outcome
    /// but those decided before matching).
    pub fn per_route(self) -> bool {
        !matches!(
            self,
            Outcome::NoRoute | Outcome::Overloaded | Outcome::HeaderTooLarge
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::NoRoute => "no_route",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::IpDenied => "ip_denied",
            Outcome::RateLimited => "rate_limited",
            Outcome::Overloaded => "overloaded",
            Outcome::BodyTooLarge => "body_too_large",
            Outcome::HeaderTooLarge => "header_too_large",
            Outcome::SignatureInvalid => "signature_invalid",
            Outcome::Duplicate => "duplicate",
            Outcome::DuplicateInFlight => "duplicate_in_flight",
            Outcome::EventUnmatched => "event_unmatched",
            Outcome::BadRequest => "bad_request",
            Outcome::UpstreamError => "upstream_error",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::UpstreamUnavailable => "upstream_unavailable",
            Outcome::Queued => "queued",
            Outcome::StorageUnavailable => "storage_unavailable",
            Outcome::Handshake => "handshake",
            Outcome::ClusterUnavailable => "cluster_unavailable",
            Outcome::ClientInterrupted => "client_interrupted",
        }
    }
}

/// A client limit of `[server]`, the `limit` label of `hookgate_client_limit_hits_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLimit {
    MaxConnections,
    HeaderTimeout,
    BodyTimeout,
    SendTimeout,
    MaxRequestsPerConnection,
    MaxHeaderCount,
    MaxHeadSize,
}

impl ClientLimit {
    pub const ALL: [ClientLimit; 7] = [
        ClientLimit::MaxConnections,
        ClientLimit::HeaderTimeout,
        ClientLimit::BodyTimeout,
        ClientLimit::SendTimeout,
        ClientLimit::MaxRequestsPerConnection,
        ClientLimit::MaxHeaderCount,
        ClientLimit::MaxHeadSize,
    ];

    /// The `[server]` key, which is also the label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientLimit::MaxConnections => "max_connections",
            ClientLimit::HeaderTimeout => "header_timeout",
            ClientLimit::BodyTimeout => "body_timeout",
            ClientLimit::SendTimeout => "send_timeout",
            ClientLimit::MaxRequestsPerConnection => "max_requests_per_connection",
            ClientLimit::MaxHeaderCount => "max_header_count",
            ClientLimit::MaxHeadSize => "max_head_size",
        }
    }
}

impl Metrics {
    /// Counts one `limit` reached.
    pub fn client_limit_hit(&self, limit: ClientLimit) {
        self.client_limit_hits
            .with_label_values(&[limit.as_str()])
            .inc();
    }
}

/// The registry and every metric handle.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub request_body_bytes: HistogramVec,
    pub signature_failures: IntCounterVec,
    /// Setup handshakes by route, provider and outcome (`answered`, `refused`).
    pub handshakes: IntCounterVec,
    /// Bodies with a `Content-Encoding` that a route read through, by coding and result.
    pub decoded_bodies: IntCounterVec,
    pub rate_limit_keys: IntGaugeVec,
    /// New keys of a per-key limiter checked against its shared overflow
    /// bucket because its table (`max_keys`) was full, per route; brought up
    /// to date with `ratelimit::RouteLimiter::overflow_hits` every 10 s
    /// (`housekeeping`).
    pub rate_limit_overflow: IntCounterVec,
    pub events: IntCounterVec,
    pub fanout_copies: IntCounterVec,
    pub fanout_dropped: IntCounterVec,
    pub fanout_queued: IntGauge,
    pub dedupe_entries: IntGaugeVec,
    pub upstream_duration: HistogramVec,
    pub upstream_responses: IntCounterVec,
    pub upstream_targets_healthy: IntGaugeVec,
    pub inflight: IntGauge,
    /// Open client connections.
    pub client_connections: IntGauge,
    /// `[server]` client limits reached, by `limit` ([`ClientLimit`]).
    pub client_limit_hits: IntCounterVec,
    pub config_reloads: IntCounterVec,
    pub config_last_reload_success: prometheus::Gauge,
    /// Pending queued deliveries per route and upstream.
    pub queue_backlog: IntGaugeVec,
    pub queue_oldest_age: prometheus::GaugeVec,
    pub queue_attempts: IntCounterVec,
    pub queue_dead: IntCounterVec,
    pub store_bytes: IntGauge,
    pub store_max_bytes: IntGauge,
    pub store_errors: IntCounterVec,
    /// `[cluster]`: 1 while Redis answers, 0 while not; no series without `[cluster]`.
    pub cluster_up: IntGaugeVec,
    /// `[cluster]`: operations on Redis that failed or timed out, by
    /// `operation` (`cluster::Operation`); a failed dedupe batch counts each
    /// operation it carried.
    pub cluster_errors: IntCounterVec,
    /// `[cluster]`: decisions taken on this instance's own state because Redis
    /// did not answer (`on_unavailable = "local"`), by `operation`.
    pub cluster_fallbacks: IntCounterVec,
    /// `[cluster]`: forwarded dedupe marks that never reached Redis (retried
    /// until their claim's lease ended, or dropped past the pending bound).
    pub cluster_marks_lost: IntCounterVec,
    /// `[cluster]`: commands (round trips) sent to Redis for requests, by
    /// `operation` (`rate_limit`, `dedupe`; a dedupe batch is one).
    pub cluster_commands: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                REQUESTS_TOTAL,
                "Requests received, by route and how they ended",
            ),
            &["route", "outcome"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                REQUEST_DURATION_SECONDS,
                "Whole request time at the gateway, from request head to the last byte answered",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let request_body_bytes = HistogramVec::new(
            HistogramOpts::new(REQUEST_BODY_BYTES, "Size of request bodies read, by route")
                .buckets(BODY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let signature_failures = IntCounterVec::new(
            Opts::new(
                SIGNATURE_FAILURES_TOTAL,
                "Deliveries refused by signature or token verification, by scheme and reason (missing, malformed, ambiguous, mismatch, expired)",
            ),
            &["route", "scheme", "reason"],
        )
        .expect("valid metric");
        let handshakes = IntCounterVec::new(
            Opts::new(
                HANDSHAKES_TOTAL,
                "Setup handshakes (challenges, verifications) the gateway answered itself or refused, by route and provider",
            ),
            &["route", "provider", "outcome"],
        )
        .expect("valid metric");
        let decoded_bodies = IntCounterVec::new(
            Opts::new(
                DECODED_BODIES_TOTAL,
                "Request bodies with a Content-Encoding that a route reads, by coding (gzip, deflate, br, other) and result (decoded, too_large, corrupt, unsupported, malformed)",
            ),
            &["route", "coding", "result"],
        )
        .expect("valid metric");
        let rate_limit_keys = IntGaugeVec::new(
            Opts::new(
                RATE_LIMIT_KEYS,
                "Keys (client addresses or header values) held by each route's per-key rate limiter",
            ),
            &["route"],
        )
        .expect("valid metric");
        let rate_limit_overflow = IntCounterVec::new(
            Opts::new(
                RATE_LIMIT_OVERFLOW_TOTAL,
                "New keys of a per-IP or per-header rate limiter checked against its one shared overflow bucket because max_keys buckets were held, updated every 10 s",
            ),
            &["route"],
        )
        .expect("valid metric");
        let events = IntCounterVec::new(
            Opts::new(
                EVENTS_TOTAL,
                "Verified deliveries by event; `event` is the configured pattern that matched, else _other",
            ),
            &["route", "event"],
        )
        .expect("valid metric");
        let fanout_copies = IntCounterVec::new(
            Opts::new(
                FANOUT_COPIES_TOTAL,
                "Fan-out copies by what became of them: delivered, retried (one per retry), failed (given up)",
            ),
            &["route", "upstream", "result"],
        )
        .expect("valid metric");
        let fanout_dropped = IntCounterVec::new(
            Opts::new(
                FANOUT_DROPPED_TOTAL,
                "Fan-out copies not queued: queue_full, bytes_full or shutting_down",
            ),
            &["route", "upstream", "reason"],
        )
        .expect("valid metric");
        let fanout_queued = IntGauge::new(
            FANOUT_QUEUED,
            "Fan-out copies held: waiting, being sent or waiting to retry",
        )
        .expect("valid metric");
        let dedupe_entries = IntGaugeVec::new(
            Opts::new(
                DEDUPE_ENTRIES,
                "Delivery ids remembered (or in flight) per route, updated every 10 s",
            ),
            &["route"],
        )
        .expect("valid metric");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                UPSTREAM_DURATION_SECONDS,
                "Time from connecting to the upstream to its response head",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "upstream"],
        )
        .expect("valid metric");
        let upstream_responses = IntCounterVec::new(
            Opts::new(
                UPSTREAM_RESPONSES_TOTAL,
                "Upstream responses by status class",
            ),
            &["route", "upstream", "class"],
        )
        .expect("valid metric");
        let upstream_targets_healthy = IntGaugeVec::new(
            Opts::new(
                UPSTREAM_TARGETS_HEALTHY,
                "Targets of each upstream that pass their health check",
            ),
            &["upstream"],
        )
        .expect("valid metric");
        let inflight = IntGauge::new(INFLIGHT_REQUESTS, "Requests being handled right now")
            .expect("valid metric");
        let client_connections =
            IntGauge::new(CLIENT_CONNECTIONS, "Client connections open right now")
                .expect("valid metric");
        let client_limit_hits = IntCounterVec::new(
            Opts::new(
                CLIENT_LIMIT_HITS_TOTAL,
                "Client limits of [server] reached: the connection was closed or the request refused",
            ),
            &["limit"],
        )
        .expect("valid metric");
        for limit in ClientLimit::ALL {
            client_limit_hits.with_label_values(&[limit.as_str()]);
        }
        let config_reloads = IntCounterVec::new(
            Opts::new(
                CONFIG_RELOADS_TOTAL,
                "Configuration reloads by result (success, failure)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let config_last_reload_success = prometheus::Gauge::new(
            CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
            "Unix time of the last configuration load that took effect (start or reload)",
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                BUILD_INFO,
                "Always 1; the version label says which build runs",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        // The series of requests that match no route do not depend on the config.
        let queue_backlog = IntGaugeVec::new(
            Opts::new(QUEUE_BACKLOG, "Queued deliveries pending (waiting, being sent or waiting to retry) per route and upstream, refreshed every 2 s"),
            &["route", "upstream"],
        )
        .expect("valid metric");
        let queue_oldest_age = prometheus::GaugeVec::new(
            Opts::new(
                QUEUE_OLDEST_PENDING_AGE_SECONDS,
                "Age of the oldest event with a pending delivery per queued route (0 when none), refreshed every 2 s",
            ),
            &["route"],
        )
        .expect("valid metric");
        let [queue_attempts, queue_dead] = [
            (QUEUE_ATTEMPTS_TOTAL, "Attempts of queued deliveries by result: delivered (2xx), retried (retryable failure), failed (final answer)", "result"),
            (QUEUE_DEAD_TOTAL, "Queued deliveries given up (dead), by reason: exhausted, final_status, max_age, upstream_removed", "reason"),
        ]
        .map(|(name, help, label)| {
            IntCounterVec::new(Opts::new(name, help), &["route", "upstream", label])
                .expect("valid metric")
        });
        let store_bytes = IntGauge::new(
            STORE_BYTES,
            "Bytes of events in the queued-delivery store (heads, bodies, records), as counted against [storage] max_bytes",
        )
        .expect("valid metric");
        let store_max_bytes =
            IntGauge::new(STORE_MAX_BYTES, "[storage] max_bytes (0 without a store)")
                .expect("valid metric");
        let store_errors = IntCounterVec::new(
            Opts::new(
                STORE_ERRORS_TOTAL,
                "Queued deliveries or records the store refused: full (max_bytes) or io (the database failed)",
            ),
            &["kind"],
        )
        .expect("valid metric");
        for kind in STORE_ERROR_KINDS {
            store_errors.with_label_values(&[kind]);
        }
        // The cluster series are created by `cluster::ClusterClient::start`, so
        // a gateway without `[cluster]` exports none.
        let cluster_up = IntGaugeVec::new(
            Opts::new(
                CLUSTER_UP,
                "1 while the [cluster] Redis answers, 0 while it does not (pinged every 500 ms)",
            ),
            &[],
        )
        .expect("valid metric");
        let [cluster_errors, cluster_fallbacks] = [
            (CLUSTER_ERRORS_TOTAL, "Operations on the [cluster] Redis that failed, timed out or were not sent because Redis was down, by operation (ping, rate_limit, dedupe, store); each dedupe claim, mark or release counts once, also when a batch carried it"),
            (CLUSTER_FALLBACKS_TOTAL, "Rate limit and dedupe decisions taken on this instance's own state because Redis did not answer (on_unavailable = \"local\"), by operation"),
        ]
        .map(|(name, help)| {
            IntCounterVec::new(Opts::new(name, help), &["operation"]).expect("valid metric")
        });
        let cluster_marks_lost = IntCounterVec::new(
            Opts::new(
                CLUSTER_MARKS_LOST_TOTAL,
                "Forwarded dedupe marks of [cluster] that never reached Redis (retried until the claim's lease ended, or dropped past 10000 pending): a retry of such an id may be forwarded again",
            ),
            &[],
        )
        .expect("valid metric");
        let cluster_commands = IntCounterVec::new(
            Opts::new(
                CLUSTER_COMMANDS_TOTAL,
                "Commands (round trips) sent to the [cluster] Redis for requests, by operation (rate_limit, dedupe); a dedupe batch counts once, a command sent again on a fresh connection twice",
            ),
            &["operation"],
        )
        .expect("valid metric");
        for outcome in Outcome::UNMATCHED {
            requests.with_label_values(&[UNMATCHED_ROUTE, outcome.as_str()]);
        }
        request_duration.with_label_values(&[UNMATCHED_ROUTE]);
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(request_body_bytes.clone()),
            Box::new(signature_failures.clone()),
            Box::new(handshakes.clone()),
            Box::new(decoded_bodies.clone()),
            Box::new(rate_limit_keys.clone()),
            Box::new(rate_limit_overflow.clone()),
            Box::new(events.clone()),
            Box::new(fanout_copies.clone()),
            Box::new(fanout_dropped.clone()),
            Box::new(fanout_queued.clone()),
            Box::new(dedupe_entries.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_responses.clone()),
            Box::new(upstream_targets_healthy.clone()),
            Box::new(inflight.clone()),
            Box::new(client_connections.clone()),
            Box::new(client_limit_hits.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_last_reload_success.clone()),
            Box::new(queue_backlog.clone()),
            Box::new(queue_oldest_age.clone()),
            Box::new(queue_attempts.clone()),
            Box::new(queue_dead.clone()),
            Box::new(store_bytes.clone()),
            Box::new(store_max_bytes.clone()),
            Box::new(store_errors.clone()),
            Box::new(cluster_up.clone()),
            Box::new(cluster_errors.clone()),
            Box::new(cluster_fallbacks.clone()),
            Box::new(cluster_marks_lost.clone()),
            Box::new(cluster_commands.clone()),
            Box::new(build_info),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            request_duration,
            request_body_bytes,
            signature_failures,
            handshakes,
            decoded_bodies,
            rate_limit_keys,
            rate_limit_overflow,
            events,
            fanout_copies,
            fanout_dropped,
            fanout_queued,
            dedupe_entries,
            upstream_duration,
            upstream_responses,
            upstream_targets_healthy,
            inflight,
            client_connections,
            client_limit_hits,
            config_reloads,
            config_last_reload_success,
            queue_backlog,
            queue_oldest_age,
            queue_attempts,
            queue_dead,
            store_bytes,
            store_max_bytes,
            store_errors,
            cluster_up,
            cluster_errors,
            cluster_fallbacks,
            cluster_marks_lost,
            cluster_commands,
        }
    }

    /// Sets the queue gauges from a reading of the store: pending deliveries per
    /// (route, upstream) and the oldest pending event's age (ms) per route. Series
    /// not in the reading are set to 0, not removed (they stay initialized).
    pub fn set_queue_gauges(
        &self,
        backlog: &HashMap<(&str, &str), i64>,
        oldest_ms: &HashMap<&str, u64>,
        bytes: u64,
        max_bytes: u64,
    ) {
        for family in self.queue_backlog.collect() {
            for metric in family.get_metric() {
                let labels = Labels(
                    metric
                        .get_label()
                        .iter()
                        .map(|pair| (pair.name().to_string(), pair.value().to_string()))
                        .collect(),
                );
                let key = (labels.get("route"), labels.get("upstream"));
                if !backlog.contains_key(&key) {
                    self.queue_backlog.with_label_values(&[key.0, key.1]).set(0);
                }
            }
        }
        for ((route, upstream), count) in backlog {
            self.queue_backlog
                .with_label_values(&[route, upstream])
                .set(*count);
        }
        for family in self.queue_oldest_age.collect() {
            for metric in family.get_metric() {
                for pair in metric.get_label() {
                    if pair.name() == "route" && !oldest_ms.contains_key(pair.value()) {
                        self.queue_oldest_age
                            .with_label_values(&[pair.value()])
                            .set(0.0);
                    }
                }
            }
        }
        for (route, age) in oldest_ms {
            self.queue_oldest_age
                .with_label_values(&[route])
                .set(*age as f64 / 1000.0);
        }
        self.store_bytes.set(bytes as i64);
        self.store_max_bytes.set(max_bytes as i64);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding to a Vec cannot fail");
        out
    }
}

impl Metrics {
    /// After a reload to `routes`: removes every series whose route, upstream,
    /// scheme or event label the new configuration no longer produces (a
    /// deleted route, an upstream a route no longer sends to, a route's old
    /// scheme, a renamed event pattern), so dashboards do not show stale series
    /// as if they were live. Outcome, class, reason and result values are fixed
    /// by the code and are never retired on their own; `route="_unmatched"` is
    /// always kept. Returns how many series were removed.
    ///
    /// A request or fan-out copy still running on the old snapshot's route at
    /// that moment is counted afterwards either in a handle no longer exported
    /// (cached counters) or, through a label lookup, in a re-created series
    /// that stays until the next reload. Both need a reload that deletes or
    /// changes the route while it is busy.
    pub fn retire(&self, routes: &[&RouteSeries]) -> usize {
        let by_name: HashMap<&str, &RouteSeries> =
            routes.iter().map(|r| (r.route.as_str(), *r)).collect();
        let route = |labels: &Labels| by_name.get(labels.get("route")).copied();
        let any_route =
            |labels: &Labels| labels.get("route") == UNMATCHED_ROUTE || route(labels).is_some();
        let primary = |labels: &Labels| {
            labels.get("route") == UNMATCHED_ROUTE
                || route(labels)
                    .is_some_and(|r| r.primaries.iter().any(|u| u == labels.get("upstream")))
        };
        let copy = |labels: &Labels| {
            route(labels).is_some_and(|r| r.copies.iter().any(|u| u == labels.get("upstream")))
        };
        let queued = |labels: &Labels| {
            route(labels).is_some_and(|r| r.queued.iter().any(|u| u == labels.get("upstream")))
        };
        remove_unless(&self.requests, any_route)
            + remove_unless(&self.request_duration, any_route)
            + remove_unless(&self.request_body_bytes, any_route)
            + remove_unless(&self.decoded_bodies, any_route)
            + remove_unless(&self.signature_failures, |labels| {
                route(labels).is_some_and(|r| r.scheme == Some(labels.get("scheme")))
            })
            + remove_unless(&self.handshakes, |labels| {
                route(labels)
                    .is_some_and(|r| r.handshake.as_deref() == Some(labels.get("provider")))
            })
            + remove_unless(&self.rate_limit_keys, |labels| {
                route(labels).is_some_and(|r| r.rate_limited)
            })
            + remove_unless(&self.rate_limit_overflow, |labels| {
                route(labels).is_some_and(|r| r.keyed_rate_limit)
            })
            + remove_unless(&self.dedupe_entries, |labels| {
                route(labels).is_some_and(|r| r.deduped)
            })
            + remove_unless(&self.events, |labels| {
                route(labels).is_some_and(|r| r.events.iter().any(|e| e == labels.get("event")))
            })
            + remove_unless(&self.fanout_copies, copy)
            + remove_unless(&self.fanout_dropped, copy)
            + remove_unless(&self.upstream_duration, primary)
            + remove_unless(&self.upstream_responses, primary)
            + remove_unless(&self.queue_backlog, queued)
            + remove_unless(&self.queue_attempts, queued)
            + remove_unless(&self.queue_dead, queued)
            + remove_unless(&self.queue_oldest_age, |labels| {
                route(labels).is_some_and(|r| !r.queued.is_empty())
            })
    }
}

/// The labels of one series, as [`Metrics::retire`] reads them.
struct Labels(HashMap<String, String>);

impl Labels {
    /// The value of label `name`, `""` when the series has no such label.
    fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }
}

/// Removes the series of `vec` for which `keep` is false; returns how many.
fn remove_unless<B: MetricVecBuilder>(vec: &MetricVec<B>, keep: impl Fn(&Labels) -> bool) -> usize {
    let mut removed = 0;
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels = Labels(
                metric
                    .get_label()
                    .iter()
                    .map(|pair| (pair.name().to_string(), pair.value().to_string()))
                    .collect(),
            );
            if keep(&labels) {
                continue;
            }
            let by_name: HashMap<&str, &str> = labels
                .0
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            if vec.remove(&by_name).is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The label values of one route's series, all known from its configuration
/// (`state` derives them from the route's settings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSeries {
    pub route: String,
    /// Its verification scheme (`hookgate_signature_failures_total{scheme}`);
    /// `None` for a route without `verify`.
    pub scheme: Option<&'static str>,
    /// `hookgate_events_total{event}` values: each configured pattern, then
    /// `_other`; empty when the route reads no event.
    pub events: Vec<String>,
    /// Upstreams whose answer goes back to the sender (`hookgate_upstream_*`).
    pub primaries: Vec<String>,
    /// Upstreams that get fan-out copies (`hookgate_fanout_*`).
    pub copies: Vec<String>,
    /// Whether it has a rate limit (`hookgate_rate_limit_keys`).
    pub rate_limited: bool,
    /// Whether that limit is per key, `per = "ip"` or `"header:..."`
    /// (`hookgate_rate_limit_overflow_total`).
    pub keyed_rate_limit: bool,
    /// Whether it suppresses duplicate deliveries (`hookgate_dedupe_entries`).
    pub deduped: bool,
    /// Upstreams it delivers to in queued mode (`hookgate_queue_*`); empty for direct routes.
    pub queued: Vec<String>,
    /// The `provider` label of its setup handshake (`hookgate_handshakes_total`);
    /// `None` for a route without `handshake`.
    pub handshake: Option<String>,
}

/// The per-request series of one route, each resolved once and then kept:
/// counting a request then costs no label hashing, no map lookup and no lock.
/// A route's handles live as long as its snapshot's route.
///
/// [`RouteHandles::register`] creates every series the route's configuration
/// implies, at 0, when the snapshot is built; [`RouteHandles::new`] resolves
/// series on first use (for `_unmatched`, whose series [`Metrics::new`] creates).
pub struct RouteHandles {
    series: RouteSeries,
    requests: [OnceLock<IntCounter>; Outcome::COUNT],
    duration: OnceLock<Histogram>,
    body_bytes: OnceLock<Histogram>,
    /// One entry per upstream name the route may send to.
    upstreams: Box<[UpstreamHandles]>,
    /// `hookgate_signature_failures_total` under the route's scheme, by
    /// [`SIGNATURE_FAILURE_REASONS`] index.
    signature_failures: [OnceLock<IntCounter>; SIGNATURE_FAILURE_REASONS.len()],
    /// `hookgate_events_total`, one per [`RouteSeries::events`] label.
    events: Box<[OnceLock<IntCounter>]>,
}

struct UpstreamHandles {
    name: String,
    /// By status class: 1xx to 5xx.
    responses: [OnceLock<IntCounter>; 5],
    duration: OnceLock<Histogram>,
}

impl RouteHandles {
    /// Handles for `route`, which may send to the upstreams in `upstreams`,
    /// each series resolved on its first use.
    pub fn new<'a>(route: &str, upstreams: impl IntoIterator<Item = &'a str>) -> Self {
        RouteHandles::lazy(RouteSeries {
            route: route.to_string(),
            primaries: upstreams.into_iter().map(str::to_string).collect(),
            ..RouteSeries::default()
        })
    }

    fn lazy(series: RouteSeries) -> Self {
        RouteHandles {
            requests: std::array::from_fn(|_| OnceLock::new()),
            duration: OnceLock::new(),
            body_bytes: OnceLock::new(),
            upstreams: series
                .primaries
                .iter()
                .map(|name| UpstreamHandles {
                    name: name.clone(),
                    responses: std::array::from_fn(|_| OnceLock::new()),
                    duration: OnceLock::new(),
                })
                .collect(),
            signature_failures: std::array::from_fn(|_| OnceLock::new()),
            events: series.events.iter().map(|_| OnceLock::new()).collect(),
            series,
        }
    }

    /// Handles for the route `series` describes, with every series its
    /// configuration implies created in `metrics` (at 0 unless it exists
    /// already, e.g. kept across a reload):
    /// - `hookgate_requests_total` for each outcome a matched route can have,
    ///   and both histograms of the route;
    /// - per primary upstream: `hookgate_upstream_responses_total` for 2xx to
    ///   5xx and `hookgate_upstream_duration_seconds`;
    /// - per fan-out upstream: `hookgate_fanout_copies_total` per result and
    ///   `hookgate_fanout_dropped_total` per drop reason;
    /// - `hookgate_signature_failures_total` per reason (verified routes),
    ///   `hookgate_events_total` per event label (routes reading an event),
    ///   `hookgate_handshakes_total` per outcome (routes with a handshake),
    ///   `hookgate_rate_limit_keys` and `hookgate_dedupe_entries` when the
    ///   route has a limiter or dedupe, `hookgate_rate_limit_overflow_total`
    ///   when its limiter is per key.
    pub fn register(metrics: &Metrics, series: RouteSeries) -> Self {
        let handles = RouteHandles::lazy(series);
        let route = handles.series.route.as_str();
        for outcome in Outcome::ALL.into_iter().filter(|o| o.per_route()) {
            let counter = metrics
                .requests
                .with_label_values(&[route, outcome.as_str()]);
            let _ = handles.requests[outcome as usize].set(counter);
        }
        let _ = handles
            .duration
            .set(metrics.request_duration.with_label_values(&[route]));
        let _ = handles
            .body_bytes
            .set(metrics.request_body_bytes.with_label_values(&[route]));
        for upstream in handles.upstreams.iter() {
            let name = upstream.name.as_str();
            for class in INITIALIZED_CLASSES {
                let counter = metrics
                    .upstream_responses
                    .with_label_values(&[route, name, class]);
                let slot = CLASSES.iter().position(|c| *c == class).unwrap_or(4);
                let _ = upstream.responses[slot].set(counter);
            }
            let _ = upstream
                .duration
                .set(metrics.upstream_duration.with_label_values(&[route, name]));
        }
        for copy in &handles.series.copies {
            for result in FANOUT_RESULTS {
                metrics
                    .fanout_copies
                    .with_label_values(&[route, copy, result]);
            }
            for reason in DropReason::ALL {
                metrics
                    .fanout_dropped
                    .with_label_values(&[route, copy, reason.label()]);
            }
        }
        if let Some(scheme) = handles.series.scheme {
            for (slot, reason) in handles
                .signature_failures
                .iter()
                .zip(SIGNATURE_FAILURE_REASONS)
            {
                let _ = slot.set(
                    metrics
                        .signature_failures
                        .with_label_values(&[route, scheme, reason]),
                );
            }
        }
        for (slot, event) in handles.events.iter().zip(&handles.series.events) {
            let _ = slot.set(metrics.events.with_label_values(&[route, event]));
        }
        if let Some(provider) = &handles.series.handshake {
            for outcome in HANDSHAKE_OUTCOMES {
                metrics
                    .handshakes
                    .with_label_values(&[route, provider, outcome]);
            }
        }
        if handles.series.rate_limited {
            metrics.rate_limit_keys.with_label_values(&[route]);
        }
        if handles.series.keyed_rate_limit {
            metrics.rate_limit_overflow.with_label_values(&[route]);
        }
        if handles.series.deduped {
            metrics.dedupe_entries.with_label_values(&[route]);
        }
        if !handles.series.queued.is_empty() {
            metrics.queue_oldest_age.with_label_values(&[route]);
        }
        for upstream in &handles.series.queued {
            metrics.queue_backlog.with_label_values(&[route, upstream]);
            for result in QUEUE_ATTEMPT_RESULTS {
                metrics
                    .queue_attempts
                    .with_label_values(&[route, upstream, result]);
            }
            for reason in QUEUE_DEAD_REASONS {
                metrics
                    .queue_dead
                    .with_label_values(&[route, upstream, reason]);
            }
        }
        handles
    }

    /// The label values this route's series take.
    pub fn series(&self) -> &RouteSeries {
        &self.series
    }

    /// Counts one request in `hookgate_requests_total`.
    pub fn count_request(&self, metrics: &Metrics, outcome: Outcome) {
        let lookup = || {
            metrics
                .requests
                .with_label_values(&[&self.series.route, outcome.as_str()])
        };
        match self.requests.get(outcome as usize) {
            Some(slot) => slot.get_or_init(lookup).inc(),
            // An outcome added after `COUNT` was last updated: still counted.
            None => lookup().inc(),
        }
    }

    /// Observes `hookgate_request_duration_seconds`.
    pub fn observe_duration(&self, metrics: &Metrics, seconds: f64) {
        self.duration
            .get_or_init(|| {
                metrics
                    .request_duration
                    .with_label_values(&[&self.series.route])
            })
            .observe(seconds);
    }

    /// Observes `hookgate_request_body_bytes`.
    pub fn observe_body(&self, metrics: &Metrics, bytes: usize) {
        self.body_bytes
            .get_or_init(|| {
                metrics
                    .request_body_bytes
                    .with_label_values(&[&self.series.route])
            })
            .observe(bytes as f64);
    }

    /// Counts a refused signature in `hookgate_signature_failures_total`
    /// under `scheme` (the verifier's, which is the route's unless a
    /// handshake handed another over) and `reason` (a
    /// [`SIGNATURE_FAILURE_REASONS`] value).
    pub fn count_signature_failure(&self, metrics: &Metrics, scheme: &str, reason: &str) {
        let lookup = || {
            metrics
                .signature_failures
                .with_label_values(&[&self.series.route, scheme, reason])
        };
        let slot = (self.series.scheme == Some(scheme))
            .then(|| SIGNATURE_FAILURE_REASONS.iter().position(|r| *r == reason))
            .flatten();
        match slot {
            Some(i) => self.signature_failures[i].get_or_init(lookup).inc(),
            None => lookup().inc(),
        }
    }

    /// Counts a routed event in `hookgate_events_total` under `label` (one of
    /// the route's [`RouteSeries::events`] labels).
    pub fn count_event(&self, metrics: &Metrics, label: &str) {
        let lookup = || {
            metrics
                .events
                .with_label_values(&[&self.series.route, label])
        };
        match self.series.events.iter().position(|e| e == label) {
            Some(i) => self.events[i].get_or_init(lookup).inc(),
            None => lookup().inc(),
        }
    }

    /// Counts an upstream answer and observes its time (`hookgate_upstream_*`).
    pub fn upstream_answered(
        &self,
        metrics: &Metrics,
        upstream: &str,
        status: u16,
        seconds: Option<f64>,
    ) {
        let class = status_class(status);
        let Some(handles) = self.upstreams.iter().find(|u| u.name == upstream) else {
            // Not one of the route's upstreams (cannot happen): count it the slow way.
            let labels = [self.series.route.as_str(), upstream];
            metrics
                .upstream_responses
                .with_label_values(&[labels[0], labels[1], class])
                .inc();
            if let Some(seconds) = seconds {
                metrics
                    .upstream_duration
                    .with_label_values(&labels)
                    .observe(seconds);
            }
            return;
        };
        let slot = CLASSES.iter().position(|c| *c == class).unwrap_or(4);
        handles.responses[slot]
            .get_or_init(|| {
                metrics
                    .upstream_responses
                    .with_label_values(&[&self.series.route, upstream, class])
            })
            .inc();
        if let Some(seconds) = seconds {
            handles
                .duration
                .get_or_init(|| {
                    metrics
                        .upstream_duration
                        .with_label_values(&[&self.series.route, upstream])
                })
                .observe(seconds);
        }
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// `2xx` style class of an HTTP status (anything outside 100..=499 is `5xx`).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_value_sets_agree_with_the_code_that_counts() {
        use crate::verify::VerifyError;
        for error in [
            VerifyError::Missing("".into()),
            VerifyError::Malformed("".into()),
            VerifyError::Mismatch("".into()),
            VerifyError::Expired("".into()),
        ] {
            assert!(
                SIGNATURE_FAILURE_REASONS.contains(&error.reason()),
                "{error}"
            );
        }
        for (index, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, index, "Outcome::ALL in declaration order");
        }
        assert!(Outcome::UNMATCHED
            .iter()
            .all(|o| !o.per_route() || *o == Outcome::BadRequest));
    }

    #[test]
    fn cached_handles_count_in_the_same_series_as_a_label_lookup() {
        let metrics = Metrics::new();
        let handles = RouteHandles::new("github", ["ci", "billing"]);
        handles.count_request(&metrics, Outcome::Forwarded);
        handles.count_request(&metrics, Outcome::Forwarded);
        handles.count_request(&metrics, Outcome::SignatureInvalid);
        handles.observe_duration(&metrics, 0.002);
        handles.observe_body(&metrics, 1024);
        handles.upstream_answered(&metrics, "billing", 503, Some(0.001));
        handles.upstream_answered(&metrics, "billing", 204, None);
        handles.upstream_answered(&metrics, "ci", 799, Some(0.001));
        // An upstream the handles were not made for is still counted.
        handles.upstream_answered(&metrics, "other", 200, Some(0.001));

        let requests = |outcome| {
            metrics
                .requests
                .with_label_values(&["github", outcome])
                .get()
        };
        assert_eq!(requests("forwarded"), 2);
        assert_eq!(requests("signature_invalid"), 1);
        let responses = |upstream, class| {
            metrics
                .upstream_responses
                .with_label_values(&["github", upstream, class])
                .get()
        };
        assert_eq!(responses("billing", "5xx"), 1);
        assert_eq!(responses("billing", "2xx"), 1);
        assert_eq!(responses("ci", "5xx"), 1);
        assert_eq!(responses("other", "2xx"), 1);
        let timed = |upstream| {
            metrics
                .upstream_duration
                .with_label_values(&["github", upstream])
                .get_sample_count()
        };
        assert_eq!((timed("billing"), timed("ci"), timed("other")), (1, 1, 1));
        assert_eq!(
            metrics
                .request_duration
                .with_label_values(&["github"])
                .get_sample_count(),
            1
        );
        assert_eq!(
            metrics
                .request_body_bytes
                .with_label_values(&["github"])
                .get_sample_sum(),
            1024.0
        );
    }
}
