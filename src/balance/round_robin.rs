//! Smooth weighted round robin (nginx), precomputed, lock-free.
//!
//! nginx's algorithm (`ngx_http_upstream_get_peer`, introduced in nginx
//! 1.3.1): every endpoint has a `current` weight; each round, every
//! `current` grows by the endpoint's weight, the endpoint with the largest
//! `current` (the first one on a tie) is picked and its `current` drops by
//! the total weight `W`. Weights 5:1:1 give `a a b a c a a`: heavy endpoints
//! are interleaved with light ones instead of served in bursts, and after
//! `W` rounds every `current` is back to 0, so the sequence is periodic and
//! each endpoint appears exactly `weight` times per period.
//!
//! nginx mutates the `current` weights under a lock on every pick. Because
//! the sequence is periodic, this module computes one period at build time
//! (with weights divided by their gcd) and serves it with one atomic cursor:
//! a pick is a `fetch_add` and a table read.
//!
//! Building costs `O(W × d)` for `d` distinct weights (endpoints of equal
//! weight are served in index order within their class, which is exactly
//! what nginx's "first on a tie" produces, so one candidate per class
//! suffices). All-equal weights need no table: plain rotation is the same
//! sequence.
//!
//! Memory guard: when the gcd-reduced total weight exceeds [`MAX_SLOTS`]
//! (65 536), the schedule is built over *scaled* weights
//! `max(1, ⌊w × MAX_SLOTS / W⌋)` instead, at most `2 × MAX_SLOTS` slots
//! (512 KiB). Picks stay O(1) and smooth and proportions are exact for the
//! scaled weights: each endpoint's share is off by less than about one slot
//! in `MAX_SLOTS` (rounding down, and endpoints below `W / MAX_SLOTS`
//! rounded up to one slot). With more than `MAX_SLOTS` endpoints of unequal
//! weights (no real pool) weights are ignored and endpoints rotate.
//!
//! Run lengths (checked by the property tests over weights `1..=20` and up to
//! 16 endpoints, not proven here): with `S = W − w` the weight of the others,
//! an endpoint of weight `w` is picked at most `⌈w / S⌉ + 1` times in a row
//! within one period, and at most `2 × ⌈w / S⌉` times in a row across the
//! period boundary. The often quoted `⌈w / S⌉` does not hold: 2:2:11 yields
//! `c c a c b c c c c a …`, a run of 4 > ⌈11/4⌉ = 3, and 5:1:1 repeats as
//! `a a b a c a a | a a b …`, a run of 4 across the boundary, exactly as
//! nginx itself does.
//!
//! Unavailable endpoints: a pick walks forward from its slot to the first
//! available endpoint, at most [`MAX_WALK`] slots, and then advances the
//! shared cursor past the slots it skipped, so that the next pick does not
//! walk them again. Single-threaded, the available endpoints therefore keep
//! their exact relative proportions (each available slot is served once per
//! period). If the walk finds nothing (most of the weight is down), the pick
//! scans all endpoints from the current slot's endpoint, so `None` means
//! none is available.
//!
//! Races: concurrent picks each take a distinct cursor value, so over any
//! span the picks of all threads together follow the schedule, within one
//! slot per thread; the skip-ahead after a walk is best effort and may make
//! another thread's walk redundant, never wrong.

use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::time::Instant;

use super::{available, scan_available, Endpoint};

/// Largest schedule built from unscaled weights.
pub const MAX_SLOTS: usize = 1 << 16;
/// Longest walk over unavailable slots before scanning endpoints instead.
pub const MAX_WALK: usize = 1024;

/// The atomic cursor, alone on its cache line so that its traffic does not
/// evict the schedule's pointer (read by every pick on every core).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Cursor(AtomicUsize);

#[derive(Debug)]
enum Plan {
    /// Equal weights: slot `k` is endpoint `k`.
    Rotate(usize),
    /// One period of the smooth sequence, endpoint indices.
    Schedule(Box<[u32]>),
}

/// Smooth weighted round robin over a precomputed period.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    plan: Plan,
    cursor: Cursor,
}

impl RoundRobin {
    /// Builds the schedule for `weights` (each at least 1).
    pub(crate) fn new(weights: &[u32]) -> Self {
        RoundRobin {
            plan: plan(weights),
            cursor: Cursor::default(),
        }
    }

