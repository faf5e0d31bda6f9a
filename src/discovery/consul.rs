//! `consul` source: the instances of one service from Consul's health API,
//! `GET /v1/health/service/<service>`, followed with blocking queries
//! (<https://developer.hashicorp.com/consul/api-docs/health#list-service-instances-for-service>,
//! <https://developer.hashicorp.com/consul/api-docs/features/blocking>).
//!
//! **Query**: `passing=1` when `passing_only`, one `tag=` per configured tag
//! (Consul then returns only instances carrying all of them), `dc=` when a
//! datacenter is set, and the ACL token in `X-Consul-Token`.
//!
//! **Blocking queries**: every answer carries `X-Consul-Index`; the next
//! request passes it back as `index=` with `wait=`, and Consul holds the
//! request until the result may have changed or `wait` (plus up to
//! `wait/16` of jitter Consul adds) passes. Following the documented
//! client rules:
//! - the index is reset to 0 (a non-blocking read) when it goes backwards
//!   (e.g. after a Consul server snapshot restore);
//! - an index of 0 (or a missing header) is treated as 1, so the next call
//!   still blocks instead of returning at once;
//! - calls are at least 100 ms apart, so a server that answers blocking
//!   queries immediately cannot make weir spin;
//! - a return is no proof of change: the full set is returned each time and
//!   the driver skips unchanged sets.
//!
//! The request timeout is `wait + wait/16 + 5s`.
//!
//! **Freshness**: every answer is a successful contact, a blocking query
//! that returns with the same index (nothing changed during `wait`)
//! included, and `max_stale` counts from the last one. With `max_stale`
//! set, `wait` is lowered to [`super::contact_interval`] (a third of
//! `max_stale`) so a quiet service is confirmed that often: a blocking
//! query held for longer would leave nothing to count from when the agent
//! fails in the middle of one.
//!
//! **Entries**: the address is `Service.Address`, or `Node.Address` when
//! that is empty (Consul's own rule); the port `Service.Port`. The weight
//! is `Service.Weights.Passing` (default 1), or `Weights.Warning` for an
//! instance whose worst check is `warning` (only seen with
//! `passing_only: false`), as Consul's DNS interface does. An instance
//! whose applicable weight is 0 is left out (Consul's way of saying "no
//! traffic"). Entries whose address is not an IP (weir does not resolve
//! hostnames here) or whose port is 0 are skipped with a warning. A body
//! that is not a JSON array is an error, and the last good set is kept.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde_json::Value;
use tokio::time::Instant;

use super::{registry_get, Discovery, DiscoveryError, EndpointSet, Update};
use crate::config::ConsulConfig;

/// Minimum time between two requests.
pub const MIN_REQUEST_GAP: Duration = Duration::from_millis(100);

/// Follows one service in Consul.
#[derive(Debug)]
pub struct Consul {
    config: ConsulConfig,
    /// Last `X-Consul-Index`; 0 = no index yet (non-blocking read).
    index: u64,
    last_request: Option<Instant>,
    /// Blocking queries return at least this often.
    contact_every: Option<Duration>,
}

impl Consul {
    /// A source that will read the service at once, then block on changes.
    pub fn new(config: ConsulConfig) -> Self {
        Consul {
            config,
            index: 0,
            last_request: None,
            contact_every: None,
        }
    }

    /// Lowers the blocking `wait` to `every`, so the agent is reached at
    /// least that often.
    pub fn contact_every(mut self, every: Option<Duration>) -> Self {
        self.contact_every = every;
        self
    }

    /// The blocking-query wait: the configured one, or less (see
    /// [`Consul::contact_every`]).
    pub fn wait(&self) -> Duration {
        let wait = self.config.wait;
        self.contact_every.map_or(wait, |every| wait.min(every))
    }

    /// The request URL for the current index.
    pub fn url(&self) -> String {
        let mut url = format!(
            "{}/v1/health/service/{}",
            self.config.address.trim_end_matches('/'),
            encode(&self.config.service)
        );
        let mut params: Vec<String> = Vec::new();
        if self.config.passing_only {
            params.push("passing=1".into());
        }
        for tag in &self.config.tags {
            params.push(format!("tag={}", encode(tag)));
        }
        if let Some(dc) = &self.config.datacenter {
            params.push(format!("dc={}", encode(dc)));
        }
        if self.index > 0 {
            params.push(format!("index={}", self.index));
            params.push(format!("wait={}", format_wait(self.wait())));
        }
        if !params.is_empty() {
            url.push('?');
            url.push_str(&params.join("&"));
        }
        url
    }

    fn headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, DiscoveryError> {
        let mut headers = Vec::new();
        if let Some(token) = &self.config.token {
            let v = HeaderValue::from_str(token).map_err(|_| {
                DiscoveryError::BadAnswer("consul token is not a valid header value".into())
            })?;
            headers.push((HeaderName::from_static("x-consul-token"), v));
        }
        Ok(headers)
    }

