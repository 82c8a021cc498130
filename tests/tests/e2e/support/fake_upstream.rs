//! A small in-test fake worker (test double at the network boundary) for the reliability
//! tests: answers `/health/ready` like a worker and, for every other request, behaves per
//! [`Mode`]. Every non-health request it parses is logged (method, target, body, connection
//! number), so a test can prove exactly what reached the upstream side of the proxy.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How non-health requests are answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// 200 JSON `{"method","target","body_len","conn"}`, keep-alive.
    Echo,
    /// Like `Echo` after sleeping this long.
    Slow(Duration),
    /// Reads the request, then resets the connection (SO_LINGER 0).
    Reset,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Answers a status line with an invalid header block and a lying Content-Length.
    Malformed,
    /// Answers `101 Switching Protocols`, then resets the connection after 100 ms (a
    /// WebSocket tunnel the worker breaks).
    UpgradeReset,
    /// For `.../messages`: an SSE response (chunked) of this many bytes, written as fast as
    /// the proxy reads; other requests are echoed.
    Sse(u64),
}

/// One request seen by the fake upstream.
#[derive(Debug, Clone)]
pub struct Seen {
    pub conn: u64,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A running fake upstream.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// Requests it could not parse (a desync would show up here).
    pub parse_errors: Arc<AtomicU64>,
    pub conns: Arc<AtomicU64>,
    /// Body bytes written by `Mode::Sse` responses.
    pub streamed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeUpstream {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

pub async fn start(mode: Mode) -> FakeUpstream {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
    let addr = l.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let parse_errors = Arc::new(AtomicU64::new(0));
    let conns = Arc::new(AtomicU64::new(0));
    let streamed = Arc::new(AtomicU64::new(0));
    let (s, p, c, st) = (
        seen.clone(),
        parse_errors.clone(),
        conns.clone(),
        streamed.clone(),
    );
    let task = tokio::spawn(async move {
        loop {
            let Ok((sock, _)) = l.accept().await else {
                continue;
            };
            let n = c.fetch_add(1, Ordering::Relaxed);
            let (s, p, st) = (s.clone(), p.clone(), st.clone());
            tokio::spawn(async move {
                let _ = serve(sock, n, mode, s, p, st).await;
            });
        }
    });
    FakeUpstream {
        addr,
        seen,
        parse_errors,
        conns,
        streamed,
        task,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn fill(sock: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut tmp = [0u8; 8192];
    let n = sock.read(&mut tmp).await?;
    buf.extend_from_slice(&tmp[..n]);
    Ok(n > 0)
}

/// Reads one request strictly (CRLF only, Content-Length or chunked). `Ok(None)`: clean EOF.
async fn read_request(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
    conn: u64,
) -> Result<Option<Seen>, String> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > 64 * 1024 {
            return Err("head too long".into());
        }
        match fill(sock, buf).await {
            Ok(true) => {}
            Ok(false) if buf.is_empty() => return Ok(None),
            _ => return Err("eof in head".into()),
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).map_err(|_| "non-utf8 head")?;
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some("HTTP/1.1"), None) =
        (method, target, version, parts.next())
    else {
        return Err(format!("bad request line {line:?}"));
    };
    let mut headers = Vec::new();
    for l in lines {
        if l.contains('\n') || l.starts_with([' ', '\t']) {
            return Err(format!("bad header line {l:?}"));
        }
        let (k, v) = l.split_once(':').ok_or(format!("no colon in {l:?}"))?;
        if k.is_empty() || k.contains([' ', '\t']) {
            return Err(format!("bad header name {k:?}"));
        }
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let get = |n: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let cl = get("content-length");
    let te = get("transfer-encoding");
    if !te.is_empty() && !cl.is_empty() {
        return Err("both CL and TE forwarded".into());
    }
    if cl.len() > 1 {
        return Err("several Content-Length forwarded".into());
    }
    let mut body = Vec::new();
    if te.len() == 1 && te[0].eq_ignore_ascii_case("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                if !fill(sock, buf).await.map_err(|e| e.to_string())? {
                    return Err("eof in chunk size".into());
                }
            };
            let size_s = String::from_utf8_lossy(&buf[..line_end]).to_string();
            let size = usize::from_str_radix(size_s.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_s:?}"))?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                if !fill(sock, buf).await.map_err(|e| e.to_string())? {
                    return Err("eof in chunk".into());
                }
            }
            if &buf[size..size + 2] != b"\r\n" {
                return Err("chunk not followed by CRLF".into());
            }
            body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else if !te.is_empty() {
        return Err(format!("unsupported transfer-encoding {te:?}"));
    } else if let Some(cl) = cl.first() {
        let n: usize = cl
            .parse()
            .map_err(|_| format!("bad content-length {cl:?}"))?;
        while buf.len() < n {
            if !fill(sock, buf).await.map_err(|e| e.to_string())? {
                return Err("eof in body".into());
            }
        }
        body = buf.drain(..n).collect();
    }
    Ok(Some(Seen {
        conn,
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body,
    }))
}

async fn serve(
    mut sock: TcpStream,
    conn: u64,
    mode: Mode,
    seen: Arc<Mutex<Vec<Seen>>>,
    parse_errors: Arc<AtomicU64>,
    streamed: Arc<AtomicU64>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let req = match read_request(&mut sock, &mut buf, conn).await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(e) => {
                if !e.starts_with("eof") {
                    eprintln!("fake upstream: parse error on conn {conn}: {e}");
                    parse_errors.fetch_add(1, Ordering::Relaxed);
                }
                return Ok(());
            }
        };
        if req.target.starts_with("/health/") {
            let body = r#"{"status":"ready","sessions_active":0,"max_sessions":1000}"#;
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(resp.as_bytes()).await?;
            continue;
        }
        if let Ok(mut v) = seen.lock() {
            v.push(req.clone());
        }
        // `Sse` streams only `.../messages`; everything else is echoed.
        let mode = match mode {
            Mode::Sse(_) if !req.target.ends_with("/messages") => Mode::Echo,
            m => m,
        };
        match mode {
            Mode::Echo | Mode::Slow(_) => {
                if let Mode::Slow(d) = mode {
                    // allow-sleep: Mode::Slow: the upstream answers late on purpose
                    tokio::time::sleep(d).await;
                }
                let body = serde_json::json!({
                    "method": req.method, "target": req.target,
                    "body_len": req.body.len(), "conn": conn,
                })
                .to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                sock.write_all(resp.as_bytes()).await?;
            }
            Mode::Sse(total) => {
                sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await?;
                let event = format!("data: {}\n\n", "x".repeat(16 * 1024 - 8));
                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                let mut sent = 0u64;
                while sent < total {
                    sock.write_all(chunk.as_bytes()).await?;
                    sent += event.len() as u64;
                    streamed.fetch_add(event.len() as u64, Ordering::Relaxed);
                }
                sock.write_all(b"0\r\n\r\n").await?;
            }
            Mode::UpgradeReset => {
                sock.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
                )
                .await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                #[allow(deprecated)]
                sock.set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            Mode::Reset => {
                // Linger 0 on a non-blocking socket: the drop sends RST and never blocks.
                #[allow(deprecated)]
                sock.set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            Mode::Garbage => {
                sock.write_all(b"\x00\x01garbage that is not HTTP at all\r\n\r\n")
                    .await?;
                return Ok(());
            }
            Mode::Malformed => {
                sock.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\nbad header line\r\n\x01\x02: x\r\n\r\nshort",
                )
                .await?;
                return Ok(());
            }
        }
    }
}
