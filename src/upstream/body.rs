//! Request and response bodies as they pass through weir.
//!
//! Bodies stream frame by frame in both directions; nothing is buffered.
//! [`ResponseBody`] is where a request *ends*: it owns the backend [`Lease`]
//! and the pooled upstream connection, so the in-flight count drops and the
//! connection goes back to the pool exactly when the last byte has been read
//! (or the client went away), and the access-log line and metrics are
//! emitted with the true duration and byte count.
//!
//! An upstream body error is passed on as an error, never as a clean end of
//! stream, so hyper aborts the downstream response (HTTP/1: the connection
//! closes before the declared length or final chunk; HTTP/2: RST_STREAM)
//! and the client can tell the response was truncated.
//!
//! Both directions of one exchange share a [`Progress`] clock: the request
//! body's meter runs the `timeouts.body_read` timer, and the response body
//! stamps the clock as it passes bytes to the client, so a stream is idle
//! only when neither side moves (see `crate::limits`).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h1::H1Body;
use super::pipe::PipeBody;
use super::{ConnectSettings, Lease};
use crate::http1::RawFields;
use crate::limits::Progress;

/// The client's request body as a connection driver delivers it: hyper's
/// for HTTP/2, weir's own [`PipeBody`] for HTTP/1.1.
#[derive(Debug)]
pub enum ClientBody {
    /// No body (HTTP/1 framing said so).
    Empty,
    /// An HTTP/2 stream's body.
    Hyper(Incoming),
    /// An HTTP/1.1 body read by `crate::server`'s driver.
    Pipe(PipeBody),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(ClientBodyError::Read),
            ClientBody::Pipe(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::Pipe(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::Pipe(b) => b.size_hint(),
        }
    }
}

/// A request body on its way upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// The client's body, streamed; the meter counts its bytes and applies
    /// the size limit and read timeout (`crate::limits`).
    Incoming(ClientBody, crate::limits::BodyMeter),
    /// A body held in memory (`None` once sent, or empty).
    Full(Option<Bytes>),
}

impl RequestBody {
    /// A copy to send again, for a body held in memory (`None` for a
    /// streamed one, which can be sent only once).
    pub fn replayable(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Full(b) => Some(RequestBody::Full(b.clone())),
            RequestBody::Incoming(..) => None,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        RequestBody::Full(None)
    }

    /// The exchange's progress clock, shared with this body's meter, for
    /// the response body to stamp ([`ResponseBody::with_progress`]).
    /// `None` for a body in memory or one that has already ended: no read
    /// timer runs for those, so nothing is allocated.
    pub fn progress(&mut self) -> Option<Progress> {
        match self {
            RequestBody::Incoming(b, meter) if !b.is_end_stream() => Some(meter.progress()),
            _ => None,
        }
    }
}

