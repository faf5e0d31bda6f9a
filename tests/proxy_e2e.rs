//! End-to-end forwarding through weir with real sockets: bodies, headers,
//! routing, error statuses and timeouts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn pattern(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test]
async fn bodies_of_every_size_round_trip_intact_over_http1_and_h2c() {
    let be = echo_backend("a").await;
    let weir = start(&simple_config(&[be.addr], "")).await;
    let addr = weir.listener_addr("main").unwrap();
    for client in [client(), h2c_client()] {
        for len in [0usize, 1, 64 * 1024, 10 * 1024 * 1024] {
            let body = pattern(len);
            let req = Request::post(format!("http://{addr}/echo"))
                .header("host", "test")
                .body(Full::new(body.clone()))
                .unwrap();
            let (parts, got) = send(&client, req).await;
            assert_eq!(parts.status, StatusCode::OK, "len {len}");
            assert_eq!(got.len(), len);
            assert!(got == body, "body of {len} bytes corrupted");
        }
    }
    let seen = be.requests();
    assert_eq!(seen.len(), 8);
    assert!(seen.iter().all(|s| s.version == http::Version::HTTP_11));
}

#[tokio::test]
async fn chunked_request_body_is_streamed_through() {
    let be = echo_backend("a").await;
    let weir = start(&simple_config(&[be.addr], "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let chunks: Vec<Result<Frame<Bytes>, std::io::Error>> = (0..50)
        .map(|i| Ok(Frame::data(Bytes::from(format!("chunk-{i};")))))
        .collect();
    let expected: String = (0..50).map(|i| format!("chunk-{i};")).collect();
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<StreamBody<_>>();
    let req = Request::post(format!("http://{addr}/"))
        .header("host", "test")
        .body(body)
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let got = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(got, expected.as_bytes());
    let seen = &be.requests()[0];
    // Unknown length upstream too: weir did not buffer to compute one.
    assert_eq!(seen.headers["transfer-encoding"], "chunked");
    assert!(!seen.headers.contains_key("content-length"));
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_and_forwarding_headers_set() {
    let be = echo_backend("a").await;
    let weir = start(&simple_config(&[be.addr], "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/h")
        .header("host", "Example.COM:8080")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("te", "gzip")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-kept", "yes")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let generated_id = res.headers()["x-request-id"].clone();
    assert_eq!(generated_id.len(), 32);
    let seen = &be.requests()[0];
    for h in [
        "x-drop-me",
        "keep-alive",
        "proxy-connection",
        "te",
        "connection",
    ] {
        assert!(!seen.headers.contains_key(h), "{h} reached the backend");
    }
    assert_eq!(seen.headers["x-kept"], "yes");
    assert_eq!(
        seen.headers["host"], "Example.COM:8080",
        "Host preserved by default"
    );
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "Example.COM:8080");
    assert_eq!(seen.headers["x-request-id"], generated_id);
    assert_eq!(seen.uri, "/h", "origin-form upstream");

    // A client-supplied request id is kept end to end.
    let req = Request::get("/h")
        .header("host", "a")
        .header("x-request-id", "client-id-42")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "client-id-42");
    assert_eq!(be.requests()[1].headers["x-request-id"], "client-id-42");
}

#[tokio::test]
async fn host_header_rewrite_and_via_are_configurable() {
    let be = echo_backend("a").await;
    let yaml = simple_config(&[be.addr], "    host_header: endpoint\n")
        .replace("access_log:", "headers:\n  via: edge\naccess_log:");
    let weir = start(&yaml).await;
    let addr = weir.listener_addr("main").unwrap();
    let (parts, _) = send(&client(), get(addr, "public.example", "/")).await;
    assert_eq!(parts.status, StatusCode::OK);
    let seen = &be.requests()[0];
    assert_eq!(seen.headers["host"], be.addr.to_string());
    assert_eq!(seen.headers["via"], "1.1 edge");
    assert_eq!(seen.headers["x-forwarded-host"], "public.example");
}

#[tokio::test]
async fn routes_by_host_and_longest_path_prefix_and_404s_unknown_hosts() {
    let api = echo_backend("api").await;
    let api_v2 = echo_backend("api-v2").await;
    let wild = echo_backend("wild").await;
    let yaml = format!(
        r#"
listeners: [{{name: main, bind: "127.0.0.1:0"}}]
admin: {{bind: "127.0.0.1:0"}}
routes:
  - {{hosts: [api.example.com], path_prefix: /, pool: api}}
  - {{hosts: [api.example.com], path_prefix: /v2/, pool: api2}}
  - {{hosts: ["*.example.org"], pool: wild}}
pools:
  - {{name: api, endpoints: [{{address: "{}"}}]}}
  - {{name: api2, endpoints: [{{address: "{}"}}]}}
  - {{name: wild, endpoints: [{{address: "{}"}}]}}
"#,
        api.addr, api_v2.addr, wild.addr
    );
    let weir = start(&yaml).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    let backend_of = |p: &http::response::Parts| {
        p.headers
            .get("x-backend")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (p, _) = send(&c, get(addr, "api.example.com", "/v2/users")).await;
    assert_eq!(backend_of(&p).as_deref(), Some("api-v2"));
    let (p, _) = send(&c, get(addr, "API.example.com:80", "/v1/users")).await;
    assert_eq!(backend_of(&p).as_deref(), Some("api"));
    let (p, _) = send(&c, get(addr, "www.example.org", "/x")).await;
    assert_eq!(backend_of(&p).as_deref(), Some("wild"));
    let (p, body) = send(&c, get(addr, "unknown.test", "/")).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&body).contains("request-id"));
    assert!(backend_of(&p).is_none());
}

/// Two pools by host, `a.test` and `b.test`, each one echo backend.
async fn two_hosts() -> (TestBackend, TestBackend, weir::Weir) {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let yaml = format!(
        r#"
listeners: [{{name: main, bind: "127.0.0.1:0"}}]
admin: {{bind: "127.0.0.1:0"}}
routes:
  - {{hosts: [a.test], pool: a}}
  - {{hosts: [b.test], pool: b}}
pools:
  - {{name: a, endpoints: [{{address: "{}"}}]}}
  - {{name: b, endpoints: [{{address: "{}"}}]}}
"#,
        a.addr, b.addr
    );
    let weir = start(&yaml).await;
    (a, b, weir)
}

#[tokio::test]
async fn an_absolute_form_target_wins_over_a_disagreeing_host_header() {
    // RFC 9112 §3.2.2: the target's host is the one routed by, and the
    // one the endpoint sees; the client's `Host` is replaced, so the
    // endpoint cannot be told a different host than the route matched.
    let (a, b, weir) = two_hosts().await;
    let addr = weir.listener_addr("main").unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET http://A.test:8080/x?q=1 HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(b.count(), 0, "routed by the Host header");
    let seen = &a.requests()[0];
    assert_eq!(seen.headers["host"], "A.test:8080");
    assert_eq!(seen.headers.get_all("host").iter().count(), 1);
    assert_eq!(seen.headers["x-forwarded-host"], "A.test:8080");
    assert_eq!(seen.uri, "/x?q=1", "origin-form upstream");
}

#[tokio::test]
async fn invalid_host_values_are_400_and_never_reach_a_backend() {
    let (a, b, weir) = two_hosts().await;
    let addr = weir.listener_addr("main").unwrap();
    for host in [
        "user@a.test",
        "a.test:80x",
        "a.test/evil",
        "[::1",
        "a.test b.test",
    ] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        // A 400 closes the connection.
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf);
        assert!(text.starts_with("HTTP/1.1 400"), "{host}: {text}");
    }
    assert_eq!(a.count() + b.count(), 0);
}

