//! One request, from the client to an endpoint and back.
//!
//! [`handle`] is the hyper service of every traffic connection: it counts
//! the request for the connection's idle watchdog, runs `forward`, and
//! turns a [`ProxyError`] into a response
//! ([`ProxyError::status`](crate::error::ProxyError::status) is the only
//! mapping to a status code). One request's path:
//!
//! 1. `prepare`: head limits; the host (`host`); the route, under the
//!    current snapshot whose guard is dropped before any `.await`;
//!    admission (a pool slot and a leased endpoint); the head rewritten for
//!    the upstream (`rewrite_head`); the body buffered if a retry may
//!    replay it.
//! 2. `attempts`: each attempt (`send_once`) aims the request at its
//!    endpoint (`aim`), sends it within the connect and response-header
//!    timeouts, and counts the outcome in metrics and passive health
//!    (`observe`); then [`retry::decide_retry`] either sends it again to
//!    another endpoint or lets the outcome stand.
//! 3. `respond`: the response head rewritten; a `101` starts the upgrade
//!    tunnel, anything else streams back in a [`ResponseBody`] that
//!    releases the lease and the connection, and writes the access-log
//!    line (`Record`), when it ends.

mod host;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use tokio::time::Instant;

use crate::config::{HostHeader, UpstreamProtocol};
use crate::error::ProxyError;
use crate::health::passive::{self, EjectionReason, Outcome, PassivePolicy};
use crate::http1::RawFields;
use crate::metrics::{self, RouteMetrics};
use crate::middleware::{self, Chain};
use crate::retry::{self, Attempt, AttemptResult, RetryDecision, RetryEnv};
use crate::snapshot::Shared;
use crate::upstream::body::{ClientBody, Completion, RequestBody, ResponseBody, UpstreamBody};
use crate::upstream::headers::{self as hdr, RequestFields, X_REQUEST_ID};
use crate::upstream::{Backend, Lease, Pool, SendError};
use host::RawHost;

/// Per-connection context of a traffic listener.
#[derive(Debug, Clone)]
pub struct ConnCtx {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The client's IP as an `X-Forwarded-For` entry, formatted once.
    pub client_ip: HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
    /// Idle tracking for the HTTP/2 connection watchdog; `None` on
    /// HTTP/1.1 connections, whose driver times its own idle gaps (and
    /// which then carry no tracker, nor its per-request bookkeeping).
    pub activity: Option<Arc<Activity>>,
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
        Some(self.epoch + Duration::from_millis(ms))
    }

    fn enter(this: &Arc<Self>) -> ActiveGuard {
        this.active.fetch_add(1, Ordering::AcqRel);
        ActiveGuard(Arc::clone(this))
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
    _active: Option<ActiveGuard>,
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
    /// The exchange's clock, for the response body to stamp.
    progress: Option<crate::limits::Progress>,
    /// The middleware that answered instead of the upstream.
    middleware: Option<Arc<str>>,
    /// The route's chain and how far the request went through it, when
    /// some step edits responses.
    chain: Option<(Arc<Chain>, middleware::Passed)>,
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
            middleware = self.middleware.as_deref().unwrap_or("-"),
        );
    }
}

/// The hyper service for one request on a traffic connection.
///
/// `raw`: an HTTP/1.1 request's fields as weir's codec received them, kept
/// out of the request's map (which then holds only what weir adds) so that
/// they go to an HTTP/1.1 endpoint as they came, without a map built for
/// them; `None` for HTTP/2 requests, whose fields are all in the map.
pub async fn handle(
    ctx: Arc<ConnCtx>,
    req: Request<ClientBody>,
    raw: Option<RawFields>,
) -> Result<Response<ResponseBody>, Infallible> {
    let start = Instant::now();
    let fields = RequestFields {
        map: req.headers(),
        raw: raw.as_ref(),
    };
    let request_id = hdr::incoming_request_id(fields).unwrap_or_else(hdr::new_request_id);
    let downstream_version = req.version();
    let mut stream_end = ctx
        .activity
        .as_deref()
        .filter(|_| downstream_version == Version::HTTP_2)
        .map(|activity| StreamEnd {
            activity,
            answered: false,
        });
    let mut record = Record {
        _active: ctx.activity.as_ref().map(Activity::enter),
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
        progress: None,
        middleware: None,
        chain: None,
    };
    // Not boxed: each caller already holds this future only while the
    // request is in flight (the HTTP/1.1 driver boxes its per-request
    // future, hyper's HTTP/2 server runs each stream as its own task), so
    // a box here would be a second allocation and a 3 KiB copy per request.
    let result = forward(&ctx, req, raw, &mut record, &request_id).await;
    if let Some(end) = &mut stream_end {
        end.answered = true;
    }
    let response = match result {
        Ok(res) => res,
        Err(err) => failed(&err, &record, &request_id),
    };
    Ok(finish(response, record, downstream_version))
}