/// The client's request body failed (malformed chunked framing, the client
/// went away, a body limit). Its own type so the proxy can tell it apart
/// from an upstream failure when the upstream send reports an error: it is
/// the client's fault (4xx), not the endpoint's (502), and must not count
/// against the endpoint's health.
pub use crate::error::ClientBodyError;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            RequestBody::Incoming(b, meter) => meter.observe(Pin::new(b).poll_frame(cx), cx),
            RequestBody::Full(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Incoming(b, _) => b.is_end_stream(),
            RequestBody::Full(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Incoming(b, _) => b.size_hint(),
            RequestBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// Called once when a response is over, with whether its body completed
/// and how many body bytes went to the client.
pub trait Completion: Send + Sync + 'static {
    /// The response ended: `complete` is false when the body was cut short
    /// (upstream error or client gone).
    fn finish(self: Box<Self>, complete: bool, bytes: u64);
}

/// The response body sent to the client.
pub struct ResponseBody {
    inner: Inner,
    bytes: u64,
    done: bool,
    lease: Option<Lease>,
    completion: Option<Box<dyn Completion>>,
    progress: Option<Progress>,
    /// Bytes moved since `progress` was last stamped with a time.
    moving: bool,
}

enum Inner {
    Upstream(UpstreamBody),
    Full(Option<Bytes>),
}

/// A failed body, whichever side it came from.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// An endpoint's response body: hyper's for HTTP/2 pools, weir's own for
/// HTTP/1.1 pools.
#[derive(Debug)]
pub enum UpstreamBody {
    /// From an HTTP/2 connection.
    H2(Incoming),
    /// From an HTTP/1.1 connection, which it holds.
    H1(Box<H1Body>),
}

impl UpstreamBody {
    /// The response's fields kept as received (an HTTP/1.1 endpoint's);
    /// `None` for HTTP/2, whose fields are in the response's map.
    pub fn raw_fields(&self) -> Option<&RawFields> {
        match self {
            UpstreamBody::H1(b) => Some(b.fields()),
            UpstreamBody::H2(_) => None,
        }
    }

    /// The raw fields, to drop some.
    pub fn raw_fields_mut(&mut self) -> Option<&mut RawFields> {
        match self {
            UpstreamBody::H1(b) => Some(b.fields_mut()),
            UpstreamBody::H2(_) => None,
        }
    }

    /// Takes the raw fields out (see [`super::headers::materialize`]).
    pub fn take_raw_fields(&mut self) -> Option<RawFields> {
        match self {
            UpstreamBody::H1(b) => Some(b.take_fields()),
            UpstreamBody::H2(_) => None,
        }
    }
}

/// A field of an endpoint's response, wherever it is kept: the map, else
/// the raw lines of an HTTP/1.1 endpoint.
pub fn response_field<'a>(
    response: &'a http::Response<UpstreamBody>,
    name: &http::HeaderName,
) -> Option<&'a [u8]> {
    match response.headers().get(name) {
        Some(v) => Some(v.as_bytes()),
        None => response.body().raw_fields()?.get(name.as_str()),
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpstreamBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::H1(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::H2(b) => b.is_end_stream(),
            UpstreamBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::H2(b) => b.size_hint(),
            UpstreamBody::H1(b) => b.size_hint(),
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("bytes", &self.bytes)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    /// A body generated by weir itself (errors, admin).
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        ResponseBody::new(Inner::Full((!data.is_empty()).then_some(data)))
    }

    /// An upstream body. The lease is released when it ends, and an
    /// HTTP/1 connection goes back to the pool (with `settings`) if the
    /// exchange left it fit for reuse.
    pub fn upstream(body: UpstreamBody, lease: Option<Lease>, settings: ConnectSettings) -> Self {
        let mut body = body;
        if let UpstreamBody::H1(h1) = &mut body {
            h1.settings = Some(settings);
        }
        let mut b = ResponseBody::new(Inner::Upstream(body));
        b.lease = lease;
        b
    }

    fn new(inner: Inner) -> Self {
        ResponseBody {
            inner,
            bytes: 0,
            done: false,
            lease: None,
            completion: None,
            progress: None,
            moving: false,
        }
    }

    /// Counts this response as progress of its exchange: the head (sent
    /// now) and every body byte keep the request body's read timer from
    /// firing. `None` leaves the body as it is.
    pub fn with_progress(mut self, progress: Option<Progress>) -> Self {
        if let Some(p) = &progress {
            p.moved();
            self.moving = true;
        }
        self.progress = progress;
        self
    }

    /// The response stopped (waits for bytes, or ended): the time of its
    /// last progress goes on the clock, once per pause.
    fn settle(&mut self) {
        if self.moving {
            self.moving = false;
            if let Some(p) = &self.progress {
                p.settled();
            }
        }
    }

    /// Runs `completion` when the body ends or is dropped.
    pub fn on_complete(mut self, completion: Box<dyn Completion>) -> Self {
        self.completion = Some(completion);
        self
    }

    fn end(&mut self, complete: bool) {
        if self.done {
            return;
        }
        self.done = true;
        self.settle();
        if let (Inner::Upstream(UpstreamBody::H1(body)), Some(lease)) =
            (&mut self.inner, &self.lease)
        {
            give_back(body, lease, complete);
        }
        // Dropping an unfinished HTTP/1 connection closes it: its framing
        // is unknown, so it must not be reused.
        self.lease = None;
        if let Some(c) = self.completion.take() {
            c.finish(complete, self.bytes);
        }
    }
}

