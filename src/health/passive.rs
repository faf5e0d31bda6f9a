//! Passive health: outlier ejection from the results of real requests.
//!
//! Envoy's consecutive-failure outlier detection: after
//! `consecutive_failures` failed requests in a row (connect error, reset,
//! timeout, or a response status listed in `failure_statuses`), the
//! endpoint is ejected for `base_ejection_time × times_ejected`, capped at
//! `max_ejection_time`. `max_ejection_percent` bounds how much of a pool
//! can be ejected at once, except that one endpoint can always be ejected
//! (so a one- or two-endpoint pool still sheds a dead member). A success
//! resets the failure streak; a passing active probe ends an ejection
//! ([`HealthCell::un_eject`]).
//!
//! Ejection ends by time: [`HealthCell::is_available`] compares `now` with
//! the stored deadline, so no timer task is needed and an endpoint comes
//! back exactly when its ejection runs out.
//!
//! The multiplier decays (Envoy decrements it for each
//! `base_ejection_time` a host stays un-ejected). Here the rule is applied
//! lazily, at the next ejection: for every whole `base_ejection_time` that
//! passed between the end of the previous ejection and now, the multiplier
//! drops by one. A flapping endpoint therefore gets ever longer ejections,
//! while one that failed once an hour ago starts again at the base time.
//! The multiplier is also capped where `base × times` reaches the maximum,
//! so the decay after a long outage is bounded too.
//!
//! Contract: [`record`] runs on the request path. It takes no lock and
//! allocates nothing: a success is one load (plus a store if a streak was
//! running), a failure one `fetch_add`, and an ejection one
//! compare-and-swap, the only one per event. The per-pool percentage check
//! reads the other endpoints' deadlines through a caller-supplied closure,
//! called only when an ejection is about to happen. Concurrent ejections
//! of different endpoints can each pass that check, so the bound may be
//! exceeded by the number of ejections racing in the same instant.

use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

use super::{from_ms, to_ms, HealthCell};

/// Outcome of one proxied request, as far as passive health cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response arrived with a status not in `failure_statuses`, or the
    /// request otherwise completed.
    Success,
    /// The TCP connection (or the HTTP handshake) to the endpoint failed.
    ConnectError,
    /// The connection was reset or closed before a complete response head.
    Reset,
    /// Connect or response-header timeout.
    Timeout,
    /// A response arrived with this status; a failure only if listed in
    /// [`PassivePolicy::failure_statuses`].
    Status(u16),
}

impl Outcome {
    /// What an ejection caused by this outcome is counted as; `None` for
    /// [`Outcome::Success`], which never ejects.
    pub fn ejection_reason(self) -> Option<EjectionReason> {
        match self {
            Outcome::Success => None,
            Outcome::ConnectError => Some(EjectionReason::ConnectError),
            Outcome::Reset => Some(EjectionReason::Reset),
            Outcome::Timeout => Some(EjectionReason::Timeout),
            Outcome::Status(_) => Some(EjectionReason::Status),
        }
    }
}

/// The failure that triggered an ejection; also the `reason` label of
/// `weir_upstream_ejections_total`, indexed by [`EjectionReason::index`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum EjectionReason {
    /// The connection (or the HTTP handshake) to the endpoint failed.
    ConnectError = 0,
    /// The connection was reset or closed before a response head.
    Reset = 1,
    /// Connect or response-header timeout.
    Timeout = 2,
    /// A status in `failure_statuses`.
    Status = 3,
}

impl EjectionReason {
    /// How many reasons there are: the length of the metric arrays.
    pub const COUNT: usize = 4;
    /// Every reason, in index order.
    pub const ALL: [EjectionReason; EjectionReason::COUNT] = [
        EjectionReason::ConnectError,
        EjectionReason::Reset,
        EjectionReason::Timeout,
        EjectionReason::Status,
    ];

    /// The position in [`EjectionReason::ALL`] and in the metric arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The metric and log label.
    pub const fn as_str(self) -> &'static str {
        match self {
            EjectionReason::ConnectError => "connect_error",
            EjectionReason::Reset => "reset",
            EjectionReason::Timeout => "timeout",
            EjectionReason::Status => "status",
        }
    }
}

/// A set of HTTP status codes (100..=999), as a fixed bitset so the
/// request path tests membership with one shift and mask.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusSet {
    bits: [u64; 16],
}

impl StatusSet {
    /// The empty set.
    pub const fn empty() -> Self {
        StatusSet { bits: [0; 16] }
    }

