//! Endpoint selection: which endpoint of a pool gets the next request.
//!
//! This module is pure: no IO, no tokio, no locks. Selectors read the
//! endpoints through the [`Endpoint`] trait, which `upstream::Backend`
//! implements, so they can be unit-tested, property-tested and benched with
//! plain structs. `now` is always passed in.
//!
//! A [`Selector`] is built for one immutable endpoint list (the pool's
//! `BackendSet`) and rebuilt by the control plane whenever that list or its
//! weights change, so per-set precomputation (the smooth round-robin
//! schedule, the weighted sampling table) costs nothing per request.
//!
//! Algorithms ([`Algorithm`]):
//!
//! * round robin: nginx's smooth weighted round robin, precomputed
//!   (`round_robin.rs`);
//! * least connections: lowest load over all available endpoints
//!   (`least_conn.rs`);
//! * power of two choices: the lighter of two distinct weighted samples
//!   (Mitzenmacher; `p2c.rs`).
//!
//! The two load-aware algorithms measure load per [`LoadMetric`]:
//! `in_flight / weight`, or the peak-EWMA cost of Finagle / linkerd2-proxy /
//! tower (`ewma.rs`) divided by weight. Least connections reads weights live
//! from the endpoints; round robin and P2C precompute from the weights seen
//! at build time.
//!
//! Contract of [`Selector::pick`]:
//!
//! * it returns the index of an endpoint that was available when checked,
//!   and `None` only when no endpoint is available (or the list is empty);
//! * availability may change at any moment (health checks): each endpoint is
//!   checked at most a bounded number of times per pick, and an endpoint that
//!   turns unavailable just after being checked may still be returned;
//! * it takes `&self`, allocates nothing, takes no lock: many threads pick
//!   from one shared selector at once. Shared state is one atomic cursor
//!   (round robin) and the endpoints' own atomics; randomness is fastrand's
//!   thread-local generator;
//! * `endpoints` must be the list the selector was built for. Passing
//!   another list is a logic error that yields poor choices but never a
//!   panic or an out-of-range index.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

mod ewma;
mod least_conn;
mod p2c;
mod round_robin;

pub use ewma::{DEFAULT_DECAY, DEFAULT_RTT};

/// What a selector needs to know about one endpoint.
pub trait Endpoint {
    /// Relative weight, at least 1 (0 is treated as 1).
    fn weight(&self) -> u32;
    /// In-flight counter and latency estimate, maintained by the request path.
    fn load(&self) -> &EndpointLoad;
    /// Whether the endpoint may receive traffic at `now` (health verdict and
    /// not ejected).
    fn is_available(&self, now: Instant) -> bool;
}

impl<T: Endpoint + ?Sized> Endpoint for Arc<T> {
    #[inline]
    fn weight(&self) -> u32 {
        (**self).weight()
    }
    #[inline]
    fn load(&self) -> &EndpointLoad {
        (**self).load()
    }
    #[inline]
    fn is_available(&self, now: Instant) -> bool {
        (**self).is_available(now)
    }
}

impl<T: Endpoint + ?Sized> Endpoint for &T {
    #[inline]
    fn weight(&self) -> u32 {
        (**self).weight()
    }
    #[inline]
    fn load(&self) -> &EndpointLoad {
        (**self).load()
    }
    #[inline]
    fn is_available(&self, now: Instant) -> bool {
        (**self).is_available(now)
    }
}

/// The load an endpoint carries, shared by every selector.
///
/// `in_flight` counts requests whose response body has not finished yet. It
/// is changed only through [`EndpointLoad::start`] / [`EndpointLoad::finish`],
/// which the request path calls from an RAII lease, so it cannot leak.
///
/// It also keeps the endpoint's peak-EWMA latency estimate (see
/// [`LoadMetric::PeakEwma`]), fed by the `rtt` given to `finish`. All state
/// is atomics; concurrent `finish` calls may lose a latency sample but never
/// corrupt the estimate.
#[derive(Debug)]
pub struct EndpointLoad {
    in_flight: AtomicU32,
    ewma: ewma::PeakEwma,
}

impl Default for EndpointLoad {
    fn default() -> Self {
        Self::new()
    }
}

impl EndpointLoad {
    /// No load, peak-EWMA at [`DEFAULT_RTT`] with [`DEFAULT_DECAY`]. A
    /// [`Selector`] built with [`LoadMetric::PeakEwma`] sets its own
    /// parameters on the loads of its endpoints.
    pub fn new() -> Self {
        Self::with_peak_ewma(DEFAULT_RTT, DEFAULT_DECAY)
    }

