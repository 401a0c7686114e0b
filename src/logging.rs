//! Log output: human-readable text (default) or one JSON object per line
//! (`[server] log_format = "json"`), filtered by `HOOKGATE_LOG` (default `info`).
//!
//! The access log is the `hookgate::access` target, one event per request,
//! written by the proxy's logging phase; this module only decides the format.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, event fields at the top level.
    Json,
}

/// Installs the global subscriber writing to stderr. Call once.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("HOOKGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}
