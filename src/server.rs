//! Assembling and running the Pingora server from a [`Config`]: the proxy
//! service on every listener (plain and TLS), the admin service, the health
//! checker, and optionally the demo's echo upstream.
//!
//! Owns start-up checks (every port is bindable, so a taken port is a clear
//! error and a non-zero exit instead of a panicking service in a live process)
//! and shutdown: SIGTERM/SIGQUIT stop accepting and exit as soon as in-flight
//! requests finish, at the latest after `shutdown_grace`; SIGINT exits at once.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::Admin;
use crate::config::Config;
use crate::delivery::redb_store::RedbStore;
use crate::delivery::Queue;
use crate::echo::Echo;
use crate::fanout::Fanout;
use crate::health::HealthChecker;
use crate::housekeeping::Housekeeping;
use crate::metrics::Metrics;
use crate::proxy::{ConnectionLimit, CopyMetrics, CopySender, Gateway, UpstreamConnections};
use crate::ratelimit::InflightLimit;
use crate::reload::{ReloadTriggers, Reloader};
use crate::state::{self, Snapshot};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({role}): {source}")]
    Bind {
        addr: SocketAddr,
        role: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
}

/// Extras for a run beyond the config.
#[derive(Default)]
pub struct RunOptions {
    /// The file the config came from, for reloads; `None` for an embedded config.
    pub config_path: Option<PathBuf>,
    /// Serve the built-in echo upstream on this address (for `hookgate demo`).
    pub echo: Option<SocketAddr>,
}

/// Builds every service and blocks until shutdown.
pub fn run(config: Config, options: RunOptions) -> Result<(), StartError> {
    check_ports(&config, &options)?;
    let grace = config.server.shutdown_grace;
    let threads = config.server.threads;
    let tls = config.server.tls.clone();
    let listen = config.server.listen.clone();
    let admin_addr = config.server.admin;
    let watch = config.server.watch;
    let fanout_config = config.server.fanout;
    let storage = config.storage.clone();
    let inflight = InflightLimit::new(config.server.max_inflight);
    let max_connections = config.server.limits.max_connections;

    // Idle upstream connections: one set for the proxy's workers, one for the
    // fan-out runtime (a connection stays with the runtime that opened it).
    let keepalive = config.server.upstream_keepalive_pool;
    let connections = Arc::new(UpstreamConnections::new(keepalive));
    let copy_connections = Arc::new(UpstreamConnections::new(keepalive));
    let metrics = Arc::new(Metrics::new());
    let snapshot = Snapshot::build(config, &metrics).map_err(StartError::Setup)?;
    let state = state::shared(snapshot);
    // Fan-out copies run on their own small runtime, so a slow secondary upstream
    // never competes with the proxy's workers for scheduling.
    let copies_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("hookgate-copies")
        .enable_all()
        .build()
        .map_err(|e| StartError::Setup(format!("the fan-out runtime: {e}")))?;
    let fanout = Arc::new(Fanout::start(
        fanout_config,
        Arc::new(CopySender::new(state.clone(), copy_connections.clone())),
        Arc::new(CopyMetrics::new(metrics.clone())),
        copies_runtime.handle().clone(),
    ));
    // Queued delivery: the store is opened (and its pending deliveries resumed)
    // before any listener accepts, on a runtime of its own like fan-out copies.
    let queue_connections = Arc::new(UpstreamConnections::new(keepalive));
    let (queue, queue_runtime) = match storage {
        None => (None, None),
        Some(storage) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("hookgate-queue")
                .enable_all()
                .build()
                .map_err(|e| StartError::Setup(format!("the delivery runtime: {e}")))?;
            let path = storage.path.clone();
            let opened = RedbStore::open(&path, storage.max_bytes);
            let queue = opened
                .and_then(|store| {
                    Queue::start(
                        Arc::new(store),
                        storage,
                        fanout_config.attempt_timeout,
                        Arc::new(CopySender::new(state.clone(), queue_connections.clone())),
                        state.clone(),
                        metrics.clone(),
                        runtime.handle().clone(),
                    )
                })
                .map_err(|e| StartError::Setup(format!("the store in {}: {e}", path.display())))?;
            (Some(Arc::new(queue)), Some(runtime))
        }
    };
    let reloader = Arc::new(Reloader::new(
        options.config_path.clone(),
        state.clone(),
        metrics.clone(),
        inflight.clone(),
    ));

    let server_conf = ServerConf {
        threads,
        // The drain watcher below ends the process as soon as requests finish;
        // Pingora's grace period is only the upper bound.
        grace_period_seconds: Some(grace.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        // One current-thread runtime per worker thread, connections spread at
        // random: a webhook exchange is short, so stealing buys little, and the
        // current-thread scheduler is cheaper (-4% CPU per request at 50
        // connections, -11% at 500; docs/performance.md).
        work_stealing: false,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, server_conf);
    server.bootstrap();

    let mut proxy = Service::new(
        "hookgate proxy".to_string(),
        ConnectionLimit::new(
            Gateway::new(
                state.clone(),
                metrics.clone(),
                inflight,
                fanout.clone(),
                connections.clone(),
            )
            .with_queue(queue.clone()),
            max_connections,
            metrics.clone(),
        ),
    );
    for addr in &listen {
        proxy.add_tcp(&addr.to_string());
    }
    if let Some(tls) = &tls {
        let mut settings =
            TlsSettings::intermediate(&tls.cert.to_string_lossy(), &tls.key.to_string_lossy())
                .map_err(|e| StartError::Setup(format!("TLS listener {}: {e}", tls.listen)))?;
        settings.enable_h2();
        proxy.add_tls_with_settings(&tls.listen.to_string(), None, settings);
    }
    server.add_service(proxy);

    let health_known = Arc::new(AtomicBool::new(false));
    let mut admin = Service::new(
        "hookgate admin".to_string(),
        HttpServer::new_app(
            Admin::new(
                state.clone(),
                metrics.clone(),
                health_known.clone(),
                reloader.clone(),
                listen
                    .iter()
                    .copied()
                    .chain(tls.as_ref().map(|tls| tls.listen))
                    .collect(),
            )
            .with_queue(queue.clone()),
        ),
    );
    admin.add_tcp(&admin_addr.to_string());
    admin.threads = Some(1);
    server.add_service(admin);

    server.add_service(background_service(
        "health checks",
        HealthChecker::new(state.clone(), metrics.clone(), health_known),
    ));

    server.add_service(background_service(
        "config reload",
        ReloadTriggers::new(reloader, watch),
    ));

    server.add_service(background_service(
        "housekeeping",
        Housekeeping::new(
            state.clone(),
            metrics.clone(),
            fanout.clone(),
            vec![connections, copy_connections, queue_connections],
        ),
    ));

    if let Some(echo_addr) = options.echo {
        let mut echo = Service::new("demo echo upstream".to_string(), HttpServer::new_app(Echo));
        echo.add_tcp(&echo_addr.to_string());
        echo.threads = Some(1);
        server.add_service(echo);
    }

    let draining = Arc::new(AtomicBool::new(false));
    spawn_drain_watcher(draining.clone(), metrics, fanout, queue, grace);
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals { draining }),
    });
    drop(copies_runtime);
    drop(queue_runtime);
    Ok(())
}

