//! Power of two choices: sample two distinct endpoints, send to the lighter.
//!
//! Mitzenmacher's "The Power of Two Choices in Randomized Load Balancing"
//! (2001): two random candidates instead of one cut the maximum load
//! exponentially, while each pick stays O(1) and, unlike least connections,
//! concurrent pickers rarely herd onto the same endpoint. It is the default
//! balancer of Finagle, linkerd2-proxy and tower (`tower::balance::p2c`).
//!
//! Sampling is weight-proportional: a cumulative weight table built once
//! per endpoint set, sampled by binary search (`O(log n)`, exact). The second
//! candidate is drawn from the distribution *without* the first (its weight
//! removed from the range), so the pair is always distinct without
//! rejection loops, whatever the weights. When all weights are equal there
//! is no table and both draws are uniform (the fast path).
//!
//! Load: `in_flight / weight` by cross-multiplication, or the peak-EWMA
//! cost divided by weight ([`LoadMetric`]); on a tie the first sample wins
//! (it is random already).
//!
//! Unavailable candidates are redrawn up to [`RESAMPLES`] times each; after
//! that a scan from a random offset finds one, so `None` means none is
//! available, and with a single available endpoint that one is returned.
//! Races: loads are read without synchronisation; a stale read only makes
//! one choice slightly worse.

use std::time::Instant;

use super::{available, scan_available, Endpoint, Load, LoadMetric};

/// Redraws of an unavailable candidate before falling back to a scan.
pub const RESAMPLES: usize = 4;

#[derive(Debug)]
enum Sampler {
    /// All weights equal: uniform over `0..n`.
    Uniform(usize),
    /// `cumulative[i]` = sum of the weights of endpoints `0..=i`.
    Weighted { cumulative: Box<[u64]> },
}

impl Sampler {
    fn new(weights: &[u32]) -> Self {
        let first = weights.first().copied().unwrap_or(1);
        if weights.iter().all(|&w| w == first) {
            return Sampler::Uniform(weights.len());
        }
        let mut sum = 0u64;
        let cumulative = weights
            .iter()
            .map(|&w| {
                sum += u64::from(w.max(1));
                sum
            })
            .collect();
        Sampler::Weighted { cumulative }
    }

    fn len(&self) -> usize {
        match self {
            Sampler::Uniform(n) => *n,
            Sampler::Weighted { cumulative } => cumulative.len(),
        }
    }

    /// One weighted draw. Requires `len() >= 1`.
    #[inline]
    fn draw(&self) -> usize {
        match self {
            Sampler::Uniform(n) => fastrand::usize(..*n),
            Sampler::Weighted { cumulative } => {
                let total = cumulative.last().copied().unwrap_or(1);
                let r = fastrand::u64(..total);
                cumulative.partition_point(|&c| c <= r)
            }
        }
    }

    /// One weighted draw from all endpoints but `skip`. Requires
    /// `len() >= 2` and `skip < len()`.
    #[inline]
    fn draw_excluding(&self, skip: usize) -> usize {
        match self {
            Sampler::Uniform(n) => {
                let j = fastrand::usize(..n - 1);
                if j >= skip {
                    j + 1
                } else {
                    j
                }
            }
            Sampler::Weighted { cumulative } => {
                let total = cumulative.last().copied().unwrap_or(1);
                let before = match skip.checked_sub(1) {
                    Some(p) => cumulative.get(p).copied().unwrap_or(0),
                    None => 0,
                };
                let own = cumulative.get(skip).copied().unwrap_or(before) - before;
                // Draw in the range with `skip`'s interval cut out.
                let mut r = fastrand::u64(..total - own);
                if r >= before {
                    r += own;
                }
                cumulative.partition_point(|&c| c <= r)
            }
        }
    }
}

/// Power of two choices over a weighted sampler.
#[derive(Debug)]
pub(crate) struct P2c {
    sampler: Sampler,
    metric: LoadMetric,
}

impl P2c {
    pub(crate) fn new(weights: &[u32], metric: LoadMetric) -> Self {
        P2c {
            sampler: Sampler::new(weights),
            metric,
        }
    }

    #[inline]
    pub(crate) fn pick<E: Endpoint>(&self, endpoints: &[E], now: Instant) -> Option<usize> {
        let (a, b) = self.sample_pair(endpoints, now)?;
        let Some(b) = b else { return Some(a) };
        let (Some(ea), Some(eb)) = (endpoints.get(a), endpoints.get(b)) else {
            return Some(a);
        };
        let la = Load::of(ea, self.metric, now);
        let lb = Load::of(eb, self.metric, now);
        Some(if lb.lighter_than(la) { b } else { a })
    }

    /// Two distinct available candidates: `None` when none is available,
    /// `(a, None)` when `a` is the only one.
    #[inline]
    pub(crate) fn sample_pair<E: Endpoint>(
        &self,
        endpoints: &[E],
        now: Instant,
    ) -> Option<(usize, Option<usize>)> {
        let a = self.sample_available(endpoints, None, now)?;
        Some((a, self.sample_available(endpoints, Some(a), now)))
    }

    #[inline]
    fn sample_available<E: Endpoint>(
        &self,
        endpoints: &[E],
        skip: Option<usize>,
        now: Instant,
    ) -> Option<usize> {
        let n = self.sampler.len();
        let can_draw = match skip {
            None => n >= 1,
            Some(s) => n >= 2 && s < n,
        };
        if can_draw {
            for _ in 0..RESAMPLES {
                let i = match skip {
                    None => self.sampler.draw(),
                    Some(s) => self.sampler.draw_excluding(s),
                };
                if available(endpoints, i, now) {
                    return Some(i);
                }
            }
        }
        self.fallback(endpoints, skip, now)
    }

