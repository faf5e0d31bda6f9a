//! The `rate_limit` middleware against a live weir on real sockets: exact
//! admitted counts (the periods are an hour long, so a refill cannot land
//! inside a test however slow the machine), the 429 and its fields, keys
//! by client address (with and without trusted proxies), by request field
//! and by route, the metrics, the bound on kept buckets, and buckets kept
//! across a reload that leaves the middleware unchanged (fresh when it
//! changes). Config mistakes are refused with their key path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;

use common::*;

/// A weir with middleware `rl` = `rate_limit: {<rl>}` on routes `api`
/// (host `api.test`) and `web` (any other host), over `backend`.
fn config(backend: SocketAddr, rl: &str, top: &str) -> String {
    format!(
        "listeners:\n  - name: main\n    bind: \"127.0.0.1:0\"\n\
         admin:\n  bind: \"127.0.0.1:0\"\n\
         access_log:\n  enabled: false\n\
         {top}\
         middleware:\n  - name: rl\n    rate_limit: {{{rl}}}\n\
         routes:\n  - name: api\n    hosts: [api.test]\n    pool: p\n    middleware: [rl]\n  \
         - name: web\n    pool: p\n    middleware: [rl]\n\
         pools:\n  - name: p\n    endpoints:\n      - address: \"{backend}\"\n"
    )
}

/// GET `/` on `host` with extra fields; status and response head.
async fn hit(
    c: &HttpClient,
    addr: SocketAddr,
    host: &str,
    fields: &[(&str, &str)],
) -> http::response::Parts {
    let mut req = http::Request::get(format!("http://{addr}/")).header("host", host);
    for (n, v) in fields {
        req = req.header(*n, *v);
    }
    send(c, req.body(Full::new(Bytes::new())).unwrap()).await.0
}

/// How many of `n` requests got a 200 (the others must be 429s).
async fn admitted(
    c: &HttpClient,
    addr: SocketAddr,
    n: usize,
    host: &str,
    fields: &[(&str, &str)],
) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        let p = hit(c, addr, host, fields).await;
        match p.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            s => panic!("unexpected status {s}"),
        }
    }
    ok
}

fn number(p: &http::response::Parts, name: &str) -> u64 {
    p.headers[name].to_str().unwrap().parse().unwrap()
}

fn keys(weir: &weir::Weir) -> usize {
    let snap = weir.shared().snapshot_full();
    snap.middleware
        .get("rl")
        .unwrap()
        .rate_limit_keys()
        .unwrap()
}

