//! Configuration reloads: SIGHUP, a change on disk of the config file or of a
//! file it refers to (`file:` secrets, `[ip_sets]` files; debounced), or
//! `POST /reload` on the admin listener → load and fully validate the file and
//! everything it refers to → build a new snapshot keeping unchanged pools and
//! limiters → swap it in atomically. Requests in flight finish on the snapshot
//! they started with.
//!
//! "Unchanged" means the fingerprint over the config text and the bytes of
//! every referenced file is equal (`config::inputs`), so a rotated secret file
//! with an identical config text is a change. The watcher watches the
//! directories of all those files, and reacts to the files themselves and to
//! `..`-prefixed names, which is how Kubernetes swaps a mounted secret or
//! config map (`..data` renamed over). A watched event first recomputes the
//! fingerprint, and reloads only when it differs from both the running config
//! and the last refused attempt, so churn in a shared directory costs a few
//! reads and no log lines.
//!
//! A file that does not load is refused: the running config keeps serving, the
//! error (file, line, key) is logged and counted in
//! `hookgate_config_reloads_total{result="failure"}`. Settings that only take
//! effect at start (listeners, TLS listener, admin address, threads,
//! shutdown grace, `[storage]`, `[cluster]`: `keep_start_only`) are reported
//! as needing a restart, never silently ignored: the swapped-in config keeps
//! their running values, so `GET /config` shows what runs and every reload
//! until a restart compares the file against it and reports them again.
//! The file is loaded against what runs (`config::Running`): while no store
//! runs, a queued route is refused with the restart remedy, and deduped
//! forwards must fit the running `claim_lease`; these problems come in the
//! same refusal as every other problem of the file.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use notify::{RecursiveMode, Watcher};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;

use crate::admission::InflightLimit;
use crate::config::{inputs, Config};
use crate::metrics::Metrics;
use crate::state::{SharedState, Snapshot};

/// Quiet time after the last file event before reloading (editors write in bursts).
const DEBOUNCE: Duration = Duration::from_millis(300);
/// Longest wait for quiet: a directory that never stops changing still reloads.
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);