    #[cold]
    fn fallback<E: Endpoint>(
        &self,
        endpoints: &[E],
        skip: Option<usize>,
        now: Instant,
    ) -> Option<usize> {
        let start = fastrand::usize(..endpoints.len().max(1));
        scan_available(endpoints, start, skip, now)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Algorithm, Selector, SelectorOptions};
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn p2c(weights: &[u32]) -> P2c {
        P2c::new(weights, LoadMetric::InFlight)
    }

    #[test]
    fn single_endpoint() {
        let v = eps(&[3]);
        let p = p2c(&[3]);
        assert_eq!(p.sample_pair(&v, Instant::now()), Some((0, None)));
        assert_eq!(p.pick(&v, Instant::now()), Some(0));
        v[0].set_up(false);
        assert_eq!(p.pick(&v, Instant::now()), None);
    }

    #[test]
    fn one_available_of_many() {
        let v = eps_masked(&[1, 1, 1, 1], &[false, false, true, false]);
        let p = p2c(&[1, 1, 1, 1]);
        for _ in 0..100 {
            assert_eq!(p.sample_pair(&v, Instant::now()), Some((2, None)));
        }
    }

    #[test]
    fn weighted_draws_follow_weights() {
        let weights = [1, 2, 7];
        let s = Sampler::new(&weights);
        let mut counts = [0usize; 3];
        for _ in 0..100_000 {
            counts[s.draw()] += 1;
        }
        for (c, w) in counts.iter().zip(weights) {
            let share = *c as f64 / 100_000.0;
            assert!((share - w as f64 / 10.0).abs() < 0.01, "{counts:?}");
        }
        // Excluding the heavy one: 1:2 between the others.
        let mut counts = [0usize; 3];
        for _ in 0..30_000 {
            counts[s.draw_excluding(2)] += 1;
        }
        assert_eq!(counts[2], 0);
        assert!((counts[1] as f64 / counts[0] as f64 - 2.0).abs() < 0.15);
    }

    #[test]
    fn heavily_loaded_rarely_picked() {
        let v = eps(&[1; 8]);
        v[3].set_in_flight(100);
        let s = Selector::new(Algorithm::PowerOfTwoChoices, &v);
        let mut hits = 0;
        for _ in 0..10_000 {
            if s.pick(&v, Instant::now()) == Some(3) {
                hits += 1;
            }
        }
        // Only a tie could pick it, and it is never tied: never.
        assert_eq!(hits, 0);
        // Plain random would give it 1/8; with two choices a moderately
        // loaded endpoint loses every comparison.
        v[3].set_in_flight(1);
        let mut hits = 0;
        for _ in 0..10_000 {
            if s.pick(&v, Instant::now()) == Some(3) {
                hits += 1;
            }
        }
        assert_eq!(hits, 0);
    }

    #[test]
    fn weights_scale_the_load() {
        // b has twice a's in-flight but four times the weight: lighter.
        let v = eps(&[1, 4]);
        v[0].set_in_flight(2);
        v[1].set_in_flight(4);
        let s = Selector::new(Algorithm::PowerOfTwoChoices, &v);
        for _ in 0..100 {
            assert_eq!(s.pick(&v, Instant::now()), Some(1));
        }
    }

    #[test]
    fn peak_ewma_avoids_slow() {
        let v = eps(&[1, 1, 1, 1]);
        let s = Selector::with_options(
            SelectorOptions {
                algorithm: Algorithm::PowerOfTwoChoices,
                load: LoadMetric::PeakEwma,
                ..SelectorOptions::default()
            },
            &v,
        );
        let now = Instant::now();
        for (e, ms) in v.iter().zip([10, 10, 900, 10]) {
            e.load.start();
            e.load.finish(Some(Duration::from_millis(ms)), now);
        }
        for _ in 0..1000 {
            assert_ne!(s.pick(&v, now), Some(2));
        }
        // Long after, while the others keep reporting 10 ms, the slow one's
        // unrefreshed peak has decayed (900 ms × e^-12 ≈ 5.5 µs): it is
        // probed again instead of starving.
        let later = now + Duration::from_secs(120);
        for i in [0, 1, 3] {
            v[i].load.start();
            v[i].load.finish(Some(Duration::from_millis(10)), later);
        }
        assert!((0..1000).any(|_| s.pick(&v, later) == Some(2)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Both candidates available and distinct whenever two are
        /// available; `(a, None)` only with a single available endpoint.
        #[test]
        fn pair_is_distinct_and_available(
            spec in prop::collection::vec((1u32..=20, any::<bool>()), 1..=16),
        ) {
            let weights: Vec<u32> = spec.iter().map(|s| s.0).collect();
            let up: Vec<bool> = spec.iter().map(|s| s.1).collect();
            let v = eps_masked(&weights, &up);
            let p = p2c(&weights);
            let n_up = up.iter().filter(|&&u| u).count();
            for _ in 0..100 {
                match p.sample_pair(&v, Instant::now()) {
                    None => prop_assert_eq!(n_up, 0),
                    Some((a, None)) => {
                        prop_assert_eq!(n_up, 1);
                        prop_assert!(up[a]);
                    }
                    Some((a, Some(b))) => {
                        prop_assert!(n_up >= 2);
                        prop_assert!(a != b && up[a] && up[b]);
                    }
                }
            }
        }
    }
}
