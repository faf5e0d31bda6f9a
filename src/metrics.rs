//! Prometheus metrics: families registered once, handles resolved once.
//!
//! [`Metrics`] owns the registry served on the admin listener's `/metrics`.
//! The request path never hashes label strings: every handle it touches is
//! resolved when its owner is built — [`RouteMetrics`] per route,
//! [`PoolMetrics`] per pool, [`EndpointMetrics`] per backend — and kept in
//! that owner (linkerd's `*MetricFamilies` / `*Metrics` split). Handles
//! whose labels include a method or status class are resolved on first use
//! into a `OnceLock` slot, so a route that only ever sees `GET 2xx` exports
//! one series, not forty; after that first use each is one atomic add.
//!
//! Series are reference counted by label set: when the last owner of a
//! route, pool or endpoint is dropped (a reload removed it, discovery
//! dropped the endpoint), its series are removed from the registry, so
//! `/metrics` does not grow without bound across config changes.
//!
//! Gauges that mirror state the proxy already keeps (in-flight requests,
//! weights, endpoint counts) are not updated on the hot path at all: a
//! collector reads them from the current snapshot at scrape time.
//!
//! Names follow `weir_<noun>_<unit>`, `_total` for counters and `_seconds`
//! for durations. The README lists every family.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use http::{Method, StatusCode};
use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::health::passive::EjectionReason;
use crate::retry::RetryReason;

/// Latency buckets from 100 µs to 30 s: sub-millisecond for loopback and
/// cache hits, up to the slowest sane upstream.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// Method classes: the common methods by name, the rest as `OTHER`, so
/// a client cannot create series with made-up methods.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER",
];

/// Status classes; upstream attempts that got no response count as `error`.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// Index into the method classes (GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, OTHER).
pub fn method_class(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// Index into the status classes (`1xx` → 0 … `5xx` → 4).
pub fn status_class(s: StatusCode) -> usize {
    (usize::from(s.as_u16() / 100)).clamp(1, 5) - 1
}

/// Status-class index for an upstream attempt without a response.
pub const CLASS_ERROR: usize = 5;

/// Metric families and their registry. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Families>,
}

#[derive(Debug)]
struct Families {
    registry: Registry,
    requests: RequestFamilies,
    listeners: ListenerFamilies,
    pools: PoolFamilies,
    upstream: UpstreamFamilies,
    health: HealthFamilies,
    discovery: DiscoveryFamilies,
    config: ConfigFamilies,
    tls: TlsFamilies,
    middleware: MiddlewareFamilies,
    refs: Mutex<HashMap<SeriesKey, usize>>,
}

/// Route middleware (`weir_middleware_*`, `weir_rate_limited_total`).
#[derive(Debug)]
struct MiddlewareFamilies {
    rejections: IntCounterVec,
    rate_limited: IntCounterVec,
}

impl MiddlewareFamilies {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            rejections: counter_vec(
                r,
                "weir_middleware_rejections_total",
                "Requests a route middleware answered itself (refused, redirected), by route, \
                 middleware and reason.",
                &["route", "middleware", "reason"],
            )?,
            rate_limited: counter_vec(
                r,
                "weir_rate_limited_total",
                "Requests answered 429 by a rate_limit middleware, by route and middleware.",
                &["route", "middleware"],
            )?,
        })
    }

    /// Drops every series of one middleware on one route, whatever its
    /// reasons (they are open-ended, so they are read from the family).
    fn remove(&self, route: &str, middleware: &str) {
        let _ = self.rate_limited.remove_label_values(&[route, middleware]);
        let mut reasons = Vec::new();
        for family in self.rejections.collect() {
            for m in family.get_metric() {
                let label = |n: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == n)
                        .map(|l| l.value().to_owned())
                };
                if label("route").as_deref() == Some(route)
                    && label("middleware").as_deref() == Some(middleware)
                {
                    reasons.extend(label("reason"));
                }
            }
        }
        for reason in reasons {
            let _ = self
                .rejections
                .remove_label_values(&[route, middleware, &reason]);
        }
    }
}

/// Counters of one middleware on one route.
#[derive(Debug)]
pub struct MiddlewareMetrics {
    families: Arc<Families>,
    route: String,
    middleware: String,
    rate_limited: IntCounter,
    _guard: SeriesGuard,
}

