//! Encoding rules: framing choice, response and request heads, chunks,
//! the Date value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri, Version};

use super::*;

const DATE_TEXT: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";

fn map(fields: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (n, v) in fields {
        m.append(HeaderName::from_static(n), HeaderValue::from_static(v));
    }
    m
}

fn response(
    status: u16,
    headers: &HeaderMap,
    framing: ResponseFraming,
    keep_alive: bool,
    version: Version,
) -> String {
    let mut dst = Vec::new();
    encode_response_head(
        StatusCode::from_u16(status).unwrap(),
        Fields::new(headers),
        framing,
        keep_alive,
        version,
        DATE_TEXT,
        &mut dst,
    );
    String::from_utf8(dst).unwrap()
}

#[test]
fn response_framing_table() {
    use ResponseFraming::*;
    let (get, head, connect) = (Method::GET, Method::HEAD, Method::CONNECT);
    let s = |c| StatusCode::from_u16(c).unwrap();
    let cases = [
        (&head, Version::HTTP_11, 200, Some(5), NoBody),
        (&get, Version::HTTP_11, 100, None, NoBody),
        (&get, Version::HTTP_11, 101, None, NoBody),
        (&get, Version::HTTP_11, 204, Some(0), NoBody),
        (&get, Version::HTTP_11, 304, Some(5), NoBody),
        (&connect, Version::HTTP_11, 200, None, NoBody),
        (&connect, Version::HTTP_11, 407, Some(3), Length(3)),
        (&get, Version::HTTP_11, 200, Some(5), Length(5)),
        (&get, Version::HTTP_10, 200, Some(0), Length(0)),
        (&get, Version::HTTP_11, 200, None, Chunked),
        (&get, Version::HTTP_10, 200, None, Close),
    ];
    for (method, version, status, len, want) in cases {
        assert_eq!(
            response_framing(method, version, s(status), len),
            want,
            "{method} {version:?} {status} {len:?}"
        );
    }
}

#[test]
fn keep_alive_after_close_framing_is_false() {
    assert!(keep_alive_after(true, ResponseFraming::Chunked));
    assert!(keep_alive_after(true, ResponseFraming::Length(3)));
    assert!(keep_alive_after(true, ResponseFraming::NoBody));
    assert!(!keep_alive_after(true, ResponseFraming::Close));
    assert!(!keep_alive_after(false, ResponseFraming::Length(3)));
}

