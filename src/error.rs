//! Errors of the request path, and the one place they become status codes.
//!
//! Every failure a client can see is a [`ProxyError`]; [`ProxyError::status`]
//! is the single mapping to an HTTP status (RFC 9110 §15): no route → 404,
//! no available endpoint or a pool at its request limit → 503, an
//! request head weir's HTTP/1 codec refuses → 400, 431, 501 or 505 (see
//! [`ProxyError::Head`]), an over-limit request → 413/414, a request head
//! or body that stalls → 408, an upstream that could not be reached or
//! broke the protocol → 502, an upstream that did not answer in time → 504.
//! Configuration errors live in [`crate::config::ConfigError`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

pub use crate::config::ConfigError;

/// A request that weir could not proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request is malformed in a way hyper lets through (missing Host).
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The HTTP/1 request head was refused by weir's codec
    /// ([`crate::http1::HeadError`]); the connection closes after the answer.
    #[error("bad request head: {0}")]
    Head(crate::http1::HeadError),
    /// The request head did not arrive within `timeouts.header_read` of its
    /// first byte.
    #[error("request head not received in time")]
    HeadTimeout,
    /// No route matches the host and path.
    #[error("no route for this host and path")]
    NoRoute,
    /// The request target is longer than `limits.max_uri_bytes`.
    #[error("request target too long")]
    UriTooLong,
    /// The client's request body was malformed, cut short, too large or
    /// too slow (see [`BodyFault`]).
    #[error("request body: {0}")]
    ClientBody(BodyFault),
    /// The pool's request limits (`pools[].limits`) had no free slot
    /// within `queue_timeout`.
    #[error("pool `{pool}` is at its request limit")]
    Overloaded {
        /// The pool's name.
        pool: Arc<str>,
    },
    /// The pool's circuit breaker (`pools[].circuit_breaker`) is at one
    /// of its thresholds: 503 at once, with `x-weir-overloaded: true`.
    #[error("pool `{pool}` is at its circuit breaker's {threshold}")]
    CircuitOpen {
        /// The pool's name.
        pool: Arc<str>,
        /// The threshold reached (its config key).
        threshold: &'static str,
    },
    /// The pool has no endpoint that may take traffic.
    #[error("no available endpoint in pool `{pool}`")]
    NoEndpoint {
        /// The pool's name.
        pool: Arc<str>,
    },
    /// TCP connect failed (refused, unreachable, reset).
    #[error("connect to {addr} failed: {error}")]
    Connect {
        /// The endpoint.
        addr: SocketAddr,
        /// The OS error (part of the message, not a `source`, so an error
        /// chain names it once).
        error: std::io::Error,
    },
    /// TCP connect did not finish in time.
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The configured connect timeout.
        timeout: Duration,
    },
    /// The upstream connection failed or spoke invalid HTTP before sending
    /// response headers.
    #[error("upstream {addr} failed: {error}")]
    Upstream {
        /// The endpoint.
        addr: SocketAddr,
        /// hyper's description (part of the message, not a `source`).
        error: hyper::Error,
    },
    /// The endpoint broke HTTP/1.1 before its response head was complete
    /// (a malformed or ambiguous head, a close): 502.
    #[error("upstream {addr} protocol error: {reason}")]
    UpstreamProtocol {
        /// The endpoint.
        addr: SocketAddr,
        /// What was wrong.
        reason: std::borrow::Cow<'static, str>,
    },
    /// A route middleware answered instead of the upstream (see
    /// [`Refusal`]).
    #[error("refused by middleware `{}`: {}", .0.middleware, .0.reason)]
    Refused(Box<Refusal>),
    /// No response headers within the pool's `response_header` timeout.
    #[error("upstream {addr} sent no response headers within {timeout:?}")]
    ResponseTimeout {
        /// The endpoint.
        addr: SocketAddr,
        /// The configured timeout.
        timeout: Duration,
    },
}

impl ProxyError {
    /// Reclassifies an upstream failure caused by the client's own request
    /// body (see [`ClientBodyError`]) as a client error.
    pub fn blame_client_body(self) -> ProxyError {
        if let ProxyError::Upstream { error, .. } = &self {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
            while let Some(e) = cause {
                if let Some(b) = e.downcast_ref::<ClientBodyError>() {
                    return ProxyError::ClientBody(b.fault());
                }
                cause = e.source();
            }
        }
        self
    }

