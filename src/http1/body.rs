//! Body decoding: Content-Length, chunked (RFC 9112 §7.1) and
//! read-to-EOF bodies, as a state machine fed from the front of a buffer.
//!
//! Data is handed out as soon as any is there, partial chunks included,
//! as zero-copy splits of the buffer. Chunk-size lines and the trailer
//! section are the only things buffered whole, each bounded by its own
//! limit (per chunk line, not per body), and their scans resume where
//! they stopped, so a peer that sends one byte at a time costs linear
//! time.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TE, TRAILER, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use memchr::memchr2;

use super::fields::{self, is_ows, is_tchar};
use super::head::{with_header_slots, BodyFraming, Limits};
use super::lines::BlockScan;

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

impl FramingError {
    /// The response status for a request body with this error: always
    /// 400, and the connection closes.
    pub fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
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

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkedState {
    /// Reading a chunk-size line; `scanned` bytes of it hold no CR or LF.
    Size { scanned: usize },
    /// Inside a chunk's data.
    Data { remaining: u64 },
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The trailer section after the last chunk.
    Trailers(BlockScan),
    /// Trailers were returned; `End` is next.
    End,
}

/// The state of a chunked body.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkedState,
    limits: Limits,
}

/// Body decoder state machine: `decode` consumes from the front of the
/// buffer and returns one event; `Ok(None)` means it needs more bytes.
#[derive(Debug)]
pub enum BodyDecoder {
    /// This many bytes left.
    Length(u64),
    /// A chunked body.
    Chunked(ChunkedDecoder),
    /// Everything up to the peer's close (response bodies).
    CloseDelimited,
    /// The body is complete: nothing more is consumed.
    Done,
}

impl BodyDecoder {
    /// A decoder for a body of this framing (`Empty` and `Length(0)` are
    /// done already).
    pub fn new(framing: BodyFraming, limits: &Limits) -> Self {
        match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => BodyDecoder::Done,
            BodyFraming::Length(n) => BodyDecoder::Length(n),
            BodyFraming::Chunked => BodyDecoder::Chunked(ChunkedDecoder {
                state: ChunkedState::Size { scanned: 0 },
                limits: *limits,
            }),
        }
    }

    /// A body that ends when the peer closes (responses without framing).
    pub fn close_delimited() -> Self {
        BodyDecoder::CloseDelimited
    }

    /// Consumes what it can from the front of `buf` (which must keep what
    /// earlier calls left and only grow at its end) and returns one event.
    /// After `End` (returned again on every later call) nothing more is
    /// consumed: pipelined bytes stay in `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, FramingError> {
        let event = match self {
            BodyDecoder::Done => Some(Chunk::End),
            BodyDecoder::Length(0) => Some(Chunk::End),
            BodyDecoder::Length(remaining) => take_data(buf, remaining),
            BodyDecoder::CloseDelimited => {
                let mut unbounded = u64::MAX;
                take_data(buf, &mut unbounded)
            }
            BodyDecoder::Chunked(chunked) => chunked.decode(buf)?,
        };
        if event == Some(Chunk::End) {
            *self = BodyDecoder::Done;
        }
        Ok(event)
    }

    /// The peer closed (call once `decode` has taken what `buf` held):
    /// the end of a close-delimited or complete body, else `Truncated`.
    pub fn eof(&mut self) -> Result<Chunk, FramingError> {
        match self {
            BodyDecoder::Done | BodyDecoder::CloseDelimited | BodyDecoder::Length(0) => {}
            BodyDecoder::Chunked(c) if c.state == ChunkedState::End => {}
            _ => return Err(FramingError::Truncated),
        }
        *self = BodyDecoder::Done;
        Ok(Chunk::End)
    }

    /// Whether the body is complete: nothing more belongs to it, whether
    /// or not `End` has been returned yet (a length reached, the last
    /// chunk and its trailers read).
    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Done | BodyDecoder::Length(0) => true,
            BodyDecoder::Chunked(c) => c.state == ChunkedState::End,
            BodyDecoder::Length(_) | BodyDecoder::CloseDelimited => false,
        }
    }

    /// Length bodies: the bytes left; others: `None`.
    pub fn remaining_hint(&self) -> Option<u64> {
        match self {
            BodyDecoder::Length(n) => Some(*n),
            _ => None,
        }
    }
}

/// Up to `remaining` bytes from the front of `buf`, as data.
fn take_data(buf: &mut BytesMut, remaining: &mut u64) -> Option<Chunk> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
    // n ≤ remaining, so this cannot underflow.
    *remaining -= n as u64;
    Some(Chunk::Data(buf.split_to(n).freeze()))
}