impl MiddlewareMetrics {
    /// Counts one request the middleware answered itself, by `reason`.
    /// (Refusals are off the fast path, so the label lookup is per call.)
    pub fn rejected(&self, reason: &str) {
        self.families
            .middleware
            .rejections
            .with_label_values(&[&self.route, &self.middleware, reason])
            .inc();
    }

    /// Counts one request a rate limit refused.
    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }
}

/// Requests answered to clients (`weir_requests_*`, body bytes).
#[derive(Debug)]
struct RequestFamilies {
    total: IntCounterVec,
    duration: HistogramVec,
    received_bytes: IntCounterVec,
    sent_bytes: IntCounterVec,
}

/// Client connections per listener (`weir_downstream_connections_*`).
#[derive(Debug)]
struct ListenerFamilies {
    connections_total: IntCounterVec,
    connections_open: IntGaugeVec,
    connections_rejected: IntCounterVec,
    reset_floods: IntCounterVec,
}

/// What a pool refused or retried (`weir_pool_*`, `weir_retr*`).
#[derive(Debug)]
struct PoolFamilies {
    no_endpoint: IntCounterVec,
    limit_rejected: IntCounterVec,
    breaker_rejected: IntCounterVec,
    retries: IntCounterVec,
    budget_exhausted: IntCounterVec,
}

/// The `kind` labels of `weir_upstream_protocol_errors_total`.
const PROTOCOL_ERROR_KINDS: [&str; 3] = ["head", "body", "stray_bytes"];

/// Attempts to endpoints (`weir_upstream_*`).
#[derive(Debug)]
struct UpstreamFamilies {
    requests: IntCounterVec,
    connect_errors: IntCounterVec,
    protocol_errors: IntCounterVec,
    stale_retries: IntCounterVec,
    timeouts: IntCounterVec,
    response: HistogramVec,
    picks: IntCounterVec,
    ejections: IntCounterVec,
}

impl UpstreamFamilies {
    /// Drops every `weir_upstream_*` series of one endpoint.
    fn remove_endpoint(&self, pool: &str, ep: &str) {
        for c in CLASSES {
            let _ = self.requests.remove_label_values(&[pool, ep, c]);
        }
        for phase in ["connect", "response"] {
            let _ = self.timeouts.remove_label_values(&[pool, ep, phase]);
        }
        let _ = self.connect_errors.remove_label_values(&[pool, ep]);
        for kind in PROTOCOL_ERROR_KINDS {
            let _ = self.protocol_errors.remove_label_values(&[pool, ep, kind]);
        }
        let _ = self.stale_retries.remove_label_values(&[pool, ep]);
        let _ = self.response.remove_label_values(&[pool, ep]);
        let _ = self.picks.remove_label_values(&[pool, ep]);
        for reason in EjectionReason::ALL {
            let _ = self
                .ejections
                .remove_label_values(&[pool, ep, reason.as_str()]);
        }
    }
}

/// Active health checking (`weir_health_*`).
#[derive(Debug)]
struct HealthFamilies {
    transitions: IntCounterVec,
    probes: IntCounterVec,
    probe_duration: HistogramVec,
}

/// Discovery sources (`weir_discovery_*`).
#[derive(Debug)]
struct DiscoveryFamilies {
    refreshes: IntCounterVec,
    endpoints: IntGaugeVec,
    last_success: GaugeVec,
}

/// Config loads (`weir_config_*`).
#[derive(Debug)]
struct ConfigFamilies {
    reloads: IntCounterVec,
    last_success: IntGauge,
    last_timestamp: Gauge,
}

/// TLS listeners (`weir_tls_*`).
#[derive(Debug)]
struct TlsFamilies {
    handshakes: IntCounterVec,
    handshake_failures: IntCounterVec,
    certificate_expiry: IntGaugeVec,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum SeriesKey {
    Route(String, String),
    Pool(String),
    Endpoint(String, String),
    Source(String, String),
    Middleware(String, String),
}

/// Removes a label set's series when its last owner is dropped.
#[derive(Debug)]
struct SeriesGuard {
    key: SeriesKey,
    families: Arc<Families>,
}

impl Drop for SeriesGuard {
    fn drop(&mut self) {
        let last = match self.families.refs.lock() {
            Ok(mut refs) => match refs.get_mut(&self.key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    refs.remove(&self.key);
                    true
                }
            },
            Err(_) => false,
        };
        if last {
            self.families.remove_series(&self.key);
        }
    }
}

