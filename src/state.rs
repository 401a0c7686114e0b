//! The running gateway's state: one immutable [`Snapshot`] built from a
//! [`Config`] (route table, compiled routes, upstream pools), swapped atomically
//! so a request keeps the snapshot it started with.
//!
//! Owns building a snapshot and holding the current one; loading files is
//! `config`'s job and reacting to edits is `reload`'s. A snapshot built to
//! replace another keeps what did not change: the pool (with its health state
//! and pooled connections) of an upstream whose settings are equal, and the
//! limiter (with its buckets) of a route of the same name and rate limit, and
//! the dedupe store (with its remembered ids) of a route of the same name and
//! dedupe settings.
//!
//! Building a snapshot also creates, at 0, every metric series its
//! configuration implies (routes, upstreams, schemes, event patterns, fan-out
//! upstreams); a rebuild then retires the series the new configuration no
//! longer has. Which series those are is `metrics`' business
//! ([`RouteHandles::register`], [`Metrics::retire`]); this module only reads
//! each route's labels off its settings ([`route_series`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::config::{Config, RouteSettings};
use crate::dedupe::DedupeStore;
use crate::metrics::{Metrics, RouteHandles, RouteSeries};
use crate::ratelimit::RouteLimiter;
use crate::routing::RouteTable;
use crate::upstream::UpstreamPool;
use crate::verify::Verifier;

/// A route ready to serve: its settings and its per-route state (limiter
/// buckets, remembered delivery ids). Upstreams are looked up by name in
/// [`Snapshot::pools`], since event rules may pick any of them.
pub struct Route {
    pub settings: RouteSettings,
    pub limiter: Option<Arc<RouteLimiter>>,
    pub dedupe: Option<Arc<DedupeStore>>,
    /// Its metric series, resolved once.
    pub metrics: RouteHandles,
}

impl Route {
    pub fn name(&self) -> &str {
        &self.settings.name
    }
}

/// Everything a request needs, consistent for its whole lifetime.
pub struct Snapshot {
    pub config: Config,
    pub table: RouteTable,
    /// In the config's order; `RouteMatch::Found(i)` indexes this.
    pub routes: Vec<Route>,
    pub pools: BTreeMap<String, Arc<UpstreamPool>>,
    pub loaded_at: SystemTime,
    /// The registry its routes' series live in (the same for every snapshot of a process).
    pub metrics: Arc<Metrics>,
}

impl Snapshot {
    /// A first snapshot, its series created in `metrics`.
    pub fn build(config: Config, metrics: &Arc<Metrics>) -> Result<Snapshot, String> {
        Snapshot::build_from(config, None, metrics)
    }

    /// A snapshot replacing `previous`, keeping its unchanged pools and
    /// limiters; the series only `previous` had are removed.
    pub fn rebuild(config: Config, previous: &Snapshot) -> Result<Snapshot, String> {
        let snapshot = Snapshot::build_from(config, Some(previous), &previous.metrics)?;
        let series: Vec<&RouteSeries> =
            snapshot.routes.iter().map(|r| r.metrics.series()).collect();
        snapshot.metrics.retire(&series);
        Ok(snapshot)
    }

