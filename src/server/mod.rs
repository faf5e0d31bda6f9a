//! Traffic listeners: accept, serve HTTP/1.1 and HTTP/2, drain.
//!
//! Each accepted connection runs in its own task. HTTP/1.1 (with upgrades)
//! and HTTP/2 with prior knowledge (h2c) share a port: the task peeks at
//! the first bytes (see [`Protocol`]) and serves HTTP/1.1 with weir's own
//! driver ([`http1`], on the [`crate::http1`] codec) or HTTP/2 with hyper's
//! builder. The HTTP/1.1 driver runs its own idle, header and drain
//! timers (see its docs); HTTP/2 connections get three watchdogs:
//!
//! - **idle**: a connection with no stream in flight for the configured
//!   `client_idle` timeout is sent GOAWAY. Streams in flight are never cut
//!   by it.
//! - **drain**: on shutdown, every connection gets a graceful shutdown, and
//!   the listener task waits (bounded by the grace period, in `app`) for
//!   in-flight requests to finish.
//!
//! - **reset flood** (HTTP/2): a connection whose client resets most of
//!   its streams before their response is sent GOAWAY and dropped (see
//!   [`crate::proxy::PREMATURE_RESET_MIN_STREAMS`]).
//!
//! A half-open or abandoned h2 connection is thus sent GOAWAY and closed
//! after `client_idle`; one whose peer vanished is also caught by the
//! keep-alive PING.
//!
//! `limits.max_connections` is checked at accept: a connection over the
//! limit is accepted and closed at once (counted in
//! `weir_downstream_connections_rejected_total`), which tells the client
//! immediately instead of leaving it in the kernel backlog.
//!
//! Accept errors such as `EMFILE` are logged and followed by a short pause
//! instead of a hot loop (hyper-util's `server_graceful` example).
//!
//! A listener with `tls:` runs the TLS handshake in the connection's task
//! (never in the accept loop, so a slow client cannot stall accepting),
//! bounded by `handshake_timeout`. The rustls config is read from the
//! listener's [`tls::TlsSlot`] per connection, so a reload can swap
//! certificates without rebinding. After the handshake ALPN picks
//! HTTP/1.1 or HTTP/2; for a client that offered no ALPN, the first bytes
//! decide as on a plain port.

pub mod http1;
pub mod tls;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::Either;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::limits::{ConnectionLimit, ConnectionSlot, RequestLimits};
use crate::metrics::ListenerMetrics;
use crate::proxy::{self, Activity, ConnCtx};
use crate::snapshot::Shared;
use crate::upstream::body::ClientBody;

/// A listener that could not bind; startup and reload both report it.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind listener `{name}` to {addr}: {error}")]
pub struct BindError {
    /// Listener name (`admin` for the admin listener).
    pub name: String,
    /// The address.
    pub addr: SocketAddr,
    /// The OS error. Part of the message rather than a `source`: reload
    /// results show the message alone, and a source would make the
    /// binary's error chain print it twice.
    pub error: std::io::Error,
}

/// A bound traffic listener, ready to serve.
#[derive(Debug)]
pub struct Listener {
    name: Arc<str>,
    socket: TcpListener,
    local_addr: SocketAddr,
}

impl Listener {
    /// Binds `addr` with `SO_REUSEADDR` (fast restarts) and a deep backlog.
    pub fn bind(name: &str, addr: SocketAddr) -> Result<Listener, BindError> {
        Self::bind_socket(name, addr).map_err(|error| BindError {
            name: name.to_owned(),
            addr,
            error,
        })
    }

    fn bind_socket(name: &str, addr: SocketAddr) -> std::io::Result<Listener> {
        let domain = socket2::Domain::for_address(addr);
        let socket =
            socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let socket = TcpListener::from_std(socket.into())?;
        let local_addr = socket.local_addr()?;
        Ok(Listener {
            name: name.into(),
            socket,
            local_addr,
        })
    }

    /// The bound address (the real port when the config said `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accepts the next connection.
    pub async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        self.socket.accept().await
    }

    /// The listener's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Streams an HTTP/2 client may reset before weir accepts them (h2's
/// default, set explicitly). Past it the connection gets GOAWAY
/// `ENHANCE_YOUR_CALM`: the CVE-2023-44487 rapid-reset mitigation.
pub const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;

/// Streams weir may reset because of the client's protocol errors before
/// it closes the connection (hyper's default, set explicitly): a client
/// that keeps provoking resets is cut off.
pub const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;

