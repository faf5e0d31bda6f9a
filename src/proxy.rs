//! One request, from the client to an endpoint and back.
//!
//! [`handle`] is the hyper service of every traffic connection:
//!
//! 1. load the current [`Snapshot`](crate::snapshot::Snapshot), route by host
//!    and path, clone the `Arc<Pool>` and drop the guard (never held across
//!    `.await`);
//! 2. pick and lease a backend;
//! 3. rewrite the request (hop-by-hop headers, `X-Forwarded-*`,
//!    `X-Request-Id`, `Via`, URI form for the upstream protocol);
//! 4. send it on a pooled connection, bounded by the connect and
//!    response-header timeouts;
//! 5. stream the response back in a [`ResponseBody`] that releases the lease
//!    and the connection, and writes the access-log line, when it ends.
//!
//! Any failure becomes a [`ProxyError`], and
//! [`ProxyError::status`](crate::error::ProxyError::status) is the only
//! mapping to a status code.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{Completion, RequestBody, ResponseBody};
use crate::config::{HostHeader, UpstreamProtocol};
use crate::error::ProxyError;
use crate::health::passive::{self, Outcome, PassivePolicy};
use crate::metrics::{self, RouteMetrics};
use crate::retry;
use crate::routing::normalize_host;
use crate::snapshot::Shared;
use crate::upstream::headers::{self as hdr, X_REQUEST_ID};
use crate::upstream::{Backend, Lease, Pool, PooledConn, SendError};

/// Per-connection context of a traffic listener.
#[derive(Debug)]
pub struct ConnCtx {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's IP as an `X-Forwarded-For` entry, formatted once.
    pub client_ip: HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
    /// Idle tracking for the connection watchdog.
    pub activity: Arc<Activity>,
    /// URI and body limits (`crate::limits`).
    pub limits: crate::limits::RequestLimits,
}

/// Requests in flight on one client connection and when it last went idle,
/// read by the connection's idle watchdog; and, for HTTP/2, how many
/// streams the client abandoned before their response (see
/// [`PREMATURE_RESET_MIN_STREAMS`]).
#[derive(Debug)]
pub struct Activity {
    active: AtomicU32,
    idle_since_ms: AtomicU64,
    epoch: Instant,
    streams: AtomicU32,
    premature: AtomicU32,
    flood: tokio::sync::Notify,
}

/// HTTP/2 rapid-reset guard (CVE-2023-44487), after Envoy's
/// `premature_reset_*` rule: once a connection has carried at least this
/// many streams, it is closed (GOAWAY, then dropped) as soon as more than
/// half of them were reset by the client before weir had a response for
/// them. Each such stream may already have cost an upstream request, which
/// h2's own limit on resets of not-yet-accepted streams does not cover.
/// Browsers cancel far less than half of their streams, so legitimate
/// clients never trip it.
pub const PREMATURE_RESET_MIN_STREAMS: u32 = 100;

impl Activity {
    /// A connection that just opened counts as idle from now.
    pub fn new() -> Self {
        Activity {
            active: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            streams: AtomicU32::new(0),
            premature: AtomicU32::new(0),
            flood: tokio::sync::Notify::new(),
        }
    }

    /// Resolves once the connection's clients reset too many streams
    /// early (see [`PREMATURE_RESET_MIN_STREAMS`]).
    pub async fn reset_flood(&self) {
        self.flood.notified().await;
    }

    fn stream_ended(&self, answered: bool) {
        let streams = self.streams.fetch_add(1, Ordering::Relaxed) + 1;
        let premature = if answered {
            self.premature.load(Ordering::Relaxed)
        } else {
            self.premature.fetch_add(1, Ordering::Relaxed) + 1
        };
        if !answered
            && streams >= PREMATURE_RESET_MIN_STREAMS
            && u64::from(premature) * 2 > u64::from(streams)
        {
            // A stored permit: the watchdog sees it even if it is busy now.
            self.flood.notify_one();
        }
    }

    /// `Some(since)` if no request is in flight.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = self.idle_since_ms.load(Ordering::Acquire);
        Some(self.epoch + std::time::Duration::from_millis(ms))
    }

    fn enter(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(Arc::clone(self))
    }
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

