//! From the raw YAML structs to a validated [`Config`].
//!
//! Everything the rest of weir assumes about a config is established here:
//! defaults are filled in, names are unique, every route's pool exists,
//! addresses parse, weights and timeouts are in range, host patterns are
//! normalised. Checking it all up front means a reload either applies a
//! whole, consistent config or changes nothing, and the request path never
//! meets a half-valid value.
//!
//! The first violation found is returned, with its key path and (located by
//! re-walking the document) its line, so a failing `weir check` points at the
//! exact spot to edit.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::duration::ConfigDuration;
use super::error::{did_you_mean, ConfigError};
use super::raw::{
    self, RawAlgorithm, RawConfig, RawDnsRecord, RawEndpoint, RawHealth, RawHostHeader,
    RawListener, RawListenerTls, RawLoad, RawPool, RawProbeType, RawProtocol, RawRetries, RawRoute,
    RawSource, RawTlsVersion, RawUpstreamTls,
};
use super::raw::{RawConsul, RawDns, RawEtcd, RawHttpSource};
use super::{
    AccessLogConfig, AdminConfig, Algorithm, BalanceConfig, CircuitBreakerConfig, Config,
    ConsulConfig, DiscoveryConfig, DnsConfig, DnsRecord, EndpointConfig, EtcdConfig, HeadersConfig,
    HealthConfig, HostHeader, HostMatch, HttpSourceConfig, LimitsConfig, ListenerConfig,
    ListenerTls, LoadMetric, PeakEwmaConfig, PoolConfig, PoolLimits, PoolTimeouts, RetryConfig,
    RouteConfig, ServerConfig, SourceKind, TlsVersion, UpstreamProtocol, UpstreamTls,
};
use crate::health::passive::{PassivePolicy, StatusSet};
use crate::health::{parse_status_range, ActivePolicy, ProbeKind};
use crate::tls::listener::ClientAuth;

/// Admin listener address when `admin.bind` is absent: loopback only,
/// because the admin API can trigger reloads.
const DEFAULT_ADMIN_BIND: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
const DEFAULT_CONNECT: Duration = Duration::from_secs(2);
const DEFAULT_RESPONSE_HEADER: Duration = Duration::from_secs(60);
const DEFAULT_UPSTREAM_IDLE: Duration = Duration::from_secs(60);
const DEFAULT_HEADER_READ: Duration = Duration::from_secs(10);
const DEFAULT_CLIENT_IDLE: Duration = Duration::from_secs(60);
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const DEFAULT_BODY_READ: Duration = Duration::from_secs(30);
const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);
/// hyper's HTTP/1 read buffer cannot be smaller than this (it asserts).
const MIN_HEADER_BYTES: i64 = 8192;
/// Sizes are carried as `usize`/`u32`; the caps keep every conversion exact
/// on 32-bit targets too and catch runaway values.
const MAX_SIZE: i64 = 1 << 30;
const DEFAULT_RTT: Duration = Duration::from_millis(30);
const DEFAULT_DECAY: Duration = Duration::from_secs(10);
const DEFAULT_MAX_IDLE_PER_ENDPOINT: usize = 64;
/// Weights are summed and multiplied in the selectors; a cap keeps that far
/// from overflow and catches typos like an extra zero run.
const MAX_WEIGHT: i64 = 1_000_000;

/// Parses and validates a YAML document (see [`Config::from_yaml_in`]);
/// relative file paths are joined to `base`.
pub fn load(text: &str, origin: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
    let raw = raw::parse(text, origin)?;
    Validator { text, origin, base }.config(raw)
}

/// The state before the first load: nothing listens, routes or pools,
/// and every other setting has its default. Startup applies the first
/// config to it exactly as a reload applies a new config to the running
/// one. It never validates as a file would (a file needs a listener).
pub fn empty() -> Config {
    Config {
        listeners: Vec::new(),
        admin: AdminConfig {
            bind: DEFAULT_ADMIN_BIND,
        },
        routes: Vec::new(),
        pools: Vec::new(),
        server: ServerConfig {
            header_read_timeout: DEFAULT_HEADER_READ,
            idle_timeout: DEFAULT_CLIENT_IDLE,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            body_read_timeout: DEFAULT_BODY_READ,
            limits: LimitsConfig::default(),
        },
        access_log: AccessLogConfig { enabled: true },
        headers: HeadersConfig { via: None },
        middleware: Vec::new(),
        trusted_proxies: Vec::new(),
        hash: String::new(),
    }
}

/// The document being validated, kept to build located errors.
pub(super) struct Validator<'a> {
    text: &'a str,
    origin: &'a str,
    base: Option<&'a Path>,
}