/// A listener's connection settings: weir's HTTP/1.1 driver's, and
/// hyper's HTTP/2 builder.
///
/// HTTP/2 defaults of hyper 1.x / h2 0.4 and what weir sets instead:
///
/// | setting | hyper/h2 default | weir |
/// |---------|------------------|------|
/// | HTTP/2 `max_concurrent_streams` | 200 | `limits.h2_max_concurrent_streams` (100) |
/// | HTTP/2 `max_header_list_size` | 16 KiB | `limits.max_header_bytes` |
/// | HTTP/2 `max_pending_accept_reset_streams` | 20 | 20 |
/// | HTTP/2 `max_local_error_reset_streams` | 1024 | 1024 |
/// | HTTP/2 streams reset before their response | no limit | connection closed past half of ≥ 100 ([`crate::proxy::PREMATURE_RESET_MIN_STREAMS`]) |
///
/// CONTINUATION floods (CVE-2024-27316 and kin) need no setting: h2 counts
/// CONTINUATION frames per header block against a cap derived from
/// `max_header_list_size` / `max_frame_size` (at least 5) and answers a
/// longer run with GOAWAY `ENHANCE_YOUR_CALM`, before buffering past the
/// header-list limit.
pub struct Builders {
    http1: Arc<http1::Settings>,
    http2: http2::Builder<TokioExecutor>,
}

/// Builds the connection settings shared by all connections of a listener.
pub fn connection_builders(server: &ServerConfig) -> Builders {
    let limits = &server.limits;
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        // Detect dead peers on otherwise quiet HTTP/2 connections.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS);
    let http1 = Arc::new(http1::Settings {
        limits: crate::http1::Limits {
            max_head_bytes: limits.max_header_bytes,
            max_headers: limits.max_headers,
            ..crate::http1::Limits::default()
        },
        idle: server.idle_timeout,
        header_read: server.header_read_timeout,
        body_read: server.body_read_timeout,
    });
    Builders { http1, http2 }
}

/// How a connection is served, decided before anything reads from it.
///
/// Plain connections are classified by peeking (`MSG_PEEK`) at their first
/// bytes: anything that is not a prefix of the HTTP/2 preface is HTTP/1.1.
/// Peeking rather than reading leaves the request whole in the socket for
/// the protocol's own first read. TLS connections follow ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (and 1.0), with upgrades.
    Http1,
    /// HTTP/2: the full preface was seen, or ALPN chose `h2`.
    Http2,
    /// Too few bytes to tell (a preface cut short), or TLS without ALPN:
    /// the first bytes are read until they tell ([`detect`]).
    Detect,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Protocol {
    /// Classifies a connection by its first bytes (at most the preface's
    /// length is looked at).
    pub fn sniff(first: &[u8]) -> Protocol {
        let n = first.len().min(H2_PREFACE.len());
        if first.get(..n) != H2_PREFACE.get(..n) {
            Protocol::Http1
        } else if n == H2_PREFACE.len() {
            Protocol::Http2
        } else {
            Protocol::Detect
        }
    }

    /// The protocol ALPN settled on, if any.
    fn from_alpn(alpn: Option<&[u8]>) -> Protocol {
        match alpn {
            Some(b"h2") => Protocol::Http2,
            Some(b"http/1.1") => Protocol::Http1,
            _ => Protocol::Detect,
        }
    }
}

/// Accepts connections until `stop` is cancelled; every connection task is
/// spawned on `tracker`. Connections are told to shut down gracefully when
/// `drain` is cancelled. When `tls` holds a config, each connection is a
/// TLS connection (see the module docs).
///
/// Timeouts come from the current snapshot's `ServerConfig`; the
/// connection builder is rebuilt when a reload changes them, so new
/// connections get the new values and open ones keep theirs.
pub async fn serve(listener: Listener, ctx: ListenerCtx) {
    let ListenerCtx {
        shared,
        metrics,
        tls,
        stop,
        drain,
        connections: tracker,
    } = ctx;
    let mut server = shared.snapshot().config.server.clone();
    let mut builder = Arc::new(connection_builders(&server));
    let mut limits = RequestLimits::from_config(&server);
    let open = ConnectionLimit::default();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.socket.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                metrics.connections_total.inc();
                {
                    let snap = shared.snapshot();
                    if snap.config.server != server {
                        server = snap.config.server.clone();
                        builder = Arc::new(connection_builders(&server));
                        limits = RequestLimits::from_config(&server);
                    }
                }
                // Over the limit: accept (so the client is not left in the
                // backlog) and close at once.
                let Some(slot) = open.try_acquire(server.limits.max_connections) else {
                    metrics.connections_rejected.inc();
                    drop(stream);
                    tracing::debug!(listener = %listener.name, %peer, "connection limit reached");
                    continue;
                };
                let tls = tls.load_full();
                let ctx = Arc::new(ConnCtx {
                    shared: Arc::clone(&shared),
                    peer,
                    client_ip: crate::upstream::headers::client_ip_value(peer.ip()),
                    scheme: if tls.is_some() { "https" } else { "http" },
                    activity: None,
                    limits,
                });
                let conn = Conn {
                    ctx,
                    builder: Arc::clone(&builder),
                    idle_timeout: server.idle_timeout,
                    metrics: metrics.clone(),
                    drain: drain.clone(),
                };
                tracker.spawn(accept_connection(stream, slot, tls, conn));
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: back off instead of spinning.
                tracing::warn!(listener = %listener.name, error = %e, "accept failed");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    tracing::debug!(listener = %listener.name, "listener stopped accepting");
}

