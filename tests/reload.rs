//! Hot reload, end to end on real sockets: a storm of reloads under load
//! fails no request and applies each config within a second; an invalid
//! config is refused with its location while the running one keeps serving;
//! backends, pools, in-flight requests and WebSocket tunnels survive
//! reloads; listeners come and go while unchanged ones keep their socket;
//! every trigger works (file watcher on in-place writes, renames and
//! ConfigMap-style symlink swaps, `POST /reload`, SIGHUP to the real
//! binary); the admin address cannot move without a restart; and the
//! watcher reacts to its own files only: a busy neighbour file or a config
//! rewritten without pause does not delay an edit past a second, an idle
//! weir opens none of its files, and one bad write is one failed reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

// ---- fixtures ----

/// One pool of a generated config.
struct PoolSpec<'a> {
    name: &'a str,
    balance: &'a str,
    endpoints: Vec<(SocketAddr, u32)>,
}

fn pool<'a>(name: &'a str, balance: &'a str, endpoints: &[SocketAddr]) -> PoolSpec<'a> {
    PoolSpec {
        name,
        balance,
        endpoints: endpoints.iter().map(|a| (*a, 1)).collect(),
    }
}

/// Renders a config. Listeners and admin bind `127.0.0.1:0`; routes are
/// `(path_prefix, pool)`; `note` becomes a leading comment, so two renders
/// with different notes have different content hashes.
fn render(
    listeners: &[&str],
    routes: &[(&str, &str)],
    pools: &[PoolSpec<'_>],
    note: &str,
) -> String {
    let mut y = format!("# {note}\nlisteners:\n");
    for l in listeners {
        y += &format!("  - name: {l}\n    bind: \"127.0.0.1:0\"\n");
    }
    y += "admin:\n  bind: \"127.0.0.1:0\"\naccess_log:\n  enabled: false\nroutes:\n";
    for (prefix, pool) in routes {
        y += &format!("  - path_prefix: {prefix}\n    pool: {pool}\n");
    }
    y += "pools:\n";
    for p in pools {
        y += &format!(
            "  - name: {}\n    balance: {}\n    endpoints:\n",
            p.name, p.balance
        );
        for (a, w) in &p.endpoints {
            y += &format!("      - address: \"{a}\"\n        weight: {w}\n");
        }
    }
    y
}

/// Listener `main`, every path to pool `p` over `endpoints`.
fn one_pool(endpoints: &[SocketAddr], note: &str) -> String {
    render(
        &["main"],
        &[("/", "p")],
        &[pool("p", "round_robin", endpoints)],
        note,
    )
}

/// The content hash weir will report for `text`.
fn hash_of(text: &str) -> String {
    weir::Config::from_yaml(text, "expected.yaml")
        .unwrap_or_else(|e| panic!("{e}"))
        .hash
}

/// A config file reached through a symlink from a directory of its own.
/// The watcher watches the link's directory, which sees no event when the
/// target (in another directory) is edited, so the file is reread only
/// when the test triggers a reload.
struct ManualConfig {
    _watched: tempfile::TempDir,
    _store: tempfile::TempDir,
    link: PathBuf,
    target: PathBuf,
}

impl ManualConfig {
    fn new(text: &str) -> ManualConfig {
        let watched = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let target = store.path().join("weir.yaml");
        std::fs::write(&target, text).unwrap();
        let link = watched.path().join("weir.yaml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        ManualConfig {
            _watched: watched,
            _store: store,
            link,
            target,
        }
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.target, text).unwrap();
    }
}

