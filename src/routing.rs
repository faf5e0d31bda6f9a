//! Host and path routing: which pool serves a request.
//!
//! Matching follows nginx's server/location model, with one rule made
//! explicit: routes are grouped by host pattern, and the groups are tried
//! from most to least specific host — exact name, then `*.suffix`
//! wildcards from the longest suffix down, then routes with no host.
//! Within a group the longest matching path prefix wins. If a group has no
//! matching prefix, the next less specific group is tried, so a catch-all
//! `path_prefix: /` route without hosts serves whatever the host-specific
//! routes leave over. No match at all is a 404.
//!
//! Prefixes are plain string prefixes (`/api` matches `/api`, `/api/x` and
//! `/apix`), as in nginx `location` and Envoy `prefix`; end a prefix with
//! `/` to match whole segments only.
//!
//! The table is pure and immutable; it is rebuilt on reload.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{HostMatch, RouteConfig};

/// The result of routing a request.
#[derive(Clone, Debug)]
pub struct Route<T> {
    /// The route's name, for metrics and logs.
    pub name: Arc<str>,
    /// What the route points at (a pool in the proxy).
    pub target: T,
    prefix: Box<str>,
}

/// Routes grouped by host, each group sorted by descending prefix length.
#[derive(Debug)]
pub struct RoutingTable<T> {
    exact: HashMap<Box<str>, Vec<Route<T>>>,
    // Sorted by descending suffix length: the most specific wildcard first.
    suffixes: Vec<(Box<str>, Vec<Route<T>>)>,
    any_host: Vec<Route<T>>,
}

impl<T: Clone> RoutingTable<T> {
    /// Builds the table. `target` maps a route to its target; routes it
    /// returns `None` for are skipped (validation makes that impossible for
    /// a loaded config).
    pub fn new(routes: &[RouteConfig], mut target: impl FnMut(&RouteConfig) -> Option<T>) -> Self {
        let mut exact: HashMap<Box<str>, Vec<Route<T>>> = HashMap::new();
        let mut suffixes: Vec<(Box<str>, Vec<Route<T>>)> = Vec::new();
        let mut any_host = Vec::new();
        for rc in routes {
            let Some(t) = target(rc) else { continue };
            let route = Route {
                name: rc.name.as_str().into(),
                target: t,
                prefix: rc.path_prefix.as_str().into(),
            };
            if rc.hosts.is_empty() {
                any_host.push(route.clone());
            }
            for host in &rc.hosts {
                match host {
                    HostMatch::Exact(h) => exact
                        .entry(h.as_str().into())
                        .or_default()
                        .push(route.clone()),
                    HostMatch::Suffix(s) => match suffixes.iter_mut().find(|(k, _)| **k == **s) {
                        Some((_, v)) => v.push(route.clone()),
                        None => suffixes.push((s.as_str().into(), vec![route.clone()])),
                    },
                }
            }
        }
        // Stable sorts: among equal prefixes, the route listed first wins.
        let by_prefix =
            |v: &mut Vec<Route<T>>| v.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        exact.values_mut().for_each(by_prefix);
        suffixes.iter_mut().for_each(|(_, v)| by_prefix(v));
        by_prefix(&mut any_host);
        suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        RoutingTable {
            exact,
            suffixes,
            any_host,
        }
    }

    /// Finds the route for `host` (already lower-cased, without port) and
    /// `path`.
    pub fn resolve(&self, host: &str, path: &str) -> Option<&Route<T>> {
        let in_group = |group: &'_ [Route<T>]| -> Option<usize> {
            group.iter().position(|r| path.starts_with(&*r.prefix))
        };
        if let Some(group) = self.exact.get(host) {
            if let Some(i) = in_group(group) {
                return group.get(i);
            }
        }
        for (suffix, group) in &self.suffixes {
            if host.len() > suffix.len() && host.ends_with(&**suffix) {
                if let Some(i) = in_group(group) {
                    return group.get(i);
                }
            }
        }
        in_group(&self.any_host).and_then(|i| self.any_host.get(i))
    }
}

/// Normalises a request's host for matching: drops the port and a trailing
/// dot, lower-cases. Returns `None` for an empty host. Allocates only when
/// the host has upper-case letters.
pub fn normalize_host(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let without_port = if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port → v6
        rest.split(']').next().unwrap_or(rest)
    } else {
        match raw.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => raw,
        }
    };
    let h = without_port.strip_suffix('.').unwrap_or(without_port);
    if h.is_empty() {
        return None;
    }
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(std::borrow::Cow::Owned(h.to_ascii_lowercase()))
    } else {
        Some(std::borrow::Cow::Borrowed(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, hosts: &[&str], prefix: &str, pool: &str) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            hosts: hosts
                .iter()
                .map(|h| match h.strip_prefix('*') {
                    Some(s) => HostMatch::Suffix(s.into()),
                    None => HostMatch::Exact((*h).into()),
                })
                .collect(),
            path_prefix: prefix.into(),
            pool: pool.into(),
            middleware: Vec::new(),
        }
    }

    fn table() -> RoutingTable<String> {
        let routes = vec![
            route("api", &["api.example.com"], "/", "api"),
            route("api-v2", &["api.example.com"], "/v2/", "api2"),
            route("wild", &["*.example.com"], "/", "wild"),
            route("deep", &["*.eu.example.com"], "/", "eu"),
            route("static", &[], "/static", "static"),
            route("default", &[], "/", "default"),
        ];
        RoutingTable::new(&routes, |r| Some(r.pool.clone()))
    }

    fn pool(t: &RoutingTable<String>, host: &str, path: &str) -> Option<String> {
        t.resolve(host, path).map(|r| r.target.clone())
    }

    #[test]
    fn exact_host_then_longest_prefix() {
        let t = table();
        assert_eq!(
            pool(&t, "api.example.com", "/v2/users").as_deref(),
            Some("api2")
        );
        assert_eq!(
            pool(&t, "api.example.com", "/v1/users").as_deref(),
            Some("api")
        );
    }

    #[test]
    fn most_specific_wildcard_wins_and_apex_is_not_matched() {
        let t = table();
        assert_eq!(pool(&t, "x.eu.example.com", "/").as_deref(), Some("eu"));
        assert_eq!(pool(&t, "www.example.com", "/").as_deref(), Some("wild"));
        assert_eq!(pool(&t, "example.com", "/").as_deref(), Some("default"));
    }

    #[test]
    fn any_host_routes_catch_the_rest() {
        let t = table();
        assert_eq!(
            pool(&t, "other.org", "/static/a.css").as_deref(),
            Some("static")
        );
        assert_eq!(pool(&t, "other.org", "/x").as_deref(), Some("default"));
    }

    #[test]
    fn no_match_is_none() {
        let routes = vec![route("a", &["a.test"], "/a", "a")];
        let t = RoutingTable::new(&routes, |r| Some(r.pool.clone()));
        assert!(t.resolve("b.test", "/a").is_none());
        assert!(t.resolve("a.test", "/b").is_none());
    }

    #[test]
    fn host_normalisation() {
        assert_eq!(
            normalize_host("Api.Example.COM:8080").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(
            normalize_host("example.com.").as_deref(),
            Some("example.com")
        );
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(normalize_host(""), None);
    }
}
