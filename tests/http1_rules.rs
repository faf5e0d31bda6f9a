//! The HTTP/1.1 rules weir's front side enforces, checked byte for byte on
//! raw TCP sockets (RFC 9112 message syntax and framing, RFC 9110
//! semantics).
//!
//! A generic client or server library normalises exactly what these rules
//! are about (header case, duplicate fields, framing), so both ends here
//! are hand-written: [`exchange`] and [`Conn`] write exact bytes and read
//! the raw response, and [`RawBackend`] is an endpoint that records the
//! exact bytes of every request head it receives, so a test can tell what
//! reached the endpoint (and that nothing did, for a refused request).
//!
//! Timing tests run on real time: weir, its endpoint and the client talk
//! over real loopback sockets, which paused tokio time cannot drive. Their
//! windows leave seconds of slack for a loaded machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// How long a client waits for a response before calling it missing.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(5);
/// How long [`exchange`] waits to see whether weir closes after responding.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

// ---- wire reading, shared by the client and the endpoint ----

/// One socket with a read buffer, cut into HTTP/1.1 pieces (lines, heads,
/// fixed-length and chunked bodies). Every method returns `None` when the
/// peer closes first, so a cut message is visible as such.
struct Wire {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more into the buffer; false at end of stream or on a reset.
    async fn fill(&mut self) -> bool {
        // Into the buffer itself: a stack array would make every future
        // that awaits this one as large.
        self.buf.reserve(16 * 1024);
        matches!(self.stream.read_buf(&mut self.buf).await, Ok(n) if n > 0)
    }

    /// Takes everything up to and including the first `delim`.
    async fn until(&mut self, delim: &[u8]) -> Option<Vec<u8>> {
        let mut from = 0;
        loop {
            if let Some(i) = self.buf[from..]
                .windows(delim.len())
                .position(|w| w == delim)
            {
                return Some(self.buf.drain(..from + i + delim.len()).collect());
            }
            // Only the tail can still start a match: keeps long bodies linear.
            from = self.buf.len().saturating_sub(delim.len() - 1);
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn exact(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// A chunked body: (decoded data, the bytes as sent). Lenient about
    /// extensions and trailers, since weir is the strict side under test.
    async fn chunked(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let (mut data, mut sent) = (Vec::new(), Vec::new());
        loop {
            let line = self.until(b"\r\n").await?;
            sent.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let size = text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).ok()?;
            if size == 0 {
                break;
            }
            let chunk = self.exact(size + 2).await?;
            data.extend_from_slice(&chunk[..size]);
            sent.extend_from_slice(&chunk);
        }
        loop {
            let line = self.until(b"\r\n").await?;
            sent.extend_from_slice(&line);
            if line == b"\r\n" {
                return Some((data, sent));
            }
        }
    }

    async fn until_close(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }
}

/// The trimmed values of every field line named `name` (any case).
fn field_values(head: &[u8], name: &str) -> Vec<String> {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

fn is_chunked(head: &[u8]) -> bool {
    field_values(head, "transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"))
}

fn content_length(head: &[u8]) -> Option<usize> {
    field_values(head, "content-length").first()?.parse().ok()
}

// ---- the client side ----

/// One response as read off the wire.
struct Response {
    status: u16,
    head: Vec<u8>,
    body: Vec<u8>,
    /// Head and body bytes exactly as received.
    raw: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Vec<String> {
        field_values(&self.head, name)
    }
}

/// A client connection to weir.
struct Conn {
    wire: Wire,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        Self {
            wire: Wire::new(TcpStream::connect(addr).await.unwrap()),
        }
    }

    /// Writes `bytes`; a failed write is ignored, because weir may refuse
    /// and close before reading everything, and the test is about the
    /// answer it gave.
    async fn send(&mut self, bytes: &[u8]) {
        let _ = self.wire.stream.write_all(bytes).await;
    }

    /// The next response, interim (1xx) ones included, read within
    /// [`RESPONSE_DEADLINE`]. `head_request` says the body is absent
    /// whatever the head announces (RFC 9110 §9.3.2).
    async fn next(&mut self, head_request: bool) -> Option<Response> {
        tokio::time::timeout(RESPONSE_DEADLINE, self.read_one(head_request))
            .await
            .ok()
            .flatten()
    }

    /// The next final response; interim ones are skipped but kept in `raw`.
    async fn response(&mut self, head_request: bool) -> Option<Response> {
        let mut interim = Vec::new();
        loop {
            let mut res = self.next(head_request).await?;
            if !(100..200).contains(&res.status) {
                interim.append(&mut res.raw);
                res.raw = interim;
                return Some(res);
            }
            interim.append(&mut res.raw);
        }
    }

    async fn read_one(&mut self, head_request: bool) -> Option<Response> {
        let head = self.wire.until(b"\r\n\r\n").await?;
        let status = std::str::from_utf8(&head)
            .ok()
            .filter(|h| h.starts_with("HTTP/1."))
            .and_then(|h| h.get(9..12))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let bodiless = head_request || matches!(status, 100..=199 | 204 | 304);
        let (body, sent) = if bodiless {
            (Vec::new(), Vec::new())
        } else if is_chunked(&head) {
            self.wire.chunked().await?
        } else if let Some(n) = content_length(&head) {
            let b = self.wire.exact(n).await?;
            (b.clone(), b)
        } else {
            let b = self.wire.until_close().await;
            (b.clone(), b)
        };
        let mut raw = head.clone();
        raw.extend_from_slice(&sent);
        Some(Response {
            status,
            head,
            body,
            raw,
        })
    }

    /// Whether weir closes the connection within `within` (end of stream or
    /// a reset), and any bytes it sent meanwhile.
    async fn closed_within(&mut self, within: Duration) -> (bool, Vec<u8>) {
        let end = Instant::now() + within;
        loop {
            match tokio::time::timeout_at(end, self.wire.fill()).await {
                Err(_) => return (false, std::mem::take(&mut self.wire.buf)),
                Ok(false) => return (true, std::mem::take(&mut self.wire.buf)),
                Ok(true) => {}
            }
        }
    }
}

/// Writes `bytes` on a fresh connection and reads one final response.
/// Returns its status (0 if none came within 5 s), the raw bytes received
/// (including anything after the response), and whether weir closed the
/// connection within 1 s after it.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (u16, Vec<u8>, bool) {
    let mut c = Conn::open(addr).await;
    c.send(bytes).await;
    let res = c.response(bytes.starts_with(b"HEAD ")).await;
    let (closed, extra) = c.closed_within(CLOSE_WAIT).await;
    let (status, mut raw) = res.map_or((0, Vec::new()), |r| (r.status, r.raw));
    raw.extend_from_slice(&extra);
    (status, raw, closed)
}