    /// The status code the client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Head(e) => head_status(e),
            ProxyError::HeadTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::UriTooLong => StatusCode::URI_TOO_LONG,
            ProxyError::ClientBody(fault) => fault.status(),
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoEndpoint { .. }
            | ProxyError::Overloaded { .. }
            | ProxyError::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Refused(r) => r.status(),
            ProxyError::Connect { .. }
            | ProxyError::Upstream { .. }
            | ProxyError::UpstreamProtocol { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::ConnectTimeout { .. } | ProxyError::ResponseTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
        }
    }

    /// A short, stable name for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::Head(_) => "bad_head",
            ProxyError::HeadTimeout => "head_timeout",
            ProxyError::UriTooLong => "uri_too_long",
            ProxyError::ClientBody(BodyFault::Malformed(_)) => "client_body",
            ProxyError::ClientBody(BodyFault::TooLarge) => "body_too_large",
            ProxyError::ClientBody(BodyFault::Timeout) => "body_timeout",
            ProxyError::Overloaded { .. } => "overloaded",
            ProxyError::CircuitOpen { .. } => "circuit_open",
            ProxyError::NoRoute => "no_route",
            ProxyError::NoEndpoint { .. } => "no_endpoint",
            ProxyError::Connect { .. } => "connect_error",
            ProxyError::ConnectTimeout { .. } => "connect_timeout",
            ProxyError::Upstream { .. } => "upstream_error",
            ProxyError::UpstreamProtocol { .. } => "upstream_protocol_error",
            ProxyError::ResponseTimeout { .. } => "response_timeout",
            ProxyError::Refused(_) => "refused",
        }
    }

    /// The text sent to the client. It names the failure but not internal
    /// addresses; the log line carries the detail.
    pub fn client_message(&self) -> String {
        match self {
            ProxyError::BadRequest(why) => format!("bad request: {why}"),
            ProxyError::Head(e) => format!("bad request: {e}"),
            ProxyError::HeadTimeout => "request head not received in time".to_owned(),
            ProxyError::UriTooLong => "request target too long".to_owned(),
            ProxyError::ClientBody(BodyFault::Malformed(_)) => {
                "malformed or incomplete request body".to_owned()
            }
            ProxyError::ClientBody(BodyFault::TooLarge) => "request body too large".to_owned(),
            ProxyError::ClientBody(BodyFault::Timeout) => {
                "request body not received in time".to_owned()
            }
            ProxyError::Overloaded { pool } => format!("pool `{pool}` is at its request limit"),
            ProxyError::CircuitOpen { pool, .. } => format!("pool `{pool}` is overloaded"),
            ProxyError::NoRoute => "no route for this host and path".to_owned(),
            ProxyError::NoEndpoint { pool } => format!("no available endpoint in pool `{pool}`"),
            ProxyError::Connect { .. } => "upstream connect error".to_owned(),
            ProxyError::Upstream { .. } | ProxyError::UpstreamProtocol { .. } => {
                "upstream protocol error or reset".to_owned()
            }
            ProxyError::ConnectTimeout { .. } => "upstream connect timeout".to_owned(),
            ProxyError::ResponseTimeout { .. } => "upstream response timeout".to_owned(),
            ProxyError::Refused(r) => r.kind.client_message().to_owned(),
        }
    }
}

/// The status for a refused request head: a head over the size or field
/// limits → 431; a valid transfer coding weir does not decode (`gzip,
/// chunked`) → 501; a well-formed version other than 1.0/1.1 → 505; every
/// other malformation (framing ambiguity, bad Host, bad syntax) → 400.
fn head_status(e: &crate::http1::HeadError) -> StatusCode {
    use crate::http1::HeadError;
    match e {
        HeadError::HeadTooLarge | HeadError::TooManyHeaders => {
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        }
        HeadError::UnknownCoding => StatusCode::NOT_IMPLEMENTED,
        HeadError::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
        HeadError::Malformed(_)
        | HeadError::Host(_)
        | HeadError::ContentLength(_)
        | HeadError::TransferEncoding(_) => StatusCode::BAD_REQUEST,
    }
}