/// weir's answer for a request that could not be proxied, logged when
/// it is weir's or an endpoint's fault (5xx).
fn failed(err: &ProxyError, record: &Record, request_id: &HeaderValue) -> Response<ResponseBody> {
    if err.status().is_server_error() {
        tracing::warn!(
            request_id = request_id.to_str().unwrap_or("-"),
            pool = record.pool.as_ref().map_or("-", |p| &**p.name()),
            error = %err,
            "request failed"
        );
    }
    error_response(err, request_id)
}

/// The response as the client gets it, taken apart once: the route's
/// middleware response edits, the fields in the form the client's
/// protocol writes (only the HTTP/1.1 encoder writes raw fields, see
/// `RawFields`), and the record that logs and counts it at its end.
fn finish(
    response: Response<ResponseBody>,
    mut record: Record,
    version: Version,
) -> Response<ResponseBody> {
    let (mut parts, mut body) = response.into_parts();
    if let Some((chain, passed)) = &record.chain {
        let fields = middleware::Fields::new(&mut parts.headers, body.raw_fields_mut());
        chain.edit_response(*passed, fields);
    }
    if version == Version::HTTP_2 {
        if let Some(raw) = body.take_raw_fields() {
            hdr::materialize(&mut parts, raw);
        }
    } else {
        parts.version = Version::HTTP_11;
    }
    record.status = parts.status;
    let body = body
        .with_progress(record.progress.take())
        .on_complete(Box::new(record));
    Response::from_parts(parts, body)
}

/// One request's way: prepared once, sent until an attempt's outcome
/// stands, and its response turned into the client's.
async fn forward(
    ctx: &ConnCtx,
    req: Request<ClientBody>,
    raw: Option<RawFields>,
    record: &mut Record,
    request_id: &HeaderValue,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Prepared {
        pool,
        lease,
        head,
        raw,
        added,
        body,
        plan,
        upgrade,
    } = prepare(ctx, req, raw, record, request_id).await?;
    let sent = Sent {
        head,
        raw: raw.as_ref(),
        added: &added,
    };
    let answered = attempts(&pool, lease, sent, body, &plan, record).await?;
    Ok(respond(
        answered,
        upgrade,
        request_id,
        pool.settings().connect,
    ))
}

/// A request ready to send, and what its attempts share.
struct Prepared {
    pool: Arc<Pool>,
    /// The endpoint admission picked for the first attempt.
    lease: Lease,
    /// The request head, rewritten for the upstream; every attempt sends
    /// it (re-aimed at its endpoint).
    head: http::request::Parts,
    /// The client's fields as received (HTTP/1.1), rewritten too; sent
    /// before those of `head`.
    raw: Option<RawFields>,
    /// weir's own fields, sent after those of `head`.
    added: hdr::Added,
    /// The first attempt's body.
    body: RequestBody,
    plan: Plan,
    /// The request asks for a protocol upgrade (HTTP/1.1 only).
    upgrade: bool,
}

/// What every attempt of one request needs.
struct Plan {
    target: Target,
    /// A copy to send again, when a retry may replay the request.
    replay: Option<Replay>,
    idempotent: bool,
    /// 1 for an upgrade, else the pool's `retries.attempts`.
    max_attempts: u32,
}

