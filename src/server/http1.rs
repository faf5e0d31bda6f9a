//! The HTTP/1.1 connection driver: weir's own, on the sans-IO
//! [`crate::http1`] codec.
//!
//! It owns the socket, the timers and the buffers; the codec owns every
//! parsing and framing decision. One connection, one task, one request at
//! a time (pipelined requests wait in the read buffer and are answered in
//! order):
//!
//! 1. **idle** — no buffer held. The task awaits readability (no read
//!    buffer is needed for that), bounded by `timeouts.client_idle` from
//!    the end of the previous response, and by drain.
//! 2. **head** — a pooled buffer is taken ([`super::buffers`]) and filled
//!    until the codec has a whole head, bounded by `timeouts.header_read`
//!    from the first byte. A refused head is answered (400/431/501/505,
//!    408 on timeout) and the connection closes.
//! 3. **exchange** — the request goes to [`proxy::handle`]. Its body (if
//!    any) flows through a [`pipe`]: the driver reads and decodes body
//!    bytes only when the upstream side asks for the next frame, and
//!    answers `Expect: 100-continue` at that moment. While the response is
//!    awaited, a request with no body left to read is watched for the
//!    client closing, which cancels the upstream request.
//! 4. **response** — the head is encoded with the codec's framing
//!    decision, small body frames are coalesced into the write buffer and
//!    large ones written as they are; the request body keeps flowing
//!    meanwhile (full duplex). A `101` hands the socket to the upgrade
//!    tunnel.
//! 5. **after** — keep-alive only if both sides allow it, the request body
//!    was read to its end, and the listener is not draining; then the
//!    buffers go back to the pool and the connection is idle again.
//!
//! Between requests the task holds the socket, a few settings and the
//! `Arc`s of its context: no buffer. Anything the client sends after a
//! refused head is read and discarded for a moment before closing
//! ("lingering close", as nginx does), so the client reads the error
//! instead of a reset.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::error::{BodyFault, ClientBodyError, ProxyError};
use crate::http1::{self as codec, BodyDecoder, Chunk, RawFields, RequestHead, ResponseFraming};
use crate::proxy::{self, ConnCtx, Tunnel};
use crate::upstream::body::{ClientBody, ResponseBody};
use crate::upstream::buffers;
use crate::upstream::headers as hdr;
use crate::upstream::pipe::{pipe, PipeSender};
use crate::upstream::wire::{poll_out, BodyWriter, Outgoing};

/// A byte stream the driver can wait on without holding a buffer.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    /// Ready when a read would make progress (bytes or end of stream).
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Transport for TcpStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (tcp, tls) = self.get_ref();
        // rustls may already hold decrypted bytes or the peer's
        // close_notify: then a read makes progress with no new TLS bytes.
        if !tls.wants_read() {
            return Poll::Ready(Ok(()));
        }
        tcp.poll_read_ready(cx)
    }
}

/// A listener's HTTP/1.1 settings, fixed per connection at accept.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Parser limits.
    pub limits: codec::Limits,
    /// `timeouts.client_idle`: end of a response → first byte of the next.
    pub idle: Duration,
    /// `timeouts.header_read`: first byte → end of the head.
    pub header_read: Duration,
    /// `timeouts.body_read`: the wait for a body's first bytes before the
    /// request goes upstream (later gaps are the body meter's).
    pub body_read: Duration,
}

/// The room a request body read asks for.
const BODY_READ: usize = 16 * 1024;

/// How long a refused connection's further input is read and discarded.
const LINGER: Duration = Duration::from_secs(2);

/// Serves HTTP/1.1 on `io` until the connection closes. `early` holds bytes
/// already read from it (protocol detection), usually none.
///
/// Not an `async fn`: an async fn's future keeps its arguments beside
/// everything they are moved into, so the connection is built first and
/// the future holds it once (`run` borrows it in place for the same
/// reason: a by-value `self` would be stored twice).
pub fn serve<T: Transport>(
    io: T,
    early: BytesMut,
    ctx: Arc<ConnCtx>,
    settings: Arc<Settings>,
    drain: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    let mut conn = Connection {
        io,
        buf: (!early.is_empty()).then_some(early),
        ctx,
        settings,
        drain,
    };
    async move { conn.run().await }
}

struct Connection<T> {
    io: T,
    /// `None` while idle with nothing unread.
    buf: Option<BytesMut>,
    ctx: Arc<ConnCtx>,
    settings: Arc<Settings>,
    drain: CancellationToken,
}

