//! Least connections: the available endpoint with the lowest load.
//!
//! Load is `in_flight / weight` (compared by cross-multiplication, exact,
//! no floats), or with [`LoadMetric::PeakEwma`] the peak-EWMA cost divided
//! by weight. One O(n) scan per pick, reading each endpoint's atomics once.
//!
//! Ties: the scan starts at a random offset (fastrand's thread-local
//! generator: no shared cursor to contend on) and keeps the first minimum
//! it meets, so among tied endpoints each wins with probability roughly
//! proportional to the gap before it; with idle endpoints (all at zero) the
//! choice is uniform rather than always the first.
//!
//! Empty set or nothing available: `None`. Races: loads are read without
//! synchronisation, so a concurrent pick may see the same minimum and both
//! go to it; that is inherent to least connections and corrected on the
//! next picks as `in_flight` rises.

use tokio::time::Instant;

use super::{Endpoint, Load, LoadMetric};

#[inline]
pub(crate) fn pick<E: Endpoint>(
    endpoints: &[E],
    metric: LoadMetric,
    now: Instant,
) -> Option<usize> {
    let n = endpoints.len();
    if n == 0 {
        return None;
    }
    let start = fastrand::usize(..n);
    // Two plain slices instead of `% n` per step.
    let (tail, head) = endpoints.split_at(start);
    let mut best: Option<(usize, Load)> = None;
    for (i, e) in head
        .iter()
        .enumerate()
        .map(|(k, e)| (k + start, e))
        .chain(tail.iter().enumerate())
    {
        if !e.is_available(now) {
            continue;
        }
        let load = Load::of(e, metric, now);
        match best {
            Some((_, b)) if !load.lighter_than(b) => {}
            _ => best = Some((i, load)),
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::super::testutil::*;
    use super::super::{Algorithm, Selector, SelectorOptions};
    use super::*;
    use std::time::Duration;

    #[test]
    fn lowest_ratio_wins() {
        let v = eps(&[1, 4, 2]);
        v[0].set_in_flight(1); // 1
        v[1].set_in_flight(3); // 0.75
        v[2].set_in_flight(2); // 1
        let s = Selector::new(Algorithm::LeastConnections, &v);
        for _ in 0..100 {
            assert_eq!(s.pick(&v, Instant::now()), Some(1));
        }
        v[1].set_up(false);
        for _ in 0..100 {
            assert!(matches!(s.pick(&v, Instant::now()), Some(0 | 2)));
        }
    }

    #[test]
    fn ties_spread() {
        let v = eps(&[1, 1, 1, 1]);
        v[1].set_in_flight(5);
        let s = Selector::new(Algorithm::LeastConnections, &v);
        let mut counts = [0usize; 4];
        for _ in 0..30_000 {
            counts[s.pick(&v, Instant::now()).unwrap()] += 1;
        }
        assert_eq!(counts[1], 0);
        // 0, 2, 3 tie at zero; the random start gives 2 a 2/4 share
        // (starts at 1 or 2), 0 and 3 a 1/4 share each. None starves.
        for (i, want) in [(0, 0.25), (2, 0.5), (3, 0.25)] {
            let share = counts[i] as f64 / 30_000.0;
            assert!((share - want).abs() < 0.03, "{counts:?}");
        }
    }

    #[test]
    fn balances_when_requests_stay() {
        // Picks that start requests even out in-flight counts by weight.
        let v = eps(&[1, 2, 3]);
        let s = Selector::new(Algorithm::LeastConnections, &v);
        for _ in 0..600 {
            let i = s.pick(&v, Instant::now()).unwrap();
            v[i].load.start();
        }
        let f: Vec<u32> = v.iter().map(|e| e.load.in_flight()).collect();
        assert_eq!(f, vec![100, 200, 300]);
    }

    #[test]
    fn peak_ewma_prefers_fast() {
        let v = eps(&[1, 1, 1]);
        let s = Selector::with_options(
            SelectorOptions {
                algorithm: Algorithm::LeastConnections,
                load: LoadMetric::PeakEwma,
                ..SelectorOptions::default()
            },
            &v,
        );
        let now = Instant::now();
        for (e, ms) in v.iter().zip([50, 5, 500]) {
            e.load.start();
            e.load.finish(Some(Duration::from_millis(ms)), now);
        }
        assert_eq!(s.pick(&v, now), Some(1));
        // Enough queued work on the fast one tips the balance: 5 ms × 11 >
        // 50 ms × 1.
        v[1].set_in_flight(10);
        assert_eq!(s.pick(&v, now), Some(0));
    }
}
