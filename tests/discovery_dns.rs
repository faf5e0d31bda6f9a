//! The `dns` discovery source against a real DNS server: dnsmasq on a
//! loopback port of its own, serving records from files the tests write.
//!
//! dnsmasq re-reads `addn-hosts` files on SIGHUP, which is how the A-record
//! test changes the answer under a running weir. (It does not re-read
//! `srv-host` lines, so the SRV tests keep their records fixed.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The dnsmasq binary, or a failure telling how to get it: a missing DNS
/// server must not make these tests pass by skipping.
fn dnsmasq_binary() -> PathBuf {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = Path::new(dir).join("dnsmasq");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "dnsmasq not found: these tests need a real DNS server; run scripts/test.sh \
         (it installs Debian's dnsmasq-base)"
    );
}

/// A port free for both UDP and TCP on 127.0.0.1 (DNS uses both).
fn free_dns_port() -> u16 {
    for _ in 0..50 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// A dnsmasq process answering for `weir.test` from `conf` lines and a
/// hosts file; killed on drop.
struct Dnsmasq {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq with extra `conf` lines and the `hosts` file
    /// contents, and waits until it accepts TCP queries.
    async fn start(conf: &str, hosts: &str) -> Dnsmasq {
        let bin = dnsmasq_binary();
        let dir = tempfile::tempdir().unwrap();
        // dnsmasq started as root drops to `nobody` and must still read
        // the hosts file when it reloads.
        set_mode(dir.path(), 0o755);
        let hosts_path = dir.path().join("hosts");
        std::fs::write(&hosts_path, hosts).unwrap();
        set_mode(&hosts_path, 0o644);
        let conf_path = dir.path().join("dnsmasq.conf");
        // `local=` makes dnsmasq authoritative for weir.test, so unknown
        // names are NXDOMAIN rather than REFUSED (no upstream servers).
        std::fs::write(
            &conf_path,
            format!(
                "local=/weir.test/\nlocal-ttl=1\naddn-hosts={}\n{conf}",
                hosts_path.display()
            ),
        )
        .unwrap();
        set_mode(&conf_path, 0o644);
        let port = free_dns_port();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(bin)
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--pid-file=",
                "--log-facility=-",
                "--log-queries",
            ])
            .arg(format!("--port={port}"))
            .arg(format!("--conf-file={}", conf_path.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Dnsmasq {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if tokio::net::TcpStream::connect(d.addr).await.is_ok() {
                return d;
            }
            let exited = d.child.as_mut().unwrap().try_wait().unwrap();
            if exited.is_some() || tokio::time::Instant::now() >= end {
                panic!("dnsmasq did not start ({exited:?}):\n{}", d.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Replaces the hosts file and makes dnsmasq re-read it.
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(self.dir.path().join("hosts"), hosts).unwrap();
        let pid = self.child.as_ref().unwrap().id().to_string();
        let ok = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "SIGHUP to dnsmasq failed");
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.kill();
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// An HTTP/1.1 backend on a given address that answers `x-backend: name`
/// and counts requests; `stop` closes the listener and every connection.
struct Backend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Backend {
    async fn bind(addr: SocketAddr, name: &'static str) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (h, s) = (Arc::clone(&hits), stop.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = s.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let (h, s) = (Arc::clone(&h), s.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        h.fetch_add(1, Ordering::SeqCst);
                        let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                        r.headers_mut()
                            .insert("x-backend", http::HeaderValue::from_static(name));
                        async move { Ok::<_, Infallible>(r) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = s.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
        Ok(Backend { addr, hits, stop })
    }

    fn count(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Two backends on 127.0.0.2 and 127.0.0.3 with the same port, as one A
/// name with two addresses needs.
async fn backend_pair() -> (Backend, Backend) {
    for _ in 0..50 {
        let a = Backend::bind(SocketAddr::from(([127, 0, 0, 2], 0)), "two")
            .await
            .unwrap();
        let other = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)), a.addr.port());
        if let Ok(b) = Backend::bind(other, "three").await {
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}

fn yaml(balance: &str, source: &str, extra: &str) -> String {
    format!(
        "listeners: [{{name: main, bind: \"127.0.0.1:0\"}}]\n\
         admin: {{bind: \"127.0.0.1:0\"}}\n\
         access_log: {{enabled: false}}\n\
         routes: [{{pool: p}}]\n\
         pools:\n  - name: p\n    balance: {balance}\n{extra}    discovery:\n      - dns: {source}\n"
    )
}

fn endpoint_count(weir: &weir::Weir) -> usize {
    weir.shared().snapshot_full().pools[0]
        .backends()
        .backends()
        .len()
}

/// Sends `n` requests, asserting each is a 200, and returns the backends
/// that answered, in order.
async fn hit(c: &HttpClient, addr: SocketAddr, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (p, _) = send(c, get(addr, "x", "/")).await;
        assert_eq!(p.status, StatusCode::OK);
        out.push(p.headers["x-backend"].to_str().unwrap().to_owned());
    }
    out
}

async fn source_status(weir: &weir::Weir) -> serde_json::Value {
    let (_, status) = admin_get(weir, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    status["pools"][0]["sources"][0].clone()
}

#[tokio::test]
async fn a_records_follow_the_hosts_file_after_sighup() {
    let (two, three) = backend_pair().await;
    let port = two.addr.port();
    let dns = Dnsmasq::start("", "127.0.0.2 a.weir.test\n127.0.0.3 a.weir.test\n").await;
    let weir = start(&yaml(
        "round_robin",
        &format!(
            "{{name: a.weir.test, type: A, port: {port}, resolver: \"{}\", \
             min_interval: 100ms, max_interval: 1s, timeout: 500ms}}",
            dns.addr
        ),
        "",
    ))
    .await;
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    assert!(
        eventually(Duration::from_secs(3), || endpoint_count(&weir) == 2).await,
        "weir never saw both addresses; dnsmasq log:\n{}",
        dns.log()
    );
    hit(&c, addr, 20).await;
    assert_eq!((two.count(), three.count()), (10, 10));
    let status = source_status(&weir).await;
    assert_eq!(status["state"], "ok");
    assert_eq!(status["endpoints"], 2);

    dns.set_hosts("127.0.0.2 a.weir.test\n");
    let t = tokio::time::Instant::now();
    // TTL 1 s: weir re-asks within about a second.
    assert!(
        eventually(Duration::from_secs(3), || endpoint_count(&weir) == 1).await,
        "weir kept both addresses; dnsmasq log:\n{}",
        dns.log()
    );
    assert!(t.elapsed() < Duration::from_secs(3));
    let before = three.count();
    assert!(hit(&c, addr, 20).await.iter().all(|b| b == "two"));
    assert_eq!(three.count(), before);
}

#[tokio::test]
async fn srv_weights_split_traffic_and_unresolvable_targets_are_skipped() {
    let a = Backend::bind(SocketAddr::from(([127, 0, 0, 1], 0)), "a")
        .await
        .unwrap();
    let b = Backend::bind(SocketAddr::from(([127, 0, 0, 1], 0)), "b")
        .await
        .unwrap();
    let conf = format!(
        "host-record=a.weir.test,127.0.0.1\n\
         host-record=b.weir.test,127.0.0.1\n\
         srv-host=_http._tcp.svc.weir.test,a.weir.test,{},10,3\n\
         srv-host=_http._tcp.svc.weir.test,b.weir.test,{},10,1\n\
         srv-host=_http._tcp.svc.weir.test,gone.weir.test,9,10,5\n",
        a.addr.port(),
        b.addr.port()
    );
    let dns = Dnsmasq::start(&conf, "").await;
    let weir = start(&yaml(
        "round_robin",
        &format!(
            "{{name: _http._tcp.svc.weir.test, type: SRV, resolver: \"{}\", \
             min_interval: 100ms, max_interval: 1s, timeout: 500ms}}",
            dns.addr
        ),
        "",
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(3), || endpoint_count(&weir) == 2).await,
        "weir never saw both SRV targets; dnsmasq log:\n{}",
        dns.log()
    );
    let (_, status) = admin_get(&weir, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let mut weights: Vec<(String, u64)> = status["pools"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap().to_owned(),
                e["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    weights.sort();
    let mut want = vec![(a.addr.to_string(), 3), (b.addr.to_string(), 1)];
    want.sort();
    assert_eq!(weights, want);

    let addr = weir.listener_addr("main").unwrap();
    hit(&client(), addr, 200).await;
    assert_eq!((a.count(), b.count()), (150, 50));
}

#[tokio::test]
async fn srv_priorities_fail_over_to_the_next_tier() {
    let first = Backend::bind(SocketAddr::from(([127, 0, 0, 1], 0)), "first")
        .await
        .unwrap();
    let second = Backend::bind(SocketAddr::from(([127, 0, 0, 1], 0)), "second")
        .await
        .unwrap();
    let conf = format!(
        "host-record=first.weir.test,127.0.0.1\n\
         host-record=second.weir.test,127.0.0.1\n\
         srv-host=_http._tcp.svc.weir.test,first.weir.test,{},10,1\n\
         srv-host=_http._tcp.svc.weir.test,second.weir.test,{},20,1\n",
        first.addr.port(),
        second.addr.port()
    );
    let dns = Dnsmasq::start(&conf, "").await;
    let weir = start(&yaml(
        "round_robin",
        &format!(
            "{{name: _http._tcp.svc.weir.test, type: SRV, resolver: \"{}\", \
             min_interval: 100ms, max_interval: 1s, timeout: 500ms}}",
            dns.addr
        ),
        "    health:\n      active: {type: tcp, interval: 100ms, timeout: 200ms, unhealthy_threshold: 1}\n",
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(3), || endpoint_count(&weir) == 2).await,
        "weir never saw both SRV targets; dnsmasq log:\n{}",
        dns.log()
    );
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    // Only the first tier serves while it is up.
    assert!(hit(&c, addr, 20).await.iter().all(|b| b == "first"));
    assert_eq!(second.count(), 0);

    first.stop.cancel();
    // Once the health check marks it down, the second tier takes over.
    let end = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (p, _) = send(&c, get(addr, "x", "/")).await;
        if p.headers.get("x-backend").is_some_and(|v| v == "second") {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "no failover to tier 2");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(hit(&c, addr, 20).await.iter().all(|b| b == "second"));
}

#[tokio::test]
async fn an_unreachable_resolver_keeps_the_last_good_set() {
    let a = Backend::bind(SocketAddr::from(([127, 0, 0, 1], 0)), "a")
        .await
        .unwrap();
    let mut dns = Dnsmasq::start("host-record=a.weir.test,127.0.0.1\n", "").await;
    let weir = start(&yaml(
        "round_robin",
        &format!(
            "{{name: a.weir.test, type: A, port: {}, resolver: \"{}\", \
             min_interval: 100ms, max_interval: 1s, timeout: 200ms}}",
            a.addr.port(),
            dns.addr
        ),
        "",
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(3), || endpoint_count(&weir) == 1).await,
        "weir never resolved a.weir.test; dnsmasq log:\n{}",
        dns.log()
    );
    let name = source_status(&weir).await["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let failures = |s: &prometheus_parse::Scrape| {
        sample(
            s,
            "weir_discovery_refreshes_total",
            &[("pool", "p"), ("source", &name), ("result", "failure")],
        )
        .unwrap_or(0.0)
    };

    dns.kill();
    let addr = weir.listener_addr("main").unwrap();
    let c = client();
    // Serving goes on while the source turns stale and keeps failing.
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut first_failures = None;
    loop {
        assert_eq!(hit(&c, addr, 2).await, ["a", "a"]);
        let status = source_status(&weir).await;
        let failed = failures(&scrape(&weir).await);
        if status["state"] == "stale" {
            assert_eq!(status["endpoints"], 1);
            match first_failures {
                None if failed >= 1.0 => first_failures = Some(failed),
                Some(f) if failed > f => break,
                _ => {}
            }
        }
        assert!(
            tokio::time::Instant::now() < end,
            "source {status} with {failed} failures"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(endpoint_count(&weir), 1);
}

#[tokio::test]
async fn a_missing_name_is_an_empty_set_not_an_error() {
    let dns = Dnsmasq::start("", "").await;
    let weir = start(&yaml(
        "round_robin",
        &format!(
            "{{name: nothing.weir.test, type: SRV, resolver: \"{}\", \
             min_interval: 100ms, max_interval: 1s, timeout: 500ms}}",
            dns.addr
        ),
        "",
    ))
    .await;
    let end = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let status = source_status(&weir).await;
        if status["state"] == "ok" {
            assert_eq!(status["endpoints"], 0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{status}; dnsmasq log:\n{}",
            dns.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
