//! Traffic listeners: accept, serve HTTP/1.1 and HTTP/2, drain.
//!
//! Each accepted connection runs in its own task under hyper-util's `auto`
//! builder, which serves HTTP/1.1 (with upgrades) and HTTP/2 with prior
//! knowledge (h2c) on the same port. The task also runs two watchdogs:
//!
//! - **idle**: a connection with no request in flight for the configured
//!   `client_idle` timeout is shut down gracefully (HTTP/1: closed; HTTP/2:
//!   GOAWAY). Requests in flight are never cut by it.
//! - **drain**: on shutdown, every connection gets a graceful shutdown, and
//!   the listener task waits (bounded by the grace period, in `app`) for
//!   in-flight requests to finish.
//!
//! Accept errors such as `EMFILE` are logged and followed by a short pause
//! instead of a hot loop (hyper-util's `server_graceful` example).
//!
//! A listener with `tls:` runs the TLS handshake in the connection's task
//! (never in the accept loop, so a slow client cannot stall accepting),
//! bounded by `handshake_timeout`. The rustls config is read from the
//! listener's [`tls::TlsSlot`] per connection, so a reload can swap
//! certificates without rebinding. After the handshake the same `auto`
//! builder serves the decrypted stream: with ALPN `h2` the client starts
//! with the HTTP/2 preface, which the builder detects.

pub mod admin;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::metrics::ListenerMetrics;
use crate::proxy::{self, Activity, ConnCtx};
use crate::snapshot::Shared;

/// A bound traffic listener, ready to serve.
#[derive(Debug)]
pub struct Listener {
    name: Arc<str>,
    socket: TcpListener,
    local_addr: SocketAddr,
}

impl Listener {
    /// Binds `addr` with `SO_REUSEADDR` (fast restarts) and a deep backlog.
    pub fn bind(name: &str, addr: SocketAddr) -> std::io::Result<Listener> {
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

    /// The listener's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Builds the connection builder shared by all connections of a listener.
pub fn connection_builder(server: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        // Detect dead peers on otherwise quiet HTTP/2 connections.
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Accepts connections until `stop` is cancelled; every connection task is
/// spawned on `tracker`. Connections are told to shut down gracefully when
/// `drain` is cancelled. When `tls` holds a config, each connection is a
/// TLS connection (see the module docs).
///
/// Timeouts come from the current snapshot's `ServerConfig`; the
/// connection builder is rebuilt when a reload changes them, so new
/// connections get the new values and open ones keep theirs.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: Listener,
    shared: Arc<Shared>,
    metrics: ListenerMetrics,
    tls: tls::TlsSlot,
    stop: CancellationToken,
    drain: CancellationToken,
    tracker: TaskTracker,
) {
    let mut server = shared.snapshot().config.server.clone();
    let mut builder = Arc::new(connection_builder(&server));
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
                        builder = Arc::new(connection_builder(&server));
                    }
                }
                let tls = tls.load_full();
                let ctx = Arc::new(ConnCtx {
                    shared: Arc::clone(&shared),
                    peer,
                    scheme: if tls.is_some() { "https" } else { "http" },
                    activity: Arc::new(Activity::new()),
                });
                tracker.spawn(accept_connection(
                    stream,
                    tls,
                    ctx,
                    Arc::clone(&builder),
                    server.idle_timeout,
                    metrics.clone(),
                    drain.clone(),
                ));
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

/// Runs the TLS handshake if the listener has TLS, then serves the
/// connection. Counted as open from accept to close, handshake included.
async fn accept_connection(
    stream: TcpStream,
    tls: Option<Arc<tls::TlsRuntime>>,
    ctx: Arc<ConnCtx>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    idle_timeout: Duration,
    metrics: ListenerMetrics,
    drain: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    metrics.connections_open.inc();
    match tls {
        None => serve_connection(stream, ctx, builder, idle_timeout, drain).await,
        Some(tls) => {
            let peer = ctx.peer;
            let handshake = tls::handshake(&tls, stream, peer);
            let stream = tokio::select! {
                s = handshake => s,
                _ = drain.cancelled() => None,
            };
            if let Some(stream) = stream {
                serve_connection(stream, ctx, builder, idle_timeout, drain).await;
            }
        }
    }
    metrics.connections_open.dec();
}

async fn serve_connection<S>(
    stream: S,
    ctx: Arc<ConnCtx>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    idle_timeout: Duration,
    drain: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::clone(&ctx.activity);
    let service = service_fn(move |req| proxy::handle(Arc::clone(&ctx), req));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = false;
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
            _ = sleep_until_or_forever(idle_deadline), if !closing => {
                // Re-check: a request may have started since the deadline
                // was computed.
                if activity.idle_since().is_some_and(|s| s + idle_timeout <= tokio::time::Instant::now()) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

async fn sleep_until_or_forever(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        // Busy: look again shortly; the request's own timeouts bound it.
        None => tokio::time::sleep(Duration::from_secs(1)).await,
    }
}
