//! `hookgate events list|show|replay`: the CLI side of the events API
//! (`events_api`), a plain HTTP/1.1 exchange with the admin listener.
//!
//! Owns building the requests from the command line and printing the answers.
//! The address and the admin token come from the config (`[server] admin`,
//! `admin_token`); the token is sent, never printed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::cli::{EventFilter, EventsAction};
use crate::config::Config;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a command failed (printed by `main`).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the admin listener at {addr}: {error}")]
    Connect { addr: String, error: std::io::Error },
    #[error("the admin listener answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("unreadable answer from the admin listener: {0}")]
    Answer(String),
}

impl ClientError {
    /// The process exit status: [`EXIT_USAGE`] for a command used wrongly or
    /// refused with a 4xx (an unknown event id, a bad filter, a missing
    /// token), [`EXIT_UNAVAILABLE`] when the admin listener cannot be reached,
    /// answers 5xx or answers something unreadable.
    ///
    /// [`EXIT_USAGE`]: crate::cli::EXIT_USAGE
    /// [`EXIT_UNAVAILABLE`]: crate::cli::EXIT_UNAVAILABLE
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Usage(_) => crate::cli::EXIT_USAGE,
            ClientError::Refused { status, .. } if *status < 500 => crate::cli::EXIT_USAGE,
            _ => crate::cli::EXIT_UNAVAILABLE,
        }
    }
}

/// The admin address to dial: `[server] admin`, with an unspecified IP as loopback.
fn admin_addr(config: &Config, admin: Option<&str>) -> Result<SocketAddr, ClientError> {
    if let Some(text) = admin {
        return text
            .parse()
            .map_err(|_| ClientError::Usage(format!("--admin {text:?} is not IP:PORT")));
    }
    let mut addr = config.server.admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Ok(addr)
}

fn filter_pairs(filter: &EventFilter) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("route", filter.route.clone()),
        ("status", filter.status.clone()),
        ("since", filter.since.clone()),
    ]
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (name, value) in pairs {
        if let Some(value) = value {
            out.append_pair(name, value);
        }
    }
    out.finish()
}

/// One exchange; the JSON answer of a 2xx.
fn exchange(
    config: &Config,
    addr: SocketAddr,
    method: &str,
    target: &str,
) -> Result<Value, ClientError> {
    let connect_error = |error| ClientError::Connect {
        addr: addr.to_string(),
        error,
    };
    let mut stream = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(connect_error)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(connect_error)?;
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 0\r\n"
    )
    .into_bytes();
    if let Some(token) = &config.server.admin_token {
        request.extend_from_slice(b"Authorization: Bearer ");
        request.extend_from_slice(token.expose());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    stream.write_all(&request).map_err(connect_error)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(connect_error)?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ClientError::Answer("no end of head".to_string()))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::Answer("no status".to_string()))?;
    if !(200..300).contains(&status) {
        return Err(ClientError::Refused {
            status,
            body: body.trim().to_string(),
        });
    }
    serde_json::from_str(body).map_err(|e| ClientError::Answer(e.to_string()))
}

/// A one-line summary of an event for `list`.
fn line(event: &Value) -> String {
    let deliveries: Vec<String> = event["deliveries"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|d| {
                    format!(
                        "{}:{}({})",
                        d["upstream"].as_str().unwrap_or("?"),
                        d["status"].as_str().unwrap_or("?"),
                        d["tries"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{}  {}  {:<10} {:<9} {:<20} {}",
        event["id"].as_str().unwrap_or("?"),
        event["received_at"].as_str().unwrap_or("?"),
        event["route"].as_str().unwrap_or("?"),
        event["status"].as_str().unwrap_or("?"),
        event["event"].as_str().unwrap_or("-"),
        deliveries.join(" ")
    )
}

/// Runs one `hookgate events` command; what to print on success.
pub fn run(
    config: &Config,
    admin: Option<&str>,
    action: &EventsAction,
) -> Result<String, ClientError> {
    let addr = admin_addr(config, admin)?;
    match action {
        EventsAction::List {
            filter,
            limit,
            before,
        } => {
            let mut pairs = filter_pairs(filter);
            pairs.push(("limit", Some(limit.to_string())));
            pairs.push(("before", before.clone()));
            let target = format!("/events?{}", query(&pairs));
            let answer = exchange(config, addr, "GET", &target)?;
            let mut out = String::new();
            let events = answer["events"].as_array().cloned().unwrap_or_default();
            for event in &events {
                out.push_str(&line(event));
                out.push('\n');
            }
            if events.is_empty() {
                out.push_str("(no events)\n");
            }
            if let Some(next) = answer["next"].as_str() {
                out.push_str(&format!("# more: --before {next}\n"));
            }
            Ok(out)
        }
        EventsAction::Show { id } => {
            let answer = exchange(
                config,
                addr,
                "GET",
                &format!("/events/{}", path_segment(id)?),
            )?;
            Ok(format!(
                "{}\n",
                serde_json::to_string_pretty(&answer).unwrap_or_default()
            ))
        }
        EventsAction::Replay { ids, filter } => {
            let filtered =
                filter.route.is_some() || filter.status.is_some() || filter.since.is_some();
            match (ids.is_empty(), filtered) {
                (true, false) => Err(ClientError::Usage(
                    "name event ids, or filters (--route, --status, --since)".to_string(),
                )),
                (false, true) => Err(ClientError::Usage(
                    "give event ids or filters, not both".to_string(),
                )),
                (true, true) => {
                    let target = format!("/events/replay?{}", query(&filter_pairs(filter)));
                    let answer = exchange(config, addr, "POST", &target)?;
                    Ok(format!(
                        "replayed {} event(s), {} deliver{}\n",
                        answer["events"],
                        answer["deliveries"],
                        plural(&answer["deliveries"])
                    ))
                }
                (false, false) => {
                    let mut out = String::new();
                    for id in ids {
                        let target = format!("/events/{}/replay", path_segment(id)?);
                        let answer = exchange(config, addr, "POST", &target)?;
                        out.push_str(&format!(
                            "{id}: {} deliver{} replayed\n",
                            answer["deliveries"],
                            plural(&answer["deliveries"])
                        ));
                    }
                    Ok(out)
                }
            }
        }
    }
}

/// `"y"` or `"ies"` for a count of deliveries.
fn plural(count: &Value) -> &'static str {
    if *count == 1 {
        "y"
    } else {
        "ies"
    }
}

/// An event id as a path segment: hex digits only.
fn path_segment(id: &str) -> Result<&str, ClientError> {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(ClientError::Usage(format!(
            "{id:?} is not an event id (hex digits, as `events list` prints them)"
        )))
    }
}
