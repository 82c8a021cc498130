//! Reliability: hostile HTTP/1.1 through the proxy from raw TCP clients (request
//! smuggling, malformed framing, oversized heads, bad session keys) and security review
//! items (forged affinity tokens, error bodies that leak nothing). The upstream is a fake
//! worker that logs every request it parses, so each test proves what reached it.
//!
//! HTTP/2 abuse (pseudo-headers, connection-specific headers, framing) is in
//! `reliability_h2.rs`.

use crate::support::fake_upstream;
use hotplex_common::names;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::proxy::*;
use fake_upstream::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `raw` on a new connection and reads until EOF, or 600 ms of silence, or 3 s.
/// Returns (every status code seen, the raw answer, whether the proxy closed the connection).
async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> (Vec<u16>, String, bool) {
    let mut s = TcpStream::connect(addr).await.expect("connect proxy");
    let _ = s.write_all(raw).await;
    let mut out = Vec::new();
    let mut closed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut tmp = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left.min(Duration::from_millis(600)), s.read(&mut tmp)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => out.extend_from_slice(&tmp[..n]),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let statuses = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect();
    (statuses, text, closed)
}

/// A normal request on a new connection: must get its own answer from the upstream.
async fn check_in_sync(p: &TestProxy, c: &reqwest::Client, tag: &str) {
    let target = format!("/sessions/check-{tag}");
    let r = send(
        c.get(format!("{}{target}", p.base()))
            .header("x-request-id", format!("check-{tag}")),
    )
    .await;
    assert_eq!(r.status, 200, "after {tag}: {r:?}");
    assert_eq!(
        r.body["target"],
        target.as_str(),
        "after {tag}: desync {r:?}"
    );
    assert_eq!(
        r.request_id.as_deref(),
        Some(format!("check-{tag}").as_str())
    );
}

