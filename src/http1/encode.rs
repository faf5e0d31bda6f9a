//! Encoding: response heads (with the framing field weir chose), chunks,
//! request heads and the cached Date value.
//!
//! Field names go out as they arrived: the spelling a [`HeaderCase`]
//! recorded, else Title-Case (what a head whose names were all Title-Case
//! records nothing for), which is also how weir writes the fields it adds.
//!
//! Encoders append to a `Vec<u8>` the caller reuses; they never fail:
//! `HeaderName`/`HeaderValue` cannot hold CR or LF, so nothing a peer sent
//! can split a line here.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, Method, StatusCode, Uri, Version};

use super::head::HeaderCase;
use super::raw::RawFields;

/// How a response body goes on the wire (RFC 9112 §6.1–6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body at all (HEAD, 1xx, 204, 304, 2xx to CONNECT).
    NoBody,
    /// Exactly this many bytes, with `content-length`.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients, length unknown).
    Close,
}

/// `100 Continue` interim response bytes.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What follows each chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// HEAD requests, 1xx, 204, 304 and 2xx to CONNECT (a tunnel follows)
/// have no body; a known exact length is sent as Content-Length; else
/// chunked for HTTP/1.1 requests and close-delimited for HTTP/1.0 ones,
/// which cannot read chunked.
pub fn response_framing(
    method: &Method,
    version: Version,
    status: StatusCode,
    exact_len: Option<u64>,
) -> ResponseFraming {
    let no_body = method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || (method == Method::CONNECT && status.is_success());
    match exact_len {
        _ if no_body => ResponseFraming::NoBody,
        Some(n) => ResponseFraming::Length(n),
        None if version == Version::HTTP_11 => ResponseFraming::Chunked,
        None => ResponseFraming::Close,
    }
}

/// Whether the connection can carry another request after this response:
/// not when the body ends with the connection.
pub fn keep_alive_after(request_keep_alive: bool, framing: ResponseFraming) -> bool {
    request_keep_alive && framing != ResponseFraming::Close
}

/// Appends `n` in decimal.
fn push_decimal(mut n: u64, dst: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    dst.extend_from_slice(digits.get(i..).unwrap_or_default());
}

/// Appends one `name: value` line.
fn push_field(name: &[u8], value: &[u8], dst: &mut Vec<u8>) {
    dst.extend_from_slice(name);
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value);
    dst.extend_from_slice(b"\r\n");
}

/// Appends `name` (lowercase, as a `HeaderName` holds it) in Title-Case:
/// `x-forwarded-for` → `X-Forwarded-For`.
fn push_title_case(name: &[u8], dst: &mut Vec<u8>) {
    let start = dst.len();
    dst.extend_from_slice(name);
    let mut word_start = true;
    for b in dst.get_mut(start..).unwrap_or_default() {
        if word_start {
            b.make_ascii_uppercase();
        }
        word_start = *b == b'-';
    }
}

/// A message's fields and the spelling their names arrived with.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    /// The fields.
    pub headers: &'a HeaderMap,
    /// Spellings recorded by the parser; `None` or empty: Title-Case.
    pub case: Option<&'a HeaderCase>,
    /// Lines kept as received (a client's request, an endpoint's
    /// response), written before `headers`.
    pub raw: Option<&'a RawFields>,
    /// Lines written after `headers`, name and value as given (the fields
    /// a proxy adds, with their names in the case they go out in).
    pub extra: &'a [(&'a [u8], &'a [u8])],
}

impl<'a> Fields<'a> {
    /// Fields written in Title-Case.
    pub fn new(headers: &'a HeaderMap) -> Self {
        Self {
            headers,
            case: None,
            raw: None,
            extra: &[],
        }
    }

    /// A message's fields with the spellings its parser recorded, which
    /// travel as a [`HeaderCase`] in the message's extensions.
    pub fn of(headers: &'a HeaderMap, extensions: &'a http::Extensions) -> Self {
        Self {
            headers,
            case: extensions.get::<HeaderCase>(),
            raw: None,
            extra: &[],
        }
    }

    /// The same fields after the lines of `raw`.
    pub fn with_raw(self, raw: Option<&'a RawFields>) -> Self {
        Self { raw, ..self }
    }

    /// The same fields followed by `extra`.
    pub fn with_extra(self, extra: &'a [(&'a [u8], &'a [u8])]) -> Self {
        Self { extra, ..self }
    }

    /// Whether a field is named `name` (lowercase), in either part.
    fn contains(&self, name: &HeaderName) -> bool {
        self.headers.contains_key(name) || self.raw.is_some_and(|r| r.contains(name.as_str()))
    }

    /// Writes each field but those `skip` refuses (the raw lines first,
    /// as received), the nth line of a name with the nth spelling recorded
    /// for it.
    fn write(self, skip: impl Fn(&[u8]) -> bool, dst: &mut Vec<u8>) {
        if let Some(raw) = self.raw {
            raw.write(&skip, dst);
        }
        let case = self.case.filter(|c| !c.is_empty());
        let mut previous: Option<&HeaderName> = None;
        let mut nth = 0;
        for (name, value) in self.headers {
            if case.is_some() {
                // `HeaderMap` yields the lines of one name together.
                nth = if previous == Some(name) { nth + 1 } else { 0 };
                previous = Some(name);
            }
            if skip(name.as_str().as_bytes()) {
                continue;
            }
            match case.and_then(|c| c.spelling(name, nth)) {
                Some(spelling) => dst.extend_from_slice(spelling),
                None => push_title_case(name.as_str().as_bytes(), dst),
            }
            dst.extend_from_slice(b": ");
            dst.extend_from_slice(value.as_bytes());
            dst.extend_from_slice(b"\r\n");
        }
        for (name, value) in self.extra {
            if !skip(name) {
                push_field(name, value, dst);
            }
        }
    }
}

