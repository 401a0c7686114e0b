//! Every metric hookgate exports: names, help texts, label sets and buckets,
//! registered in one [`Metrics`] registry served by the admin listener.
//!
//! Labels are bounded: `route` is a configured route name (or `_unmatched`),
//! `outcome` one of [`Outcome`]'s codes, `upstream` a configured upstream name,
//! `class` one of `1xx`..`5xx`. Never a raw path, address or header value.

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub const REQUESTS_TOTAL: &str = "hookgate_requests_total";
pub const REQUEST_DURATION_SECONDS: &str = "hookgate_request_duration_seconds";
pub const REQUEST_BODY_BYTES: &str = "hookgate_request_body_bytes";
pub const RATE_LIMIT_KEYS: &str = "hookgate_rate_limit_keys";
pub const EVENTS_TOTAL: &str = "hookgate_events_total";
pub const FANOUT_COPIES_TOTAL: &str = "hookgate_fanout_copies_total";
pub const FANOUT_DROPPED_TOTAL: &str = "hookgate_fanout_dropped_total";
pub const FANOUT_QUEUED: &str = "hookgate_fanout_queued";
pub const DEDUPE_ENTRIES: &str = "hookgate_dedupe_entries";
pub const SIGNATURE_FAILURES_TOTAL: &str = "hookgate_signature_failures_total";
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
}

impl Outcome {
    /// How many outcomes there are (one cached counter each per route).
    const COUNT: usize = Outcome::UpstreamUnavailable as usize + 1;

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
    pub rate_limit_keys: IntGaugeVec,
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
        let rate_limit_keys = IntGaugeVec::new(
            Opts::new(
                RATE_LIMIT_KEYS,
                "Keys (client addresses or header values) held by each route's per-key rate limiter",
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
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(request_body_bytes.clone()),
            Box::new(signature_failures.clone()),
            Box::new(rate_limit_keys.clone()),
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
            rate_limit_keys,
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
        }
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

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// `2xx` style class of an HTTP status.
/// The per-request series of one route, each looked up in its vector on first
/// use and then kept: counting a request then costs no label hashing, no map
/// lookup and no lock. A route's handles live as long as its snapshot's route;
/// series are created lazily, so `/metrics` shows the same series as without
/// the cache.
pub struct RouteHandles {
    route: String,
    requests: [OnceLock<IntCounter>; Outcome::COUNT],
    duration: OnceLock<Histogram>,
    body_bytes: OnceLock<Histogram>,
    /// One entry per upstream name the route may send to.
    upstreams: Box<[UpstreamHandles]>,
}

struct UpstreamHandles {
    name: String,
    /// By status class: 1xx to 5xx.
    responses: [OnceLock<IntCounter>; 5],
    duration: OnceLock<Histogram>,
}

impl RouteHandles {
    /// Handles for `route`, which may send to the upstreams in `upstreams`.
    pub fn new<'a>(route: &str, upstreams: impl IntoIterator<Item = &'a str>) -> Self {
        RouteHandles {
            route: route.to_string(),
            requests: std::array::from_fn(|_| OnceLock::new()),
            duration: OnceLock::new(),
            body_bytes: OnceLock::new(),
            upstreams: upstreams
                .into_iter()
                .map(|name| UpstreamHandles {
                    name: name.to_string(),
                    responses: std::array::from_fn(|_| OnceLock::new()),
                    duration: OnceLock::new(),
                })
                .collect(),
        }
    }

    /// Counts one request in `hookgate_requests_total`.
    pub fn count_request(&self, metrics: &Metrics, outcome: Outcome) {
        let lookup = || {
            metrics
                .requests
                .with_label_values(&[&self.route, outcome.as_str()])
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
            .get_or_init(|| metrics.request_duration.with_label_values(&[&self.route]))
            .observe(seconds);
    }

    /// Observes `hookgate_request_body_bytes`.
    pub fn observe_body(&self, metrics: &Metrics, bytes: usize) {
        self.body_bytes
            .get_or_init(|| metrics.request_body_bytes.with_label_values(&[&self.route]))
            .observe(bytes as f64);
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
            let labels = [self.route.as_str(), upstream];
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
                    .with_label_values(&[&self.route, upstream, class])
            })
            .inc();
        if let Some(seconds) = seconds {
            handles
                .duration
                .get_or_init(|| {
                    metrics
                        .upstream_duration
                        .with_label_values(&[&self.route, upstream])
                })
                .observe(seconds);
        }
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

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