    /// The set of `codes`; codes above 999 are ignored.
    pub fn from_codes(codes: impl IntoIterator<Item = u16>) -> Self {
        let mut set = Self::empty();
        for code in codes {
            set.insert(code);
        }
        set
    }

    /// Adds `code`; returns false (and ignores it) if it is above 999.
    pub fn insert(&mut self, code: u16) -> bool {
        let i = usize::from(code / 64);
        match self.bits.get_mut(i) {
            Some(word) if code <= 999 => {
                *word |= 1 << (code % 64);
                true
            }
            _ => false,
        }
    }

    /// Whether `code` is in the set.
    #[inline]
    pub fn contains(&self, code: u16) -> bool {
        self.bits
            .get(usize::from(code / 64))
            .is_some_and(|word| word & (1 << (code % 64)) != 0)
    }

    /// The codes in ascending order.
    pub fn codes(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=999u16).filter(|&c| self.contains(c))
    }
}

impl std::fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.codes()).finish()
    }
}

/// Outlier-ejection settings of a pool (`health.passive`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassivePolicy {
    /// Consecutive failures that eject. Default 5. 0 disables ejection.
    pub consecutive_failures: u32,
    /// First ejection time, and the unit of the multiplier. Default 30s.
    /// Zero disables ejection.
    pub base_ejection_time: Duration,
    /// Longest ejection. Default 300s. A value below `base_ejection_time`
    /// acts as `base_ejection_time` (as in Envoy).
    pub max_ejection_time: Duration,
    /// Most of the pool, in percent, that may be ejected at once; one
    /// endpoint can always be ejected. Default 50. Values above 100 act as
    /// 100.
    pub max_ejection_percent: u8,
    /// Response statuses counted as failures. Default 502, 503, 504: what a
    /// dead or overloaded endpoint (or the hop behind it) answers, whereas a
    /// 500 is often an application error on one request.
    pub failure_statuses: StatusSet,
}

impl Default for PassivePolicy {
    fn default() -> Self {
        PassivePolicy {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
            failure_statuses: StatusSet::from_codes([502, 503, 504]),
        }
    }
}

impl PassivePolicy {
    /// Whether `outcome` counts as a failure under this policy.
    #[inline]
    pub fn is_failure(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Success => false,
            Outcome::ConnectError | Outcome::Reset | Outcome::Timeout => true,
            Outcome::Status(code) => self.failure_statuses.contains(code),
        }
    }

    /// Whether one more endpoint may be ejected from a pool of `total`
    /// endpoints of which `ejected` already are.
    pub fn ejection_allowed(&self, ejected: usize, total: usize) -> bool {
        if ejected == 0 {
            return true;
        }
        // (ejected + 1) / total <= percent / 100, in integers: the limit
        // must hold after this ejection, so 4 endpoints at 50% allow 2.
        let pct = u128::from(self.max_ejection_percent.min(100));
        (ejected as u128 + 1) * 100 <= total as u128 * pct
    }
}

/// An ejection that [`record`] just made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ejection {
    /// When it ends (millisecond resolution).
    pub until: Instant,
    /// How long it lasts.
    pub duration: Duration,
    /// The multiplier it used (1 for a first ejection).
    pub times_ejected: u32,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Records one request outcome for `cell` at `now`; returns the ejection
