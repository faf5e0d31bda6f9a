//! What weir's HTTP/1.1 codec costs per request: parsing a typical
//! browser GET head (12 fields) and a minimal one, decoding a 64 KiB
//! chunked body sent in 8 KiB chunks, and encoding a typical response
//! head.
//!
//! Parsing includes building the `HeaderMap` and the spelling list (the
//! only allocations); the buffers are refilled outside the timed part.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode, Version};
use weir::http1::{
    encode_chunk_header, encode_last_chunk, encode_response_head, parse_request, BodyDecoder,
    BodyFraming, Chunk, Limits, ResponseFraming, CHUNK_END,
};

const BROWSER_GET: &[u8] = b"GET /assets/app.js?v=3 HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: */*\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/\r\n\
Connection: keep-alive\r\n\
Cookie: sid=8a7f6e5d4c3b2a19; theme=dark; consent=yes\r\n\
Sec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Sec-Fetch-Site: same-origin\r\n\
If-None-Match: \"5f3a-1b2c3d4e\"\r\n\r\n";

const MINIMAL_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

fn parse(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("parse_request");
    for (name, raw) in [("browser_get", BROWSER_GET), ("minimal_get", MINIMAL_GET)] {
        group.throughput(Throughput::Bytes(raw.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || BytesMut::from(raw),
                |buf| black_box(parse_request(buf, &limits).unwrap().unwrap()),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn chunked_body() -> Vec<u8> {
    let chunk = vec![b'x'; 8 * 1024];
    let mut wire = Vec::new();
    for _ in 0..8 {
        encode_chunk_header(chunk.len(), &mut wire);
        wire.extend_from_slice(&chunk);
        wire.extend_from_slice(CHUNK_END);
    }
    encode_last_chunk(None, &mut wire);
    wire
}

fn decode(c: &mut Criterion) {
    let wire = chunked_body();
    let limits = Limits::default();
    let mut group = c.benchmark_group("decode_chunked");
    group.throughput(Throughput::Bytes(64 * 1024));
    group.bench_function("64k_in_8k_chunks", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&wire[..]),
            |buf| {
                let mut decoder = BodyDecoder::new(BodyFraming::Chunked, &limits);
                let mut total = 0;
                while let Some(chunk) = decoder.decode(buf).unwrap() {
                    match chunk {
                        Chunk::Data(d) => total += d.len(),
                        Chunk::Trailers(_) => {}
                        Chunk::End => break,
                    }
                }
                assert_eq!(total, 64 * 1024);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut headers = HeaderMap::new();
    for (n, v) in [
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "max-age=3600, public"),
        ("etag", "\"5f3a-1b2c3d4e\""),
        ("last-modified", "Tue, 15 Oct 2024 12:00:00 GMT"),
        ("vary", "Accept-Encoding"),
        ("server", "weir"),
        ("x-request-id", "0f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0"),
    ] {
        headers.append(HeaderName::from_static(n), HeaderValue::from_static(v));
    }
    let date = weir::http1::http_date();
    let mut dst = Vec::with_capacity(1024);
    c.bench_function("encode_response_head/typical", |b| {
        b.iter(|| {
            dst.clear();
            encode_response_head(
                StatusCode::OK,
                weir::http1::Fields::new(black_box(&headers)),
                ResponseFraming::Length(5120),
                true,
                Version::HTTP_11,
                &date,
                &mut dst,
            );
            black_box(dst.len())
        })
    });
}

criterion_group!(benches, parse, decode, encode);
criterion_main!(benches);
