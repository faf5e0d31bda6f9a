//! The config file as written: serde structs that mirror the YAML one to one.
//!
//! This is the only module that knows about serde_yaml. Every struct denies
//! unknown keys, because a misspelt optional key (`blance: least_connections`)
//! would otherwise be silently ignored and the proxy would run with a default
//! the operator never chose. Optional keys are `Option`s and defaults are
//! applied in `validate.rs`, so "absent" stays distinguishable from "set to
//! the default value" (needed for `host` vs `hosts`).
//!
//! Deserialization goes through `serde_path_to_error`, so a type error knows
//! its key path as well as the line and column serde_yaml reports. For rules
//! checked after parsing, [`locate`] re-walks the document to find the line
//! of a key path.

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;

use super::duration::ConfigDuration;
use super::error::{with_suggestion, ConfigError};

/// The whole document.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `listeners`, `routes` and `pools`"
)]
pub struct RawConfig {
    /// `listeners:`, required and non-empty (checked in validation so the
    /// message can say so).
    pub listeners: Option<Vec<RawListener>>,
    /// `admin:`.
    pub admin: Option<RawAdmin>,
    /// `timeouts:`, the global defaults.
    pub timeouts: Option<RawTimeouts>,
    /// `limits:`, bounds on client input.
    pub limits: Option<RawLimits>,
    /// `access_log:`.
    pub access_log: Option<RawAccessLog>,
    /// `headers:`.
    pub headers: Option<RawHeaders>,
    /// `routes:`, required and non-empty.
    pub routes: Option<Vec<RawRoute>>,
    /// `pools:`, required and non-empty.
    pub pools: Option<Vec<RawPool>>,
    /// `middleware:`, named request policies routes list.
    pub middleware: Option<Vec<super::middleware::RawMiddleware>>,
    /// `trusted_proxies:`, CIDRs whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Option<Vec<String>>,
}

/// One entry of `listeners:`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a listener mapping with `name` and `bind`"
)]
pub struct RawListener {
    /// Unique listener name.
    pub name: String,
    /// `ip:port` to bind, parsed in validation.
    pub bind: String,
    /// `tls:`; absent means cleartext.
    pub tls: Option<RawListenerTls>,
}

/// A listener's `tls:` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a tls mapping with `certificates`")]
pub struct RawListenerTls {
    /// Certificates; the first is the default.
    pub certificates: Option<Vec<RawCertificate>>,
    /// ALPN protocols.
    pub alpn: Option<Vec<String>>,
    /// `"1.2"` or `"1.3"`.
    pub min_version: Option<RawTlsVersion>,
    /// Handshake deadline.
    pub handshake_timeout: Option<ConfigDuration>,
    /// CA bundle for client certificates.
    pub client_ca: Option<String>,
    /// `required` or `optional`.
    pub client_auth: Option<RawClientAuth>,
}

/// One entry of `tls.certificates:`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a certificate mapping with `cert` and `key`"
)]
pub struct RawCertificate {
    /// PEM certificate chain file.
    pub cert: String,
    /// PEM private key file.
    pub key: String,
    /// SNI names overriding the certificate's own.
    pub server_names: Option<Vec<String>>,
}

/// `client_auth:` values.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawClientAuth {
    /// `required`.
    Required,
    /// `optional`.
    Optional,
}

/// `min_version:` as written: `"1.2"` or `"1.3"`, quoted or not (YAML reads
/// an unquoted `1.2` as a number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawTlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl<'de> de::Deserialize<'de> for RawTlsVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawTlsVersion;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"1.2\" or \"1.3\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawTlsVersion, E> {
                match v.trim() {
                    "1.2" => Ok(RawTlsVersion::Tls12),
                    "1.3" => Ok(RawTlsVersion::Tls13),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawTlsVersion, E> {
                if (v - 1.2).abs() < 1e-9 {
                    Ok(RawTlsVersion::Tls12)
                } else if (v - 1.3).abs() < 1e-9 {
                    Ok(RawTlsVersion::Tls13)
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(v), &self))
                }
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A pool's `tls:` block.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a tls mapping")]
pub struct RawUpstreamTls {
    /// Server name to send and verify.
    pub sni: Option<String>,
    /// CA bundle replacing the bundled roots.
    pub ca: Option<String>,
    /// Accept any certificate.
    pub insecure_skip_verify: Option<bool>,
    /// Client certificate chain.
    pub client_cert: Option<String>,
    /// Client key.
    pub client_key: Option<String>,
}

