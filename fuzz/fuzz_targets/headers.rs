//! Request header rewriting on the way upstream: every function of
//! `weir::upstream::headers` that reads client headers must accept any
//! header map, and any field section kept as received (`RawFields`, from
//! the same lines as an HTTP/1.1 head), without panicking; after the
//! raw strip, no connection-specific line is left but `TE: trailers` and,
//! for an upgrade, `Upgrade`.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use weir::http1::{is_hop_by_hop, parse_response, Limits, RawFields, ResponseScan};
use weir::upstream::headers::{
    add_forwarded, add_via, client_ip_value, incoming_request_id, strip_hop_by_hop,
    strip_hop_by_hop_raw, wants_upgrade, Added, RequestFields,
};

/// Names the functions look at, so short inputs hit them often.
const KNOWN: [&str; 10] = [
    "connection",
    "upgrade",
    "te",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-request-id",
    "keep-alive",
    "transfer-encoding",
    "proxy-connection",
    "trailer",
];

/// Input: lines `name: value`; a name byte 0..=9 alone picks a known name.
fn header_map(data: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        let name = match name {
            [k] if usize::from(*k) < KNOWN.len() => HeaderName::from_static(KNOWN[usize::from(*k)]),
            _ => match HeaderName::from_bytes(name) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let Ok(v) = HeaderValue::from_bytes(value) {
            map.append(name, v);
        }
    }
    map
}

/// The same lines as an HTTP/1.1 head's fields kept as received, if they
/// make a head the codec accepts.
fn raw_fields(data: &[u8]) -> Option<RawFields> {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    for line in data.split(|&b| b == b'\n') {
        let line = match line {
            [k] if usize::from(*k) < KNOWN.len() => KNOWN[usize::from(*k)].as_bytes(),
            _ => line,
        };
        head.extend_from_slice(line);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let mut buf = bytes::BytesMut::from(&head[..]);
    let mut scan = ResponseScan::default();
    let method = http::Method::HEAD;
    parse_response(&mut buf, &Limits::default(), &method, &mut scan).ok()?.map(|h| h.headers)
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut map = header_map(rest);
    let upgrade = wants_upgrade(RequestFields::of(&map));
    let _ = incoming_request_id(RequestFields::of(&map));
    strip_hop_by_hop(&mut map, upgrade || flags & 1 == 1);
    let client = if flags & 2 == 0 {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, flags))
    } else {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    };
    let proto = if flags & 4 == 0 { "http" } else { "https" };
    // The client's Host value (any bytes that are a str) is passed through.
    let host = map
        .get(http::header::HOST)
        .filter(|v| v.to_str().is_ok())
        .cloned();
    let mut weirs = Added::default();
    add_forwarded(&mut map, None, &mut weirs, &client_ip_value(client), proto, host.clone());
    add_via(&mut weirs, http::Version::HTTP_11, "weir");
    weirs.append_to(&mut map);
    let _ = incoming_request_id(RequestFields::of(&map));

    let Some(mut raw) = raw_fields(rest) else {
        return;
    };
    let mut added = HeaderMap::new();
    let view = RequestFields { map: &added, raw: Some(&raw) };
    let upgrade = wants_upgrade(view) || flags & 1 == 1;
    let _ = incoming_request_id(view);
    let kept_upgrade = strip_hop_by_hop_raw(&mut raw, upgrade);
    assert!(!kept_upgrade || upgrade);
    for (name, value) in raw.iter() {
        let allowed = (name.eq_ignore_ascii_case(b"te") && value.trim_ascii().eq_ignore_ascii_case(b"trailers"))
            || (kept_upgrade && name.eq_ignore_ascii_case(b"upgrade"));
        assert!(!is_hop_by_hop(name) || allowed, "{:?} left", String::from_utf8_lossy(name));
    }
    let mut weirs = Added::default();
    add_forwarded(&mut added, Some(&mut raw), &mut weirs, &client_ip_value(client), proto, host);
    let (lines, n) = weirs.lines();
    assert!(n >= 2 && lines.iter().take(n).all(|(name, _)| !name.is_empty()));
    for (name, _) in raw.iter() {
        assert!(!name.eq_ignore_ascii_case(b"x-forwarded-for"), "client XFF line left");
    }
    let (map, _) = raw.into_map();
    let _ = map.len();
});
