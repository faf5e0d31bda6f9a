//! What does one `Selector::pick` cost, per algorithm and pool size, alone
//! and with a second thread picking from the same selector at the same time?
//!
//! Algorithms: smooth weighted round robin (`rr`), least connections (`lc`),
//! power of two choices on in-flight (`p2c`) and on peak-EWMA cost
//! (`p2c_ewma`); pools of 3, 32 and 1024 endpoints with mixed weights (so
//! round robin runs its precomputed schedule and P2C its weighted table,
//! not their equal-weight fast paths), all available, some requests in
//! flight and latency samples recorded.
//!
//! The `2threads` group times the picks of one thread while another thread
//! picks from the same selector in a tight loop: the cost of sharing the
//! round-robin cursor and the endpoints' cache lines.
//!
//! Targets: `rr` and `p2c` ≤ 50 ns/pick at 1024 endpoints, `lc` ≤ 2 µs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::Duration;
use tokio::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use weir::balance::{Algorithm, Endpoint, EndpointLoad, LoadMetric, Selector, SelectorOptions};

struct Ep {
    weight: u32,
    load: EndpointLoad,
}

impl Endpoint for Ep {
    fn weight(&self) -> u32 {
        self.weight
    }
    fn load(&self) -> &EndpointLoad {
        &self.load
    }
    fn is_available(&self, _now: Instant) -> bool {
        true
    }
}

fn pool(n: usize) -> Vec<Ep> {
    let now = Instant::now();
    (0..n)
        .map(|i| {
            let ep = Ep {
                weight: 1 + (i % 4) as u32,
                load: EndpointLoad::new(),
            };
            // One sample each for peak-EWMA, then some requests in flight.
            ep.load.start();
            ep.load.finish(
                Some(Duration::from_micros(500 + (i as u64 * 37) % 5000)),
                now,
            );
            for _ in 0..i % 7 {
                ep.load.start();
            }
            ep
        })
        .collect()
}

const CASES: [(&str, Algorithm, LoadMetric); 4] = [
    ("rr", Algorithm::RoundRobin, LoadMetric::InFlight),
    ("lc", Algorithm::LeastConnections, LoadMetric::InFlight),
    ("p2c", Algorithm::PowerOfTwoChoices, LoadMetric::InFlight),
    (
        "p2c_ewma",
        Algorithm::PowerOfTwoChoices,
        LoadMetric::PeakEwma,
    ),
];

const SIZES: [usize; 3] = [3, 32, 1024];

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

fn single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_1thread");
    for n in SIZES {
        let eps = pool(n);
        let now = Instant::now();
        for (name, algorithm, load) in CASES {
            let sel = selector(algorithm, load, &eps);
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| black_box(sel.pick(black_box(&eps), now)));
            });
        }
    }
    group.finish();
}

fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_2threads");
    for n in SIZES {
        let eps = pool(n);
        let now = Instant::now();
        for (name, algorithm, load) in CASES {
            let sel = selector(algorithm, load, &eps);
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter_custom(|iters| {
                    let stop = AtomicBool::new(false);
                    let started = Barrier::new(2);
                    std::thread::scope(|s| {
                        s.spawn(|| {
                            started.wait();
                            while !stop.load(Ordering::Relaxed) {
                                for _ in 0..64 {
                                    black_box(sel.pick(black_box(&eps), now));
                                }
                            }
                        });
                        started.wait();
                        let t = Instant::now();
                        for _ in 0..iters {
                            black_box(sel.pick(black_box(&eps), now));
                        }
                        let elapsed = t.elapsed();
                        stop.store(true, Ordering::Relaxed);
                        elapsed
                    })
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, single_thread, two_threads);
criterion_main!(benches);
