//! Active health checking: the per-pool probe task (the IO half of
//! `crate::health`, whose pure state it drives).
//!
//! Every `interval`, [`run`] takes the pool's *current* endpoint list,
//! probes every endpoint concurrently (HTTP request or TCP connect, each
//! bounded by `timeout`), feeds each result to that endpoint's rise/fall
//! [`Tracker`] (HAProxy `rise`/`fall`), and applies a changed verdict to the
//! endpoint's [`HealthCell`](crate::health::HealthCell). A passing probe also ends a passive ejection
//! (Envoy's `successful_active_health_check_uneject_host`).
//!
//! Endpoint lists change at runtime (discovery, reload). Between rounds the
//! task looks at the list every `discovery_poll` and probes endpoints it has
//! not seen at once, so a new endpoint gets its first probe within
//! `discovery_poll` of appearing instead of up to a whole `interval` later;
//! trackers of endpoints that left the list are dropped. Trackers are keyed
//! by address, the endpoint's identity.
//!
//! Probes use their own short-lived connections (`Connection: close`), never
//! the request connection pool: a probe must see what a *new* connection
//! would see, and must not take or poison a pooled keep-alive connection.
//!
//! Contract:
//!
//! * every wait (interval ticks, jitter sleeps, the probes themselves)
//!   selects on the cancellation token, so cancelling ends the task
//!   promptly, dropping in-flight probes and closing their sockets;
//! * only transitions are logged (`warn` on down, `info` on up and on an
//!   ejection ended by a probe); every probe and transition is reported to
//!   a [`ProbeObserver`] for metrics;
//! * time is `tokio::time`, so tests can run it on a paused clock.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::join_all;
use http::{header, Request};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{self, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::health::{ActivePolicy, Health, ProbeKind, ProbeResult, Probed, Tracker};
use crate::tls::upstream::MaybeTls;

/// Metrics hook of the probe task. All methods default to doing nothing.
pub trait ProbeObserver: Send + Sync + 'static {
    /// One probe of `addr` finished.
    fn probed(&self, addr: SocketAddr, ok: bool, latency: Duration) {
        let _ = (addr, ok, latency);
    }
    /// The active verdict of `addr` changed to `health`.
    fn transition(&self, addr: SocketAddr, health: Health) {
        let _ = (addr, health);
    }
    /// A passing probe ended a passive ejection of `addr`.
    fn un_ejected(&self, addr: SocketAddr) {
        let _ = addr;
    }
}

/// A [`ProbeObserver`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl ProbeObserver for NoopObserver {}

impl<O: ProbeObserver + ?Sized> ProbeObserver for Arc<O> {
    fn probed(&self, addr: SocketAddr, ok: bool, latency: Duration) {
        (**self).probed(addr, ok, latency);
    }
    fn transition(&self, addr: SocketAddr, health: Health) {
        (**self).transition(addr, health);
    }
    fn un_ejected(&self, addr: SocketAddr) {
        (**self).un_ejected(addr);
    }
}

/// Smallest period handed to `tokio::time::interval`, which panics on 0.
const MIN_PERIOD: Duration = Duration::from_millis(1);

/// Runs the probe task of one pool until `cancel` fires.
///
/// `targets` returns the pool's current endpoints; it is called once per
/// round and once per `discovery_poll`, so it should be cheap (an
/// `ArcSwap` load and a clone of the `Arc`s). `pool` names the pool in
/// logs.
pub async fn run<T, F, O>(
    pool: Arc<str>,
    targets: F,
    policy: ActivePolicy,
    cancel: CancellationToken,
    observer: O,
) where
    T: Probed,
    F: Fn() -> Vec<Arc<T>> + Send,
    O: ProbeObserver,
{
    let check = |addr| probe_inner(addr, &policy.kind, policy.tls.as_ref());
    run_with(&pool, targets, &policy, &cancel, &observer, check).await;
}

