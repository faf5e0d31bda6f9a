//! Route middleware end to end on real sockets: the pure kinds (`headers`,
//! `rewrite`, `redirect`, `ip_filter`), the chain's order and response
//! side, the client-address rule, config errors, metrics and reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use http::StatusCode;

/// One listener, one pool over `backend`, `middleware` defined and the
/// routes given (each `- path_prefix: ..., middleware: [...]` with `pool: p`).
fn config(backend: SocketAddr, middleware: &str, routes: &str, extra: &str) -> String {
    format!(
        "listeners:\n  - name: main\n    bind: \"127.0.0.1:0\"\n\
         admin:\n  bind: \"127.0.0.1:0\"\n\
         access_log:\n  enabled: false\n\
         {extra}\
         middleware:\n{middleware}\
         routes:\n{routes}\
         pools:\n  - name: p\n    endpoints:\n      - address: \"{backend}\"\n"
    )
}

fn listener(weir: &weir::Weir) -> SocketAddr {
    weir.listener_addr("main").unwrap()
}

async fn get_with(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, bytes::Bytes) {
    let mut req = get(addr, "app.test", path);
    for (k, v) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    send(client, req).await
}

const HEADERS_MW: &str = "  - name: edit\n    headers:\n      request:\n        set: { X-Env: prod }\n        add: { X-Tag: edge }\n        remove: [X-Debug]\n      response:\n        remove: [X-Backend]\n        set: { Strict-Transport-Security: max-age=60 }\n";

#[tokio::test]
async fn headers_edit_the_request_and_the_response_on_both_protocols() {
    let backend = echo_backend("b").await;
    let weir = start(&config(
        backend.addr,
        HEADERS_MW,
        "  - pool: p\n    middleware: [edit]\n",
        "",
    ))
    .await;
    let addr = listener(&weir);
    for (i, c) in [client(), h2c_client()].iter().enumerate() {
        let (parts, _) = get_with(
            c,
            addr,
            "/x",
            &[("x-env", "dev"), ("x-tag", "client"), ("x-debug", "1")],
        )
        .await;
        assert_eq!(parts.status, StatusCode::OK);
        assert!(parts.headers.get("x-backend").is_none(), "removed");
        assert_eq!(parts.headers["strict-transport-security"], "max-age=60");
        let seen = &backend.requests()[i];
        let all = |n: &str| -> Vec<&str> {
            seen.headers
                .get_all(n)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("x-env"), ["prod"], "set replaces the client's value");
        assert_eq!(
            all("x-tag"),
            ["client", "edge"],
            "add keeps the client's value"
        );
        assert!(all("x-debug").is_empty());
    }
}

#[tokio::test]
async fn rewrite_changes_the_path_keeps_the_query_and_names_the_prefix() {
    let backend = echo_backend("b").await;
    let mw = "  - name: strip\n    rewrite: { strip_prefix: /api }\n\
              \x20 - name: re\n    rewrite: { regex: { pattern: \"^/u/(\\\\d+)$\", replacement: \"/users/$1 x\" } }\n";
    let routes = "  - path_prefix: /api\n    pool: p\n    middleware: [strip]\n\
                  \x20 - path_prefix: /u/\n    pool: p\n    middleware: [re]\n\
                  \x20 - pool: p\n";
    let weir = start(&config(backend.addr, mw, routes, "")).await;
    let addr = listener(&weir);
    let c = client();
    assert_eq!(
        get_with(&c, addr, "/api/users?id=7&x", &[]).await.0.status,
        200
    );
    assert_eq!(get_with(&c, addr, "/api", &[]).await.0.status, 200);
    assert_eq!(get_with(&c, addr, "/u/42?q", &[]).await.0.status, 200);
    assert_eq!(get_with(&c, addr, "/plain", &[]).await.0.status, 200);
    let seen = backend.requests();
    assert_eq!(seen[0].uri, "/users?id=7&x");
    assert_eq!(seen[0].headers["x-forwarded-prefix"], "/api");
    assert_eq!(seen[1].uri, "/");
    // The space a replacement made is percent-encoded: still one path.
    assert_eq!(seen[2].uri, "/users/42%20x?q");
    assert!(seen[2].headers.get("x-forwarded-prefix").is_none());
    assert_eq!(seen[3].uri, "/plain");
}

