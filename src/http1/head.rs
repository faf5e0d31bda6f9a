//! Request heads: the request line, the field section, and the checks
//! that decide whether weir may forward them (framing, Host, target form).
//!
//! The block's lines are checked first ([`super::lines`]); the request
//! line is split here (exactly two single spaces); the field lines go to
//! httparse, which checks names (tokens, no space before the colon) and
//! values (no CTL but HTAB); then the framing and routing fields are
//! validated with the grammars of [`super::fields`].

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, Method, StatusCode, Uri, Version};
use memchr::memchr;

use super::fields::{self, ConnectionTokens};
use super::lines::BlockScan;
use super::raw::RawFields;

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
///
/// Empty when every name arrived in Title-Case (`Content-Type`), as
/// almost every client and server writes them: the encoders write a name
/// with no recorded spelling in Title-Case, so the bytes come out as
/// received without a copy of each name being kept per message. A head
/// with any other spelling (`x-request-ID`, `HOST`) records all of its
/// names.
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

    /// Field lines recorded.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no field line was recorded.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Whether `raw` is in Title-Case: a letter that starts the name or
/// follows `-` is uppercase, every other letter lowercase.
pub fn is_title_case(raw: &[u8]) -> bool {
    let mut word_start = true;
    for &b in raw {
        let wrong = if word_start {
            b.is_ascii_lowercase()
        } else {
            b.is_ascii_uppercase()
        };
        if wrong {
            return false;
        }
        word_start = b == b'-';
    }
    true
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
    /// Every field as received (identical duplicate `Content-Length`s
    /// collapsed): slices of the head, names in their spelling, see
    /// [`RawFields`].
    pub headers: RawFields,
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
///
/// `Ok(None)`: incomplete, read more (but past `limits.max_head_bytes` it
/// is `Err(HeadError::HeadTooLarge)` instead). `Ok(Some(head))`: the head
/// was split off `buf`, which now starts at the body or the next request;
/// header values and spellings are zero-copy slices of it. Empty lines
/// before the request line are consumed (RFC 9112 §2.2). After an error
/// the contents of `buf` are unspecified: the connection is done.
///
/// Each call scans `buf` from its start (bounded by `max_head_bytes`); a
/// driver that calls it after every read of a slowly sent head can keep a
/// [`HeadScan`] and call [`parse_request_resumed`] instead.
pub fn parse_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<RequestHead>, HeadError> {
    parse_request_resumed(buf, limits, &mut HeadScan::default())
}

/// Refuses an incomplete head at once when its first bytes cannot start a
/// request line (a TLS ClientHello on a cleartext port, binary noise):
/// the method is a token followed by a space, so the client is not left
/// waiting for `header_read` to expire. Looks at most at a method's
/// length.
fn method_prefix(buf: &[u8]) -> Result<(), HeadError> {
    // An empty line still arriving (`\r` waiting for its `\n`) comes first.
    let start = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    let line = buf.get(start..).unwrap_or_default();
    for (i, &b) in line.iter().take(MAX_METHOD_PREFIX).enumerate() {
        if b == b' ' && i > 0 {
            return Ok(());
        }
        if !super::fields::is_tchar(b) {
            return Err(HeadError::Malformed("invalid method"));
        }
    }
    Ok(())
}

/// Bytes of an incomplete head checked by [`method_prefix`]; longer
/// methods are checked when the head is complete.
const MAX_METHOD_PREFIX: usize = 32;

/// How far [`parse_request_resumed`] has looked into an incomplete head,
/// so that the next call looks only at the new bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeadScan(BlockScan);

/// [`parse_request`], resuming where the last call on this `buf` stopped:
/// feeding a head byte by byte costs linear time, not quadratic. `buf`
/// must keep what the last call left and only grow at its end; `scan`
/// starts as `HeadScan::default()` and is reset by every call that
/// returns a head or an error.
pub fn parse_request_resumed(
    buf: &mut BytesMut,
    limits: &Limits,
    scan: &mut HeadScan,
) -> Result<Option<RequestHead>, HeadError> {
    if scan.0 == BlockScan::default() {
        // Nothing scanned yet: the front may still be empty lines.
        skip_empty_lines(buf)?;
    }
    let mut state = std::mem::take(&mut scan.0);
    let scanned = state
        .scan(buf, limits.max_head_bytes)
        .map_err(|e| HeadError::Malformed(e.reason()))?;
    // Bytes that cannot start a request line are refused as such, first,
    // however much of the head has arrived (so the answer does not depend
    // on how the bytes were split).
    method_prefix(buf)?;
    let Some(end) = scanned else {
        if buf.len() > limits.max_head_bytes {
            return Err(HeadError::HeadTooLarge);
        }
        scan.0 = state;
        return Ok(None);
    };
    // Lines besides the request line (scan counted every non-empty one).
    let fields = state.lines().saturating_sub(1);
    if fields > limits.max_headers {
        return Err(HeadError::TooManyHeaders);
    }
    let head = buf.split_to(end).freeze();
    build_head(&head, fields).map(Some)
}

/// Consumes CRLF pairs at the front of `buf`; a lone CR at the end waits
/// for its LF.
fn skip_empty_lines(buf: &mut BytesMut) -> Result<(), HeadError> {
    let mut n = 0;
    loop {
        match (buf.get(n), buf.get(n + 1)) {
            (Some(b'\r'), Some(b'\n')) => n += 2,
            (Some(b'\r'), Some(_)) => return Err(HeadError::Malformed("bare CR")),
            (Some(b'\n'), _) => return Err(HeadError::Malformed("bare LF")),
            _ => break,
        }
    }
    buf.advance(n);
    Ok(())
}

/// The request line: `method SP request-target SP HTTP-version`.
struct RequestLine<'a> {
    method: Method,
    target: &'a [u8],
    version: Version,
}

