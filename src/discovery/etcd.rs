//! `etcd` source: one key per endpoint under a prefix in etcd v3, read and
//! then watched through etcd's JSON gateway (`/v3/kv/range`,
//! `/v3/watch`, `/v3/auth/authenticate`; see etcd's "gRPC gateway" docs,
//! <https://etcd.io/docs/v3.5/dev-guide/api_grpc_gateway/>). No gRPC
//! client is needed: keys and values travel base64-encoded in JSON, and
//! 64-bit integers as JSON strings (proto3 JSON mapping).
//!
//! **Values**: `ip:port`, or JSON `{"address": "ip:port", "weight": N}`
//! (or a JSON string `"ip:port"`). A key whose value is neither is skipped
//! with a warning naming the key; the rest of the prefix still counts.
//!
//! **Strategy**:
//! 1. *Range read* of `[prefix, prefix_end)` (`prefix_end` as in clientv3's
//!    `GetPrefixRangeEnd`), which yields the full set and the store
//!    revision `R`.
//! 2. *Watch* the same range from `R + 1` on the endpoint that answered.
//!    The gateway streams newline-delimited JSON messages; each batch of
//!    events is applied to the current key map and the new full set is
//!    returned at once, so a change reaches the pool within one round trip.
//! 3. When the watch ends for any reason (connection lost, etcd cancels it,
//!    the start revision was compacted, an error message), go back to 1:
//!    a fresh range read is always correct, whatever was missed. Range
//!    reads caused by a watch ending are at least 500 ms (or
//!    `poll_interval`, if shorter) apart so a watch that keeps dying cannot
//!    make weir spin.
//! 4. A watch that stays silent for `poll_interval` is dropped and the
//!    cycle restarts at 1, bounding staleness on a half-open connection
//!    (an idle watch carries no keepalives through the gateway).
//! 5. If opening a watch fails [`WATCH_FAILURES_BEFORE_POLLING`] times in a
//!    row (no `created` confirmation; e.g. a proxy that buffers streaming
//!    responses), the source falls back to range reads every
//!    `poll_interval`, still trying one watch after each read, and returns
//!    to watching as soon as one is confirmed.
//!
//! **Freshness** (`max_stale` counts from the last successful contact, see
//! [`super`]): a range read, and every watch message (events, the
//! `created` confirmation, progress notifications, which the watch asks
//! for with `progress_notify`) is a contact. A quiet watch sends nothing,
//! and etcd's progress notifications come only every 10 minutes by default
//! (`--experimental-watch-progress-notify-interval`), so with `max_stale`
//! set the source also **probes** the watch's member after
//! [`super::contact_interval`] (a third of `max_stale`) without contact: a
//! linearizable `count_only` range read of the prefix, which needs the
//! member to be up and the cluster to have a leader, and costs etcd no
//! key transfer. A probe that answers is a contact that confirms the set
//! ([`Update::Unchanged`]); one that fails ends the watch and the cycle
//! restarts at 1 (failing over to another member if there is one, and
//! reporting an error if none answers). A stopped etcd closes the watch
//! connection, which is noticed at once. In polling mode, range reads are
//! at most the contact interval apart too.
//!
//! **Several endpoints**: every range read tries the client URLs in order,
//! starting from the one that last worked, and remembers the first that
//! answers; the watch uses that one.
//!
//! **Authentication**: with `username`/`password`, weir obtains a token
//! from `/v3/auth/authenticate` and sends it as the `Authorization` header.
//! A `401` (expired or invalid token) drops the token; the request is
//! retried once with a fresh one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{parse_entry, registry_request, Discovery, DiscoveryError, EndpointSet, Update};
use crate::config::EtcdConfig;

/// Valid endpoint entries by key.
pub type Entries = BTreeMap<Vec<u8>, (SocketAddr, u32)>;

/// Failed watch attempts in a row after which the source polls instead.
pub const WATCH_FAILURES_BEFORE_POLLING: u32 = 3;

/// Minimum gap between range reads triggered by a watch ending.
const MIN_RESYNC_GAP: Duration = Duration::from_millis(500);

/// A watch message may not be larger than this.
const MAX_WATCH_MESSAGE: usize = 16 * 1024 * 1024;