/// What a hostile request must get.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// A 4xx or a closed connection, and nothing forwarded.
    Rejected,
    /// Exactly this status, and nothing forwarded.
    Status(u16),
    /// Not forwarded as is: a 4xx, or the connection closed after the answer (the
    /// pipelined smuggled request is dropped).
    ClosedOrRejected,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_and_malformed_requests_never_desync_the_upstream() {
    let up = fake_upstream::start(Mode::Echo).await;
    let mut p = spawn_proxy(&proxy_yaml(&[("w1", up.addr)], "")).await;
    // A fresh client per check: a new downstream connection each time, while pingora
    // reuses its pooled upstream connection.
    let client = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("client")
    };
    check_in_sync(&p, &client(), "warmup").await;
    let smuggled = "GET /sessions/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let long_header = format!(
        "GET /sessions/big HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let many_headers = format!(
        "GET /sessions/many HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..500)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let uri_9k = format!(
        "GET /sessions/x?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "q".repeat(9 * 1024)
    );
    let long_uri = format!(
        "GET /sessions/x?{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "q".repeat(100 * 1024)
    );
    use Expect::*;
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "CL+TE",
            format!("POST /sessions/a/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}").into_bytes(),
            ClosedOrRejected,
        ),
        (
            "TE+CL",
            format!("POST /sessions/a/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 48\r\n\r\n0\r\n\r\n{smuggled}").into_bytes(),
            ClosedOrRejected,
        ),
        (
            "conflicting CL",
            format!("POST /sessions/a/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n{smuggled}").into_bytes(),
            Rejected,
        ),
        (
            "CL list",
            format!("POST /sessions/a/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 44\r\n\r\n{smuggled}").into_bytes(),
            Rejected,
        ),
        (
            "negative CL",
            b"POST /sessions/a/messages HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
            Rejected,
        ),
        (
            "invalid chunk size",
            format!("POST /sessions/a/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n{smuggled}").into_bytes(),
            Rejected,
        ),
        (
            "huge chunk size",
            b"POST /sessions/a/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nab\r\n".to_vec(),
            Rejected,
        ),
        (
            "TE obfuscated",
            format!("POST /sessions/a/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggled}").into_bytes(),
            Rejected,
        ),
        (
            "obs-fold",
            b"GET /sessions/a HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n".to_vec(),
            Rejected,
        ),
        (
            "obs-fold TE",
            format!("POST /sessions/a/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n{smuggled}").into_bytes(),
            Rejected,
        ),
        (
            "bare LF",
            b"GET /sessions/a HTTP/1.1\nHost: x\nX-A: 1\n\n".to_vec(),
            Status(400),
        ),
        (
            "bare LF in one header line",
            b"GET /sessions/a HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n".to_vec(),
            Status(400),
        ),
        (
            "bare LF ends the head (+ body, smuggled request)",
            format!("POST /sessions/a/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\nhello{smuggled}").into_bytes(),
            Status(400),
        ),
        (
            "bare LF hides a Transfer-Encoding line",
            format!("POST /sessions/a/messages HTTP/1.1\r\nHost: x\r\nX-A: 1\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}").into_bytes(),
            Status(400),
        ),
        (
            "bare CR in a header value",
            b"GET /sessions/a HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n".to_vec(),
            Status(400),
        ),
        (
            "bare CR as line end",
            b"GET /sessions/a HTTP/1.1\rHost: x\r\n\r\n".to_vec(),
            Status(400),
        ),
        (
            "HTTP/1.1 without Host",
            b"GET /sessions/a HTTP/1.1\r\nX-A: 1\r\n\r\n".to_vec(),
            Status(400),
        ),
        (
            "two Host headers",
            b"GET /sessions/a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n".to_vec(),
            Status(400),
        ),
        (
            "space in header name",
            b"GET /sessions/a HTTP/1.1\r\nHost: x\r\nX Bad: 1\r\n\r\n".to_vec(),
            Rejected,
        ),
        (
            "space before colon (CL)",
            format!("POST /sessions/a/messages HTTP/1.1\r\nHost: x\r\nContent-Length : 44\r\n\r\n{smuggled}").into_bytes(),
            Rejected,
        ),
        (
            "absolute-form",
            b"GET http://evil.example/sessions/a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Rejected,
        ),
        (
            "CONNECT",
            b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n".to_vec(),
            Rejected,
        ),
        (
            "h2c upgrade",
            format!("GET /sessions/a HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n{smuggled}").into_bytes(),
            ClosedOrRejected,
        ),
        (
            "h2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            Rejected,
        ),
        ("oversized header (100 KB)", long_header.into_bytes(), Status(431)),
        ("9 KB URI", uri_9k.into_bytes(), Status(414)),
        ("500 headers", many_headers.into_bytes(), Rejected),
        ("oversized URI", long_uri.into_bytes(), Rejected),
        (
            "NUL in URI",
            b"GET /sessions/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Rejected,
        ),
        (
            "invalid UTF-8 in path key",
            b"GET /sessions/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Rejected,
        ),
        (
            "invalid UTF-8 in header key",
            b"GET /x HTTP/1.1\r\nHost: x\r\nX-Hotplex-Session: \xff\xfe\r\n\r\n".to_vec(),
            Rejected,
        ),
        (
            "control byte in header key",
            b"GET /x HTTP/1.1\r\nHost: x\r\nX-Hotplex-Session: a\x01b\r\n\r\n".to_vec(),
            Rejected,
        ),
        (
            "DEL in path key",
            b"GET /sessions/a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Rejected,
        ),
        (
            "percent-encoded key",
            b"GET /sessions/a%2F..%2Fb HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Rejected,
        ),
        (
            "bad key in cookie",
            b"GET /x HTTP/1.1\r\nHost: x\r\nCookie: hotplex_affinity=\"a b\"\r\n\r\n".to_vec(),
            Rejected,
        ),
        (
            "HTTP/0.9",
            b"GET /sessions/a\r\n\r\n".to_vec(),
            Rejected,
        ),
        (
            "bad version",
            b"GET /sessions/a HTTP/9.9\r\nHost: x\r\n\r\n".to_vec(),
            Rejected,
        ),
    ];
    println!("| attempt | statuses | closed | forwarded | expect |");
    let mut failures = Vec::new();
    for (i, (name, raw, expect)) in cases.iter().enumerate() {
        let before = up.seen().len();
        let (statuses, text, closed) = raw_exchange(p.listen, raw).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let forwarded: Vec<String> = up.seen()[before..]
            .iter()
            .map(|s| format!("{} {}", s.method, s.target))
            .collect();
        println!("| {name} | {statuses:?} | {closed} | {forwarded:?} | {expect:?} |");
        if name.starts_with("h2c") {
            let hs = up.seen()[before..]
                .iter()
                .flat_map(|s| s.headers.clone())
                .filter(|(k, _)| k == "upgrade" || k == "connection" || k == "http2-settings")
                .collect::<Vec<_>>();
            println!("  h2c: upgrade-related headers forwarded: {hs:?}");
        }
        let first = statuses.first().copied();
        let rejected = first.map_or(closed, |s| (400..500).contains(&s));
        let ok = match *expect {
            Expect::Rejected => rejected && forwarded.is_empty(),
            Expect::Status(s) => first == Some(s) && forwarded.is_empty(),
            Expect::ClosedOrRejected => rejected || closed,
        };
        if !ok {
            failures.push(format!("{name}: {statuses:?} forwarded {forwarded:?}"));
        }
        if first.is_some_and(|s| s >= 500) {
            failures.push(format!("{name}: 5xx {statuses:?}"));
        }
        // Error bodies the proxy writes are small JSON, no internals.
        if let Some(body) = text.split("\r\n\r\n").nth(1) {
            if first.is_some_and(|s| s >= 400) {
                assert!(body.len() < 300, "{name}: long error body {body:?}");
                for bad in ["/src/", "panicked", "backtrace", "127.0.0.1", "Peer:"] {
                    assert!(
                        !body.contains(bad),
                        "{name}: error body leaks {bad}: {body:?}"
                    );
                }
            }
        }
        if (name.contains("key") || name.contains("DEL")) && first == Some(400) {
            assert!(
                text.contains("invalid_session_id") || !text.contains("\"error\""),
                "{name}: {text}"
            );
        }
        check_in_sync(&p, &client(), &i.to_string()).await;
    }
    let seen = up.seen();
    let conns: std::collections::BTreeSet<u64> = seen.iter().map(|s| s.conn).collect();
    let smuggled_hits = seen
        .iter()
        .filter(|s| s.target.contains("smuggled"))
        .count();
    println!(
        "upstream: {} requests over {} connections, {} parse errors, {smuggled_hits} smuggled-path requests",
        seen.len(),
        conns.len(),
        up.parse_errors.load(Ordering::Relaxed)
    );
    assert!(failures.is_empty(), "not rejected: {failures:#?}");
    assert_eq!(
        up.parse_errors.load(Ordering::Relaxed),
        0,
        "upstream saw unparseable bytes"
    );
    // No smuggled request ever rode inside another request's bytes: any that reached the
    // upstream arrived as its own well-formed request (parse_errors == 0), and every check
    // request got its own answer.
    assert_eq!(smuggled_hits, 0, "smuggled requests reached the upstream");
    p.assert_alive().await;
}