impl<T: Transport> Connection<T> {
    async fn run(&mut self) {
        loop {
            if !self.wait_for_request().await {
                break;
            }
            // Boxed: reading a head and the exchange that follows (with the
            // proxy's request future) are far larger than the idle wait, and
            // the task is as large as its largest state for the
            // connection's whole life. One allocation per request keeps an
            // idle connection's task small.
            match Box::pin(self.serve_request()).await {
                After::KeepAlive => self.idle(),
                After::Close => break,
                After::Refused => return,
                After::Tunnel(tunnel) => {
                    let early = self.buf.take().map(BytesMut::freeze).unwrap_or_default();
                    // Boxed, like the exchange: the tunnel's state is large.
                    Box::pin(tunnel.run(&mut self.io, early)).await;
                    return;
                }
            }
        }
        let _ = self.io.shutdown().await;
    }

    /// Reads one request head and serves the exchange it starts; a
    /// refused head is answered here.
    async fn serve_request(&mut self) -> After {
        let head = match self.read_head().await {
            Ok(Some(head)) => head,
            Ok(None) => return After::Close,
            Err(e) => {
                self.refuse(e).await;
                return After::Refused;
            }
        };
        let mut exchange = Exchange::new(head);
        exchange.run(self).await
    }

    /// Waits for the next request's first byte: `false` when the
    /// connection should close instead (idle timeout, drain, error).
    async fn wait_for_request(&mut self) -> bool {
        if self.buf.as_ref().is_some_and(|b| !b.is_empty()) {
            return !self.drain.is_cancelled();
        }
        let io = &self.io;
        tokio::select! {
            biased;
            _ = self.drain.cancelled() => false,
            r = poll_fn(|cx| io.poll_readable(cx)) => r.is_ok(),
            _ = tokio::time::sleep(self.settings.idle) => false,
        }
    }

    /// Reads until the codec has a whole head. `Ok(None)`: the client
    /// closed (or the read failed) before sending one; nothing to answer.
    async fn read_head(&mut self) -> Result<Option<RequestHead>, ProxyError> {
        let deadline = Instant::now() + self.settings.header_read;
        let mut buf = self.buf.take().unwrap_or_else(buffers::take_read);
        // Each read's new bytes are scanned once, however slowly they come.
        let mut scan = codec::HeadScan::default();
        let result = loop {
            match codec::parse_request_resumed(&mut buf, &self.settings.limits, &mut scan) {
                Ok(Some(head)) => break Ok(Some(head)),
                Err(e) => break Err(ProxyError::Head(e)),
                Ok(None) => {}
            }
            reserve(&mut buf);
            let read = tokio::time::timeout_at(deadline, read_buf(&mut self.io, &mut buf));
            match read.await {
                Err(_) => break Err(ProxyError::HeadTimeout),
                Ok(Ok(0)) | Ok(Err(_)) => break Ok(None),
                Ok(Ok(_)) => {}
            }
        };
        self.buf = Some(buf);
        result
    }

    /// Answers a refused head, then closes (after a lingering read).
    async fn refuse(&mut self, err: ProxyError) {
        tracing::debug!(peer = %self.ctx.peer, error = %err, "refused request head");
        let response = proxy::error_response(&err, &hdr::new_request_id());
        let mut out = buffers::take_write();
        let (parts, body) = response.into_parts();
        let framing = ResponseFraming::Length(body.size_hint().exact().unwrap_or(0));
        let date = codec::http_date();
        codec::encode_response_head(
            parts.status,
            codec::Fields::new(&parts.headers),
            framing,
            false,
            Version::HTTP_11,
            &date,
            &mut out,
        );
        let body = http_body_util::BodyExt::collect(body).await;
        if let Ok(body) = body {
            out.extend_from_slice(&body.to_bytes());
        }
        let written = async {
            self.io.write_all(&out).await?;
            self.io.flush().await?;
            self.io.shutdown().await
        };
        let _ = tokio::time::timeout(LINGER, written).await;
        buffers::give_write(out);
        linger(&mut self.io).await;
    }