/// Replaces `path` by rename from a temporary file in the same directory.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls the running snapshot until its hash is `hash`; returns the time
/// since `since`. Panics after 5 s (the callers assert a tighter bound).
async fn applied(weir: &weir::Weir, what: &str, hash: &str, since: Instant) -> Duration {
    loop {
        if weir.shared().snapshot().config.hash == hash {
            return since.elapsed();
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "{what}: config {hash} not applied after 5 s (running: {})",
            weir.shared().snapshot().config.hash
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// GETs `path` through `addr`: status and the `x-backend` that answered.
async fn hit(c: &HttpClient, addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let (parts, _) = send(c, get(addr, "x", path)).await;
    let name = parts
        .headers
        .get("x-backend")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (parts.status, name)
}

/// `POST /reload` on the admin listener: status and body.
async fn post_reload(weir: &weir::Weir) -> (StatusCode, String) {
    let req = http::Request::post(format!("http://{}/reload", weir.admin_addr()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (parts, body) = send(&client(), req).await;
    (parts.status, String::from_utf8(body.to_vec()).unwrap())
}

/// `(reloads success, reloads failure, last reload success)` from `/metrics`.
async fn reload_metrics(weir: &weir::Weir) -> (f64, f64, f64) {
    let s = scrape(weir).await;
    (
        sample(&s, "weir_config_reloads_total", &[("result", "success")]).unwrap_or(0.0),
        sample(&s, "weir_config_reloads_total", &[("result", "failure")]).unwrap_or(0.0),
        sample(&s, "weir_config_last_reload_success", &[]).unwrap(),
    )
}

fn names(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

// ---- 1. reload storm ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_storm_under_load_fails_no_request_and_applies_each_config_within_a_second() {
    let backends = [
        echo_backend("a").await,
        echo_backend("b").await,
        echo_backend("c").await,
        echo_backend("d").await,
    ];
    let sets = [[0usize, 1], [2, 3]];
    let balances = ["round_robin", "least_connections", "power_of_two_choices"];
    let config_for = |i: usize| {
        let endpoints = sets[i % 2]
            .iter()
            .enumerate()
            .map(|(k, &j)| (backends[j].addr, 1 + ((i + k) % 3) as u32))
            .collect();
        let p = PoolSpec {
            name: "p",
            balance: balances[i % 3],
            endpoints,
        };
        render(&["main"], &[("/", "p")], &[p], &format!("revision {i}"))
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, config_for(0)).unwrap();
    let weir = weir::Weir::start_from_file(&path).await.unwrap();
    let addr = weir.listener_addr("main").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, errors) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&errors));
        load.push(tokio::spawn(async move {
            let c = client();
            let cap = Instant::now() + Duration::from_secs(15);
            while !stop.load(Ordering::Relaxed) && Instant::now() < cap {
                let outcome = match c.request(get(addr, "x", "/")).await {
                    Ok(res) => {
                        let status = res.status();
                        match res.into_body().collect().await {
                            Ok(_) if status == StatusCode::OK => Ok(()),
                            Ok(_) => Err(format!("status {status}")),
                            Err(e) => Err(format!("body: {e:?}")),
                        }
                    }
                    Err(e) => Err(format!("request: {e:?}")),
                };
                match outcome {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.lock().unwrap().push(e),
                }
            }
        }));
    }

    // Load is flowing (and the reloader task has had time to start)
    // before the first write.
    let flowing = Arc::clone(&ok);
    assert!(
        eventually(Duration::from_secs(5), || flowing.load(Ordering::Relaxed)
            >= 100)
        .await,
        "no load"
    );
    let observer = client();
    let mut times = Vec::new();
    for i in 1..=20 {
        let text = config_for(i);
        let hash = hash_of(&text);
        let t0 = Instant::now();
        if i % 4 < 2 {
            std::fs::write(&path, &text).unwrap();
        } else {
            write_atomic(&path, &text);
        }
        let took = applied(&weir, &format!("revision {i}"), &hash, t0).await;
        // The next request lands on the new endpoint set.
        let (status, name) = hit(&observer, addr, "/").await;
        assert_eq!(status, StatusCode::OK);
        let expected: Vec<&str> = sets[i % 2].iter().map(|&j| backends[j].name).collect();
        assert!(
            expected.contains(&name.as_str()),
            "revision {i}: answered by {name}, expected one of {expected:?}"
        );
        assert!(
            took < Duration::from_secs(1),
            "revision {i} ({}) took {took:?} to apply",
            if i % 4 < 2 { "in-place" } else { "rename" }
        );
        times.push(took);
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }

    let max = times.iter().max().unwrap();
    let avg = times.iter().sum::<Duration>() / times.len() as u32;
    let sent = ok.load(Ordering::Relaxed);
    eprintln!(
        "reload storm: 20 reloads, time to apply max {max:?} avg {avg:?}; {sent} requests ok"
    );
    let errors = errors.lock().unwrap().clone();
    assert!(
        errors.is_empty(),
        "{} failed requests: {errors:?}",
        errors.len()
    );
    assert!(sent >= 200, "only {sent} requests sent");
    for b in &backends {
        assert!(b.count() > 0, "backend {} got no traffic", b.name);
    }
    let (status, body) = admin_get(&weir, "/status").await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["config_hash"], hash_of(&config_for(20)));
    assert_eq!(doc["config_version"], 21);
    let (success, failure, last) = reload_metrics(&weir).await;
    assert_eq!((success, failure, last), (21.0, 0.0, 1.0));
}

// ---- 2. invalid configs ----

