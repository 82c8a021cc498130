//! Reliability: proxy memory per idle client connection, and whether it goes back after
//! the connections close. Measured from `/proc/<pid>/status` (VmRSS, RssAnon) of the real
//! proxy process: baseline, with N keep-alive connections open and idle (each has served
//! one request, so its read buffer and session state exist), after closing them; then more
//! waves of N to tell "kept by the allocator for reuse" from "leaked".
//!
//! `HOTPLEX_IDLE_CONNS=N` changes N (default 2000).

use crate::support::fake_upstream;

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::procs::{proc_stats, rss_anon, settle_fds};
use crate::support::proxy::*;
use fake_upstream::Mode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a connection, makes one keep-alive request, reads the whole answer and returns
/// the still-open connection.
async fn idle_conn(addr: SocketAddr, i: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET /sessions/idle-{i} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut tmp = [0u8; 2048];
    loop {
        let n = tokio::time::timeout(WAIT, s.read(&mut tmp))
            .await
            .expect("answer in time")
            .expect("read");
        assert!(n > 0, "closed before the answer");
        buf.extend_from_slice(&tmp[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let cl: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .expect("content-length");
            if body.len() >= cl {
                assert!(head.starts_with("HTTP/1.1 200"), "{head}");
                return s;
            }
        }
    }
}

/// Opens `n` idle connections, 50 at a time.
async fn open_wave(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    for start in (0..n).step_by(50) {
        let batch = (start..(start + 50).min(n)).map(|i| idle_conn(addr, i));
        conns.extend(futures_util::future::join_all(batch).await);
    }
    conns
}

/// Waves of `n` connections: enough to tell a plateau (allocator reuse) from a floor that
/// rises with every wave (a leak).
const WAVES: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_memory_is_bounded_and_reused_after_close() {
    let n: usize = std::env::var("HOTPLEX_IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let up = fake_upstream::start(Mode::Echo).await;
    // Idle pooled upstream connections expire after 1 s, so fds can return to baseline.
    let mut p = spawn_proxy(&proxy_yaml(
        &[("w1", up.addr)],
        "upstream:\n  keepalive_idle: 1s\n",
    ))
    .await;
    let pid = p.guard.pid();
    // Warm-up: runtime, pools and allocator arenas exist before the baseline.
    drop(open_wave(p.listen, 200).await);
    // allow-sleep: quiet period before the baseline (pools and arenas settle)
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (fd0, rss0, _) = proc_stats(pid);
    let anon0 = rss_anon(pid);

    let mut waves = Vec::new();
    for wave in 1..=WAVES {
        let conns = open_wave(p.listen, n).await;
        // allow-sleep: the wave is held open before RSS is read
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (fd_open, rss_open, _) = proc_stats(pid);
        let anon_open = rss_anon(pid);
        drop(conns);
        let fd_closed = settle_fds(pid, fd0, Duration::from_secs(10)).await;
        // allow-sleep: returned memory is measured 1 s after close (the figure is 'within 1 s')
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let (_, rss_closed, _) = proc_stats(pid);
        let anon_closed = rss_anon(pid);
        let per_conn = (rss_open.saturating_sub(rss0)) as f64 / n as f64;
        println!(
            "wave {wave}: {n} idle keep-alive connections: fds {fd0} -> {fd_open} -> {fd_closed}; \
             VmRSS {rss0} -> {rss_open} -> {rss_closed} kB ({per_conn:.1} kB per open connection); \
             RssAnon {anon0} -> {anon_open} -> {anon_closed} kB"
        );
        assert!(fd_open >= fd0 + n, "the connections were open: {fd_open}");
        assert!(
            fd_closed <= fd0,
            "fds back to baseline: {fd0} -> {fd_closed}"
        );
        waves.push((rss_open, rss_closed));
    }
    let (open1, closed1) = waves[0];
    // Bounds (generous: debug build). jemalloc keeps freed pages for reuse until its decay
    // time (10 s) and returns some in between, so RSS after close moves up and down by a
    // few MB from wave to wave (measured: 110-124 MB over 8 waves of 2 000). Asserted:
    // - an open idle connection costs < 64 KiB;
    // - after close RSS is never above what it was with them open;
    // - bounded: no wave's peak exceeds the first's by more than a quarter of its cost;
    // - no leak: the lowest RSS after close in the last three waves is within 10 % of the
    //   first wave's cost of the second wave's (the allocator's working set is in place
    //   after two waves; a leak of 1 KB per connection would raise that floor by 2 MB per
    //   wave, 8 MB from wave 2 to wave 6).
    let cost1 = open1.saturating_sub(rss0);
    assert!(
        open1 < rss0 + 64 * n as u64,
        "per idle connection < 64 KiB: {rss0} -> {open1} kB"
    );
    for (i, (open, closed)) in waves.iter().enumerate() {
        assert!(
            *closed <= open + 1024,
            "wave {}: {open} -> {closed} kB",
            i + 1
        );
        assert!(
            *open <= open1 + cost1 / 4 + 1024,
            "wave {}: bounded by the first wave's peak: {open1} -> {open} kB",
            i + 1
        );
    }
    let floor = waves[WAVES - 3..]
        .iter()
        .map(|(_, closed)| *closed)
        .min()
        .unwrap_or(0);
    let closed2 = waves[1].1;
    assert!(
        floor <= closed2 + cost1 / 10 + 1024,
        "no growth per wave after close: {closed2} -> {floor} kB"
    );
    let returned = open1.saturating_sub(closed1) as f64 / cost1.max(1) as f64 * 100.0;
    println!(
        "returned to the OS within 1 s of close: {returned:.0} % of the {cost1} kB the first \
         wave cost; lowest RSS after close in the last three waves: {floor} kB (second: {closed2})"
    );
    p.assert_alive().await;
}