fn text(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

// ---- the endpoint side ----

/// What the endpoint received of one request.
#[derive(Clone, Debug)]
struct Received {
    /// The request head, byte for byte, as text.
    head: String,
    body: Vec<u8>,
    /// The whole body arrived (the head alone is recorded as it arrives).
    complete: bool,
}

impl Received {
    fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or("")
    }

    fn values(&self, name: &str) -> Vec<String> {
        field_values(self.head.as_bytes(), name)
    }
}

/// The response an endpoint sends for a request head.
type Reply = fn(&[u8]) -> Vec<u8>;

/// `200 ok`, without the body for HEAD (keep-alive stays in sync).
fn ok_reply(head: &[u8]) -> Vec<u8> {
    if head.starts_with(b"HEAD ") {
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n".to_vec()
    } else {
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
    }
}

/// An endpoint on raw sockets: keep-alive, one reply per complete request.
struct RawBackend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Received>>>,
}

/// The path of the well-formed request sent after each refused one.
const SENTINEL_PATH: &str = "/sentinel";

impl RawBackend {
    async fn start(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_raw(Wire::new(stream), Arc::clone(&log), reply));
            }
        });
        Self { addr, seen }
    }

    fn received(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests other than the sentinels.
    fn others(&self) -> Vec<Received> {
        let mut v = self.received();
        v.retain(|r| r.path() != SENTINEL_PATH);
        v
    }
}

async fn serve_raw(mut wire: Wire, log: Arc<Mutex<Vec<Received>>>, reply: Reply) {
    while let Some(head) = wire.until(b"\r\n\r\n").await {
        let index = {
            let mut log = log.lock().unwrap();
            log.push(Received {
                head: text(&head),
                body: Vec::new(),
                complete: false,
            });
            log.len() - 1
        };
        let body = if is_chunked(&head) {
            wire.chunked().await.map(|(data, _)| data)
        } else {
            wire.exact(content_length(&head).unwrap_or(0)).await
        };
        let Some(body) = body else { return };
        if let Some(r) = log.lock().unwrap().get_mut(index) {
            r.body = body;
            r.complete = true;
        }
        if wire.stream.write_all(&reply(&head)).await.is_err() {
            return;
        }
    }
}

// ---- weir in front of a raw endpoint ----

struct Rig {
    _weir: weir::Weir,
    addr: SocketAddr,
    be: RawBackend,
}

/// weir with `top` (top-level YAML sections) in front of a [`RawBackend`].
async fn rig_with(top: &str, reply: Reply) -> Rig {
    let be = RawBackend::start(reply).await;
    let weir = start(&format!("{top}{}", simple_config(&[be.addr], ""))).await;
    let addr = weir.listener_addr("main").unwrap();
    Rig {
        _weir: weir,
        addr,
        be,
    }
}

