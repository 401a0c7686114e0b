//! The admin listener: `GET /metrics` (Prometheus text), `GET /healthz` (the
//! process answers), `GET /readyz` (config loaded, first health checks done,
//! every proxy listener accepting), `GET /config` (the active config, secrets
//! redacted, with its load time and hash) and `POST /reload`.
//!
//! Owns these answers and the guard in front of them. Does not own what the
//! metrics are (`metrics`) or how a reload works (`reload`).
//!
//! The guard, in order (settings from the running config, so a reload changes them):
//! 1. `/healthz` and `/readyz` are open: load balancers and kubelets probe them,
//!    often by a service name, and they reveal only "ready or not".
//! 2. `Host` must be an IP address, `localhost`, or a name in `[server]
//!    admin_hosts` (any port) → else 421 `host_not_allowed`. DNS rebinding
//!    needs the attacker's name in `Host`; an IP literal cannot be rebound.
//! 3. With `[server] admin_token`, `Authorization: Bearer <token>` (compared in
//!    constant time) → else 401 `unauthorized` with `WWW-Authenticate: Bearer`.
//! 4. `POST /reload` needs `Content-Type: application/json` or an
//!    `X-Hookgate-Reload` header, so it is never a CORS "simple request" that any
//!    web page can send → else 415 `reload_needs_json_or_header`. Every other
//!    endpoint is `GET` only; nothing changes state on `GET` (405 otherwise).
//!    The same rule holds for the `POST /events/…/replay` endpoints of queued
//!    delivery (`delivery::events_api`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderMap, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::config::ServerSettings;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::state::SharedState;

/// How long `/readyz` waits for each proxy listener to accept a probe connection.
const LISTENER_PROBE_TIMEOUT: Duration = Duration::from_millis(250);

pub struct Admin {
    state: SharedState,
    metrics: Arc<Metrics>,
    health_known: Arc<AtomicBool>,
    reloader: Arc<Reloader>,
    /// The proxy listeners the process serves: those of the config it started
    /// with (`listen` and `tls` change only with a restart).
    serving: Vec<SocketAddr>,
    /// The store of queued deliveries, for `/events`.
    queue: Option<Arc<crate::delivery::Queue>>,
    /// The shared Redis of `[cluster]`, for `/readyz`.
    cluster: Option<Arc<crate::cluster::ClusterClient>>,
}

impl Admin {
    /// `health_known`: the first round of upstream health checks has completed.
    /// `serving`: the proxy listeners started (plain and TLS), probed by `/readyz`.
    pub fn new(
        state: SharedState,
        metrics: Arc<Metrics>,
        health_known: Arc<AtomicBool>,
        reloader: Arc<Reloader>,
        serving: Vec<SocketAddr>,
    ) -> Self {
        Admin {
            state,
            metrics,
            health_known,
            reloader,
            serving,
            queue: None,
            cluster: None,
        }
    }

    /// Reports `cluster` in `/readyz`: not ready while its Redis does not answer
    /// and `on_unavailable = "reject"` (every rate-limited or deduped delivery would
    /// get 503). With `"local"` it stays ready: requests are decided on the
    /// instance's own state, counted in `hookgate_cluster_fallbacks_total`.
    pub fn with_cluster(mut self, cluster: Option<Arc<crate::cluster::ClusterClient>>) -> Self {
        self.cluster = cluster;
        self
    }

    /// Serves `/events` (inspect and replay queued deliveries) from `queue`.
    pub fn with_queue(mut self, queue: Option<Arc<crate::delivery::Queue>>) -> Self {
        self.queue = queue;
        self
    }

    fn active_config(&self) -> serde_json::Value {
        let snapshot = self.state.load_full();
        let mut config = snapshot.config.to_redacted_json();
        config["loaded_at"] = humantime::format_rfc3339_seconds(snapshot.loaded_at)
            .to_string()
            .into();
        config
    }

