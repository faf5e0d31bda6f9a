//! The `consul` discovery source.
//!
//! No Consul server can be installed in the test environment, so these
//! tests run against a local HTTP server that replays answers shaped
//! exactly like Consul's documented `GET /v1/health/service/<name>` output
//! (an array of `{Node, Service, Checks}` objects) and implements Consul's
//! blocking-query behaviour: every answer carries `X-Consul-Index`, and a
//! request whose `index` equals the current index is held for up to its
//! `wait` (or until the test changes the data) before it is answered. The
//! server records every query string so the tests can check the filters
//! weir sends.
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
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// How the fake answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    Error500,
    Garbage,
}

struct State {
    index: u64,
    body: String,
    mode: Mode,
}

/// A fake Consul agent serving one service's health entries.
#[derive(Clone)]
struct FakeConsul {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    queries: Arc<Mutex<Vec<String>>>,
    /// Requests currently held by a blocking query.
    held: Arc<AtomicUsize>,
    failures_served: Arc<AtomicUsize>,
}

/// One health entry as Consul returns it.
fn instance(id: &str, node_addr: &str, svc_addr: &str, port: u16, passing: u32) -> Value {
    json!({
        "Node": {
            "ID": "40e4a748-2192-161a-0510-9bf59fe950b5",
            "Node": format!("node-{id}"),
            "Address": node_addr,
            "Datacenter": "dc1",
            "TaggedAddresses": {"lan": node_addr, "wan": node_addr},
            "Meta": {"instance_type": "t2.medium"},
            "CreateIndex": 5,
            "ModifyIndex": 5
        },
        "Service": {
            "ID": id,
            "Service": "web",
            "Tags": ["v2", "primary"],
            "Address": svc_addr,
            "Meta": {},
            "Port": port,
            "Weights": {"Passing": passing, "Warning": 1},
            "EnableTagOverride": false,
            "CreateIndex": 7,
            "ModifyIndex": 7
        },
        "Checks": [
            {"Node": format!("node-{id}"), "CheckID": "serfHealth", "Name": "Serf Health Status",
             "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
             "ServiceID": "", "ServiceName": "", "ServiceTags": []},
            {"Node": format!("node-{id}"), "CheckID": format!("service:{id}"),
             "Name": "Service 'web' check", "Status": "passing", "Notes": "", "Output": "",
             "ServiceID": id, "ServiceName": "web", "ServiceTags": ["v2", "primary"]}
        ]
    })
}

/// Go duration as Consul's `wait=` takes it (`10s`, `1500ms`).
fn parse_wait(s: &str) -> Option<Duration> {
    if let Some(ms) = s.strip_suffix("ms") {
        return ms.parse().ok().map(Duration::from_millis);
    }
    s.strip_suffix('s')?.parse().ok().map(Duration::from_secs)
}

impl FakeConsul {
    fn new(entries: Vec<Value>) -> FakeConsul {
        FakeConsul {
            state: Arc::new(Mutex::new(State {
                index: 100,
                body: Value::Array(entries).to_string(),
                mode: Mode::Normal,
            })),
            changed: Arc::default(),
            queries: Arc::default(),
            held: Arc::default(),
            failures_served: Arc::default(),
        }
    }

    /// Replaces the entries and bumps the index, waking held queries.
    fn set(&self, entries: Vec<Value>) {
        {
            let mut st = self.state.lock().unwrap();
            st.index += 1;
            st.body = Value::Array(entries).to_string();
        }
        self.changed.notify_waiters();
    }

    fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
        self.changed.notify_waiters();
    }

    fn queries(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let query = req.uri().query().unwrap_or("").to_owned();
        self.queries
            .lock()
            .unwrap()
            .push(format!("{}?{query}", req.uri().path()));
        if req.uri().path() != "/v1/health/service/web" {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
        let param = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_owned))
        };
        let index: Option<u64> = param("index").and_then(|i| i.parse().ok());
        let wait = param("wait")
            .and_then(|w| parse_wait(&w))
            .unwrap_or(Duration::from_secs(300));
        // Blocking query: hold while the index is unchanged, up to `wait`.
        let changed = self.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let current = self.state.lock().unwrap().index;
        if index == Some(current) {
            self.held.fetch_add(1, Ordering::SeqCst);
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(wait) => {}
            }
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
        let (mode, index, body) = {
            let st = self.state.lock().unwrap();
            (st.mode, st.index, st.body.clone())
        };
        let mut r = match mode {
            Mode::Normal => Response::new(Full::new(Bytes::from(body))),
            Mode::Error500 => {
                self.failures_served.fetch_add(1, Ordering::SeqCst);
                let mut r = Response::new(Full::new(Bytes::from("rpc error: No cluster leader")));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
            Mode::Garbage => {
                self.failures_served.fetch_add(1, Ordering::SeqCst);
                Response::new(Full::new(Bytes::from("<html>gateway</html>")))
            }
        };
        r.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        r.headers_mut()
            .insert("x-consul-index", index.to_string().parse().unwrap());
        r.headers_mut()
            .insert("x-consul-knownleader", "true".parse().unwrap());
        r
    }

    async fn serve(&self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = self.clone();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let fake = fake.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let fake = fake.clone();
                        async move { Ok::<_, Infallible>(fake.answer(req).await) }
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

fn yaml(consul: SocketAddr, extra: &str) -> String {
    format!(
        "listeners: [{{name: main, bind: \"127.0.0.1:0\"}}]\n\
         admin: {{bind: \"127.0.0.1:0\"}}\n\
         access_log: {{enabled: false}}\n\
         routes: [{{pool: p}}]\n\
         pools:\n  - name: p\n    balance: round_robin\n    discovery:\n      \
         - consul: {{address: \"http://{consul}\", service: web{extra}}}\n"
    )
}

async fn source(weir: &weir::Weir) -> Value {
    let (_, status) = admin_get(weir, "/status").await;
    let status: Value = serde_json::from_str(&status).unwrap();
    status["pools"][0]["sources"][0].clone()
}

async fn until_state(weir: &weir::Weir, state: &str) -> bool {
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if source(weir).await["state"] == state {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn follows_the_service_with_blocking_queries_and_sends_the_filters() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let c3 = echo_backend("c").await;
    // `b` has no service address: the node's address is used.
    let fake = FakeConsul::new(vec![
        instance("a", "10.99.0.1", "127.0.0.1", a.addr.port(), 1),
        instance("b", "127.0.0.1", "", b.addr.port(), 1),
    ]);
    let consul = fake.serve().await;
    let weir = start(&yaml(
        consul,
        ", tags: [v2, primary], passing_only: true, datacenter: dc1, token: t0k, wait: 10s",
    ))
    .await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    until_set(&weir, &[a.addr, b.addr], Duration::from_secs(5)).await;
    assert_eq!(backends_hit(&c, addr, 4).await, names(&["a", "b"]));
    assert_eq!(source(&weir).await["state"], "ok");

    // The first query is a plain read; the next blocks on the index.
    assert!(
        eventually(Duration::from_secs(3), || fake.held.load(Ordering::SeqCst)
            == 1)
        .await
    );
    let q = fake.queries();
    assert_eq!(
        q[0],
        "/v1/health/service/web?passing=1&tag=v2&tag=primary&dc=dc1"
    );
    assert_eq!(
        q[1],
        "/v1/health/service/web?passing=1&tag=v2&tag=primary&dc=dc1&index=100&wait=10s"
    );

    // A change while the query is held reaches weir at once.
    fake.set(vec![
        instance("b", "127.0.0.1", "", b.addr.port(), 1),
        instance("c", "127.0.0.1", "127.0.0.1", c3.addr.port(), 1),
    ]);
    let took = until_set(&weir, &[b.addr, c3.addr], Duration::from_secs(3)).await;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert_eq!(backends_hit(&c, addr, 4).await, names(&["b", "c"]));
    // And the next query blocks on the new index.
    assert!(
        eventually(Duration::from_secs(3), || fake
            .queries()
            .iter()
            .any(|q| q.ends_with("&index=101&wait=10s")))
        .await
    );
}

#[tokio::test]
async fn passing_weights_split_round_robin_traffic_exactly() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let fake = FakeConsul::new(vec![
        instance("a", "127.0.0.1", "127.0.0.1", a.addr.port(), 3),
        instance("b", "127.0.0.1", "127.0.0.1", b.addr.port(), 1),
    ]);
    let consul = fake.serve().await;
    let weir = start(&yaml(consul, ", passing_only: false, wait: 2s")).await;
    let addr = weir.listener_addr("main").unwrap();
    until_set(&weir, &[a.addr, b.addr], Duration::from_secs(5)).await;
    let c = client();
    for _ in 0..200 {
        send(&c, get(addr, "x", "/")).await;
    }
    assert_eq!((a.count(), b.count()), (150, 50));
    // Neither `passing` nor `tag` when not configured.
    assert_eq!(fake.queries()[0], "/v1/health/service/web?");
}

#[tokio::test]
async fn errors_and_garbage_keep_the_last_set() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let fake = FakeConsul::new(vec![instance("a", "127.0.0.1", "", a.addr.port(), 1)]);
    let consul = fake.serve().await;
    let weir = start(&yaml(consul, ", wait: 1s")).await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    until_set(&weir, &[a.addr], Duration::from_secs(5)).await;

    for mode in [Mode::Error500, Mode::Garbage] {
        let before = fake.failures_served.load(Ordering::SeqCst);
        fake.set_mode(mode);
        assert!(
            eventually(Duration::from_secs(5), || fake
                .failures_served
                .load(Ordering::SeqCst)
                > before)
            .await
        );
        assert!(until_state(&weir, "stale").await, "{}", source(&weir).await);
        assert_eq!(backends_hit(&c, addr, 3).await, names(&["a"]));
        assert_eq!(addrs(&weir), [a.addr].into());
        fake.set_mode(Mode::Normal);
        assert!(until_state(&weir, "ok").await, "{}", source(&weir).await);
    }

    // Recovered: changes flow again.
    fake.set(vec![
        instance("a", "127.0.0.1", "", a.addr.port(), 1),
        instance("b", "127.0.0.1", "", b.addr.port(), 1),
    ]);
    until_set(&weir, &[a.addr, b.addr], Duration::from_secs(5)).await;
    assert_eq!(backends_hit(&c, addr, 4).await, names(&["a", "b"]));
}

