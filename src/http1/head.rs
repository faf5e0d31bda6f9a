//! Request heads: the request line, the field section and their validation.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, Method, StatusCode, Uri, Version};

/// Parser limits (from the listener's `limits:` config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The whole request head, request line and final CRLF included;
    /// past it: [`HeadError::HeadTooLarge`] (431).
    pub max_head_bytes: usize,
    /// Field lines in a head or a trailer section; past it:
    /// [`HeadError::TooManyHeaders`] (431).
    pub max_headers: usize,
    /// One chunk-size line (size and extensions), not a whole body.
    pub max_chunk_ext_bytes: usize,
    /// The trailer section of one body.
    pub max_trailer_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            max_chunk_ext_bytes: 4096,
            max_trailer_bytes: 16 * 1024,
        }
    }
}

/// Why a request head (or its body framing) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not HTTP/1.x syntax.
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    /// A well-formed `HTTP/x.y` other than 1.0 and 1.1.
    #[error("unsupported HTTP version")]
    Version,
    /// The head is longer than `max_head_bytes`.
    #[error("request head too large")]
    HeadTooLarge,
    /// More field lines than `max_headers`.
    #[error("too many header fields")]
    TooManyHeaders,
    /// Missing, repeated or invalid Host.
    #[error("invalid host: {0}")]
    Host(&'static str),
    /// Invalid Content-Length.
    #[error("invalid content-length: {0}")]
    ContentLength(&'static str),
    /// Invalid or ambiguous Transfer-Encoding.
    #[error("invalid transfer-encoding: {0}")]
    TransferEncoding(&'static str),
    /// A valid transfer coding other than chunked.
    #[error("unknown transfer coding")]
    UnknownCoding,
}

impl HeadError {
    /// The response status for this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            HeadError::Version => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            HeadError::UnknownCoding => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Request body framing (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// Original spelling of header names, for re-emitting them as received.
#[derive(Debug, Clone, Default)]
pub struct HeaderCase {
    names: Vec<(HeaderName, Bytes)>,
}

impl HeaderCase {
    /// The raw name of the `nth` (0-based) field line named `name`.
    pub fn spelling(&self, name: &HeaderName, nth: usize) -> Option<&[u8]> {
        self.names
            .iter()
            .filter(|(n, _)| n == name)
            .nth(nth)
            .map(|(_, raw)| &raw[..])
    }

    /// Records the spelling of the next field line named `name`.
    pub fn push(&mut self, name: HeaderName, raw: Bytes) {
        self.names.push((name, raw));
    }
}

/// A parsed, validated request head.
#[derive(Debug)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The request target.
    pub uri: Uri,
    /// `HTTP_10` or `HTTP_11`.
    pub version: Version,
    /// Every field.
    pub headers: HeaderMap,
    /// The original spelling of the field names.
    pub case: HeaderCase,
    /// How the body is framed.
    pub body: BodyFraming,
    /// Whether the client wants the connection kept open.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on a request with a body.
    pub expect_continue: bool,
    /// A protocol upgrade was asked for.
    pub upgrade: bool,
}

/// Parses and validates a request head at the start of `buf`.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<RequestHead>, HeadError> {
    if buf.len() > limits.max_head_bytes {
        return Err(HeadError::HeadTooLarge);
    }
    Ok(None)
}
