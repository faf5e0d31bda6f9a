//! `forward_auth` middleware against a live weir and a test auth service
//! on `127.0.0.1:0`: an allowed request carries the service's response
//! fields upstream (the client's own copies removed) and the service sees
//! the original method, URI, host and client in `X-Forwarded-*` (spoofed
//! copies replaced); a denial reaches the client as the service sent it (a
//! 302 with `Location` and `Set-Cookie`, a 401 with its body); a service
//! that is slow or down gives 503 and the backend is never reached;
//! `request_headers` narrows what the service sees.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use common::*;
use http::{Response, StatusCode};
use http_body_util::Full;

/// A config with one `forward_auth` middleware named `auth` (its mapping
/// is `mw`) on the only route, over `backend`.
fn config(backend: SocketAddr, mw: &str) -> String {
    format!(
        "listeners:\n  - name: main\n    bind: \"127.0.0.1:0\"\n\
         admin:\n  bind: \"127.0.0.1:0\"\n\
         access_log:\n  enabled: false\n\
         middleware:\n  - name: auth\n    forward_auth: {mw}\n\
         routes:\n  - pool: p\n    middleware: [auth]\n\
         pools:\n  - name: p\n    endpoints:\n      - address: \"{backend}\"\n"
    )
}

/// A service in the manner of Authelia: `Cookie: session=good` is
/// allowed (with the user's fields), `session=slow` answers after 10 s, an
/// API client (`Accept: application/json`) without a session gets a 401
/// with a JSON body, and a browser gets a 302 to the login page.
async fn auth_service() -> TestBackend {
    backend_with("auth", |seen, _| async move {
        let cookie = seen.headers.get("cookie").map(|v| v.to_str().unwrap());
        let json = seen
            .headers
            .get("accept")
            .is_some_and(|v| v == "application/json");
        let mut res = Response::builder();
        match cookie {
            Some("session=good") => {
                res = res
                    .status(200)
                    .header("remote-user", "alice")
                    .header("remote-groups", "admins")
                    .header("remote-groups", "dev")
                    .header("x-not-copied", "1");
                return res.body(Full::new(Bytes::from_static(b"ok"))).unwrap();
            }
            Some("session=slow") => tokio::time::sleep(Duration::from_secs(10)).await,
            _ => {}
        }
        if json {
            res = res
                .status(401)
                .header("content-type", "application/json")
                .header("www-authenticate", "Bearer");
            return res
                .body(Full::new(Bytes::from_static(
                    b"{\"error\":\"login required\"}",
                )))
                .unwrap();
        }
        res.status(302)
            .header("location", "https://login.example/?rd=app")
            .header("set-cookie", "authelia_rd=1; Path=/")
            .header("set-cookie", "csrf=2; Path=/")
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await
}

fn mw(auth: SocketAddr, extra: &str) -> String {
    format!(
        "{{address: \"http://{auth}/api/verify?x=1\", \
         response_headers: [Remote-User, Remote-Groups]{extra}}}"
    )
}

/// A request to weir with `fields`.
async fn hit(
    c: &HttpClient,
    addr: SocketAddr,
    method: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> (http::response::Parts, String) {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", "app.example");
    for (n, v) in fields {
        req = req.header(*n, *v);
    }
    let body = if method == "POST" { "payload" } else { "" };
    let (parts, body) = send(c, req.body(Full::new(Bytes::from(body))).unwrap()).await;
    (parts, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn an_allowed_request_carries_the_services_fields_and_the_service_sees_the_original() {
    let backend = echo_backend("b").await;
    let auth = auth_service().await;
    let weir = start(&config(backend.addr, &mw(auth.addr, ""))).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    let fields = [
        ("cookie", "session=good"),
        ("user-agent", "test-browser"),
        ("remote-user", "mallory"),     // spoofed: replaced
        ("x-forwarded-uri", "/public"), // spoofed: replaced
        ("x-original-url", "http://app.example/public"),
    ];
    let (parts, body) = hit(&c, addr, "POST", "/app/x?y=1", &fields).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "payload", "the request body reached the backend");

    let seen = &backend.requests()[0];
    let users: Vec<_> = seen.headers.get_all("remote-user").iter().collect();
    assert_eq!(users, ["alice"], "the client's copy is removed");
    let groups: Vec<_> = seen.headers.get_all("remote-groups").iter().collect();
    assert_eq!(groups, ["admins", "dev"]);
    assert!(!seen.headers.contains_key("x-not-copied"));
    assert_eq!(seen.uri, "/app/x?y=1");

    let asked = &auth.requests()[0];
    assert_eq!(asked.method, http::Method::GET);
    assert_eq!(asked.uri, "/api/verify?x=1");
    assert_eq!(asked.body_len, 0);
    let h = |n: &str| {
        let all: Vec<_> = asked.headers.get_all(n).iter().collect();
        assert!(all.len() <= 1, "{n}: {all:?}");
        all.first().map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(h("host").unwrap(), auth.addr.to_string());
    assert_eq!(h("x-forwarded-method").unwrap(), "POST");
    assert_eq!(h("x-forwarded-proto").unwrap(), "http");
    assert_eq!(h("x-forwarded-host").unwrap(), "app.example");
    assert_eq!(h("x-forwarded-uri").unwrap(), "/app/x?y=1");
    assert_eq!(h("x-forwarded-for").unwrap(), "127.0.0.1");
    assert_eq!(h("x-original-url").unwrap(), "http://app.example/app/x?y=1");
    // Every other client field is copied by default ...
    assert_eq!(h("cookie").unwrap(), "session=good");
    assert_eq!(h("user-agent").unwrap(), "test-browser");
    // ... but not the body's framing, nor what only the service may set.
    assert_eq!(h("content-length"), None);
    assert_eq!(h("remote-user"), None);

    // The next request is asked again (nothing is cached).
    let (parts, _) = hit(&c, addr, "GET", "/", &[("cookie", "session=good")]).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(auth.count(), 2);
}

#[tokio::test]
async fn denials_reach_the_client_as_the_service_sent_them() {
    let backend = echo_backend("b").await;
    let auth = auth_service().await;
    let weir = start(&config(backend.addr, &mw(auth.addr, ""))).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();

    let (parts, _) = hit(&c, addr, "GET", "/app", &[("cookie", "session=bad")]).await;
    assert_eq!(parts.status, StatusCode::FOUND);
    assert_eq!(parts.headers["location"], "https://login.example/?rd=app");
    let cookies: Vec<_> = parts.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["authelia_rd=1; Path=/", "csrf=2; Path=/"]);

    let json = [("accept", "application/json")];
    let (parts, body) = hit(&c, addr, "GET", "/api", &json).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, "{\"error\":\"login required\"}");
    assert_eq!(parts.headers["content-type"], "application/json");
    assert_eq!(parts.headers["www-authenticate"], "Bearer");
    let lengths: Vec<_> = parts.headers.get_all("content-length").iter().collect();
    assert_eq!(lengths, [body.len().to_string().as_str()]);

    assert_eq!(backend.count(), 0, "no denied request reached the backend");
    assert_eq!(rejections(&weir, "auth", "denied").await, 2.0);
}

#[tokio::test]
async fn a_slow_or_unreachable_service_is_a_503_and_never_lets_the_request_through() {
    let backend = echo_backend("b").await;
    let auth = auth_service().await;
    let weir = start(&config(backend.addr, &mw(auth.addr, ", timeout: 300ms"))).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    let t0 = Instant::now();
    let (parts, _) = hit(&c, addr, "GET", "/", &[("cookie", "session=slow")]).await;
    let took = t0.elapsed();
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(rejections(&weir, "auth", "auth_timeout").await, 1.0);

    let down = dead_addr().await;
    let weir2 = start(&config(backend.addr, &mw(down, ""))).await;
    let addr2 = weir2.listener_addr("main").unwrap();
    let (parts, _) = hit(&c, addr2, "GET", "/", &[("cookie", "session=good")]).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rejections(&weir2, "auth", "auth_unavailable").await, 1.0);
    assert_eq!(backend.count(), 0, "the backend was never reached");
}

#[tokio::test]
async fn request_headers_narrows_what_the_service_sees() {
    let backend = echo_backend("b").await;
    let auth = auth_service().await;
    let extra = ", request_headers: [Cookie, X-Forwarded-Uri]";
    let weir = start(&config(backend.addr, &mw(auth.addr, extra))).await;
    let addr = weir.listener_addr("main").unwrap();
    let fields = [
        ("cookie", "session=good"),
        ("user-agent", "test-browser"),
        ("x-forwarded-uri", "/public"),
    ];
    let (parts, _) = hit(&client(), addr, "GET", "/secret", &fields).await;
    assert_eq!(parts.status, StatusCode::OK);
    let asked = &auth.requests()[0];
    assert_eq!(asked.headers["cookie"], "session=good");
    assert!(!asked.headers.contains_key("user-agent"));
    // Listing one of weir's own fields does not let a client set it.
    let uris: Vec<_> = asked.headers.get_all("x-forwarded-uri").iter().collect();
    assert_eq!(uris, ["/secret"]);
}

#[test]
fn bad_addresses_and_cas_are_refused_with_what_to_write() {
    let backend: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let cases = [
        (
            "{address: \"http://auth/verify\", ca: x.pem}",
            "`ca` is for an `https://`",
        ),
        (
            "{address: \"https://auth/verify\", ca: /nonexistent/ca.pem}",
            "ca",
        ),
        ("{address: \"auth:9091/verify\"}", "http://"),
        ("{timeout: 1s}", "`address` is required"),
        (
            "{address: \"http://a/\", max_response_bytes: -1}",
            "max_response_bytes",
        ),
    ];
    for (mw, want) in cases {
        let err = weir::Config::from_yaml(&config(backend, mw), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("middleware[0].forward_auth"), "{err}");
        assert!(err.contains(want), "{mw}: {err}");
    }
}

/// The auth service over HTTPS: `Cookie: session=good` gets a 200 with
/// `Remote-User: alice`, anything else a 401. Counts TLS connections.
async fn https_auth_service(
    acceptor: tokio_rustls::TlsAcceptor,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(tls) = acceptor.accept(tcp).await else {
                continue;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            let service = hyper::service::service_fn(
                |req: http::Request<hyper::body::Incoming>| async move {
                    let good = req
                        .headers()
                        .get("cookie")
                        .is_some_and(|c| c == "session=good");
                    let res = if good {
                        Response::builder()
                            .status(200)
                            .header("remote-user", "alice")
                    } else {
                        Response::builder()
                            .status(401)
                            .header("www-authenticate", "Basic")
                    };
                    Ok::<_, std::convert::Infallible>(res.body(Full::new(Bytes::new())).unwrap())
                },
            );
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service),
            );
        }
    });
    (addr, conns)
}

