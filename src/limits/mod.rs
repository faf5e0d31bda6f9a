//! Limits on what clients can make weir hold or keep busy.
//!
//! Each limit is enforced as early as possible, so that an over-limit
//! request costs weir little and never reaches an endpoint:
//!
//! | limit                         | where                               | answer |
//! |-------------------------------|-------------------------------------|--------|
//! | `limits.max_header_bytes`     | hyper's HTTP/1 read buffer; HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` | 431 (HTTP/2: stream reset) |
//! | `limits.max_headers`          | hyper's HTTP/1 parser               | 431    |
//! | `limits.max_uri_bytes`        | [`check_head`], before routing      | 414    |
//! | `limits.max_body_bytes`       | [`check_head`] (`Content-Length`), [`BodyMeter`] (streamed bodies) | 413 |
//! | `timeouts.body_read`          | [`BodyMeter`]: no bytes either way, request body or response ([`Progress`]) | 408    |
//! | `limits.max_connections`      | [`ConnectionLimit`], in the accept loop | accepted, then closed |
//! | `pools[].limits`              | `upstream::Pool::admit`, before the endpoint is contacted | 503 after `queue_timeout` |
//!
//! A body limit or timeout that trips after the endpoint has started its
//! response cannot change the status any more; the response is then cut
//! short (HTTP/1: the connection closes; HTTP/2: RST_STREAM).
//!
//! **Idle rule.** `timeouts.body_read` is a stream idle timeout: an
//! exchange is idle only when no bytes move in either direction. Request
//! body bytes from the client and the response (its head, then its body
//! bytes) passed on to the client both count as progress, so a stream whose
//! client has sent its message and waits while the endpoint keeps sending
//! (gRPC bidirectional streams, watches) is not cut. The request's
//! [`BodyMeter`] runs the timer; when it fires, the meter asks the
//! exchange's [`Progress`], which the response body stamps, and re-arms
//! from the response's last progress instead of failing. The rule is the
//! same for HTTP/1.1 and HTTP/2, on either side. Once the request body has
//! ended no read timer runs at all. A body buffered for retries (known
//! length, up to `max_replay_body`) is read whole within `body_read`
//! ([`RequestLimits::within`]), before any response exists.
//!
//! **Per-endpoint rule.** With `max_requests_per_endpoint`, the selector
//! picks as usual; if its pick is at the limit, the request goes to the
//! available endpoint with the most free slots instead, and only when every
//! available endpoint is full does it wait, up to `queue_timeout`, for a
//! slot on the selector's pick. Retries after a failed attempt pick their
//! endpoint without this check (the pool-wide slot is already held), and a
//! WebSocket tunnel gives its slots back when the 101 response is sent.

pub mod breaker;

use std::collections::HashMap;
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::{PoolLimits, ServerConfig};
use crate::error::{BodyFault, ClientBodyError, ProxyError};

/// The per-request limits of one client connection, taken from the
/// server config when the connection is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest request target, in bytes.
    pub max_uri_bytes: usize,
    /// Largest request body, in bytes (`None`: unlimited).
    pub max_body_bytes: Option<u64>,
    /// Longest an exchange whose request body is open may go with no
    /// bytes moving in either direction (the idle rule of this module).
    pub body_read_timeout: Duration,
}

impl RequestLimits {
    /// The limits configured in `server`.
    pub fn from_config(server: &ServerConfig) -> Self {
        RequestLimits {
            max_uri_bytes: server.limits.max_uri_bytes,
            max_body_bytes: server.limits.max_body_bytes,
            body_read_timeout: server.body_read_timeout,
        }
    }

    /// A meter for one request body, counting into `received`.
    pub fn meter(&self, received: &prometheus::IntCounter) -> BodyMeter {
        BodyMeter::new(received.clone(), self)
    }

