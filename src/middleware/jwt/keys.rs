//! The key cache of a `jwt` middleware and, for a JWKS, the task that
//! keeps it fresh.
//!
//! The current [`KeySet`] sits in an `ArcSwapOption`: requests only load
//! it. For a JWKS, a background task (control-plane work, spawned when the
//! instance is built on a tokio runtime) fetches the document at once,
//! then every `refresh_interval`; after a failed fetch it retries after
//! 1 s, doubling up to a minute (never beyond `refresh_interval`). A failed
//! fetch never replaces the keys: the last good set keeps serving for as
//! long as the IdP is down, as Envoy's `jwt_authn` does with its cache.
//!
//! A token whose `kid` is not in the set (the IdP rotated its keys) wakes
//! the task for an immediate refetch, at most once per
//! [`KID_REFETCH_INTERVAL`] (10 s: a client sending made-up `kid`s must not
//! turn weir into a load generator against the IdP), and that request
//! waits for the fetch, up to `fetch_timeout`, then is verified again.
//! Requests that miss while that fetch is under way wait for it too (a
//! burst of tokens under a new key all pass); misses later in the window
//! are refused at once.
//!
//! Before the first fetch has finished, a request waits for it (up to
//! `fetch_timeout`); once a fetch has failed and no set was ever loaded,
//! requests get 503 (`keys_unavailable`), never an unverified pass: at
//! once, except that one request per [`KID_REFETCH_INTERVAL`] wakes the
//! task and waits for that fetch (so a recovered IdP is seen within
//! seconds, not after the backoff).
//!
//! The task holds only a `Weak` to the cache and is woken when the cache
//! is dropped, so an instance replaced by a reload stops fetching; one
//! kept by a reload (unchanged config) keeps its task and its keys.
//!
//! The fetch is one `GET` per attempt on its own connection (HTTP/1.1, or
//! over TLS for `https://`, with the public web roots or `jwks_ca`), bounded by
//! `fetch_timeout` for the whole exchange and by 1 MiB of body: a plain
//! hyper connection is all this needs, so no HTTP client crate is added.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http_body_util::BodyExt as _;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::verify::{Claims, KeySet, Reason, Verifier};
use crate::config::middleware::CaFile;

/// The shortest time between two unknown-`kid` refetches.
pub const KID_REFETCH_INTERVAL: Duration = Duration::from_secs(10);
/// The largest JWKS document accepted.
const MAX_JWKS: usize = 1 << 20;
/// The longest wait between retries of a failing fetch.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A middleware's keys, and how to get new ones.
pub struct Keys {
    current: ArcSwapOption<KeySet>,
    /// How many fetches have finished (either way).
    attempts: watch::Sender<u64>,
    /// Wakes the fetch task: a refetch, or the cache's end.
    wake: Arc<Notify>,
    /// When the last refetch was asked for, and how many fetches had
    /// finished then.
    last_kid_refetch: Mutex<Option<(Instant, u64)>>,
    /// Whether a task fetches (a JWKS on a runtime).
    fetching: bool,
    fetch_timeout: Duration,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("current", &self.current.load())
            .field("fetching", &self.fetching)
            .finish()
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        // The task waits on this; it then finds its `Weak` dead and ends.
        self.wake.notify_one();
    }
}

impl Keys {
    /// A fixed set (an HMAC secret): nothing to fetch.
    pub fn fixed(set: KeySet) -> Arc<Keys> {
        Arc::new(Keys::empty(Some(set), false, Duration::ZERO))
    }

    fn empty(set: Option<KeySet>, fetching: bool, fetch_timeout: Duration) -> Keys {
        Keys {
            current: ArcSwapOption::new(set.map(Arc::new)),
            attempts: watch::Sender::new(0),
            wake: Arc::new(Notify::new()),
            last_kid_refetch: Mutex::new(None),
            fetching,
            fetch_timeout,
        }
    }

    /// A cache for the JWKS at `url`, with its fetch task when a tokio
    /// runtime is running (without one, as in `weir check`, nothing is
    /// fetched and requests would get 503).
    pub fn jwks(url: &str, tls: Tls, refresh: Duration, fetch_timeout: Duration) -> Arc<Keys> {
        Keys::jwks_with_task(url, tls, refresh, fetch_timeout).0
    }

