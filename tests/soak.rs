//! Soak: the real `weir` binary under a steady request rate for minutes,
//! with a config reload every few seconds (alternating endpoint sets) and
//! one endpoint stopped and started again every few seconds. Resident
//! memory and open file descriptors are sampled after a warm-up and at the
//! end, and their growth must stay bounded; at the end every
//! `weir_upstream_in_flight` gauge must be back to 0.
//!
//! Ignored by default: run it with `scripts/soak.sh` (`--short` for a
//! 20-second smoke run). Settings, all from the environment:
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `SOAK_SECONDS` | 180 | measured run, after the warm-up |
//! | `SOAK_WARMUP_SECONDS` | 10 | load, reloads and flaps before the first sample |
//! | `SOAK_RATE` | 200 | requests per second |
//! | `SOAK_RELOAD_SECONDS` | 3 | time between config rewrites |
//! | `SOAK_FLAP_SECONDS` | 2 | time between stopping and starting the flapping endpoint |
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
#[path = "common/flappy.rs"]
mod flappy;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use common::*;
use flappy::Flappy;
use http::StatusCode;
use http_body_util::BodyExt;

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Kills the child when the test ends, however it ends.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A config over `endpoints`, with passive ejection and retries so that
/// the flapping endpoint costs no failed requests.
fn config(endpoints: &[SocketAddr], generation: u64) -> String {
    // The comment makes every generation a different file, so each rewrite
    // is a real reload even when the endpoint set repeats.
    format!(
        "# generation {generation}\n{}",
        simple_config(
            endpoints,
            "    health:\n      passive:\n        consecutive_failures: 1\n        \
             base_ejection_time: 200ms\n        max_ejection_time: 1s\n    \
             retries:\n      attempts: 3\n      budget_min_per_second: 100\n",
        )
    )
}

fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// `(VmRSS in bytes, open fds)` of a process.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (kib * 1024, fds)
}

/// Reads weir's JSON log: hands over the addresses it listens on and
/// counts failed reloads; the rest is drained so the pipe never fills.
fn read_log(
    child: &mut Child,
) -> (
    std::sync::mpsc::Receiver<(String, SocketAddr)>,
    Arc<AtomicUsize>,
) {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reload_failures = Arc::new(AtomicUsize::new(0));
    let failures = Arc::clone(&reload_failures);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let message = v["message"].as_str().unwrap_or_default();
            if message.starts_with("config reload failed") {
                failures.fetch_add(1, Ordering::Relaxed);
                eprintln!("{line}");
            }
            if message == "listening" || message == "admin listening" {
                if let Some(addr) = v["address"].as_str().and_then(|a| a.parse().ok()) {
                    let _ = tx.send((message.to_owned(), addr));
                }
            }
        }
    });
    (rx, reload_failures)
}