impl Families {
    fn guard(self: &Arc<Self>, key: SeriesKey) -> SeriesGuard {
        if let Ok(mut refs) = self.refs.lock() {
            *refs.entry(key.clone()).or_insert(0) += 1;
        }
        SeriesGuard {
            key,
            families: Arc::clone(self),
        }
    }

    // Removal of a series that was never created is an error we ignore.
    fn remove_series(&self, key: &SeriesKey) {
        match key {
            SeriesKey::Route(route, pool) => {
                for m in METHODS {
                    for c in &CLASSES[..5] {
                        let _ = self
                            .requests
                            .total
                            .remove_label_values(&[route, pool, m, c]);
                    }
                }
            }
            SeriesKey::Pool(pool) => {
                let _ = self.requests.duration.remove_label_values(&[pool]);
                let _ = self.requests.received_bytes.remove_label_values(&[pool]);
                let _ = self.requests.sent_bytes.remove_label_values(&[pool]);
                let _ = self.pools.no_endpoint.remove_label_values(&[pool]);
                let _ = self.pools.limit_rejected.remove_label_values(&[pool]);
                for t in crate::limits::breaker::Threshold::ALL {
                    let _ = self
                        .pools
                        .breaker_rejected
                        .remove_label_values(&[pool, t.as_str()]);
                }
                for reason in RetryReason::ALL {
                    let _ = self
                        .pools
                        .retries
                        .remove_label_values(&[pool, reason.as_str()]);
                }
                let _ = self.pools.budget_exhausted.remove_label_values(&[pool]);
                let _ = self.health.probe_duration.remove_label_values(&[pool]);
            }
            SeriesKey::Source(pool, source) => {
                for result in ["success", "failure"] {
                    let _ = self
                        .discovery
                        .refreshes
                        .remove_label_values(&[pool, source, result]);
                }
                let _ = self
                    .discovery
                    .endpoints
                    .remove_label_values(&[pool, source]);
                let _ = self
                    .discovery
                    .last_success
                    .remove_label_values(&[pool, source]);
            }
            SeriesKey::Middleware(route, middleware) => self.middleware.remove(route, middleware),
            SeriesKey::Endpoint(pool, ep) => {
                self.upstream.remove_endpoint(pool, ep);
                for to in ["healthy", "unhealthy"] {
                    let _ = self.health.transitions.remove_label_values(&[pool, ep, to]);
                }
                for result in ["ok", "fail"] {
                    let _ = self.health.probes.remove_label_values(&[pool, ep, result]);
                }
            }
        }
    }
}

/// Handles for one route.
#[derive(Debug)]
pub struct RouteMetrics {
    families: Arc<Families>,
    route: String,
    pool: String,
    requests: [[OnceLock<IntCounter>; 5]; 8],
    _guard: SeriesGuard,
}

impl RouteMetrics {
    /// Counts one finished request.
    pub fn request(&self, method: usize, status: StatusCode) {
        let class = status_class(status);
        let Some(slot) = self.requests.get(method).and_then(|r| r.get(class)) else {
            return;
        };
        slot.get_or_init(|| {
            let m = METHODS.get(method).copied().unwrap_or("OTHER");
            let c = CLASSES.get(class).copied().unwrap_or("5xx");
            self.families
                .requests
                .total
                .with_label_values(&[&self.route, &self.pool, m, c])
        })
        .inc();
    }
}

/// Handles for one pool.
#[derive(Debug)]
pub struct PoolMetrics {
    /// Request duration, first byte in to last byte out.
    pub duration: Histogram,
    /// Request body bytes received from clients.
    pub received_bytes: IntCounter,
    /// Response body bytes sent to clients.
    pub sent_bytes: IntCounter,
    /// Requests answered 503 because no endpoint was available.
    pub no_endpoint: IntCounter,
    /// Requests answered 503 because the pool's request limits had no
    /// free slot within `queue_timeout`.
    pub limit_rejected: IntCounter,
    /// Circuit-breaker refusals, by [`crate::limits::breaker::Threshold`]
    /// in `ALL` order (count with [`PoolMetrics::breaker_rejected`]).
    breaker_rejected: [IntCounter; 4],
    /// Retries by reason, indexed by [`RetryReason::index`] (count with
    /// [`PoolMetrics::retried`]).
    pub retries: [IntCounter; RetryReason::COUNT],
    /// Retries refused because the budget was empty.
    pub budget_exhausted: IntCounter,
    /// Active probe latency.
    pub probe_duration: Histogram,
    families: Arc<Families>,
    pool: String,
    _guard: SeriesGuard,
}

