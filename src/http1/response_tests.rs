//! Unit tests of response-head parsing, one per rule, on raw bytes.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use bytes::BytesMut;
use http::{Method, StatusCode, Version};

use super::*;

fn parse_for(method: &Method, raw: &[u8]) -> Result<Option<ResponseHead>, ResponseError> {
    let mut buf = BytesMut::from(raw);
    parse_response(
        &mut buf,
        &Limits::default(),
        method,
        &mut ResponseScan::default(),
    )
}

fn ok(raw: &[u8]) -> ResponseHead {
    parse_for(&Method::GET, raw).unwrap().unwrap()
}

fn err(raw: &[u8]) -> ResponseError {
    parse_for(&Method::GET, raw).unwrap_err()
}

#[test]
fn a_plain_response_parses_with_its_reason_and_spelling() {
    let head = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nx-odd-CASE: v\r\n\r\n");
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.version, Version::HTTP_11);
    assert_eq!(&head.reason[..], b"OK");
    assert_eq!(head.body, UpstreamFraming::Length(2));
    assert!(head.keep_alive);
    assert_eq!(head.headers.get("X-ODD-case"), Some(&b"v"[..]));
    let names: Vec<&[u8]> = head.headers.iter().map(|(n, _)| n).collect();
    assert_eq!(names, [&b"Content-Length"[..], b"x-odd-CASE"]);
}

#[test]
fn status_lines_must_be_exact() {
    // An empty reason, with or without its space, is fine.
    assert_eq!(ok(b"HTTP/1.1 204 \r\n\r\n").status, StatusCode::NO_CONTENT);
    assert_eq!(ok(b"HTTP/1.1 204\r\n\r\n").status, StatusCode::NO_CONTENT);
    for bad in [
        &b"HTTP/1.1 20 OK\r\n\r\n"[..],
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/1.1 099 X\r\n\r\n",
        b"HTTP/1.1 600 X\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"http/1.1 200 OK\r\n\r\n",
        b"ICY 200 OK\r\n\r\n",
        b"HTTP/1.1 200 O\x01K\r\n\r\n",
    ] {
        assert!(
            matches!(err(bad), ResponseError::Malformed(_)),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(err(b"HTTP/2.0 200 OK\r\n\r\n"), ResponseError::Version);
}

#[test]
fn malformed_fields_are_refused() {
    for bad in [
        &b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nX-A : a\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n",
        b"HTTP/1.1 200 OK\nX-A: a\n\n",
        b"HTTP/1.1 200 OK\r\nX(A): a\r\n\r\n",
    ] {
        assert!(
            matches!(err(bad), ResponseError::Malformed(_)),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn ambiguous_framing_is_refused() {
    assert!(matches!(
        err(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ResponseError::TransferEncoding(_)
    ));
    assert!(matches!(
        err(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
        ResponseError::ContentLength(_)
    ));
    assert!(matches!(
        err(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n"),
        ResponseError::ContentLength(_)
    ));
    assert!(matches!(
        err(b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n"),
        ResponseError::ContentLength(_)
    ));
    for te in ["gzip, chunked", "chunked, gzip", "xchunked"] {
        let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n");
        assert!(
            matches!(err(raw.as_bytes()), ResponseError::TransferEncoding(_)),
            "{te}"
        );
    }
    // Identical duplicates collapse.
    let head = ok(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
    assert_eq!(head.headers.get_all("content-length").count(), 1);
    assert_eq!(head.body, UpstreamFraming::Length(3));
}

#[test]
fn heads_over_the_limits_are_refused() {
    let limits = Limits {
        max_head_bytes: 64,
        max_headers: 2,
        ..Limits::default()
    };
    let mut scan = ResponseScan::default();
    let mut big =
        BytesMut::from(&[b"HTTP/1.1 200 OK\r\nX-A: ".as_slice(), &[b'a'; 80]][..].concat()[..]);
    assert_eq!(
        parse_response(&mut big, &limits, &Method::GET, &mut scan).unwrap_err(),
        ResponseError::HeadTooLarge
    );
    let mut many = BytesMut::from(&b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"[..]);
    let mut scan = ResponseScan::default();
    assert_eq!(
        parse_response(&mut many, &limits, &Method::GET, &mut scan).unwrap_err(),
        ResponseError::TooManyHeaders
    );
}

#[test]
fn framing_follows_rfc9112_section_6_3_in_order() {
    let with_len = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    assert_eq!(
        parse_for(&Method::HEAD, with_len).unwrap().unwrap().body,
        UpstreamFraming::NoBody
    );
    assert_eq!(
        ok(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n").body,
        UpstreamFraming::NoBody
    );
    assert_eq!(
        ok(b"HTTP/1.1 204 No Content\r\n\r\n").body,
        UpstreamFraming::NoBody
    );
    assert_eq!(
        ok(b"HTTP/1.1 100 Continue\r\n\r\n").body,
        UpstreamFraming::NoBody
    );
    assert_eq!(
        ok(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n").body,
        UpstreamFraming::Tunnel
    );
    assert_eq!(
        parse_for(&Method::CONNECT, b"HTTP/1.1 200 OK\r\n\r\n")
            .unwrap()
            .unwrap()
            .body,
        UpstreamFraming::Tunnel
    );
    assert_eq!(
        ok(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").body,
        UpstreamFraming::Chunked
    );
    let close = ok(b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(close.body, UpstreamFraming::Close);
    assert!(!close.keep_alive);
}

#[test]
fn keep_alive_follows_version_and_connection() {
    assert!(!ok(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive);
    assert!(!ok(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
    assert!(
        ok(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n").keep_alive
    );
}

#[test]
fn bytes_after_the_head_stay_in_the_buffer() {
    let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"[..]);
    let head = parse_response(
        &mut buf,
        &Limits::default(),
        &Method::GET,
        &mut ResponseScan::default(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(&buf[..], b"okEXTRA");
    let mut decoder = head.body.decoder(&Limits::default());
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Some(super::super::Chunk::Data(bytes::Bytes::from_static(b"ok")))
    );
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Some(super::super::Chunk::End)
    );
    // What follows a complete response is left for the caller to see.
    assert_eq!(&buf[..], b"EXTRA");
}

#[test]
fn byte_by_byte_feeding_gives_the_same_head() {
    let raw =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let mut buf = BytesMut::new();
    let mut scan = ResponseScan::default();
    let limits = Limits::default();
    let mut head = None;
    for &b in raw.iter() {
        buf.extend_from_slice(&[b]);
        if let Some(h) = parse_response(&mut buf, &limits, &Method::GET, &mut scan).unwrap() {
            head = Some(h);
            break;
        }
    }
    let head = head.unwrap();
    assert_eq!(head.body, UpstreamFraming::Chunked);
    assert_eq!(head.headers.get("x-a"), Some(&b"b"[..]));
}

#[test]
fn fields_are_kept_as_received_in_order_with_their_spelling() {
    let head = ok(b"HTTP/1.1 200 OK\r\nx-Custom: 1\r\nSet-Cookie: a\r\nCONTENT-length: 2\r\nSet-Cookie: b\r\n\r\n");
    let lines: Vec<(&[u8], &[u8])> = head.headers.iter().collect();
    assert_eq!(
        lines,
        [
            (&b"x-Custom"[..], &b"1"[..]),
            (b"Set-Cookie", b"a"),
            (b"CONTENT-length", b"2"),
            (b"Set-Cookie", b"b"),
        ]
    );
    assert_eq!(head.body, UpstreamFraming::Length(2));
}
