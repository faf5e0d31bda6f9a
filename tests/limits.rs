//! Size and concurrency limits (`limits:`, `pools[].limits`), over real
//! sockets: each over-limit request gets its status (431, 414, 413, 503)
//! without reaching the backend, and the connection limit closes surplus
//! connections at accept.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMITS: &str = "limits:\n  max_header_bytes: 8192\n  max_headers: 20\n  \
                      max_uri_bytes: 256\n  max_body_bytes: 1000\n";

async fn weir_with(extra_top: &str, endpoints: &[SocketAddr], extra_pool: &str) -> weir::Weir {
    let yaml = format!("{extra_top}{}", simple_config(endpoints, extra_pool));
    start(&yaml).await
}

/// Sends raw bytes, then reads until the server closes (at most 3 s).
/// Returns what was read and whether the server closed the connection.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before everything is written.
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf))
        .await
        .is_ok();
    (String::from_utf8_lossy(&buf).into_owned(), closed)
}

fn status_of(response: &str) -> Option<u16> {
    response.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test]
async fn oversized_requests_get_their_status_and_never_reach_the_backend() {
    let backend = echo_backend("b").await;
    let weir = weir_with(LIMITS, &[backend.addr], "").await;
    let addr = weir.listener_addr("main").unwrap();

    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big = format!("X-Big: {}\r\n", "a".repeat(10_000));
    let long_uri = format!("/{}", "u".repeat(300));
    // (name, bytes, status, whether weir must close the connection: it
    // does after a head it could not parse and after a body it did not
    // read; a 414 leaves the connection usable).
    let cases: Vec<(&str, Vec<u8>, u16, bool)> = vec![
        (
            "too_many_headers",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").into_bytes(),
            431,
            true,
        ),
        (
            "header_bytes_over_limit",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{big}\r\n").into_bytes(),
            431,
            true,
        ),
        (
            "uri_over_limit",
            format!("GET {long_uri} HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes(),
            414,
            false,
        ),
        (
            // Only the head is sent: weir must answer without the body.
            "content_length_over_limit",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\n\r\n".to_vec(),
            413,
            true,
        ),
    ];
    for (name, bytes, want, must_close) in cases {
        let (res, closed) = raw(addr, &bytes).await;
        assert_eq!(status_of(&res), Some(want), "{name}: {res}");
        if must_close {
            assert!(closed, "{name}: connection left open");
        }
    }
    assert_eq!(backend.count(), 0, "the backend saw an over-limit request");

    // Within the limits, the same shapes pass.
    let ok = format!(
        "POST /{} HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        "u".repeat(100)
    );
    let (res, _) = raw(addr, ok.as_bytes()).await;
    assert_eq!(status_of(&res), Some(200), "{res}");
    assert_eq!(backend.count(), 1);
    weir.shutdown().await;
}

#[tokio::test]
async fn chunked_body_over_limit_is_413() {
    let backend = echo_backend("b").await;
    let weir = weir_with(LIMITS, &[backend.addr], "").await;
    let addr = weir.listener_addr("main").unwrap();

    let chunk = format!("1f4\r\n{}\r\n", "c".repeat(500));
    let head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body = format!("{head}{chunk}{chunk}{chunk}0\r\n\r\n");
    let (res, closed) = raw(addr, body.as_bytes()).await;
    assert_eq!(status_of(&res), Some(413), "{res}");
    assert!(closed);
    // The backend may have seen the start of the body, never all of it.
    assert!(backend.requests().iter().all(|s| s.body_len < 1500));

    // A chunked body under the limit goes through.
    let body = format!("{head}{chunk}0\r\n\r\n")
        .replace("chunked\r\n\r\n", "chunked\r\nConnection: close\r\n\r\n");
    let (res, _) = raw(addr, body.as_bytes()).await;
    assert_eq!(status_of(&res), Some(200), "{res}");
    weir.shutdown().await;
}

#[tokio::test]
async fn h2_limits_apply_too() {
    let backend = echo_backend("b").await;
    let weir = weir_with(LIMITS, &[backend.addr], "").await;
    let addr = weir.listener_addr("main").unwrap();
    let client = h2c_client();
    let long = format!("/{}", "u".repeat(300));
    let (parts, _) = send(&client, get(addr, "a", &long)).await;
    assert_eq!(parts.status, 414);
    let req = http::Request::post(format!("http://{addr}/"))
        .body(http_body_util::Full::new(bytes::Bytes::from(vec![
            b'x';
            2000
        ])))
        .unwrap();
    let (parts, _) = send(&client, req).await;
    assert_eq!(parts.status, 413);
    assert_eq!(backend.count(), 0);
    weir.shutdown().await;
}

/// Opens a connection and completes one keep-alive request on it.
async fn served_connection(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "not served"
    );
    s
}

/// True if the server closes the connection at once without a response.
async fn closed_at_once(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn connection_limit_closes_surplus_connections_at_accept() {
    let backend = echo_backend("b").await;
    let weir = weir_with("limits:\n  max_connections: 2\n", &[backend.addr], "").await;
    let addr = weir.listener_addr("main").unwrap();

    let first = served_connection(addr).await;
    let _second = served_connection(addr).await;
    assert!(
        closed_at_once(addr).await,
        "third connection was not closed"
    );
    let scrape = scrape(&weir).await;
    let rejected = sample(
        &scrape,
        "weir_downstream_connections_rejected_total",
        &[("listener", "main")],
    );
    assert_eq!(rejected, Some(1.0));

    // One closes: a new connection is served (the slot is freed when the
    // connection's task ends, so poll for it).
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf)).await;
        if String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    weir.shutdown().await;
}

