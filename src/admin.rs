//! The admin listener: `GET /metrics` (Prometheus text), `GET /healthz` (the
//! process answers), `GET /readyz` (config loaded, first health checks done,
//! every proxy listener accepting), `GET /config` (the active config, secrets
//! redacted, with its load time and hash) and `POST /reload`.
//!
//! Owns only these answers; what the metrics are is `metrics`' business and
//! how a reload works is `reload`'s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

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
}

impl Admin {
    /// `health_known`: the first round of upstream health checks has completed.
    pub fn new(
        state: SharedState,
        metrics: Arc<Metrics>,
        health_known: Arc<AtomicBool>,
        reloader: Arc<Reloader>,
    ) -> Self {
        Admin {
            state,
            metrics,
            health_known,
            reloader,
        }
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
        self.unbound_listener()
            .await
            .map(|listener| format!("listener {listener} is not accepting connections"))
    }

    /// The first proxy listener that does not accept a connection, if any.
    async fn unbound_listener(&self) -> Option<SocketAddr> {
        let snapshot = self.state.load_full();
        let server = &snapshot.config.server;
        let listeners = server
            .listen
            .iter()
            .chain(server.tls.iter().map(|tls| &tls.listen));
        for listener in listeners {
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
        match (&head.method, head.uri.path()) {
            (&http::Method::POST, "/reload") => return self.reload().await,
            (&http::Method::GET, _) => {}
            _ => {
                return json(
                    StatusCode::METHOD_NOT_ALLOWED,
                    serde_json::json!({"error": "method_not_allowed"}),
                )
            }
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
            _ => json(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "not_found", "endpoints": ["GET /metrics", "GET /healthz", "GET /readyz", "GET /config", "POST /reload"]}),
            ),
        }
    }
}