#[tokio::test]
async fn redirects_answer_without_reaching_the_pool() {
    let backend = echo_backend("b").await;
    let mw = "  - name: https\n    redirect: { scheme: https, status: 308 }\n\
              \x20 - name: moved\n    redirect: { replace_prefix: { from: /old, to: /new }, status: 301 }\n";
    let routes = "  - path_prefix: /old\n    pool: p\n    middleware: [moved]\n\
                  \x20 - pool: p\n    middleware: [https]\n";
    let weir = start(&config(backend.addr, mw, routes, "")).await;
    let addr = listener(&weir);
    let c = client();
    let mut req = get(addr, "app.test:8080", "/a/b?x=1");
    req.headers_mut()
        .insert("host", "app.test:8080".parse().unwrap());
    let (parts, body) = send(&c, req).await;
    assert_eq!(parts.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(parts.headers["location"], "https://app.test/a/b?x=1");
    assert!(body.is_empty());
    let (parts, _) = get_with(&c, addr, "/old/page?k=v", &[]).await;
    assert_eq!(parts.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(parts.headers["location"], "http://app.test/new/page?k=v");
    assert_eq!(backend.count(), 0, "a redirect never reaches an endpoint");
    let scrape = scrape(&weir).await;
    let n = sample(
        &scrape,
        "weir_middleware_rejections_total",
        &[
            ("route", "route1"),
            ("middleware", "https"),
            ("reason", "redirect"),
        ],
    );
    assert_eq!(n, Some(1.0));
}

#[tokio::test]
async fn ip_filter_uses_the_peer_unless_it_is_a_trusted_proxy() {
    let backend = echo_backend("b").await;
    let mw =
        "  - name: office\n    ip_filter: { allow: [198.51.100.0/24], deny: [198.51.100.66] }\n";
    let routes = "  - pool: p\n    middleware: [office]\n";
    // The peer (127.0.0.1) is not trusted: its X-Forwarded-For is not believed.
    let weir = start(&config(backend.addr, mw, routes, "")).await;
    let c = client();
    let (parts, _) = get_with(
        &c,
        listener(&weir),
        "/",
        &[("x-forwarded-for", "198.51.100.7")],
    )
    .await;
    assert_eq!(parts.status, StatusCode::FORBIDDEN);
    weir.shutdown().await;

    let trusted = "trusted_proxies: [127.0.0.0/8]\n";
    let weir = start(&config(backend.addr, mw, routes, trusted)).await;
    let addr = listener(&weir);
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    assert_eq!(
        get_with(&c, addr, "/", &xff("198.51.100.7")).await.0.status,
        200
    );
    // A spoofed entry left of the trusted hop's is ignored.
    assert_eq!(
        get_with(&c, addr, "/", &xff("198.51.100.7, 203.0.113.5"))
            .await
            .0
            .status,
        403
    );
    assert_eq!(
        get_with(&c, addr, "/", &xff("203.0.113.5, 198.51.100.7"))
            .await
            .0
            .status,
        200
    );
    assert_eq!(
        get_with(&c, addr, "/", &xff("198.51.100.66"))
            .await
            .0
            .status,
        403
    );
    assert_eq!(
        get_with(&c, addr, "/", &[]).await.0.status,
        403,
        "the peer itself"
    );
    assert_eq!(backend.count(), 2);
    let scrape = scrape(&weir).await;
    let count = |reason| {
        sample(
            &scrape,
            "weir_middleware_rejections_total",
            &[("middleware", "office"), ("reason", reason)],
        )
    };
    assert_eq!(count("denied"), Some(1.0));
    assert_eq!(count("not_allowed"), Some(2.0));
}

#[tokio::test]
async fn a_refusal_passes_back_through_the_steps_before_it_only() {
    let backend = echo_backend("b").await;
    let mw =
        format!("{HEADERS_MW}  - name: nobody\n    ip_filter: {{ deny: [0.0.0.0/0, \"::/0\"] }}\n");
    let routes = "  - path_prefix: /a\n    pool: p\n    middleware: [edit, nobody]\n\
                  \x20 - path_prefix: /b\n    pool: p\n    middleware: [nobody, edit]\n";
    let weir = start(&config(backend.addr, &mw, routes, "")).await;
    let c = client();
    let (a, body) = get_with(&c, listener(&weir), "/a", &[]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.headers["strict-transport-security"], "max-age=60");
    assert!(a.headers.get("x-request-id").is_some());
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains("403 Forbidden"));
    let (b, _) = get_with(&c, listener(&weir), "/b", &[]).await;
    assert_eq!(b.status, StatusCode::FORBIDDEN);
    assert!(b.headers.get("strict-transport-security").is_none());
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn a_reload_keeps_unchanged_middleware_and_replaces_changed_ones() {
    let backend = echo_backend("b").await;
    let mw = "  - name: strip\n    rewrite: { strip_prefix: /api }\n\
              \x20 - name: office\n    ip_filter: { deny: [192.0.2.0/24] }\n";
    let routes = "  - pool: p\n    middleware: [strip, office]\n";
    let weir = start(&config(backend.addr, mw, routes, "")).await;
    let before = |name: &str| Arc::clone(weir.shared().snapshot().middleware.get(name).unwrap());
    let (strip, office) = (before("strip"), before("office"));
    let changed = mw.replace("192.0.2.0/24", "192.0.2.0/25");
    let next = config(backend.addr, &changed, routes, "");
    weir.apply(weir::Config::from_yaml(&next, "next.yaml").unwrap())
        .await
        .unwrap();
    let snap = weir.shared().snapshot_full();
    assert!(Arc::ptr_eq(snap.middleware.get("strip").unwrap(), &strip));
    assert!(!Arc::ptr_eq(
        snap.middleware.get("office").unwrap(),
        &office
    ));
    let (parts, _) = get_with(&client(), listener(&weir), "/api/x", &[]).await;
    assert_eq!(parts.status, 200);
    assert_eq!(backend.requests()[0].uri, "/x");
}

#[test]
fn config_errors_name_the_key_and_line() {
    let backend: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let cases = [
        (
            config(
                backend,
                "  - name: a\n    rewrite: { strip_prefix: /x }\n",
                "  - pool: p\n    middleware: [b]\n",
                "",
            ),
            "routes[0].middleware[0]",
            "not defined",
        ),
        (
            config(
                backend,
                "  - name: a\n    rewrite: { strip_prefix: /x }\n    redirect: { scheme: https }\n",
                "  - pool: p\n",
                "",
            ),
            "middleware[0]",
            "more than one kind",
        ),
        (
            config(
                backend,
                "  - name: a\n    headers: { request: { set: { Content-Length: \"5\" } } }\n",
                "  - pool: p\n",
                "",
            ),
            "middleware[0].headers.request.set.Content-Length",
            "set by weir itself",
        ),
        (
            config(
                backend,
                "  - name: a\n    ip_filter: { allow: [10.0.0.1/8] }\n",
                "  - pool: p\n",
                "",
            ),
            "middleware[0].ip_filter.allow[0]",
            "host bits",
        ),
        (
            config(
                backend,
                "  - name: a\n    redirect: { scheme: https, status: 303 }\n",
                "  - pool: p\n",
                "",
            ),
            "middleware[0].redirect.status",
            "301, 302, 307 or 308",
        ),
        (
            config(
                backend,
                "  - name: a\n    rewrite: { regex: { pattern: \"(\", replacement: x } }\n",
                "  - pool: p\n",
                "",
            ),
            "middleware[0].rewrite.regex.pattern",
            "regular expression",
        ),
        (
            config(
                backend,
                "  - name: a\n    rewrite: { strip_prefix: /x }\n",
                "  - pool: p\n",
                "trusted_proxies: [nonsense]\n",
            ),
            "trusted_proxies[0]",
            "not an address",
        ),
    ];
    for (yaml, key, words) in cases {
        let err = weir::Config::from_yaml(&yaml, "t.yaml").unwrap_err();
        assert_eq!(err.key_path(), Some(key), "{err}");
        assert!(err.line().is_some(), "{err}");
        assert!(err.to_string().contains(words), "{err}");
    }
}
