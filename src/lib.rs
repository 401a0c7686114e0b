//! hookgate: a webhook gateway built on Pingora. See README.md for the request path.

pub mod config;
pub mod secret;
pub mod units;