    /// No load, peak-EWMA starting at `default_rtt` and decaying over
    /// `decay`.
    pub fn with_peak_ewma(default_rtt: Duration, decay: Duration) -> Self {
        EndpointLoad {
            in_flight: AtomicU32::new(0),
            ewma: ewma::PeakEwma::new(default_rtt, decay),
        }
    }

    /// Changes the peak-EWMA parameters, keeping the current estimate.
    pub fn configure_peak_ewma(&self, default_rtt: Duration, decay: Duration) {
        self.ewma.configure(default_rtt, decay);
    }

    /// Current number of requests in flight.
    #[inline]
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A request to this endpoint started.
    #[inline]
    pub fn start(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request to this endpoint finished (its response body ended or was
    /// dropped). `rtt` is the time to response headers, if any arrived; it
    /// feeds the peak-EWMA estimate, with `now` the time it was measured.
    pub fn finish(&self, rtt: Option<Duration>, now: Instant) {
        if let Some(rtt) = rtt {
            self.ewma.observe(rtt, now);
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// The peak-EWMA latency estimate at `now` (decayed since the last
    /// sample), for metrics and debugging.
    pub fn peak_ewma(&self, now: Instant) -> Duration {
        Duration::try_from_secs_f64(self.ewma.estimate_ns(now).max(0.0) / 1e9)
            .unwrap_or(Duration::MAX)
    }

    /// Peak-EWMA cost in nanoseconds: `estimate × (in_flight + 1)`.
    #[inline]
    fn ewma_cost(&self, now: Instant) -> f64 {
        self.ewma.estimate_ns(now) * (f64::from(self.in_flight()) + 1.0)
    }
}

/// Selection algorithm named by a pool's `balance:` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// Smooth weighted round robin (nginx).
    #[default]
    RoundRobin,
    /// Lowest load (per [`LoadMetric`]) over all available endpoints.
    LeastConnections,
    /// Two distinct weighted samples, the less loaded wins.
    PowerOfTwoChoices,
}

/// How the load-aware algorithms measure an endpoint's load. Round robin
/// ignores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoadMetric {
    /// `in_flight / weight`.
    #[default]
    InFlight,
    /// Peak-EWMA latency × (in_flight + 1), divided by weight.
    PeakEwma,
}

/// Everything a [`Selector`] is built from besides the endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorOptions {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Load measure of least connections and P2C.
    pub load: LoadMetric,
    /// Peak-EWMA latency assumed for an endpoint with no sample yet.
    pub default_rtt: Duration,
    /// Peak-EWMA decay window (time constant of the moving average).
    pub decay: Duration,
}

impl Default for SelectorOptions {
    /// Round robin, in-flight load, linkerd2-proxy's peak-EWMA defaults
    /// (30 ms, 10 s).
    fn default() -> Self {
        SelectorOptions {
            algorithm: Algorithm::default(),
            load: LoadMetric::default(),
            default_rtt: DEFAULT_RTT,
            decay: DEFAULT_DECAY,
        }
    }
}

/// Picks an endpoint index from the set it was built for.
#[derive(Debug)]
pub struct Selector {
    inner: Inner,
}

// Round robin's cursor is padded to its own cache line on purpose; one
// selector exists per endpoint set, so the enum's size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Inner {
    RoundRobin(round_robin::RoundRobin),
    LeastConnections(LoadMetric),
    PowerOfTwoChoices(p2c::P2c),
}

impl Selector {
    /// Builds the selector for `endpoints` with default options but
    /// `algorithm`.
    pub fn new<E: Endpoint>(algorithm: Algorithm, endpoints: &[E]) -> Self {
        Self::with_options(
            SelectorOptions {
                algorithm,
                ..SelectorOptions::default()
            },
            endpoints,
        )
    }

    /// Builds the selector for `endpoints`; their weights are read once
    /// here. With a load-aware algorithm and [`LoadMetric::PeakEwma`], this
    /// also sets `default_rtt` and `decay` on each endpoint's
    /// [`EndpointLoad`], which applies them when recording samples.
    pub fn with_options<E: Endpoint>(options: SelectorOptions, endpoints: &[E]) -> Self {
        let inner = match options.algorithm {
            Algorithm::RoundRobin => {
                Inner::RoundRobin(round_robin::RoundRobin::new(&weights_of(endpoints)))
            }
            Algorithm::LeastConnections => Inner::LeastConnections(options.load),
            Algorithm::PowerOfTwoChoices => {
                Inner::PowerOfTwoChoices(p2c::P2c::new(&weights_of(endpoints), options.load))
            }
        };
        if options.load == LoadMetric::PeakEwma && options.algorithm != Algorithm::RoundRobin {
            for e in endpoints {
                e.load()
                    .configure_peak_ewma(options.default_rtt, options.decay);
            }
        }
        Selector { inner }
    }