/// [`run`] with the network check injected: `check(addr)` is one probe's
/// IO (connect, TLS, request), which the timeout, jitter, trackers and
/// schedule here wrap. Tests drive the schedule with a scripted check on a
/// paused clock.
async fn run_with<T, F, O, C, Fut>(
    pool: &str,
    targets: F,
    policy: &ActivePolicy,
    cancel: &CancellationToken,
    observer: &O,
    check: C,
) where
    T: Probed,
    F: Fn() -> Vec<Arc<T>>,
    O: ProbeObserver,
    C: Fn(SocketAddr) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let period = policy.interval.max(MIN_PERIOD);
    let mut rounds = time::interval(period);
    rounds.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut polls = time::interval(policy.discovery_poll.clamp(MIN_PERIOD, period));
    polls.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut trackers: HashMap<SocketAddr, Tracker> = HashMap::new();
    loop {
        // Both intervals tick at once on the first iteration; `biased`
        // makes that a full round.
        let full_round = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            _ = rounds.tick() => true,
            _ = polls.tick() => false,
        };
        let due = due_targets(targets(), &mut trackers, policy, full_round);
        if due.is_empty() {
            continue;
        }
        let probes = join_all(due.iter().map(|t| timed_probe(t.addr(), policy, &check)));
        let results = tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            results = probes => results,
        };
        for (t, result) in due.iter().zip(results) {
            if let Some(tracker) = trackers.get_mut(&t.addr()) {
                apply(pool, t.as_ref(), tracker, result, observer);
            }
        }
    }
}

/// The endpoints to probe now: all of them on a full round, otherwise only
/// those not seen before. Trackers of endpoints that left are dropped, and
/// new ones start from the cell's verdict (a backend that outlived a
/// reload keeps its state).
fn due_targets<T: Probed>(
    current: Vec<Arc<T>>,
    trackers: &mut HashMap<SocketAddr, Tracker>,
    policy: &ActivePolicy,
    full_round: bool,
) -> Vec<Arc<T>> {
    let present: HashSet<SocketAddr> = current.iter().map(|t| t.addr()).collect();
    trackers.retain(|addr, _| present.contains(addr));
    let mut due = Vec::with_capacity(current.len());
    for t in current {
        let new = !trackers.contains_key(&t.addr());
        if new {
            let tracker = Tracker::new(
                policy.healthy_threshold,
                policy.unhealthy_threshold,
                t.health().active(),
            );
            trackers.insert(t.addr(), tracker);
        }
        if full_round || new {
            due.push(t);
        }
    }
    due
}

/// Feeds one probe result to the tracker and the cell.
fn apply<T: Probed + ?Sized, O: ProbeObserver>(
    pool: &str,
    target: &T,
    tracker: &mut Tracker,
    result: ProbeResult,
    observer: &O,
) {
    let addr = target.addr();
    let cell = target.health();
    let ok = result.ok;
    observer.probed(addr, ok, result.latency);
    tracker.observe(ok);
    // Apply the tracker's state rather than only its transitions: a backend
    // rebuilt for the same address (weight change) starts with a fresh,
    // healthy cell and must inherit the verdict the tracker holds.
    let state = tracker.state();
    if cell.set_active(state) {
        match state {
            Health::Unhealthy => tracing::warn!(
                pool,
                endpoint = %addr,
                error = result.error.as_deref().unwrap_or(""),
                "endpoint marked unhealthy by active health check"
            ),
            Health::Healthy => tracing::info!(
                pool,
                endpoint = %addr,
                "endpoint marked healthy by active health check"
            ),
        }
        observer.transition(addr, state);
    }
    if ok && cell.un_eject(Instant::now()) {
        tracing::info!(pool, endpoint = %addr, "ejection ended by a passing health check");
        observer.un_ejected(addr);
    }
    cell.record_probe(result);
}

/// One probe after its jitter delay, bounded by `policy.timeout`; never
/// fails, the failure is in the result.
async fn timed_probe<C, Fut>(addr: SocketAddr, policy: &ActivePolicy, check: &C) -> ProbeResult
where
    C: Fn(SocketAddr) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let jitter = policy.jitter.min(policy.interval);
    if !jitter.is_zero() {
        let nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
        time::sleep(Duration::from_nanos(fastrand::u64(0..=nanos))).await;
    }
    let start = Instant::now();
    let outcome = match time::timeout(policy.timeout, check(addr)).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", policy.timeout)),
    };
    ProbeResult {
        ok: outcome.is_ok(),
        latency: start.elapsed(),
        at: SystemTime::now(),
        error: outcome.err(),
    }
}