/// What a listener's serving task is given by the control plane.
#[derive(Debug)]
pub struct ListenerCtx {
    /// Shared state (snapshot, metrics).
    pub shared: Arc<Shared>,
    /// The listener's metric handles.
    pub metrics: ListenerMetrics,
    /// The listener's TLS settings (`None`: cleartext), swapped by reloads.
    pub tls: tls::TlsSlot,
    /// Cancelled to stop accepting.
    pub stop: CancellationToken,
    /// Cancelled to shut open connections down gracefully.
    pub drain: CancellationToken,
    /// Where connection tasks are spawned (shutdown waits for them).
    pub connections: TaskTracker,
}

/// One accepted connection's settings, fixed when it was accepted.
struct Conn {
    ctx: Arc<ConnCtx>,
    builder: Arc<Builders>,
    idle_timeout: Duration,
    metrics: ListenerMetrics,
    drain: CancellationToken,
}

/// Runs the TLS handshake if the listener has TLS, then serves the
/// connection. Counted as open from accept to close, handshake included.
///
/// Not an `async fn`, and each branch its own future: a task is as large
/// as its future's largest state for the connection's whole life, and an
/// async fn (or block) keeps every argument it captured in every state.
/// The plain branch captures only the boxed wait for the first bytes,
/// which hands the stream back; serving it then holds it once.
fn accept_connection(
    stream: TcpStream,
    slot: ConnectionSlot,
    tls: Option<Arc<tls::TlsRuntime>>,
    conn: Conn,
) -> impl std::future::Future<Output = ()> + Send {
    let _ = stream.set_nodelay(true);
    let open = Open::new(&conn.metrics, slot);
    match tls {
        None => {
            let first_bytes = Box::pin(sniff_plain(stream, conn));
            Either::Left(async move {
                // Bound by `let`, not matched on: a match keeps its
                // scrutinee (the stream and settings) for its whole arm.
                let Some((stream, conn, protocol)) = first_bytes.await else {
                    drop(open);
                    return;
                };
                match protocol {
                    // The common case is served inline; the rest are boxed.
                    Protocol::Http1 => serve_http1(stream, BytesMut::new(), conn).await,
                    protocol => Box::pin(serve_protocol(stream, protocol, conn)).await,
                }
                drop(open);
            })
        }
        // Boxed: the TLS handshake and TLS stream are far larger.
        Some(tls) => Either::Right(Box::pin(async move {
            serve_tls(stream, tls, conn).await;
            drop(open);
        })),
    }
}

/// An accepted connection: counted in `connections_open` and holding its
/// slot under the listener's limit until dropped.
struct Open {
    gauge: prometheus::IntGauge,
    _slot: ConnectionSlot,
}

