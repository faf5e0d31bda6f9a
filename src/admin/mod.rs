//! The admin listener: metrics, liveness, readiness and status.
//!
//! It is a separate listener (default `127.0.0.1:9901`) so that operators
//! can firewall it apart from traffic, and so that a flood on a traffic port
//! cannot hide weir's own metrics.
//!
//! | path | method | answer |
//! |---|---|---|
//! | `/metrics` | GET | Prometheus text format 0.0.4 |
//! | `/healthz` | GET | 200 while the process runs |
//! | `/readyz` | GET | 200 when the config is loaded and listeners are bound; 503 before that and while draining |
//! | `/status` | GET | JSON view of listeners, routes, pools and endpoints |
//! | `/reload` | POST | reread the config file; 200 with a JSON summary of what changed, 400 with the error (the running config keeps serving) |
//!
//! Unknown paths get 404; a known path with another method gets 405 with
//! `Allow`.

pub mod gauges;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::balance::Endpoint;
use crate::config::{HostMatch, RouteConfig};
use crate::health::Health;
use crate::reload::ReloadHandle;
use crate::server::{BindError, Listener};
use crate::snapshot::Shared;
use crate::upstream::body::ResponseBody;
use crate::upstream::endpoints::SourceStatus;
use crate::upstream::{Backend, Pool};

/// What the admin listener serves.
#[derive(Debug)]
pub struct AdminCtx {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Asks the reloader for a reload (`POST /reload`).
    pub reload: ReloadHandle,
}

