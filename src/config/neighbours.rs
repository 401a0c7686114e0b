//! The `hookgate check` warning about a prefix route with weaker checks beside a
//! stronger route (issue 12's one-reading rule for paths; the matching rule it
//! mirrors is `routing`'s: a case-insensitive prefix).

use super::{PathPattern, RouteSettings};
use crate::target;

/// Warnings for `hookgate check`: a prefix route with weaker checks (no
/// `verify`, `allow` or `rate_limit` where its neighbour has one) whose paths
/// lie beside a route with stronger ones. Every spelling of the stronger
/// route's own path is held to its checks (see the module doc), but paths
/// below it reach the app through the weaker route, and an app that serves its
/// handler there too (a framework's wildcard or nested routes) is open.
pub(super) fn weaker_neighbours(routes: &[RouteSettings]) -> Vec<String> {
    let mut warnings = Vec::new();
    for strong in routes {
        let strong_path = match &strong.path {
            PathPattern::Exact(path) | PathPattern::Prefix(path) => path,
        };
        for weak in routes {
            let PathPattern::Prefix(prefix) = &weak.path else {
                continue;
            };
            let host_wider = weak.host.is_none() && strong.host.is_some();
            let beside = !std::ptr::eq(strong, weak)
                && target::strip_prefix_ignore_case(strong_path, prefix).is_some()
                && (strong_path.len() > prefix.len() || host_wider)
                && (weak.host.is_none() || weak.host == strong.host);
            if !beside {
                continue;
            }
            let mut missing = Vec::new();
            if strong.verifier.scheme() != "none" && weak.verifier.scheme() == "none" {
                missing.push("verify");
            }
            if strong.allow.set().is_some() && weak.allow.set().is_none() {
                missing.push("allow");
            }
            if strong.rate_limit.is_some() && weak.rate_limit.is_none() {
                missing.push("rate_limit");
            }
            if missing.is_empty() {
                continue;
            }
            let strong_at = match &strong.host {
                Some(host) => format!("{host}{strong_path}"),
                None => strong_path.to_string(),
            };
            warnings.push(format!(
                "route {:?} ({prefix}/*) has no {} unlike route {:?} ({strong_at}) beside it: \
                 every spelling of {strong_at} (a trailing '/', any letter case, a .format \
                 suffix) is held to {:?}'s checks, but {} reach the app through {:?}; make \
                 sure the app serves {:?}'s handler only there",
                weak.name,
                missing.join(", "),
                strong.name,
                strong.name,
                if host_wider {
                    "requests with another Host"
                } else {
                    "paths below it"
                },
                weak.name,
                strong.name,
            ));
        }
    }
    warnings
}
