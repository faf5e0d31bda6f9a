//! The body framing rules, one test each, on raw bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::BytesMut;
use http::{HeaderMap, StatusCode};

use super::*;

fn chunked(limits: &Limits) -> BodyDecoder {
    BodyDecoder::new(BodyFraming::Chunked, limits)
}

/// Decodes until `End`, an error, or a `None`; the data, trailers and
/// how it stopped.
fn drain(
    decoder: &mut BodyDecoder,
    buf: &mut BytesMut,
) -> (Vec<u8>, Option<HeaderMap>, Result<bool, FramingError>) {
    let (mut data, mut trailers) = (Vec::new(), None);
    loop {
        match decoder.decode(buf) {
            Ok(Some(Chunk::Data(d))) => {
                assert!(!d.is_empty(), "empty data event");
                data.extend_from_slice(&d);
            }
            Ok(Some(Chunk::Trailers(t))) => trailers = Some(t),
            Ok(Some(Chunk::End)) => return (data, trailers, Ok(true)),
            Ok(None) => return (data, trailers, Ok(false)),
            Err(e) => return (data, trailers, Err(e)),
        }
    }
}

/// A whole chunked body at once: its data, trailers, and what is left.
fn chunked_all(
    raw: &[u8],
    limits: &Limits,
) -> Result<(Vec<u8>, Option<HeaderMap>, BytesMut), FramingError> {
    let mut buf = BytesMut::from(raw);
    let mut decoder = chunked(limits);
    let (data, trailers, end) = drain(&mut decoder, &mut buf);
    match end? {
        true => Ok((data, trailers, buf)),
        false => panic!("incomplete: {:?}", String::from_utf8_lossy(raw)),
    }
}

fn chunked_err(raw: &[u8]) -> FramingError {
    let mut buf = BytesMut::from(raw);
    let (_, _, end) = drain(&mut chunked(&Limits::default()), &mut buf);
    match end {
        Err(e) => e,
        Ok(done) => panic!("{:?} accepted (done: {done})", String::from_utf8_lossy(raw)),
    }
}

#[test]
fn framing_errors_are_400() {
    for e in [
        FramingError::ChunkSize("x"),
        FramingError::ChunkExtTooLong,
        FramingError::ChunkLine("x"),
        FramingError::Trailers("x"),
        FramingError::Truncated,
    ] {
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
}

#[test]
fn empty_body_is_done_at_once() {
    for framing in [BodyFraming::Empty, BodyFraming::Length(0)] {
        let mut decoder = BodyDecoder::new(framing, &Limits::default());
        assert!(decoder.is_done());
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(Some(Chunk::End)));
        assert_eq!(buf.len(), 16, "nothing consumed");
    }
}

#[test]
fn length_body_streams_and_leaves_pipelined_bytes() {
    let mut decoder = BodyDecoder::new(BodyFraming::Length(10), &Limits::default());
    let mut buf = BytesMut::from(&b"hell"[..]);
    assert_eq!(decoder.remaining_hint(), Some(10));
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Some(Chunk::Data("hell".into())))
    );
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    assert_eq!(decoder.remaining_hint(), Some(6));
    buf.extend_from_slice(b"o worldGET /");
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Some(Chunk::Data("o worl".into())))
    );
    // The length is reached: the body is complete before `End` is read.
    assert!(decoder.is_done());
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Chunk::End)));
    assert!(decoder.is_done());
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Chunk::End)));
    assert_eq!(&buf[..], b"dGET /");
    assert_eq!(decoder.remaining_hint(), None);
}