#[derive(Debug)]
struct ActiveGuard(Arc<Activity>);

/// Counts one HTTP/2 stream when it ends: answered, or dropped by hyper
/// because the client reset it first.
struct StreamEnd<'a> {
    activity: &'a Activity,
    answered: bool,
}

impl Drop for StreamEnd<'_> {
    fn drop(&mut self) {
        self.activity.stream_ended(self.answered);
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = Instant::now().duration_since(a.epoch).as_millis() as u64;
        a.idle_since_ms.store(ms, Ordering::Release);
        a.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the access log and metrics need once a response is over.
struct Record {
    _active: ActiveGuard,
    shared: Arc<Shared>,
    log: bool,
    start: Instant,
    method: Method,
    path: String,
    status: StatusCode,
    route: Option<Arc<str>>,
    route_metrics: Option<Arc<RouteMetrics>>,
    pool: Option<Arc<Pool>>,
    endpoint: Option<SocketAddr>,
    request_id: HeaderValue,
    _admission: crate::limits::Admission,
}

impl Completion for Record {
    fn finish(self: Box<Self>, complete: bool, bytes: u64) {
        let method = metrics::method_class(&self.method);
        match &self.route_metrics {
            Some(m) => m.request(method, self.status),
            None => self.shared.unrouted.request(method, self.status),
        }
        let elapsed = self.start.elapsed();
        if let Some(pool) = &self.pool {
            let m = pool.metrics();
            m.duration.observe(elapsed.as_secs_f64());
            m.sent_bytes.inc_by(bytes);
        }
        if !self.log {
            return;
        }
        let duration_ms = elapsed.as_secs_f64() * 1000.0;
        tracing::info!(
            target: "weir::access",
            method = %self.method,
            path = %self.path,
            status = self.status.as_u16(),
            route = self.route.as_deref().unwrap_or("-"),
            pool = self.pool.as_ref().map_or("-", |p| &**p.name()),
            endpoint = %self.endpoint.map_or_else(|| "-".to_owned(), |a| a.to_string()),
            duration_ms = format_args!("{duration_ms:.3}"),
            bytes,
            complete,
            request_id = self.request_id.to_str().unwrap_or("-"),
        );
    }
}

/// The hyper service for one request on a traffic connection.
pub async fn handle(
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let start = Instant::now();
    let request_id = hdr::incoming_request_id(req.headers()).unwrap_or_else(hdr::new_request_id);
    let downstream_version = req.version();
    let mut stream_end = (downstream_version == Version::HTTP_2).then(|| StreamEnd {
        activity: &ctx.activity,
        answered: false,
    });
    let mut record = Record {
        _active: ctx.activity.enter(),
        shared: Arc::clone(&ctx.shared),
        log: false,
        start,
        method: req.method().clone(),
        path: String::new(),
        status: StatusCode::OK,
        route: None,
        route_metrics: None,
        pool: None,
        endpoint: None,
        request_id: request_id.clone(),
        _admission: crate::limits::Admission::default(),
    };
    // Boxed: hyper keeps one slot per client connection for the request
    // future, sized for the largest state, for the connection's whole life.
    // A small slot plus one allocation per request (reused by the
    // allocator) keeps idle connections ~4 KiB lighter.
    let result = Box::pin(forward(&ctx, req, &mut record, &request_id)).await;
    if let Some(end) = &mut stream_end {
        end.answered = true;
    }
    let mut response = match result {
        Ok(res) => res,
        Err(err) => {
            let status = err.status();
            if status.is_server_error() {
                tracing::warn!(
                    request_id = request_id.to_str().unwrap_or("-"),
                    pool = record.pool.as_ref().map_or("-", |p| &**p.name()),
                    error = %err,
                    "request failed"
                );
            }
            error_response(&err, &request_id)
        }
    };
    if downstream_version != Version::HTTP_2 {
        *response.version_mut() = Version::HTTP_11;
    }
    record.status = response.status();
    let (parts, body) = response.into_parts();
    Ok(Response::from_parts(
        parts,
        body.on_complete(Box::new(record)),
    ))
}

async fn forward(
    ctx: &ConnCtx,
    mut req: Request<Incoming>,
    record: &mut Record,
    request_id: &HeaderValue,
) -> Result<Response<ResponseBody>, ProxyError> {
    crate::limits::check_head(&req, &ctx.limits)?;
    let raw_host = request_host(&req)?;
    // For X-Forwarded-Host; a Host header is shared, not copied.
    let raw_host_value = raw_host.to_value();
    let raw_host = raw_host.as_str();
    let host = normalize_host(raw_host).unwrap_or_default();

    // Route with the snapshot guard held only inside this block.
    let (pool, via) = {
        let snap = ctx.shared.snapshot();
        record.log = snap.access_log;
        if record.log {
            record.path = req.uri().path().to_owned();
        }
        let route = snap
            .routes
            .resolve(&host, req.uri().path())
            .ok_or(ProxyError::NoRoute)?;
        record.route = Some(Arc::clone(&route.name));
        record.route_metrics = Some(Arc::clone(&route.target.metrics));
        (Arc::clone(&route.target.pool), snap.via.clone())
    };
    record.pool = Some(Arc::clone(&pool));

    let (mut lease, admission) = crate::limits::admit(&pool, std::time::Instant::now()).await?;
    record._admission = admission;
    record.endpoint = Some(lease.backend().addr());
    let settings = pool.settings();

    let upgrade = req.version() != Version::HTTP_2 && hdr::wants_upgrade(req.headers());
    let on_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    let headers = &mut parts.headers;
    hdr::strip_hop_by_hop(headers, upgrade);
    // hyper already answered `100 Continue` when the body was first read;
    // the endpoint must not wait for a second round trip.
    headers.remove(header::EXPECT);
    hdr::add_forwarded(headers, &ctx.client_ip, ctx.scheme, raw_host_value);
    if let Some(pseudonym) = &via {
        hdr::add_via(headers, parts.version, pseudonym);
    }
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    let path_and_query: http::uri::PathAndQuery = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    match settings.protocol {
        UpstreamProtocol::Http1 => parts.version = Version::HTTP_11,
        UpstreamProtocol::H2c => {
            parts.version = Version::HTTP_2;
            // HTTP/2 carries the host in `:authority` (RFC 9113 §8.3.1).
            parts.headers.remove(header::HOST);
        }
    }
    let target = Target {
        raw_host,
        path_and_query: &path_and_query,
    };

    // What a retry may replay: see `crate::retry` for the rules.
    let policy = &settings.retries;
    let max_attempts = if upgrade { 1 } else { policy.attempts };
    let received = &pool.metrics().received_bytes;
    let mut replay: Option<Replay> = None;
    let first_body = if max_attempts > 1 && retry::is_idempotent(&parts.method) {
        match replayable_body(body, policy.max_replay_body, received, &ctx.limits).await? {
            Ok(bytes) => {
                replay = Some(Replay {
                    method: parts.method.clone(),
                    headers: parts.headers.clone(),
                    version: parts.version,
                    body: bytes.clone(),
                });
                RequestBody::Full((!bytes.is_empty()).then_some(bytes))
            }
            Err(body) => RequestBody::Incoming(body, ctx.limits.meter(received)),
        }
    } else {
        RequestBody::Incoming(body, ctx.limits.meter(received))
    };
    let mut next = Some(Request::from_parts(parts, first_body));
    pool.budget().deposit();

    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut attempt = 1u32;
    loop {
        let backend = Arc::clone(lease.backend());
        record.endpoint = Some(backend.addr());
        let mut upstream_req = match next.take() {
            Some(r) => r,
            None => match &replay {
                Some(r) => r.request(),
                // Unreachable by construction: a retry is only attempted
                // with the unsent request or a replay copy in hand.
                None => return Err(ProxyError::BadRequest("request cannot be replayed")),
            },
        };
        aim(&mut upstream_req, &backend, settings, &target)?;
        backend.metrics().picks.inc();
        let sent_at = std::time::Instant::now();
        let sent = backend.conns().send(upstream_req, &settings.connect).await;
        let now = std::time::Instant::now();
        if let Some(passive) = &settings.passive {
            record_passive(&pool, &backend, &sent, passive, now);
        }
        let em = backend.metrics();
        let retries_left = attempt < max_attempts;
        match sent {
            Ok((mut res, conn)) => {
                let rtt = now.saturating_duration_since(sent_at);
                lease.set_rtt(rtt);
                em.request(metrics::status_class(res.status()));
                if let Some(h) = &em.response_time {
                    h.observe(rtt.as_secs_f64());
                }
                let status = res.status();
                if retries_left && replay.is_some() && policy.on_statuses.contains(&status.as_u16())
                {
                    let wait = if status == StatusCode::SERVICE_UNAVAILABLE {
                        match retry::retry_after(res.headers()) {
                            Some(d) if d > policy.backoff_max => None,
                            Some(d) => Some(d),
                            None => Some(retry::backoff(
                                attempt,
                                policy.backoff_base,
                                policy.backoff_max,
                            )),
                        }
                    } else {
                        Some(retry::backoff(
                            attempt,
                            policy.backoff_base,
                            policy.backoff_max,
                        ))
                    };
                    if let Some(wait) = wait {
                        tried.push(backend.addr());
                        // Another endpoint first, then the budget: a token
                        // is only spent on a retry that can happen.
                        let next_lease =
                            retry_lease(&pool, &tried, now).filter(|_| affordable(&pool, now));
                        if let Some(next_lease) = next_lease {
                            // The response is dropped unread: its
                            // connection closes rather than return to the
                            // pool with an unknown body.
                            drop((res, conn));
                            pool.metrics().retries[2].inc();
                            tracing::debug!(pool = %pool.name(), endpoint = %backend.addr(), %status, "retrying on status");
                            lease = next_lease;
                            attempt += 1;
                            tokio::time::sleep(wait).await;
                            continue;
                        }
                    }
                }

                let switching = status == StatusCode::SWITCHING_PROTOCOLS;
                if let (true, Some(client_upgrade)) = (switching, on_upgrade) {
                    let upstream_upgrade = hyper::upgrade::on(&mut res);
                    tokio::spawn(tunnel(client_upgrade, upstream_upgrade, lease));
                    hdr::strip_hop_by_hop(res.headers_mut(), true);
                    res.headers_mut()
                        .insert(X_REQUEST_ID.clone(), request_id.clone());
                    let (parts, _) = res.into_parts();
                    return Ok(Response::from_parts(
                        parts,
                        ResponseBody::full(bytes::Bytes::new()),
                    ));
                }
                hdr::strip_hop_by_hop(res.headers_mut(), false);
                res.headers_mut()
                    .insert(X_REQUEST_ID.clone(), request_id.clone());
                let (parts, body) = res.into_parts();
                let conn = conn.map(|c| (c, settings.connect));
                return Ok(Response::from_parts(
                    parts,
                    ResponseBody::upstream(body, Some(lease), conn),
                ));
            }
            Err(SendError { error, unsent }) => {
                let error = error.blame_client_body();
                if matches!(error, ProxyError::ClientBody(_)) {
                    // Not the endpoint's fault: no upstream error counted,
                    // no retry (the body is gone).
                    return Err(error);
                }
                em.request(metrics::CLASS_ERROR);
                match &error {
                    ProxyError::Connect { .. } => em.connect_errors.inc(),
                    ProxyError::ConnectTimeout { .. } => em.connect_timeouts.inc(),
                    ProxyError::ResponseTimeout { .. } => em.response_timeouts.inc(),
                    _ => {}
                }
                let reason = match (&error, unsent) {
                    (_, Some(unsent)) => {
                        next = Some(unsent);
                        Some(0)
                    }
                    (ProxyError::Upstream { .. }, None) if replay.is_some() => Some(1),
                    _ => None,
                };
                let Some(reason) = reason.filter(|_| retries_left) else {
                    return Err(error);
                };
                tried.push(backend.addr());
                let Some(next_lease) = retry_lease(&pool, &tried, now) else {
                    return Err(error);
                };
                if !affordable(&pool, now) {
                    return Err(error);
                }
                if let Some(c) = pool.metrics().retries.get(reason) {
                    c.inc();
                }
                tracing::debug!(pool = %pool.name(), endpoint = %backend.addr(), error = %error, "retrying on another endpoint");
                lease = next_lease;
                attempt += 1;
                tokio::time::sleep(retry::backoff(
                    attempt - 1,
                    policy.backoff_base,
                    policy.backoff_max,
                ))
                .await;
            }
        }
    }
}

/// Takes a retry token from the pool's budget, counting a refusal.
fn affordable(pool: &Pool, now: std::time::Instant) -> bool {
    let ok = pool.budget().try_withdraw(now);
    if !ok {
        pool.metrics().budget_exhausted.inc();
    }
    ok
}

/// A lease on an endpoint not yet tried, if there is one.
fn retry_lease(pool: &Pool, tried: &[SocketAddr], now: std::time::Instant) -> Option<Lease> {
    pool.pick_excluding(now, tried).ok()
}

/// Where the request is going, the parts of it that depend on the endpoint.
struct Target<'a> {
    raw_host: &'a str,
    path_and_query: &'a http::uri::PathAndQuery,
}