impl Open {
    fn new(metrics: &ListenerMetrics, slot: ConnectionSlot) -> Self {
        metrics.connections_open.inc();
        Open {
            gauge: metrics.connections_open.clone(),
            _slot: slot,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Waits for a plain connection's first bytes (bounded like an idle
/// connection) and looks at them without consuming them. `None`: idle too
/// long, draining, or closed.
async fn sniff_plain(stream: TcpStream, conn: Conn) -> Option<(TcpStream, Conn, Protocol)> {
    let mut first = [0u8; H2_PREFACE.len()];
    let peeked = tokio::select! {
        r = stream.peek(&mut first) => r.ok(),
        _ = tokio::time::sleep(conn.idle_timeout) => None,
        _ = conn.drain.cancelled() => None,
    };
    let n = peeked.filter(|n| *n > 0)?;
    let protocol = Protocol::sniff(first.get(..n).unwrap_or_default());
    Some((stream, conn, protocol))
}

async fn serve_tls(stream: TcpStream, tls: Arc<tls::TlsRuntime>, conn: Conn) {
    let handshake = tls::handshake(&tls, stream, conn.ctx.peer);
    let stream = tokio::select! {
        s = handshake => s,
        _ = conn.drain.cancelled() => None,
    };
    if let Some(stream) = stream {
        let protocol = Protocol::from_alpn(stream.get_ref().1.alpn_protocol());
        serve_protocol(stream, protocol, conn).await;
    }
}

/// Serves a connection whose protocol is known, or first reads until it is.
async fn serve_protocol<S: http1::Transport>(stream: S, protocol: Protocol, conn: Conn) {
    match protocol {
        Protocol::Http1 => serve_http1(stream, BytesMut::new(), conn).await,
        Protocol::Http2 => Box::pin(serve_http2(stream, conn)).await,
        Protocol::Detect => Box::pin(detect(stream, conn)).await,
    }
}

fn serve_http1<S: http1::Transport>(
    stream: S,
    early: BytesMut,
    conn: Conn,
) -> impl std::future::Future<Output = ()> + Send {
    let settings = Arc::clone(&conn.builder.http1);
    http1::serve(stream, early, conn.ctx, settings, conn.drain)
}

/// Reads a connection's first bytes until they tell HTTP/1.1 from the
/// HTTP/2 preface (bounded by `client_idle`), then serves it with those
/// bytes put back in front.
async fn detect<S: http1::Transport>(mut stream: S, conn: Conn) {
    let mut early = BytesMut::with_capacity(H2_PREFACE.len());
    let sniffed = async {
        loop {
            let n = tokio::io::AsyncReadExt::read_buf(&mut stream, &mut early).await?;
            let protocol = Protocol::sniff(&early);
            if n == 0 || protocol != Protocol::Detect || early.len() >= H2_PREFACE.len() {
                return Ok::<_, std::io::Error>((n, protocol));
            }
        }
    };
    let sniffed = tokio::select! {
        r = sniffed => r.ok(),
        _ = tokio::time::sleep(conn.idle_timeout) => None,
        _ = conn.drain.cancelled() => None,
    };
    match sniffed {
        Some((n, Protocol::Http2)) if n > 0 => {
            serve_http2(Rewind::new(early.freeze(), stream), conn).await;
        }
        Some((n, _)) if n > 0 => serve_http1(stream, early, conn).await,
        _ => {}
    }
}

pin_project_lite::pin_project! {
    /// A stream whose first bytes were read already: they are read again
    /// first. Only for HTTP/2 after protocol detection (the HTTP/1.1 driver
    /// takes such bytes as its buffer's start).
    struct Rewind<S> {
        early: bytes::Bytes,
        #[pin]
        inner: S,
    }
}

impl<S> Rewind<S> {
    fn new(early: bytes::Bytes, inner: S) -> Self {
        Rewind { early, inner }
    }
}

impl<S: AsyncRead> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        if !this.early.is_empty() {
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(this.early.split_to(n).as_ref());
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Serves an HTTP/2 connection with hyper, under the idle, drain and
/// reset-flood watchdogs.
// Long: the watchdog loop is one select over the connection's five events.
async fn serve_http2<S>(stream: S, conn: Conn)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        ctx,
        builder,
        idle_timeout,
        metrics,
        drain,
    } = conn;
    let activity = Arc::new(Activity::new());
    let ctx = Arc::new(ConnCtx {
        activity: Some(Arc::clone(&activity)),
        ..ConnCtx::clone(&ctx)
    });
    let peer = ctx.peer;
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        proxy::handle(Arc::clone(&ctx), req.map(ClientBody::Hyper), None)
    });
    let io = TokioIo::new(stream);
    let conn = builder.http2.serve_connection(io, service);
    tokio::pin!(conn);
    let mut closing = false;
    // Set when the idle watchdog shut the connection down: HTTP/2's
    // graceful shutdown waits for the client to acknowledge a PING after
    // GOAWAY, which a half-open or hostile client never does. If the
    // connection is still idle this long after GOAWAY, it is dropped.
    let mut force_close_at: Option<tokio::time::Instant> = None;
    let mut flooded = false;
    let mut drop_at: Option<tokio::time::Instant> = None;
    loop {
        let idle_deadline = activity.idle_since().map(|since| since + idle_timeout);
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "client connection ended with error");
                }
                break;
            }
            _ = drain.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = activity.reset_flood(), if !flooded => {
                // GOAWAY now; the streams still open get a short grace,
                // then the connection is dropped whatever they do.
                tracing::warn!(%peer, "closing HTTP/2 connection: the client reset most of its streams before their response (rapid reset)");
                metrics.reset_floods.inc();
                conn.as_mut().graceful_shutdown();
                closing = true;
                flooded = true;
                drop_at = Some(tokio::time::Instant::now() + RESET_FLOOD_GRACE);
            }
            _ = sleep_until_or_forever(drop_at), if drop_at.is_some() => break,
            _ = sleep_until_or_forever(idle_deadline), if !closing => {
                // Re-check: a request may have started since the deadline
                // was computed.
                if activity.idle_since().is_some_and(|s| s + idle_timeout <= tokio::time::Instant::now()) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    force_close_at =
                        Some(tokio::time::Instant::now() + idle_timeout.min(IDLE_CLOSE_GRACE));
                }
            }
            _ = sleep_until_or_forever(force_close_at), if force_close_at.is_some() => {
                if activity.idle_since().is_some() {
                    tracing::debug!("idle connection did not close after GOAWAY; dropping it");
                    break;
                }
                // A request arrived after all: let it finish (drain and
                // request timeouts bound it), then look again.
                force_close_at = Some(tokio::time::Instant::now() + IDLE_CLOSE_GRACE);
            }
        }
    }
}

