//! Connections to one endpoint: connect, keep alive, reuse.
//!
//! The proxy chooses the endpoint itself (the selector already did) and
//! sends the client's `Host`/`:authority` unchanged, so connections are
//! pooled per endpoint here rather than by a generic client.
//!
//! HTTP/1.1 speaks weir's own client ([`super::h1`], on the
//! [`crate::http1`] codec): a LIFO stack of idle connections per endpoint,
//! each just a socket. A connection is checked out for one request, checked
//! cheaply before reuse, and returned when the response body has been read
//! to the end; a body dropped early closes the connection, because its
//! framing is no longer known. LIFO keeps the hottest connections warm and
//! lets the cold ones age out at the idle timeout. The request head is
//! encoded once, straight from the rewritten head, with the client's field
//! spelling.
//!
//! HTTP/2 (h2c prior knowledge, or h2 over TLS): hyper's client, one
//! multiplexed connection per endpoint, reopened when it closes.
//!
//! A pool with `tls:` runs a TLS handshake (see `crate::tls::upstream`) on every new
//! connection, within the connect timeout's own budget; a failed handshake
//! is a connect error (502) and is logged with the endpoint and the reason.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body::Body as _;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::UpstreamProtocol;
use crate::error::ProxyError;
use crate::http1::{self as codec, RawFields};
use crate::tls::upstream::{MaybeTls, UpstreamTls};
use crate::upstream::body::{RequestBody, UpstreamBody};
use crate::upstream::h1::{self, Failure, H1Conn};
use crate::upstream::headers::Added;

/// Connect and keep-alive settings of a pool.
#[derive(Clone, Copy, Debug)]
pub struct ConnectSettings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time from request sent to response headers.
    pub response_header_timeout: Duration,
    /// Idle pooled connections older than this are closed.
    pub idle_timeout: Duration,
    /// At most this many idle HTTP/1 connections are kept per endpoint.
    pub max_idle: usize,
}

/// What a request carries besides its head: an HTTP/1.1 client's fields
/// as received, and the fields weir adds (see `super::headers::Added`).
pub(crate) type Extra<'a> = (Option<&'a RawFields>, &'a Added);

#[derive(Debug)]
struct Idle {
    conn: H1Conn,
    since: Instant,
}

/// The connections of one endpoint.
#[derive(Debug)]
pub(crate) struct ConnPool {
    addr: SocketAddr,
    protocol: UpstreamProtocol,
    tls: Option<UpstreamTls>,
    idle: Mutex<Vec<Idle>>,
    /// Reused connections the endpoint had closed, whose request went
    /// again on a fresh one.
    stale_retries: prometheus::IntCounter,
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
    // Serialises h2 connection setup so a burst after a disconnect opens
    // one connection, not one per request.
    h2_connect: tokio::sync::Mutex<()>,
}

/// A failed send, with the request's body if it was never written.
#[derive(Debug)]
pub struct SendError {
    /// What went wrong.
    pub error: ProxyError,
    /// The body, when the request provably never left weir.
    pub unsent: Option<RequestBody>,
}

impl From<ProxyError> for SendError {
    fn from(error: ProxyError) -> Self {
        SendError {
            error,
            unsent: None,
        }
    }
}