/// What a successful reload changed.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub trigger: &'static str,
    pub sha256: String,
    /// True when the file and every file it refers to were byte-identical to the
    /// running config's (nothing swapped).
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
    /// The fingerprint of the last refused attempt, so the watcher does not retry it.
    last_refused: Mutex<Option<String>>,
    /// Told after every swap, so the watcher follows the new set of files.
    swapped: tokio::sync::Notify,
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
            last_refused: Mutex::new(None),
            swapped: tokio::sync::Notify::new(),
        }
    }

    /// The files a reload reads: the config file, then the files it refers to.
    fn watched_files(&self) -> Vec<PathBuf> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        let snapshot = self.state.load_full();
        std::iter::once(path.clone())
            .chain(snapshot.config.inputs.iter().cloned())
            .collect()
    }

    /// The fingerprint a reload would find now (with the running config's set of
    /// files), or `None` for an embedded config or an unreadable file.
    async fn fingerprint_now(&self) -> Option<String> {
        let path = self.path.clone()?;
        let files = self.state.load_full().config.inputs.clone();
        tokio::task::spawn_blocking(move || inputs::fingerprint_now(&path, &files))
            .await
            .ok()
            .flatten()
    }

    /// Whether the config file or a file it refers to differs from the running
    /// config and from the last refused attempt: worth a reload.
    async fn inputs_changed(&self) -> bool {
        let now = self.fingerprint_now().await;
        let running = self.state.load_full().config.fingerprint.clone();
        let refused = self.last_refused.lock().map(|r| r.clone()).unwrap_or(None);
        match now {
            Some(now) => now != running && Some(&now) != refused.as_ref(),
            // Unreadable: let the reload say why, once.
            None => refused.as_deref() != Some(UNREADABLE),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Reloads the config file. On failure the running config is untouched and
    /// the error text (file, line, key) is returned.
    pub async fn reload(&self, trigger: &'static str) -> Result<ReloadReport, String> {
        let _one_at_a_time = self.serial.lock().await;
        // Read before loading: a file that changes while (or after) the load
        // reads it then differs from this fingerprint, and its next event
        // reloads it. A fingerprint read after a refused load could already be
        // that of a good edit completing it (a file written in place, read
        // half-way), which the watcher would then skip as refused.
        let attempted = self.fingerprint_now().await;
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
                if !report.unchanged {
                    for warning in &self.state.load_full().config.warnings {
                        tracing::warn!(trigger, "{warning}");
                    }
                }
                if let Ok(mut refused) = self.last_refused.lock() {
                    *refused = None;
                }
                self.swapped.notify_one();
            }
            Err(error) => {
                if let Ok(mut refused) = self.last_refused.lock() {
                    *refused = Some(attempted.unwrap_or_else(|| UNREADABLE.to_string()));
                }
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
        let previous = self.state.load_full();
        // Checked against the running store and claim lease too (start-only:
        // the file's apply at a restart), so one refusal names every problem.
        let running = crate::config::Running::of(&previous.config);
        // Loading reads files and resolves target names: keep it off the async workers.
        let mut config =
            tokio::task::spawn_blocking(move || Config::load_for_reload(&path, running))
                .await
                .map_err(|e| format!("reload task failed: {e}"))?
                .map_err(|e| e.to_string())?;
        // What runs, not what the last file said: the running snapshot always
        // holds the start-only values (they are put back below), so a setting
        // is reported on every reload until a restart applies it.
        let restart_required = keep_start_only(&previous.config, &mut config);
        if config.fingerprint == previous.config.fingerprint {
            return Ok(ReloadReport {
                trigger,
                sha256: config.source_hash,
                unchanged: true,
                changes: Vec::new(),
                restart_required,
            });
        }
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

/// `last_refused` when the config file itself could not be read.
const UNREADABLE: &str = "unreadable";

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Settings read only at start: the listeners, the runtime, the log, the
/// fan-out queue, the connection pools, the store (`delivery::Queue` opens it)
/// and the connection to Redis (`cluster`). Each one `new` (a file just
/// loaded) sets apart from `running` is named, and its running value put back
/// in `new`: the snapshot, and so `GET /config`, holds what runs, and the next
/// reload compares against it again.
fn keep_start_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($name:literal, $($field:ident).+) => {
            if running.$($field).+ != new.$($field).+ {
                changed.push($name);
                new.$($field).+ = running.$($field).+.clone();
            }
        };
    }
    keep!("server.listen", server.listen);
    keep!("server.tls", server.tls);
    keep!("server.admin", server.admin);
    keep!("server.threads", server.threads);
    keep!("server.shutdown_grace", server.shutdown_grace);
    keep!("server.watch", server.watch);
    keep!("server.log_format", server.log_format);
    keep!("server.fanout", server.fanout);
    keep!(
        "server.upstream_keepalive_pool",
        server.upstream_keepalive_pool
    );
    keep!("server.max_connections", server.limits.max_connections);
    keep!("storage", storage);
    keep!("cluster", cluster);
    changed
}

fn describe_changes(old: &Config, new: &Config) -> Vec<String> {
    let mut changes = Vec::new();
    if old.source_hash == new.source_hash {
        changes.push(
            "a file the config refers to changed (file: secret or [ip_sets] file)".to_string(),
        );
    }
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

/// Reload triggers running in the background: SIGHUP, and the config file or
/// a file it refers to changing on disk when `[server] watch` is on.
pub struct ReloadTriggers {
    reloader: Arc<Reloader>,
    watch: bool,
    /// The SIGHUP stream made before the listeners were logged
    /// (`server::take_over_sighup`), so a SIGHUP before this service starts
    /// is kept; taken when it starts. `None`: made then.
    hangup: Mutex<Option<tokio::signal::unix::Signal>>,
}

impl ReloadTriggers {
    pub fn new(
        reloader: Arc<Reloader>,
        watch: bool,
        hangup: Option<tokio::signal::unix::Signal>,
    ) -> Self {
        ReloadTriggers {
            reloader,
            watch,
            hangup: Mutex::new(hangup),
        }
    }
}

#[async_trait]
impl BackgroundService for ReloadTriggers {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let made = self.hangup.lock().ok().and_then(|mut h| h.take());
        let mut hangup = match made.map_or_else(|| signal(SignalKind::hangup()), Ok) {
            Ok(hangup) => Some(hangup),
            Err(e) => {
                tracing::error!("cannot listen for SIGHUP, reload by signal is off: {e}");
                None
            }
        };
        let (file_events, mut file_changed) = tokio::sync::mpsc::channel::<()>(16);
        // Kept alive for as long as the loop runs.
        let mut watcher = match (self.watch, self.reloader.path()) {
            (true, Some(_)) => InputWatcher::start(file_events),
            _ => None,
        };
        if let Some(watcher) = watcher.as_mut() {
            watcher.follow(&self.reloader.watched_files());
            // A file changed between loading the config and watching it raised
            // no event: compare once now that the watch is in place.
            if self.reloader.inputs_changed().await {
                let _ = self.reloader.reload("file").await;
            }
        }
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    let _ = self.reloader.reload("sighup").await;
                }
                Some(()) = file_changed.recv() => {
                    // Debounce: wait until the files have been quiet for a moment (bounded).
                    let until = Instant::now() + DEBOUNCE_MAX;
                    while Instant::now() < until {
                        match tokio::time::timeout(DEBOUNCE, file_changed.recv()).await {
                            Ok(Some(())) => continue,
                            _ => break,
                        }
                    }
                    if self.reloader.inputs_changed().await {
                        let _ = self.reloader.reload("file").await;
                    }
                }
                () = self.reloader.swapped.notified() => {
                    if let Some(watcher) = watcher.as_mut() {
                        watcher.follow(&self.reloader.watched_files());
                        // The same gap for files the new config added.
                        if self.reloader.inputs_changed().await {
                            let _ = self.reloader.reload("file").await;
                        }
                    }
                }
            }
        }
    }
}

