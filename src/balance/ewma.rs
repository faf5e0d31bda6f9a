//! Peak-EWMA latency estimate, one per endpoint.
//!
//! The idea comes from Finagle's `PeakEwma` balancer and is the default load
//! measure of linkerd2-proxy, via tower's `tower::load::PeakEwma`: keep an
//! exponentially weighted moving average of the response latency, but let a
//! sample *above* the average replace it at once (the "peak"), so an endpoint
//! that turns slow is avoided immediately while one that turns fast again is
//! trusted only gradually. The selectors then use
//! `cost = estimate × (in_flight + 1)`, which also charges for queued work.
//!
//! Update on a sample `rtt` at `now` (tower's `RttEstimate::update`):
//!
//! * `rtt > ewma`: `ewma = rtt` (peak);
//! * otherwise: `w = exp(-elapsed / decay)` with `elapsed` the time since the
//!   previous update, and `ewma = ewma × w + rtt × (1 − w)`.
//!
//! Reads decay the estimate toward zero with the same time constant, as both
//! tower (`RttEstimate::decay`) and Finagle (`observe(0.0)` on `get`) do, so
//! an endpoint that stopped being picked after a bad peak is eventually
//! probed again instead of being starved forever. Unlike them, reads here do
//! not write the decayed value back: the pick path stays read-only on shared
//! cache lines. A fresh endpoint starts at `default_rtt`, as of its creation.
//!
//! Races: the state is four independent atomics, no lock. Two concurrent
//! updates may interleave so that one sample is lost, or the stored average
//! of one is paired with the timestamp of the other; every stored value is
//! still a finite, plausible estimate, so nothing is ever corrupted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// linkerd2-proxy's default: RTT assumed before the first sample.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// linkerd2-proxy's default: decay window of the moving average.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// Bit pattern meaning "no sample yet" (a NaN, never produced by an update).
const UNSET: u64 = u64::MAX;

/// Lock-free peak-EWMA state. Times are nanoseconds since `base`.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    base: Instant,
    /// `f64` nanoseconds, or [`UNSET`].
    rtt_bits: AtomicU64,
    /// When `rtt_bits` was last written, nanoseconds since `base`.
    stamp_ns: AtomicU64,
    /// `f64` nanoseconds, at least 1.
    decay_bits: AtomicU64,
    /// `f64` nanoseconds.
    default_bits: AtomicU64,
}

impl PeakEwma {
    pub(crate) fn new(default_rtt: Duration, decay: Duration) -> Self {
        PeakEwma {
            base: Instant::now(),
            rtt_bits: AtomicU64::new(UNSET),
            stamp_ns: AtomicU64::new(0),
            decay_bits: AtomicU64::new(decay_ns(decay).to_bits()),
            default_bits: AtomicU64::new(nanos_f64(default_rtt).to_bits()),
        }
    }

    /// Sets the parameters; the current average is kept.
    pub(crate) fn configure(&self, default_rtt: Duration, decay: Duration) {
        self.default_bits
            .store(nanos_f64(default_rtt).to_bits(), Ordering::Relaxed);
        self.decay_bits
            .store(decay_ns(decay).to_bits(), Ordering::Relaxed);
    }

