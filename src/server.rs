//! Assembling and running the Pingora server from a [`Config`]: the proxy
//! service on every listener (plain and TLS), the admin service, the health
//! checker, and optionally the demo's echo upstream.
//!
//! Owns start-up checks (every port is bindable, so a taken port is a clear
//! error and a non-zero exit instead of a panicking service in a live process),
//! port 0 (see `Listener`), the `listening` log line for each listener,
//! and shutdown: SIGTERM/SIGQUIT stop accepting and exit as soon as in-flight
//! requests finish, at the latest after `shutdown_grace`; SIGINT exits at once.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{ListenerConfig, TcpSocketOptions};
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::admin::Admin;
use crate::admission::InflightLimit;
use crate::cluster::ClusterClient;
use crate::config::storage::Backend;
use crate::config::Config;
use crate::config::StorageSettings;
use crate::delivery::redb_store::RedbStore;
use crate::delivery::redis_store::{RedisOptions, RedisStore};
use crate::delivery::store::{EventStore, StoreError};
use crate::delivery::Queue;
use crate::echo::Echo;
use crate::fanout::Fanout;
use crate::health::HealthChecker;
use crate::housekeeping::Housekeeping;
use crate::metrics::Metrics;
use crate::proxy::{ConnectionLimit, CopyMetrics, CopySender, Gateway, UpstreamConnections};
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
    /// SIGHUP, taken over before the config was loaded ([`take_over_sighup`]);
    /// `None`: [`run`] takes it over itself.
    pub hangup: Option<Hangup>,
}

/// SIGHUP taken over from its default action (ending the process), kept for
/// the reload service: a SIGHUP from here on reloads once the gateway serves.
pub struct Hangup(Signal);