/// Returns an HTTP/1 connection to its pool when its response ended
/// cleanly and it is fit for reuse; counts bytes an endpoint sent after a
/// complete response (the connection is closed for them).
fn give_back(body: &mut H1Body, lease: &Lease, complete: bool) {
    if body.stray_bytes() {
        lease.backend().metrics().stray_bytes.inc();
    }
    if body.endpoint_fault() {
        lease.backend().metrics().bad_bodies.inc();
    }
    if !complete {
        return;
    }
    let settings = body.settings.take();
    if let (Some(conn), Some(settings)) = (body.take_reusable(), settings) {
        lease.backend().conns().release(conn, &settings);
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                    if let (Some(p), false) = (&this.progress, d.is_empty()) {
                        p.moved();
                        this.moving = true;
                    }
                }
                if this.inner_is_end() {
                    this.end(true);
                }
            }
            Poll::Ready(None) => this.end(true),
            Poll::Ready(Some(Err(_))) => this.end(false),
            Poll::Pending => this.settle(),
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner_is_end()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(b) => b.size_hint(),
            Inner::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

impl ResponseBody {
    /// The endpoint's response fields kept as received, to edit them.
    pub fn raw_fields_mut(&mut self) -> Option<&mut RawFields> {
        match &mut self.inner {
            Inner::Upstream(b) => b.raw_fields_mut(),
            Inner::Full(_) => None,
        }
    }

    /// Takes out the endpoint's response fields kept as received, for an
    /// HTTP/1.1 encoder to write before the response's map.
    pub fn take_raw_fields(&mut self) -> Option<RawFields> {
        match &mut self.inner {
            Inner::Upstream(b) => b.take_raw_fields(),
            Inner::Full(_) => None,
        }
    }

    fn inner_is_end(&self) -> bool {
        match &self.inner {
            Inner::Upstream(b) => b.is_end_stream(),
            Inner::Full(d) => d.is_none(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper may never poll a body it knows is empty (HEAD, 204, 304,
        // Content-Length: 0); that still counts as complete.
        let complete = self.inner_is_end();
        self.end(complete);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tokio::time::Instant;

    const TIMEOUT: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn response_bytes_stamp_the_exchange_clock_when_the_body_ends() {
        let progress = Progress::new();
        let t0 = Instant::now();
        let body = ResponseBody::full("hello").with_progress(Some(progress.clone()));
        tokio::time::advance(Duration::from_millis(400)).await;
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"hello");
        // The last byte went out at 0.4 s: idle from then.
        let ended = t0 + Duration::from_millis(400);
        assert_eq!(
            progress.idle_deadline(Instant::now(), TIMEOUT),
            Some(ended + TIMEOUT)
        );
        assert_eq!(progress.idle_deadline(ended + TIMEOUT, TIMEOUT), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_response_head_counts_as_progress() {
        let progress = Progress::new();
        let t0 = Instant::now();
        tokio::time::advance(Duration::from_millis(700)).await;
        // Head sent at 0.7 s; the (empty) body is dropped unpolled at 0.9 s.
        let body = ResponseBody::full("").with_progress(Some(progress.clone()));
        tokio::time::advance(Duration::from_millis(200)).await;
        drop(body);
        let ended = t0 + Duration::from_millis(900);
        assert_eq!(
            progress.idle_deadline(t0 + TIMEOUT, TIMEOUT),
            Some(ended + TIMEOUT)
        );
    }

    #[test]
    fn a_body_in_memory_has_no_clock() {
        let mut body = RequestBody::Full(Some(Bytes::from_static(b"abc")));
        assert!(body.progress().is_none());
        assert!(RequestBody::empty().progress().is_none());
    }
}