/// `admin:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an admin mapping with `bind`")]
pub struct RawAdmin {
    /// `ip:port` of the admin listener.
    pub bind: Option<String>,
}

/// Global `timeouts:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of timeouts")]
pub struct RawTimeouts {
    /// Default upstream connect timeout.
    pub connect: Option<ConfigDuration>,
    /// Default wait for upstream response headers.
    pub response_header: Option<ConfigDuration>,
    /// Default lifetime of an idle pooled upstream connection.
    pub upstream_idle: Option<ConfigDuration>,
    /// Time a client has to send its request head.
    pub header_read: Option<ConfigDuration>,
    /// Idle keep-alive client connections are closed after this.
    pub client_idle: Option<ConfigDuration>,
    /// Drain time on shutdown.
    pub shutdown_grace: Option<ConfigDuration>,
    /// Longest pause between request body bytes.
    pub body_read: Option<ConfigDuration>,
}

/// Top-level `limits:`. Sizes are signed so that a negative number is
/// reported by validation in words rather than as a type mismatch.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of limits")]
pub struct RawLimits {
    /// Largest request head in bytes.
    pub max_header_bytes: Option<i64>,
    /// Most header fields.
    pub max_headers: Option<i64>,
    /// Longest request target in bytes.
    pub max_uri_bytes: Option<i64>,
    /// Largest request body in bytes.
    pub max_body_bytes: Option<i64>,
    /// Open connections per listener.
    pub max_connections: Option<i64>,
    /// HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: Option<i64>,
}

/// A pool's `limits:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of pool limits")]
pub struct RawPoolLimits {
    /// Requests in flight to the pool.
    pub max_requests: Option<i64>,
    /// Requests in flight to one endpoint.
    pub max_requests_per_endpoint: Option<i64>,
    /// Wait for a slot.
    pub queue_timeout: Option<ConfigDuration>,
}

/// `access_log:`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an access_log mapping with `enabled`"
)]
pub struct RawAccessLog {
    /// Whether to log one line per request.
    pub enabled: Option<bool>,
}

/// `headers:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a headers mapping with `via`")]
pub struct RawHeaders {
    /// Pseudonym for the `Via` header.
    pub via: Option<String>,
}

/// One entry of `routes:`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route mapping with at least `pool`"
)]
pub struct RawRoute {
    /// Route name; defaults to `route<index>`.
    pub name: Option<String>,
    /// Host patterns.
    pub hosts: Option<Vec<String>>,
    /// A single host pattern (shorthand for `hosts: [x]`).
    pub host: Option<String>,
    /// Path prefix; defaults to `/`.
    pub path_prefix: Option<String>,
    /// Name of the pool serving the route.
    pub pool: String,
    /// Names of the middleware the route's requests go through, in order.
    pub middleware: Option<Vec<String>>,
}

