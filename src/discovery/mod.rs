//! Registry polling: endpoint sets from DNS, etcd, Consul and HTTP, merged
//! into a pool.
//!
//! Every source yields the **full** endpoint set on each refresh (as
//! polling registries answer, and as pingora's `discover()` and linkerd's
//! DNS resolver do), or [`Update::Unchanged`] when the registry confirmed
//! that nothing changed without sending the set again; the pool does the
//! diff. One generic driver, [`drive`] (in `driver.rs`), runs every source
//! and handles what they all need: cancellation at every wait, exponential
//! backoff with jitter on errors, skipping unchanged sets, keeping the last
//! good set while the registry is unreachable (for at most `max_stale`, if
//! set, counted from the **last successful contact** with the registry, not
//! from the last change), logging once per state change, and metrics.
//!
//! **Contact cadence**: with `max_stale` set, every source reaches its
//! registry at least every [`contact_interval`] (a third of `max_stale`)
//! while healthy, so a quiet registry is confirmed long before the set
//! could expire: DNS re-resolves and the `http` source polls at least that
//! often, Consul's blocking `wait` is lowered to it, and a quiet etcd watch
//! is checked with a cheap probe of the member that often.
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
mod driver;
pub mod etcd;
pub mod http;

pub use driver::{contact_interval, drive};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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

/// What one successful contact with a registry brought.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// The complete current set (possibly the same as before).
    Set(EndpointSet),
    /// The registry answered and confirmed that the last set this source
    /// returned is still current (an HTTP `304`; an etcd watch that is
    /// quiet while its member answers).
    Unchanged,
}

/// A source of endpoint sets.
pub trait Discovery: Send + 'static {
    /// Waits for the next contact with the registry and returns what it
    /// brought. The source owns its cadence (DNS TTL, etcd watch, Consul
    /// blocking index, HTTP interval), within [`contact_interval`] when
    /// `max_stale` is set; the first call returns as soon as it can, with a
    /// set.
    fn next(&mut self) -> impl Future<Output = Result<Update, DiscoveryError>> + Send;
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
    let every = contact_interval(config.max_stale);
    match &config.kind {
        SourceKind::Dns(d) => {
            let source = dns::Dns::new(d.clone()).contact_every(every);
            tasks.spawn(drive(source, pool, index, c, cancel));
        }
        SourceKind::Etcd(e) => {
            let source = etcd::Etcd::new(e.clone()).contact_every(every);
            tasks.spawn(drive(source, pool, index, c, cancel));
        }
        SourceKind::Consul(k) => {
            let source = consul::Consul::new(k.clone()).contact_every(every);
            tasks.spawn(drive(source, pool, index, c, cancel));
        }
        SourceKind::Http(h) => {
            let source = http::HttpSource::new(h.clone()).contact_every(every);
            tasks.spawn(drive(source, pool, index, c, cancel));
        }
    }
}
