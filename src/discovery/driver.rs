//! The generic driver that runs every discovery source: cancellation at
//! every wait, backoff after errors, freshness and `max_stale`, `/status`
//! and metrics.
//!
//! **Freshness is counted from the last successful contact** with the
//! registry, not from the last change. Every `Ok` from
//! [`Discovery::next`] is a contact: a (possibly unchanged) set, or
//! [`Update::Unchanged`] (an HTTP `304`, a quiet etcd watch whose member
//! answered a probe or sent a progress notification). `/status`'s
//! `last_success` and `weir_discovery_last_success_timestamp_seconds` show
//! the last contact, and `weir_discovery_refreshes_total{result="success"}`
//! counts contacts.
//!
//! **`max_stale`** is a deadline, `last contact + max_stale`. The driver
//! watches it while the source waits on its registry as well as between
//! retries, so a registry that hangs instead of failing expires on time
//! too; the source's contribution is then dropped and it shows as
//! `expired` until the registry answers again. Sources keep the deadline
//! meaningful by reaching their registry at least every
//! [`contact_interval`] (a third of `max_stale`) while healthy: a quiet,
//! healthy registry never expires, and when an outage starts the last good
//! set is kept for at least two thirds of `max_stale` and at most all of
//! it.
//!
//! **Backoff** after a failed refresh: full jitter over an exponential
//! ceiling (500 ms doubling up to 30 s, lowered to `max_stale` when that is
//! set, so a registry that comes back after an expiry is noticed within
//! `max_stale`), and at least 100 ms, so a fleet of weirs does not hammer
//! a recovering registry in step.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Discovery, DiscoveryError, EndpointSet, Update};
use crate::config::DiscoveryConfig;
use crate::metrics::DiscoveryMetrics;
use crate::upstream::Pool;

/// First backoff ceiling; it doubles with every further error.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Highest backoff ceiling without `max_stale`.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Shortest backoff.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// How often, at the latest, a healthy source must reach its registry so
/// that `max_stale` counts from a recent contact: a third of it. `None`
/// without `max_stale` (the source keeps its own cadence).
pub fn contact_interval(max_stale: Option<Duration>) -> Option<Duration> {
    max_stale.map(|m| m / 3)
}

/// The highest backoff after `errors` failed refreshes in a row: 500 ms,
/// doubling, at most 30 s and at most `cap`.
fn backoff_ceiling(errors: u32, cap: Duration) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << errors.saturating_sub(1).min(6))
        .min(MAX_BACKOFF)
        .min(cap)
}

/// A jittered backoff: uniform up to [`backoff_ceiling`], at least 100 ms
/// (or the ceiling, if that is lower).
fn backoff(errors: u32, cap: Duration) -> Duration {
    let ceiling = backoff_ceiling(errors, cap);
    MIN_BACKOFF
        .min(ceiling)
        .max(ceiling.mul_f64(fastrand::f64()))
}

/// Runs one source for one pool until `cancel`.
pub async fn drive<D: Discovery>(
    mut source: D,
    pool: Arc<Pool>,
    index: usize,
    config: DiscoveryConfig,
    cancel: CancellationToken,
) {
    let mut t = Tracker::new(pool, index, &config);
    loop {
        let Some(result) = t.during(source.next(), &cancel).await else {
            return;
        };
        match result {
            Ok(update) => t.contacted(update),
            Err(e) => {
                t.failed(&e);
                let wait = t.retry_wait();
                if t.during(tokio::time::sleep(wait), &cancel).await.is_none() {
                    return;
                }
            }
        }
    }
}

/// What the driver knows about one source between refreshes.
struct Tracker {
    pool: Arc<Pool>,
    index: usize,
    name: String,
    max_stale: Option<Duration>,
    metrics: DiscoveryMetrics,
    /// The last set the source reported. Kept after an expiry: an
    /// [`Update::Unchanged`] confirms it again.
    last_set: Option<EndpointSet>,
    /// `last_set` is in the pool (it has not expired). Implies `last_set`.
    held: bool,
    /// The last successful contact with the registry.
    contact: Option<Instant>,
    /// Failed refreshes in a row.
    errors: u32,
}

