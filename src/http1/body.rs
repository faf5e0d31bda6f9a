//! Request body decoding: Content-Length, chunked, and read-to-EOF bodies.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;

use super::head::{BodyFraming, Limits};

/// Body framing errors (always 400 for requests; the connection closes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// Invalid chunk size.
    #[error("invalid chunk size: {0}")]
    ChunkSize(&'static str),
    /// A chunk-size line longer than `max_chunk_ext_bytes`.
    #[error("chunk extensions too long")]
    ChunkExtTooLong,
    /// A malformed chunk line.
    #[error("malformed chunk line: {0}")]
    ChunkLine(&'static str),
    /// A malformed or too large trailer section.
    #[error("invalid trailers: {0}")]
    Trailers(&'static str),
    /// The peer closed before the body's end.
    #[error("body truncated")]
    Truncated,
}

/// One step of a body.
#[derive(Debug, PartialEq)]
pub enum Chunk {
    /// Body bytes.
    Data(Bytes),
    /// The trailer fields of a chunked body.
    Trailers(HeaderMap),
    /// The body is complete.
    End,
}

/// The state of a chunked body.
#[derive(Debug)]
pub struct ChunkedDecoder {
    limits: Limits,
}

/// Body decoder state machine.
#[derive(Debug)]
pub enum BodyDecoder {
    /// This many bytes left.
    Length(u64),
    /// A chunked body.
    Chunked(ChunkedDecoder),
    /// Everything up to the peer's close.
    CloseDelimited,
    /// The body is complete.
    Done,
}

impl BodyDecoder {
    /// A decoder for a request body of this framing.
    pub fn new(framing: BodyFraming, limits: &Limits) -> Self {
        match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => BodyDecoder::Done,
            BodyFraming::Length(n) => BodyDecoder::Length(n),
            BodyFraming::Chunked => BodyDecoder::Chunked(ChunkedDecoder { limits: *limits }),
        }
    }

    /// A body that ends when the peer closes.
    pub fn close_delimited() -> Self {
        BodyDecoder::CloseDelimited
    }

    /// Consumes what it can from the front of `buf`; `Ok(None)`: needs more.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, FramingError> {
        let _ = buf;
        Ok(None)
    }

    /// The peer closed.
    pub fn eof(&mut self) -> Result<Chunk, FramingError> {
        Ok(Chunk::End)
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        matches!(self, BodyDecoder::Done)
    }

    /// Length bodies: bytes left.
    pub fn remaining_hint(&self) -> Option<u64> {
        match self {
            BodyDecoder::Length(n) => Some(*n),
            _ => None,
        }
    }
}