impl Validator<'_> {
    /// A semantic error at `key_path`, with the line and column of that value
    /// when the document contains it.
    pub(super) fn err(
        &self,
        key_path: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let key_path = key_path.into();
        let location = raw::locate(self.text, &key_path);
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            key_path,
            line: location.map(|(l, _)| l),
            column: location.map(|(_, c)| c),
            message: message.into(),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let listeners = self.listeners(raw.listeners)?;
        let admin = self.admin(raw.admin, &listeners)?;

        let t = raw.timeouts.unwrap_or_default();
        let global = PoolTimeouts {
            connect: self.nonzero("timeouts.connect", t.connect, DEFAULT_CONNECT)?,
            response_header: self.nonzero(
                "timeouts.response_header",
                t.response_header,
                DEFAULT_RESPONSE_HEADER,
            )?,
            idle: or(t.upstream_idle, DEFAULT_UPSTREAM_IDLE),
        };
        let server = ServerConfig {
            header_read_timeout: self.nonzero(
                "timeouts.header_read",
                t.header_read,
                DEFAULT_HEADER_READ,
            )?,
            idle_timeout: or(t.client_idle, DEFAULT_CLIENT_IDLE),
            shutdown_grace: or(t.shutdown_grace, DEFAULT_SHUTDOWN_GRACE),
            body_read_timeout: self.nonzero(
                "timeouts.body_read",
                t.body_read,
                DEFAULT_BODY_READ,
            )?,
            limits: self.limits(raw.limits.unwrap_or_default())?,
        };

        let access_log = AccessLogConfig {
            enabled: raw.access_log.and_then(|a| a.enabled).unwrap_or(true),
        };
        let via = match raw.headers.and_then(|h| h.via) {
            Some(via) if !is_token(&via) => {
                return Err(self.err(
                    "headers.via",
                    format!(
                        "`{via}` is not a valid Via pseudonym; use a single word of letters, \
                         digits and `-`, e.g. `weir`"
                    ),
                ))
            }
            via => via,
        };

        let pools = self.pools(raw.pools, &global)?;
        let middleware = super::middleware::validate(self, raw.middleware)?;
        let trusted_proxies = super::middleware::trusted_proxies(self, raw.trusted_proxies)?;
        let routes = self.routes(raw.routes, &pools, &middleware)?;

        Ok(Config {
            listeners,
            admin,
            routes,
            pools,
            server,
            access_log,
            headers: HeadersConfig { via },
            middleware,
            trusted_proxies,
            hash: String::new(),
        })
    }

    fn listeners(&self, raw: Option<Vec<RawListener>>) -> Result<Vec<ListenerConfig>, ConfigError> {
        let raw = match raw {
            Some(list) if !list.is_empty() => list,
            _ => {
                return Err(self.err(
                    "listeners",
                    "at least one listener is required, e.g. \
                     `listeners: [{name: public, bind: \"0.0.0.0:8080\"}]`",
                ))
            }
        };
        let mut out: Vec<ListenerConfig> = Vec::with_capacity(raw.len());
        let mut names = HashMap::new();
        for (i, l) in raw.into_iter().enumerate() {
            self.name(&format!("listeners[{i}].name"), &l.name)?;
            if let Some(first) = names.insert(l.name.clone(), i) {
                return Err(self.err(
                    format!("listeners[{i}].name"),
                    format!(
                        "duplicate listener name `{}` (also used by listeners[{first}])",
                        l.name
                    ),
                ));
            }
            let key = format!("listeners[{i}].bind");
            let bind = bind_address(&l.bind).map_err(|m| self.err(&key, m))?;
            if let Some((j, other)) = out
                .iter()
                .enumerate()
                .find(|(_, o)| binds_conflict(o.bind, bind))
            {
                return Err(self.err(
                    key,
                    format!(
                        "bind address {bind} is already used by listeners[{j}] (`{}`, {})",
                        other.name, other.bind
                    ),
                ));
            }
            let tls = match l.tls {
                Some(t) => Some(self.listener_tls(&format!("listeners[{i}].tls"), t)?),
                None => None,
            };
            out.push(ListenerConfig {
                name: l.name,
                bind,
                tls,
            });
        }
        Ok(out)
    }

    fn admin(
        &self,
        raw: Option<raw::RawAdmin>,
        listeners: &[ListenerConfig],
    ) -> Result<AdminConfig, ConfigError> {
        let explicit = raw.and_then(|a| a.bind);
        let bind = match &explicit {
            Some(s) => bind_address(s).map_err(|m| self.err("admin.bind", m))?,
            None => DEFAULT_ADMIN_BIND,
        };
        if let Some((i, l)) = listeners
            .iter()
            .enumerate()
            .find(|(_, l)| binds_conflict(l.bind, bind))
        {
            return Err(if explicit.is_some() {
                self.err(
                    "admin.bind",
                    format!(
                        "admin bind address {bind} is also used by listeners[{i}] (`{}`, {})",
                        l.name, l.bind
                    ),
                )
            } else {
                self.err(
                    format!("listeners[{i}].bind"),
                    format!(
                        "bind address {} is also used by the admin listener (default {bind}); \
                         change one of them (`admin.bind`)",
                        l.bind
                    ),
                )
            });
        }
        Ok(AdminConfig { bind })
    }

    fn pools(
        &self,
        raw: Option<Vec<RawPool>>,
        global: &PoolTimeouts,
    ) -> Result<Vec<PoolConfig>, ConfigError> {
        let raw = match raw {
            Some(list) if !list.is_empty() => list,
            _ => {
                return Err(self.err(
                    "pools",
                    "at least one pool is required, e.g. \
                     `pools: [{name: app, endpoints: [{address: \"127.0.0.1:9001\"}]}]`",
                ))
            }
        };
        let mut names = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, p) in raw.into_iter().enumerate() {
            let key = format!("pools[{i}]");
            self.name(&format!("{key}.name"), &p.name)?;
            if let Some(first) = names.insert(p.name.clone(), i) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!(
                        "duplicate pool name `{}` (also used by pools[{first}])",
                        p.name
                    ),
                ));
            }
            out.push(self.pool(&key, p, global)?);
        }
        Ok(out)
    }

    fn pool(
        &self,
        key: &str,
        p: RawPool,
        global: &PoolTimeouts,
    ) -> Result<PoolConfig, ConfigError> {
        let balance = self.balance(key, p.balance, p.load, p.peak_ewma)?;
        let timeouts = self.pool_timeouts(key, p.timeouts.unwrap_or_default(), global)?;

        let discovery = self.discovery(&format!("{key}.discovery"), p.discovery)?;
        let endpoints = self.endpoints(key, &p.name, p.endpoints, !discovery.is_empty())?;

        let protocol = match p.protocol.unwrap_or(RawProtocol::Http1) {
            RawProtocol::Http1 => UpstreamProtocol::Http1,
            RawProtocol::H2c => UpstreamProtocol::H2c,
        };
        let tls = match p.tls {
            Some(t) => Some(self.upstream_tls(&format!("{key}.tls"), t, protocol)?),
            None => None,
        };
        let mut health = self.health(&format!("{key}.health"), p.health)?;
        if let Some(active) = &mut health.active {
            // Probes must see what a request connection sees.
            active.tls.clone_from(&tls);
        }

        Ok(PoolConfig {
            name: p.name,
            balance,
            protocol,
            host_header: match p.host_header.unwrap_or(RawHostHeader::Preserve) {
                RawHostHeader::Preserve => HostHeader::Preserve,
                RawHostHeader::Endpoint => HostHeader::Endpoint,
            },
            endpoints,
            timeouts,
            max_idle_per_endpoint: p
                .max_idle_per_endpoint
                .unwrap_or(DEFAULT_MAX_IDLE_PER_ENDPOINT),
            endpoint_histograms: p
                .metrics
                .and_then(|m| m.endpoint_histograms)
                .unwrap_or(true),
            health,
            retries: self.retries(&format!("{key}.retries"), p.retries)?,
            discovery,
            tls,
            circuit_breaker: self.circuit_breaker(key, p.circuit_breaker, p.limits.as_ref())?,
            limits: self.pool_limits(&format!("{key}.limits"), p.limits)?,
        })
    }

    /// A pool's `circuit_breaker:`; `max_pending_requests` needs a `limits`
    /// cap, since without one no request ever waits.
    fn circuit_breaker(
        &self,
        pool_key: &str,
        raw: Option<raw::RawCircuitBreaker>,
        limits: Option<&raw::RawPoolLimits>,
    ) -> Result<CircuitBreakerConfig, ConfigError> {
        let key = format!("{pool_key}.circuit_breaker");
        let b = raw.unwrap_or_default();
        let count = |k: &str, v: Option<i64>| match v {
            None => Ok(None),
            Some(v) => self
                .int_in(&format!("{key}.{k}"), Some(v), 1, 1, MAX_SIZE)
                .map(|v| Some(v as usize)),
        };
        let queues = limits
            .is_some_and(|l| l.max_requests.is_some() || l.max_requests_per_endpoint.is_some());
        if b.max_pending_requests.is_some() && !queues {
            return Err(self.err(
                format!("{key}.max_pending_requests"),
                "requests wait only for a `limits` slot: set `limits.max_requests` or \
                 `limits.max_requests_per_endpoint` on this pool, or use \
                 `circuit_breaker.max_requests` to refuse without waiting",
            ));
        }
        Ok(CircuitBreakerConfig {
            max_connections: count("max_connections", b.max_connections)?,
            max_pending_requests: count("max_pending_requests", b.max_pending_requests)?,
            max_requests: count("max_requests", b.max_requests)?,
            max_retries: count("max_retries", b.max_retries)?,
        })
    }

    /// A pool's `balance:`, `load:` and `peak_ewma:` keys; `key` is the
    /// pool's own path.
    fn balance(
        &self,
        key: &str,
        balance: Option<RawAlgorithm>,
        load: Option<RawLoad>,
        ewma: Option<raw::RawPeakEwma>,
    ) -> Result<BalanceConfig, ConfigError> {
        let algorithm = match balance.unwrap_or(RawAlgorithm::RoundRobin) {
            RawAlgorithm::RoundRobin => Algorithm::RoundRobin,
            RawAlgorithm::LeastConnections => Algorithm::LeastConnections,
            RawAlgorithm::PowerOfTwoChoices => Algorithm::PowerOfTwoChoices,
        };
        let load = match load.unwrap_or(RawLoad::InFlight) {
            RawLoad::InFlight => LoadMetric::InFlight,
            RawLoad::PeakEwma if algorithm == Algorithm::RoundRobin => {
                return Err(self.err(
                    format!("{key}.load"),
                    "`load: peak_ewma` needs `balance: least_connections` or \
                     `balance: power_of_two_choices`; round robin does not look at load",
                ))
            }
            RawLoad::PeakEwma => LoadMetric::PeakEwma,
        };
        let peak_ewma = PeakEwmaConfig {
            default_rtt: or(ewma.as_ref().and_then(|e| e.default_rtt), DEFAULT_RTT),
            decay: self.nonzero(
                &format!("{key}.peak_ewma.decay"),
                ewma.as_ref().and_then(|e| e.decay),
                DEFAULT_DECAY,
            )?,
        };
        Ok(BalanceConfig {
            algorithm,
            load,
            peak_ewma,
        })
    }

    /// A pool's `timeouts:`, each defaulting to the top-level one.
    fn pool_timeouts(
        &self,
        key: &str,
        t: raw::RawPoolTimeouts,
        global: &PoolTimeouts,
    ) -> Result<PoolTimeouts, ConfigError> {
        Ok(PoolTimeouts {
            connect: self.nonzero(
                &format!("{key}.timeouts.connect"),
                t.connect,
                global.connect,
            )?,
            response_header: self.nonzero(
                &format!("{key}.timeouts.response_header"),
                t.response_header,
                global.response_header,
            )?,
            idle: or(t.idle, global.idle),
        })
    }

    /// A pool's static `endpoints:`, which may be absent only when a
    /// discovery source supplies them; no address may appear twice.
    fn endpoints(
        &self,
        key: &str,
        pool: &str,
        raw: Option<Vec<RawEndpoint>>,
        has_discovery: bool,
    ) -> Result<Vec<EndpointConfig>, ConfigError> {
        let endpoints = match raw {
            Some(list) if !list.is_empty() => list,
            _ if has_discovery => Vec::new(),
            _ => {
                return Err(self.err(
                    format!("{key}.endpoints"),
                    format!("pool `{pool}` has no endpoints and no discovery source"),
                ))
            }
        };
        let mut out: Vec<EndpointConfig> = Vec::with_capacity(endpoints.len());
        for (j, e) in endpoints.into_iter().enumerate() {
            let ekey = format!("{key}.endpoints[{j}]");
            let endpoint = self.endpoint(&ekey, e)?;
            if let Some(first) = out.iter().position(|o| o.address == endpoint.address) {
                return Err(self.err(
                    format!("{ekey}.address"),
                    format!(
                        "duplicate endpoint {} in pool `{pool}` (also {key}.endpoints[{first}]); \
                         use `weight` to send it more traffic",
                        endpoint.address
                    ),
                ));
            }
            out.push(endpoint);
        }
        Ok(out)
    }

    /// The top-level `limits:` block.
    fn limits(&self, l: raw::RawLimits) -> Result<LimitsConfig, ConfigError> {
        let d = LimitsConfig::default();
        let size = |key: &str, v: Option<i64>, default: usize, min: i64, max: i64| {
            self.int_in(key, v, default as i64, min, max)
                .map(|v| usize::try_from(v).unwrap_or(default))
        };
        let optional = |key: &str, v: Option<i64>, max: i64| match v {
            None => Ok(None),
            Some(v) => self.int_in(key, Some(v), 1, 1, max).map(|v| Some(v as u64)),
        };
        Ok(LimitsConfig {
            max_header_bytes: size(
                "limits.max_header_bytes",
                l.max_header_bytes,
                d.max_header_bytes,
                MIN_HEADER_BYTES,
                MAX_SIZE,
            )?,
            max_headers: size(
                "limits.max_headers",
                l.max_headers,
                d.max_headers,
                1,
                10_000,
            )?,
            max_uri_bytes: size(
                "limits.max_uri_bytes",
                l.max_uri_bytes,
                d.max_uri_bytes,
                16,
                MAX_SIZE,
            )?,
            max_body_bytes: optional("limits.max_body_bytes", l.max_body_bytes, i64::MAX)?,
            max_connections: optional("limits.max_connections", l.max_connections, MAX_SIZE)?
                .map(|v| v as usize),
            h2_max_concurrent_streams: self.int_in(
                "limits.h2_max_concurrent_streams",
                l.h2_max_concurrent_streams,
                i64::from(d.h2_max_concurrent_streams),
                1,
                i64::from(u32::MAX),
            )? as u32,
        })
    }

    /// A pool's `limits:` block.
    fn pool_limits(
        &self,
        key: &str,
        raw: Option<raw::RawPoolLimits>,
    ) -> Result<PoolLimits, ConfigError> {
        let Some(l) = raw else {
            return Ok(PoolLimits {
                queue_timeout: DEFAULT_QUEUE_TIMEOUT,
                ..PoolLimits::default()
            });
        };
        let count = |k: &str, v: Option<i64>| match v {
            None => Ok(None),
            Some(v) => self
                .int_in(&format!("{key}.{k}"), Some(v), 1, 1, MAX_SIZE)
                .map(|v| Some(v as usize)),
        };
        Ok(PoolLimits {
            max_requests: count("max_requests", l.max_requests)?,
            max_requests_per_endpoint: count(
                "max_requests_per_endpoint",
                l.max_requests_per_endpoint,
            )?,
            queue_timeout: or(l.queue_timeout, DEFAULT_QUEUE_TIMEOUT),
        })
    }

    fn int_in(
        &self,
        key: &str,
        value: Option<i64>,
        default: i64,
        min: i64,
        max: i64,
    ) -> Result<i64, ConfigError> {
        let v = value.unwrap_or(default);
        if v < min || v > max {
            return Err(self.err(key, format!("must be between {min} and {max} (got {v})")));
        }
        Ok(v)
    }

    fn statuses(
        &self,
        key: &str,
        codes: Option<Vec<i64>>,
        default: &[u16],
    ) -> Result<Vec<u16>, ConfigError> {
        match codes {
            None => Ok(default.to_vec()),
            Some(list) => list
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    u16::try_from(c)
                        .ok()
                        .filter(|c| (100..=599).contains(c))
                        .ok_or_else(|| {
                            self.err(
                                format!("{key}[{i}]"),
                                format!("{c} is not an HTTP status (100-599)"),
                            )
                        })
                })
                .collect(),
        }
    }

    fn health(&self, key: &str, raw: Option<RawHealth>) -> Result<HealthConfig, ConfigError> {
        let Some(raw) = raw else {
            return Ok(HealthConfig::default());
        };
        let active = match raw.active {
            None => None,
            Some(a) => Some(self.active_health(&format!("{key}.active"), a)?),
        };
        let passive = match raw.passive {
            None => None,
            Some(p) => Some(self.passive_health(&format!("{key}.passive"), p)?),
        };
        Ok(HealthConfig {
            active,
            passive,
            panic_threshold: self.int_in(
                &format!("{key}.panic_threshold"),
                raw.panic_threshold,
                0,
                0,
                100,
            )? as u8,
        })
    }

    /// `health.active:` at `akey`: the probe and its schedule.
    fn active_health(&self, akey: &str, a: raw::RawActive) -> Result<ActivePolicy, ConfigError> {
        let d = ActivePolicy::default();
        let kind = match a.kind.unwrap_or(RawProbeType::Http) {
            RawProbeType::Tcp => {
                for (set, name) in [
                    (a.path.is_some(), "path"),
                    (a.method.is_some(), "method"),
                    (a.host.is_some(), "host"),
                    (a.expected_statuses.is_some(), "expected_statuses"),
                ] {
                    if set {
                        return Err(self.err(
                            format!("{akey}.{name}"),
                            "only meaningful with `type: http`",
                        ));
                    }
                }
                ProbeKind::Tcp
            }
            RawProbeType::Http => self.http_probe(akey, &a)?,
        };
        Ok(ActivePolicy {
            kind,
            interval: self.nonzero(&format!("{akey}.interval"), a.interval, d.interval)?,
            timeout: self.nonzero(&format!("{akey}.timeout"), a.timeout, d.timeout)?,
            jitter: or(a.jitter, d.jitter),
            healthy_threshold: self.int_in(
                &format!("{akey}.healthy_threshold"),
                a.healthy_threshold,
                2,
                1,
                1000,
            )? as u32,
            unhealthy_threshold: self.int_in(
                &format!("{akey}.unhealthy_threshold"),
                a.unhealthy_threshold,
                3,
                1,
                1000,
            )? as u32,
            ..d
        })
    }

    /// The request of an HTTP probe (`type: http`, the default): path,
    /// method, Host header and the statuses that count as healthy.
    fn http_probe(&self, akey: &str, a: &raw::RawActive) -> Result<ProbeKind, ConfigError> {
        let path = a.path.clone().unwrap_or_else(|| "/".to_owned());
        if !path.starts_with('/') || http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
            return Err(self.err(
                format!("{akey}.path"),
                format!("`{path}` is not a valid request path (it must start with `/`)"),
            ));
        }
        let method = match &a.method {
            None => http::Method::GET,
            Some(m) => http::Method::from_bytes(m.as_bytes()).map_err(|_| {
                self.err(
                    format!("{akey}.method"),
                    format!("`{m}` is not an HTTP method"),
                )
            })?,
        };
        if let Some(h) = &a.host {
            if http::HeaderValue::from_str(h).is_err() || h.is_empty() {
                return Err(self.err(
                    format!("{akey}.host"),
                    format!("`{h}` is not a valid Host header"),
                ));
            }
        }
        let expected = match &a.expected_statuses {
            None => vec![(200, 399)],
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    parse_status_range(r).ok_or_else(|| {
                        self.err(
                            format!("{akey}.expected_statuses[{i}]"),
                            format!("`{r}` is not a status or range like `200-399`"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(ProbeKind::Http {
            method,
            path,
            host: a.host.clone(),
            expected,
        })
    }

    /// `health.passive:` at `pkey`: outlier ejection on failed requests.
    fn passive_health(&self, pkey: &str, p: raw::RawPassive) -> Result<PassivePolicy, ConfigError> {
        let d = PassivePolicy::default();
        let base = self.nonzero(
            &format!("{pkey}.base_ejection_time"),
            p.base_ejection_time,
            d.base_ejection_time,
        )?;
        let max = or(p.max_ejection_time, d.max_ejection_time);
        if max < base {
            return Err(self.err(
                format!("{pkey}.max_ejection_time"),
                "must not be shorter than base_ejection_time",
            ));
        }
        Ok(PassivePolicy {
            consecutive_failures: self.int_in(
                &format!("{pkey}.consecutive_failures"),
                p.consecutive_failures,
                5,
                1,
                1000,
            )? as u32,
            base_ejection_time: base,
            max_ejection_time: max,
            max_ejection_percent: self.int_in(
                &format!("{pkey}.max_ejection_percent"),
                p.max_ejection_percent,
                50,
                0,
                100,
            )? as u8,
            failure_statuses: StatusSet::from_codes(self.statuses(
                &format!("{pkey}.failure_statuses"),
                p.failure_statuses,
                &[502, 503, 504],
            )?),
        })
    }

    fn url(&self, key: &str, url: &str) -> Result<String, ConfigError> {
        match http::Uri::try_from(url) {
            Ok(u) if u.scheme_str() == Some("http") && u.authority().is_some() => Ok(url.to_owned()),
            Ok(u) if u.scheme_str() == Some("https") => Err(self.err(
                key,
                format!("`{url}`: https registries are not supported yet; use http:// (e.g. on a private network or a local agent)"),
            )),
            _ => Err(self.err(key, format!("`{url}` is not an http:// URL"))),
        }
    }

    fn discovery(
        &self,
        key: &str,
        raw: Option<Vec<RawSource>>,
    ) -> Result<Vec<DiscoveryConfig>, ConfigError> {
        let mut out: Vec<DiscoveryConfig> = Vec::new();
        for (i, src) in raw.unwrap_or_default().into_iter().enumerate() {
            let (kind_name, source_name, max_stale) = match &src {
                RawSource::Dns(d) => ("dns", d.source_name.clone(), d.max_stale),
                RawSource::Etcd(e) => ("etcd", e.source_name.clone(), e.max_stale),
                RawSource::Consul(c) => ("consul", c.source_name.clone(), c.max_stale),
                RawSource::Http(h) => ("http", h.source_name.clone(), h.max_stale),
            };
            let ikey = format!("{key}[{i}].{kind_name}");
            if max_stale.is_some_and(|m| m.0 < Duration::from_secs(1)) {
                // The registry is contacted every third of it: shorter
                // would be a query storm, and one slow answer an expiry.
                return Err(self.err(format!("{ikey}.max_stale"), "must be at least 1s"));
            }
            let name = source_name.unwrap_or_else(|| format!("{kind_name}[{i}]"));
            if out.iter().any(|o| o.name == name) {
                return Err(self.err(
                    format!("{ikey}.source_name"),
                    format!("duplicate source name `{name}`"),
                ));
            }
            let kind = match src {
                RawSource::Dns(d) => self.dns_source(&ikey, d)?,
                RawSource::Etcd(e) => self.etcd_source(&ikey, e)?,
                RawSource::Consul(c) => self.consul_source(&ikey, c)?,
                RawSource::Http(h) => self.http_source(&ikey, h)?,
            };
            out.push(DiscoveryConfig {
                name,
                max_stale: max_stale.map(|d| d.0),
                kind,
            });
        }
        Ok(out)
    }

    /// `dns:` (`ikey` is its key path).
    fn dns_source(&self, ikey: &str, d: RawDns) -> Result<SourceKind, ConfigError> {
        let record = match d.record.unwrap_or(RawDnsRecord::A) {
            RawDnsRecord::A => DnsRecord::A,
            RawDnsRecord::Aaaa => DnsRecord::Aaaa,
            RawDnsRecord::Srv => DnsRecord::Srv,
        };
        let port = match (record, d.port) {
            (DnsRecord::Srv, Some(_)) => {
                return Err(self.err(
                    format!("{ikey}.port"),
                    "SRV records carry their own ports; remove `port`",
                ))
            }
            (DnsRecord::Srv, None) => None,
            (_, None) => {
                return Err(self.err(format!("{ikey}.port"), "A and AAAA records need a `port`"))
            }
            (_, Some(p)) => {
                Some(self.int_in(&format!("{ikey}.port"), Some(p), 0, 1, 65535)? as u16)
            }
        };
        if d.name.trim().is_empty() {
            return Err(self.err(format!("{ikey}.name"), "empty DNS name"));
        }
        let resolver = match d.resolver {
            None => None,
            Some(r) => Some(r.parse::<SocketAddr>().map_err(|_| {
                self.err(
                    format!("{ikey}.resolver"),
                    format!("`{r}` is not an ip:port"),
                )
            })?),
        };
        let min_interval = self.nonzero(
            &format!("{ikey}.min_interval"),
            d.min_interval,
            Duration::from_secs(1),
        )?;
        let max_interval = or(d.max_interval, Duration::from_secs(60));
        if max_interval < min_interval {
            return Err(self.err(
                format!("{ikey}.max_interval"),
                "must not be shorter than min_interval",
            ));
        }
        Ok(SourceKind::Dns(DnsConfig {
            name: d.name,
            record,
            port,
            resolver,
            min_interval,
            max_interval,
            timeout: self.nonzero(
                &format!("{ikey}.timeout"),
                d.timeout,
                Duration::from_secs(2),
            )?,
        }))
    }

    /// `etcd:`.
    fn etcd_source(&self, ikey: &str, e: RawEtcd) -> Result<SourceKind, ConfigError> {
        if e.endpoints.is_empty() {
            return Err(self.err(
                format!("{ikey}.endpoints"),
                "at least one etcd client URL is needed",
            ));
        }
        let endpoints = e
            .endpoints
            .iter()
            .enumerate()
            .map(|(j, u)| self.url(&format!("{ikey}.endpoints[{j}]"), u))
            .collect::<Result<Vec<_>, _>>()?;
        if e.prefix.is_empty() {
            return Err(self.err(
                format!("{ikey}.prefix"),
                "empty prefix would read the whole keyspace",
            ));
        }
        if e.username.is_some() != e.password.is_some() {
            return Err(self.err(
                format!("{ikey}.username"),
                "`username` and `password` go together",
            ));
        }
        Ok(SourceKind::Etcd(EtcdConfig {
            endpoints,
            prefix: e.prefix,
            username: e.username,
            password: e.password,
            poll_interval: self.nonzero(
                &format!("{ikey}.poll_interval"),
                e.poll_interval,
                Duration::from_secs(30),
            )?,
            timeout: self.nonzero(
                &format!("{ikey}.timeout"),
                e.timeout,
                Duration::from_secs(5),
            )?,
        }))
    }

    /// `consul:`.
    fn consul_source(&self, ikey: &str, c: RawConsul) -> Result<SourceKind, ConfigError> {
        let address = c
            .address
            .unwrap_or_else(|| "http://127.0.0.1:8500".to_owned());
        let address = self.url(&format!("{ikey}.address"), &address)?;
        if c.service.is_empty() {
            return Err(self.err(format!("{ikey}.service"), "empty service name"));
        }
        Ok(SourceKind::Consul(ConsulConfig {
            address,
            service: c.service,
            tags: c.tags.unwrap_or_default(),
            passing_only: c.passing_only.unwrap_or(true),
            datacenter: c.datacenter,
            token: c.token,
            wait: self.nonzero(&format!("{ikey}.wait"), c.wait, Duration::from_secs(30))?,
        }))
    }

    /// `http:`.
    fn http_source(&self, ikey: &str, h: RawHttpSource) -> Result<SourceKind, ConfigError> {
        Ok(SourceKind::Http(HttpSourceConfig {
            url: self.url(&format!("{ikey}.url"), &h.url)?,
            interval: self.nonzero(
                &format!("{ikey}.interval"),
                h.interval,
                Duration::from_secs(5),
            )?,
            timeout: self.nonzero(
                &format!("{ikey}.timeout"),
                h.timeout,
                Duration::from_secs(5),
            )?,
        }))
    }

    fn retries(&self, key: &str, raw: Option<RawRetries>) -> Result<RetryConfig, ConfigError> {
        let d = RetryConfig::default();
        let Some(r) = raw else {
            return Ok(d);
        };
        let ratio = r.budget_ratio.unwrap_or(d.budget_ratio);
        if !(0.0..=10.0).contains(&ratio) {
            return Err(self.err(
                format!("{key}.budget_ratio"),
                format!("must be between 0 and 10 (got {ratio})"),
            ));
        }
        let backoff_base = or(r.backoff_base, d.backoff_base);
        let backoff_max = or(r.backoff_max, d.backoff_max);
        if backoff_max < backoff_base {
            return Err(self.err(
                format!("{key}.backoff_max"),
                "must not be shorter than backoff_base",
            ));
        }
        Ok(RetryConfig {
            attempts: self.int_in(
                &format!("{key}.attempts"),
                r.attempts,
                i64::from(d.attempts),
                1,
                10,
            )? as u32,
            on_statuses: self.statuses(&format!("{key}.on_statuses"), r.on_statuses, &[])?,
            max_replay_body: self.int_in(
                &format!("{key}.max_replay_body"),
                r.max_replay_body,
                64 * 1024,
                0,
                64 * 1024 * 1024,
            )? as u64,
            budget_ratio: ratio,
            budget_min_per_second: self.int_in(
                &format!("{key}.budget_min_per_second"),
                r.budget_min_per_second,
                10,
                0,
                1_000_000,
            )? as u32,
            backoff_base,
            backoff_max,
        })
    }

    fn endpoint(&self, key: &str, e: RawEndpoint) -> Result<EndpointConfig, ConfigError> {
        let address =
            endpoint_address(&e.address).map_err(|m| self.err(format!("{key}.address"), m))?;
        let weight = match e.weight.map_or(1, |w| w.0) {
            w if w < 1 => {
                return Err(self.err(
                    format!("{key}.weight"),
                    format!("weight must be at least 1 (got {w}); remove the endpoint to stop sending it traffic"),
                ))
            }
            w if w > MAX_WEIGHT => {
                return Err(self.err(
                    format!("{key}.weight"),
                    format!("weight must be at most {MAX_WEIGHT} (got {w}); weights are relative, so scale them all down"),
                ))
            }
            // In 1..=MAX_WEIGHT, so it fits.
            w => u32::try_from(w).unwrap_or(1),
        };
        Ok(EndpointConfig { address, weight })
    }

    fn routes(
        &self,
        raw: Option<Vec<RawRoute>>,
        pools: &[PoolConfig],
        middleware: &[super::middleware::MiddlewareConfig],
    ) -> Result<Vec<RouteConfig>, ConfigError> {
        let raw = match raw {
            Some(list) if !list.is_empty() => list,
            _ => {
                return Err(self.err(
                    "routes",
                    "at least one route is required, e.g. `routes: [{pool: app}]`",
                ))
            }
        };
        let mut names = HashMap::new();
        let mut out = Vec::with_capacity(raw.len());
        for (i, r) in raw.into_iter().enumerate() {
            let key = format!("routes[{i}]");
            let name = match r.name {
                Some(name) => {
                    self.name(&format!("{key}.name"), &name)?;
                    name
                }
                None => format!("route{i}"),
            };
            if let Some(first) = names.insert(name.clone(), i) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!("duplicate route name `{name}` (also used by routes[{first}])"),
                ));
            }
            let hosts = self.route_hosts(&key, r.host, r.hosts)?;
            let path_prefix = r.path_prefix.unwrap_or_else(|| "/".to_string());
            if !path_prefix.starts_with('/') {
                return Err(self.err(
                    format!("{key}.path_prefix"),
                    format!(
                        "path_prefix `{path_prefix}` must start with `/`, e.g. `/{path_prefix}`"
                    ),
                ));
            }
            self.route_pool(&key, &name, &r.pool, pools)?;
            let middleware = super::middleware::route_list(self, &key, r.middleware, middleware)?;
            out.push(RouteConfig {
                name,
                hosts,
                path_prefix,
                pool: r.pool,
                middleware,
            });
        }
        Ok(out)
    }

    /// A route's host patterns, from `host:` or `hosts:` (not both); none
    /// matches any host.
    fn route_hosts(
        &self,
        key: &str,
        host: Option<String>,
        hosts: Option<Vec<String>>,
    ) -> Result<Vec<HostMatch>, ConfigError> {
        Ok(match (host, hosts) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    format!("{key}.host"),
                    "use either `host` or `hosts`, not both",
                ))
            }
            (Some(h), None) => {
                vec![host_match(&h).map_err(|m| self.err(format!("{key}.host"), m))?]
            }
            (None, Some(list)) => list
                .iter()
                .enumerate()
                .map(|(j, h)| host_match(h).map_err(|m| self.err(format!("{key}.hosts[{j}]"), m)))
                .collect::<Result<Vec<_>, _>>()?,
            (None, None) => Vec::new(),
        })
    }

    /// Checks that the pool route `name` sends to is defined, suggesting
    /// the closest name when it is not.
    fn route_pool(
        &self,
        key: &str,
        name: &str,
        pool: &str,
        pools: &[PoolConfig],
    ) -> Result<(), ConfigError> {
        if pools.iter().any(|p| p.name == pool) {
            return Ok(());
        }
        let names: Vec<&str> = pools.iter().map(|p| p.name.as_str()).collect();
        let hint = match did_you_mean(pool, names.iter().copied()) {
            Some(best) => format!("; did you mean `{best}`?"),
            None => String::new(),
        };
        let list: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        Err(self.err(
            format!("{key}.pool"),
            format!(
                "route `{name}` uses pool `{pool}`, which is not defined (pools: {}){hint}",
                list.join(", ")
            ),
        ))
    }

    /// A file path from the config, relative ones joined to the config
    /// file's directory.
    pub(super) fn path(&self, key: &str, value: &str) -> Result<PathBuf, ConfigError> {
        if value.trim().is_empty() {
            return Err(self.err(key, "empty file path"));
        }
        let p = Path::new(value);
        Ok(match self.base {
            Some(base) if p.is_relative() => base.join(p),
            _ => p.to_path_buf(),
        })
    }

    fn listener_tls(&self, key: &str, t: RawListenerTls) -> Result<ListenerTls, ConfigError> {
        use crate::tls::listener::{self as stls, CertificateSource, ListenerTlsSource};
        let raw_certs = match t.certificates {
            Some(list) if !list.is_empty() => list,
            _ => {
                return Err(self.err(
                    format!("{key}.certificates"),
                    "at least one certificate is required, e.g. \
                     `certificates: [{cert: site.crt, key: site.key}]`",
                ))
            }
        };
        let mut certificates = Vec::with_capacity(raw_certs.len());
        for (i, c) in raw_certs.into_iter().enumerate() {
            certificates.push(CertificateSource {
                cert: self.path(&format!("{key}.certificates[{i}].cert"), &c.cert)?,
                key: self.path(&format!("{key}.certificates[{i}].key"), &c.key)?,
                server_names: c.server_names,
            });
        }
        let client_ca = match &t.client_ca {
            Some(p) => Some(self.path(&format!("{key}.client_ca"), p)?),
            None => None,
        };
        if t.client_auth.is_some() && client_ca.is_none() {
            return Err(self.err(
                format!("{key}.client_auth"),
                "`client_auth` needs `client_ca` (the CA bundle that signs client certificates)",
            ));
        }
        let source = ListenerTlsSource {
            certificates,
            alpn: t
                .alpn
                .unwrap_or_else(|| vec!["h2".to_owned(), "http/1.1".to_owned()]),
            min_version: match t.min_version.unwrap_or(RawTlsVersion::Tls12) {
                RawTlsVersion::Tls12 => TlsVersion::Tls12,
                RawTlsVersion::Tls13 => TlsVersion::Tls13,
            },
            handshake_timeout: self.nonzero(
                &format!("{key}.handshake_timeout"),
                t.handshake_timeout,
                stls::DEFAULT_HANDSHAKE_TIMEOUT,
            )?,
            client_ca,
            client_auth: match t.client_auth {
                Some(raw::RawClientAuth::Optional) => ClientAuth::Optional,
                _ => ClientAuth::Required,
            },
        };
        stls::load_listener_tls(source).map_err(|e| self.tls_err(key, e))
    }

    fn upstream_tls(
        &self,
        key: &str,
        t: RawUpstreamTls,
        protocol: UpstreamProtocol,
    ) -> Result<UpstreamTls, ConfigError> {
        use crate::tls::upstream::{load_upstream_tls, UpstreamTlsSource};
        let opt_path = |name: &str, v: &Option<String>| match v {
            Some(p) => self.path(&format!("{key}.{name}"), p).map(Some),
            None => Ok(None),
        };
        let source = UpstreamTlsSource {
            sni: t.sni.clone(),
            ca: opt_path("ca", &t.ca)?,
            insecure_skip_verify: t.insecure_skip_verify.unwrap_or(false),
            client_cert: opt_path("client_cert", &t.client_cert)?,
            client_key: opt_path("client_key", &t.client_key)?,
        };
        let alpn = match protocol {
            UpstreamProtocol::Http1 => crate::tls::upstream::Alpn::Http11,
            UpstreamProtocol::H2c => crate::tls::upstream::Alpn::H2,
        };
        load_upstream_tls(source, alpn).map_err(|e| self.tls_err(key, e))
    }

    fn tls_err(&self, key: &str, e: crate::tls::TlsConfigError) -> ConfigError {
        let path = if e.field.is_empty() {
            key.to_owned()
        } else {
            format!("{key}.{}", e.field)
        };
        self.err(path, e.message)
    }

    /// Names appear in metrics labels and logs, so an empty one is a mistake.
    pub(super) fn name(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        if name.trim().is_empty() {
            return Err(self.err(key, "name must not be empty"));
        }
        Ok(())
    }

    /// A timeout that would make every request fail if zero.
    pub(super) fn nonzero(
        &self,
        key: &str,
        value: Option<ConfigDuration>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let d = or(value, default);
        if d.is_zero() {
            return Err(self.err(key, "must be greater than 0"));
        }
        Ok(d)
    }
}