/// One entry of `pools:`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a pool mapping with `name` and `endpoints`"
)]
pub struct RawPool {
    /// Unique pool name.
    pub name: String,
    /// Selection algorithm.
    pub balance: Option<RawAlgorithm>,
    /// Load measure of the load-aware algorithms.
    pub load: Option<RawLoad>,
    /// Peak-EWMA parameters.
    pub peak_ewma: Option<RawPeakEwma>,
    /// Protocol to the endpoints.
    pub protocol: Option<RawProtocol>,
    /// `Host` header sent upstream.
    pub host_header: Option<RawHostHeader>,
    /// Idle connections kept per endpoint.
    pub max_idle_per_endpoint: Option<usize>,
    /// Per-pool upstream timeouts.
    pub timeouts: Option<RawPoolTimeouts>,
    /// Static endpoints.
    pub endpoints: Option<Vec<RawEndpoint>>,
    /// Per-pool metric options.
    pub metrics: Option<RawPoolMetrics>,
    /// Active probes, passive ejection, panic threshold.
    pub health: Option<RawHealth>,
    /// Retry policy.
    pub retries: Option<RawRetries>,
    /// Registry sources. Each entry is a one-key map (`- dns: {...}`),
    /// which serde_yaml only reads as an enum through `singleton_map`.
    #[serde(default, with = "serde_yaml::with::singleton_map_recursive")]
    pub discovery: Option<Vec<RawSource>>,
    /// TLS to the endpoints; absent means cleartext.
    pub tls: Option<RawUpstreamTls>,
    /// Concurrency limits.
    pub limits: Option<RawPoolLimits>,
    /// Fail-fast thresholds.
    pub circuit_breaker: Option<RawCircuitBreaker>,
}

/// A pool's `circuit_breaker:`.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `max_connections`, `max_pending_requests`, `max_requests` and/or `max_retries`"
)]
pub struct RawCircuitBreaker {
    /// Open upstream connections.
    pub max_connections: Option<i64>,
    /// Requests waiting in the `limits` queue.
    pub max_pending_requests: Option<i64>,
    /// Requests in flight.
    pub max_requests: Option<i64>,
    /// Retries in flight.
    pub max_retries: Option<i64>,
}

/// One `discovery:` entry: a map with one key naming the registry.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RawSource {
    /// `dns: {...}`.
    Dns(RawDns),
    /// `etcd: {...}`.
    Etcd(RawEtcd),
    /// `consul: {...}`.
    Consul(RawConsul),
    /// `http: {...}`.
    Http(RawHttpSource),
}

/// DNS record types.
#[derive(Debug, Clone, Copy, Deserialize)]
pub enum RawDnsRecord {
    /// `A`.
    A,
    /// `AAAA`.
    #[serde(rename = "AAAA")]
    Aaaa,
    /// `SRV`.
    #[serde(rename = "SRV")]
    Srv,
}

/// `dns:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    /// Source name.
    pub source_name: Option<String>,
    /// Staleness bound.
    pub max_stale: Option<ConfigDuration>,
    /// Name to resolve.
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub record: Option<RawDnsRecord>,
    /// Port for A/AAAA.
    pub port: Option<i64>,
    /// Resolver address.
    pub resolver: Option<String>,
    /// Lower refresh bound.
    pub min_interval: Option<ConfigDuration>,
    /// Upper refresh bound.
    pub max_interval: Option<ConfigDuration>,
    /// Query timeout.
    pub timeout: Option<ConfigDuration>,
}

/// `etcd:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    /// Source name.
    pub source_name: Option<String>,
    /// Staleness bound.
    pub max_stale: Option<ConfigDuration>,
    /// Client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix.
    pub prefix: String,
    /// User.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Fallback poll interval.
    pub poll_interval: Option<ConfigDuration>,
    /// Request timeout.
    pub timeout: Option<ConfigDuration>,
}

/// `consul:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsul {
    /// Source name.
    pub source_name: Option<String>,
    /// Staleness bound.
    pub max_stale: Option<ConfigDuration>,
    /// Agent URL.
    pub address: Option<String>,
    /// Service.
    pub service: String,
    /// Tag filter.
    pub tags: Option<Vec<String>>,
    /// Passing only.
    pub passing_only: Option<bool>,
    /// Datacenter.
    pub datacenter: Option<String>,
    /// ACL token.
    pub token: Option<String>,
    /// Blocking wait.
    pub wait: Option<ConfigDuration>,
}

/// `http:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttpSource {
    /// Source name.
    pub source_name: Option<String>,
    /// Staleness bound.
    pub max_stale: Option<ConfigDuration>,
    /// URL.
    pub url: String,
    /// Poll interval.
    pub interval: Option<ConfigDuration>,
    /// Request timeout.
    pub timeout: Option<ConfigDuration>,
}