/// Reads and watches one key prefix in etcd v3.
#[derive(Debug)]
pub struct Etcd {
    config: EtcdConfig,
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// Index into `config.endpoints` of the member that last answered.
    active: usize,
    /// Auth token, when authentication is configured.
    token: Option<String>,
    /// Valid entries by key.
    entries: Entries,
    /// Store revision of the last range read; `None` means "read again".
    revision: Option<i64>,
    watch: Option<Watch>,
    watch_failures: u32,
    last_range_at: Option<Instant>,
    /// The next range read follows a watch that ended (rate-limited).
    resync: bool,
    /// Probe a quiet watch's member after this long without contact.
    contact_every: Option<Duration>,
    /// The last time etcd answered (a read, a watch message, a probe).
    contact_at: Option<Instant>,
}

impl Etcd {
    /// A source that will read `config.prefix` at once, then watch it.
    pub fn new(config: EtcdConfig) -> Self {
        let key = config.prefix.as_bytes().to_vec();
        let range_end = prefix_end(&key);
        Etcd {
            config,
            key,
            range_end,
            active: 0,
            token: None,
            entries: BTreeMap::new(),
            revision: None,
            watch: None,
            watch_failures: 0,
            last_range_at: None,
            resync: false,
            contact_every: None,
            contact_at: None,
        }
    }

    /// Makes contact at least every `every` while the watch is quiet (by
    /// probing the member), and polls at least that often without a watch.
    pub fn contact_every(mut self, every: Option<Duration>) -> Self {
        self.contact_every = every;
        self
    }

    /// Time between range reads in polling mode.
    fn poll_gap(&self) -> Duration {
        let poll = self.config.poll_interval;
        self.contact_every.map_or(poll, |every| poll.min(every))
    }

    /// When the quiet watch's member is probed next, if ever.
    fn probe_at(&self) -> Option<Instant> {
        Some(self.contact_at? + self.contact_every?)
    }

    fn base(&self, idx: usize) -> &str {
        self.config
            .endpoints
            .get(idx)
            .map_or("", |u| u.trim_end_matches('/'))
    }

    fn polling(&self) -> bool {
        self.watch_failures >= WATCH_FAILURES_BEFORE_POLLING
    }

    fn current_set(&self) -> EndpointSet {
        let mut set = EndpointSet::new();
        for (addr, weight) in self.entries.values() {
            set.insert(*addr, *weight, 0);
        }
        set
    }