    /// Index of an available endpoint, or `None` when none is available.
    #[inline]
    pub fn pick<E: Endpoint>(&self, endpoints: &[E], now: Instant) -> Option<usize> {
        match &self.inner {
            Inner::RoundRobin(rr) => rr.pick(endpoints, now),
            Inner::LeastConnections(metric) => least_conn::pick(endpoints, *metric, now),
            Inner::PowerOfTwoChoices(p2c) => p2c.pick(endpoints, now),
        }
    }
}

/// Weights as read at build time, 0 raised to 1.
fn weights_of<E: Endpoint>(endpoints: &[E]) -> Vec<u32> {
    endpoints.iter().map(|e| e.weight().max(1)).collect()
}

/// Whether `endpoints[i]` exists and is available.
#[inline]
fn available<E: Endpoint>(endpoints: &[E], i: usize, now: Instant) -> bool {
    endpoints.get(i).is_some_and(|e| e.is_available(now))
}

/// First available endpoint scanning cyclically from `start`, skipping
/// `skip`: the exhaustive fallback that makes `None` mean "none available".
fn scan_available<E: Endpoint>(
    endpoints: &[E],
    start: usize,
    skip: Option<usize>,
    now: Instant,
) -> Option<usize> {
    let n = endpoints.len();
    let start = if n == 0 { 0 } else { start % n };
    (start..n)
        .chain(0..start)
        .find(|&i| Some(i) != skip && available(endpoints, i, now))
}

/// A load value comparable across endpoints of different weights.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// `in_flight / weight`, kept as a fraction.
    Conns { in_flight: u64, weight: u64 },
    /// Peak-EWMA cost (ns) / weight.
    Cost(f64),
}

impl Load {
    #[inline]
    fn of<E: Endpoint>(e: &E, metric: LoadMetric, now: Instant) -> Load {
        let weight = e.weight().max(1);
        match metric {
            LoadMetric::InFlight => Load::Conns {
                in_flight: u64::from(e.load().in_flight()),
                weight: u64::from(weight),
            },
            LoadMetric::PeakEwma => Load::Cost(e.load().ewma_cost(now) / f64::from(weight)),
        }
    }