#[tokio::test]
async fn missing_host_on_http11_is_400_and_never_reaches_a_backend() {
    let be = echo_backend("a").await;
    let weir = start(&simple_config(&[be.addr], "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert_eq!(be.count(), 0);
}

#[tokio::test]
async fn dead_endpoint_is_a_fast_502() {
    let dead = dead_addr().await;
    let weir = start(&simple_config(&[dead], "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let t = tokio::time::Instant::now();
    let (p, body) = send(&client(), get(addr, "x", "/")).await;
    assert_eq!(p.status, StatusCode::BAD_GATEWAY);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("upstream connect error"), "{body}");
    assert!(
        !body.contains(&dead.to_string()),
        "internal address leaked: {body}"
    );
}

#[tokio::test]
async fn slow_endpoint_is_a_504_after_the_response_header_timeout() {
    let slow = backend_with("slow", |_, _| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        http::Response::new(Full::new(Bytes::new()))
    })
    .await;
    let weir = start(&simple_config(
        &[slow.addr],
        "    timeouts:\n      response_header: 300ms\n",
    ))
    .await;
    let addr = weir.listener_addr("main").unwrap();
    let t = tokio::time::Instant::now();
    let (p, _) = send(&client(), get(addr, "x", "/")).await;
    let took = t.elapsed();
    assert_eq!(p.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn connect_timeout_is_a_504() {
    // A listener whose accept backlog is full never completes new
    // handshakes... which is OS-dependent; a non-routable address is not
    // allowed here. Instead: a backlog of 1 filled by parked connections.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let full = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the backlog (never accepted).
    let mut parked = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(full),
        )
        .await
        {
            parked.push(s);
        } else {
            break;
        }
    }
    let weir = start(&simple_config(
        &[full],
        "    timeouts:\n      connect: 200ms\n",
    ))
    .await;
    let addr = weir.listener_addr("main").unwrap();
    let (p, body) = send(&client(), get(addr, "x", "/")).await;
    assert_eq!(
        p.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        String::from_utf8_lossy(&body)
    );
    drop(socket);
}

#[tokio::test]
async fn upstream_reset_mid_body_is_an_error_for_the_client_not_a_short_success() {
    // A raw backend that promises 100 000 bytes, sends 10, then resets.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let be = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n0123456789")
                    .await;
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                drop(s);
            });
        }
    });
    let weir = start(&simple_config(&[be], "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let res = client().request(get(addr, "x", "/")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await;
    assert!(body.is_err(), "truncated body must surface as an error");
    // HTTP/2: the stream is reset. The reset may reach the client before
    // it has read the response head (both leave weir back to back); either
    // way the client sees an error, never a complete response.
    match h2c_client().request(get(addr, "x", "/")).await {
        Err(_) => {}
        Ok(res) => {
            assert_eq!(res.status(), StatusCode::OK);
            let body = res.into_body().collect().await;
            assert!(body.is_err(), "truncated body must surface as an error");
        }
    }
}

#[tokio::test]
async fn streaming_response_arrives_before_the_backend_finishes() {
    // Proves weir does not buffer responses: the first chunk is readable
    // while the backend is still holding the rest.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let be = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let rx = std::sync::Arc::clone(&rx);
        let svc = hyper::service::service_fn(move |_req| {
            let rx = std::sync::Arc::clone(&rx);
            async move {
                let rx = rx.lock().await.take().unwrap();
                let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
                    .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
                Ok::<_, std::convert::Infallible>(http::Response::new(StreamBody::new(stream)))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
            .await;
    });
    let weir = start(&simple_config(&[be], "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let res = client().request(get(addr, "x", "/")).await.unwrap();
    let mut body = res.into_body();
    tx.send(Bytes::from_static(b"first")).await.unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk was held back")
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), "first");
    tx.send(Bytes::from_static(b"second")).await.unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
}

#[tokio::test]
async fn keep_alive_connections_to_the_backend_are_reused() {
    let be = echo_backend("a").await;
    let weir = start(&simple_config(&[be.addr], "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    for _ in 0..20 {
        let (p, _) = send(&c, get(addr, "x", "/")).await;
        assert_eq!(p.status, StatusCode::OK);
    }
    let snap = weir.shared().snapshot_full();
    let backend = &snap.pools[0].backends().backends()[0].clone();
    assert_eq!(
        backend.idle_connections(),
        1,
        "sequential requests share one upstream connection"
    );
    assert_eq!(backend.in_flight(), 0);
}