    /// Runs `fut` (reading a request body) bounded by the body read
    /// timeout; on expiry the result is a 408.
    pub async fn within<T>(
        &self,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, ProxyError> {
        tokio::time::timeout(self.body_read_timeout, fut)
            .await
            .map_err(|_| ProxyError::ClientBody(BodyFault::Timeout))
    }
}

/// Length of a request target as the client sent it (origin form: path and
/// query; absolute form and HTTP/2: plus scheme and authority).
fn target_len(uri: &http::Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let path = uri.path_and_query().map_or(0, |p| p.as_str().len());
    scheme + authority + path
}

/// Checks the request head against the limits: the target length (414)
/// and a declared body length (413). Runs before routing, so an
/// over-limit request never reaches an endpoint.
pub fn check_head<B: Body>(req: &Request<B>, limits: &RequestLimits) -> Result<(), ProxyError> {
    if target_len(req.uri()) > limits.max_uri_bytes {
        return Err(ProxyError::UriTooLong);
    }
    if let Some(max) = limits.max_body_bytes {
        // hyper derives the hint from `Content-Length` (already validated):
        // `lower` is the declared length, 0 for chunked bodies.
        if req.body().size_hint().lower() > max {
            return Err(ProxyError::ClientBody(BodyFault::TooLarge));
        }
    }
    Ok(())
}

/// Watches one streamed request body: counts its bytes, stops it past the
/// size limit, and fails it when the exchange has been idle for the read
/// timeout: no request bytes arrived, and (with a [`Progress`] shared with
/// the response body) no response bytes went out either.
///
/// The timer is armed only when the body is pending after progress, so a
/// body that flows steadily costs one clock read per wait, not per frame;
/// the response side is consulted only when the timer fires.
#[derive(Debug)]
pub struct BodyMeter {
    counter: prometheus::IntCounter,
    seen: u64,
    max: Option<u64>,
    timeout: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    progressed: bool,
    progress: Option<Progress>,
}

impl BodyMeter {
    /// A meter counting into `counter` under `limits`.
    pub fn new(counter: prometheus::IntCounter, limits: &RequestLimits) -> Self {
        BodyMeter {
            counter,
            seen: 0,
            max: limits.max_body_bytes,
            timeout: limits.body_read_timeout,
            idle: None,
            progressed: true,
            progress: None,
        }
    }

    /// The exchange's progress clock, made on first use: hand it to the
    /// response body so that bytes sent to the client keep this body's
    /// read timer from firing.
    pub fn progress(&mut self) -> Progress {
        self.progress.get_or_insert_with(Progress::new).clone()
    }