impl PoolMetrics {
    /// Counts one circuit-breaker refusal.
    pub fn breaker_rejected(&self, threshold: crate::limits::breaker::Threshold) {
        let i = crate::limits::breaker::Threshold::ALL
            .iter()
            .position(|t| *t == threshold);
        if let Some(c) = i.and_then(|i| self.breaker_rejected.get(i)) {
            c.inc();
        }
    }

    /// Counts one retry.
    pub fn retried(&self, reason: RetryReason) {
        // In range by construction: the array is built from `ALL`.
        if let Some(c) = self.retries.get(reason.index()) {
            c.inc();
        }
    }

    /// Handles for one discovery source of this pool.
    pub fn discovery(&self, source: &str) -> DiscoveryMetrics {
        let f = &self.families;
        let labels = [self.pool.as_str(), source];
        DiscoveryMetrics {
            ok: f
                .discovery
                .refreshes
                .with_label_values(&[self.pool.as_str(), source, "success"]),
            failed: f.discovery.refreshes.with_label_values(&[
                self.pool.as_str(),
                source,
                "failure",
            ]),
            endpoints: f.discovery.endpoints.with_label_values(&labels),
            last_success: f.discovery.last_success.with_label_values(&labels),
            _guard: f.guard(SeriesKey::Source(self.pool.clone(), source.to_owned())),
        }
    }
}

/// Handles for one discovery source.
#[derive(Debug)]
pub struct DiscoveryMetrics {
    ok: IntCounter,
    failed: IntCounter,
    endpoints: IntGauge,
    last_success: Gauge,
    _guard: SeriesGuard,
}

impl DiscoveryMetrics {
    /// Counts one refresh; a success is a contact with the registry,
    /// whether or not the set changed.
    pub fn refresh(&self, success: bool) {
        if success {
            self.ok.inc();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.last_success.set(now);
        } else {
            self.failed.inc();
        }
    }

    /// Endpoints the source contributes now.
    pub fn endpoints(&self, n: usize) {
        self.endpoints.set(n as i64);
    }
}

/// Handles for one endpoint of one pool.
#[derive(Debug)]
pub struct EndpointMetrics {
    families: Arc<Families>,
    pool: String,
    endpoint: String,
    requests: [OnceLock<IntCounter>; 6],
    /// Failed TCP connects.
    pub connect_errors: IntCounter,
    /// Malformed or ambiguous HTTP/1.1 response heads.
    pub bad_heads: IntCounter,
    /// Malformed or cut-short HTTP/1.1 response bodies.
    pub bad_bodies: IntCounter,
    /// Bytes after a complete HTTP/1.1 response.
    pub stray_bytes: IntCounter,
    /// Requests sent again after a stale pooled connection.
    pub stale_retries: IntCounter,
    /// Connect timeouts.
    pub connect_timeouts: IntCounter,
    /// Response-header timeouts.
    pub response_timeouts: IntCounter,
    /// Time to response headers, if enabled for the pool.
    pub response_time: Option<Histogram>,
    /// Times the selector picked this endpoint.
    pub picks: IntCounter,
    /// Passive ejections by reason, indexed by [`EjectionReason::index`]
    /// (count with [`EndpointMetrics::ejected`]).
    pub ejections: [IntCounter; EjectionReason::COUNT],
    /// Active verdict changes to healthy / unhealthy.
    pub transitions: [IntCounter; 2],
    /// Active probe results ok / fail.
    pub probes: [IntCounter; 2],
    _guard: SeriesGuard,
}

impl EndpointMetrics {
    /// Counts one passive ejection.
    pub fn ejected(&self, reason: EjectionReason) {
        // In range by construction: the array is built from `ALL`.
        if let Some(c) = self.ejections.get(reason.index()) {
            c.inc();
        }
    }

    /// Counts one upstream attempt by status class index (see
    /// [`status_class`], [`CLASS_ERROR`]).
    pub fn request(&self, class: usize) {
        let Some(slot) = self.requests.get(class) else {
            return;
        };
        slot.get_or_init(|| {
            let c = CLASSES.get(class).copied().unwrap_or("error");
            self.families
                .upstream
                .requests
                .with_label_values(&[&self.pool, &self.endpoint, c])
        })
        .inc();
    }
}

