//! What do metrics cost per request?
//!
//! Replays exactly the recording a proxied request performs on the hot path
//! (route counter by method and status class, pool duration histogram and
//! byte counters, endpoint pick counter, status-class counter and
//! response-time histogram) against handles resolved the way weir resolves
//! them, single-threaded and with two threads recording into the same
//! series. Compare the result with the CPU time weir spends per request
//! (see `benches/README.md`) to get the share metrics take.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use tokio::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, StatusCode};
use weir::metrics::{self, Metrics};

fn record(c: &mut Criterion) {
    let m = Metrics::new().unwrap();
    let route = m.route("web", "web");
    let pool = m.pool("web");
    let ep = m.endpoint("web", "10.0.0.1:8080", true);
    let one = |i: u64| {
        ep.picks.inc();
        ep.request(metrics::status_class(StatusCode::OK));
        if let Some(h) = &ep.response_time {
            h.observe(0.000_250 + (i % 7) as f64 * 1e-5);
        }
        route.request(metrics::method_class(&Method::GET), StatusCode::OK);
        pool.duration.observe(0.000_400 + (i % 5) as f64 * 1e-5);
        pool.received_bytes.inc_by(black_box(0));
        pool.sent_bytes.inc_by(black_box(13));
    };
    c.bench_function("metrics/per_request", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            one(i)
        })
    });
    c.bench_function("metrics/per_request_2_threads", |b| {
        b.iter_custom(|iters| {
            std::thread::scope(|s| {
                let t0 = Instant::now();
                let other = s.spawn(|| {
                    for i in 0..iters {
                        one(i);
                    }
                });
                for i in 0..iters {
                    one(i);
                }
                other.join().unwrap();
                // Two threads did `iters` each in this wall time.
                t0.elapsed()
            })
        })
    });
}

criterion_group!(benches, record);
criterion_main!(benches);