#[tokio::test]
async fn invalid_config_is_refused_with_its_location_and_the_old_config_keeps_serving() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let cfg = ManualConfig::new(&one_pool(&[a.addr], "a"));
    let weir = weir::Weir::start_from_file(&cfg.link).await.unwrap();
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    assert_eq!(hit(&c, addr, "/").await, (StatusCode::OK, "a".into()));
    let (_, failures0, _) = reload_metrics(&weir).await;

    // (a) A YAML syntax error on line 5.
    let syntax = format!(
        "listeners:\n  - name: main\n    bind: \"127.0.0.1:0\"\nroutes:\n  - pool: p: q\n\
         pools:\n  - name: p\n    endpoints:\n      - address: \"{}\"\n",
        b.addr
    );
    cfg.write(&syntax);
    let (status, body) = post_reload(&weir).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("routes[0]"), "{body}");
    assert!(body.contains("line 5"), "{body}");
    assert_eq!(hit(&c, addr, "/").await, (StatusCode::OK, "a".into()));
    let (_, failures, last) = reload_metrics(&weir).await;
    assert_eq!(failures, failures0 + 1.0);
    assert_eq!(last, 0.0);
    assert_eq!(weir.shared().snapshot().version, 1);

    // (b) A route to a pool that does not exist.
    let semantic = render(
        &["main"],
        &[("/", "missing")],
        &[pool("p", "round_robin", &[b.addr])],
        "semantic",
    );
    cfg.write(&semantic);
    let (status, body) = post_reload(&weir).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("routes[0].pool"), "{body}");
    assert!(body.contains("missing"), "{body}");
    assert_eq!(hit(&c, addr, "/").await, (StatusCode::OK, "a".into()));
    let (success_before_fix, failures, last) = reload_metrics(&weir).await;
    assert_eq!(failures, failures0 + 2.0);
    assert_eq!(last, 0.0);
    assert_eq!(weir.shared().snapshot().version, 1);

    // Fixed: the next reload succeeds and the new endpoint serves.
    cfg.write(&one_pool(&[b.addr], "b"));
    let (status, body) = post_reload(&weir).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["changed"], true);
    assert_eq!(summary["version"], 2);
    assert_eq!(
        names(&summary["endpoints_added"]),
        [format!("p/{}", b.addr)]
    );
    assert_eq!(
        names(&summary["endpoints_removed"]),
        [format!("p/{}", a.addr)]
    );
    for _ in 0..3 {
        assert_eq!(hit(&c, addr, "/").await, (StatusCode::OK, "b".into()));
    }
    let (success, failures, last) = reload_metrics(&weir).await;
    assert_eq!(success, success_before_fix + 1.0);
    assert_eq!(failures, failures0 + 2.0);
    assert_eq!(last, 1.0);
}

// ---- 3. state survives ----

#[tokio::test]
async fn reload_keeps_unchanged_pools_and_backends_and_their_in_flight_requests() {
    // X holds `/slow` until the test adds a permit.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let g = Arc::clone(&gate);
    let x = backend_with("x", move |seen, _| {
        let g = Arc::clone(&g);
        async move {
            if seen.uri.path() == "/slow" {
                g.acquire().await.unwrap().forget();
            }
            http::Response::new(Full::new(Bytes::from_static(b"x")))
        }
    })
    .await;
    let y = echo_backend("y").await;
    let z = echo_backend("z").await;
    let w = echo_backend("w").await;
    let config = |p: &[SocketAddr], q: &[SocketAddr], note: &str| {
        render(
            &["main"],
            &[("/q", "q"), ("/", "p")],
            &[pool("p", "round_robin", p), pool("q", "round_robin", q)],
            note,
        )
    };
    let cfg = ManualConfig::new(&config(&[x.addr], &[y.addr], "v1"));
    let weir = weir::Weir::start_from_file(&cfg.link).await.unwrap();
    let addr = weir.listener_addr("main").unwrap();

    let before = weir.shared().snapshot_full();
    let pool_p = Arc::clone(&before.pools[0]);
    let backend_x = Arc::clone(&pool_p.backends().backends()[0]);
    assert_eq!(backend_x.addr(), x.addr);

    let slow = tokio::spawn(async move { send(&client(), get(addr, "x", "/slow")).await });
    assert!(eventually(Duration::from_secs(5), || x.count() == 1).await);
    assert_eq!(backend_x.in_flight(), 1);

    // Only q changes: p is the same pool object, x the same backend.
    cfg.write(&config(&[x.addr], &[y.addr, z.addr], "v2"));
    let summary = weir.reload().await.unwrap();
    assert!(summary.changed);
    assert_eq!(summary.pools_changed, ["q"]);
    assert_eq!(summary.endpoints_added, [format!("q/{}", z.addr)]);
    assert!(summary.endpoints_removed.is_empty());
    let after = weir.shared().snapshot_full();
    assert_eq!(after.version, 2);
    assert!(Arc::ptr_eq(&after.pools[0], &pool_p), "pool p was rebuilt");
    assert!(Arc::ptr_eq(
        &after.pools[0].backends().backends()[0],
        &backend_x
    ));
    assert_eq!(after.pools[0].backends().backends()[0].in_flight(), 1);
    let pool_q = Arc::clone(&after.pools[1]);
    let c = client();
    let mut seen_q = std::collections::BTreeSet::new();
    for _ in 0..2 {
        let (status, name) = hit(&c, addr, "/q").await;
        assert_eq!(status, StatusCode::OK);
        seen_q.insert(name);
    }
    assert_eq!(seen_q, ["y".to_owned(), "z".to_owned()].into());

    // p gains an endpoint: p is rebuilt, but x keeps its backend object
    // (and with it the in-flight count of the request it is serving).
    cfg.write(&config(&[x.addr, w.addr], &[y.addr, z.addr], "v3"));
    let summary = weir.reload().await.unwrap();
    assert_eq!(summary.pools_changed, ["p"]);
    assert_eq!(summary.endpoints_added, [format!("p/{}", w.addr)]);
    let last = weir.shared().snapshot_full();
    assert!(!Arc::ptr_eq(&last.pools[0], &pool_p));
    assert!(Arc::ptr_eq(&last.pools[1], &pool_q), "pool q was rebuilt");
    let reused = last.pools[0]
        .backends()
        .backends()
        .iter()
        .find(|b| b.addr() == x.addr)
        .cloned()
        .unwrap();
    assert!(Arc::ptr_eq(&reused, &backend_x), "backend x was rebuilt");
    assert_eq!(reused.in_flight(), 1);

    gate.add_permits(1);
    let (parts, body) = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("slow request did not finish")
        .unwrap();
    assert_eq!(parts.status, StatusCode::OK);
    assert_eq!(body, "x");
    assert!(eventually(Duration::from_secs(5), || reused.in_flight() == 0).await);
}

