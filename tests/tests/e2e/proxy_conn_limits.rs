//! Proxy e2e: connection limits and the request-head deadline (slowloris), against a real
//! proxy and real workers on loopback.
//!
//! - 500 slowloris connections dribbling header bytes are all closed after
//!   `limits.header_read_timeout` while normal clients keep getting 200s with bounded
//!   latency; `hotplex_proxy_header_read_timeouts_total` counts them.
//! - The deadline covers later keep-alive requests too, but never a request body, a
//!   WebSocket tunnel or a quiet keep-alive connection.
//! - `limits.max_connections_per_ip` / `limits.max_connections`: the (N+1)th connection gets
//!   `503 too_many_connections` while others are served (distinct client IPs by binding
//!   client sockets to 127.0.0.2.., all loopback); `hotplex_proxy_connections_active`
//!   returns to its baseline once clients close; a reload raises the limit live.
//! - Over TLS: a dribbled HTTP/1.1 head is closed the same way; an HTTP/2 connection (ALPN
//!   h2) that sends only its preface, or nothing, is closed (`limits.h2_idle_timeout`, the
//!   head deadline for the preface) and frees its slot: five such connections cannot lock
//!   out other clients under `limits.max_connections: 5`; real h2 requests work, and a
//!   connection idle past the timeout is closed and replaced.

use hotplex_common::names;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::proxy::*;
use hotplex_e2e::metric_value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const ACTIVE: &str = names::proxy::CONNECTIONS_ACTIVE;
const REFUSED: &str = names::proxy::CONNECTIONS_REFUSED;
const HEAD_TIMEOUTS: &str = names::proxy::HEADER_READ_TIMEOUTS;

/// Connects to `to` from the loopback address `from` (all of 127/8 is local on Linux).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().expect("socket");
    s.bind(SocketAddr::from((from, 0))).expect("bind client ip");
    s.connect(to).await.expect("connect")
}

/// Sends one keep-alive GET and reads one response; (status, body). Status 0 when the
/// connection closed without an answer.
async fn request(s: &mut TcpStream, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    read_response(s).await
}

/// Reads one response (head + `Content-Length` body).
async fn read_response(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                return (status, body);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (0, String::from_utf8_lossy(&buf).to_string()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no response within {WAIT:?}"),
        }
    }
}

/// Waits until the proxy closes `s` (EOF or reset); the time it took.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Option<Duration> {
    let t = Instant::now();
    let mut b = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(t.elapsed()), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

