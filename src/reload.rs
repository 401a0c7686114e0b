//! Configuration reloads: SIGHUP, a change of the config file on disk
//! (debounced), or `POST /reload` on the admin listener → load and fully
//! validate the file → build a new snapshot keeping unchanged pools and
//! limiters → swap it in atomically. Requests in flight finish on the snapshot
//! they started with.
//!
//! A file that does not load is refused: the running config keeps serving, the
//! error (file, line, key) is logged and counted in
//! `hookgate_config_reloads_total{result="failure"}`. Settings that only take
//! effect at start (listeners, TLS listener, admin address, threads,
//! shutdown grace) are reported as needing a restart, never silently ignored.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;

use crate::config::{Config, ServerSettings};
use crate::metrics::Metrics;
use crate::ratelimit::InflightLimit;
use crate::state::{SharedState, Snapshot};

/// Quiet time after the last file event before reloading (editors write in bursts).
const DEBOUNCE: Duration = Duration::from_millis(300);

/// What a successful reload changed.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub trigger: &'static str,
    pub sha256: String,
    /// True when the file was byte-identical to the running config (nothing swapped).
    pub unchanged: bool,
    pub changes: Vec<String>,
    /// Settings whose new values wait for a restart; the old values stay in effect.
    pub restart_required: Vec<&'static str>,
}

/// Loads, validates and swaps configurations; one reload at a time.
pub struct Reloader {
    /// `None` for an embedded config (the demo), which cannot be reloaded.
    path: Option<PathBuf>,
    state: SharedState,
    metrics: Arc<Metrics>,
    inflight: InflightLimit,
    serial: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        path: Option<PathBuf>,
        state: SharedState,
        metrics: Arc<Metrics>,
        inflight: InflightLimit,
    ) -> Self {
        metrics
            .config_reloads
            .with_label_values(&["success"])
            .inc_by(0);
        metrics
            .config_reloads
            .with_label_values(&["failure"])
            .inc_by(0);
        metrics
            .config_last_reload_success
            .set(unix_seconds(SystemTime::now()));
        Reloader {
            path,
            state,
            metrics,
            inflight,
            serial: tokio::sync::Mutex::new(()),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Reloads the config file. On failure the running config is untouched and
    /// the error text (file, line, key) is returned.
    pub async fn reload(&self, trigger: &'static str) -> Result<ReloadReport, String> {
        let _one_at_a_time = self.serial.lock().await;
        let result = self.load_and_swap(trigger).await;
        match &result {
            Ok(report) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["success"])
                    .inc();
                self.metrics
                    .config_last_reload_success
                    .set(unix_seconds(SystemTime::now()));
                tracing::info!(
                    trigger,
                    sha256 = %report.sha256,
                    unchanged = report.unchanged,
                    changes = %report.changes.join("; "),
                    "configuration reloaded"
                );
                for setting in &report.restart_required {
                    tracing::warn!(trigger, setting, "changed setting takes effect only after a restart; the old value stays in use");
                }
            }
            Err(error) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["failure"])
                    .inc();
                tracing::error!(
                    trigger,
                    "configuration reload refused, the running config keeps serving:\n{error}"
                );
            }
        }
        result
    }

    async fn load_and_swap(&self, trigger: &'static str) -> Result<ReloadReport, String> {
        let path = self
            .path
            .clone()
            .ok_or("this configuration is embedded (hookgate demo) and cannot be reloaded")?;
        // Loading reads files and resolves target names: keep it off the async workers.
        let config = tokio::task::spawn_blocking(move || Config::load(&path))
            .await
            .map_err(|e| format!("reload task failed: {e}"))?
            .map_err(|e| e.to_string())?;
        let previous = self.state.load_full();
        if config.source_hash == previous.config.source_hash {
            return Ok(ReloadReport {
                trigger,
                sha256: config.source_hash,
                unchanged: true,
                changes: Vec::new(),
                restart_required: Vec::new(),
            });
        }
        let restart_required = restart_required(&previous.config.server, &config.server);
        let changes = describe_changes(&previous.config, &config);
        let sha256 = config.source_hash.clone();
        let max_inflight = config.server.max_inflight;
        let snapshot = Snapshot::rebuild(config, &previous)?;
        self.inflight.set_max(max_inflight);
        self.state.store(Arc::new(snapshot));
        Ok(ReloadReport {
            trigger,
            sha256,
            unchanged: false,
            changes,
            restart_required,
        })
    }
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn restart_required(old: &ServerSettings, new: &ServerSettings) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.listen != new.listen {
        changed.push("server.listen");
    }
    if old.tls != new.tls {
        changed.push("server.tls");
    }
    if old.admin != new.admin {
        changed.push("server.admin");
    }
    if old.threads != new.threads {
        changed.push("server.threads");
    }
    if old.shutdown_grace != new.shutdown_grace {
        changed.push("server.shutdown_grace");
    }
    if old.watch != new.watch {
        changed.push("server.watch");
    }
    if old.log_format != new.log_format {
        changed.push("server.log_format");
    }
    if old.fanout != new.fanout {
        changed.push("server.fanout");
    }
    if old.upstream_keepalive_pool != new.upstream_keepalive_pool {
        changed.push("server.upstream_keepalive_pool");
    }
    if old.limits.max_connections != new.limits.max_connections {
        changed.push("server.max_connections");
    }
    changed
}

