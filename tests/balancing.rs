//! Distribution of real traffic across real backends, per algorithm.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};

fn pool_yaml(balance: &str, endpoints: &[(SocketAddr, u32)], extra: &str) -> String {
    let eps: String = endpoints
        .iter()
        .map(|(a, w)| format!("      - address: \"{a}\"\n        weight: {w}\n"))
        .collect();
    format!(
        "listeners: [{{name: main, bind: \"127.0.0.1:0\"}}]\n\
         admin: {{bind: \"127.0.0.1:0\"}}\n\
         access_log: {{enabled: false}}\n\
         routes: [{{pool: p}}]\n\
         pools:\n  - name: p\n    balance: {balance}\n{extra}    endpoints:\n{eps}"
    )
}

#[tokio::test]
async fn round_robin_splits_300_requests_exactly_100_each() {
    let bs = [
        echo_backend("a").await,
        echo_backend("b").await,
        echo_backend("c").await,
    ];
    let eps: Vec<_> = bs.iter().map(|b| (b.addr, 1)).collect();
    let weir = start(&pool_yaml("round_robin", &eps, "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    for _ in 0..300 {
        send(&c, get(addr, "x", "/")).await;
    }
    let counts: Vec<usize> = bs.iter().map(|b| b.count()).collect();
    assert_eq!(counts, vec![100, 100, 100]);
}

#[tokio::test]
async fn weights_3_to_1_give_exactly_3_to_1() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let weir = start(&pool_yaml("round_robin", &[(a.addr, 3), (b.addr, 1)], "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    let mut sequence = String::new();
    for _ in 0..200 {
        let (p, _) = send(&c, get(addr, "x", "/")).await;
        sequence.push_str(p.headers["x-backend"].to_str().unwrap());
    }
    assert_eq!((a.count(), b.count()), (150, 50));
    // Smooth: never more than 3 of `a` in a row.
    assert!(!sequence.contains("aaaa"), "{sequence}");
}

/// Sends `total` requests from `concurrency` concurrent clients and returns
/// how many reached the slow endpoint.
async fn share_of_slow(balance: &str, extra: &str) -> (usize, usize) {
    let slow = backend_with("slow", |_, _| async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        http::Response::new(Full::new(Bytes::new()))
    })
    .await;
    let fast1 = echo_backend("f1").await;
    let fast2 = echo_backend("f2").await;
    let weir = start(&pool_yaml(
        balance,
        &[(slow.addr, 1), (fast1.addr, 1), (fast2.addr, 1)],
        extra,
    ))
    .await;
    let addr = weir.listener_addr("main").unwrap();
    let total = 240;
    let concurrency = 8;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        tasks.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..total / concurrency {
                let (p, _) = send(&c, get(addr, "x", "/")).await;
                assert_eq!(p.status, http::StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (slow.count(), total)
}

#[tokio::test]
async fn load_aware_algorithms_send_a_slow_endpoint_far_less_than_round_robin() {
    let (rr, total) = share_of_slow("round_robin", "").await;
    let (lc, _) = share_of_slow("least_connections", "").await;
    let (p2c, _) = share_of_slow("power_of_two_choices", "").await;
    let (ewma, _) = share_of_slow("power_of_two_choices", "    load: peak_ewma\n").await;
    eprintln!("slow endpoint share of {total}: rr {rr}, lc {lc}, p2c {p2c}, p2c+ewma {ewma}");
    // Round robin is blind to load: exactly a third.
    assert_eq!(rr, total / 3, "rr {rr}");
    // The slow endpoint holds each request 500 ms while the fast ones answer
    // in well under a millisecond, so a load-aware pick almost never lands
    // there once it is busy.
    for (name, n) in [
        ("least_connections", lc),
        ("p2c", p2c),
        ("p2c+peak_ewma", ewma),
    ] {
        assert!(
            n * 4 <= rr,
            "{name} sent {n} of {total} to the slow endpoint (rr: {rr})"
        );
    }
}

#[tokio::test]
async fn in_flight_returns_to_zero_after_clients_abort_mid_response() {
    // The backend streams a large body slowly; clients read one frame and
    // hang up.
    let be = backend_with("big", |_, _| async {
        http::Response::new(Full::new(Bytes::from(vec![7u8; 4 * 1024 * 1024])))
    })
    .await;
    for balance in ["round_robin", "least_connections", "power_of_two_choices"] {
        let weir = start(&pool_yaml(balance, &[(be.addr, 1)], "")).await;
        let addr = weir.listener_addr("main").unwrap();
        for _ in 0..5 {
            let c = client();
            let res = c.request(get(addr, "x", "/")).await.unwrap();
            let mut body = res.into_body();
            let _ = body.frame().await;
            drop(body);
            drop(c);
        }
        let snap = weir.shared().snapshot_full();
        let backend = snap.pools[0].backends().backends()[0].clone();
        assert!(
            eventually(Duration::from_secs(5), || backend.in_flight() == 0).await,
            "{balance}: in-flight stuck at {}",
            backend.in_flight()
        );
    }
}
