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
//! | `timeouts.body_read`          | [`BodyMeter`]                       | 408    |
//! | `limits.max_connections`      | [`ConnectionLimit`], in the accept loop | accepted, then closed |
//! | `pools[].limits`              | `upstream::Pool::admit`, before the endpoint is contacted | 503 after `queue_timeout` |
//!
//! A body limit or timeout that trips after the endpoint has started its
//! response cannot change the status any more; the response is then cut
//! short (HTTP/1: the connection closes; HTTP/2: RST_STREAM).
//!
//! **Per-endpoint rule.** With `max_requests_per_endpoint`, the selector
//! picks as usual; if its pick is at the limit, the request goes to the
//! available endpoint with the most free slots instead, and only when every
//! available endpoint is full does it wait, up to `queue_timeout`, for a
//! slot on the selector's pick. Retries after a failed attempt pick their
//! endpoint without this check (the pool-wide slot is already held), and a
//! WebSocket tunnel gives its slots back when the 101 response is sent.

use std::collections::HashMap;
use std::future::Future as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// Longest pause between request body bytes.
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
/// size limit, and fails it when no bytes arrive for the read timeout.
///
/// The timer is armed only when the body is pending after progress, so a
/// body that flows steadily costs one clock read per wait, not per frame.
#[derive(Debug)]
pub struct BodyMeter {
    counter: prometheus::IntCounter,
    seen: u64,
    max: Option<u64>,
    timeout: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    progressed: bool,
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
        }
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
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + self.timeout;
                let idle = match &mut self.idle {
                    Some(idle) => {
                        if self.progressed {
                            idle.as_mut().reset(deadline);
                        }
                        idle
                    }
                    None => self
                        .idle
                        .insert(Box::pin(tokio::time::sleep_until(deadline))),
                };
                self.progressed = false;
                match idle.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(ClientBodyError::Timeout(self.timeout))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
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
