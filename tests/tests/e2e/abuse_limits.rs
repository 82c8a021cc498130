//! Abuse limits that hold for every unit of work (issue 18), with real processes:
//! - failed authentication is limited per client IP before any key or signature work;
//! - metric labels stay bounded whatever methods and paths clients send.

use crate::support::fake_upstream;
use crate::support::proxy::*;
use hotplex_common::names;
use hotplex_common::names::proxy::AUTH_FAILURES;

const KEY_A: &str = "tenant-a-secret-key-0123456789";

/// The series (name and labels) of a Prometheus text page.
fn series(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_string()))
        .collect()
}

async fn text(c: &reqwest::Client, url: &str) -> String {
    c.get(url)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_authentication_is_limited_before_any_key_work() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let p = spawn_logged_proxy(
        dir.path(),
        &proxy_yaml(
            &worker_list(&workers),
            &format!(
                "auth:\n  enabled: true\n  keys:\n    - name: tenant-a\n      hash: \"{}\"\nlimits:\n  trusted_proxies: [127.0.0.0/8]\n  auth_failures: {{rate: 0.01, burst: 5}}\n",
                key_hash(KEY_A)
            ),
        ),
        &[],
    )
    .await;
    let c = client();
    let base = p.base();
    let attacker = "203.0.113.9";
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut retry_after = None;
    for i in 0..200 {
        let r = send(
            c.post(format!("{base}/sessions"))
                .header("x-forwarded-for", attacker)
                .header("x-api-key", format!("guess-{i}")),
        )
        .await;
        *statuses.entry(r.status).or_default() += 1;
        if r.status == 429 {
            assert_eq!(r.body["error"], "too_many_auth_failures", "{r:?}");
            retry_after = r.retry_after.clone();
        }
    }
    println!("200 wrong keys from one IP: {statuses:?}");
    assert_eq!(statuses.get(&401), Some(&5), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&195), "{statuses:?}");
    let retry: u64 = retry_after.expect("Retry-After").parse().expect("seconds");
    assert!(retry >= 1, "{retry}");
    // No key work once limited: only the 5 within the budget were checked (and counted
    // as invalid); the rest are counted as rate limited.
    let admin = p.admin_base();
    assert_eq!(
        metric_at(&c, &admin, AUTH_FAILURES, &["reason=\"invalid_key\""]).await,
        5.0
    );
    assert_eq!(
        metric_at(&c, &admin, AUTH_FAILURES, &["reason=\"rate_limited\""]).await,
        195.0
    );
    // Another client IP is unaffected, and a valid key still works there.
    let r = send(
        c.post(format!("{base}/sessions"))
            .header("x-forwarded-for", "198.51.100.7")
            .header("x-api-key", KEY_A),
    )
    .await;
    assert_eq!(r.status, 201, "{r:?}");
    // Audit lines are folded: 5 denials, one "limited" line, not 200 lines.
    let log = p.log();
    let audit: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "audit" && v["action"] == "auth")
        .collect();
    let denied = audit.iter().filter(|v| v["outcome"] == "denied").count();
    let limited = audit.iter().filter(|v| v["outcome"] == "limited").count();
    assert_eq!((denied, limited), (5, 1), "{audit:#?}");
    assert!(audit.iter().all(|v| v["ip"] == attacker), "{audit:#?}");
}

