//! Shared test fixtures: real backends on `127.0.0.1:0`, weir started from
//! a YAML string, and HTTP clients.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// What a test backend saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: http::Method,
    pub uri: http::Uri,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body_len: usize,
}

/// A real HTTP server (HTTP/1.1 and h2c) on an ephemeral loopback port that
/// records every request it receives.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub name: &'static str,
}

impl TestBackend {
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// A backend that answers every request with `x-backend: <name>` and
/// echoes the request body back.
pub async fn echo_backend(name: &'static str) -> TestBackend {
    backend_with(
        name,
        |_req, body| async move { Response::new(Full::new(body)) },
    )
    .await
}

/// A backend whose response is computed by `f(request head, body)`.
pub async fn backend_with<F, Fut>(name: &'static str, f: F) -> TestBackend
where
    F: Fn(Seen, Bytes) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let seen2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = Arc::clone(&seen2);
            let f = f.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    let f = f.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let s = Seen {
                            method: parts.method,
                            uri: parts.uri,
                            version: parts.version,
                            headers: parts.headers,
                            body_len: body.len(),
                        };
                        seen.lock().unwrap().push(s.clone());
                        let mut res = f(s, body).await;
                        res.headers_mut()
                            .insert("x-backend", http::HeaderValue::from_static(name));
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestBackend { addr, seen, name }
}

/// An address nothing listens on: bind an ephemeral port, then close it.
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// Starts weir in-process from YAML. The YAML should bind `127.0.0.1:0`.
pub async fn start(yaml: &str) -> weir::Weir {
    let config = weir::Config::from_yaml(yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    weir::Weir::start(config).await.unwrap()
}

/// A minimal config: one listener `main` and one pool `p` over `endpoints`
/// (`extra_pool` is appended to the pool's keys, indented by 4 spaces).
pub fn simple_config(endpoints: &[SocketAddr], extra_pool: &str) -> String {
    let eps: String = endpoints
        .iter()
        .map(|a| format!("      - address: \"{a}\"\n"))
        .collect();
    format!(
        "listeners:\n  - name: main\n    bind: \"127.0.0.1:0\"\n\
         admin:\n  bind: \"127.0.0.1:0\"\n\
         access_log:\n  enabled: false\n\
         routes:\n  - pool: p\n\
         pools:\n  - name: p\n{extra_pool}    endpoints:\n{eps}"
    )
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// HTTP/1.1 client with keep-alive.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// `GET http://{addr}{path}` with the given Host.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Sends a request and collects the response body.
pub async fn send(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
) -> (http::response::Parts, Bytes) {
    let res = client.request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts, body)
}

/// Polls `check` every 20 ms until it returns true or `deadline` passes.
pub async fn eventually(deadline: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GETs an admin path and returns status and body.
pub async fn admin_get(weir: &weir::Weir, path: &str) -> (http::StatusCode, String) {
    let (parts, body) = send(&client(), get(weir.admin_addr(), "admin", path)).await;
    (parts.status, String::from_utf8(body.to_vec()).unwrap())
}

/// Scrapes `/metrics` and parses it with a Prometheus text-format parser.
pub async fn scrape(weir: &weir::Weir) -> prometheus_parse::Scrape {
    scrape_at(weir.admin_addr()).await
}

/// [`scrape`] for the admin listener at `admin` (a weir in another process).
pub async fn scrape_at(admin: SocketAddr) -> prometheus_parse::Scrape {
    let (parts, body) = send(&client(), get(admin, "admin", "/metrics")).await;
    assert_eq!(parts.status, http::StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of the sample `name` whose labels include all of `labels`
/// (counters, gauges, and a histogram's `_count`/`_sum`). `None` if absent.
pub fn sample(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .find_map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(*v),
            prometheus_parse::Value::Histogram(h) => h
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map(|b| b.count),
            prometheus_parse::Value::Summary(_) => None,
        })
}

/// Sends `n` GETs and returns the set of `x-backend` names that answered;
/// every response must be 200.
pub async fn backends_hit(
    c: &HttpClient,
    addr: SocketAddr,
    n: usize,
) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..n {
        let (p, body) = send(c, get(addr, "x", "/")).await;
        assert_eq!(p.status, http::StatusCode::OK, "{body:?}");
        seen.insert(p.headers["x-backend"].to_str().unwrap().to_owned());
    }
    seen
}

/// Addresses in the first pool's current backend set.
pub fn addrs(weir: &weir::Weir) -> std::collections::BTreeSet<SocketAddr> {
    weir.shared().snapshot_full().pools[0]
        .backends()
        .backends()
        .iter()
        .map(|b| b.addr())
        .collect()
}

/// Waits until the first pool holds exactly `want`; returns how long it took.
pub async fn until_set(weir: &weir::Weir, want: &[SocketAddr], deadline: Duration) -> Duration {
    let want: std::collections::BTreeSet<SocketAddr> = want.iter().copied().collect();
    let t = tokio::time::Instant::now();
    assert!(
        eventually(deadline, || addrs(weir) == want).await,
        "pool is {:?}, want {want:?}",
        addrs(weir)
    );
    t.elapsed()
}

/// A set of owned names, for comparing with `backends_hit`.
pub fn names(n: &[&str]) -> std::collections::BTreeSet<String> {
    n.iter().map(|s| (*s).to_owned()).collect()
}

/// The 99th percentile of `samples` (nearest rank).
pub fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64) * 0.99).ceil() as usize;
    samples[i.saturating_sub(1).min(samples.len() - 1)]
}

