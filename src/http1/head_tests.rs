//! The request head rules, one test each, on raw bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::BytesMut;
use http::{Method, StatusCode, Version};

use super::*;

fn parse_with(raw: &[u8], limits: &Limits) -> Result<Option<RequestHead>, HeadError> {
    parse_request(&mut BytesMut::from(raw), limits)
}

fn parse(raw: &[u8]) -> Result<Option<RequestHead>, HeadError> {
    parse_with(raw, &Limits::default())
}

fn ok(raw: &[u8]) -> RequestHead {
    match parse(raw) {
        Ok(Some(head)) => head,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
    }
}

fn err(raw: &[u8]) -> HeadError {
    match parse(raw) {
        Err(e) => e,
        other => panic!("{:?} parsed: {other:?}", String::from_utf8_lossy(raw)),
    }
}

/// `GET <target> HTTP/1.1` with Host `a` and the given extra field lines.
fn get_with(fields: &str) -> Vec<u8> {
    format!("GET / HTTP/1.1\r\nHost: a\r\n{fields}\r\n").into_bytes()
}

fn is_malformed(e: &HeadError) -> bool {
    matches!(e, HeadError::Malformed(_)) && e.status() == StatusCode::BAD_REQUEST
}

#[test]
fn status_table() {
    let cases = [
        (HeadError::Malformed("x"), 400),
        (HeadError::Version, 505),
        (HeadError::HeadTooLarge, 431),
        (HeadError::TooManyHeaders, 431),
        (HeadError::Host("x"), 400),
        (HeadError::ContentLength("x"), 400),
        (HeadError::TransferEncoding("x"), 400),
        (HeadError::UnknownCoding, 501),
    ];
    for (e, code) in cases {
        assert_eq!(e.status().as_u16(), code, "{e}");
    }
}

