//! `pools[].circuit_breaker` under concurrent load on real sockets: each
//! threshold refuses at once with a 503 and `x-weir-overloaded: true`
//! (a retry past `max_retries` is not made), counts in
//! `weir_circuit_breaker_rejected_total`, shows in `/status`, and lets
//! traffic through again once the load is gone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Response, StatusCode};
use http_body_util::Full;
use tokio::sync::Semaphore;

/// A backend that holds every `/hang` request until the test adds a
/// permit to `gate`; other paths answer at once.
async fn holding_backend(gate: Arc<Semaphore>) -> TestBackend {
    backend_with("slow", move |seen, _| {
        let gate = Arc::clone(&gate);
        async move {
            if seen.uri.path() == "/hang" {
                gate.acquire().await.unwrap().forget();
            }
            Response::new(Full::new(Bytes::from_static(b"ok")))
        }
    })
    .await
}

fn spawn_get(
    c: &HttpClient,
    addr: SocketAddr,
    path: &'static str,
) -> tokio::task::JoinHandle<StatusCode> {
    let c = c.clone();
    tokio::spawn(async move { send(&c, get(addr, "t", path)).await.0.status })
}

async fn breaker_count(weir: &weir::Weir, threshold: &str) -> f64 {
    let s = scrape(weir).await;
    sample(
        &s,
        "weir_circuit_breaker_rejected_total",
        &[("pool", "p"), ("threshold", threshold)],
    )
    .unwrap_or(0.0)
}

/// Waits until the backend has seen `n` requests.
async fn until_seen(b: &TestBackend, n: usize) {
    assert!(
        eventually(Duration::from_secs(10), || b.count() >= n).await,
        "backend saw {}",
        b.count()
    );
}

#[tokio::test]
async fn max_requests_refuses_at_once_and_recovers() {
    let gate = Arc::new(Semaphore::new(0));
    let backend = holding_backend(Arc::clone(&gate)).await;
    let extra = "    circuit_breaker: { max_requests: 2 }\n";
    let weir = start(&simple_config(&[backend.addr], extra)).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    let held = [spawn_get(&c, addr, "/hang"), spawn_get(&c, addr, "/hang")];
    until_seen(&backend, 2).await;
    let (_, status) = admin_get(&weir, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let cb = &status["pools"][0]["circuit_breaker"]["max_requests"];
    assert_eq!(
        (cb["max"].as_u64(), cb["current"].as_u64()),
        (Some(2), Some(2))
    );

    let (parts, _) = send(&c, get(addr, "t", "/now")).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(parts.headers["x-weir-overloaded"], "true");
    assert_eq!(
        backend.count(),
        2,
        "the refused request never reached the endpoint"
    );
    assert_eq!(breaker_count(&weir, "max_requests").await, 1.0);

    gate.add_permits(2);
    for h in held {
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        send(&c, get(addr, "t", "/now")).await.0.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn max_pending_requests_bounds_the_limits_queue() {
    let gate = Arc::new(Semaphore::new(0));
    let backend = holding_backend(Arc::clone(&gate)).await;
    let extra = "    limits: { max_requests: 1, queue_timeout: 30s }\n\
                 \x20   circuit_breaker: { max_pending_requests: 1 }\n";
    let weir = start(&simple_config(&[backend.addr], extra)).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    let running = spawn_get(&c, addr, "/hang");
    until_seen(&backend, 1).await;
    let waiting = spawn_get(&c, addr, "/hang");
    // The second request waits in the queue: the status shows it.
    let queued = eventually(Duration::from_secs(10), || {
        weir.shared().snapshot().pools[0].breaker().counts().1 == 1
    })
    .await;
    assert!(queued);
    // The third would wait too: refused at once, long before queue_timeout.
    let third = tokio::time::timeout(Duration::from_secs(10), send(&c, get(addr, "t", "/now")))
        .await
        .expect("refused without waiting for the queue");
    assert_eq!(third.0.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(third.0.headers["x-weir-overloaded"], "true");
    assert_eq!(breaker_count(&weir, "max_pending_requests").await, 1.0);
    gate.add_permits(2);
    assert_eq!(running.await.unwrap(), StatusCode::OK);
    assert_eq!(waiting.await.unwrap(), StatusCode::OK);
}

#[tokio::test]
async fn max_connections_refuses_a_request_that_needs_a_new_connection() {
    let gate = Arc::new(Semaphore::new(0));
    let backend = holding_backend(Arc::clone(&gate)).await;
    let extra = "    circuit_breaker: { max_connections: 1 }\n";
    let weir = start(&simple_config(&[backend.addr], extra)).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    let held = spawn_get(&c, addr, "/hang");
    until_seen(&backend, 1).await;
    let (parts, _) = send(&c, get(addr, "t", "/now")).await;
    assert_eq!(parts.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(parts.headers["x-weir-overloaded"], "true");
    assert_eq!(breaker_count(&weir, "max_connections").await, 1.0);
    gate.add_permits(1);
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    // The one connection is idle now: requests reuse it, one at a time.
    for _ in 0..3 {
        assert_eq!(
            send(&c, get(addr, "t", "/now")).await.0.status,
            StatusCode::OK
        );
    }
}

#[tokio::test]
async fn max_retries_stops_retries_while_one_is_in_flight() {
    let gate = Arc::new(Semaphore::new(0));
    let backend = holding_backend(Arc::clone(&gate)).await;
    let dead = dead_addr().await;
    // Round robin over a refusing endpoint and the holding one: a request
    // that meets the refusal is retried on the other.
    let pool = |breaker: &str| {
        format!(
            "listeners:\n  - name: main\n    bind: \"127.0.0.1:0\"\n\
             admin:\n  bind: \"127.0.0.1:0\"\n\
             access_log:\n  enabled: false\n\
             routes:\n  - pool: p\n\
             pools:\n  - name: p\n    retries: {{ attempts: 2, budget_min_per_second: 1000 }}\n\
             {breaker}    endpoints:\n      - address: \"{dead}\"\n      - address: \"{}\"\n",
            backend.addr
        )
    };
    let weir = start(&pool("    circuit_breaker: { max_retries: 1 }\n")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    // Hang requests until one of them is a retry in flight.
    let mut held = Vec::new();
    while weir.shared().snapshot().pools[0].breaker().counts().2 == 0 {
        held.push(spawn_get(&c, addr, "/hang"));
        until_seen(&backend, held.len().div_ceil(2)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(held.len() < 20, "no retry reached the holding endpoint");
    }
    // Now every request that meets the refusing endpoint gets its 502:
    // its retry would be the second in flight.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(send(&c, get(addr, "t", "/now")).await.0.status);
    }
    assert!(statuses.contains(&StatusCode::BAD_GATEWAY), "{statuses:?}");
    assert!(
        statuses.contains(&StatusCode::OK),
        "{statuses:?} seen={} held={}",
        backend.count(),
        held.len()
    );
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::BAD_GATEWAY)
        .count();
    assert_eq!(breaker_count(&weir, "max_retries").await, refused as f64);
    gate.add_permits(held.len());
    for h in held {
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
}

#[test]
fn max_pending_requests_needs_a_queue() {
    let yaml = simple_config(
        &["127.0.0.1:9".parse().unwrap()],
        "    circuit_breaker: { max_pending_requests: 5 }\n",
    );
    let err = weir::Config::from_yaml(&yaml, "t.yaml").unwrap_err();
    assert_eq!(
        err.key_path(),
        Some("pools[0].circuit_breaker.max_pending_requests")
    );
    assert!(err.to_string().contains("limits.max_requests"), "{err}");
}
