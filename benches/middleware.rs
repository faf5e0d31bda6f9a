//! What does a route's middleware chain cost per request?
//!
//! Builds the chains from a real config (as a reload does) and runs each
//! over a typical HTTP/1.1 request: `none` is a route without middleware
//! (the proxy's whole cost is one `Option` check), then one step of each
//! kind that runs on every request of a protected route — a `headers`
//! edit, a `rate_limit` keyed by client address (well under its limit, so
//! the bucket is updated and the request passes), and a `jwt` verify of
//! an HS256 token with the key cached. Each iteration gets a fresh copy
//! of the request, made outside the measurement.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures_util::FutureExt as _;
use http::{HeaderMap, HeaderValue, Method, Uri, Version};
use tokio::time::Instant;
use weir::metrics::Metrics;
use weir::middleware::{Chain, Fields, Request, Set};

const MIDDLEWARE: &str = "
middleware:
  - name: edit
    headers: { request: { set: { X-Env: prod }, remove: [X-Debug] } }
  - name: limit
    rate_limit: { average: 1000000000, period: 1s, key: client_ip }
";

fn config(extra_middleware: &str, routes: &str) -> weir::Config {
    let yaml = format!(
        "listeners: [{{name: l, bind: \"127.0.0.1:0\"}}]\n{MIDDLEWARE}{extra_middleware}\
         routes:\n{routes}pools: [{{name: p, endpoints: [{{address: \"127.0.0.1:9\"}}]}}]\n"
    );
    weir::Config::from_yaml(&yaml, "bench.yaml").unwrap()
}

/// The chain of each route of `config`, in order (`None` without middleware).
fn chains(config: &weir::Config, metrics: &Metrics) -> Vec<Option<Arc<Chain>>> {
    let set = Set::build(&config.middleware, None);
    let trusted: Arc<[ipnet::IpNet]> = Arc::from(Vec::new());
    config
        .routes
        .iter()
        .map(|r| set.chain(r, &trusted, metrics))
        .collect()
}

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("app.example.com"));
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h
}

/// Runs `chain` (if any) on a view of a GET, as the proxy does: a route
/// without middleware costs its `Option` check. The request is handed
/// back, so that dropping it is not measured.
fn run(
    chain: Option<&Chain>,
    (mut uri, mut map): (Uri, HeaderMap),
    start: Instant,
) -> (bool, Uri, HeaderMap) {
    let Some(chain) = black_box(chain) else {
        return (true, uri, map);
    };
    let mut req = Request::new(
        &Method::GET,
        &mut uri,
        Version::HTTP_11,
        Fields::new(&mut map, None),
        "app.example.com",
        false,
        [192, 0, 2, 1].into(),
        start,
    );
    let passed = chain.run(&mut req).now_or_never().unwrap().is_ok();
    (passed, uri, map)
}

fn chain_cost(c: &mut Criterion) {
    let metrics = Metrics::new().unwrap();
    let cfg = config(
        &jwt_middleware(),
        "  - {path_prefix: /none, pool: p}\n\
         \x20 - {path_prefix: /headers, pool: p, middleware: [edit]}\n\
         \x20 - {path_prefix: /rate, pool: p, middleware: [limit]}\n\
         \x20 - {path_prefix: /jwt, pool: p, middleware: [token]}\n",
    );
    let chains = chains(&cfg, &metrics);
    let uri: Uri = "/api/users?id=7".parse().unwrap();
    let base = headers();
    let mut with_token = headers();
    with_token.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", hs256_token())).unwrap(),
    );
    let start = Instant::now();
    let mut g = c.benchmark_group("middleware");
    for (name, chain, fields) in [
        ("none", &chains[0], &base),
        ("headers", &chains[1], &base),
        ("rate_limit", &chains[2], &base),
        ("jwt_hs256_cached", &chains[3], &with_token),
    ] {
        let request = || (uri.clone(), fields.clone());
        assert!(
            run(chain.as_deref(), request(), start).0,
            "{name} lets the request on"
        );
        g.bench_function(name, |b| {
            b.iter_batched(
                request,
                |r| run(chain.as_deref(), r, start),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

const SECRET: &[u8] = b"bench-secret-bench-secret-bench-secret!!";

/// A `jwt` middleware named `token` over an HS256 secret file (kept for
/// the process's life).
fn jwt_middleware() -> String {
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    let path = dir.path().join("jwt.key");
    std::fs::write(&path, SECRET).unwrap();
    format!(
        "  - name: token\n    jwt: {{ secret_file: \"{}\", audience: api, \
         claims_to_headers: {{ sub: X-User }} }}\n",
        path.display()
    )
}

/// A token for `sub: alice`, audience `api`, valid for an hour.
fn hs256_token() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let claims = serde_json::json!({ "sub": "alice", "aud": "api", "exp": exp });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

criterion_group!(benches, chain_cost);
criterion_main!(benches);
