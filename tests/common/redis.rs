//! A real `redis-server` for tests of several gateways sharing one Redis
//! (issue 15): started on a loopback port in a temp directory with
//! `--appendonly yes --appendfsync always --save ""`, so a `kill -9` of Redis
//! loses nothing it answered, and restarted on the same port and directory.
//! Also a replica of another ([`RedisServer::replica_of`]), a Sentinel
//! ([`RedisServer::sentinel`], the same binary with `--sentinel`, on a config
//! file of its own that it rewrites), and a TLS-only server
//! ([`RedisServer::start_tls`], Debian's build has TLS).
//!
//! Use it from a test file with `mod common;` and `use common::redis::RedisServer;`.
//! Every wait is bounded; the server is killed on drop.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// The Debian package's binary (`.ci/run` and `scripts/setup` install it).
pub const REDIS_SERVER: &str = "redis-server";

/// A running `redis-server`, killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    kind: Kind,
    /// Sent with `AUTH` before each of the kit's own commands.
    password: Option<String>,
}

/// What the process runs as.
#[derive(Clone)]
enum Kind {
    /// A data node, with these arguments after the kit's own.
    Data(Vec<String>),
    /// A Sentinel; `sentinel.conf` in its directory is written from this text
    /// (with `port` added) on the first start only: the Sentinel rewrites it.
    Sentinel(String),
    /// TLS only (`--port 0 --tls-port PORT`), with these arguments after.
    Tls(Vec<String>),
}

/// The TLS files of a [`RedisServer::start_tls`] server (PEM paths).
pub struct TlsFiles<'a> {
    pub cert: &'a std::path::Path,
    pub key: &'a std::path::Path,
    pub ca: &'a std::path::Path,
    /// `--tls-auth-clients yes`: a client certificate signed by `ca` is required.
    pub auth_clients: bool,
}

