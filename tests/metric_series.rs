//! The series a configuration implies are in `/metrics` at 0 before the first
//! request, and follow reloads: a new route's series appear at 0, a deleted
//! route's series (and an upstream a route no longer copies to) disappear,
//! and a kept route keeps its counts. Runs the real binary; reads the admin
//! listener's exposition directly.

mod common;

use std::time::Duration;

use common::*;

/// Whether `/metrics` has a sample named exactly `series` (name and labels as
/// exported, labels sorted), and its value.
fn sample(gateway: &Gateway, series: &str) -> Option<f64> {
    let text = String::from_utf8(get(gateway.admin, "/metrics").expect("scrape").body).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn routes(app: &Upstream, audit: &Upstream, second: &str) -> String {
    format!(
        r#"[upstreams.app]
targets = ["{}"]
[upstreams.audit]
targets = ["{}"]

[[routes]]
name = "orders"
path = "/orders"
verify = {{ scheme = "token", header = "X-Token", secrets = ["literal:t0ken"] }}
upstream = ["app", "audit"]

{second}
"#,
        app.addr, audit.addr
    )
}

#[test]
fn series_exist_at_zero_from_load_and_follow_reloads() {
    let app = Upstream::start("app");
    let audit = Upstream::start("audit");
    let first_second = r#"[[routes]]
name = "legacy"
path = "/legacy"
event = { json = "/type" }
upstream = "app"
  [[routes.events]]
  match = "ping"
  upstream = "app"
"#;
    let gateway = Gateway::start(&routes(&app, &audit, first_second));

    // Before any request: 0, not absent. Guards `RouteHandles::register(metrics,
    // route_series(settings))` in `Snapshot::build_from` (src/state.rs): with
    // handles resolved on first use, none of the route series exist yet.
    for series in [
        r#"hookgate_requests_total{outcome="forwarded",route="orders"}"#,
        r#"hookgate_requests_total{outcome="signature_invalid",route="orders"}"#,
        r#"hookgate_requests_total{outcome="no_route",route="_unmatched"}"#,
        r#"hookgate_signature_failures_total{reason="mismatch",route="orders",scheme="token"}"#,
        r#"hookgate_upstream_responses_total{class="5xx",route="orders",upstream="app"}"#,
        r#"hookgate_fanout_copies_total{result="delivered",route="orders",upstream="audit"}"#,
        r#"hookgate_fanout_dropped_total{reason="queue_full",route="orders",upstream="audit"}"#,
        r#"hookgate_events_total{event="ping",route="legacy"}"#,
        r#"hookgate_events_total{event="_other",route="legacy"}"#,
        r#"hookgate_request_duration_seconds_count{route="legacy"}"#,
        r#"hookgate_config_reloads_total{result="failure"}"#,
    ] {
        assert_eq!(sample(&gateway, series), Some(0.0), "{series}");
    }

    let forwarded = post(gateway.proxy, "/orders", &[("X-Token", "t0ken")], b"{}");
    assert_eq!(forwarded.status, 200);
    gateway.assert_requests("orders", "forwarded", 1.0);
    // The copy to "audit" is delivered in the background: let it land before
    // the reload, or its late count brings the retired series back.
    gateway.assert_metric(
        "hookgate_fanout_copies_total",
        &[
            ("route", "orders"),
            ("upstream", "audit"),
            ("result", "delivered"),
        ],
        1.0,
    );

    // "legacy" is deleted, "fresh" added; "orders" no longer copies to "audit".
    let fresh = r#"[[routes]]
name = "fresh"
path = "/fresh"
upstream = "audit"
"#;
    let edited = routes(&app, &audit, fresh)
        .replace(r#"upstream = ["app", "audit"]"#, r#"upstream = "app""#);
    gateway.rewrite(&edited);
    let reload = gateway.post_reload();
    reload.expect_status(200);

    // Guards `snapshot.metrics.retire(&series)` in `Snapshot::rebuild`
    // (src/state.rs): without it the deleted route's series stay exported.
    let settled = wait_until(Duration::from_secs(5), || {
        sample(
            &gateway,
            r#"hookgate_requests_total{outcome="forwarded",route="fresh"}"#,
        ) == Some(0.0)
    });
    assert!(settled, "the new route's series after the reload");
    let text = String::from_utf8(get(gateway.admin, "/metrics").unwrap().body).unwrap();
    for gone in [r#"route="legacy""#, r#"route="orders",upstream="audit""#] {
        assert!(!text.contains(gone), "{gone} still exported:\n{text}");
    }
    assert_eq!(
        sample(
            &gateway,
            r#"hookgate_requests_total{outcome="forwarded",route="orders"}"#
        ),
        Some(1.0),
        "a kept route keeps its counts"
    );
    assert_eq!(
        sample(
            &gateway,
            r#"hookgate_upstream_responses_total{class="2xx",route="fresh",upstream="audit"}"#
        ),
        Some(0.0)
    );
}

#[test]
fn a_queued_route_has_its_queue_series_at_zero_from_load() {
    let app = Upstream::start("app");
    let audit = Upstream::start("audit");
    let gateway = Gateway::start(&format!(
        r#"[upstreams.app]
targets = ["{}"]
[upstreams.audit]
targets = ["{}"]

[[routes]]
name = "gh"
path = "/gh"
upstream = ["app", "audit"]
delivery = "queued"

[storage]
path = "data"
max_bytes = "1MiB"
"#,
        app.addr, audit.addr
    ));
    // Guards the `queued` series in `RouteHandles::register` (src/metrics.rs) and
    // `route_series` (src/state.rs): every queued upstream, the primary and the copy.
    for series in [
        r#"hookgate_queue_backlog{route="gh",upstream="app"}"#,
        r#"hookgate_queue_backlog{route="gh",upstream="audit"}"#,
        r#"hookgate_queue_attempts_total{result="retried",route="gh",upstream="audit"}"#,
        r#"hookgate_queue_dead_total{reason="exhausted",route="gh",upstream="app"}"#,
        r#"hookgate_queue_dead_total{reason="upstream_removed",route="gh",upstream="audit"}"#,
        r#"hookgate_queue_oldest_pending_age_seconds{route="gh"}"#,
        r#"hookgate_requests_total{outcome="queued",route="gh"}"#,
        r#"hookgate_requests_total{outcome="storage_unavailable",route="gh"}"#,
        r#"hookgate_store_errors_total{kind="full"}"#,
        r#"hookgate_store_bytes"#,
    ] {
        assert_eq!(sample(&gateway, series), Some(0.0), "{series}");
    }
    assert_eq!(
        sample(&gateway, "hookgate_store_max_bytes"),
        Some(1048576.0)
    );
    // README, metrics: `hookgate_cluster_errors_total` is "[cluster] only"; a
    // redb store never counts there. Guards creating the `store` series only
    // for `backend = "redis"` (`open_store`, server.rs): it was made for every
    // store, so a gateway without [cluster] exported a cluster error series.
    let text = String::from_utf8(get(gateway.admin, "/metrics").unwrap().body).unwrap();
    assert!(
        !text.contains("hookgate_cluster_errors_total{"),
        "a cluster series without [cluster]:\n{text}"
    );
}
