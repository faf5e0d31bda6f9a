//! Faults injected into real processes and sockets while weir serves: an
//! endpoint killed and restarted under load, an endpoint that accepts and
//! never answers, one that sends half a response and resets, and a config
//! file that disappears or turns into something unreadable. In each case
//! weir keeps serving what it can, and what the client sees is asserted.
//!
//! A registry killed and restarted is covered by
//! `tests/discovery_etcd.rs` (`etcd_down_keeps_the_last_endpoints_and_recovers`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
#[path = "common/flappy.rs"]
mod flappy;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use common::*;
use flappy::Flappy;
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---- load ----

/// What a closed-loop load generator saw.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut f = self.failures.lock().unwrap();
        if f.len() < 10 {
            f.push(why);
        }
    }
}

/// `workers` clients each sending GETs back to back until `stop`; a
/// request counts as ok only with a 200 and a complete body.
fn closed_loop(
    addr: SocketAddr,
    workers: usize,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|_| {
            let (stop, tally) = (Arc::clone(stop), Arc::clone(tally));
            tokio::spawn(async move {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    let res = tokio::time::timeout(Duration::from_secs(5), async {
                        let res = c.request(get(addr, "x", "/")).await?;
                        let status = res.status();
                        res.into_body().collect().await?;
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
                    })
                    .await;
                    match res {
                        Ok(Ok(StatusCode::OK)) => {
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Ok(s)) => tally.fail(format!("status {s}")),
                        Ok(Err(e)) => tally.fail(format!("error {e}")),
                        Err(_) => tally.fail("no answer in 5 s".into()),
                    }
                }
            })
        })
        .collect()
}

// ---- 1. endpoint killed and restarted ----

#[tokio::test]
async fn endpoint_killed_and_restarted_under_load_fails_no_request_and_gets_traffic_again() {
    let a = echo_backend("a").await;
    let mut b = Flappy::start("b").await;
    // Passive ejection with short ejections, so that b is retried soon
    // after it is back; retries with a budget that a 4-client load cannot
    // exhaust, so requests that hit the dead b go to a instead.
    let weir = start(&simple_config(
        &[a.addr, b.addr],
        "    health:\n      passive:\n        consecutive_failures: 1\n        \
         base_ejection_time: 200ms\n        max_ejection_time: 1s\n    \
         retries:\n      attempts: 3\n      budget_min_per_second: 100\n",
    ))
    .await;
    let addr = weir.listener_addr("main").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let load = closed_loop(addr, 4, &stop, &tally);

    assert!(
        eventually(Duration::from_secs(5), || b.hits() >= 50).await,
        "b got no traffic"
    );
    b.stop().await;
    let killed = Instant::now();
    let during_kill = tally.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let served_while_down = tally.ok.load(Ordering::Relaxed) - during_kill;
    let before_restart = b.hits();
    b.restart().await;
    let restarted = Instant::now();
    let back = eventually(Duration::from_secs(10), || b.hits() >= before_restart + 20).await;
    let back_after = restarted.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }

    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let failures = tally.failures.lock().unwrap().clone();
    println!(
        "ok {ok}, failed {failed} {failures:?}; {served_while_down} served while b was down \
         ({:?}); b back after {back_after:?}",
        restarted - killed
    );
    assert!(back, "b restarted on {} but got no traffic in 10 s", b.addr);
    assert!(served_while_down > 50, "a did not carry the load alone");
    // Every request to the dead b is unsent (refused) or reset before its
    // head, and a GET is retried on a: no request should fail.
    assert_eq!(failed, 0, "{failures:?}");
    let s = scrape(&weir).await;
    let ejections = sample(
        &s,
        "weir_upstream_ejections_total",
        &[("endpoint", &b.addr.to_string())],
    );
    assert!(ejections.unwrap_or(0.0) >= 1.0, "b was never ejected");
    weir.shutdown().await;
}

// ---- 2. endpoint that never answers ----

