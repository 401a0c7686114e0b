//! The route table: which configured route a request belongs to, by host, path
//! and method.
//!
//! Precedence, independent of the order in the file: a route with a `host` beats
//! one without; an exact path beats a prefix; a longer prefix beats a shorter one.
//! A path that matches only routes with other methods is `MethodNotAllowed`.
//! Event-based routing inside a route comes later in the request path and is not
//! owned here.
//!
//! Requests are matched on the route path that `target` decided (canonical and
//! decoded), so that every spelling a common backend would send to a route's
//! handler is held to that route's checks:
//! - letters match without regard to ASCII case (Express and ASP.NET route that way);
//! - a trailing slash is ignored (Express, Rails and Spring ignore it too);
//! - a route's own path also matches its format suffixes, `/hooks/github.json`
//!   (Rails' optional `(.:format)`, Spring's suffix patterns), for an exact
//!   route and for a prefix route's base path alike (`/hooks/github/*` takes
//!   `/hooks/github.json`: an app routing `/hooks/github(.:format)` hands it to
//!   the same handler as `/hooks/github`);
//! - a route without `methods` takes the methods a webhook may use (GET, POST,
//!   PUT, PATCH, DELETE, HEAD, OPTIONS); others (CONNECT, TRACE, extension
//!   methods) are `MethodNotAllowed`.
//!
//! A `MethodNotAllowed` answer says what the target takes ([`RouteTable::allow`],
//! for `Allow`, RFC 9110 §15.5.6): the union of the methods of every route with
//! that host and path, worked out once when the table is built.

use bytes::Bytes;
use http::Method;

use crate::config::{PathPattern, RouteSettings};
use crate::target;

/// The outcome of matching a request against the table.
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
    /// The `Allow` value of its host and path (shared by the entries that have them).
    allow: Bytes,
    /// Every route of its host and path, itself included (file order): the
    /// routes a 405 speaks for (its `Allow`, its allowlist, a GET handshake).
    target_routes: Box<[usize]>,
}

/// The methods a route without `methods` takes, in the order `Allow` lists them.
const WEBHOOK_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

impl RouteTable {
    pub fn new(routes: &[RouteSettings]) -> Self {
        let targets = target_groups(routes);
        let allow = allow_values(routes, &targets);
        let entries: Vec<Entry> = routes
            .iter()
            .zip(allow)
            .zip(targets)
            .map(|((route, allow), target_routes)| Entry {
                host: route.host.clone(),
                path: route.path.clone(),
                methods: route.methods.clone(),
                allow,
                target_routes,
            })
            .collect();
        let mut order: Vec<usize> = (0..entries.len()).collect();
        // Stable sort keeps the file order among equally specific routes.
        order.sort_by_key(|&i| std::cmp::Reverse(specificity(&entries[i])));
        RouteTable { order, entries }
    }

    /// Matches `host` (the request's host without its port, as `target::Authority::host`),
    /// `path` (the route path from `target::read_target`) and `method`.
    pub fn find(&self, host: Option<&str>, path: &str, method: &Method) -> RouteMatch {
        let path = match path.strip_suffix('/') {
            Some(stripped) if !stripped.is_empty() => stripped,
            _ => path,
        };
        let mut method_mismatch: Option<usize> = None;
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
            if let Some(first) = method_mismatch {
                // The most specific host and path decide: a less specific route
                // never takes a method the specific one refused (a `GET` to a
                // `POST`-only verified route does not fall through to a catch-all).
                if !same_target(&self.entries[first], entry) {
                    break;
                }
            }
            let allowed = match &entry.methods {
                Some(methods) => methods.contains(method),
                None => is_webhook_method(method),
            };
            if allowed {
                return RouteMatch::Found(index);
            }
            method_mismatch.get_or_insert(index);
        }
        method_mismatch.map_or(RouteMatch::NoRoute, RouteMatch::MethodNotAllowed)
    }

    /// Every route with route `index`'s host and path (the target a 405's
    /// `Allow` describes), `index` included, in the config's order.
    pub fn target_routes(&self, index: usize) -> &[usize] {
        &self.entries[index].target_routes
    }

    /// The `Allow` value for `MethodNotAllowed(index)`: every method the routes
    /// with route `index`'s host and path take, e.g. `GET, HEAD, POST`. A clone
    /// of shared bytes: answering a 405 neither allocates nor formats it.
    pub fn allow(&self, index: usize) -> Bytes {
        self.entries[index].allow.clone()
    }
}

