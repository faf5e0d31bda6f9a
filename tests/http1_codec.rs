//! Round trips through weir's HTTP/1.1 codec on random input: what the
//! encoders write, the parsers read back the same.
//!
//! - request heads: `encode_request_head` → `parse_request` gives the same
//!   method, target, version, and field lines byte for byte (spellings and
//!   order);
//! - chunked bodies: chunks with random extensions and optional trailers,
//!   fed to `BodyDecoder` in random-sized pieces, give the same data and
//!   trailers, and leave the bytes after the body alone;
//! - response heads: `encode_response_head` parsed by httparse (an
//!   independent parser) gives the status, every field, and the framing's;
//! - an endpoint's response fields: `parse_response` → raw lines →
//!   `encode_response_head` → `parse_response` gives every line back byte
//!   for byte (spelling, order, duplicates), then the framing and Date;
//! - arbitrary bytes (random, and valid requests with bytes flipped) give
//!   a head or an error, never a panic, and the body decoder after them
//!   always makes progress (the fuzz target's invariants, on stable).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::BytesMut;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use proptest::prelude::*;
use weir::http1::{
    encode_chunk_header, encode_last_chunk, encode_request_head, encode_response_head,
    parse_request, parse_response, BodyDecoder, BodyFraming, Chunk, Fields, HeaderCase, Limits,
    ResponseFraming, ResponseHead, ResponseScan, CHUNK_END,
};

fn parse_endpoint_response(wire: &[u8]) -> ResponseHead {
    let mut buf = BytesMut::from(wire);
    let mut scan = ResponseScan::default();
    parse_response(&mut buf, &Limits::default(), &Method::GET, &mut scan)
        .unwrap()
        .unwrap()
}

/// Fields the codec treats specially; kept out of the random ones so the
/// round trip is plain.
const SPECIAL: [&str; 11] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "expect",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "date",
    "proxy-connection",
];

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
        Just(Method::HEAD),
        Just(Method::OPTIONS),
        "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    "/[A-Za-z0-9._~!$&'()*+,;=:@/-]{0,30}(\\?[A-Za-z0-9=&/?._-]{0,20})?"
}

/// A token name in random case, not one of the special fields.
fn field_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}".prop_filter("special field", |n| {
        !SPECIAL.contains(&n.to_ascii_lowercase().as_str())
    })
}

/// Visible ASCII with inner spaces, nothing to trim.
fn field_value() -> impl Strategy<Value = String> {
    "([!-~]([ !-~]{0,30}[!-~])?)?"
}

fn fields(max: usize) -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((field_name(), field_value()), 0..=max)
}

/// How `name`'s nth line is spelled on the wire: as recorded, else in
/// Title-Case (what the encoders write when nothing is recorded).
fn spelled(case: &HeaderCase, name: &http::HeaderName, nth: usize) -> Vec<u8> {
    match case.spelling(name, nth) {
        Some(s) => s.to_vec(),
        None => name
            .as_str()
            .split('-')
            .map(|w| w[..1].to_ascii_uppercase() + &w[1..])
            .collect::<Vec<_>>()
            .join("-")
            .into_bytes(),
    }
}