#[test]
fn eof_ends_close_delimited_and_complete_bodies_only() {
    let mut close = BodyDecoder::close_delimited();
    let mut buf = BytesMut::from(&b"abc"[..]);
    assert_eq!(close.decode(&mut buf), Ok(Some(Chunk::Data("abc".into()))));
    assert_eq!(close.decode(&mut buf), Ok(None));
    assert_eq!(close.eof(), Ok(Chunk::End));
    assert!(close.is_done());

    let mut length = BodyDecoder::new(BodyFraming::Length(5), &Limits::default());
    assert_eq!(length.eof(), Err(FramingError::Truncated));
    let mut done = BodyDecoder::new(BodyFraming::Empty, &Limits::default());
    assert_eq!(done.eof(), Ok(Chunk::End));

    let mut body = chunked(&Limits::default());
    let mut buf = BytesMut::from(&b"3\r\nab"[..]);
    let (data, _, end) = drain(&mut body, &mut buf);
    assert_eq!((data, end), (b"ab".to_vec(), Ok(false)));
    assert_eq!(body.eof(), Err(FramingError::Truncated));
}

#[test]
fn chunked_body_decodes_and_leaves_pipelined_bytes() {
    let (data, trailers, rest) = chunked_all(
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(data, b"hello world");
    assert!(trailers.is_none());
    assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n");
}

#[test]
fn partial_chunks_stream() {
    let mut decoder = chunked(&Limits::default());
    let mut buf = BytesMut::from(&b"a\r\nabc"[..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Some(Chunk::Data("abc".into())))
    );
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    buf.extend_from_slice(b"defghij\r");
    assert_eq!(
        decoder.decode(&mut buf),
        Ok(Some(Chunk::Data("defghij".into())))
    );
    assert_eq!(decoder.decode(&mut buf), Ok(None));
    buf.extend_from_slice(b"\n0\r\n\r\n");
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Chunk::End)));
    assert!(decoder.is_done());
}

#[test]
fn chunk_size_is_hex_digits_only() {
    for (line, why) in [
        ("", "empty"),
        (" 5", "whitespace before size"),
        ("+5", "not hexadecimal"),
        ("-5", "not hexadecimal"),
        ("0x5", "not hexadecimal"),
        ("5g", "not hexadecimal"),
        ("5 ", "whitespace after size"),
        ("5\t", "whitespace after size"),
    ] {
        let e = chunked_err(format!("{line}\r\nhello\r\n0\r\n\r\n").as_bytes());
        assert_eq!(e, FramingError::ChunkSize(why), "{line:?}");
    }
}

#[test]
fn chunk_size_overflow_is_rejected() {
    assert_eq!(
        chunked_err(b"10000000000000000\r\n"),
        FramingError::ChunkSize("overflow")
    );
    // Leading zeros are fine; the value counts.
    let mut decoder = chunked(&Limits::default());
    let mut buf = BytesMut::from(&b"0000000000000000000ffffffffffffffff\r\nab"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Chunk::Data("ab".into()))));
    let (data, _, _) = chunked_all(b"0005\r\nhello\r\n000\r\n\r\n", &Limits::default()).unwrap();
    assert_eq!(data, b"hello");
}

#[test]
fn valid_chunk_extensions_are_accepted() {
    for ext in [
        ";a",
        ";a=b",
        ";a=b;c=d",
        " ; a = b",
        "\t;a=\"q d\"",
        ";a=\"q\\\"x\\\\\"",
        ";a=\"\"",
        ";n=\"caf\u{e9}\"",
    ] {
        let raw = format!("5{ext}\r\nhello\r\n0{ext}\r\n\r\n");
        let (data, _, _) = chunked_all(raw.as_bytes(), &Limits::default())
            .unwrap_or_else(|e| panic!("{ext:?}: {e:?}"));
        assert_eq!(data, b"hello");
    }
}

#[test]
fn invalid_chunk_extensions_are_rejected() {
    for ext in [
        ";",
        ";=x",
        ";a=",
        ";a=\"open",
        ";a=b\x01",
        ";a=b ",
        ";a\0",
        "; a=b ;",
        ";a=b c",
        ";a=\"x\x7f\"",
        ";a=\"\\\0\"",
        ";a@b",
    ] {
        let e = chunked_err(format!("5{ext}\r\nhello\r\n0\r\n\r\n").as_bytes());
        assert!(matches!(e, FramingError::ChunkLine(_)), "{ext:?}: {e:?}");
    }
    assert_eq!(
        chunked_err(b"5;a=b\x01\r\n"),
        FramingError::ChunkLine("control character in chunk extension")
    );
}