/// Per route, every route with its host and path ([`same_target_of`]), itself
/// included, in the config's order. Once per snapshot, quadratic in the number
/// of routes.
fn target_groups(routes: &[RouteSettings]) -> Vec<Box<[usize]>> {
    fn target(route: &RouteSettings) -> (&Option<String>, &PathPattern) {
        (&route.host, &route.path)
    }
    routes
        .iter()
        .map(|route| {
            (0..routes.len())
                .filter(|&j| same_target_of(target(route), target(&routes[j])))
                .collect()
        })
        .collect()
}

/// Each route's `Allow` value: the union of the methods of the routes of its
/// target group (the group `find` tries before refusing a method), the seven
/// webhook methods first in [`WEBHOOK_METHODS`]' order, then others in the
/// config's order. One value per group, shared by its routes.
fn allow_values(routes: &[RouteSettings], targets: &[Box<[usize]>]) -> Vec<Bytes> {
    let mut values: Vec<Bytes> = Vec::with_capacity(routes.len());
    for group in targets {
        // A group lists its routes in order, so its first route's value, if
        // that route is not this one, is already made.
        let first = group[0];
        if first < values.len() {
            values.push(values[first].clone());
            continue;
        }
        let mut methods: Vec<&Method> = Vec::new();
        for &j in group.iter() {
            match &routes[j].methods {
                Some(listed) => methods.extend(listed),
                None => methods.extend(&WEBHOOK_METHODS),
            }
        }
        let mut listed: Vec<&Method> = WEBHOOK_METHODS
            .iter()
            .filter(|known| methods.contains(known))
            .collect();
        for method in methods {
            if !listed.contains(&method) {
                listed.push(method);
            }
        }
        let names: Vec<&str> = listed.iter().map(|m| m.as_str()).collect();
        values.push(Bytes::from_owner(names.join(", ")));
    }
    values
}

/// Whether two entries are one target ([`same_target_of`]).
fn same_target(a: &Entry, b: &Entry) -> bool {
    same_target_of((&a.host, &a.path), (&b.host, &b.path))
}

/// Whether two routes' `(host, path)` are one target: the same host and path,
/// letter case aside (requests match both without regard to it).
pub fn same_target_of(
    (a_host, a_path): (&Option<String>, &PathPattern),
    (b_host, b_path): (&Option<String>, &PathPattern),
) -> bool {
    let same_host = match (a_host, b_host) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        (a, b) => a.is_none() && b.is_none(),
    };
    let same_path = match (a_path, b_path) {
        (PathPattern::Exact(a), PathPattern::Exact(b))
        | (PathPattern::Prefix(a), PathPattern::Prefix(b)) => a.eq_ignore_ascii_case(b),
        _ => false,
    };
    same_host && same_path
}

fn specificity(entry: &Entry) -> (bool, bool, usize) {
    let (exact, length) = match &entry.path {
        PathPattern::Exact(path) => (true, path.len()),
        PathPattern::Prefix(prefix) => (false, prefix.len()),
    };
    (entry.host.is_some(), exact, length)
}

/// The methods a route without `methods` accepts.
fn is_webhook_method(method: &Method) -> bool {
    WEBHOOK_METHODS.contains(method)
}