#[tokio::test]
async fn exact_count_then_429_with_retry_after_and_ratelimit_fields() {
    let be = echo_backend("b").await;
    let weir = start(&config(be.addr, "average: 3, period: 1h", "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    for _ in 0..3 {
        assert_eq!(hit(&c, addr, "api.test", &[]).await.status, StatusCode::OK);
    }
    let p = hit(&c, addr, "api.test", &[]).await;
    assert_eq!(p.status, StatusCode::TOO_MANY_REQUESTS);
    // T = 20 min: the next request is admitted 1200 s after the first
    // (less the time the test took), the bucket is full 3600 s after it.
    assert!((1190..=1200).contains(&number(&p, "retry-after")), "{p:?}");
    assert_eq!(number(&p, "ratelimit-limit"), 3);
    assert_eq!(number(&p, "ratelimit-remaining"), 0);
    assert!(
        (3590..=3600).contains(&number(&p, "ratelimit-reset")),
        "{p:?}"
    );
    assert_eq!(p.headers["cache-control"], "no-store");
    assert!(p.headers.contains_key("x-request-id"));
    assert_eq!(admitted(&c, addr, 5, "api.test", &[]).await, 0);
    assert_eq!(be.count(), 3, "refused requests never reach the backend");

    let s = scrape(&weir).await;
    let route_mw = [("route", "api"), ("middleware", "rl")];
    assert_eq!(sample(&s, "weir_rate_limited_total", &route_mw), Some(6.0));
    let reason = [route_mw[0], route_mw[1], ("reason", "over_limit")];
    assert_eq!(
        sample(&s, "weir_middleware_rejections_total", &reason),
        Some(6.0)
    );
    // The other route listing the same middleware has its own buckets.
    assert_eq!(admitted(&c, addr, 5, "other.test", &[]).await, 3);
    let s = scrape(&weir).await;
    let web = [("route", "web"), ("middleware", "rl")];
    assert_eq!(sample(&s, "weir_rate_limited_total", &web), Some(2.0));
    assert_eq!(sample(&s, "weir_rate_limited_total", &route_mw), Some(6.0));
}

#[tokio::test]
async fn a_burst_above_average_is_admitted_at_once() {
    let be = echo_backend("b").await;
    let weir = start(&config(be.addr, "average: 1, period: 1h, burst: 4", "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    assert_eq!(admitted(&c, addr, 6, "api.test", &[]).await, 4);
    let p = hit(&c, addr, "api.test", &[]).await;
    assert_eq!(number(&p, "ratelimit-limit"), 4);
    assert!((3590..=3600).contains(&number(&p, "retry-after")), "{p:?}");
    assert!((4 * 3600 - 10..=4 * 3600).contains(&number(&p, "ratelimit-reset")));
}

#[tokio::test]
async fn header_keys_have_their_own_buckets_and_requests_without_it_share_one() {
    let be = echo_backend("b").await;
    let rl = "average: 2, period: 1h, key: {header: X-Api-Key}";
    let weir = start(&config(be.addr, rl, "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    let key = |k| [("x-api-key", k)];
    assert_eq!(admitted(&c, addr, 3, "api.test", &key("alice")).await, 2);
    assert_eq!(admitted(&c, addr, 3, "api.test", &key("bob")).await, 2);
    // Surrounding blanks do not make a new key.
    assert_eq!(admitted(&c, addr, 1, "api.test", &key(" alice ")).await, 0);
    // Leaving the field out is no way around the limit.
    assert_eq!(admitted(&c, addr, 3, "api.test", &[]).await, 2);
    assert_eq!(admitted(&c, addr, 3, "api.test", &[]).await, 0);
    // HTTP/2 requests (fields in the map, not raw lines) count the same.
    // Their `:authority` is the listener address, so they take route
    // `web`, whose buckets are its own.
    assert_eq!(admitted(&c, addr, 2, "web.test", &key("bob")).await, 2);
    let h2 = h2c_client();
    assert_eq!(admitted(&h2, addr, 1, "web.test", &key("bob")).await, 0);
    assert_eq!(admitted(&h2, addr, 3, "web.test", &key("carol")).await, 2);
    assert_eq!(keys(&weir), 5);
}

#[tokio::test]
async fn route_key_is_one_bucket_for_every_client_of_the_route() {
    let be = echo_backend("b").await;
    let top = "trusted_proxies: [127.0.0.1]\n";
    let weir = start(&config(be.addr, "average: 3, period: 1h, key: route", top)).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    let from = |ip| [("x-forwarded-for", ip)];
    assert_eq!(
        admitted(&c, addr, 2, "api.test", &from("192.0.2.1")).await,
        2
    );
    assert_eq!(
        admitted(&c, addr, 2, "api.test", &from("192.0.2.2")).await,
        1
    );
    assert_eq!(
        admitted(&c, addr, 4, "web.test", &from("192.0.2.3")).await,
        3
    );
    assert_eq!(keys(&weir), 2);
}

#[tokio::test]
async fn client_ip_comes_from_x_forwarded_for_only_through_a_trusted_proxy() {
    let be = echo_backend("b").await;
    let rl = "average: 2, period: 1h";
    let from = |ip| [("x-forwarded-for", ip)];

    // The peer (127.0.0.1) is a trusted proxy: each forwarded client has
    // its own bucket, and entries left of the client are not believed.
    let trusting = start(&config(be.addr, rl, "trusted_proxies: [127.0.0.0/8]\n")).await;
    let addr = trusting.listener_addr("main").unwrap();
    let c = client();
    assert_eq!(admitted(&c, addr, 3, "a", &from("198.51.100.1")).await, 2);
    assert_eq!(admitted(&c, addr, 3, "a", &from("198.51.100.2")).await, 2);
    let spoofed = from("203.0.113.9, 198.51.100.1");
    assert_eq!(admitted(&c, addr, 1, "a", &spoofed).await, 0);
    assert_eq!(keys(&trusting), 2);

    // No trusted proxies: X-Forwarded-For is ignored and the socket peer
    // is the client, so a new claimed address buys nothing.
    let plain = start(&config(be.addr, rl, "")).await;
    let addr = plain.listener_addr("main").unwrap();
    assert_eq!(admitted(&c, addr, 3, "a", &from("198.51.100.1")).await, 2);
    assert_eq!(admitted(&c, addr, 3, "a", &from("198.51.100.2")).await, 0);
    assert_eq!(keys(&plain), 1);
}

#[tokio::test]
async fn a_flood_of_distinct_keys_keeps_at_most_max_keys_buckets() {
    let be = echo_backend("b").await;
    let rl = "average: 1, period: 1h, key: {header: X-Api-Key}, max_keys: 32";
    let weir = start(&config(be.addr, rl, "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    for i in 0..400 {
        let k = format!("spoofed-{i}");
        let p = hit(&c, addr, "api.test", &[("x-api-key", &k)]).await;
        assert_eq!(p.status, StatusCode::OK, "fresh key {k}");
    }
    let kept = keys(&weir);
    assert!((1..=32).contains(&kept), "{kept} buckets kept");
    // The most recent key is remembered; the oldest was evicted and
    // starts over with a full bucket.
    let last = [("x-api-key", "spoofed-399")];
    assert_eq!(admitted(&c, addr, 1, "api.test", &last).await, 0);
    let first = [("x-api-key", "spoofed-0")];
    assert_eq!(admitted(&c, addr, 1, "api.test", &first).await, 1);
    assert!(keys(&weir) <= 32);
}

#[tokio::test]
async fn buckets_survive_a_reload_that_keeps_the_middleware_and_reset_when_it_changes() {
    let be = echo_backend("b").await;
    let rl = "average: 3, period: 1h";
    let weir = start(&config(be.addr, rl, "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    assert_eq!(admitted(&c, addr, 4, "api.test", &[]).await, 3);
    let before = Arc::clone(weir.shared().snapshot_full().middleware.get("rl").unwrap());

    // Another part of the config changes; `rl` does not.
    let other = config(be.addr, rl, "trusted_proxies: [192.0.2.0/24]\n");
    let summary = weir
        .apply(weir::Config::from_yaml(&other, "test.yaml").unwrap())
        .await
        .unwrap();
    assert!(summary.changed);
    let after = Arc::clone(weir.shared().snapshot_full().middleware.get("rl").unwrap());
    assert!(Arc::ptr_eq(&before, &after), "unchanged middleware is kept");
    assert_eq!(admitted(&c, addr, 2, "api.test", &[]).await, 0);
    assert_eq!(keys(&weir), 1);

    // `rl` changes: fresh buckets under the new limit.
    let changed = config(be.addr, "average: 3, period: 1h, burst: 4", "");
    weir.apply(weir::Config::from_yaml(&changed, "test.yaml").unwrap())
        .await
        .unwrap();
    assert_eq!(admitted(&c, addr, 6, "api.test", &[]).await, 4);
}

/// Log lines captured from a thread-local subscriber.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn access_lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        text.lines()
            .filter(|l| l.contains("weir::access"))
            .map(str::to_owned)
            .collect()
    }
}

// Single-threaded runtime: every task runs on this thread, so the
// thread-local subscriber sees weir's access log.
#[tokio::test(flavor = "current_thread")]
async fn the_access_log_names_the_middleware_that_answered_429() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let be = echo_backend("b").await;
    let yaml = config(be.addr, "average: 1, period: 1h", "").replace(
        "access_log:\n  enabled: false",
        "access_log:\n  enabled: true",
    );
    let weir = start(&yaml).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    assert_eq!(admitted(&c, addr, 2, "api.test", &[]).await, 1);
    assert!(eventually(Duration::from_secs(5), || logs.access_lines().len() >= 2).await);
    let lines = logs.access_lines();
    let ok = lines.iter().find(|l| l.contains("status=200")).unwrap();
    assert!(ok.contains(r#"middleware="-""#), "{ok}");
    let refused = lines.iter().find(|l| l.contains("status=429")).unwrap();
    for field in [
        r#"route="api""#,
        r#"pool="-""#,
        "endpoint=-",
        r#"middleware="rl""#,
    ] {
        assert!(refused.contains(field), "{field} in {refused}");
    }
}

#[test]
fn config_mistakes_name_the_key_and_say_what_to_write() {
    let cases = [
        (
            "period: 1s",
            "middleware[0].rate_limit",
            "`average` is required",
        ),
        (
            "average: 0",
            "middleware[0].rate_limit.average",
            "at least 1",
        ),
        (
            "average: 5, burst: 0",
            "middleware[0].rate_limit.burst",
            "at least 1",
        ),
        (
            "average: 5, period: 0s",
            "middleware[0].rate_limit.period",
            "greater than 0",
        ),
        (
            "average: 5, max_keys: 0",
            "middleware[0].rate_limit.max_keys",
            "at least 1",
        ),
        (
            "average: 5, key: client",
            "middleware[0].rate_limit.key",
            "write `client_ip`, `route` or `{header: X-Api-Key}`",
        ),
        (
            "average: 5, key: {header: \"bad name\"}",
            "middleware[0].rate_limit.key.header",
            "not a field name",
        ),
        (
            "average: 5, key: {name: X-Api-Key}",
            "middleware[0].rate_limit.key",
            "`client_ip`, `route` or `{header: X-Api-Key}`",
        ),
        (
            "average: 5, period: 5",
            "middleware[0].rate_limit.period",
            "has no unit",
        ),
        (
            "average: 5, rate: 3",
            "middleware[0].rate_limit.rate",
            "unknown field `rate`",
        ),
    ];
    let backend: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for (rl, path, message) in cases {
        let err = weir::Config::from_yaml(&config(backend, rl, ""), "test.yaml")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains(path), "{rl}: {err}");
        assert!(err.contains(message), "{rl}: {err}");
    }
    let ok = weir::Config::from_yaml(&config(backend, "average: 5", ""), "test.yaml");
    assert!(ok.is_ok(), "{:?}", ok.err());
}
