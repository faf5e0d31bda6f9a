//! Route middleware at run time: the chain a route's requests go through
//! after routing and before a pool is picked.
//!
//! A route lists named middleware (`routes[].middleware`); the snapshot
//! holds one [`Chain`] per route that lists any, and none for the others,
//! so a route without middleware pays one `Option` check. Each step either
//! lets the request on (possibly changed: fields, path) or answers it
//! itself with a [`Refusal`] (401, 403, 429, a redirect, ...), which the
//! proxy turns into the response, logs with the middleware's name and
//! counts in `weir_middleware_rejections_total{route, middleware, reason}`.
//! The response side (`headers: response:`) applies the edits of the steps
//! that ran, so a refusal passes back through the steps before it, as in
//! Traefik's wrapping model.
//!
//! Middleware instances live in a [`Set`] keyed by name. A reload builds
//! the next set from the new config and keeps every instance whose config
//! is unchanged, so its state (rate-limit buckets, key caches) survives;
//! chains are rebuilt every time (they are cheap: names and handles).
//!
//! Each kind has its own module; the pure ones (`headers`, `rewrite`,
//! `redirect`, `ip_filter`) only compute on the request; `rate_limit`
//! keeps bounded per-route buckets in the instance; `basic_auth`
//! verifies bcrypt hashes on the blocking pool and `forward_auth` asks an
//! auth service over its own connection pool; `jwt` reads a key cache
//! that its own task refreshes. The client address rule they share is
//! [`client_ip`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, Version};
use tokio::time::Instant;

use crate::config::middleware::{HeaderOps, MiddlewareConfig, MiddlewareKind};
use crate::config::RouteConfig;
use crate::error::Refusal;
use crate::http1::RawFields;
use crate::metrics::{Metrics, MiddlewareMetrics};

pub mod basic_auth;
pub mod client_ip;
pub mod forward_auth;
pub mod ip_filter;
pub mod jwt;
pub mod rate_limit;
pub mod redirect;
pub mod rewrite;

/// A request as middleware see and change it.
pub struct Request<'a> {
    /// The method.
    pub method: &'a Method,
    /// The request target; a rewrite changes its path.
    pub uri: &'a mut Uri,
    /// The client's HTTP version.
    pub version: Version,
    /// The request's fields.
    pub fields: Fields<'a>,
    /// The host as the client sent it (with its port, if any); "" if none.
    pub host: &'a str,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// The socket peer's address.
    pub peer: IpAddr,
    /// When the request's head arrived.
    pub now: Instant,
    client_ip: Option<IpAddr>,
}

impl<'a> Request<'a> {
    /// A view for the chain.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        method: &'a Method,
        uri: &'a mut Uri,
        version: Version,
        fields: Fields<'a>,
        host: &'a str,
        tls: bool,
        peer: IpAddr,
        now: Instant,
    ) -> Self {
        Request {
            method,
            uri,
            version,
            fields,
            host,
            tls,
            peer,
            now,
            client_ip: None,
        }
    }

    /// The client's address by the `trusted_proxies` rule
    /// ([`client_ip::resolve`]), worked out once per request.
    pub fn client_ip(&mut self, trusted: &[ipnet::IpNet]) -> IpAddr {
        if let Some(ip) = self.client_ip {
            return ip;
        }
        let ip = client_ip::resolve(self.peer, trusted, &self.fields);
        self.client_ip = Some(ip);
        ip
    }
}

/// A request's fields wherever they are kept: an HTTP/1.1 request's lines
/// as received ([`RawFields`]), then the map (which holds what weir added,
/// or every field of an HTTP/2 request).
pub struct Fields<'a> {
    map: &'a mut HeaderMap,
    raw: Option<&'a mut RawFields>,
}

impl<'a> Fields<'a> {
    /// The fields of a request: its map, and its raw lines if any.
    pub fn new(map: &'a mut HeaderMap, raw: Option<&'a mut RawFields>) -> Self {
        Fields { map, raw }
    }

