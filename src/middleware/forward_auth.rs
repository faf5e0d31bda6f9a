//! `forward_auth`: asks an auth service about every request before it is
//! forwarded (see `crate::config::middleware::forward_auth` for the keys,
//! the sub-request's fields and the defaults).
//!
//! Outcomes and their `reason` labels: a 2xx answer lets the request on;
//! any other answer is passed back to the client as a `denied` refusal
//! ([`RefusalKind::Answer`] with the service's status, fields and body); a
//! service that does not answer within `timeout` gives 503 `auth_timeout`,
//! one that cannot be reached, breaks HTTP or sends a denial body over
//! `max_response_bytes` gives 503 `auth_unavailable`. Nothing is cached:
//! the service decides every request (sessions expire, users log out).
//!
//! The instance holds one pooled keep-alive HTTP/1.1 client (hyper-util's
//! `Client` over its `HttpConnector`, with a rustls handshake on top for an
//! `https://` address: [`Connector`]): the auth service sits on every
//! request's path, and a new connection (or TLS handshake) per request
//! would add round trips to each. A 2xx answer's body is read (up to
//! `max_response_bytes`) and dropped, so its connection goes back to the
//! pool.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::config::middleware::ForwardAuthConfig;
use crate::error::{Refusal, RefusalKind};
use crate::http1::is_hop_by_hop;

use super::Request;

/// How long an idle connection to the auth service is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

/// Fields weir sets on the sub-request itself; the client's are dropped.
const OWN_FIELDS: &[&str] = &[
    "x-forwarded-method",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-uri",
    "x-forwarded-for",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-original-url",
    "x-original-method",
    "x-real-ip",
    "forwarded",
];

/// A `forward_auth` instance: its config and its connection pool.
pub struct ForwardAuth {
    address: Uri,
    timeout: Duration,
    request_headers: Option<Vec<HeaderName>>,
    response_headers: Vec<HeaderName>,
    max_response_bytes: usize,
    client: Client<Connector, Empty<Bytes>>,
}

impl std::fmt::Debug for ForwardAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardAuth")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The service's answer, its body read (or why it could not be).
type Answer = (http::response::Parts, Result<Bytes, ()>);

impl ForwardAuth {
    /// The instance of `config`, with an empty pool.
    pub fn new(config: &ForwardAuthConfig) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .build(Connector::new(config));
        ForwardAuth {
            address: config.address.clone(),
            timeout: config.timeout,
            request_headers: config.request_headers.clone(),
            response_headers: config.response_headers.clone(),
            max_response_bytes: config.max_response_bytes,
            client,
        }
    }

    pub(super) async fn apply(
        &self,
        name: &Arc<str>,
        req: &mut Request<'_>,
        trusted: &[ipnet::IpNet],
    ) -> Result<(), Box<Refusal>> {
        // First, whatever the outcome: only the service may set these.
        for h in &self.response_headers {
            req.fields.remove(h);
        }
        let sub = self.sub_request(req, trusted);
        let unavailable = |reason| Box::new(Refusal::new(name, RefusalKind::Unavailable, reason));
        let (parts, body) = match tokio::time::timeout(self.timeout, self.ask(sub)).await {
            Err(_) => return Err(unavailable("auth_timeout")),
            Ok(Err(())) => return Err(unavailable("auth_unavailable")),
            Ok(Ok(answer)) => answer,
        };
        if parts.status.is_success() {
            for h in &self.response_headers {
                for v in parts.headers.get_all(h) {
                    req.fields.append(h.clone(), v.clone());
                }
            }
            return Ok(());
        }
        let body = body.map_err(|()| unavailable("auth_unavailable"))?;
        let mut r = Refusal::new(name, RefusalKind::Answer(parts.status), "denied");
        r.headers = passed_on(parts.headers, body.is_empty());
        r.body = body;
        Err(Box::new(r))
    }

    /// Sends the sub-request and reads the answer's body (bounded).
    async fn ask(&self, sub: http::Request<Empty<Bytes>>) -> Result<Answer, ()> {
        let res = self.client.request(sub).await.map_err(|_| ())?;
        let (parts, body) = res.into_parts();
        let body = Limited::new(body, self.max_response_bytes)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .map_err(|_| ());
        Ok((parts, body))
    }

    /// The `GET` of the address: the client fields that are copied, then
    /// weir's own `X-Forwarded-*` and `X-Original-URL`.
    fn sub_request(
        &self,
        req: &mut Request<'_>,
        trusted: &[ipnet::IpNet],
    ) -> http::Request<Empty<Bytes>> {
        let mut sub = http::Request::new(Empty::new());
        *sub.uri_mut() = self.address.clone();
        let h = sub.headers_mut();
        match &self.request_headers {
            Some(names) => {
                for name in names.iter().filter(|n| copied(n.as_str().as_bytes())) {
                    for v in req.fields.get_all(name) {
                        if let Ok(v) = HeaderValue::from_bytes(v) {
                            h.append(name.clone(), v);
                        }
                    }
                }
            }
            None => {
                for (n, v) in req.fields.iter().filter(|(n, _)| copied(n)) {
                    if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n), HeaderValue::from_bytes(v))
                    {
                        h.append(n, v);
                    }
                }
            }
        }
        let client = req.client_ip(trusted).to_string();
        let proto = if req.tls { "https" } else { "http" };
        let uri = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let own = [
            ("x-forwarded-method", req.method.as_str()),
            ("x-forwarded-proto", proto),
            ("x-forwarded-host", req.host),
            ("x-forwarded-uri", uri),
            ("x-forwarded-for", client.as_str()),
        ];
        for (n, v) in own.into_iter().filter(|(_, v)| !v.is_empty()) {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(HeaderName::from_static(n), v);
            }
        }
        if let Ok(url) = HeaderValue::from_str(&format!("{proto}://{}{uri}", req.host)) {
            h.insert(HeaderName::from_static("x-original-url"), url);
        }
        sub
    }
}

