//! Header rewriting between client and endpoint (RFC 9110 §7.6).
//!
//! Hop-by-hop headers describe one connection, not the message, so a proxy
//! must not forward them: the fixed list below, plus every header the
//! `Connection` header names (RFC 9110 §7.6.1). `TE: trailers` is the one
//! exception kept, because gRPC over HTTP/2 requires it (RFC 9113 §8.2.2).
//! The list is a `static` so stripping costs no allocation (rpxy
//! `header_ops/hop.rs` does the same).

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::http1::RawFields;

/// Hop-by-hop headers (RFC 9110 §7.6.1, plus the de-facto
/// `Proxy-Connection` and `Keep-Alive`).
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TRAILER,
    header::UPGRADE,
    header::TE,
];

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Request-Id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A request's fields wherever they are kept: its map (all of an HTTP/2
/// request's, and what weir adds) and, for an HTTP/1.1 request from weir's
/// codec, the client's lines as received (see `http1::RawFields`).
#[derive(Clone, Copy, Debug)]
pub struct RequestFields<'a> {
    /// The request's map.
    pub map: &'a HeaderMap,
    /// The client's lines as received, if kept apart.
    pub raw: Option<&'a RawFields>,
}

impl<'a> RequestFields<'a> {
    /// Fields that are all in `map`.
    pub fn of(map: &'a HeaderMap) -> Self {
        RequestFields { map, raw: None }
    }

    /// Every value of `name`: the raw lines' (which came first on the
    /// wire), then the map's.
    pub fn get_all(self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        let raw = self
            .raw
            .into_iter()
            .flat_map(move |r| r.get_all(name.as_str()));
        raw.chain(self.map.get_all(name).iter().map(HeaderValue::as_bytes))
    }

