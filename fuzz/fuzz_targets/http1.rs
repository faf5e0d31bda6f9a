//! weir's HTTP/1.1 codec on arbitrary bytes: `parse_request` and, when a
//! head parses, a `BodyDecoder` on what follows, fed in pieces whose
//! sizes come from the input. Never a panic; beyond that:
//!
//! - feeding the head in pieces (with a resumed scan) gives the same
//!   head, or the same refusal status, as all at once;
//! - every `decode` call returns data (and consumes it), an event, an
//!   error, or asks for more; it never spins without progress;
//! - the data handed out never exceeds the input, and a Content-Length
//!   body that ends yields exactly its length;
//! - after `End`, nothing more is consumed;
//! - every field line kept as received is one a `HeaderMap` can hold
//!   (what an HTTP/2 endpoint is sent).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use weir::http1::{
    parse_request, parse_request_resumed, BodyDecoder, BodyFraming, Chunk, HeadScan, Limits,
    RequestHead,
};

/// Small limits, so that inputs reach them.
const LIMITS: Limits = Limits {
    max_head_bytes: 512,
    max_headers: 8,
    max_chunk_ext_bytes: 32,
    max_trailer_bytes: 128,
};

/// Piece sizes (1..=16) cycling through `seeds`.
struct Pieces<'a> {
    seeds: &'a [u8],
    next: usize,
}

impl Pieces<'_> {
    fn size(&mut self) -> usize {
        let seed = self
            .seeds
            .get(self.next % self.seeds.len().max(1))
            .copied()
            .unwrap_or(0);
        self.next += 1;
        usize::from(seed % 16) + 1
    }
}

/// Feeds `input` in pieces until a head parses or an error; the head,
/// the buffer, and how much of `input` was fed.
fn parse_in_pieces(
    input: &[u8],
    pieces: &mut Pieces<'_>,
) -> (
    Result<Option<RequestHead>, weir::http1::HeadError>,
    BytesMut,
    usize,
) {
    let (mut buf, mut fed, mut scan) = (BytesMut::new(), 0, HeadScan::default());
    loop {
        let end = (fed + pieces.size()).min(input.len());
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        match parse_request_resumed(&mut buf, &LIMITS, &mut scan) {
            Ok(None) if fed < input.len() => continue,
            other => return (other, buf, fed),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (seeds, input) = data.split_at(data.len().min(4));
    let mut pieces = Pieces { seeds, next: 0 };

    let mut whole = BytesMut::from(input);
    let at_once = parse_request(&mut whole, &LIMITS);
    let (piecewise, mut buf, mut fed) = parse_in_pieces(input, &mut pieces);
    let head = match (at_once, piecewise) {
        (Ok(Some(a)), Ok(Some(b))) => {
            assert_eq!(
                (&a.method, &a.uri, a.version, &a.headers, a.body),
                (&b.method, &b.uri, b.version, &b.headers, b.body)
            );
            b
        }
        (Err(a), Err(b)) => {
            // Fed in pieces, a head can be refused earlier (its first bytes
            // cannot start a request line) with a different reason; the
            // answer must be the same.
            assert_eq!(a.status(), b.status(), "at once {a:?}, in pieces {b:?}");
            return;
        }
        (Ok(None), Ok(None)) => return,
        (a, b) => panic!("at once {a:?}, in pieces {b:?}"),
    };

    let (map, _) = head.headers.clone().into_map();
    assert_eq!(map.len(), head.headers.len(), "a kept line a map cannot hold");

    let mut decoder = BodyDecoder::new(head.body, &LIMITS);
    let mut total = 0usize;
    // Every step consumes input or feeds more; this bounds the loop.
    for _ in 0..4 * input.len() + 16 {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(Chunk::Data(d))) => {
                assert!(!d.is_empty(), "empty data");
                // The data came out of `buf` (a chunked step may also
                // consume the chunk's size line).
                assert!(buf.len() + d.len() <= before, "data not taken from buf");
                total += d.len();
                assert!(total <= input.len());
            }
            Ok(Some(Chunk::Trailers(_))) => assert!(buf.len() < before),
            Ok(Some(Chunk::End)) => {
                assert!(decoder.is_done());
                if let BodyFraming::Length(n) = head.body {
                    assert_eq!(total as u64, n);
                }
                let rest = buf.clone();
                assert_eq!(decoder.decode(&mut buf), Ok(Some(Chunk::End)));
                assert_eq!(buf, rest, "consumed after End");
                return;
            }
            Ok(None) if fed < input.len() => {
                let end = (fed + pieces.size()).min(input.len());
                buf.extend_from_slice(&input[fed..end]);
                fed = end;
            }
            Ok(None) => {
                let _ = decoder.eof();
                return;
            }
            Err(_) => return,
        }
    }
    panic!("no progress: {decoder:?}");
});
