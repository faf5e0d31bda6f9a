//! Response heads from endpoints: the client side of the codec.
//!
//! RFC 9112 §6.3 asks a proxy to treat an ambiguous response as an error,
//! and weir is stricter than the RFC wherever bytes could be read two
//! ways, because a response framed differently by weir and by the endpoint
//! desynchronises the pooled connection and hands one request's bytes to
//! the next:
//!
//! | response | weir |
//! |---|---|
//! | status line not `HTTP/1.x SP 3DIGIT [SP reason]`, a code outside 100–599 | refused |
//! | a version other than 1.0/1.1 | refused |
//! | bare CR or LF, obs-fold, whitespace before a colon, NUL or CTL in a value | refused |
//! | `Content-Length` with `Transfer-Encoding` | refused |
//! | `Content-Length` not `1*DIGIT`, a list, or differing duplicates | refused |
//! | `Transfer-Encoding` other than exactly `chunked` (weir does not decode other codings, and passing them on re-chunked would corrupt the body) | refused |
//! | a head over the size or field limits | refused |
//!
//! A refused response is a 502 for the client and its connection is never
//! reused. Framing follows §6.3 in order: HEAD, 1xx, 204 and 304 have no
//! body whatever the fields say; `101` and a 2xx to CONNECT switch to a
//! tunnel; chunked; a length; otherwise the body runs to the close.

use bytes::{Bytes, BytesMut};
use http::{Method, StatusCode, Version};
use memchr::memchr;

use super::body::BodyDecoder;
use super::fields::ConnectionTokens;
use super::head::{with_header_slots, BodyFraming, HeadError, Limits};
use super::raw::RawFields;
use super::{fields, lines::BlockScan};

/// Why an endpoint's response head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Invalid status line or field syntax.
    #[error("malformed response head: {0}")]
    Malformed(&'static str),
    /// A version other than HTTP/1.0 and HTTP/1.1.
    #[error("unsupported response version")]
    Version,
    /// Over the head size limit.
    #[error("response head too large")]
    HeadTooLarge,
    /// Over the field count limit.
    #[error("too many response fields")]
    TooManyHeaders,
    /// An invalid or ambiguous `Content-Length`.
    #[error("invalid response Content-Length: {0}")]
    ContentLength(&'static str),
    /// An invalid, ambiguous or unsupported `Transfer-Encoding`.
    #[error("invalid response Transfer-Encoding: {0}")]
    TransferEncoding(&'static str),
}

impl From<HeadError> for ResponseError {
    fn from(e: HeadError) -> Self {
        match e {
            HeadError::HeadTooLarge => ResponseError::HeadTooLarge,
            HeadError::TooManyHeaders => ResponseError::TooManyHeaders,
            HeadError::ContentLength(why) => ResponseError::ContentLength(why),
            HeadError::TransferEncoding(why) => ResponseError::TransferEncoding(why),
            HeadError::UnknownCoding => ResponseError::TransferEncoding("unsupported coding"),
            HeadError::Version => ResponseError::Version,
            HeadError::Malformed(why) | HeadError::Host(why) => ResponseError::Malformed(why),
        }
    }
}

/// How a response's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFraming {
    /// No body (HEAD, 1xx, 204, 304).
    NoBody,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the endpoint closes the connection.
    Close,
    /// `101`, or a 2xx to CONNECT: the connection becomes a tunnel.
    Tunnel,
}

impl UpstreamFraming {
    /// The decoder for a body so framed.
    pub fn decoder(self, limits: &Limits) -> BodyDecoder {
        match self {
            UpstreamFraming::NoBody | UpstreamFraming::Tunnel => {
                BodyDecoder::new(BodyFraming::Empty, limits)
            }
            UpstreamFraming::Length(n) => BodyDecoder::new(BodyFraming::Length(n), limits),
            UpstreamFraming::Chunked => BodyDecoder::new(BodyFraming::Chunked, limits),
            UpstreamFraming::Close => BodyDecoder::close_delimited(),
        }
    }
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The reason phrase as sent (may be empty).
    pub reason: Bytes,
    /// The fields as received (identical duplicate `Content-Length`s
    /// collapsed): slices of the head, see [`RawFields`].
    pub headers: RawFields,
    /// The body's framing.
    pub body: UpstreamFraming,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// How far [`parse_response`] has looked into an incomplete head.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResponseScan(BlockScan);

/// Parses a response head at the start of `buf`, resuming where the last
/// call stopped. `Ok(None)`: incomplete. `Ok(Some(head))`: the head was
/// split off `buf`, which now starts at the body. Interim `1xx` heads are
/// returned like any other; the caller skips them.
pub fn parse_response(
    buf: &mut BytesMut,
    limits: &Limits,
    request_method: &Method,
    scan: &mut ResponseScan,
) -> Result<Option<ResponseHead>, ResponseError> {
    let mut state = std::mem::take(&mut scan.0);
    let scanned = state
        .scan(buf, limits.max_head_bytes)
        .map_err(|e| ResponseError::Malformed(e.reason()))?;
    let Some(end) = scanned else {
        if buf.len() > limits.max_head_bytes {
            return Err(ResponseError::HeadTooLarge);
        }
        scan.0 = state;
        return Ok(None);
    };
    let fields = state.lines().saturating_sub(1);
    if fields > limits.max_headers {
        return Err(ResponseError::TooManyHeaders);
    }
    let head = buf.split_to(end).freeze();
    build(&head, fields, request_method).map(Some)
}

/// Splits and checks the status line (without its CRLF).
fn status_line(line: &[u8]) -> Result<(Version, StatusCode, &[u8]), ResponseError> {
    const BAD: ResponseError = ResponseError::Malformed("invalid status line");
    let version = match line.get(..8) {
        Some(b"HTTP/1.1") => Version::HTTP_11,
        Some(b"HTTP/1.0") => Version::HTTP_10,
        Some([b'H', b'T', b'T', b'P', b'/', major, b'.', minor])
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(ResponseError::Version)
        }
        _ => return Err(BAD),
    };
    let code = line.get(9..12).ok_or(BAD)?;
    if line.get(8) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return Err(BAD);
    }
    let reason = match line.get(12) {
        None => &[][..],
        Some(b' ') => line.get(13..).unwrap_or_default(),
        Some(_) => return Err(BAD),
    };
    if !reason
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
    {
        return Err(ResponseError::Malformed("invalid reason phrase"));
    }
    let status = StatusCode::from_bytes(code).map_err(|_| BAD)?;
    if !(100..=599).contains(&status.as_u16()) {
        return Err(BAD);
    }
    Ok((version, status, reason))
}

