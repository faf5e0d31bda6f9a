//! Field sections kept as received: an HTTP/1.1 endpoint's response
//! fields go back to an HTTP/1.1 client byte for byte, without a
//! `HeaderMap` in between.
//!
//! Why: copying each field of a response into a `HeaderMap` (a name
//! lookup, a hash, a value handle per field), stripping it and writing it
//! out again cost about a fifth of the instructions of a small proxied
//! request. Between two HTTP/1.1 peers weir only drops hop-by-hop fields
//! and adds its own, so the lines can stay in the head's buffer with an
//! index of where each name and value is, the way sozu's kawa keeps a
//! message as slices of its buffer. [`RawFields::into_map`] builds the
//! map when something needs one (an HTTP/2 client, a protocol switch).
//!
//! Every line was checked by the parser before it got here (a token name,
//! no space before the colon, no obs-fold, no CTL but HTAB in the value,
//! no bare CR or LF), so writing one back cannot split a line or smuggle
//! a byte an HTTP/2 peer or `HeaderValue` would refuse.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::head::{is_title_case, HeaderCase};

/// Where one field line's name and value are in the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Line {
    name: (u32, u32),
    value: (u32, u32),
    dropped: bool,
    /// A connection-specific field ([`is_hop_by_hop`]), noted once here so
    /// that stripping them does not compare every name again.
    hop: bool,
}

/// A field section as slices of the head it arrived in, in arrival
/// order, names in their original spelling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawFields {
    head: Bytes,
    lines: Vec<Line>,
    /// Some line is connection-specific.
    hops: bool,
}

/// Whether `name` (any case) is a connection-specific field a proxy must
/// not forward (RFC 9110 §7.6.1): `Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`.
/// By length first, as most names are none of them.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
    match name.len() {
        2 => is(b"te"),
        7 => is(b"trailer") || is(b"upgrade"),
        10 => is(b"connection") || is(b"keep-alive"),
        16 => is(b"proxy-connection"),
        17 => is(b"transfer-encoding"),
        _ => false,
    }
}

/// Offsets of `part` (a slice of `whole`) in `whole`.
fn span(whole: &[u8], part: &[u8]) -> Option<(u32, u32)> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    if end > whole.len() {
        return None;
    }
    Some((u32::try_from(start).ok()?, u32::try_from(end).ok()?))
}

impl RawFields {
    /// An empty section over `head`, with room for `n` lines.
    pub(super) fn with_capacity(head: Bytes, n: usize) -> Self {
        RawFields {
            head,
            lines: Vec::with_capacity(n),
            hops: false,
        }
    }

    /// Adds a line whose name and value are slices of the head; `false`
    /// (and nothing added) if they are not.
    pub(super) fn push(&mut self, name: &[u8], value: &[u8]) -> bool {
        let (Some(name), Some(value)) = (span(&self.head, name), span(&self.head, value)) else {
            return false;
        };
        let hop = is_hop_by_hop(self.slice(name));
        self.hops |= hop;
        self.lines.push(Line {
            name,
            value,
            dropped: false,
            hop,
        });
        true
    }

    #[inline]
    fn slice(&self, (start, end): (u32, u32)) -> &[u8] {
        self.head
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// The lines still kept, as `(name, value)`, in arrival order.
    #[inline]
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.lines
            .iter()
            .filter(|l| !l.dropped)
            .map(|l| (self.slice(l.name), self.slice(l.value)))
    }

    /// The values of the kept lines named `name` (ASCII case-insensitive).
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The value of the first kept line named `name`.
    #[inline]
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// [`get`](Self::get) as a slice of the head's buffer (a reference
    /// count, no copy).
    pub fn get_shared(&self, name: &str) -> Option<Bytes> {
        let line = self
            .lines
            .iter()
            .filter(|l| !l.dropped)
            .find(|l| self.slice(l.name).eq_ignore_ascii_case(name.as_bytes()))?;
        let (start, end) = line.value;
        Some(self.head.slice(start as usize..end as usize))
    }

    /// Whether a kept line is named `name`.
    #[inline]
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Drops the lines `drop` picks (given name and value).
    #[inline]
    pub fn drop_where(&mut self, mut drop: impl FnMut(&[u8], &[u8]) -> bool) {
        let head = &self.head;
        let slice = |(s, e): (u32, u32)| head.get(s as usize..e as usize).unwrap_or_default();
        for line in self.lines.iter_mut().filter(|l| !l.dropped) {
            line.dropped = drop(slice(line.name), slice(line.value));
        }
    }

    /// The connection-specific lines still kept ([`is_hop_by_hop`]).
    pub fn hop_by_hop(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let lines = self.lines.iter().filter(|l| l.hop && !l.dropped);
        lines.map(|l| (self.slice(l.name), self.slice(l.value)))
    }

    /// Drops the connection-specific lines but those `keep` picks; cheap
    /// when there are none, the usual case for requests.
    pub fn drop_hop_by_hop(&mut self, keep: impl Fn(&[u8], &[u8]) -> bool) {
        if !self.hops {
            return;
        }
        let head = &self.head;
        let slice = |(s, e): (u32, u32)| head.get(s as usize..e as usize).unwrap_or_default();
        for line in self.lines.iter_mut().filter(|l| l.hop && !l.dropped) {
            line.dropped = !keep(slice(line.name), slice(line.value));
        }
    }