// ---- 4. WebSocket ----

#[tokio::test]
async fn websocket_stays_open_and_echoes_across_ten_reloads() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let extra = echo_backend("extra").await;
    let balances = ["round_robin", "least_connections", "power_of_two_choices"];
    let config = |i: usize| {
        let ws = pool("ws", balances[i % 3], &[ws_addr]);
        if i % 2 == 0 {
            render(
                &["main"],
                &[("/chat", "ws")],
                &[ws],
                &format!("revision {i}"),
            )
        } else {
            render(
                &["main"],
                &[("/extra", "extra"), ("/chat", "ws")],
                &[ws, pool("extra", "round_robin", &[extra.addr])],
                &format!("revision {i}"),
            )
        }
    };
    let cfg = ManualConfig::new(&config(0));
    let weir = weir::Weir::start_from_file(&cfg.link).await.unwrap();
    let addr = weir.listener_addr("main").unwrap();
    let (mut ws, res) = tokio_tungstenite::connect_async(format!("ws://{addr}/chat"))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SWITCHING_PROTOCOLS);
    let c = client();
    for i in 1..=10 {
        cfg.write(&config(i));
        let summary = weir.reload().await.unwrap();
        assert!(summary.changed, "reload {i}");
        assert!(summary.listeners_added.is_empty() && summary.listeners_removed.is_empty());
        // The reload took effect: /extra exists only in odd revisions.
        let (status, _) = hit(&c, addr, "/extra").await;
        let want = if i % 2 == 1 {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(status, want, "reload {i}");
        let text = format!("after reload {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap_or_else(|_| panic!("no echo after reload {i}"))
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
    assert_eq!(weir.listener_addr("main"), Some(addr));
    assert_eq!(weir.shared().snapshot().version, 11);
    // The tunnel still counts on the (reused) backend of the rebuilt pool.
    let snap = weir.shared().snapshot_full();
    assert_eq!(snap.pools[0].backends().backends()[0].in_flight(), 1);
    ws.close(None).await.unwrap();
}

// ---- 5. listeners ----

#[tokio::test]
async fn reload_adds_and_removes_a_listener_while_the_unchanged_one_keeps_its_socket() {
    let a = echo_backend("a").await;
    let cfg = ManualConfig::new(&one_pool(&[a.addr], "one listener"));
    let weir = weir::Weir::start_from_file(&cfg.link).await.unwrap();
    let main = weir.listener_addr("main").unwrap();
    let c = client();
    assert_eq!(hit(&c, main, "/").await.0, StatusCode::OK);

    let two = render(
        &["main", "second"],
        &[("/", "p")],
        &[pool("p", "round_robin", &[a.addr])],
        "two listeners",
    );
    cfg.write(&two);
    let summary = weir.reload().await.unwrap();
    assert_eq!(summary.listeners_added, ["second"]);
    assert!(summary.listeners_removed.is_empty());
    let second = weir.listener_addr("second").expect("second not listening");
    assert_ne!(second, main);
    assert_eq!(weir.listener_addr("main"), Some(main));
    assert_eq!(
        hit(&client(), second, "/").await,
        (StatusCode::OK, "a".into())
    );
    assert_eq!(hit(&c, main, "/").await, (StatusCode::OK, "a".into()));

    cfg.write(&one_pool(&[a.addr], "one listener again"));
    let summary = weir.reload().await.unwrap();
    assert_eq!(summary.listeners_removed, ["second"]);
    assert!(summary.listeners_added.is_empty());
    assert_eq!(weir.listener_addr("second"), None);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if tokio::net::TcpStream::connect(second).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "removed listener {second} still accepts connections"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(weir.listener_addr("main"), Some(main));
    assert_eq!(hit(&c, main, "/").await, (StatusCode::OK, "a".into()));
    assert_eq!(
        hit(&client(), main, "/").await,
        (StatusCode::OK, "a".into())
    );
}

// ---- 6. triggers ----

#[tokio::test]
async fn post_reload_applies_the_file_and_reports_what_changed() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let q = echo_backend("q").await;
    let cfg = ManualConfig::new(&one_pool(&[a.addr], "v1"));
    let weir = weir::Weir::start_from_file(&cfg.link).await.unwrap();
    let addr = weir.listener_addr("main").unwrap();

    let next = render(
        &["main"],
        &[("/q", "q"), ("/", "p")],
        &[
            pool("p", "round_robin", &[a.addr, b.addr]),
            pool("q", "round_robin", &[q.addr]),
        ],
        "v2",
    );
    cfg.write(&next);
    let (status, body) = post_reload(&weir).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["changed"], true);
    assert_eq!(summary["version"], 2);
    assert_eq!(summary["hash"], hash_of(&next));
    assert_eq!(names(&summary["pools_added"]), ["q"]);
    assert_eq!(names(&summary["pools_changed"]), ["p"]);
    assert!(names(&summary["pools_removed"]).is_empty());
    let mut added = vec![format!("p/{}", b.addr), format!("q/{}", q.addr)];
    added.sort();
    assert_eq!(names(&summary["endpoints_added"]), added);
    assert!(names(&summary["endpoints_removed"]).is_empty());

    let (_, status_body) = admin_get(&weir, "/status").await;
    let doc: serde_json::Value = serde_json::from_str(&status_body).unwrap();
    assert_eq!(doc["config_version"], 2);
    assert_eq!(doc["config_hash"], hash_of(&next));
    let c = client();
    assert_eq!(hit(&c, addr, "/q/x").await, (StatusCode::OK, "q".into()));

    // The same file again: nothing to do, the version stays.
    let (status, body) = post_reload(&weir).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["changed"], false);
    assert_eq!(summary["version"], 2);

    // Only POST reloads.
    let (status, _) = admin_get(&weir, "/reload").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn file_watcher_applies_in_place_writes_and_atomic_renames_within_a_second() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, one_pool(&[a.addr], "v1")).unwrap();
    let weir = weir::Weir::start_from_file(&path).await.unwrap();
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    // A round trip lets the reloader task start (and install its watcher).
    assert_eq!(hit(&c, addr, "/").await, (StatusCode::OK, "a".into()));

    let text = one_pool(&[b.addr], "v2");
    let t0 = Instant::now();
    std::fs::write(&path, &text).unwrap();
    let took = applied(&weir, "edit", &hash_of(&text), t0).await;
    assert!(took < Duration::from_secs(1), "in-place write: {took:?}");
    assert_eq!(hit(&c, addr, "/").await, (StatusCode::OK, "b".into()));

    let text = one_pool(&[a.addr], "v3");
    let t0 = Instant::now();
    write_atomic(&path, &text);
    let took = applied(&weir, "edit", &hash_of(&text), t0).await;
    assert!(took < Duration::from_secs(1), "atomic rename: {took:?}");
    assert_eq!(hit(&c, addr, "/").await, (StatusCode::OK, "a".into()));

    // A file next to the config changes: the watcher ignores it (a reload
    // would be counted, even one that found nothing changed).
    // A negative check needs a bounded wait, here well past the debounce.
    let (success, failure, _) = reload_metrics(&weir).await;
    std::fs::write(dir.path().join("unrelated.txt"), "x").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(reload_metrics(&weir).await, (success, failure, 1.0));
    assert_eq!(weir.shared().snapshot().version, 3);
}