/// Builds every service and blocks until shutdown.
pub fn run(config: Config, mut options: RunOptions) -> Result<(), StartError> {
    let hangup = match options.hangup.take() {
        Some(Hangup(hangup)) => hangup,
        None => take_over_sighup()?.0,
    };
    check_ports(&config, &options)?;
    let grace = config.server.shutdown_grace;
    let threads = config.server.threads;
    let tls = config.server.tls.clone();
    // Resolved before anything is built: port 0 becomes the kernel's choice,
    // held until the process exits (dropped at the end of this function).
    let listen = config
        .server
        .listen
        .iter()
        .map(|addr| Listener::resolve(*addr, "proxy"))
        .collect::<Result<Vec<_>, _>>()?;
    let tls_listener = tls
        .as_ref()
        .map(|tls| Listener::resolve(tls.listen, "tls"))
        .transpose()?;
    let admin_listener = Listener::resolve(config.server.admin, "admin")?;
    let echo_listener = options
        .echo
        .map(|addr| Listener::resolve(addr, "echo"))
        .transpose()?;
    let watch = config.server.watch;
    let fanout_config = config.server.fanout;
    let storage = config.storage.clone();
    let cluster_settings = config.cluster.clone();
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
    let mut handshake_secrets = None;
    let (queue, queue_runtime) = match storage {
        None => (None, None),
        Some(storage) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("hookgate-queue")
                .enable_all()
                .build()
                .map_err(|e| StartError::Setup(format!("the delivery runtime: {e}")))?;
            let where_ = storage.backend.to_string();
            let opened = open_store(
                &storage,
                cluster_settings.as_ref(),
                &metrics,
                runtime.handle(),
            )
            .map(|(store, secrets)| {
                // Asana handshake secrets are kept in the same store (redb only).
                handshake_secrets = secrets;
                store
            });
            let queue = opened
                .and_then(|store| {
                    Queue::start(
                        store,
                        storage,
                        fanout_config.attempt_timeout,
                        Arc::new(CopySender::new(state.clone(), queue_connections.clone())),
                        state.clone(),
                        metrics.clone(),
                        runtime.handle().clone(),
                    )
                })
                .map_err(|e| StartError::Setup(format!("the store ({where_}): {e}")))?;
            (Some(Arc::new(queue)), Some(runtime))
        }
    };
    // [cluster]: one connection to the shared Redis, on a runtime of its own
    // (its connection task and ping), made before any listener accepts.
    let (cluster, cluster_runtime) = match &cluster_settings {
        None => (None, None),
        Some(settings) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("hookgate-cluster")
                .enable_all()
                .build()
                .map_err(|e| StartError::Setup(format!("the cluster runtime: {e}")))?;
            let client = ClusterClient::start(settings, metrics.clone(), runtime.handle())
                .map_err(|e| StartError::Setup(format!("[cluster] {}: {e}", settings.redis)))?;
            tracing::info!(cluster = %settings.describe(), "cluster: rate limits and dedupe are shared in Redis");
            (Some(client), Some(runtime))
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
            .with_queue(queue.clone())
            .with_handshake_secrets(handshake_secrets)
            .with_cluster(cluster.clone()),
            max_connections,
            metrics.clone(),
        ),
    );
    for listener in &listen {
        proxy.add_listener(
            listener
                .endpoint()
                .l4_buffer(L4BufferSettings::unbuffered()),
        );
    }
    if let (Some(tls), Some(listener)) = (&tls, &tls_listener) {
        let mut settings =
            TlsSettings::intermediate(&tls.cert.to_string_lossy(), &tls.key.to_string_lossy())
                .map_err(|e| StartError::Setup(format!("TLS listener {}: {e}", listener.addr)))?;
        settings.enable_h2();
        proxy.add_listener(
            listener
                .endpoint()
                .tls(settings)
                .l4_buffer(tls_client_buffers()),
        );
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
                    .chain(&tls_listener)
                    .map(|listener| listener.addr)
                    .collect(),
            )
            .with_queue(queue.clone())
            .with_cluster(cluster.clone()),
        ),
    );
    admin_listener.add_to(&mut admin);
    admin.threads = Some(1);
    server.add_service(admin);

    server.add_service(background_service(
        "health checks",
        HealthChecker::new(state.clone(), metrics.clone(), health_known),
    ));

    server.add_service(background_service(
        "config reload",
        ReloadTriggers::new(reloader, watch, Some(hangup)),
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

    if let Some(echo_listener) = &echo_listener {
        let mut echo = Service::new("demo echo upstream".to_string(), HttpServer::new_app(Echo));
        echo_listener.add_to(&mut echo);
        echo.threads = Some(1);
        server.add_service(echo);
    }

    // Before the first `listening` line and before any service starts: from
    // here on a shutdown signal is kept until Pingora's main loop asks for it.
    let draining = Arc::new(AtomicBool::new(false));
    let signals = Signals::install(draining.clone())?;
    for listener in listen
        .iter()
        .chain(&tls_listener)
        .chain([&admin_listener])
        .chain(&echo_listener)
    {
        tracing::info!(role = listener.role, addr = %listener.addr, "listening");
    }

    spawn_drain_watcher(draining, metrics, fanout, queue, grace);
    server.run(RunArgs {
        shutdown_signal: Box::new(signals),
    });
    drop(copies_runtime);
    drop((listen, tls_listener, admin_listener, echo_listener));
    drop(queue_runtime);
    drop(cluster);
    drop(cluster_runtime);
    Ok(())
}

/// One listen address as served. A configured port 0 (`"127.0.0.1:0"`) is
/// resolved here to a port the kernel picks, so tests and side-by-side runs
/// never guess a free port: a socket bound to it with `SO_REUSEPORT` (not
/// listening, so it never receives a connection) holds the port for the whole
/// process, and Pingora's listener joins it with `SO_REUSEPORT` as well. No
/// other socket can take the port in between, short of one of the same user
/// that also sets `SO_REUSEPORT` and names this port. The chosen address is logged
/// (`listening role=... addr=...`) and probed by `/readyz`; `/config` keeps
/// showing port 0. A configured non-zero port is passed to Pingora as it is.
struct Listener {
    addr: SocketAddr,
    /// `proxy`, `tls`, `admin` or `echo`, as logged.
    role: &'static str,
    /// The socket that holds a port chosen for port 0.
    held: Option<tokio::net::TcpSocket>,
}

impl Listener {
    fn resolve(addr: SocketAddr, role: &'static str) -> Result<Listener, StartError> {
        if addr.port() != 0 {
            return Ok(Listener {
                addr,
                role,
                held: None,
            });
        }
        let bind_error = |source| StartError::Bind {
            addr,
            role: match role {
                "proxy" => "proxy listener",
                "tls" => "TLS listener",
                "admin" => "admin listener",
                _ => "demo echo upstream",
            },
            source,
        };
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }
        .map_err(bind_error)?;
        socket.set_reuseport(true).map_err(bind_error)?;
        socket.bind(addr).map_err(bind_error)?;
        let chosen = socket.local_addr().map_err(bind_error)?;
        Ok(Listener {
            addr: chosen,
            role,
            held: Some(socket),
        })
    }

    /// `SO_REUSEPORT` for a port held by [`Listener::resolve`]; none otherwise.
    fn socket_options(&self) -> Option<TcpSocketOptions> {
        self.held.as_ref()?;
        let mut options = TcpSocketOptions::default();
        options.so_reuseport = Some(true);
        Some(options)
    }

    /// The listening endpoint: this address, joined with `SO_REUSEPORT` when its
    /// port was resolved here.
    fn endpoint(&self) -> ListenerConfig {
        let endpoint = ListenerConfig::tcp(self.addr.to_string());
        match self.socket_options() {
            None => endpoint,
            Some(options) => endpoint.tcp_socket_options(options),
        }
    }

    fn add_to<A>(&self, service: &mut Service<A>) {
        match self.socket_options() {
            None => service.add_tcp(&self.addr.to_string()),
            Some(options) => service.add_tcp_with_settings(&self.addr.to_string(), options),
        }
    }
}