fn or(value: Option<ConfigDuration>, default: Duration) -> Duration {
    value.map_or(default, |d| d.0)
}

/// Two bind addresses that cannot both be bound: same port and the same or
/// a wildcard address. Port 0 asks the OS for a fresh port, so never clashes.
fn binds_conflict(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Parses a listener or admin `bind:` value.
fn bind_address(s: &str) -> Result<SocketAddr, String> {
    s.trim().parse().map_err(|_| {
        if looks_like_hostname(s) {
            format!(
                "`{s}` is not a socket address; bind addresses must be ip:port \
                 (e.g. `127.0.0.1:8080`, `0.0.0.0:8080`, `[::]:8080`), not hostnames"
            )
        } else {
            format!(
                "`{s}` is not a socket address; expected ip:port, e.g. `0.0.0.0:8080` \
                 or `[::]:8080`"
            )
        }
    })
}

/// Parses an endpoint `address:` value.
fn endpoint_address(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s.trim().parse().map_err(|_| {
        if looks_like_hostname(s) {
            format!(
                "`{s}`: endpoint addresses must be ip:port; hostnames are resolved by a \
                 `dns` discovery source"
            )
        } else if s.trim().parse::<IpAddr>().is_ok() {
            format!("`{s}` has no port; expected ip:port, e.g. `{s}:8080`")
        } else {
            format!("`{s}` is not a socket address; expected ip:port, e.g. `10.0.0.1:8080`")
        }
    })?;
    if addr.port() == 0 {
        return Err(format!("`{s}`: port 0 cannot be connected to"));
    }
    if addr.ip().is_unspecified() {
        return Err(format!(
            "`{s}`: {} is a wildcard address, not an endpoint",
            addr.ip()
        ));
    }
    Ok(addr)
}

/// `name:port` or `name` where name has a letter: someone wrote a hostname.
fn looks_like_hostname(s: &str) -> bool {
    let s = s.trim();
    let host = match s.rsplit_once(':') {
        Some((h, _)) if !h.contains(':') => h,
        Some(_) => return false,
        None => s,
    };
    !host.is_empty()
        && !host.starts_with('[')
        && host.chars().any(|c| c.is_ascii_alphabetic())
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
}

/// Normalises a host pattern: lower case, no trailing dot, `*.` prefix for
/// suffix matches. Requests are matched after the same normalisation.
fn host_match(pattern: &str) -> Result<HostMatch, String> {
    let lower = pattern.trim().to_ascii_lowercase();
    let host = lower.strip_suffix('.').unwrap_or(&lower);
    if host.is_empty() {
        return Err("host must not be empty; omit `hosts` to match any host".to_string());
    }
    if host == "*" {
        return Err("`*` alone is not a host pattern; omit `hosts` to match any host".to_string());
    }
    if host.contains(':') {
        return Err(format!(
            "host `{pattern}` contains `:`; hosts are matched without the port \
             (write `api.example.com`, not `api.example.com:8080`)"
        ));
    }
    let (suffix, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    if name.contains('*') {
        return Err(format!(
            "host `{pattern}`: `*` is only allowed as a whole first label, as in `*.example.com`"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.' || *c == '_'))
    {
        return Err(format!(
            "host `{pattern}` contains `{bad}`; hosts are DNS names \
             (use punycode for international names)"
        ));
    }
    if name.split('.').any(str::is_empty) {
        return Err(format!("host `{pattern}` has an empty label"));
    }
    Ok(if suffix {
        HostMatch::Suffix(format!(".{name}"))
    } else {
        HostMatch::Exact(name.to_string())
    })
}

/// An RFC 9110 token, as required for a `Via` pseudonym.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        assert_eq!(
            host_match("API.Example.COM."),
            Ok(HostMatch::Exact("api.example.com".into()))
        );
        assert_eq!(
            host_match("*.Example.com"),
            Ok(HostMatch::Suffix(".example.com".into()))
        );
        for bad in [
            "",
            ".",
            "*",
            "a.*.com",
            "*example.com",
            "a:80",
            "a b",
            "a..b",
            "*.",
        ] {
            assert!(host_match(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bind_conflicts() {
        let p = |s: &str| s.parse::<SocketAddr>().unwrap_or(DEFAULT_ADMIN_BIND);
        assert!(binds_conflict(p("0.0.0.0:80"), p("127.0.0.1:80")));
        assert!(binds_conflict(p("127.0.0.1:80"), p("127.0.0.1:80")));
        assert!(!binds_conflict(p("127.0.0.1:80"), p("127.0.0.2:80")));
        assert!(!binds_conflict(p("127.0.0.1:0"), p("127.0.0.1:0")));
    }

    #[test]
    fn hostname_detection() {
        assert!(looks_like_hostname("backend.internal:8080"));
        assert!(looks_like_hostname("localhost"));
        assert!(!looks_like_hostname("10.0.0.1:80"));
        assert!(!looks_like_hostname("[::1]:80"));
        assert!(!looks_like_hostname("::1"));
    }
}