/// Points a request at one endpoint: request target form, `Host` or
/// `:authority` (which, with `host_header: endpoint`, is the endpoint's own
/// address and so differs per attempt).
fn aim(
    req: &mut Request<RequestBody>,
    backend: &Backend,
    settings: &crate::upstream::PoolSettings,
    target: &Target<'_>,
) -> Result<(), ProxyError> {
    let use_endpoint = settings.host_header == HostHeader::Endpoint || target.raw_host.is_empty();
    let endpoint_authority;
    let authority = if use_endpoint {
        endpoint_authority = backend.addr().to_string();
        endpoint_authority.as_str()
    } else {
        target.raw_host
    };
    match settings.protocol {
        UpstreamProtocol::Http1 => {
            *req.uri_mut() = Uri::from(target.path_and_query.clone());
            // A request that arrived over HTTP/2 carries its host in
            // `:authority`; HTTP/1.1 needs it in `Host`.
            if use_endpoint || !req.headers().contains_key(header::HOST) {
                let v = HeaderValue::from_str(authority)
                    .map_err(|_| ProxyError::BadRequest("invalid host"))?;
                req.headers_mut().insert(header::HOST, v);
            }
        }
        UpstreamProtocol::H2c => {
            // `:scheme` names the transport to the endpoint.
            let scheme = match settings.tls {
                Some(_) => "https",
                None => "http",
            };
            *req.uri_mut() = Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(target.path_and_query.clone())
                .build()
                .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        }
    }
    Ok(())
}

