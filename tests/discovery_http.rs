//! The `http` discovery source against a local JSON endpoint with ETags,
//! and how a pool merges static endpoints with discovered ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use tokio::net::TcpListener;

/// A registry serving `body` with an ETag derived from its content; counts
/// full answers and 304s. `fail` makes it answer 500.
#[derive(Clone, Default)]
struct Registry {
    body: Arc<Mutex<String>>,
    full: Arc<AtomicUsize>,
    not_modified: Arc<AtomicUsize>,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl Registry {
    fn set(&self, endpoints: &[SocketAddr]) {
        let list: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
        *self.body.lock().unwrap() = format!("[{}]", list.join(","));
    }

    async fn serve(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reg = self.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let reg = reg.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let reg = reg.clone();
                        async move {
                            if reg.fail.load(Ordering::SeqCst) {
                                let mut r = Response::new(Full::new(Bytes::from("boom")));
                                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                                return Ok::<_, Infallible>(r);
                            }
                            let body = reg.body.lock().unwrap().clone();
                            let etag = format!(
                                "\"{:x}\"",
                                body.len() * 31 + body.bytes().map(usize::from).sum::<usize>()
                            );
                            let matches = req
                                .headers()
                                .get("if-none-match")
                                .is_some_and(|v| v.to_str().unwrap() == etag);
                            let mut r = if matches {
                                reg.not_modified.fetch_add(1, Ordering::SeqCst);
                                let mut r = Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = StatusCode::NOT_MODIFIED;
                                r
                            } else {
                                reg.full.fetch_add(1, Ordering::SeqCst);
                                Response::new(Full::new(Bytes::from(body)))
                            };
                            r.headers_mut().insert("etag", etag.parse().unwrap());
                            Ok(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        addr
    }
}

fn yaml(static_eps: &[SocketAddr], registry: SocketAddr, extra: &str) -> String {
    yaml_every(static_eps, registry, "100ms", extra)
}

fn yaml_every(
    static_eps: &[SocketAddr],
    registry: SocketAddr,
    interval: &str,
    extra: &str,
) -> String {
    let eps: String = static_eps
        .iter()
        .map(|a| format!("      - address: \"{a}\"\n"))
        .collect();
    let endpoints = if eps.is_empty() {
        String::new()
    } else {
        format!("    endpoints:\n{eps}")
    };
    format!(
        "listeners: [{{name: main, bind: \"127.0.0.1:0\"}}]\n\
         admin: {{bind: \"127.0.0.1:0\"}}\n\
         access_log: {{enabled: false}}\n\
         routes: [{{pool: p}}]\n\
         pools:\n  - name: p\n{endpoints}    discovery:\n      - http: {{url: \"http://{registry}/eps\", interval: {interval}{extra}}}\n"
    )
}

#[tokio::test]
async fn http_source_follows_the_list_and_uses_etags() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let reg = Registry::default();
    reg.set(&[a.addr]);
    let reg_addr = reg.serve().await;
    let weir = start(&yaml(&[], reg_addr, "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    let snap = || weir.shared().snapshot_full();
    assert!(
        eventually(Duration::from_secs(3), || snap().pools[0]
            .backends()
            .backends()
            .len()
            == 1)
        .await
    );
    assert_eq!(backends_hit(&c, addr, 4).await, ["a".to_owned()].into());

    reg.set(&[a.addr, b.addr]);
    let t = tokio::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || snap().pools[0]
            .backends()
            .backends()
            .len()
            == 2)
        .await
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        backends_hit(&c, addr, 4).await,
        ["a".to_owned(), "b".to_owned()].into()
    );
    // Unchanged lists are answered with 304 after the first fetch.
    assert!(
        eventually(Duration::from_secs(3), || reg
            .not_modified
            .load(Ordering::SeqCst)
            >= 3)
        .await
    );

    let (_, status) = admin_get(&weir, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let source = &status["pools"][0]["sources"][0];
    assert_eq!(source["name"], "http[0]");
    assert_eq!(source["state"], "ok");
    assert_eq!(source["endpoints"], 2);
    assert_eq!(status["pools"][0]["endpoints"][0]["sources"][0], "http[0]");
}

#[tokio::test]
async fn a_failing_registry_keeps_the_last_good_set_until_max_stale() {
    let a = echo_backend("a").await;
    let reg = Registry::default();
    reg.set(&[a.addr]);
    let reg_addr = reg.serve().await;
    let weir = start(&yaml(&[], reg_addr, ", max_stale: 2s")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    let snap = || weir.shared().snapshot_full();
    assert!(
        eventually(Duration::from_secs(3), || snap().pools[0]
            .backends()
            .backends()
            .len()
            == 1)
        .await
    );

    reg.fail.store(true, Ordering::SeqCst);
    let stale = || {
        snap().pools[0]
            .sources()
            .first()
            .is_some_and(|s| s.state == "stale")
    };
    assert!(eventually(Duration::from_secs(3), stale).await);
    // Still serving from the last good set.
    for _ in 0..5 {
        let (p, _) = send(&c, get(addr, "x", "/")).await;
        assert_eq!(p.status, StatusCode::OK);
    }
    let s = scrape(&weir).await;
    assert!(
        sample(
            &s,
            "weir_discovery_refreshes_total",
            &[("result", "failure")]
        )
        .unwrap()
            >= 1.0
    );
    // After max_stale the contribution is dropped: 503 naming the pool.
    assert!(
        eventually(Duration::from_secs(8), || snap().pools[0]
            .backends()
            .backends()
            .is_empty())
        .await
    );
    let (p, body) = send(&c, get(addr, "x", "/")).await;
    assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("pool `p`"));
    // The registry recovers: endpoints come back at the driver's next try,
    // a jittered backoff of at most max_stale.
    reg.fail.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(3), || snap().pools[0]
            .backends()
            .backends()
            .len()
            == 1)
        .await
    );
}

#[tokio::test]
async fn static_and_discovered_endpoints_merge_and_removing_one_source_leaves_the_rest() {
    let s1 = echo_backend("static").await;
    let d1 = echo_backend("d1").await;
    let d2 = echo_backend("d2").await;
    let reg = Registry::default();
    reg.set(&[d1.addr, d2.addr]);
    let reg_addr = reg.serve().await;
    let weir = start(&yaml(&[s1.addr], reg_addr, "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    let snap = || weir.shared().snapshot_full();
    assert!(
        eventually(Duration::from_secs(3), || snap().pools[0]
            .backends()
            .backends()
            .len()
            == 3)
        .await
    );
    let static_backend = snap().pools[0]
        .backends()
        .backends()
        .iter()
        .find(|b| b.addr() == s1.addr)
        .cloned()
        .unwrap();
    assert_eq!(
        backends_hit(&c, addr, 6).await,
        ["d1".to_owned(), "d2".to_owned(), "static".to_owned()].into()
    );
    // The registry empties its list (a successful empty answer): only the
    // static endpoint remains, and it is the same Backend object.
    reg.set(&[]);
    assert!(
        eventually(Duration::from_secs(3), || snap().pools[0]
            .backends()
            .backends()
            .len()
            == 1)
        .await
    );
    let after = snap().pools[0].backends().backends()[0].clone();
    assert!(Arc::ptr_eq(&after, &static_backend));
    assert_eq!(
        backends_hit(&c, addr, 3).await,
        ["static".to_owned()].into()
    );
    let (_, status) = admin_get(&weir, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["pools"][0]["sources"][0]["state"], "ok");
    assert_eq!(status["pools"][0]["sources"][0]["endpoints"], 0);
    assert_eq!(status["pools"][0]["endpoints"][0]["sources"][0], "static");
}

/// A `304 Not Modified` is a successful contact: with `max_stale` set the
/// list is polled at least every third of it (here instead of every 30 s),
/// and a list that never changes never goes stale.
#[tokio::test]
async fn not_modified_answers_keep_the_source_fresh() {
    let a = echo_backend("a").await;
    let reg = Registry::default();
    reg.set(&[a.addr]);
    let reg_addr = reg.serve().await;
    let weir = start(&yaml_every(&[], reg_addr, "30s", ", max_stale: 3s")).await;
    let c = client();
    until_set(&weir, &[a.addr], Duration::from_secs(3)).await;
    stays_fresh(&weir, &c, &["a"], 3.5).await;
    assert!(reg.not_modified.load(Ordering::SeqCst) >= 3);
    assert_eq!(reg.full.load(Ordering::SeqCst), 1);
}