/// `name` once it equals `want`, or its last value after [`WAIT`].
async fn wait_metric(c: &reqwest::Client, p: &TestProxy, name: &str, want: f64) -> f64 {
    let value = |t: &str| metric_value(t, name, &[]).unwrap_or(0.0);
    value(&metrics_when(c, p, |t| value(t) == want).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_connections_are_closed_while_others_are_served() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let timeout = Duration::from_secs(2);
    let p = spawn_proxy(&proxy_yaml(
        &worker_list(&workers),
        "limits:\n  header_read_timeout: 2s\n  max_connections: 5000\n",
    ))
    .await;
    let c = client();
    let base_active = wait_metric(&c, &p, ACTIVE, 0.0).await;
    assert_eq!(base_active, 0.0, "no client connection open at the start");

    // Normal clients: a keep-alive client and fresh connections, every 50 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, base) = (stop.clone(), p.base());
        tokio::spawn(async move {
            let keep = client();
            let (mut ok, mut bad, mut worst) = (0u32, Vec::new(), Duration::ZERO);
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let c = if i.is_multiple_of(2) {
                    keep.clone()
                } else {
                    client()
                };
                let t = Instant::now();
                let r = c
                    .get(format!("{base}/health/live"))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => ok += 1,
                    Ok(r) => bad.push(r.status().to_string()),
                    Err(e) => bad.push(e.to_string()),
                }
                worst = worst.max(t.elapsed());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (ok, bad, worst)
        })
    };

    // 500 slowloris connections: a request line, then one header byte every 200 ms.
    let n = 500;
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..n {
        let addr = p.listen;
        slow.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("slow connect");
            let t0 = Instant::now();
            s.write_all(format!("GET /health/live?slow={i} HTTP/1.1\r\n").as_bytes())
                .await
                .expect("request line");
            let dribble = b"X-Slowloris: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let mut sent = 0usize;
            let mut buf = [0u8; 256];
            // Bounded: gives up (reported as "not closed") after 15 s.
            while t0.elapsed() < Duration::from_secs(15) {
                let b = dribble[sent % dribble.len()];
                if s.write_all(&[b]).await.is_err() {
                    return (Some(t0.elapsed()), sent, Vec::new());
                }
                sent += 1;
                match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return (Some(t0.elapsed()), sent, Vec::new()),
                    Ok(Ok(k)) => return (Some(t0.elapsed()), sent, buf[..k].to_vec()),
                    Err(_) => {}
                }
            }
            (None, sent, Vec::new())
        }));
    }
    // allow-sleep: the connections are held open under load for a while before the mid-load gauge is read
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let active_mid = metric(&c, &p, ACTIVE, &[]).await;

    let mut closed_after = Vec::new();
    let mut not_closed = 0;
    let mut answered = 0;
    for h in slow {
        let (closed, sent, data) = h.await.expect("slow task");
        match closed {
            Some(t) => closed_after.push((t, sent)),
            None => not_closed += 1,
        }
        if !data.is_empty() {
            answered += 1;
        }
    }
    let all_closed_in = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (ok, bad, worst) = prober.await.expect("prober");
    closed_after.sort();
    let (min, max) = (
        closed_after.first().map(|x| x.0).unwrap_or_default(),
        closed_after.last().map(|x| x.0).unwrap_or_default(),
    );
    let timeouts = metric(&c, &p, HEAD_TIMEOUTS, &[]).await;
    let active_end = wait_metric(&c, &p, ACTIVE, 0.0).await;
    println!(
        "slowloris: {n} connections (open at 1 s: {active_mid}); closed {} after {min:?}..{max:?} \
         (all within {all_closed_in:?}), {not_closed} not closed, {answered} got bytes; \
         header_read_timeouts_total {timeouts}; normal clients: {ok} ok, {} failed {:?}, worst {worst:?}; \
         connections_active back to {active_end}",
        closed_after.len(),
        bad.len(),
        bad.iter().take(3).collect::<Vec<_>>()
    );
    assert_eq!(not_closed, 0, "every slowloris connection is closed");
    assert_eq!(answered, 0, "a slow head gets no response");
    assert!(
        min >= timeout - Duration::from_millis(300),
        "not closed before the timeout: {min:?}"
    );
    assert!(
        max < timeout + Duration::from_secs(4),
        "closed soon after the timeout: {max:?}"
    );
    assert!(
        active_mid >= (n as f64) * 0.9,
        "slow connections were open and counted: {active_mid}"
    );
    assert!(timeouts >= n as f64, "metric counted them: {timeouts}");
    assert!(bad.is_empty(), "normal clients unaffected: {bad:?}");
    assert!(ok >= 20, "normal clients kept being served: {ok}");
    assert!(
        worst < Duration::from_secs(2),
        "bounded latency for normal clients: {worst:?}"
    );
    assert_eq!(active_end, 0.0, "connections_active back to baseline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_heads_are_timed_but_bodies_and_tunnels_are_not() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let p = spawn_proxy(&proxy_yaml(
        &worker_list(&workers),
        "limits:\n  header_read_timeout: 1s\n",
    ))
    .await;
    let c = client();

    // Keep-alive: a quiet connection between requests is not cut by the head deadline...
    let mut s = TcpStream::connect(p.listen).await.expect("connect");
    assert_eq!(request(&mut s, "/health/live").await.0, 200);
    // allow-sleep: the connection must stay idle past the head timeout (the timer is under test)
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        request(&mut s, "/health/live").await.0,
        200,
        "idle keep-alive connection still usable after 2.5 x the head timeout"
    );
    // ...but a dribbled second head is.
    s.write_all(b"GET /health/live HTTP/1.1\r\n")
        .await
        .expect("line");
    let t = Instant::now();
    let mut closed = false;
    while t.elapsed() < Duration::from_secs(6) {
        if s.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut b = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(_)) => panic!("slow keep-alive head got an answer"),
            Err(_) => {}
        }
    }
    let took = t.elapsed();
    assert!(closed, "slow keep-alive head closed");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after ~1 s: {took:?}"
    );

    // A slow request body (head complete at once) is never cut by the head deadline.
    let mut s = TcpStream::connect(p.listen).await.expect("connect");
    s.write_all(
        b"POST /sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n",
    )
    .await
    .expect("head");
    // allow-sleep: a slow body: bytes spaced past the head timeout (the timer is under test)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(b"{").await.expect("body 1");
    // allow-sleep: a slow body: bytes spaced past the head timeout (the timer is under test)
    tokio::time::sleep(Duration::from_millis(1000)).await;
    s.write_all(b"}").await.expect("body 2");
    let (status, body) = read_response(&mut s).await;
    assert_eq!(status, 201, "slow body answered: {body}");

    // A WebSocket tunnel idle for 3 x the timeout keeps working.
    let url = format!("ws://{}/ws/v1/agent", p.listen);
    let (mut ws, _resp, _attempts) = ws_connect_checked(&url, &[]).await;
    // allow-sleep: the tunnel must stay idle for 3 x the head timeout (the timer is under test)
    tokio::time::sleep(Duration::from_secs(3)).await;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let probe = serde_json::json!({"type":"version","request_id":7});
    ws.send(Message::text(probe.to_string()))
        .await
        .expect("ws send after idle");
    let got = tokio::time::timeout(WAIT, async {
        while let Some(m) = ws.next().await {
            let m = m.expect("frame");
            if let Ok(t) = m.to_text() {
                if t.contains("\"version\"") {
                    return true;
                }
            }
        }
        false
    })
    .await
    .expect("ws answer in time");
    assert!(got, "WebSocket tunnel still open after 3 s idle");
    let timeouts = metric(&c, &p, HEAD_TIMEOUTS, &[]).await;
    assert_eq!(timeouts, 1.0, "only the slow keep-alive head timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_per_ip_and_total_refuse_the_next_one() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let limits = |per_ip: u32| {
        format!("limits:\n  max_connections: 10\n  max_connections_per_ip: {per_ip}\n")
    };
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), &limits(4))).await;
    let c = client();
    let base = wait_metric(&c, &p, ACTIVE, 0.0).await;
    assert_eq!(base, 0.0);

    // 4 connections from 127.0.0.2: all served, kept open.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from([127, 0, 0, 2], p.listen).await;
        assert_eq!(request(&mut s, "/health/live").await.0, 200);
        held.push(s);
    }
    // The 5th from 127.0.0.2 is refused with a JSON 503...
    let mut fifth = connect_from([127, 0, 0, 2], p.listen).await;
    let (status, body) = request(&mut fifth, "/health/live").await;
    assert_eq!(status, 503, "5th connection from one IP refused: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json body");
    assert_eq!(v["error"], "too_many_connections");
    assert_eq!(v["limit"], "max_connections_per_ip");
    assert!(
        closed_within(&mut fifth, Duration::from_secs(3))
            .await
            .is_some(),
        "refused connection closed"
    );
    // ...while the first four and other IPs are still served.
    for s in held.iter_mut() {
        assert_eq!(request(s, "/health/live").await.0, 200);
    }
    for ip in [[127, 0, 0, 3], [127, 0, 0, 3], [127, 0, 0, 4]] {
        let mut s = connect_from(ip, p.listen).await;
        assert_eq!(request(&mut s, "/health/live").await.0, 200);
        held.push(s);
    }
    assert_eq!(metric(&c, &p, ACTIVE, &[]).await, 7.0);
    assert_eq!(
        metric(&c, &p, REFUSED, &["reason=\"max_connections_per_ip\""]).await,
        1.0
    );

    // Total limit (10): three more from new IPs fill it, the 11th is refused.
    for last in [5u8, 6, 7] {
        let mut s = connect_from([127, 0, 0, last], p.listen).await;
        assert_eq!(request(&mut s, "/health/live").await.0, 200);
        held.push(s);
    }
    let mut over = connect_from([127, 0, 0, 8], p.listen).await;
    let (status, body) = request(&mut over, "/health/live").await;
    assert_eq!(status, 503, "11th connection refused: {body}");
    assert!(body.contains("\"limit\":\"max_connections\""), "{body}");
    assert_eq!(
        metric(&c, &p, REFUSED, &["reason=\"max_connections\""]).await,
        1.0
    );
    assert_eq!(metric(&c, &p, ACTIVE, &[]).await, 10.0);

    // Clients close: back to the baseline.
    drop(held);
    drop(over);
    drop(fifth);
    assert_eq!(wait_metric(&c, &p, ACTIVE, 0.0).await, 0.0);

    // A reload raises the per-IP limit live: 6 from one IP now pass.
    let full = std::fs::read_to_string(&p.config_path).expect("config");
    std::fs::write(
        &p.config_path,
        full.replace("max_connections_per_ip: 4", "max_connections_per_ip: 6"),
    )
    .expect("rewrite config");
    let r = c
        .post(format!("{}/admin/reload", p.admin_base()))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 200, "reload: {:?}", r.text().await);
    let mut again = Vec::new();
    for i in 0..6 {
        let mut s = connect_from([127, 0, 0, 2], p.listen).await;
        assert_eq!(request(&mut s, "/health/live").await.0, 200, "conn {i}");
        again.push(s);
    }
    let mut seventh = connect_from([127, 0, 0, 2], p.listen).await;
    assert_eq!(request(&mut seventh, "/health/live").await.0, 503);
    drop((again, seventh));
    assert_eq!(wait_metric(&c, &p, ACTIVE, 0.0).await, 0.0);
}