async fn rig(top: &str) -> Rig {
    rig_with(top, ok_reply).await
}

/// A well-formed request on a fresh connection: weir still serves.
async fn sentinel(addr: SocketAddr) -> u16 {
    let req = format!("GET {SENTINEL_PATH} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    exchange(addr, req.as_bytes()).await.0
}

/// Sends one request weir must refuse with a status in `want`, then a
/// sentinel. Describes what went wrong: another status, the connection
/// left open after a malformed message (RFC 9112 §6.3, §9.6: the framing
/// cannot be trusted), anything reaching the endpoint, or weir no longer
/// serving.
async fn refusal(rig: &Rig, name: &str, bytes: &[u8], want: &[u16]) -> Option<String> {
    let before = rig.be.others().len();
    let (status, raw, closed) = exchange(rig.addr, bytes).await;
    let next = sentinel(rig.addr).await;
    let reached = rig.be.others().len() - before;
    let mut wrong = Vec::new();
    if !want.contains(&status) {
        wrong.push(format!("status {status}, want {want:?}"));
    }
    // 413 and 414 are limits on a well-framed message: closing is optional.
    if !matches!(status, 413 | 414) && !closed {
        wrong.push("connection left open".to_owned());
    }
    if reached > 0 {
        wrong.push(format!("{reached} request(s) reached the endpoint"));
    }
    if next != 200 {
        wrong.push(format!("the next request got {next}"));
    }
    (!wrong.is_empty()).then(|| format!("{name}: {}; got {:?}", wrong.join(", "), text(&raw)))
}

/// [`refusal`] for every case; fails listing all cases that went wrong.
async fn assert_refused(rig: &Rig, cases: &[(&str, &[u8], &[u16])]) {
    let mut failures = Vec::new();
    for (name, bytes, want) in cases {
        failures.extend(refusal(rig, name, bytes, want).await);
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---- RFC 9112 §6: message body framing ----

/// RFC 9112 §6.1 and §11.2: a request with both `Content-Length` and
/// `Transfer-Encoding` is a smuggling vector; weir refuses it with 400
/// and closes, rather than picking one framing.
#[tokio::test]
async fn content_length_with_transfer_encoding_is_400_and_closes() {
    let rig = rig("").await;
    assert_refused(
        &rig,
        &[
            (
                "CL then TE",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                &[400],
            ),
            (
                "TE then CL",
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
                &[400],
            ),
        ],
    )
    .await;
}

/// RFC 9112 §6.1: a coding weir does not implement before `chunked` is
/// 501; `chunked` not last, applied twice (§7: "MUST NOT apply chunked
/// more than once"), or spelt in any obfuscated way is 400 (a plain
/// unknown token may be either).
#[tokio::test]
async fn transfer_codings_other_than_a_single_final_chunked_are_refused() {
    let rig = rig("").await;
    let te =
        |v: &str| format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n0\r\n\r\n");
    let twice = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("gzip, chunked", te("gzip, chunked").into_bytes(), &[501]),
        ("chunked, gzip", te("chunked, gzip").into_bytes(), &[400]),
        ("chunked twice", twice.to_vec(), &[400]),
        ("xchunked", te("xchunked").into_bytes(), &[400, 501]),
        ("chunked;q=1", te(" chunked;q=1").into_bytes(), &[400]),
        ("quoted", te("\"chunked\"").into_bytes(), &[400]),
        ("chunked VT", te("chunked\x0b").into_bytes(), &[400]),
    ];
    let cases: Vec<_> = cases.iter().map(|(n, b, w)| (*n, &b[..], *w)).collect();
    assert_refused(&rig, &cases).await;
}

/// RFC 9112 §6.1: an HTTP/1.0 message with `Transfer-Encoding` "MUST be
/// treated as if the framing is faulty": 400 and close.
#[tokio::test]
async fn chunked_on_http10_is_400() {
    let rig = rig("").await;
    assert_refused(
        &rig,
        &[(
            "HTTP/1.0 chunked",
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            &[400],
        )],
    )
    .await;
}

/// RFC 9112 §6.3 (item 5) and RFC 9110 §8.6: `Content-Length` is
/// `1*DIGIT`; differing values, lists, signs, hex, junk or a value past
/// any integer make the length unknowable: 400.
#[tokio::test]
async fn invalid_or_conflicting_content_length_is_400() {
    let rig = rig("").await;
    let cl = |v: &str| format!("POST / HTTP/1.1\r\nHost: a\r\n{v}\r\n\r\nhello");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "two differing",
            cl("Content-Length: 5\r\nContent-Length: 6"),
        ),
        ("list 5, 5", cl("Content-Length: 5, 5")),
        ("+5", cl("Content-Length: +5")),
        ("-1", cl("Content-Length: -1")),
        ("5a", cl("Content-Length: 5a")),
        ("0x5", cl("Content-Length: 0x5")),
        ("overflow", cl("Content-Length: 99999999999999999999999")),
    ]
    .into_iter()
    .map(|(n, s)| (n, s.into_bytes()))
    .collect();
    let cases: Vec<_> = cases
        .iter()
        .map(|(n, b)| (*n, &b[..], &[400u16][..]))
        .collect();
    assert_refused(&rig, &cases).await;
}