#[tokio::test]
async fn file_watcher_applies_an_edit_made_right_after_start() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, one_pool(&[a.addr], "v1")).unwrap();
    let weir = weir::Weir::start_from_file(&path).await.unwrap();
    // Edited as soon as start returns, before this task yields once.
    let text = one_pool(&[b.addr], "v2");
    let t0 = Instant::now();
    std::fs::write(&path, &text).unwrap();
    let took = applied(&weir, "edit", &hash_of(&text), t0).await;
    assert!(took < Duration::from_secs(1), "edit after start: {took:?}");
    let addr = weir.listener_addr("main").unwrap();
    assert_eq!(
        hit(&client(), addr, "/").await,
        (StatusCode::OK, "b".into())
    );
}

#[tokio::test]
async fn file_watcher_follows_a_configmap_style_symlink_swap_within_a_second() {
    use std::os::unix::fs::symlink;
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // dir/weir.yaml -> ..data/weir.yaml, ..data -> ..2026_v1/
    let version_dir = |v: &str, text: &str| {
        let d = root.join(format!("..2026_{v}"));
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("weir.yaml"), text).unwrap();
    };
    version_dir("v1", &one_pool(&[a.addr], "v1"));
    symlink("..2026_v1", root.join("..data")).unwrap();
    symlink("..data/weir.yaml", root.join("weir.yaml")).unwrap();
    let weir = weir::Weir::start_from_file(&root.join("weir.yaml"))
        .await
        .unwrap();
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    assert_eq!(hit(&c, addr, "/").await, (StatusCode::OK, "a".into()));

    for (v, old, backend) in [("v2", "v1", &b), ("v3", "v2", &a)] {
        let text = one_pool(&[backend.addr], v);
        version_dir(v, &text);
        let t0 = Instant::now();
        symlink(format!("..2026_{v}"), root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        std::fs::remove_dir_all(root.join(format!("..2026_{old}"))).unwrap();
        let took = applied(&weir, "edit", &hash_of(&text), t0).await;
        assert!(
            took < Duration::from_secs(1),
            "symlink swap to {v}: {took:?}"
        );
        assert_eq!(
            hit(&c, addr, "/").await,
            (StatusCode::OK, backend.name.to_owned())
        );
    }
}