    /// Reads and decodes a chunked body's first step before the request
    /// goes upstream, so that a body whose framing is broken from its first
    /// line is refused (400) without reaching an endpoint. Skipped when the
    /// client waits for `100 Continue` before sending its body. `Err(None)`:
    /// the client went away.
    async fn first_body_step(&mut self, feed: &mut Feed) -> Result<(), Option<ProxyError>> {
        if feed.continue_pending {
            return Ok(());
        }
        let deadline = Instant::now() + self.settings.body_read;
        let buf = self.buf.get_or_insert_with(buffers::take_read);
        loop {
            match feed.decoder.decode(buf) {
                Ok(Some(step)) => {
                    feed.first = Some(step);
                    return Ok(());
                }
                Err(e) => {
                    let fault = ClientBodyError::Framing(e).fault();
                    return Err(Some(ProxyError::ClientBody(fault)));
                }
                Ok(None) => {}
            }
            reserve(buf);
            match tokio::time::timeout_at(deadline, read_buf(&mut self.io, buf)).await {
                Err(_) => return Err(Some(ProxyError::ClientBody(BodyFault::Timeout))),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(None),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Back to idle: the read buffer goes back to the pool unless it holds
    /// a pipelined request.
    fn idle(&mut self) {
        if let Some(buf) = self.buf.take_if(|b| b.is_empty()) {
            buffers::give_read(buf);
        }
    }
}

/// Reads and discards the client's further input for a moment so that it
/// reads the response before the connection closes, instead of a reset.
async fn linger<T: AsyncRead + Unpin>(io: &mut T) {
    let mut sink = [0u8; 1024];
    let discard = async {
        loop {
            match tokio::io::AsyncReadExt::read(io, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, discard).await;
}

/// Makes room for a read: at least a quarter of [`buffers::BUF_SIZE`].
fn reserve(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < buffers::BUF_SIZE / 4 {
        buf.reserve(buffers::BUF_SIZE);
    }
}

/// Reads into `buf`. Not tokio's `AsyncReadExt::read_buf`: its future is
/// larger and lives in the connection task's idle-time state
/// (`connection_futures_stay_small` grows past its bound with it).
async fn read_buf<T: AsyncRead + Unpin>(io: &mut T, buf: &mut BytesMut) -> io::Result<usize> {
    poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf)).await
}

/// What the connection does after an exchange.
enum After {
    KeepAlive,
    Close,
    /// A refused head was answered; the connection is done.
    Refused,
    Tunnel(Tunnel),
}

/// One request and its response on the connection.
struct Exchange {
    /// The head, moved into the exchange before it is boxed: passed as an
    /// argument to `run` instead, it also takes a slot in the connection
    /// task's own state (~280 B per idle connection).
    head: Option<RequestHead>,
    method: http::Method,
    version: Version,
    keep_alive: bool,
    feed: Option<Feed>,
}

impl Exchange {
    fn new(head: RequestHead) -> Self {
        Exchange {
            method: head.method.clone(),
            version: head.version,
            keep_alive: head.keep_alive,
            feed: None,
            head: Some(head),
        }
    }

    // `&mut self`, here and in `respond`: an async fn's future stores each
    // by-value argument twice (as passed and as moved into its local), and
    // copies it from one to the other when first polled.
    async fn run<T: Transport>(&mut self, conn: &mut Connection<T>) -> After {
        let Some(head) = self.head.take() else {
            return After::Close;
        };
        let (request, fields, mut feed) = into_request(head, &conn.settings.limits);
        // The head's limits first: a body too large by its declared length
        // is refused before anything waits for it.
        if let Err(e) = crate::limits::check_head(&request, &conn.ctx.limits) {
            conn.refuse(e).await;
            return After::Close;
        }
        if let Some(feed) = feed.as_mut().filter(|f| f.chunked) {
            match conn.first_body_step(feed).await {
                Ok(()) => {}
                Err(Some(e)) => {
                    conn.refuse(e).await;
                    return After::Close;
                }
                Err(None) => return After::Close,
            }
        }
        self.feed = feed;
        let mut out = buffers::take_write();
        let response = {
            let handled = proxy::handle(Arc::clone(&conn.ctx), request, Some(fields));
            tokio::pin!(handled);
            let waited = poll_fn(|cx| self.poll_response(conn, &mut out, handled.as_mut(), cx));
            waited.await
        };
        let after = match response {
            Some(response) => self.respond(conn, &mut out, response).await,
            None => After::Close,
        };
        buffers::give_write(out);
        after
    }

    /// Drives the proxy's future to its response while feeding the body;
    /// `None` when the client closed the connection first.
    fn poll_response<T, F>(
        &mut self,
        conn: &mut Connection<T>,
        out: &mut Vec<u8>,
        handled: Pin<&mut F>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Response<ResponseBody>>>
    where
        T: Transport,
        F: std::future::Future<Output = Result<Response<ResponseBody>, std::convert::Infallible>>,
    {
        if let Poll::Ready(Ok(response)) = handled.poll(cx) {
            return Poll::Ready(Some(response));
        }
        let buf = conn.buf.get_or_insert_with(buffers::take_read);
        match &mut self.feed {
            Some(feed) if !feed.done() => {
                feed.poll(&mut conn.io, buf, out, cx);
                if matches!(poll_out(&mut conn.io, out, None, cx), Poll::Ready(Err(_))) {
                    return Poll::Ready(None);
                }
            }
            // Nothing left to read for this request: a read now only
            // reveals the client closing (or buffers its next request).
            _ => {
                if buf.len() < conn.settings.limits.max_head_bytes
                    && watch_close(&mut conn.io, buf, cx)
                {
                    return Poll::Ready(None);
                }
            }
        }
        Poll::Pending
    }

    /// Writes the response (or hands over to a tunnel).
    async fn respond<T: Transport>(
        &mut self,
        conn: &mut Connection<T>,
        out: &mut Vec<u8>,
        response: Response<ResponseBody>,
    ) -> After {
        let (mut parts, mut body) = response.into_parts();
        if let Some(tunnel) = parts.extensions.remove::<Tunnel>() {
            return write_switching(conn, out, &parts)
                .await
                .map_or(After::Close, |()| After::Tunnel(tunnel));
        }
        let framing =
            codec::response_framing(&self.method, self.version, parts.status, exact(&body));
        let keep = self.keep_alive
            && codec::keep_alive_after(true, framing)
            && !asks_close(&parts.headers)
            && !conn.drain.is_cancelled();
        {
            // An HTTP/1.1 endpoint's fields, as received, go first; a
            // block, so that they are not kept while the body streams.
            let raw = body.take_raw_fields();
            let fields =
                codec::Fields::of(&parts.headers, &parts.extensions).with_raw(raw.as_ref());
            codec::encode_response_head(
                parts.status,
                fields,
                framing,
                keep,
                self.version,
                &codec::http_date(),
                out,
            );
        }
        // A final response is on its way: `100 Continue` may not follow.
        if let Some(feed) = self.feed.as_mut() {
            feed.continue_pending = false;
        }
        let chunked = framing == ResponseFraming::Chunked;
        let empty = framing == ResponseFraming::NoBody;
        let writer = BodyWriter::new(body, chunked, empty);
        let mut outgoing = Outgoing::new(std::mem::take(out), writer);
        let written = poll_fn(|cx| self.poll_write_response(conn, &mut outgoing, cx)).await;
        *out = outgoing.into_out();
        let body_read = self.feed.as_ref().is_none_or(Feed::complete);
        if written && keep && body_read && !conn.drain.is_cancelled() {
            After::KeepAlive
        } else {
            After::Close
        }
    }

    /// Writes the response while the request body keeps flowing; `false`
    /// when the response was cut short (socket or body failure).
    fn poll_write_response<T: Transport>(
        &mut self,
        conn: &mut Connection<T>,
        outgoing: &mut Outgoing<ResponseBody>,
        cx: &mut Context<'_>,
    ) -> Poll<bool> {
        if let Some(feed) = self.feed.as_mut().filter(|f| !f.done()) {
            let buf = conn.buf.get_or_insert_with(buffers::take_read);
            feed.poll(&mut conn.io, buf, &mut outgoing.out, cx);
        }
        outgoing.poll_send(&mut conn.io, cx).map(|r| r.is_ok())
    }
}

/// The exact body length a response declares, if any.
fn exact(body: &ResponseBody) -> Option<u64> {
    body.size_hint().exact()
}

/// A response field `Connection: close` (weir's own error responses set
/// it when the connection's state is suspect).
fn asks_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// Writes a `101` head with its `Connection`/`Upgrade` fields as the
/// endpoint sent them.
async fn write_switching<T: Transport>(
    conn: &mut Connection<T>,
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
) -> io::Result<()> {
    out.clear();
    let fields = codec::Fields::of(&parts.headers, &parts.extensions);
    codec::encode_response_head(
        StatusCode::SWITCHING_PROTOCOLS,
        fields,
        ResponseFraming::NoBody,
        true,
        Version::HTTP_11,
        &codec::http_date(),
        out,
    );
    conn.io.write_all(out).await?;
    conn.io.flush().await
}

/// Turns a parsed head into the request the proxy handles (its map left
/// for what weir adds), the client's fields as received, and the body
/// pipe's sending end when the request has a body.
fn into_request(
    head: RequestHead,
    limits: &codec::Limits,
) -> (Request<ClientBody>, RawFields, Option<Feed>) {
    let RequestHead {
        method,
        uri,
        version,
        headers,
        body,
        expect_continue,
        ..
    } = head;
    let decoder = BodyDecoder::new(body, limits);
    let (body, feed) = if decoder.is_done() {
        (ClientBody::Empty, None)
    } else {
        let hint = decoder
            .remaining_hint()
            .map_or_else(SizeHint::default, SizeHint::with_exact);
        let (tx, rx) = pipe(hint);
        let feed = Feed {
            decoder,
            tx: Some(tx),
            first: None,
            chunked: body == codec::BodyFraming::Chunked,
            continue_pending: expect_continue,
            complete: false,
        };
        (ClientBody::Pipe(rx), Some(feed))
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    (request, headers, feed)
}

/// The request body's way from the socket into the pipe.
struct Feed {
    decoder: BodyDecoder,
    /// `None` once the body ended, failed, or its consumer went away.
    tx: Option<PipeSender>,
    /// The body's first step, decoded before the request went upstream.
    first: Option<Chunk>,
    /// The body is chunked (its framing can be malformed).
    chunked: bool,
    /// `Expect: 100-continue` not answered yet.
    continue_pending: bool,
    /// The body was read to its end.
    complete: bool,
}

impl Feed {
    fn done(&self) -> bool {
        self.tx.is_none()
    }

    fn complete(&self) -> bool {
        self.complete
    }

    /// Moves body bytes while the consumer asks for them. Returns when it
    /// must wait (for the consumer or the socket) or the body is over.
    fn poll<T: AsyncRead + Unpin>(
        &mut self,
        io: &mut T,
        buf: &mut BytesMut,
        out: &mut Vec<u8>,
        cx: &mut Context<'_>,
    ) {
        while let Some(tx) = &self.tx {
            match tx.poll_want(cx) {
                Poll::Pending => return,
                Poll::Ready(Err(_)) => {
                    // The body is no longer wanted (an early response, a
                    // limit): the connection cannot be reused.
                    self.tx = None;
                    return;
                }
                Poll::Ready(Ok(())) => {}
            }
            if std::mem::take(&mut self.continue_pending) {
                out.extend_from_slice(codec::CONTINUE);
            }
            if let Some(first) = self.first.take() {
                self.deliver(first);
                continue;
            }
            match self.decoder.decode(buf) {
                Ok(Some(chunk)) => self.deliver(chunk),
                Ok(None) => {
                    // Body reads are larger than head reads: an upload
                    // moves in few syscalls.
                    if buf.capacity() - buf.len() < buffers::BUF_SIZE {
                        buf.reserve(BODY_READ);
                    }
                    match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
                        Poll::Pending => return,
                        Poll::Ready(Ok(0)) => {
                            let end = self.decoder.eof();
                            self.end_of_stream(end);
                        }
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(_)) => self.fail(ClientBodyError::Closed),
                    }
                }
                Err(e) => self.fail(ClientBodyError::Framing(e)),
            }
        }
    }

    fn deliver(&mut self, chunk: Chunk) {
        match chunk {
            Chunk::Data(data) => {
                self.send(Frame::data(data));
                if self.decoder.remaining_hint() == Some(0) {
                    // A length-framed body ends with its last byte: the
                    // consumer knows it from the size hint and may never
                    // ask for the end, so it is sent now.
                    if let Ok(Some(end)) = self.decoder.decode(&mut BytesMut::new()) {
                        self.deliver(end);
                    }
                }
            }
            Chunk::Trailers(trailers) => self.send(Frame::trailers(trailers)),
            Chunk::End => {
                self.complete = true;
                if let Some(tx) = self.tx.take() {
                    tx.finish();
                }
            }
        }
    }

    fn send(&mut self, frame: Frame<Bytes>) {
        if let Some(tx) = &self.tx {
            tx.send(frame);
        }
    }

    fn end_of_stream(&mut self, end: Result<Chunk, codec::FramingError>) {
        match end {
            Ok(chunk) => self.deliver(chunk),
            Err(_) => self.fail(ClientBodyError::Closed),
        }
    }

    fn fail(&mut self, err: ClientBodyError) {
        if let Some(tx) = self.tx.take() {
            tx.abort(err);
        }
    }
}

/// Reads while a request without body is in flight: `true` when the
/// client closed the connection (or it failed). Bytes read are kept: they
/// are the client's next request.
fn watch_close<T: AsyncRead + Unpin>(io: &mut T, buf: &mut BytesMut, cx: &mut Context<'_>) -> bool {
    reserve(buf);
    matches!(
        tokio_util::io::poll_read_buf(Pin::new(io), cx, buf),
        Poll::Ready(Ok(0)) | Poll::Ready(Err(_))
    )
}
