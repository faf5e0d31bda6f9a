//! weir's own HTTP/1.1 codec: sans-IO parsing and validation of request
//! heads, body decoding, and encoding of response heads, chunks and
//! request heads. No IO and no timers: the connection driver owns the
//! socket, the buffers and the clocks, and calls these functions on bytes.
//!
//! # Why weir has its own
//!
//! hyper's server connection decided things a proxy needs to decide
//! itself:
//!
//! - the read buffer of an idle keep-alive connection could not be given
//!   back, so thousands of idle clients each pinned one;
//! - idle keep-alive time and the time to read a request head were one
//!   timer, so a slow head and a quiet client could not be told apart;
//! - chunk extensions were capped per body, not per chunk line, so a
//!   long body with ordinary extensions failed;
//! - a request with both Content-Length and Transfer-Encoding had the
//!   Content-Length dropped and was forwarded, where RFC 9112 §6.1 says a
//!   proxy should refuse it (a smuggling vector);
//! - `Transfer-Encoding: gzip, chunked` was forwarded, a coding weir
//!   cannot vouch for (501 here).
//!
//! # The rules, and what each one answers
//!
//! | Rule | Refusal |
//! |------|---------|
//! | Every line ends in CRLF; bare LF or CR anywhere in the head → reject (httparse accepts bare LF) | 400 `Malformed` |
//! | Empty lines before the request line are skipped (RFC 9112 §2.2) | — |
//! | Request line is exactly `method SP target SP version`; method a token | 400 `Malformed` |
//! | `HTTP/1.0`, `HTTP/1.1`; other `HTTP/d.d` | 505 `Version` |
//! | Target: origin-form, absolute-form (`http`/`https`, no userinfo), authority-form only for CONNECT, `*` only for OPTIONS, no `#` | 400 `Malformed` |
//! | Field names are tokens, no space before the colon; no obs-fold; no CTL but HTAB in values | 400 `Malformed` |
//! | Head larger than `max_head_bytes`; more than `max_headers` fields | 431 |
//! | HTTP/1.1: exactly one Host; any Host is `uri-host [":" port]` | 400 `Host` |
//! | Content-Length is `1*DIGIT` within u64; identical duplicates collapse, differing ones reject | 400 `ContentLength` |
//! | Transfer-Encoding: not with Content-Length, not on HTTP/1.0, one field line, clean tokens, `chunked` once and last | 400 `TransferEncoding` |
//! | Transfer-Encoding with a valid coding other than `chunked` | 501 `UnknownCoding` |
//! | Chunk size `1*HEXDIG` within u64; extensions by the RFC grammar, each line ≤ `max_chunk_ext_bytes`; CRLF after data | 400 [`FramingError`] |
//! | Trailers ≤ `max_trailer_bytes`; framing and routing fields in them are dropped | 400 `Trailers` |
//!
//! When in doubt, the codec rejects: a proxy that reads framing
//! differently from the server behind it lets one client's bytes become
//! another client's request. The driver closes the connection after every
//! refusal.
//!
//! # Cost
//!
//! Parsing allocates one index of the field lines and nothing else: a
//! head's fields are not copied into a `HeaderMap` at all. They stay in
//! the read buffer where they arrived, indexed by [`RawFields`] (where each
//! name and value is, and which lines are connection-specific), and go on
//! to an HTTP/1.1 peer as they came, spelling and order included, minus
//! the lines the proxy drops; weir's own fields follow from a small map.
//! A map is built only for an HTTP/2 peer or a protocol switch
//! ([`RawFields::into_map`]). This is how sozu's kawa keeps a message;
//! building and dropping two maps per request, with a hash and an insert
//! per field, was a fifth of the instructions of a small proxied request.
//! httparse's slots live on the stack, and body data is split off the
//! buffer. Incomplete input is never rescanned: [`BodyDecoder`] and
//! [`parse_request_resumed`] remember how far they looked, so a peer that
//! sends one byte at a time costs linear time.

mod body;
mod encode;
mod fields;
mod head;
mod lines;
mod raw;
mod response;

pub use body::{BodyDecoder, Chunk, ChunkedDecoder, FramingError};
pub use encode::{
    encode_chunk_header, encode_last_chunk, encode_request_head, encode_response_head, http_date,
    keep_alive_after, response_framing, Fields, ResponseFraming, CHUNK_END, CONTINUE,
};
pub use fields::is_reg_name;
pub use head::{
    parse_request, parse_request_resumed, BodyFraming, HeadError, HeadScan, HeaderCase, Limits,
    RequestHead,
};
pub use raw::{is_hop_by_hop, RawFields};
pub use response::{parse_response, ResponseError, ResponseHead, ResponseScan, UpstreamFraming};
