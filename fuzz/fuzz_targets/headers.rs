//! Request header rewriting on the way upstream: every function of
//! `weir::upstream::headers` that reads client headers must accept any
//! header map without panicking.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use weir::upstream::headers::{
    add_forwarded, add_via, client_ip_value, incoming_request_id, strip_hop_by_hop,
    wants_upgrade,
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

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut map = header_map(rest);
    let upgrade = wants_upgrade(&map);
    let _ = incoming_request_id(&map);
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
    add_forwarded(&mut map, &client_ip_value(client), proto, host);
    add_via(&mut map, http::Version::HTTP_11, "weir");
    let _ = incoming_request_id(&map);
});