    /// Headers for a request to member `idx`, authenticating first if
    /// needed.
    async fn auth_headers(
        &mut self,
        idx: usize,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, DiscoveryError> {
        let (Some(user), Some(password)) = (&self.config.username, &self.config.password) else {
            return Ok(Vec::new());
        };
        if self.token.is_none() {
            let url = format!("{}/v3/auth/authenticate", self.base(idx));
            let body = json!({"name": user, "password": password}).to_string();
            let res =
                registry_request(&url, &[], Some(Bytes::from(body)), self.config.timeout).await?;
            if !res.status.is_success() {
                return Err(DiscoveryError::BadAnswer(format!(
                    "{url} answered {}: {}",
                    res.status,
                    snippet(&res.body)
                )));
            }
            let v: Value = serde_json::from_slice(&res.body)
                .map_err(|e| DiscoveryError::BadAnswer(format!("{url}: not JSON: {e}")))?;
            let token = v
                .get("token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| DiscoveryError::BadAnswer(format!("{url}: no token in answer")))?;
            self.token = Some(token.to_owned());
        }
        let token = self.token.as_deref().unwrap_or_default();
        let value = HeaderValue::from_str(token)
            .map_err(|_| DiscoveryError::BadAnswer("auth token is not a valid header".into()))?;
        Ok(vec![(http::header::AUTHORIZATION, value)])
    }

    /// A range read on member `idx`: the key map and the store revision.
    async fn range_at(&mut self, idx: usize) -> Result<(Entries, i64), DiscoveryError> {
        let body = json!({"key": B64.encode(&self.key), "range_end": B64.encode(&self.range_end)});
        let (url, answer) = self.post(idx, "/v3/kv/range", &body).await?;
        parse_range(&answer).map_err(|e| DiscoveryError::BadAnswer(format!("{url}: {e}")))
    }

    /// A cheap linearizable read on the watch's member (the number of keys
    /// under the prefix): it answers only while the member is up and the
    /// cluster has a leader.
    async fn probe(&mut self) -> Result<(), DiscoveryError> {
        let idx = self.active;
        let body = json!({"key": B64.encode(&self.key), "range_end": B64.encode(&self.range_end),
                          "count_only": true});
        let (url, answer) = self.post(idx, "/v3/kv/range", &body).await?;
        parse_probe(&answer).map_err(|e| DiscoveryError::BadAnswer(format!("{url}: {e}")))?;
        self.contact_at = Some(Instant::now());
        Ok(())
    }

    /// POSTs `body` to `path` on member `idx`, authenticating as needed;
    /// the URL and the body of a successful answer.
    async fn post(
        &mut self,
        idx: usize,
        path: &str,
        body: &Value,
    ) -> Result<(String, Bytes), DiscoveryError> {
        let url = format!("{}{path}", self.base(idx));
        let body = Bytes::from(body.to_string());
        let mut retried = false;
        loop {
            let headers = self.auth_headers(idx).await?;
            let res =
                registry_request(&url, &headers, Some(body.clone()), self.config.timeout).await?;
            if res.status == StatusCode::UNAUTHORIZED && self.token.is_some() && !retried {
                // The token expired (etcd's simple tokens time out) or the
                // member restarted: get a new one and try once more.
                self.token = None;
                retried = true;
                continue;
            }
            if !res.status.is_success() {
                return Err(DiscoveryError::BadAnswer(format!(
                    "{url} answered {}: {}",
                    res.status,
                    snippet(&res.body)
                )));
            }
            return Ok((url, res.body));
        }
    }

    /// A range read, failing over across members in order from the one
    /// that last worked.
    async fn range(&mut self) -> Result<EndpointSet, DiscoveryError> {
        let n = self.config.endpoints.len().max(1);
        let mut last_err = DiscoveryError::Unreachable("no etcd endpoints".into());
        for i in 0..n {
            let idx = (self.active + i) % n;
            match self.range_at(idx).await {
                Ok((entries, revision)) => {
                    if idx != self.active {
                        tracing::info!(endpoint = %self.base(idx), "etcd: failed over to another member");
                        // A token is per cluster, but re-authenticating
                        // against the new member costs little and avoids
                        // a member that has not seen it yet.
                        self.token = None;
                    }
                    self.active = idx;
                    self.entries = entries;
                    self.revision = Some(revision);
                    self.contact_at = Some(Instant::now());
                    return Ok(self.current_set());
                }
                Err(e) => {
                    tracing::debug!(endpoint = %self.base(idx), error = %e, "etcd range read failed");
                    last_err = e;
                }
            }
        }
        Err(last_err)
    }

    /// Opens a watch on the active member from `start`.
    async fn open_watch(&mut self, start: i64) -> Result<Watch, DiscoveryError> {
        let idx = self.active;
        let url = format!("{}/v3/watch", self.base(idx));
        let body = json!({"create_request": {
            "key": B64.encode(&self.key),
            "range_end": B64.encode(&self.range_end),
            "start_revision": start.to_string(),
            "progress_notify": true,
        }})
        .to_string();
        let headers = self.auth_headers(idx).await?;
        let mut unauthorized = false;
        let watch = Watch::open(
            &url,
            &headers,
            Bytes::from(body),
            self.config.timeout,
            &mut unauthorized,
        )
        .await;
        if unauthorized {
            // The token was rejected: get a new one next time.
            self.token = None;
        }
        watch
    }

    /// Waits for the next watch message, or for the moment to probe the
    /// member or to give up on a silent watch.
    async fn follow(&mut self) -> Followed {
        let probe_at = self.probe_at();
        let Some(watch) = self.watch.as_mut() else {
            return Followed::Ended;
        };
        let resync_at = watch.last_message + self.config.poll_interval;
        let until = probe_at.map_or(resync_at, |p| p.min(resync_at));
        let msg = match tokio::time::timeout_at(until, watch.next_message()).await {
            Err(_) if Instant::now() >= resync_at => {
                tracing::debug!("etcd watch silent for poll_interval; re-reading");
                return Followed::Ended;
            }
            Err(_) => return Followed::ProbeDue,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "etcd watch ended");
                if !watch.created {
                    self.watch_failures = self.watch_failures.saturating_add(1);
                }
                return Followed::Ended;
            }
            Ok(Ok(v)) => v,
        };
        let now = Instant::now();
        watch.last_message = now;
        match parse_watch_message(&msg) {
            WatchMessage::Created => {
                watch.created = true;
                if self.polling() {
                    tracing::info!("etcd watch established; leaving polling mode");
                }
                self.watch_failures = 0;
                self.contact_at = Some(now);
                Followed::Contact
            }
            WatchMessage::Progress => {
                self.contact_at = Some(now);
                Followed::Contact
            }
            WatchMessage::Events(events) => {
                watch.created = true;
                self.watch_failures = 0;
                self.contact_at = Some(now);
                apply_events(&mut self.entries, &events);
                Followed::Set(self.current_set())
            }
            WatchMessage::Broken {
                reason,
                unauthenticated,
            } => {
                tracing::debug!(%reason, "etcd watch ended by the server");
                if unauthenticated {
                    self.token = None;
                }
                if !watch.created {
                    self.watch_failures = self.watch_failures.saturating_add(1);
                }
                Followed::Ended
            }
        }
    }