/// A pool's `health:` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Active probes.
    pub active: Option<RawActive>,
    /// Passive outlier ejection.
    pub passive: Option<RawPassive>,
    /// Percent of available endpoints below which the pool balances over all.
    pub panic_threshold: Option<i64>,
}

/// `health.active:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActive {
    /// `http` or `tcp`.
    #[serde(rename = "type")]
    pub kind: Option<RawProbeType>,
    /// HTTP path.
    pub path: Option<String>,
    /// HTTP method.
    pub method: Option<String>,
    /// HTTP Host header.
    pub host: Option<String>,
    /// Status ranges counted as healthy, e.g. `"200-399"`.
    pub expected_statuses: Option<Vec<String>>,
    /// Time between probe rounds.
    pub interval: Option<ConfigDuration>,
    /// Timeout of one probe.
    pub timeout: Option<ConfigDuration>,
    /// Random extra delay per round.
    pub jitter: Option<ConfigDuration>,
    /// Passing probes to turn healthy.
    pub healthy_threshold: Option<i64>,
    /// Failing probes to turn unhealthy.
    pub unhealthy_threshold: Option<i64>,
}

/// Probe types.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawProbeType {
    /// HTTP request.
    Http,
    /// TCP connect.
    Tcp,
}

/// `health.passive:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPassive {
    /// Consecutive failures that eject.
    pub consecutive_failures: Option<i64>,
    /// Statuses counted as failures.
    pub failure_statuses: Option<Vec<i64>>,
    /// First ejection length.
    pub base_ejection_time: Option<ConfigDuration>,
    /// Cap on ejection length.
    pub max_ejection_time: Option<ConfigDuration>,
    /// Cap on the share of endpoints ejected at once.
    pub max_ejection_percent: Option<i64>,
}

/// A pool's `retries:` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    /// Total attempts including the first.
    pub attempts: Option<i64>,
    /// Statuses that make an idempotent request retry.
    pub on_statuses: Option<Vec<i64>>,
    /// Largest request body buffered so it can be replayed.
    pub max_replay_body: Option<i64>,
    /// Retries allowed per request, as a ratio.
    pub budget_ratio: Option<f64>,
    /// Retries always allowed per second.
    pub budget_min_per_second: Option<i64>,
    /// First backoff.
    pub backoff_base: Option<ConfigDuration>,
    /// Backoff cap.
    pub backoff_max: Option<ConfigDuration>,
}

/// A pool's `metrics:` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoolMetrics {
    /// Per-endpoint response-time histograms (default true).
    pub endpoint_histograms: Option<bool>,
}

/// `balance:` values.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawAlgorithm {
    /// `round_robin`.
    RoundRobin,
    /// `least_connections`.
    LeastConnections,
    /// `power_of_two_choices`.
    PowerOfTwoChoices,
}

/// `load:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawLoad {
    /// `in_flight`.
    InFlight,
    /// `peak_ewma`.
    PeakEwma,
}

/// `protocol:` values.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawProtocol {
    /// `http1`.
    Http1,
    /// `h2c`.
    H2c,
}

/// `host_header:` values.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawHostHeader {
    /// `preserve`.
    Preserve,
    /// `endpoint`.
    Endpoint,
}

/// A pool's `peak_ewma:`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `default_rtt` and `decay`"
)]
pub struct RawPeakEwma {
    /// RTT assumed before the first sample.
    pub default_rtt: Option<ConfigDuration>,
    /// Decay window.
    pub decay: Option<ConfigDuration>,
}

/// A pool's `timeouts:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping of pool timeouts")]
pub struct RawPoolTimeouts {
    /// Connect timeout.
    pub connect: Option<ConfigDuration>,
    /// Wait for response headers.
    pub response_header: Option<ConfigDuration>,
    /// Lifetime of an idle pooled connection.
    pub idle: Option<ConfigDuration>,
}