/// Everything before the first send: head limits, host, route, admission
/// (a pool slot and a leased endpoint), the rewritten head, and the body
/// buffered when a retry could replay it.
async fn prepare(
    ctx: &ConnCtx,
    req: Request<ClientBody>,
    mut raw: Option<RawFields>,
    record: &mut Record,
    request_id: &HeaderValue,
) -> Result<Prepared, ProxyError> {
    crate::limits::check_head(&req, &ctx.limits)?;
    let fields = RequestFields {
        map: req.headers(),
        raw: raw.as_ref(),
    };
    let host = host::request_host(req.uri(), fields, req.version())?;
    let (pool, via, chain) = route(ctx, &host.routing_name(), req.uri().path(), record)?;
    let (mut parts, body) = req.into_parts();
    if let Some(chain) = chain {
        run_chain(ctx, chain, &mut parts, raw.as_mut(), &host, record).await?;
    }
    record.pool = Some(Arc::clone(&pool));
    let (lease, admission) = pool.admit(Instant::now()).await?;
    record._admission = admission;
    record.endpoint = Some(lease.backend().addr());

    let fields = RequestFields {
        map: &parts.headers,
        raw: raw.as_ref(),
    };
    let upgrade = parts.version != Version::HTTP_2 && hdr::wants_upgrade(fields);
    let target = Target {
        path_and_query: parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
        host_value: host.to_value(),
        host,
    };
    let settings = pool.settings();
    let head = HeadRewrite {
        client_ip: &ctx.client_ip,
        scheme: ctx.scheme,
        via: via.as_deref(),
        request_id,
        protocol: settings.protocol,
        upgrade,
    };
    let added = rewrite_head(&mut parts, raw.as_mut(), &head, target.host_value.clone());
    let max_attempts = if upgrade {
        1
    } else {
        settings.retries.attempts
    };
    let idempotent = retry::is_idempotent(&parts.method);
    let (mut body, replay) = if max_attempts > 1 && idempotent {
        first_body(body, &pool, &ctx.limits).await?
    } else {
        (streamed(body, &pool, &ctx.limits), None)
    };
    if let Some(raw) = raw.as_mut() {
        trim_client_fields(raw, settings, &target, &body);
    }
    record.progress = body.progress();
    pool.budget().deposit();
    Ok(Prepared {
        lease,
        head: parts,
        raw,
        added,
        body,
        plan: Plan {
            target,
            replay,
            idempotent,
            max_attempts,
        },
        upgrade,
        pool,
    })
}

/// What of the client's fields as received the attempts set themselves:
/// `Host` when the endpoint gets another host ([`aim`]), and
/// `Content-Length`, which each attempt sets from the body (see
/// `upstream::client`) except for an empty body, where it sets none.
fn trim_client_fields(
    raw: &mut RawFields,
    settings: &crate::upstream::PoolSettings,
    target: &Target,
    body: &RequestBody,
) {
    let keep_host = keeps_client_host(settings, target);
    let keep_length = body.size_hint().exact() == Some(0) && body.is_end_stream();
    if keep_host && keep_length {
        return;
    }
    raw.drop_where(|name, _| {
        (!keep_host && name.eq_ignore_ascii_case(b"host"))
            || (!keep_length && name.eq_ignore_ascii_case(b"content-length"))
    });
}

type Routed = (Arc<Pool>, Option<Arc<str>>, Option<Arc<Chain>>);

/// Routes `host` and `path` under the current snapshot, whose guard is
/// held only here (never across `.await`); returns the pool, the `Via`
/// pseudonym and the route's middleware.
fn route(ctx: &ConnCtx, host: &str, path: &str, record: &mut Record) -> Result<Routed, ProxyError> {
    let snap = ctx.shared.snapshot();
    record.log = snap.access_log;
    if record.log {
        record.path = path.to_owned();
    }
    let route = snap.routes.resolve(host, path).ok_or(ProxyError::NoRoute)?;
    record.route = Some(Arc::clone(&route.name));
    record.route_metrics = Some(Arc::clone(&route.target.metrics));
    let chain = route.target.chain.clone();
    Ok((Arc::clone(&route.target.pool), snap.via.clone(), chain))
}

/// Runs the route's middleware on the request (boxed: only routes with
/// middleware pay for the chain's future). A refusal becomes the answer;
/// either way the record learns how far the request went, for the
/// response edits and the access log.
async fn run_chain(
    ctx: &ConnCtx,
    chain: Arc<Chain>,
    parts: &mut http::request::Parts,
    raw: Option<&mut RawFields>,
    host: &RawHost,
    record: &mut Record,
) -> Result<(), ProxyError> {
    let mut req = middleware::Request::new(
        &parts.method,
        &mut parts.uri,
        parts.version,
        middleware::Fields::new(&mut parts.headers, raw),
        host.as_str(),
        ctx.scheme == "https",
        ctx.peer.ip(),
        record.start,
    );
    let result = Box::pin(chain.run(&mut req)).await;
    let (passed, refusal) = match result {
        Ok(passed) => (passed, None),
        Err((refusal, passed)) => (passed, Some(refusal)),
    };
    if chain.edits_responses() {
        record.chain = Some((chain, passed));
    }
    match refusal {
        None => Ok(()),
        Some(refusal) => {
            record.middleware = Some(Arc::clone(&refusal.middleware));
            Err(ProxyError::Refused(refusal))
        }
    }
}