/// Binds and releases every address, so a taken port fails the start with a clear error.
/// Port 0 is checked by [`Listener::resolve`] instead.
/// The queued-delivery store `[storage] backend` names: redb in its directory,
/// or Redis through `[cluster]` (the config refuses `redis` without it).
fn open_store(
    storage: &StorageSettings,
    cluster: Option<&crate::config::cluster::Cluster>,
    metrics: &Metrics,
    runtime: &tokio::runtime::Handle,
) -> Result<OpenedStore, StoreError> {
    match &storage.backend {
        Backend::Redb { path } => {
            let store = Arc::new(RedbStore::open(path, storage.max_bytes)?);
            let secrets = store.clone() as Arc<dyn crate::handshake::SecretStore>;
            Ok((store, Some(secrets)))
        }
        Backend::Redis { lease } => {
            let cluster = cluster.ok_or_else(|| {
                StoreError::Io("backend = \"redis\" needs a [cluster] table".to_string())
            })?;
            let client = crate::cluster::redis_client(cluster)
                .map_err(|e| StoreError::Io(format!("the [cluster] Redis: {e}")))?;
            let options = RedisOptions {
                key_prefix: cluster.key_prefix.clone(),
                command_timeout: cluster.command_timeout,
                lease: *lease,
                max_bytes: storage.max_bytes,
                // Made here, not for every store: the series is [cluster]'s,
                // and a redb store never counts there.
                errors: Some(metrics.cluster_errors.with_label_values(&["store"])),
            };
            let store = RedisStore::open(
                client,
                crate::cluster::manager_config(cluster),
                options,
                runtime,
            )?;
            // Asana handshake secrets then stay in files, per instance.
            Ok((Arc::new(store), None))
        }
    }
}

/// The queued-delivery store, and where Asana handshake secrets are kept when
/// it can hold them (redb; `None`: in files beside the config).
type OpenedStore = (
    Arc<dyn EventStore>,
    Option<Arc<dyn crate::handshake::SecretStore>>,
);

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
    for (addr, role) in wanted.into_iter().filter(|(addr, _)| addr.port() != 0) {
        TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, role, source })?;
    }
    Ok(())
}

