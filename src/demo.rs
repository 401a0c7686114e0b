//! `hookgate demo`: the gateway on the embedded `conf/demo.toml`, the built-in
//! echo upstream in the same process, and a few sample deliveries sent through
//! the gateway once it is ready, printing what the upstream received and what
//! the sender got back. Then it keeps serving until Ctrl-C.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError};
use crate::metrics;
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
    let samples = samples(&config, proxy)?;
    std::thread::spawn(move || {
        if wait_ready(admin, Duration::from_secs(10)) {
            send_samples(&samples, proxy, admin);
        } else {
            eprintln!("demo: the gateway did not become ready within 10 s");
        }
    });
    let options = RunOptions {
        echo: Some(echo),
        ..RunOptions::default()
    };
    server::run(config, options)?;
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
    #[error("signing the demo delivery: {0}")]
    Sign(String),
}

/// Waits until `/readyz` answers 200 and the gateway counts the echo upstream
/// healthy. Ready only means the first health checks ran, and the echo
/// service starts beside the health checker: a first check that came before
/// it listened found it down, and every sample then got 503.
fn wait_ready(admin: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if answers(admin, "/readyz").is_some() && echo_healthy(admin) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The body of a 200 answer to `GET path` on the admin listener.
fn answers(admin: SocketAddr, path: &str) -> Option<Vec<u8>> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
    match exchange(admin, request.as_bytes()) {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// Whether `/metrics` shows a healthy target for the upstream `echo`.
fn echo_healthy(admin: SocketAddr) -> bool {
    let series = format!(
        "{}{{upstream=\"echo\"}} ",
        metrics::UPSTREAM_TARGETS_HEALTHY
    );
    answers(admin, "/metrics").is_some_and(|body| {
        String::from_utf8_lossy(&body).lines().any(|line| {
            line.strip_prefix(&series)
                .and_then(|value| value.trim().parse::<f64>().ok())
                .is_some_and(|healthy| healthy >= 1.0)
        })
    })
}

/// The sample deliveries: (what it shows, the raw HTTP/1.1 request).
fn samples(config: &Config, proxy: SocketAddr) -> Result<Vec<(&'static str, String)>, DemoError> {
    let push = r#"{"ref":"refs/heads/main","repository":{"full_name":"octo/demo"},"pusher":{"name":"octo"}}"#;
    // Signed with the route's own verifier, as `hookgate sign` would.
    let route = config.route("github").ok_or_else(|| {
        DemoError::Sign("the demo config has no route named \"github\"".to_string())
    })?;
    let headers = http::HeaderMap::new();
    let request = crate::verify::Request {
        method: "POST",
        path_and_query: "/webhooks/github",
        headers: &headers,
        body: push.as_bytes(),
    };
    let signed = route
        .verifier
        .sign(&request, std::time::SystemTime::now())
        .map_err(DemoError::Sign)?;
    let signature: String = signed
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    let tampered = push.replace("octo/demo", "evil/demo");
    let order =
        r#"{"event_type":"order.created","order":{"id":1001,"total":"49.90","currency":"EUR"}}"#;
    Ok(vec![
        (
            "a signed GitHub push (verified, then forwarded to the echo upstream)",
            format!(
                "POST /webhooks/github HTTP/1.1\r\nHost: {proxy}\r\nX-GitHub-Event: push\r\nContent-Type: application/json\r\n{signature}Content-Length: {}\r\nConnection: close\r\n\r\n{push}",
                push.len()
            ),
        ),
        (
            "the same push with its body altered (the signature no longer matches)",
            format!(
                "POST /webhooks/github HTTP/1.1\r\nHost: {proxy}\r\nX-GitHub-Event: push\r\nContent-Type: application/json\r\n{signature}Content-Length: {}\r\nConnection: close\r\n\r\n{tampered}",
                tampered.len()
            ),
        ),
        (
            "an unsigned JSON delivery to the orders route (no verification configured)",
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
    ])
}

fn send_samples(samples: &[(&str, String)], proxy: SocketAddr, admin: SocketAddr) {
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
    println!("  cargo run --release -- sign -c conf/demo.toml --route github    # prints a signed curl line");
    println!("  curl -i -X POST http://{proxy}/webhooks/orders -H 'Content-Type: application/json' -d '{{\"event_type\":\"hello\"}}'");
    println!("  curl -s http://{admin}/metrics | grep hookgate_");
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