/// `conn` (the fake upstream's connection number) of an echoed answer.
fn upstream_conn(r: &Resp) -> u64 {
    r.body["conn"].as_u64().unwrap_or(u64::MAX)
}

/// Bare LF line ends: 400 `malformed_head` from the proxy itself, nothing forwarded, the
/// downstream connection closed, and the pooled upstream connection serves the next
/// request in sync (same upstream connection, its own answer). Also pipelined after a good
/// request on one keep-alive connection: the good one is answered, the bare-LF one never
/// forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_is_refused_and_the_pooled_upstream_connection_stays_in_sync() {
    let up = fake_upstream::start(Mode::Echo).await;
    let p = spawn_proxy(&proxy_yaml(&[("w1", up.addr)], "")).await;
    let c = client();
    let first = send(c.get(format!("{}/sessions/first", p.base()))).await;
    assert_eq!(first.status, 200, "{first:?}");
    let pooled = upstream_conn(&first);
    let variants: [&[u8]; 4] = [
        b"GET /sessions/lf HTTP/1.1\nHost: x\n\n",
        b"GET /sessions/lf HTTP/1.1\r\nHost: x\r\n\n",
        b"POST /sessions/lf/messages HTTP/1.1\r\nHost: x\nContent-Length: 3\r\n\r\nabc",
        b"GET /sessions/lf HTTP/1.1\r\nHost: x\r\nX-A: 1\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for (i, raw) in variants.iter().enumerate() {
        let (statuses, text, closed) = raw_exchange(p.listen, raw).await;
        println!("bare LF variant {i}: {statuses:?}, closed {closed}");
        assert_eq!(statuses, vec![400], "variant {i}: {text}");
        assert!(text.contains("\"error\":\"malformed_head\""), "{text}");
        assert!(closed, "variant {i}: connection closed after the 400");
        let next = send(
            c.get(format!("{}/sessions/next-{i}", p.base()))
                .header("x-request-id", format!("next-{i}")),
        )
        .await;
        assert_eq!(next.status, 200, "{next:?}");
        assert_eq!(next.body["target"], format!("/sessions/next-{i}"));
        assert_eq!(
            next.request_id.as_deref(),
            Some(format!("next-{i}").as_str())
        );
        assert_eq!(
            upstream_conn(&next),
            pooled,
            "the pooled upstream connection is reused and in sync"
        );
    }
    // Pipelined: a good request, then a bare-LF one, on one keep-alive connection. pingora
    // 0.9 has HTTP/1 pipelining off: it answers the first, closes, and drops the second
    // (the client retries it on a new connection, RFC 9112 9.3.2).
    let (statuses, text, closed) = raw_exchange(
        p.listen,
        b"GET /sessions/good HTTP/1.1\r\nHost: x\r\n\r\nGET /sessions/lf2 HTTP/1.1\nHost: x\n\n",
    )
    .await;
    println!("pipelined good + bare LF: {statuses:?}, closed {closed}");
    assert_eq!(statuses.first(), Some(&200), "{text}");
    assert!(statuses.len() == 1 || statuses[1] == 400, "{text}");
    assert!(closed);
    let targets: Vec<String> = up.seen().iter().map(|s| s.target.clone()).collect();
    assert!(
        targets.iter().all(|t| !t.contains("/lf")),
        "a bare-LF request reached the upstream: {targets:?}"
    );
    assert!(targets.iter().any(|t| t == "/sessions/good"), "{targets:?}");
    assert_eq!(up.parse_errors.load(Ordering::Relaxed), 0);
    let m = metrics(&c, &p).await;
    let refused =
        hotplex_e2e::metric_value(&m, names::proxy::REJECTIONS, &["reason=\"malformed_head\""]);
    println!("rejections{{reason=malformed_head}} = {refused:?}; upstream saw {targets:?}");
    assert_eq!(
        refused,
        Some(variants.len() as f64 + statuses.len() as f64 - 1.0),
        "{m}"
    );
}

