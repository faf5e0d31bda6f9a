//! The host a request is for: where it is read from, what a valid one
//! looks like, and the name routing matches.
//!
//! - **Where.** The URI authority (HTTP/2 `:authority`, or an HTTP/1.1
//!   absolute-form target, which RFC 9112 §3.2.2 says wins over `Host`),
//!   else the `Host` header. HTTP/1.1 without either is a 400 (RFC 9112
//!   §3.2). The proxy forwards the host it routed by: a `Host` header that
//!   disagrees with the authority is replaced, never passed on.
//! - **Valid.** `uri-host [":" port]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a
//!   reg-name (letters, digits, `-._~`, sub-delims, `%XX`), which includes
//!   IPv4 addresses, or a bracketed IPv6 address; a port is digits only.
//!   Userinfo (`user@host`, RFC 9110 §4.2.4), an empty host with a port,
//!   IPv6 zones and `IPvFuture` literals are rejected. A `Host` header is
//!   checked even when the authority wins, and more than one is a 400
//!   (RFC 9112 §3.2). An empty `Host` (allowed when the target has no
//!   authority) matches only routes without hosts.
//! - **Matched.** [`crate::routing::normalize_host`]: no port, no trailing
//!   dot, lower case; IPv6 without brackets.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Uri, Version};

use crate::error::ProxyError;
use crate::routing::normalize_host;
use crate::upstream::headers::RequestFields;

/// The host as the client sent it, already validated. Both forms share the
/// bytes the server already parsed (a reference-count increment, no copy).
#[derive(Clone, Debug)]
pub(super) enum RawHost {
    /// From the request target's authority.
    Authority(Authority),
    /// From the `Host` header (visible ASCII, valid host syntax).
    Header(HeaderValue),
    /// No host (HTTP/1.0 or HTTP/2 without one).
    None,
}

/// The host of a request with this target, fields and version.
pub(super) fn request_host(
    uri: &Uri,
    fields: RequestFields<'_>,
    version: Version,
) -> Result<RawHost, ProxyError> {
    let mut hosts = fields.get_all(&header::HOST);
    let header = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(ProxyError::BadRequest("several Host headers")),
        (Some(v), None) => match std::str::from_utf8(v) {
            Ok(s) if s.is_empty() || valid_host(s) => true,
            _ => return Err(ProxyError::BadRequest("invalid Host header")),
        },
        (None, _) => false,
    };
    if let Some(a) = uri.authority() {
        if !valid_host(a.as_str()) {
            return Err(ProxyError::BadRequest("invalid host in request target"));
        }
        return Ok(RawHost::Authority(a.clone()));
    }
    match host_value(fields).filter(|_| header) {
        Some(v) => Ok(RawHost::Header(v)),
        None if version == Version::HTTP_11 => Err(ProxyError::BadRequest("missing Host header")),
        None => Ok(RawHost::None),
    }
}

/// The one `Host` value, sharing the bytes it arrived in.
fn host_value(fields: RequestFields<'_>) -> Option<HeaderValue> {
    if let Some(v) = fields.map.get(header::HOST) {
        return Some(v.clone());
    }
    let bytes = fields.raw?.get_shared(header::HOST.as_str())?;
    HeaderValue::from_maybe_shared(bytes).ok()
}

impl RawHost {
    /// The host as a header value (for `X-Forwarded-Host`, and `Host` when
    /// it came from the authority); `None` when empty.
    pub(super) fn to_value(&self) -> Option<HeaderValue> {
        match self {
            RawHost::Authority(a) => HeaderValue::from_str(a.as_str()).ok(),
            RawHost::Header(v) => Some(v.clone()).filter(|v| !v.is_empty()),
            RawHost::None => None,
        }
    }

    /// The host as sent ("" for none).
    pub(super) fn as_str(&self) -> &str {
        match self {
            RawHost::Authority(a) => a.as_str(),
            RawHost::Header(v) => v.to_str().unwrap_or(""),
            RawHost::None => "",
        }
    }

    /// Whether the host came from the request target rather than `Host`.
    pub(super) fn is_authority(&self) -> bool {
        matches!(self, RawHost::Authority(_))
    }

    /// The name routes are matched against ("" for none).
    pub(super) fn routing_name(&self) -> Cow<'_, str> {
        normalize_host(self.as_str()).unwrap_or_default()
    }
}

/// Whether `raw` is `uri-host [":" port]` with a non-empty host.
fn valid_host(raw: &str) -> bool {
    let (host_ok, port) = match raw.strip_prefix('[') {
        Some(rest) => {
            let Some((ip, after)) = rest.split_once(']') else {
                return false;
            };
            let port = match after {
                "" => "",
                _ => match after.strip_prefix(':') {
                    Some(p) => p,
                    None => return false,
                },
            };
            (ip.parse::<std::net::Ipv6Addr>().is_ok(), port)
        }
        None => {
            // A reg-name has no `:`, so the first one starts the port.
            let (name, port) = raw.split_once(':').unwrap_or((raw, ""));
            (!name.is_empty() && valid_reg_name(name), port)
        }
    };
    host_ok && port.bytes().all(|b| b.is_ascii_digit())
}

