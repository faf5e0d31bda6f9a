//! weir's HTTP/1.1 client: one request on one pooled endpoint connection,
//! driven by the task that serves the client — no connection task and no
//! channel in between (hyper's client had both).
//!
//! [`exchange`] writes the encoded head and the request body (one `writev`
//! for the head and a small first chunk) and reads until the response
//! head is complete, skipping interim `1xx` responses. The response body,
//! [`H1Body`], then reads from the same connection whenever the client side
//! polls it, and keeps sending whatever is left of the request body (full
//! duplex: an endpoint may answer before it has read the whole upload).
//!
//! A connection goes back to the pool only when the response was read to
//! its end, the request was written whole, both sides allowed keep-alive
//! and nothing followed the response: bytes after a complete response
//! (RFC 9112 §6.3 says a proxy must not pass them on) close the connection,
//! are logged, and counted, so a later request can never receive another
//! request's bytes.
//!
//! Idle pooled connections hold no buffers, just the socket. Before reuse a
//! connection is checked without blocking ([`H1Conn::still_open`], a
//! non-blocking peek as nginx does): one the endpoint closed, or that has
//! stray bytes, is dropped. A request sent on a reused connection that the
//! endpoint closed before sending any byte back never reached it, so the
//! pool sends it once more on a fresh connection, whatever its method
//! ([`Failure::Stale`]).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{Method, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::io::ReadBuf;

use super::body::RequestBody;
use super::wire::{Outgoing, SendFailure};
use crate::error::{ClientBodyError, ProxyError};
use crate::http1::{
    self as codec, BodyDecoder, Chunk, RawFields, ResponseHead, UpstreamFraming as Framing,
};
use crate::tls::upstream::MaybeTls;

/// The most a body read asks for at once.
const BODY_READ: usize = 64 * 1024;

/// An endpoint connection, idle in the pool or lent to one request.
#[derive(Debug)]
pub struct H1Conn {
    io: MaybeTls,
    /// It carried a request before (a stale close is then possible).
    reused: bool,
}

impl H1Conn {
    /// A freshly connected connection.
    pub fn new(io: MaybeTls) -> Self {
        H1Conn { io, reused: false }
    }

    /// Whether an idle connection may carry another request: a peek that
    /// would block means the endpoint has neither closed it nor sent
    /// anything unasked. Costs one non-blocking syscall.
    pub fn still_open(&self) -> bool {
        let tcp = match &self.io {
            MaybeTls::Plain(s) => s,
            MaybeTls::Tls(s) => {
                let (tcp, tls) = s.get_ref();
                // Decrypted bytes or a close_notify already buffered.
                if !tls.wants_read() {
                    return false;
                }
                tcp
            }
        };
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        tcp.poll_peek(&mut cx, &mut buf).is_pending()
    }

    /// It carried a request before.
    pub fn is_reused(&self) -> bool {
        self.reused
    }

    /// The socket, for an upgrade tunnel.
    pub fn into_io(self) -> MaybeTls {
        self.io
    }
}

/// What an exchange could not do.
#[derive(Debug)]
pub enum Failure {
    /// A reused connection was closed by the endpoint before any response
    /// byte came back and before any of the request body was consumed:
    /// the request never reached it and can go again, on a fresh
    /// connection. The body is handed back.
    Stale(RequestBody),
    /// Anything else: the request may have reached the endpoint.
    Error(ProxyError),
}

/// Sends one request and reads its response head. `head` is the encoded
/// request head; `chunked` whether the body goes chunked; `empty` whether
/// there is no body at all. The response's body keeps the connection.
pub async fn exchange(
    conn: H1Conn,
    head: Vec<u8>,
    body: RequestBody,
    framing: (bool, bool),
    method: &Method,
    limits: &codec::Limits,
    addr: SocketAddr,
) -> Result<Response<Box<H1Body>>, Failure> {
    let (chunked, empty) = framing;
    let replay = body.replayable();
    let writer = super::wire::BodyWriter::new(body, chunked, empty);
    let mut state = Attempt {
        conn,
        upload: Some(Outgoing::new(head, writer)),
        rbuf: super::buffers::take_read(),
        scan: codec::ResponseScan::default(),
        received: false,
        write_error: None,
        consumed: false,
    };
    let head = std::future::poll_fn(|cx| state.poll_head(method, limits, cx)).await;
    match head {
        Ok(head) => Ok(state.into_response(head, limits, addr)),
        Err(AttemptError::Closed) if state.stale() => match replay.or_else(|| state.take_body()) {
            Some(body) => Err(Failure::Stale(body)),
            None => Err(Failure::Error(closed(addr))),
        },
        Err(e) => Err(Failure::Error(e.into_proxy(addr))),
    }
}