/// A copy of the request head and its buffered body, for retries.
struct Replay {
    method: Method,
    headers: http::HeaderMap,
    version: Version,
    body: bytes::Bytes,
}

impl Replay {
    fn request(&self) -> Request<RequestBody> {
        let mut req = Request::new(RequestBody::Full(
            (!self.body.is_empty()).then(|| self.body.clone()),
        ));
        *req.method_mut() = self.method.clone();
        *req.headers_mut() = self.headers.clone();
        *req.version_mut() = self.version;
        req
    }
}

/// Buffers a body that is empty or of known length up to `max` bytes, so
/// it can be replayed; gives back any other body untouched (`Err`). Reading
/// is bounded by the body read timeout.
///
/// An empty body (most requests that can be retried) returns at once,
/// without a timer; the reading path is boxed so that its future does not
/// enlarge every request's.
async fn replayable_body(
    body: Incoming,
    max: u64,
    received: &prometheus::IntCounter,
    limits: &crate::limits::RequestLimits,
) -> Result<Result<bytes::Bytes, Incoming>, ProxyError> {
    if body.is_end_stream() {
        return Ok(Ok(bytes::Bytes::new()));
    }
    match body.size_hint().exact() {
        Some(len) if len <= max => {
            let collect = http_body_util::BodyExt::collect(body);
            let collected = Box::pin(limits.within(collect))
                .await?
                .map_err(|_| ProxyError::BadRequest("request body ended early"))?
                .to_bytes();
            received.inc_by(collected.len() as u64);
            Ok(Ok(collected))
        }
        _ => Ok(Err(body)),
    }
}