impl ChunkedDecoder {
    /// One event of a chunked body; loops over the steps that produce
    /// none (a size line, a data CRLF), each of which consumes bytes.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, FramingError> {
        loop {
            match &mut self.state {
                ChunkedState::Size { scanned } => {
                    let Some((size, len)) =
                        size_line(buf, scanned, self.limits.max_chunk_ext_bytes)?
                    else {
                        return Ok(None);
                    };
                    buf.advance(len);
                    self.state = if size == 0 {
                        ChunkedState::Trailers(BlockScan::default())
                    } else {
                        ChunkedState::Data { remaining: size }
                    };
                }
                ChunkedState::Data { remaining } => {
                    let data = take_data(buf, remaining);
                    if *remaining == 0 {
                        self.state = ChunkedState::DataEnd;
                    }
                    return Ok(data);
                }
                ChunkedState::DataEnd => match buf.get(..2) {
                    Some(b"\r\n") => {
                        buf.advance(2);
                        self.state = ChunkedState::Size { scanned: 0 };
                    }
                    Some(_) => {
                        return Err(FramingError::ChunkLine("missing CRLF after chunk data"))
                    }
                    None if buf.first().is_some_and(|&b| b != b'\r') => {
                        return Err(FramingError::ChunkLine("missing CRLF after chunk data"))
                    }
                    None => return Ok(None),
                },
                ChunkedState::Trailers(_) => return self.trailers(buf),
                ChunkedState::End => return Ok(Some(Chunk::End)),
            }
        }
    }

    /// The trailer section: buffered whole (up to `max_trailer_bytes`),
    /// then parsed; `Trailers` only when some fields are left after the
    /// framing and routing ones are dropped.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Option<Chunk>, FramingError> {
        let ChunkedState::Trailers(scan) = &mut self.state else {
            return Ok(None);
        };
        // An empty section (just CRLF) always fits.
        let limit = self.limits.max_trailer_bytes.max(2);
        let scanned = scan
            .scan(buf, limit)
            .map_err(|e| FramingError::Trailers(e.reason()))?;
        let Some(end) = scanned else {
            if buf.len() >= limit {
                return Err(FramingError::Trailers("too large"));
            }
            return Ok(None);
        };
        let lines = scan.lines();
        if lines > self.limits.max_headers {
            return Err(FramingError::Trailers("too many fields"));
        }
        let section = buf.split_to(end).freeze();
        let trailers = parse_trailers(&section, lines)?;
        if trailers.is_empty() {
            return Ok(Some(Chunk::End));
        }
        self.state = ChunkedState::End;
        Ok(Some(Chunk::Trailers(trailers)))
    }
}

/// Fields that must not arrive in trailers: they frame or route the
/// message, and a trailer cannot change either after the fact.
const FORBIDDEN_TRAILERS: [HeaderName; 7] = [
    CONTENT_LENGTH,
    TRANSFER_ENCODING,
    HOST,
    CONNECTION,
    TE,
    TRAILER,
    UPGRADE,
];

/// Parses a complete trailer section of `lines` field lines.
fn parse_trailers(section: &Bytes, lines: usize) -> Result<HeaderMap, FramingError> {
    with_header_slots(lines, |slots| {
        let parsed = match httparse::parse_headers(section, slots) {
            Ok(httparse::Status::Complete((_, parsed))) => parsed,
            Ok(httparse::Status::Partial) => return Err(FramingError::Trailers("incomplete")),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(FramingError::Trailers("too many fields"))
            }
            Err(_) => return Err(FramingError::Trailers("malformed field")),
        };
        let mut map = HeaderMap::with_capacity(parsed.len());
        for field in parsed.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| FramingError::Trailers("malformed field"))?;
            if FORBIDDEN_TRAILERS.contains(&name) || name.as_str() == "keep-alive" {
                continue;
            }
            let value = fields::sub_bytes(section, field.value)
                .and_then(|b| HeaderValue::from_maybe_shared(b).ok())
                .ok_or(FramingError::Trailers("malformed field"))?;
            map.append(name, value);
        }
        Ok(map)
    })
}