/// The per-request inputs of [`rewrite_head`].
struct HeadRewrite<'a> {
    client_ip: &'a HeaderValue,
    scheme: &'static str,
    via: Option<&'a str>,
    request_id: &'a HeaderValue,
    protocol: UpstreamProtocol,
    upgrade: bool,
}

/// Rewrites the request head for the upstream: hop-by-hop headers and
/// `Expect` out; the version of the pool's protocol. Returns what goes in:
/// `X-Forwarded-*`, `Via` and `X-Request-Id`, sent after the head's own
/// fields. (The target and `Host` are set per attempt by [`aim`].)
fn rewrite_head(
    parts: &mut http::request::Parts,
    mut raw: Option<&mut RawFields>,
    head: &HeadRewrite<'_>,
    forwarded_host: Option<HeaderValue>,
) -> hdr::Added {
    let mut added = hdr::Added::default();
    let headers = &mut parts.headers;
    hdr::strip_hop_by_hop(headers, head.upgrade);
    if let Some(raw) = raw.as_deref_mut() {
        if hdr::strip_hop_by_hop_raw(raw, head.upgrade) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        raw.remove(header::EXPECT.as_str());
    }
    // The connection driver answers `100 Continue` when the body is first read;
    // the endpoint must not wait for a second round trip.
    headers.remove(header::EXPECT);
    hdr::add_forwarded(
        headers,
        raw.as_deref_mut(),
        &mut added,
        head.client_ip,
        head.scheme,
        forwarded_host,
    );
    if let Some(pseudonym) = head.via {
        // The version the client spoke, so before it is changed below.
        hdr::add_via(&mut added, parts.version, pseudonym);
    }
    added.request_id = Some(head.request_id.clone());
    if !headers.is_empty() {
        headers.remove(&X_REQUEST_ID);
    }
    if let Some(raw) = raw.as_deref_mut() {
        raw.remove(X_REQUEST_ID.as_str());
    }
    match head.protocol {
        UpstreamProtocol::Http1 => parts.version = Version::HTTP_11,
        UpstreamProtocol::H2c => {
            parts.version = Version::HTTP_2;
            // HTTP/2 carries the host in `:authority` (RFC 9113 §8.3.1).
            parts.headers.remove(header::HOST);
            if let Some(raw) = raw {
                raw.remove(header::HOST.as_str());
            }
        }
    }
    added
}

/// The client's body, streamed through the pool's byte counter and the
/// body limits.
fn streamed(body: ClientBody, pool: &Pool, limits: &crate::limits::RequestLimits) -> RequestBody {
    RequestBody::Incoming(body, limits.meter(&pool.metrics().received_bytes))
}

/// The first attempt's body of an idempotent request that may be retried,
/// and a [`Replay`] copy when the body could be buffered (see
/// `crate::retry` for the rules).
async fn first_body(
    body: ClientBody,
    pool: &Pool,
    limits: &crate::limits::RequestLimits,
) -> Result<(RequestBody, Option<Replay>), ProxyError> {
    let max = pool.settings().retries.max_replay_body;
    let received = &pool.metrics().received_bytes;
    Ok(match replayable_body(body, max, received, limits).await? {
        Ok(bytes) => {
            let replay = Replay {
                body: bytes.clone(),
            };
            (
                RequestBody::Full((!bytes.is_empty()).then_some(bytes)),
                Some(replay),
            )
        }
        Err(body) => (streamed(body, pool, limits), None),
    })
}

/// What every attempt sends: the rewritten head, and the client's fields
/// as received (HTTP/1.1) that go before the head's own.
struct Sent<'a> {
    head: http::request::Parts,
    raw: Option<&'a RawFields>,
    added: &'a hdr::Added,
}

/// The response an attempt got, with what [`respond`] hands on to the
/// response body.
struct Answered {
    response: Response<UpstreamBody>,
    lease: Lease,
}