/// Kills the child if the test fails before it exits.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// JSON log lines of a child's stderr, in order.
struct Logs(tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>);

impl Logs {
    fn capture(child: &mut Child) -> Logs {
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Logs(rx)
    }

    /// Skips lines until one has `message == message`; panics after 10 s.
    async fn wait_for(&mut self, message: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let line = tokio::time::timeout_at(deadline, self.0.recv())
                .await
                .unwrap_or_else(|_| panic!("no `{message}` log line"))
                .unwrap_or_else(|| panic!("weir exited before logging `{message}`"));
            if line["message"] == message {
                return line;
            }
        }
    }
}

fn kill_hup(child: &Child) {
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sighup_rereads_the_config_file_in_the_real_binary() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let cfg = ManualConfig::new(&one_pool(&[a.addr], "v1"));
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--log-format", "json", "run", "-c"])
        .arg(&cfg.link)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let mut logs = Logs::capture(&mut child.0);
    let line = logs.wait_for("listening").await;
    assert_eq!(line["listener"], "main");
    let addr: SocketAddr = line["address"].as_str().unwrap().parse().unwrap();
    // Logged once startup is complete (the reloader task is spawned).
    logs.wait_for("admin listening").await;
    let c = client();
    assert_eq!(hit(&c, addr, "/").await, (StatusCode::OK, "a".into()));

    // An edit the watcher cannot see: only SIGHUP applies it.
    cfg.write(&one_pool(&[b.addr], "v2"));
    kill_hup(&child.0);
    logs.wait_for("SIGHUP; reloading").await;
    let line = logs.wait_for("config reloaded").await;
    assert_eq!(line["version"], 2);
    assert_eq!(hit(&c, addr, "/").await, (StatusCode::OK, "b".into()));

    // Nothing changed since: SIGHUP reloads and says so.
    kill_hup(&child.0);
    logs.wait_for("SIGHUP; reloading").await;
    let next = tokio::time::timeout(Duration::from_secs(10), logs.0.recv())
        .await
        .expect("no log line after SIGHUP")
        .unwrap();
    assert_eq!(next["message"], "config reloaded: no change", "{next}");
    assert_eq!(hit(&c, addr, "/").await, (StatusCode::OK, "b".into()));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "weir exited on SIGHUP"
    );
}

// ---- 7. admin address ----

