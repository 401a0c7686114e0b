//! Test kit for end-to-end tests: the real `hookgate` binary on a temp config,
//! recording upstreams on 127.0.0.1 that keep the exact bytes they received,
//! and a raw HTTP/1.1 client so tests control framing byte for byte.
//!
//! Every wait is bounded in time; every loop in count or time. No port is
//! guessed: the gateway listens on port 0 and announces its addresses, test
//! upstreams bind port 0, and a down upstream is a [`DeadPort`] held open. A
//! metric read is `None` when the series does not exist; a test that expects
//! a series requires it ([`Gateway::assert_metric`], [`Gateway::metric_required`]).
//! Config sections come from [`Setup`].
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hookgate");

pub mod redis;
pub mod setup;
#[allow(unused_imports)]
pub use setup::Setup;

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A port on 127.0.0.1 that refuses connections and that nothing else can take
/// while this value lives: a socket bound to it, not listening. The address of
/// an upstream that is down, handed over instead of guessed ("a port that was
/// free a moment ago" may be anyone's by the time it is used).
pub struct DeadPort {
    socket: socket2::Socket,
    pub addr: SocketAddr,
}

impl DeadPort {
    pub fn new() -> DeadPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket
            .bind(&addr(0).into())
            .expect("bind an ephemeral port");
        let addr = socket
            .local_addr()
            .expect("bound address")
            .as_socket()
            .expect("an IP address");
        DeadPort { socket, addr }
    }

    /// Starts listening on the held port: the upstream comes up at this address.
    pub fn come_up(self, name: &str, behavior: Behavior) -> Upstream {
        self.socket.listen(128).expect("listen on the held port");
        Upstream::on(self.socket.into(), name, behavior)
    }
}

impl Default for DeadPort {
    fn default() -> Self {
        DeadPort::new()
    }
}

/// A self-signed certificate for `localhost` in PEM files, for a TLS listener.
pub struct LocalhostCertificate {
    /// The certificate in PEM, for a client's trusted roots.
    pub pem: String,
    cert_path: PathBuf,
    key_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl LocalhostCertificate {
    pub fn new() -> LocalhostCertificate {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
            .expect("a self-signed certificate");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, certified.cert.pem()).expect("write the certificate");
        std::fs::write(&key_path, certified.key_pair.serialize_pem()).expect("write the key");
        LocalhostCertificate {
            pem: certified.cert.pem(),
            cert_path,
            key_path,
            _dir: dir,
        }
    }

    /// The `[server]` line for a TLS listener on a free loopback port.
    pub fn tls_setting(&self) -> String {
        format!(
            "tls = {{ listen = \"127.0.0.1:0\", cert = \"{}\", key = \"{}\" }}",
            self.cert_path.display(),
            self.key_path.display()
        )
    }
}

/// Writes `bytes` one at a time, `every` apart, until all are sent, a write
/// fails (the gateway closed the connection) or `within` has passed.
pub fn trickle(stream: &mut TcpStream, bytes: &[u8], every: Duration, within: Duration) {
    let started = Instant::now();
    for byte in bytes {
        if stream.write_all(std::slice::from_ref(byte)).is_err() {
            break;
        }
        std::thread::sleep(every);
        if started.elapsed() > within {
            break;
        }
    }
}