    /// [`Keys::jwks`], and the fetch task's handle (it ends once the cache
    /// is dropped).
    pub fn jwks_with_task(
        url: &str,
        tls: Tls,
        refresh: Duration,
        fetch_timeout: Duration,
    ) -> (Arc<Keys>, Option<tokio::task::JoinHandle<()>>) {
        let handle = tokio::runtime::Handle::try_current().ok();
        let keys = Arc::new(Keys::empty(None, handle.is_some(), fetch_timeout));
        let task = handle.map(|handle| {
            let task = Task {
                keys: Arc::downgrade(&keys),
                wake: Arc::clone(&keys.wake),
                url: url.to_owned(),
                tls,
                refresh,
                fetch_timeout,
            };
            handle.spawn(task.run())
        });
        (keys, task)
    }

    /// The current set, if any.
    pub fn current(&self) -> Option<Arc<KeySet>> {
        self.current.load_full()
    }

    /// Verifies `token` with the current keys, refetching them once (rate
    /// limited) when its `kid` is unknown.
    pub async fn verify(&self, verifier: &Verifier, token: &str) -> Result<Claims, Reason> {
        let set = match self.current.load_full() {
            Some(set) => set,
            None => self.refetch().await.ok_or(Reason::KeysUnavailable)?,
        };
        match verifier.verify(&set, token, now_unix()) {
            Err(Reason::UnknownKid) => match self.refetch().await {
                Some(set) => verifier.verify(&set, token, now_unix()),
                None => Err(Reason::UnknownKid),
            },
            other => other,
        }
    }

    /// Waits for a fetch, the first one if it is under way, else one asked
    /// for now (at most once per [`KID_REFETCH_INTERVAL`]), and returns the
    /// keys then; `None` when there is nothing to wait for. Only a miss
    /// comes here, so the hit path touches no channel.
    async fn refetch(&self) -> Option<Arc<KeySet>> {
        if !self.fetching {
            return None;
        }
        let mut attempts = self.attempts.subscribe();
        let seen = *attempts.borrow_and_update();
        if seen > 0 {
            match self.may_refetch(seen) {
                Refetch::Ask => self.wake.notify_one(),
                Refetch::Join => {}
                Refetch::No => return None,
            }
        }
        self.wait(&mut attempts, seen).await;
        self.current.load_full()
    }

    /// Waits (up to the fetch timeout) for a fetch to finish after `seen`.
    async fn wait(&self, attempts: &mut watch::Receiver<u64>, seen: u64) {
        let done = attempts.wait_for(|n| *n > seen);
        // Either way the caller looks at the keys again.
        let _ = tokio::time::timeout(self.fetch_timeout, done).await;
    }

    /// Whether a miss may ask for a refetch now (and if so, records that
    /// it did), or join the one asked for earlier that has not finished
    /// yet (`seen` fetches have finished so far), or neither.
    fn may_refetch(&self, seen: u64) -> Refetch {
        if !self.fetching {
            return Refetch::No;
        }
        let now = Instant::now();
        let Ok(mut last) = self.last_kid_refetch.lock() else {
            return Refetch::No;
        };
        if let Some((at, finished)) = *last {
            if now.saturating_duration_since(at) < KID_REFETCH_INTERVAL {
                return if finished == seen {
                    Refetch::Join
                } else {
                    Refetch::No
                };
            }
        }
        *last = Some((now, seen));
        Refetch::Ask
    }
}

/// What a miss does about a refetch.
#[derive(Debug, PartialEq, Eq)]
enum Refetch {
    /// Wake the task and wait for its fetch.
    Ask,
    /// Wait for the fetch another request asked for.
    Join,
    /// Neither: the window's refetch is done.
    No,
}

/// Seconds since the epoch (0 if the clock is before it).
fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The JWKS fetch loop.
struct Task {
    keys: Weak<Keys>,
    wake: Arc<Notify>,
    url: String,
    tls: Tls,
    refresh: Duration,
    fetch_timeout: Duration,
}