    /// Every value of `name`, in order: raw lines first, then the map's.
    pub fn get_all<'b>(&'b self, name: &'b HeaderName) -> impl Iterator<Item = &'b [u8]> + 'b {
        let raw = self.raw.as_deref().into_iter();
        raw.flat_map(move |r| r.get_all(name.as_str()))
            .chain(self.map.get_all(name).iter().map(HeaderValue::as_bytes))
    }

    /// Every line, `(name, value)`: raw lines first, then the map's.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let raw = self.raw.as_deref().into_iter();
        raw.flat_map(RawFields::iter).chain(
            self.map
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
        )
    }

    /// The first value of `name`.
    pub fn get<'b>(&'b self, name: &'b HeaderName) -> Option<&'b [u8]> {
        self.get_all(name).next()
    }

    /// Removes every line named `name`.
    pub fn remove(&mut self, name: &HeaderName) {
        if let Some(raw) = self.raw.as_deref_mut() {
            raw.remove(name.as_str());
        }
        self.map.remove(name);
    }

    /// Replaces every line named `name` with one.
    pub fn set(&mut self, name: HeaderName, value: HeaderValue) {
        if let Some(raw) = self.raw.as_deref_mut() {
            raw.remove(name.as_str());
        }
        self.map.insert(name, value);
    }

    /// Adds a line, keeping the others of its name.
    pub fn append(&mut self, name: HeaderName, value: HeaderValue) {
        self.map.append(name, value);
    }

    /// Applies one side's edits: `remove`, then `set`, then `add`.
    pub fn apply(&mut self, ops: &HeaderOps) {
        for name in &ops.remove {
            self.remove(name);
        }
        for (name, value) in &ops.set {
            self.set(name.clone(), value.clone());
        }
        for (name, value) in &ops.add {
            self.append(name.clone(), value.clone());
        }
    }
}

/// One middleware instance: its config and its state.
#[derive(Debug)]
pub struct Middleware {
    name: Arc<str>,
    config: MiddlewareConfig,
    kind: Kind,
}

/// The run-time side of each kind.
#[derive(Debug)]
enum Kind {
    Headers,
    Rewrite(rewrite::Rewrite),
    Redirect(redirect::Redirect),
    IpFilter(ip_filter::IpFilter),
    RateLimit(rate_limit::RateLimit),
    BasicAuth(basic_auth::BasicAuth),
    ForwardAuth(forward_auth::ForwardAuth),
    Jwt(jwt::Jwt),
}

impl Middleware {
    /// Builds an instance (with fresh state) from its config.
    pub fn new(config: &MiddlewareConfig) -> Middleware {
        let kind = match &config.kind {
            MiddlewareKind::Headers(_) => Kind::Headers,
            MiddlewareKind::Rewrite(c) => Kind::Rewrite(rewrite::Rewrite::new(c)),
            MiddlewareKind::Redirect(c) => Kind::Redirect(redirect::Redirect::new(c)),
            MiddlewareKind::IpFilter(c) => Kind::IpFilter(ip_filter::IpFilter::new(c)),
            MiddlewareKind::RateLimit(c) => Kind::RateLimit(rate_limit::RateLimit::new(c)),
            MiddlewareKind::BasicAuth(c) => Kind::BasicAuth(basic_auth::BasicAuth::new(c)),
            MiddlewareKind::ForwardAuth(c) => Kind::ForwardAuth(forward_auth::ForwardAuth::new(c)),
            MiddlewareKind::Jwt(c) => Kind::Jwt(jwt::Jwt::new(c)),
        };
        Middleware {
            name: config.name.as_str().into(),
            config: config.clone(),
            kind,
        }
    }

    /// The middleware's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// How many buckets a `rate_limit` keeps (bounded by its
    /// `max_keys`); `None` for other kinds.
    pub fn rate_limit_keys(&self) -> Option<usize> {
        match &self.kind {
            Kind::RateLimit(r) => Some(r.keys()),
            _ => None,
        }
    }

    /// The `jwt` instance, if this is one (its key cache, for tests).
    pub fn jwt(&self) -> Option<&jwt::Jwt> {
        match &self.kind {
            Kind::Jwt(j) => Some(j),
            _ => None,
        }
    }

    /// Lets the request on (possibly changed) or answers it.
    async fn apply(&self, req: &mut Request<'_>, env: &Env<'_>) -> Result<(), Box<Refusal>> {
        match &self.kind {
            Kind::Headers => {
                if let MiddlewareKind::Headers(h) = &self.config.kind {
                    req.fields.apply(&h.request);
                }
                Ok(())
            }
            Kind::Rewrite(r) => {
                r.apply(req);
                Ok(())
            }
            Kind::Redirect(r) => r.apply(&self.name, req),
            Kind::IpFilter(f) => f.apply(&self.name, req, env.trusted),
            Kind::RateLimit(r) => r.apply(&self.name, req, env),
            Kind::BasicAuth(b) => b.apply(&self.name, req).await,
            Kind::ForwardAuth(f) => f.apply(&self.name, req, env.trusted).await,
            Kind::Jwt(j) => j.apply(&self.name, req).await,
        }
    }

