//! Proxy e2e: per-route response compression (`routes[].compression`, issue #19), with
//! real processes: the real proxy binary, a real HTTP service (axum) behind an `http`
//! pool, a real worker behind a `sessions` route. The client decodes what the edge sent
//! (flate2, brotli) and compares it with the identity answer, byte for byte.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::proxy_streams::timed_turn;
use crate::support::client;
use crate::support::http_service::{self, HttpService, HEALTH_PATH};
use crate::support::proxy::*;

/// An `http` pool `api` on `svc`, a route `api` (compression, min_size 512) on `/api`
/// and a route `plain` (no compression) on `/`.
fn yaml(workers: &[TestWorker], svc: &HttpService) -> String {
    proxy_yaml(
        &worker_list(workers),
        &format!(
            "pools:\n  - name: api\n    upstreams: [\"{}\"]\n    health_check:\n      path: {HEALTH_PATH}\n      \
             interval: 200ms\n      failures: 1\n      successes: 1\n\
             routes:\n  - name: api\n    path: /api\n    pool: api\n    auth: off\n    \
             compression: {{gzip: true, brotli: true, level: 6, min_size: 512}}\n\
             \x20 - name: plain\n    path: /\n    pool: api\n    auth: off\n",
            svc.addr
        ),
    )
}

struct Raw {
    status: u16,
    encoding: Option<String>,
    vary: Option<String>,
    length: Option<String>,
    body: Vec<u8>,
}

async fn get_raw(c: &reqwest::Client, url: &str, accept: Option<&str>) -> Raw {
    let mut rb = c.get(url);
    if let Some(a) = accept {
        rb = rb.header("accept-encoding", a);
    }
    let r = rb.send().await.expect("request");
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (encoding, vary, length) = (h("content-encoding"), h("vary"), h("content-length"));
    let status = r.status().as_u16();
    let body = r.bytes().await.expect("body").to_vec();
    Raw {
        status,
        encoding,
        vary,
        length,
        body,
    }
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(b)
        .read_to_end(&mut out)
        .expect("a valid gzip stream");
    out
}

fn unbrotli(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(b, 4096)
        .read_to_end(&mut out)
        .expect("a valid brotli stream");
    out
}