/// A port on 127.0.0.1 free a moment ago. Redis binds it itself, so it cannot
/// be handed over held; [`RedisServer::start`] tries again on another port if
/// the server could not take it.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits (up to 10 s) until it
    /// answers `PING`.
    #[track_caller]
    pub fn start() -> RedisServer {
        RedisServer::start_kind(Kind::Data(Vec::new()), None)
    }

    /// A replica of `master` (`--replicaof`), waiting (up to 10 s) until the
    /// master counts it as online.
    #[track_caller]
    pub fn replica_of(master: &RedisServer) -> RedisServer {
        let args = vec![
            "--replicaof".to_string(),
            master.addr.ip().to_string(),
            master.addr.port().to_string(),
        ];
        let replica = RedisServer::start_kind(Kind::Data(args), None);
        let online = wait_until(Duration::from_secs(10), || {
            master
                .request(&["INFO replication"])
                .is_some_and(|reply| reply[0].contains("state=online"))
        });
        assert!(
            online,
            "the replica did not sync; its log:\n{}",
            replica.log()
        );
        replica
    }

    /// A Sentinel watching `master` as `name` with quorum 1, a fast failover
    /// (`down-after-milliseconds 500`, `failover-timeout 3000`) and, when
    /// given, `requirepass` for clients of the Sentinel itself.
    #[track_caller]
    pub fn sentinel(master: &RedisServer, name: &str, password: Option<&str>) -> RedisServer {
        let mut conf = format!(
            "bind 127.0.0.1\nprotected-mode no\n\
             sentinel monitor {name} {} {} 1\n\
             sentinel down-after-milliseconds {name} 500\n\
             sentinel failover-timeout {name} 3000\n\
             sentinel parallel-syncs {name} 1\n",
            master.addr.ip(),
            master.addr.port()
        );
        if let Some(password) = password {
            conf.push_str(&format!("requirepass {password}\n"));
        }
        RedisServer::start_kind(Kind::Sentinel(conf), password)
    }

    /// A TLS-only server (no plain-text port) with `files`.
    #[track_caller]
    pub fn start_tls(files: &TlsFiles<'_>) -> RedisServer {
        let path = |p: &std::path::Path| p.to_str().expect("UTF-8 path").to_string();
        let args = vec![
            "--tls-cert-file".to_string(),
            path(files.cert),
            "--tls-key-file".to_string(),
            path(files.key),
            "--tls-ca-cert-file".to_string(),
            path(files.ca),
            "--tls-auth-clients".to_string(),
            if files.auth_clients { "yes" } else { "no" }.to_string(),
        ];
        RedisServer::start_kind(Kind::Tls(args), None)
    }

    #[track_caller]
    fn start_kind(kind: Kind, password: Option<&str>) -> RedisServer {
        for _ in 0..5 {
            let mut server = RedisServer {
                child: None,
                addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
                dir: tempfile::tempdir().expect("temp dir"),
                kind: kind.clone(),
                password: password.map(str::to_string),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    /// Starts the process on `addr` in `dir`; whether it is ready in 10 s
    /// (answers PING; a TLS server: logs that it accepts connections).
    fn spawn(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("redis log");
        let port = self.addr.port().to_string();
        let mut command = Command::new(REDIS_SERVER);
        let durable = [
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
        ];
        match &self.kind {
            Kind::Data(extra) => {
                command
                    .args(["--bind", "127.0.0.1", "--port", &port, "--dir"])
                    .arg(self.dir.path())
                    .args(durable)
                    .args(extra);
            }
            Kind::Tls(extra) => {
                command
                    .args(["--bind", "127.0.0.1", "--port", "0", "--tls-port", &port])
                    .arg("--dir")
                    .arg(self.dir.path())
                    .args(durable)
                    .args(extra);
            }
            Kind::Sentinel(conf) => {
                let path = self.dir.path().join("sentinel.conf");
                if !path.exists() {
                    std::fs::write(&path, format!("port {port}\n{conf}")).expect("sentinel.conf");
                }
                command.arg(&path).arg("--sentinel");
            }
        }
        let child = command
            .args(["--daemonize", "no"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start redis-server (is the redis-server package installed?)");
        let pid = child.id();
        self.child = Some(child);
        // The port was free a moment ago: another test's server may have taken
        // it since, and would answer the PING. Ours is the one whose
        // `process_id` is our child's (ours then exits, unable to bind). A
        // TLS-only server is read from its own log.
        let up = wait_until(Duration::from_secs(10), || match self.kind {
            Kind::Tls(_) => self.log().contains("Ready to accept connections"),
            _ => {
                self.ping()
                    && self.command("INFO server").is_some_and(|info| {
                        let ours = format!("process_id:{pid}");
                        info.split(['\r', '\n', ' ']).any(|field| field == ours)
                    })
            }
        });
        if !up {
            self.kill();
        }
        up
    }

    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Whether the server answers `PING` now (one try, bounded by 1 s).
    pub fn ping(&self) -> bool {
        // `command` answers "+PONG", `request` (with a password) "PONG".
        self.command("PING")
            .is_some_and(|reply| reply.trim_start_matches('+').starts_with("PONG"))
    }

    /// Sends one inline command and returns the first reply chunk, if any.
    pub fn command(&self, line: &str) -> Option<String> {
        if self.password.is_some() {
            return self.request(&[line]).map(|mut replies| replies.remove(0));
        }
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        stream.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut buffer = [0u8; 4096];
        let n = stream.read(&mut buffer).ok()?;
        Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
    }

    /// Sends inline commands on one connection (after `AUTH` if the server
    /// has a password) and returns one reply per command, each flattened to
    /// text (an array's elements joined by spaces, an error as `-ERR …`).
    /// Every read is bounded by 5 s.
    pub fn request(&self, lines: &[&str]) -> Option<Vec<String>> {
        let stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut text = String::new();
        if let Some(password) = &self.password {
            text.push_str(&format!("AUTH {password}\r\n"));
        }
        for line in lines {
            text.push_str(line);
            text.push_str("\r\n");
        }
        (&stream).write_all(text.as_bytes()).ok()?;
        let mut reader = std::io::BufReader::new(&stream);
        if self.password.is_some() {
            read_reply(&mut reader)?;
        }
        lines.iter().map(|_| read_reply(&mut reader)).collect()
    }

    /// Runs `SET` then `WAIT 1 5000` on one connection: returns once a
    /// replica acknowledged every write the master took so far (WAIT counts
    /// this connection's writes, and the SET comes after everyone else's).
    #[track_caller]
    pub fn wait_for_replica(&self) {
        let replies = self
            .request(&["SET hookgate-test:wait 1", "WAIT 1 5000"])
            .expect("SET + WAIT");
        assert_eq!(replies[1], "1", "no replica acknowledged: {replies:?}");
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME name` on this Sentinel: the port.
    pub fn master_port(&self, name: &str) -> Option<u16> {
        let reply = self.request(&[&format!("SENTINEL GET-MASTER-ADDR-BY-NAME {name}")])?;
        reply[0].split(' ').nth(1)?.parse().ok()
    }

    /// Sends `signal` (`"STOP"`, `"CONT"`) to the server: a paused Redis keeps
    /// its sockets open and runs what was queued on them when it resumes.
    pub fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} redis-server");
    }

    /// Kills the server with SIGKILL (a crash) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (its append-only file
    /// brings back everything it answered) and waits until it answers.
    #[track_caller]
    pub fn restart(&mut self) {
        self.kill();
        let up = (0..3).any(|_| self.spawn());
        assert!(up, "redis-server did not restart on {}", self.addr);
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

/// One RESP reply, flattened to text.
fn read_reply(reader: &mut impl std::io::BufRead) -> Option<String> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" | ":" => Some(rest.to_string()),
        "-" => Some(line.to_string()),
        "$" => {
            let len: i64 = rest.parse().ok()?;
            if len < 0 {
                return Some(String::new());
            }
            let mut bytes = vec![0u8; len as usize + 2];
            reader.read_exact(&mut bytes).ok()?;
            bytes.truncate(len as usize);
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        "*" => {
            let count: i64 = rest.parse().ok()?;
            let items: Option<Vec<String>> =
                (0..count.max(0)).map(|_| read_reply(reader)).collect();
            Some(items?.join(" "))
        }
        _ => None,
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