    /// Passes on one poll of the client's body, applying the limits.
    pub fn observe(
        &mut self,
        polled: Poll<Option<Result<Frame<Bytes>, ClientBodyError>>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                self.progressed = true;
                if let Some(d) = frame.data_ref() {
                    let n = d.len() as u64;
                    self.counter.inc_by(n);
                    self.seen = self.seen.saturating_add(n);
                    if let Some(max) = self.max.filter(|max| self.seen > *max) {
                        return Poll::Ready(Some(Err(ClientBodyError::TooLarge(max))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                // The body is over: no read timer may outlive it.
                self.idle = None;
                Poll::Ready(None)
            }
            Poll::Pending => self.wait(cx),
        }
    }

    /// The body is pending: (re)arms the timer from this body's last
    /// progress, and when it fires, from the response's, failing only when
    /// neither moved for the whole timeout.
    fn wait(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let idle = match &mut self.idle {
            Some(idle) => {
                if self.progressed {
                    idle.as_mut().reset(Instant::now() + self.timeout);
                }
                idle
            }
            None => self.idle.insert(Box::pin(tokio::time::sleep(self.timeout))),
        };
        self.progressed = false;
        // Each time the timer fires, this body has been quiet for the whole
        // timeout; the exchange is idle only if the response was too.
        while idle.as_mut().poll(cx).is_ready() {
            let next = self
                .progress
                .as_ref()
                .and_then(|p| p.idle_deadline(Instant::now(), self.timeout));
            match next {
                Some(deadline) => idle.as_mut().reset(deadline),
                None => return Poll::Ready(Some(Err(ClientBodyError::Timeout(self.timeout)))),
            }
        }
        Poll::Pending
    }
}

/// `last` while response bytes are moving and no time has been taken yet.
const MOVING: u64 = u64::MAX;

/// When bytes last moved through one request/response exchange, on the
/// response's side: shared (one small `Arc`) by the request's
/// [`BodyMeter`], which reads it only when its timer fires, and the
/// response body, which writes it.
///
/// Writing costs one relaxed store of a constant per response frame
/// ([`moved`](Progress::moved)) and one clock read per pause
/// ([`settled`](Progress::settled)), when the response waits for more
/// bytes or ends. Bytes that moved with no pause after them (the response
/// is held up by the client's flow control) have no time yet; the meter
/// then takes the time it notices them as theirs, which errs by at most
/// one timeout on the long side and never cuts a stream early.
#[derive(Clone, Debug)]
pub struct Progress(Arc<ProgressClock>);

#[derive(Debug)]
struct ProgressClock {
    epoch: Instant,
    /// Nanoseconds after `epoch` when response bytes last moved, or
    /// [`MOVING`]. Starts at 0: the exchange began at `epoch`.
    last: AtomicU64,
}

impl ProgressClock {
    fn offset(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(MOVING - 1).min(MOVING - 1)
    }
}

impl Progress {
    /// The clock of an exchange starting now.
    pub fn new() -> Self {
        Progress(Arc::new(ProgressClock {
            epoch: Instant::now(),
            last: AtomicU64::new(0),
        }))
    }

    /// Response bytes (or the head) went to the client just now.
    #[inline]
    pub fn moved(&self) {
        self.0.last.store(MOVING, Ordering::Relaxed);
    }

    /// The response stopped after moving bytes (it waits for more, or it
    /// ended): takes the time of its last progress.
    pub fn settled(&self) {
        let clock = &self.0;
        clock
            .last
            .store(clock.offset(Instant::now()), Ordering::Relaxed);
    }

    /// Seen at `now`, with the request side quiet for `timeout`: when the
    /// exchange goes idle if the response moves no more bytes, or `None`
    /// if it has not moved any for `timeout` either.
    pub fn idle_deadline(&self, now: Instant, timeout: Duration) -> Option<Instant> {
        let clock = &self.0;
        let mut last = clock.last.load(Ordering::Relaxed);
        if last == MOVING {
            // Bytes moved at some time before now: count them from now.
            let stamp = clock.offset(now);
            match clock
                .last
                .compare_exchange(MOVING, stamp, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(now + timeout),
                // The response settled meanwhile: its own time is exact.
                Err(settled) => last = settled,
            }
        }
        let deadline = clock.epoch + Duration::from_nanos(last) + timeout;
        (deadline > now).then_some(deadline)
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// Counts the open connections of one listener against
/// `limits.max_connections`. The count survives reloads; the limit is read
/// from the current config at each accept.
#[derive(Clone, Debug, Default)]
pub struct ConnectionLimit {
    open: Arc<AtomicUsize>,
}

/// One counted connection; the count drops when it is dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    open: Arc<AtomicUsize>,
}

impl ConnectionLimit {
    /// Takes a slot if fewer than `max` connections are open (`None`:
    /// unlimited, always succeeds).
    pub fn try_acquire(&self, max: Option<usize>) -> Option<ConnectionSlot> {
        let max = max.unwrap_or(usize::MAX);
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ConnectionSlot {
            open: Arc::clone(&self.open),
        })
    }

    /// Connections currently counted.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The request slots of one pool (`pools[].limits`).
#[derive(Debug)]
pub struct PoolGate {
    limits: PoolLimits,
    pool: Option<Arc<Semaphore>>,
    endpoints: Mutex<HashMap<SocketAddr, Arc<Semaphore>>>,
}

/// The slots one request holds; released when it is dropped (with the
/// access-log record, when the response body ends).
#[derive(Debug, Default)]
pub struct Admission {
    /// The pool-wide slot, when the pool has `max_requests`.
    pub pool: Option<OwnedSemaphorePermit>,
    /// The endpoint's slot, when it has `max_requests_per_endpoint`.
    pub endpoint: Option<OwnedSemaphorePermit>,
    /// The circuit breaker's request unit, when it has `max_requests`.
    pub breaker: Option<breaker::Slot>,
}

impl PoolGate {
    /// A gate enforcing `limits`.
    pub fn new(limits: &PoolLimits) -> Self {
        PoolGate {
            limits: *limits,
            pool: limits.max_requests.map(|n| Arc::new(Semaphore::new(n))),
            endpoints: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the gate limits anything.
    pub fn is_open(&self) -> bool {
        self.limits.max_requests.is_none() && self.limits.max_requests_per_endpoint.is_none()
    }

    /// The configured caps.
    pub fn limits(&self) -> &PoolLimits {
        &self.limits
    }

    /// Takes one of the pool's request slots, waiting until `deadline`.
    /// `Ok(None)`: the pool has no cap. `Err(())`: none came free in time.
    pub async fn pool_slot(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<Option<OwnedSemaphorePermit>, ()> {
        let Some(slots) = &self.pool else {
            return Ok(None);
        };
        match tokio::time::timeout_at(deadline, Arc::clone(slots).acquire_owned()).await {
            Ok(Ok(p)) => Ok(Some(p)),
            // Err: timed out; Ok(Err): the semaphore is never closed.
            _ => Err(()),
        }
    }

    /// Free slots of the pool (`None`: unlimited).
    pub fn available(&self) -> Option<usize> {
        self.pool.as_ref().map(|s| s.available_permits())
    }

    /// The semaphore of the endpoint at `addr`, created on first use.
    /// Entries of endpoints that left the pool are pruned when the map
    /// has grown to twice the live set.
    pub fn endpoint(&self, addr: SocketAddr, max: usize, live: &[SocketAddr]) -> Arc<Semaphore> {
        let Ok(mut map) = self.endpoints.lock() else {
            // A poisoned map only means another request panicked while
            // holding it; fall back to an unshared semaphore (no limit)
            // rather than failing the request.
            return Arc::new(Semaphore::new(max));
        };
        if map.len() > 2 * live.len().max(8) {
            map.retain(|a, _| live.contains(a));
        }
        Arc::clone(
            map.entry(addr)
                .or_insert_with(|| Arc::new(Semaphore::new(max))),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use futures_util::StreamExt as _;
    use http_body_util::{BodyExt, StreamBody};

    fn limits(max_uri: usize, max_body: Option<u64>) -> RequestLimits {
        RequestLimits {
            max_uri_bytes: max_uri,
            max_body_bytes: max_body,
            body_read_timeout: Duration::from_millis(200),
        }
    }

    #[test]
    fn long_target_is_414() {
        let l = limits(20, None);
        let ok = Request::get("/0123456789").body(http_body_util::Empty::<Bytes>::new());
        assert!(check_head(&ok.unwrap(), &l).is_ok());
        let long = Request::get("/0123456789abcdefghijk?x=1")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let err = check_head(&long, &l).unwrap_err();
        assert_eq!(err.status(), http::StatusCode::URI_TOO_LONG);
        // The absolute form counts scheme and authority too.
        let abs = Request::get("http://a-long-host.example/0123")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        assert!(check_head(&abs, &l).is_err());
    }

    #[test]
    fn declared_length_over_limit_is_413() {
        let l = limits(100, Some(4));
        let small = Request::post("/").body(http_body_util::Full::new(Bytes::from_static(b"abcd")));
        assert!(check_head(&small.unwrap(), &l).is_ok());
        let big = Request::post("/")
            .body(http_body_util::Full::new(Bytes::from_static(b"abcde")))
            .unwrap();
        assert_eq!(
            check_head(&big, &l).unwrap_err().status(),
            http::StatusCode::PAYLOAD_TOO_LARGE
        );
        // Unlimited: anything goes.
        assert!(check_head(&big, &limits(100, None)).is_ok());
    }

    #[test]
    fn connection_limit_counts_and_releases() {
        let c = ConnectionLimit::default();
        let a = c.try_acquire(Some(2)).unwrap();
        let _b = c.try_acquire(Some(2)).unwrap();
        assert!(c.try_acquire(Some(2)).is_none());
        assert_eq!(c.open(), 2);
        drop(a);
        assert!(c.try_acquire(Some(2)).is_some());
        assert!(c.try_acquire(None).is_some());
    }

    /// Drives a meter over a hand-made body.
    struct Metered<B> {
        inner: B,
        meter: BodyMeter,
    }

    impl<B> Body for Metered<B>
    where
        B: Body<Data = Bytes, Error = ClientBodyError> + Unpin,
    {
        type Data = Bytes;
        type Error = ClientBodyError;
        fn poll_frame(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
            let this = self.get_mut();
            let polled = Pin::new(&mut this.inner).poll_frame(cx);
            this.meter.observe(polled, cx)
        }
    }

    fn chunks(n: usize, gap: Duration) -> impl Body<Data = Bytes, Error = ClientBodyError> + Unpin {
        let stream = futures_util::stream::unfold(0, move |i| async move {
            if i == n {
                return None;
            }
            tokio::time::sleep(gap).await;
            Some((
                Ok::<_, ClientBodyError>(Frame::data(Bytes::from_static(b"0123456789"))),
                i + 1,
            ))
        });
        StreamBody::new(Box::pin(stream))
    }

    #[tokio::test]
    async fn meter_counts_and_stops_large_bodies() {
        let counter = prometheus::IntCounter::new("c", "c").unwrap();
        let body = Metered {
            inner: chunks(3, Duration::from_millis(1)),
            meter: BodyMeter::new(counter.clone(), &limits(10, Some(25))),
        };
        let err = body.collect().await.unwrap_err();
        assert!(matches!(err, ClientBodyError::TooLarge(25)));
        assert_eq!(counter.get(), 30);
        assert_eq!(err.fault().status(), http::StatusCode::PAYLOAD_TOO_LARGE);

        let ok = Metered {
            inner: chunks(3, Duration::from_millis(1)),
            meter: BodyMeter::new(counter.clone(), &limits(10, Some(30))),
        };
        assert_eq!(ok.collect().await.unwrap().to_bytes().len(), 30);
    }

    #[tokio::test]
    async fn meter_times_out_a_stalled_body_but_not_a_slow_one() {
        let counter = prometheus::IntCounter::new("c", "c").unwrap();
        // Each gap is under the 200 ms timeout, the total over it.
        let slow = Metered {
            inner: chunks(5, Duration::from_millis(80)),
            meter: BodyMeter::new(counter.clone(), &limits(10, None)),
        };
        assert_eq!(slow.collect().await.unwrap().to_bytes().len(), 50);
        let stalled = Metered {
            inner: chunks(2, Duration::from_secs(2)),
            meter: BodyMeter::new(counter, &limits(10, None)),
        };
        let err = stalled.collect().await.unwrap_err();
        assert!(matches!(err, ClientBodyError::Timeout(_)));
        assert_eq!(err.fault().status(), http::StatusCode::REQUEST_TIMEOUT);
    }

    /// A body that sends one frame at once, then nothing, never ending.
    fn one_then_quiet() -> impl Body<Data = Bytes, Error = ClientBodyError> + Unpin {
        let first = Ok::<_, ClientBodyError>(Frame::data(Bytes::from_static(b"ping")));
        StreamBody::new(futures_util::stream::iter([first]).chain(futures_util::stream::pending()))
    }

    fn quiet_meter(timeout: Duration) -> BodyMeter {
        let counter = prometheus::IntCounter::new("c", "c").unwrap();
        let mut l = limits(10, None);
        l.body_read_timeout = timeout;
        BodyMeter::new(counter, &l)
    }

    #[tokio::test(start_paused = true)]
    async fn response_progress_keeps_a_quiet_request_body_open() {
        let timeout = Duration::from_secs(1);
        let mut meter = quiet_meter(timeout);
        let progress = meter.progress();
        let mut body = Metered {
            inner: one_then_quiet(),
            meter,
        };
        assert!(body.frame().await.unwrap().unwrap().is_data());
        // The response moves bytes every 0.5 s for 10 s, then stops.
        let responder = tokio::spawn(async move {
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                progress.moved();
                progress.settled();
            }
        });
        let waited = tokio::time::timeout(Duration::from_secs(10), body.frame()).await;
        assert!(
            waited.is_err(),
            "the request body failed while the response moved"
        );
        responder.await.unwrap();
        // Both sides quiet from here: the timeout counts from the last
        // response bytes.
        let quiet_from = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(err, ClientBodyError::Timeout(t) if t == timeout));
        let took = quiet_from.elapsed();
        assert!(
            took >= timeout && took <= timeout + Duration::from_millis(5),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn quiet_exchange_times_out_after_the_timeout() {
        let timeout = Duration::from_secs(1);
        let mut meter = quiet_meter(timeout);
        // A clock that never sees a response byte changes nothing.
        let _progress = meter.progress();
        let mut body = Metered {
            inner: one_then_quiet(),
            meter,
        };
        assert!(body.frame().await.unwrap().unwrap().is_data());
        let t = Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(err, ClientBodyError::Timeout(_)));
        assert_eq!(err.fault().status(), http::StatusCode::REQUEST_TIMEOUT);
        let took = t.elapsed();
        assert!(
            took >= timeout && took <= timeout + Duration::from_millis(5),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_moved_without_a_pause_count_from_when_they_are_noticed() {
        // The response moved bytes at 0.9 s but never settled (held up by
        // the client's flow control): the meter, firing at 1 s, counts them
        // as of 1 s, so the exchange is idle at 2 s, not before.
        let timeout = Duration::from_secs(1);
        let mut meter = quiet_meter(timeout);
        let progress = meter.progress();
        let mut body = Metered {
            inner: one_then_quiet(),
            meter,
        };
        assert!(body.frame().await.unwrap().unwrap().is_data());
        let t = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(900)).await;
            progress.moved();
        });
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(err, ClientBodyError::Timeout(_)));
        let took = t.elapsed();
        assert!(
            took >= 2 * timeout && took <= 2 * timeout + Duration::from_millis(5),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_deadline_counts_from_the_last_response_progress() {
        let timeout = Duration::from_secs(1);
        let p = Progress::new();
        let t0 = Instant::now();
        // Nothing moved since the start.
        tokio::time::advance(timeout).await;
        assert_eq!(p.idle_deadline(Instant::now(), timeout), None);
        tokio::time::advance(Duration::from_millis(300)).await;
        p.moved();
        p.settled();
        let at = t0 + timeout + Duration::from_millis(300);
        assert_eq!(p.idle_deadline(Instant::now(), timeout), Some(at + timeout));
        assert_eq!(p.idle_deadline(at + timeout, timeout), None);
    }

    /// Counts how often a task would have been woken.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_read_timer_runs_once_the_body_has_ended() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, ClientBodyError>>(1);
        let inner = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut meter = quiet_meter(Duration::from_secs(1));
        let _progress = meter.progress();
        let mut body = Metered {
            inner: Box::pin(inner),
            meter,
        };
        let wakes = Arc::new(Wakes::default());
        let waker = std::task::Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        // Pending: the timer is armed.
        assert!(Pin::new(&mut body).poll_frame(&mut cx).is_pending());
        assert!(body.meter.idle.is_some());
        // The client ends its body.
        drop(tx);
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
        assert!(body.meter.idle.is_none());
        let before = wakes.0.load(Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(5)).await;
        tokio::task::yield_now().await;
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            before,
            "a timer fired after the end"
        );
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
    }

    #[tokio::test]
    async fn within_maps_expiry_to_408() {
        let l = limits(10, None);
        assert_eq!(l.within(async { 7 }).await.unwrap(), 7);
        let err = l
            .within(tokio::time::sleep(Duration::from_secs(2)))
            .await
            .unwrap_err();
        assert_eq!(err.status(), http::StatusCode::REQUEST_TIMEOUT);
    }

    #[test]
    fn gate_without_limits_is_open() {
        assert!(PoolGate::new(&PoolLimits::default()).is_open());
        let g = PoolGate::new(&PoolLimits {
            max_requests: Some(3),
            ..PoolLimits::default()
        });
        assert!(!g.is_open());
        assert_eq!(g.available(), Some(3));
    }
}