/// `hookgate check -c test.toml` on `text`, in a directory of its own:
/// (exit code, stdout, stderr).
pub fn check_config(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("test.toml");
    std::fs::write(&path, text).expect("write the config");
    let output = Command::new(BIN)
        .args(["check", "-c", path.to_str().expect("a UTF-8 path")])
        .output()
        .expect("run hookgate check");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Polls `condition` every 20 ms until it holds or `within` passes.
pub fn wait_until(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

/// `X-Hub-Signature-256` for `body` under `secret` (GitHub's scheme, written
/// from its documentation with plain `hmac`/`sha2`, independently of hookgate).
pub fn github_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// HMAC-SHA256 of `parts` concatenated, under `key`: the raw MAC bytes.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    parts.iter().for_each(|part| mac.update(part));
    mac.finalize().into_bytes().to_vec()
}

/// Seconds since the Unix epoch, as signed timestamps are written.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `[upstreams.NAME]` sections for recording upstreams.
pub fn upstream_sections(list: &[&Upstream]) -> String {
    list.iter()
        .map(|u| format!("[upstreams.{}]\ntargets = [\"{}\"]\n", u.name, u.addr))
        .collect()
}

// ---------------------------------------------------------------- gateway

/// A running `hookgate serve` process, killed on drop. Its listeners are
/// configured on port 0 and their addresses read back from the process's
/// `listening` log lines: no port is guessed.
pub struct Gateway {
    child: Option<Child>,
    /// The first proxy listener.
    pub proxy: SocketAddr,
    /// Every proxy listener, in `listen` order (`proxy` first).
    pub listeners: Vec<SocketAddr>,
    /// The TLS listener, when `[server] tls` is configured.
    pub tls: Option<SocketAddr>,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// The generated `[server]` section, kept for rewrites.
    server_section: String,
}

impl Gateway {
    /// Starts the gateway with a generated `[server]` section plus `rest`
    /// (upstreams and routes), and waits until `/readyz` answers 200.
    pub fn start(rest: &str) -> Gateway {
        Gateway::start_with_server("", rest)
    }

    /// Like [`Gateway::start`], with extra lines inside `[server]`.
    pub fn start_with_server(server_extra: &str, rest: &str) -> Gateway {
        Gateway::start_with_listeners(&[], server_extra, rest)
    }

    /// Like [`Gateway::start_with_server`], with more proxy listeners than the
    /// default one, e.g. `"[::1]:0"` (read their addresses from `listeners`).
    pub fn start_with_listeners(
        extra_listeners: &[&str],
        server_extra: &str,
        rest: &str,
    ) -> Gateway {
        let gateway = Gateway::spawn_listening(extra_listeners, server_extra, rest, &[]);
        gateway.wait_ready();
        gateway
    }

    /// Like [`Gateway::start_with_server`], with `env` added to the process's
    /// environment (e.g. `SSL_CERT_FILE`, the roots it trusts for upstream TLS).
    pub fn start_with_env(server_extra: &str, rest: &str, env: &[(&str, &str)]) -> Gateway {
        let gateway = Gateway::spawn_listening(&[], server_extra, rest, env);
        gateway.wait_ready();
        gateway
    }

    /// Waits (up to 20 s) until `/readyz` answers 200.
    #[track_caller]
    pub fn wait_ready(&self) {
        let ready = wait_until(Duration::from_secs(20), || {
            get(self.admin, "/readyz").is_ok_and(|r| r.status == 200)
        });
        assert!(ready, "gateway not ready in 20 s; log:\n{}", self.log());
    }

    /// Starts the process and reads its listener addresses, without waiting
    /// for readiness.
    pub fn spawn(server_extra: &str, rest: &str) -> Gateway {
        Gateway::spawn_listening(&[], server_extra, rest, &[])
    }

    fn spawn_listening(
        extra_listeners: &[&str],
        server_extra: &str,
        rest: &str,
        env: &[(&str, &str)],
    ) -> Gateway {
        let listen: Vec<String> = std::iter::once("127.0.0.1:0")
            .chain(extra_listeners.iter().copied())
            .map(|a| format!("\"{a}\""))
            .collect();
        let listen = listen.join(", ");
        // Two proxy threads unless the test sets its own count.
        let threads = if server_extra.contains("threads =") {
            ""
        } else {
            "threads = 2\n"
        };
        let server_section = format!(
            "[server]\nlisten = [{listen}]\nadmin = \"127.0.0.1:0\"\nshutdown_grace = \"3s\"\n{threads}{server_extra}\n"
        );
        let config = format!("{server_section}\n{rest}");
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("hookgate.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut child =
            spawn_binary_with(&["serve", "-c", config_path.to_str().unwrap()], &dir, env);
        let log_path = dir.path().join("gateway.log");
        let bound = match wait_listening(&mut child, &log_path, 1 + extra_listeners.len()) {
            Ok(bound) => bound,
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("gateway did not announce its listeners ({why}); log:\n{log}");
            }
        };
        Gateway {
            child: Some(child),
            proxy: bound.proxy[0],
            listeners: bound.proxy,
            tls: bound.tls,
            admin: bound.admin,
            dir,
            config_path,
            server_section,
        }
    }

    /// Replaces the config file the way editors do (write a temp file, rename it
    /// over the old one), keeping the `[server]` section and using `rest` after it.
    pub fn rewrite(&self, rest: &str) {
        self.rewrite_whole(&format!("{}\n{rest}", self.server_section));
    }

    /// Replaces the whole config file with `text` (atomic rename).
    pub fn rewrite_whole(&self, text: &str) {
        let temp = self.dir.path().join(".hookgate.toml.swp");
        std::fs::write(&temp, text).expect("write the new config");
        std::fs::rename(&temp, &self.config_path).expect("rename over the config");
    }

    /// The `[server]` section this gateway was started with.
    pub fn server_section(&self) -> &str {
        &self.server_section
    }

    /// `POST /reload` on the admin listener.
    /// Runs `hookgate events ARGS` against this gateway's config and admin
    /// listener (the config says port 0, so the address it took is passed
    /// with `--admin`): (exit code, stdout + stderr).
    pub fn events_cli(&self, args: &[&str]) -> (i32, String) {
        let output = Command::new(BIN)
            .arg("events")
            .args(args)
            .args(["-c", self.config_path.to_str().unwrap()])
            .args(["--admin", &self.admin.to_string()])
            .output()
            .expect("run hookgate events");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code().unwrap_or(-1), text)
    }

    pub fn post_reload(&self) -> Response {
        let request = format!("POST /reload HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", self.admin);
        send_raw(self.admin, request.as_bytes()).expect("POST /reload")
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends `signal` (e.g. "TERM") to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits up to `within` for the process to exit; its exit code if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits (up to 5 s) for a series to exist with value `expected`, then
    /// asserts it. A missing series fails: it is not read as 0. Metrics are
    /// recorded in the logging phase, just after the answer reaches the sender.
    #[track_caller]
    pub fn assert_metric(&self, name: &str, labels: &[(&str, &str)], expected: f64) {
        self.assert_metric_within(Duration::from_secs(5), name, labels, expected);
    }

    /// [`Gateway::assert_metric`] waiting up to `within`, for a series written
    /// by background work (a debounced file watch, a retry schedule).
    #[track_caller]
    pub fn assert_metric_within(
        &self,
        within: Duration,
        name: &str,
        labels: &[(&str, &str)],
        expected: f64,
    ) {
        // `try_metric` in the poll: a scrape that fails once is "not yet", not a panic.
        wait_until(within, || {
            self.try_metric(name, labels)
                .is_ok_and(|value| value == Some(expected))
        });
        assert_eq!(
            self.metric(name, labels),
            Some(expected),
            "{name} {labels:?} (None: no such series)"
        );
    }

    /// `hookgate_requests_total{route,outcome}` reaches `expected` (see [`Gateway::assert_metric`]).
    #[track_caller]
    pub fn assert_requests(&self, route: &str, outcome: &str, expected: f64) {
        self.assert_metric(
            "hookgate_requests_total",
            &[("route", route), ("outcome", outcome)],
            expected,
        );
    }

    /// `hookgate_requests_total{outcome}` over every route reaches `expected`.
    #[track_caller]
    pub fn assert_outcome(&self, outcome: &str, expected: f64) {
        self.assert_metric("hookgate_requests_total", &[("outcome", outcome)], expected);
    }

    /// Asserts that no series `name` with these labels exists.
    #[track_caller]
    pub fn assert_no_series(&self, name: &str, labels: &[(&str, &str)]) {
        assert_eq!(self.metric(name, labels), None, "{name} {labels:?} exists");
    }

    /// The sum of the samples of `name` whose labels include `labels` in
    /// `/metrics`, e.g. `metric("hookgate_requests_total", &[("route","a"),("outcome","forwarded")])`;
    /// `None` when no such series exists.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.try_metric(name, labels).expect("scrape /metrics")
    }

    /// [`Gateway::metric`] that returns a failed scrape instead of panicking:
    /// for use inside [`wait_until`].
    pub fn try_metric(&self, name: &str, labels: &[(&str, &str)]) -> std::io::Result<Option<f64>> {
        let scraped = get(self.admin, "/metrics")?;
        let text = String::from_utf8(scraped.body).map_err(std::io::Error::other)?;
        Ok(metric_value(&text, name, labels))
    }

    /// Waits up to `within` until the process log contains `needle`: log lines
    /// are written a moment after the answer and the metrics they go with.
    pub fn wait_log(&self, within: Duration, needle: &str) -> bool {
        wait_until(within, || self.log().contains(needle))
    }

    /// Like [`Gateway::metric`], for a series the test requires to exist.
    #[track_caller]
    pub fn metric_required(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metric(name, labels)
            .unwrap_or_else(|| panic!("no series {name} {labels:?}"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The listener addresses a gateway process announced.
pub struct Bound {
    pub proxy: Vec<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub admin: SocketAddr,
}

/// Waits (up to 20 s) for `child` to log its admin listener and `proxies` proxy
/// listeners (`listening role=... addr=...`, text or JSON). Fails early when the
/// process exits first.
pub fn wait_listening(
    child: &mut Child,
    log_path: &std::path::Path,
    proxies: usize,
) -> Result<Bound, String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        let announced = announced_listeners(&log);
        let of = |role: &str| -> Vec<SocketAddr> {
            announced
                .iter()
                .filter(|(r, _)| r == role)
                .map(|(_, a)| *a)
                .collect()
        };
        let (proxy, admin) = (of("proxy"), of("admin"));
        // The admin line comes after every proxy and TLS line.
        if let Some(admin) = admin.first() {
            if proxy.len() != proxies {
                return Err(format!(
                    "{} proxy listeners announced, {proxies} expected",
                    proxy.len()
                ));
            }
            return Ok(Bound {
                proxy,
                tls: of("tls").first().copied(),
                admin: *admin,
            });
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the process exited with {status}"));
        }
        if Instant::now() >= deadline {
            return Err("no `listening` lines in 20 s".to_string());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `(role, address)` pairs of the `listening` lines in a gateway log, in
/// order, from text (`listening role="proxy" addr=127.0.0.1:41234`, colours or
/// not) or JSON lines.
pub fn announced_listeners(log: &str) -> Vec<(String, SocketAddr)> {
    log.lines()
        .filter_map(|line| {
            let line = strip_ansi(line);
            if line.starts_with('{') {
                let value: serde_json::Value = serde_json::from_str(&line).ok()?;
                if value["message"] != "listening" {
                    return None;
                }
                let role = value["role"].as_str()?.to_string();
                return Some((role, value["addr"].as_str()?.parse().ok()?));
            }
            let (_, fields) = line.split_once(" listening ")?;
            let field = |name: &str| {
                fields
                    .split(' ')
                    .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                    .map(|value| value.trim_matches('"').to_string())
            };
            Some((field("role")?, field("addr")?.parse().ok()?))
        })
        .collect()
}

/// `line` without ANSI colour sequences (`ESC [ ... letter`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Bounded by the line's length.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Runs the binary with `args`, output to `dir/gateway.log`.
pub fn spawn_binary(args: &[&str], dir: &tempfile::TempDir) -> Child {
    spawn_binary_with(args, dir, &[])
}

/// [`spawn_binary`] with `env` added to the process's environment.
pub fn spawn_binary_with(args: &[&str], dir: &tempfile::TempDir, env: &[(&str, &str)]) -> Child {
    let log = std::fs::File::create(dir.path().join("gateway.log")).expect("log file");
    Command::new(BIN)
        .args(args)
        .env("HOOKGATE_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("spawn hookgate")
}

/// Finds `name{labels...} value` in Prometheus text; labels may be a subset.
/// Several matching series are summed; `None` when none matches.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (metric == name
                && labels.iter().all(|(k, v)| {
                    label_text
                        .split(',')
                        .any(|pair| pair == format!("{k}=\"{v}\""))
                }))
            .then(|| value.parse::<f64>().ok())?
        })
        .reduce(|a, b| a + b)
}

// ---------------------------------------------------------------- upstream

/// The first value of header `name` (any case) in lower-cased `headers`.
fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

/// What a recording upstream received, exactly.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub target: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// How a recording upstream answers.
#[derive(Debug, Clone)]
pub struct Behavior {
    pub status: u16,
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Close the connection after reading the request instead of answering.
    pub hang_up: bool,
    /// Answer (keep-alive framing, no `Connection: close`), then close the
    /// connection, as an upstream whose idle timeout fires does.
    pub close_after_answer: bool,
    /// Send the body one byte per this interval, after the head.
    pub drip: Option<Duration>,
    /// Hold each answer until this gate opens (at most [`Gate::LIMIT`]), after `delay`.
    pub hold: Option<Gate>,
    /// Send these bytes as the whole answer instead of a generated one (for
    /// malformed or unusually framed responses).
    pub raw: Option<Vec<u8>>,
}

/// A gate a held upstream waits on before it answers ([`Behavior::held`]): the
/// test decides when held requests end, instead of a delay that a loaded
/// machine may outlast. Once open it stays open. Clones share the gate.
#[derive(Debug, Clone, Default)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    /// The longest an answer is held, whatever the test does.
    pub const LIMIT: Duration = Duration::from_secs(60);

    pub fn new() -> Gate {
        Gate::default()
    }

    /// Lets every held answer (and every later one) go.
    pub fn open(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Holds the answers of later requests again (a test that warms up
    /// through the gate first).
    pub fn close(&self) {
        self.0.store(false, Ordering::SeqCst);
    }

    pub fn is_open(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            status: 200,
            body: b"{\"ok\":true}".to_vec(),
            delay: Duration::ZERO,
            hang_up: false,
            close_after_answer: false,
            drip: None,
            hold: None,
            raw: None,
        }
    }
}

impl Behavior {
    /// Answers after `delay`.
    pub fn delayed(delay: Duration) -> Behavior {
        Behavior {
            delay,
            ..Behavior::default()
        }
    }

    /// Answers with `status`.
    pub fn status(status: u16) -> Behavior {
        Behavior {
            status,
            ..Behavior::default()
        }
    }

    /// Reads the request, then closes the connection without answering.
    pub fn hang_up() -> Behavior {
        Behavior {
            hang_up: true,
            ..Behavior::default()
        }
    }

    /// Answers `status` with its head at once and `body` one byte per `interval`.
    pub fn drip(status: u16, body: &[u8], interval: Duration) -> Behavior {
        Behavior {
            status,
            body: body.to_vec(),
            drip: Some(interval),
            ..Behavior::default()
        }
    }

    /// Answers only once `gate` is open (or [`Gate::LIMIT`] passed).
    pub fn held(gate: &Gate) -> Behavior {
        Behavior {
            hold: Some(gate.clone()),
            ..Behavior::default()
        }
    }

    /// Answers every request with exactly `wire` (status line, fields, body).
    pub fn raw(wire: &[u8]) -> Behavior {
        Behavior {
            raw: Some(wire.to_vec()),
            ..Behavior::default()
        }
    }

    /// Answers, then closes the connection the gateway may keep for reuse.
    pub fn close_after_answer() -> Behavior {
        Behavior {
            close_after_answer: true,
            ..Behavior::default()
        }
    }
}

/// An HTTP/1.1 upstream on 127.0.0.1 that records every request.
pub struct Upstream {
    pub addr: SocketAddr,
    pub name: String,
    received: Arc<Mutex<Vec<Received>>>,
    /// When each request of `received` had arrived, in the same order.
    arrivals: Arc<Mutex<Vec<Instant>>>,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
    /// Connections that carried at least one request (health checks do not).
    used: Arc<AtomicUsize>,
    /// Connections this upstream has closed so far.
    closed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    accept_thread: Option<std::thread::JoinHandle<()>>,
}

/// The longest a test upstream lives, whatever the test does.
const UPSTREAM_LIFETIME: Duration = Duration::from_secs(300);

impl Upstream {
    pub fn start(name: &str) -> Upstream {
        Upstream::with(name, Behavior::default())
    }

    pub fn with(name: &str, behavior: Behavior) -> Upstream {
        Upstream::at(addr(0), name, behavior)
    }

    /// An upstream on a chosen address (port 0: any free port).
    pub fn at(at: SocketAddr, name: &str, behavior: Behavior) -> Upstream {
        Upstream::on(
            TcpListener::bind(at).expect("bind upstream"),
            name,
            behavior,
        )
    }

    /// An upstream serving `listener`.
    pub fn on(listener: TcpListener, name: &str, behavior: Behavior) -> Upstream {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread_received = received.clone();
        let thread_arrivals = arrivals.clone();
        let accepted = Arc::new(AtomicUsize::new(0));
        let thread_accepted = accepted.clone();
        let used = Arc::new(AtomicUsize::new(0));
        let thread_used = used.clone();
        let closed = Arc::new(AtomicUsize::new(0));
        let thread_closed = closed.clone();
        let thread_stop = stop.clone();
        let thread_name = name.to_string();
        let accept_thread = std::thread::spawn(move || {
            let born = Instant::now();
            while !thread_stop.load(Ordering::SeqCst) && born.elapsed() < UPSTREAM_LIFETIME {
                match listener.accept() {
                    Ok((stream, _)) => {
                        thread_accepted.fetch_add(1, Ordering::SeqCst);
                        let received = thread_received.clone();
                        let arrivals = thread_arrivals.clone();
                        let behavior = behavior.clone();
                        let name = thread_name.clone();
                        let stop = thread_stop.clone();
                        let closed = thread_closed.clone();
                        let used = thread_used.clone();
                        std::thread::spawn(move || {
                            let record = Record {
                                received: &received,
                                arrivals: &arrivals,
                                used: &used,
                            };
                            serve_connection(stream, &name, &behavior, record, &stop);
                            closed.fetch_add(1, Ordering::SeqCst);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Upstream {
            addr,
            name: name.to_string(),
            received,
            arrivals,
            accepted,
            used,
            closed,
            stop,
            accept_thread: Some(accept_thread),
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// When each request of [`Upstream::received`] had arrived (read in full), in order.
    pub fn arrivals(&self) -> Vec<Instant> {
        let _received = self.received.lock().unwrap();
        self.arrivals.lock().unwrap().clone()
    }

    /// Forgets what was received so far.
    pub fn clear(&self) {
        let mut received = self.received.lock().unwrap();
        received.clear();
        self.arrivals.lock().unwrap().clear();
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections that carried at least one request: unlike
    /// [`Upstream::connections`], health checks (TCP connects) are not counted.
    pub fn connections_used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    /// Connections this upstream has closed (after the exchange ended or the peer left).
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// Stops accepting and closes the port (existing connections end at their next request).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where a connection records what it received.
struct Record<'a> {
    received: &'a Mutex<Vec<Received>>,
    arrivals: &'a Mutex<Vec<Instant>>,
    /// Counts this connection once, at its first request.
    used: &'a AtomicUsize,
}

fn serve_connection(
    stream: TcpStream,
    name: &str,
    behavior: &Behavior,
    record: Record<'_>,
    stop: &AtomicBool,
) {
    stream.set_nonblocking(false).unwrap();
    // The head and the body leave in two writes: without this, Nagle holds the
    // body until the gateway's delayed ACK (about 40 ms per keep-alive exchange).
    let _ = stream.set_nodelay(true);
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    // Bounded: one connection serves at most this many requests.
    for served in 0..10_000 {
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if served == 0 {
            record.used.fetch_add(1, Ordering::SeqCst);
        }
        let head_request = request.method == "HEAD";
        {
            let mut received = record.received.lock().unwrap();
            received.push(request);
            record.arrivals.lock().unwrap().push(Instant::now());
        }
        if behavior.hang_up {
            return;
        }
        std::thread::sleep(behavior.delay);
        if let Some(gate) = &behavior.hold {
            wait_until(Gate::LIMIT, || {
                gate.is_open() || stop.load(Ordering::SeqCst)
            });
        }
        if let Some(wire) = &behavior.raw {
            if writer.write_all(wire).is_err() || behavior.close_after_answer {
                return;
            }
            continue;
        }
        let head = format!(
            "HTTP/1.1 {} Test\r\nContent-Length: {}\r\nContent-Type: application/json\r\nX-Upstream: {name}\r\n\r\n",
            behavior.status,
            behavior.body.len()
        );
        // The answer to a HEAD has the framing of the GET answer, and no body.
        let body: &[u8] = if head_request { b"" } else { &behavior.body };
        if writer.write_all(head.as_bytes()).is_err() {
            return;
        }
        match behavior.drip {
            None => {
                if writer.write_all(body).is_err() {
                    return;
                }
            }
            Some(interval) => {
                // Bounded by the body's length.
                for byte in body {
                    std::thread::sleep(interval);
                    if writer.write_all(std::slice::from_ref(byte)).is_err()
                        || stop.load(Ordering::SeqCst)
                    {
                        return;
                    }
                }
            }
        }
        if behavior.close_after_answer {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Received> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
    let mut parts = line.trim_end().splitn(3, ' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let headers = read_headers(reader)?;
    let body = read_body(reader, &headers, false)?;
    Some(Received {
        method,
        target,
        headers,
        body,
    })
}

fn read_headers<R: BufRead>(reader: &mut R) -> Option<Vec<(String, String)>> {
    let mut headers = Vec::new();
    for _ in 0..1000 {
        let mut line = String::new();
        reader.read_line(&mut line).ok().filter(|n| *n > 0)?;
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Some(headers);
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    None
}

/// Reads a body framed by Content-Length or chunked; `to_close` reads to EOF otherwise.
fn read_body<R: BufRead>(
    reader: &mut R,
    headers: &[(String, String)],
    to_close: bool,
) -> Option<Vec<u8>> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        for _ in 0..1_000_000 {
            let mut size_line = String::new();
            reader.read_line(&mut size_line).ok()?;
            let size = usize::from_str_radix(size_line.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                return Some(body);
            }
            body.extend_from_slice(&chunk[..size]);
        }
        return None;
    }
    if let Some(length) = header("content-length") {
        let mut body = vec![0; length.parse().ok()?];
        reader.read_exact(&mut body).ok()?;
        return Some(body);
    }
    let mut body = Vec::new();
    if to_close {
        reader.read_to_end(&mut body).ok()?;
    }
    Some(body)
}

// ---------------------------------------------------------------- client

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Asserts the status, showing the body when it is another.
    #[track_caller]
    pub fn expect_status(&self, status: u16) -> &Response {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Writes `request` on a new connection and reads one response.
pub fn send_raw(to: SocketAddr, request: &[u8]) -> std::io::Result<Response> {
    let stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    writer.write_all(request)?;
    read_response(&mut BufReader::new(stream))
}

/// `HEAD path` on a new connection: the status and headers (a HEAD answer has no body).
pub fn head(to: SocketAddr, path: &str) -> std::io::Result<Response> {
    let stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    writer.write_all(format!("HEAD {path} HTTP/1.1\r\nHost: {to}\r\n\r\n").as_bytes())?;
    let (status, headers) = read_response_head(&mut BufReader::new(stream))?;
    Ok(Response {
        status,
        headers,
        body: Vec::new(),
    })
}

/// The status line and headers of a response.
fn read_response_head<R: BufRead>(reader: &mut R) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let headers = read_headers(reader).ok_or_else(|| std::io::Error::other("bad headers"))?;
    Ok((status, headers))
}

pub fn read_response<R: BufRead>(reader: &mut R) -> std::io::Result<Response> {
    let (status, headers) = read_response_head(reader)?;
    let bodiless = (100..200).contains(&status) || status == 204 || status == 304;
    let body = if bodiless {
        Vec::new()
    } else {
        read_body(reader, &headers, true).ok_or_else(|| std::io::Error::other("bad body"))?
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// `POST path` with `Content-Length` framing and extra headers.
pub fn post(to: SocketAddr, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    try_post(to, path, headers, body).expect("POST exchange")
}

/// `post` that returns the connection error instead of panicking: for
/// polling a gateway whose connection may be refused or reset on the way
/// (a limit being freed, a reload landing).
pub fn try_post(
    to: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {to}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    send_raw(to, &bytes)
}

/// `POST path` with chunked framing, `chunk` bytes per chunk.
pub fn post_chunked(to: SocketAddr, path: &str, body: &[u8], chunk: usize) -> Response {
    let mut bytes = format!("POST {path} HTTP/1.1\r\nHost: {to}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").into_bytes();
    for piece in body.chunks(chunk.max(1)) {
        bytes.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        bytes.extend_from_slice(piece);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    send_raw(to, &bytes).expect("chunked POST exchange")
}

pub fn get(to: SocketAddr, path: &str) -> std::io::Result<Response> {
    send_raw(
        to,
        format!("GET {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Deterministic pseudo-random bytes (all 256 values appear), for body fidelity tests.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

// ---------------------------------------------------------------- source addresses

/// `POST path` from a chosen source address (e.g. 127.0.0.2 or ::1) to `to`.
pub fn post_from(
    source: std::net::IpAddr,
    to: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    try_post_from(source, to, path, headers, body).expect("POST exchange from a source address")
}

/// `post_from` that returns the error instead of panicking (for polls).
pub fn try_post_from(
    source: std::net::IpAddr,
    to: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    use socket2::{Domain, Socket, Type};
    let domain = if source.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket = Socket::new(domain, Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {to}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let mut writer = stream.try_clone()?;
    writer.write_all(request.as_bytes())?;
    writer.write_all(body)?;
    read_response(&mut BufReader::new(stream))
}

/// Whether `::1` can be bound on this machine.
pub fn ipv6_loopback_available() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}