/// How long the streams of a connection closed for a reset flood may
/// still run after GOAWAY.
const RESET_FLOOD_GRACE: Duration = Duration::from_secs(1);

/// Longest wait, after an idle connection was sent GOAWAY, for it to
/// close by itself (capped by `client_idle`).
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);

async fn sleep_until_or_forever(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        // Busy: look again shortly; the request's own timeouts bound it.
        None => tokio::time::sleep(Duration::from_secs(1)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_choose_the_protocol() {
        assert_eq!(Protocol::sniff(H2_PREFACE), Protocol::Http2);
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(b"\0\0\x12\x04");
        assert_eq!(Protocol::sniff(&more), Protocol::Http2);
        assert_eq!(Protocol::sniff(b"GET / HTTP/1.1\r\n"), Protocol::Http1);
        // Methods that share the preface's first letter part at the second.
        assert_eq!(Protocol::sniff(b"POST /"), Protocol::Http1);
        assert_eq!(Protocol::sniff(b"PUT /"), Protocol::Http1);
        assert_eq!(Protocol::sniff(b"PRIX"), Protocol::Http1);
        // A preface cut short cannot be told from a slow HTTP/1 client yet.
        assert_eq!(Protocol::sniff(b"P"), Protocol::Detect);
        assert_eq!(Protocol::sniff(b"PRI * HTTP/2.0\r\n"), Protocol::Detect);
    }

    /// Every open connection is a task holding its future: its size is
    /// what an idle connection costs before any buffer. HTTP/2 and TLS are
    /// boxed inside, so the plain HTTP/1.1 path sets the size.
    #[tokio::test]
    async fn connection_futures_stay_small() {
        #![allow(clippy::unwrap_used)]
        let metrics = crate::metrics::Metrics::new().unwrap();
        let snapshot = crate::snapshot::Snapshot::empty(&metrics);
        let shared = Arc::new(Shared::new(snapshot, metrics.clone()));
        let server = shared.snapshot().config.server.clone();
        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = socket.accept().await.unwrap();
        let ctx = Arc::new(ConnCtx {
            shared: Arc::clone(&shared),
            peer,
            client_ip: crate::upstream::headers::client_ip_value(peer.ip()),
            scheme: "http",
            activity: None,
            limits: RequestLimits::from_config(&server),
        });
        let builders = Arc::new(connection_builders(&server));
        let settings = Arc::clone(&builders.http1);
        let serve = http1::serve(
            stream,
            BytesMut::new(),
            ctx.clone(),
            settings,
            CancellationToken::new(),
        );
        let serve_size = std::mem::size_of_val(&serve);
        drop(serve);
        let stream = TcpStream::connect(addr).await.unwrap();
        let conn = Conn {
            ctx,
            builder: builders,
            idle_timeout: server.idle_timeout,
            metrics: metrics.listener("main"),
            drain: CancellationToken::new(),
        };
        let slot = ConnectionLimit::default().try_acquire(None).unwrap();
        let task = accept_connection(stream, slot, None, conn);
        let task_size = std::mem::size_of_val(&task);
        eprintln!("connection task future: {task_size} B; HTTP/1.1 driver: {serve_size} B");
        assert!(task_size <= 512, "connection task future is {task_size} B");
    }

    #[test]
    fn alpn_chooses_the_protocol() {
        assert_eq!(Protocol::from_alpn(Some(b"h2")), Protocol::Http2);
        assert_eq!(Protocol::from_alpn(Some(b"http/1.1")), Protocol::Http1);
        assert_eq!(Protocol::from_alpn(None), Protocol::Detect);
    }
}