/// Serves the admin API until `stop` is cancelled.
pub async fn serve(listener: Listener, ctx: Arc<AdminCtx>, stop: CancellationToken) {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let Ok((stream, _peer)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let ctx = Arc::clone(&ctx);
        let builder = Arc::clone(&builder);
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let ctx = Arc::clone(&ctx);
                async move { Ok::<_, Infallible>(route(&ctx, req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

async fn route(ctx: &AdminCtx, req: Request<Incoming>) -> Response<ResponseBody> {
    let path = req.uri().path();
    if path == "/reload" {
        if req.method() != Method::POST {
            let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return res;
        }
        return match ctx.reload.reload().await {
            Ok(summary) => {
                let body = serde_json::to_vec_pretty(&summary).unwrap_or_default();
                let mut res = Response::new(ResponseBody::full(body));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                res
            }
            Err(e) => {
                let mut res = Response::new(ResponseBody::full(format!("{e}\n")));
                *res.status_mut() = StatusCode::BAD_REQUEST;
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                res
            }
        };
    }
    let known = ["/metrics", "/healthz", "/readyz", "/status"];
    if !known.contains(&path) {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        res.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    match path {
        "/metrics" => {
            let mut res = Response::new(ResponseBody::full(ctx.shared.metrics.encode()));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            res
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if ctx.shared.is_ready() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => {
            let mut res = Response::new(ResponseBody::full(status_json(ctx)));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

/// The `/status` document: version, config, readiness, then one section
/// each for listeners, routes and pools.
fn status_json(ctx: &AdminCtx) -> Vec<u8> {
    let snap = ctx.shared.snapshot_full();
    let loaded_at = snap
        .loaded_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let now = Instant::now();
    let pools: Vec<Value> = snap.pools.iter().map(|p| pool_json(p, now)).collect();
    let routes: Vec<Value> = snap.config.routes.iter().map(route_json).collect();
    let listeners: Vec<Value> = ctx
        .shared
        .listeners()
        .iter()
        .map(|(name, addr)| json!({ "name": name, "address": addr.to_string() }))
        .collect();
    let doc = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config_version": snap.version,
        "config_hash": snap.config.hash,
        "config_loaded_at": loaded_at,
        "ready": ctx.shared.is_ready(),
        "listeners": listeners,
        "routes": routes,
        "pools": pools,
    });
    serde_json::to_vec_pretty(&doc).unwrap_or_default()
}

/// One route: its host patterns as written (`*.example.com` for suffix
/// matches), path prefix and pool.
fn route_json(r: &RouteConfig) -> Value {
    let hosts: Vec<String> = r
        .hosts
        .iter()
        .map(|h| match h {
            HostMatch::Exact(h) => h.clone(),
            HostMatch::Suffix(s) => format!("*{s}"),
        })
        .collect();
    json!({
        "name": r.name, "hosts": hosts, "path_prefix": r.path_prefix, "pool": r.pool,
    })
}

/// One pool: panic mode, its endpoints and its discovery sources.
fn pool_json(pool: &Pool, now: Instant) -> Value {
    let set = pool.backends();
    let endpoints: Vec<Value> = set
        .backends()
        .iter()
        .map(|b| endpoint_json(pool, b, now))
        .collect();
    let sources: Vec<Value> = pool.sources().into_iter().map(source_json).collect();
    json!({
        "name": &**pool.name(),
        "panic": pool.in_panic(),
        "circuit_breaker": breaker_json(pool),
        "endpoints": endpoints,
        "sources": sources,
    })
}

/// The pool's circuit breaker: each threshold with what it counts now
/// (`null` when unset); `null` for a pool without one.
fn breaker_json(pool: &Pool) -> Value {
    let b = pool.breaker();
    if b.is_off() {
        return Value::Null;
    }
    let c = b.config();
    let (requests, pending, retries) = b.counts();
    let entry = |max: Option<usize>, now: usize| json!({ "max": max, "current": now });
    json!({
        "max_requests": entry(c.max_requests, requests),
        "max_pending_requests": entry(c.max_pending_requests, pending),
        "max_retries": entry(c.max_retries, retries),
        "max_connections": entry(c.max_connections, pool.open_connections()),
    })
}

/// One endpoint of `pool`: why it is or is not picked, its health
/// history, load, and which sources supply it.
fn endpoint_json(pool: &Pool, b: &Backend, now: Instant) -> Value {
    let h = b.health();
    let ejected_for = h.ejection_remaining(now);
    let active = h.active() == Health::Healthy;
    let state = match (b.is_available(now), active, ejected_for.is_some()) {
        (true, _, _) => "available",
        (false, false, _) => "unhealthy",
        (false, true, true) => "ejected",
        (false, true, false) => "unavailable",
    };
    let probe = h.last_probe().map(|p| {
        json!({
            "ok": p.ok,
            "latency_ms": p.latency.as_secs_f64() * 1000.0,
            "at": unix_seconds(Some(p.at)),
            "error": p.error,
        })
    });
    json!({
        "address": b.addr().to_string(),
        "weight": b.weight(),
        "state": state,
        "healthy": active,
        "ejected_until": wall_clock_in(ejected_for),
        "times_ejected": h.times_ejected(),
        "consecutive_failures": h.fail_streak(),
        "last_probe": probe,
        "in_flight": b.in_flight(),
        "idle_connections": b.idle_connections(),
        "sources": pool.provenance(b.addr()),
    })
}

/// One discovery source of a pool.
fn source_json(s: SourceStatus) -> Value {
    json!({
        "name": s.name,
        "state": s.state,
        "endpoints": s.endpoints,
        "last_success": unix_seconds(s.last_success),
        "last_error": s.last_error,
        "consecutive_errors": s.consecutive_errors,
    })
}

/// Unix time (seconds) of a wall-clock instant.
fn unix_seconds(t: Option<SystemTime>) -> Option<f64> {
    t.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
}

/// Unix time (seconds) `d` from now.
fn wall_clock_in(d: Option<Duration>) -> Option<f64> {
    d.map(|d| {
        SystemTime::now()
            .checked_add(d)
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0.0, |t| t.as_secs_f64())
    })
}

/// Binds the admin listener.
pub fn bind(addr: SocketAddr) -> Result<Listener, BindError> {
    Listener::bind("admin", addr)
}