    /// Strictly lighter than `other`. Both come from the same metric; a
    /// mix (impossible) compares as "not lighter".
    #[inline]
    fn lighter_than(self, other: Load) -> bool {
        match (self, other) {
            // a/wa < b/wb  ⇔  a·wb < b·wa (u32·u32 fits in u64).
            (
                Load::Conns {
                    in_flight: a,
                    weight: wa,
                },
                Load::Conns {
                    in_flight: b,
                    weight: wb,
                },
            ) => a * wb < b * wa,
            (Load::Cost(a), Load::Cost(b)) => a < b,
            _ => false,
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A plain endpoint for tests.
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[derive(Debug, Default)]
    pub struct Ep {
        pub weight: u32,
        pub load: EndpointLoad,
        pub up: AtomicBool,
    }

    impl Ep {
        pub fn new(weight: u32) -> Self {
            Ep {
                weight,
                load: EndpointLoad::new(),
                up: AtomicBool::new(true),
            }
        }
        pub fn set_up(&self, up: bool) {
            self.up.store(up, Ordering::Relaxed);
        }
        pub fn set_in_flight(&self, n: u32) {
            self.load.in_flight.store(n, Ordering::Relaxed);
        }
    }

    impl Endpoint for Ep {
        fn weight(&self) -> u32 {
            self.weight
        }
        fn load(&self) -> &EndpointLoad {
            &self.load
        }
        fn is_available(&self, _now: Instant) -> bool {
            self.up.load(Ordering::Relaxed)
        }
    }

    pub fn eps(weights: &[u32]) -> Vec<Ep> {
        weights.iter().map(|&w| Ep::new(w)).collect()
    }

    pub fn eps_masked(weights: &[u32], up: &[bool]) -> Vec<Ep> {
        let v = eps(weights);
        for (e, &u) in v.iter().zip(up) {
            e.set_up(u);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    const ALL: [(Algorithm, LoadMetric); 5] = [
        (Algorithm::RoundRobin, LoadMetric::InFlight),
        (Algorithm::LeastConnections, LoadMetric::InFlight),
        (Algorithm::LeastConnections, LoadMetric::PeakEwma),
        (Algorithm::PowerOfTwoChoices, LoadMetric::InFlight),
        (Algorithm::PowerOfTwoChoices, LoadMetric::PeakEwma),
    ];

    fn selector(algorithm: Algorithm, load: LoadMetric, eps: &[Ep]) -> Selector {
        Selector::with_options(
            SelectorOptions {
                algorithm,
                load,
                ..SelectorOptions::default()
            },
            eps,
        )
    }

    #[test]
    fn empty_set_gives_none() {
        let eps: Vec<Ep> = Vec::new();
        for (a, l) in ALL {
            assert_eq!(selector(a, l, &eps).pick(&eps, Instant::now()), None);
        }
    }

    #[test]
    fn works_through_arc() {
        let eps: Vec<Arc<Ep>> = (1..=3).map(|w| Arc::new(Ep::new(w))).collect();
        let s = Selector::new(Algorithm::PowerOfTwoChoices, &eps);
        assert!(s.pick(&eps, Instant::now()).is_some());
    }

    #[test]
    fn wrong_list_never_panics() {
        let built = eps(&[5, 1, 1]);
        let other = eps(&[1, 2]);
        let big = eps(&[1; 9]);
        for (a, l) in ALL {
            let s = selector(a, l, &built);
            for _ in 0..50 {
                let i = s.pick(&other, Instant::now()).unwrap();
                assert!(i < other.len());
                let i = s.pick(&big, Instant::now()).unwrap();
                assert!(i < big.len());
            }
        }
    }

    #[test]
    fn peak_ewma_options_reach_the_loads() {
        let v = eps(&[1, 1]);
        let _ = Selector::with_options(
            SelectorOptions {
                algorithm: Algorithm::PowerOfTwoChoices,
                load: LoadMetric::PeakEwma,
                default_rtt: Duration::from_millis(7),
                decay: Duration::from_secs(1),
            },
            &v,
        );
        let rtt = v[0].load.peak_ewma(Instant::now());
        assert!(rtt <= Duration::from_millis(7) && rtt > Duration::from_millis(6));
    }

    #[test]
    fn load_compares_by_ratio() {
        let c = |in_flight, weight| Load::Conns { in_flight, weight };
        assert!(c(1, 2).lighter_than(c(1, 1)));
        assert!(!c(2, 2).lighter_than(c(1, 1)));
        assert!(c(3, 4).lighter_than(c(1, 1)));
        assert!(c(0, 1).lighter_than(c(1, 20)));
        assert!(!Load::Cost(1.0).lighter_than(c(5, 1)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Never an unavailable endpoint; `None` exactly when none is
        /// available; with random in-flight counts.
        #[test]
        fn picks_only_available(
            spec in prop::collection::vec((1u32..=20, any::<bool>(), 0u32..5), 1..=16),
            picks in 1usize..200,
        ) {
            let weights: Vec<u32> = spec.iter().map(|s| s.0).collect();
            let up: Vec<bool> = spec.iter().map(|s| s.1).collect();
            let v = eps_masked(&weights, &up);
            for (e, s) in v.iter().zip(&spec) {
                e.set_in_flight(s.2);
            }
            let any_up = up.iter().any(|&u| u);
            let now = Instant::now();
            for (a, l) in ALL {
                let s = selector(a, l, &v);
                for _ in 0..picks {
                    match s.pick(&v, now) {
                        Some(i) => prop_assert!(up[i], "{a:?}/{l:?} picked down {i}"),
                        None => prop_assert!(!any_up, "{a:?}/{l:?} gave None"),
                    }
                }
            }
        }

        /// Availability flipping between picks (health checks) keeps the
        /// contract.
        #[test]
        fn availability_changes_between_picks(
            weights in prop::collection::vec(1u32..=20, 1..=16),
            masks in prop::collection::vec(prop::collection::vec(any::<bool>(), 16), 1..20),
        ) {
            let v = eps(&weights);
            let now = Instant::now();
            for (a, l) in ALL {
                let s = selector(a, l, &v);
                for mask in &masks {
                    for (e, &u) in v.iter().zip(mask) {
                        e.set_up(u);
                    }
                    let any_up = v.iter().any(|e| e.is_available(now));
                    for _ in 0..10 {
                        match s.pick(&v, now) {
                            Some(i) => prop_assert!(v[i].is_available(now)),
                            None => prop_assert!(!any_up),
                        }
                    }
                }
            }
        }
    }
}