fn varies_on_encoding(r: &Raw) -> bool {
    r.vary
        .as_deref()
        .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_is_gzip_or_brotli_as_accepted_identity_otherwise_and_small_bodies_untouched() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let svc = http_service::start("api").await;
    let p = spawn_proxy(&yaml(&workers, &svc)).await;
    let c = client();
    let big = format!("{}/api/items?pad=20000", p.base());

    // Identity: no Accept-Encoding, and an explicit identity.
    let plain = get_raw(&c, &big, None).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.encoding, None);
    assert!(varies_on_encoding(&plain), "{:?}", plain.vary);
    assert_eq!(
        plain.length.as_deref(),
        Some(plain.body.len().to_string().as_str())
    );
    let v: serde_json::Value = serde_json::from_slice(&plain.body).expect("json");
    assert_eq!(v["pad"].as_str().map(str::len), Some(20000));
    let identity = get_raw(&c, &big, Some("identity")).await;
    assert_eq!(identity.encoding, None);
    assert_eq!(identity.body, plain.body);
    let refused = get_raw(&c, &big, Some("gzip;q=0, br;q=0")).await;
    assert_eq!(refused.encoding, None);
    assert_eq!(refused.body, plain.body);

    // gzip.
    let gz = get_raw(&c, &big, Some("gzip")).await;
    assert_eq!(gz.status, 200);
    assert_eq!(gz.encoding.as_deref(), Some("gzip"));
    assert!(varies_on_encoding(&gz), "{:?}", gz.vary);
    assert_eq!(gz.length, None, "the compressed length is not known ahead");
    assert_eq!(gunzip(&gz.body), plain.body);
    assert!(
        gz.body.len() * 10 < plain.body.len(),
        "{} bytes",
        gz.body.len()
    );

    // brotli, preferred when both are accepted; gzip when br is excluded.
    let br = get_raw(&c, &big, Some("gzip, deflate, br")).await;
    assert_eq!(br.encoding.as_deref(), Some("br"));
    assert_eq!(unbrotli(&br.body), plain.body);
    let no_br = get_raw(&c, &big, Some("br;q=0, gzip")).await;
    assert_eq!(no_br.encoding.as_deref(), Some("gzip"));
    assert_eq!(gunzip(&no_br.body), plain.body);
    println!(
        "compression: identity {} bytes, gzip {} bytes, brotli {} bytes",
        plain.body.len(),
        gz.body.len(),
        br.body.len()
    );

    // Under min_size (512): as sent, with its length.
    let small = get_raw(&c, &format!("{}/api/small", p.base()), Some("gzip, br")).await;
    assert_eq!(small.status, 200);
    assert_eq!(small.encoding, None);
    assert!(small.body.len() < 512, "{}", small.body.len());
    assert_eq!(
        small.length.as_deref(),
        Some(small.body.len().to_string().as_str())
    );
    let v: serde_json::Value = serde_json::from_slice(&small.body).expect("json");
    assert_eq!(v["path"], "/api/small");

    // A route without compression: untouched, no Vary.
    let other = get_raw(
        &c,
        &format!("{}/other?pad=20000", p.base()),
        Some("gzip, br"),
    )
    .await;
    assert_eq!(other.status, 200);
    assert_eq!(other.encoding, None);
    assert!(!varies_on_encoding(&other), "{:?}", other.vary);
    assert!(other.body.len() > 20000);

    // HEAD: no body, nothing encoded.
    let head = c
        .head(&big)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("HEAD");
    assert_eq!(head.status(), 200);
    assert!(head.headers().get("content-encoding").is_none());

    // Keep-alive still works after compressed answers (framing intact): many in a row.
    for i in 0..20 {
        let r = get_raw(&c, &format!("{big}&i={i}"), Some("gzip")).await;
        assert_eq!(r.encoding.as_deref(), Some("gzip"));
        let v: serde_json::Value = serde_json::from_slice(&gunzip(&r.body)).expect("json");
        assert_eq!(v["pad"].as_str().map(str::len), Some(20000));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_through_a_compressing_session_route_is_never_compressed_and_streams_per_event() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(
        &worker_list(&workers),
        "timeouts:\n  connect: 500ms\n  read: 1s\n  write: 1s\n  stream_idle: 1h\n\
         routes:\n  - name: api\n    path: /\n    pool: sessions\n    compression: {min_size: 1}\n",
    ))
    .await;
    let c = client();
    let (id, _) = create(&c, &p.base()).await;

    // The session's JSON on the same route is compressed (the policy is on)...
    let info = get_raw(&c, &format!("{}/sessions/{id}", p.base()), Some("gzip")).await;
    assert_eq!(info.status, 200);
    assert_eq!(info.encoding.as_deref(), Some("gzip"));
    let v: serde_json::Value = serde_json::from_slice(&gunzip(&info.body)).expect("json");
    assert_eq!(v["session_id"], id.as_str(), "{v}");

    // ...and its SSE turn is not: plain events, each as it is written.
    let start = Instant::now();
    let r = c
        .post(format!("{}/sessions/{id}/messages", p.base()))
        .header("accept-encoding", "gzip, br")
        .header("accept", "text/event-stream")
        .json(&json!({"prompt": "sleep 1500"}))
        .send()
        .await
        .expect("POST messages");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("content-encoding").is_none(),
        "{:?}",
        r.headers()
    );
    assert!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{:?}",
        r.headers()
    );
    let (first_at, total, names) = timed_turn(r, start).await;
    println!("SSE with compression on: first event after {first_at:?}, end after {total:?}");
    // The agent sleeps 1.5 s between its first event and the rest: a buffering
    // compressor would hold the first event until the end.
    assert!(
        first_at + Duration::from_millis(500) < total,
        "first event held back: {first_at:?} of {total:?}"
    );
    assert!(total >= Duration::from_millis(1500));
    assert_eq!(names.last().map(String::as_str), Some("completed"));
}