async fn slow_backend(delay: Duration) -> TestBackend {
    backend_with("slow", move |_, _| async move {
        tokio::time::sleep(delay).await;
        http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(b"ok")))
    })
    .await
}

/// Sends `n` concurrent GETs on separate connections; returns each status
/// and its latency.
async fn concurrent(addr: SocketAddr, n: usize) -> Vec<(u16, Duration)> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(async move {
                // Stagger slightly so the order of arrival is known.
                tokio::time::sleep(Duration::from_millis(30 * i as u64)).await;
                let t = Instant::now();
                let (parts, _) = send(&client(), get(addr, "a", "/")).await;
                (parts.status.as_u16(), t.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn pool_request_limit_queues_then_serves() {
    let backend = slow_backend(Duration::from_millis(400)).await;
    let pool = "    limits:\n      max_requests: 2\n      queue_timeout: 3s\n";
    let weir = weir_with("", &[backend.addr], pool).await;
    let addr = weir.listener_addr("main").unwrap();
    let results = concurrent(addr, 3).await;
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    // The third waited for a slot: about one backend delay more.
    assert!(
        results[2].1 >= Duration::from_millis(600),
        "third request did not queue: {results:?}"
    );
    weir.shutdown().await;
}

#[tokio::test]
async fn pool_request_limit_rejects_after_queue_timeout() {
    let backend = slow_backend(Duration::from_millis(800)).await;
    let pool = "    limits:\n      max_requests: 2\n      queue_timeout: 200ms\n";
    let weir = weir_with("", &[backend.addr], pool).await;
    let addr = weir.listener_addr("main").unwrap();
    let results = concurrent(addr, 3).await;
    assert_eq!(results[0].0, 200);
    assert_eq!(results[1].0, 200);
    assert_eq!(results[2].0, 503, "{results:?}");
    assert!(results[2].1 < Duration::from_millis(700), "{results:?}");
    let scrape = scrape(&weir).await;
    assert_eq!(
        sample(&scrape, "weir_pool_limit_rejected_total", &[("pool", "p")]),
        Some(1.0)
    );
    assert_eq!(backend.count(), 2);
    weir.shutdown().await;
}

#[tokio::test]
async fn endpoint_at_its_limit_is_skipped() {
    let a = slow_backend(Duration::from_millis(500)).await;
    let b = slow_backend(Duration::from_millis(500)).await;
    // Round robin would send two of three requests to one endpoint; with
    // one slot per endpoint the third waits, and no endpoint ever has two.
    let pool = "    limits:\n      max_requests_per_endpoint: 1\n      queue_timeout: 150ms\n";
    let weir = weir_with("", &[a.addr, b.addr], pool).await;
    let addr = weir.listener_addr("main").unwrap();
    let results = concurrent(addr, 3).await;
    assert_eq!(results[0].0, 200);
    assert_eq!(
        results[1].0, 200,
        "second request not moved to the free endpoint"
    );
    assert_eq!(results[2].0, 503, "{results:?}");
    assert_eq!(a.count(), 1);
    assert_eq!(b.count(), 1);
    weir.shutdown().await;
}

#[test]
fn limits_are_validated() {
    let base = simple_config(&["127.0.0.1:1".parse().unwrap()], "");
    for (top, key) in [
        (
            "limits:\n  max_header_bytes: 100\n",
            "limits.max_header_bytes",
        ),
        ("limits:\n  max_body_bytes: 0\n", "limits.max_body_bytes"),
        ("limits:\n  max_connections: -1\n", "limits.max_connections"),
        (
            "limits:\n  h2_max_concurrent_streams: 0\n",
            "limits.h2_max_concurrent_streams",
        ),
        ("limits:\n  max_bodyy_bytes: 1\n", "max_bodyy_bytes"),
        ("timeouts:\n  body_read: 0s\n", "timeouts.body_read"),
    ] {
        let err = weir::Config::from_yaml(&format!("{top}{base}"), "t.yaml").unwrap_err();
        assert!(err.to_string().contains(key), "{key}: {err}");
    }
    let pool = "    limits:\n      max_requests: 0\n";
    let yaml = simple_config(&["127.0.0.1:1".parse().unwrap()], pool);
    let err = weir::Config::from_yaml(&yaml, "t.yaml").unwrap_err();
    assert!(
        err.to_string().contains("pools[0].limits.max_requests"),
        "{err}"
    );

    let ok = format!("{LIMITS}{base}");
    let config = weir::Config::from_yaml(&ok, "t.yaml").unwrap();
    assert_eq!(config.server.limits.max_body_bytes, Some(1000));
    assert_eq!(config.server.limits.h2_max_concurrent_streams, 100);
    assert_eq!(config.server.body_read_timeout, Duration::from_secs(30));
    assert_eq!(config.pools[0].limits.queue_timeout, Duration::from_secs(1));
}
