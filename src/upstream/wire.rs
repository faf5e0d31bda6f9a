//! Writing HTTP/1.1 bodies to a socket, shared by both sides: the client
//! connection driver writes response bodies with it, the endpoint client
//! writes request bodies.
//!
//! Small frames are copied into the write buffer behind the head, so a
//! head and its first chunk leave in one `writev`; a large data frame is
//! written from its own memory after the buffer, never copied. Chunked
//! framing puts each chunk's size line and closing CRLF around it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::Body;
use tokio::io::AsyncWrite;

use crate::http1 as codec;

/// Body frames up to this size are copied into the write buffer; larger
/// ones are written from their own memory.
pub const COALESCE: usize = 16 * 1024;

/// Streams a body into a write buffer with its framing.
pub struct BodyWriter<B: Body> {
    body: B,
    chunked: bool,
    /// A large data frame to write after the buffer.
    large: Option<Bytes>,
    /// The chunk that `large` is the data of still needs its CRLF.
    large_crlf: bool,
    /// Trailers for the last chunk, due after `large`.
    pending_trailers: Option<HeaderMap>,
    finished: bool,
    /// A frame was taken from the body.
    touched: bool,
    /// The body failed after frames were buffered: reported once they are
    /// written, so the peer sees the head and the bytes that did arrive.
    deferred: Option<B::Error>,
}

impl<B: Body> std::fmt::Debug for BodyWriter<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyWriter")
            .field("chunked", &self.chunked)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl<B> BodyWriter<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// `chunked`: frame with chunked encoding; otherwise the bytes go as
    /// they are (a declared length, or a body read to close). `empty`: the
    /// framing carries no body (HEAD, 204, 304), so nothing is polled.
    pub fn new(body: B, chunked: bool, empty: bool) -> Self {
        BodyWriter {
            body,
            chunked,
            large: None,
            large_crlf: false,
            pending_trailers: None,
            finished: empty,
            touched: false,
            deferred: None,
        }
    }

    /// The whole body is in the buffer (or was written).
    pub fn is_finished(&self) -> bool {
        self.finished && self.large.is_none()
    }

    /// A frame was taken from the body (it can no longer be sent whole
    /// elsewhere).
    pub fn touched(&self) -> bool {
        self.touched
    }

    /// The body back.
    pub fn into_body(self) -> B {
        self.body
    }

    /// Appends what the body has ready to `out` until `out` is full enough
    /// to write or a large frame waits. `Pending`: the body has nothing
    /// now; `Err`: the body failed (its bytes must be cut short).
    pub fn poll_fill(
        &mut self,
        out: &mut Vec<u8>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), B::Error>> {
        if let Some(e) = self.deferred.take() {
            return Poll::Ready(Err(e));
        }
        let before = out.len();
        while !self.finished && self.large.is_none() && out.len() < COALESCE {
            let frame = match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.end(None, out);
                    break;
                }
                Poll::Ready(Some(Err(e))) if out.len() > before => {
                    self.deferred = Some(e);
                    break;
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            self.touched = true;
            match frame.into_data() {
                Ok(data) => self.data(data, out),
                Err(frame) => {
                    let trailers = frame.into_trailers().ok();
                    self.end(trailers.as_ref(), out);
                }
            }
            if !self.finished && self.body.is_end_stream() {
                // The body knows it is over (a declared length reached):
                // end now instead of waiting for another poll.
                self.end(None, out);
            }
        }
        Poll::Ready(Ok(()))
    }

    fn data(&mut self, data: Bytes, out: &mut Vec<u8>) {
        if data.is_empty() {
            return;
        }
        if self.chunked {
            codec::encode_chunk_header(data.len(), out);
        }
        if data.len() <= COALESCE {
            out.extend_from_slice(&data);
            if self.chunked {
                out.extend_from_slice(codec::CHUNK_END);
            }
        } else {
            self.large = Some(data);
            self.large_crlf = self.chunked;
        }
    }

    fn end(&mut self, trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
        if self.chunked && self.large.is_none() {
            codec::encode_last_chunk(trailers, out);
        } else if self.chunked {
            // Written after the large frame and its CRLF (see `poll_write`).
            self.pending_trailers = trailers.cloned();
        }
        self.finished = true;
    }

    /// Writes `out`, then the large frame if any; ready when all is
    /// written. Written bytes leave `out`.
    pub fn poll_write<T: AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        out: &mut Vec<u8>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(poll_out(io, out, self.large.as_mut(), cx))?;
            if self.large.take().is_none() {
                return Poll::Ready(Ok(()));
            }
            if std::mem::take(&mut self.large_crlf) {
                out.extend_from_slice(codec::CHUNK_END);
                if self.finished {
                    let trailers = self.pending_trailers.take();
                    codec::encode_last_chunk(trailers.as_ref(), out);
                }
            }
        }
    }
}

