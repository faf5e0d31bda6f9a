//! What the HTTP/1.1 codec costs per request (filled in below).
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};

fn parse(c: &mut Criterion) {
    c.bench_function("placeholder", |b| b.iter(|| 1));
}

criterion_group!(benches, parse);
criterion_main!(benches);
