//! `sse-load`: holds `--connections` concurrent SSE streams (HTTP/1.1, one per TCP
//! connection) to `--url`, then counts for `--duration` seconds the events delivered and
//! each event's delivery latency (receive time minus the `data: <unix ns>` stamp the
//! backend put in it). Prints one line:
//! `connections=C events=N events_per_s=X p50_ms=A p99_ms=B errors=E`.
//! Loopback benchmarking only (plain `http://ip:port` URLs).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hotplex_bench::{parse_head, parse_header, percentile, take_events, unix_nanos, Dechunker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(about = "SSE stream load for benches/load_bench.sh (loopback only)")]
struct Args {
    /// http://IP:PORT/path?query; `%i` is replaced by the stream index (distinct keys).
    #[arg(long)]
    url: String,
    /// Concurrent streams.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Measured window, seconds (after every stream is open).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Extra request header "Name: value" (repeatable; `%i` = the stream index).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    open_concurrency: usize,
}

struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or("only http:// URLs are supported")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = host
        .parse::<SocketAddr>()
        .map_err(|e| format!("{host}: {e} (use IP:PORT)"))?;
    Ok(Target {
        addr,
        host: host.to_string(),
        path: path.to_string(),
    })
}

#[derive(Default)]
struct Shared {
    errors: AtomicU64,
    opened: AtomicU64,
}

/// One stream: connect, request, then decode events; latencies (µs) of events received
/// inside `[start, end)` are returned.
async fn stream(
    t: Arc<Target>,
    idx: usize,
    head_extra: Arc<String>,
    shared: Arc<Shared>,
    window: Arc<tokio::sync::OnceCell<(Instant, Instant)>>,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Vec<u64> {
    let mut permit = Some(permit);
    let mut lat = Vec::new();
    let fail = |why: String| {
        if shared.errors.fetch_add(1, Ordering::Relaxed) < 5 {
            eprintln!("sse-load: stream {idx}: {why}");
        }
    };
    let mut s = match TcpStream::connect(t.addr).await {
        Ok(s) => s,
        Err(e) => {
            fail(format!("connect: {e}"));
            return lat;
        }
    };
    let _ = s.set_nodelay(true);
    let path = t.path.replace("%i", &idx.to_string());
    let extra = head_extra.replace("%i", &idx.to_string());
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{extra}\r\n",
        t.host
    );
    if let Err(e) = s.write_all(req.as_bytes()).await {
        fail(format!("write: {e}"));
        return lat;
    }
    let mut raw = Vec::with_capacity(4096);
    let mut buf = vec![0u8; 16 * 1024];
    let (chunked, body_start) = loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => {
                fail("closed before the response head".into());
                return lat;
            }
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        match parse_head(&raw) {
            None if raw.len() > 64 * 1024 => {
                fail("response head too large".into());
                return lat;
            }
            None => continue,
            Some(Err(e)) => {
                fail(e);
                return lat;
            }
            Some(Ok((200, chunked, end))) => break (chunked, end),
            Some(Ok((status, _, _))) => {
                fail(format!("status {status}"));
                return lat;
            }
        }
    };
    shared.opened.fetch_add(1, Ordering::Relaxed);
    permit.take();
    let mut dechunk = Dechunker::default();
    let mut payload = Vec::with_capacity(4096);
    let mut feed = |bytes: &[u8], payload: &mut Vec<u8>| -> Result<(), String> {
        if chunked {
            dechunk.feed(bytes, payload)
        } else {
            payload.extend_from_slice(bytes);
            Ok(())
        }
    };
    if let Err(e) = feed(&raw[body_start..], &mut payload) {
        fail(e);
        return lat;
    }
    loop {
        let now = Instant::now();
        let events = take_events(&mut payload);
        if !events.is_empty() {
            if let Some(&(start, end)) = window.get() {
                if now >= end {
                    return lat;
                }
                if now >= start {
                    let recv = unix_nanos();
                    for ts in events.into_iter().flatten() {
                        lat.push((recv.saturating_sub(ts) / 1000) as u64);
                    }
                }
            }
        }
        let read = match window.get() {
            Some(&(_, end)) => match tokio::time::timeout_at(end.into(), s.read(&mut buf)).await {
                Ok(r) => r,
                Err(_) => return lat,
            },
            None => s.read(&mut buf).await,
        };
        match read {
            Ok(0) => {
                fail("stream ended".into());
                return lat;
            }
            Err(e) => {
                fail(format!("read: {e}"));
                return lat;
            }
            Ok(n) => {
                if let Err(e) = feed(&buf[..n], &mut payload) {
                    fail(e);
                    return lat;
                }
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let target = match parse_url(&args.url) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            eprintln!("sse-load: --url: {e}");
            std::process::exit(2);
        }
    };
    let mut extra = String::new();
    for h in &args.headers {
        let Some((k, v)) = parse_header(h) else {
            eprintln!("sse-load: --header {h:?}: expected \"Name: value\"");
            std::process::exit(2);
        };
        extra.push_str(&format!("{k}: {v}\r\n"));
    }
    let extra = Arc::new(extra);
    let shared = Arc::new(Shared::default());
    let window = Arc::new(tokio::sync::OnceCell::new());
    let sem = Arc::new(tokio::sync::Semaphore::new(args.open_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        // Released once the stream is open (or failed): bounds the connects in flight.
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let (t, e, sh, w) = (
            target.clone(),
            extra.clone(),
            shared.clone(),
            window.clone(),
        );
        tasks.push(tokio::spawn(stream(t, i, e, sh, w, permit)));
    }
    // Every stream opened (or failed), or 30 s: start the window half a second later.
    let deadline = Instant::now() + Duration::from_secs(30);
    while (shared.opened.load(Ordering::Relaxed) + shared.errors.load(Ordering::Relaxed))
        < args.connections as u64
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now() + Duration::from_millis(500);
    let end = start + Duration::from_secs_f64(args.duration);
    let _ = window.set((start, end));
    let mut lat = Vec::new();
    for t in tasks {
        // Every task returns at `end` at the latest (reads are bounded by it).
        if let Ok(v) = t.await {
            lat.extend(v);
        }
    }
    lat.sort_unstable();
    let n = lat.len();
    println!(
        "connections={} opened={} events={n} events_per_s={:.0} p50_ms={:.3} p99_ms={:.3} errors={}",
        args.connections,
        shared.opened.load(Ordering::Relaxed),
        n as f64 / args.duration,
        percentile(&lat, 50.0) as f64 / 1000.0,
        percentile(&lat, 99.0) as f64 / 1000.0,
        shared.errors.load(Ordering::Relaxed),
    );
}