/// Forged affinity: tampered mac, wrong secret, truncated, another worker's id with a
/// valid-looking mac: never pinned to the named worker (hashed instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_affinity_tokens_never_pick_the_worker() {
    use hotplex_proxy::routing::affinity::Signer;
    let ups = [
        fake_upstream::start(Mode::Echo).await,
        fake_upstream::start(Mode::Echo).await,
        fake_upstream::start(Mode::Echo).await,
    ];
    let list: Vec<(&str, SocketAddr)> = vec![
        ("w1", ups[0].addr),
        ("w2", ups[1].addr),
        ("w3", ups[2].addr),
    ];
    let p = spawn_proxy(&proxy_yaml(&list, "")).await;
    let c = client();
    let good = Signer::new(vec![b"e2e-test-secret-0123456789".to_vec()]);
    let evil = Signer::new(vec![b"attacker-guess-secret".to_vec()]);
    // Sanity: a genuine token pins.
    for w in ["w1", "w2", "w3"] {
        let id = good.mint_session(w, "").into_string();
        let r = get_session(&c, &p.base(), &id).await;
        assert_eq!(r.worker.as_deref(), Some(w), "{r:?}");
    }
    let (mut tried, mut refused, mut pinned_to_forged, mut hashed) = (0, 0, 0, 0);
    for i in 0..60 {
        let target = ["w1", "w2", "w3"][i % 3];
        let genuine = good.mint_session(target, "").into_string();
        let (msg, mac) = genuine.rsplit_once('.').expect("signed parts");
        let mut tampered_mac = mac.to_string().into_bytes();
        let at = i % tampered_mac.len();
        tampered_mac[at] = if tampered_mac[at] == b'A' { b'B' } else { b'A' };
        let other = ["w1", "w2", "w3"][(i + 1) % 3];
        let (_, rest) = msg.split_once('.').expect("worker.rest");
        let forged: Vec<String> = vec![
            format!("{msg}.{}", String::from_utf8_lossy(&tampered_mac)),
            evil.mint_session(target, "").into_string(),
            format!("{msg}.{}", &mac[..mac.len() - 1]),
            format!("{other}.{rest}.{mac}"),
            format!("{msg}.{mac}A"),
            format!("{target}.{mac}"),
            evil.cookie_value(target).to_string(),
        ];
        for f in forged {
            tried += 1;
            let r = get_session(&c, &p.base(), &f).await;
            if hotplex_common::signed_shape(&f).is_some() {
                // A signed-shaped id that does not verify: refused at the edge, like an
                // unknown session, and forwarded nowhere.
                assert_eq!(r.status, 404, "{f}: {r:?}");
                assert_eq!(r.body["error"], "session_not_found", "{f}: {r:?}");
                assert_eq!(r.worker, None, "{f}: forwarded to {:?}", r.worker);
                refused += 1;
                continue;
            }
            // Anything else is a client-chosen id: hashed (what any foreign id gets).
            assert_eq!(r.status, 200, "{f}: {r:?}");
            let again = send(
                c.post(format!("{}/sessions", p.base()))
                    .header("x-hotplex-session", &f),
            )
            .await;
            assert_eq!(again.worker, r.worker, "{f}: consistent hashing");
            let cookie = send(
                c.post(format!("{}/sessions", p.base()))
                    .header("cookie", format!("hotplex_affinity={f}")),
            )
            .await;
            assert!(cookie.status < 500, "{f}: {cookie:?}");
            // Rank: if the forged worker is also the hash owner, that is chance, not trust.
            let owner = hotplex_proxy::routing::hrw::pick(
                list.iter().map(|(id, _)| (*id, 1u32)),
                &hotplex_proxy::routing::tenant_key("", &f),
            )
            .map(|i| list[i].0);
            if r.worker.as_deref() == owner {
                hashed += 1;
            } else {
                pinned_to_forged += 1;
                println!("forged {f} went to {:?}, hash owner {owner:?}", r.worker);
            }
        }
    }
    println!("forged tokens: {tried} tried, {refused} refused at the edge, {hashed} routed by hash, {pinned_to_forged} pinned by the forged name");
    assert_eq!(pinned_to_forged, 0);
    assert_eq!(refused, 60 * 3, "every signed-shaped forgery refused");
}