/// RFC 9110 §8.6: repeated identical `Content-Length` lines may be taken
/// as one; the endpoint then gets exactly one `Content-Length` and the
/// body it announced.
#[tokio::test]
async fn repeated_identical_content_length_is_forwarded_once() {
    let rig = rig("").await;
    let (status, raw, _) = exchange(
        rig.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(status, 200, "{}", text(&raw));
    let seen = rig.be.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].values("content-length"), ["5"], "{}", seen[0].head);
    assert_eq!(seen[0].body, b"hello");
}

// ---- RFC 9112 §5, RFC 9110 §5.5: field syntax ----

/// RFC 9112 §5.1 (no whitespace before the colon: MUST 400), §5.2
/// (obs-fold: 400 is one of the two options, weir's), §2.2 (bare CR: MUST
/// 400), RFC 9110 §5.5 (NUL, other CTLs: not in field-value) and §5.1
/// (field-name is a token).
#[tokio::test]
async fn malformed_field_lines_are_400() {
    let rig = rig("").await;
    let get = |f: &[u8]| [b"GET / HTTP/1.1\r\nHost: a\r\n", f, b"\r\n\r\n"].concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("obs-fold", get(b"X-A: a\r\n b")),
        (
            "space before colon",
            b"GET / HTTP/1.1\r\nHost : a\r\n\r\n".to_vec(),
        ),
        ("bare CR", get(b"X-A: a\rb")),
        ("NUL", get(b"X-A: a\x00b")),
        ("0x01", get(b"X-A: a\x01b")),
        ("DEL", get(b"X-A: a\x7fb")),
        ("paren in name", get(b"X(A): 1")),
        ("space in name", get(b"X A: 1")),
    ];
    let cases: Vec<_> = cases
        .iter()
        .map(|(n, b)| (*n, &b[..], &[400u16][..]))
        .collect();
    assert_refused(&rig, &cases).await;
}

/// RFC 9112 §2.2: a recipient MAY accept a bare LF as a line terminator;
/// weir does not, since a bare LF is read differently by different
/// parsers along a chain.
#[tokio::test]
async fn bare_lf_line_endings_are_400() {
    let rig = rig("").await;
    assert_refused(
        &rig,
        &[
            ("all LF", b"GET / HTTP/1.1\nHost: a\n\n", &[400]),
            (
                "LF in fields",
                b"GET / HTTP/1.1\r\nHost: a\nX-A: 1\r\n\r\n",
                &[400],
            ),
        ],
    )
    .await;
}

// ---- RFC 9112 §3: request line ----