/// Probes `addr` once, bounded by `policy.timeout` (no jitter).
pub async fn probe(addr: SocketAddr, policy: &ActivePolicy) -> ProbeResult {
    let no_jitter = ActivePolicy {
        jitter: Duration::ZERO,
        ..policy.clone()
    };
    let check = |addr| probe_inner(addr, &policy.kind, policy.tls.as_ref());
    timed_probe(addr, &no_jitter, &check).await
}

async fn probe_inner(
    addr: SocketAddr,
    kind: &ProbeKind,
    tls: Option<&crate::tls::upstream::UpstreamTls>,
) -> Result<(), String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let stream = match tls {
        None => MaybeTls::Plain(stream),
        Some(tls) => MaybeTls::Tls(Box::new(
            tls.connect(addr, stream, true)
                .await
                .map_err(|e| e.to_string())?,
        )),
    };
    match kind {
        ProbeKind::Tcp => Ok(()),
        ProbeKind::Http {
            method,
            path,
            host,
            expected,
        } => {
            let host = match host {
                Some(h) => h.clone(),
                None => addr.to_string(),
            };
            let req = Request::builder()
                .method(method.clone())
                .uri(path.as_str())
                .header(header::HOST, host)
                .header(header::CONNECTION, "close")
                .header(header::USER_AGENT, "weir-health-check")
                .body(Empty::<Bytes>::new())
                .map_err(|e| format!("bad request: {e}"))?;
            let status = http_status(stream, req).await?;
            if expected.iter().any(|&(lo, hi)| (lo..=hi).contains(&status)) {
                Ok(())
            } else {
                Err(format!("status {status}"))
            }
        }
    }
}