/// Sends the request to the leased endpoint, and again to another one for
/// as long as [`retry::decide_retry`] says so; returns the response or the
/// error that stands.
async fn attempts(
    pool: &Pool,
    mut lease: Lease,
    mut sent: Sent<'_>,
    first: RequestBody,
    plan: &Plan,
    record: &mut Record,
) -> Result<Answered, ProxyError> {
    let mut next = Some(first);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut number = 1u32;
    // The breaker's unit for the retry in flight (see `limits::breaker`).
    let mut retry_unit = None;
    loop {
        record.endpoint = Some(lease.backend().addr());
        let body = match (next.take(), &plan.replay) {
            (Some(b), _) => b,
            (None, Some(replay)) => replay.body(),
            // Unreachable by construction: a retry is only decided with
            // the unsent body or a replay copy in hand.
            (None, None) => return Err(ProxyError::BadRequest("request cannot be replayed")),
        };
        let (exchange, now) = send_once(pool, &mut lease, &mut sent, body, &plan.target).await?;
        let attempt = Attempt {
            result: exchange.retry_result(),
            downstream_started: false,
            idempotent: plan.idempotent,
            replayable: plan.replay.is_some(),
            number,
            max_attempts: plan.max_attempts,
        };
        let mut env = PoolRetry {
            pool,
            tried: &mut tried,
            current: lease.backend().addr(),
            now,
            exchange: &exchange,
            unit: &mut retry_unit,
        };
        let (reason, wait, endpoint) =
            match retry::decide_retry(&attempt, &pool.settings().retries, &mut env) {
                RetryDecision::GiveUp(_) => return exchange.into_answer(lease),
                RetryDecision::Retry {
                    reason,
                    wait,
                    endpoint,
                } => (reason, wait, endpoint),
            };
        pool.metrics().retried(reason);
        tracing::debug!(pool = %pool.name(), endpoint = %lease.backend().addr(),
            outcome = %exchange, reason = reason.as_str(), "retrying on another endpoint");
        // A response is dropped unread: its connection closes rather than
        // return to the pool with an unknown body.
        next = exchange.into_unsent();
        lease = endpoint;
        number += 1;
        tokio::time::sleep(wait.duration()).await;
    }
}

/// One attempt: the request aimed at the leased endpoint and sent, and its
/// outcome counted (endpoint metrics, passive health, the lease's time to
/// response headers). Returns the outcome and when it arrived. A failure
/// of the client's own body ends the request here: it is not the
/// endpoint's fault, and the body is gone.
async fn send_once(
    pool: &Pool,
    lease: &mut Lease,
    request: &mut Sent<'_>,
    body: RequestBody,
    target: &Target,
) -> Result<(Exchange, Instant), ProxyError> {
    let backend = Arc::clone(lease.backend());
    let settings = pool.settings();
    let raw = request.raw;
    aim(&mut request.head, raw, &backend, settings, target)?;
    backend.metrics().picks.inc();
    let sent_at = Instant::now();
    let conns = backend.conns();
    let extra = (raw, request.added);
    let sent = conns
        .send(&mut request.head, extra, body, &settings.connect)
        .await;
    let now = Instant::now();
    let exchange = Exchange::from_send(sent)?;
    let rtt = now.saturating_duration_since(sent_at);
    if let Exchange::Response(..) = exchange {
        lease.set_rtt(rtt);
    }
    observe(pool, &backend, &exchange, rtt, now);
    Ok((exchange, now))
}

/// What one attempt produced.
// The large variant is the common one (every answered attempt); boxing it
// would cost an allocation per request to save stack on the rare failure.
#[allow(clippy::large_enum_variant)]
enum Exchange {
    /// A response head (an HTTP/1 body holds the connection it came on).
    Response(Response<UpstreamBody>),
    /// No response, and the body back when the request was provably
    /// never sent.
    Failed {
        error: ProxyError,
        unsent: Option<RequestBody>,
    },
}

impl Exchange {
    /// Classifies a send; a failure of the client's body is an error.
    fn from_send(sent: Result<Response<UpstreamBody>, SendError>) -> Result<Exchange, ProxyError> {
        match sent {
            Ok(res) => Ok(Exchange::Response(res)),
            Err(SendError { error, unsent }) => match error.blame_client_body() {
                error @ ProxyError::ClientBody(_) => Err(error),
                error => Ok(Exchange::Failed { error, unsent }),
            },
        }
    }

    /// The outcome as the retry rules see it.
    fn retry_result(&self) -> AttemptResult {
        match self {
            Exchange::Response(res) => AttemptResult::Response(res.status().as_u16()),
            Exchange::Failed {
                unsent: Some(_), ..
            } => AttemptResult::NotSent,
            Exchange::Failed {
                error: ProxyError::Upstream { .. } | ProxyError::UpstreamProtocol { .. },
                ..
            } => AttemptResult::Reset,
            Exchange::Failed { .. } => AttemptResult::Failed,
        }
    }