/// Handshake counters of one TLS listener.
#[derive(Clone, Debug)]
pub struct TlsMetrics {
    /// Completed handshakes.
    pub handshakes: IntCounter,
    failures: Vec<IntCounter>,
}

impl TlsMetrics {
    /// Counts a failed handshake; `reason` indexes
    /// [`crate::tls::listener::HANDSHAKE_FAILURE_REASONS`].
    pub fn failure(&self, reason: usize) {
        if let Some(c) = self.failures.get(reason).or_else(|| self.failures.last()) {
            c.inc();
        }
    }
}

/// Handles for one listener.
#[derive(Clone, Debug)]
pub struct ListenerMetrics {
    /// Connections accepted.
    pub connections_total: IntCounter,
    /// Connections currently open.
    pub connections_open: IntGauge,
    /// Connections closed at accept because of `limits.max_connections`.
    pub connections_rejected: IntCounter,
    /// HTTP/2 connections closed because the client reset most of its
    /// streams before their response (rapid reset).
    pub reset_floods: IntCounter,
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    registered(r, IntCounterVec::new(Opts::new(name, help), labels)?)
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<HistogramVec> {
    let v = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )?;
    registered(r, v)
}

fn int_gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    registered(r, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

/// Registers `c` in `r` and returns it, for the caller to keep.
fn registered<C: Collector + Clone + 'static>(r: &Registry, c: C) -> prometheus::Result<C> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// `weir_build_info` and, on Linux, the standard `process_*` families.
fn register_process(r: &Registry) -> prometheus::Result<()> {
    let build = int_gauge_vec(
        r,
        "weir_build_info",
        "Build information; always 1.",
        &["version"],
    )?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    #[cfg(target_os = "linux")]
    r.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(())
}

impl RequestFamilies {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            total: counter_vec(
                r,
                "weir_requests_total",
                "Requests answered, by route, pool, method class and status class.",
                &["route", "pool", "method", "status_class"],
            )?,
            duration: histogram_vec(
                r,
                "weir_request_duration_seconds",
                "Time from request head received to response body sent, by pool.",
                &["pool"],
            )?,
            received_bytes: counter_vec(
                r,
                "weir_downstream_received_bytes_total",
                "Request body bytes received from clients, by pool.",
                &["pool"],
            )?,
            sent_bytes: counter_vec(
                r,
                "weir_downstream_sent_bytes_total",
                "Response body bytes sent to clients, by pool.",
                &["pool"],
            )?,
        })
    }
}

impl ListenerFamilies {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            connections_total: counter_vec(
                r,
                "weir_downstream_connections_total",
                "Client connections accepted, by listener.",
                &["listener"],
            )?,
            connections_open: int_gauge_vec(
                r,
                "weir_downstream_connections_open",
                "Client connections currently open, by listener.",
                &["listener"],
            )?,
            connections_rejected: counter_vec(
                r,
                "weir_downstream_connections_rejected_total",
                "Client connections closed at accept by `limits.max_connections`, by listener.",
                &["listener"],
            )?,
            reset_floods: counter_vec(
                r,
                "weir_downstream_h2_reset_flood_closes_total",
                "HTTP/2 client connections closed because the client reset most of its streams \
                 before their response (rapid reset), by listener.",
                &["listener"],
            )?,
        })
    }
}

impl PoolFamilies {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            no_endpoint: counter_vec(
                r,
                "weir_pool_no_endpoint_total",
                "Requests answered 503 because the pool had no available endpoint.",
                &["pool"],
            )?,
            limit_rejected: counter_vec(
                r,
                "weir_pool_limit_rejected_total",
                "Requests answered 503 because the pool's request limits had no free slot \
                 within `queue_timeout`.",
                &["pool"],
            )?,
            breaker_rejected: counter_vec(
                r,
                "weir_circuit_breaker_rejected_total",
                "Requests answered 503 at once (or retries not made) because the pool's circuit \
                 breaker was at a threshold, by pool and threshold.",
                &["pool", "threshold"],
            )?,
            retries: counter_vec(
                r,
                "weir_retries_total",
                "Retried requests by pool and reason (`not_sent`, `reset`, `status`).",
                &["pool", "reason"],
            )?,
            budget_exhausted: counter_vec(
                r,
                "weir_retry_budget_exhausted_total",
                "Retries refused because the pool's retry budget was empty.",
                &["pool"],
            )?,
        })
    }
}

