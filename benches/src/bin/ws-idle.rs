//! `ws-idle`: opens `--connections` WebSocket sessions to `--url` (`%i` in the URL is the
//! session index), proves each with one echo round trip, writes
//! `opened=N failed=F retried=R` to `--ready-file` and holds them all idle for `--hold`
//! seconds (the bench reads the proxy's memory meanwhile), then proves them again and
//! prints `connections=C opened=N failed=F retried=R alive_after_hold=A`.
//! A session whose first echo fails is reopened once (`retried`; pingora issue 946 can
//! tear a fresh tunnel down). Loopback benchmarking only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hotplex_bench::parse_header;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async, WebSocketStream};

/// One round trip may take this long before the session counts as failed.
const ECHO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(about = "Idle WebSocket sessions for benches/load_bench.sh (loopback only)")]
struct Args {
    /// ws://IP:PORT/path?query; `%i` is replaced by the session index.
    #[arg(long)]
    url: String,
    /// Sessions to open.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Seconds to hold them idle after the ready file is written.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// File written once every session is open (or failed).
    #[arg(long)]
    ready_file: Option<std::path::PathBuf>,
    /// Extra request header "Name: value" (repeatable; `%i` = the session index).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Sessions being opened at once.
    #[arg(long, default_value_t = 100)]
    open_concurrency: usize,
}

type Ws = WebSocketStream<TcpStream>;

async fn echo(ws: &mut Ws, text: &str) -> Result<(), String> {
    ws.send(Message::text(text.to_string()))
        .await
        .map_err(|e| format!("send: {e}"))?;
    let deadline = tokio::time::Instant::now() + ECHO_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err("echo timed out".into()),
            Ok(None) => return Err("closed".into()),
            Ok(Some(Err(e))) => return Err(format!("read: {e}")),
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == text => return Ok(()),
            Ok(Some(Ok(Message::Close(_)))) => return Err("closed by peer".into()),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

async fn open(url: &str, headers: &[(String, String)], idx: usize) -> Result<Ws, String> {
    let url = url.replace("%i", &idx.to_string());
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| format!("{url}: {e}"))?;
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("{k}: {e}"))?;
        let v = v.replace("%i", &idx.to_string());
        let value = HeaderValue::from_str(&v).map_err(|e| format!("{k}: {e}"))?;
        req.headers_mut().insert(name, value);
    }
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .ok_or("URL without host:port")?;
    let tcp = TcpStream::connect(&host)
        .await
        .map_err(|e| format!("connect {host}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut ws, resp) = client_async(req, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    if resp.status().as_u16() != 101 {
        return Err(format!("status {}", resp.status()));
    }
    echo(&mut ws, &format!("hello-{idx}")).await?;
    Ok(ws)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let mut headers = Vec::new();
    for h in &args.headers {
        let Some(kv) = parse_header(h) else {
            eprintln!("ws-idle: --header {h:?}: expected \"Name: value\"");
            std::process::exit(2);
        };
        headers.push(kv);
    }
    let headers = Arc::new(headers);
    let failed = Arc::new(AtomicU64::new(0));
    let retried = Arc::new(AtomicU64::new(0));
    let url = Arc::new(args.url.clone());
    let opened: Vec<Ws> = futures_util::stream::iter(0..args.connections)
        .map(|i| {
            let (url, headers, failed, retried) = (
                url.clone(),
                headers.clone(),
                failed.clone(),
                retried.clone(),
            );
            async move {
                match open(&url, &headers, i).await {
                    Ok(ws) => Some(ws),
                    Err(first) => {
                        retried.fetch_add(1, Ordering::Relaxed);
                        match open(&url, &headers, i).await {
                            Ok(ws) => Some(ws),
                            Err(e) => {
                                if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                                    eprintln!("ws-idle: session {i}: {first}; then {e}");
                                }
                                None
                            }
                        }
                    }
                }
            }
        })
        .buffer_unordered(args.open_concurrency.max(1))
        .filter_map(|w| async move { w })
        .collect()
        .await;
    let (f, r) = (
        failed.load(Ordering::Relaxed),
        retried.load(Ordering::Relaxed),
    );
    let status = format!("opened={} failed={f} retried={r}\n", opened.len());
    if let Some(p) = &args.ready_file {
        if let Err(e) = std::fs::write(p, &status) {
            eprintln!("ws-idle: {}: {e}", p.display());
        }
    }
    eprint!("ws-idle: {status}");
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    let n = opened.len();
    let alive: usize = futures_util::stream::iter(opened.into_iter().enumerate())
        .map(|(i, mut ws)| async move {
            let ok = echo(&mut ws, &format!("again-{i}")).await.is_ok();
            let _ = ws.close(None).await;
            usize::from(ok)
        })
        .buffer_unordered(args.open_concurrency.max(1))
        .fold(0, |a, b| async move { a + b })
        .await;
    println!(
        "connections={} opened={n} failed={f} retried={r} alive_after_hold={alive}",
        args.connections
    );
}