    /// Slots in one period.
    fn len(&self) -> usize {
        match &self.plan {
            Plan::Rotate(n) => *n,
            Plan::Schedule(s) => s.len(),
        }
    }

    #[inline]
    fn slot(&self, k: usize) -> usize {
        match &self.plan {
            Plan::Rotate(_) => k,
            Plan::Schedule(s) => s.get(k).map_or(usize::MAX, |&i| i as usize),
        }
    }

    #[inline]
    pub(crate) fn pick<E: Endpoint>(&self, endpoints: &[E], now: Instant) -> Option<usize> {
        let len = self.len();
        if len == 0 {
            return scan_available(endpoints, 0, None, now);
        }
        let start = self.cursor.0.fetch_add(1, Ordering::Relaxed) % len;
        let first = self.slot(start);
        if available(endpoints, first, now) {
            return Some(first);
        }
        self.walk(endpoints, start, now)
    }

    /// The slow path: `start`'s endpoint is unavailable.
    #[cold]
    fn walk<E: Endpoint>(&self, endpoints: &[E], start: usize, now: Instant) -> Option<usize> {
        let len = self.len();
        let mut k = start;
        for skipped in 1..len.min(MAX_WALK) {
            k += 1;
            if k == len {
                k = 0;
            }
            let i = self.slot(k);
            if available(endpoints, i, now) {
                self.cursor.0.fetch_add(skipped, Ordering::Relaxed);
                return Some(i);
            }
        }
        let from = self.slot(start).saturating_add(1);
        scan_available(endpoints, from, None, now)
    }
}

fn plan(weights: &[u32]) -> Plan {
    let n = weights.len();
    let first = weights.first().copied().unwrap_or(1);
    if weights.iter().all(|&w| w == first) || n > MAX_SLOTS || u32::try_from(n).is_err() {
        return Plan::Rotate(n);
    }
    let mut w: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
    reduce(&mut w);
    let total: u64 = w.iter().sum();
    if total > MAX_SLOTS as u64 {
        // Scale down; `max(1, …)` keeps every endpoint in the schedule.
        for x in &mut w {
            *x = (*x * MAX_SLOTS as u64 / total).max(1);
        }
        reduce(&mut w);
    }
    Plan::Schedule(smooth_schedule(&w).into_boxed_slice())
}

