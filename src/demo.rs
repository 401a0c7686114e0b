//! `hookgate demo`: the gateway on the embedded `conf/demo.toml`, the built-in
//! echo upstream in the same process, and a few sample deliveries sent through
//! the gateway once it is ready, printing what the upstream received and what
//! the sender got back. Then it keeps serving until Ctrl-C.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError};
use crate::server::{self, RunOptions, StartError};

pub const DEMO_CONFIG: &str = include_str!("../conf/demo.toml");
const DEMO_SOURCE: &str = "conf/demo.toml (embedded)";

/// The embedded demo configuration.
pub fn config() -> Result<Config, ConfigError> {
    Config::from_toml(DEMO_CONFIG, Path::new(DEMO_SOURCE))
}

/// Runs the demo until Ctrl-C.
pub fn run() -> Result<(), DemoError> {
    let config = config()?;
    let echo = config
        .upstreams
        .get("echo")
        .and_then(|upstream| upstream.targets.first().copied())
        .ok_or(DemoError::NoEchoUpstream)?;
    let proxy = config.server.listen[0];
    let admin = config.server.admin;
    std::thread::spawn(move || {
        if wait_ready(admin, Duration::from_secs(10)) {
            send_samples(proxy, admin);
        } else {
            eprintln!("demo: the gateway did not become ready within 10 s");
        }
    });
    server::run(config, RunOptions { echo: Some(echo) })?;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Start(#[from] StartError),
    #[error("the demo config has no upstream named \"echo\"")]
    NoEchoUpstream,
}

fn wait_ready(admin: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok((status, _)) = exchange(
            admin,
            "GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n".as_bytes(),
        ) {
            if status == 200 {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn send_samples(proxy: SocketAddr, admin: SocketAddr) {
    let order =
        r#"{"event_type":"order.created","order":{"id":1001,"total":"49.90","currency":"EUR"}}"#;
    let samples: [(&str, String); 3] = [
        (
            "a JSON delivery to the orders route",
            format!(
                "POST /webhooks/orders HTTP/1.1\r\nHost: {proxy}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{order}",
                order.len()
            ),
        ),
        (
            "a GET to the POST-only orders route",
            format!("GET /webhooks/orders HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n"),
        ),
        (
            "a delivery to a path no route serves",
            format!("POST /nowhere HTTP/1.1\r\nHost: {proxy}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"),
        ),
    ];
    println!("\nhookgate demo: gateway on http://{proxy}, admin on http://{admin}\n");
    for (what, request) in samples {
        println!("--> {what}");
        match exchange(proxy, request.as_bytes()) {
            Ok((status, body)) => {
                println!("<-- the sender got HTTP {status}:");
                println!("{}\n", String::from_utf8_lossy(&body).trim_end());
            }
            Err(e) => println!("<-- failed: {e}\n"),
        }
    }
    println!("Try it yourself:");
    println!("  curl -i -X POST http://{proxy}/webhooks/orders -H 'Content-Type: application/json' -d '{{\"event_type\":\"hello\"}}'");
    println!("  curl http://{admin}/metrics | grep hookgate_requests_total");
    println!("Ctrl-C stops the demo.\n");
}

/// One HTTP/1.1 exchange with `Connection: close`: the status and the body.
fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(request)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no response head"))?;
    let status = std::str::from_utf8(&response[..head_end])
        .ok()
        .and_then(|head| head.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status code"))?;
    Ok((status, response[head_end + 4..].to_vec()))
}
