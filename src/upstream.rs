//! Upstream pools: the targets of one `[upstreams.NAME]`, round-robin selection
//! over the healthy ones, their health checks, and the peer settings (timeouts,
//! TLS) used to connect.
//!
//! Pingora's load-balancing crate runs the health checks and keeps their
//! results; each check round copies them into one flag per target, so picking a
//! target per request is an atomic counter and a few flag reads.
//!
//! Owns target choice and health; the request exchange itself lives in
//! `proxy::forward`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};
use pingora::upstreams::peer::{HttpPeer, Peer};

use crate::config::UpstreamSettings;

/// One upstream pool, built from its settings.
pub struct UpstreamPool {
    settings: UpstreamSettings,
    balancer: LoadBalancer<RoundRobin>,
    /// Every target, with its health as of the last check round.
    targets: Vec<Target>,
    /// Where the next round-robin pick starts.
    next: AtomicUsize,
}

struct Target {
    addr: SocketAddr,
    /// The balancer's own entry, whose health the checks record.
    backend: Backend,
    healthy: AtomicBool,
    /// Its connection settings, built once ([`UpstreamPool::peer`]).
    peer: HttpPeer,
    /// `peer.reuse_hash()`: its key among idle upstream connections.
    reuse_key: u64,
}

impl UpstreamPool {
    pub fn new(settings: &UpstreamSettings) -> Result<Self, String> {
        let mut balancer =
            LoadBalancer::<RoundRobin>::try_from_iter(settings.targets.iter().copied())
                .map_err(|e| format!("upstream {}: {e}", settings.name))?;
        balancer.set_health_check(health_check(settings)?);
        let backends = balancer.backends();
        let targets = backends
            .get_backend()
            .iter()
            .filter_map(|backend| {
                let addr = backend_addr(backend)?;
                let peer = build_peer(settings, addr);
                Some(Target {
                    addr,
                    backend: backend.clone(),
                    healthy: AtomicBool::new(backends.ready(backend)),
                    reuse_key: peer.reuse_hash(),
                    peer,
                })
            })
            .collect();
        Ok(UpstreamPool {
            settings: settings.clone(),
            balancer,
            targets,
            next: AtomicUsize::new(0),
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
        // Each look takes the next turn, so a skipped target's turns spread over the
        // others evenly rather than all going to its neighbour.
        let count = self.targets.len();
        (0..count)
            .map(|_| &self.targets[self.next.fetch_add(1, Ordering::Relaxed) % count])
            .find(|target| target.healthy.load(Ordering::Relaxed) && !tried.contains(&target.addr))
            .map(|target| target.addr)
    }

    /// The connection settings for `target` (timeouts, keepalive and TLS) and
    /// its key among idle connections (`Peer::reuse_hash`), both built once
    /// with the pool. `None` for an address that is not one of its targets.
    pub fn peer(&self, target: SocketAddr) -> Option<(&HttpPeer, u64)> {
        self.targets
            .iter()
            .find(|t| t.addr == target)
            .map(|t| (&t.peer, t.reuse_key))
    }

    /// Runs one round of health checks over every target.
    pub async fn check_health(&self) {
        let backends = self.balancer.backends();
        backends.run_health_check(true).await;
        for target in &self.targets {
            let healthy = backends.ready(&target.backend);
            target.healthy.store(healthy, Ordering::Relaxed);
        }
    }

    /// Targets currently passing their health check.
    pub fn healthy_targets(&self) -> usize {
        self.targets
            .iter()
            .filter(|target| target.healthy.load(Ordering::Relaxed))
            .count()
    }

    pub fn health_interval(&self) -> Duration {
        self.settings.health.interval
    }
}

/// The connection settings for `target`: timeouts, keepalive and TLS.
fn build_peer(settings: &UpstreamSettings, target: SocketAddr) -> HttpPeer {
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
