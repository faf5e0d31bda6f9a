//! The `etcd` discovery source against a real etcd v3 server (Debian's
//! `etcd-server`, `/usr/bin/etcd`), started per test on free loopback
//! ports with a temporary data directory. Keys are written through the
//! same JSON gateway weir reads from.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::Full;
use serde_json::{json, Value};

const ETCD: &str = "/usr/bin/etcd";

/// A running etcd; killed on drop.
/// etcd tests run one at a time: four etcd servers starting at once on a
/// 2-core machine (each fsyncing its WAL) can take longer than any sane
/// deadline, and serialising also rules out two of them racing for a port.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct EtcdServer {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    /// Extra command-line flags.
    flags: Vec<String>,
    _tmp: Option<tempfile::TempDir>,
}

/// Two distinct free loopback ports (both held until both are chosen).
fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

impl EtcdServer {
    async fn start() -> EtcdServer {
        EtcdServer::start_with(&[]).await
    }

    async fn start_with(flags: &[&str]) -> EtcdServer {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: install Debian's etcd-server (scripts/test.sh does)"
        );
        let serial = SERIAL.lock().await;
        let tmp = tempfile::tempdir().unwrap();
        let (client_port, peer_port) = free_ports();
        let mut s = EtcdServer {
            _serial: serial,
            child: None,
            client_port,
            peer_port,
            dir: tmp.path().join("data"),
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            _tmp: Some(tmp),
        };
        s.spawn().await;
        s
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// Starts the process (again, on the same ports and data) and waits
    /// until a range read answers.
    async fn spawn(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.with_extension("log")).unwrap();
        let child = Command::new(ETCD)
            .args(["--name", "t", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(&self.flags)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if try_call(
                self.addr(),
                "/v3/kv/range",
                json!({"key": B64.encode("x")}),
                None,
            )
            .await
            .is_some_and(|(s, _)| s == StatusCode::OK)
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "etcd did not come up: {}",
                std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn put(&self, key: &str, value: &str) {
        self.put_as(key, value, None).await;
    }

    async fn put_as(&self, key: &str, value: &str, token: Option<&str>) {
        call(
            self.addr(),
            "/v3/kv/put",
            json!({"key": B64.encode(key), "value": B64.encode(value)}),
            token,
        )
        .await;
    }

    async fn delete(&self, key: &str) {
        call(
            self.addr(),
            "/v3/kv/deleterange",
            json!({"key": B64.encode(key)}),
            None,
        )
        .await;
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One JSON POST to etcd's gateway; `None` if it could not be sent.
async fn try_call(
    addr: SocketAddr,
    path: &str,
    body: Value,
    token: Option<&str>,
) -> Option<(StatusCode, Value)> {
    let mut req = http::Request::post(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", t.parse().unwrap());
    }
    let res = tokio::time::timeout(Duration::from_secs(2), client().request(req))
        .await
        .ok()?
        .ok()?;
    let status = res.status();
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .ok()?
        .to_bytes();
    Some((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

async fn call(addr: SocketAddr, path: &str, body: Value, token: Option<&str>) -> Value {
    let (status, v) = try_call(addr, path, body, token).await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {v}");
    v
}

fn yaml(etcd: &str, extra: &str) -> String {
    yaml_eps(&[etcd], extra)
}

fn yaml_eps(endpoints: &[&str], extra: &str) -> String {
    let etcd = endpoints
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "listeners: [{{name: main, bind: \"127.0.0.1:0\"}}]\n\
         admin: {{bind: \"127.0.0.1:0\"}}\n\
         access_log: {{enabled: false}}\n\
         routes: [{{pool: p}}]\n\
         pools:\n  - name: p\n    balance: round_robin\n    discovery:\n      \
         - etcd: {{endpoints: [{etcd}], prefix: /services/p/{extra}}}\n"
    )
}

async fn source_state(weir: &weir::Weir) -> Value {
    let (_, status) = admin_get(weir, "/status").await;
    let status: Value = serde_json::from_str(&status).unwrap();
    status["pools"][0]["sources"][0].clone()
}

#[tokio::test]
async fn keys_are_served_and_changes_arrive_through_the_watch() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let c3 = echo_backend("c").await;
    let etcd = EtcdServer::start().await;
    etcd.put("/services/p/a", &a.addr.to_string()).await;
    etcd.put(
        "/services/p/b",
        &json!({"address": b.addr.to_string(), "weight": 1}).to_string(),
    )
    .await;
    // Outside the prefix: ignored.
    etcd.put("/services/q/x", &c3.addr.to_string()).await;
    // A long poll interval, so only the watch can deliver changes quickly.
    let weir = start(&yaml(&etcd.url(), ", poll_interval: 30s")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    until_set(&weir, &[a.addr, b.addr], Duration::from_secs(5)).await;
    assert_eq!(backends_hit(&c, addr, 4).await, names(&["a", "b"]));
    let source = source_state(&weir).await;
    assert_eq!(source["name"], "etcd[0]");
    assert_eq!(source["state"], "ok");

    // The watch starts at the read's revision + 1, so this put is delivered
    // even if it lands before the watch is open.
    etcd.put("/services/p/c", &c3.addr.to_string()).await;
    let took = until_set(&weir, &[a.addr, b.addr, c3.addr], Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "put took {took:?}");
    assert_eq!(backends_hit(&c, addr, 6).await, names(&["a", "b", "c"]));

    etcd.delete("/services/p/a").await;
    let took = until_set(&weir, &[b.addr, c3.addr], Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "delete took {took:?}");
    assert_eq!(backends_hit(&c, addr, 6).await, names(&["b", "c"]));

    // Re-pointing a key moves traffic too.
    etcd.put("/services/p/c", &a.addr.to_string()).await;
    let took = until_set(&weir, &[a.addr, b.addr], Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "update took {took:?}");
}

#[tokio::test]
async fn etcd_down_keeps_the_last_endpoints_and_recovers() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let c3 = echo_backend("c").await;
    let mut etcd = EtcdServer::start().await;
    etcd.put("/services/p/a", &a.addr.to_string()).await;
    etcd.put("/services/p/b", &b.addr.to_string()).await;
    let weir = start(&yaml(&etcd.url(), ", poll_interval: 1s, timeout: 1s")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    until_set(&weir, &[a.addr, b.addr], Duration::from_secs(5)).await;

    etcd.kill();
    let stale = async {
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if source_state(&weir).await["state"] == "stale" {
                return true;
            }
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(stale.await, "{}", source_state(&weir).await);
    assert!(source_state(&weir).await["last_error"].is_string());
    // Serving from the last good set across several poll intervals.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        assert_eq!(backends_hit(&c, addr, 2).await, names(&["a", "b"]));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(addrs(&weir), [a.addr, b.addr].into());

    // Back on the same ports and data; then the keys change.
    etcd.spawn().await;
    etcd.put("/services/p/c", &c3.addr.to_string()).await;
    etcd.delete("/services/p/a").await;
    until_set(&weir, &[b.addr, c3.addr], Duration::from_secs(15)).await;
    assert_eq!(backends_hit(&c, addr, 4).await, names(&["b", "c"]));
    let ok = async {
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < end {
            if source_state(&weir).await["state"] == "ok" {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(ok.await);
}

#[tokio::test]
async fn malformed_values_are_skipped_weights_apply_and_dead_members_are_skipped() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let etcd = EtcdServer::start().await;
    etcd.put("/services/p/a", &a.addr.to_string()).await;
    etcd.put("/services/p/bad", "not-an-address").await;
    etcd.put("/services/p/bad-json", "{\"address\": 7}").await;
    etcd.put(
        "/services/p/b",
        &json!({"address": b.addr.to_string(), "weight": 3}).to_string(),
    )
    .await;
    // The first client URL is dead: weir fails over to the second.
    let dead = format!("http://{}", dead_addr().await);
    let weir = start(&yaml_eps(&[&dead, &etcd.url()], "")).await;
    let addr = weir.listener_addr("main").unwrap();
    until_set(&weir, &[a.addr, b.addr], Duration::from_secs(5)).await;
    let c = client();
    for _ in 0..40 {
        let (p, _) = send(&c, get(addr, "x", "/")).await;
        assert_eq!(p.status, StatusCode::OK);
    }
    assert_eq!((a.count(), b.count()), (10, 30));
    assert_eq!(source_state(&weir).await["endpoints"], 2);
}

#[tokio::test]
async fn authenticates_with_username_and_password() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let etcd = EtcdServer::start().await;
    let ea = etcd.addr();
    etcd.put("/services/p/a", &a.addr.to_string()).await;
    call(
        ea,
        "/v3/auth/user/add",
        json!({"name": "root", "password": "s3cret"}),
        None,
    )
    .await;
    call(
        ea,
        "/v3/auth/user/grant",
        json!({"user": "root", "role": "root"}),
        None,
    )
    .await;
    call(ea, "/v3/auth/enable", json!({}), None).await;
    // Without credentials, reads are refused now.
    let (status, _) = try_call(ea, "/v3/kv/range", json!({"key": B64.encode("/")}), None)
        .await
        .unwrap();
    assert_ne!(status, StatusCode::OK);

    let weir = start(&yaml(
        &etcd.url(),
        ", username: root, password: s3cret, poll_interval: 30s",
    ))
    .await;
    until_set(&weir, &[a.addr], Duration::from_secs(5)).await;
    let token = call(
        ea,
        "/v3/auth/authenticate",
        json!({"name": "root", "password": "s3cret"}),
        None,
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    etcd.put_as("/services/p/b", &b.addr.to_string(), Some(&token))
        .await;
    let took = until_set(&weir, &[a.addr, b.addr], Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

/// A stand-in for etcd behind a proxy that cannot stream: range reads
/// answer like etcd's gateway, every watch is refused.
#[derive(Clone, Default)]
struct NoWatchGateway {
    value: Arc<Mutex<String>>,
    ranges: Arc<AtomicUsize>,
    watches: Arc<AtomicUsize>,
}

impl NoWatchGateway {
    async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gw = self.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let gw = gw.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                        let gw = gw.clone();
                        async move {
                            let _: &hyper::body::Incoming = req.body();
                            let mut res = if req.uri().path() == "/v3/kv/range" {
                                let n = gw.ranges.fetch_add(1, Ordering::SeqCst);
                                let value = gw.value.lock().unwrap().clone();
                                let body = json!({
                                    "header": {"cluster_id": "1", "member_id": "1",
                                               "revision": (n + 10).to_string(), "raft_term": "2"},
                                    "kvs": [{"key": B64.encode("/services/p/a"),
                                             "mod_revision": "5", "value": B64.encode(value)}],
                                    "count": "1"
                                });
                                http::Response::new(Full::new(Bytes::from(body.to_string())))
                            } else {
                                gw.watches.fetch_add(1, Ordering::SeqCst);
                                let mut r = http::Response::new(Full::new(Bytes::from(
                                    "{\"error\": \"streaming not supported\"}",
                                )));
                                *r.status_mut() = StatusCode::NOT_IMPLEMENTED;
                                r
                            };
                            res.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(res)
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

#[tokio::test]
async fn without_watches_it_polls_at_poll_interval() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let gw = NoWatchGateway::default();
    *gw.value.lock().unwrap() = a.addr.to_string();
    let gw_addr = gw.serve().await;
    let weir = start(&yaml(
        &format!("http://{gw_addr}"),
        ", poll_interval: 300ms",
    ))
    .await;
    until_set(&weir, &[a.addr], Duration::from_secs(5)).await;
    // Once watching has failed a few times, reads come every poll_interval.
    assert!(
        eventually(Duration::from_secs(5), || gw.watches.load(Ordering::SeqCst)
            >= 3)
        .await
    );
    *gw.value.lock().unwrap() = b.addr.to_string();
    let took = until_set(&weir, &[b.addr], Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(source_state(&weir).await["state"], "ok");
    // Not faster than poll_interval: five more reads take at least ~1.5 s.
    let before = gw.ranges.load(Ordering::SeqCst);
    let t = tokio::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || gw.ranges.load(Ordering::SeqCst)
            >= before + 5)
        .await
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );
    // One watch attempt per read at most: it keeps trying to get back to
    // watching, without spinning.
    assert!(gw.watches.load(Ordering::SeqCst) <= gw.ranges.load(Ordering::SeqCst) + 1);
}

/// A quiet watch is confirmed by probes, so it never expires; when etcd
/// stops, the last set is served for `max_stale` counted from the last
/// contact, not from the last change.
#[tokio::test]
async fn a_quiet_watch_stays_fresh_and_an_outage_keeps_the_set_for_max_stale() {
    let a = echo_backend("a").await;
    let mut etcd = EtcdServer::start().await;
    etcd.put("/services/p/a", &a.addr.to_string()).await;
    // A long poll interval: only the probes can confirm the quiet watch.
    let weir = start(&yaml(
        &etcd.url(),
        ", poll_interval: 30s, timeout: 1s, max_stale: 3s",
    ))
    .await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    until_set(&weir, &[a.addr], Duration::from_secs(5)).await;
    // No change for longer than max_stale: still `ok`, contacts advance.
    stays_fresh(&weir, &c, &["a"], 3.5).await;

    etcd.kill();
    let stopped = unix_now();
    let outage = serve_until_expired(&weir, &c, &["a"], stopped, 6.0).await;
    assert!(outage.saw_stale, "{outage:?}");
    // The last contact was a probe at most ~1 s before the stop.
    assert!(
        outage.last_contact > stopped - 1.5,
        "{outage:?} vs {stopped}"
    );
    assert!(outage.served_for > 1.5, "{outage:?}");
    let age = outage.expired_at - outage.last_contact;
    assert!((2.9..4.0).contains(&age), "{outage:?}");
    let (p, _) = send(&c, get(addr, "x", "/")).await;
    assert_eq!(p.status, StatusCode::SERVICE_UNAVAILABLE);
}

/// The watch asks for progress notifications; each is a contact, so a
/// server that sends them often keeps a quiet watch's `last_success`
/// current without any probe (no `max_stale` here).
#[tokio::test]
async fn progress_notifications_count_as_contact() {
    let a = echo_backend("a").await;
    let etcd =
        EtcdServer::start_with(&["--experimental-watch-progress-notify-interval=300ms"]).await;
    etcd.put("/services/p/a", &a.addr.to_string()).await;
    let weir = start(&yaml(&etcd.url(), ", poll_interval: 30s")).await;
    let c = client();
    until_set(&weir, &[a.addr], Duration::from_secs(5)).await;
    stays_fresh(&weir, &c, &["a"], 1.0).await;
}
