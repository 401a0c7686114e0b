//! The file layer of the configuration: serde structs that mirror the TOML exactly.
//!
//! Every table denies unknown keys, so a typo is an error with a line number instead
//! of a silently ignored setting. Nothing here is validated beyond its TOML type;
//! `config::compile` turns these into the checked [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;

use super::cluster::ClusterFile;
use super::dedupe::DedupeSpec;
use super::events::{EventRuleFile, EventSpec, OneOrMany};
use super::fanout::FanoutSpec;
use super::ip_sets::IpSetsFile;
use super::ratelimit::RateLimitSpec;
use super::storage::{RetryFile, StorageFile};
use crate::logging::LogFormat;
use crate::verify::VerifySpec;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerFile,
    /// Named CIDR lists (inline or from files) that `allow` and `trusted_proxies` can name.
    #[serde(default)]
    pub ip_sets: IpSetsFile,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamFile>,
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    /// The on-disk store of queued deliveries; required once a route is queued.
    pub storage: Option<StorageFile>,
    /// Several instances sharing rate limits and dedupe through Redis.
    pub cluster: Option<ClusterFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    pub tls: Option<TlsListenerFile>,
    #[serde(default = "default_admin")]
    pub admin: String,
    #[serde(default = "default_max_body")]
    pub max_body: String,
    /// Cap on a body once its `Content-Encoding` is undone (413 past it); 8 × each route's
    /// `max_body` when absent.
    pub max_decoded_body: Option<String>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Default allowlist for routes without their own `allow`; any address when absent.
    pub allow: Option<Vec<String>>,
    /// Most requests handled at once; more are answered 503 `overloaded`.
    /// `DEFAULT_MAX_INFLIGHT` (1024) when absent.
    pub max_inflight: Option<usize>,
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: String,
    /// Worker threads of the proxy service; 0 or absent = one per core.
    pub threads: Option<usize>,
    /// How long a client may take to send the request head or the next body chunk.
    pub client_timeout: Option<String>,
    /// Reload when the config file changes on disk (SIGHUP and `POST /reload` always work).
    #[serde(default = "default_watch")]
    pub watch: bool,
    /// `"text"` (default) or `"json"`: one JSON object per log line.
    #[serde(default)]
    pub log_format: LogFormat,
    /// The background queue that delivers fan-out copies.
    pub fanout: Option<FanoutSpec>,
    /// Idle keep-alive connections kept to upstreams, across all targets.
    pub upstream_keepalive_pool: Option<usize>,
    /// The header that carries the client address hookgate decided on to the
    /// upstream; `""` sends none. `X-Real-IP` when absent.
    pub client_header: Option<String>,
    /// Open client connections at most; more are closed at once. 10000 when absent.
    pub max_connections: Option<usize>,
    /// How long an idle keep-alive connection is kept. `"60s"` when absent; `"0s"` disables keep-alive.
    pub keepalive_timeout: Option<String>,
    /// Requests served on one connection before it is closed. 1000 when absent.
    pub max_requests_per_connection: Option<u32>,
    /// Deadline for a whole request head. `"10s"` when absent.
    pub header_timeout: Option<String>,
    /// Deadline for a whole request body. `"30s"` when absent.
    pub body_timeout: Option<String>,
    /// Longest wait for each write of an answer to the sender. `"30s"` when absent.
    pub send_timeout: Option<String>,
    /// Header fields a request may carry. 100 when absent.
    pub max_header_count: Option<usize>,
    /// Bytes a request head may take (request line and headers). `"32KiB"` when absent.
    pub max_head_size: Option<String>,
    /// Bearer token for the admin listener: `"${ENV}"`, `"file:/path"` or `"literal:…"`.
    pub admin_token: Option<String>,
    /// Host names the admin listener answers besides IP addresses and `localhost`.
    #[serde(default)]
    pub admin_hosts: Vec<String>,
    /// Accept a config with no routes (refused by default: it answers every delivery 404).
    #[serde(default)]
    pub allow_no_routes: bool,
}

impl Default for ServerFile {
    fn default() -> Self {
        ServerFile {
            listen: default_listen(),
            tls: None,
            admin: default_admin(),
            max_body: default_max_body(),
            max_decoded_body: None,
            trusted_proxies: Vec::new(),
            allow: None,
            max_inflight: None,
            shutdown_grace: default_shutdown_grace(),
            threads: None,
            client_timeout: None,
            watch: default_watch(),
            log_format: LogFormat::default(),
            fanout: None,
            upstream_keepalive_pool: None,
            client_header: None,
            max_connections: None,
            keepalive_timeout: None,
            max_requests_per_connection: None,
            header_timeout: None,
            body_timeout: None,
            send_timeout: None,
            max_header_count: None,
            max_head_size: None,
            admin_token: None,
            admin_hosts: Vec::new(),
            allow_no_routes: false,
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["0.0.0.0:8080".to_string()]
}
fn default_admin() -> String {
    "127.0.0.1:9090".to_string()
}
fn default_max_body() -> String {
    "1MiB".to_string()
}
fn default_watch() -> bool {
    true
}
fn default_shutdown_grace() -> String {
    "5s".to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerFile {
    pub listen: String,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub targets: Vec<String>,
    pub connect_timeout: Option<String>,
    pub timeout: Option<String>,
    /// Deadline for the whole response, from the request write to its last byte.
    pub response_timeout: Option<String>,
    pub idle_timeout: Option<String>,
    pub health: Option<HealthFile>,
    pub tls: Option<UpstreamTlsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    /// HTTP health check path; a TCP connect check when absent.
    pub path: Option<String>,
    pub interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    pub sni: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    pub name: String,
    pub path: String,
    pub host: Option<String>,
    pub methods: Option<Vec<String>>,
    /// `"name"` or `["a", "b"]` (fan-out: the first answers the sender).
    pub upstream: OneOrMany,
    pub max_body: Option<String>,
    /// Cap on the decoded body; `[server] max_decoded_body` when absent.
    pub max_decoded_body: Option<String>,
    /// Client addresses allowed on this route (CIDRs or `[ip_sets]` names); `[server] allow` when absent.
    pub allow: Option<Vec<String>>,
    pub rate_limit: Option<RateLimitSpec>,
    /// Signature or token verification; the route forwards unverified requests when absent.
    pub verify: Option<VerifySpec>,
    /// Where the event type is: a header, a JSON pointer, a form field or an XML path.
    pub event: Option<EventSpec>,
    /// Event rules, first match wins; the route's `upstream` takes the rest.
    #[serde(default)]
    pub events: Vec<EventRuleFile>,
    /// `"default"` (the route's upstream) or `"reject"` (422) for events no rule matches.
    pub unmatched: Option<String>,
    /// Duplicate-delivery suppression.
    pub dedupe: Option<DedupeSpec>,
    /// `"direct"` (default: relay, answer with the app's answer) or `"queued"`
    /// (store, answer 202, deliver in the background).
    pub delivery: Option<String>,
    /// Retries of a queued delivery.
    pub retry: Option<RetryFile>,
    /// The provider's setup handshake, answered by the gateway (`config::handshake`).
    pub handshake: Option<super::handshake::HandshakeFile>,
}
