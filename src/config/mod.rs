//! Configuration: the YAML file, its validation, and the validated [`Config`].
//!
//! Loading is two steps (ripgrep's low-level/high-level args split):
//! `raw.rs` mirrors the YAML one to one with `deny_unknown_fields` and is the
//! only user of serde_yaml; `validate.rs` turns that into a [`Config`] whose
//! invariants the rest of weir relies on (every route names an existing pool,
//! names are unique, weights are at least 1, addresses parse). `weir check`,
//! startup and hot reload all go through [`Config::from_yaml`], so they accept
//! and reject exactly the same files.
//!
//! Every error names the key path (`pools[1].endpoints[0].weight`) and, where
//! the YAML parser knows it, the line and column.

mod duration;
mod error;
pub mod middleware;
mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use crate::balance::Algorithm;
pub use crate::retry::RetryConfig;
pub use crate::tls::listener::{
    CertificateInfo, ClientAuth, ClientAuthConfig, ListenerTls, TlsVersion,
};
pub use crate::tls::upstream::UpstreamTls;
pub use error::ConfigError;

/// A validated configuration. Immutable; a reload builds a new one.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Traffic listeners, in file order. Names are unique.
    pub listeners: Vec<ListenerConfig>,
    /// The admin listener (metrics, health, status, reload).
    pub admin: AdminConfig,
    /// Routes, in file order. Every `pool` names an entry of `pools`.
    pub routes: Vec<RouteConfig>,
    /// Upstream pools, in file order. Names are unique.
    pub pools: Vec<PoolConfig>,
    /// Downstream (client side) timeouts and limits.
    pub server: ServerConfig,
    /// Per-request access log.
    pub access_log: AccessLogConfig,
    /// Headers weir adds to proxied requests.
    pub headers: HeadersConfig,
    /// Named middleware, in file order. Names are unique; routes list them.
    pub middleware: Vec<middleware::MiddlewareConfig>,
    /// Peers whose `X-Forwarded-For` is believed when middleware asks for
    /// the client's address (see `crate::middleware::client_ip`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Content hash of the YAML text and of every certificate, key and CA
    /// file it names (16 hex digits, FNV-1a), shown in `/status` and the
    /// `weir_config_version` gauge so operators can tell which files a
    /// fleet is running.
    pub hash: String,
}

/// One traffic listener.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerConfig {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// Address to bind, e.g. `0.0.0.0:8080` or `[::]:8080`.
    pub bind: SocketAddr,
    /// `tls:`: serve HTTPS with these certificates; `None` = cleartext.
    pub tls: Option<ListenerTls>,
}

/// The admin listener.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminConfig {
    /// Address to bind. Default `127.0.0.1:9901`.
    pub bind: SocketAddr,
}

/// Downstream timeouts and limits, plus shutdown behaviour.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerConfig {
    /// Time a client has to send a complete request head. Default 10s.
    pub header_read_timeout: Duration,
    /// A keep-alive connection with no request in flight for this long is
    /// closed (HTTP/2: GOAWAY). Default 60s.
    pub idle_timeout: Duration,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish. Default 30s.
    pub shutdown_grace: Duration,
    /// A request body that delivers no bytes for this long is abandoned
    /// (408 if no response has started). Default 30s.
    pub body_read_timeout: Duration,
    /// Size and concurrency limits on what clients send (`limits:`).
    pub limits: LimitsConfig,
}

/// The top-level `limits:` block: bounds on what one client can make weir
/// hold in memory or keep busy. See `crate::limits`.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitsConfig {
    /// Largest HTTP/1 request head (request line and headers), in bytes;
    /// also the HTTP/2 header-list size advertised in SETTINGS. Above it:
    /// 431. Default 65536; at least 8192.
    pub max_header_bytes: usize,
    /// Most header fields in an HTTP/1 request head. Above it: 431.
    /// Default 100.
    pub max_headers: usize,
    /// Longest request target (path and query, or the absolute URI), in
    /// bytes. Above it: 414. Default 8192.
    pub max_uri_bytes: usize,
    /// Largest request body, in bytes; `None` = unlimited. Above it: 413.
    /// Default unlimited.
    pub max_body_bytes: Option<u64>,
    /// Open client connections per listener; `None` = unlimited. A
    /// connection over the limit is accepted and closed at once. Default
    /// unlimited.
    pub max_connections: Option<usize>,
    /// Concurrent streams per HTTP/2 connection (SETTINGS). Default 100.
    pub h2_max_concurrent_streams: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: None,
            max_connections: None,
            h2_max_concurrent_streams: 100,
        }
    }
}