/// A middleware's answer in place of the upstream's: who answered, why
/// (a metric label), and what the client gets. The status follows from
/// [`RefusalKind`], here, like every other status weir decides.
#[derive(Debug)]
pub struct Refusal {
    /// The middleware's name (`middleware` label, access-log field).
    pub middleware: Arc<str>,
    /// What kind of answer it is; decides the status.
    pub kind: RefusalKind,
    /// Why, as a short stable word (`reason` label): `missing_token`,
    /// `expired`, `over_limit`, `denied`, ...
    pub reason: &'static str,
    /// Fields of the answer (`WWW-Authenticate`, `Retry-After`,
    /// `Location`, ...), besides those every weir answer has.
    pub headers: http::HeaderMap,
    /// The body; empty means weir's short text for the status (none for
    /// a redirect).
    pub body: bytes::Bytes,
}

/// The kinds of middleware answers, each with its status (RFC 9110 §15,
/// RFC 6585 §4 for 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// No credentials, or credentials that do not verify: 401.
    Unauthenticated,
    /// Valid credentials without the right (a required claim), or a
    /// client address that is not allowed: 403.
    Forbidden,
    /// Over a rate limit: 429.
    RateLimited,
    /// The service that decides (an auth service, a key set) could not
    /// be asked: 503. The request is never let through unchecked.
    Unavailable,
    /// A redirect (301, 302, 307, 308).
    Redirect(StatusCode),
    /// An auth service's own refusal, passed on as it answered (so a
    /// redirect to a login page reaches the browser).
    Answer(StatusCode),
}

impl Refusal {
    /// A refusal with no fields or body of its own.
    pub fn new(middleware: &Arc<str>, kind: RefusalKind, reason: &'static str) -> Refusal {
        Refusal {
            middleware: Arc::clone(middleware),
            kind,
            reason,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
        }
    }

    /// The status the client receives.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            RefusalKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            RefusalKind::Forbidden => StatusCode::FORBIDDEN,
            RefusalKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            RefusalKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            RefusalKind::Redirect(s) | RefusalKind::Answer(s) => s,
        }
    }
}

impl RefusalKind {
    /// weir's text for an answer without a body of its own.
    pub fn client_message(self) -> &'static str {
        match self {
            RefusalKind::Unauthenticated => "authentication required",
            RefusalKind::Forbidden => "forbidden",
            RefusalKind::RateLimited => "too many requests",
            RefusalKind::Unavailable => "the service that authorizes this request is unavailable",
            RefusalKind::Redirect(_) => "redirect",
            RefusalKind::Answer(_) => "refused",
        }
    }
}

/// What was wrong with a client's request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyFault {
    /// Malformed framing or cut short (hyper's description): 400.
    Malformed(String),
    /// Over `limits.max_body_bytes`, declared or streamed: 413.
    TooLarge,
    /// No bytes for `timeouts.body_read`: 408.
    Timeout,
}

impl BodyFault {
    /// The status code the client receives.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyFault::Malformed(_) => StatusCode::BAD_REQUEST,
            BodyFault::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyFault::Timeout => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

impl std::fmt::Display for BodyFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyFault::Malformed(why) => write!(f, "malformed or incomplete: {why}"),
            BodyFault::TooLarge => f.write_str("too large"),
            BodyFault::Timeout => f.write_str("not received in time"),
        }
    }
}

/// Why reading the client's request body failed. Carried through hyper's
/// upstream send error so the proxy can tell a client fault (4xx, not
/// counted against the endpoint) from an upstream failure (502).
#[derive(Debug)]
pub enum ClientBodyError {
    /// hyper reported an HTTP/2 body malformed or cut short.
    Read(hyper::Error),
    /// The HTTP/1 body's framing was malformed (chunk syntax, trailers).
    Framing(crate::http1::FramingError),
    /// The client closed the connection (or it failed) before the body's
    /// end.
    Closed,
    /// More than `limits.max_body_bytes` arrived.
    TooLarge(u64),
    /// No body bytes for `timeouts.body_read`.
    Timeout(Duration),
}