/// Accepts connections and never writes a byte; returns its address and
/// the number of connections accepted.
async fn black_hole() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            n.fetch_add(1, Ordering::Relaxed);
            held.push(s);
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn endpoint_that_never_answers_gets_504_after_the_response_header_timeout() {
    let a = echo_backend("a").await;
    let (hole, accepted) = black_hole().await;
    // Without retries, then with: a response timeout is not retried (the
    // endpoint may have acted on the request), so the silent endpoint's
    // share of the requests gets 504 either way.
    for (retries, extra) in [
        ("off", "    retries:\n      attempts: 1\n"),
        ("on", "    retries:\n      attempts: 3\n"),
    ] {
        let weir = start(&simple_config(
            &[a.addr, hole],
            &format!("    timeouts:\n      response_header: 300ms\n{extra}"),
        ))
        .await;
        let addr = weir.listener_addr("main").unwrap();
        let c = client();
        let mut timeouts = 0;
        let a_before = a.count();
        for i in 0..10 {
            let t = Instant::now();
            let (parts, _) = send(&c, get(addr, "x", "/")).await;
            let took = t.elapsed();
            match parts.status {
                StatusCode::OK => {
                    assert_eq!(parts.headers["x-backend"], "a");
                    assert!(
                        took < Duration::from_millis(250),
                        "retries {retries}, request {i}: a answered in {took:?}"
                    );
                }
                StatusCode::GATEWAY_TIMEOUT => {
                    timeouts += 1;
                    assert!(
                        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
                        "retries {retries}, request {i}: 504 after {took:?}"
                    );
                }
                s => panic!("retries {retries}, request {i}: unexpected {s}"),
            }
        }
        // Round robin alternates, and nothing else moves a pick.
        assert_eq!(timeouts, 5, "retries {retries}");
        assert_eq!(a.count() - a_before, 5, "retries {retries}");

        // While requests hang on the silent endpoint, a still answers at once.
        let hanging: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { send(&c, get(addr, "x", "/")).await.0.status })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut quick = 0;
        for _ in 0..6 {
            let t = Instant::now();
            let (parts, _) = send(&c, get(addr, "x", "/")).await;
            if parts.status == StatusCode::OK {
                assert!(
                    t.elapsed() < Duration::from_millis(250),
                    "retries {retries}: a took {:?} while requests hung",
                    t.elapsed()
                );
                quick += 1;
            }
        }
        assert!(quick >= 2, "retries {retries}: only {quick} answers from a");
        for h in hanging {
            let s = h.await.unwrap();
            assert!(
                s == StatusCode::OK || s == StatusCode::GATEWAY_TIMEOUT,
                "retries {retries}: {s}"
            );
        }
        let s = scrape(&weir).await;
        let timed_out = sample(
            &s,
            "weir_upstream_timeouts_total",
            &[("endpoint", &hole.to_string()), ("phase", "response")],
        );
        assert!(
            timed_out.unwrap_or(0.0) >= 5.0,
            "retries {retries}: {timed_out:?}"
        );
        weir.shutdown().await;
    }
    assert!(accepted.load(Ordering::Relaxed) >= 10);
}

// ---- 3. half a response, then a reset ----

/// Answers every request with a head promising more body than it sends,
/// sends part of it, then resets the connection (`SO_LINGER` 0).
async fn half_responder(chunked: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head: &[u8] = if chunked {
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n64\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"
                };
                let _ = s.write_all(head).await;
                let _ = s.write_all(&[b'x'; 100]).await;
                let _ = s.flush().await;
                // Let weir read the head before the reset: data still
                // unread when an RST arrives may be discarded.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                drop(s);
            });
        }
    });
    addr
}

