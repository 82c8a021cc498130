//! Criterion: session-key extraction (`routing::key::extract`, zero-copy slices of the
//! request) against a naive parse (owned strings, a HashMap of every cookie and query pair,
//! the path split into a Vec).
//!
//! `cargo bench -p hotplex-proxy --bench session_key -- --warm-up-time 1 --measurement-time 2`

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use hotplex_proxy::config::KeySource;
use hotplex_proxy::routing::key::{extract, KeyInput};

const ORDER: &[KeySource] = &[
    KeySource::Path,
    KeySource::Query,
    KeySource::Header,
    KeySource::Cookie,
];
const ID: &str = "w2.AbCdEfGhIjKlMnOp.QrStUvWxYz012345";

fn naive(
    path: &str,
    query: Option<&str>,
    header: Option<&str>,
    cookie: Option<&str>,
) -> Option<String> {
    let segs: Vec<String> = path.split('/').map(str::to_string).collect();
    if segs.len() >= 3 && segs[1] == "sessions" && !segs[2].is_empty() {
        return Some(segs[2].clone());
    }
    if let Some(q) = query {
        let m: HashMap<String, String> = q
            .split('&')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(v) = m.get("session_id") {
            return Some(v.clone());
        }
    }
    if let Some(h) = header {
        return Some(h.to_string());
    }
    let m: HashMap<String, String> = cookie?
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    m.get("hotplex_affinity").cloned()
}

/// The naive extractor's inputs: path, query, header, cookie.
type NaiveInput<'a> = (String, Option<&'a str>, Option<&'a str>, Option<&'a str>);
/// One benchmark case: its name, the real extractor's input and the naive one's.
type BenchCase<'a> = (&'a str, KeyInput<'a>, NaiveInput<'a>);

fn bench(c: &mut Criterion) {
    let path = format!("/sessions/{ID}/messages");
    let cookie = format!("theme=dark; lang=en; _ga=GA1.2.3; hotplex_affinity={ID}; x=y");
    let cookies: [&[u8]; 1] = [cookie.as_bytes()];
    let query = format!("a=1&b=2&session_id={ID}");
    let cases: [BenchCase<'_>; 4] = [
        (
            "path",
            KeyInput {
                path: path.as_bytes(),
                ..Default::default()
            },
            (path.clone(), None, None, None),
        ),
        (
            "query",
            KeyInput {
                path: b"/ws/v1/agent",
                query: Some(query.as_bytes()),
                ..Default::default()
            },
            ("/ws/v1/agent".into(), Some(query.as_str()), None, None),
        ),
        (
            "header",
            KeyInput {
                path: b"/",
                header: Some(ID.as_bytes()),
                ..Default::default()
            },
            ("/".into(), None, Some(ID), None),
        ),
        (
            "cookie",
            KeyInput {
                path: b"/",
                cookies: &cookies,
                ..Default::default()
            },
            ("/".into(), None, None, Some(cookie.as_str())),
        ),
    ];
    let mut g = c.benchmark_group("session_key");
    for (name, input, (p, q, h, ck)) in &cases {
        let got = extract(ORDER, input).expect("valid").expect("found");
        assert_eq!(got.key.as_str(), ID);
        assert_eq!(naive(p, *q, *h, *ck).as_deref(), Some(ID));
        g.bench_function(*name, |b| b.iter(|| extract(ORDER, black_box(input))));
        g.bench_function(format!("naive_{name}"), |b| {
            b.iter(|| naive(black_box(p), *q, *h, *ck))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
