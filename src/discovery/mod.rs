//! Registry polling: endpoint sets from DNS, etcd, Consul and HTTP, merged
//! into a pool.
//!
//! Every source yields the **full** endpoint set on each refresh (as
//! polling registries answer, and as pingora's `discover()` and linkerd's
//! DNS resolver do); the pool does the diff. One generic driver,
//! [`drive`], runs every source and handles what they all need:
//! cancellation at every wait, exponential backoff with jitter on errors,
//! skipping unchanged sets, keeping the last good set while the registry is
//! unreachable (for at most `max_stale`, if set), logging once per state
//! change, and metrics.
//!
//! **Merging** (in [`crate::upstream::Pool`]): the pool's endpoints are the
//! union, keyed by address, of its static `endpoints:` and every source's
//! last good set. When two contributions name the same address with
//! different weights or priorities, the static entry wins, then the source
//! listed first under `discovery:`. Existing `Backend`s are reused by
//! address, so health state, in-flight counts and connections survive
//! every refresh.
//!
//! **Empty answers**: a *successful* empty answer empties that source's
//! contribution (the registry says there is nothing), and `/status` shows
//! the source as `ok` with 0 endpoints; an *error* keeps the last good set.
//!
//! **Priorities** (DNS SRV): endpoints carry a priority; the pool sends
//! traffic to the lowest-numbered tier that has an available endpoint, so a
//! higher tier takes over only when the first is down.

pub mod consul;
pub mod dns;
pub mod etcd;
pub mod http;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::config::{DiscoveryConfig, SourceKind};
pub use crate::upstream::endpoints::{Endpoint, EndpointSet, SourceStatus};
use crate::upstream::Pool;

/// Why a refresh failed. The driver keeps the last good set.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The registry could not be reached.
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    /// The registry answered, but not with something weir understands.
    #[error("bad answer from registry: {0}")]
    BadAnswer(String),
}

/// A source of endpoint sets.
pub trait Discovery: Send + 'static {
    /// Waits for and returns the next complete endpoint set. The source owns
    /// its cadence (DNS TTL, etcd watch, Consul blocking index, HTTP
    /// interval); the first call returns as soon as it can.
    fn next(&mut self) -> impl Future<Output = Result<EndpointSet, DiscoveryError>> + Send;
}

/// A registry's HTTP answer.
#[derive(Debug)]
pub(crate) struct RegistryResponse {
    pub status: ::http::StatusCode,
    pub headers: ::http::HeaderMap,
    pub body: bytes::Bytes,
}

/// Registries may not hand weir more than this in one answer.
const MAX_REGISTRY_BODY: usize = 16 * 1024 * 1024;

/// A registry URL split into what a connection and a request need.
pub(crate) struct RegistryUrl {
    pub uri: ::http::Uri,
    pub authority: ::http::uri::Authority,
    pub host: String,
    pub port: u16,
}

impl RegistryUrl {
    /// Parses an `http://host[:port]/path` URL (port 80 by default).
    pub(crate) fn parse(url: &str) -> Result<RegistryUrl, DiscoveryError> {
        let uri: ::http::Uri = url
            .parse()
            .map_err(|e| DiscoveryError::Unreachable(format!("bad URL {url}: {e}")))?;
        let authority = uri
            .authority()
            .ok_or_else(|| DiscoveryError::Unreachable(format!("no host in {url}")))?
            .clone();
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(RegistryUrl {
            uri,
            authority,
            host,
            port,
        })
    }
}

/// One HTTP request to a registry, on its own connection, bounded by
/// `timeout` for the whole exchange (a blocking query passes a timeout
/// longer than its `wait`). `body` makes it a POST.
pub(crate) async fn registry_request(
    url: &str,
    headers: &[(::http::HeaderName, ::http::HeaderValue)],
    body: Option<bytes::Bytes>,
    timeout: Duration,
) -> Result<RegistryResponse, DiscoveryError> {
    use http_body_util::BodyExt as _;
    let RegistryUrl {
        uri,
        authority,
        host,
        port,
    } = RegistryUrl::parse(url)?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| DiscoveryError::Unreachable(format!("{url}: {e}")))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| DiscoveryError::Unreachable(format!("{url}: {e}")))?;
        tokio::spawn(conn);
        let method = if body.is_some() {
            ::http::Method::POST
        } else {
            ::http::Method::GET
        };
        let mut req = ::http::Request::builder()
            .method(method)
            .uri(uri.path_and_query().map_or("/", |pq| pq.as_str()))
            .header(::http::header::HOST, authority.as_str())
            .body(http_body_util::Full::new(body.unwrap_or_default()))
            .map_err(|e| DiscoveryError::Unreachable(format!("{url}: {e}")))?;
        for (k, v) in headers {
            req.headers_mut().insert(k.clone(), v.clone());
        }
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| DiscoveryError::Unreachable(format!("{url}: {e}")))?;
        let (parts, body) = res.into_parts();
        let limited = http_body_util::Limited::new(body, MAX_REGISTRY_BODY);
        let body = limited
            .collect()
            .await
            .map_err(|e| DiscoveryError::BadAnswer(format!("{url}: body: {e}")))?
            .to_bytes();
        Ok(RegistryResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| DiscoveryError::Unreachable(format!("{url}: timed out after {timeout:?}")))?
}

/// `GET` shorthand for [`registry_request`].
pub(crate) async fn registry_get(
    url: &str,
    headers: &[(::http::HeaderName, ::http::HeaderValue)],
    timeout: Duration,
) -> Result<RegistryResponse, DiscoveryError> {
    registry_request(url, headers, None, timeout).await
}