#[tokio::test]
async fn half_a_response_then_a_reset_reaches_the_client_as_a_truncated_body() {
    let good = echo_backend("good").await;
    for chunked in [false, true] {
        let half = half_responder(chunked).await;
        let weir = start(&format!(
            "listeners:\n  - name: main\n    bind: \"127.0.0.1:0\"\n\
             admin:\n  bind: \"127.0.0.1:0\"\n\
             access_log:\n  enabled: false\n\
             routes:\n  - path_prefix: /half\n    pool: half\n  - pool: good\n\
             pools:\n  - name: half\n    endpoints:\n      - address: \"{half}\"\n\
             \x20 - name: good\n    endpoints:\n      - address: \"{}\"\n",
            good.addr
        ))
        .await;
        let addr = weir.listener_addr("main").unwrap();
        for (proto, c) in [("http/1.1", client()), ("h2c", h2c_client())] {
            for round in 0..3 {
                let what = format!("chunked {chunked}, {proto}, round {round}");
                // Routed by path: an HTTP/2 client sends `:authority`
                // from the URI, not the Host header.
                let res = c.request(get(addr, "x", "/half")).await.unwrap();
                // The head was forwarded before the endpoint failed, so the
                // status cannot change any more; only the body can tell.
                assert_eq!(res.status(), StatusCode::OK, "{what}");
                let body = tokio::time::timeout(Duration::from_secs(5), res.into_body().collect())
                    .await
                    .unwrap_or_else(|_| panic!("{what}: body neither ended nor failed"));
                assert!(
                    body.is_err(),
                    "{what}: a truncated body arrived as a complete one: {} bytes",
                    body.map(|b| b.to_bytes().len()).unwrap_or_default()
                );
                // weir keeps serving, on the same client connection pool.
                let (parts, _) = send(&c, get(addr, "x", "/other")).await;
                assert_eq!(parts.status, StatusCode::OK, "{what}");
                assert_eq!(parts.headers["x-backend"], "good", "{what}");
            }
        }
        let (status, _) = admin_get(&weir, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        weir.shutdown().await;
    }
}

// ---- 5. config file faults ----

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

async fn last_reload_success(weir: &weir::Weir) -> f64 {
    let s = scrape(weir).await;
    sample(&s, "weir_config_last_reload_success", &[]).unwrap()
}

/// Polls `/metrics` until `weir_config_last_reload_success` is `want`.
async fn until_last_reload(weir: &weir::Weir, want: f64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v = last_reload_success(weir).await;
        if v == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: weir_config_last_reload_success is {v}, want {want} within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Breaks the config file in one way; the returned text is the expected
/// part of the reload error.
fn break_file(path: &Path, how: &str) -> &'static str {
    use std::os::unix::fs::PermissionsExt;
    std::fs::remove_file(path).unwrap();
    match how {
        "deleted" => "No such file",
        "directory" => {
            std::fs::create_dir(path).unwrap();
            "Is a directory"
        }
        "dangling symlink" => {
            std::os::unix::fs::symlink(path.with_extension("gone"), path).unwrap();
            "No such file"
        }
        "unreadable" => {
            std::fs::write(path, "").unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).unwrap();
            "Permission denied"
        }
        _ => unreachable!("{how}"),
    }
}

fn restore_file(path: &Path, text: &str) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
    std::fs::write(path, text).unwrap();
}

/// Each fault is seen by the file watcher: the reload fails with the
/// file's path and the OS error, the old config keeps serving and
/// `weir_config_last_reload_success` drops to 0. Writing the same config
/// back is a successful reload again, through the watcher and on demand.
///
/// `chmod 000` does not stop root from reading, so as root (as in CI) the
/// unreadable case is skipped; the directory and the dangling symlink
/// stand in for it there.
#[tokio::test]
async fn config_file_deleted_or_unreadable_keeps_the_old_config_until_it_is_restored() {
    let a = echo_backend("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    let text = simple_config(&[a.addr], "");
    std::fs::write(&path, &text).unwrap();
    let weir = weir::Weir::start_from_file(&path).await.unwrap();
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    let version = weir.shared().snapshot().version;

    let mut faults = vec!["deleted", "directory", "dangling symlink"];
    if running_as_root() {
        println!("running as root: chmod 000 does not stop reads; skipping that case");
    } else {
        faults.push("unreadable");
    }
    for how in faults {
        let expected = break_file(&path, how);
        until_last_reload(&weir, 0.0, how).await;
        let err = weir.reload().await.unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains(expected),
            "{how}: unclear error: {err}"
        );
        let (parts, _) = send(&c, get(addr, "x", "/")).await;
        assert_eq!(
            parts.status,
            StatusCode::OK,
            "{how}: old config stopped serving"
        );
        assert_eq!(parts.headers["x-backend"], "a");
        assert_eq!(weir.shared().snapshot().version, version, "{how}");

        restore_file(&path, &text);
        until_last_reload(&weir, 1.0, &format!("{how}, restored")).await;
        let summary = weir.reload().await.unwrap();
        assert!(!summary.changed, "{how}: {summary:?}");
        assert_eq!(last_reload_success(&weir).await, 1.0);
    }
    let s = scrape(&weir).await;
    let failures = sample(&s, "weir_config_reloads_total", &[("result", "failure")]).unwrap();
    assert!(failures >= 3.0, "{failures}");
    weir.shutdown().await;
}