/// Sends `req` on its own HTTP/1.1 connection and returns the response
/// status. The body is not read: the connection is closed right after.
async fn http_status(stream: MaybeTls, req: Request<Empty<Bytes>>) -> Result<u16, String> {
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    // Drive the connection here rather than in a spawned task, so the
    // whole probe (and its socket) goes away when it is dropped.
    let send = sender.send_request(req);
    tokio::pin!(send, conn);
    let res = tokio::select! {
        biased;
        res = &mut send => res,
        // The connection may finish in the same poll that delivered the
        // response; the response (or the error) is then ready in `send`.
        _ = &mut conn => send.await,
    };
    res.map(|r| r.status().as_u16())
        .map_err(|e| format!("request: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;
    use crate::health::HealthCell;
    use http::Method;
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[derive(Debug)]
    struct Ep {
        addr: SocketAddr,
        cell: HealthCell,
    }

    impl Probed for Ep {
        fn addr(&self) -> SocketAddr {
            self.addr
        }
        fn health(&self) -> &HealthCell {
            &self.cell
        }
    }

    fn ep(addr: SocketAddr) -> Arc<Ep> {
        Arc::new(Ep {
            addr,
            cell: HealthCell::new(),
        })
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Event {
        Probe(SocketAddr, bool),
        Transition(SocketAddr, Health),
    }

    #[derive(Default)]
    struct Log(Mutex<Vec<Event>>);

    impl Log {
        fn events(&self) -> Vec<Event> {
            self.0.lock().map(|v| v.clone()).unwrap_or_default()
        }
        fn probes_of(&self, addr: SocketAddr) -> usize {
            self.events()
                .iter()
                .filter(|e| matches!(e, Event::Probe(a, _) if *a == addr))
                .count()
        }
        /// Probe results of `addr` just before its `n`th transition.
        fn results_before_transition(&self, addr: SocketAddr, n: usize) -> Vec<bool> {
            let mut seen = 0;
            let mut results = Vec::new();
            for e in self.events() {
                match e {
                    Event::Probe(a, ok) if a == addr => results.push(ok),
                    Event::Transition(a, _) if a == addr => {
                        seen += 1;
                        if seen == n {
                            return results;
                        }
                    }
                    _ => {}
                }
            }
            results
        }
    }

    impl ProbeObserver for Log {
        fn probed(&self, addr: SocketAddr, ok: bool, _latency: Duration) {
            if let Ok(mut v) = self.0.lock() {
                v.push(Event::Probe(addr, ok));
            }
        }
        fn transition(&self, addr: SocketAddr, health: Health) {
            if let Ok(mut v) = self.0.lock() {
                v.push(Event::Transition(addr, health));
            }
        }
    }

    /// A tiny HTTP/1.1 server answering every request with `status`
    /// (changeable at runtime); it keeps the last request head it saw.
    struct Upstream {
        addr: SocketAddr,
        status: Arc<AtomicU16>,
        last_head: Arc<Mutex<String>>,
        hits: Arc<AtomicUsize>,
    }

    async fn upstream(status: u16) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let status = Arc::new(AtomicU16::new(status));
        let last_head = Arc::new(Mutex::new(String::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (s, h, n) = (status.clone(), last_head.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (s, h, n) = (s.clone(), h.clone(), n.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    n.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut g) = h.lock() {
                        *g = String::from_utf8_lossy(&buf).into_owned();
                    }
                    let code = s.load(Ordering::SeqCst);
                    let resp = format!(
                        "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                    );
                    let _ = sock.write_all(resp.as_bytes()).await;
                });
            }
        });
        Upstream {
            addr,
            status,
            last_head,
            hits,
        }
    }

    /// An address nothing listens on.
    async fn closed_port() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    }

    /// A server that accepts and then never answers.
    async fn black_hole() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        addr
    }

    fn fast(kind: ProbeKind) -> ActivePolicy {
        ActivePolicy {
            kind,
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(500),
            discovery_poll: Duration::from_millis(10),
            ..ActivePolicy::default()
        }
    }

    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            time::sleep(Duration::from_millis(5)).await;
        }
    }

    type Targets = Arc<Mutex<Vec<Arc<Ep>>>>;

    fn spawn_run(
        targets: &Targets,
        policy: ActivePolicy,
        log: &Arc<Log>,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let (cancel, task, _) = spawn_counted(targets, policy, log);
        (cancel, task)
    }

    /// Like `spawn_run`, also counting how often the task read the list.
    fn spawn_counted(
        targets: &Targets,
        policy: ActivePolicy,
        log: &Arc<Log>,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<()>,
        Arc<AtomicUsize>,
    ) {
        let cancel = CancellationToken::new();
        let reads = Arc::new(AtomicUsize::new(0));
        let (t, r) = (targets.clone(), reads.clone());
        let task = tokio::spawn(run(
            Arc::from("test"),
            move || {
                r.fetch_add(1, Ordering::SeqCst);
                t.lock().map(|v| v.clone()).unwrap_or_default()
            },
            policy,
            cancel.clone(),
            log.clone(),
        ));
        (cancel, task, reads)
    }

    #[tokio::test]
    async fn http_endpoint_goes_down_and_comes_back() {
        let up = upstream(200).await;
        let e = ep(up.addr);
        let targets: Targets = Arc::new(Mutex::new(vec![e.clone()]));
        let log = Arc::new(Log::default());
        let (cancel, task) = spawn_run(&targets, fast(ProbeKind::http("/healthz")), &log);

        eventually("passing probes", || log.probes_of(up.addr) >= 2).await;
        assert_eq!(e.cell.active(), Health::Healthy);
        let last = e.cell.last_probe().expect("probe recorded");
        assert!(last.ok && last.error.is_none());

        up.status.store(500, Ordering::SeqCst);
        eventually("down", || e.cell.active() == Health::Unhealthy).await;
        let before = log.results_before_transition(up.addr, 1);
        assert!(before.ends_with(&[true, false, false, false]), "{before:?}");
        assert_eq!(
            e.cell.last_probe().and_then(|p| p.error).as_deref(),
            Some("status 500")
        );
        assert!(!e.cell.is_available(Instant::now()));

        up.status.store(204, Ordering::SeqCst);
        eventually("up", || e.cell.active() == Health::Healthy).await;
        let before = log.results_before_transition(up.addr, 2);
        assert!(before.ends_with(&[false, true, true]), "{before:?}");
        assert_eq!(
            log.events()
                .iter()
                .filter(|e| matches!(e, Event::Transition(..)))
                .count(),
            2
        );

        cancel.cancel();
        task.await.expect("task");
    }

    #[tokio::test]
    async fn http_probe_request_shape() {
        let up = upstream(200).await;
        let policy = ActivePolicy {
            kind: ProbeKind::Http {
                method: Method::HEAD,
                path: "/ready?full=1".into(),
                host: Some("svc.example".into()),
                expected: vec![(200, 299)],
            },
            ..fast(ProbeKind::Tcp)
        };
        let r = probe(up.addr, &policy).await;
        assert!(r.ok, "{r:?}");
        let head = up.last_head.lock().map(|h| h.clone()).unwrap_or_default();
        let lower = head.to_ascii_lowercase();
        assert!(
            head.starts_with("HEAD /ready?full=1 HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(lower.contains("host: svc.example\r\n"), "{head}");
        assert!(lower.contains("connection: close\r\n"), "{head}");

        // Default Host is the endpoint address.
        let r = probe(up.addr, &fast(ProbeKind::default())).await;
        assert!(r.ok);
        let head = up.last_head.lock().map(|h| h.clone()).unwrap_or_default();
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("host: {}\r\n", up.addr)),
            "{head}"
        );
    }

    #[tokio::test]
    async fn expected_status_ranges() {
        let up = upstream(404).await;
        let r = probe(up.addr, &fast(ProbeKind::http("/"))).await;
        assert!(!r.ok);
        assert_eq!(r.error.as_deref(), Some("status 404"));

        let with_404 = fast(ProbeKind::Http {
            method: Method::GET,
            path: "/".into(),
            host: None,
            expected: vec![(200, 399), (404, 404)],
        });
        assert!(probe(up.addr, &with_404).await.ok);

        up.status.store(302, Ordering::SeqCst);
        assert!(probe(up.addr, &fast(ProbeKind::http("/"))).await.ok);
        up.status.store(199, Ordering::SeqCst);
        assert!(!probe(up.addr, &fast(ProbeKind::http("/"))).await.ok);
    }

    #[tokio::test]
    async fn a_404_endpoint_is_marked_down_unless_expected() {
        let up = upstream(404).await;
        let (a, b) = (ep(up.addr), ep(up.addr));
        let log = Arc::new(Log::default());

        let policy = ActivePolicy {
            unhealthy_threshold: 1,
            ..fast(ProbeKind::http("/"))
        };
        let targets: Targets = Arc::new(Mutex::new(vec![a.clone()]));
        let (cancel, task) = spawn_run(&targets, policy.clone(), &log);
        eventually("down", || a.cell.active() == Health::Unhealthy).await;
        cancel.cancel();
        task.await.expect("task");

        let tolerant = ActivePolicy {
            kind: ProbeKind::Http {
                method: Method::GET,
                path: "/".into(),
                host: None,
                expected: vec![(200, 399), (404, 404)],
            },
            ..policy
        };
        let targets: Targets = Arc::new(Mutex::new(vec![b.clone()]));
        let hits = up.hits.load(Ordering::SeqCst);
        let (cancel, task) = spawn_run(&targets, tolerant, &log);
        eventually("probes", || up.hits.load(Ordering::SeqCst) >= hits + 5).await;
        assert_eq!(b.cell.active(), Health::Healthy);
        cancel.cancel();
        task.await.expect("task");
    }

    #[tokio::test]
    async fn tcp_probe_against_a_closed_port_marks_down() {
        let dead = closed_port().await;
        let live = black_hole().await;
        let (d, l) = (ep(dead), ep(live));
        let targets: Targets = Arc::new(Mutex::new(vec![d.clone(), l.clone()]));
        let log = Arc::new(Log::default());
        let (cancel, task) = spawn_run(&targets, fast(ProbeKind::Tcp), &log);

        eventually("down", || d.cell.active() == Health::Unhealthy).await;
        assert_eq!(
            log.results_before_transition(dead, 1),
            [false, false, false]
        );
        let err = d
            .cell
            .last_probe()
            .and_then(|p| p.error)
            .unwrap_or_default();
        assert!(err.starts_with("connect:"), "{err}");
        eventually("live probed", || log.probes_of(live) >= 3).await;
        assert_eq!(l.cell.active(), Health::Healthy);

        cancel.cancel();
        task.await.expect("task");
    }

    #[tokio::test]
    async fn a_hanging_endpoint_fails_by_timeout() {
        let addr = black_hole().await;
        let policy = ActivePolicy {
            timeout: Duration::from_millis(50),
            ..fast(ProbeKind::http("/"))
        };
        let r = probe(addr, &policy).await;
        assert!(!r.ok);
        assert!(r.error.unwrap_or_default().starts_with("timed out"));
        assert!(r.latency >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn new_endpoints_are_probed_at_once_and_removed_ones_forgotten() {
        let first = upstream(200).await;
        let second = upstream(200).await;
        let a = ep(first.addr);
        let targets: Targets = Arc::new(Mutex::new(vec![a.clone()]));
        let log = Arc::new(Log::default());
        // Rounds are far apart: only the new-endpoint path can probe `b`.
        let policy = ActivePolicy {
            interval: Duration::from_secs(3600),
            ..fast(ProbeKind::http("/"))
        };
        let (cancel, task, reads) = spawn_counted(&targets, policy, &log);
        eventually("first round", || log.probes_of(first.addr) == 1).await;

        let b = ep(second.addr);
        if let Ok(mut t) = targets.lock() {
            t.push(b.clone());
        }
        eventually("new endpoint probed", || log.probes_of(second.addr) == 1).await;
        assert!(b.cell.last_probe().is_some_and(|p| p.ok));

        // Removed and re-added: it is new again, so probed again at once.
        if let Ok(mut t) = targets.lock() {
            t.retain(|e| e.addr != second.addr);
        }
        // Two more reads of the list: the removal has been seen.
        let seen = reads.load(Ordering::SeqCst);
        eventually("removal seen", || reads.load(Ordering::SeqCst) >= seen + 2).await;
        if let Ok(mut t) = targets.lock() {
            t.push(b.clone());
        }
        eventually("re-added endpoint probed", || {
            log.probes_of(second.addr) == 2
        })
        .await;
        // The long interval never fired again for the first one.
        assert_eq!(log.probes_of(first.addr), 1);

        cancel.cancel();
        task.await.expect("task");
    }

    #[tokio::test]
    async fn a_rebuilt_backend_inherits_the_verdict() {
        let dead = closed_port().await;
        let old = ep(dead);
        let targets: Targets = Arc::new(Mutex::new(vec![old.clone()]));
        let log = Arc::new(Log::default());
        let policy = ActivePolicy {
            unhealthy_threshold: 1,
            ..fast(ProbeKind::Tcp)
        };
        let (cancel, task) = spawn_run(&targets, policy, &log);
        eventually("down", || old.cell.active() == Health::Unhealthy).await;

        // Same address, new backend (a weight change): fresh healthy cell.
        let new = ep(dead);
        if let Ok(mut t) = targets.lock() {
            *t = vec![new.clone()];
        }
        eventually("verdict applied", || new.cell.active() == Health::Unhealthy).await;
        cancel.cancel();
        task.await.expect("task");
    }

    #[tokio::test]
    async fn a_passing_probe_ends_an_ejection() {
        use crate::health::passive::{record, Outcome, PassivePolicy};
        let up = upstream(200).await;
        let e = ep(up.addr);
        let now = Instant::now();
        let p = PassivePolicy::default();
        for _ in 0..5 {
            record(&e.cell, Outcome::Reset, now, &p, || (0, 1));
        }
        assert!(e.cell.is_ejected(now));

        let targets: Targets = Arc::new(Mutex::new(vec![e.clone()]));
        let log = Arc::new(Log::default());
        let (cancel, task) = spawn_run(&targets, fast(ProbeKind::http("/")), &log);
        eventually("un-ejected", || e.cell.is_available(Instant::now())).await;
        cancel.cancel();
        task.await.expect("task");
    }

    #[tokio::test]
    async fn zero_periods_do_not_panic() {
        let up = upstream(200).await;
        let e = ep(up.addr);
        let targets: Targets = Arc::new(Mutex::new(vec![e.clone()]));
        let log = Arc::new(Log::default());
        let zero = ActivePolicy {
            interval: Duration::ZERO,
            discovery_poll: Duration::ZERO,
            timeout: Duration::ZERO,
            jitter: Duration::from_secs(1),
            ..ActivePolicy::default()
        };
        let (cancel, task, reads) = spawn_counted(&targets, zero, &log);
        eventually("rounds", || reads.load(Ordering::SeqCst) >= 10).await;
        cancel.cancel();
        task.await.expect("task");
    }

    /// A scripted check on a paused clock: records when each endpoint was
    /// probed, answers with `verdict`, or never answers while `hang`.
    #[derive(Default)]
    struct Script {
        probes: Mutex<Vec<(SocketAddr, Duration)>>,
        fail: std::sync::atomic::AtomicBool,
        hang: std::sync::atomic::AtomicBool,
    }

    impl Script {
        fn times_of(&self, addr: SocketAddr) -> Vec<Duration> {
            let v = self.probes.lock().map(|v| v.clone()).unwrap_or_default();
            v.into_iter()
                .filter(|(a, _)| *a == addr)
                .map(|(_, t)| t)
                .collect()
        }
    }

    /// Runs the schedule with `script` as the network, from `t0`.
    fn spawn_scripted(
        targets: &Targets,
        policy: ActivePolicy,
        script: &Arc<Script>,
    ) -> (CancellationToken, tokio::task::JoinHandle<()>, Instant) {
        let cancel = CancellationToken::new();
        let (t, sc, c) = (targets.clone(), script.clone(), cancel.clone());
        let t0 = Instant::now();
        let task = tokio::spawn(async move {
            let check = |addr| {
                let sc = sc.clone();
                async move {
                    if let Ok(mut v) = sc.probes.lock() {
                        v.push((addr, t0.elapsed()));
                    }
                    if sc.hang.load(Ordering::SeqCst) {
                        std::future::pending::<()>().await;
                    }
                    match sc.fail.load(Ordering::SeqCst) {
                        true => Err("scripted failure".to_owned()),
                        false => Ok(()),
                    }
                }
            };
            let targets = move || t.lock().map(|v| v.clone()).unwrap_or_default();
            run_with("test", targets, &policy, &c, &NoopObserver, check).await;
        });
        (cancel, task, t0)
    }

    fn scripted_policy() -> ActivePolicy {
        ActivePolicy {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            discovery_poll: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            ..ActivePolicy::default()
        }
    }

    fn secs(s: &[u64]) -> Vec<Duration> {
        s.iter().map(|&s| Duration::from_secs(s)).collect()
    }

    /// Sleeps until `at` after `t0` on the paused clock.
    async fn until(t0: Instant, at: Duration) {
        time::sleep_until(t0 + at).await;
    }

    #[tokio::test(start_paused = true)]
    async fn rounds_run_every_interval_from_the_start() {
        let a = ep("127.0.0.1:1001".parse().unwrap());
        let targets: Targets = Arc::new(Mutex::new(vec![a.clone()]));
        let script = Arc::new(Script::default());
        let (cancel, task, t0) = spawn_scripted(&targets, scripted_policy(), &script);
        until(t0, Duration::from_millis(20_500)).await;
        assert_eq!(script.times_of(a.addr), secs(&[0, 5, 10, 15, 20]));
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn fall_and_rise_take_exactly_their_thresholds() {
        let a = ep("127.0.0.1:1002".parse().unwrap());
        let targets: Targets = Arc::new(Mutex::new(vec![a.clone()]));
        let script = Arc::new(Script::default());
        script.fail.store(true, Ordering::SeqCst);
        let (cancel, task, t0) = spawn_scripted(&targets, scripted_policy(), &script);
        // Failures at 0 s and 5 s keep it healthy; the third, at 10 s, is
        // the fall.
        until(t0, Duration::from_millis(9_900)).await;
        assert_eq!(a.cell.active(), Health::Healthy);
        until(t0, Duration::from_millis(10_100)).await;
        assert_eq!(a.cell.active(), Health::Unhealthy);
        // Passing from 15 s: the second pass, at 20 s, is the rise.
        script.fail.store(false, Ordering::SeqCst);
        until(t0, Duration::from_millis(19_900)).await;
        assert_eq!(a.cell.active(), Health::Unhealthy);
        until(t0, Duration::from_millis(20_100)).await;
        assert_eq!(a.cell.active(), Health::Healthy);
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_endpoint_is_probed_at_the_next_list_poll() {
        let a = ep("127.0.0.1:1003".parse().unwrap());
        let b = ep("127.0.0.1:1004".parse().unwrap());
        let targets: Targets = Arc::new(Mutex::new(vec![a.clone()]));
        let script = Arc::new(Script::default());
        let (cancel, task, t0) = spawn_scripted(&targets, scripted_policy(), &script);
        until(t0, Duration::from_millis(2_500)).await;
        targets.lock().unwrap().push(b.clone());
        until(t0, Duration::from_millis(10_500)).await;
        // Seen at the 3 s poll, then on the regular rounds; `a` is not
        // probed by the polls in between.
        assert_eq!(script.times_of(b.addr), secs(&[3, 5, 10]));
        assert_eq!(script.times_of(a.addr), secs(&[0, 5, 10]));
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_check_fails_at_the_timeout_and_delays_the_next_round() {
        let a = ep("127.0.0.1:1005".parse().unwrap());
        let targets: Targets = Arc::new(Mutex::new(vec![a.clone()]));
        let script = Arc::new(Script::default());
        script.hang.store(true, Ordering::SeqCst);
        let policy = ActivePolicy {
            unhealthy_threshold: 1,
            ..scripted_policy()
        };
        let (cancel, task, t0) = spawn_scripted(&targets, policy, &script);
        until(t0, Duration::from_millis(1_900)).await;
        assert_eq!(a.cell.last_probe(), None, "no verdict before the timeout");
        until(t0, Duration::from_millis(2_100)).await;
        let r = a.cell.last_probe().expect("timed out probe recorded");
        assert!(!r.ok);
        assert_eq!(r.latency, Duration::from_secs(2));
        assert_eq!(r.error.as_deref(), Some("timed out after 2s"));
        assert_eq!(a.cell.active(), Health::Unhealthy);
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_delays_each_probe_within_its_bound() {
        let eps: Vec<Arc<Ep>> = (0..8)
            .map(|i| ep(SocketAddr::from(([127, 0, 0, 1], 1100 + i))))
            .collect();
        let targets: Targets = Arc::new(Mutex::new(eps.clone()));
        let script = Arc::new(Script::default());
        let policy = ActivePolicy {
            jitter: Duration::from_secs(1),
            ..scripted_policy()
        };
        let (cancel, task, t0) = spawn_scripted(&targets, policy, &script);
        until(t0, Duration::from_millis(6_500)).await;
        let mut firsts = Vec::new();
        for e in &eps {
            let t = script.times_of(e.addr);
            assert_eq!(t.len(), 2, "two rounds for {}", e.addr);
            assert!(t[0] <= Duration::from_secs(1), "{:?}", t);
            // The second round starts at the first tick after the slowest
            // probe of the first, and adds its own jitter.
            assert!(t[1] >= Duration::from_secs(5) && t[1] <= Duration::from_secs(6));
            firsts.push(t[0]);
        }
        firsts.dedup();
        assert!(firsts.len() > 1, "jitter spread the probes: {firsts:?}");
        cancel.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_mid_probe_or_between_rounds_ends_the_task_at_once() {
        let a = ep("127.0.0.1:1006".parse().unwrap());
        let targets: Targets = Arc::new(Mutex::new(vec![a]));
        let script = Arc::new(Script::default());
        script.hang.store(true, Ordering::SeqCst);
        let long = ActivePolicy {
            timeout: Duration::from_secs(3600),
            interval: Duration::from_secs(3600),
            ..scripted_policy()
        };
        let (cancel, task, t0) = spawn_scripted(&targets, long.clone(), &script);
        until(t0, Duration::from_secs(1)).await;
        cancel.cancel();
        let before = Instant::now();
        task.await.unwrap();
        assert_eq!(Instant::now(), before, "no timer had to fire");

        let empty: Targets = Arc::new(Mutex::new(Vec::new()));
        let (cancel, task, t0) = spawn_scripted(&empty, long, &script);
        until(t0, Duration::from_secs(10)).await;
        cancel.cancel();
        let before = Instant::now();
        task.await.unwrap();
        assert_eq!(Instant::now(), before);
    }
}