/// Binds and releases every address, so a taken port fails the start with a clear error.
fn check_ports(config: &Config, options: &RunOptions) -> Result<(), StartError> {
    let server = &config.server;
    let mut wanted: Vec<(SocketAddr, &'static str)> = server
        .listen
        .iter()
        .map(|addr| (*addr, "proxy listener"))
        .collect();
    if let Some(tls) = &server.tls {
        wanted.push((tls.listen, "TLS listener"));
    }
    wanted.push((server.admin, "admin listener"));
    if let Some(echo) = options.echo {
        wanted.push((echo, "demo echo upstream"));
    }
    for (addr, role) in wanted {
        TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, role, source })?;
    }
    Ok(())
}

/// SIGTERM and SIGQUIT: graceful; SIGINT: immediate.
struct Signals {
    draining: Arc<AtomicBool>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut quit), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::quit()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; shutting down");
            return ShutdownSignal::FastShutdown;
        };
        let graceful = tokio::select! {
            _ = term.recv() => true,
            _ = quit.recv() => true,
            _ = int.recv() => false,
        };
        if graceful {
            tracing::info!("shutdown requested: no new connections, finishing in-flight requests");
            self.draining.store(true, Ordering::SeqCst);
            ShutdownSignal::GracefulTerminate
        } else {
            tracing::info!("interrupted: shutting down now");
            ShutdownSignal::FastShutdown
        }
    }
}

/// Once draining, exits the process as soon as no request is in flight, no
/// fan-out copy is held and no queued delivery attempt is in progress, or when
/// the grace period is over, whichever comes first. Queued deliveries not being
/// attempted stay in the store for the next start.
fn spawn_drain_watcher(
    draining: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    fanout: Arc<Fanout>,
    queue: Option<Arc<Queue>>,
    grace: Duration,
) {
    std::thread::spawn(move || {
        while !draining.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(queue) = &queue {
            queue.stop();
        }
        let started = Instant::now();
        // Let the listeners close before sampling the in-flight gauge.
        std::thread::sleep(Duration::from_millis(100));
        let attempts = || queue.as_ref().map_or(0, |q| q.in_progress());
        let busy = || metrics.inflight.get() > 0 || fanout.held() > 0 || attempts() > 0;
        while busy() && started.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(20));
        }
        let (left, copies) = (metrics.inflight.get(), fanout.held());
        if left > 0 || copies > 0 || attempts() > 0 {
            tracing::warn!(
                requests = left,
                copies,
                queued_attempts = attempts(),
                "grace period over; dropping in-flight requests and fan-out copies"
            );
        } else {
            tracing::info!(
                after_ms = started.elapsed().as_millis() as u64,
                "drained; exiting"
            );
        }
        std::process::exit(0);
    });
}