/// Deterministic pseudo-random bytes (xorshift).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn token(&mut self, max: usize) -> String {
        const T: &[u8] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^_`|~";
        let n = 1 + (self.next() as usize) % max;
        (0..n)
            .map(|_| T[(self.next() as usize) % T.len()] as char)
            .collect()
    }
}

const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH",
];

/// A request path of shape `shape` (0..7) with content from `rng` (`None`: a fixed one).
fn path(shape: u64, rng: Option<&mut Rng>) -> String {
    let (good, bad) = match rng {
        // Valid session-id bytes, and bytes outside the id alphabet.
        Some(r) => (
            r.token(20)
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
                + "x",
            format!("{}!", r.token(20).replace(['%', '#', '?', '/'], "")),
        ),
        None => ("valid-id".to_string(), "bad!id".to_string()),
    };
    match shape {
        0 => format!("/{good}"),
        1 => format!("/sessions/{good}"),
        2 => format!("/sessions/{bad}"),
        3 => format!("/admin/{good}"),
        4 => "/sessions".to_string(),
        5 => format!("/sessions/{good}/messages"),
        _ => format!("/sessions/{bad}/messages"),
    }
}

async fn request(c: &reqwest::Client, base: &str, method: &str, path: &str) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("token method");
    // Any answer (or a refused request) is fine: only the series matter.
    let _ = c.request(m, format!("{base}{path}")).send().await;
}

/// One request of every (method label, path shape): every series these can make.
async fn every_shape(c: &reqwest::Client, base: &str) {
    for m in METHODS.iter().copied().chain(["BREW"]) {
        for shape in 0..7 {
            request(c, base, m, &path(shape, None)).await;
        }
    }
}

/// `n` requests with random methods (a quarter standard, the rest made up, up to 40
/// bytes) and paths of random shape and content.
async fn random_requests(c: &reqwest::Client, base: &str, rng: &mut Rng, n: usize) {
    for _ in 0..n {
        let method = if rng.next().is_multiple_of(4) {
            METHODS[(rng.next() % METHODS.len() as u64) as usize].to_string()
        } else {
            rng.token(40).to_ascii_uppercase()
        };
        let shape = rng.next() % 7;
        let p = path(shape, Some(rng));
        request(c, base, &method, &p).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metric_series_stay_bounded_under_random_methods_and_paths() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), "")).await;
    let c = client();
    let proxy_metrics = format!("{}/metrics", p.admin_base());
    let worker_metrics = format!("{}/metrics", workers[0].base());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // One request of every (method label, path shape) creates the series the bounded
    // label sets allow; 1000 requests with random methods and paths must add none, through
    // the proxy and directly at the worker.
    for base in [p.base(), workers[0].base()] {
        every_shape(&c, &base).await;
    }
    // (a first scrape: the scrape itself is a request the worker counts)
    let _ = text(&c, &worker_metrics).await;
    let (p1, w1) = (
        series(&text(&c, &proxy_metrics).await),
        series(&text(&c, &worker_metrics).await),
    );
    for base in [p.base(), workers[0].base()] {
        random_requests(&c, &base, &mut rng, 500).await;
    }
    let (pt, wt) = (
        text(&c, &proxy_metrics).await,
        text(&c, &worker_metrics).await,
    );
    let (p2, w2) = (series(&pt), series(&wt));
    println!(
        "series before and after 1000 random requests: proxy {} -> {}, worker {} -> {}",
        p1.len(),
        p2.len(),
        w1.len(),
        w2.len()
    );
    assert_eq!(
        p2.difference(&p1).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "new proxy series"
    );
    assert_eq!(
        w2.difference(&w1).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "new worker series"
    );
    // No raw method became a label.
    for t in [&pt, &wt] {
        for line in t.lines().filter(|l| l.contains("method=\"")) {
            let m = line
                .split("method=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default();
            assert!(
                hotplex_common::metrics::METHOD_LABELS.contains(&m)
                    || m == hotplex_common::metrics::OTHER_METHOD,
                "raw method label {m:?}: {line}"
            );
        }
    }
}

/// The status line of a raw HTTP/1.1 exchange on `addr`: writes `head`, then `chunks`
/// (`pause` between them), and reads the answer (the proxy may answer early and close).
async fn raw_status(
    addr: std::net::SocketAddr,
    head: String,
    chunks: Vec<Vec<u8>>,
    pause: std::time::Duration,
) -> String {
    let answer = raw_answer(addr, head, chunks, pause).await;
    answer.lines().next().unwrap_or_default().to_string()
}

/// The whole answer (head and body) to `head` then `chunks`, `pause` apart.
async fn raw_answer(
    addr: std::net::SocketAddr,
    head: String,
    chunks: Vec<Vec<u8>>,
    pause: std::time::Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("head");
    for c in &chunks {
        if s.write_all(c).await.is_err() {
            break; // answered and closed early
        }
        // allow-sleep: a slow client: its bytes are spaced on purpose (the body deadline is under test)
        tokio::time::sleep(pause).await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_are_limited_and_read_whole_before_any_worker_sees_them() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(
        &worker_list(&workers),
        &format!(
            "limits:\n  max_body_bytes: 1000\n  body_read_timeout: 1s\ntls:\n  listen: \"{ANY_PORT}\"\n"
        ),
    ))
    .await;
    let tls = p.tls.expect("TLS listener");
    let c = client();
    let (id, _) = create(&c, &p.base()).await;
    let worker_seen = |t: String| {
        hotplex_e2e::metric_value(
            &t,
            &format!("{}_count", names::shared::REQUEST_DURATION_SECONDS),
            &["route=\"/sessions/{id}/messages\""],
        )
        .unwrap_or(0.0)
    };
    let before = worker_seen(text(&c, &format!("{}/metrics", workers[0].base())).await);

    // HTTP/1.1 chunked, 5 x 1000 bytes against a 1000-byte limit: 413 as soon as it crosses.
    let chunk = |n: usize| {
        let mut v = format!("{n:x}\r\n").into_bytes();
        v.extend(std::iter::repeat_n(b'x', n));
        v.extend_from_slice(b"\r\n");
        v
    };
    let head = format!(
        "POST /sessions/{id}/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    );
    let status = raw_status(
        p.listen,
        head.clone(),
        (0..5).map(|_| chunk(1000)).collect(),
        std::time::Duration::from_millis(20),
    )
    .await;
    assert!(status.contains(" 413 "), "chunked over the limit: {status}");

    // HTTP/2 without Content-Length (a streamed body): the same.
    let h2 = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client");
    let stream = futures_util::stream::iter(
        (0..5).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 1000]))),
    );
    let r = h2
        .post(format!("https://{tls}/sessions/{id}/messages"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("h2 request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 413, "h2 body over the limit");

    // A small chunked body within the limit still works.
    let ok = format!("{{\"prompt\":\"{}\"}}", "z".repeat(100));
    let body = format!("{:x}\r\n{ok}\r\n0\r\n\r\n", ok.len()).into_bytes();
    let status = raw_status(
        p.listen,
        head.replace("HTTP/1.1\r\n", "HTTP/1.1\r\nConnection: close\r\n"),
        vec![body],
        std::time::Duration::ZERO,
    )
    .await;
    assert!(
        status.contains(" 200 "),
        "chunked within the limit: {status}"
    );
    let after_ok = worker_seen(text(&c, &format!("{}/metrics", workers[0].base())).await);
    assert_eq!(
        after_ok,
        before + 1.0,
        "only the good body reached the worker"
    );

    // Slow bodies: 20 creates trickling 1 byte every 150 ms never finish within 1 s:
    // 408, and no session is created.
    let sessions = |t: String| {
        hotplex_e2e::metric_value(&t, names::shared::SESSIONS_ACTIVE, &[]).unwrap_or(-1.0)
    };
    let active = sessions(text(&c, &format!("{}/metrics", workers[0].base())).await);
    let slow: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(raw_status(
                p.listen,
                "POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n".into(),
                (0..50).map(|_| b"x".to_vec()).collect(),
                std::time::Duration::from_millis(150),
            ))
        })
        .collect();
    for s in slow {
        let status = s.await.expect("task");
        assert!(status.contains(" 408 "), "slow body: {status}");
    }
    let after = sessions(text(&c, &format!("{}/metrics", workers[0].base())).await);
    assert_eq!(after, active, "a slow body created a session");
    // A create announcing more than the edge buffers (and than max_body_bytes, default
    // 64 KiB): 413 before anything is read.
    let p2 = spawn_proxy(&proxy_yaml(&worker_list(&workers), "")).await;
    let status = raw_status(
        p2.listen,
        "POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n".into(),
        vec![],
        std::time::Duration::ZERO,
    )
    .await;
    assert!(status.contains(" 413 "), "{status}");
}

/// Bodies over the 64 KiB the edge reads whole: refused by default before anything is
/// read; with `limits.allow_streamed_bodies` they stream, but must be complete within
/// `body_read_timeout` in total (a trickle that keeps every read short gets 408 all the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_over_the_edge_buffer_need_the_opt_in_and_a_deadline() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let c = client();
    let messages_seen = |t: String| {
        hotplex_e2e::metric_value(
            &t,
            &format!("{}_count", names::shared::REQUEST_DURATION_SECONDS),
            &["route=\"/sessions/{id}/messages\""],
        )
        .unwrap_or(0.0)
    };
    let big = |id: &str, n: usize| {
        format!(
            "POST /sessions/{id}/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {n}\r\n\r\n"
        )
    };
    // The default: 413 from the head alone, the worker sees nothing.
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), "")).await;
    let (id, _) = create(&c, &p.base()).await;
    let before = messages_seen(text(&c, &format!("{}/metrics", workers[0].base())).await);
    let status = raw_status(
        p.listen,
        big(&id, 100_000),
        vec![],
        std::time::Duration::ZERO,
    )
    .await;
    assert!(status.contains(" 413 "), "over the edge buffer: {status}");
    let after = messages_seen(text(&c, &format!("{}/metrics", workers[0].base())).await);
    assert_eq!(after, before, "a refused body reached the worker");

    // Opted in: a 100 KB prompt sent at once is proxied whole...
    let p = spawn_proxy(&proxy_yaml(
        &worker_list(&workers),
        "limits:\n  allow_streamed_bodies: true\n  max_body_bytes: 1048576\n  body_read_timeout: 1s\n",
    ))
    .await;
    let (id, _) = create(&c, &p.base()).await;
    let prompt = format!("{{\"prompt\":\"{}\"}}", "p".repeat(100_000));
    let status = raw_status(
        p.listen,
        big(&id, prompt.len()),
        vec![prompt.clone().into_bytes()],
        std::time::Duration::ZERO,
    )
    .await;
    assert!(status.contains(" 200 "), "streamed in time: {status}");
    // ...and one trickling 40 chunks 100 ms apart (4 s > 1 s, every read well under it)
    // is cut at the deadline with 408, long before its last byte.
    let chunks: Vec<Vec<u8>> = prompt
        .as_bytes()
        .chunks(prompt.len() / 40 + 1)
        .map(<[u8]>::to_vec)
        .collect();
    let started = std::time::Instant::now();
    let answer = raw_answer(
        p.listen,
        big(&id, prompt.len()),
        chunks,
        std::time::Duration::from_millis(100),
    )
    .await;
    let status = answer.lines().next().unwrap_or_default();
    assert!(
        status.contains(" 408 "),
        "a trickle past the deadline: {status}"
    );
    // The same answer as a buffered body late (the catalogue's `body_timeout`), not a
    // bare status.
    assert!(
        answer.contains(r#""error":"body_timeout""#),
        "a streamed body late gets body_timeout: {answer}"
    );
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_millis(3500),
        "cut near the 1 s deadline, not at the end of the 4 s trickle: {took:?}"
    );
}

/// A masked client frame: `first` is the FIN/RSV/opcode byte.
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// The close code of the first close frame in server bytes (unmasked frames).
fn close_code_in(mut bytes: &[u8]) -> Option<u16> {
    while bytes.len() >= 2 {
        let (op, len7) = (bytes[0] & 0x0f, usize::from(bytes[1] & 0x7f));
        let (len, head) = match len7 {
            126 => (
                usize::from(u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?])),
                4,
            ),
            127 => (
                usize::try_from(u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?)).ok()?,
                10,
            ),
            n => (n, 2),
        };
        let payload = bytes.get(head..head + len)?;
        if op == 8 {
            return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
        bytes = &bytes[head + len..];
    }
    None
}

/// The close code a worker answers `frame` with, on a raw WebSocket straight to it. Raw,
/// because the worker may refuse an oversized message from its header and close (with
/// the rest of it unread, a reset) while the client is still writing: the write errors
/// are expected, the close frame is read all the same.
async fn close_code_for(addr: std::net::SocketAddr, frame: Vec<u8>) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        b"GET /ws/v1/agent HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .expect("handshake");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut b))
            .await
            .expect("101")
            .expect("read");
        assert!(n == 1, "closed during the handshake: {head:?}");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    for chunk in frame.chunks(64 * 1024) {
        if s.write_all(chunk).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                out.extend_from_slice(&buf[..n]);
                if let Some(code) = close_code_in(&out) {
                    return Some(code);
                }
            }
            _ => return close_code_in(&out),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_errors_close_with_rfc_codes() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let addr = workers[0].addr;
    // Over the worker's 1 MiB message limit: 1009.
    let big = client_frame(0x81, &vec![b'x'; 2 * 1024 * 1024]);
    assert_eq!(close_code_for(addr, big).await, Some(1009));
    // A text frame that is not UTF-8: 1007.
    let bad = client_frame(0x81, &[0xff, 0xfe, 0xfd]);
    assert_eq!(close_code_for(addr, bad).await, Some(1007));
    // A reserved bit set without an extension: 1002.
    let rsv = client_frame(0x81 | 0x40, b"{}");
    assert_eq!(close_code_for(addr, rsv).await, Some(1002));
    // The worker still serves.
    let r = send(client().get(format!("{}/health/live", workers[0].base()))).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_the_worker_resets_is_a_stream_error_not_a_502() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = fake_upstream::start(fake_upstream::Mode::UpgradeReset).await;
    let p = spawn_proxy(&proxy_yaml(&[("w1", up.addr)], "")).await;
    let c = client();
    let mut s = tokio::net::TcpStream::connect(p.listen)
        .await
        .expect("connect");
    s.write_all(
        b"GET /ws/v1/agent HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .expect("upgrade");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    assert!(!text.contains(" 502 "), "{text}");
    let m = metrics_when(&c, &p, |t| {
        hotplex_e2e::metric_value(
            t,
            hotplex_common::names::proxy::STREAM_ERRORS,
            &["kind=\"websocket\""],
        ) >= Some(1.0)
    })
    .await;
    assert_eq!(
        hotplex_e2e::metric_value(
            &m,
            hotplex_common::names::proxy::REJECTIONS,
            &["reason=\"bad_gateway\""]
        ),
        Some(0.0),
        "{m}"
    );
}