/// Replaces SIGHUP's default action (ending the process). `hookgate serve`
/// calls it first, before the config is loaded (reading secret files and IP
/// sets, opening the store can take a while), and [`run`] otherwise, before
/// any listener is opened: the reload service installs its own listener only
/// when it starts, after the listeners are logged, and a SIGHUP in between (an
/// operator or a config-map watcher reloading right after a start) used to
/// kill the process. The stream is kept for the reload service
/// ([`ReloadTriggers`]): a tokio signal stream keeps a signal that arrives
/// after it is made, so a SIGHUP between here and the service's start (after
/// the `listening` lines) still reloads. A stream made only when the service
/// started missed it, and tokio's handler, installed for the life of the
/// process, swallowed it.
///
/// Errors: [`StartError::Setup`] when the handler cannot be installed.
pub fn take_over_sighup() -> Result<Hangup, StartError> {
    on_a_signal_runtime("SIGHUP", async { signal(SignalKind::hangup()) }).map(Hangup)
}

/// Runs `install` (which makes tokio signal streams) on a short-lived runtime:
/// making a stream needs a runtime's signal driver, but the handler it installs
/// stays for the life of the process, and the stream is woken by the driver of
/// whichever runtime polls it later.
fn on_a_signal_runtime<T>(
    what: &str,
    install: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, StartError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| StartError::Setup(format!("a runtime for the signal handlers: {e}")))?;
    runtime
        .block_on(install)
        .map_err(|e| StartError::Setup(format!("cannot handle {what}: {e}")))
}

/// SIGTERM and SIGQUIT: graceful; SIGINT: immediate, also during that drain
/// ([`exit_on_interrupt`]).
///
/// SIGINT ends the process here, with exit code 0, rather than through
/// Pingora's fast shutdown (`ShutdownSignal::FastShutdown`): that shuts the
/// service runtimes down without first stopping their accept loops, and an
/// accept loop running on another thread of a runtime than the one its
/// listener is registered with then gets "the runtime is being shut down"
/// from every `accept()` and spins without yielding, so its thread never
/// shuts down and the process waited forever (about one SIGINT in ten with
/// four proxy threads). Exiting at once loses nothing a crash would not:
/// a queued delivery is in the store before it is acknowledged.
///
/// The three handlers are installed by [`Signals::install`], before the
/// listeners are logged and before any service starts, not when Pingora's main
/// loop first polls [`Signals::recv`]: that happens only after every service,
/// the proxy's listeners included, has started, and a signal in between was
/// lost when the process had inherited it as ignored (SIGINT and SIGQUIT in a
/// background job of a non-interactive shell, as CI runs tests), or ended the
/// process without the drain (their default action). A tokio signal stream
/// keeps a signal that arrives after it is made until it is polled.
struct Signals {
    draining: Arc<AtomicBool>,
    /// SIGTERM, SIGQUIT, SIGINT; taken by the first `recv` (Pingora calls it once).
    streams: Mutex<Option<[Signal; 3]>>,
}

impl Signals {
    fn install(draining: Arc<AtomicBool>) -> Result<Signals, StartError> {
        let streams = on_a_signal_runtime("SIGTERM, SIGQUIT and SIGINT", async {
            Ok([
                signal(SignalKind::terminate())?,
                signal(SignalKind::quit())?,
                signal(SignalKind::interrupt())?,
            ])
        })?;
        Ok(Signals {
            draining,
            streams: Mutex::new(Some(streams)),
        })
    }
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let streams = self.streams.lock().ok().and_then(|mut s| s.take());
        let Some([mut term, mut quit, mut int]) = streams else {
            tracing::error!("shutdown signals asked for twice; stopping");
            self.draining.store(true, Ordering::SeqCst);
            return ShutdownSignal::GracefulTerminate;
        };
        let graceful = tokio::select! {
            _ = term.recv() => true,
            _ = quit.recv() => true,
            _ = int.recv() => false,
        };
        if graceful {
            tracing::info!("shutdown requested: no new connections, finishing in-flight requests");
            self.draining.store(true, Ordering::SeqCst);
            exit_on_interrupt(int);
            ShutdownSignal::GracefulTerminate
        } else {
            tracing::info!("interrupted: exiting now");
            std::process::exit(0)
        }
    }
}