    /// Request timeout: the wait, Consul's jitter of up to wait/16, and
    /// 5 s for the exchange itself.
    fn timeout(&self) -> Duration {
        let wait = self.wait();
        wait + wait / 16 + Duration::from_secs(5)
    }
}

impl Discovery for Consul {
    async fn next(&mut self) -> Result<Update, DiscoveryError> {
        if let Some(last) = self.last_request {
            tokio::time::sleep_until(last + MIN_REQUEST_GAP).await;
        }
        self.last_request = Some(Instant::now());
        let url = self.url();
        let res = match registry_get(&url, &self.headers()?, self.timeout()).await {
            Ok(res) => res,
            Err(e) => {
                // Start over with a non-blocking read: whatever happened
                // while the agent was unreachable, the answer is current.
                self.index = 0;
                return Err(e);
            }
        };
        if !res.status.is_success() {
            self.index = 0;
            let body = String::from_utf8_lossy(&res.body);
            let body: String = body.chars().take(200).collect();
            return Err(DiscoveryError::BadAnswer(format!(
                "{url} answered {}: {body}",
                res.status
            )));
        }
        let set = match parse_health(&res.body) {
            Ok(set) => set,
            Err(e) => {
                self.index = 0;
                return Err(DiscoveryError::BadAnswer(format!("{url}: {e}")));
            }
        };
        let index = res
            .headers
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        self.index = next_index(self.index, index);
        Ok(Update::Set(set))
    }
}

/// The index for the next request, given the one sent and the one
/// returned.
pub fn next_index(sent: u64, returned: u64) -> u64 {
    if returned < sent {
        // Went backwards: reset, and read without blocking.
        0
    } else {
        returned.max(1)
    }
}