impl Tracker {
    /// Starts from what the pool holds: after a reload the new pool
    /// instance carries the old one's set and status, and `max_stale`
    /// keeps counting from the contact the old driver made.
    fn new(pool: Arc<Pool>, index: usize, config: &DiscoveryConfig) -> Tracker {
        let last_set = pool.source_set(index);
        let contact = last_set.as_ref().map(|_| {
            let last = pool.sources().get(index).and_then(|s| s.last_success);
            let age = last
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            let now = Instant::now();
            now.checked_sub(age).unwrap_or(now)
        });
        Tracker {
            metrics: pool.metrics().discovery(&config.name),
            pool,
            index,
            name: config.name.clone(),
            max_stale: config.max_stale,
            held: last_set.is_some(),
            last_set,
            contact,
            errors: 0,
        }
    }

    /// When the held set expires, if it does.
    fn deadline(&self) -> Option<Instant> {
        match (self.held, self.contact, self.max_stale) {
            (true, Some(at), Some(max)) => Some(at + max),
            _ => None,
        }
    }

    /// Runs `fut` to completion, expiring the held set if its deadline
    /// passes meanwhile. `None` when cancelled.
    async fn during<F: Future>(&mut self, fut: F, cancel: &CancellationToken) -> Option<F::Output> {
        tokio::pin!(fut);
        loop {
            let deadline = self.deadline();
            tokio::select! {
                biased;
                () = cancel.cancelled() => return None,
                () = sleep_until(deadline) => self.expire(),
                out = &mut fut => return Some(out),
            }
        }
    }

    /// The registry answered: fresh from now on.
    fn contacted(&mut self, update: Update) {
        if self.errors > 0 {
            tracing::info!(pool = %self.pool.name(), source = %self.name, "discovery source recovered");
        }
        self.errors = 0;
        self.contact = Some(Instant::now());
        self.metrics.refresh(true);
        let apply = match update {
            Update::Set(set) => {
                let changed = !self.held || self.last_set.as_ref() != Some(&set);
                self.last_set = Some(set);
                changed
            }
            // Confirms the last set; after an expiry, that brings it back.
            Update::Unchanged => !self.held && self.last_set.is_some(),
        };
        if apply {
            let endpoints = self.last_set.as_ref().map_or(0, EndpointSet::len);
            tracing::info!(pool = %self.pool.name(), source = %self.name, endpoints, "discovery update");
            self.pool.update_source(self.index, self.last_set.as_ref());
            self.held = self.last_set.is_some();
        }
        let endpoints = self.last_set.as_ref().map_or(0, EndpointSet::len);
        self.metrics.endpoints(endpoints);
        let held = self.held;
        self.pool.source_status(self.index, |st| {
            st.state = if held { "ok" } else { "pending" };
            st.endpoints = endpoints;
            st.last_success = Some(SystemTime::now());
            st.last_error = None;
            st.consecutive_errors = 0;
        });
    }

    /// A refresh failed: keep what is held, until its deadline.
    fn failed(&mut self, e: &DiscoveryError) {
        self.errors = self.errors.saturating_add(1);
        self.metrics.refresh(false);
        if self.errors == 1 {
            tracing::warn!(pool = %self.pool.name(), source = %self.name, error = %e,
                "discovery refresh failed; keeping the last good endpoints");
        }
        let state = if self.held {
            "stale"
        } else if self.last_set.is_some() {
            "expired"
        } else {
            "pending"
        };
        let errors = self.errors;
        self.pool.source_status(self.index, |st| {
            st.state = state;
            st.last_error = Some(e.to_string());
            st.consecutive_errors = errors;
        });
    }

    /// `max_stale` passed since the last contact: drop the contribution.
    fn expire(&mut self) {
        if !self.held {
            return;
        }
        self.held = false;
        let max_stale = self.max_stale.unwrap_or_default();
        tracing::warn!(pool = %self.pool.name(), source = %self.name, ?max_stale,
            "no contact with the registry for max_stale; dropping its endpoints");
        self.pool.update_source(self.index, None);
        self.metrics.endpoints(0);
        self.pool.source_status(self.index, |st| {
            st.state = "expired";
            st.endpoints = 0;
            st.last_error.get_or_insert_with(|| {
                format!("no contact with the registry for max_stale ({max_stale:?})")
            });
        });
    }

