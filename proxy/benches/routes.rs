//! Criterion: the route-table match of one request (`routes::classify`): without
//! `routes:` (the session API as before: one check, no allocation) and with the four routes
//! of `conf/examples/nginx-replacement.yaml` (first route, last route, no match).
//!
//! `cargo bench -p hotplex-proxy --bench routes -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use hotplex_proxy::config::parse;
use hotplex_proxy::routes::{classify, Routed};
use pingora::http::RequestHeader;

fn req(host: &str, method: &str, path: &str) -> RequestHeader {
    let mut r = RequestHeader::build(method, path.as_bytes(), None).expect("request");
    r.insert_header("host", host).expect("host");
    r
}

fn bench(c: &mut Criterion) {
    let none = parse(
        "bench",
        "workers:\n  - id: w1\n    address: 127.0.0.1:8081\n",
    )
    .expect("valid")
    .routes
    .clone();
    let example = parse(
        "example",
        include_str!("../../conf/examples/nginx-replacement.yaml"),
    )
    .expect("the example is valid")
    .routes
    .clone();
    let create = req("app.example.com:8000", "POST", "/sessions");
    let turn = req(
        "app.example.com",
        "POST",
        "/sessions/w1.abcdefghijklmnop.x/messages",
    );
    let ui = req("app.example.com", "GET", "/static/app.js");

    let mut g = c.benchmark_group("route_match");
    g.bench_function("no_routes_session_api", |b| {
        b.iter(|| {
            matches!(
                classify(black_box(&none), black_box(&turn)),
                Routed::Default
            )
        })
    });
    g.bench_function("example_first_route_create", |b| {
        b.iter(|| {
            matches!(
                classify(black_box(&example), black_box(&create)),
                Routed::Sessions(_)
            )
        })
    });
    g.bench_function("example_session_turn", |b| {
        b.iter(|| {
            matches!(
                classify(black_box(&example), black_box(&turn)),
                Routed::Sessions(_)
            )
        })
    });
    g.bench_function("example_last_route_ui", |b| {
        b.iter(|| {
            matches!(
                classify(black_box(&example), black_box(&ui)),
                Routed::Http(..)
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