    /// The outcome as passive health sees it; `None`: not the endpoint's
    /// doing.
    fn passive_outcome(&self) -> Option<Outcome> {
        let Exchange::Failed { error, .. } = self else {
            return match self {
                Exchange::Response(res) => Some(Outcome::Status(res.status().as_u16())),
                Exchange::Failed { .. } => None,
            };
        };
        match error {
            ProxyError::Connect { .. } => Some(Outcome::ConnectError),
            ProxyError::Upstream { .. } | ProxyError::UpstreamProtocol { .. } => {
                Some(Outcome::Reset)
            }
            ProxyError::ConnectTimeout { .. } | ProxyError::ResponseTimeout { .. } => {
                Some(Outcome::Timeout)
            }
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Exchange::Response(res) => retry::retry_after(crate::upstream::body::response_field(
                res,
                &header::RETRY_AFTER,
            )?),
            Exchange::Failed { .. } => None,
        }
    }

    /// The outcome as it stands: the response to forward, or the error.
    fn into_answer(self, lease: Lease) -> Result<Answered, ProxyError> {
        match self {
            Exchange::Response(response) => Ok(Answered { response, lease }),
            Exchange::Failed { error, .. } => Err(error),
        }
    }

    /// The body, if the request was never sent (a response is dropped).
    fn into_unsent(self) -> Option<RequestBody> {
        match self {
            Exchange::Failed { unsent, .. } => unsent,
            Exchange::Response(..) => None,
        }
    }
}

impl std::fmt::Display for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exchange::Response(res) => write!(f, "status {}", res.status().as_u16()),
            Exchange::Failed { error, .. } => error.fmt(f),
        }
    }
}

/// Counts one attempt's outcome in the endpoint's metrics and feeds it to
/// passive health.
fn observe(pool: &Pool, backend: &Backend, exchange: &Exchange, rtt: Duration, now: Instant) {
    let em = backend.metrics();
    match exchange {
        Exchange::Response(res) => {
            em.request(metrics::status_class(res.status()));
            if let Some(h) = &em.response_time {
                h.observe(rtt.as_secs_f64());
            }
        }
        Exchange::Failed { error, .. } => {
            em.request(metrics::CLASS_ERROR);
            match error {
                ProxyError::Connect { .. } => em.connect_errors.inc(),
                ProxyError::UpstreamProtocol { .. } => em.bad_heads.inc(),
                ProxyError::ConnectTimeout { .. } => em.connect_timeouts.inc(),
                ProxyError::ResponseTimeout { .. } => em.response_timeouts.inc(),
                _ => {}
            }
        }
    }
    if let (Some(policy), Some(outcome)) = (&pool.settings().passive, exchange.passive_outcome()) {
        record_passive(pool, backend, outcome, policy, now);
    }
}

/// Feeds one outcome to passive health (outlier ejection), counting and
/// logging an ejection it causes. Atomics only; the pool is scanned only
/// when an ejection is about to happen.
fn record_passive(
    pool: &Pool,
    backend: &Backend,
    outcome: Outcome,
    policy: &PassivePolicy,
    now: Instant,
) {
    let counts = || pool.ejection_counts(now);
    let Some(ejection) = passive::record(backend.health(), outcome, now, policy, counts) else {
        return;
    };
    let reason = outcome.ejection_reason();
    if let Some(reason) = reason {
        backend.metrics().ejected(reason);
    }
    tracing::warn!(
        pool = %pool.name(),
        endpoint = %backend.addr(),
        reason = reason.map_or("-", EjectionReason::as_str),
        for_ms = ejection.duration.as_millis() as u64,
        times_ejected = ejection.times_ejected,
        "endpoint ejected"
    );
}

/// The pool's side of a retry decision: the response's `Retry-After`, a
/// lease on an endpoint not tried yet, a budget token.
struct PoolRetry<'a> {
    pool: &'a Pool,
    /// Endpoints of earlier attempts; `current` joins them only when a
    /// retry is otherwise decided, so most requests never allocate it.
    tried: &'a mut Vec<SocketAddr>,
    current: SocketAddr,
    now: Instant,
    exchange: &'a Exchange,
    /// The breaker's unit for the retry being decided (held until the
    /// request's attempts end).
    unit: &'a mut Option<crate::limits::breaker::Slot>,
}

impl RetryEnv for PoolRetry<'_> {
    type Endpoint = Lease;

    fn retry_after(&self) -> Option<Duration> {
        self.exchange.retry_after()
    }

    fn another_endpoint(&mut self) -> Option<Lease> {
        // `max_retries`: a retry that would pass it is not made (before the
        // pick, so a refused retry does not move the selector); this
        // attempt's outcome stands.
        match self.pool.breaker().retry() {
            Ok(unit) => *self.unit = Some(unit),
            Err(threshold) => {
                self.pool.metrics().breaker_rejected(threshold);
                return None;
            }
        }
        self.tried.push(self.current);
        self.pool.pick_excluding(self.now, self.tried).ok()
    }

    fn withdraw_token(&mut self) -> bool {
        let ok = self.pool.budget().try_withdraw(self.now);
        if !ok {
            self.pool.metrics().budget_exhausted.inc();
        }
        ok
    }
}

