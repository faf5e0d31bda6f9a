//! `forward_auth:` middleware config: every request is first asked of an
//! auth service (Authelia, authentik, oauth2-proxy, ...), the way Traefik's
//! `forwardAuth`, Caddy's `forward_auth` and nginx's `auth_request` do.
//!
//! ```yaml
//! forward_auth:
//!   address: "http://authelia:9091/api/authz/forward-auth"
//!   timeout: 5s                  # default 5s: connect + answer + body
//!   request_headers: [Cookie, Authorization]   # default: all client fields
//!   response_headers: [Remote-User, Remote-Groups, Remote-Email]
//!   max_response_bytes: 65536    # default 64 KiB: a denial's body
//! ```
//!
//! The sub-request is a `GET` of `address` without a body. It carries
//! `X-Forwarded-Method`, `X-Forwarded-Proto`, `X-Forwarded-Host`,
//! `X-Forwarded-Uri` and `X-Forwarded-For` (Traefik's convention, which
//! Authelia, authentik and oauth2-proxy read) and `X-Original-URL` (the
//! full URL, nginx's convention, which Authelia's legacy endpoint reads).
//! weir always sets these itself: a client's own copies of them (and of
//! `Forwarded`, `X-Real-IP`, `X-Original-Method`) are never passed on, as
//! a spoofed `X-Forwarded-Uri` could make the service judge another URL.
//!
//! `request_headers` lists the client fields copied to the sub-request.
//! Absent, every client field is copied (except connection-specific and
//! framing fields and `Host`), as Traefik and nginx do: auth services read
//! `Cookie`, `Authorization`, `Accept` (Authelia answers a browser with a
//! redirect and an API client with a 401) and `User-Agent`, and a narrower
//! default would break them quietly. A list narrows it.
//!
//! A 2xx answer lets the request on, with the `response_headers` fields
//! of the answer copied into the upstream request; the client's own
//! fields of those names are removed first, on every request, so the
//! upstream can trust them. Any other answer goes back to the client as the
//! service sent it (status, fields other than connection-specific and
//! framing ones, body up to `max_response_bytes`), so a redirect to a login
//! page works. A timeout, a refused connection, a broken answer or a body
//! over `max_response_bytes` is a 503: the request is never let through
//! unchecked.
//!
//! `address` may be `http://` (an auth service beside the proxy: a
//! sidecar, a cluster-local service) or `https://`. Over HTTPS the
//! service's certificate is verified against the public web roots, or
//! against `ca` (a PEM bundle, read at load and watched like a
//! certificate) for a private CA, as `pools[].tls.ca` does for endpoints;
//! the certificate must name the address's host.

use std::time::Duration;

use http::{HeaderName, Uri};
use serde::Deserialize;

use crate::config::duration::ConfigDuration;
use crate::config::error::ConfigError;
use crate::config::validate::Validator;

/// The whole exchange with the auth service when `timeout` is absent
/// (Traefik has none by default; nginx's `proxy_read_timeout` is 60s; 5s
/// keeps a stuck service from holding every request for a minute).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest denial body passed on when `max_response_bytes` is absent.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The largest `max_response_bytes`: the body is held in memory.
const MAX_RESPONSE_BYTES: i64 = 16 * 1024 * 1024;

/// `forward_auth:` as written.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `address` and optionally `timeout`, `request_headers`, \
                 `response_headers`, `max_response_bytes`"
)]
pub struct RawForwardAuth {
    /// The auth service's URL.
    pub address: Option<String>,
    /// The whole exchange's limit.
    pub timeout: Option<ConfigDuration>,
    /// Client fields copied to the sub-request (absent: all).
    pub request_headers: Option<Vec<String>>,
    /// Fields of a 2xx answer copied into the upstream request.
    pub response_headers: Option<Vec<String>>,
    /// The largest answer body read.
    pub max_response_bytes: Option<i64>,
    /// CA bundle for an `https://` address (instead of the public roots).
    pub ca: Option<String>,
}

/// The validated `forward_auth:` middleware.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardAuthConfig {
    /// The auth service's URL (`http://`).
    pub address: Uri,
    /// The whole exchange's limit.
    pub timeout: Duration,
    /// Client fields copied to the sub-request; `None`: all of them.
    pub request_headers: Option<Vec<HeaderName>>,
    /// Fields of a 2xx answer copied into the upstream request.
    pub response_headers: Vec<HeaderName>,
    /// The largest answer body read.
    pub max_response_bytes: usize,
    /// The CA bundle an `https://` service's certificate is checked
    /// against; `None`: the public web roots.
    pub ca: Option<super::CaFile>,
}

pub(in crate::config) fn validate(
    v: &Validator<'_>,
    key: &str,
    raw: RawForwardAuth,
) -> Result<ForwardAuthConfig, ConfigError> {
    let Some(address) = raw.address else {
        return Err(v.err(
            key,
            "`address` is required, e.g. `address: \"http://authelia:9091/api/authz/forward-auth\"`",
        ));
    };
    let address = self::address(v, &format!("{key}.address"), &address)?;
    let names = |what: &str, list: Vec<String>| {
        list.iter()
            .enumerate()
            .map(|(i, n)| super::headers::field_name(v, &format!("{key}.{what}[{i}]"), n))
            .collect::<Result<Vec<_>, _>>()
    };
    let request_headers = match raw.request_headers {
        Some(list) => Some(names("request_headers", list)?),
        None => None,
    };
    let response_headers = names("response_headers", raw.response_headers.unwrap_or_default())?;
    let max_response_bytes = match raw.max_response_bytes {
        None => DEFAULT_MAX_RESPONSE_BYTES,
        Some(n) if (1..=MAX_RESPONSE_BYTES).contains(&n) => usize::try_from(n).unwrap_or(1),
        Some(_) => {
            return Err(v.err(
                format!("{key}.max_response_bytes"),
                format!(
                    "must be between 1 and {MAX_RESPONSE_BYTES} (a denial with a longer body \
                     is a 503), e.g. 65536"
                ),
            ))
        }
    };
    let ca = match raw.ca {
        None => None,
        Some(ca) => Some(ca_file(v, &format!("{key}.ca"), &address, &ca)?),
    };
    Ok(ForwardAuthConfig {
        ca,
        address,
        timeout: v.nonzero(&format!("{key}.timeout"), raw.timeout, DEFAULT_TIMEOUT)?,
        request_headers,
        response_headers,
        max_response_bytes,
    })
}

fn address(v: &Validator<'_>, key: &str, s: &str) -> Result<Uri, ConfigError> {
    let example = "e.g. `http://authelia:9091/api/authz/forward-auth`";
    let uri: Uri = s
        .trim()
        .parse()
        .map_err(|_| v.err(key, format!("`{s}` is not a URL; {example}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(v.err(
                key,
                format!("`{s}` must start with `http://` or `https://`; {example}"),
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(v.err(key, format!("`{s}` has no host; {example}")));
    }
    Ok(uri)
}

/// `ca:`, read and checked now (it goes with an `https://` address).
fn ca_file(
    v: &Validator<'_>,
    key: &str,
    address: &Uri,
    ca: &str,
) -> Result<super::CaFile, ConfigError> {
    if address.scheme_str() != Some("https") {
        return Err(v.err(
            key,
            "`ca` is for an `https://` address; remove it or use https",
        ));
    }
    super::ca_file(v, key, ca)
}