    /// Whether some line is connection-specific.
    pub fn has_hop_by_hop(&self) -> bool {
        self.hops && self.lines.iter().any(|l| l.hop && !l.dropped)
    }

    /// Drops every line named `name`.
    #[inline]
    pub fn remove(&mut self, name: &str) {
        self.drop_where(|n, _| n.eq_ignore_ascii_case(name.as_bytes()));
    }

    /// Kept lines.
    pub fn len(&self) -> usize {
        self.lines.iter().filter(|l| !l.dropped).count()
    }

    /// Whether no line is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kept lines as a map (values zero-copy) and their spellings
    /// (recorded only if some name is not Title-Case, as the request
    /// parser does). A line the map cannot hold is left out; the parser's
    /// checks are stricter than the map's, so none is.
    pub fn into_map(self) -> (HeaderMap, HeaderCase) {
        let mut map = HeaderMap::with_capacity(self.lines.len());
        let keep_case = self.iter().any(|(n, _)| !is_title_case(n));
        let mut case = HeaderCase::default();
        for line in self.lines.iter().filter(|l| !l.dropped) {
            let (ns, ne) = line.name;
            let (vs, ve) = line.value;
            let name = HeaderName::from_bytes(self.slice(line.name));
            let value = HeaderValue::from_maybe_shared(self.head.slice(vs as usize..ve as usize));
            let (Ok(name), Ok(value)) = (name, value) else {
                continue;
            };
            if keep_case {
                case.push(name.clone(), self.head.slice(ns as usize..ne as usize));
            }
            map.append(name, value);
        }
        (map, case)
    }

    /// Writes the kept lines but those `skip` refuses (by name), each as
    /// `name: value` CRLF with the name spelled as received.
    pub(super) fn write(&self, skip: impl Fn(&[u8]) -> bool, dst: &mut Vec<u8>) {
        for (name, value) in self.iter() {
            if skip(name) {
                continue;
            }
            dst.extend_from_slice(name);
            dst.extend_from_slice(b": ");
            dst.extend_from_slice(value);
            dst.extend_from_slice(b"\r\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(lines: &[(&str, &str)]) -> RawFields {
        let text: String = lines.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
        let head = Bytes::from(text);
        let mut raw = RawFields::with_capacity(head.clone(), lines.len());
        let mut at = 0;
        for (n, v) in lines {
            let name = head.get(at..at + n.len()).unwrap();
            let value = head
                .get(at + n.len() + 2..at + n.len() + 2 + v.len())
                .unwrap();
            assert!(raw.push(name, value));
            at += n.len() + v.len() + 4;
        }
        raw
    }

    #[test]
    fn lookups_ignore_case_and_dropped_lines() {
        let mut raw = fields(&[("Server", "x"), ("set-COOKIE", "a"), ("Set-Cookie", "b")]);
        assert_eq!(raw.get("server"), Some(&b"x"[..]));
        assert_eq!(raw.get_shared("SERVER").as_deref(), Some(&b"x"[..]));
        assert_eq!(raw.get_all("set-cookie").collect::<Vec<_>>(), [b"a", b"b"]);
        raw.remove("SET-cookie");
        assert!(!raw.contains("set-cookie"));
        assert_eq!(raw.len(), 1);
        raw.drop_where(|_, v| v == b"x");
        assert!(raw.is_empty());
    }

    #[test]
    fn connection_specific_lines_are_marked_when_pushed() {
        let mut raw = fields(&[("Server", "x"), ("connection", "close"), ("TE", "trailers")]);
        assert!(raw.has_hop_by_hop());
        let hops: Vec<&[u8]> = raw.hop_by_hop().map(|(n, _)| n).collect();
        assert_eq!(hops, [&b"connection"[..], b"TE"]);
        raw.drop_hop_by_hop(|n, _| n == b"TE");
        assert_eq!(raw.len(), 2);
        raw.drop_hop_by_hop(|_, _| false);
        assert!(!raw.has_hop_by_hop());
        assert_eq!(raw.get("server"), Some(&b"x"[..]));
    }

    #[test]
    fn writes_lines_as_received_and_skips_what_it_is_told() {
        let raw = fields(&[("x-ID", "7"), ("Content-Length", "3"), ("Date", "d")]);
        let mut out = Vec::new();
        raw.write(|n| n.eq_ignore_ascii_case(b"content-length"), &mut out);
        assert_eq!(out, b"x-ID: 7\r\nDate: d\r\n");
    }

    #[test]
    fn the_map_keeps_order_duplicates_and_spellings() {
        let mut raw = fields(&[("x-ID", "7"), ("Vary", "a"), ("Vary", "b"), ("Gone", "g")]);
        raw.remove("gone");
        let (map, case) = raw.into_map();
        assert_eq!(map.len(), 3);
        assert_eq!(map.get_all("vary").iter().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            case.spelling(&HeaderName::from_static("x-id"), 0),
            Some(&b"x-ID"[..])
        );
        let (_, title) = fields(&[("Vary", "a")]).into_map();
        assert!(title.is_empty());
    }

    #[test]
    fn slices_of_another_buffer_are_refused() {
        let other = b"a: b".to_vec();
        let mut raw = RawFields::with_capacity(Bytes::from_static(b"a: b"), 1);
        assert!(!raw.push(other.get(..1).unwrap(), other.get(3..).unwrap()));
        assert!(raw.is_empty());
    }
}