/// RFC 9112 §3 (`method SP request-target SP HTTP-version`, single SPs),
/// §2.3 (HTTP-name is case-sensitive), §3.2 (origin-form has no
/// fragment): anything else is 400.
#[tokio::test]
async fn invalid_request_lines_are_400() {
    let rig = rig("").await;
    assert_refused(
        &rig,
        &[
            (
                "double space",
                b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
                &[400],
            ),
            ("no version", b"GET /\r\nHost: a\r\n\r\n", &[400]),
            (
                "extra token",
                b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n",
                &[400],
            ),
            (
                "lowercase name",
                b"GET / http/1.1\r\nHost: a\r\n\r\n",
                &[400],
            ),
            ("fragment", b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", &[400]),
        ],
    )
    .await;
}

/// RFC 9110 §15.6.6: 505 for a version weir does not implement. weir
/// refuses `HTTP/1.2` too rather than serving it as 1.1 (RFC 9112 §2.3
/// allows either: no such version exists, so a client sending it is
/// broken or probing).
#[tokio::test]
async fn unsupported_http_versions_are_505() {
    let rig = rig("").await;
    assert_refused(
        &rig,
        &[
            ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", &[505]),
            ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", &[505]),
        ],
    )
    .await;
}

// ---- RFC 9112 §3.2, RFC 9110 §7.2: Host ----

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, with several, or
/// with an invalid value is 400. Valid is `uri-host [":" port]` (RFC 9110
/// §7.2, RFC 3986 §3.2.2) with a port that is a TCP port; an empty host
/// is invalid for `http` URIs (RFC 9110 §4.2.1).
#[tokio::test]
async fn missing_duplicate_or_invalid_host_is_400() {
    let rig = rig("").await;
    let host = |v: &str| format!("GET / HTTP/1.1\r\n{v}\r\n\r\n").into_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("missing", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        ("two lines", host("Host: a\r\nHost: a")),
        ("space", host("Host: a b")),
        ("slash", host("Host: a/b")),
        ("userinfo", host("Host: user@a")),
        ("named port", host("Host: a:port")),
        ("port over 65535", host("Host: a:99999")),
        ("empty", host("Host:")),
    ];
    let cases: Vec<_> = cases
        .iter()
        .map(|(n, b)| (*n, &b[..], &[400u16][..]))
        .collect();
    assert_refused(&rig, &cases).await;
}

/// RFC 9110 §7.2: `host:port` and a bracketed IPv6 literal with a port are
/// valid and routed like any host (here by the catch-all route).
#[tokio::test]
async fn host_with_port_or_ipv6_literal_is_served() {
    let rig = rig("").await;
    for host in ["a:8080", "[::1]:8080"] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let (status, raw, _) = exchange(rig.addr, req.as_bytes()).await;
        assert_eq!(status, 200, "{host}: {}", text(&raw));
    }
    assert_eq!(rig.be.received().len(), 2);
}

// ---- RFC 9112 §7.1: chunked transfer coding ----