/// Splits and checks the request line (without its CRLF).
fn request_line(line: &[u8]) -> Result<RequestLine<'_>, HeadError> {
    const BAD: HeadError = HeadError::Malformed("invalid request line");
    let sp1 = memchr(b' ', line).ok_or(BAD)?;
    let (method, rest) = (
        line.get(..sp1).unwrap_or_default(),
        line.get(sp1 + 1..).unwrap_or_default(),
    );
    let sp2 = memchr(b' ', rest).ok_or(BAD)?;
    let (target, version) = (
        rest.get(..sp2).unwrap_or_default(),
        rest.get(sp2 + 1..).unwrap_or_default(),
    );
    if target.is_empty() || memchr(b' ', version).is_some() {
        return Err(BAD);
    }
    if !fields::is_token(method) {
        return Err(HeadError::Malformed("invalid method"));
    }
    let version = match version {
        b"HTTP/1.1" => Version::HTTP_11,
        b"HTTP/1.0" => Version::HTTP_10,
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            return Err(HeadError::Version)
        }
        _ => return Err(HeadError::Malformed("invalid HTTP version")),
    };
    let method = Method::from_bytes(method).map_err(|_| HeadError::Malformed("invalid method"))?;
    Ok(RequestLine {
        method,
        target,
        version,
    })
}

/// Checks the request target's form against the method (RFC 9112 §3.2)
/// and parses it, zero-copy.
fn request_target(method: &Method, target: &[u8], head: &Bytes) -> Result<Uri, HeadError> {
    if !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(HeadError::Malformed("invalid character in target"));
    }
    if memchr(b'#', target).is_some() {
        return Err(HeadError::Malformed("fragment in target"));
    }
    let connect = method == Method::CONNECT;
    if connect {
        fields::host(target, true)
            .map_err(|_| HeadError::Malformed("CONNECT needs authority-form"))?;
    } else if target == b"*" {
        if method != Method::OPTIONS {
            return Err(HeadError::Malformed("asterisk-form is for OPTIONS only"));
        }
    } else if target.first() != Some(&b'/') && !is_http_scheme(target) {
        return Err(HeadError::Malformed("invalid target form"));
    }
    let bytes = fields::sub_bytes(head, target).ok_or(HeadError::Malformed("invalid target"))?;
    let uri = Uri::from_maybe_shared(bytes).map_err(|_| HeadError::Malformed("invalid target"))?;
    if !connect && target.first() != Some(&b'/') && target != b"*" {
        // Absolute-form: the authority follows the Host rules (no userinfo).
        let authority = uri
            .authority()
            .ok_or(HeadError::Malformed("absolute-form without authority"))?;
        fields::host(authority.as_str().as_bytes(), false)
            .map_err(|_| HeadError::Malformed("invalid authority in target"))?;
    }
    Ok(uri)
}

/// Whether an absolute-form target has the `http` or `https` scheme
/// (schemes are case-insensitive).
fn is_http_scheme(target: &[u8]) -> bool {
    let prefix = |p: &[u8]| {
        target
            .get(..p.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(p))
    };
    prefix(b"http://") || prefix(b"https://")
}

/// What the framing and routing fields said, gathered while the fields
/// are copied into the map.
#[derive(Default)]
pub(super) struct Specials {
    hosts: usize,
    pub(super) content_length: Option<u64>,
    transfer_encodings: usize,
    pub(super) connection: ConnectionTokens,
    expect_continue: bool,
    upgrade_field: bool,
}