    async fn reload(&self) -> Response<Vec<u8>> {
        match self.reloader.reload("admin").await {
            Ok(report) => json(
                StatusCode::OK,
                serde_json::json!({"status": "reloaded", "report": report}),
            ),
            Err(error) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::json!({"status": "refused", "error": error}),
            ),
        }
    }

    /// Why the gateway is not ready, if it is not.
    async fn not_ready_reason(&self) -> Option<String> {
        if !self.health_known.load(Ordering::Acquire) {
            return Some("the first upstream health checks have not completed".to_string());
        }
        if let Some(cluster) = &self.cluster {
            let reject =
                cluster.settings().on_unavailable == crate::config::cluster::OnUnavailable::Reject;
            if reject && !cluster.is_up() {
                return Some(
                    "the [cluster] Redis does not answer (on_unavailable = \"reject\")".to_string(),
                );
            }
        }
        self.unbound_listener()
            .await
            .map(|listener| format!("listener {listener} is not accepting connections"))
    }

    /// The first serving proxy listener that does not accept a connection, if any.
    /// Not the running config's: a reload that changes `listen` waits for a restart.
    async fn unbound_listener(&self) -> Option<SocketAddr> {
        for listener in &self.serving {
            let probe = loopback_equivalent(*listener);
            let connected = tokio::time::timeout(
                LISTENER_PROBE_TIMEOUT,
                tokio::net::TcpStream::connect(probe),
            )
            .await;
            if !matches!(connected, Ok(Ok(_))) {
                return Some(*listener);
            }
        }
        None
    }
}

/// `0.0.0.0:p` and `[::]:p` are probed on loopback.
fn loopback_equivalent(addr: SocketAddr) -> SocketAddr {
    let mut probe = addr;
    if addr.ip().is_unspecified() {
        probe.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    probe
}

/// Endpoints answered without Host or token checks (probes).
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// Why the guard refused a request, before any endpoint ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// 421: `Host` missing, repeated, or a name not in `admin_hosts`.
    Host,
    /// 401: `admin_token` is set and the request lacks it.
    Token,
    /// 415: a `POST` to `/reload` or `/events…` without a JSON content type or
    /// `X-Hookgate-Reload` (the error keeps its first name for `/reload` clients).
    NotJson,
}

impl Refusal {
    fn answer(self) -> Response<Vec<u8>> {
        match self {
            Refusal::Host => json(
                StatusCode::MISDIRECTED_REQUEST,
                serde_json::json!({"error": "host_not_allowed", "hint": "use an IP address or localhost, or add the name to [server] admin_hosts"}),
            ),
            Refusal::Token => {
                let mut answer = json(
                    StatusCode::UNAUTHORIZED,
                    serde_json::json!({"error": "unauthorized", "hint": "send Authorization: Bearer <[server] admin_token>"}),
                );
                answer.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer realm=\"hookgate admin\""),
                );
                answer
            }
            Refusal::NotJson => json(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                serde_json::json!({"error": "reload_needs_json_or_header", "hint": "a POST to /reload or /events needs Content-Type: application/json or an X-Hookgate-Reload: 1 header"}),
            ),
        }
    }
}

/// Steps 2 to 4 of the guard (see the module doc) for a request to `path`.
fn guard(
    server: &ServerSettings,
    method: &http::Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    if is_probe(path) {
        return Ok(());
    }
    let mut hosts = headers.get_all(http::header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(host), None) => host.to_str().map_err(|_| Refusal::Host)?,
        _ => return Err(Refusal::Host),
    };
    if !host_allowed(host, &server.admin_hosts) {
        return Err(Refusal::Host);
    }
    if let Some(token) = &server.admin_token {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token);
        if !presented.is_some_and(|presented| same_token(presented.as_bytes(), token.expose())) {
            return Err(Refusal::Token);
        }
    }
    let changes_state = path == "/reload" || path.starts_with("/events");
    if method == http::Method::POST && changes_state && !reload_marked(headers) {
        return Err(Refusal::NotJson);
    }
    Ok(())
}

/// `host[:port]` or `[v6]:port` → whether the host part is an IP literal,
/// `localhost` or one of `allowed` (lower case, no port).
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) if port.is_empty() || port.strip_prefix(':').is_some_and(is_port) => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok() || name == "localhost" || allowed.contains(&name)
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 6750 section 2.1).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Constant-time comparison of digests, so neither the content nor the length
/// of the token leaks through timing.
fn same_token(presented: &[u8], expected: &[u8]) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let (a, b) = (
        sha2::Sha256::digest(presented),
        sha2::Sha256::digest(expected),
    );
    a.ct_eq(&b).into()
}

