//! How much does the choice of algorithm matter when endpoints are slow in
//! very different ways?
//!
//! A discrete-event simulation in the spirit of tower's
//! `examples/tower-balance.rs`: ten endpoints whose base latencies range
//! geometrically from 1 ms to 1 s, a fixed concurrency of clients that send
//! their next request as soon as the previous one completes (closed loop),
//! and simulated time: no sleeps, no threads, the whole run takes a moment.
//! Each endpoint slows down with its own load, `latency = base × jitter ×
//! (1 + in_flight / 8)` with `jitter` in `[0.5, ∞)` of mean 1, so piling
//! requests onto one endpoint has a price.
//!
//! For each algorithm it prints the latency percentiles seen by clients,
//! the resulting throughput (with a fixed concurrency, lower latency means
//! more requests per second) and the share of requests that went to the
//! slowest endpoint. Runs are seeded, so the output is reproducible.
//!
//! Run with `cargo bench --bench balance_sim`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;
use tokio::time::Instant;

use weir::balance::{Algorithm, Endpoint, EndpointLoad, LoadMetric, Selector, SelectorOptions};

const ENDPOINTS: usize = 10;
const CONCURRENCY: usize = 64;
const REQUESTS: usize = 200_000;
/// Load at which an endpoint's latency has doubled.
const SATURATION: f64 = 8.0;

struct Ep {
    base: Duration,
    load: EndpointLoad,
}

impl Endpoint for Ep {
    fn weight(&self) -> u32 {
        1
    }
    fn load(&self) -> &EndpointLoad {
        &self.load
    }
    fn is_available(&self, _now: Instant) -> bool {
        true
    }
}

struct Outcome {
    /// Client-seen latencies, sorted, nanoseconds.
    latencies: Vec<u64>,
    /// Simulated seconds to complete all requests.
    elapsed_s: f64,
    /// Requests sent to the slowest endpoint.
    to_slowest: usize,
}

fn simulate(algorithm: Algorithm, load: LoadMetric) -> Outcome {
    fastrand::seed(7);
    let endpoints: Vec<Ep> = (0..ENDPOINTS)
        .map(|i| {
            // 1 ms × 1000^(i/9): 1 ms, 2.2 ms, 4.6 ms, … 1 s.
            let ms = 1000f64.powf(i as f64 / (ENDPOINTS - 1) as f64);
            Ep {
                base: Duration::from_secs_f64(ms / 1e3),
                load: EndpointLoad::new(),
            }
        })
        .collect();
    let selector = Selector::with_options(
        SelectorOptions {
            algorithm,
            load,
            ..SelectorOptions::default()
        },
        &endpoints,
    );
    // Simulated time is an offset from this instant.
    let epoch = Instant::now();
    // (completion ns, sequence, endpoint, start ns)
    let mut events: BinaryHeap<Reverse<(u64, u64, usize, u64)>> = BinaryHeap::new();
    let mut latencies = Vec::with_capacity(REQUESTS);
    let mut sent = 0usize;
    let mut to_slowest = 0usize;
    let mut now_ns = 0u64;

    let mut send = |now_ns: u64, events: &mut BinaryHeap<_>, sent: &mut usize| {
        let now = epoch + Duration::from_nanos(now_ns);
        let i = selector.pick(&endpoints, now).unwrap();
        let ep = &endpoints[i];
        let queued = f64::from(ep.load.in_flight());
        ep.load.start();
        let jitter = 0.5 + 0.5 * -(1.0 - fastrand::f64()).ln();
        let latency = ep.base.as_secs_f64() * 1e9 * jitter * (1.0 + queued / SATURATION);
        events.push(Reverse((now_ns + latency as u64, *sent as u64, i, now_ns)));
        *sent += 1;
        if i == ENDPOINTS - 1 {
            to_slowest += 1;
        }
    };

    for _ in 0..CONCURRENCY {
        send(0, &mut events, &mut sent);
    }
    while let Some(Reverse((done_ns, _, i, start_ns))) = events.pop() {
        now_ns = done_ns;
        let rtt = Duration::from_nanos(done_ns - start_ns);
        endpoints[i]
            .load
            .finish(Some(rtt), epoch + Duration::from_nanos(done_ns));
        latencies.push(done_ns - start_ns);
        if sent < REQUESTS {
            send(now_ns, &mut events, &mut sent);
        }
    }
    latencies.sort_unstable();
    Outcome {
        latencies,
        elapsed_s: now_ns as f64 / 1e9,
        to_slowest,
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

fn ms(ns: u64) -> String {
    format!("{:.1} ms", ns as f64 / 1e6)
}

fn main() {
    // `cargo bench` passes `--bench`; there are no options to parse.
    let cases = [
        ("rr", Algorithm::RoundRobin, LoadMetric::InFlight),
        ("lc", Algorithm::LeastConnections, LoadMetric::InFlight),
        ("lc+ewma", Algorithm::LeastConnections, LoadMetric::PeakEwma),
        ("p2c", Algorithm::PowerOfTwoChoices, LoadMetric::InFlight),
        (
            "p2c+ewma",
            Algorithm::PowerOfTwoChoices,
            LoadMetric::PeakEwma,
        ),
    ];
    let wall = Instant::now();
    let outcomes: Vec<(&str, Outcome)> = cases
        .iter()
        .map(|&(name, a, l)| (name, simulate(a, l)))
        .collect();

    println!(
        "{ENDPOINTS} endpoints (base latency 1 ms .. 1 s, geometric), \
         {CONCURRENCY} concurrent clients, {REQUESTS} requests, simulated time\n"
    );
    print!("{:<12}", "");
    for (name, _) in &outcomes {
        print!("{name:>12}");
    }
    println!();
    type Row = fn(&Outcome) -> String;
    let rows: [(&str, Row); 8] = [
        ("p50", |o| ms(percentile(&o.latencies, 0.50))),
        ("p90", |o| ms(percentile(&o.latencies, 0.90))),
        ("p99", |o| ms(percentile(&o.latencies, 0.99))),
        ("p99.9", |o| ms(percentile(&o.latencies, 0.999))),
        ("max", |o| ms(*o.latencies.last().unwrap())),
        ("mean", |o| {
            ms(o.latencies.iter().sum::<u64>() / o.latencies.len() as u64)
        }),
        ("req/s", |o| {
            format!("{:.0}", o.latencies.len() as f64 / o.elapsed_s)
        }),
        ("to 1s ep", |o| {
            format!(
                "{:.2}%",
                100.0 * o.to_slowest as f64 / o.latencies.len() as f64
            )
        }),
    ];
    for (label, f) in rows {
        print!("{label:<12}");
        for (_, o) in &outcomes {
            print!("{:>12}", f(o));
        }
        println!();
    }
    println!("\n(wall time {:.2?})", wall.elapsed());
}
