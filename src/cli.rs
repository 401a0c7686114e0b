//! The command line: `serve` (default), `check`, `sign`, `providers`, `events` and `demo`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub const DEFAULT_CONFIG: &str = "conf/hookgate.toml";

/// Exit status for a configuration error (sysexits EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;
/// Exit status for a command used wrongly, e.g. an unknown route or a command
/// line the parser refuses (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit status when the running gateway cannot be reached or failed to answer
/// (sysexits EX_UNAVAILABLE): `hookgate events` with the gateway down.
pub const EXIT_UNAVAILABLE: u8 = 69;
/// Exit status when the gateway cannot start (ports taken, TLS files unusable).
pub const EXIT_START: i32 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "hookgate",
    version,
    about = "A webhook gateway: verify, allow, limit and route webhooks in front of your apps"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Configuration file (for `serve`, the default command).
    #[arg(short, long, global = true, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default command).
    Serve,
    /// Validate the configuration and print the route table; exit 0, or 78 listing every error.
    Check,
    /// List the provider presets (`verify = { provider = "NAME", ... }`): scheme, event type,
    /// delivery id and the documentation each row was written from.
    Providers {
        /// Print the table as Markdown (the README's provider table).
        #[arg(long)]
        markdown: bool,
    },
    /// Run the gateway on the embedded demo config with a built-in echo upstream and send sample deliveries.
    Demo,
    /// Print the headers of a correctly signed test delivery for a route, and a ready curl line.
    Sign {
        /// The route (by name) whose `verify` settings sign the delivery.
        #[arg(long)]
        route: String,
        /// The body to sign; a small JSON sample when omitted.
        #[arg(long)]
        body: Option<PathBuf>,
        /// Where the curl line sends it (default: the first listener + the route's path).
        #[arg(long)]
        url: Option<String>,
        /// The event type, sent in the provider's event header (GitHub, GitLab, Shopify,
        /// Linear, Twitch); providers that carry it in the body take it from `--body`.
        #[arg(long)]
        event: Option<String>,
    },
    /// Remove the Asana handshake secret kept for a route, so that its next handshake sets a
    /// new one (with `[storage]`, stop the gateway first).
    ForgetHandshake {
        /// The route (by name) with `handshake = "asana"`.
        #[arg(long)]
        route: String,
    },
    /// Inspect and replay queued deliveries, through the admin API of the running gateway.
    Events {
        #[command(subcommand)]
        action: EventsAction,
        /// The admin listener to talk to (default: `[server] admin` of the config).
        #[arg(long, global = true)]
        admin: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsAction {
    /// List stored events, newest first.
    List {
        #[command(flatten)]
        filter: EventFilter,
        /// Events shown at most (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Page on: events older than this id (the `next` of the previous page).
        #[arg(long)]
        before: Option<String>,
    },
    /// Show one event: its head, body and every delivery attempt.
    Show { id: String },
    /// Deliver events again: the given ids, or every event matching the filters.
    Replay {
        ids: Vec<String>,
        #[command(flatten)]
        filter: EventFilter,
    },
}

/// Which events `events list` and `events replay` cover.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EventFilter {
    #[arg(long)]
    pub route: Option<String>,
    /// pending, delivered or dead.
    #[arg(long)]
    pub status: Option<String>,
    /// Received within this long, e.g. 1h or 30m.
    #[arg(long)]
    pub since: Option<String>,
}