/// A pool's `limits:` block: concurrency caps on requests to it.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct PoolLimits {
    /// Requests in flight to the pool at once; `None` = unlimited.
    pub max_requests: Option<usize>,
    /// Requests in flight to one endpoint at once; `None` = unlimited.
    pub max_requests_per_endpoint: Option<usize>,
    /// How long a request waits for a free slot before it is answered 503.
    /// Default 1s.
    pub queue_timeout: Duration,
}

/// Access log settings.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessLogConfig {
    /// One line per request at target `weir::access`. Default true.
    pub enabled: bool,
}

/// Request headers added on the way upstream.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadersConfig {
    /// If set, `Via: 1.1 <pseudonym>` is appended (RFC 9110 §7.6.3). Default unset.
    pub via: Option<String>,
}

/// A routing rule: host and path prefix to a pool.
#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// Name for metrics and logs. Default `route<index>`.
    pub name: String,
    /// Hosts this route answers for; empty means any host.
    pub hosts: Vec<HostMatch>,
    /// Path prefix (plain string prefix, starts with `/`). Default `/`.
    pub path_prefix: String,
    /// Name of the pool that serves this route.
    pub pool: String,
    /// Names of the middleware its requests go through, in order (each
    /// defined in [`Config::middleware`]).
    pub middleware: Vec<String>,
}

/// How a route matches the request's host (lower-cased, port removed).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// `api.example.com`: that host only.
    Exact(String),
    /// `*.example.com`: any host ending in `.example.com` (stored as the
    /// suffix `.example.com`), not `example.com` itself.
    Suffix(String),
}

/// One upstream pool.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    /// Unique name.
    pub name: String,
    /// Selection algorithm and its options.
    pub balance: BalanceConfig,
    /// Protocol spoken to the endpoints.
    pub protocol: UpstreamProtocol,
    /// What `Host` the endpoint sees.
    pub host_header: HostHeader,
    /// Static endpoints (may be empty only when discovery is configured).
    pub endpoints: Vec<EndpointConfig>,
    /// Upstream timeouts (pool values override the global `timeouts:`).
    pub timeouts: PoolTimeouts,
    /// Idle keep-alive connections kept per endpoint. Default 64.
    pub max_idle_per_endpoint: usize,
    /// Whether each endpoint gets its own response-time histogram
    /// (`metrics.endpoint_histograms`). Default true; turn off for pools
    /// with many endpoints to bound metric cardinality.
    pub endpoint_histograms: bool,
    /// Health checking (`health:`).
    pub health: HealthConfig,
    /// Retry policy (`retries:`).
    pub retries: RetryConfig,
    /// Registry sources (`discovery:`), merged with `endpoints`.
    pub discovery: Vec<DiscoveryConfig>,
    /// `tls:`: connect to the endpoints over TLS; `None` = cleartext.
    pub tls: Option<UpstreamTls>,
    /// Concurrency limits (`limits:`).
    pub limits: PoolLimits,
    /// Fail-fast thresholds (`circuit_breaker:`).
    pub circuit_breaker: CircuitBreakerConfig,
}

/// A pool's `circuit_breaker:` block: Envoy's thresholds. When one is
/// reached the pool answers 503 with `x-weir-overloaded: true` at once,
/// without queueing (see `crate::limits::breaker`). `None` = no threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CircuitBreakerConfig {
    /// Upstream connections open to the pool's endpoints at once.
    pub max_connections: Option<usize>,
    /// Requests waiting in the pool's `limits` queue at once.
    pub max_pending_requests: Option<usize>,
    /// Requests in flight to the pool at once.
    pub max_requests: Option<usize>,
    /// Retries in flight to the pool at once.
    pub max_retries: Option<usize>,
}

/// One entry of a pool's `discovery:` list.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscoveryConfig {
    /// Name in metrics, logs and `/status`. Default `<kind>[<index>]`.
    pub name: String,
    /// After this long without a successful refresh, the source's last good
    /// endpoints are dropped. Default: kept until the registry answers.
    pub max_stale: Option<Duration>,
    /// The registry and how to query it.
    pub kind: SourceKind,
}

/// The registry behind a discovery source.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceKind {
    /// DNS A/AAAA/SRV records.
    Dns(DnsConfig),
    /// Keys under a prefix in etcd v3.
    Etcd(EtcdConfig),
    /// A service in Consul's catalog.
    Consul(ConsulConfig),
    /// A JSON list served over HTTP.
    Http(HttpSourceConfig),
}

/// DNS record type to query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsRecord {
    /// IPv4 addresses (needs `port`).
    A,
    /// IPv6 addresses (needs `port`).
    Aaaa,
    /// Service records: target, port, priority (tier), weight.
    Srv,
}