/// A TLS connection offering only ALPN `http/1.1` (the dev certificate is not verified).
async fn tls_h1(addr: SocketAddr) -> tokio_openssl::SslStream<TcpStream> {
    tls_alpn(addr, b"\x08http/1.1").await
}

/// A TLS connection offering the ALPN protocols `alpn` (wire format).
async fn tls_alpn(addr: SocketAddr, alpn: &[u8]) -> tokio_openssl::SslStream<TcpStream> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut b = SslConnector::builder(SslMethod::tls()).expect("connector");
    b.set_verify(SslVerifyMode::NONE);
    b.set_alpn_protos(alpn).expect("alpn");
    let ssl = b
        .build()
        .configure()
        .expect("configure")
        .verify_hostname(false)
        .into_ssl("localhost")
        .expect("ssl");
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).expect("ssl stream");
    std::pin::Pin::new(&mut s)
        .connect()
        .await
        .expect("tls handshake");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_h1_heads_are_timed_and_idle_h2_connections_are_closed() {
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    // No certificate configured: the proxy's self-signed development certificate.
    let p = spawn_proxy(&proxy_yaml(
        &worker_list(&workers),
        &format!(
            "tls:\n  listen: \"{ANY_PORT}\"\nlimits:\n  header_read_timeout: 1s\n  h2_idle_timeout: 1s\n  max_connections: 5\n"
        ),
    ))
    .await;
    let tls = p.tls.expect("TLS listener");
    let c = client();

    // HTTP/1.1 over TLS: a dribbled head is closed after ~1 s.
    let mut s = tls_h1(tls).await;
    s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("partial head");
    let took = closed_within(&mut s, Duration::from_secs(5))
        .await
        .expect("TLS slowloris closed");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after ~1 s: {took:?}"
    );
    // A complete head over TLS is served.
    let mut s = tls_h1(tls).await;
    s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("head");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    drop(s);
    assert_eq!(wait_metric(&c, &p, ACTIVE, 0.0).await, 0.0);

    // HTTP/2 (ALPN h2), raw: five connections each sending the preface + SETTINGS, then
    // silent. With max_connections: 5 they hold every slot, until the h2 idle timeout
    // (1 s) closes them all and frees the slots.
    let mut idle = Vec::new();
    for _ in 0..5 {
        let mut h = tls_alpn(tls, b"\x02h2").await;
        assert_eq!(h.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
        h.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .expect("h2 preface");
        idle.push(h);
    }
    let t = Instant::now();
    for h in &mut idle {
        let took = closed_within(h, Duration::from_secs(6))
            .await
            .expect("idle h2 connection closed");
        assert!(took < Duration::from_secs(4), "closed after ~1 s: {took:?}");
    }
    assert!(
        t.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(
        wait_metric(&c, &p, ACTIVE, 0.0).await,
        0.0,
        "idle h2 connections released their slots"
    );
    drop(idle);
    // ALPN h2 and nothing at all: closed by the head deadline (the preface is the head).
    let mut h = tls_alpn(tls, b"\x02h2").await;
    let took = closed_within(&mut h, Duration::from_secs(5))
        .await
        .expect("silent h2 connection closed");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after ~1 s: {took:?}"
    );
    drop(h);
    assert_eq!(wait_metric(&c, &p, ACTIVE, 0.0).await, 0.0);

    // Real HTTP/2 requests; a connection idle for 2.5 x the timeout is closed, and the
    // client's next request opens a new one.
    let h2 = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(WAIT)
        .build()
        .expect("h2 client");
    let url = format!("https://{tls}/health/live");
    let r = h2.get(&url).send().await.expect("h2 request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(metric(&c, &p, ACTIVE, &[]).await, 1.0, "one h2 connection");
    assert_eq!(
        wait_metric(&c, &p, ACTIVE, 0.0).await,
        0.0,
        "idle h2 connection closed"
    );
    let r = h2.get(&url).send().await.expect("h2 request after idle");
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    // The dribbled TLS head and the silent h2 connection.
    assert_eq!(metric(&c, &p, HEAD_TIMEOUTS, &[]).await, 2.0);
    drop(h2);
}