#[tokio::test]
async fn reload_that_moves_the_admin_listener_is_refused_and_the_old_config_keeps_serving() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let cfg = ManualConfig::new(&one_pool(&[a.addr], "v1"));
    let weir = weir::Weir::start_from_file(&cfg.link).await.unwrap();
    let addr = weir.listener_addr("main").unwrap();
    let elsewhere = dead_addr().await;
    let moved = one_pool(&[b.addr], "moved").replacen(
        "admin:\n  bind: \"127.0.0.1:0\"",
        &format!("admin:\n  bind: \"{elsewhere}\""),
        1,
    );
    assert!(moved.contains(&elsewhere.to_string()));
    cfg.write(&moved);

    let (status, body) = post_reload(&weir).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("admin.bind"), "{body}");
    assert!(body.contains(&elsewhere.to_string()), "{body}");
    assert!(body.contains("restart"), "{body}");
    let (_, _, last) = reload_metrics(&weir).await;
    assert_eq!(last, 0.0);
    assert_eq!(weir.shared().snapshot().version, 1);
    assert_eq!(
        hit(&client(), addr, "/").await,
        (StatusCode::OK, "a".into())
    );
    assert_eq!(admin_get(&weir, "/healthz").await.0, StatusCode::OK);

    let in_memory = weir::Config::from_yaml(&moved, "moved.yaml").unwrap();
    let err = weir.apply(in_memory).await.unwrap_err();
    assert!(
        matches!(err, weir::ReloadError::AdminMoved { to, .. } if to == elsewhere),
        "{err}"
    );
    assert_eq!(
        hit(&client(), addr, "/").await,
        (StatusCode::OK, "a".into())
    );
}

// ---- 8. what the watcher reacts to ----

/// Runs `step` every `every` on a thread of its own until dropped (also
/// when the test fails); dropping waits for the thread to stop.
struct Every {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Every {
    fn spawn(every: Duration, mut step: impl FnMut() + Send + 'static) -> Every {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                step();
                std::thread::sleep(every);
            }
        });
        Every {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Every {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test]
async fn file_watcher_applies_an_edit_within_a_second_while_a_neighbour_file_is_written_every_20_ms(
) {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, one_pool(&[a.addr], "v1")).unwrap();
    let weir = weir::Weir::start_from_file(&path).await.unwrap();
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    assert_eq!(hit(&c, addr, "/").await, (StatusCode::OK, "a".into()));

    // A log file next to the config, appended every 20 ms.
    let mut log = std::fs::File::create(dir.path().join("app.log")).unwrap();
    let _noise = Every::spawn(Duration::from_millis(20), move || {
        use std::io::Write as _;
        writeln!(log, "a log line").unwrap();
    });
    // The noise is well under way (several debounce windows) before the edit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (v, backend) in [("v2", &b), ("v3", &a)] {
        let text = one_pool(&[backend.addr], v);
        let t0 = Instant::now();
        std::fs::write(&path, &text).unwrap();
        let took = applied(&weir, v, &hash_of(&text), t0).await;
        assert!(took < Duration::from_secs(1), "{v} under noise: {took:?}");
        assert_eq!(
            hit(&c, addr, "/").await,
            (StatusCode::OK, backend.name.to_owned())
        );
    }
    // Nothing but the two edits was reloaded: the log file is not the config.
    let (success, failure, _) = reload_metrics(&weir).await;
    assert_eq!((success, failure), (3.0, 0.0));
}

#[tokio::test]
async fn file_watcher_applies_a_config_that_is_rewritten_without_pause_within_a_second() {
    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, one_pool(&[a.addr], "v1")).unwrap();
    let weir = weir::Weir::start_from_file(&path).await.unwrap();
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    assert_eq!(hit(&c, addr, "/").await, (StatusCode::OK, "a".into()));

    // Events on the config itself never pause for a debounce window.
    let text = one_pool(&[b.addr], "v2");
    let t0 = Instant::now();
    let (target, replacement) = (path.clone(), text.clone());
    // Replaced by rename, so that no read sees a half-written file.
    let _writer = Every::spawn(Duration::from_millis(20), move || {
        write_atomic(&target, &replacement);
    });
    let took = applied(&weir, "v2", &hash_of(&text), t0).await;
    assert!(took < Duration::from_secs(1), "rewritten config: {took:?}");
    assert_eq!(hit(&c, addr, "/").await, (StatusCode::OK, "b".into()));
}