/// SIGINT during the drain still means "exit now". Pingora asks for a
/// shutdown signal once, so after SIGTERM or SIGQUIT nothing would poll the
/// SIGINT stream again, while tokio's handler stays installed and swallows
/// every later SIGINT: Ctrl-C then waited for the drain, up to
/// `shutdown_grace`. A thread of its own keeps waiting on the stream (a tokio
/// signal stream is woken by whichever runtime polls it).
fn exit_on_interrupt(mut interrupt: Signal) {
    let waiting = std::thread::Builder::new()
        .name("hookgate-sigint".to_string())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!("SIGINT is not handled during the drain: {e}");
                    return;
                }
            };
            if runtime.block_on(interrupt.recv()).is_some() {
                tracing::info!("interrupted during the drain: exiting now");
                std::process::exit(0);
            }
        });
    if let Err(e) = waiting {
        tracing::error!("SIGINT is not handled during the drain: {e}");
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
        if let Some(queue) = &queue {
            queue.sync();
        }
        std::process::exit(0);
    });
}

/// Turns transparent huge pages off for this process (`prctl(PR_SET_THP_DISABLE)`,
/// see the kernel's `Documentation/admin-guide/mm/transhuge.rst`); call it
/// first thing in `main`, before the allocator touched much. mimalloc's arenas
/// are aligned for huge pages, so on a host whose THP setting is `always` every
/// arena it touched held 2 MiB pages; its own `madvise(MADV_HUGEPAGE)` (for
/// hosts set to `madvise`) is compiled out (its `no_thp` feature). They took
/// 12 MiB of an idle gateway's 26 MiB, and about a quarter of its peak RSS
/// under load, for no measurable CPU gain (`bench/run`, docs/performance.md).
/// Best effort: on a kernel without it the gateway runs as before.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!(error = %e, "transparent huge pages stay as the host sets them");
    }
}

/// Bytes read ahead from a client socket of a TLS listener, held for as long
/// as the connection lives (Pingora's default is 64 KiB): the TLS layer reads
/// records in small pieces. 4 KiB measured as 14.8 kB per idle keep-alive
/// connection against 19.0 kB with 8 KiB, at the same CPU per delivery
/// (docs/performance.md).
const TLS_CLIENT_READ_BUFFER: usize = 4 * 1024;

/// The client socket's buffers. Plain listeners get none
/// ([`L4BufferSettings::unbuffered`] where this is used): hookgate's HTTP/1
/// session reads each head straight into the buffer it parses (the idle wait
/// of `proxy::keepalive` reads into the next head's buffer), and writes every
/// answer, and the `100 Continue`, as one contiguous buffer followed by a
/// flush. A read buffer of Pingora's only added a copy of each request out of
/// a buffer held by every connection (at 500 connections, cold in the cache),
/// and the write buffer a copy of each answer and 1.4 kB per connection. TLS
/// listeners keep both: the TLS stream and Pingora's HTTP/2 read and write
/// records and frames piecewise.
fn tls_client_buffers() -> L4BufferSettings {
    L4BufferSettings::default().read(TLS_CLIENT_READ_BUFFER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn port_zero_is_resolved_and_held_for_the_listener_only() {
        let held = Listener::resolve("127.0.0.1:0".parse().unwrap(), "proxy").unwrap();
        assert_ne!(held.addr.port(), 0);
        assert!(held.socket_options().is_some());
        // Nobody else takes the port in between...
        assert!(TcpListener::bind(held.addr).is_err());
        // ...but Pingora's listener joins it with SO_REUSEPORT and serves it.
        let joining = tokio::net::TcpSocket::new_v4().unwrap();
        joining.set_reuseaddr(true).unwrap();
        joining.set_reuseport(true).unwrap();
        joining.bind(held.addr).unwrap();
        let listener = joining.listen(16).unwrap();
        let connect = tokio::net::TcpStream::connect(held.addr);
        let (accepted, connected) = tokio::join!(listener.accept(), connect);
        assert!(accepted.is_ok() && connected.is_ok());
    }

    #[test]
    fn a_fixed_port_is_passed_on_as_configured() {
        let fixed = Listener::resolve("127.0.0.1:8080".parse().unwrap(), "admin").unwrap();
        assert_eq!(fixed.addr, "127.0.0.1:8080".parse().unwrap());
        assert!(fixed.held.is_none() && fixed.socket_options().is_none());
    }
}