impl Task {
    async fn run(self) {
        let first_backoff = Duration::from_secs(1).min(self.refresh);
        let mut backoff = first_backoff;
        loop {
            let result = match &self.tls {
                Ok(tls) => fetch(&self.url, self.fetch_timeout, tls).await,
                Err(e) => Err(e.clone()),
            };
            let Some(keys) = self.keys.upgrade() else {
                return;
            };
            let wait = match result {
                Ok(set) => {
                    tracing::debug!(url = %self.url, keys = set.len(), "JWKS fetched");
                    keys.current.store(Some(Arc::new(set)));
                    backoff = first_backoff;
                    self.refresh
                }
                Err(error) => {
                    let serving = keys.current.load().as_ref().map_or(0, |s| s.len());
                    tracing::warn!(url = %self.url, %error, serving, "JWKS fetch failed; keeping the last good keys");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF).min(self.refresh);
                    wait
                }
            };
            keys.attempts.send_modify(|n| *n += 1);
            drop(keys);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
            if self.keys.strong_count() == 0 {
                return;
            }
        }
    }
}

/// The TLS client config of a key set fetcher, or why there is none.
pub type Tls = Result<Arc<rustls::ClientConfig>, String>;

/// The TLS client config for `https://` key sets: the roots of `ca` (as
/// read and checked at config load), or the public web roots.
pub fn client_tls(ca: Option<&CaFile>) -> Tls {
    crate::tls::http1_client_config(ca.map(|c| (c.path.as_path(), c.pem.as_slice())))
}

/// One fetch of the key set at `url`, bounded by `timeout`.
pub async fn fetch(
    url: &str,
    timeout: Duration,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<KeySet, String> {
    let body = tokio::time::timeout(timeout, get(url, tls))
        .await
        .map_err(|_| format!("timed out after {timeout:?}"))??;
    KeySet::from_jwks(&body).map_err(|e| format!("not a usable JWKS: {e}"))
}

async fn get(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<bytes::Bytes, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let https = uri.scheme_str() == Some("https");
    let authority = uri.authority().ok_or("no host in the URL")?.clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    if https {
        let name = rustls_pki_types::ServerName::try_from(host)
            .map_err(|e| format!("bad host name: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(hyper_util::rt::TokioIo::new(stream), &authority, path).await
    } else {
        exchange(hyper_util::rt::TokioIo::new(tcp), &authority, path).await
    }
}

async fn exchange<IO>(
    io: IO,
    authority: &http::uri::Authority,
    path: &str,
) -> Result<bytes::Bytes, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::ACCEPT, "application/json")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    if res.status() != http::StatusCode::OK {
        return Err(format!("status {}", res.status()));
    }
    let body = http_body_util::Limited::new(res.into_body(), MAX_JWKS)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(body.to_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A server that answers every connection with one JWKS response and
    /// counts connections.
    async fn counting_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            }
        });
        (url, count)
    }

    #[tokio::test]
    async fn the_task_refreshes_and_ends_when_the_cache_is_dropped() {
        let (url, count) = counting_server().await;
        let (keys, task) = Keys::jwks_with_task(
            &url,
            client_tls(None),
            Duration::from_millis(50),
            Duration::from_secs(2),
        );
        let task = task.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while count.load(std::sync::atomic::Ordering::SeqCst) < 3 {
            assert!(Instant::now() < deadline, "refreshes every 50 ms");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(keys.current().unwrap().len(), 1);
        drop(keys);
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("the task ends with its cache")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn refetches_are_asked_once_per_window_and_joined_until_done() {
        let keys = Keys::empty(None, true, Duration::from_secs(1));
        assert_eq!(keys.may_refetch(1), Refetch::Ask);
        assert_eq!(keys.may_refetch(1), Refetch::Join, "the fetch is under way");
        assert_eq!(
            keys.may_refetch(2),
            Refetch::No,
            "it finished: wait for the window"
        );
        tokio::time::advance(KID_REFETCH_INTERVAL - Duration::from_millis(1)).await;
        assert_eq!(keys.may_refetch(2), Refetch::No);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(keys.may_refetch(2), Refetch::Ask);
    }

    #[test]
    fn without_a_runtime_nothing_is_fetched() {
        let (keys, task) = Keys::jwks_with_task(
            "http://127.0.0.1:9/",
            client_tls(None),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert!(task.is_none());
        assert!(keys.current().is_none());
        assert_eq!(keys.may_refetch(1), Refetch::No);
    }
}