/// A self-signed certificate for `app.test`, as PEM certificate and key
/// files `app.crt` and `app.key` in `dir`; returns their paths.
fn write_self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["app.test".to_owned()]).unwrap();
    let (cert, key) = (dir.join("app.crt"), dir.join("app.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// `one_pool` with a TLS listener `tls` (certificate `app.crt`) next to
/// `main`.
fn one_pool_with_tls(endpoints: &[SocketAddr], note: &str) -> String {
    one_pool(endpoints, note).replacen(
        "listeners:\n",
        "listeners:\n  - name: tls\n    bind: \"127.0.0.1:0\"\n    tls:\n      \
         certificates: [{cert: app.crt, key: app.key}]\n",
        1,
    )
}

/// The two 5-second negative checks below, run side by side so that the
/// suite waits once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_five_seconds_an_idle_weir_opens_none_of_its_files_and_a_bad_write_fails_one_reload() {
    tokio::join!(
        an_idle_weir_opens_none_of_its_files_over_five_seconds(),
        one_bad_write_is_one_failed_reload_and_one_error_line_in_the_real_binary(),
    );
}

/// Without inotify's open events there is nothing to count.
#[cfg(not(target_os = "linux"))]
async fn an_idle_weir_opens_none_of_its_files_over_five_seconds() {}

/// Inotify (Linux) reports every open of a file in a watched directory, so
/// a watch of our own counts weir's opens of its config and TLS files. The
/// test's own read of the certificate is the positive control (the count
/// can see an open) and an open weir itself must not react to.
#[cfg(target_os = "linux")]
async fn an_idle_weir_opens_none_of_its_files_over_five_seconds() {
    use notify::event::{AccessKind, EventKind};
    use notify::Watcher as _;
    let a = echo_backend("a").await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_self_signed(dir.path());
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, one_pool_with_tls(&[a.addr], "v1")).unwrap();
    let weir = weir::Weir::start_from_file(&path).await.unwrap();
    assert!(weir.listener_addr("tls").is_some());
    let addr = weir.listener_addr("main").unwrap();
    assert_eq!(
        hit(&client(), addr, "/").await,
        (StatusCode::OK, "a".into())
    );

    let (tx, rx) = std::sync::mpsc::channel::<notify::Event>();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            let _ = tx.send(ev);
        }
    })
    .unwrap();
    watcher
        .watch(dir.path(), notify::RecursiveMode::NonRecursive)
        .unwrap();
    let opened = |ev: &notify::Event, file: &Path| {
        matches!(ev.kind, EventKind::Access(AccessKind::Open(_)))
            && ev.paths.iter().any(|p| p == file)
    };
    std::fs::read(&cert).unwrap();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !events.iter().any(|ev| opened(ev, &cert)) {
        assert!(Instant::now() < deadline, "our own open was not seen");
        events.extend(rx.try_iter());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A negative check needs a bounded wait: 5 s of idling (weir used to
    // reopen everything several times a second).
    tokio::time::sleep(Duration::from_secs(5)).await;
    events.extend(rx.try_iter());
    let opens: Vec<&notify::Event> = events
        .iter()
        .filter(|ev| [&path, &cert, &key].iter().any(|f| opened(ev, f)))
        .collect();
    assert_eq!(opens.len(), 1, "only our own open, not: {opens:#?}");
    assert_eq!(weir.shared().snapshot().version, 1);
}

/// The admin address from a JSON `admin listening` line.
fn address_of(line: &serde_json::Value) -> SocketAddr {
    line["address"].as_str().unwrap().parse().unwrap()
}

/// One bad write to the watched file fails one reload: one ERROR line and
/// one failure in `/metrics` over 5 s, not a retry loop. Writing the
/// running content back clears the failure.
async fn one_bad_write_is_one_failed_reload_and_one_error_line_in_the_real_binary() {
    let a = echo_backend("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    let good = one_pool(&[a.addr], "v1");
    std::fs::write(&path, &good).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--log-format", "json", "run", "-c"])
        .arg(&path)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let mut logs = Logs::capture(&mut child.0);
    let addr = address_of(&logs.wait_for("listening").await);
    let admin = address_of(&logs.wait_for("admin listening").await);

    std::fs::write(&path, "listeners: [oops\n").unwrap();
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut errors = Vec::new();
    while let Ok(line) = tokio::time::timeout_at(end, logs.0.recv()).await {
        let line = line.expect("weir exited");
        if line["level"] == "ERROR" {
            errors.push(line);
        }
    }
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        errors[0]["message"],
        "config reload failed; the running config keeps serving"
    );
    let s = scrape_at(admin).await;
    let failures = sample(&s, "weir_config_reloads_total", &[("result", "failure")]);
    assert_eq!(failures, Some(1.0));
    assert_eq!(
        hit(&client(), addr, "/").await,
        (StatusCode::OK, "a".into())
    );

    std::fs::write(&path, &good).unwrap();
    logs.wait_for("config reloaded: no change").await;
    let s = scrape_at(admin).await;
    assert_eq!(
        sample(&s, "weir_config_last_reload_success", &[]),
        Some(1.0)
    );
    assert_eq!(
        sample(&s, "weir_config_reloads_total", &[("result", "failure")]),
        Some(1.0)
    );
}