/// A blocking query that returns with the same index (nothing changed) is
/// a successful contact: the source stays fresh however long the service
/// is quiet, and an outage keeps the set for `max_stale` from the last
/// return.
#[tokio::test]
async fn blocking_queries_returning_the_same_index_keep_the_source_fresh() {
    let a = echo_backend("a").await;
    let fake = FakeConsul::new(vec![instance("a", "127.0.0.1", "", a.addr.port(), 1)]);
    let consul = fake.serve().await;
    // A 30 s wait would outlast max_stale: weir lowers it to a third of it.
    let weir = start(&yaml(consul, ", wait: 30s, max_stale: 3s")).await;
    let c = client();
    until_set(&weir, &[a.addr], Duration::from_secs(5)).await;
    let first = source(&weir).await["last_success"].as_f64().unwrap();
    stays_fresh(&weir, &c, &["a"], 3.5).await;
    let same = fake
        .queries()
        .iter()
        .filter(|q| q.ends_with("index=100&wait=1s"))
        .count();
    assert!(same >= 3, "{:?}", fake.queries());
    // The metric follows the contacts too.
    let metric = sample(
        &scrape(&weir).await,
        "weir_discovery_last_success_timestamp_seconds",
        &[("source", "consul[0]")],
    )
    .unwrap();
    assert!(metric > first + 3.0, "{metric} vs {first}");

    fake.set_mode(Mode::Error500);
    let failed = unix_now();
    let outage = serve_until_expired(&weir, &c, &["a"], failed, 6.0).await;
    assert!(outage.saw_stale, "{outage:?}");
    assert!(outage.served_for > 1.5, "{outage:?}");
    let age = outage.expired_at - outage.last_contact;
    assert!((2.9..4.0).contains(&age), "{outage:?}");
}
