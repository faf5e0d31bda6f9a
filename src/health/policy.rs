//! Active-check policy (`health.active`): what a probe does and how its
//! results count. The probe task itself, the IO, is `crate::probe`.

use std::net::SocketAddr;
use std::time::Duration;

use http::Method;

use super::HealthCell;

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeKind {
    /// Send one HTTP/1.1 request on a fresh connection; pass if the
    /// response status is in `expected`.
    Http {
        /// Request method. Default GET.
        method: Method,
        /// Request path (origin form, may carry a query). Default `/`.
        path: String,
        /// `Host` header; `None` sends the endpoint's `ip:port`.
        host: Option<String>,
        /// Inclusive status ranges that pass. Default `[(200, 399)]`.
        expected: Vec<(u16, u16)>,
    },
    /// Pass if a TCP connection can be established.
    Tcp,
}

impl ProbeKind {
    /// An HTTP probe of `path` with the defaults: GET, endpoint address as
    /// `Host`, 200-399 pass.
    pub fn http(path: impl Into<String>) -> Self {
        ProbeKind::Http {
            method: Method::GET,
            path: path.into(),
            host: None,
            expected: vec![(200, 399)],
        }
    }
}

impl Default for ProbeKind {
    /// `GET /`, 200-399.
    fn default() -> Self {
        Self::http("/")
    }
}

/// Parses an expected-status entry: `"200"` or `"200-399"` (inclusive).
/// `None` for anything else, including reversed ranges and codes outside
/// 100..=999.
pub fn parse_status_range(s: &str) -> Option<(u16, u16)> {
    let code = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=999).contains(c))
    };
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (code(lo)?, code(hi)?),
        None => {
            let c = code(s)?;
            (c, c)
        }
    };
    (lo <= hi).then_some((lo, hi))
}

/// Active-check settings of a pool (`health.active`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActivePolicy {
    /// HTTP or TCP. Default `GET /` expecting 200-399.
    pub kind: ProbeKind,
    /// Time between probe rounds. Default 5s.
    pub interval: Duration,
    /// Bound on one probe, connect included. Default 2s.
    pub timeout: Duration,
    /// Each probe of a round waits a random delay in `[0, jitter]` first,
    /// so probes of many endpoints (and of many weir instances) spread
    /// out. Default 0. Capped at `interval`.
    pub jitter: Duration,
    /// Passing probes in a row that make an unhealthy endpoint healthy
    /// (rise). Default 2.
    pub healthy_threshold: u32,
    /// Failing probes in a row that make a healthy endpoint unhealthy
    /// (fall). Default 3.
    pub unhealthy_threshold: u32,
    /// How often the endpoint list is checked for new endpoints between
    /// rounds. Default 1s (capped at `interval`). Not a config-file key.
    pub discovery_poll: Duration,
    /// The pool's upstream TLS settings: probes then run the same TLS
    /// handshake (verification included) as request connections, and a
    /// TCP probe passes only if the handshake does. Set from the pool's
    /// `tls:`, not a key of its own.
    pub tls: Option<crate::tls::upstream::UpstreamTls>,
}

impl Default for ActivePolicy {
    fn default() -> Self {
        ActivePolicy {
            kind: ProbeKind::default(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            jitter: Duration::ZERO,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            discovery_poll: Duration::from_secs(1),
            tls: None,
        }
    }
}

/// An endpoint the probe task can check.
pub trait Probed: Send + Sync + 'static {
    /// The endpoint's address, its identity.
    fn addr(&self) -> SocketAddr;
    /// Where the verdict goes.
    fn health(&self) -> &HealthCell;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_range_parsing() {
        assert_eq!(parse_status_range("200-399"), Some((200, 399)));
        assert_eq!(parse_status_range(" 404 "), Some((404, 404)));
        assert_eq!(parse_status_range("204 - 204"), Some((204, 204)));
        assert_eq!(parse_status_range("399-200"), None);
        assert_eq!(parse_status_range("99"), None);
        assert_eq!(parse_status_range("1000"), None);
        assert_eq!(parse_status_range("2xx"), None);
        assert_eq!(parse_status_range(""), None);
    }
}