/// Where the request is going: the parts of it that depend on the
/// endpoint.
struct Target {
    host: RawHost,
    /// `host` as a header value, made once.
    host_value: Option<HeaderValue>,
    path_and_query: http::uri::PathAndQuery,
}

/// Points a request at one endpoint: request target form, `Host` or
/// `:authority` (which, with `host_header: endpoint`, is the endpoint's own
/// address and so differs per attempt).
/// Whether the client's `Host` goes to the endpoint as it is: only when it
/// is the host routed by. An authority (HTTP/2 `:authority`, an
/// absolute-form target) wins over it (RFC 9112 §3.2.2), and
/// `host_header: endpoint` replaces it.
fn keeps_client_host(settings: &crate::upstream::PoolSettings, target: &Target) -> bool {
    !uses_endpoint_host(settings, target) && !target.host.is_authority()
}

fn uses_endpoint_host(settings: &crate::upstream::PoolSettings, target: &Target) -> bool {
    settings.host_header == HostHeader::Endpoint || target.host.as_str().is_empty()
}

fn aim(
    req: &mut http::request::Parts,
    raw: Option<&RawFields>,
    backend: &Backend,
    settings: &crate::upstream::PoolSettings,
    target: &Target,
) -> Result<(), ProxyError> {
    let use_endpoint = uses_endpoint_host(settings, target);
    let endpoint_authority;
    let authority = if use_endpoint {
        endpoint_authority = backend.addr().to_string();
        endpoint_authority.as_str()
    } else {
        target.host.as_str()
    };
    let invalid_host = || ProxyError::BadRequest("invalid host");
    match settings.protocol {
        UpstreamProtocol::Http1 => {
            req.uri = Uri::from(target.path_and_query.clone());
            // The client's `Host` goes on only when it is the host routed
            // by: an authority (HTTP/2 `:authority`, an absolute-form
            // target) wins over it (RFC 9112 §3.2.2), and HTTP/1.1 needs
            // the host in `Host`.
            let client_host = req.headers.contains_key(header::HOST)
                || raw.is_some_and(|r| r.contains(header::HOST.as_str()));
            let keep = keeps_client_host(settings, target) && client_host;
            if !keep {
                let v = match (&target.host_value, use_endpoint) {
                    (Some(v), false) => v.clone(),
                    _ => HeaderValue::from_str(authority).map_err(|_| invalid_host())?,
                };
                req.headers.insert(header::HOST, v);
            }
        }
        UpstreamProtocol::H2c => {
            // `:scheme` names the transport to the endpoint.
            let scheme = match settings.tls {
                Some(_) => "https",
                None => "http",
            };
            req.uri = Uri::builder()
                .scheme(scheme)
                .authority(authority)
                .path_and_query(target.path_and_query.clone())
                .build()
                .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        }
    }
    Ok(())
}

/// The client's side of the response: hop-by-hop headers out, the request
/// id in. A `101` to an upgrade request carries a [`Tunnel`] in its
/// extensions for the connection driver (which holds the lease); any other
/// response streams back in a [`ResponseBody`] that releases the lease and
/// the connection when it ends.
fn respond(
    answered: Answered,
    upgrade: bool,
    request_id: &HeaderValue,
    connect: crate::upstream::ConnectSettings,
) -> Response<ResponseBody> {
    let Answered { response, lease } = answered;
    let tunnel = upgrade && response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let (mut parts, mut body) = response.into_parts();
    if tunnel {
        // The switch's Upgrade and Connection fields are put back by the
        // map's strip, so it gets a map.
        if let Some(raw) = body.take_raw_fields() {
            hdr::materialize(&mut parts, raw);
        }
    } else if let Some(raw) = body.raw_fields_mut() {
        hdr::strip_hop_by_hop_raw(raw, false);
        raw.remove(X_REQUEST_ID.as_str());
    }
    hdr::strip_hop_by_hop(&mut parts.headers, tunnel);
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), request_id.clone());
    if tunnel {
        if let UpstreamBody::H1(body) = body {
            if let Some((io, early)) = (*body).into_tunnel() {
                parts.extensions.insert(Tunnel::new(io, early, lease));
            }
        }
        return Response::from_parts(parts, ResponseBody::full(bytes::Bytes::new()));
    }
    Response::from_parts(parts, ResponseBody::upstream(body, Some(lease), connect))
}