    /// Opens a watch from the read's revision; on failure, arranges for
    /// the next read.
    async fn ensure_watch(&mut self, revision: i64) -> bool {
        if self.watch.is_some() {
            return true;
        }
        match self.open_watch(revision.saturating_add(1)).await {
            Ok(w) => {
                self.watch = Some(w);
                true
            }
            Err(e) => {
                self.watch_failures = self.watch_failures.saturating_add(1);
                if self.watch_failures == WATCH_FAILURES_BEFORE_POLLING {
                    tracing::warn!(error = %e, poll_interval = ?self.poll_gap(),
                        "etcd watch keeps failing; polling with range reads instead");
                } else {
                    tracing::debug!(error = %e, "etcd watch failed");
                }
                false
            }
        }
    }

    /// A range read, spaced after a watch ended (rate-limited) and by the
    /// poll gap once watching has failed.
    async fn read(&mut self) -> Result<Update, DiscoveryError> {
        let gap = if self.polling() {
            Some(self.poll_gap())
        } else if self.resync {
            Some(MIN_RESYNC_GAP.min(self.config.poll_interval))
        } else {
            None
        };
        if let (Some(gap), Some(last)) = (gap, self.last_range_at) {
            tokio::time::sleep_until(last + gap).await;
        }
        self.last_range_at = Some(Instant::now());
        self.resync = false;
        self.range().await.map(Update::Set)
    }
}

/// What following the watch brought.
#[derive(Debug)]
enum Followed {
    /// Events changed the key map: the new set.
    Set(EndpointSet),
    /// A message without events (the `created` confirmation, a progress
    /// notification): etcd answered, nothing changed.
    Contact,
    /// No contact for the contact interval: time to probe the member.
    ProbeDue,
    /// The watch is over, or silent for `poll_interval`: read again.
    Ended,
}

impl Discovery for Etcd {
    async fn next(&mut self) -> Result<Update, DiscoveryError> {
        loop {
            let Some(revision) = self.revision else {
                return self.read().await;
            };
            if self.ensure_watch(revision).await {
                match self.follow().await {
                    Followed::Set(set) => return Ok(Update::Set(set)),
                    Followed::Contact => return Ok(Update::Unchanged),
                    Followed::ProbeDue => match self.probe().await {
                        Ok(()) => return Ok(Update::Unchanged),
                        Err(e) => {
                            tracing::debug!(error = %e, "etcd probe failed; reading again");
                        }
                    },
                    Followed::Ended => {}
                }
            }
            self.watch = None;
            self.revision = None;
            self.resync = true;
        }
    }
}

/// One streaming `/v3/watch` exchange.
#[derive(Debug)]
struct Watch {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    conn: tokio::task::JoinHandle<()>,
    /// etcd confirmed the watch (or sent events on it).
    created: bool,
    /// When the last message arrived (or the watch was opened).
    last_message: Instant,
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Closing the connection is what cancels the watch server-side.
        self.conn.abort();
    }
}

