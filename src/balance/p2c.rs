//! Power of two choices: sample two distinct endpoints, send to the lighter.
//!
//! Mitzenmacher's "The Power of Two Choices in Randomized Load Balancing"
//! (2001): two random candidates instead of one cut the maximum load
//! exponentially, while each pick stays O(1) and, unlike least connections,
//! concurrent pickers rarely herd onto the same endpoint. It is the default
//! balancer of Finagle, linkerd2-proxy and tower (`tower::balance::p2c`).
//!
//! Sampling is weight-proportional, from tables built once per endpoint set:
//! a Walker/Vose alias table (O(1) per draw, exact integer weights) for the
//! first candidate; the second is drawn from the distribution *without* the
//! first, by a few alias redraws and then, if the first carries most of the
//! weight, from a cumulative table with the first's interval cut out
//! (binary search). So the pair is always distinct with a bounded amount of
//! work, whatever the weights. When all weights are equal there is no table
//! and both draws are uniform (the fast path).
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

use tokio::time::Instant;

use super::{available, scan_available, Endpoint, Load, LoadMetric};

/// Redraws of an unavailable candidate before falling back to a scan.
pub const RESAMPLES: usize = 4;

#[derive(Debug)]
enum Sampler {
    /// All weights equal: uniform over `0..n`.
    Uniform(usize),
    /// Unequal weights.
    Weighted {
        /// Walker/Vose alias table: column `c` yields `c` when a draw in
        /// `0..total` is below `.0`, else the alias `.1`. O(1) per draw.
        alias: Box<[(u64, u32)]>,
        /// `cumulative[i]` = sum of the weights of endpoints `0..=i`, for
        /// the exact draw without a given endpoint.
        cumulative: Box<[u64]>,
        total: u64,
    },
}

/// Alias-table redraws of the second candidate before it is drawn from
/// the cumulative table with the first one cut out.
const ALIAS_REDRAWS: usize = 3;

impl Sampler {
    fn new(weights: &[u32]) -> Self {
        let first = weights.first().copied().unwrap_or(1);
        if weights.iter().all(|&w| w == first) || u32::try_from(weights.len()).is_err() {
            return Sampler::Uniform(weights.len());
        }
        let mut sum = 0u64;
        let cumulative: Box<[u64]> = weights
            .iter()
            .map(|&w| {
                sum += u64::from(w.max(1));
                sum
            })
            .collect();
        Sampler::Weighted {
            alias: alias_table(weights, sum),
            cumulative,
            total: sum,
        }
    }

    fn len(&self) -> usize {
        match self {
            Sampler::Uniform(n) => *n,
            Sampler::Weighted { cumulative, .. } => cumulative.len(),
        }
    }

    /// One weighted draw. Requires `len() >= 1`.
    #[inline]
    fn draw(&self) -> usize {
        match self {
            Sampler::Uniform(n) => fastrand::usize(..*n),
            Sampler::Weighted { alias, total, .. } => {
                let c = fastrand::usize(..alias.len());
                match alias.get(c) {
                    Some(&(keep, other)) if fastrand::u64(..*total) >= keep => other as usize,
                    _ => c,
                }
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
            Sampler::Weighted {
                cumulative, total, ..
            } => {
                // Rejection is exact and O(1) unless `skip` carries most of
                // the weight; the cut-out draw below is exact too, so the
                // mix of both is.
                for _ in 0..ALIAS_REDRAWS {
                    let j = self.draw();
                    if j != skip {
                        return j;
                    }
                }
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

/// Vose's alias method in exact integers: each of the `n` columns holds
/// `total` units (the weights scaled by `n`), split between its own
/// endpoint and at most one alias.
fn alias_table(weights: &[u32], total: u64) -> Box<[(u64, u32)]> {
    let n = weights.len() as u64;
    let mut table: Vec<(u64, u32)> = (0..weights.len())
        .map(|i| (total, u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    let mut scaled: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1)) * n).collect();
    let (mut small, mut large): (Vec<usize>, Vec<usize>) =
        (0..weights.len()).partition(|&i| scaled.get(i).is_some_and(|&s| s < total));
    while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
        let (Some(&ss), Some(sl)) = (scaled.get(s), scaled.get(l)) else {
            break;
        };
        if let Some(col) = table.get_mut(s) {
            *col = (ss, u32::try_from(l).unwrap_or(u32::MAX));
        }
        // `l` gives `total - ss` units to fill column `s`.
        let left = *sl - (total - ss);
        if let Some(x) = scaled.get_mut(l) {
            *x = left;
        }
        if left < total {
            large.pop();
            small.push(l);
        }
    }
    // Whatever remains holds exactly `total` units: its own column, full.
    table.into_boxed_slice()
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
    #![allow(clippy::indexing_slicing)]
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
    fn alias_table_is_exact() {
        for weights in [
            vec![1u32, 2, 7],
            vec![5, 1, 1, 9, 3],
            vec![20, 1],
            vec![3, 3, 4],
        ] {
            let total: u64 = weights.iter().map(|&w| w as u64).sum();
            let table = alias_table(&weights, total);
            // Probability mass of each endpoint, in units of 1/(n·total).
            let mut mass = vec![0u64; weights.len()];
            for (c, &(keep, other)) in table.iter().enumerate() {
                mass[c] += keep;
                mass[other as usize] += total - keep;
            }
            let n = weights.len() as u64;
            let want: Vec<u64> = weights.iter().map(|&w| w as u64 * n).collect();
            assert_eq!(mass, want, "{weights:?}");
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
        // Excluding one: the others keep their ratio.
        for (skip, a, b, ratio) in [(2, 0, 1, 2.0), (0, 1, 2, 3.5)] {
            let mut counts = [0usize; 3];
            for _ in 0..30_000 {
                counts[s.draw_excluding(skip)] += 1;
            }
            assert_eq!(counts[skip], 0);
            let got = counts[b] as f64 / counts[a] as f64;
            assert!((got - ratio).abs() < ratio * 0.08, "{counts:?}");
        }
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