/// The buffered body of a request that may be retried. The head needs no
/// copy: attempts borrow it (see `upstream::client::ConnPool::send`).
struct Replay {
    body: bytes::Bytes,
}

impl Replay {
    fn body(&self) -> RequestBody {
        RequestBody::Full((!self.body.is_empty()).then(|| self.body.clone()))
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
    body: ClientBody,
    max: u64,
    received: &prometheus::IntCounter,
    limits: &crate::limits::RequestLimits,
) -> Result<Result<bytes::Bytes, ClientBody>, ProxyError> {
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

/// The upstream half of an accepted protocol upgrade (a `101` response's
/// extension): the connection driver writes the `101` head, then runs the
/// tunnel over the client connection. The lease is held for the tunnel's
/// lifetime, so a WebSocket counts as in flight. (Cloneable only because
/// response extensions must be; the first `take` wins.)
#[derive(Clone)]
pub struct Tunnel(Arc<std::sync::Mutex<Option<Upgraded>>>);

/// The endpoint's side of an upgrade: its socket, what it sent behind the
/// `101` head, and the lease that keeps it counted.
struct Upgraded {
    io: crate::tls::upstream::MaybeTls,
    early: bytes::Bytes,
    lease: Lease,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tunnel")
    }
}

impl Tunnel {
    fn new(io: crate::tls::upstream::MaybeTls, early: bytes::Bytes, lease: Lease) -> Self {
        Tunnel(Arc::new(std::sync::Mutex::new(Some(Upgraded {
            io,
            early,
            lease,
        }))))
    }

    /// Copies bytes both ways between the client connection and the
    /// endpoint's until either side closes. `early` are client bytes that
    /// arrived behind the request head.
    pub async fn run<C>(self, mut client: C, early: bytes::Bytes)
    where
        C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        use tokio::io::AsyncWriteExt;
        let taken = self.0.lock().ok().and_then(|mut t| t.take());
        let Some(Upgraded {
            io: mut upstream,
            early: from_upstream,
            lease,
        }) = taken
        else {
            return;
        };
        let copied = async {
            client.write_all(&from_upstream).await?;
            upstream.write_all(&early).await?;
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await
        };
        if let Err(e) = copied.await {
            tracing::debug!(error = %e, endpoint = %lease.backend().addr(), "tunnel closed with error");
        }
        drop(lease);
    }
}

/// Set on 503s weir sheds itself (circuit breaker, pool limits).
static X_WEIR_OVERLOADED: header::HeaderName = header::HeaderName::from_static("x-weir-overloaded");

/// A short plain-text error response carrying the request id.
pub fn error_response(err: &ProxyError, request_id: &HeaderValue) -> Response<ResponseBody> {
    if let ProxyError::Refused(refusal) = err {
        return refusal_response(refusal, request_id);
    }
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
    if matches!(
        err,
        ProxyError::BadRequest(_)
            | ProxyError::ClientBody(_)
            | ProxyError::Head(_)
            | ProxyError::HeadTimeout
    ) {
        // The connection's state is suspect after a malformed request.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if matches!(
        err,
        ProxyError::CircuitOpen { .. } | ProxyError::Overloaded { .. }
    ) {
        // Envoy's `x-envoy-overloaded`: the 503 is the proxy shedding load,
        // not an endpoint's answer, so a client may back off and retry.
        h.insert(X_WEIR_OVERLOADED.clone(), HeaderValue::from_static("true"));
    }
    res
}

/// A middleware's answer: its status and fields, its body or weir's short
/// text (none for a redirect), and the request id.
fn refusal_response(
    refusal: &crate::error::Refusal,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    let status = refusal.status();
    let text = match refusal.kind {
        _ if !refusal.body.is_empty() => refusal.body.clone(),
        crate::error::RefusalKind::Redirect(_) => bytes::Bytes::new(),
        kind => format!(
            "{} {}: {}\nrequest-id: {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            kind.client_message(),
            request_id.to_str().unwrap_or("-"),
        )
        .into(),
    };
    let own_body = refusal.body.is_empty();
    let mut res = Response::new(ResponseBody::full(text));
    *res.status_mut() = status;
    let h = res.headers_mut();
    if own_body && !matches!(refusal.kind, crate::error::RefusalKind::Redirect(_)) {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    let redirect = matches!(refusal.kind, crate::error::RefusalKind::Redirect(_));
    if !redirect && !refusal.headers.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    for (name, value) in &refusal.headers {
        h.append(name.clone(), value.clone());
    }
    h.insert(X_REQUEST_ID.clone(), request_id.clone());
    res
}
