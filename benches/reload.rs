//! How long does a reload take, parse to swap, as configs grow?
//!
//! Generates configs with 100 pools holding 10, 1 000 and 10 000 endpoints
//! in total, and measures the two halves of a reload: parsing and
//! validating the YAML (`Config::from_yaml`, also what `weir check` does),
//! and building the new snapshot against the running one
//! (`Snapshot::build`, which reuses unchanged pools and backends). The
//! `ArcSwap::store` that follows is a pointer swap and is not measured.
//! Target: under 50 ms at 10 000 endpoints.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::fmt::Write as _;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use weir::metrics::Metrics;
use weir::snapshot::Snapshot;
use weir::Config;

/// A config of `pools` pools sharing `endpoints` endpoints; `salt` changes
/// one endpoint's weight in every pool so a "changed" reload has work to do.
fn yaml(pools: usize, endpoints: usize, salt: u32) -> String {
    let mut s = String::from(
        "listeners: [{name: main, bind: \"127.0.0.1:0\"}]\nadmin: {bind: \"127.0.0.1:0\"}\nroutes:\n",
    );
    for p in 0..pools {
        writeln!(s, "  - {{hosts: [\"p{p}.example.com\"], pool: p{p}}}").unwrap();
    }
    s.push_str("pools:\n");
    let per_pool = (endpoints / pools).max(1);
    for p in 0..pools {
        writeln!(
            s,
            "  - name: p{p}\n    balance: round_robin\n    endpoints:"
        )
        .unwrap();
        for e in 0..per_pool {
            let n = p * per_pool + e;
            let weight = if e == 0 { 1 + salt } else { 1 };
            writeln!(
                s,
                "      - {{address: \"10.{}.{}.{}:8080\", weight: {weight}}}",
                n / 65536,
                (n / 256) % 256,
                n % 256
            )
            .unwrap();
        }
    }
    s
}

fn reload(c: &mut Criterion) {
    let mut group = c.benchmark_group("reload");
    group.sample_size(10);
    for endpoints in [10usize, 1_000, 10_000] {
        let pools = 100.min(endpoints);
        let first = yaml(pools, endpoints, 0);
        let second = yaml(pools, endpoints, 1);
        let metrics = Metrics::new().unwrap();
        let running = Snapshot::build(
            Arc::new(Config::from_yaml(&first, "bench").unwrap()),
            1,
            None,
            &metrics,
        );
        group.bench_with_input(
            BenchmarkId::new("parse_validate", endpoints),
            &second,
            |b, y| b.iter(|| Config::from_yaml(y, "bench").unwrap()),
        );
        let parsed = Arc::new(Config::from_yaml(&second, "bench").unwrap());
        group.bench_with_input(
            BenchmarkId::new("build_snapshot", endpoints),
            &parsed,
            |b, cfg| b.iter(|| Snapshot::build(Arc::clone(cfg), 2, Some(&running), &metrics)),
        );
        group.bench_with_input(
            BenchmarkId::new("parse_to_swap", endpoints),
            &second,
            |b, y| {
                b.iter(|| {
                    let cfg = Arc::new(Config::from_yaml(y, "bench").unwrap());
                    Snapshot::build(cfg, 2, Some(&running), &metrics)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, reload);
criterion_main!(benches);