impl Specials {
    /// Looks at one field line; `Ok(false)`: a duplicate of an identical
    /// Content-Length, which is not kept.
    fn see(&mut self, name: &[u8], value: &[u8]) -> Result<bool, HeadError> {
        let is = |known: &HeaderName| name.eq_ignore_ascii_case(known.as_str().as_bytes());
        if is(&HOST) {
            self.hosts += 1;
        } else if is(&CONTENT_LENGTH) {
            let n = fields::content_length(value)?;
            match self.content_length {
                None => self.content_length = Some(n),
                Some(first) if first == n => return Ok(false),
                Some(_) => return Err(HeadError::ContentLength("differing values")),
            }
        } else if is(&TRANSFER_ENCODING) {
            self.transfer_encodings += 1;
            if self.transfer_encodings > 1 {
                return Err(HeadError::TransferEncoding("repeated"));
            }
        } else if is(&CONNECTION) {
            self.connection.add(value);
        } else if is(&EXPECT) {
            self.expect_continue |= fields::is_100_continue(value);
        } else if is(&UPGRADE) {
            self.upgrade_field = true;
        }
        Ok(true)
    }
}

/// Runs `f` with `n` empty httparse header slots: on the stack for the
/// usual counts, so that parsing allocates nothing of its own.
pub(super) fn with_header_slots<'b, R>(
    n: usize,
    f: impl FnOnce(&mut [httparse::Header<'b>]) -> R,
) -> R {
    if n <= 32 {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        f(slots.get_mut(..n).unwrap_or_default())
    } else if n <= 128 {
        let mut slots = [httparse::EMPTY_HEADER; 128];
        f(slots.get_mut(..n).unwrap_or_default())
    } else {
        f(&mut vec![httparse::EMPTY_HEADER; n])
    }
}

/// Parses the complete head `head` (its lines already checked), which has
/// `fields` field lines.
fn build_head(head: &Bytes, fields: usize) -> Result<RequestHead, HeadError> {
    let line_end = memchr(b'\r', head).ok_or(HeadError::Malformed("invalid request line"))?;
    let line = request_line(head.get(..line_end).unwrap_or_default())?;
    let uri = request_target(&line.method, line.target, head)?;
    let block = head.get(line_end + 2..).unwrap_or_default();
    let (headers, specials) = with_header_slots(fields, |slots| {
        match httparse::parse_headers(block, slots) {
            Ok(httparse::Status::Complete((_, parsed))) => collect_fields(head, parsed),
            Ok(httparse::Status::Partial) => Err(HeadError::Malformed("incomplete field section")),
            Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooManyHeaders),
            Err(httparse::Error::HeaderName) => Err(HeadError::Malformed("invalid field name")),
            Err(_) => Err(HeadError::Malformed("invalid field value")),
        }
    })?;
    finish(line.method, uri, line.version, headers, &specials)
}

/// Indexes the parsed lines (httparse checked names and values with the
/// same byte rules as `HeaderName` and `HeaderValue`) and records what the
/// special ones say.
fn collect_fields(
    head: &Bytes,
    parsed: &[httparse::Header<'_>],
) -> Result<(RawFields, Specials), HeadError> {
    let mut raw = RawFields::with_capacity(head.clone(), parsed.len());
    let mut specials = Specials::default();
    for field in parsed {
        let name = field.name.as_bytes();
        if !specials.see(name, field.value)? {
            continue;
        }
        if !raw.push(name, field.value) {
            return Err(HeadError::Malformed("field outside the head"));
        }
    }
    Ok((raw, specials))
}

/// The checks that need every field: Host, framing, and what the
/// connection does next.
fn finish(
    method: Method,
    uri: Uri,
    version: Version,
    headers: RawFields,
    specials: &Specials,
) -> Result<RequestHead, HeadError> {
    match specials.hosts {
        0 if version == Version::HTTP_11 => return Err(HeadError::Host("missing")),
        0 => {}
        1 => {
            let host = headers.get(HOST.as_str()).unwrap_or_default();
            fields::host(host, false).map_err(HeadError::Host)?;
        }
        _ => return Err(HeadError::Host("repeated")),
    }
    let body = if let Some(te) = headers.get(TRANSFER_ENCODING.as_str()) {
        if specials.content_length.is_some() {
            return Err(HeadError::TransferEncoding("with content-length"));
        }
        if version == Version::HTTP_10 {
            return Err(HeadError::TransferEncoding("on HTTP/1.0"));
        }
        fields::transfer_encoding(te)?;
        BodyFraming::Chunked
    } else {
        specials
            .content_length
            .map_or(BodyFraming::Empty, BodyFraming::Length)
    };
    let conn = specials.connection;
    let keep_alive = !conn.close && (version == Version::HTTP_11 || conn.keep_alive);
    let has_body = !matches!(body, BodyFraming::Empty | BodyFraming::Length(0));
    Ok(RequestHead {
        method,
        uri,
        version,
        headers,
        body,
        keep_alive,
        expect_continue: specials.expect_continue && has_body,
        upgrade: version == Version::HTTP_11 && conn.upgrade && specials.upgrade_field,
    })
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
