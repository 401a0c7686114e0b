//! The route table: which configured route a request belongs to, by host, path
//! and method.
//!
//! Precedence, independent of the order in the file: a route with a `host` beats
//! one without; an exact path beats a prefix; a longer prefix beats a shorter one.
//! A path that matches only routes with other methods is `MethodNotAllowed`.
//! Event-based routing inside a route comes later in the request path and is not
//! owned here.

use http::Method;

use crate::config::{PathPattern, RouteSettings};

/// The outcome of matching a request head against the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMatch {
    /// Index of the route in the table (the config's order).
    Found(usize),
    NoRoute,
    /// A route matches the path but not the method.
    MethodNotAllowed(usize),
}

/// Routes sorted by specificity for matching.
#[derive(Debug)]
pub struct RouteTable {
    /// Route indexes, most specific first.
    order: Vec<usize>,
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    host: Option<String>,
    path: PathPattern,
    methods: Option<Vec<Method>>,
}

impl RouteTable {
    pub fn new(routes: &[RouteSettings]) -> Self {
        let entries: Vec<Entry> = routes
            .iter()
            .map(|route| Entry {
                host: route.host.clone(),
                path: route.path.clone(),
                methods: route.methods.clone(),
            })
            .collect();
        let mut order: Vec<usize> = (0..entries.len()).collect();
        // Stable sort keeps the file order among equally specific routes.
        order.sort_by_key(|&i| std::cmp::Reverse(specificity(&entries[i])));
        RouteTable { order, entries }
    }

    /// Matches `host` (the Host header or :authority, port ignored), `path` (no query) and `method`.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> RouteMatch {
        let host = host.map(strip_port);
        let mut method_mismatch = None;
        for &index in &self.order {
            let entry = &self.entries[index];
            if let Some(wanted) = &entry.host {
                if !host.is_some_and(|h| h.eq_ignore_ascii_case(wanted)) {
                    continue;
                }
            }
            if !path_matches(&entry.path, path) {
                continue;
            }
            match &entry.methods {
                Some(methods) if !methods.contains(method) => {
                    method_mismatch.get_or_insert(index);
                }
                _ => return RouteMatch::Found(index),
            }
        }
        method_mismatch.map_or(RouteMatch::NoRoute, RouteMatch::MethodNotAllowed)
    }
}

fn specificity(entry: &Entry) -> (bool, bool, usize) {
    let (exact, length) = match &entry.path {
        PathPattern::Exact(path) => (true, path.len()),
        PathPattern::Prefix(prefix) => (false, prefix.len()),
    };
    (entry.host.is_some(), exact, length)
}

fn path_matches(pattern: &PathPattern, path: &str) -> bool {
    match pattern {
        PathPattern::Exact(exact) => path == exact,
        PathPattern::Prefix(prefix) => match path.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
            None => false,
        },
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(
        name: &str,
        host: Option<&str>,
        path: &str,
        methods: Option<&[&str]>,
    ) -> RouteSettings {
        RouteSettings {
            name: name.to_string(),
            host: host.map(str::to_string),
            path: match path.strip_suffix("/*") {
                Some(prefix) => PathPattern::Prefix(prefix.to_string()),
                None => PathPattern::Exact(path.to_string()),
            },
            methods: methods.map(|ms| ms.iter().map(|m| m.parse().unwrap()).collect()),
            upstreams: vec!["u".to_string()],
            events: std::sync::Arc::new(
                crate::events::EventRouter::compile(None, &[], None, &["u".to_string()], &|_| true)
                    .unwrap(),
            ),
            dedupe: None,
            max_body: 1024,
            allow: crate::allowlist::Allowlist::any(),
            rate_limit: None,
            verifier: std::sync::Arc::new(crate::verify::Verifier::disabled()),
        }
    }

    #[test]
    fn precedence_and_methods() {
        let routes = [
            route("prefix", None, "/hooks/*", None),
            route("exact", None, "/hooks/stripe", Some(&["POST"])),
            route("longer", None, "/hooks/github/*", None),
            route("hosted", Some("shop.example"), "/hooks/*", None),
        ];
        let table = RouteTable::new(&routes);
        let post = Method::POST;
        let table_cases = [
            (None, "/hooks/stripe", &post, RouteMatch::Found(1)),
            (None, "/hooks/stripe", &Method::GET, RouteMatch::Found(0)),
            (None, "/hooks/github/push", &post, RouteMatch::Found(2)),
            (None, "/hooks/github", &post, RouteMatch::Found(2)),
            (None, "/hooks/githubx", &post, RouteMatch::Found(0)),
            (None, "/hooks", &post, RouteMatch::Found(0)),
            (None, "/hooksx", &post, RouteMatch::NoRoute),
            (
                Some("shop.example:8080"),
                "/hooks/stripe",
                &post,
                RouteMatch::Found(3),
            ),
            (
                Some("SHOP.example"),
                "/hooks/x",
                &post,
                RouteMatch::Found(3),
            ),
            (
                Some("other.example"),
                "/hooks/x",
                &post,
                RouteMatch::Found(0),
            ),
            (None, "/", &post, RouteMatch::NoRoute),
        ];
        for (host, path, method, expected) in table_cases {
            assert_eq!(
                table.find(host, path, method),
                expected,
                "{host:?} {path} {method}"
            );
        }
    }

    #[test]
    fn method_not_allowed_when_only_the_method_differs() {
        let routes = [route("only-post", None, "/hook", Some(&["POST"]))];
        let table = RouteTable::new(&routes);
        assert_eq!(
            table.find(None, "/hook", &Method::GET),
            RouteMatch::MethodNotAllowed(0)
        );
        assert_eq!(
            table.find(None, "/hook", &Method::POST),
            RouteMatch::Found(0)
        );
    }

    #[test]
    fn strips_ports_from_hosts() {
        assert_eq!(strip_port("a.example:80"), "a.example");
        assert_eq!(strip_port("a.example"), "a.example");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
