//! A real `redis-server` for tests of several gateways sharing one Redis
//! (issue 15): started on a loopback port in a temp directory with
//! `--appendonly yes --appendfsync always --save ""`, so a `kill -9` of Redis
//! loses nothing it answered, and restarted on the same port and directory.
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
        for _ in 0..5 {
            let mut server = RedisServer {
                child: None,
                addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
                dir: tempfile::tempdir().expect("temp dir"),
            };
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    /// Starts the process on `addr` in `dir`; whether it answers PING in 10 s.
    fn spawn(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.path().join("redis.log")).expect("redis log");
        let child = Command::new(REDIS_SERVER)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--dir"])
            .arg(self.dir.path())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--maxmemory-policy",
                "noeviction",
                "--daemonize",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start redis-server (is the redis-server package installed?)");
        let pid = child.id();
        self.child = Some(child);
        // The port was free a moment ago: another test's server may have taken
        // it since, and would answer the PING. Ours is the one whose
        // `process_id` is our child's (ours then exits, unable to bind).
        let up = wait_until(Duration::from_secs(10), || {
            self.ping()
                && self
                    .command("INFO server")
                    .is_some_and(|info| info.contains(&format!("process_id:{pid}\r\n")))
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
        self.command("PING")
            .is_some_and(|reply| reply.starts_with("+PONG"))
    }

    /// Sends one inline command and returns the first reply chunk, if any.
    pub fn command(&self, line: &str) -> Option<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        stream.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut buffer = [0u8; 4096];
        let n = stream.read(&mut buffer).ok()?;
        Some(String::from_utf8_lossy(&buffer[..n]).into_owned())
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

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
