//! weir's HTTP/1.1 response parsing (the endpoint side) on arbitrary
//! bytes: `parse_response` for a request method chosen by the input, and,
//! when a head parses, its body decoder on what follows, fed in pieces.
//! Never a panic; beyond that:
//!
//! - feeding the head byte by byte gives the same answer as all at once;
//! - a head that parses never has both Content-Length and
//!   Transfer-Encoding (RFC 9112 §6.3: weir refuses such a response);
//! - every field line it keeps as received is one a `HeaderMap` can hold
//!   (what an HTTP/2 client is sent);
//! - a Content-Length body that ends yields exactly its length, and the
//!   data handed out never exceeds the input.
#![no_main]

use bytes::BytesMut;
use http::Method;
use libfuzzer_sys::fuzz_target;
use weir::http1::{parse_response, Chunk, Limits, ResponseScan, UpstreamFraming};

/// Small limits, so that inputs reach them.
const LIMITS: Limits = Limits {
    max_head_bytes: 512,
    max_headers: 8,
    max_chunk_ext_bytes: 32,
    max_trailer_bytes: 128,
};

const METHODS: [Method; 4] = [Method::GET, Method::HEAD, Method::CONNECT, Method::POST];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, input)) = data.split_first() else {
        return;
    };
    let method = &METHODS[usize::from(pick) % METHODS.len()];
    let mut whole = BytesMut::from(input);
    let at_once = parse_response(&mut whole, &LIMITS, method, &mut ResponseScan::default());

    let (mut buf, mut scan, mut piecewise) = (BytesMut::new(), ResponseScan::default(), None);
    for &b in input {
        buf.extend_from_slice(&[b]);
        match parse_response(&mut buf, &LIMITS, method, &mut scan) {
            Ok(None) => continue,
            other => {
                piecewise = Some(other);
                break;
            }
        }
    }
    let head = match (at_once, piecewise) {
        (Ok(Some(a)), Some(Ok(Some(b)))) => {
            assert_eq!((a.status, &a.headers, a.body), (b.status, &b.headers, b.body));
            a
        }
        (Err(a), Some(Err(b))) => {
            assert_eq!(a, b);
            return;
        }
        (Ok(None), None) => return,
        (a, b) => panic!("all at once {a:?}, byte by byte {b:?}"),
    };
    assert!(
        !(head.headers.contains("content-length") && head.headers.contains("transfer-encoding")),
        "ambiguous framing accepted"
    );
    let (map, _) = head.headers.clone().into_map();
    assert_eq!(map.len(), head.headers.len(), "a kept line a map cannot hold");
    let mut decoder = head.body.decoder(&LIMITS);
    let mut data_len = 0u64;
    let ended = loop {
        match decoder.decode(&mut whole) {
            Ok(Some(Chunk::Data(d))) => {
                assert!(!d.is_empty(), "empty data event");
                data_len += d.len() as u64;
            }
            Ok(Some(Chunk::Trailers(_))) => {}
            Ok(Some(Chunk::End)) => break true,
            Ok(None) => break matches!(decoder.eof(), Ok(Chunk::End)),
            Err(_) => break false,
        }
    };
    assert!(data_len <= input.len() as u64);
    if let (true, UpstreamFraming::Length(n)) = (ended, head.body) {
        assert_eq!(data_len, n, "a length body that ended yields its length");
    }
});