    fn since_base(&self, now: Instant) -> u64 {
        // Saturates: an Instant before creation counts as creation, and
        // 2^64 ns is 584 years.
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The stored average and its timestamp; the default as of creation
    /// when there is no sample yet.
    fn stored(&self) -> (f64, u64) {
        let bits = self.rtt_bits.load(Ordering::Relaxed);
        if bits == UNSET {
            (f64::from_bits(self.default_bits.load(Ordering::Relaxed)), 0)
        } else {
            (f64::from_bits(bits), self.stamp_ns.load(Ordering::Relaxed))
        }
    }

    fn decay(&self) -> f64 {
        f64::from_bits(self.decay_bits.load(Ordering::Relaxed))
    }

    /// Records one latency sample taken at `now`.
    pub(crate) fn observe(&self, rtt: Duration, now: Instant) {
        let now_ns = self.since_base(now);
        let (prev, stamp) = self.stored();
        let next = update(
            prev,
            now_ns.saturating_sub(stamp),
            nanos_f64(rtt),
            self.decay(),
        );
        if next.is_finite() {
            self.rtt_bits.store(next.to_bits(), Ordering::Relaxed);
            self.stamp_ns.store(now_ns, Ordering::Relaxed);
        }
    }

    /// The estimate at `now` in nanoseconds, decayed toward zero since the
    /// last sample.
    pub(crate) fn estimate_ns(&self, now: Instant) -> f64 {
        let (prev, stamp) = self.stored();
        decayed(
            prev,
            self.since_base(now).saturating_sub(stamp),
            self.decay(),
        )
    }
}

/// `decay` in nanoseconds, at least 1 so `elapsed / decay` is never 0/0.
fn decay_ns(decay: Duration) -> f64 {
    nanos_f64(decay).max(1.0)
}

pub(crate) fn nanos_f64(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}

/// One peak-EWMA step: the new average after a sample `rtt_ns` that arrives
/// `elapsed_ns` after the previous update of `prev_ns`.
pub(crate) fn update(prev_ns: f64, elapsed_ns: u64, rtt_ns: f64, decay_ns: f64) -> f64 {
    if rtt_ns > prev_ns {
        rtt_ns
    } else {
        let w = (-(elapsed_ns as f64) / decay_ns).exp();
        prev_ns * w + rtt_ns * (1.0 - w)
    }
}

/// `prev_ns` decayed toward zero over `elapsed_ns`.
pub(crate) fn decayed(prev_ns: f64, elapsed_ns: u64, decay_ns: f64) -> f64 {
    if elapsed_ns == 0 {
        prev_ns
    } else {
        prev_ns * (-(elapsed_ns as f64) / decay_ns).exp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: f64 = 1e6;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn fresh_endpoint_reports_default() {
        let e = PeakEwma::new(Duration::from_millis(30), Duration::from_secs(10));
        let t0 = e.base;
        assert!(close(e.estimate_ns(t0), 30.0 * MS));
        // An Instant before creation saturates instead of panicking.
        if let Some(before) = t0.checked_sub(Duration::from_secs(1)) {
            assert!(close(e.estimate_ns(before), 30.0 * MS));
        }
    }

    #[test]
    fn peak_then_decay() {
        let decay = Duration::from_secs(10);
        let e = PeakEwma::new(Duration::from_millis(30), decay);
        let t0 = e.base;
        // Above the default: taken at once.
        e.observe(Duration::from_millis(500), t0 + Duration::from_secs(1));
        assert!(close(
            e.estimate_ns(t0 + Duration::from_secs(1)),
            500.0 * MS
        ));
        // A fast sample one decay window later moves 1 - 1/e of the way.
        let t2 = t0 + Duration::from_secs(11);
        e.observe(Duration::from_millis(10), t2);
        let w = (-1.0f64).exp();
        let want = 500.0 * MS * w + 10.0 * MS * (1.0 - w);
        assert!(
            close(e.estimate_ns(t2), want),
            "{} vs {want}",
            e.estimate_ns(t2)
        );
        // Immediately after, a second fast sample barely moves it (w ≈ 1)...
        e.observe(Duration::from_millis(10), t2 + Duration::from_millis(1));
        let after = e.estimate_ns(t2 + Duration::from_millis(1));
        assert!(after < want && after > want * 0.999);
        // ...but a peak overrides it immediately.
        e.observe(Duration::from_millis(900), t2 + Duration::from_millis(2));
        assert!(close(
            e.estimate_ns(t2 + Duration::from_millis(2)),
            900.0 * MS
        ));
    }

    #[test]
    fn reads_decay_toward_zero() {
        let e = PeakEwma::new(Duration::from_millis(30), Duration::from_secs(10));
        let t0 = e.base;
        e.observe(Duration::from_millis(100), t0);
        let later = e.estimate_ns(t0 + Duration::from_secs(20));
        assert!(close(later, 100.0 * MS * (-2.0f64).exp()));
        // Reading does not change the stored state.
        assert!(close(e.estimate_ns(t0), 100.0 * MS));
    }

    #[test]
    fn first_fast_sample_decays_from_default_since_creation() {
        let e = PeakEwma::new(Duration::from_millis(30), Duration::from_secs(10));
        let t0 = e.base;
        e.observe(Duration::from_millis(2), t0 + Duration::from_secs(10));
        let w = (-1.0f64).exp();
        let want = 30.0 * MS * w + 2.0 * MS * (1.0 - w);
        assert!(close(e.estimate_ns(t0 + Duration::from_secs(10)), want));
    }

    #[test]
    fn zero_decay_is_not_nan() {
        let e = PeakEwma::new(Duration::from_millis(30), Duration::ZERO);
        let t0 = e.base;
        e.observe(Duration::from_millis(1), t0);
        assert!(e.estimate_ns(t0).is_finite());
        e.observe(Duration::from_millis(1), t0 + Duration::from_millis(1));
        assert!(close(
            e.estimate_ns(t0 + Duration::from_millis(1)),
            1.0 * MS
        ));
    }

    #[test]
    fn concurrent_observes_never_corrupt() {
        let e = std::sync::Arc::new(PeakEwma::new(DEFAULT_RTT, DEFAULT_DECAY));
        let t0 = e.base;
        let threads: Vec<_> = (0..2u64)
            .map(|k| {
                let e = e.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let rtt = Duration::from_micros(100 + (i * 7 + k * 13) % 5000);
                        e.observe(rtt, t0 + Duration::from_micros(i * 10));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Every sample is below the 30 ms default, so whatever the
        // interleaving the estimate stays within (0, 30 ms].
        let v = e.estimate_ns(t0 + Duration::from_millis(200));
        assert!(v.is_finite() && v > 0.0 && v <= 30.0 * MS, "{v}");
    }
}