/// Writes `out` (then `large`, if given) to `io` with vectored writes;
/// ready when both are written. Written bytes leave `out` and `large`.
pub fn poll_out<T: AsyncWrite + Unpin>(
    io: &mut T,
    out: &mut Vec<u8>,
    mut large: Option<&mut Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    loop {
        let large_len = large.as_ref().map_or(0, |l| l.len());
        if out.is_empty() && large_len == 0 {
            return Poll::Ready(Ok(()));
        }
        let slices = [
            io::IoSlice::new(out),
            io::IoSlice::new(large.as_ref().map_or(&[][..], |l| &l[..])),
        ];
        let n = match Pin::new(&mut *io).poll_write_vectored(cx, &slices) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => n,
        };
        let from_out = n.min(out.len());
        out.drain(..from_out);
        if let Some(l) = large.as_mut() {
            let rest = (n - from_out).min(l.len());
            l.advance(rest);
        }
    }
}

/// Why sending a body stopped.
#[derive(Debug)]
pub enum SendFailure<E> {
    /// The body itself failed.
    Body(E),
    /// The socket failed.
    Io(io::Error),
}

/// A head and its body on their way out: the write buffer (holding the
/// encoded head first) and the body's writer.
#[derive(Debug)]
pub struct Outgoing<B: Body> {
    /// Bytes not yet written.
    pub out: Vec<u8>,
    /// The body.
    pub writer: BodyWriter<B>,
    done: bool,
}

impl<B> Outgoing<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// `out` holds the encoded head.
    pub fn new(out: Vec<u8>, writer: BodyWriter<B>) -> Self {
        Outgoing {
            out,
            writer,
            done: false,
        }
    }

    /// Everything was written and flushed.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The body back (the head and buffered bytes are dropped).
    pub fn into_body(self) -> B {
        self.writer.into_body()
    }

    /// The write buffer back, for reuse (the body is dropped).
    pub fn into_out(self) -> Vec<u8> {
        let mut out = self.out;
        out.clear();
        out
    }

    /// Writes the head and body as the body delivers; ready once all of it
    /// is written and flushed. `Pending` when the socket or the body has to
    /// wait.
    pub fn poll_send<T: AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendFailure<B::Error>>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            // Fill first: a head and the body's first frames leave in one
            // write (two writes would be two segments with TCP_NODELAY).
            let filled = if self.writer.is_finished() {
                Poll::Ready(Ok(()))
            } else {
                self.writer.poll_fill(&mut self.out, cx)
            };
            if let Poll::Ready(Err(e)) = filled {
                return Poll::Ready(Err(SendFailure::Body(e)));
            }
            match self.writer.poll_write(io, &mut self.out, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(SendFailure::Io(e))),
                Poll::Pending => return Poll::Pending,
            }
            let finished = self.writer.is_finished();
            if finished || filled.is_pending() {
                // A TLS stream may hold written bytes until flushed.
                std::task::ready!(Pin::new(&mut *io).poll_flush(cx)).map_err(SendFailure::Io)?;
                if !finished {
                    return Poll::Pending;
                }
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}