/// Parses the complete head `head`, which has `fields` field lines.
fn build(head: &Bytes, fields: usize, method: &Method) -> Result<ResponseHead, ResponseError> {
    let line_end = memchr(b'\r', head).ok_or(ResponseError::Malformed("invalid status line"))?;
    let (version, status, reason) = status_line(head.get(..line_end).unwrap_or_default())?;
    let reason = fields::sub_bytes(head, reason).unwrap_or_default();
    let block = head.get(line_end + 2..).unwrap_or_default();
    let (headers, specials) = with_header_slots(fields, |slots| {
        match httparse::parse_headers(block, slots) {
            Ok(httparse::Status::Complete((_, parsed))) => collect(head, parsed),
            Ok(httparse::Status::Partial) => {
                Err(ResponseError::Malformed("incomplete field section"))
            }
            Err(httparse::Error::TooManyHeaders) => Err(ResponseError::TooManyHeaders),
            Err(httparse::Error::HeaderName) => Err(ResponseError::Malformed("invalid field name")),
            Err(_) => Err(ResponseError::Malformed("invalid field value")),
        }
    })?;
    let body = framing(method, status, &specials)?;
    let conn = specials.connection;
    let keep_alive = !conn.close
        && (version == Version::HTTP_11 || conn.keep_alive)
        && body != UpstreamFraming::Close;
    Ok(ResponseHead {
        status,
        version,
        reason,
        headers,
        body,
        keep_alive,
    })
}

/// What the framing fields of a response said.
#[derive(Default)]
struct Specials<'h> {
    content_length: Option<u64>,
    transfer_encoding: Option<&'h [u8]>,
    connection: ConnectionTokens,
}

/// Indexes the parsed lines (httparse checked names and values with the
/// same byte rules as `HeaderName` and `HeaderValue`) and reads the
/// framing fields on the way.
fn collect<'h>(
    head: &Bytes,
    parsed: &[httparse::Header<'h>],
) -> Result<(RawFields, Specials<'h>), ResponseError> {
    let mut raw = RawFields::with_capacity(head.clone(), parsed.len());
    let mut specials = Specials::default();
    for field in parsed {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = fields::content_length(field.value)?;
            match specials.content_length {
                None => specials.content_length = Some(n),
                Some(first) if first == n => continue,
                Some(_) => return Err(ResponseError::ContentLength("differing values")),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            if specials.transfer_encoding.replace(field.value).is_some() {
                return Err(ResponseError::TransferEncoding("repeated"));
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            specials.connection.add(field.value);
        }
        if !raw.push(name, field.value) {
            return Err(ResponseError::Malformed("field outside the head"));
        }
    }
    Ok((raw, specials))
}

/// RFC 9112 §6.3's framing rules, in their order.
fn framing(
    method: &Method,
    status: StatusCode,
    specials: &Specials<'_>,
) -> Result<UpstreamFraming, ResponseError> {
    let te = specials.transfer_encoding;
    if te.is_some() && specials.content_length.is_some() {
        return Err(ResponseError::TransferEncoding("with Content-Length"));
    }
    if status == StatusCode::SWITCHING_PROTOCOLS
        || (method == Method::CONNECT && status.is_success())
    {
        return Ok(UpstreamFraming::Tunnel);
    }
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok(UpstreamFraming::NoBody);
    }
    if let Some(te) = te {
        fields::transfer_encoding(te).map_err(ResponseError::from)?;
        return Ok(UpstreamFraming::Chunked);
    }
    Ok(specials
        .content_length
        .map_or(UpstreamFraming::Close, UpstreamFraming::Length))
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
