//! How weir reads its endpoints' HTTP/1.1 responses (RFC 9112 §6.3 and
//! weir's stricter rules, tabled in `src/http1/response.rs`), checked with
//! raw TCP endpoints that send exact bytes.
//!
//! A library server would never send a malformed response, so the endpoint
//! here is hand-written: [`Endpoint`] answers each request head with the
//! bytes a closure picks for its path, and numbers the connections it
//! accepts, recording which one each request came on. Every test sends one `/bad` request whose answer breaks a rule,
//! then four well-formed requests that must each get their own answer:
//! a response framed one way by weir and another way by the endpoint would
//! desynchronise the pooled connection and hand one request's bytes to the
//! next, which is what the follow-up requests would show. Where the bad
//! response leaves the connection unfit, the connection count shows weir
//! did not reuse it.
//!
//! The pools have one endpoint and `retries: {attempts: 1}`: a retry goes to
//! another endpoint, so none could happen anyway, and with a single attempt
//! the outcome seen is the first attempt's by construction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long one request may take before the test calls it hung.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long something done as a response ends (a metric counted, the
/// endpoint's own close) may take to show.
const SETTLE_DEADLINE: Duration = Duration::from_secs(5);

// ---- the raw endpoint ----

/// Picks the bytes answering a request: `(path, n)`, `n` counting the
/// requests on that connection from 1.
type Reply = Arc<dyn Fn(&str, usize) -> Vec<u8> + Send + Sync>;

/// Says whether the endpoint closes the connection after answering `path`.
type Closes = fn(&str) -> bool;

/// One request as the endpoint read it.
#[derive(Clone, Debug)]
struct Seen {
    /// Which connection it came on: 1 for the first accepted.
    conn: usize,
    method: String,
    path: String,
    body: Vec<u8>,
}

/// What the endpoint saw, shared by its connections.
#[derive(Default)]
struct Log {
    seen: Mutex<Vec<Seen>>,
    /// Connections accepted.
    conns: AtomicUsize,
    /// Connections the endpoint closed itself, as `closes` asked.
    closed: AtomicUsize,
}

/// A raw HTTP/1.1 endpoint on `127.0.0.1:0`.
struct Endpoint {
    addr: SocketAddr,
    log: Arc<Log>,
}

impl Endpoint {
    async fn start(reply: Reply, closes: Closes) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Log::default());
        let shared = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let id = shared.conns.fetch_add(1, Ordering::SeqCst) + 1;
                let conn = serve(stream, id, Arc::clone(&reply), closes, Arc::clone(&shared));
                tokio::spawn(conn);
            }
        });
        Self { addr, log }
    }

    /// Connections accepted so far.
    fn conns(&self) -> usize {
        self.log.conns.load(Ordering::SeqCst)
    }

    /// Connections the endpoint has closed itself.
    fn closed(&self) -> usize {
        self.log.closed.load(Ordering::SeqCst)
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.seen.lock().unwrap().clone()
    }

    /// The paths requested, in order.
    fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.path).collect()
    }

    /// The connection `path` came on (its first request so named).
    fn conn_of(&self, path: &str) -> usize {
        let seen = self.seen();
        let found = seen.iter().find(|s| s.path == path);
        found.unwrap_or_else(|| panic!("{path} never arrived")).conn
    }

    /// Asserts that no `/okN` request came on `/bad`'s connection.
    fn bad_conn_not_reused(&self) {
        let bad = self.conn_of("/bad");
        for i in 1..=4 {
            let ok = self.conn_of(&format!("/ok{i}"));
            assert_ne!(ok, bad, "/ok{i} came on /bad's connection");
        }
    }
}