fn closed(addr: SocketAddr) -> ProxyError {
    ProxyError::UpstreamProtocol {
        addr,
        reason: "connection closed before the response".into(),
    }
}

/// One attempt's state until the response head.
struct Attempt {
    conn: H1Conn,
    upload: Option<Outgoing<RequestBody>>,
    rbuf: BytesMut,
    scan: codec::ResponseScan,
    /// Any response byte arrived.
    received: bool,
    /// Writing failed; the endpoint may still have answered.
    write_error: Option<io::Error>,
    /// Some of the request body was taken from it.
    consumed: bool,
}

/// Why no response head came.
#[derive(Debug)]
enum AttemptError {
    /// The connection closed (or reset) before a complete head.
    Closed,
    /// The client's body failed.
    Body(ClientBodyError),
    /// The endpoint's head broke the rules.
    Head(codec::ResponseError),
    /// Reading failed.
    Io(io::Error),
    /// The endpoint sent a TLS alert after the handshake (TLS 1.3 client
    /// certificate checks): a TLS failure, not an HTTP one.
    TlsAlert(io::Error),
}

impl AttemptError {
    fn into_proxy(self, addr: SocketAddr) -> ProxyError {
        match self {
            AttemptError::Closed => closed(addr),
            AttemptError::Body(e) => ProxyError::ClientBody(e.fault()),
            AttemptError::Head(e) => ProxyError::UpstreamProtocol {
                addr,
                reason: e.to_string().into(),
            },
            AttemptError::Io(e) => ProxyError::UpstreamProtocol {
                addr,
                reason: format!("read failed: {e}").into(),
            },
            AttemptError::TlsAlert(error) => {
                let alert = crate::tls::upstream::received_alert(&error);
                tracing::warn!(
                    endpoint = %addr,
                    reason = ?alert,
                    error = %error,
                    "upstream TLS handshake failed: the endpoint sent an alert after the handshake"
                );
                ProxyError::Connect { addr, error }
            }
        }
    }
}

impl Attempt {
    /// A close that proves the request never reached the endpoint.
    fn stale(&self) -> bool {
        self.conn.reused && !self.received && !self.consumed
    }

    fn take_body(&mut self) -> Option<RequestBody> {
        let upload = self.upload.take()?;
        Some(upload.into_body())
    }

    fn poll_head(
        &mut self,
        method: &Method,
        limits: &codec::Limits,
        cx: &mut Context<'_>,
    ) -> Poll<Result<ResponseHead, AttemptError>> {
        self.poll_upload(cx)?;
        loop {
            if !self.rbuf.is_empty() {
                match codec::parse_response(&mut self.rbuf, limits, method, &mut self.scan) {
                    Ok(Some(head)) if skip_interim(&head) => continue,
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(AttemptError::Head(e))),
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                self.rbuf.reserve(super::buffers::BUF_SIZE);
            }
            let read =
                tokio_util::io::poll_read_buf(Pin::new(&mut self.conn.io), cx, &mut self.rbuf);
            match std::task::ready!(read) {
                Ok(0) => return Poll::Ready(Err(AttemptError::Closed)),
                Ok(_) => self.received = true,
                Err(e) if crate::tls::upstream::received_alert(&e).is_some() => {
                    return Poll::Ready(Err(AttemptError::TlsAlert(e)))
                }
                Err(e) if self.received => return Poll::Ready(Err(AttemptError::Io(e))),
                // A reset before any response byte is a close.
                Err(_) => return Poll::Ready(Err(AttemptError::Closed)),
            }
        }
    }