#[tokio::test]
async fn an_https_service_is_verified_by_its_ca_and_its_connection_reused() {
    use std::sync::atomic::Ordering;
    let backend = echo_backend("b").await;
    let (ca_pem, acceptor) = tls_server_for_localhost();
    let (auth, conns) = https_auth_service(acceptor).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("auth-ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let mw = format!(
        "{{address: \"https://{auth}/verify\", ca: \"{}\", response_headers: [Remote-User]}}",
        ca.display()
    );
    let cfg = weir::Config::from_yaml(&config(backend.addr, &mw), "t.yaml").unwrap();
    assert!(
        cfg.watched_files().contains(&ca.as_path()),
        "the CA is watched"
    );
    let weir = weir::Weir::start(cfg).await.unwrap();
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    for _ in 0..3 {
        let (parts, _) = hit(&c, addr, "GET", "/x", &[("cookie", "session=good")]).await;
        assert_eq!(parts.status, StatusCode::OK);
    }
    let (parts, _) = hit(&c, addr, "GET", "/x", &[("cookie", "session=bad")]).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
    assert_eq!(parts.headers["www-authenticate"], "Basic");
    assert_eq!(backend.count(), 3);
    assert!(backend
        .requests()
        .iter()
        .all(|s| s.headers["remote-user"] == "alice"));
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "one TLS connection, kept alive"
    );

    // Without `ca`, the public roots do not know the test CA: 503, never through.
    let no_ca = format!("{{address: \"https://{auth}/verify\"}}");
    let weir2 = start(&config(backend.addr, &no_ca)).await;
    let addr2 = weir2.listener_addr("main").unwrap();
    let (parts, _) = hit(&c, addr2, "GET", "/x", &[("cookie", "session=good")]).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(rejections(&weir2, "auth", "auth_unavailable").await, 1.0);
    assert_eq!(backend.count(), 3);
}