/// Feeds the outcome of one upstream exchange to passive health (outlier
/// ejection). Atomics only; the pool is scanned only when an ejection is
/// about to happen.
fn record_passive<T>(
    pool: &Pool,
    backend: &Backend,
    sent: &Result<(Response<T>, Option<PooledConn>), SendError>,
    policy: &PassivePolicy,
    now: std::time::Instant,
) {
    let (outcome, reason) = match sent {
        Ok((res, _)) => (Outcome::Status(res.status().as_u16()), 3),
        Err(e) => match &e.error {
            ProxyError::Connect { .. } => (Outcome::ConnectError, 0),
            ProxyError::Upstream { error, .. } if caused_by_client_body(error) => return,
            ProxyError::Upstream { .. } => (Outcome::Reset, 1),
            ProxyError::ConnectTimeout { .. } | ProxyError::ResponseTimeout { .. } => {
                (Outcome::Timeout, 2)
            }
            _ => return,
        },
    };
    if let Some(ejection) = passive::record(backend.health(), outcome, now, policy, || {
        pool.ejection_counts(now)
    }) {
        if let Some(c) = backend.metrics().ejections.get(reason) {
            c.inc();
        }
        tracing::warn!(
            pool = %pool.name(),
            endpoint = %backend.addr(),
            reason = metrics::EJECTION_REASONS.get(reason).copied().unwrap_or("-"),
            for_ms = ejection.duration.as_millis() as u64,
            times_ejected = ejection.times_ejected,
            "endpoint ejected"
        );
    }
}