/// Whether a client field of this name may be copied to the sub-request.
fn copied(name: &[u8]) -> bool {
    !is_hop_by_hop(name)
        && !name.eq_ignore_ascii_case(HOST.as_str().as_bytes())
        && !name.eq_ignore_ascii_case(CONTENT_LENGTH.as_str().as_bytes())
        && !OWN_FIELDS
            .iter()
            .any(|o| name.eq_ignore_ascii_case(o.as_bytes()))
}

/// The fields of a denial passed to the client: all but connection-specific
/// and framing ones (weir frames the answer itself), and no
/// `Content-Type` when there is no body (weir then writes its own text).
fn passed_on(headers: HeaderMap, empty_body: bool) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    let mut last: Option<HeaderName> = None;
    for (n, v) in headers {
        let Some(n) = n.or_else(|| last.clone()) else {
            continue;
        };
        last = Some(n.clone());
        let framing = n == CONTENT_LENGTH || (empty_body && n == CONTENT_TYPE);
        if !framing && !is_hop_by_hop(n.as_str().as_bytes()) {
            out.append(n, v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_keep_their_fields_but_not_framing_or_connection_ones() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("location", "https://login/"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("content-length", "12"),
            ("transfer-encoding", "chunked"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("content-type", "text/html"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        let out = passed_on(h.clone(), false);
        let names: Vec<_> = out.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["location", "set-cookie", "content-type"]);
        assert_eq!(out.get_all("set-cookie").iter().count(), 2);
        assert!(!passed_on(h, true).contains_key(CONTENT_TYPE));
    }

    #[test]
    fn weirs_own_and_connection_fields_are_never_copied() {
        for n in [
            "X-Forwarded-Uri",
            "host",
            "Content-Length",
            "Connection",
            "forwarded",
        ] {
            assert!(!copied(n.as_bytes()), "{n}");
        }
        for n in ["Cookie", "Authorization", "Accept", "User-Agent"] {
            assert!(copied(n.as_bytes()), "{n}");
        }
    }
}

/// TCP, then TLS for an `https://` address: the auth client's connector.
/// (Written here because the usual crate for this, hyper-rustls, would
/// bring a second rustls setup; weir's TLS settings live in `crate::tls`.)
#[derive(Clone)]
pub struct Connector {
    tcp: HttpConnector,
    /// `None` for `http://`; `Err` if the TLS config could not be built
    /// (every connect then fails, so every request gets a 503).
    tls: Option<Result<tokio_rustls::TlsConnector, Arc<str>>>,
}

impl Connector {
    fn new(config: &ForwardAuthConfig) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(config.timeout));
        tcp.enforce_http(false);
        let tls = (config.address.scheme_str() == Some("https")).then(|| {
            crate::tls::http1_client_config(
                config
                    .ca
                    .as_ref()
                    .map(|c| (c.path.as_path(), c.pem.as_slice())),
            )
            .map(tokio_rustls::TlsConnector::from)
            .map_err(|e| {
                tracing::error!(address = %config.address, error = %e, "forward_auth TLS");
                Arc::from(e)
            })
        });
        Connector { tcp, tls }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = AuthStream;
    type Error = BoxError;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<AuthStream, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.tcp.call(uri.clone());
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connecting.await?;
            let Some(tls) = tls else {
                return Ok(AuthStream::Plain(tcp));
            };
            let tls = tls.map_err(|e| BoxError::from(e.to_string()))?;
            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
            let name = rustls_pki_types::ServerName::try_from(host.to_owned())?;
            let stream = tls.connect(name, tcp.into_inner()).await?;
            Ok(AuthStream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A connection to the auth service.
pub enum AuthStream {
    /// `http://`.
    Plain(TokioIo<tokio::net::TcpStream>),
    /// `https://` (boxed: the TLS state is large).
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>),
}

impl hyper_util::client::legacy::connect::Connection for AuthStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        match self {
            AuthStream::Plain(s) => s.connected(),
            AuthStream::Tls(s) => s.inner().get_ref().0.connected(),
        }
    }
}

impl hyper::rt::Read for AuthStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AuthStream::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            AuthStream::Tls(s) => std::pin::Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for AuthStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            AuthStream::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            AuthStream::Tls(s) => std::pin::Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AuthStream::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            AuthStream::Tls(s) => std::pin::Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            AuthStream::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            AuthStream::Tls(s) => std::pin::Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}