impl Watch {
    /// Sends the create request and waits for the response head (bounded
    /// by `timeout`); the body then streams for as long as the watch lives.
    /// Sets `unauthorized` when etcd rejects the token.
    async fn open(
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        timeout: Duration,
        unauthorized: &mut bool,
    ) -> Result<Watch, DiscoveryError> {
        let super::RegistryUrl {
            uri,
            authority,
            host,
            port,
        } = super::RegistryUrl::parse(url)?;
        let unreachable =
            |e: &dyn std::fmt::Display| DiscoveryError::Unreachable(format!("{url}: {e}"));
        let open = async {
            let stream = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| unreachable(&e))?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| unreachable(&e))?;
            let conn = tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut req = http::Request::builder()
                .method(http::Method::POST)
                .uri(uri.path_and_query().map_or("/", |pq| pq.as_str()))
                .header(http::header::HOST, authority.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(http_body_util::Full::new(body))
                .map_err(|e| unreachable(&e))?;
            for (k, v) in headers {
                req.headers_mut().insert(k.clone(), v.clone());
            }
            let res = match sender.send_request(req).await {
                Ok(res) => res,
                Err(e) => {
                    conn.abort();
                    return Err(unreachable(&e));
                }
            };
            let (parts, body) = res.into_parts();
            let mut watch = Watch {
                body,
                buf: Vec::new(),
                conn,
                created: false,
                last_message: Instant::now(),
            };
            if !parts.status.is_success() {
                *unauthorized = parts.status == StatusCode::UNAUTHORIZED;
                // The error body is small; read a bit of it for the log.
                let detail = tokio::time::timeout(Duration::from_millis(500), watch.next_message())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                return Err(DiscoveryError::BadAnswer(format!(
                    "{url} answered {}: {detail}",
                    parts.status.as_u16()
                )));
            }
            Ok(watch)
        };
        tokio::time::timeout(timeout, open).await.map_err(|_| {
            DiscoveryError::Unreachable(format!("{url}: timed out after {timeout:?}"))
        })?
    }

    /// The next complete JSON message on the stream. Messages are
    /// newline-delimited, but any whitespace (or none) between them works.
    async fn next_message(&mut self) -> Result<Value, DiscoveryError> {
        loop {
            if let Some(v) = take_json(&mut self.buf)? {
                return Ok(v);
            }
            match self.body.frame().await {
                None => return Err(DiscoveryError::Unreachable("watch stream ended".into())),
                Some(Err(e)) => {
                    return Err(DiscoveryError::Unreachable(format!("watch stream: {e}")))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                        if self.buf.len() > MAX_WATCH_MESSAGE {
                            return Err(DiscoveryError::BadAnswer(
                                "watch message larger than 16 MiB".into(),
                            ));
                        }
                    }
                }
            }
        }
    }
}

/// Takes one complete JSON value off the front of `buf`, if there is one.
fn take_json(buf: &mut Vec<u8>) -> Result<Option<Value>, DiscoveryError> {
    let mut it = serde_json::Deserializer::from_slice(buf).into_iter::<Value>();
    match it.next() {
        Some(Ok(v)) => {
            let used = it.byte_offset();
            buf.drain(..used);
            Ok(Some(v))
        }
        Some(Err(e)) if e.is_eof() => Ok(None),
        Some(Err(e)) => Err(DiscoveryError::BadAnswer(format!(
            "watch stream: not JSON: {e}"
        ))),
        None => {
            // Only whitespace so far.
            buf.clear();
            Ok(None)
        }
    }
}

/// The end of the key range covering every key that starts with `prefix`:
/// the prefix with its last byte below 0xff incremented and the rest cut
/// off (clientv3's `GetPrefixRangeEnd`); `[0]` ("to the end of the
/// keyspace") when every byte is 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Parses one value: `ip:port`, or JSON (`{"address", "weight"}` or a
/// string).
pub fn parse_value(value: &[u8]) -> Result<(SocketAddr, u32), String> {
    let text = std::str::from_utf8(value).map_err(|_| "value is not UTF-8".to_owned())?;
    let trimmed = text.trim();
    if trimmed.starts_with('{') || trimmed.starts_with('"') {
        let v: Value = serde_json::from_str(trimmed).map_err(|e| format!("bad JSON: {e}"))?;
        parse_entry(&v)
    } else {
        parse_entry(&Value::String(trimmed.to_owned()))
    }
}