/// `discovery: - dns: {...}`.
#[derive(Clone, Debug, PartialEq)]
pub struct DnsConfig {
    /// Name to resolve.
    pub name: String,
    /// Record type. Default A.
    pub record: DnsRecord,
    /// Port for A/AAAA answers.
    pub port: Option<u16>,
    /// Resolver `ip:port`; default: the system's (`/etc/resolv.conf`).
    pub resolver: Option<SocketAddr>,
    /// Lower bound on the refresh interval (TTLs below it are raised). Default 1s.
    pub min_interval: Duration,
    /// Upper bound on the refresh interval (TTLs above it are lowered). Default 60s.
    pub max_interval: Duration,
    /// Query timeout. Default 2s.
    pub timeout: Duration,
}

/// `discovery: - etcd: {...}`.
#[derive(Clone, Debug, PartialEq)]
pub struct EtcdConfig {
    /// Client URLs (`http://host:2379`); tried in order, failing over.
    pub endpoints: Vec<String>,
    /// Key prefix; one key per endpoint below it.
    pub prefix: String,
    /// Basic-auth user (etcd authentication).
    pub username: Option<String>,
    /// Basic-auth password.
    pub password: Option<String>,
    /// Range-read interval when watching is not possible. Default 30s.
    pub poll_interval: Duration,
    /// Request timeout. Default 5s.
    pub timeout: Duration,
}

/// `discovery: - consul: {...}`.
#[derive(Clone, Debug, PartialEq)]
pub struct ConsulConfig {
    /// Agent URL. Default `http://127.0.0.1:8500`.
    pub address: String,
    /// Service name.
    pub service: String,
    /// Only instances carrying all of these tags.
    pub tags: Vec<String>,
    /// Only instances whose checks pass. Default true.
    pub passing_only: bool,
    /// Datacenter; default the agent's.
    pub datacenter: Option<String>,
    /// ACL token (`X-Consul-Token`).
    pub token: Option<String>,
    /// Blocking-query wait. Default 30s.
    pub wait: Duration,
}

/// `discovery: - http: {...}`.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSourceConfig {
    /// URL returning a JSON list of endpoints.
    pub url: String,
    /// Poll interval. Default 5s.
    pub interval: Duration,
    /// Request timeout. Default 5s.
    pub timeout: Duration,
}

/// A pool's `health:` block.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HealthConfig {
    /// Active probes; `None` = off (endpoints count as healthy).
    pub active: Option<crate::health::ActivePolicy>,
    /// Passive outlier ejection; `None` = off.
    pub passive: Option<crate::health::PassivePolicy>,
    /// Percent (1–100) of available endpoints below which the pool
    /// balances over all endpoints (Envoy's panic mode); 0 = off.
    pub panic_threshold: u8,
}

/// `balance:` and its options.
#[derive(Clone, Debug, PartialEq)]
pub struct BalanceConfig {
    /// The algorithm. Default round robin.
    pub algorithm: Algorithm,
    /// Load measure for least connections / P2C.
    pub load: LoadMetric,
    /// Peak-EWMA parameters, used when `load` is `PeakEwma`.
    pub peak_ewma: PeakEwmaConfig,
}

/// Load measure used by the load-aware selectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoadMetric {
    /// `in_flight / weight`.
    #[default]
    InFlight,
    /// Peak-EWMA of response latency × (in_flight + 1), divided by weight.
    PeakEwma,
}

/// Peak-EWMA parameters (linkerd2-proxy, Finagle).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeakEwmaConfig {
    /// RTT assumed for an endpoint with no samples yet. Default 30ms.
    pub default_rtt: Duration,
    /// Decay window of the moving average. Default 10s.
    pub decay: Duration,
}

/// Protocol to the endpoints of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive. Default.
    #[default]
    Http1,
    /// HTTP/2: over cleartext with prior knowledge (gRPC backends), or,
    /// when the pool has `tls:`, HTTP/2 over TLS negotiated with ALPN `h2`.
    H2c,
}

/// What `Host` header the endpoint receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HostHeader {
    /// The client's `Host`, unchanged. Default.
    #[default]
    Preserve,
    /// The endpoint's `ip:port`.
    Endpoint,
}

/// A static endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointConfig {
    /// `ip:port` of the endpoint.
    pub address: SocketAddr,
    /// Relative weight, at least 1. Default 1.
    pub weight: u32,
}

/// Upstream timeouts of a pool.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoolTimeouts {
    /// TCP connect. Default 2s. Exceeded → 504.
    pub connect: Duration,
    /// From request sent to response headers received. Default 60s. Exceeded → 504.
    pub response_header: Duration,
    /// A pooled idle upstream connection is closed after this long. Default 60s.
    pub idle: Duration,
}