/// RFC 3986 `reg-name`: unreserved, sub-delims and percent-encoded octets
/// (the codec's check, so both sides agree on what a host name is).
fn valid_reg_name(name: &str) -> bool {
    crate::http1::is_reg_name(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn from_header(host: &[u8]) -> Result<RawHost, ProxyError> {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_bytes(host).unwrap());
        request_host(
            &Uri::from_static("/"),
            RequestFields::of(&h),
            Version::HTTP_11,
        )
    }

    #[test]
    fn valid_hosts_are_routed_by_their_normalised_name() {
        let cases: &[(&str, &str)] = &[
            ("example.com", "example.com"),
            ("Example.COM", "example.com"),
            ("example.com:8080", "example.com"),
            ("Api.Example.COM:8080", "api.example.com"),
            ("example.com.", "example.com"),
            ("EXAMPLE.com.:443", "example.com"),
            // `port = *DIGIT`: an empty port is allowed.
            ("example.com:", "example.com"),
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("[::1]", "::1"),
            ("[::1]:8080", "::1"),
            ("[2001:DB8::1]:80", "2001:db8::1"),
            ("[::ffff:192.0.2.1]", "::ffff:192.0.2.1"),
            ("under_score.test", "under_score.test"),
            ("pct%41.test", "pct%41.test"),
            ("localhost", "localhost"),
        ];
        for (raw, name) in cases {
            let host = from_header(raw.as_bytes()).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(host.as_str(), *raw, "sent as is");
            assert_eq!(host.routing_name(), *name, "{raw}");
            assert_eq!(host.to_value().unwrap(), *raw, "{raw}");
            assert!(!host.is_authority());
        }
    }

    #[test]
    fn invalid_hosts_are_a_400() {
        let cases: &[&[u8]] = &[
            b"exa mple.com",
            b"example.com\tx",
            b"example.com:80a",
            b"example.com:-1",
            b"example.com:80:80",
            b"user@example.com",
            b"user:pw@example.com",
            b"example.com/path",
            b"example.com?q",
            b"example.com#f",
            b"a.test,b.test c",
            b"exa%zzmple.com",
            b"exa%4",
            b"::1",
            b"[::1",
            b"[::1]x",
            b"[::1]:8x",
            b"[zz::1]",
            b"[127.0.0.1]",
            b"[fe80::1%25eth0]",
            b"[v1.future]",
            b"[]",
            b":80",
            b"caf\xc3\xa9.test",
            b"\"quoted\"",
            b"back\\slash",
        ];
        for raw in cases {
            let err = from_header(raw).expect_err(&String::from_utf8_lossy(raw));
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn empty_host_header_matches_only_routes_without_hosts() {
        let host = from_header(b"").unwrap();
        assert_eq!(host.as_str(), "");
        assert_eq!(host.routing_name(), "");
        assert!(host.to_value().is_none(), "no empty X-Forwarded-Host");
    }

    #[test]
    fn the_authority_wins_over_a_disagreeing_host_header() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("b.test"));
        let uri = Uri::from_static("http://A.test:8080/x");
        for version in [Version::HTTP_11, Version::HTTP_2] {
            let host = request_host(&uri, RequestFields::of(&h), version).unwrap();
            assert!(host.is_authority());
            assert_eq!(host.as_str(), "A.test:8080");
            assert_eq!(host.routing_name(), "a.test");
            assert_eq!(host.to_value().unwrap(), "A.test:8080");
        }
        // Without a Host header the authority is enough, on any version.
        let host =
            request_host(&uri, RequestFields::of(&HeaderMap::new()), Version::HTTP_11).unwrap();
        assert_eq!(host.routing_name(), "a.test");
    }

    #[test]
    fn host_headers_are_checked_even_when_the_authority_wins() {
        let uri = Uri::from_static("http://a.test/");
        let mut two = HeaderMap::new();
        two.append(header::HOST, HeaderValue::from_static("a.test"));
        two.append(header::HOST, HeaderValue::from_static("b.test"));
        assert!(request_host(&uri, RequestFields::of(&two), Version::HTTP_11).is_err());
        let mut bad = HeaderMap::new();
        bad.insert(header::HOST, HeaderValue::from_static("b.test/x"));
        assert!(request_host(&uri, RequestFields::of(&bad), Version::HTTP_2).is_err());
    }

    #[test]
    fn userinfo_in_the_request_target_is_a_400() {
        let uri: Uri = "http://user@a.test/".parse().unwrap();
        let err =
            request_host(&uri, RequestFields::of(&HeaderMap::new()), Version::HTTP_11).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_missing_host_is_a_400_only_on_http11() {
        let uri = Uri::from_static("/");
        let none = HeaderMap::new();
        let err = request_host(&uri, RequestFields::of(&none), Version::HTTP_11).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        for version in [Version::HTTP_10, Version::HTTP_2] {
            let host = request_host(&uri, RequestFields::of(&none), version).unwrap();
            assert!(matches!(host, RawHost::None));
            assert_eq!(host.routing_name(), "");
            assert!(host.to_value().is_none());
        }
    }
}
