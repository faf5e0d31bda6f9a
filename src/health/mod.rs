//! Endpoint health: active probes, passive outlier ejection, and the atomics
//! the request path reads.
//!
//! Two independent signals decide whether an endpoint may receive traffic
//! (kept apart as pingora keeps `healthy` apart from `enabled`, and sozu
//! checks `is_healthy() && !is_down()`):
//!
//! * the **active verdict**, set by the per-pool probe task
//!   (`crate::probe::run`) through the pure rise/fall [`Tracker`] (HAProxy
//!   `rise`/`fall`, rpxy's consecutive counters);
//! * **passive ejection** ([`passive::record`]), Envoy's outlier detection:
//!   N consecutive failed requests eject the endpoint for
//!   `base_ejection_time × times_ejected`, capped, bounded per pool by
//!   `max_ejection_percent`.
//!
//! Both live in a [`HealthCell`] owned by each backend. The request path
//! only reads and writes atomics there: [`HealthCell::is_available`] is two
//! relaxed loads, and [`passive::record`] is a few relaxed operations plus
//! at most one compare-and-swap when it ejects. This module does no IO:
//! the probe task lives in `crate::probe`.
//!
//! Contract:
//!
//! * available at `now` = active verdict healthy (or no active checks) and
//!   not ejected at `now`; ejection ends by time alone, with no timer task;
//! * the active verdict starts healthy (optimistic boot, as rpxy): a pool
//!   must serve as soon as weir starts or a reload adds it, and the probe
//!   task probes every new endpoint at once, so a dead endpoint is only
//!   offered traffic until its first `unhealthy_threshold` probes fail (and
//!   passive ejection usually catches it sooner);
//! * state survives endpoint updates and reloads because the backend (and
//!   with it its cell) is kept by address.

pub mod passive;
mod policy;
mod tracker;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

pub use passive::{Ejection, Outcome, PassivePolicy, StatusSet};
pub use policy::{parse_status_range, ActivePolicy, ProbeKind, Probed};
pub use tracker::{Health, Tracker};

/// The process-wide origin of the millisecond timestamps kept in atomics.
///
/// `tokio::time::Instant` has no integer representation, so ejection
/// deadlines are stored as milliseconds since this base. It is fixed the
/// first time a [`HealthCell`] is built; every `now` the request path
/// passes later is after it. An earlier `now` counts as the base itself.
pub fn clock_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Milliseconds from [`clock_base`] to `t`, saturating at both ends.
fn to_ms(t: Instant) -> u64 {
    let ms = t.saturating_duration_since(clock_base()).as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn from_ms(ms: u64) -> Instant {
    let base = clock_base();
    base.checked_add(Duration::from_millis(ms)).unwrap_or(base)
}

/// Result of the most recent active probe, for the status page only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// Whether the probe passed.
    pub ok: bool,
    /// Time from connect start to verdict (or to the timeout).
    pub latency: Duration,
    /// Wall-clock time the probe finished.
    pub at: SystemTime,
    /// Why it failed (`"status 500"`, `"connect: Connection refused"`, ...);
    /// `None` when it passed.
    pub error: Option<String>,
}

/// Health state of one endpoint, shared by the request path (reads,
/// passive updates) and the probe task (active verdict).
#[derive(Debug)]
pub struct HealthCell {
    /// `Health as u8`.
    active: AtomicU8,
    /// Passive ejection deadline in ms since [`clock_base`]. 0 = never
    /// ejected; a value at or before `now` = the last ejection is over (the
    /// value is kept so the ejection multiplier can decay from it).
    ejected_until_ms: AtomicU64,
    /// Consecutive passive failures.
    fail_streak: AtomicU32,
    /// Ejection multiplier: the next ejection lasts
    /// `base × (times_ejected + 1)` after decay (see `passive`).
    times_ejected: AtomicU32,
    /// Ejections since the cell was built, for the status page.
    ejections_total: AtomicU64,
    /// Written by the probe task only; never read on the request path.
    last_probe: Mutex<Option<ProbeResult>>,
}

impl Default for HealthCell {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthCell {
    /// A healthy, never-ejected cell (optimistic boot, see the module docs).
    pub fn new() -> Self {
        Self::with_initial(Health::Healthy)
    }

    /// A never-ejected cell whose active verdict starts at `initial`.
    pub fn with_initial(initial: Health) -> Self {
        // Fix the clock base no later than the first cell, so every `now`
        // the request path passes afterwards is after it.
        let _ = clock_base();
        HealthCell {
            active: AtomicU8::new(initial as u8),
            ejected_until_ms: AtomicU64::new(0),
            fail_streak: AtomicU32::new(0),
            times_ejected: AtomicU32::new(0),
            ejections_total: AtomicU64::new(0),
            last_probe: Mutex::new(None),
        }
    }

    /// Whether the endpoint may receive traffic at `now`: active verdict
    /// healthy and not passively ejected. Hot path: two relaxed loads.
    #[inline]
    pub fn is_available(&self, now: Instant) -> bool {
        self.active.load(Ordering::Relaxed) == Health::Healthy as u8 && !self.is_ejected(now)
    }