impl Config {
    /// Parses and validates a YAML document. `origin` names the source in
    /// error messages (usually the file path). Relative certificate, key
    /// and CA paths are taken from the current directory.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Self::from_yaml_in(text, origin, None)
    }

    /// Like [`Config::from_yaml`], with relative file paths taken from
    /// `base` (the config file's directory) when given.
    pub fn from_yaml_in(
        text: &str,
        origin: &str,
        base: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let mut config = validate::load(text, origin, base)?;
        // The files are part of the config: a new certificate on disk is a
        // new config version.
        let mut parts: Vec<&[u8]> = vec![text.as_bytes()];
        for l in &config.listeners {
            if let Some(tls) = &l.tls {
                parts.extend(tls.material());
            }
        }
        for p in &config.pools {
            if let Some(tls) = &p.tls {
                parts.extend(tls.material());
            }
        }
        for m in &config.middleware {
            parts.extend(m.kind.files().into_iter().map(|(_, bytes)| bytes));
        }
        config.hash = hash_parts(&parts);
        Ok(config)
    }

    /// The state before the first load (no listeners, routes or pools; every
    /// other setting at its default): what a
    /// starting weir "reloads" from.
    pub fn empty() -> Config {
        validate::empty()
    }

    /// Reads and validates a file. Relative certificate, key and CA paths
    /// are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: origin.clone(),
            error,
        })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty());
        Self::from_yaml_in(&text, &origin, Some(base.unwrap_or(Path::new("."))))
    }

    /// Whether the YAML at `path` and every TLS file this config names
    /// still hash to [`Config::hash`]. The files are read as bytes and
    /// nothing is parsed or validated: the reloader's cheap check for a
    /// change made between a load and the start of a watch.
    pub fn matches_files(&self, path: &Path) -> bool {
        let Ok(text) = std::fs::read(path) else {
            return false;
        };
        let mut files = Vec::new();
        for f in self.watched_files() {
            match std::fs::read(f) {
                Ok(bytes) => files.push(bytes),
                Err(_) => return false,
            }
        }
        let mut parts: Vec<&[u8]> = vec![&text];
        parts.extend(files.iter().map(Vec::as_slice));
        hash_parts(&parts) == self.hash
    }

    /// Every file the config names besides itself (certificates, keys, CA
    /// bundles, middleware files such as htpasswd): the reloader watches
    /// their directories.
    pub fn watched_files(&self) -> Vec<&Path> {
        let mut out = Vec::new();
        for l in &self.listeners {
            if let Some(tls) = &l.tls {
                out.extend(tls.files());
            }
        }
        for p in &self.pools {
            if let Some(tls) = &p.tls {
                out.extend(tls.files());
            }
        }
        for m in &self.middleware {
            out.extend(m.kind.files().into_iter().map(|(path, _)| path));
        }
        out
    }

    /// Problems that do not stop weir but that an operator should see
    /// (`weir check` prints them; startup and reload log them): expired
    /// certificates, pools that skip certificate verification.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (i, l) in self.listeners.iter().enumerate() {
            if let Some(tls) = &l.tls {
                for w in tls.warnings() {
                    out.push(format!("listeners[{i}].tls (`{}`): {w}", l.name));
                }
            }
        }
        for (i, p) in self.pools.iter().enumerate() {
            if p.tls.as_ref().is_some_and(|t| t.insecure_skip_verify) {
                out.push(format!(
                    "pools[{i}].tls.insecure_skip_verify (`{}`): upstream certificates are \
                     NOT verified; anyone on the network path can impersonate the endpoints",
                    p.name
                ));
            }
        }
        for (i, m) in self.middleware.iter().enumerate() {
            for w in m.kind.warnings() {
                out.push(format!(
                    "middleware[{i}].{} (`{}`): {w}",
                    m.kind.key(),
                    m.name
                ));
            }
        }
        out
    }

    /// One-line summary, printed by `weir check`.
    pub fn summary(&self) -> String {
        let endpoints: usize = self.pools.iter().map(|p| p.endpoints.len()).sum();
        format!(
            "{} listener(s), {} route(s), {} pool(s), {} static endpoint(s)",
            self.listeners.len(),
            self.routes.len(),
            self.pools.len(),
            endpoints
        )
    }
}

/// FNV-1a over the text and the TLS files: stable across runs and
/// platforms (unlike std's randomly seeded hasher), which is what a
/// fleet-wide version label needs. A config without TLS files hashes
/// exactly as its text alone; each file adds its length and its bytes, so
/// moving bytes from one file to the next changes the hash.
fn hash_parts(parts: &[&[u8]]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            feed(&(part.len() as u64).to_le_bytes());
        }
        feed(part);
    }
    format!("{h:016x}")
}