/// Parses one endpoint entry shared by the JSON registries: `"ip:port"`
/// or `{"address": "ip:port", "weight": N}`.
pub(crate) fn parse_entry(v: &serde_json::Value) -> Result<(SocketAddr, u32), String> {
    let (addr, weight) = match v {
        serde_json::Value::String(s) => (s.as_str(), 1),
        serde_json::Value::Object(m) => {
            let addr = m
                .get("address")
                .and_then(|a| a.as_str())
                .ok_or("missing string `address`")?;
            let weight = match m.get("weight") {
                None | Some(serde_json::Value::Null) => 1,
                Some(w) => w
                    .as_u64()
                    .filter(|w| (1..=1_000_000).contains(w))
                    .ok_or("`weight` must be a whole number from 1 to 1000000")?
                    as u32,
            };
            (addr, weight)
        }
        _ => return Err("expected \"ip:port\" or {\"address\": ..., \"weight\": ...}".into()),
    };
    let addr: SocketAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("`{addr}` is not ip:port"))?;
    if addr.port() == 0 || addr.ip().is_unspecified() {
        return Err(format!("`{addr}` cannot be connected to"));
    }
    Ok((addr, weight))
}

/// Backoff after a failed refresh: exponential from 500 ms to 30 s, with
/// full jitter so a fleet of weirs does not hammer a recovering registry in
/// step.
fn backoff(errors: u32) -> Duration {
    let ceiling = Duration::from_millis(500)
        .saturating_mul(1 << errors.saturating_sub(1).min(6))
        .min(Duration::from_secs(30));
    Duration::from_millis(100).max(ceiling.mul_f64(fastrand::f64()))
}

/// Runs one source for one pool until `cancel`.
pub async fn drive<D: Discovery>(
    mut source: D,
    pool: Arc<Pool>,
    index: usize,
    config: DiscoveryConfig,
    cancel: CancellationToken,
) {
    let name = config.name.clone();
    let metrics = pool.metrics().discovery(&name);
    let mut last_good: Option<(EndpointSet, tokio::time::Instant)> = None;
    let mut errors: u32 = 0;
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = source.next() => r,
        };
        match result {
            Ok(set) => {
                if errors > 0 {
                    tracing::info!(pool = %pool.name(), source = %name, endpoints = set.len(), "discovery source recovered");
                }
                errors = 0;
                metrics.refresh(true);
                let changed = last_good.as_ref().is_none_or(|(s, _)| *s != set);
                if changed {
                    tracing::info!(pool = %pool.name(), source = %name, endpoints = set.len(), "discovery update");
                    pool.update_source(index, Some(&set));
                }
                metrics.endpoints(set.len());
                pool.source_status(index, |st| {
                    st.state = "ok";
                    st.endpoints = set.len();
                    st.last_success = Some(SystemTime::now());
                    st.last_error = None;
                    st.consecutive_errors = 0;
                });
                last_good = Some((set, tokio::time::Instant::now()));
            }
            Err(e) => {
                errors = errors.saturating_add(1);
                metrics.refresh(false);
                if errors == 1 {
                    tracing::warn!(pool = %pool.name(), source = %name, error = %e,
                        "discovery refresh failed; keeping the last good endpoints");
                }
                let expired = match (&last_good, config.max_stale) {
                    (Some((_, at)), Some(max)) => at.elapsed() > max,
                    _ => false,
                };
                if expired {
                    tracing::warn!(pool = %pool.name(), source = %name, max_stale = ?config.max_stale,
                        "discovery source stale for longer than max_stale; dropping its endpoints");
                    pool.update_source(index, None);
                    last_good = None;
                    metrics.endpoints(0);
                }
                let state = if expired
                    || (last_good.is_none() && config.max_stale.is_some() && errors > 1)
                {
                    "expired"
                } else if last_good.is_some() {
                    "stale"
                } else {
                    "pending"
                };
                pool.source_status(index, |st| {
                    st.state = state;
                    if expired {
                        st.endpoints = 0;
                    }
                    st.last_error = Some(e.to_string());
                    st.consecutive_errors = errors;
                });
                // Never sleep past the moment the last good set goes stale,
                // so `max_stale` is honoured to within one refresh rather
                // than one (possibly 30 s) backoff.
                let mut wait = backoff(errors);
                if let (Some((_, at)), Some(max)) = (&last_good, config.max_stale) {
                    let until_stale = max.saturating_sub(at.elapsed());
                    wait = wait.min(until_stale + Duration::from_millis(10));
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Starts the driver of source `index` of `pool` on `tasks`.
pub fn spawn(
    pool: &Arc<Pool>,
    index: usize,
    config: &DiscoveryConfig,
    cancel: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) {
    let pool = Arc::clone(pool);
    let c = config.clone();
    match &config.kind {
        SourceKind::Dns(d) => {
            tasks.spawn(drive(dns::Dns::new(d.clone()), pool, index, c, cancel));
        }
        SourceKind::Etcd(e) => {
            tasks.spawn(drive(etcd::Etcd::new(e.clone()), pool, index, c, cancel));
        }
        SourceKind::Consul(k) => {
            tasks.spawn(drive(
                consul::Consul::new(k.clone()),
                pool,
                index,
                c,
                cancel,
            ));
        }
        SourceKind::Http(h) => {
            tasks.spawn(drive(
                http::HttpSource::new(h.clone()),
                pool,
                index,
                c,
                cancel,
            ));
        }
    }
}