/// `Content-Type: application/json` (any parameters) or an `X-Hookgate-Reload` header.
fn reload_marked(headers: &HeaderMap) -> bool {
    let json = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    json || headers.contains_key("x-hookgate-reload")
}

fn not_allowed(allow: &'static str) -> Response<Vec<u8>> {
    let mut answer = json(
        StatusCode::METHOD_NOT_ALLOWED,
        serde_json::json!({"error": "method_not_allowed"}),
    );
    answer
        .headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    answer
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .expect("static response parts are valid")
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    respond(status, "application/json", body.to_string().into_bytes())
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let head = session.req_header();
        let path = head.uri.path();
        let guarded = guard(
            &self.state.load().config.server,
            &head.method,
            path,
            &head.headers,
        );
        if let Err(refusal) = guarded {
            return refusal.answer();
        }
        if let Some((status, body, allow)) = crate::delivery::events_api::handle(
            self.queue.as_deref(),
            &head.method,
            path,
            head.uri.query(),
        )
        .await
        {
            let mut answer = json(status, body);
            if let Some(allow) = allow {
                answer
                    .headers_mut()
                    .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
            }
            return answer;
        }
        let head = session.req_header();
        match (&head.method, path) {
            (&http::Method::POST, "/reload") => return self.reload().await,
            (_, "/reload") => return not_allowed("POST"),
            (&http::Method::GET, _) => {}
            // A path no endpoint has is a 404 whatever the method (RFC 9110
            // §15.5.6: a 405 says the target exists).
            (_, "/config" | "/metrics" | "/healthz" | "/readyz") => return not_allowed("GET"),
            _ => return not_found(),
        }
        match session.req_header().uri.path() {
            "/config" => json(StatusCode::OK, self.active_config()),
            "/metrics" => respond(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            ),
            "/healthz" => json(StatusCode::OK, serde_json::json!({"status": "ok"})),
            "/readyz" => match self.not_ready_reason().await {
                None => json(StatusCode::OK, serde_json::json!({"status": "ready"})),
                Some(reason) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"status": "not_ready", "reason": reason}),
                ),
            },
            _ => not_found(),
        }
    }
}

/// 404 with the list of endpoints.
fn not_found() -> Response<Vec<u8>> {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({"error": "not_found", "endpoints": ["GET /metrics", "GET /healthz", "GET /readyz", "GET /config", "POST /reload", "GET /events", "GET /events/ID", "POST /events/ID/replay", "POST /events/replay"]}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_ip_literals_localhost_and_listed_names() {
        let listed = vec!["hookgate".to_string()];
        for host in [
            "127.0.0.1:9090",
            "10.1.2.3",
            "[::1]:9090",
            "[::1]",
            "localhost:9999",
            "LOCALHOST",
            "hookgate:9090",
            "Hookgate",
        ] {
            assert!(host_allowed(host, &listed), "{host}");
        }
        for host in [
            "evil.example:9090",
            "127.0.0.1.nip.io:9090",
            "hookgate.evil.example",
            "[::1",
            "[not-v6]:1",
            "127.0.0.1:port",
            "",
            "localhost:99999999",
        ] {
            assert!(!host_allowed(host, &listed), "{host}");
        }
    }

    #[test]
    fn bearer_tokens_and_reload_marks() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert!(same_token(b"abc", b"abc") && !same_token(b"abc", b"abd"));
        let mut headers = HeaderMap::new();
        assert!(!reload_marked(&headers));
        headers.insert("content-type", "text/plain".parse().unwrap());
        assert!(!reload_marked(&headers));
        headers.insert(
            "content-type",
            "Application/JSON; charset=utf-8".parse().unwrap(),
        );
        assert!(reload_marked(&headers));
        let mut headers = HeaderMap::new();
        headers.insert("x-hookgate-reload", "1".parse().unwrap());
        assert!(reload_marked(&headers));
    }
}