    /// The first value of `name`.
    pub fn get(self, name: &'a HeaderName) -> Option<&'a [u8]> {
        if let Some(v) = self.raw.and_then(|r| r.get(name.as_str())) {
            return Some(v);
        }
        self.map.get(name).map(HeaderValue::as_bytes)
    }
}

/// The fields weir adds to a request it forwards, kept beside the head
/// rather than in its map: an HTTP/1.1 endpoint gets them written after the
/// client's fields, without a map (an allocation, and a hash and an insert
/// per field) built for them; an HTTP/2 send appends them to its copy of
/// the map ([`Added::append_to`]).
#[derive(Clone, Debug, Default)]
pub struct Added {
    /// `X-Forwarded-For`: the client's chain, if any, then its address.
    pub forwarded_for: Option<HeaderValue>,
    /// `Forwarded`, when the client's lines were folded into one.
    pub forwarded: Option<HeaderValue>,
    /// `X-Forwarded-Proto`.
    pub forwarded_proto: Option<HeaderValue>,
    /// `X-Forwarded-Host`.
    pub forwarded_host: Option<HeaderValue>,
    /// weir's `Via` entry, after the client's.
    pub via: Option<HeaderValue>,
    /// `X-Request-Id`.
    pub request_id: Option<HeaderValue>,
}

/// One field line to write: name (as it goes out) and value.
pub type Line<'a> = (&'static [u8], &'a [u8]);

impl Added {
    /// The fields as lines, names in Title-Case, in the order they are
    /// written: the first `n` of the array.
    pub fn lines(&self) -> ([Line<'_>; 6], usize) {
        let mut out: [Line<'_>; 6] = [(b"", b""); 6];
        let mut n = 0;
        let all: [(&'static [u8], &Option<HeaderValue>); 6] = [
            (b"X-Forwarded-For", &self.forwarded_for),
            (b"Forwarded", &self.forwarded),
            (b"X-Forwarded-Proto", &self.forwarded_proto),
            (b"X-Forwarded-Host", &self.forwarded_host),
            (b"Via", &self.via),
            (b"X-Request-Id", &self.request_id),
        ];
        for (name, value) in all {
            if let (Some(v), Some(slot)) = (value, out.get_mut(n)) {
                *slot = (name, v.as_bytes());
                n += 1;
            }
        }
        (out, n)
    }

    /// Appends the fields to `map` (for an HTTP/2 request).
    pub fn append_to(&self, map: &mut HeaderMap) {
        let all = [
            (&X_FORWARDED_FOR, &self.forwarded_for),
            (&header::FORWARDED, &self.forwarded),
            (&X_FORWARDED_PROTO, &self.forwarded_proto),
            (&X_FORWARDED_HOST, &self.forwarded_host),
            (&header::VIA, &self.via),
            (&X_REQUEST_ID, &self.request_id),
        ];
        for (name, value) in all {
            if let Some(v) = value {
                map.append(name.clone(), v.clone());
            }
        }
    }
}

/// Whether the request asks for a protocol upgrade (WebSocket and friends):
/// `Connection` lists `upgrade` and an `Upgrade` header is present.
pub fn wants_upgrade(fields: RequestFields<'_>) -> bool {
    fields.get(&header::UPGRADE).is_some() && connection_has(fields, "upgrade")
}

fn connection_has(fields: RequestFields<'_>, token: &str) -> bool {
    fields
        .get_all(&header::CONNECTION)
        .flat_map(|v| v.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Removes hop-by-hop headers. With `upgrade` set, `Upgrade` and
/// `Connection: upgrade` are put back so the endpoint sees the handshake.
///
/// Runs twice per proxied request (request and response), so it first
/// scans the names once, which is plain comparisons (standard names compare
/// as enum tags) rather than a hash lookup per listed header, and removes
/// only what is present. A message with none of them costs one scan.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let mut present = [false; HOP_BY_HOP.len()];
    for name in headers.keys() {
        for (slot, hop) in present.iter_mut().zip(HOP_BY_HOP.iter()) {
            *slot |= hop == name;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let [connection, _, _, _, _, upgrade_present, te] = present;
    // `Connection: upgrade` names `Upgrade` itself, so save it first.
    let upgrade_value = if upgrade && upgrade_present {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    // Headers named in Connection first, while we can still read it.
    // `keep-alive`, the usual token, is in the fixed list already.
    if connection {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(&name);
        }
    }
    let te_trailers = te
        && headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(v) = upgrade_value {
        headers.insert(header::UPGRADE, v);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// [`strip_hop_by_hop`] for fields kept as received (an HTTP/1.1
/// request's or response's). With `upgrade` set, an `Upgrade` line is
/// kept; `true` then means the caller must add `Connection: upgrade` (the
/// Connection lines go, like every hop-by-hop field).
pub fn strip_hop_by_hop_raw(fields: &mut RawFields, upgrade: bool) -> bool {
    if !fields.has_hop_by_hop() {
        return false;
    }
    // Names the Connection lines list; `keep-alive` and `close`, the usual
    // tokens, name no other field, so this rarely allocates.
    let mut named: Vec<Vec<u8>> = Vec::new();
    let mut upgrade_line = false;
    for (name, value) in fields.hop_by_hop() {
        if name.eq_ignore_ascii_case(b"connection") {
            nominated(value, upgrade, &mut named);
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_line = true;
        }
    }
    let keep_upgrade = upgrade && upgrade_line;
    fields.drop_hop_by_hop(|name, value| {
        is_te_trailers(name, value) || (keep_upgrade && name.eq_ignore_ascii_case(b"upgrade"))
    });
    if !named.is_empty() {
        fields.drop_where(|name, _| named.iter().any(|n| name.eq_ignore_ascii_case(n)));
    }
    keep_upgrade
}

/// Adds to `named` the fields a Connection value lists, but the tokens
/// that name none (`keep-alive`, `close`, and `upgrade` for a switch).
fn nominated(value: &[u8], upgrade: bool, named: &mut Vec<Vec<u8>>) {
    for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        let usual = token.eq_ignore_ascii_case(b"keep-alive")
            || token.eq_ignore_ascii_case(b"close")
            || (upgrade && token.eq_ignore_ascii_case(b"upgrade"));
        if !token.is_empty() && !usual {
            named.push(token.to_vec());
        }
    }
}

/// `TE: trailers`, the one hop-by-hop field kept (see the module docs).
fn is_te_trailers(name: &[u8], value: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"te") && value.trim_ascii().eq_ignore_ascii_case(b"trailers")
}

/// Moves an endpoint's raw response fields into `parts`' map, before the
/// fields already there (what weir added), with their spellings in the
/// extensions: for an HTTP/2 client, a protocol switch, or anything else
/// that needs the fields as a map.
pub fn materialize(parts: &mut http::response::Parts, raw: RawFields) {
    if raw.is_empty() {
        return;
    }
    let (mut map, case) = raw.into_map();
    let mut previous = None;
    for (name, value) in std::mem::take(&mut parts.headers) {
        // `into_iter` names only the first value of each name.
        if let Some(name) = name {
            previous = Some(name);
        }
        if let Some(name) = &previous {
            map.append(name.clone(), value);
        }
    }
    parts.headers = map;
    if !case.is_empty() {
        parts.extensions.insert(case);
    }
}

/// The client address as an `X-Forwarded-For` entry. Computed once per
/// client connection: formatting an address costs more than the rest of
/// the header rewriting.
pub fn client_ip_value(client: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client.to_string()).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Sets weir's `X-Forwarded-For` (the client's chain, then its address),
/// `X-Forwarded-Proto` and `X-Forwarded-Host` in `added`, and drops the
/// client's own lines of them from `headers` and `raw`.
///
/// An existing `X-Forwarded-For` is kept and appended to (nginx's
/// `$proxy_add_x_forwarded_for`): whether to trust it is the endpoint's
/// decision, and it can tell weir's own hop apart because weir's entry is
/// always last.
///
/// `client` is the address as [`client_ip_value`] made it.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    raw: Option<&mut RawFields>,
    added: &mut Added,
    client: &HeaderValue,
    proto: &'static str,
    host: Option<HeaderValue>,
) {
    let fields = RequestFields {
        map: headers,
        raw: raw.as_deref(),
    };
    // Several XFF lines are one list (RFC 9110 §5.3): every address is
    // kept, in order, then the client's.
    let chain = joined(fields, &X_FORWARDED_FOR);
    let had_chain = chain.is_some();
    added.forwarded_for = match chain {
        // The common case: no chain yet, the cached value is shared.
        None => Some(client.clone()),
        Some(mut chain) => {
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(client.as_bytes());
            HeaderValue::from_bytes(&chain).ok()
        }
    };
    // `Forwarded` passes through, its lines folded into one list too, for
    // endpoints that read only the first line.
    added.forwarded = match fields.get_all(&header::FORWARDED).nth(1) {
        Some(_) => {
            joined(fields, &header::FORWARDED).and_then(|v| HeaderValue::from_bytes(&v).ok())
        }
        None => None,
    };
    added.forwarded_proto = Some(HeaderValue::from_static(proto));
    added.forwarded_host = host;
    // The client's own lines of what weir sets go, from both places (an
    // HTTP/1.1 request's map is empty here: these cost no hashing).
    let folded = added.forwarded.is_some();
    if let Some(raw) = raw {
        raw.drop_where(|name, _| {
            let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
            is(b"x-forwarded-for")
                || is(b"x-forwarded-proto")
                || is(b"x-forwarded-host")
                || (folded && is(b"forwarded"))
        });
    }
    if !headers.is_empty() {
        if had_chain {
            headers.remove(&X_FORWARDED_FOR);
        }
        if folded {
            headers.remove(header::FORWARDED);
        }
        headers.remove(&X_FORWARDED_PROTO);
        headers.remove(&X_FORWARDED_HOST);
    }
}

/// The non-empty values of every `name` line, trimmed and joined with
/// `, ` (`None` when there are none).
fn joined(fields: RequestFields<'_>, name: &http::HeaderName) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut add = |value: &[u8]| {
        let v = value.trim_ascii();
        if v.is_empty() {
            return;
        }
        let out = out.get_or_insert_with(|| Vec::with_capacity(v.len() + 24));
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(v);
    };
    // Plain loops rather than `RequestFields::get_all`: this runs on every
    // request, and the chained iterator costs more than the lookup.
    if let Some(raw) = fields.raw {
        for (n, v) in raw.iter() {
            if n.eq_ignore_ascii_case(name.as_str().as_bytes()) {
                add(v);
            }
        }
    }
    for v in fields.map.get_all(name) {
        add(v.as_bytes());
    }
    out
}

/// weir's `Via: <protocol> <pseudonym>` entry (RFC 9110 §7.6.3), which goes
/// after the client's `Via` lines.
pub fn add_via(added: &mut Added, version: http::Version, pseudonym: &str) {
    let proto = match version {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    };
    added.via = HeaderValue::from_str(&format!("{proto} {pseudonym}")).ok();
}

/// A request id the client sent, if it is sane enough to log and forward:
/// 1 to 128 visible ASCII characters.
pub fn incoming_request_id(fields: RequestFields<'_>) -> Option<HeaderValue> {
    let b = fields.get(&X_REQUEST_ID)?;
    let ok = !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic());
    ok.then(|| HeaderValue::from_bytes(b).ok()).flatten()
}

/// A fresh request id: 128 random bits as 32 lowercase hex digits.
#[allow(
    clippy::indexing_slicing,
    reason = "the index is masked to 0..16, the length of HEX"
)]
pub fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut out = [0u8; 32];
    for slot in out.iter_mut().rev() {
        *slot = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    // An owner-backed `Bytes` is reference counted from the start: the id
    // is cloned into the upstream request, the response and the log
    // record, and each clone is then a counter increment instead of the
    // first one promoting (allocating) a vector-backed buffer.
    // Only hex digits were written, so this cannot fail; fall back to a
    // fixed value rather than panic.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(out))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    /// `add_forwarded`, with weir's fields then appended to the map (as an
    /// HTTP/2 send does), so that one map shows the outcome.
    fn forward_into(
        h: &mut HeaderMap,
        raw: Option<&mut RawFields>,
        client: &HeaderValue,
        proto: &'static str,
        host: Option<HeaderValue>,
    ) {
        let mut added = Added::default();
        add_forwarded(h, raw, &mut added, client, proto, host);
        added.append_to(h);
    }

    /// Response fields as the HTTP/1.1 parser keeps them.
    fn raw(lines: &str) -> RawFields {
        let mut buf = bytes::BytesMut::from(format!("HTTP/1.1 200 OK\r\n{lines}\r\n").as_str());
        let limits = crate::http1::Limits::default();
        let mut scan = crate::http1::ResponseScan::default();
        crate::http1::parse_response(&mut buf, &limits, &http::Method::GET, &mut scan)
            .unwrap()
            .unwrap()
            .headers
    }

    #[test]
    fn the_codec_marks_every_hop_by_hop_name() {
        use crate::http1::is_hop_by_hop;
        for h in &HOP_BY_HOP {
            assert!(is_hop_by_hop(h.as_str().as_bytes()), "{h}");
            assert!(is_hop_by_hop(h.as_str().to_uppercase().as_bytes()), "{h}");
        }
        assert!(!is_hop_by_hop(b"server") && !is_hop_by_hop(b"connectionx"));
    }

    #[test]
    fn raw_strip_drops_what_the_map_strip_drops() {
        let lines = "Connection: keep-alive, X-Secret\r\nKeep-Alive: timeout=5\r\n\
            x-secret: 1\r\nTE: trailers\r\nTrailer: a\r\nProxy-Connection: x\r\n\
            Upgrade: h2c\r\nServer: s\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n";
        let mut fields = raw(lines);
        assert!(!strip_hop_by_hop_raw(&mut fields, false));
        let kept: Vec<(String, String)> = fields
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into(),
                    String::from_utf8_lossy(v).into(),
                )
            })
            .collect();
        assert_eq!(
            kept,
            [
                ("TE", "trailers"),
                ("Server", "s"),
                ("Set-Cookie", "a"),
                ("Set-Cookie", "b")
            ]
            .map(|(n, v)| (n.to_string(), v.to_string()))
        );
        let (mut map, _) = raw(lines).into_map();
        strip_hop_by_hop(&mut map, false);
        assert_eq!(map, fields.into_map().0);
    }

    #[test]
    fn materialize_puts_raw_fields_before_the_added_ones() {
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts
            .headers
            .insert("x-request-id", HeaderValue::from_static("id"));
        materialize(&mut parts, raw("server: s\r\nVary: a\r\nVary: b\r\n"));
        let names: Vec<&str> = parts.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["server", "vary", "vary", "x-request-id"]);
        let case = parts.extensions.get::<crate::http1::HeaderCase>().unwrap();
        assert_eq!(case.spelling(&header::SERVER, 0), Some(&b"server"[..]));
    }

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_fixed_list_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("connection", "X-Other"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("te", "gzip"),
            ("trailer", "x-t"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "3");
    }

    #[test]
    fn keeps_te_trailers_for_grpc() {
        let mut h = map(&[("te", "trailers")]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn upgrade_keeps_handshake_headers() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(wants_upgrade(RequestFields::of(&h)));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        // The same as received: the Upgrade line stays, the caller adds
        // `Connection: upgrade`.
        let mut fields = raw(
            "Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n",
        );
        let none = HeaderMap::new();
        let view = RequestFields {
            map: &none,
            raw: Some(&fields),
        };
        assert!(wants_upgrade(view));
        assert!(strip_hop_by_hop_raw(&mut fields, true));
        let kept: Vec<&[u8]> = fields.iter().map(|(n, _)| n).collect();
        assert_eq!(kept, [&b"Upgrade"[..], b"Sec-WebSocket-Key"]);
        let mut plain = raw("Upgrade: h2c\r\nConnection: Upgrade\r\n");
        assert!(!strip_hop_by_hop_raw(&mut plain, false));
        assert!(plain.is_empty());
    }

    #[test]
    fn forwarded_headers_append_and_set() {
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
        ]);
        forward_into(
            &mut h,
            None,
            &client_ip_value("10.0.0.1".parse().unwrap()),
            "http",
            Some(HeaderValue::from_static("a.example")),
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.example");
        let mut h = HeaderMap::new();
        forward_into(
            &mut h,
            None,
            &client_ip_value("::1".parse().unwrap()),
            "http",
            None,
        );
        assert_eq!(h["x-forwarded-for"], "::1");
        assert!(!h.contains_key("x-forwarded-host"));
    }

    #[test]
    fn every_forwarding_line_is_one_list() {
        let mut h = HeaderMap::new();
        for v in ["1.1.1.1, 2.2.2.2", " ", "3.3.3.3"] {
            h.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        h.append("forwarded", HeaderValue::from_static("for=1.1.1.1"));
        h.append(
            "forwarded",
            HeaderValue::from_static("for=3.3.3.3;proto=https"),
        );
        forward_into(
            &mut h,
            None,
            &client_ip_value("10.0.0.1".parse().unwrap()),
            "http",
            None,
        );
        let xff: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1"]);
        let fwd: Vec<_> = h.get_all("forwarded").iter().collect();
        assert_eq!(fwd, ["for=1.1.1.1, for=3.3.3.3;proto=https"]);
    }

    #[test]
    fn forwarding_fields_as_received_are_read_and_replaced_too() {
        let mut fields = raw("X-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\n\
            X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\n\
            Forwarded: for=1.1.1.1\r\nForwarded: for=2.2.2.2\r\nServer: s\r\n");
        let mut h = HeaderMap::new();
        forward_into(
            &mut h,
            Some(&mut fields),
            &client_ip_value("10.0.0.1".parse().unwrap()),
            "http",
            None,
        );
        let kept: Vec<&[u8]> = fields.iter().map(|(n, _)| n).collect();
        assert_eq!(kept, [&b"Server"[..]]);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["forwarded"], "for=1.1.1.1, for=2.2.2.2");
        assert!(!h.contains_key("x-forwarded-host"));
        // One Forwarded line passes through where it was.
        let mut fields = raw("Forwarded: for=1.1.1.1\r\n");
        forward_into(
            &mut HeaderMap::new(),
            Some(&mut fields),
            &h["x-forwarded-for"],
            "http",
            None,
        );
        assert_eq!(fields.get("forwarded"), Some(&b"for=1.1.1.1"[..]));
    }

    #[test]
    fn added_fields_are_written_in_order_and_only_when_set() {
        let mut added = Added {
            request_id: Some(HeaderValue::from_static("id-1")),
            ..Added::default()
        };
        add_via(&mut added, http::Version::HTTP_2, "edge");
        add_forwarded(
            &mut HeaderMap::new(),
            None,
            &mut added,
            &client_ip_value("10.0.0.1".parse().unwrap()),
            "https",
            None,
        );
        let (lines, n) = added.lines();
        let names: Vec<&[u8]> = lines.iter().take(n).map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                &b"X-Forwarded-For"[..],
                b"X-Forwarded-Proto",
                b"Via",
                b"X-Request-Id"
            ]
        );
        assert_eq!(lines[2].1, b"2 edge");
        let mut map = HeaderMap::new();
        added.append_to(&mut map);
        assert_eq!(map.len(), 4);
        assert_eq!(map["x-forwarded-proto"], "https");
    }

    #[test]
    fn request_ids() {
        let a = new_request_id();
        let b = new_request_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        let id = |h: &HeaderMap| incoming_request_id(RequestFields::of(h));
        assert_eq!(id(&map(&[("x-request-id", "abc-123")])).unwrap(), "abc-123");
        assert!(id(&map(&[("x-request-id", "has space")])).is_none());
        assert!(id(&HeaderMap::new()).is_none());
        let fields = raw("X-Request-ID: r-1\r\n");
        let none = HeaderMap::new();
        let view = RequestFields {
            map: &none,
            raw: Some(&fields),
        };
        assert_eq!(incoming_request_id(view).unwrap(), "r-1");
    }
}