/// Error answers written by the proxy are small JSON with no internals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_do_not_leak_internals() {
    let up = fake_upstream::start(Mode::Garbage).await;
    let slow = fake_upstream::start(Mode::Slow(Duration::from_secs(3))).await;
    let dead = hotplex_e2e::free_addr();
    let p = spawn_proxy(&proxy_yaml(
        &[("w1", up.addr), ("w2", dead), ("w3", slow.addr)],
        "timeouts:\n  connect: 500ms\n  read: 1s\n  write: 1s\n",
    ))
    .await;
    let c = client();
    let good =
        hotplex_proxy::routing::affinity::Signer::new(vec![b"e2e-test-secret-0123456789".to_vec()]);
    let mut bodies = Vec::new();
    for (w, _) in [("w1", 0), ("w2", 0), ("w3", 0)] {
        let id = good.mint_session(w, "").into_string();
        bodies.push(get_session(&c, &p.base(), &id).await);
    }
    bodies.push(get_session(&c, &p.base(), "bad%20id").await);
    bodies.push(get_session(&c, &p.base(), "gone.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAA").await);
    for r in &bodies {
        let text = r.body.to_string();
        println!("{} {text}", r.status);
        assert!(r.status >= 400, "{r:?}");
        assert!(r.body.is_object(), "JSON object: {r:?}");
        assert!(r.body["error"].is_string(), "{r:?}");
        assert!(text.len() < 300, "{text}");
        for bad in [
            "/src/",
            "panicked",
            "backtrace",
            "127.0.0.1",
            "Peer",
            "os error",
            "pingora",
        ] {
            assert!(!text.contains(bad), "leaks {bad}: {text}");
        }
    }
}