impl ConnPool {
    pub(crate) fn new(
        addr: SocketAddr,
        protocol: UpstreamProtocol,
        tls: Option<UpstreamTls>,
        stale_retries: prometheus::IntCounter,
    ) -> Self {
        ConnPool {
            addr,
            protocol,
            tls,
            idle: Mutex::new(Vec::new()),
            stale_retries,
            h2: Mutex::new(None),
            h2_connect: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn protocol(&self) -> UpstreamProtocol {
        self.protocol
    }

    /// The TLS settings connections are made with.
    pub(crate) fn tls(&self) -> Option<&UpstreamTls> {
        self.tls.as_ref()
    }

    pub(crate) fn idle_count(&self) -> usize {
        match self.protocol {
            UpstreamProtocol::Http1 => self.idle.lock().map(|v| v.len()).unwrap_or(0),
            UpstreamProtocol::H2c => self
                .h2
                .lock()
                .map(|h| usize::from(h.as_ref().is_some_and(|s| !s.is_closed())))
                .unwrap_or(0),
        }
    }

    /// Sends the request `head` with `body` to this endpoint and waits for
    /// the response headers (bounded by the response-header timeout). An
    /// HTTP/1 response's body holds the connection until it ends.
    ///
    /// The head is borrowed, so a retry sends it again without a copy kept
    /// for the purpose (HTTP/1 encodes it from the borrow; only HTTP/2,
    /// whose client takes a request by value, copies it). On failure,
    /// [`SendError::unsent`] gives the body back when the request was
    /// provably never written (connect failure), which makes it safe to
    /// retry for any method on another endpoint.
    pub(crate) async fn send(
        &self,
        head: &mut http::request::Parts,
        fields: Extra<'_>,
        body: RequestBody,
        settings: &ConnectSettings,
    ) -> Result<Response<UpstreamBody>, SendError> {
        match self.protocol {
            UpstreamProtocol::H2c => {
                let req = Request::from_parts(head_copy(head, fields), body);
                Ok(Box::pin(self.send_h2(req, settings))
                    .await?
                    .map(UpstreamBody::H2))
            }
            UpstreamProtocol::Http1 => self.send_h1(head, fields, body, settings).await,
        }
    }

    /// [`send`](Self::send) over the endpoint's shared HTTP/2 connection,
    /// opened first if there is none.
    async fn send_h2(
        &self,
        req: Request<RequestBody>,
        settings: &ConnectSettings,
    ) -> Result<Response<hyper::body::Incoming>, SendError> {
        // Connecting is rare and its future is large: boxed, so the
        // per-request future (kept for the whole life of each client
        // connection by hyper) stays small.
        let mut sender = match self.live_h2() {
            Some(s) => s,
            None => match Box::pin(self.h2_sender(settings)).await {
                Ok(s) => s,
                Err(error) => {
                    return Err(SendError {
                        error,
                        unsent: Some(req.into_body()),
                    })
                }
            },
        };
        let fut = sender.try_send_request(req);
        match tokio::time::timeout(settings.response_header_timeout, fut).await {
            Err(_) => Err(self.response_timeout(settings).into()),
            Ok(Ok(res)) => Ok(res),
            Ok(Err(mut e)) => {
                let unsent = e.take_message().map(Request::into_body);
                Err(SendError {
                    error: ProxyError::Upstream {
                        addr: self.addr,
                        error: e.into_error(),
                    },
                    unsent,
                })
            }
        }
    }

    /// [`send`](Self::send) over an idle pooled HTTP/1 connection, or a new
    /// one. A reused connection the endpoint had closed before answering
    /// (nothing came back, no body consumed) gets the request once more on
    /// a fresh connection, whatever the method: it never reached the
    /// endpoint.
    async fn send_h1(
        &self,
        parts: &mut http::request::Parts,
        fields: Extra<'_>,
        mut body: RequestBody,
        settings: &ConnectSettings,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let framing = request_framing(&mut parts.headers, &body);
        let mut head = Some(encode_head(parts, fields));
        let limits = codec::Limits::default();
        let deadline = Instant::now() + settings.response_header_timeout;
        let mut fresh_only = false;
        loop {
            let pooled = if fresh_only {
                None
            } else {
                self.pop_idle(settings)
            };
            let conn = match pooled {
                Some(c) => c,
                // Boxed: connecting is rare and its future large.
                None => match Box::pin(self.connect(settings)).await {
                    Ok(io) => H1Conn::new(io),
                    Err(error) => {
                        let unsent = Some(body);
                        return Err(SendError { error, unsent });
                    }
                },
            };
            // Encoded again only for the rare second try after a stale close.
            let bytes = head.take().unwrap_or_else(|| encode_head(parts, fields));
            let sent = h1::exchange(
                conn,
                bytes,
                body,
                framing,
                &parts.method,
                &limits,
                self.addr,
            );
            match tokio::time::timeout_at(deadline, sent).await {
                Err(_) => return Err(self.response_timeout(settings).into()),
                Ok(Ok(res)) => return Ok(res.map(UpstreamBody::H1)),
                Ok(Err(Failure::Stale(again))) => {
                    self.stale_retries.inc();
                    body = again;
                    fresh_only = true;
                }
                Ok(Err(Failure::Error(error))) => return Err(error.into()),
            }
        }
    }

    fn response_timeout(&self, settings: &ConnectSettings) -> ProxyError {
        ProxyError::ResponseTimeout {
            addr: self.addr,
            timeout: settings.response_header_timeout,
        }
    }

    /// Returns a connection whose response was read to the end.
    pub(crate) fn release(&self, conn: H1Conn, settings: &ConnectSettings) {
        if settings.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        prune(&mut idle, now, settings.idle_timeout);
        if idle.len() >= settings.max_idle {
            // Keep the newest; the oldest is the one most likely to be
            // closed by the endpoint's own keep-alive timeout.
            idle.remove(0);
        }
        idle.push(Idle { conn, since: now });
    }

    pub(crate) fn sweep(&self, settings: &ConnectSettings) {
        if let Ok(mut idle) = self.idle.lock() {
            prune(&mut idle, Instant::now(), settings.idle_timeout);
        }
    }

    /// The newest idle connection that is young enough and still open.
    fn pop_idle(&self, settings: &ConnectSettings) -> Option<H1Conn> {
        let now = Instant::now();
        let mut idle = self.idle.lock().ok()?;
        while let Some(entry) = idle.pop() {
            if now.duration_since(entry.since) < settings.idle_timeout && entry.conn.still_open() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// TCP connect, then the TLS handshake when the pool has `tls:`.
    async fn connect(&self, settings: &ConnectSettings) -> Result<MaybeTls, ProxyError> {
        let stream = self.connect_tcp(settings).await?;
        let Some(tls) = &self.tls else {
            return Ok(MaybeTls::Plain(stream));
        };
        let handshake = tls.connect(self.addr, stream, false);
        match tokio::time::timeout(settings.connect_timeout, handshake).await {
            Ok(Ok(s)) => Ok(MaybeTls::Tls(Box::new(s))),
            Ok(Err(error)) => {
                tracing::warn!(
                    endpoint = %self.addr,
                    server_name = tls.sni.as_deref().unwrap_or("<endpoint ip>"),
                    error = %error,
                    "upstream TLS handshake failed"
                );
                Err(ProxyError::Connect {
                    addr: self.addr,
                    error,
                })
            }
            Err(_) => Err(ProxyError::ConnectTimeout {
                addr: self.addr,
                timeout: settings.connect_timeout,
            }),
        }
    }

    async fn connect_tcp(&self, settings: &ConnectSettings) -> Result<TcpStream, ProxyError> {
        let stream = tokio::time::timeout(settings.connect_timeout, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ProxyError::ConnectTimeout {
                addr: self.addr,
                timeout: settings.connect_timeout,
            })?
            .map_err(|error| ProxyError::Connect {
                addr: self.addr,
                error,
            })?;
        // Latency over Nagle: requests and responses are small and
        // written whole.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn h2_sender(
        &self,
        settings: &ConnectSettings,
    ) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
        // The caller found no live connection; another request may have
        // opened one while this one waited for the lock.
        let _guard = self.h2_connect.lock().await;
        if let Some(s) = self.live_h2() {
            return Ok(s);
        }
        let stream = self.connect(settings).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| ProxyError::Upstream {
                addr: self.addr,
                error,
            })?;
        let addr = self.addr;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(endpoint = %addr, error = %e, "upstream h2 connection ended");
            }
        });
        if let Ok(mut slot) = self.h2.lock() {
            *slot = Some(sender.clone());
        }
        Ok(sender)
    }

    fn live_h2(&self) -> Option<http2::SendRequest<RequestBody>> {
        let slot = self.h2.lock().ok()?;
        slot.as_ref().filter(|s| !s.is_closed()).cloned()
    }
}

