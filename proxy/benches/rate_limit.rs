//! Criterion: one rate-limit check (`limits::Buckets::check`: sharded exact token buckets)
//! for an existing key, with and without building the key string as the request path does,
//! against a naive baseline (one global lock, a sliding log of timestamps per key).
//!
//! `cargo bench -p hotplex-proxy --bench rate_limit -- --warm-up-time 1 --measurement-time 2`

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use hotplex_proxy::config::security::RateFile;
use hotplex_proxy::limits::Buckets;

/// Naive limiter: a global mutex, a formatted key, a VecDeque of request times per key.
#[derive(Default)]
struct SlidingLog {
    map: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl SlidingLog {
    fn check(&self, tenant: &str, limit: usize, window: Duration) -> bool {
        let key = format!("key|k:{tenant}");
        let now = Instant::now();
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let log = m.entry(key).or_default();
        while log.front().is_some_and(|&t| now.duration_since(t) > window) {
            log.pop_front();
        }
        if log.len() >= limit {
            return false;
        }
        log.push_back(now);
        true
    }
}

fn bench(c: &mut Criterion) {
    let r = RateFile {
        rate: 1e9,
        burst: 1_000_000_000,
    };
    let b = Buckets::default();
    for i in 0..10_000 {
        b.check(&format!("key|k:tenant-{i}"), &r, 100_000);
    }
    assert!(b.check("key|k:bench", &r, 100_000).allowed);
    let naive = SlidingLog::default();
    assert!(naive.check("bench", 1_000, Duration::from_millis(1)));
    let mut g = c.benchmark_group("rate_limit");
    g.bench_function("bucket_check", |bn| {
        bn.iter(|| b.check(black_box("key|k:bench"), &r, 100_000))
    });
    g.bench_function("bucket_check_with_key_format", |bn| {
        bn.iter(|| {
            let k = format!("key|k:{}", black_box("bench"));
            b.check(&k, &r, 100_000)
        })
    });
    g.bench_function("naive_sliding_log", |bn| {
        bn.iter(|| naive.check(black_box("bench"), 1_000, Duration::from_millis(1)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