/// Which event paths matter: the watched files themselves, and `..`-prefixed
/// names in their directories (Kubernetes' atomic `..data` swap).
#[derive(Default)]
struct Interest {
    files: BTreeSet<(PathBuf, OsString)>,
    dirs: BTreeSet<PathBuf>,
}

impl Interest {
    /// Each file as given and, when it is a symlink, where it points now.
    fn of(files: &[PathBuf]) -> Interest {
        let mut interest = Interest::default();
        for file in files {
            let given = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            let resolved = file.canonicalize().ok();
            for path in std::iter::once(given).chain(resolved) {
                if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
                    interest.dirs.insert(dir.to_path_buf());
                    interest.files.insert((dir.to_path_buf(), name.to_owned()));
                }
            }
        }
        interest
    }

    fn matches(&self, path: &Path) -> bool {
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        self.files.contains(&(dir.to_path_buf(), name.to_owned()))
            || (self.dirs.contains(dir) && name.as_encoded_bytes().starts_with(b".."))
    }
}

/// A notify watcher over the directories of the config's files (editors and
/// Kubernetes replace files by renaming, which a watch on the file would miss).
struct InputWatcher {
    watcher: notify::RecommendedWatcher,
    interest: Arc<RwLock<Interest>>,
    watching: BTreeSet<PathBuf>,
}

impl InputWatcher {
    fn start(events: tokio::sync::mpsc::Sender<()>) -> Option<InputWatcher> {
        let interest = Arc::new(RwLock::new(Interest::default()));
        let seen = interest.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_access() {
                return;
            }
            let Ok(interest) = seen.read() else { return };
            if event.paths.iter().any(|p| interest.matches(p)) {
                // A full channel already means "reload check pending".
                let _ = events.try_send(());
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(watcher) => Some(InputWatcher {
                watcher,
                interest,
                watching: BTreeSet::new(),
            }),
            Err(e) => {
                tracing::error!(
                    "cannot watch the configuration files: {e}; reload with SIGHUP or POST /reload"
                );
                None
            }
        }
    }

    /// Watches the directories of `files` (and stops watching the others).
    fn follow(&mut self, files: &[PathBuf]) {
        let interest = Interest::of(files);
        let wanted = interest.dirs.clone();
        if let Ok(mut current) = self.interest.write() {
            *current = interest;
        }
        for dir in self.watching.difference(&wanted) {
            let _ = self.watcher.unwatch(dir);
        }
        let mut watching = BTreeSet::new();
        for dir in wanted {
            if self.watching.contains(&dir) {
                watching.insert(dir);
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "watching for configuration changes");
                    watching.insert(dir);
                }
                Err(e) => tracing::error!(
                    dir = %dir.display(),
                    "cannot watch: {e}; reload with SIGHUP or POST /reload"
                ),
            }
        }
        self.watching = watching;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interest_covers_the_files_and_kubernetes_swaps_only() {
        let interest = Interest::of(&[
            PathBuf::from("/etc/hookgate/hookgate.toml"),
            PathBuf::from("/run/secrets/github"),
        ]);
        assert!(interest.matches(Path::new("/etc/hookgate/hookgate.toml")));
        assert!(interest.matches(Path::new("/run/secrets/github")));
        assert!(interest.matches(Path::new("/run/secrets/..data")));
        assert!(interest.matches(Path::new("/run/secrets/..2026_11_30_06_00_00.1")));
        assert!(!interest.matches(Path::new("/etc/hookgate/gateway.log")));
        assert!(!interest.matches(Path::new("/run/secrets/other")));
        assert!(!interest.matches(Path::new("/elsewhere/..data")));
    }
}