/// One entry of a pool's `endpoints:`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an endpoint mapping with `address` and optional `weight`"
)]
pub struct RawEndpoint {
    /// `ip:port`, parsed in validation.
    pub address: String,
    /// Relative weight; signed on purpose, see [`RawWeight`].
    pub weight: Option<RawWeight>,
}

/// An endpoint weight as written: any whole number, so that range errors
/// are reported by validation in words rather than as a type mismatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawWeight(pub i64);

impl<'de> de::Deserialize<'de> for RawWeight {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawWeight;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number from 1 to 1000000 (relative weight)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawWeight, E> {
                Ok(RawWeight(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawWeight, E> {
                // Anything past i64 is past the cap too; validation says so.
                Ok(RawWeight(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Parses the YAML text into a [`RawConfig`]. An empty document is an error.
pub fn parse(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    let deserializer = serde_yaml::Deserializer::from_str(text);
    match serde_path_to_error::deserialize::<_, Option<RawConfig>>(deserializer) {
        Ok(Some(raw)) => Ok(raw),
        Ok(None) => Err(ConfigError::Parse {
            origin: origin.to_string(),
            key_path: String::new(),
            line: None,
            column: None,
            message: "the document is empty; a config needs at least `listeners`, `routes` \
                      and `pools` (see config.example.yaml)"
                .to_string(),
        }),
        Err(err) => {
            // `.` is the root; `?` marks where the parser lost track (a
            // syntax error), so the path is cut there.
            let mut key_path = err.path().to_string();
            if let Some(i) = key_path.find('?') {
                key_path.truncate(i);
            }
            let key_path = key_path.trim_end_matches('.').to_string();
            let inner = err.into_inner();
            let location = inner.location();
            let mut message = inner.to_string();
            // serde_yaml puts its own copy of the path and position into the
            // text; they are reported separately, so strip the duplicates.
            if let Some(loc) = &location {
                let suffix = format!(" at line {} column {}", loc.line(), loc.column());
                message = message.replacen(&suffix, "", 1);
            }
            // serde_yaml's path may stop short of ours (for an unknown key it
            // names the enclosing mapping), so strip any ancestor of it.
            let mut prefix = key_path.as_str();
            while !prefix.is_empty() {
                if let Some(rest) = message.strip_prefix(&format!("{prefix}: ")) {
                    message = rest.to_string();
                    break;
                }
                prefix = &prefix[..prefix.rfind(['.', '[']).unwrap_or(0)];
            }
            Err(ConfigError::Parse {
                origin: origin.to_string(),
                key_path,
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                message: with_suggestion(message),
            })
        }
    }
}

/// Finds the 1-based (line, column) of the value at `key_path` (for example
/// `pools[1].endpoints[0].weight`) in `text`. When the key itself is absent
/// (a defaulted value), the nearest enclosing value that exists is used.
///
/// This re-parses the document with the real YAML parser and makes it fail
/// on purpose at the target value, because serde_yaml reports positions only
/// for errors. That is slower than remembering spans, but runs only when a
/// config is already being rejected, and it handles flow style, quoting and
/// anchors exactly as the parser does, which a text search would not.
pub fn locate(text: &str, key_path: &str) -> Option<(usize, usize)> {
    let mut segments = segments(key_path)?;
    while !segments.is_empty() {
        let deserializer = serde_yaml::Deserializer::from_str(text);
        if let Err(err) = (Probe { path: &segments }).deserialize(deserializer) {
            // Only the probe's own error marks the target; any other error
            // (the path runs through a scalar) says nothing about it.
            if err.to_string().contains(PROBE) {
                if let Some(loc) = err.location() {
                    return Some((loc.line(), loc.column()));
                }
            }
        }
        segments.pop();
    }
    None
}

/// One step of a key path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// Splits `a.b[1][2].c` into segments; `None` if it is not of that shape.
fn segments(key_path: &str) -> Option<Vec<Segment<'_>>> {
    let mut out = Vec::new();
    if key_path.is_empty() {
        return Some(out);
    }
    for part in key_path.split('.') {
        let (name, mut indexes) = match part.find('[') {
            Some(i) => part.split_at(i),
            None => (part, ""),
        };
        if name.is_empty() && out.is_empty() {
            return None;
        }
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        while let Some(rest) = indexes.strip_prefix('[') {
            let (number, tail) = rest.split_once(']')?;
            out.push(Segment::Index(number.parse().ok()?));
            indexes = tail;
        }
        if !indexes.is_empty() {
            return None;
        }
    }
    Some(out)
}

/// Walks the document along `path` and fails at the value it names.
struct Probe<'p, 'a> {
    path: &'p [Segment<'a>],
}

impl<'de> DeserializeSeed<'de> for Probe<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match self.path.first() {
            // Any visitor error is stamped with the value's position.
            None => deserializer.deserialize_any(Target),
            Some(Segment::Key(_)) => deserializer.deserialize_map(self),
            Some(Segment::Index(_)) => deserializer.deserialize_seq(self),
        }
    }
}

impl<'de> Visitor<'de> for Probe<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a mapping or sequence")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (Some(Segment::Key(want)), rest) =
            (self.path.first(), self.path.get(1..).unwrap_or(&[]))
        else {
            return Ok(());
        };
        while let Some(key) = map.next_key::<KeyName>()? {
            if key.0.as_deref() == Some(*want) {
                return map.next_value_seed(Probe { path: rest });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (Some(Segment::Index(want)), rest) =
            (self.path.first(), self.path.get(1..).unwrap_or(&[]))
        else {
            return Ok(());
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Probe { path: rest })?;
        Ok(())
    }
}

/// A map key, if it is a string (other keys cannot be on a key path).
struct KeyName(Option<String>);

impl<'de> de::Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyName, E> {
                Ok(KeyName(Some(v.to_string())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<KeyName, E> {
                Ok(KeyName(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<KeyName, E> {
                Ok(KeyName(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<KeyName, E> {
                Ok(KeyName(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<KeyName, E> {
                Ok(KeyName(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<KeyName, E> {
                Ok(KeyName(None))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The expectation in the probe's error, to recognise it.
const PROBE: &str = "nothing (position probe)";

/// Rejects whatever value it is given, so the parser reports its position.
struct Target;

impl Visitor<'_> for Target {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(PROBE)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn splits_key_paths() {
        use Segment::*;
        assert_eq!(
            segments("pools[1].endpoints[0].weight"),
            Some(vec![
                Key("pools"),
                Index(1),
                Key("endpoints"),
                Index(0),
                Key("weight")
            ])
        );
        assert_eq!(segments(""), Some(vec![]));
        assert_eq!(segments("a[x]"), None);
        assert_eq!(segments("a[1]b"), None);
        assert_eq!(segments("[1]"), None);
    }

    #[test]
    fn locates_values() {
        let text = "\
a: 1
pools:
  - name: x
    endpoints: [{address: \"1.2.3.4:80\", weight: 0}]
  - name: y
    endpoints:
      - address: 1.2.3.4:80
        weight: 7
";
        assert_eq!(locate(text, "a"), Some((1, 4)));
        assert_eq!(locate(text, "pools[0].endpoints[0].weight"), Some((4, 49)));
        assert_eq!(locate(text, "pools[1].endpoints[0].weight"), Some((8, 17)));
        assert_eq!(locate(text, "pools[1].name"), Some((5, 11)));
        // Absent keys fall back to the nearest enclosing value.
        assert_eq!(locate(text, "pools[1].balance"), Some((5, 5)));
        assert_eq!(locate(text, "pools[9].name"), Some((3, 3)));
        assert_eq!(locate(text, "missing"), None);
        assert_eq!(locate(text, ""), None);
        assert_eq!(locate(text, "a.b"), Some((1, 4)));
        assert_eq!(locate("a: [", "b"), None);
    }
}