    fn build_from(
        config: Config,
        previous: Option<&Snapshot>,
        metrics: &Arc<Metrics>,
    ) -> Result<Snapshot, String> {
        let pools = config
            .upstreams
            .iter()
            .map(|(name, settings)| {
                let kept = previous
                    .and_then(|p| p.pools.get(name))
                    .filter(|pool| pool.settings() == settings)
                    .cloned();
                let pool = match kept {
                    Some(pool) => pool,
                    None => Arc::new(UpstreamPool::new(settings)?),
                };
                Ok((name.clone(), pool))
            })
            .collect::<Result<BTreeMap<_, _>, String>>()?;
        let routes = config
            .routes
            .iter()
            .map(|settings| {
                if let Some(missing) = settings
                    .events
                    .upstreams()
                    .find(|u| !pools.contains_key(*u))
                {
                    return Err(format!(
                        "route {}: unknown upstream {missing}",
                        settings.name
                    ));
                }
                let before = previous
                    .and_then(|p| p.routes.iter().find(|r| r.settings.name == settings.name));
                let kept_dedupe = before
                    .and_then(|r| r.dedupe.clone())
                    .filter(|store| Some(store.config()) == settings.dedupe.as_ref());
                let dedupe = kept_dedupe.or_else(|| {
                    settings
                        .dedupe
                        .clone()
                        .map(|config| Arc::new(DedupeStore::new(config)))
                });
                let kept_limiter = before
                    .and_then(|r| r.limiter.clone())
                    .filter(|limiter| Some(limiter.config()) == settings.rate_limit.as_ref());
                let limiter = kept_limiter.or_else(|| {
                    settings
                        .rate_limit
                        .as_ref()
                        .map(|limit| Arc::new(RouteLimiter::new(limit)))
                });
                Ok(Route {
                    metrics: RouteHandles::register(
                        metrics,
                        route_series(
                            settings,
                            config.storage.is_some() && config.server.fanout.stored,
                        ),
                    ),
                    settings: settings.clone(),
                    limiter,
                    dedupe,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        // 0 until the health checker's first round (due at once for a new pool);
        // a kept pool's gauge keeps its value. Removed upstreams: `health`.
        for name in pools.keys() {
            metrics.upstream_targets_healthy.with_label_values(&[name]);
        }
        Ok(Snapshot {
            table: RouteTable::new(&config.routes),
            routes,
            pools,
            config,
            loaded_at: SystemTime::now(),
            metrics: metrics.clone(),
        })
    }
}

/// The label values of a route's series, read off its settings: its scheme
/// when it verifies, its event labels when it reads an event, the primary and
/// fan-out upstreams of every target list (the route's own and each rule's),
/// and the upstreams of its stored deliveries: every upstream of a queued
/// route, the fan-out upstreams of a direct route when a store is configured
/// (`stored_copies`; their copies go through it).
pub fn route_series(settings: &RouteSettings, stored_copies: bool) -> RouteSeries {
    let mut primaries: Vec<String> = Vec::new();
    let mut copies: Vec<String> = Vec::new();
    for target in settings.events.targets() {
        let Some((primary, rest)) = target.split_first() else {
            continue;
        };
        if !primaries.contains(primary) {
            primaries.push(primary.clone());
        }
        for copy in rest {
            if !copies.contains(copy) {
                copies.push(copy.clone());
            }
        }
    }
    let scheme = settings.verifier.scheme();
    let queued = match settings.delivery {
        crate::config::Delivery::Direct if stored_copies => copies.clone(),
        crate::config::Delivery::Direct => Vec::new(),
        crate::config::Delivery::Queued(_) => {
            let mut all = primaries.clone();
            all.extend(copies.iter().filter(|c| !primaries.contains(c)).cloned());
            all
        }
    };
    RouteSeries {
        route: settings.name.clone(),
        scheme: (scheme != Verifier::disabled().scheme()).then_some(scheme),
        events: if settings.events.has_event() {
            settings.events.labels().map(str::to_string).collect()
        } else {
            Vec::new()
        },
        primaries,
        copies,
        rate_limited: settings.rate_limit.is_some(),
        keyed_rate_limit: settings
            .rate_limit
            .as_ref()
            .is_some_and(|limit| limit.by != crate::ratelimit::LimitBy::Route),
        deduped: settings.dedupe.is_some(),
        queued,
        handshake: settings
            .handshake
            .as_ref()
            .map(|h| h.provider().to_string()),
    }
}

/// The current snapshot, shared by the proxy, the admin listener and the health checker.
pub type SharedState = Arc<ArcSwap<Snapshot>>;

pub fn shared(snapshot: Snapshot) -> SharedState {
    Arc::new(ArcSwap::from_pointee(snapshot))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::metrics::Outcome;

    /// Every kind of configured label: a verified route reading events with a
    /// fan-out rule, dedupe and a limiter, and a plain route.
    const CONFIG: &str = r#"
[server]
listen = ["127.0.0.1:1"]
admin = "127.0.0.1:2"

[upstreams.app]
targets = ["127.0.0.1:3"]
[upstreams.audit]
targets = ["127.0.0.1:4"]
[upstreams.billing]
targets = ["127.0.0.1:5"]
[upstreams.idle]
targets = ["127.0.0.1:6"]

[[routes]]
name = "github"
path = "/github"
upstream = "app"
verify = { scheme = "github", secrets = ["literal:s"] }
event = { header = "X-GitHub-Event" }
rate_limit = { rate = "10/s", burst = 10, per = "ip" }
dedupe = { key = "header:X-GitHub-Delivery" }
  [[routes.events]]
  match = "pull_request*"
  upstream = ["app", "audit"]
  [[routes.events]]
  match = ["issues", "push"]
  upstream = "billing"

[[routes]]
name = "plain"
path = "/plain"
upstream = "app"
"#;

    fn config(text: &str) -> Config {
        Config::from_toml(text, Path::new("test.toml")).expect("valid config")
    }

    fn exposition(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render()).unwrap()
    }

    /// The sample `name{labels} value` of `text`, labels in registration order.
    fn sample<'t>(text: &'t str, series: &str) -> Option<&'t str> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn every_configured_series_exists_at_zero_after_load() {
        let metrics = Arc::new(Metrics::new());
        let _snapshot = Snapshot::build(config(CONFIG), &metrics).unwrap();
        let text = exposition(&metrics);
        let zero = |series: String| {
            assert_eq!(sample(&text, &series), Some("0"), "{series} in\n{text}");
        };
        for route in ["github", "plain"] {
            for outcome in Outcome::ALL.into_iter().filter(|o| o.per_route()) {
                zero(format!(
                    r#"hookgate_requests_total{{outcome="{}",route="{route}"}}"#,
                    outcome.as_str()
                ));
            }
            zero(format!(
                r#"hookgate_request_duration_seconds_count{{route="{route}"}}"#
            ));
            zero(format!(
                r#"hookgate_request_body_bytes_count{{route="{route}"}}"#
            ));
        }
        for outcome in Outcome::UNMATCHED {
            zero(format!(
                r#"hookgate_requests_total{{outcome="{}",route="_unmatched"}}"#,
                outcome.as_str()
            ));
        }
        for reason in ["missing", "malformed", "mismatch", "expired"] {
            zero(format!(
                r#"hookgate_signature_failures_total{{reason="{reason}",route="github",scheme="github"}}"#
            ));
        }
        for event in ["pull_request*", "issues", "push", "_other"] {
            zero(format!(
                r#"hookgate_events_total{{event="{event}",route="github"}}"#
            ));
        }
        for (route, upstream) in [("github", "app"), ("github", "billing"), ("plain", "app")] {
            for class in ["2xx", "3xx", "4xx", "5xx"] {
                zero(format!(
                    r#"hookgate_upstream_responses_total{{class="{class}",route="{route}",upstream="{upstream}"}}"#
                ));
            }
            zero(format!(
                r#"hookgate_upstream_duration_seconds_count{{route="{route}",upstream="{upstream}"}}"#
            ));
        }
        for result in ["delivered", "retried", "failed"] {
            zero(format!(
                r#"hookgate_fanout_copies_total{{result="{result}",route="github",upstream="audit"}}"#
            ));
        }
        for reason in ["queue_full", "bytes_full", "shutting_down"] {
            zero(format!(
                r#"hookgate_fanout_dropped_total{{reason="{reason}",route="github",upstream="audit"}}"#
            ));
        }
        zero(r#"hookgate_rate_limit_keys{route="github"}"#.to_string());
        zero(r#"hookgate_rate_limit_overflow_total{route="github"}"#.to_string());
        zero(r#"hookgate_dedupe_entries{route="github"}"#.to_string());
        for upstream in ["app", "audit", "billing", "idle"] {
            zero(format!(
                r#"hookgate_upstream_targets_healthy{{upstream="{upstream}"}}"#
            ));
        }

        // Only what the config implies: nothing for what a route cannot do.
        for absent in [
            r#"route="plain",scheme="#,
            r#"hookgate_events_total{event="_other",route="plain"}"#,
            r#"hookgate_rate_limit_keys{route="plain"}"#,
            r#"hookgate_rate_limit_overflow_total{route="plain"}"#,
            r#"hookgate_dedupe_entries{route="plain"}"#,
            r#"outcome="no_route",route="github""#,
            r#"outcome="overloaded",route="plain""#,
            r#"class="1xx""#,
            r#"hookgate_upstream_responses_total{class="2xx",route="github",upstream="audit"}"#,
            r#"hookgate_fanout_copies_total{result="delivered",route="github",upstream="app"}"#,
            r#"route="github",upstream="idle""#,
        ] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
    }

    #[test]
    fn a_rebuild_creates_new_series_and_retires_the_ones_the_config_lost() {
        let metrics = Arc::new(Metrics::new());
        let first = Snapshot::build(config(CONFIG), &metrics).unwrap();
        first.routes[1]
            .metrics
            .count_request(&metrics, Outcome::Forwarded);
        // "github" is gone; "plain" now verifies and sends copies to "audit";
        // "new" appears.
        let edited = CONFIG.split("[[routes]]").next().unwrap().to_string()
            + r#"
[[routes]]
name = "plain"
path = "/plain"
upstream = ["app", "audit"]
verify = { scheme = "token", header = "X-Token", secrets = ["literal:t"] }

[[routes]]
name = "new"
path = "/new"
upstream = "billing"
"#;
        let second = Snapshot::rebuild(config(&edited), &first).unwrap();
        let text = exposition(&metrics);
        assert!(!text.contains(r#"route="github""#), "retired:\n{text}");
        assert_eq!(
            sample(
                &text,
                r#"hookgate_requests_total{outcome="forwarded",route="plain"}"#
            ),
            Some("1"),
            "a kept route keeps its counts"
        );
        for series in [
            r#"hookgate_requests_total{outcome="forwarded",route="new"}"#,
            r#"hookgate_signature_failures_total{reason="mismatch",route="plain",scheme="token"}"#,
            r#"hookgate_fanout_dropped_total{reason="queue_full",route="plain",upstream="audit"}"#,
            r#"hookgate_requests_total{outcome="no_route",route="_unmatched"}"#,
            r#"hookgate_upstream_targets_healthy{upstream="idle"}"#,
        ] {
            assert_eq!(sample(&text, series), Some("0"), "{series} in\n{text}");
        }

        // Back to the first config: the token scheme and the copies go again.
        let _third = Snapshot::rebuild(config(CONFIG), &second).unwrap();
        let text = exposition(&metrics);
        for gone in [
            r#"scheme="token""#,
            r#"route="new""#,
            r#"route="plain",upstream="audit""#,
        ] {
            assert!(!text.contains(gone), "{gone} in\n{text}");
        }
        assert!(text.contains(r#"hookgate_events_total{event="push",route="github"} 0"#));
    }
}
