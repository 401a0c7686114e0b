//! A config builder for the end-to-end tests, so a test names only what it is
//! about (an upstream, a route and the keys under test) instead of repeating
//! TOML blocks.
//!
//! Owns: `[upstreams.*]` and `[[routes]]` sections, extra tables, and extra
//! lines for `[server]`. Does not own: the `[server]` section itself and its
//! listeners (`Gateway` writes them on port 0), nor what a key means: extra
//! lines are written as given, and hookgate's validation judges them.
//!
//! ```ignore
//! let gateway = Setup::new()
//!     .upstream(&app)
//!     .route("hooks", "/hooks/*", "app", "max_body = \"1KiB\"")
//!     .start();
//! ```

use std::fmt::Write;
use std::net::SocketAddr;

use super::{Gateway, Upstream};

/// Upstream and route sections, plus extra `[server]` lines.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    server: Vec<String>,
    tables: String,
    upstreams: String,
    routes: String,
}

impl Setup {
    pub fn new() -> Setup {
        Setup::default()
    }

    /// A line inside `[server]`, e.g. `max_body = "6MiB"`.
    pub fn server(mut self, line: &str) -> Setup {
        self.server.push(line.to_string());
        self
    }

    /// A whole table, e.g. `[ip_sets]` with its keys, written before the upstreams.
    pub fn table(mut self, toml: &str) -> Setup {
        let _ = writeln!(self.tables, "{toml}");
        self
    }

    /// `[upstreams.NAME]` for a recording upstream, under its own name.
    pub fn upstream(self, upstream: &Upstream) -> Setup {
        self.upstream_named(&upstream.name, &[upstream.addr], "")
    }

    /// `[upstreams.NAME]` with these targets and extra lines (`timeout = "300ms"`).
    pub fn upstream_named(mut self, name: &str, targets: &[SocketAddr], extra: &str) -> Setup {
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let _ = writeln!(
            self.upstreams,
            "[upstreams.{name}]\ntargets = [{}]\n{extra}",
            targets.join(", ")
        );
        self
    }

    /// A `[[routes]]` entry forwarding `path` to one upstream, with extra lines
    /// (`verify = { ... }`, `methods = [...]`, `[[routes.events]]` tables).
    pub fn route(self, name: &str, path: &str, upstream: &str, extra: &str) -> Setup {
        self.route_to(name, path, &format!("\"{upstream}\""), extra)
    }

    /// A fan-out route: the first upstream answers, the others get copies.
    pub fn fan_out(self, name: &str, path: &str, upstreams: &[&str], extra: &str) -> Setup {
        let list: Vec<String> = upstreams.iter().map(|u| format!("\"{u}\"")).collect();
        self.route_to(name, path, &format!("[{}]", list.join(", ")), extra)
    }

    fn route_to(mut self, name: &str, path: &str, upstream: &str, extra: &str) -> Setup {
        let _ = writeln!(
            self.routes,
            "\n[[routes]]\nname = \"{name}\"\npath = \"{path}\"\nupstream = {upstream}\n{extra}"
        );
        self
    }

    /// Everything after `[server]`: tables, upstreams, then routes (for `Gateway::rewrite`).
    pub fn rest(&self) -> String {
        format!("{}{}{}", self.tables, self.upstreams, self.routes)
    }

    fn server_lines(&self) -> String {
        self.server.join("\n")
    }

    /// Starts the gateway and waits until it is ready.
    #[track_caller]
    pub fn start(&self) -> Gateway {
        Gateway::start_with_server(&self.server_lines(), &self.rest())
    }

    /// Starts the gateway with `env` added to its environment.
    #[track_caller]
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Gateway {
        Gateway::start_with_env(&self.server_lines(), &self.rest(), env)
    }

    /// Starts the gateway with more proxy listeners (e.g. `"[::1]:0"`).
    #[track_caller]
    pub fn start_with_listeners(&self, extra_listeners: &[&str]) -> Gateway {
        Gateway::start_with_listeners(extra_listeners, &self.server_lines(), &self.rest())
    }
}
