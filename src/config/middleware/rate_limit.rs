//! `rate_limit:` middleware config: a token bucket per client (or per
//! header value, or per route), refilled at `average` requests per
//! `period` and holding at most `burst`.
//!
//! ```yaml
//! rate_limit:
//!   average: 100          # requests per period, sustained (required, >= 1)
//!   period: 1s            # default 1s
//!   burst: 50             # requests admitted at once; default = average
//!   key: client_ip        # client_ip (default) | route | {header: X-Api-Key}
//!   max_keys: 10000       # buckets kept; least recently seen evicted
//! ```
//!
//! The semantics are Traefik's `rateLimit` (`average`, `period`, `burst`)
//! and nginx's `limit_req rate=... burst=... nodelay`: a full bucket
//! admits `burst` requests at once, then one request every
//! `period / average`; a request over the limit is answered 429 at once
//! (never queued). `key` says whose bucket a request draws from:
//! `client_ip` (the address the top-level `trusted_proxies` rule gives),
//! `route` (one bucket for all of a route's requests), or `{header: Name}`
//! (the first value of that request field; requests without it share one
//! bucket, so leaving the field out cannot escape the limit).
//! Buckets belong to a route: a middleware listed by two routes limits
//! each on its own, as a Traefik middleware does on each router.
//!
//! `max_keys` bounds memory: at most that many buckets are kept (about
//! 100 bytes each, so the default 10000 is about 1 MB), and the least
//! recently seen ones make room for new keys, so a flood of spoofed keys
//! costs a bounded amount of memory. An evicted key starts again with a
//! full bucket; size `max_keys` above the number of clients active within
//! one refill of a bucket.

use http::HeaderName;
use serde::Deserialize;

use crate::config::duration::ConfigDuration;
use crate::config::error::ConfigError;
use crate::config::validate::Validator;

/// `period` when not written.
pub const DEFAULT_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);
/// `max_keys` when not written.
pub const DEFAULT_MAX_KEYS: usize = 10_000;

/// `rate_limit:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `average` and optionally `period`, `burst`, `key`, `max_keys`"
)]
pub struct RawRateLimit {
    /// Requests per period.
    pub average: Option<u32>,
    /// The period `average` is counted over.
    pub period: Option<ConfigDuration>,
    /// Requests admitted at once.
    pub burst: Option<u32>,
    /// Whose bucket a request draws from.
    pub key: Option<RawKey>,
    /// Most buckets kept.
    pub max_keys: Option<usize>,
}

/// `key:` as written: a word or `{header: Name}`.
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "`client_ip`, `route` or `{header: X-Api-Key}`")]
pub enum RawKey {
    /// `client_ip` or `route`.
    Word(String),
    /// `{header: Name}`.
    Header(RawHeaderKey),
}

/// `key: {header: Name}` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderKey {
    /// The request field whose value is the key.
    pub header: String,
}

/// The validated `rate_limit:` middleware.
#[derive(Clone, Debug, PartialEq)]
pub struct RateLimitConfig {
    /// Requests per `period`, sustained (>= 1).
    pub average: u32,
    /// The period `average` is counted over (> 0).
    pub period: std::time::Duration,
    /// Requests a full bucket admits at once (>= 1).
    pub burst: u32,
    /// Whose bucket a request draws from.
    pub key: RateKey,
    /// Most buckets kept (>= 1).
    pub max_keys: usize,
}

/// Whose bucket a request draws from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateKey {
    /// The client's address (by the `trusted_proxies` rule).
    ClientIp,
    /// One bucket per route.
    Route,
    /// The first value of this request field; absent: one shared bucket.
    Header(HeaderName),
}

pub(in crate::config) fn validate(
    v: &Validator<'_>,
    key: &str,
    raw: RawRateLimit,
) -> Result<RateLimitConfig, ConfigError> {
    let average = match raw.average {
        None => {
            return Err(v.err(
                key,
                "`average` is required: requests per period, e.g. `average: 100`",
            ))
        }
        Some(0) => {
            return Err(v.err(
                format!("{key}.average"),
                "must be at least 1 (to refuse every request, use `ip_filter`)",
            ))
        }
        Some(n) => n,
    };
    let period = v.nonzero(&format!("{key}.period"), raw.period, DEFAULT_PERIOD)?;
    let burst = raw.burst.unwrap_or(average);
    if burst == 0 {
        return Err(v.err(
            format!("{key}.burst"),
            "must be at least 1 (the requests a full bucket admits at once); \
             leave it out for `burst = average`",
        ));
    }
    let max_keys = raw.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
    if max_keys == 0 {
        return Err(v.err(
            format!("{key}.max_keys"),
            format!("must be at least 1 (default {DEFAULT_MAX_KEYS})"),
        ));
    }
    let rate_key = match raw.key {
        None => RateKey::ClientIp,
        Some(k) => rate_key(v, &format!("{key}.key"), k)?,
    };
    Ok(RateLimitConfig {
        average,
        period,
        burst,
        key: rate_key,
        max_keys,
    })
}

fn rate_key(v: &Validator<'_>, key: &str, raw: RawKey) -> Result<RateKey, ConfigError> {
    match raw {
        RawKey::Word(w) => match w.as_str() {
            "client_ip" => Ok(RateKey::ClientIp),
            "route" => Ok(RateKey::Route),
            other => Err(v.err(
                key,
                format!(
                    "unknown key `{other}`; write `client_ip`, `route` \
                     or `{{header: X-Api-Key}}`"
                ),
            )),
        },
        RawKey::Header(h) => HeaderName::from_bytes(h.header.trim().as_bytes())
            .map(RateKey::Header)
            .map_err(|_| {
                v.err(
                    format!("{key}.header"),
                    format!(
                        "`{}` is not a field name (letters, digits and `-`, e.g. `X-Api-Key`)",
                        h.header
                    ),
                )
            }),
    }
}