/// A proto3-JSON int64: a string of digits or a number.
fn json_i64(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

fn b64_field(kv: &Value, field: &str) -> Result<Vec<u8>, String> {
    match kv.get(field) {
        // proto3 JSON omits empty bytes.
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => B64
            .decode(s)
            .map_err(|e| format!("`{field}` is not base64: {e}")),
        Some(_) => Err(format!("`{field}` is not a string")),
    }
}

fn show_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

/// Adds or replaces `key` in `entries`, dropping it with a warning when
/// the value does not parse.
fn put(entries: &mut Entries, key: Vec<u8>, value: &[u8]) {
    match parse_value(value) {
        Ok(entry) => {
            entries.insert(key, entry);
        }
        Err(why) => {
            tracing::warn!(key = %show_key(&key), value = %String::from_utf8_lossy(value), %why,
                "etcd: skipping malformed endpoint value");
            entries.remove(&key);
        }
    }
}

/// Parses a `/v3/kv/range` answer into the valid entries and the store
/// revision. Malformed values are skipped with a warning.
pub fn parse_range(body: &[u8]) -> Result<(Entries, i64), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(err) = v.get("error") {
        return Err(format!("error: {err}"));
    }
    let revision = json_i64(v.get("header").and_then(|h| h.get("revision")))
        .ok_or("no header.revision in range answer")?;
    let mut entries = BTreeMap::new();
    let kvs = match v.get("kvs") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(kvs)) => kvs.as_slice(),
        Some(_) => return Err("`kvs` is not an array".into()),
    };
    for kv in kvs {
        let key = match b64_field(kv, "key") {
            Ok(k) if !k.is_empty() => k,
            Ok(_) => continue,
            Err(why) => {
                tracing::warn!(%why, "etcd: skipping malformed key");
                continue;
            }
        };
        match b64_field(kv, "value") {
            Ok(value) => put(&mut entries, key, &value),
            Err(why) => {
                tracing::warn!(key = %show_key(&key), %why, "etcd: skipping malformed value")
            }
        }
    }
    Ok((entries, revision))
}

/// Checks a `count_only` range answer (a probe): JSON with a header
/// revision and no error. Returns the revision.
pub fn parse_probe(body: &[u8]) -> Result<i64, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(err) = v.get("error") {
        return Err(format!("error: {err}"));
    }
    json_i64(v.get("header").and_then(|h| h.get("revision")))
        .ok_or_else(|| "no header.revision in probe answer".to_owned())
}

/// One watch event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed.
    Put {
        /// The key.
        key: Vec<u8>,
        /// Its new value.
        value: Vec<u8>,
    },
    /// The key was deleted.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

/// What one watch stream message means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchMessage {
    /// etcd confirmed the watch.
    Created,
    /// A header-only message (progress notification).
    Progress,
    /// Changes, in revision order.
    Events(Vec<WatchEvent>),
    /// The watch is over: canceled, compacted, or an error.
    Broken {
        /// Why, for the log.
        reason: String,
        /// The token was rejected.
        unauthenticated: bool,
    },
}

/// Interprets one message of the `/v3/watch` stream.
pub fn parse_watch_message(msg: &Value) -> WatchMessage {
    if let Some(err) = msg.get("error") {
        let code = err.get("grpc_code").and_then(Value::as_i64);
        let http_code = err.get("http_code").and_then(Value::as_i64);
        return WatchMessage::Broken {
            reason: format!("error: {err}"),
            // gRPC UNAUTHENTICATED is 16.
            unauthenticated: code == Some(16) || http_code == Some(401),
        };
    }
    let Some(result) = msg.get("result") else {
        return WatchMessage::Broken {
            reason: format!("unexpected message: {msg}"),
            unauthenticated: false,
        };
    };
    if let Some(rev) = json_i64(result.get("compact_revision")).filter(|r| *r > 0) {
        return WatchMessage::Broken {
            reason: format!("start revision compacted (compact_revision {rev})"),
            unauthenticated: false,
        };
    }
    if result.get("canceled").and_then(Value::as_bool) == Some(true) {
        let reason = result
            .get("cancel_reason")
            .and_then(Value::as_str)
            .unwrap_or("canceled");
        return WatchMessage::Broken {
            reason: format!("watch canceled: {reason}"),
            unauthenticated: reason.contains("auth"),
        };
    }
    let events = match result.get("events") {
        Some(Value::Array(events)) if !events.is_empty() => events,
        _ => {
            return if result.get("created").and_then(Value::as_bool) == Some(true) {
                WatchMessage::Created
            } else {
                WatchMessage::Progress
            };
        }
    };
    let mut out = Vec::with_capacity(events.len());
    for ev in events {
        let kv = ev.get("kv").unwrap_or(&Value::Null);
        let key = match b64_field(kv, "key") {
            Ok(k) if !k.is_empty() => k,
            _ => {
                tracing::warn!(event = %ev, "etcd: skipping watch event without a usable key");
                continue;
            }
        };
        // proto3 JSON omits the default enum value, PUT.
        let delete = match ev.get("type") {
            Some(Value::String(t)) => t == "DELETE",
            Some(Value::Number(n)) => n.as_i64() == Some(1),
            _ => false,
        };
        if delete {
            out.push(WatchEvent::Delete { key });
        } else {
            match b64_field(kv, "value") {
                Ok(value) => out.push(WatchEvent::Put { key, value }),
                Err(why) => {
                    tracing::warn!(key = %show_key(&key), %why, "etcd: skipping malformed value");
                    // The key's old value is no longer current either.
                    out.push(WatchEvent::Delete { key });
                }
            }
        }
    }
    WatchMessage::Events(out)
}

