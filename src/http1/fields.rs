//! Value grammars of the fields that decide framing and routing:
//! Content-Length, Transfer-Encoding, Host (and authority-form targets),
//! Connection and Expect; plus the token and whitespace rules they share.
//!
//! Each grammar is the RFC's, applied strictly: a proxy that reads a
//! framing field differently from the server behind it can be made to see
//! two requests where the server sees one.

use std::net::Ipv6Addr;

use bytes::Bytes;

use super::head::HeadError;

/// `tchar` (RFC 9110 §5.6.2).
pub(super) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+'
        | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// `token`: one or more tchars.
pub(super) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Whether `b` is optional whitespace (SP or HTAB).
pub(super) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// `s` without leading and trailing OWS.
pub(super) fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_ows(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_ows(b)).map_or(start, |i| i + 1);
    s.get(start..end).unwrap_or_default()
}

/// The elements of a comma-separated list, each trimmed of OWS.
pub(super) fn list_elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim_ows)
}

/// `part` (a subslice of `whole`'s bytes) as a zero-copy `Bytes`; `None`
/// if it is not inside `whole` (never the case for slices httparse gives
/// back, but this must not panic either way).
pub(super) fn sub_bytes(whole: &Bytes, part: &[u8]) -> Option<Bytes> {
    if part.is_empty() {
        return Some(Bytes::new());
    }
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then(|| whole.slice(start..end))
}

/// Content-Length: `1*DIGIT` that fits a u64 (no sign, no whitespace
/// inside, no list).
pub(super) fn content_length(v: &[u8]) -> Result<u64, HeadError> {
    if v.is_empty() {
        return Err(HeadError::ContentLength("empty"));
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return Err(HeadError::ContentLength("not a decimal number"));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(HeadError::ContentLength("overflow"))?;
    }
    Ok(n)
}

/// Transfer-Encoding: a list of clean tokens whose last (and only
/// `chunked`) element is `chunked`; any other coding is valid syntax that
/// weir does not decode (501).
pub(super) fn transfer_encoding(v: &[u8]) -> Result<(), HeadError> {
    let (mut chunked, mut last_chunked, mut other) = (false, false, false);
    for coding in list_elements(v) {
        if !is_token(coding) {
            return Err(HeadError::TransferEncoding("obfuscated"));
        }
        last_chunked = coding.eq_ignore_ascii_case(b"chunked");
        if last_chunked && chunked {
            return Err(HeadError::TransferEncoding("chunked twice"));
        }
        chunked |= last_chunked;
        other |= !last_chunked;
    }
    if chunked && !last_chunked {
        return Err(HeadError::TransferEncoding("chunked not last"));
    }
    if !last_chunked {
        return Err(HeadError::TransferEncoding("last coding not chunked"));
    }
    if other {
        return Err(HeadError::UnknownCoding);
    }
    Ok(())
}

/// `unreserved` or `sub-delims` (RFC 3986 §2.2–2.3).
const fn is_unreserved_or_sub_delim(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// `reg-name` (which includes IPv4 addresses), not empty.
fn reg_name(host: &[u8]) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("empty host");
    }
    // The usual name has no percent-encoding: one table lookup per byte.
    if host.iter().all(|&b| host_byte(b)) {
        return Ok(());
    }
    let mut i = 0;
    while let Some(&b) = host.get(i) {
        if b == b'%' {
            let hex = host.get(i + 1..i + 3).unwrap_or_default();
            if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err("bad percent-encoding");
            }
            i += 3;
        } else if host_byte(b) {
            i += 1;
        } else {
            return Err("invalid character in host");
        }
    }
    Ok(())
}

/// RFC 3986 `reg-name` (unreserved, sub-delims and `%XX`), possibly
/// empty: the one check of host names, shared with the proxy's for hosts
/// that did not come through this codec (HTTP/2 `:authority`).
pub fn is_reg_name(host: &[u8]) -> bool {
    host.is_empty() || reg_name(host).is_ok()
}

/// [`is_unreserved_or_sub_delim`] for every byte.
#[allow(clippy::indexing_slicing, reason = "i < 256, the table's length")]
static HOST_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = is_unreserved_or_sub_delim(i as u8);
        i += 1;
    }
    table
};

fn host_byte(b: u8) -> bool {
    HOST_BYTES.get(usize::from(b)).copied().unwrap_or(false)
}

/// The inside of an `IP-literal`: an IPv6 address or `IPvFuture`.
fn ip_literal(inner: &[u8]) -> Result<(), &'static str> {
    if let Some(rest) = inner
        .strip_prefix(b"v")
        .or_else(|| inner.strip_prefix(b"V"))
    {
        let dot = rest
            .iter()
            .position(|&b| b == b'.')
            .ok_or("bad IPvFuture")?;
        let (ver, tail) = rest.split_at(dot);
        let tail = tail.get(1..).unwrap_or_default();
        let ok = !ver.is_empty()
            && ver.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail
                .iter()
                .all(|&b| is_unreserved_or_sub_delim(b) || b == b':');
        return if ok { Ok(()) } else { Err("bad IPvFuture") };
    }
    std::str::from_utf8(inner)
        .ok()
        .and_then(|s| s.parse::<Ipv6Addr>().ok())
        .map(|_| ())
        .ok_or("bad IPv6 literal")
}

/// `port`: 1 to 5 digits, at most 65535.
fn port(p: &[u8]) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("empty port");
    }
    if p.len() > 5 || !p.iter().all(u8::is_ascii_digit) {
        return Err("invalid port");
    }
    let n = p.iter().fold(0u32, |n, &b| n * 10 + u32::from(b - b'0'));
    if n > 65535 {
        return Err("port out of range");
    }
    Ok(())
}

/// `uri-host [":" port]` (the Host field, and authority-form targets with
/// `require_port`): no userinfo, path, query, fragment or whitespace.
pub(super) fn host(v: &[u8], require_port: bool) -> Result<(), &'static str> {
    if v.is_empty() {
        return Err("empty");
    }
    let (host_end, port_part) = if v.first() == Some(&b'[') {
        let close = v
            .iter()
            .position(|&b| b == b']')
            .ok_or("unclosed IP literal")?;
        ip_literal(v.get(1..close).unwrap_or_default())?;
        match v.get(close + 1..).unwrap_or_default() {
            [] => (close + 1, None),
            [b':', p @ ..] => (close + 1, Some(p)),
            _ => return Err("junk after IP literal"),
        }
    } else {
        match v.iter().position(|&b| b == b':') {
            Some(colon) => (colon, v.get(colon + 1..)),
            None => (v.len(), None),
        }
    };
    if v.first() != Some(&b'[') {
        reg_name(v.get(..host_end).unwrap_or_default())?;
    }
    match port_part {
        Some(p) => port(p),
        None if require_port => Err("missing port"),
        None => Ok(()),
    }
}

/// What the Connection field's tokens ask for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConnectionTokens {
    pub(super) close: bool,
    pub(super) keep_alive: bool,
    pub(super) upgrade: bool,
}

impl ConnectionTokens {
    /// Adds the tokens of one Connection field line.
    pub(super) fn add(&mut self, v: &[u8]) {
        for token in list_elements(v) {
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            }
        }
    }
}

/// Whether an Expect field value asks for `100-continue`.
pub(super) fn is_100_continue(v: &[u8]) -> bool {
    trim_ows(v).eq_ignore_ascii_case(b"100-continue")
}
