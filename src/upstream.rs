//! Upstream pools: the targets of one `[upstreams.NAME]`, round-robin selection
//! over the healthy ones, their health checks, and the peer settings (timeouts,
//! TLS) used to connect.
//!
//! Owns target choice and health; the request exchange itself lives in
//! `proxy::forward`.

use std::net::SocketAddr;
use std::time::Duration;

use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use pingora::upstreams::peer::HttpPeer;

use crate::config::UpstreamSettings;

/// One upstream pool, built from its settings.
pub struct UpstreamPool {
    settings: UpstreamSettings,
    balancer: LoadBalancer<RoundRobin>,
}

impl UpstreamPool {
    pub fn new(settings: &UpstreamSettings) -> Result<Self, String> {
        let mut balancer =
            LoadBalancer::<RoundRobin>::try_from_iter(settings.targets.iter().copied())
                .map_err(|e| format!("upstream {}: {e}", settings.name))?;
        balancer.set_health_check(health_check(settings)?);
        Ok(UpstreamPool {
            settings: settings.clone(),
            balancer,
        })
    }

    pub fn name(&self) -> &str {
        &self.settings.name
    }

    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// The next healthy target in round-robin order that is not in `tried`.
    pub fn select(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let limit = self.settings.targets.len() * 2 + 1;
        self.balancer
            .select_with(b"", limit, |backend, healthy| {
                healthy && backend_addr(backend).is_some_and(|addr| !tried.contains(&addr))
            })
            .as_ref()
            .and_then(backend_addr)
    }

    /// The connection settings for `target`: timeouts, keepalive and TLS.
    pub fn peer(&self, target: SocketAddr) -> HttpPeer {
        let settings = &self.settings;
        let tls = settings.tls_sni.is_some();
        let sni = settings.tls_sni.clone().unwrap_or_default();
        let mut peer = HttpPeer::new(target, tls, sni);
        let options = &mut peer.options;
        options.connection_timeout = Some(settings.connect_timeout);
        options.total_connection_timeout = Some(settings.connect_timeout * 2);
        options.read_timeout = Some(settings.timeout);
        options.write_timeout = Some(settings.timeout);
        options.idle_timeout = Some(settings.idle_timeout);
        peer
    }

    /// Runs one round of health checks over every target.
    pub async fn check_health(&self) {
        self.balancer.backends().run_health_check(true).await;
    }

    /// Targets currently passing their health check.
    pub fn healthy_targets(&self) -> usize {
        let backends = self.balancer.backends();
        backends
            .get_backend()
            .iter()
            .filter(|backend| backends.ready(backend))
            .count()
    }

    pub fn health_interval(&self) -> Duration {
        self.settings.health.interval
    }
}

fn backend_addr(backend: &Backend) -> Option<SocketAddr> {
    backend.addr.as_inet().copied()
}

fn health_check(settings: &UpstreamSettings) -> Result<Box<dyn HealthCheck + Send + Sync>, String> {
    let tls = settings.tls_sni.is_some();
    let sni = settings.tls_sni.clone().unwrap_or_default();
    match &settings.health.http_path {
        None => {
            let mut check = if tls {
                TcpHealthCheck::new_tls(&sni)
            } else {
                TcpHealthCheck::new()
            };
            check.peer_template.options.connection_timeout = Some(settings.connect_timeout);
            Ok(check)
        }
        Some(path) => {
            let host = if tls { sni.as_str() } else { "localhost" };
            let mut check = HttpHealthCheck::new(host, tls);
            let mut request = RequestHeader::build("GET", path.as_bytes(), None)
                .map_err(|e| format!("health check path {path:?}: {e}"))?;
            request
                .insert_header("Host", host)
                .and_then(|_| request.insert_header("User-Agent", "hookgate-health-check"))
                .map_err(|e| format!("health check request: {e}"))?;
            check.req = request;
            check.peer_template.options.connection_timeout = Some(settings.connect_timeout);
            check.peer_template.options.read_timeout = Some(settings.timeout);
            Ok(Box::new(check))
        }
    }
}