impl UpstreamFamilies {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            requests: counter_vec(
                r,
                "weir_upstream_requests_total",
                "Upstream attempts by pool, endpoint and status class (`error`: no response).",
                &["pool", "endpoint", "status_class"],
            )?,
            connect_errors: counter_vec(
                r,
                "weir_upstream_connect_errors_total",
                "Failed TCP connects to an endpoint.",
                &["pool", "endpoint"],
            )?,
            protocol_errors: counter_vec(
                r,
                "weir_upstream_protocol_errors_total",
                "HTTP/1.1 responses an endpoint got wrong: `head` (malformed or ambiguous head, 502), `body` (malformed or cut-short body), `stray_bytes` (bytes after a complete response; the connection was closed).",
                &["pool", "endpoint", "kind"],
            )?,
            stale_retries: counter_vec(
                r,
                "weir_upstream_stale_retries_total",
                "Requests sent again on a fresh connection because the endpoint had closed the reused one before answering.",
                &["pool", "endpoint"],
            )?,
            timeouts: counter_vec(
                r,
                "weir_upstream_timeouts_total",
                "Upstream timeouts by phase (`connect` or `response` headers).",
                &["pool", "endpoint", "phase"],
            )?,
            response: histogram_vec(
                r,
                "weir_upstream_response_seconds",
                "Time from request sent to response headers, by endpoint.",
                &["pool", "endpoint"],
            )?,
            picks: counter_vec(
                r,
                "weir_upstream_picks_total",
                "Times the selector picked an endpoint and a request was sent to it (retries included).",
                &["pool", "endpoint"],
            )?,
            ejections: counter_vec(
                r,
                "weir_upstream_ejections_total",
                "Passive (outlier) ejections by the failure that triggered them.",
                &["pool", "endpoint", "reason"],
            )?,
        })
    }
}

impl HealthFamilies {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            transitions: counter_vec(
                r,
                "weir_health_transitions_total",
                "Active health verdict changes, by the new state.",
                &["pool", "endpoint", "to"],
            )?,
            probes: counter_vec(
                r,
                "weir_health_probes_total",
                "Active health probes by result (`ok` or `fail`).",
                &["pool", "endpoint", "result"],
            )?,
            probe_duration: histogram_vec(
                r,
                "weir_health_probe_duration_seconds",
                "Active health probe latency, by pool.",
                &["pool"],
            )?,
        })
    }
}

impl DiscoveryFamilies {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            refreshes: counter_vec(
                r,
                "weir_discovery_refreshes_total",
                "Discovery refreshes by pool, source and result (`success` or `failure`).",
                &["pool", "source", "result"],
            )?,
            endpoints: int_gauge_vec(
                r,
                "weir_discovery_endpoints",
                "Endpoints a discovery source contributes to its pool.",
                &["pool", "source"],
            )?,
            last_success: registered(
                r,
                GaugeVec::new(
                    Opts::new(
                        "weir_discovery_last_success_timestamp_seconds",
                        "Unix time of a discovery source's last successful contact with its registry (changed or not).",
                    ),
                    &["pool", "source"],
                )?,
            )?,
        })
    }
}

impl ConfigFamilies {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            reloads: counter_vec(
                r,
                "weir_config_reloads_total",
                "Config loads by result (`success` or `failure`).",
                &["result"],
            )?,
            last_success: registered(
                r,
                IntGauge::new(
                    "weir_config_last_reload_success",
                    "1 if the last config load succeeded, else 0.",
                )?,
            )?,
            last_timestamp: registered(
                r,
                Gauge::new(
                    "weir_config_last_reload_timestamp_seconds",
                    "Unix time of the last config load attempt.",
                )?,
            )?,
        })
    }
}

impl TlsFamilies {
    fn register(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            handshakes: counter_vec(
                r,
                "weir_tls_handshakes_total",
                "Completed TLS handshakes, by listener.",
                &["listener"],
            )?,
            handshake_failures: counter_vec(
                r,
                "weir_tls_handshake_failures_total",
                "Failed TLS handshakes by listener and reason (`timeout`, `no_certificate`, \
                 `bad_certificate`, `protocol`, `io`, `other`).",
                &["listener", "reason"],
            )?,
            certificate_expiry: int_gauge_vec(
                r,
                "weir_tls_certificate_expiry_timestamp_seconds",
                "Unix time at which a listener's certificate expires (not_after).",
                &["listener", "name"],
            )?,
        })
    }
}