#[test]
fn minimal_request_parses() {
    let head = ok(b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(head.method, Method::GET);
    assert_eq!(head.uri, "/a?b=c");
    assert_eq!(head.version, Version::HTTP_11);
    assert_eq!(text(head.headers.get("host")), "example.com");
    assert_eq!(head.body, BodyFraming::Empty);
    assert!(head.keep_alive);
    assert!(!head.expect_continue);
    assert!(!head.upgrade);
}

#[test]
fn request_line_is_exactly_method_sp_target_sp_version() {
    for raw in [
        &b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
        b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /\tHTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /\r\nHost: a\r\n\r\n",
        b"GET\r\nHost: a\r\n\r\n",
        b" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / a HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert!(
            is_malformed(&err(raw)),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn method_is_a_token() {
    ok(b"PURGE-ALL / HTTP/1.1\r\nHost: a\r\n\r\n");
    for raw in [
        &b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GE\0T / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"G\xc3\xa9T / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert!(is_malformed(&err(raw)));
    }
}

#[test]
fn version_other_than_1_0_and_1_1_is_505() {
    for v in ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0"] {
        let e = err(format!("GET / {v}\r\nHost: a\r\n\r\n").as_bytes());
        assert_eq!(e, HeadError::Version, "{v}");
        assert_eq!(e.status(), StatusCode::HTTP_VERSION_NOT_SUPPORTED);
    }
    for v in [
        "HTTP/1.10",
        "http/1.1",
        "HTTP/1",
        "HTTP/x.1",
        "HTTP/11",
        "HTTPS/1.1",
        "HTTP/1.1\0",
    ] {
        assert!(
            is_malformed(&err(format!("GET / {v}\r\nHost: a\r\n\r\n").as_bytes())),
            "{v}"
        );
    }
    assert_eq!(ok(b"GET / HTTP/1.0\r\n\r\n").version, Version::HTTP_10);
}

#[test]
fn origin_form_target() {
    assert_eq!(
        ok(b"GET /p/q?x=1&y=%20 HTTP/1.1\r\nHost: a\r\n\r\n").uri,
        "/p/q?x=1&y=%20"
    );
}

#[test]
fn absolute_form_target_http_or_https_only() {
    let head = ok(b"GET http://example.com:8080/p?q HTTP/1.1\r\nHost: example.com:8080\r\n\r\n");
    assert_eq!(head.uri.scheme_str(), Some("http"));
    assert_eq!(head.uri.authority().unwrap(), "example.com:8080");
    assert_eq!(head.uri.path(), "/p");
    ok(b"GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n");
    ok(b"GET HTTP://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n");
    for target in [
        "ftp://example.com/",
        "example.com/",
        "http://user@example.com/",
        "http://a b/",
        "http:///p",
        "p",
    ] {
        assert!(
            is_malformed(&err(
                format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()
            )),
            "{target}"
        );
    }
}

#[test]
fn authority_form_only_for_connect() {
    let head = ok(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert_eq!(head.method, Method::CONNECT);
    assert_eq!(head.uri.authority().unwrap(), "example.com:443");
    ok(b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n");
    for raw in [
        &b"GET example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT example.com: HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT http://example.com:443/ HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT u@example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert!(
            is_malformed(&err(raw)),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn asterisk_form_only_for_options() {
    assert_eq!(ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").uri, "*");
    assert!(is_malformed(&err(b"GET * HTTP/1.1\r\nHost: a\r\n\r\n")));
    assert!(is_malformed(&err(
        b"OPTIONS ** HTTP/1.1\r\nHost: a\r\n\r\n"
    )));
}

#[test]
fn fragment_in_target_is_rejected() {
    assert!(is_malformed(&err(b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n")));
    assert!(is_malformed(&err(
        b"GET http://a/#b HTTP/1.1\r\nHost: a\r\n\r\n"
    )));
}

#[test]
fn target_outside_visible_ascii_is_rejected() {
    for raw in [
        &b"GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert!(is_malformed(&err(raw)));
    }
}

#[test]
fn bare_lf_anywhere_in_head_is_malformed() {
    for raw in [
        &b"GET / HTTP/1.1\nHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \nb\r\n\r\n",
        b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert_eq!(
            err(raw),
            HeadError::Malformed("bare LF"),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn bare_cr_anywhere_in_head_is_malformed() {
    for raw in [
        &b"GET / HTTP/1.1\rHost: a\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n\rX",
        b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    ] {
        assert_eq!(
            err(raw),
            HeadError::Malformed("bare CR"),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn obs_fold_is_malformed() {
    assert!(is_malformed(&err(&get_with("X: a\r\n b\r\n"))));
    assert!(is_malformed(&err(&get_with("X: a\r\n\tb\r\n"))));
    assert!(is_malformed(&err(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n")));
}

#[test]
fn space_before_colon_is_malformed() {
    assert!(is_malformed(&err(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n")));
    assert!(is_malformed(&err(&get_with("X\t: a\r\n"))));
}

#[test]
fn field_name_must_be_a_token() {
    for line in [
        ": a\r\n",
        "X(y): a\r\n",
        "X\0: a\r\n",
        "X\x7f: a\r\n",
        "no colon\r\n",
        "Caf\u{e9}: a\r\n",
    ] {
        assert!(is_malformed(&err(&get_with(line))), "{line:?}");
    }
}

#[test]
fn ctl_in_value_is_malformed_but_htab_is_allowed() {
    for line in [
        "X: a\0b\r\n",
        "X: a\x01b\r\n",
        "X: a\x7fb\r\n",
        "X: \x1b[0m\r\n",
    ] {
        assert!(is_malformed(&err(&get_with(line))), "{line:?}");
    }
    assert_eq!(text(ok(&get_with("X: a\tb\r\n")).headers.get("x")), "a\tb");
    // obs-text stays opaque.
    assert_eq!(
        ok(&get_with("X: caf\u{e9}\r\n")).headers.get("x").unwrap(),
        "caf\u{e9}".as_bytes()
    );
}

#[test]
fn values_are_trimmed_of_ows() {
    let head = ok(&get_with("X:  \t v  w \t\r\nEmpty:\r\nBlank: \t \r\n"));
    assert_eq!(text(head.headers.get("x")), "v  w");
    assert_eq!(text(head.headers.get("empty")), "");
    assert_eq!(text(head.headers.get("blank")), "");
}

#[test]
fn head_too_large_is_431() {
    let limits = Limits {
        max_head_bytes: 40,
        ..Limits::default()
    };
    // Complete at exactly 40 bytes: fine.
    let exact = b"GET /aaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(exact.len(), 40);
    assert!(parse_with(exact, &limits).unwrap().is_some());
    // One byte more, complete or not: too large.
    let over = b"GET /aaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n";
    let e = parse_with(over, &limits).unwrap_err();
    assert_eq!(e, HeadError::HeadTooLarge);
    assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(
        parse_with(&over[..41], &limits).unwrap_err(),
        HeadError::HeadTooLarge
    );
    // Incomplete within the limit: read more.
    assert!(parse_with(&over[..40], &limits).unwrap().is_none());
}

#[test]
fn too_many_headers_is_431() {
    let limits = Limits {
        max_headers: 3,
        ..Limits::default()
    };
    let three = get_with("A: 1\r\nB: 2\r\n");
    assert!(parse_with(&three, &limits).unwrap().is_some());
    let four = get_with("A: 1\r\nB: 2\r\nC: 3\r\n");
    let e = parse_with(&four, &limits).unwrap_err();
    assert_eq!(e, HeadError::TooManyHeaders);
    assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    // Past the stack slots too.
    let many: String = (0..200).map(|i| format!("X-{i}: v\r\n")).collect();
    let limits = Limits {
        max_headers: 1000,
        ..Limits::default()
    };
    let head = parse_with(&get_with(&many), &limits).unwrap().unwrap();
    assert_eq!(head.headers.len(), 201);
}

#[test]
fn host_is_required_on_http_1_1() {
    assert_eq!(
        err(b"GET / HTTP/1.1\r\nX: a\r\n\r\n"),
        HeadError::Host("missing")
    );
    let e = err(b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n");
    assert_eq!(e, HeadError::Host("repeated"));
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn host_may_be_absent_on_http_1_0_but_is_validated() {
    assert!(ok(b"GET / HTTP/1.0\r\n\r\n").headers.get("host").is_none());
    assert!(matches!(
        err(b"GET / HTTP/1.0\r\nHost: a b\r\n\r\n"),
        HeadError::Host(_)
    ));
    assert_eq!(
        err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
        HeadError::Host("repeated")
    );
}

#[test]
fn host_value_grammar() {
    for good in [
        "a",
        "a:80",
        "a:1",
        "a:65535",
        "127.0.0.1:8080",
        "[::1]",
        "[::1]:8080",
        "[2001:db8::1]",
        "[v1.x:y]",
        "xn--bcher-kva.example",
        "a%41b",
        "a-b_c~d.e",
        "a!$&'()*+,;=b",
    ] {
        let head = ok(format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n").as_bytes());
        assert_eq!(text(head.headers.get("host")), good);
    }
    for bad in [
        "", "a b", "user@a", "a/b", "a?b", "a#b", "a:", "a:65536", "a:x", "a:80:80", "a:123456",
        "[::1", "[zz]", "[::1]x", "[::1]:", ":80", "a%4", "a%zz", "a\"b", "[v1]", "[vx.y]",
    ] {
        let e = err(format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n").as_bytes());
        assert!(matches!(e, HeadError::Host(_)), "{bad:?}: {e:?}");
    }
}

#[test]
fn ipv6_host() {
    let head = ok(b"GET / HTTP/1.1\r\nHost: [fe80::1:2]:443\r\n\r\n");
    assert_eq!(text(head.headers.get("host")), "[fe80::1:2]:443");
}

#[test]
fn content_length_is_digits_only() {
    for bad in [
        "+5", "-5", "5 5", "5, 5", "5,5", "0x5", "", "5.0", "1e3", "\u{661}",
    ] {
        let e = err(&get_with(&format!("Content-Length: {bad}\r\n")));
        assert!(matches!(e, HeadError::ContentLength(_)), "{bad:?}: {e:?}");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
    assert_eq!(
        ok(&get_with("Content-Length: 18446744073709551615\r\n")).body,
        BodyFraming::Length(u64::MAX)
    );
    assert_eq!(
        err(&get_with("Content-Length: 18446744073709551616\r\n")),
        HeadError::ContentLength("overflow")
    );
    assert_eq!(
        ok(&get_with("Content-Length: 007\r\n")).body,
        BodyFraming::Length(7)
    );
    assert_eq!(
        ok(&get_with("Content-Length: 0\r\n")).body,
        BodyFraming::Length(0)
    );
}

#[test]
fn identical_content_lengths_collapse() {
    let head = ok(&get_with(
        "content-length: 5\r\nX: y\r\nContent-Length: 5\r\n",
    ));
    assert_eq!(head.body, BodyFraming::Length(5));
    let values: Vec<_> = head.headers.get_all("content-length").collect();
    assert_eq!(values, [b"5"]);
    assert_eq!(head.headers.len(), 3, "the duplicate line is dropped");
}

#[test]
fn differing_content_lengths_are_rejected() {
    let e = err(&get_with("Content-Length: 5\r\nContent-Length: 6\r\n"));
    assert_eq!(e, HeadError::ContentLength("differing values"));
}

#[test]
fn transfer_encoding_with_content_length_is_rejected() {
    for fields in [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
    ] {
        assert_eq!(
            err(&get_with(fields)),
            HeadError::TransferEncoding("with content-length")
        );
    }
}

#[test]
fn transfer_encoding_on_http_1_0_is_rejected() {
    let e = err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(e, HeadError::TransferEncoding("on HTTP/1.0"));
}

#[test]
fn repeated_transfer_encoding_lines_are_rejected() {
    let e = err(&get_with(
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    ));
    assert_eq!(e, HeadError::TransferEncoding("repeated"));
    let e = err(&get_with(
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
    ));
    assert_eq!(e, HeadError::TransferEncoding("repeated"));
}

#[test]
fn obfuscated_transfer_encoding_is_rejected() {
    for te in [
        "\"chunked\"",
        "chunked;q=1",
        ",chunked",
        "chunked,",
        "chunked, ,",
        "chu nked",
        "",
        "chunked\u{e9}",
        "x-\"y\", chunked",
    ] {
        let e = err(&get_with(&format!("Transfer-Encoding: {te}\r\n")));
        assert_eq!(e, HeadError::TransferEncoding("obfuscated"), "{te:?}");
    }
}

#[test]
fn chunked_must_be_last_and_once() {
    assert_eq!(
        err(&get_with("Transfer-Encoding: chunked, chunked\r\n")),
        HeadError::TransferEncoding("chunked twice")
    );
    assert_eq!(
        err(&get_with("Transfer-Encoding: chunked, gzip\r\n")),
        HeadError::TransferEncoding("chunked not last")
    );
    let e = err(&get_with("Transfer-Encoding: gzip\r\n"));
    assert_eq!(e, HeadError::TransferEncoding("last coding not chunked"));
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn other_codings_are_501() {
    for te in ["gzip, chunked", "identity, chunked", "x-custom ,\tchunked"] {
        let e = err(&get_with(&format!("Transfer-Encoding: {te}\r\n")));
        assert_eq!(e, HeadError::UnknownCoding, "{te}");
        assert_eq!(e.status(), StatusCode::NOT_IMPLEMENTED);
    }
}

#[test]
fn chunked_transfer_encoding_is_case_insensitive_and_kept() {
    for te in ["chunked", "CHUNKED", "Chunked", " \tchunked\t "] {
        let head = ok(&get_with(&format!("Transfer-Encoding: {te}\r\n")));
        assert_eq!(head.body, BodyFraming::Chunked, "{te:?}");
        assert!(head.headers.contains("transfer-encoding"));
    }
}

#[test]
fn connection_tokens_decide_keep_alive() {
    assert!(ok(&get_with("")).keep_alive);
    assert!(!ok(&get_with("Connection: close\r\n")).keep_alive);
    assert!(!ok(&get_with("Connection: keep-alive, CLOSE\r\n")).keep_alive);
    assert!(!ok(&get_with("Connection: foo\r\nConnection: Close\r\n")).keep_alive);
    assert!(ok(&get_with("Connection: closed\r\n")).keep_alive);
}

#[test]
fn http_1_0_keep_alive_only_when_asked() {
    assert!(!ok(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
    assert!(ok(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    assert!(ok(b"GET / HTTP/1.0\r\nConnection: x, keep-alive\r\n\r\n").keep_alive);
    assert!(
        !ok(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n").keep_alive
    );
}

#[test]
fn expect_continue_only_with_a_body() {
    assert!(ok(&get_with("Expect: 100-continue\r\nContent-Length: 5\r\n")).expect_continue);
    assert!(
        ok(&get_with(
            "Expect: 100-Continue\r\nTransfer-Encoding: chunked\r\n"
        ))
        .expect_continue
    );
    assert!(!ok(&get_with("Expect: 100-continue\r\n")).expect_continue);
    assert!(!ok(&get_with("Expect: 100-continue\r\nContent-Length: 0\r\n")).expect_continue);
    assert!(!ok(&get_with("Expect: 200-ok\r\nContent-Length: 5\r\n")).expect_continue);
}

#[test]
fn upgrade_needs_the_token_and_the_field_on_http_1_1() {
    assert!(
        ok(&get_with(
            "Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
        ))
        .upgrade
    );
    assert!(!ok(&get_with("Connection: upgrade\r\n")).upgrade);
    assert!(!ok(&get_with("Upgrade: websocket\r\n")).upgrade);
    assert!(!ok(b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade);
}

#[test]
fn pipelined_request_stays_in_buf() {
    let second = b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut buf = BytesMut::from(&b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"[..]);
    buf.extend_from_slice(second);
    let first = parse_request(&mut buf, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(first.uri, "/1");
    assert_eq!(&buf[..], &second[..]);
    let next = parse_request(&mut buf, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(next.uri, "/2");
    assert!(buf.is_empty());
}

#[test]
fn body_bytes_after_head_stay_in_buf() {
    let mut buf =
        BytesMut::from(&b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\r\n"[..]);
    let head = parse_request(&mut buf, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(head.body, BodyFraming::Length(5));
    assert_eq!(&buf[..], b"hello\r\n");
}

#[test]
fn fields_keep_their_spelling_and_order() {
    let head = ok(&get_with(
        "X-Custom-Thing: 1\r\nx-custom-thing: 2\r\nACCEPT: */*\r\n",
    ));
    let lines: Vec<(&[u8], &[u8])> = head.headers.iter().collect();
    assert_eq!(
        lines,
        [
            (&b"Host"[..], &b"a"[..]),
            (b"X-Custom-Thing", b"1"),
            (b"x-custom-thing", b"2"),
            (b"ACCEPT", b"*/*"),
        ]
    );
    assert_eq!(
        head.headers.get_all("X-CUSTOM-THING").collect::<Vec<_>>(),
        [b"1", b"2"]
    );
}

/// A field's value as text, for comparisons.
fn text(value: Option<&[u8]>) -> &str {
    std::str::from_utf8(value.expect("field present")).expect("UTF-8 value")
}

#[test]
fn title_case_is_told_apart() {
    for yes in ["Host", "X-Forwarded-For", "A", "X-1-Z", "Www-Authenticate"] {
        assert!(super::is_title_case(yes.as_bytes()), "{yes}");
    }
    for no in [
        "host",
        "HOST",
        "X-forwarded-For",
        "x",
        "ETag",
        "WWW-Authenticate",
    ] {
        assert!(!super::is_title_case(no.as_bytes()), "{no}");
    }
}

#[test]
fn values_and_spellings_are_zero_copy() {
    let mut buf = BytesMut::from(&get_with("x-Long-name: some value\r\n")[..]);
    let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    let head = parse_request(&mut buf, &Limits::default())
        .unwrap()
        .unwrap();
    let value = head.headers.get("x-long-name").unwrap().as_ptr() as usize;
    assert!(range.contains(&value));
    let (spelling, _) = head.headers.iter().nth(1).unwrap();
    assert_eq!(spelling, b"x-Long-name");
    assert!(range.contains(&(spelling.as_ptr() as usize)));
}

#[test]
fn leading_empty_lines_are_skipped_and_consumed() {
    let head = ok(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_eq!(head.uri, "/");
    let mut buf = BytesMut::from(&b"\r\n\r\n"[..]);
    assert!(parse_request(&mut buf, &Limits::default())
        .unwrap()
        .is_none());
    assert!(buf.is_empty());
    // A lone CR waits for its LF.
    let mut buf = BytesMut::from(&b"\r"[..]);
    assert!(parse_request(&mut buf, &Limits::default())
        .unwrap()
        .is_none());
    assert_eq!(&buf[..], b"\r");
}

#[test]
fn incomplete_heads_ask_for_more() {
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    for len in 0..raw.len() {
        assert!(parse(&raw[..len]).unwrap().is_none(), "{len}");
    }
}

/// Feeds `raw` one byte at a time; the first non-`None` answer.
fn parse_bytewise(raw: &[u8]) -> Result<Option<(RequestHead, BytesMut)>, HeadError> {
    let mut buf = BytesMut::new();
    for &b in raw {
        buf.extend_from_slice(&[b]);
        if let Some(head) = parse_request(&mut buf, &Limits::default())? {
            return Ok(Some((head, buf)));
        }
    }
    Ok(None)
}

#[test]
fn byte_by_byte_feeding_gives_the_same_result() {
    let inputs: [&[u8]; 8] = [
        b"\r\nPOST /x?y HTTP/1.1\r\nHost: a:1\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc",
        b"GET http://a/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: y\r\n\r\n",
    ];
    for raw in inputs {
        let mut whole = BytesMut::from(raw);
        let at_once = parse_request(&mut whole, &Limits::default());
        let bytewise = parse_bytewise(raw);
        match (at_once, bytewise) {
            (Ok(Some(a)), Ok(Some((b, rest)))) => {
                assert_eq!(
                    (&a.method, &a.uri, a.version, &a.headers, a.body),
                    (&b.method, &b.uri, b.version, &b.headers, b.body)
                );
                assert_eq!(
                    (a.keep_alive, a.expect_continue, a.upgrade),
                    (b.keep_alive, b.expect_continue, b.upgrade)
                );
                // The byte that completed the head was the last one fed.
                assert!(rest.is_empty());
                assert!(raw.ends_with(&whole) || whole.is_empty());
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(raw)),
        }
    }
}

#[test]
fn resumed_parsing_matches_one_pass_and_resets() {
    let raw = b"\r\nPOST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    let (mut buf, mut scan, mut heads) = (BytesMut::new(), HeadScan::default(), Vec::new());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        buf.extend_from_slice(&[b]);
        i += 1;
        if let Some(head) = parse_request_resumed(&mut buf, &Limits::default(), &mut scan).unwrap()
        {
            assert_eq!(scan, HeadScan::default(), "reset after a head");
            assert!(buf.is_empty());
            if let BodyFraming::Length(n) = head.body {
                // The body's bytes go to its decoder, not here.
                i += n as usize;
            }
            heads.push(head);
        }
    }
    let uris: Vec<_> = heads.iter().map(|h| h.uri.to_string()).collect();
    assert_eq!(uris, ["/x", "/2"]);
    let mut all = BytesMut::from(&raw[..]);
    let first = parse_request(&mut all, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(
        (&first.headers, first.body),
        (&heads[0].headers, heads[0].body)
    );
}

#[test]
fn resumed_parsing_reports_errors_and_limits_like_one_pass() {
    let limits = Limits {
        max_head_bytes: 30,
        ..Limits::default()
    };
    for (raw, want) in [
        (
            &b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n"[..],
            HeadError::Malformed("bare LF"),
        ),
        (
            b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n",
            HeadError::HeadTooLarge,
        ),
    ] {
        let (mut buf, mut scan) = (BytesMut::new(), HeadScan::default());
        let mut got = None;
        for &b in raw {
            buf.extend_from_slice(&[b]);
            if let Err(e) = parse_request_resumed(&mut buf, &limits, &mut scan) {
                got = Some(e);
                break;
            }
        }
        assert_eq!(got, Some(want));
    }
}

#[test]
fn an_incomplete_head_that_cannot_start_a_request_line_is_refused_at_once() {
    let limits = Limits::default();
    for garbage in [&b"\x16\x03\x01\x00\x2f\x01"[..], b"\x00\x01", b"GE(T /"] {
        let mut buf = BytesMut::from(garbage);
        assert_eq!(
            parse_request(&mut buf, &limits).map(|h| h.is_some()),
            Err(HeadError::Malformed("invalid method")),
            "{garbage:?}"
        );
    }
    let mut buf = BytesMut::from(&b" GET /"[..]);
    assert!(parse_request(&mut buf, &limits).is_err());
    // A request line still arriving is just incomplete.
    for partial in [
        &b"GE"[..],
        b"GET",
        b"GET /a",
        b"M-SEARCH * HT",
        b"\r",
        b"\r\nGE",
    ] {
        let mut buf = BytesMut::from(partial);
        assert_eq!(
            parse_request(&mut buf, &limits).map(|h| h.is_some()),
            Ok(false)
        );
    }
}

#[test]
fn garbage_is_refused_for_what_it_is_however_it_was_split() {
    // Complete and over the field limit, but not a request at all: the
    // same 400 as when its first bytes arrive alone (found by fuzzing).
    let limits = Limits {
        max_headers: 2,
        ..Limits::default()
    };
    let raw = b"-Agent: curl\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    let mut whole = BytesMut::from(&raw[..]);
    let mut first = BytesMut::from(&raw[..7]);
    let at_once = parse_request(&mut whole, &limits).unwrap_err();
    let early = parse_request(&mut first, &limits).unwrap_err();
    assert_eq!(at_once, HeadError::Malformed("invalid method"));
    assert_eq!(early, at_once);
}