impl ClientBodyError {
    /// The fault to report to the client.
    pub fn fault(&self) -> BodyFault {
        match self {
            ClientBodyError::Read(e) => BodyFault::Malformed(e.to_string()),
            ClientBodyError::Framing(e) => BodyFault::Malformed(e.to_string()),
            ClientBodyError::Closed => BodyFault::Malformed("connection closed".to_owned()),
            ClientBodyError::TooLarge(_) => BodyFault::TooLarge,
            ClientBodyError::Timeout(_) => BodyFault::Timeout,
        }
    }
}

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientBodyError::Read(e) => write!(f, "client request body: {e}"),
            ClientBodyError::Framing(e) => write!(f, "client request body framing: {e}"),
            ClientBodyError::Closed => f.write_str("client closed the connection mid-body"),
            ClientBodyError::TooLarge(max) => {
                write!(f, "client request body larger than {max} bytes")
            }
            ClientBodyError::Timeout(d) => write!(f, "client request body stalled for {d:?}"),
        }
    }
}

/// No `source`: the read error is part of the message, so an error chain
/// names it once.
impl std::error::Error for ClientBodyError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::HeadError;

    fn addr() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    #[test]
    fn each_error_maps_to_its_rfc9110_status() {
        let refused = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases = [
            (ProxyError::BadRequest("x"), 400),
            (ProxyError::Head(HeadError::Malformed("x")), 400),
            (ProxyError::Head(HeadError::Host("x")), 400),
            (ProxyError::Head(HeadError::ContentLength("x")), 400),
            (ProxyError::Head(HeadError::TransferEncoding("x")), 400),
            (ProxyError::Head(HeadError::HeadTooLarge), 431),
            (ProxyError::Head(HeadError::TooManyHeaders), 431),
            (ProxyError::Head(HeadError::UnknownCoding), 501),
            (ProxyError::Head(HeadError::Version), 505),
            (ProxyError::HeadTimeout, 408),
            (
                ProxyError::ClientBody(BodyFault::Malformed("x".into())),
                400,
            ),
            (ProxyError::ClientBody(BodyFault::TooLarge), 413),
            (ProxyError::ClientBody(BodyFault::Timeout), 408),
            (ProxyError::UriTooLong, 414),
            (ProxyError::Overloaded { pool: "p".into() }, 503),
            (
                ProxyError::CircuitOpen {
                    pool: "p".into(),
                    threshold: "max_requests",
                },
                503,
            ),
            (ProxyError::NoRoute, 404),
            (ProxyError::NoEndpoint { pool: "p".into() }, 503),
            (
                ProxyError::Connect {
                    addr: addr(),
                    error: refused(),
                },
                502,
            ),
            (
                ProxyError::ConnectTimeout {
                    addr: addr(),
                    timeout: Duration::from_secs(1),
                },
                504,
            ),
            (
                ProxyError::ResponseTimeout {
                    addr: addr(),
                    timeout: Duration::from_secs(1),
                },
                504,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(err.status().as_u16(), code, "{err}");
        }
    }

    #[test]
    fn each_refusal_maps_to_its_status() {
        let name: Arc<str> = "mw".into();
        let cases = [
            (RefusalKind::Unauthenticated, 401),
            (RefusalKind::Forbidden, 403),
            (RefusalKind::RateLimited, 429),
            (RefusalKind::Unavailable, 503),
            (RefusalKind::Redirect(StatusCode::PERMANENT_REDIRECT), 308),
            (RefusalKind::Answer(StatusCode::FOUND), 302),
        ];
        for (kind, code) in cases {
            let err = ProxyError::Refused(Box::new(Refusal::new(&name, kind, "why")));
            assert_eq!(err.status().as_u16(), code, "{kind:?}");
            assert_eq!(err.kind(), "refused");
        }
    }

    #[test]
    fn client_message_hides_endpoint_addresses() {
        let err = ProxyError::Connect {
            addr: addr(),
            error: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        assert!(!err.client_message().contains("127.0.0.1"));
        assert!(err.to_string().contains("127.0.0.1:9"));
    }
}