impl Metrics {
    /// Registers every family in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let r = Registry::new();
        register_process(&r)?;
        let families = Families {
            requests: RequestFamilies::register(&r)?,
            listeners: ListenerFamilies::register(&r)?,
            pools: PoolFamilies::register(&r)?,
            upstream: UpstreamFamilies::register(&r)?,
            health: HealthFamilies::register(&r)?,
            discovery: DiscoveryFamilies::register(&r)?,
            config: ConfigFamilies::register(&r)?,
            tls: TlsFamilies::register(&r)?,
            middleware: MiddlewareFamilies::register(&r)?,
            registry: r,
            refs: Mutex::new(HashMap::new()),
        };
        Ok(Metrics {
            inner: Arc::new(families),
        })
    }

    /// Handles for the listener `name`.
    pub fn listener(&self, name: &str) -> ListenerMetrics {
        ListenerMetrics {
            connections_total: self
                .inner
                .listeners
                .connections_total
                .with_label_values(&[name]),
            connections_open: self
                .inner
                .listeners
                .connections_open
                .with_label_values(&[name]),
            connections_rejected: self
                .inner
                .listeners
                .connections_rejected
                .with_label_values(&[name]),
            reset_floods: self.inner.listeners.reset_floods.with_label_values(&[name]),
        }
    }

    /// Handshake counters of the TLS listener `name` (pre-resolved for
    /// every failure reason).
    pub fn tls(&self, name: &str) -> TlsMetrics {
        TlsMetrics {
            handshakes: self.inner.tls.handshakes.with_label_values(&[name]),
            failures: crate::tls::listener::HANDSHAKE_FAILURE_REASONS
                .iter()
                .map(|r| {
                    self.inner
                        .tls
                        .handshake_failures
                        .with_label_values(&[name, r])
                })
                .collect(),
        }
    }

    /// Sets the expiry gauge of certificate `cert` of listener `listener`.
    pub fn set_certificate_expiry(&self, listener: &str, cert: &str, not_after: i64) {
        self.inner
            .tls
            .certificate_expiry
            .with_label_values(&[listener, cert])
            .set(not_after);
    }

    /// Removes the expiry gauge of one certificate.
    pub fn remove_certificate_expiry(&self, listener: &str, cert: &str) {
        let _ = self
            .inner
            .tls
            .certificate_expiry
            .remove_label_values(&[listener, cert]);
    }

    /// Removes the handshake series of a listener that no longer serves TLS.
    pub fn remove_tls(&self, listener: &str) {
        let _ = self.inner.tls.handshakes.remove_label_values(&[listener]);
        for r in crate::tls::listener::HANDSHAKE_FAILURE_REASONS {
            let _ = self
                .inner
                .tls
                .handshake_failures
                .remove_label_values(&[listener, r]);
        }
    }

    /// Handles for a route (`route`, `pool` may be empty for requests that
    /// matched no route).
    pub fn route(&self, route: &str, pool: &str) -> RouteMetrics {
        RouteMetrics {
            families: Arc::clone(&self.inner),
            route: route.to_owned(),
            pool: pool.to_owned(),
            requests: Default::default(),
            _guard: self
                .inner
                .guard(SeriesKey::Route(route.to_owned(), pool.to_owned())),
        }
    }

    /// Handles for middleware `middleware` on route `route`.
    pub fn middleware(&self, route: &str, middleware: &str) -> MiddlewareMetrics {
        let f = &self.inner;
        MiddlewareMetrics {
            families: Arc::clone(f),
            route: route.to_owned(),
            middleware: middleware.to_owned(),
            rate_limited: f
                .middleware
                .rate_limited
                .with_label_values(&[route, middleware]),
            _guard: f.guard(SeriesKey::Middleware(
                route.to_owned(),
                middleware.to_owned(),
            )),
        }
    }

    /// Handles for a pool.
    pub fn pool(&self, pool: &str) -> PoolMetrics {
        let f = &self.inner;
        PoolMetrics {
            duration: f.requests.duration.with_label_values(&[pool]),
            received_bytes: f.requests.received_bytes.with_label_values(&[pool]),
            sent_bytes: f.requests.sent_bytes.with_label_values(&[pool]),
            no_endpoint: f.pools.no_endpoint.with_label_values(&[pool]),
            limit_rejected: f.pools.limit_rejected.with_label_values(&[pool]),
            breaker_rejected: crate::limits::breaker::Threshold::ALL.map(|t| {
                f.pools
                    .breaker_rejected
                    .with_label_values(&[pool, t.as_str()])
            }),
            retries: RetryReason::ALL
                .map(|r| f.pools.retries.with_label_values(&[pool, r.as_str()])),
            budget_exhausted: f.pools.budget_exhausted.with_label_values(&[pool]),
            probe_duration: f.health.probe_duration.with_label_values(&[pool]),
            families: Arc::clone(f),
            pool: pool.to_owned(),
            _guard: f.guard(SeriesKey::Pool(pool.to_owned())),
        }
    }

    /// Handles for an endpoint of a pool.
    pub fn endpoint(&self, pool: &str, endpoint: &str, histogram: bool) -> EndpointMetrics {
        let f = &self.inner;
        EndpointMetrics {
            families: Arc::clone(f),
            pool: pool.to_owned(),
            endpoint: endpoint.to_owned(),
            requests: Default::default(),
            connect_errors: f
                .upstream
                .connect_errors
                .with_label_values(&[pool, endpoint]),
            bad_heads: f
                .upstream
                .protocol_errors
                .with_label_values(&[pool, endpoint, "head"]),
            bad_bodies: f
                .upstream
                .protocol_errors
                .with_label_values(&[pool, endpoint, "body"]),
            stray_bytes: f.upstream.protocol_errors.with_label_values(&[
                pool,
                endpoint,
                "stray_bytes",
            ]),
            stale_retries: f
                .upstream
                .stale_retries
                .with_label_values(&[pool, endpoint]),
            connect_timeouts: f
                .upstream
                .timeouts
                .with_label_values(&[pool, endpoint, "connect"]),
            response_timeouts: f
                .upstream
                .timeouts
                .with_label_values(&[pool, endpoint, "response"]),
            response_time: histogram
                .then(|| f.upstream.response.with_label_values(&[pool, endpoint])),
            picks: f.upstream.picks.with_label_values(&[pool, endpoint]),
            ejections: EjectionReason::ALL.map(|r| {
                f.upstream
                    .ejections
                    .with_label_values(&[pool, endpoint, r.as_str()])
            }),
            transitions: ["healthy", "unhealthy"]
                .map(|t| f.health.transitions.with_label_values(&[pool, endpoint, t])),
            probes: ["ok", "fail"].map(|r| f.health.probes.with_label_values(&[pool, endpoint, r])),
            _guard: f.guard(SeriesKey::Endpoint(pool.to_owned(), endpoint.to_owned())),
        }
    }

    /// Records the outcome of a config load.
    pub fn config_loaded(&self, success: bool) {
        let f = &self.inner;
        f.config
            .reloads
            .with_label_values(&[if success { "success" } else { "failure" }])
            .inc();
        f.config.last_success.set(i64::from(success));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        f.config.last_timestamp.set(now);
    }

    /// Registers a collector that computes its families at scrape time
    /// (the admin listener's state gauges, read from the live snapshot).
    pub fn register_collector(&self, c: Box<dyn Collector>) -> prometheus::Result<()> {
        self.inner.registry.register(c)
    }

    /// The text exposition (format 0.0.4).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let families = self.inner.registry.gather();
        if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample whose line starts with `series`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn retries_and_ejections_are_counted_under_their_reason_label() {
        let m = Metrics::new().unwrap();
        let pool = m.pool("p");
        let ep = m.endpoint("p", "127.0.0.1:1", false);
        pool.retried(RetryReason::Reset);
        pool.retried(RetryReason::Status);
        pool.retried(RetryReason::Status);
        ep.ejected(EjectionReason::Timeout);
        let text = String::from_utf8(m.encode()).unwrap();
        for (reason, n) in [("not_sent", 0.0), ("reset", 1.0), ("status", 2.0)] {
            let series = format!("weir_retries_total{{pool=\"p\",reason=\"{reason}\"}}");
            assert_eq!(sample(&text, &series), Some(n), "{series}\n{text}");
        }
        for (reason, n) in [("connect_error", 0.0), ("timeout", 1.0), ("status", 0.0)] {
            let series = format!(
                "weir_upstream_ejections_total{{endpoint=\"127.0.0.1:1\",pool=\"p\",reason=\"{reason}\"}}"
            );
            assert_eq!(sample(&text, &series), Some(n), "{series}\n{text}");
        }
    }
}
