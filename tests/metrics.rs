//! The admin listener and the metrics it serves, checked by sending known
//! traffic and parsing `/metrics` with a Prometheus text-format parser.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::Full;

#[tokio::test]
async fn counters_match_the_traffic_sent_per_endpoint_and_status_class() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let dead = dead_addr().await;
    let yaml = format!(
        r#"
listeners: [{{name: main, bind: "127.0.0.1:0"}}]
admin: {{bind: "127.0.0.1:0"}}
access_log: {{enabled: false}}
routes:
  - {{name: web, hosts: [web.test], pool: web}}
  - {{name: broken, hosts: [broken.test], pool: broken}}
pools:
  - {{name: web, endpoints: [{{address: "{}"}}, {{address: "{}"}}]}}
  - {{name: broken, endpoints: [{{address: "{dead}"}}]}}
"#,
        a.addr, b.addr
    );
    let weir = start(&yaml).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    for _ in 0..10 {
        let (p, _) = send(&c, get(addr, "web.test", "/")).await;
        assert_eq!(p.status, StatusCode::OK);
    }
    for _ in 0..4 {
        let req = http::Request::post(format!("http://{addr}/up"))
            .header("host", "web.test")
            .body(Full::new(Bytes::from_static(b"0123456789")))
            .unwrap();
        let (p, body) = send(&c, req).await;
        assert_eq!((p.status, body.len()), (StatusCode::OK, 10));
    }
    for _ in 0..3 {
        let (p, _) = send(&c, get(addr, "broken.test", "/")).await;
        assert_eq!(p.status, StatusCode::BAD_GATEWAY);
    }
    for _ in 0..2 {
        let (p, _) = send(&c, get(addr, "nowhere.test", "/")).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND);
    }

    // The access-log/metrics record is written when the body ends, which
    // can be a moment after the client has read it.
    let mut s = scrape(&weir).await;
    for _ in 0..50 {
        if sample(
            &s,
            "weir_request_duration_seconds_count",
            &[("pool", "web")],
        ) == Some(14.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        s = scrape(&weir).await;
    }
    let req = |route, pool, method, class| {
        sample(
            &s,
            "weir_requests_total",
            &[
                ("route", route),
                ("pool", pool),
                ("method", method),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(req("web", "web", "GET", "2xx"), Some(10.0));
    assert_eq!(req("web", "web", "POST", "2xx"), Some(4.0));
    assert_eq!(req("broken", "broken", "GET", "5xx"), Some(3.0));
    assert_eq!(req("", "", "GET", "4xx"), Some(2.0));
    assert_eq!(
        req("web", "web", "GET", "5xx"),
        None,
        "no series for what never happened"
    );

    let ep = |addr: std::net::SocketAddr, class| {
        sample(
            &s,
            "weir_upstream_requests_total",
            &[
                ("pool", "web"),
                ("endpoint", &addr.to_string()),
                ("status_class", class),
            ],
        )
    };
    assert_eq!(ep(a.addr, "2xx"), Some(7.0));
    assert_eq!(ep(b.addr, "2xx"), Some(7.0));
    assert_eq!(a.count() + b.count(), 14);
    let dead_s = dead.to_string();
    assert_eq!(
        sample(
            &s,
            "weir_upstream_requests_total",
            &[("endpoint", &dead_s), ("status_class", "error")]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &s,
            "weir_upstream_connect_errors_total",
            &[("endpoint", &dead_s)]
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &s,
            "weir_upstream_picks_total",
            &[("endpoint", &a.addr.to_string())]
        ),
        Some(7.0)
    );
    assert_eq!(
        sample(
            &s,
            "weir_request_duration_seconds_count",
            &[("pool", "web")]
        ),
        Some(14.0)
    );
    assert_eq!(
        sample(
            &s,
            "weir_upstream_response_seconds_count",
            &[("endpoint", &b.addr.to_string())]
        ),
        Some(7.0)
    );
    assert_eq!(
        sample(
            &s,
            "weir_downstream_received_bytes_total",
            &[("pool", "web")]
        ),
        Some(40.0)
    );
    assert_eq!(
        sample(&s, "weir_downstream_sent_bytes_total", &[("pool", "web")]),
        Some(40.0)
    );
    assert_eq!(
        sample(
            &s,
            "weir_downstream_connections_total",
            &[("listener", "main")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &s,
            "weir_upstream_weight",
            &[("endpoint", &a.addr.to_string())]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &s,
            "weir_pool_endpoints",
            &[("pool", "web"), ("state", "available")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &s,
            "weir_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert!(sample(&s, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
}

#[tokio::test]
async fn status_shows_in_flight_and_weights_and_readyz_flips_during_shutdown() {
    let slow = backend_with("slow", |_, _| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        http::Response::new(Full::new(Bytes::from_static(b"late")))
    })
    .await;
    let yaml = simple_config(&[slow.addr], "").replace(
        &format!("      - address: \"{}\"\n", slow.addr),
        &format!("      - address: \"{}\"\n        weight: 7\n", slow.addr),
    );
    let weir = start(&yaml).await;
    let addr = weir.listener_addr("main").unwrap();
    assert_eq!(admin_get(&weir, "/readyz").await.0, StatusCode::OK);
    assert_eq!(admin_get(&weir, "/healthz").await.0, StatusCode::OK);

    let in_flight = tokio::spawn(async move { send(&client(), get(addr, "x", "/")).await });
    assert!(eventually(Duration::from_secs(5), || slow.count() == 1).await);
    let (_, body) = admin_get(&weir, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ep = &status["pools"][0]["endpoints"][0];
    assert_eq!(ep["address"], slow.addr.to_string());
    assert_eq!(ep["weight"], 7);
    assert_eq!(ep["in_flight"], 1);
    assert_eq!(status["listeners"][0]["name"], "main");
    assert_eq!(status["config_version"], 1);

    let admin = weir.admin_addr();
    let shutdown = tokio::spawn(weir.shutdown());
    // While the slow request drains, readiness is withdrawn.
    let c = client();
    let mut saw_503 = false;
    for _ in 0..100 {
        let (p, _) = send(&c, get(admin, "admin", "/readyz")).await;
        if p.status == StatusCode::SERVICE_UNAVAILABLE {
            saw_503 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_503, "/readyz never turned 503 during shutdown");
    assert!(!in_flight.is_finished(), "request should still be draining");
    let (p, body) = in_flight.await.unwrap();
    assert_eq!((p.status, &body[..]), (StatusCode::OK, &b"late"[..]));
    assert!(shutdown.await.unwrap().drained);
}

#[tokio::test]
async fn admin_answers_404_and_405() {
    let be = echo_backend("a").await;
    let weir = start(&simple_config(&[be.addr], "")).await;
    assert_eq!(admin_get(&weir, "/nope").await.0, StatusCode::NOT_FOUND);
    let req = http::Request::post(format!("http://{}/metrics", weir.admin_addr()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (p, _) = send(&client(), req).await;
    assert_eq!(p.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(p.headers["allow"], "GET, HEAD");
}

#[tokio::test]
async fn series_of_removed_pools_and_endpoints_disappear() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let yaml = |eps: &[std::net::SocketAddr]| simple_config(eps, "");
    let weir = start(&yaml(&[a.addr, b.addr])).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    for _ in 0..4 {
        send(&c, get(addr, "x", "/")).await;
    }
    let b_s = b.addr.to_string();
    let s = scrape(&weir).await;
    assert!(sample(&s, "weir_upstream_picks_total", &[("endpoint", &b_s)]).is_some());

    // Apply a config that no longer has endpoint b.
    let config = weir::Config::from_yaml(&yaml(&[a.addr]), "t").unwrap();
    let summary = weir.apply(config).await.unwrap();
    assert_eq!(summary.endpoints_removed, vec![format!("p/{b_s}")]);
    let s = scrape(&weir).await;
    for family in [
        "weir_upstream_picks_total",
        "weir_upstream_requests_total",
        "weir_upstream_weight",
    ] {
        assert!(
            sample(&s, family, &[("endpoint", &b_s)]).is_none(),
            "{family} kept a series for b"
        );
    }
    assert!(sample(
        &s,
        "weir_upstream_picks_total",
        &[("endpoint", &a.addr.to_string())]
    )
    .is_some());
}
