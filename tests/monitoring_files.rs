//! The monitoring files parse and agree with each other: the Grafana dashboard,
//! its provisioning, the Prometheus config and alert rules, and the
//! docker-compose stack (Docker itself is not needed: the files are parsed and
//! every file they mount must exist). Metric names must be defined in
//! `src/metrics.rs`. PromQL syntax is checked by `scripts/check-monitoring`
//! with promtool, which `.ci/run` runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &str) -> Yaml {
    let text = std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(docs.len(), 1, "{path}: one YAML document");
    docs.remove(0)
}

fn defined_metrics() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo().join("src/metrics.rs")).unwrap();
    text.split("pub const ")
        .skip(1)
        .filter_map(|decl| decl.split('"').nth(1))
        .filter(|name| name.starts_with("hookgate_"))
        .map(str::to_string)
        .collect()
}

fn used_metrics(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for (start, _) in text.match_indices("hookgate_") {
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        used.insert(base.to_string());
    }
    used
}

#[test]
fn the_dashboard_has_its_variables_and_uses_only_defined_metrics() {
    let text = std::fs::read_to_string(repo().join("dashboards/hookgate.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "route", "upstream"]);
    let panels = dashboard["panels"].as_array().unwrap();
    let with_queries: Vec<&serde_json::Value> =
        panels.iter().filter(|p| p["type"] != "row").collect();
    assert!(with_queries.len() >= 15, "{} panels", with_queries.len());
    for panel in &with_queries {
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "panel {} needs a description",
            panel["title"]
        );
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(targets.iter().all(|t| t["expr"]
            .as_str()
            .is_some_and(|e| e.contains("hookgate_") || e.contains("up{"))));
    }
    let used = used_metrics(&text);
    let defined = defined_metrics();
    let unknown: Vec<_> = used.difference(&defined).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses undefined metrics: {unknown:?}"
    );
    for wanted in [
        "hookgate_requests_total",
        "hookgate_signature_failures_total",
        "hookgate_events_total",
        "hookgate_fanout_dropped_total",
        "hookgate_config_reloads_total",
        "hookgate_upstream_targets_healthy",
        "hookgate_inflight_requests",
    ] {
        assert!(
            used.contains(wanted),
            "the dashboard does not show {wanted}"
        );
    }
}

#[test]
fn prometheus_config_and_alert_rules_parse_and_agree() {
    let config = yaml("dashboards/prometheus.yml");
    let rule_files = config["rule_files"].as_vec().unwrap();
    for file in rule_files {
        assert!(repo()
            .join("dashboards")
            .join(file.as_str().unwrap())
            .is_file());
    }
    let job = &config["scrape_configs"][0];
    assert_eq!(job["job_name"].as_str(), Some("hookgate"));
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    assert_eq!(
        job["static_configs"][0]["targets"][0].as_str(),
        Some("hookgate:9090")
    );

    let alerts = yaml("dashboards/alerts.yml");
    let rules = alerts["groups"][0]["rules"].as_vec().unwrap();
    let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    for wanted in [
        "HookgateSignatureFailureSpike",
        "HookgateUpstreamErrors",
        "HookgateAllTargetsDown",
        "HookgateConfigReloadFailed",
    ] {
        assert!(names.contains(&wanted), "missing alert {wanted}");
    }
    for rule in rules {
        assert!(rule["expr"].as_str().is_some(), "{:?}", rule["alert"]);
        assert!(rule["labels"]["severity"].as_str().is_some());
        assert!(rule["annotations"]["summary"].as_str().is_some());
    }
    let text = std::fs::read_to_string(repo().join("dashboards/alerts.yml")).unwrap();
    let unknown: Vec<_> = used_metrics(&text)
        .difference(&defined_metrics())
        .cloned()
        .collect();
    assert!(
        unknown.is_empty(),
        "alerts use undefined metrics: {unknown:?}"
    );
}

#[test]
fn the_compose_stack_references_files_that_exist() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_hash().unwrap();
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "hookgate",
            "upstream",
            "prometheus",
            "grafana",
            "redis",
            "hookgate-a",
            "hookgate-b"
        ]
    );
    // The several-instances services stay out of a plain `docker compose up`.
    for name in ["redis", "hookgate-a", "hookgate-b"] {
        assert_eq!(
            compose["services"][name]["profiles"][0].as_str(),
            Some("cluster"),
            "{name}"
        );
    }
    assert_eq!(compose["services"]["hookgate"]["build"].as_str(), Some("."));
    assert!(repo().join("Dockerfile").is_file());
    for service in services.values() {
        for volume in service["volumes"]
            .as_vec()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let host = volume.as_str().unwrap().split(':').next().unwrap();
            assert!(repo().join(host).exists(), "mounted {host} does not exist");
        }
        for port in service["ports"]
            .as_vec()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            assert!(
                port.as_str().unwrap().starts_with("127.0.0.1:"),
                "ports are published on loopback only: {port:?}"
            );
        }
    }
    let grafana = &compose["services"]["grafana"]["environment"];
    assert_eq!(grafana["GF_AUTH_ANONYMOUS_ENABLED"].as_str(), Some("true"));
    assert_eq!(
        grafana["GF_AUTH_ANONYMOUS_ORG_ROLE"].as_str(),
        Some("Viewer")
    );
    // hookgate's compose config points at the sample upstream's fixed address.
    let upstream_ip = compose["services"]["upstream"]["networks"]["hooks"]["ipv4_address"]
        .as_str()
        .unwrap();
    let hookgate_conf = std::fs::read_to_string(repo().join("conf/compose.toml")).unwrap();
    assert!(hookgate_conf.contains(&format!("{upstream_ip}:8080")));

    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(
        dockerfile.contains("USER hookgate"),
        "the runtime image runs as non-root"
    );
    assert!(
        dockerfile.matches("FROM ").count() >= 2,
        "multi-stage build"
    );
}

#[test]
fn grafana_provisioning_loads_the_dashboard_from_prometheus() {
    let datasource = yaml("dashboards/provisioning/datasources/prometheus.yml");
    assert_eq!(
        datasource["datasources"][0]["type"].as_str(),
        Some("prometheus")
    );
    assert_eq!(
        datasource["datasources"][0]["url"].as_str(),
        Some("http://prometheus:9090")
    );
    let provider = yaml("dashboards/provisioning/dashboards/hookgate.yml");
    assert_eq!(provider["providers"][0]["type"].as_str(), Some("file"));
    let mounted = yaml("docker-compose.yml");
    let volumes: Vec<&str> = mounted["services"]["grafana"]["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        volumes.iter().any(|v| v.contains(&format!(":{path}"))),
        "the dashboard is mounted where the provider looks: {volumes:?}"
    );
    assert!(Path::new(&repo().join("dashboards/hookgate.json")).is_file());
}

#[test]
fn the_readme_metric_table_lists_every_metric() {
    // Guards the README's "Metrics" table against `src/metrics.rs`: a metric
    // added or renamed without its row turns this red.
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let table = readme
        .split_once("## Metrics")
        .and_then(|(_, rest)| rest.split_once("\n\n| metric |"))
        .map(|(_, rest)| rest.split("\n\n").next().unwrap_or(""))
        .expect("README has the metrics table");
    let listed: BTreeSet<String> = table
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|line| line.split('`').next())
        .map(str::to_string)
        .collect();
    assert_eq!(listed, defined_metrics());
}