    /// The response edits, if this is a `headers` middleware with some.
    fn response_ops(&self) -> Option<&HeaderOps> {
        match &self.config.kind {
            MiddlewareKind::Headers(h) if !h.response.is_empty() => Some(&h.response),
            _ => None,
        }
    }
}

/// What every step of a chain may need besides the request.
struct Env<'a> {
    trusted: &'a [ipnet::IpNet],
    metrics: &'a MiddlewareMetrics,
    /// The route's name (per-route state, such as rate-limit buckets).
    route: &'a Arc<str>,
}

/// The middleware of one route, in order.
#[derive(Debug)]
pub struct Chain {
    steps: Box<[(Arc<Middleware>, MiddlewareMetrics)]>,
    trusted: Arc<[ipnet::IpNet]>,
    route: Arc<str>,
    /// Whether any step edits responses.
    edits_responses: bool,
}

/// How far a request went through its chain: the response side applies
/// the edits of the steps that ran.
#[derive(Clone, Copy, Debug, Default)]
pub struct Passed(usize);

impl Chain {
    /// Runs the steps in order until one answers. Returns how many ran
    /// (all of them, when the request goes on), or the answer and the
    /// number of steps before the one that gave it.
    pub async fn run(&self, req: &mut Request<'_>) -> Result<Passed, (Box<Refusal>, Passed)> {
        for (i, (m, metrics)) in self.steps.iter().enumerate() {
            let env = Env {
                trusted: &self.trusted,
                metrics,
                route: &self.route,
            };
            if let Err(refusal) = m.apply(req, &env).await {
                env.metrics.rejected(refusal.reason);
                return Err((refusal, Passed(i)));
            }
        }
        Ok(Passed(self.steps.len()))
    }

    /// Applies the response edits of the steps that ran, in reverse order
    /// (the response passes back through them).
    pub fn edit_response(&self, passed: Passed, mut fields: Fields<'_>) {
        if !self.edits_responses {
            return;
        }
        let ran = self.steps.get(..passed.0).unwrap_or_default();
        for ops in ran.iter().rev().filter_map(|(m, _)| m.response_ops()) {
            fields.apply(ops);
        }
    }

    /// Whether any step edits responses.
    pub fn edits_responses(&self) -> bool {
        self.edits_responses
    }
}

/// The middleware instances of one snapshot, by name.
#[derive(Debug, Default)]
pub struct Set {
    by_name: HashMap<Arc<str>, Arc<Middleware>>,
}

impl Set {
    /// Builds the instances of `configs`, keeping those of `previous`
    /// whose config is unchanged (with their state).
    pub fn build(configs: &[MiddlewareConfig], previous: Option<&Set>) -> Set {
        let by_name = configs
            .iter()
            .map(|c| {
                let kept = previous
                    .and_then(|p| p.by_name.get(c.name.as_str()))
                    .filter(|m| m.config == *c);
                let m = match kept {
                    Some(m) => Arc::clone(m),
                    None => Arc::new(Middleware::new(c)),
                };
                (Arc::clone(&m.name), m)
            })
            .collect();
        Set { by_name }
    }

    /// The instance named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Middleware>> {
        self.by_name.get(name)
    }

    /// The chain of `route`, or `None` when it lists no middleware.
    pub fn chain(
        &self,
        route: &RouteConfig,
        trusted: &Arc<[ipnet::IpNet]>,
        metrics: &Metrics,
    ) -> Option<Arc<Chain>> {
        if route.middleware.is_empty() {
            return None;
        }
        let steps: Box<[_]> = route
            .middleware
            .iter()
            .filter_map(|name| {
                let m = self.by_name.get(name.as_str())?;
                Some((Arc::clone(m), metrics.middleware(&route.name, name)))
            })
            .collect();
        let edits_responses = steps.iter().any(|(m, _)| m.response_ops().is_some());
        Some(Arc::new(Chain {
            steps,
            trusted: Arc::clone(trusted),
            route: route.name.as_str().into(),
            edits_responses,
        }))
    }
}