/// it caused, if any, so the caller can log and count it.
///
/// `pool` returns `(ejected, total)` for the endpoint's pool at `now`
/// (ejected not counting this endpoint, which is not ejected when it is
/// called); it is called only when an ejection is about to happen.
/// Failures of an endpoint that is already ejected (requests that were in
/// flight when it was ejected) neither extend the ejection nor count.
pub fn record(
    cell: &HealthCell,
    outcome: Outcome,
    now: Instant,
    policy: &PassivePolicy,
    pool: impl FnOnce() -> (usize, usize),
) -> Option<Ejection> {
    if !policy.is_failure(outcome) {
        // Load first: on a healthy endpoint the streak is already 0 and a
        // store would bounce the cache line between cores for nothing.
        if cell.fail_streak.load(Ordering::Relaxed) != 0 {
            cell.fail_streak.store(0, Ordering::Relaxed);
        }
        return None;
    }
    if policy.consecutive_failures == 0 {
        return None;
    }
    let now_ms = to_ms(now);
    let prev_until = cell.ejected_until_ms.load(Ordering::Acquire);
    if prev_until > now_ms {
        return None;
    }
    // Wrapping after 2^32 failures only restarts the streak.
    let streak = cell
        .fail_streak
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(1);
    if streak < policy.consecutive_failures {
        return None;
    }
    let base_ms = millis(policy.base_ejection_time);
    if base_ms == 0 {
        return None;
    }
    let (ejected, total) = pool();
    if !policy.ejection_allowed(ejected, total) {
        // The streak keeps growing, so the endpoint is ejected on its next
        // failure once the pool has room.
        return None;
    }
    let cap_ms = millis(policy.max_ejection_time).max(base_ms);
    let max_times = u32::try_from(cap_ms.div_ceil(base_ms)).unwrap_or(u32::MAX);
    let mut times = cell.times_ejected.load(Ordering::Relaxed);
    if prev_until != 0 {
        // Lazy decay: one step per whole base time since the last
        // ejection ended.
        let steps = (now_ms - prev_until) / base_ms;
        times = times.saturating_sub(u32::try_from(steps).unwrap_or(u32::MAX));
    }
    let times = times.saturating_add(1).min(max_times);
    let duration_ms = base_ms.saturating_mul(u64::from(times)).min(cap_ms);
    let until = now_ms.saturating_add(duration_ms);
    // The one CAS: of several requests failing at once, exactly one ejects.
    cell.ejected_until_ms
        .compare_exchange(prev_until, until, Ordering::AcqRel, Ordering::Relaxed)
        .ok()?;
    cell.times_ejected.store(times, Ordering::Relaxed);
    cell.ejections_total.fetch_add(1, Ordering::Relaxed);
    cell.fail_streak.store(0, Ordering::Relaxed);
    Some(Ejection {
        until: from_ms(until),
        duration: Duration::from_millis(duration_ms),
        times_ejected: times,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;
    use crate::health::{clock_base, Health};

    const BASE: Duration = Duration::from_secs(30);

    /// A fixed instant well after the clock base, plus `ms`.
    fn at(ms: u64) -> Instant {
        clock_base() + Duration::from_secs(1_000) + Duration::from_millis(ms)
    }

    fn alone() -> (usize, usize) {
        (0, 1)
    }

    fn fail_n(cell: &HealthCell, n: u32, now: Instant, p: &PassivePolicy) -> Option<Ejection> {
        let mut last = None;
        for _ in 0..n {
            last = record(cell, Outcome::ConnectError, now, p, alone);
        }
        last
    }

    #[test]
    fn ejection_reasons_index_all_and_keep_their_labels() {
        for (i, r) in EjectionReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        let labels = EjectionReason::ALL.map(EjectionReason::as_str);
        assert_eq!(labels, ["connect_error", "reset", "timeout", "status"]);
        let reason = |o: Outcome| o.ejection_reason();
        assert_eq!(reason(Outcome::Success), None);
        assert_eq!(
            reason(Outcome::ConnectError),
            Some(EjectionReason::ConnectError)
        );
        assert_eq!(reason(Outcome::Reset), Some(EjectionReason::Reset));
        assert_eq!(reason(Outcome::Timeout), Some(EjectionReason::Timeout));
        assert_eq!(reason(Outcome::Status(503)), Some(EjectionReason::Status));
    }

    #[test]
    fn n_minus_one_failures_do_not_eject() {
        let (cell, p) = (HealthCell::new(), PassivePolicy::default());
        assert_eq!(fail_n(&cell, 4, at(0), &p), None);
        assert!(cell.is_available(at(0)));
        assert_eq!(cell.fail_streak(), 4);
    }

    #[test]
    fn n_failures_eject_for_the_base_time() {
        let (cell, p) = (HealthCell::new(), PassivePolicy::default());
        let e = fail_n(&cell, 5, at(0), &p).expect("ejected");
        assert_eq!(e.duration, BASE);
        assert_eq!(e.times_ejected, 1);
        assert_eq!(e.until, at(30_000));
        assert!(cell.is_ejected(at(0)));
        assert!(!cell.is_available(at(29_999)));
        assert_eq!(cell.ejected_until(at(1)), Some(at(30_000)));
        assert_eq!(
            cell.ejection_remaining(at(1_000)),
            Some(BASE - Duration::from_secs(1))
        );
        // Expiry by time alone restores availability.
        assert!(cell.is_available(at(30_000)));
        assert_eq!(cell.ejected_until(at(30_000)), None);
        assert_eq!(cell.fail_streak(), 0);
        assert_eq!(cell.ejections_total(), 1);
    }

    #[test]
    fn every_kind_of_failure_counts() {
        let p = PassivePolicy::default();
        for o in [
            Outcome::ConnectError,
            Outcome::Reset,
            Outcome::Timeout,
            Outcome::Status(502),
            Outcome::Status(503),
            Outcome::Status(504),
        ] {
            let cell = HealthCell::new();
            let mut e = None;
            for _ in 0..5 {
                e = record(&cell, o, at(0), &p, alone);
            }
            assert!(e.is_some(), "{o:?}");
        }
    }

    #[test]
    fn unlisted_statuses_are_successes() {
        let (cell, p) = (HealthCell::new(), PassivePolicy::default());
        fail_n(&cell, 4, at(0), &p);
        assert_eq!(record(&cell, Outcome::Status(500), at(0), &p, alone), None);
        assert_eq!(cell.fail_streak(), 0);
        assert_eq!(record(&cell, Outcome::Status(404), at(0), &p, alone), None);
        assert!(!p.is_failure(Outcome::Status(200)));
        assert!(!p.is_failure(Outcome::Status(u16::MAX)));
    }

    #[test]
    fn success_resets_the_streak() {
        let (cell, p) = (HealthCell::new(), PassivePolicy::default());
        assert_eq!(fail_n(&cell, 4, at(0), &p), None);
        assert_eq!(record(&cell, Outcome::Success, at(0), &p, alone), None);
        assert_eq!(cell.fail_streak(), 0);
        assert_eq!(fail_n(&cell, 4, at(0), &p), None);
        assert!(cell.is_available(at(0)));
        assert!(fail_n(&cell, 1, at(0), &p).is_some());
    }

    #[test]
    fn second_ejection_lasts_twice_the_base() {
        let (cell, p) = (HealthCell::new(), PassivePolicy::default());
        fail_n(&cell, 5, at(0), &p).expect("first");
        let e = fail_n(&cell, 5, at(31_000), &p).expect("second");
        assert_eq!(e.times_ejected, 2);
        assert_eq!(e.duration, 2 * BASE);
        assert!(!cell.is_available(at(90_999)));
        assert!(cell.is_available(at(91_000)));
    }

    #[test]
    fn ejection_time_is_capped() {
        let p = PassivePolicy {
            max_ejection_time: Duration::from_secs(100),
            ..PassivePolicy::default()
        };
        let cell = HealthCell::new();
        let mut now = 0;
        let mut got = Vec::new();
        for _ in 0..6 {
            let e = fail_n(&cell, 5, at(now), &p).expect("ejected");
            got.push(e.duration.as_secs());
            now += millis(e.duration); // fail again the moment it ends
        }
        assert_eq!(got, [30, 60, 90, 100, 100, 100]);
        // The multiplier stops where the cap is reached.
        assert_eq!(cell.times_ejected(), 4);
    }

    #[test]
    fn max_below_base_acts_as_base() {
        let p = PassivePolicy {
            max_ejection_time: Duration::from_secs(1),
            ..PassivePolicy::default()
        };
        let cell = HealthCell::new();
        assert_eq!(fail_n(&cell, 5, at(0), &p).map(|e| e.duration), Some(BASE));
    }

    #[test]
    fn failures_while_ejected_do_not_extend_or_count() {
        let (cell, p) = (HealthCell::new(), PassivePolicy::default());
        fail_n(&cell, 5, at(0), &p).expect("ejected");
        assert_eq!(fail_n(&cell, 20, at(10_000), &p), None);
        assert_eq!(cell.fail_streak(), 0);
        assert!(cell.is_available(at(30_000)));
    }

    #[test]
    fn multiplier_decays_while_the_endpoint_behaves() {
        let (cell, p) = (HealthCell::new(), PassivePolicy::default());
        fail_n(&cell, 5, at(0), &p).expect("1st"); // ends 30s
        fail_n(&cell, 5, at(30_000), &p).expect("2nd"); // 60s, ends 90s
        assert_eq!(cell.times_ejected(), 2);
        // One base time of good behaviour: 2 → 1, so the next is 2×base.
        let e = fail_n(&cell, 5, at(120_000), &p).expect("3rd"); // ends 180s
        assert_eq!(e.times_ejected, 2);
        // Two base times: 2 → 0, so the next is the base again.
        let e = fail_n(&cell, 5, at(240_000), &p).expect("4th");
        assert_eq!(e.times_ejected, 1);
        assert_eq!(e.duration, BASE);
    }

    #[test]
    fn pool_percentage_limits_ejections() {
        let p = PassivePolicy::default();
        let cells: Vec<HealthCell> = (0..4).map(|_| HealthCell::new()).collect();
        let now = at(0);
        let count = |cells: &[HealthCell]| cells.iter().filter(|c| c.is_ejected(now)).count();
        for _ in 0..10 {
            for c in &cells {
                let ejected = count(&cells);
                record(c, Outcome::Reset, now, &p, || (ejected, cells.len()));
            }
        }
        assert_eq!(count(&cells), 2);
        // The others keep their streak and go as soon as there is room.
        assert!(cells[2].fail_streak() >= 5);
        let later = at(30_000);
        let e = record(&cells[2], Outcome::Reset, later, &p, || (0, 4));
        assert!(e.is_some());
    }

    #[test]
    fn percentage_rule() {
        let p = PassivePolicy::default();
        assert!(p.ejection_allowed(0, 1));
        assert!(p.ejection_allowed(0, 2));
        assert!(!p.ejection_allowed(1, 2));
        assert!(!p.ejection_allowed(1, 3));
        assert!(p.ejection_allowed(1, 4));
        assert!(!p.ejection_allowed(2, 4));
        let none = PassivePolicy {
            max_ejection_percent: 0,
            ..p.clone()
        };
        assert!(none.ejection_allowed(0, 10));
        assert!(!none.ejection_allowed(1, 10));
        let all = PassivePolicy {
            max_ejection_percent: 255,
            ..p
        };
        assert!(all.ejection_allowed(9, 10));
        assert!(!all.ejection_allowed(10, 10));
    }

    #[test]
    fn a_single_endpoint_can_always_be_ejected() {
        let p = PassivePolicy {
            max_ejection_percent: 10,
            ..PassivePolicy::default()
        };
        let cell = HealthCell::new();
        let e = (0..5).filter_map(|_| record(&cell, Outcome::Timeout, at(0), &p, || (0, 1)));
        assert_eq!(e.count(), 1);
        assert!(!cell.is_available(at(0)));
    }

    #[test]
    fn active_probe_un_ejects_and_keeps_the_multiplier() {
        let (cell, p) = (HealthCell::new(), PassivePolicy::default());
        fail_n(&cell, 5, at(0), &p).expect("ejected");
        fail_n(&cell, 3, at(0), &p);
        assert!(cell.un_eject(at(5_000)));
        assert!(!cell.un_eject(at(5_000)));
        assert!(cell.is_available(at(5_000)));
        assert_eq!(cell.fail_streak(), 0);
        // Failing again right away: the multiplier did not reset.
        let e = fail_n(&cell, 5, at(6_000), &p).expect("again");
        assert_eq!(e.times_ejected, 2);
    }

    #[test]
    fn un_eject_of_an_endpoint_not_ejected_keeps_its_streak() {
        let (cell, p) = (HealthCell::new(), PassivePolicy::default());
        fail_n(&cell, 3, at(0), &p);
        assert!(!cell.un_eject(at(0)));
        assert_eq!(cell.fail_streak(), 3);
    }

    #[test]
    fn active_verdict_and_ejection_are_independent() {
        let (cell, p) = (HealthCell::new(), PassivePolicy::default());
        fail_n(&cell, 5, at(0), &p).expect("ejected");
        cell.set_active(Health::Unhealthy);
        assert!(!cell.is_available(at(30_000)));
        cell.set_active(Health::Healthy);
        assert!(cell.is_available(at(30_000)));
    }

    #[test]
    fn zero_settings_disable_ejection() {
        let cell = HealthCell::new();
        let off = PassivePolicy {
            consecutive_failures: 0,
            ..PassivePolicy::default()
        };
        assert_eq!(fail_n(&cell, 100, at(0), &off), None);
        let zero = PassivePolicy {
            base_ejection_time: Duration::ZERO,
            ..PassivePolicy::default()
        };
        assert_eq!(fail_n(&cell, 100, at(0), &zero), None);
        assert!(cell.is_available(at(0)));
    }

    #[test]
    fn one_ejection_under_concurrent_failures() {
        let cell = HealthCell::new();
        let p = PassivePolicy::default();
        let ejections = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..1_000 {
                        if record(&cell, Outcome::Reset, at(0), &p, alone).is_some() {
                            ejections.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(ejections.load(Ordering::Relaxed), 1);
        assert_eq!(cell.ejections_total(), 1);
    }

    #[test]
    fn status_set() {
        let mut s = StatusSet::from_codes([502, 999, 1000, 100]);
        assert!(s.contains(502) && s.contains(999) && s.contains(100));
        assert!(!s.contains(1000) && !s.contains(503) && !s.contains(u16::MAX));
        assert!(!s.insert(u16::MAX));
        assert_eq!(s.codes().collect::<Vec<_>>(), [100, 502, 999]);
        assert_eq!(format!("{s:?}"), "{100, 502, 999}");
        assert!(!StatusSet::default().contains(0));
    }
}