fn path_matches(pattern: &PathPattern, path: &str) -> bool {
    match pattern {
        PathPattern::Exact(exact) => match target::strip_prefix_ignore_case(path, exact) {
            // `exact` itself, or `exact.json` (a format suffix).
            Some(rest) => rest.is_empty() || (rest.starts_with('.') && !rest.contains('/')),
            None => false,
        },
        PathPattern::Prefix(prefix) => match target::strip_prefix_ignore_case(path, prefix) {
            // Below the prefix, the prefix itself, or `prefix.json`.
            Some(rest) => {
                rest.is_empty()
                    || rest.starts_with('/')
                    || prefix.ends_with('/')
                    || (rest.starts_with('.') && !rest.contains('/'))
            }
            None => false,
        },
    }
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
                crate::config::events::compile_router(None, &[], None, &["u".to_string()], &|_| {
                    true
                })
                .unwrap(),
            ),
            dedupe: None,
            max_body: 1024,
            max_decoded_body: 8192,
            allow: crate::allowlist::Allowlist::any(),
            rate_limit: None,
            verifier: std::sync::Arc::new(crate::verify::Verifier::disabled()),
            delivery: crate::config::Delivery::Direct,
            handshake: None,
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
            // The specific route refuses GET; the catch-all does not take it.
            (
                None,
                "/hooks/stripe",
                &Method::GET,
                RouteMatch::MethodNotAllowed(1),
            ),
            (None, "/HOOKS/Stripe", &post, RouteMatch::Found(1)),
            (None, "/hooks/stripe/", &post, RouteMatch::Found(1)),
            (None, "/hooks/stripe.json", &post, RouteMatch::Found(1)),
            (None, "/hooks/stripe.json/x", &post, RouteMatch::Found(0)),
            (None, "/hooks/stripex", &post, RouteMatch::Found(0)),
            (None, "/hooks/GitHub/push", &post, RouteMatch::Found(2)),
            (
                None,
                "/hooks/x",
                &Method::TRACE,
                RouteMatch::MethodNotAllowed(0),
            ),
            (
                None,
                "/hooks/x",
                &Method::CONNECT,
                RouteMatch::MethodNotAllowed(0),
            ),
            (None, "/hooks/github/push", &post, RouteMatch::Found(2)),
            (None, "/hooks/github", &post, RouteMatch::Found(2)),
            (None, "/hooks/githubx", &post, RouteMatch::Found(0)),
            (None, "/hooks", &post, RouteMatch::Found(0)),
            (None, "/hooksx", &post, RouteMatch::NoRoute),
            (
                Some("shop.example"),
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
    fn routes_with_the_same_path_and_other_methods_are_all_tried() {
        let routes = [
            route("catch-all", None, "/hook/*", None),
            route("challenge", None, "/hook/zoom", Some(&["GET"])),
            route("deliveries", None, "/hook/zoom", Some(&["POST"])),
        ];
        let table = RouteTable::new(&routes);
        assert_eq!(
            table.find(None, "/hook/zoom", &Method::GET),
            RouteMatch::Found(1)
        );
        assert_eq!(
            table.find(None, "/hook/zoom", &Method::POST),
            RouteMatch::Found(2)
        );
        assert_eq!(
            table.find(None, "/hook/zoom", &Method::PUT),
            RouteMatch::MethodNotAllowed(1)
        );
    }

    #[test]
    fn allow_lists_every_method_of_the_host_and_path_in_a_fixed_order() {
        let routes = [
            route("catch-all", None, "/hook/*", None),
            route("deliveries", None, "/hook/zoom", Some(&["POST", "PURGE"])),
            route("challenge", None, "/hook/zoom", Some(&["GET", "POST"])),
            route("put-post", None, "/put", Some(&["PUT", "POST"])),
            route("hosted", Some("a.example"), "/put", Some(&["PATCH"])),
            route(
                "traced",
                None,
                "/traced",
                Some(&["TRACE", "DELETE", "LINK"]),
            ),
        ];
        let table = RouteTable::new(&routes);
        let allow = |index: usize| String::from_utf8(table.allow(index).to_vec()).unwrap();
        assert_eq!(allow(0), "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
        assert_eq!(allow(1), "GET, POST, PURGE");
        assert_eq!(allow(2), "GET, POST, PURGE");
        // Another host is another target.
        assert_eq!(allow(3), "POST, PUT");
        assert_eq!(allow(4), "PATCH");
        assert_eq!(allow(5), "DELETE, TRACE, LINK");
        assert_eq!(
            table.find(None, "/hook/zoom", &Method::PUT),
            RouteMatch::MethodNotAllowed(1)
        );
    }

    /// Built once per table: a 405 gets the same bytes, not a new copy.
    #[test]
    fn allow_values_are_shared_not_rebuilt() {
        let routes = [
            route("a", None, "/hook", Some(&["POST"])),
            route("b", None, "/hook", Some(&["GET"])),
        ];
        let table = RouteTable::new(&routes);
        assert_eq!(table.allow(0).as_ptr(), table.allow(0).as_ptr());
        assert_eq!(table.allow(0).as_ptr(), table.allow(1).as_ptr());
    }

    /// Paths match without regard to letter case, so routes whose paths differ
    /// only in case are one target: each is tried, and `Allow` names them all.
    #[test]
    fn paths_differing_only_in_case_are_one_target() {
        let routes = [
            route("upper", None, "/Hook", Some(&["POST"])),
            route("lower", None, "/hook", Some(&["GET"])),
        ];
        let table = RouteTable::new(&routes);
        assert_eq!(
            table.find(None, "/hook", &Method::GET),
            RouteMatch::Found(1)
        );
        assert_eq!(
            table.find(None, "/HOOK", &Method::POST),
            RouteMatch::Found(0)
        );
        assert_eq!(
            table.find(None, "/hook", &Method::PUT),
            RouteMatch::MethodNotAllowed(0)
        );
        assert_eq!(&table.allow(0)[..], b"GET, POST");
    }
}