fn describe_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    for name in new.upstreams.keys() {
        match old.upstreams.get(name) {
            None => changes.push(format!("upstream {name} added")),
            Some(settings) if settings != &new.upstreams[name] => {
                changes.push(format!("upstream {name} changed"))
            }
            Some(_) => {}
        }
    }
    for name in old
        .upstreams
        .keys()
        .filter(|n| !new.upstreams.contains_key(*n))
    {
        changes.push(format!("upstream {name} removed"));
    }
    for route in &new.routes {
        if old.route(&route.name).is_none() {
            changes.push(format!("route {} added", route.name));
        }
    }
    for route in old.routes.iter().filter(|r| new.route(&r.name).is_none()) {
        changes.push(format!("route {} removed", route.name));
    }
    changes.push(format!("{} routes active", new.routes.len()));
    changes
}

/// Reload triggers running in the background: SIGHUP, and the config file
/// changing on disk when `[server] watch` is on.
pub struct ReloadTriggers {
    reloader: Arc<Reloader>,
    watch: bool,
}

impl ReloadTriggers {
    pub fn new(reloader: Arc<Reloader>, watch: bool) -> Self {
        ReloadTriggers { reloader, watch }
    }
}

#[async_trait]
impl BackgroundService for ReloadTriggers {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP, reload by signal is off: {e}");
                None
            }
        };
        let (file_events, mut file_changed) = tokio::sync::mpsc::channel::<()>(16);
        // Kept alive for as long as the loop runs.
        let _watcher = match (self.watch, self.reloader.path()) {
            (true, Some(path)) => watch_file(path, file_events),
            _ => None,
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let _ = self.reloader.reload("sighup").await;
                }
                Some(()) = file_changed.recv() => {
                    // Debounce: wait until the editor has been quiet for a moment.
                    while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, file_changed.recv()).await {}
                    let _ = self.reloader.reload("file").await;
                }
            }
        }
    }
}

/// Watches the directory holding `path` (editors replace files by renaming) and
/// signals events that touch `path`.
fn watch_file(
    path: &Path,
    events: tokio::sync::mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    let file = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let file_name = file.file_name()?.to_owned();
    let dir = file.parent()?.to_path_buf();
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let touches = event
                .paths
                .iter()
                .any(|p| p.file_name() == Some(file_name.as_os_str()));
            if touches && !event.kind.is_access() {
                // A full channel already means "reload pending".
                let _ = events.try_send(());
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(e) => {
            tracing::error!(
                "cannot watch {}: {e}; reload with SIGHUP or POST /reload",
                file.display()
            );
            return None;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::error!(
            "cannot watch {}: {e}; reload with SIGHUP or POST /reload",
            dir.display()
        );
        return None;
    }
    tracing::info!(file = %file.display(), "watching the configuration for changes");
    Some(watcher)
}
