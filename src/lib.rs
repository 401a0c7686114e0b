//! hookgate: a webhook gateway built on Pingora. The request path is described
//! in `proxy`; the README has the user-facing contract.

pub mod admin; // /metrics /healthz /readyz
pub mod admission; // in-flight and connection caps, the in-flight gauge
pub mod allowlist; // CIDR sets, trusted proxies, client address
pub mod cli; // command-line definition
pub mod cluster; // the shared Redis of several instances: connection, deadlines, up/down
pub mod config; // TOML file -> validated Config, errors with line and key
pub mod dedupe; // duplicate-delivery suppression, bounded
pub mod delivery; // queued delivery: durable store, background delivery, replay
pub mod demo; // `hookgate demo`
pub mod echo; // built-in echo upstream for the demo
pub mod events; // event extraction and event-based routing rules
pub mod fanout; // background copies to secondary upstreams, bounded, with retries
pub mod health; // background health checks
pub mod housekeeping; // periodic pruning of per-key limiter state
pub mod logging; // text or JSON log lines
pub mod metrics; // every metric name and its registration
pub mod problem; // one configuration problem: key path and message, values never quoted
pub mod proxy; // the request path: a Pingora HttpServerApp
pub mod ratelimit; // governor limiters with bounded keyed state
pub mod reload; // SIGHUP / file watch / POST /reload -> validate -> swap
pub mod routing; // host + path + method -> route
pub mod secret; // redacted secret newtype
pub mod server; // assembling and running the Pingora server
pub mod sign; // `hookgate sign`
pub mod state; // the atomically swapped runtime snapshot
pub mod target; // one reading of the request target: canonical path, authority
pub mod units; // "5s", "1MiB"
pub mod upstream; // upstream pools, round robin, health
pub mod verify; // signature and token verification, one file per scheme