    /// Whether a passive ejection is in force at `now`.
    #[inline]
    pub fn is_ejected(&self, now: Instant) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && to_ms(now) < until
    }

    /// The active verdict.
    pub fn active(&self) -> Health {
        Health::from_u8(self.active.load(Ordering::Relaxed))
    }

    /// Sets the active verdict; returns whether it changed.
    pub fn set_active(&self, health: Health) -> bool {
        self.active.swap(health as u8, Ordering::Relaxed) != health as u8
    }

    /// The end of the ejection in force at `now`, if any.
    pub fn ejected_until(&self, now: Instant) -> Option<Instant> {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        (until != 0 && to_ms(now) < until).then(|| from_ms(until))
    }

    /// Time left of the ejection in force at `now`, if any (handy for a
    /// JSON status view).
    pub fn ejection_remaining(&self, now: Instant) -> Option<Duration> {
        self.ejected_until(now)
            .map(|until| until.saturating_duration_since(now))
    }

    /// The current ejection multiplier (decays while the endpoint behaves;
    /// the decay is applied lazily at the next ejection).
    pub fn times_ejected(&self) -> u32 {
        self.times_ejected.load(Ordering::Relaxed)
    }

    /// Ejections since this cell was built.
    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Ordering::Relaxed)
    }

    /// Current run of consecutive passive failures.
    pub fn fail_streak(&self) -> u32 {
        self.fail_streak.load(Ordering::Relaxed)
    }

    /// Ends a passive ejection early (a passing active probe). Returns
    /// whether one was in force. The deadline becomes `now` rather than 0,
    /// so the ejection multiplier keeps decaying from the real end of the
    /// ejection instead of being forgotten.
    pub fn un_eject(&self, now: Instant) -> bool {
        let now_ms = to_ms(now).max(1);
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        if until <= now_ms {
            return false;
        }
        // A concurrent re-ejection cannot happen (the endpoint is ejected,
        // so `record` leaves it alone); the CAS only guards against a
        // second un-eject racing us.
        let ended = self
            .ejected_until_ms
            .compare_exchange(until, now_ms, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if ended {
            self.fail_streak.store(0, Ordering::Relaxed);
        }
        ended
    }

    /// The most recent active probe result, if any probe ran.
    pub fn last_probe(&self) -> Option<ProbeResult> {
        match self.last_probe.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Stores the latest probe result (probe task only).
    pub fn record_probe(&self, result: ProbeResult) {
        match self.last_probe.lock() {
            Ok(mut g) => *g = Some(result),
            Err(poisoned) => *poisoned.into_inner() = Some(result),
        }
    }
}

/// Envoy's panic mode test: whether a pool with `available` of `total`
/// endpoints available is below `threshold_percent` (0 = never). In panic
/// the pool balances over all endpoints, healthy or not, because sending
/// everything to the few survivors would overload them too.
pub fn in_panic(available: usize, total: usize, threshold_percent: u8) -> bool {
    if threshold_percent == 0 || total == 0 {
        return false;
    }
    // available / total < threshold / 100, in integers.
    (available as u128) * 100 < (total as u128) * u128::from(threshold_percent.min(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_cell_is_available() {
        let cell = HealthCell::new();
        let now = Instant::now();
        assert!(cell.is_available(now));
        assert_eq!(cell.active(), Health::Healthy);
        assert!(!cell.is_ejected(now));
        assert_eq!(cell.ejected_until(now), None);
        assert_eq!(cell.times_ejected(), 0);
        assert_eq!(cell.fail_streak(), 0);
        assert_eq!(cell.last_probe(), None);
    }

    #[test]
    fn set_active_reports_changes_and_gates_availability() {
        let cell = HealthCell::new();
        let now = Instant::now();
        assert!(!cell.set_active(Health::Healthy));
        assert!(cell.set_active(Health::Unhealthy));
        assert!(!cell.is_available(now));
        assert!(!cell.set_active(Health::Unhealthy));
        assert!(cell.set_active(Health::Healthy));
        assert!(cell.is_available(now));
    }

    #[test]
    fn unhealthy_initial_state() {
        let cell = HealthCell::with_initial(Health::Unhealthy);
        assert!(!cell.is_available(Instant::now()));
    }

    #[test]
    fn times_before_the_base_do_not_panic() {
        let cell = HealthCell::new();
        let early = clock_base()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or_else(clock_base);
        assert!(cell.is_available(early));
        assert!(!cell.un_eject(early));
    }

    #[test]
    fn probe_results_are_kept() {
        let cell = HealthCell::new();
        let r = ProbeResult {
            ok: false,
            latency: Duration::from_millis(3),
            at: SystemTime::now(),
            error: Some("status 500".into()),
        };
        cell.record_probe(r.clone());
        assert_eq!(cell.last_probe(), Some(r));
    }

    #[test]
    fn panic_threshold() {
        assert!(!in_panic(0, 4, 0));
        assert!(!in_panic(0, 0, 50));
        assert!(in_panic(1, 4, 50));
        assert!(!in_panic(2, 4, 50));
        assert!(in_panic(0, 1, 1));
        assert!(!in_panic(4, 4, 100));
        assert!(in_panic(3, 4, 200)); // clamped to 100
    }
}