/// Copies bytes both ways between an upgraded client connection and an
/// upgraded upstream connection until either side closes. The lease is held
/// for the tunnel's lifetime, so a WebSocket counts as in flight.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    lease: Lease,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut upstream = hyper_util::rt::TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, endpoint = %lease.backend().addr(), "tunnel closed with error");
    }
    drop(lease);
}

fn caused_by_client_body(e: &hyper::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<crate::body::ClientBodyError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The host a request is for: the URI authority (HTTP/2 `:authority`, or an
/// HTTP/1.1 absolute-form target, which RFC 9112 §3.2.2 says wins over
/// `Host`), else the single `Host` header. HTTP/1.1 without `Host`, or with
/// several, is a 400 (RFC 9112 §3.2).
fn request_host(req: &Request<Incoming>) -> Result<RawHost, ProxyError> {
    if let Some(a) = req.uri().authority() {
        return Ok(RawHost::Authority(a.clone()));
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(ProxyError::BadRequest("several Host headers")),
        (Some(v), None) => match v.to_str() {
            Ok(_) => Ok(RawHost::Header(v.clone())),
            Err(_) => Err(ProxyError::BadRequest("invalid Host header")),
        },
        (None, _) if req.version() == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("missing Host header"))
        }
        (None, _) => Ok(RawHost::None),
    }
}

/// The host as the client sent it. Both forms share the bytes hyper
/// already parsed (a reference-count increment, no copy).
enum RawHost {
    Authority(http::uri::Authority),
    /// A `Host` value already checked to be visible ASCII.
    Header(HeaderValue),
    None,
}

impl RawHost {
    fn to_value(&self) -> Option<HeaderValue> {
        match self {
            RawHost::Authority(a) => HeaderValue::from_str(a.as_str()).ok(),
            RawHost::Header(v) => Some(v.clone()).filter(|v| !v.is_empty()),
            RawHost::None => None,
        }
    }

    fn as_str(&self) -> &str {
        match self {
            RawHost::Authority(a) => a.as_str(),
            RawHost::Header(v) => v.to_str().unwrap_or(""),
            RawHost::None => "",
        }
    }
}

/// A short plain-text error response carrying the request id.
pub fn error_response(err: &ProxyError, request_id: &HeaderValue) -> Response<ResponseBody> {
    let status = err.status();
    let text = format!(
        "{} {}: {}\nrequest-id: {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        err.client_message(),
        request_id.to_str().unwrap_or("-"),
    );
    let mut res = Response::new(ResponseBody::full(text));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(X_REQUEST_ID.clone(), request_id.clone());
    if matches!(err, ProxyError::BadRequest(_) | ProxyError::ClientBody(_)) {
        // The connection's state is suspect after a malformed request.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}