/// Writes `HTTP/1.1 <code> <reason>`, the fields of `headers` but the
/// framing ones, then the framing's field, `connection: close` /
/// `keep-alive` as needed, `date` when `headers` has none, and the final
/// CRLF.
///
/// Content-Length in `headers` is kept only for `NoBody` responses that
/// may carry it (HEAD and 304 state the representation's length; 1xx and
/// 204 must not). A 101 keeps the Connection field of `headers` (its
/// `upgrade` token belongs to the switch) and gets no keep-alive field;
/// other 1xx get none either.
pub fn encode_response_head(
    status: StatusCode,
    fields: Fields<'_>,
    framing: ResponseFraming,
    keep_alive: bool,
    request_version: Version,
    date: &[u8],
    dst: &mut Vec<u8>,
) {
    dst.extend_from_slice(b"HTTP/1.1 ");
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    dst.extend_from_slice(b"\r\n");
    let interim = status.is_informational();
    let keep_length =
        framing == ResponseFraming::NoBody && !interim && status != StatusCode::NO_CONTENT;
    let switching = status == StatusCode::SWITCHING_PROTOCOLS;
    let skip = |name: &[u8]| {
        name.eq_ignore_ascii_case(TRANSFER_ENCODING.as_str().as_bytes())
            || (!keep_length && name.eq_ignore_ascii_case(CONTENT_LENGTH.as_str().as_bytes()))
            || (!switching && name.eq_ignore_ascii_case(CONNECTION.as_str().as_bytes()))
    };
    fields.write(skip, dst);
    match framing {
        ResponseFraming::Length(n) => {
            dst.extend_from_slice(b"Content-Length: ");
            push_decimal(n, dst);
            dst.extend_from_slice(b"\r\n");
        }
        ResponseFraming::Chunked => dst.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        ResponseFraming::NoBody | ResponseFraming::Close => {}
    }
    if !interim {
        if !keep_alive {
            dst.extend_from_slice(b"Connection: close\r\n");
        } else if request_version == Version::HTTP_10 {
            dst.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    if !fields.contains(&DATE) {
        push_field(b"Date", date, dst);
    }
    dst.extend_from_slice(b"\r\n");
}

/// Writes `<hex len>\r\n`, the line before a chunk's data. Empty data
/// must not be framed at all (skip this and [`CHUNK_END`]): a zero size
/// is the last chunk, so nothing is written for `len == 0`.
pub fn encode_chunk_header(len: usize, dst: &mut Vec<u8>) {
    if len == 0 {
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    while n > 0 && i > 0 {
        i -= 1;
        if let (Some(d), Some(&h)) = (digits.get_mut(i), HEX.get(n & 0xf)) {
            *d = h;
        }
        n >>= 4;
    }
    dst.extend_from_slice(digits.get(i..).unwrap_or_default());
    dst.extend_from_slice(b"\r\n");
}

/// Writes the last chunk, the trailer fields if any, and the final CRLF.
pub fn encode_last_chunk(trailers: Option<&HeaderMap>, dst: &mut Vec<u8>) {
    dst.extend_from_slice(b"0\r\n");
    if let Some(trailers) = trailers {
        Fields::new(trailers).write(|_| false, dst);
    }
    dst.extend_from_slice(b"\r\n");
}

/// Writes a request head: the request line with `uri` as given (origin
/// form for a path-only uri; absolute, authority or asterisk form as
/// they are), then every field (named as [`Fields`] says), and the final
/// CRLF.
pub fn encode_request_head(
    method: &Method,
    uri: &Uri,
    version: Version,
    fields: Fields<'_>,
    dst: &mut Vec<u8>,
) {
    dst.extend_from_slice(method.as_str().as_bytes());
    dst.push(b' ');
    if let Some(scheme) = uri.scheme_str() {
        dst.extend_from_slice(scheme.as_bytes());
        dst.extend_from_slice(b"://");
    }
    if let Some(authority) = uri.authority() {
        dst.extend_from_slice(authority.as_str().as_bytes());
    }
    dst.extend_from_slice(uri.path().as_bytes());
    if let Some(query) = uri.query() {
        dst.push(b'?');
        dst.extend_from_slice(query.as_bytes());
    }
    let version: &[u8] = if version == Version::HTTP_10 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    };
    dst.extend_from_slice(version);
    fields.write(|_| false, dst);
    dst.extend_from_slice(b"\r\n");
}

thread_local! {
    /// The second the cached date is for, and its text.
    static DATE_CACHE: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [b' '; 29])) };
}

/// The current time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`),
/// for the `date` field: formatted at most once per second per thread.
pub fn http_date() -> [u8; 29] {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_CACHE.with(|cache| {
        let (cached_secs, text) = cache.get();
        if cached_secs == secs {
            return text;
        }
        let mut fresh = [b' '; 29];
        let formatted = httpdate::fmt_http_date(now);
        if let Some(dst) = fresh.get_mut(..formatted.len()) {
            dst.copy_from_slice(formatted.as_bytes());
        }
        cache.set((secs, fresh));
        fresh
    })
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
