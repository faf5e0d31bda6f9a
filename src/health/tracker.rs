//! The rise/fall state machine of active health checking.
//!
//! HAProxy's `rise`/`fall` (and rpxy's `ConsecutiveCounter`, sozu's
//! `HealthState`): an endpoint turns unhealthy after `fall` consecutive
//! failed probes and healthy again after `rise` consecutive passing ones. A
//! single result never flips the verdict unless its threshold is 1, so one
//! lost packet does not take an endpoint out, and one lucky probe does not
//! put a broken endpoint back.
//!
//! Contract: pure, no IO, no clock, no allocation. [`Tracker::observe`]
//! returns `Some(new)` exactly when the verdict changes, so callers log and
//! count transitions, never ticks. A threshold of 0 is treated as 1.

/// The active-check verdict of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Health {
    /// Passing its checks (or not checked at all); may receive traffic.
    Healthy = 0,
    /// Failed `fall` consecutive checks; receives no traffic.
    Unhealthy = 1,
}

impl Health {
    /// `"healthy"` or `"unhealthy"`, for logs and the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }

    /// The value stored in an atomic. Unknown values read as unhealthy,
    /// never as a panic.
    pub(crate) fn from_u8(v: u8) -> Health {
        if v == Health::Healthy as u8 {
            Health::Healthy
        } else {
            Health::Unhealthy
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Consecutive-result counter with hysteresis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    ok_streak: u32,
    fail_streak: u32,
    state: Health,
}

impl Tracker {
    /// A tracker that needs `rise` passing results to turn healthy and
    /// `fall` failing ones to turn unhealthy, starting at `initial`.
    pub fn new(rise: u32, fall: u32, initial: Health) -> Self {
        Tracker {
            rise: rise.max(1),
            fall: fall.max(1),
            ok_streak: 0,
            fail_streak: 0,
            state: initial,
        }
    }

    /// The current verdict.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Feeds one probe result; `Some(new)` only when the verdict changes.
    pub fn observe(&mut self, ok: bool) -> Option<Health> {
        // Each result breaks the opposite streak: thresholds count
        // *consecutive* results, so alternating results never flip.
        if ok {
            self.fail_streak = 0;
            self.ok_streak = self.ok_streak.saturating_add(1);
            if self.state == Health::Unhealthy && self.ok_streak >= self.rise {
                self.state = Health::Healthy;
                self.ok_streak = 0;
                return Some(Health::Healthy);
            }
        } else {
            self.ok_streak = 0;
            self.fail_streak = self.fail_streak.saturating_add(1);
            if self.state == Health::Healthy && self.fail_streak >= self.fall {
                self.state = Health::Unhealthy;
                self.fail_streak = 0;
                return Some(Health::Unhealthy);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut Tracker, results: &[bool]) -> Vec<Option<Health>> {
        results.iter().map(|&ok| t.observe(ok)).collect()
    }

    #[test]
    fn defaults_fall_after_three_rise_after_two() {
        let mut t = Tracker::new(2, 3, Health::Healthy);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.state(), Health::Healthy);
        assert_eq!(t.observe(false), Some(Health::Unhealthy));
        assert_eq!(t.state(), Health::Unhealthy);
        // Further failures are not transitions.
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.state(), Health::Unhealthy);
        assert_eq!(t.observe(true), Some(Health::Healthy));
        assert_eq!(t.observe(true), None);
        assert_eq!(t.state(), Health::Healthy);
    }

    #[test]
    fn passing_results_keep_a_healthy_endpoint_healthy() {
        let mut t = Tracker::new(2, 3, Health::Healthy);
        assert!(feed(&mut t, &[true; 10]).iter().all(Option::is_none));
        assert_eq!(t.state(), Health::Healthy);
    }

    #[test]
    fn unhealthy_start_needs_rise_passes() {
        let mut t = Tracker::new(2, 3, Health::Unhealthy);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(Health::Healthy));
    }

    #[test]
    fn rise_one_recovers_on_first_pass() {
        let mut t = Tracker::new(1, 3, Health::Unhealthy);
        assert_eq!(t.observe(true), Some(Health::Healthy));
    }

    #[test]
    fn fall_one_fails_on_first_failure() {
        let mut t = Tracker::new(2, 1, Health::Healthy);
        assert_eq!(t.observe(false), Some(Health::Unhealthy));
        assert_eq!(t.observe(false), None);
    }

    #[test]
    fn zero_thresholds_act_as_one() {
        let mut t = Tracker::new(0, 0, Health::Healthy);
        assert_eq!(t.observe(false), Some(Health::Unhealthy));
        assert_eq!(t.observe(true), Some(Health::Healthy));
    }

    #[test]
    fn alternating_results_never_flip() {
        for initial in [Health::Healthy, Health::Unhealthy] {
            let mut t = Tracker::new(2, 3, initial);
            let pattern: Vec<bool> = (0..100).map(|i| i % 2 == 0).collect();
            assert!(feed(&mut t, &pattern).iter().all(Option::is_none));
            assert_eq!(t.state(), initial);
        }
    }

    #[test]
    fn a_pass_resets_the_failure_streak() {
        let mut t = Tracker::new(2, 3, Health::Healthy);
        let out = feed(&mut t, &[false, false, true, false, false]);
        assert!(out.iter().all(Option::is_none));
        assert_eq!(t.state(), Health::Healthy);
        assert_eq!(t.observe(false), Some(Health::Unhealthy));
    }

    #[test]
    fn a_failure_resets_the_success_streak() {
        let mut t = Tracker::new(3, 1, Health::Unhealthy);
        let out = feed(&mut t, &[true, true, false, true, true]);
        assert!(out.iter().all(Option::is_none));
        assert_eq!(t.observe(true), Some(Health::Healthy));
    }

    #[test]
    fn streaks_restart_after_a_transition() {
        // After falling, the failures that caused it do not count towards
        // anything else; the next fall needs a full new streak.
        let mut t = Tracker::new(1, 2, Health::Healthy);
        assert_eq!(
            feed(&mut t, &[false, false]),
            [None, Some(Health::Unhealthy)]
        );
        assert_eq!(t.observe(true), Some(Health::Healthy));
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), Some(Health::Unhealthy));
    }
}