#[test]
fn response_head_bytes() {
    let head = response(
        200,
        &map(&[("content-type", "text/plain")]),
        ResponseFraming::Length(12),
        true,
        Version::HTTP_11,
    );
    assert_eq!(head, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n");
}

#[test]
fn response_head_framing_fields_come_from_the_framing() {
    let h = map(&[
        ("content-length", "99"),
        ("transfer-encoding", "gzip"),
        ("connection", "x"),
        ("x", "1"),
    ]);
    let chunked = response(200, &h, ResponseFraming::Chunked, true, Version::HTTP_11);
    assert_eq!(chunked, "HTTP/1.1 200 OK\r\nX: 1\r\nTransfer-Encoding: chunked\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n");
    let close = response(200, &h, ResponseFraming::Close, false, Version::HTTP_10);
    assert_eq!(close, "HTTP/1.1 200 OK\r\nX: 1\r\nConnection: close\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n");
}

#[test]
fn no_body_keeps_content_length_for_head_and_304_only() {
    let h = map(&[("content-length", "42"), ("date", "x")]);
    assert_eq!(
        response(200, &h, ResponseFraming::NoBody, true, Version::HTTP_11),
        "HTTP/1.1 200 OK\r\nContent-Length: 42\r\nDate: x\r\n\r\n"
    );
    assert_eq!(
        response(304, &h, ResponseFraming::NoBody, true, Version::HTTP_11),
        "HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\nDate: x\r\n\r\n"
    );
    assert_eq!(
        response(204, &h, ResponseFraming::NoBody, true, Version::HTTP_11),
        "HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n"
    );
}

#[test]
fn connection_field_follows_keep_alive_and_version() {
    let h = map(&[("date", "d")]);
    assert_eq!(
        response(200, &h, ResponseFraming::Length(0), true, Version::HTTP_10),
        "HTTP/1.1 200 OK\r\nDate: d\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
    );
    assert_eq!(
        response(200, &h, ResponseFraming::Length(0), false, Version::HTTP_11),
        "HTTP/1.1 200 OK\r\nDate: d\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

#[test]
fn switching_protocols_keeps_its_connection_field() {
    let h = map(&[
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("date", "d"),
    ]);
    assert_eq!(response(101, &h, ResponseFraming::NoBody, true, Version::HTTP_11), "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\nDate: d\r\n\r\n");
}

#[test]
fn unknown_status_has_an_empty_reason() {
    let head = response(
        599,
        &map(&[("date", "d")]),
        ResponseFraming::Length(0),
        true,
        Version::HTTP_11,
    );
    assert!(head.starts_with("HTTP/1.1 599 \r\n"), "{head}");
}

#[test]
fn continue_bytes() {
    assert_eq!(CONTINUE, b"HTTP/1.1 100 Continue\r\n\r\n");
}

#[test]
fn chunk_pieces() {
    let mut dst = Vec::new();
    encode_chunk_header(0x1a2b, &mut dst);
    dst.extend_from_slice(CHUNK_END);
    encode_chunk_header(1, &mut dst);
    encode_chunk_header(0, &mut dst);
    encode_chunk_header(usize::MAX, &mut dst);
    assert_eq!(
        dst,
        format!("1a2b\r\n\r\n1\r\n{:x}\r\n", usize::MAX).as_bytes()
    );
    let mut last = Vec::new();
    encode_last_chunk(None, &mut last);
    assert_eq!(last, b"0\r\n\r\n");
    let mut last = Vec::new();
    encode_last_chunk(Some(&map(&[("x-sum", "1"), ("x-sum", "2")])), &mut last);
    assert_eq!(last, b"0\r\nX-Sum: 1\r\nX-Sum: 2\r\n\r\n");
}

#[test]
fn request_head_keeps_spellings() {
    let headers = map(&[
        ("host", "a"),
        ("x-thing", "1"),
        ("x-thing", "2"),
        ("accept", "*/*"),
    ]);
    let mut case = HeaderCase::default();
    case.push(HeaderName::from_static("host"), "HOST".into());
    case.push(HeaderName::from_static("x-thing"), "X-Thing".into());
    case.push(HeaderName::from_static("x-thing"), "x-THING".into());
    let mut dst = Vec::new();
    encode_request_head(
        &Method::POST,
        &Uri::from_static("/p?q=1"),
        Version::HTTP_11,
        Fields {
            headers: &headers,
            case: Some(&case),
            raw: None,
            extra: &[],
        },
        &mut dst,
    );
    assert_eq!(
        String::from_utf8(dst).unwrap(),
        "POST /p?q=1 HTTP/1.1\r\nHOST: a\r\nX-Thing: 1\r\nx-THING: 2\r\nAccept: */*\r\n\r\n"
    );
}

#[test]
fn names_without_a_recorded_spelling_go_out_in_title_case() {
    let headers = map(&[
        ("x-forwarded-for", "1.2.3.4"),
        ("etag", "\"a\""),
        ("te", "trailers"),
    ]);
    let mut dst = Vec::new();
    let fields = Fields {
        headers: &headers,
        case: Some(&HeaderCase::default()),
        raw: None,
        extra: &[],
    };
    encode_request_head(
        &Method::GET,
        &Uri::from_static("/"),
        Version::HTTP_11,
        fields,
        &mut dst,
    );
    assert_eq!(
        String::from_utf8(dst).unwrap(),
        "GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\nEtag: \"a\"\r\nTe: trailers\r\n\r\n"
    );
}

#[test]
fn response_names_keep_their_recorded_spelling() {
    let headers = map(&[("etag", "\"a\""), ("x-b", "1"), ("x-b", "2")]);
    let mut case = HeaderCase::default();
    case.push(HeaderName::from_static("etag"), "ETag".into());
    case.push(HeaderName::from_static("x-b"), "x-b".into());
    case.push(HeaderName::from_static("x-b"), "X-B".into());
    let mut dst = Vec::new();
    let fields = Fields {
        headers: &headers,
        case: Some(&case),
        raw: None,
        extra: &[],
    };
    encode_response_head(
        StatusCode::OK,
        fields,
        ResponseFraming::Length(0),
        true,
        Version::HTTP_11,
        DATE_TEXT,
        &mut dst,
    );
    assert_eq!(
        String::from_utf8(dst).unwrap(),
        "HTTP/1.1 200 OK\r\nETag: \"a\"\r\nx-b: 1\r\nX-B: 2\r\nContent-Length: 0\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n"
    );
}

#[test]
fn raw_fields_go_first_as_received_without_their_framing_fields() {
    let mut buf = bytes::BytesMut::from(
        &b"HTTP/1.1 200 OK\r\nserver: s\r\ncontent-LENGTH: 3\r\nDATE: d\r\nConnection: x\r\n\r\n"[..],
    );
    let scan = &mut crate::http1::ResponseScan::default();
    let head = crate::http1::parse_response(
        &mut buf,
        &crate::http1::Limits::default(),
        &Method::GET,
        scan,
    )
    .unwrap()
    .unwrap();
    let added = map(&[("x-request-id", "7")]);
    let mut dst = Vec::new();
    encode_response_head(
        StatusCode::OK,
        Fields::new(&added).with_raw(Some(&head.headers)),
        ResponseFraming::Length(3),
        true,
        Version::HTTP_11,
        DATE_TEXT,
        &mut dst,
    );
    assert_eq!(
        String::from_utf8(dst).unwrap(),
        "HTTP/1.1 200 OK\r\nserver: s\r\nDATE: d\r\nX-Request-Id: 7\r\nContent-Length: 3\r\n\r\n"
    );
}

#[test]
fn request_head_target_forms() {
    let cases = [
        ("http://a:8080/p?q", "http://a:8080/p?q"),
        ("a:443", "a:443"),
        ("*", "*"),
        ("/", "/"),
    ];
    for (uri, line) in cases {
        let mut dst = Vec::new();
        encode_request_head(
            &Method::GET,
            &Uri::from_static(uri),
            Version::HTTP_10,
            Fields::new(&HeaderMap::new()),
            &mut dst,
        );
        assert_eq!(dst, format!("GET {line} HTTP/1.0\r\n\r\n").as_bytes());
    }
}

#[test]
fn http_date_is_a_current_imf_fixdate() {
    let date = http_date();
    let text = std::str::from_utf8(&date).unwrap();
    assert!(text.ends_with(" GMT"), "{text}");
    let parsed = httpdate::parse_http_date(text).unwrap();
    let now = std::time::SystemTime::now();
    let skew = now.duration_since(parsed).unwrap_or_default();
    assert!(skew.as_secs() <= 2, "{text}");
    // Cached: the same second gives the same bytes (or the next second's).
    let again = httpdate::parse_http_date(std::str::from_utf8(&http_date()).unwrap()).unwrap();
    assert!(again >= parsed);
}