/// `wait=` value: whole seconds when possible, else milliseconds (Consul
/// parses Go durations).
fn format_wait(wait: Duration) -> String {
    if wait.subsec_millis() == 0 {
        format!("{}s", wait.as_secs().max(1))
    } else {
        format!("{}ms", wait.as_millis())
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses a `/v1/health/service/<name>` answer into a set. Malformed
/// entries are skipped with a warning.
pub fn parse_health(body: &[u8]) -> Result<EndpointSet, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Array(list) = v else {
        return Err("expected a JSON array".into());
    };
    let mut set = EndpointSet::new();
    for (i, entry) in list.iter().enumerate() {
        match parse_instance(entry) {
            Ok(Some((addr, weight))) => set.insert(addr, weight, 0),
            Ok(None) => {}
            Err(why) => {
                let id = entry
                    .pointer("/Service/ID")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                tracing::warn!(index = i, id, %why, "consul: skipping malformed service entry");
            }
        }
    }
    Ok(set)
}

/// One instance: `Ok(None)` when its weight is 0.
fn parse_instance(entry: &Value) -> Result<Option<(SocketAddr, u32)>, String> {
    let service = entry.get("Service").ok_or("no `Service`")?;
    let address = match service.get("Address").and_then(Value::as_str) {
        Some(a) if !a.trim().is_empty() => a.trim(),
        _ => entry
            .pointer("/Node/Address")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .ok_or("neither `Service.Address` nor `Node.Address` is set")?,
    };
    let ip: IpAddr = address
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("`{address}` is not an IP address"))?;
    if ip.is_unspecified() {
        return Err(format!("`{address}` cannot be connected to"));
    }
    let port = service
        .get("Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or("`Service.Port` is missing or not a port")?;
    let warning = entry
        .get("Checks")
        .and_then(Value::as_array)
        .is_some_and(|checks| {
            let status = |s: &str| {
                checks
                    .iter()
                    .any(|c| c.get("Status").and_then(Value::as_str) == Some(s))
            };
            status("warning") && !status("critical")
        });
    let field = if warning { "Warning" } else { "Passing" };
    let weight = match service.get("Weights").and_then(|w| w.get(field)) {
        None | Some(Value::Null) => 1,
        Some(w) => w
            .as_u64()
            .ok_or_else(|| format!("`Weights.{field}` is not a whole number"))?
            .min(1_000_000) as u32,
    };
    if weight == 0 {
        return Ok(None);
    }
    Ok(Some((SocketAddr::new(ip, port), weight)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    fn config() -> ConsulConfig {
        ConsulConfig {
            address: "http://127.0.0.1:8500/".into(),
            service: "web api".into(),
            tags: vec!["v2".into(), "blue".into()],
            passing_only: true,
            datacenter: Some("dc1".into()),
            token: Some("secret".into()),
            wait: Duration::from_secs(30),
        }
    }

    /// Shaped like a recorded answer of Consul 1.x.
    const RECORDED: &str = r#"[
      {
        "Node": {"ID": "40e4a748-2192-161a-0510-9bf59fe950b5", "Node": "foobar",
                 "Address": "10.1.10.12", "Datacenter": "dc1",
                 "TaggedAddresses": {"lan": "10.1.10.12", "wan": "10.1.10.12"},
                 "Meta": {"instance_type": "t2.medium"}},
        "Service": {"ID": "redis", "Service": "redis", "Tags": ["primary"],
                    "Address": "10.1.10.12", "Meta": {"redis_version": "4.0"},
                    "Port": 8000, "Weights": {"Passing": 10, "Warning": 1},
                    "Namespace": "default"},
        "Checks": [
          {"Node": "foobar", "CheckID": "service:redis", "Name": "Service 'redis' check",
           "Status": "passing", "Notes": "", "Output": "", "ServiceID": "redis",
           "ServiceName": "redis", "ServiceTags": ["primary"], "Namespace": "default"},
          {"Node": "foobar", "CheckID": "serfHealth", "Name": "Serf Health Status",
           "Status": "passing", "ServiceID": "", "ServiceName": ""}
        ]
      },
      {
        "Node": {"Node": "n2", "Address": "10.1.10.13", "Datacenter": "dc1"},
        "Service": {"ID": "redis-2", "Service": "redis", "Tags": [], "Address": "",
                    "Port": 8001, "Weights": {"Passing": 1, "Warning": 1}},
        "Checks": []
      },
      {
        "Node": {"Node": "n3", "Address": "10.1.10.14"},
        "Service": {"ID": "redis-3", "Service": "redis", "Address": "10.1.10.14",
                    "Port": 8002, "Weights": {"Passing": 5, "Warning": 2}},
        "Checks": [{"Status": "warning"}]
      },
      {
        "Node": {"Node": "n4", "Address": "10.1.10.15"},
        "Service": {"ID": "redis-4", "Address": "10.1.10.15", "Port": 8003,
                    "Weights": {"Passing": 3, "Warning": 0}},
        "Checks": [{"Status": "warning"}]
      },
      {"Node": {"Node": "n5", "Address": "db.internal"},
       "Service": {"ID": "redis-5", "Address": "", "Port": 8004}},
      {"Node": {"Node": "n6", "Address": "10.1.10.16"},
       "Service": {"ID": "redis-6", "Address": "10.1.10.16", "Port": 0}},
      {"Node": {"Node": "n7"}},
      {"Node": {"Node": "n8", "Address": "fd00::8"},
       "Service": {"ID": "redis-8", "Port": 8005}},
      42
    ]"#;

    #[test]
    fn parses_a_recorded_answer() {
        let set = parse_health(RECORDED.as_bytes()).unwrap();
        let w = |a: &str| set.0.get(&a.parse().unwrap()).map(|e| e.weight);
        assert_eq!(set.len(), 4, "{set:?}");
        assert_eq!(w("10.1.10.12:8000"), Some(10));
        // Empty Service.Address: the node's address.
        assert_eq!(w("10.1.10.13:8001"), Some(1));
        // Warning instance: the warning weight; warning weight 0: left out.
        assert_eq!(w("10.1.10.14:8002"), Some(2));
        assert_eq!(w("10.1.10.15:8003"), None);
        assert_eq!(w("[fd00::8]:8005"), Some(1));
    }

    #[test]
    fn rejects_bodies_that_are_not_arrays() {
        assert!(parse_health(b"{}").is_err());
        assert!(parse_health(b"<html>").is_err());
        assert!(parse_health(b"[]").unwrap().is_empty());
    }

    #[test]
    fn url_carries_filters_index_and_wait() {
        let mut c = Consul::new(config());
        assert_eq!(
            c.url(),
            "http://127.0.0.1:8500/v1/health/service/web%20api?passing=1&tag=v2&tag=blue&dc=dc1"
        );
        c.index = 42;
        assert!(
            c.url().ends_with("&dc=dc1&index=42&wait=30s"),
            "{}",
            c.url()
        );
        c.config.wait = Duration::from_millis(1500);
        assert!(c.url().ends_with("&wait=1500ms"), "{}", c.url());
        assert_eq!(
            c.timeout(),
            Duration::from_micros(1_500_000 + 93_750 + 5_000_000)
        );
        c.config.tags.clear();
        c.config.passing_only = false;
        c.config.datacenter = None;
        assert!(c.url().ends_with("web%20api?index=42&wait=1500ms"));
        assert_eq!(c.headers().unwrap()[0].1, "secret");
    }

    #[test]
    fn max_stale_lowers_the_blocking_wait() {
        // max_stale 10s: blocking queries return at least every 3.333 s.
        let every = crate::discovery::contact_interval(Some(Duration::from_secs(10)));
        let mut c = Consul::new(config()).contact_every(every);
        c.index = 7;
        assert!(c.url().ends_with("&index=7&wait=3333ms"), "{}", c.url());
        assert!(c.timeout() < Duration::from_secs(9), "{:?}", c.timeout());
        // A shorter configured wait stays.
        c.config.wait = Duration::from_secs(2);
        assert!(c.url().ends_with("&wait=2s"), "{}", c.url());
    }

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, 10), 10);
        assert_eq!(next_index(10, 10), 10);
        assert_eq!(next_index(10, 12), 12);
        // Backwards: reset.
        assert_eq!(next_index(10, 3), 0);
        // Zero (or missing): treated as 1, so the next call still blocks.
        assert_eq!(next_index(0, 0), 1);
    }
}