/// RFC 9112 §7.1: `chunk-size = 1*HEXDIG`, followed by CRLF, the data and
/// CRLF. A malformed chunk never reaches the endpoint as a complete
/// request: 400 if nothing was forwarded; if the head was already
/// streamed on, the body is cut and the client gets no success.
#[tokio::test]
async fn malformed_chunk_framing_never_reaches_the_endpoint_complete() {
    let rig = rig("").await;
    let post = |body: &str| {
        format!("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
    };
    let cases = [
        ("signed size", post("+5\r\nhello\r\n0\r\n\r\n")),
        ("empty size line", post("\r\nhello\r\n0\r\n\r\n")),
        (
            "size over u64",
            post("ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        ),
        ("0x prefix", post("0x5\r\nhello\r\n0\r\n\r\n")),
        ("non-hex size", post("zz\r\nhello\r\n0\r\n\r\n")),
        ("no CRLF after data", post("5\r\nhelloXX0\r\n\r\n")),
    ];
    let mut failures = Vec::new();
    for (name, bytes) in &cases {
        let before = rig.be.others().len();
        let (status, raw, _) = exchange(rig.addr, bytes.as_bytes()).await;
        let next = sentinel(rig.addr).await;
        let reached: Vec<Received> = rig.be.others().split_off(before);
        let ok = if reached.is_empty() {
            status == 400
        } else {
            !(200..300).contains(&status) && reached.iter().all(|r| !r.complete)
        };
        if !ok || next != 200 {
            failures.push(format!(
                "{name}: status {status}, endpoint saw {reached:?}, next {next}; got {:?}",
                text(&raw)
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// RFC 9112 §7.1.1: chunk extensions are unbounded in the grammar, so a
/// server must bound them; more than 8 KiB on one chunk line is 400.
#[tokio::test]
async fn chunk_extension_over_8_kib_is_400() {
    let rig = rig("").await;
    let ext = "a".repeat(9 * 1024);
    let req = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;{ext}\r\nhello\r\n0\r\n\r\n"
    );
    assert_refused(&rig, &[("long extension", req.as_bytes(), &[400])]).await;
}

/// RFC 9112 §7.1 and §7.1.1: any number of chunks, of any size, with
/// extensions (which a recipient ignores): the bound is per chunk line,
/// not per body, so 300 000 one-byte chunks, every third with an
/// extension, all reach the endpoint.
#[tokio::test]
async fn one_byte_chunks_with_extensions_are_forwarded_whole() {
    const N: usize = 300_000;
    let rig = rig("").await;
    let mut req =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for i in 0..N {
        let byte = b'a' + (i % 26) as u8;
        if i % 3 == 0 {
            req.extend_from_slice(format!("1;ext={i}\r\n").as_bytes());
        } else {
            req.extend_from_slice(b"1\r\n");
        }
        req.extend_from_slice(&[byte, b'\r', b'\n']);
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, raw, _) = exchange(rig.addr, &req).await;
    assert_eq!(status, 200, "{}", text(&raw));
    let seen = rig.be.received();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].complete);
    let want: Vec<u8> = (0..N).map(|i| b'a' + (i % 26) as u8).collect();
    assert!(
        seen[0].body == want,
        "endpoint got {} bytes",
        seen[0].body.len()
    );
}

/// RFC 9112 §7.1.2: a trailer section after the last chunk is part of a
/// valid chunked body; the body is accepted and forwarded.
#[tokio::test]
async fn chunked_trailers_are_accepted() {
    let rig = rig("").await;
    let (status, raw, _) = exchange(
        rig.addr,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{}", text(&raw));
    let seen = rig.be.received();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].complete);
    assert_eq!(seen[0].body, b"hello");
}

// ---- RFC 9112 §9.3, §9.5: persistence and timeouts ----

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

/// A keep-alive connection that has served one request.
async fn served_once(addr: SocketAddr) -> Conn {
    let mut c = Conn::open(addr).await;
    c.send(GET).await;
    let status = c.response(false).await.map(|r| r.status);
    assert_eq!(status, Some(200));
    c
}

/// RFC 9112 §9.3: a persistent connection waits for the next request;
/// between requests the idle timeout applies, not the head timeout, so a
/// request 2.5 s later (head timeout 1 s, idle 4 s) is served.
#[tokio::test]
async fn keep_alive_request_after_header_read_interval_is_served() {
    let rig = rig("timeouts:\n  header_read: 1s\n  client_idle: 4s\n").await;
    let mut c = served_once(rig.addr).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    c.send(GET).await;
    assert_eq!(c.response(false).await.map(|r| r.status), Some(200));
}

/// RFC 9112 §9.5: a server may close an idle connection; weir does after
/// `client_idle`, not earlier.
#[tokio::test]
async fn idle_connection_is_closed_after_client_idle() {
    let rig = rig("timeouts:\n  client_idle: 1s\n").await;
    let mut c = served_once(rig.addr).await;
    let t = Instant::now();
    let (closed, extra) = c.closed_within(Duration::from_secs(5)).await;
    let took = t.elapsed();
    assert!(closed, "still open after 5 s; got {:?}", text(&extra));
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

/// RFC 9110 §15.5.9 (408) and RFC 9112 §9.5: a head that does not complete
/// within `header_read` is answered 408 or the connection is closed.
#[tokio::test]
async fn incomplete_head_is_cut_at_header_read() {
    let rig = rig("timeouts:\n  header_read: 1s\n").await;
    let mut c = Conn::open(rig.addr).await;
    let t = Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\n").await;
    let (closed, got) = c.closed_within(Duration::from_secs(5)).await;
    let took = t.elapsed();
    let answered = text(&got).starts_with("HTTP/1.1 408");
    assert!(closed || answered, "no reaction in 5 s: {:?}", text(&got));
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "cut after {took:?}"
    );
    assert!(got.is_empty() || answered, "{:?}", text(&got));
    assert!(rig.be.received().is_empty());
}

/// RFC 9112 §9.5: a server closing an idle connection must not cut a
/// request that has started to arrive: the first byte at 0.9 s (idle
/// timeout 1 s) and the rest at 1.5 s is served.
#[tokio::test]
async fn request_started_before_idle_deadline_is_served() {
    let rig = rig("timeouts:\n  client_idle: 1s\n  header_read: 5s\n").await;
    let mut c = served_once(rig.addr).await;
    tokio::time::sleep(Duration::from_millis(900)).await;
    c.send(&GET[..1]).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.send(&GET[1..]).await;
    assert_eq!(c.response(false).await.map(|r| r.status), Some(200));
}

/// RFC 9110 §15.5.9: a body that stops arriving for `body_read` fails the
/// request (408, or the connection is cut) and the endpoint never gets a
/// complete request.
#[tokio::test]
async fn stalled_body_fails_at_body_read() {
    let rig = rig("timeouts:\n  body_read: 1s\n").await;
    let mut c = Conn::open(rig.addr).await;
    let t = Instant::now();
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n01234")
        .await;
    let res = c.response(false).await;
    let status = res.as_ref().map(|r| r.status);
    let (closed, _) = c.closed_within(Duration::from_secs(1)).await;
    assert!(
        status == Some(408) || (status.is_none() && closed),
        "status {status:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert!(rig.be.received().iter().all(|r| !r.complete));
}

/// RFC 9110 §15.5.9: `body_read` bounds a pause, not the whole body: a
/// byte every 0.5 s for 3 s keeps the request alive (`body_read: 1s`).
#[tokio::test]
async fn steady_slow_body_is_served() {
    let rig = rig("timeouts:\n  body_read: 1s\n").await;
    let mut c = Conn::open(rig.addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\n")
        .await;
    for b in b"abcdef" {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.send(&[*b]).await;
    }
    assert_eq!(c.response(false).await.map(|r| r.status), Some(200));
    assert_eq!(rig.be.received()[0].body, b"abcdef");
}

/// RFC 9112 §9.3: with the default timeouts (idle 60 s) a keep-alive
/// connection quiet for 15 s is still open and serves the next request.
#[tokio::test]
async fn default_timeouts_keep_an_idle_connection_for_15s() {
    let rig = rig("").await;
    let mut c = served_once(rig.addr).await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    c.send(GET).await;
    assert_eq!(c.response(false).await.map(|r| r.status), Some(200));
}

// ---- RFC 9112 §6.3, §9; RFC 9110 §9.3.2, §10.1.1: what keeps working ----

/// RFC 9112 §9.3.2: pipelined requests are answered in the order received.
#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let be = echo_backend("b").await;
    let weir = start(&simple_config(&[be.addr], "")).await;
    let mut c = Conn::open(weir.listener_addr("main").unwrap()).await;
    c.send(
        b"POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\none\
              POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\ntwo",
    )
    .await;
    for want in [&b"one"[..], b"two"] {
        let res = c.response(false).await.expect("a response");
        assert_eq!(
            (res.status, &res.body[..]),
            (200, want),
            "{}",
            text(&res.raw)
        );
    }
}

/// RFC 9110 §10.1.1: a request with `Expect: 100-continue` gets `100
/// Continue` before it sends its body, then the final response.
#[tokio::test]
async fn expect_100_continue_gets_interim_then_final() {
    let rig = rig("").await;
    let mut c = Conn::open(rig.addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = c.next(false).await.expect("an interim response");
    assert_eq!(interim.status, 100, "{}", text(&interim.raw));
    c.send(b"hello").await;
    assert_eq!(c.response(false).await.map(|r| r.status), Some(200));
    assert_eq!(rig.be.received()[0].body, b"hello");
}

/// RFC 9110 §10.1.1: a server may answer `Expect: 100-continue` with the
/// final status instead; a declared body over the limit is 413 before any
/// `100 Continue`, and nothing is forwarded.
#[tokio::test]
async fn expect_100_continue_over_body_limit_is_413_unforwarded() {
    let rig = rig("limits:\n  max_body_bytes: 10\n").await;
    let mut c = Conn::open(rig.addr).await;
    c.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let first = c.next(false).await.expect("a response");
    assert_eq!(first.status, 413, "{}", text(&first.raw));
    assert!(rig.be.received().is_empty());
}

/// RFC 9110 §9.3.2 and RFC 9112 §6.3 (item 1): a response to HEAD has no
/// body, whatever `Content-Length` says.
#[tokio::test]
async fn head_response_has_no_body() {
    let rig = rig("").await;
    let (status, raw, closed) = exchange(
        rig.addr,
        b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(closed);
    assert!(raw.ends_with(b"\r\n\r\n"), "{:?}", text(&raw));
    assert_eq!(
        text(&raw).matches("\r\n\r\n").count(),
        1,
        "{:?}",
        text(&raw)
    );
}

fn no_content(_: &[u8]) -> Vec<u8> {
    b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()
}

fn not_modified(_: &[u8]) -> Vec<u8> {
    b"HTTP/1.1 304 Not Modified\r\ncontent-length: 2\r\netag: \"x\"\r\n\r\n".to_vec()
}

/// RFC 9112 §6.3 (item 1): 204 and 304 responses end at their head; weir
/// adds no body or chunked framing to them.
#[tokio::test]
async fn endpoint_204_and_304_have_no_body() {
    for (reply, want) in [(no_content as Reply, 204), (not_modified, 304)] {
        let rig = rig_with("", reply).await;
        let (status, raw, closed) = exchange(
            rig.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status, want, "{}", text(&raw));
        assert!(closed);
        assert!(raw.ends_with(b"\r\n\r\n"), "{:?}", text(&raw));
        assert_eq!(
            text(&raw).matches("\r\n\r\n").count(),
            1,
            "{:?}",
            text(&raw)
        );
    }
}

/// RFC 9112 §9.3: an HTTP/1.0 request without `keep-alive` is the last
/// on its connection.
#[tokio::test]
async fn http10_without_keep_alive_closes() {
    let rig = rig("").await;
    let (status, raw, closed) = exchange(rig.addr, b"GET / HTTP/1.0\r\nHost: a\r\n\r\n").await;
    assert_eq!(status, 200, "{}", text(&raw));
    assert!(closed);
}

/// RFC 9112 §9.3 and Appendix C.2.2: an HTTP/1.0 request with
/// `Connection: keep-alive` keeps the connection open, and the response
/// says so.
#[tokio::test]
async fn http10_keep_alive_stays_open() {
    let rig = rig("").await;
    let req = b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n";
    let mut c = Conn::open(rig.addr).await;
    c.send(req).await;
    let res = c.response(false).await.expect("a response");
    assert_eq!(res.status, 200);
    let connection = res.header("connection").join(",").to_ascii_lowercase();
    assert!(connection.contains("keep-alive"), "{}", text(&res.raw));
    let (closed, _) = c.closed_within(CLOSE_WAIT).await;
    assert!(!closed);
    c.send(req).await;
    assert_eq!(c.response(false).await.map(|r| r.status), Some(200));
}

/// RFC 9112 §9.6: after a request with `Connection: close` the server
/// says `close` in its response and closes.
#[tokio::test]
async fn connection_close_is_honoured() {
    let rig = rig("").await;
    let mut c = Conn::open(rig.addr).await;
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let res = c.response(false).await.expect("a response");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("connection"), ["close"], "{}", text(&res.raw));
    assert!(c.closed_within(CLOSE_WAIT).await.0);
}

/// RFC 6585 §5 (431), RFC 9110 §15.5.15 (414) and §15.5.14 (413): a head,
/// target or declared body over `limits` is refused and never forwarded.
#[tokio::test]
async fn over_limit_heads_uris_and_bodies_are_refused() {
    let rig =
        rig("limits:\n  max_header_bytes: 8192\n  max_uri_bytes: 256\n  max_body_bytes: 1000\n")
            .await;
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(300));
    let big_body = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n";
    assert_refused(
        &rig,
        &[
            ("head", big_head.as_bytes(), &[431]),
            ("uri", long_uri.as_bytes(), &[414]),
            ("body", big_body, &[413]),
        ],
    )
    .await;
}

// ---- RFC 9110 §5.1: field names are case-insensitive, but kept ----

/// RFC 9110 §5.1: field names are case-insensitive, so nothing requires
/// changing them, and some endpoints depend on the spelling: weir
/// forwards names as the client wrote them.
#[tokio::test]
async fn header_name_case_reaches_the_endpoint() {
    let rig = rig("").await;
    let (status, _, _) = exchange(
        rig.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Custom-Header: 1\r\nx-lower: 2\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let head = &rig.be.received()[0].head;
    assert!(head.contains("\r\nX-Custom-Header: 1\r\n"), "{head}");
    assert!(head.contains("\r\nx-lower: 2\r\n"), "{head}");
}

// ---- RFC 9110 §5.3: several field lines are one list ----

/// RFC 9110 §5.3: several `X-Forwarded-For` lines are one list; weir
/// appends the client to the whole list, in order, as one line. A
/// client's `Forwarded` header is passed on untouched.
#[tokio::test]
async fn multi_line_x_forwarded_for_is_combined() {
    let rig = rig("").await;
    let (status, _, _) = exchange(
        rig.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\n\
          X-Forwarded-For: 3.3.3.3\r\nForwarded: for=192.0.2.60\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let seen = &rig.be.received()[0];
    assert_eq!(
        seen.values("x-forwarded-for"),
        ["1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1"],
        "{}",
        seen.head
    );
    assert_eq!(
        seen.values("forwarded"),
        ["for=192.0.2.60"],
        "{}",
        seen.head
    );
}

// ---- RFC 9112 §2.2: what is not HTTP at all ----

/// Deterministic noise (a linear congruential generator).
fn noise(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect()
}

/// RFC 9112 §2.2: bytes that do not parse as a request (a TLS
/// ClientHello on the cleartext port, binary noise) are 400 and close.
#[tokio::test]
async fn tls_and_binary_garbage_are_400_and_close() {
    let rig = rig("").await;
    // A ClientHello record: handshake, TLS 1.0 record version, one cipher.
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x03,
    ];
    hello.extend(noise(32));
    hello.extend([0x00, 0x00, 0x02, 0x13, 0x01, 0x01, 0x00, 0x00, 0x00]);
    let binary = noise(512);
    assert_refused(
        &rig,
        &[
            ("TLS ClientHello", &hello, &[400]),
            ("binary", &binary, &[400]),
        ],
    )
    .await;
}

/// A client that connects and goes away without a byte is not an error
/// worth more than closing: weir keeps serving.
#[tokio::test]
async fn silent_client_does_not_disturb_the_listener() {
    let rig = rig("").await;
    drop(TcpStream::connect(rig.addr).await.unwrap());
    let mut half = TcpStream::connect(rig.addr).await.unwrap();
    half.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(RESPONSE_DEADLINE, half.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "weir kept a closed client's connection open");
    assert!(rest.is_empty(), "{:?}", text(&rest));
    assert_eq!(sentinel(rig.addr).await, 200);
    assert!(rig.be.others().is_empty());
}