/// Divides all weights by their gcd.
fn reduce(w: &mut [u64]) {
    let g = w.iter().fold(0, |g, &x| gcd(g, x));
    if g > 1 {
        for x in w {
            *x /= g;
        }
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One period of nginx's smooth weighted round robin.
///
/// After `t` rounds an endpoint of weight `w` picked `k` times has
/// `current = t·w − W·k`, so the state is the pick counts alone. Endpoints
/// of equal weight are picked in index order within their class (lowest
/// `k` first, then lowest index: nginx's first-on-tie), so each round only
/// compares one candidate per distinct weight.
fn smooth_schedule(weights: &[u64]) -> Vec<u32> {
    struct Class {
        weight: i64,
        /// Member indices, ascending.
        members: Vec<u32>,
        /// Full passes over `members` so far (the `k` of the next member).
        passes: i64,
        /// Position of the next member.
        next: usize,
    }
    let total: u64 = weights.iter().sum();
    let big_w = i64::try_from(total).unwrap_or(i64::MAX);
    let mut by_weight: std::collections::BTreeMap<u64, Vec<u32>> = Default::default();
    for (i, &w) in weights.iter().enumerate() {
        // `plan` guarantees the index fits in u32.
        by_weight
            .entry(w)
            .or_default()
            .push(u32::try_from(i).unwrap_or(u32::MAX));
    }
    let mut classes: Vec<Class> = by_weight
        .into_iter()
        .map(|(w, members)| Class {
            weight: i64::try_from(w).unwrap_or(i64::MAX),
            members,
            passes: 0,
            next: 0,
        })
        .collect();
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for t in 1..=big_w {
        // (current, index) of the best candidate so far.
        let mut best: Option<(i64, u32, usize)> = None;
        for (c, class) in classes.iter().enumerate() {
            let Some(&idx) = class.members.get(class.next) else {
                continue;
            };
            let current = t * class.weight - big_w * class.passes;
            let better = match best {
                None => true,
                Some((bc, bi, _)) => current > bc || (current == bc && idx < bi),
            };
            if better {
                best = Some((current, idx, c));
            }
        }
        let Some((_, idx, c)) = best else { break };
        out.push(idx);
        if let Some(class) = classes.get_mut(c) {
            class.next += 1;
            if class.next == class.members.len() {
                class.next = 0;
                class.passes += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::super::testutil::*;
    use super::super::{Algorithm, Selector};
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    /// nginx's algorithm verbatim, for reference.
    fn nginx(weights: &[u64], rounds: usize) -> Vec<u32> {
        let total: i64 = weights.iter().map(|&w| w as i64).sum();
        let mut current = vec![0i64; weights.len()];
        let mut out = Vec::new();
        for _ in 0..rounds {
            let mut best: Option<usize> = None;
            for (i, &w) in weights.iter().enumerate() {
                current[i] += w as i64;
                if best.is_none_or(|b| current[i] > current[b]) {
                    best = Some(i);
                }
            }
            let b = best.unwrap();
            current[b] -= total;
            out.push(b as u32);
        }
        out
    }

    fn schedule_of(weights: &[u32]) -> Vec<u32> {
        let rr = RoundRobin::new(weights);
        match &rr.plan {
            Plan::Rotate(n) => (0..*n as u32).collect(),
            Plan::Schedule(s) => s.to_vec(),
        }
    }

    fn picks(weights: &[u32], count: usize) -> Vec<usize> {
        let v = eps(weights);
        let s = Selector::new(Algorithm::RoundRobin, &v);
        let now = Instant::now();
        (0..count).map(|_| s.pick(&v, now).unwrap()).collect()
    }

    /// Longest run of `i`, within the sequence or cyclically.
    fn max_run(seq: &[u32], i: u32, cyclic: bool) -> usize {
        let doubled: Vec<u32> = if cyclic {
            seq.iter().chain(seq).copied().collect()
        } else {
            seq.to_vec()
        };
        let (mut best, mut cur) = (0, 0);
        for &x in &doubled {
            cur = if x == i { cur + 1 } else { 0 };
            best = best.max(cur);
        }
        best.min(seq.len())
    }

    #[test]
    fn nginx_5_1_1() {
        let names: String = picks(&[5, 1, 1], 14)
            .iter()
            .map(|&i| ['a', 'b', 'c'][i])
            .collect();
        assert_eq!(names, "aabacaaaabacaa");
    }

    #[test]
    fn gcd_reduced_same_sequence() {
        assert_eq!(schedule_of(&[10, 2, 2]), schedule_of(&[5, 1, 1]));
        assert_eq!(schedule_of(&[10, 2, 2]).len(), 7);
    }

    #[test]
    fn equal_weights_rotate() {
        assert_eq!(picks(&[1, 1, 1], 7), vec![0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(picks(&[4, 4, 4], 4), vec![0, 1, 2, 0]);
    }

    #[test]
    fn folklore_bound_counterexample() {
        // ⌈w/S⌉ = 3 for c, but nginx's sequence has a run of 4.
        let s = schedule_of(&[2, 2, 11]);
        assert_eq!(s, nginx(&[2, 2, 11], 15));
        assert_eq!(max_run(&s, 2, false), 4);
    }

    #[test]
    fn skips_unavailable_keeping_proportions() {
        let v = eps_masked(&[5, 1, 1], &[false, true, true]);
        let s = Selector::new(Algorithm::RoundRobin, &v);
        let now = Instant::now();
        let got: Vec<usize> = (0..6).map(|_| s.pick(&v, now).unwrap()).collect();
        assert_eq!(got, vec![1, 2, 1, 2, 1, 2]);
    }

    #[test]
    fn all_down_is_none() {
        let v = eps_masked(&[5, 1, 1], &[false, false, false]);
        let s = Selector::new(Algorithm::RoundRobin, &v);
        assert_eq!(s.pick(&v, Instant::now()), None);
    }

    #[test]
    fn huge_weights_scale_down() {
        let weights = [1_000_000u32, 3, 1];
        let s = schedule_of(&weights);
        assert!(s.len() <= 2 * MAX_SLOTS, "{}", s.len());
        for i in 0..3u32 {
            assert!(s.contains(&i));
        }
        let heavy = s.iter().filter(|&&i| i == 0).count() as f64 / s.len() as f64;
        assert!((heavy - 1_000_000.0 / 1_000_004.0).abs() < 1e-4);
        // Large but under the limit: exact.
        let s = schedule_of(&[40_000, 20_001, 3]);
        assert_eq!(s.len(), 60_004);
        assert_eq!(s.iter().filter(|&&i| i == 1).count(), 20_001);
    }

    #[test]
    fn walk_limit_falls_back_to_scan() {
        // a's runs are far longer than MAX_WALK.
        let v = eps_masked(&[100_000, 1, 1], &[false, true, true]);
        let s = Selector::new(Algorithm::RoundRobin, &v);
        let now = Instant::now();
        for _ in 0..100 {
            assert!(matches!(s.pick(&v, now), Some(1 | 2)));
        }
    }

    #[test]
    fn concurrent_picks_stay_exact() {
        let v = Arc::new(eps(&[5, 3, 1, 1]));
        let s = Arc::new(Selector::new(Algorithm::RoundRobin, &v[..]));
        let period = 10;
        let per_thread = 10_000 * period;
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (v, s) = (v.clone(), s.clone());
                std::thread::spawn(move || {
                    let mut counts = [0usize; 4];
                    for _ in 0..per_thread {
                        counts[s.pick(&v[..], Instant::now()).unwrap()] += 1;
                    }
                    counts
                })
            })
            .collect();
        let mut total = [0usize; 4];
        for t in threads {
            for (a, b) in total.iter_mut().zip(t.join().unwrap()) {
                *a += b;
            }
        }
        // 2 × per_thread picks are whole periods: exact, since every pick
        // took a distinct cursor value.
        let cycles = 2 * per_thread / period;
        assert_eq!(total, [5 * cycles, 3 * cycles, cycles, cycles]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// The class-based builder reproduces nginx exactly (gcd-reduced).
        #[test]
        fn matches_nginx(weights in prop::collection::vec(1u32..=20, 1..=16)) {
            let mut w: Vec<u64> = weights.iter().map(|&x| x as u64).collect();
            reduce(&mut w);
            let total = w.iter().sum::<u64>() as usize;
            let got = schedule_of(&weights);
            prop_assert_eq!(got.len(), total);
            prop_assert_eq!(got, nginx(&w, total));
        }

        /// Exact proportions over any whole period (from any offset), and
        /// the run-length bounds stated in the module doc.
        #[test]
        fn proportions_and_runs(
            weights in prop::collection::vec(1u32..=20, 1..=16),
            offset in 0usize..400,
        ) {
            let mut w: Vec<u64> = weights.iter().map(|&x| x as u64).collect();
            reduce(&mut w);
            let period = w.iter().sum::<u64>() as usize;
            let seq = picks(&weights, offset + period);
            let mut counts = vec![0u64; w.len()];
            for &i in &seq[offset..] {
                counts[i] += 1;
            }
            prop_assert_eq!(&counts, &w);
            let sched = schedule_of(&weights);
            let total: u64 = w.iter().sum();
            for (i, &wi) in w.iter().enumerate() {
                if wi == total {
                    continue;
                }
                let bound = wi.div_ceil(total - wi) as usize;
                prop_assert!(max_run(&sched, i as u32, false) <= bound + 1);
                prop_assert!(max_run(&sched, i as u32, true) <= 2 * bound);
            }
        }

        /// With a random availability mask, one pass over the period serves
        /// each available endpoint exactly its weight.
        #[test]
        fn proportions_with_mask(
            spec in prop::collection::vec((1u32..=20, any::<bool>()), 1..=16),
        ) {
            let weights: Vec<u32> = spec.iter().map(|s| s.0).collect();
            let up: Vec<bool> = spec.iter().map(|s| s.1).collect();
            let mut w: Vec<u64> = weights.iter().map(|&x| x as u64).collect();
            reduce(&mut w);
            let v = eps_masked(&weights, &up);
            let s = Selector::new(Algorithm::RoundRobin, &v);
            let now = Instant::now();
            let expect: Vec<u64> = w.iter().zip(&up).map(|(&w, &u)| if u { w } else { 0 }).collect();
            let n_picks: u64 = expect.iter().sum();
            let mut counts = vec![0u64; w.len()];
            for _ in 0..n_picks {
                counts[s.pick(&v, now).unwrap()] += 1;
            }
            prop_assert_eq!(counts, expect);
        }
    }
}
