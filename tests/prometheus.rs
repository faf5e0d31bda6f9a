//! A real Prometheus server scrapes weir's admin listener, and `promtool`
//! lints the exposition. Both come from Debian's `prometheus` package, which
//! the README's test command (`scripts/test.sh`) installs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn require(bin: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "`{bin}` is not installed; run the tests with scripts/test.sh, which installs it"
    );
    String::from_utf8(found.stdout).unwrap().trim().to_owned()
}

struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn query(c: &HttpClient, prom: std::net::SocketAddr, q: &str) -> Option<f64> {
    let url = format!(
        "http://{prom}/api/v1/query?query={}",
        q.replace(' ', "%20")
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22")
            .replace('=', "%3D")
    );
    let req = http::Request::get(url)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let res = c.request(req).await.ok()?;
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .ok()?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test]
async fn a_real_prometheus_scrapes_weir_and_sees_the_traffic() {
    let prometheus = require("prometheus");
    let be = echo_backend("a").await;
    let weir = start(&simple_config(&[be.addr], "")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    for _ in 0..25 {
        let (p, _) = send(&c, get(addr, "x", "/")).await;
        assert_eq!(p.status, http::StatusCode::OK);
    }

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: weir\n    static_configs:\n      - targets: [\"{}\"]\n",
            weir.admin_addr()
        ),
    )
    .unwrap();
    let prom_addr = dead_addr().await; // a free loopback port for its web API
    let _prom = Reap(
        Command::new(prometheus)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut up = None;
    let mut total = None;
    while tokio::time::Instant::now() < deadline {
        up = query(&c, prom_addr, "up{job=\"weir\"}").await;
        total = query(&c, prom_addr, "sum(weir_requests_total{pool=\"p\"})").await;
        if up == Some(1.0) && total == Some(25.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(up, Some(1.0), "prometheus never scraped weir successfully");
    assert_eq!(
        total,
        Some(25.0),
        "scraped request counter does not match the traffic"
    );
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let promtool = require("promtool");
    let be = echo_backend("a").await;
    let weir = start(&simple_config(&[be.addr], "")).await;
    let addr = weir.listener_addr("main").unwrap();
    send(&client(), get(addr, "x", "/")).await;
    let (_, text) = admin_get(&weir, "/metrics").await;
    assert!(text.contains("weir_requests_total"));
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