#[test]
fn chunk_line_limit_is_per_line() {
    let limits = Limits {
        max_chunk_ext_bytes: 16,
        ..Limits::default()
    };
    // 16 bytes of size and extension: fine.
    let (data, _, _) = chunked_all(b"1;abcdefghijklmn\r\nx\r\n0\r\n\r\n", &limits).unwrap();
    assert_eq!(data, b"x");
    let mut buf = BytesMut::from(&b"1;abcdefghijklmno\r\nx\r\n0\r\n\r\n"[..]);
    let (_, _, end) = drain(&mut chunked(&limits), &mut buf);
    assert_eq!(end, Err(FramingError::ChunkExtTooLong));
    // No line end in sight past the limit: refused without waiting.
    let mut buf = BytesMut::from(&b"1;aaaaaaaaaaaaaaaaaaaaa"[..]);
    assert_eq!(
        chunked(&limits).decode(&mut buf),
        Err(FramingError::ChunkExtTooLong)
    );
}

#[test]
fn long_body_of_one_byte_chunks_with_extensions_decodes() {
    let mut raw = Vec::new();
    for i in 0..300_000 {
        if i % 3 == 0 {
            raw.extend_from_slice(format!("1;ext={i}\r\nx\r\n").as_bytes());
        } else {
            raw.extend_from_slice(b"1\r\nx\r\n");
        }
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let (data, trailers, rest) = chunked_all(&raw, &Limits::default()).unwrap();
    assert_eq!(data.len(), 300_000);
    assert!(trailers.is_none() && rest.is_empty());
}

#[test]
fn missing_crlf_after_chunk_data_is_rejected() {
    for raw in [
        &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
        b"5\r\nhello\n0\r\n\r\n",
        b"5\r\nhello\rX0\r\n\r\n",
        b"5\r\nhello0\r\n\r\n",
    ] {
        let e = chunked_err(raw);
        assert_eq!(
            e,
            FramingError::ChunkLine("missing CRLF after chunk data"),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn bare_lf_or_cr_in_chunk_line_is_rejected() {
    assert_eq!(
        chunked_err(b"5\nhello\r\n"),
        FramingError::ChunkLine("bare LF")
    );
    assert_eq!(
        chunked_err(b"5\rhello\r\n"),
        FramingError::ChunkLine("bare CR")
    );
    assert_eq!(
        chunked_err(b"5;a=b\nhello\r\n"),
        FramingError::ChunkLine("bare LF")
    );
}

#[test]
fn trailers_are_returned_without_framing_fields() {
    let raw = b"3\r\nabc\r\n0\r\nX-Checksum: 42\r\nContent-Length: 5\r\nHost: evil\r\nTransfer-Encoding: chunked\r\nConnection: close\r\nTE: trailers\r\nTrailer: x\r\nKeep-Alive: 1\r\nUpgrade: h2c\r\nX-Other:  v \r\n\r\nNEXT";
    let (data, trailers, rest) = chunked_all(raw, &Limits::default()).unwrap();
    assert_eq!(data, b"abc");
    let trailers = trailers.unwrap();
    assert_eq!(trailers.len(), 2, "{trailers:?}");
    assert_eq!(trailers["x-checksum"], "42");
    assert_eq!(trailers["x-other"], "v");
    assert_eq!(&rest[..], b"NEXT");
}

#[test]
fn trailers_of_only_forbidden_fields_give_just_end() {
    let mut decoder = chunked(&Limits::default());
    let mut buf = BytesMut::from(&b"0\r\nContent-Length: 5\r\n\r\n"[..]);
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Chunk::End)));
    assert!(decoder.is_done() && buf.is_empty());
}

#[test]
fn trailers_then_end_then_nothing_more() {
    let mut decoder = chunked(&Limits::default());
    let mut buf = BytesMut::from(&b"0\r\nX: y\r\n\r\nrest"[..]);
    assert!(matches!(
        decoder.decode(&mut buf),
        Ok(Some(Chunk::Trailers(_)))
    ));
    // Nothing more belongs to the body once its trailers are read.
    assert!(decoder.is_done());
    assert_eq!(decoder.eof(), Ok(Chunk::End), "only End was left");
    assert!(decoder.is_done());
    assert_eq!(decoder.decode(&mut buf), Ok(Some(Chunk::End)));
    assert_eq!(&buf[..], b"rest");
}

#[test]
fn too_large_trailers_are_rejected() {
    let limits = Limits {
        max_trailer_bytes: 20,
        ..Limits::default()
    };
    // 18 bytes of field lines + CRLF = 20: fits.
    let (_, trailers, _) = chunked_all(b"0\r\nX: aaaaaaaaaaaaa\r\n\r\n", &limits).unwrap();
    assert_eq!(trailers.unwrap()["x"], "aaaaaaaaaaaaa");
    let mut buf = BytesMut::from(&b"0\r\nX: aaaaaaaaaaaaaa\r\n\r\n"[..]);
    let (_, _, end) = drain(&mut chunked(&limits), &mut buf);
    assert_eq!(end, Err(FramingError::Trailers("too large")));
    // An empty section always fits.
    let limits = Limits {
        max_trailer_bytes: 0,
        ..Limits::default()
    };
    chunked_all(b"0\r\n\r\n", &limits).unwrap();
}

#[test]
fn too_many_trailer_fields_are_rejected() {
    let limits = Limits {
        max_headers: 2,
        ..Limits::default()
    };
    chunked_all(b"0\r\nA: 1\r\nB: 2\r\n\r\n", &limits).unwrap();
    let mut buf = BytesMut::from(&b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"[..]);
    let (_, _, end) = drain(&mut chunked(&limits), &mut buf);
    assert_eq!(end, Err(FramingError::Trailers("too many fields")));
}

#[test]
fn malformed_trailers_are_rejected() {
    for raw in [
        &b"0\r\nX: a\r\n b\r\n\r\n"[..],
        b"0\r\nX : a\r\n\r\n",
        b"0\r\nX: a\nY: b\r\n\r\n",
        b"0\r\nX: a\rb\r\n\r\n",
        b"0\r\nX: a\0\r\n\r\n",
        b"0\r\nno colon\r\n\r\n",
    ] {
        let e = chunked_err(raw);
        assert!(
            matches!(e, FramingError::Trailers(_)),
            "{:?}: {e:?}",
            String::from_utf8_lossy(raw)
        );
    }
}

#[test]
fn byte_by_byte_chunked_gives_the_same_result() {
    let raw = b"3;a=b\r\nabc\r\n10\r\n0123456789abcdef\r\n1\r\nz\r\n00;x=\"y\"\r\nX-T: 1\r\nY-T: 2\r\n\r\nNEXT";
    let (data, trailers, rest) = chunked_all(raw, &Limits::default()).unwrap();
    let mut decoder = chunked(&Limits::default());
    let (mut buf, mut fed) = (BytesMut::new(), 0);
    let (mut bytewise, mut bytewise_trailers) = (Vec::new(), None);
    loop {
        match decoder.decode(&mut buf).unwrap() {
            Some(Chunk::Data(d)) => bytewise.extend_from_slice(&d),
            Some(Chunk::Trailers(t)) => bytewise_trailers = Some(t),
            Some(Chunk::End) => break,
            None => {
                buf.extend_from_slice(&raw[fed..=fed]);
                fed += 1;
            }
        }
    }
    assert_eq!(bytewise, data);
    assert_eq!(bytewise_trailers, trailers);
    buf.extend_from_slice(&raw[fed..]);
    assert_eq!(buf, rest);
}

#[test]
fn partial_size_line_scan_resumes() {
    // The scan state moves forward with the bytes, so each call looks
    // only at what is new.
    let mut decoder = chunked(&Limits::default());
    let mut buf = BytesMut::new();
    for b in b"5;aaaaaaaa" {
        buf.extend_from_slice(&[*b]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        let BodyDecoder::Chunked(ChunkedDecoder {
            state: ChunkedState::Size { scanned },
            ..
        }) = &decoder
        else {
            panic!("{decoder:?}");
        };
        assert_eq!(*scanned, buf.len());
    }
}