    /// How long to wait before the next try after an error.
    fn retry_wait(&self) -> Duration {
        backoff(self.errors, self.max_stale.unwrap_or(MAX_BACKOFF))
    }
}

/// Sleeps until `at`; forever if `None`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    /// One scripted answer: `delay` after the call, `result`.
    type Step = (Duration, Result<Update, DiscoveryError>);

    /// A source that answers call `n` with `script(n)` (hanging on `None`)
    /// and records when it was called.
    struct Scripted {
        script: Box<dyn FnMut(usize) -> Option<Step> + Send>,
        calls: Arc<Mutex<Vec<Instant>>>,
    }

    impl Discovery for Scripted {
        async fn next(&mut self) -> Result<Update, DiscoveryError> {
            let n = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(Instant::now());
                calls.len() - 1
            };
            match (self.script)(n) {
                Some((delay, result)) => {
                    tokio::time::sleep(delay).await;
                    result
                }
                None => std::future::pending().await,
            }
        }
    }

    fn set(ports: &[u16]) -> EndpointSet {
        let mut s = EndpointSet::new();
        for p in ports {
            s.insert(SocketAddr::from(([127, 0, 0, 1], *p)), 1, 0);
        }
        s
    }

    fn down() -> Result<Update, DiscoveryError> {
        Err(DiscoveryError::Unreachable("connection refused".into()))
    }

    fn config(max_stale: &str) -> crate::config::Config {
        let yaml = format!(
            "listeners: [{{name: main, bind: \"127.0.0.1:0\"}}]\n\
             routes: [{{pool: p}}]\n\
             pools:\n  - name: p\n    discovery:\n      \
             - http: {{url: \"http://127.0.0.1:1/x\", max_stale: {max_stale}}}\n"
        );
        crate::config::Config::from_yaml(&yaml, "t.yaml").unwrap()
    }

    /// A pool with one source (`max_stale: 3s`) whose driver runs `script`;
    /// returns the pool and the call log.
    fn run(
        previous: Option<&Pool>,
        script: impl FnMut(usize) -> Option<Step> + Send + 'static,
    ) -> (Arc<Pool>, Arc<Mutex<Vec<Instant>>>) {
        let config = config("3s");
        let pc = &config.pools[0];
        let metrics = crate::metrics::Metrics::new().unwrap();
        let pool = Arc::new(Pool::new(pc, previous.map(|p| (pc, p)), &metrics));
        let calls = Arc::default();
        let source = Scripted {
            script: Box::new(script),
            calls: Arc::clone(&calls),
        };
        let dc = pc.discovery[0].clone();
        tokio::spawn(drive(
            source,
            Arc::clone(&pool),
            0,
            dc,
            CancellationToken::new(),
        ));
        (pool, calls)
    }

    fn ports(pool: &Pool) -> Vec<u16> {
        let set = pool.backends();
        set.backends().iter().map(|b| b.addr().port()).collect()
    }

    fn state(pool: &Pool) -> &'static str {
        pool.sources()[0].state
    }

    async fn at(t0: Instant, secs: f64) {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(secs)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn max_stale_counts_from_the_last_contact_not_the_last_change() {
        let t0 = Instant::now();
        // A set, ten quiet contacts a second apart, then the registry is down.
        let (pool, _) = run(None, |n| match n {
            0 => Some((Duration::ZERO, Ok(Update::Set(set(&[1, 2]))))),
            1..=10 => Some((Duration::from_secs(1), Ok(Update::Unchanged))),
            _ => Some((Duration::ZERO, down())),
        });
        // Quiet for three times max_stale: still fresh.
        at(t0, 9.5).await;
        assert_eq!(ports(&pool), [1, 2]);
        assert_eq!(state(&pool), "ok");
        // Down since t = 10: kept until 10 + max_stale.
        at(t0, 12.9).await;
        assert_eq!(ports(&pool), [1, 2]);
        assert_eq!(state(&pool), "stale");
        assert!(pool.sources()[0].consecutive_errors > 1);
        at(t0, 13.1).await;
        assert!(ports(&pool).is_empty());
        assert_eq!(state(&pool), "expired");
        assert!(pool.sources()[0].last_error.is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_registry_expires_at_the_deadline_and_unchanged_brings_the_set_back() {
        let t0 = Instant::now();
        let (pool, _) = run(None, |n| match n {
            0 => Some((Duration::ZERO, Ok(Update::Set(set(&[1]))))),
            1 => Some((Duration::from_secs(1), Ok(Update::Unchanged))),
            // No answer and no error for 10 s (a half-open connection).
            2 => Some((Duration::from_secs(10), Ok(Update::Unchanged))),
            _ => None,
        });
        at(t0, 3.9).await;
        assert_eq!(ports(&pool), [1]);
        assert_eq!(state(&pool), "ok");
        at(t0, 4.1).await;
        assert!(ports(&pool).is_empty());
        assert_eq!(state(&pool), "expired");
        let error = pool.sources()[0].last_error.clone().unwrap();
        assert!(error.contains("max_stale"), "{error}");
        // The registry answers "unchanged": the last set is current again.
        at(t0, 11.1).await;
        assert_eq!(ports(&pool), [1]);
        assert_eq!(state(&pool), "ok");
        assert_eq!(pool.sources()[0].last_error, None);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_jittered_exponential_and_never_longer_than_max_stale() {
        let t0 = Instant::now();
        let (pool, calls) = run(None, |n| match n {
            0 => Some((Duration::ZERO, Ok(Update::Set(set(&[1]))))),
            _ => Some((Duration::ZERO, down())),
        });
        at(t0, 120.0).await;
        assert!(ports(&pool).is_empty());
        let calls = calls.lock().unwrap().clone();
        // Gap k follows the k-th error in a row (call 0 succeeded).
        let gaps: Vec<Duration> = calls.windows(2).skip(1).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() > 40, "{} retries", gaps.len());
        let ms = Duration::from_millis;
        for (i, gap) in gaps.iter().enumerate() {
            let errors = u32::try_from(i + 1).unwrap();
            let ceiling = [ms(500), ms(1000), ms(2000)]
                .get(i)
                .copied()
                .unwrap_or(ms(3000));
            assert!(*gap >= ms(100), "gap {i}: {gap:?}");
            // Timers round up to the next millisecond.
            assert!(*gap <= ceiling + ms(1), "gap {i}: {gap:?}");
            assert_eq!(backoff_ceiling(errors, Duration::from_secs(3)), ceiling);
        }
        // Jittered: neither fixed nor stuck at the floor.
        let late = &gaps[3..];
        assert!(late.iter().any(|g| *g != late[0]));
        assert!(late.iter().any(|g| *g > ms(1000)));
    }

    #[test]
    fn backoff_bounds() {
        let ms = Duration::from_millis;
        let ceilings: Vec<Duration> = (1..=9).map(|e| backoff_ceiling(e, MAX_BACKOFF)).collect();
        let want = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
        assert_eq!(ceilings, want.map(ms));
        assert_eq!(backoff_ceiling(u32::MAX, MAX_BACKOFF), MAX_BACKOFF);
        assert_eq!(backoff_ceiling(5, ms(1500)), ms(1500));
        for errors in [1, 3, 7, 40] {
            for _ in 0..500 {
                let b = backoff(errors, MAX_BACKOFF);
                assert!(
                    b >= ms(100) && b <= backoff_ceiling(errors, MAX_BACKOFF),
                    "{b:?}"
                );
            }
        }
        // A cap below the floor wins.
        assert!(backoff(3, ms(50)) <= ms(50));
        assert_eq!(
            contact_interval(Some(Duration::from_secs(3))),
            Some(ms(1000))
        );
        assert_eq!(contact_interval(None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_counting_from_the_last_contact() {
        let t0 = Instant::now();
        // The old pool instance: a set, last contacted 2 s ago.
        let config = config("3s");
        let metrics = crate::metrics::Metrics::new().unwrap();
        let old = Pool::new(&config.pools[0], None, &metrics);
        old.update_source(0, Some(&set(&[1])));
        old.source_status(0, |st| {
            st.state = "ok";
            st.last_success = Some(SystemTime::now() - Duration::from_secs(2));
        });
        // The new instance's source never answers.
        let (pool, _) = run(Some(&old), |_| None);
        at(t0, 0.8).await;
        assert_eq!(ports(&pool), [1]);
        at(t0, 1.2).await;
        assert!(ports(&pool).is_empty());
        assert_eq!(state(&pool), "expired");
    }
}