/// Appends the fields to a map and their spellings to a case list.
fn to_map(fields: &[(String, String)], case: &mut HeaderCase) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in fields {
        let key = HeaderName::from_bytes(name.as_bytes()).unwrap();
        case.push(key.clone(), name.clone().into_bytes().into());
        map.append(key, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn extension() -> impl Strategy<Value = Option<&'static str>> {
    prop::option::of(prop_oneof![
        Just(";a"),
        Just(";a=b"),
        Just(" ; name = \"quoted \\\" value\""),
        Just(";x=1;y;z=\"\""),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn request_heads_round_trip(
        method in method(),
        path in path(),
        http11 in any::<bool>(),
        host_spelling in "[Hh][Oo][Ss][Tt]",
        fields in fields(20),
        length in prop::option::of(any::<u64>()),
        cl_spelling in "[Cc]ontent-[Ll]ength",
    ) {
        let version = if http11 { Version::HTTP_11 } else { Version::HTTP_10 };
        let mut all = vec![(host_spelling, "example.com:8080".to_string())];
        all.extend(fields);
        if let Some(n) = length {
            all.push((cl_spelling, n.to_string()));
        }
        let mut case = HeaderCase::default();
        let headers = to_map(&all, &mut case);
        let uri: Uri = path.parse().unwrap();
        let mut wire = Vec::new();
        encode_request_head(&method, &uri, version, Fields { headers: &headers, case: Some(&case), raw: None, extra: &[] }, &mut wire);
        wire.extend_from_slice(b"after");

        let mut buf = BytesMut::from(&wire[..]);
        let head = parse_request(&mut buf, &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(&head.method, &method);
        prop_assert_eq!(&head.uri, &uri);
        prop_assert_eq!(head.version, version);
        prop_assert_eq!(&head.headers.clone().into_map().0, &headers);
        prop_assert_eq!(head.body, length.map_or(BodyFraming::Empty, BodyFraming::Length));
        // The lines as written (the map's order, each name spelled as
        // recorded) are the lines kept, byte for byte.
        let (mut expected, mut previous, mut nth) = (Vec::new(), None, 0);
        for (name, value) in &headers {
            nth = if previous == Some(name) { nth + 1 } else { 0 };
            previous = Some(name);
            expected.push((spelled(&case, name, nth), value.as_bytes().to_vec()));
        }
        let kept: Vec<(Vec<u8>, Vec<u8>)> = head.headers.iter().map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
        prop_assert_eq!(kept, expected);
        prop_assert_eq!(&buf[..], b"after");
    }

    #[test]
    fn chunked_bodies_round_trip(
        data in prop::collection::vec(any::<u8>(), 0..3000),
        cuts in prop::collection::vec((1usize..400, extension()), 1..20),
        trailers in prop::option::of(fields(4)),
        pieces in prop::collection::vec(1usize..64, 1..10),
    ) {
        // Chunks of the cut sizes (the last one takes the rest).
        let mut wire = Vec::new();
        let mut rest = &data[..];
        for (size, ext) in cuts.iter().cycle().take(data.len() + 1) {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            rest = tail;
            encode_chunk_header(chunk.len(), &mut wire);
            if let Some(ext) = ext {
                wire.truncate(wire.len() - 2);
                wire.extend_from_slice(ext.as_bytes());
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(chunk);
            wire.extend_from_slice(CHUNK_END);
        }
        let trailer_map = trailers.map(|t| to_map(&t, &mut HeaderCase::default()));
        encode_last_chunk(trailer_map.as_ref(), &mut wire);
        wire.extend_from_slice(b"NEXT");

        let mut decoder = BodyDecoder::new(BodyFraming::Chunked, &Limits::default());
        let (mut buf, mut fed, mut got, mut got_trailers) = (BytesMut::new(), 0, Vec::new(), None);
        for &piece in pieces.iter().cycle() {
            match decoder.decode(&mut buf).unwrap() {
                Some(Chunk::Data(d)) => got.extend_from_slice(&d),
                Some(Chunk::Trailers(t)) => got_trailers = Some(t),
                Some(Chunk::End) => break,
                None => {
                    prop_assert!(fed < wire.len(), "needs more than the whole body");
                    let end = (fed + piece).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
        prop_assert!(decoder.is_done());
        prop_assert_eq!(got, data);
        let expected = trailer_map.filter(|t| !t.is_empty());
        prop_assert_eq!(got_trailers, expected);
        buf.extend_from_slice(&wire[fed..]);
        prop_assert_eq!(&buf[..], b"NEXT");
    }

    #[test]
    fn endpoint_fields_pass_through_byte_for_byte(
        fields in fields(12),
        len in any::<u64>(),
        date in any::<bool>(),
    ) {
        let mut wire = b"HTTP/1.1 200 OK\r\n".to_vec();
        for (name, value) in &fields {
            wire.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if date {
            wire.extend_from_slice(b"dAtE: Mon, 07 Nov 1994 08:49:37 GMT\r\n");
        }
        wire.extend_from_slice(format!("content-length: {len}\r\nConnection: keep-alive\r\n\r\n").as_bytes());
        let head = parse_endpoint_response(&wire);
        let mut out = Vec::new();
        let none = HeaderMap::new();
        let fields_out = Fields::new(&none).with_raw(Some(&head.headers));
        let ours = b"Sun, 06 Nov 1994 08:49:37 GMT";
        encode_response_head(head.status, fields_out, ResponseFraming::Length(len), true, Version::HTTP_11, ours, &mut out);
        let back = parse_endpoint_response(&out);
        let received: Vec<(&[u8], &[u8])> = back.headers.iter().collect();
        let mut expected: Vec<(&[u8], &[u8])> = head
            .headers
            .iter()
            .filter(|(n, _)| !n.eq_ignore_ascii_case(b"content-length") && !n.eq_ignore_ascii_case(b"connection"))
            .collect();
        let len_text = len.to_string();
        expected.push((b"Content-Length", len_text.as_bytes()));
        if !date {
            expected.push((b"Date", ours));
        }
        prop_assert_eq!(received, expected);
        prop_assert!(back.keep_alive);
    }

    #[test]
    fn response_heads_parse_back(
        code in 200u16..600,
        fields in fields(12),
        framing in prop_oneof![
            Just(ResponseFraming::NoBody),
            any::<u64>().prop_map(ResponseFraming::Length),
            Just(ResponseFraming::Chunked),
            Just(ResponseFraming::Close),
        ],
        keep_alive in any::<bool>(),
        http11 in any::<bool>(),
    ) {
        let status = StatusCode::from_u16(code).unwrap();
        let version = if http11 { Version::HTTP_11 } else { Version::HTTP_10 };
        let headers = to_map(&fields, &mut HeaderCase::default());
        let date = b"Sun, 06 Nov 1994 08:49:37 GMT";
        let mut wire = Vec::new();
        encode_response_head(status, Fields::new(&headers), framing, keep_alive, version, date, &mut wire);

        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut slots);
        let len = parsed.parse(&wire).unwrap();
        prop_assert_eq!(len, httparse::Status::Complete(wire.len()));
        prop_assert_eq!(parsed.code, Some(code));
        prop_assert_eq!(parsed.version, Some(1));
        prop_assert_eq!(parsed.reason, Some(status.canonical_reason().unwrap_or("")));
        let mut back = HeaderMap::new();
        for h in parsed.headers.iter() {
            back.append(HeaderName::from_bytes(h.name.as_bytes()).unwrap(), HeaderValue::from_bytes(h.value).unwrap());
        }
        for name in headers.keys() {
            let sent: Vec<_> = headers.get_all(name).iter().collect();
            let received: Vec<_> = back.get_all(name).iter().collect();
            prop_assert_eq!(sent, received);
        }
        let field = |name: &str| back.get(name).map(|v| v.to_str().unwrap().to_string());
        match framing {
            ResponseFraming::Length(n) => prop_assert_eq!(field("content-length"), Some(n.to_string())),
            ResponseFraming::Chunked => prop_assert_eq!(field("transfer-encoding"), Some("chunked".to_string())),
            ResponseFraming::NoBody | ResponseFraming::Close => {
                prop_assert!(field("content-length").is_none() && field("transfer-encoding").is_none());
            }
        }
        let connection = match (keep_alive, version) {
            (false, _) => Some("close"),
            (true, Version::HTTP_10) => Some("keep-alive"),
            (true, _) => None,
        };
        prop_assert_eq!(field("connection"), connection.map(str::to_string));
        prop_assert_eq!(field("date"), Some("Sun, 06 Nov 1994 08:49:37 GMT".to_string()));
        prop_assert_eq!(back.len(), headers.len() + 1 + usize::from(connection.is_some())
            + usize::from(matches!(framing, ResponseFraming::Length(_) | ResponseFraming::Chunked)));
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in arbitrary_request(), piece in 1usize..32) {
        let limits = Limits { max_head_bytes: 512, max_headers: 8, max_chunk_ext_bytes: 32, max_trailer_bytes: 128 };
        let mut buf = BytesMut::from(&input[..]);
        let Ok(Some(head)) = parse_request(&mut buf, &limits) else {
            return Ok(());
        };
        let rest = buf.split().to_vec();
        let mut decoder = BodyDecoder::new(head.body, &limits);
        let (mut fed, mut total) = (0, 0u64);
        for _ in 0..4 * rest.len() + 16 {
            match decoder.decode(&mut buf) {
                Ok(Some(Chunk::Data(d))) => {
                    prop_assert!(!d.is_empty());
                    total += d.len() as u64;
                }
                Ok(Some(Chunk::Trailers(_))) => {}
                Ok(Some(Chunk::End)) => {
                    if let BodyFraming::Length(n) = head.body {
                        prop_assert_eq!(total, n);
                    }
                    return Ok(());
                }
                Ok(None) if fed < rest.len() => {
                    let end = (fed + piece).min(rest.len());
                    buf.extend_from_slice(&rest[fed..end]);
                    fed = end;
                }
                Ok(None) | Err(_) => return Ok(()),
            }
        }
        prop_assert!(false, "no progress: {:?}", decoder);
    }
}

/// Random bytes, or a valid request (chunked or not) with a few bytes
/// replaced, so that most inputs get deep into the parser.
fn arbitrary_request() -> impl Strategy<Value = Vec<u8>> {
    const BASES: [&[u8]; 3] = [
        b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX: y\r\n\r\n",
        b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n",
        b"GET http://a:1/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        (
            0..BASES.len(),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)
        )
            .prop_map(|(base, flips)| {
                let mut bytes = BASES[base].to_vec();
                for (at, b) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = b;
                }
                bytes
            }),
    ]
}