/// A complete chunk-size line at the front of `buf`: `(size, bytes to
/// consume)`, or `None` until its CRLF is there. `scanned` is how much of
/// it was already seen to hold no CR or LF.
fn size_line(
    buf: &[u8],
    scanned: &mut usize,
    max: usize,
) -> Result<Option<(u64, usize)>, FramingError> {
    // The CR ending the line may be at `max` at most.
    let window = buf
        .get(..buf.len().min(max.saturating_add(1)))
        .unwrap_or(buf);
    let Some(found) = memchr2(b'\r', b'\n', window.get(*scanned..).unwrap_or_default()) else {
        if buf.len() > max {
            return Err(FramingError::ChunkExtTooLong);
        }
        *scanned = window.len();
        return Ok(None);
    };
    let at = *scanned + found;
    if window.get(at) == Some(&b'\n') {
        return Err(FramingError::ChunkLine("bare LF"));
    }
    match buf.get(at + 1) {
        None => {
            *scanned = at;
            Ok(None)
        }
        Some(b'\n') => Ok(Some((
            chunk_size(buf.get(..at).unwrap_or_default())?,
            at + 2,
        ))),
        Some(_) => Err(FramingError::ChunkLine("bare CR")),
    }
}

/// `chunk-size [chunk-ext]` (without the CRLF).
fn chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(match line.first() {
            None => FramingError::ChunkSize("empty"),
            Some(&b) if is_ows(b) => FramingError::ChunkSize("whitespace before size"),
            Some(_) => FramingError::ChunkSize("not hexadecimal"),
        });
    }
    let mut size: u64 = 0;
    for &b in line.get(..digits).unwrap_or_default() {
        let digit = char::from(b).to_digit(16).map_or(0, u64::from);
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(digit))
            .ok_or(FramingError::ChunkSize("overflow"))?;
    }
    chunk_ext(line.get(digits..).unwrap_or_default())?;
    Ok(size)
}

/// The index of the first byte of `ext` at or after `i` that is not OWS.
fn skip_ows(ext: &[u8], mut i: usize) -> usize {
    while ext.get(i).is_some_and(|&b| is_ows(b)) {
        i += 1;
    }
    i
}

/// The error for an unexpected byte in a chunk extension.
fn ext_error(b: u8) -> FramingError {
    if (b < 0x20 && b != b'\t') || b == 0x7f {
        FramingError::ChunkLine("control character in chunk extension")
    } else {
        FramingError::ChunkLine("invalid chunk extension")
    }
}

/// `*( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )`
/// (RFC 9112 §7.1.1), everything after the chunk size.
fn chunk_ext(ext: &[u8]) -> Result<(), FramingError> {
    let mut i = 0;
    while i < ext.len() {
        let before = i;
        i = skip_ows(ext, i);
        match ext.get(i) {
            Some(b';') => i += 1,
            None if before == 0 => return Err(FramingError::ChunkSize("whitespace after size")),
            None => return Err(FramingError::ChunkLine("whitespace at end of chunk line")),
            Some(_) if before == 0 && i == 0 => {
                return Err(FramingError::ChunkSize("not hexadecimal"))
            }
            Some(&b) => return Err(ext_error(b)),
        }
        i = skip_ows(ext, i);
        let name = ext
            .get(i..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&b| is_tchar(b))
            .count();
        if name == 0 {
            return Err(ext.get(i).map_or(
                FramingError::ChunkLine("empty chunk extension name"),
                |&b| ext_error(b),
            ));
        }
        i += name;
        let eq = skip_ows(ext, i);
        if ext.get(eq) == Some(&b'=') {
            i = ext_value(ext, skip_ows(ext, eq + 1))?;
        }
    }
    Ok(())
}

/// A chunk extension's value at `ext[i..]`: a token or a quoted-string.
/// Returns the index after it.
fn ext_value(ext: &[u8], mut i: usize) -> Result<usize, FramingError> {
    if ext.get(i) != Some(&b'"') {
        let token = ext
            .get(i..)
            .unwrap_or_default()
            .iter()
            .take_while(|&&b| is_tchar(b))
            .count();
        if token == 0 {
            return Err(ext.get(i).map_or(
                FramingError::ChunkLine("empty chunk extension value"),
                |&b| ext_error(b),
            ));
        }
        return Ok(i + token);
    }
    i += 1;
    loop {
        match ext.get(i) {
            None => return Err(FramingError::ChunkLine("unterminated quoted string")),
            Some(b'"') => return Ok(i + 1),
            Some(b'\\') => match ext.get(i + 1) {
                Some(&b) if b == b'\t' || b >= 0x20 && b != 0x7f => i += 2,
                Some(&b) => return Err(ext_error(b)),
                None => return Err(FramingError::ChunkLine("unterminated quoted string")),
            },
            Some(&b) if b == b'\t' || (b >= 0x20 && b != 0x7f) => i += 1,
            Some(&b) => return Err(ext_error(b)),
        }
    }
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
