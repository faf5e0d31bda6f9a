//! The `weir` binary: `check`, `demo`, `--version`, and graceful shutdown on
//! SIGTERM, run as a real process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

fn example_path() -> String {
    format!("{}/config.example.yaml", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_accepts_the_example_config() {
    let out = weir()
        .args(["check", "-c", &example_path()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": ok: "), "{stdout}");
    assert!(stdout.contains("pool(s)"), "{stdout}");
}

#[test]
fn check_rejects_a_bad_config_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "listeners: [{name: a, bind: \"127.0.0.1:0\"}]\nroutes:\n  - pool: nope\npools:\n  - name: p\n    endpoints: [{address: \"127.0.0.1:1\"}]\n",
    )
    .unwrap();
    let out = weir()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("routes[0].pool"), "{stderr}");
}

/// A taken port is an exit 1 with one line naming the listener, the
/// address and the OS error (once: it used to be repeated by the error
/// chain).
#[test]
fn a_taken_port_is_reported_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(
        &path,
        format!(
            "listeners: [{{name: web, bind: \"{addr}\"}}]\nadmin: {{bind: \"127.0.0.1:0\"}}\nroutes:\n  - pool: p\npools:\n  - name: p\n    endpoints: [{{address: \"127.0.0.1:1\"}}]\n"
        ),
    )
    .unwrap();
    let out = weir().args(["run", "-c"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("cannot bind"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(&format!("`web` to {addr}")), "{line}");
    assert_eq!(line.matches("in use").count(), 1, "{line}");
}

#[test]
fn version_flag_prints_the_version() {
    let out = weir().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// Kills the child if the test fails before it exits.
struct Reap(Child);
impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads JSON log lines from the child's stderr until one says
/// "listening" for `listener`, and returns its address.
fn listening_addr(child: &mut Child, listener: &str) -> SocketAddr {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let want = listener.to_owned();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == "listening" && v["listener"] == want.as_str() {
                    let _ = tx.send(
                        v["address"]
                            .as_str()
                            .unwrap()
                            .parse::<SocketAddr>()
                            .unwrap(),
                    );
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("weir did not report its listener")
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits_zero() {
    let slow = backend_with("slow", |_, _| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        http::Response::new(Full::new(Bytes::from_static(b"done")))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weir.yaml");
    std::fs::write(&path, simple_config(&[slow.addr], "")).unwrap();
    let child = weir()
        .args(["--log-format", "json", "run", "-c"])
        .arg(&path)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let addr = listening_addr(&mut child.0, "main");

    let in_flight = tokio::spawn(async move { send(&client(), get(addr, "x", "/")).await });
    assert!(eventually(Duration::from_secs(5), || slow.count() == 1).await);
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());

    // New connections are refused once the listener has closed.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "listener still accepting after SIGTERM");

    let (parts, body) = in_flight.await.unwrap();
    assert_eq!(parts.status, http::StatusCode::OK);
    assert_eq!(body, "done");

    let status = tokio::task::spawn_blocking(move || {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = child.0.try_wait().unwrap() {
                return Some(s);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap()
    .expect("weir did not exit after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn demo_serves_three_backends_in_turn() {
    let child = weir()
        .args([
            "--log-format",
            "json",
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reap(child);
    let addr = listening_addr(&mut child.0, "demo");
    let stdout = child.0.stdout.take().unwrap();
    let first = BufReader::new(stdout).lines().next().unwrap().unwrap();
    assert!(first.contains(&format!("http://{addr}/")), "{first}");
    let c = client();
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let (p, body) = send(&c, get(addr, "localhost", "/hello")).await;
        assert_eq!(p.status, http::StatusCode::OK);
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.starts_with("hello from backend-"), "{text}");
        names.insert(text);
    }
    assert_eq!(names.len(), 3, "round robin over three backends: {names:?}");
}

/// A missing config file is an exit 1 naming the path and the OS error
/// once (the error chain used to repeat it), for `run` and `check`.
#[test]
fn a_missing_config_file_is_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.yaml");
    for command in ["run", "check"] {
        let out = weir().args([command, "-c"]).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let line = stderr
            .lines()
            .find(|l| l.contains("cannot read"))
            .unwrap_or_else(|| panic!("{command}: {stderr}"));
        assert!(line.contains(&path.display().to_string()), "{line}");
        assert_eq!(line.matches("os error").count(), 1, "{command}: {line}");
    }
}