/// Sum and count of the `weir_upstream_in_flight` series.
async fn in_flight(admin: SocketAddr) -> (f64, usize) {
    let (parts, body) = send(&client(), get(admin, "admin", "/metrics")).await;
    assert_eq!(parts.status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let gauges: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "weir_upstream_in_flight")
        .filter_map(|s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
        .collect();
    (gauges.iter().sum(), gauges.len())
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    failures: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: minutes long; run with scripts/soak.sh"]
async fn soak_reloads_and_a_flapping_endpoint_leak_neither_memory_nor_fds() {
    let seconds = env_secs("SOAK_SECONDS", 180);
    let warmup = env_secs("SOAK_WARMUP_SECONDS", 10);
    let rate = env_secs("SOAK_RATE", 200).max(1);
    let reload_every = Duration::from_secs(env_secs("SOAK_RELOAD_SECONDS", 3).max(1));
    let flap_every = Duration::from_secs(env_secs("SOAK_FLAP_SECONDS", 2).max(1));

    let a = echo_backend("a").await;
    let b = echo_backend("b").await;
    let flappy = Arc::new(tokio::sync::Mutex::new(Flappy::start("c").await));
    let c_addr = flappy.lock().await.addr;
    let sets = [vec![a.addr, c_addr], vec![a.addr, b.addr, c_addr]];

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, config(&sets[0], 0)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["--log-format", "json", "run", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let pid = child.0.id();
    let (addrs, reload_failures) = read_log(&mut child.0);
    let (mut listener, mut admin) = (None, None);
    while listener.is_none() || admin.is_none() {
        let (what, addr) = addrs
            .recv_timeout(Duration::from_secs(30))
            .expect("weir did not log its addresses");
        if what == "listening" {
            listener = Some(addr);
        } else {
            admin = Some(addr);
        }
    }
    let (listener, admin) = (listener.unwrap(), admin.unwrap());

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());

    // Steady rate: 8 workers, each on its own fixed schedule, so a slow
    // answer delays only its worker's next request.
    let workers = 8;
    let period = Duration::from_secs_f64(workers as f64 / rate as f64);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let res = tokio::time::timeout(Duration::from_secs(5), async {
                    let res = c.request(get(listener, "x", "/")).await?;
                    let status = res.status();
                    res.into_body().collect().await?;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
                })
                .await;
                let why = match res {
                    Ok(Ok(StatusCode::OK)) => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Ok(Ok(s)) => format!("status {s}"),
                    Ok(Err(e)) => format!("error {e}"),
                    Err(_) => "no answer in 5 s".to_owned(),
                };
                tally.failed.fetch_add(1, Ordering::Relaxed);
                let mut f = tally.failures.lock().unwrap();
                if f.len() < 10 {
                    f.push(why);
                }
            }
        }));
    }

    // Reloads: rewrite the file, alternating the endpoint sets; the file
    // watcher picks each one up.
    let reloads = Arc::new(AtomicUsize::new(0));
    {
        let (stop, reloads, path) = (Arc::clone(&stop), Arc::clone(&reloads), path.clone());
        tasks.push(tokio::spawn(async move {
            let mut generation = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(reload_every).await;
                generation += 1;
                let set = &sets[(generation % 2) as usize];
                write_atomic(&path, &config(set, generation));
                reloads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    // Flapping: stop and start endpoint c.
    let flaps = Arc::new(AtomicUsize::new(0));
    {
        let (stop, flaps, flappy) = (Arc::clone(&stop), Arc::clone(&flaps), Arc::clone(&flappy));
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(flap_every).await;
                let mut c = flappy.lock().await;
                if c.is_up() {
                    c.stop().await;
                } else {
                    c.restart().await;
                }
                flaps.fetch_add(1, Ordering::Relaxed);
            }
            flappy.lock().await.restart().await;
        }));
    }

    tokio::time::sleep(Duration::from_secs(warmup)).await;
    let (rss0, fds0) = usage(pid);
    let t0 = Instant::now();
    let ok0 = tally.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let measured = t0.elapsed();
    let requests = tally.ok.load(Ordering::Relaxed) - ok0;

    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert!(child.0.try_wait().unwrap().is_none(), "weir exited");

    // Every response was read to the end, so nothing should stay in
    // flight; allow a moment for the last completions.
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut flying, mut series) = in_flight(admin).await;
    while flying != 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        (flying, series) = in_flight(admin).await;
    }
    let (rss1, fds1) = usage(pid);
    let applied = {
        let (parts, body) = send(&client(), get(admin, "admin", "/metrics")).await;
        assert_eq!(parts.status, StatusCode::OK);
        let text = String::from_utf8(body.to_vec()).unwrap();
        let scrape =
            prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
        sample(
            &scrape,
            "weir_config_reloads_total",
            &[("result", "success")],
        )
        .unwrap_or(0.0)
    };

    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let failures = tally.failures.lock().unwrap().clone();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "soak: warm-up {warmup}s, measured {measured:.1?}; {requests} ok requests in the \
         measured part ({:.0}/s), {ok} ok and {failed} failed in all {failures:?}; \
         {} config rewrites, {applied} reloads applied, {} reload failures logged, {} flaps",
        requests as f64 / measured.as_secs_f64(),
        reloads.load(Ordering::Relaxed),
        reload_failures.load(Ordering::Relaxed),
        flaps.load(Ordering::Relaxed),
    );
    println!(
        "soak: RSS {:.1} MiB -> {:.1} MiB ({:+.1} MiB), fds {fds0} -> {fds1} ({:+}), \
         in flight at the end {flying} over {series} series",
        mib(rss0),
        mib(rss1),
        mib(rss1) - mib(rss0),
        fds1 as i64 - fds0 as i64,
    );

    assert_eq!(
        flying, 0.0,
        "requests still in flight after the load stopped"
    );
    assert!(series > 0, "no weir_upstream_in_flight series");
    assert!(
        rss1 <= rss0 + rss0 / 5 + 5 * 1024 * 1024,
        "RSS grew from {rss0} to {rss1} bytes"
    );
    assert!(fds1 < fds0 + 20, "open fds grew from {fds0} to {fds1}");
    assert_eq!(reload_failures.load(Ordering::Relaxed), 0);
    // The last rewrite may still be in the watcher's debounce window.
    let rewrites = reloads.load(Ordering::Relaxed) as f64;
    assert!(
        applied >= rewrites - 1.0,
        "{applied} of {rewrites} rewrites applied"
    );
    // Retries and ejection hide the flapping endpoint; allow a sliver for
    // the moment a stop races a request already written to c.
    assert!(
        failed * 1000 <= ok.max(1),
        "{failed} of {} requests failed: {failures:?}",
        ok + failed
    );
}