/// Serves one connection: a head (and a `Content-Length` body, for the one
/// POST), then the chosen answer, until the peer closes or `closes` says so.
async fn serve(mut stream: TcpStream, id: usize, reply: Reply, closes: Closes, log: Arc<Log>) {
    let mut buf = Vec::new();
    let mut n = 0;
    while let Some(head) = read_head(&mut stream, &mut buf).await {
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut words = text.split(' ');
        let method = words.next().unwrap_or_default().to_owned();
        let path = words.next().unwrap_or_default().to_owned();
        let Some(body) = read_exact(&mut stream, &mut buf, content_length(&text)).await else {
            return;
        };
        log.seen.lock().unwrap().push(Seen {
            conn: id,
            method,
            path: path.clone(),
            body,
        });
        n += 1;
        // A failed write is fine: weir may refuse a long head mid-way.
        let _ = stream.write_all(&reply(&path, n)).await;
        if closes(&path) {
            drop(stream);
            log.closed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

/// The next request head, through its CRLFCRLF; `None` at the close.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(buf.drain(..i + 4).collect());
        }
        if !matches!(stream.read_buf(buf).await, Ok(n) if n > 0) {
            return None;
        }
    }
}

async fn read_exact(stream: &mut TcpStream, buf: &mut Vec<u8>, len: usize) -> Option<Vec<u8>> {
    while buf.len() < len {
        if !matches!(stream.read_buf(buf).await, Ok(n) if n > 0) {
            return None;
        }
    }
    Some(buf.drain(..len).collect())
}

fn content_length(head: &str) -> usize {
    head.split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A correct answer naming the path: `/ok1` gets the body `ok1`.
fn ok(path: &str) -> Vec<u8> {
    let name = path.trim_start_matches('/');
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
        name.len()
    )
    .into_bytes()
}

/// `bad` for `/bad`, [`ok`] for every other path.
fn bad_then_ok(bad: Vec<u8>) -> Reply {
    Arc::new(move |path, _| {
        if path == "/bad" {
            bad.clone()
        } else {
            ok(path)
        }
    })
}

fn never(_: &str) -> bool {
    false
}

// ---- weir in front of it ----

struct Rig {
    weir: weir::Weir,
    addr: SocketAddr,
    ep: Endpoint,
    client: HttpClient,
}

/// What the client got: status and the whole body, or why not.
type Outcome = Result<(StatusCode, Bytes), String>;

/// weir with one pool over one [`Endpoint`] answering with `reply`.
async fn rig(reply: Reply, closes: Closes) -> Rig {
    let ep = Endpoint::start(reply, closes).await;
    let weir = start(&simple_config(&[ep.addr], "    retries: {attempts: 1}\n")).await;
    let addr = weir.listener_addr("main").unwrap();
    Rig {
        weir,
        addr,
        ep,
        client: client(),
    }
}

impl Rig {
    /// Sends `req` and reads its whole response, within [`REQUEST_DEADLINE`].
    async fn call(&self, req: Request<Full<Bytes>>) -> Outcome {
        let exchange = async {
            let res = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = res.status();
            let body = res.into_body().collect().await;
            let body = body.map_err(|e| format!("body after {status}: {e}"))?;
            Ok((status, body.to_bytes()))
        };
        tokio::time::timeout(REQUEST_DEADLINE, exchange)
            .await
            .unwrap_or_else(|_| Err("no response in time".into()))
    }

    async fn get(&self, path: &str) -> Outcome {
        self.call(get(self.addr, "x", path)).await
    }

    /// `/ok1`..`/ok4`, one after another, each getting its own answer.
    async fn four_ok(&self) {
        for i in 1..=4 {
            let want = format!("ok{i}");
            let got = self.get(&format!("/{want}")).await;
            assert_eq!(got, Ok((StatusCode::OK, Bytes::from(want))));
        }
    }