fn prune(idle: &mut Vec<Idle>, now: Instant, idle_timeout: Duration) {
    idle.retain(|e| now.duration_since(e.since) < idle_timeout);
}

/// A copy of a request head for the HTTP/2 client, which takes its
/// request by value (extensions are weir's own and stay behind).
fn head_copy(head: &http::request::Parts, (raw, added): Extra<'_>) -> http::request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    let mut headers = match raw {
        // The client's fields first, as on the wire; then weir's.
        Some(raw) => {
            let (mut map, _) = raw.clone().into_map();
            for (name, value) in &head.headers {
                map.append(name.clone(), value.clone());
            }
            map
        }
        None => head.headers.clone(),
    };
    added.append_to(&mut headers);
    *req.headers_mut() = headers;
    req.into_parts().0
}

/// The request head for an HTTP/1.1 endpoint, in a pooled write buffer:
/// the client's fields as received (if kept apart), the head's, then
/// weir's own.
fn encode_head(parts: &http::request::Parts, (raw, added): Extra<'_>) -> Vec<u8> {
    let mut head = super::buffers::take_write();
    let (lines, n) = added.lines();
    let fields = codec::Fields::of(&parts.headers, &parts.extensions)
        .with_raw(raw)
        .with_extra(lines.get(..n).unwrap_or_default());
    codec::encode_request_head(
        &parts.method,
        &parts.uri,
        Version::HTTP_11,
        fields,
        &mut head,
    );
    head
}

/// Sets the request's framing fields from its body: a known length goes as
/// `Content-Length` (none for an empty body that declared none), anything
/// else chunked. Returns `(chunked, empty)`.
fn request_framing(headers: &mut HeaderMap, body: &RequestBody) -> (bool, bool) {
    headers.remove(TRANSFER_ENCODING);
    match body.size_hint().exact() {
        Some(0) if body.is_end_stream() => (false, true),
        Some(n) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
            (false, n == 0)
        }
        None => {
            headers.remove(CONTENT_LENGTH);
            headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
            (true, false)
        }
    }
}
