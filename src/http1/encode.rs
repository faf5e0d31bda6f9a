//! Encoding: response heads, chunks, request heads and the Date field.

use http::{HeaderMap, Method, StatusCode, Uri, Version};

use super::head::HeaderCase;

/// How a response body goes on the wire (RFC 9112 §6.1–6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body at all.
    NoBody,
    /// Exactly this many bytes, with `content-length`.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// Until the connection closes.
    Close,
}

/// `100 Continue` interim response bytes.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What follows each chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// The framing of a response.
pub fn response_framing(
    method: &Method,
    version: Version,
    status: StatusCode,
    exact_len: Option<u64>,
) -> ResponseFraming {
    let _ = (method, version, status, exact_len);
    ResponseFraming::Close
}

/// Whether the connection can carry another request after this response.
pub fn keep_alive_after(request_keep_alive: bool, framing: ResponseFraming) -> bool {
    request_keep_alive && framing != ResponseFraming::Close
}

/// Writes a response head.
pub fn encode_response_head(
    status: StatusCode,
    headers: &HeaderMap,
    framing: ResponseFraming,
    keep_alive: bool,
    request_version: Version,
    date: &[u8],
    dst: &mut Vec<u8>,
) {
    let _ = (
        status,
        headers,
        framing,
        keep_alive,
        request_version,
        date,
        dst,
    );
}

/// Writes a chunk header.
pub fn encode_chunk_header(len: usize, dst: &mut Vec<u8>) {
    let _ = (len, dst);
}

/// Writes the last chunk.
pub fn encode_last_chunk(trailers: Option<&HeaderMap>, dst: &mut Vec<u8>) {
    let _ = (trailers, dst);
}

/// Writes a request head.
pub fn encode_request_head(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    case: Option<&HeaderCase>,
    dst: &mut Vec<u8>,
) {
    let _ = (method, uri, version, headers, case, dst);
}

/// The current IMF-fixdate.
pub fn http_date() -> [u8; 29] {
    [b' '; 29]
}