    /// `weir_upstream_protocol_errors_total{kind}` for the pool, polled
    /// until it reaches `want` (it is counted as the response ends).
    async fn protocol_errors(&self, kind: &str, want: f64) -> f64 {
        let end = tokio::time::Instant::now() + SETTLE_DEADLINE;
        loop {
            let s = scrape(&self.weir).await;
            let labels = [("pool", "p"), ("kind", kind)];
            let got = sample(&s, "weir_upstream_protocol_errors_total", &labels).unwrap_or(0.0);
            if got >= want || tokio::time::Instant::now() >= end {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The shape shared by every refused response: `/bad` gets a 502 (counted
/// as a head error), and the four requests after it get their own answers,
/// none on `/bad`'s connection.
async fn refused(bad: impl Into<Vec<u8>>) {
    let rig = rig(bad_then_ok(bad.into()), never).await;
    let got = rig.get("/bad").await;
    assert_eq!(got.map(|(s, _)| s), Ok(StatusCode::BAD_GATEWAY));
    assert_eq!(rig.ep.conns(), 1);
    rig.four_ok().await;
    rig.ep.bad_conn_not_reused();
    assert_eq!(rig.ep.paths(), ["/bad", "/ok1", "/ok2", "/ok3", "/ok4"]);
    assert_eq!(rig.protocol_errors("head", 1.0).await, 1.0);
}

// ---- refused heads: 502 ----

/// `Content-Length` with `Transfer-Encoding` is refused (RFC 9112 §6.3 item 3:
/// the connection must be closed), even with a complete chunked body; the
/// bytes after it would otherwise be read as the next response.
#[tokio::test]
async fn content_length_with_chunked_is_502() {
    refused(
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHELLO"[..],
    )
    .await;
}

/// Two differing `Content-Length` lines are an unrecoverable framing error
/// (RFC 9112 §6.3 item 5).
#[tokio::test]
async fn differing_content_lengths_are_502() {
    refused(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nhello"[..]).await;
}

/// A `Content-Length` list, even of equal values, is refused: weir is
/// stricter than RFC 9112 §6.3 item 5 allows, and accepts `1*DIGIT` only.
#[tokio::test]
async fn content_length_list_is_502() {
    refused(&b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello"[..]).await;
}

/// A signed `Content-Length` is not `1*DIGIT` (RFC 9110 §8.6).
#[tokio::test]
async fn signed_content_length_is_502() {
    refused(&b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello"[..]).await;
}

/// The status code is exactly three digits (RFC 9112 §4).
#[tokio::test]
async fn two_digit_status_is_502() {
    refused(&b"HTTP/1.1 20 OK\r\ncontent-length: 0\r\n\r\n"[..]).await;
}

/// The status code is followed by SP or the end of the line (RFC 9112 §4).
#[tokio::test]
async fn status_without_space_before_reason_is_502() {
    refused(&b"HTTP/1.1 200OK\r\ncontent-length: 0\r\n\r\n"[..]).await;
}

/// A status line must start with `HTTP-version` (RFC 9112 §4); SHOUTcast's
/// `ICY` is not HTTP.
#[tokio::test]
async fn icy_status_line_is_502() {
    refused(&b"ICY 200 OK\r\ncontent-length: 0\r\n\r\n"[..]).await;
}

/// Only HTTP/1.0 and HTTP/1.1 responses are read over HTTP/1 (RFC 9112 §2.3).
#[tokio::test]
async fn http2_version_in_status_line_is_502() {
    refused(&b"HTTP/2.0 200 OK\r\ncontent-length: 0\r\n\r\n"[..]).await;
}

/// Bytes that are no status line at all (RFC 9112 §4).
#[tokio::test]
async fn garbage_response_is_502() {
    refused(&b"\x16\x03\x01\x00\xa5\xff\xfegarbage\r\n\r\n"[..]).await;
}

/// obs-fold is refused (RFC 9112 §5.2 allows a proxy to reject it with 502).
#[tokio::test]
async fn obs_fold_is_502() {
    refused(&b"HTTP/1.1 200 OK\r\nx-a: one\r\n two\r\ncontent-length: 2\r\n\r\nok"[..]).await;
}

/// NUL in a field value is refused (RFC 9110 §5.5).
#[tokio::test]
async fn nul_in_field_value_is_502() {
    refused(&b"HTTP/1.1 200 OK\r\nx-a: a\x00b\r\ncontent-length: 2\r\n\r\nok"[..]).await;
}

/// Bare LF line endings are refused: weir is stricter than the RFC 9112
/// §2.2 leniency, because a bare LF is read two ways.
#[tokio::test]
async fn bare_lf_line_endings_are_502() {
    refused(&b"HTTP/1.1 200 OK\ncontent-length: 2\n\nok"[..]).await;
}

/// Whitespace between a field name and its colon is refused: RFC 9112 §5.1
/// has a proxy remove it from a response, weir refuses it instead, since
/// such a name is read two ways.
#[tokio::test]
async fn whitespace_before_colon_is_502() {
    refused(&b"HTTP/1.1 200 OK\r\ncontent-length : 2\r\n\r\nok"[..]).await;
}

/// A head over weir's size limit (64 KiB) is refused, here one 100 KiB value.
#[tokio::test]
async fn head_over_limit_is_502() {
    let mut bad = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    bad.extend(std::iter::repeat_n(b'a', 100 * 1024));
    bad.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
    refused(bad).await;
}

/// A coding other than exactly `chunked` is refused: weir does not decode
/// it, and passing it on re-chunked would corrupt the body (RFC 9112 §6.1).
#[tokio::test]
async fn gzip_chunked_is_502() {
    refused(&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"[..]).await;
}

// ---- responses weir passes on ----

/// Bytes after a complete response are not passed on (RFC 9112 §6.3): the
/// client gets the complete response, the connection is closed and not
/// reused, and the bytes are counted as `stray_bytes`.
#[tokio::test]
async fn stray_bytes_after_response_close_the_connection() {
    let rig = rig(
        bad_then_ok(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokGARBAGE".to_vec()),
        never,
    )
    .await;
    assert_eq!(
        rig.get("/bad").await,
        Ok((StatusCode::OK, Bytes::from("ok")))
    );
    assert_eq!(rig.protocol_errors("stray_bytes", 1.0).await, 1.0);
    assert_eq!(
        rig.get("/ok1").await,
        Ok((StatusCode::OK, Bytes::from("ok1")))
    );
    assert_eq!(
        rig.ep.conns(),
        2,
        "the connection with stray bytes was reused"
    );
    for i in 2..=4 {
        let want = format!("ok{i}");
        let got = rig.get(&format!("/{want}")).await;
        assert_eq!(got, Ok((StatusCode::OK, Bytes::from(want))));
    }
    rig.ep.bad_conn_not_reused();
    assert_eq!(rig.protocol_errors("stray_bytes", 1.0).await, 1.0);
    assert_eq!(rig.protocol_errors("head", 0.0).await, 0.0);
}

/// An endpoint may close an idle kept-alive connection at any time (RFC
/// 9112 §9.3); weir sees the close before reuse, or sends the request once
/// more on a fresh connection when the reused one closes unanswered
/// (RFC 9112 §9.3.1: it never reached the endpoint), whatever the method.
#[tokio::test]
async fn endpoint_closing_idle_connection_is_not_an_error() {
    let reply: Reply = Arc::new(|path, _| match path {
        "/post" => b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nposted".to_vec(),
        _ => ok(path),
    });
    let rig = rig(reply, |path| path == "/first").await;
    assert_eq!(
        rig.get("/first").await,
        Ok((StatusCode::OK, Bytes::from("first")))
    );
    // The next request comes once the endpoint has closed; whether weir
    // has read the close by then or not, either mechanism must cover it.
    assert!(eventually(SETTLE_DEADLINE, || rig.ep.closed() == 1).await);
    let post = Request::post(format!("http://{}/post", rig.addr))
        .header("host", "x")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    assert_eq!(
        rig.call(post).await,
        Ok((StatusCode::OK, Bytes::from("posted")))
    );
    assert_eq!(rig.ep.conns(), 2);
    let posts: Vec<Seen> = rig
        .ep
        .seen()
        .into_iter()
        .filter(|s| s.path == "/post")
        .collect();
    assert_eq!(posts.len(), 1, "the POST reached the endpoint twice");
    assert_eq!(
        (posts[0].method.as_str(), &posts[0].body[..]),
        ("POST", &b"hello"[..])
    );
    // 0 when the check before reuse saw the close, 1 when the request met
    // it and went again; never more, since the fresh connection answered.
    let s = scrape(&rig.weir).await;
    let stale = sample(&s, "weir_upstream_stale_retries_total", &[("pool", "p")]).unwrap_or(0.0);
    assert!(stale == 0.0 || stale == 1.0, "stale retries: {stale}");
    rig.four_ok().await;
}

/// A body cut short by the close (RFC 9112 §8: an incomplete message) is
/// cut short for the client too, never a clean short success; the next
/// requests get their own answers.
#[tokio::test]
async fn truncated_body_is_not_a_clean_response() {
    let rig = rig(
        bad_then_ok(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec()),
        |path| path == "/bad",
    )
    .await;
    let got = rig.get("/bad").await;
    assert!(
        !matches!(got, Ok((StatusCode::OK, _))),
        "a cut-short body ended cleanly: {got:?}"
    );
    rig.four_ok().await;
    rig.ep.bad_conn_not_reused();
}

/// A body cut short is counted as `weir_upstream_protocol_errors_total`
/// `{kind="body"}`, as the metric's help says (malformed or cut-short body).
#[tokio::test]
async fn truncated_body_is_counted() {
    let rig = rig(
        bad_then_ok(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec()),
        |path| path == "/bad",
    )
    .await;
    assert!(rig.get("/bad").await.is_err());
    assert_eq!(rig.protocol_errors("body", 1.0).await, 1.0);
}

/// An interim `100 Continue` is skipped; the client gets the final
/// response (RFC 9110 §15.2), and nothing of the interim one.
#[tokio::test]
async fn continue_then_response_gives_the_response() {
    let rig = rig_passes(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal",
        "real",
    )
    .await;
    assert_eq!(rig.ep.conns(), 1);
}

/// A chunked body with trailers arrives intact over HTTP/1.1 (RFC 9112
/// §7.1.2), and the trailers do not spill into the next response.
#[tokio::test]
async fn chunked_with_trailers_is_intact() {
    rig_passes(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-t\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n",
        "hello world",
    )
    .await;
}

/// A chunked body read to its last chunk leaves the connection fit for the
/// next request: the four after it travel on the same one.
#[tokio::test]
async fn chunked_response_keeps_the_connection() {
    let rig = rig_passes(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        "hello world",
    )
    .await;
    assert_eq!(rig.ep.conns(), 1);
}

/// The same with trailers: a body that ended with its trailer section was
/// read to its end, so its connection is as fit for reuse as without.
#[tokio::test]
async fn chunked_with_trailers_keeps_the_connection() {
    let rig = rig_passes(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-t\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\nx-t: 1\r\n\r\n",
        "hello world",
    )
    .await;
    assert_eq!(
        rig.ep.conns(),
        1,
        "the connection was closed after trailers"
    );
}

/// `/bad` passes with status 200 and body `want`, and the four requests
/// after it get their own answers.
async fn rig_passes(answer: &[u8], want: &'static str) -> Rig {
    let rig = rig(bad_then_ok(answer.to_vec()), never).await;
    assert_eq!(
        rig.get("/bad").await,
        Ok((StatusCode::OK, Bytes::from(want)))
    );
    rig.four_ok().await;
    assert_eq!(rig.protocol_errors("head", 0.0).await, 0.0);
    assert_eq!(rig.protocol_errors("body", 0.0).await, 0.0);
    rig
}

/// A response to HEAD has no body whatever its `Content-Length` says (RFC
/// 9112 §6.3 item 1); reading one would take the next response's bytes.
#[tokio::test]
async fn head_response_has_no_body() {
    let rig = rig(
        bad_then_ok(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n".to_vec()),
        never,
    )
    .await;
    let head = Request::head(format!("http://{}/bad", rig.addr))
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(rig.call(head).await, Ok((StatusCode::OK, Bytes::new())));
    rig.four_ok().await;
    assert_eq!(rig.ep.seen()[0].method, "HEAD");
    assert_eq!(
        rig.ep.conns(),
        1,
        "the HEAD response's connection was not reused"
    );
}

/// 204 and 304 have no body whatever their `Content-Length` says (RFC 9112
/// §6.3 item 1).
#[tokio::test]
async fn no_content_has_no_body() {
    no_body_status(
        b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
        StatusCode::NO_CONTENT,
    )
    .await;
}

/// See [`no_content_has_no_body`]: the same for 304.
#[tokio::test]
async fn not_modified_has_no_body() {
    no_body_status(
        b"HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
        StatusCode::NOT_MODIFIED,
    )
    .await;
}

/// `/bad` gets `status` with no body, and the four requests after it get
/// their own answers on the same endpoint connection: weir read the
/// response as ending where the endpoint ended it.
async fn no_body_status(answer: &[u8], status: StatusCode) {
    let rig = rig(bad_then_ok(answer.to_vec()), never).await;
    assert_eq!(rig.get("/bad").await, Ok((status, Bytes::new())));
    rig.four_ok().await;
    assert_eq!(rig.ep.conns(), 1);
}