    /// Sends what the request body has ready; a write error stops the
    /// upload but not the reading (an early answer may be waiting).
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Result<(), AttemptError> {
        let Some(upload) = self.upload.as_mut().filter(|u| !u.is_done()) else {
            return Ok(());
        };
        let polled = upload.poll_send(&mut self.conn.io, cx);
        self.consumed |= upload.writer.touched();
        match polled {
            Poll::Ready(Err(SendFailure::Body(e))) => Err(AttemptError::Body(e)),
            Poll::Ready(Err(SendFailure::Io(e))) => {
                self.write_error = Some(e);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn into_response(
        self,
        head: ResponseHead,
        limits: &codec::Limits,
        addr: SocketAddr,
    ) -> Response<Box<H1Body>> {
        let ResponseHead {
            status,
            version,
            headers,
            body,
            keep_alive,
            ..
        } = head;
        let upload = match self.upload {
            Some(u) if !u.is_done() && self.write_error.is_none() => Some(Box::new(u)),
            Some(u) => {
                super::buffers::give_write(u.into_out());
                None
            }
            None => None,
        };
        let reusable = keep_alive && self.write_error.is_none() && body != Framing::Tunnel;
        let body = Box::new(H1Body {
            tunnel: body == Framing::Tunnel,
            decoder: body.decoder(limits),
            conn: Some(self.conn),
            rbuf: self.rbuf,
            upload,
            reusable,
            endpoint_fault: false,
            addr,
            fields: headers,
            settings: None,
        });
        // The fields stay as received, in the body (see `H1Body::fields`):
        // the map is left empty for what weir adds.
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.version_mut() = version;
        response
    }
}

/// Interim responses the client does not see: `100 Continue` and other
/// `1xx` except `101`, which switches protocols.
fn skip_interim(head: &ResponseHead) -> bool {
    head.status.is_informational() && head.status != http::StatusCode::SWITCHING_PROTOCOLS
}

/// An endpoint's response body, read from its connection by whoever polls
/// it; the connection comes back out ([`H1Body::take_reusable`]) when the
/// body ended cleanly.
#[derive(Debug)]
pub struct H1Body {
    conn: Option<H1Conn>,
    rbuf: BytesMut,
    decoder: BodyDecoder,
    /// What is left of the request body, still being sent (boxed: rare,
    /// and large).
    upload: Option<Box<Outgoing<RequestBody>>>,
    reusable: bool,
    /// A `101` (or a 2xx to CONNECT): the connection goes to a tunnel.
    tunnel: bool,
    /// The endpoint's body was malformed, cut short or unreadable.
    endpoint_fault: bool,
    addr: SocketAddr,
    /// The response's fields as received. They travel with the body, not
    /// in the response's `HeaderMap`, so that an HTTP/1.1 client gets them
    /// without a map being built (see `http1::RawFields`); whoever needs a
    /// map asks [`super::body::materialize`].
    fields: RawFields,
    /// The pool's settings, to give the connection back with (set by
    /// `super::body::ResponseBody::upstream`).
    pub(super) settings: Option<super::ConnectSettings>,
}

/// An endpoint's response body failed.
#[derive(Debug, thiserror::Error)]
pub enum H1BodyError {
    /// Its framing was malformed or it was cut short.
    #[error("upstream body from {addr}: {error}")]
    Framing {
        /// The endpoint.
        addr: SocketAddr,
        /// What was wrong.
        error: codec::FramingError,
    },
    /// The client's request body failed while the response streamed.
    #[error("{0}")]
    Request(ClientBodyError),
    /// Reading failed.
    #[error("upstream body from {addr}: {error}")]
    Io {
        /// The endpoint.
        addr: SocketAddr,
        /// The error.
        error: io::Error,
    },
}

/// The read buffer goes back to the pool here rather than when the body
/// ends: the last data chunk, a slice of the buffer, is still on its way to
/// the client then, and a buffer whose memory is shared cannot be reused
/// (it would be freed, and a new one allocated for the next response).
impl Drop for H1Body {
    fn drop(&mut self) {
        super::buffers::give_read(std::mem::take(&mut self.rbuf));
    }
}

impl H1Body {
    /// The response's fields as received (those not yet dropped).
    pub fn fields(&self) -> &RawFields {
        &self.fields
    }

    /// The response's fields, to drop some.
    pub fn fields_mut(&mut self) -> &mut RawFields {
        &mut self.fields
    }

    /// Takes the response's fields out, leaving none.
    pub fn take_fields(&mut self) -> RawFields {
        std::mem::take(&mut self.fields)
    }

    /// The connection, if the exchange left it fit for another request.
    /// Bytes after a complete response make it unfit (and are reported).
    pub fn take_reusable(&mut self) -> Option<H1Conn> {
        if !self.decoder.is_done() || !self.reusable || self.upload.is_some() {
            return None;
        }
        if !self.rbuf.is_empty() {
            tracing::warn!(
                endpoint = %self.addr,
                bytes = self.rbuf.len(),
                "endpoint sent bytes after a complete response; connection closed"
            );
            return None;
        }
        let mut conn = self.conn.take()?;
        conn.reused = true;
        // The read buffer goes back when the body is dropped (see `Drop`).
        Some(conn)
    }

    /// Whether the endpoint's body failed (counted by the caller; a failure
    /// of the client's request body is not the endpoint's).
    pub fn endpoint_fault(&self) -> bool {
        self.endpoint_fault
    }

    /// Whether bytes followed the complete response (counted by the caller).
    pub fn stray_bytes(&self) -> bool {
        self.decoder.is_done() && !self.rbuf.is_empty()
    }

    /// For a `101`: the socket and the bytes the endpoint already sent
    /// behind the head, for the tunnel.
    pub fn into_tunnel(mut self) -> Option<(MaybeTls, Bytes)> {
        if !self.tunnel {
            return None;
        }
        let conn = self.conn.take()?;
        Some((conn.into_io(), std::mem::take(&mut self.rbuf).freeze()))
    }

    /// Sends more of the request body. The client's body failing (a
    /// limit, `body_read`) fails the exchange; the endpoint no longer
    /// reading it does not (its response may still complete), but the
    /// connection is done.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Result<(), H1BodyError> {
        let (Some(upload), Some(conn)) = (self.upload.as_mut(), self.conn.as_mut()) else {
            return Ok(());
        };
        match upload.poll_send(&mut conn.io, cx) {
            Poll::Ready(Ok(())) => self.upload = None,
            Poll::Ready(Err(SendFailure::Body(error))) => {
                self.upload = None;
                self.reusable = false;
                return Err(H1BodyError::Request(error));
            }
            Poll::Ready(Err(SendFailure::Io(_))) => {
                self.upload = None;
                self.reusable = false;
            }
            Poll::Pending => {}
        }
        Ok(())
    }

    fn read_more(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1BodyError>>> {
        let addr = self.addr;
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        // Body reads are sized to what is left (up to 64 KiB): a large
        // body moves in few reads and writes, a small one costs little.
        let want = match self.decoder.remaining_hint() {
            Some(n) => usize::try_from(n)
                .unwrap_or(BODY_READ)
                .clamp(1024, BODY_READ),
            None => BODY_READ / 4,
        };
        if self.rbuf.capacity() - self.rbuf.len() < want {
            self.rbuf.reserve(want);
        }
        match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut self.rbuf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(0)) => {
                self.reusable = false;
                match self.decoder.eof() {
                    Ok(chunk) => Poll::Ready(self.frame(chunk).map(Ok)),
                    Err(error) => {
                        self.endpoint_fault = true;
                        Poll::Ready(Some(Err(H1BodyError::Framing { addr, error })))
                    }
                }
            }
            Poll::Ready(Ok(_)) => Poll::Ready(Some(Ok(Frame::data(Bytes::new())))),
            Poll::Ready(Err(error)) => {
                self.reusable = false;
                self.endpoint_fault = true;
                Poll::Ready(Some(Err(H1BodyError::Io { addr, error })))
            }
        }
    }

    fn frame(&mut self, chunk: Chunk) -> Option<Frame<Bytes>> {
        match chunk {
            Chunk::Data(d) => Some(Frame::data(d)),
            Chunk::Trailers(t) => Some(Frame::trailers(t)),
            Chunk::End => None,
        }
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = H1BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1BodyError>>> {
        let this = self.get_mut();
        if let Err(e) = this.poll_upload(cx) {
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            if this.tunnel || this.decoder.is_done() {
                return Poll::Ready(None);
            }
            match this.decoder.decode(&mut this.rbuf) {
                Ok(Some(chunk)) => return Poll::Ready(this.frame(chunk).map(Ok)),
                Ok(None) => {}
                Err(error) => {
                    this.reusable = false;
                    this.endpoint_fault = true;
                    let addr = this.addr;
                    return Poll::Ready(Some(Err(H1BodyError::Framing { addr, error })));
                }
            }
            match std::task::ready!(this.read_more(cx)) {
                // New bytes: decode them.
                Some(Ok(f)) if f.data_ref().is_some_and(|d| d.is_empty()) => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.tunnel || self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining_hint() {
            Some(n) => SizeHint::with_exact(n),
            None if self.decoder.is_done() => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}
