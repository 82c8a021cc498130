//! Reliability: proxy churn (20k short connections: fds, VmRSS, threads back to
//! baseline), many idle connections, a slow POST body, and a WebSocket frame flood; the
//! proxy stays responsive for other clients throughout.

use crate::support::fake_upstream;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::procs::{proc_stats, settle_fds};
use crate::support::proxy::*;
use fake_upstream::Mode;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// One `Connection: close` request on a new connection; the status (0 on failure).
async fn one_shot(addr: SocketAddr, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return 0;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    if !matches!(r, Ok(Ok(_))) {
        return 0;
    }
    std::str::from_utf8(out.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Latency probe: GETs through a fresh client every 50 ms until `stop`; (count, errors, max).
fn prober(base: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u32, u32, Duration)> {
    tokio::spawn(async move {
        let c = client();
        let (mut n, mut errors, mut worst) = (0u32, 0u32, Duration::ZERO);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let r = c
                .get(format!("{base}/sessions/probe"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            match r {
                Ok(r) if r.status() == 200 => n += 1,
                _ => errors += 1,
            }
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (n, errors, worst)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_of_20k_connections_returns_to_baseline() {
    let up = fake_upstream::start(Mode::Echo).await;
    // Idle pooled upstream connections expire after 1 s, so fds can return to baseline.
    let mut p = spawn_proxy(&proxy_yaml(
        &[("w1", up.addr)],
        "upstream:\n  keepalive_idle: 1s\n",
    ))
    .await;
    let pid = p.guard.pid();
    let total: usize = std::env::var("HOTPLEX_CHURN_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    // Warm-up (allocator arenas, pools), then the baseline.
    for _ in 0..500 {
        assert_eq!(one_shot(p.listen, "/sessions/warm").await, 200);
    }
    // allow-sleep: quiet period before the baseline (connections and arenas settle)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fd0, rss0, thr0) = proc_stats(pid);
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (next, failed, addr) = (next.clone(), failed.clone(), p.listen);
        tasks.push(tokio::spawn(async move {
            while (next.fetch_add(1, Ordering::Relaxed) as usize) < total {
                if one_shot(addr, "/sessions/churn").await != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let sampler = {
        let peak = peak.clone();
        let next = next.clone();
        tokio::spawn(async move {
            while (next.load(Ordering::Relaxed) as usize) < total {
                let (f, _, _) = proc_stats(pid);
                peak.fetch_max(f as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    for t in tasks {
        t.await.expect("churn task");
    }
    let _ = sampler.await;
    let took = start.elapsed();
    let (_, rss_peak, _) = proc_stats(pid);
    let fd1 = settle_fds(pid, fd0, Duration::from_secs(5)).await;
    // allow-sleep: quiet period before the after-figures (arenas settle)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, rss1, thr1) = proc_stats(pid);
    let failed = failed.load(Ordering::Relaxed);
    println!(
        "churn: {total} connections in {took:?} ({:.0}/s), {failed} failed; proxy fds {fd0} -> peak {} -> {fd1}; VmRSS {rss0} -> {rss_peak} -> {rss1} kB; threads {thr0} -> {thr1}",
        total as f64 / took.as_secs_f64(),
        peak.load(Ordering::Relaxed)
    );
    assert_eq!(failed, 0);
    assert!(fd1 <= fd0, "fds back to baseline: {fd0} -> {fd1}");
    assert!(thr1 <= thr0 + 2, "threads: {thr0} -> {thr1}");
    assert!(
        rss1 < rss0 + 32 * 1024,
        "VmRSS bounded: {rss0} -> {rss1} kB"
    );
    p.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_a_slow_post_do_not_block_others() {
    let up = fake_upstream::start(Mode::Echo).await;
    // Idle pooled upstream connections expire after 1 s, so fds can return to baseline.
    let p = spawn_proxy(&proxy_yaml(
        &[("w1", up.addr)],
        "upstream:\n  keepalive_idle: 1s\n",
    ))
    .await;
    let pid = p.guard.pid();
    assert_eq!(one_shot(p.listen, "/sessions/warm").await, 200);
    // allow-sleep: quiet period before the baseline (the warm-up connection closes)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (fd0, rss0, _) = proc_stats(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let probe = prober(p.base(), stop.clone());
    // 1000 idle connections: half silent, half with a partial request head.
    let mut idle = Vec::new();
    for i in 0..1000 {
        let mut s = TcpStream::connect(p.listen).await.expect("idle connect");
        if i % 2 == 0 {
            s.write_all(b"GET /sessions/idle HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("partial head");
        }
        idle.push(s);
    }
    // allow-sleep: the idle connections are held idle before they are measured
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (fd_idle, rss_idle, _) = proc_stats(pid);
    // A slow POST: 1000 bytes in 20 chunks, 100 ms apart.
    let slow_start = Instant::now();
    let mut s = TcpStream::connect(p.listen).await.expect("connect");
    s.write_all(b"POST /sessions/slowpost/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n")
        .await
        .expect("head");
    for _ in 0..20 {
        s.write_all(&[b'x'; 50]).await.expect("chunk");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("slow post answered")
        .expect("read");
    let slow_took = slow_start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (probes, probe_errors, worst) = probe.await.expect("probe");
    drop(idle);
    let fd1 = settle_fds(pid, fd0, Duration::from_secs(5)).await;
    let (_, rss1, _) = proc_stats(pid);
    println!(
        "1000 idle connections: proxy fds {fd0} -> {fd_idle} -> {fd1}, VmRSS {rss0} -> {rss_idle} -> {rss1} kB; \
         slow POST (1000 B over 2 s) answered in {slow_took:?}: {}; others: {probes} ok / {probe_errors} errors, worst {worst:?}",
        out.lines().next().unwrap_or_default()
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"body_len\":1000"), "{out}");
    assert_eq!(probe_errors, 0);
    assert!(probes > 10);
    assert!(
        worst < Duration::from_secs(1),
        "others stay responsive: {worst:?}"
    );
    assert!(fd1 <= fd0, "fds back to baseline: {fd0} -> {fd1}");
    assert!(
        rss1 < rss0 + 100 * 1024,
        "VmRSS bounded: {rss0} -> {rss1} kB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frame_flood_keeps_proxy_responsive() {
    let workers = spawn_workers(2, WorkerOpts::default()).await;
    let mut p = spawn_proxy(&proxy_yaml(&worker_list(&workers), "")).await;
    let pid = p.guard.pid();
    let c = client();
    let (sid, _) = create(&c, &p.base()).await;
    let (fd0, rss0, _) = proc_stats(pid);
    let stop = Arc::new(AtomicBool::new(false));
    // Probes a real session (whichever worker holds it).
    let probe = {
        let (base, stop, sid) = (p.base(), stop.clone(), sid.clone());
        tokio::spawn(async move {
            let c = client();
            let (mut n, mut errors, mut worst) = (0u32, 0u32, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let r = get_session(&c, &base, &sid).await;
                if r.status == 200 {
                    n += 1;
                } else {
                    errors += 1;
                }
                worst = worst.max(r.elapsed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (n, errors, worst)
        })
    };
    let url = format!("ws://{}/ws/v1/agent", p.listen);
    let (ws, _, _) = ws_connect_checked(&url, &[]).await;
    let (mut tx, mut rx) = ws.split();
    const FRAMES: u64 = 10_000;
    let reader = tokio::spawn(async move {
        let mut got = 0u64;
        while got < FRAMES {
            match tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
                Ok(Some(Ok(Message::Text(_)))) => got += 1,
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        got
    });
    let start = Instant::now();
    for i in 0..FRAMES {
        let f = serde_json::json!({"type":"stats","request_id": i + 1}).to_string();
        tx.feed(Message::text(f)).await.expect("ws feed");
    }
    tx.flush().await.expect("ws flush");
    let sent = start.elapsed();
    let got = reader.await.expect("reader");
    let all = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (probes, probe_errors, worst) = probe.await.expect("probe");
    let _ = tx.close().await;
    drop(c);
    let fd1 = settle_fds(pid, fd0, Duration::from_secs(5)).await;
    let (_, rss1, _) = proc_stats(pid);
    println!(
        "ws flood: {FRAMES} frames sent in {sent:?}, {got} answers in {all:?}; others {probes} ok / {probe_errors} errors, worst {worst:?}; \
         proxy fds {fd0} -> {fd1}, VmRSS {rss0} -> {rss1} kB"
    );
    assert_eq!(got, FRAMES, "every frame answered");
    assert_eq!(probe_errors, 0);
    assert!(
        worst < Duration::from_secs(1),
        "others stay responsive: {worst:?}"
    );
    assert!(fd1 <= fd0, "fds back to baseline: {fd0} -> {fd1}");
    p.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_client_that_never_reads_keeps_proxy_memory_bounded() {
    const OFFERED: u64 = 512 * 1024 * 1024;
    let up = fake_upstream::start(Mode::Sse(OFFERED)).await;
    let p = spawn_proxy(&proxy_yaml(
        &[("w1", up.addr)],
        "upstream:\n  keepalive_idle: 1s\n",
    ))
    .await;
    let pid = p.guard.pid();
    let (fd0, rss0, _) = proc_stats(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let probe = prober(p.base(), stop.clone());
    let mut s = TcpStream::connect(p.listen).await.expect("connect");
    s.write_all(b"POST /sessions/s1/messages HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .expect("request");
    let mut head = [0u8; 1024];
    let n = tokio::time::timeout(WAIT, s.read(&mut head))
        .await
        .expect("first bytes in time")
        .expect("read");
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    // Stop reading: the proxy must apply back-pressure, not buffer the stream.
    // allow-sleep: the client does not read for 2 s: back-pressure is measured over time
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at2 = up.streamed.load(Ordering::Relaxed);
    let (_, rss2, _) = proc_stats(pid);
    // allow-sleep: the client does not read for 2 more s: the stream must not grow
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at4 = up.streamed.load(Ordering::Relaxed);
    let (_, rss4, _) = proc_stats(pid);
    stop.store(true, Ordering::Relaxed);
    let (probes, probe_errors, worst) = probe.await.expect("probe");
    drop(s);
    let fd1 = settle_fds(pid, fd0, Duration::from_secs(5)).await;
    let (_, rss1, _) = proc_stats(pid);
    println!(
        "non-reading SSE client: upstream offered {} MB, wrote {:.1} MB after 2 s, {:.1} MB after 4 s; proxy VmRSS {rss0} -> {rss2} -> {rss4} -> {rss1} kB (after close); fds {fd0} -> {fd1}; others {probes} ok / {probe_errors} errors, worst {worst:?}",
        OFFERED >> 20,
        at2 as f64 / 1048576.0,
        at4 as f64 / 1048576.0
    );
    assert!(at4 < 64 * 1024 * 1024, "the stream is back-pressured");
    assert!(
        at4 - at2 < 4 * 1024 * 1024,
        "no progress while the client does not read"
    );
    assert!(
        rss4 < rss0 + 64 * 1024,
        "proxy memory bounded: {rss0} -> {rss4} kB"
    );
    assert_eq!(probe_errors, 0);
    assert!(fd1 <= fd0, "fds back to baseline: {fd0} -> {fd1}");
}
