//! Criterion: the routing decision (`routing::route`) for the three kinds of requests the
//! proxy sees, against a naive baseline (string formatting, SipHash, sort, a fresh HMAC key
//! schedule and base64 MAC string per request). Target: the real decision under 1 µs.
//!
//! `cargo bench -p hotplex-proxy --bench routing -- --warm-up-time 1 --measurement-time 2`

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::hint::black_box;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use hmac::{Hmac, Mac};
use hotplex_proxy::config::parse;
use hotplex_proxy::routing::key::KeyInput;
use hotplex_proxy::routing::{self, Outcome, Request};
use hotplex_proxy::upstream::Registry;
use sha2::Sha256;

const SECRET: &str = "bench-affinity-secret-0123456789";

fn registry(n: usize) -> Registry {
    let mut y = format!("routing:\n  affinity_secrets: [\"{SECRET}\"]\nworkers:\n");
    for i in 1..=n {
        y.push_str(&format!(
            "  - {{id: w{i}, address: \"127.0.0.1:{}\", capacity: 1000000}}\n",
            20000 + i
        ));
    }
    Registry::new(parse("bench", &y).expect("bench config is valid"))
}

/// Naive pinned-id check: split into owned parts, a new HMAC key schedule over
/// `tenant "\n" worker.random.tag`, the MAC base64-encoded into a String, a linear scan of
/// the workers by string id.
fn naive_pinned(workers: &[String], key: &str, tenant: &str) -> Option<usize> {
    let parts: Vec<String> = key.split('.').map(str::to_string).collect();
    if parts.len() != 4 || !parts[2].starts_with("v2-") {
        return None;
    }
    let msg = format!("{tenant}\n{}.{}.{}", parts[0], parts[1], parts[2]);
    let mut m = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).ok()?;
    m.update(msg.as_bytes());
    let given = URL_SAFE_NO_PAD.encode(&m.finalize().into_bytes()[..16]);
    if given != parts[3] {
        return None;
    }
    workers.iter().position(|w| *w == parts[0])
}

/// Naive hashing: `format!` each (worker, key) pair, SipHash it, collect and sort the scores.
fn naive_hashed(workers: &[String], key: &str) -> usize {
    let mut scores: Vec<(u64, usize)> = workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let mut h = DefaultHasher::new();
            format!("{w}:{key}").hash(&mut h);
            (h.finish(), i)
        })
        .collect();
    scores.sort();
    scores.last().map_or(0, |s| s.1)
}

fn bench(c: &mut Criterion) {
    for n in [3usize, 16] {
        let reg = registry(n);
        let ids: Vec<String> = (1..=n).map(|i| format!("w{i}")).collect();
        let minted = reg.signer().mint_session("w2", "tenant-a");
        let pinned = Request {
            keys: KeyInput {
                path: b"/",
                header: Some(minted.as_str().as_bytes()),
                ..Default::default()
            },
            create: false,
            websocket: false,
            tenant: "tenant-a",
        };
        assert_eq!(
            routing::route(&reg, &pinned, &[]).map(|r| r.outcome).ok(),
            Some(Outcome::Pinned)
        );
        assert_eq!(naive_pinned(&ids, minted.as_str(), "tenant-a"), Some(1));
        let foreign = Request {
            keys: KeyInput {
                path: b"/sessions/client-chosen-session-42/messages",
                ..Default::default()
            },
            create: false,
            websocket: false,
            tenant: "tenant-a",
        };
        assert_eq!(
            routing::route(&reg, &foreign, &[]).map(|r| r.outcome).ok(),
            Some(Outcome::Hashed)
        );
        let keyless = Request {
            keys: KeyInput {
                path: b"/ws/v1/agent",
                ..Default::default()
            },
            create: false,
            websocket: false,
            tenant: "tenant-a",
        };
        let mut g = c.benchmark_group(format!("route/{n}_workers"));
        g.bench_function("pinned_signed_id", |b| {
            b.iter(|| routing::route(&reg, black_box(&pinned), &[]))
        });
        g.bench_function("naive_pinned_signed_id", |b| {
            b.iter(|| naive_pinned(&ids, black_box(minted.as_str()), "tenant-a"))
        });
        g.bench_function("hashed_foreign_key", |b| {
            b.iter(|| routing::route(&reg, black_box(&foreign), &[]))
        });
        g.bench_function("naive_hashed_foreign_key", |b| {
            b.iter(|| naive_hashed(&ids, black_box("client-chosen-session-42")))
        });
        g.bench_function("placed_keyless", |b| {
            b.iter(|| routing::route(&reg, black_box(&keyless), &[]))
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