/// Applies watch events, in order, to the key map.
pub fn apply_events(entries: &mut Entries, events: &[WatchEvent]) {
    for ev in events {
        match ev {
            WatchEvent::Put { key, value } => put(entries, key.clone(), value),
            WatchEvent::Delete { key } => {
                entries.remove(key);
            }
        }
    }
}

/// A short, printable piece of an error body.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    fn b64(s: &str) -> String {
        B64.encode(s)
    }

    #[test]
    fn prefix_end_matches_clientv3() {
        assert_eq!(prefix_end(b"/services/p/"), b"/services/p0".to_vec());
        assert_eq!(prefix_end(b"a"), b"b".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"a\xfe\xff\xff"), b"a\xff".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn values_plain_and_json() {
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(parse_value(b"10.0.0.1:80"), Ok((a, 1)));
        assert_eq!(parse_value(b" 10.0.0.1:80\n"), Ok((a, 1)));
        assert_eq!(parse_value(b"\"10.0.0.1:80\""), Ok((a, 1)));
        assert_eq!(
            parse_value(br#"{"address": "10.0.0.1:80", "weight": 4}"#),
            Ok((a, 4))
        );
        assert_eq!(
            parse_value(b"[::1]:8080"),
            Ok(("[::1]:8080".parse().unwrap(), 1))
        );
        assert!(parse_value(b"not-an-address").is_err());
        assert!(parse_value(b"").is_err());
        assert!(parse_value(b"{\"address\": ").is_err());
        assert!(parse_value(br#"{"address": "10.0.0.1:80", "weight": 0}"#).is_err());
        assert!(parse_value(b"\xff\xfe").is_err());
        assert!(parse_value(b"0.0.0.0:80").is_err());
    }

    #[test]
    fn range_answer_parses_and_skips_malformed() {
        let body = json!({
            "header": {"cluster_id": "1", "member_id": "2", "revision": "17", "raft_term": "2"},
            "kvs": [
                {"key": b64("/s/a"), "create_revision": "3", "mod_revision": "3", "version": "1", "value": b64("10.0.0.1:80")},
                {"key": b64("/s/b"), "mod_revision": "4", "value": b64(r#"{"address":"10.0.0.2:81","weight":3}"#)},
                {"key": b64("/s/bad"), "mod_revision": "5", "value": b64("not-an-address")},
                {"key": b64("/s/empty"), "mod_revision": "6"},
                {"key": "!!!", "value": b64("10.0.0.9:80")}
            ],
            "count": "5"
        })
        .to_string();
        let (entries, rev) = parse_range(body.as_bytes()).unwrap();
        assert_eq!(rev, 17);
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[&b"/s/b".to_vec()],
            ("10.0.0.2:81".parse().unwrap(), 3)
        );
        // An empty prefix answers without `kvs`.
        let (entries, rev) = parse_range(br#"{"header":{"revision":"1"}}"#).unwrap();
        assert!(entries.is_empty());
        assert_eq!(rev, 1);
        assert!(parse_range(b"<html>").is_err());
        assert!(parse_range(br#"{"kvs": []}"#).is_err());
        assert!(parse_range(br#"{"error":"x","code":16}"#).is_err());
    }

    #[test]
    fn probe_answers_parse() {
        let ok = br#"{"header":{"cluster_id":"1","member_id":"2","revision":"42","raft_term":"3"},"count":"2"}"#;
        assert_eq!(parse_probe(ok), Ok(42));
        assert_eq!(parse_probe(br#"{"header":{"revision":"7"}}"#), Ok(7));
        assert!(parse_probe(br#"{"error":"etcdserver: request timed out","code":14}"#).is_err());
        assert!(parse_probe(b"<html>").is_err());
        assert!(parse_probe(br#"{"count":"2"}"#).is_err());
    }

    #[test]
    fn watch_messages_are_classified() {
        let created = json!({"result": {"header": {"revision": "5"}, "created": true}});
        assert_eq!(parse_watch_message(&created), WatchMessage::Created);
        let progress = json!({"result": {"header": {"revision": "9"}}});
        assert_eq!(parse_watch_message(&progress), WatchMessage::Progress);
        let compacted =
            json!({"result": {"header": {}, "compact_revision": "40", "canceled": true}});
        assert!(matches!(
            parse_watch_message(&compacted),
            WatchMessage::Broken { .. }
        ));
        let err = json!({"error": {"grpc_code": 16, "http_code": 401, "message": "etcdserver: invalid auth token"}});
        assert_eq!(
            parse_watch_message(&err),
            WatchMessage::Broken {
                reason: format!("error: {}", err["error"]),
                unauthenticated: true
            }
        );
        let events = json!({"result": {"header": {"revision": "7"}, "events": [
            {"kv": {"key": b64("/s/c"), "mod_revision": "6", "value": b64("10.0.0.3:80")}},
            {"type": "DELETE", "kv": {"key": b64("/s/a"), "mod_revision": "7"}},
            {"type": 1, "kv": {"key": b64("/s/b")}},
            {"kv": {"value": b64("10.0.0.4:80")}}
        ]}});
        assert_eq!(
            parse_watch_message(&events),
            WatchMessage::Events(vec![
                WatchEvent::Put {
                    key: b"/s/c".to_vec(),
                    value: b"10.0.0.3:80".to_vec()
                },
                WatchEvent::Delete {
                    key: b"/s/a".to_vec()
                },
                WatchEvent::Delete {
                    key: b"/s/b".to_vec()
                },
            ])
        );
    }

    #[test]
    fn events_apply_in_order() {
        let mut entries = BTreeMap::new();
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        put(&mut entries, b"/s/a".to_vec(), b"10.0.0.1:80");
        apply_events(
            &mut entries,
            &[
                WatchEvent::Put {
                    key: b"/s/b".to_vec(),
                    value: b"10.0.0.2:80".to_vec(),
                },
                WatchEvent::Put {
                    key: b"/s/a".to_vec(),
                    value: br#"{"address": "10.0.0.1:80", "weight": 5}"#.to_vec(),
                },
                WatchEvent::Delete {
                    key: b"/s/missing".to_vec(),
                },
            ],
        );
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[&b"/s/a".to_vec()], (a, 5));
        // A value turning malformed removes the key; a delete removes it.
        apply_events(
            &mut entries,
            &[
                WatchEvent::Put {
                    key: b"/s/a".to_vec(),
                    value: b"garbage".to_vec(),
                },
                WatchEvent::Delete {
                    key: b"/s/b".to_vec(),
                },
                WatchEvent::Put {
                    key: b"/s/c".to_vec(),
                    value: b"10.0.0.2:80".to_vec(),
                },
            ],
        );
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[&b"/s/c".to_vec()], (b, 1));
    }

    #[test]
    fn stream_messages_split_across_frames() {
        let mut buf = br#"{"result":{"created":true}}"#.to_vec();
        buf.extend_from_slice(b"\n{\"result\":");
        let first = take_json(&mut buf).unwrap().unwrap();
        assert_eq!(parse_watch_message(&first), WatchMessage::Created);
        assert_eq!(take_json(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"{}}\n");
        assert!(take_json(&mut buf).unwrap().is_some());
        assert_eq!(take_json(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        buf.extend_from_slice(b"<html>");
        assert!(take_json(&mut buf).is_err());
    }
}