/// `n` sequential GETs 10 ms apart; each must be 200. Returns their latencies.
pub async fn measure(client: &HttpClient, addr: SocketAddr, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = tokio::time::Instant::now();
        let (parts, _) = send(client, get(addr, "a", "/")).await;
        assert_eq!(parts.status, 200);
        out.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out
}

/// Unix time now, in seconds (as `/status` shows times).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// `/status` of the first pool's first discovery source.
pub async fn first_source(weir: &weir::Weir) -> serde_json::Value {
    let (_, status) = admin_get(weir, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    status["pools"][0]["sources"][0].clone()
}

/// Polls until the first source's `last_success` (its last contact with
/// the registry) is more than `secs` past what it is now, asserting
/// meanwhile that the source stays `ok` and that `want` serve requests.
pub async fn stays_fresh(weir: &weir::Weir, c: &HttpClient, want: &[&str], secs: f64) {
    let addr = weir.listener_addr("main").unwrap();
    let first = first_source(weir).await["last_success"].as_f64().unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs_f64(secs + 4.5);
    loop {
        let s = first_source(weir).await;
        assert_eq!(s["state"], "ok", "{s}");
        assert_eq!(backends_hit(c, addr, 1).await, names(want));
        if s["last_success"].as_f64().unwrap() > first + secs {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no contact since {first}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How a registry outage looked from outside, in Unix seconds.
#[derive(Debug)]
pub struct Outage {
    /// The last request served, counted from the start of the outage.
    pub served_for: f64,
    /// The source showed `stale` before `expired`.
    pub saw_stale: bool,
    /// When the source was first seen `expired`.
    pub expired_at: f64,
    /// Its `last_success` then: the last contact with the registry.
    pub last_contact: f64,
}

/// From `start` (when the registry failed), sends a request every 50 ms
/// until the first source shows `expired`, asserting that every request
/// before that is served by `want`. Panics after `deadline` seconds.
pub async fn serve_until_expired(
    weir: &weir::Weir,
    c: &HttpClient,
    want: &[&str],
    start: f64,
    deadline: f64,
) -> Outage {
    let addr = weir.listener_addr("main").unwrap();
    let mut saw_stale = false;
    let mut served_for = 0.0;
    loop {
        let now = unix_now();
        let s = first_source(weir).await;
        if s["state"] == "expired" {
            return Outage {
                served_for,
                saw_stale,
                expired_at: now,
                last_contact: s["last_success"].as_f64().unwrap(),
            };
        }
        saw_stale |= s["state"] == "stale";
        assert_eq!(backends_hit(c, addr, 1).await, names(want), "{s}");
        served_for = now - start;
        assert!(served_for < deadline, "did not expire: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `weir_middleware_rejections_total` of `middleware` for `reason` (0 when
/// no such series exists yet).
pub async fn rejections(weir: &weir::Weir, middleware: &str, reason: &str) -> f64 {
    let s = scrape(weir).await;
    let labels = [("middleware", middleware), ("reason", reason)];
    sample(&s, "weir_middleware_rejections_total", &labels).unwrap_or(0.0)
}

/// A CA (its PEM) and a TLS acceptor with a leaf it issued for 127.0.0.1.
pub fn tls_server_for_localhost() -> (String, tokio_rustls::TlsAcceptor) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test idp ca");
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let ca = params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![leaf.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
    )
    .unwrap();
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
