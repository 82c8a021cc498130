//! `workload`: the load driver of `benches/workload.sh` (issue #21 item 3): HotPlex
//! traffic against real workers with a fast fake agent (`fake-agent`).
//!
//! `--sessions` slots, started at `--arrival-rate` per second. Each slot loops: create a
//! session, run `--turns` turns (each followed by `--think-ms` of think time), close the
//! WebSocket and delete the session, then start a new one: concurrency stays at
//! `--sessions` while new sessions keep arriving at a steady rate. A share `--ws-share` of
//! the slots runs its turns over a WebSocket (`execute` frames on
//! `/ws/v1/agent?session_id=<id>`), the others over SSE (`POST /sessions/{id}/messages`,
//! HTTP/1.1 keep-alive, one connection per slot).
//!
//! Sessions: `--ids minted` creates them with `POST /sessions` and uses the id the answer
//! names (hotplex-proxy mints signed, tenant-bound ids); `--ids client` picks the id and
//! sends it in `X-Hotplex-Session` on every request (nginx hashes that header; with
//! several `--base` the driver itself picks the worker by a hash of the id: "direct").
//!
//! The measured window starts once every slot holds a session (`--ready-file` is written
//! then) and lasts `--duration` seconds; turns started inside it are counted. Latencies:
//! first event (request sent -> first event), every event's delivery (the agent's
//! `t=<unix ns>` stamp -> received) and session creation. Prints one line of `key=value`.
//! Loopback benchmarking only (plain `http://ip:port` bases).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hotplex_bench::{parse_head, percentile, unix_nanos, Dechunker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async, WebSocketStream};

/// Longest wait for any one answer (a turn streams for a few seconds).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Ids {
    /// `POST /sessions` names the id (hotplex-proxy: signed, tenant-bound).
    Minted,
    /// The client picks the id and sends it in `X-Hotplex-Session`.
    Client,
}

#[derive(Parser, Debug)]
#[command(about = "HotPlex workload driver for benches/workload.sh (loopback only)")]
struct Args {
    /// Target label (printed).
    #[arg(long, default_value = "target")]
    name: String,
    /// http://IP:PORT of the proxy, or of each worker (direct: the id's hash picks one).
    #[arg(long = "base", required = true)]
    bases: Vec<String>,
    /// Who names the session id.
    #[arg(long, value_enum, default_value = "minted")]
    ids: Ids,
    /// Concurrent sessions.
    #[arg(long, default_value_t = 2000)]
    sessions: usize,
    /// Slots started per second during the ramp.
    #[arg(long, default_value_t = 100.0)]
    arrival_rate: f64,
    /// Measured window, seconds (after every slot holds a session).
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Turns per session before it is deleted and replaced by a new one.
    #[arg(long, default_value_t = 5)]
    turns: u32,
    /// Pause after each turn, milliseconds.
    #[arg(long, default_value_t = 1000)]
    think_ms: u64,
    /// Share of the slots doing WebSocket turns (the rest SSE).
    #[arg(long, default_value_t = 0.5)]
    ws_share: f64,
    /// X-API-Key sent on every request.
    #[arg(long)]
    api_key: Option<String>,
    /// Written when the measured window starts.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Prefix of client-chosen ids (distinct per run).
    #[arg(long, default_value = "wl")]
    prefix: String,
    /// Longest ramp (seconds) before the window starts anyway.
    #[arg(long, default_value_t = 120.0)]
    ramp_timeout: f64,
}

struct Target {
    addr: SocketAddr,
    host: String,
}

fn parse_base(url: &str) -> Result<Target, String> {
    let host = url
        .strip_prefix("http://")
        .ok_or("only http://IP:PORT bases are supported")?
        .trim_end_matches('/');
    let addr = host
        .parse::<SocketAddr>()
        .map_err(|e| format!("{host}: {e} (use IP:PORT)"))?;
    Ok(Target {
        addr,
        host: host.to_string(),
    })
}

/// What every slot shares.
struct Shared {
    args: Args,
    targets: Vec<Target>,
    window: OnceCell<(Instant, Instant)>,
    holding: AtomicU64,
    /// Failures before the window ended.
    errors: AtomicU64,
    /// Failures after it: the sessions still open are deleted together then, a burst no
    /// steady state has (reported apart).
    teardown_errors: AtomicU64,
}

impl Shared {
    fn fail(&self, slot: usize, why: &str) {
        let (count, when) = if self.over() {
            (&self.teardown_errors, "teardown")
        } else {
            (&self.errors, "run")
        };
        if count.fetch_add(1, Ordering::Relaxed) < 10 {
            eprintln!("workload: slot {slot} ({when}): {why}");
        }
    }
    /// Whether `t` is inside the window; `None` before it is set.
    fn in_window(&self, t: Instant) -> bool {
        self.window.get().is_some_and(|&(s, e)| t >= s && t < e)
    }
    fn over(&self) -> bool {
        self.window.get().is_some_and(|&(_, e)| Instant::now() >= e)
    }
}

/// What one slot measured inside the window (latencies in µs).
#[derive(Default)]
struct Stats {
    sse_turns: u64,
    ws_turns: u64,
    events: u64,
    created: u64,
    first: Vec<u64>,
    event: Vec<u64>,
    create: Vec<u64>,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.sse_turns += o.sse_turns;
        self.ws_turns += o.ws_turns;
        self.events += o.events;
        self.created += o.created;
        self.first.extend(o.first);
        self.event.extend(o.event);
        self.create.extend(o.create);
    }
}

/// The `t=<unix ns>` stamp the fake agent put in an event.
fn stamp(s: &[u8]) -> Option<u128> {
    let i = s.windows(2).position(|w| w == b"t=")? + 2;
    let digits: &[u8] = &s[i..];
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&digits[..n]).ok()?.parse().ok()
}

/// The string value of `"key":"..."` in a JSON text (no escapes in what we look for).
fn json_str<'a>(s: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("\"{key}\":\"");
    let i = s.find(&pat)? + pat.len();
    let end = s[i..].find('"')?;
    Some(&s[i..i + end])
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    s: Option<TcpStream>,
}

struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Conn {
    /// One request; `on_body` sees the decoded body as it arrives (`Err` stops reading).
    async fn request(
        &mut self,
        t: &Target,
        head: &str,
        body: &[u8],
        mut on_body: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<Answer, String> {
        let r = tokio::time::timeout(IO_TIMEOUT, async {
            if self.s.is_none() {
                let s = TcpStream::connect(t.addr)
                    .await
                    .map_err(|e| format!("connect: {e}"))?;
                let _ = s.set_nodelay(true);
                self.s = Some(s);
            }
            let Some(s) = self.s.as_mut() else {
                return Err("no connection".to_string());
            };
            let mut req = Vec::with_capacity(head.len() + body.len());
            req.extend_from_slice(head.as_bytes());
            req.extend_from_slice(body);
            s.write_all(&req).await.map_err(|e| format!("write: {e}"))?;
            let mut raw = Vec::with_capacity(2048);
            let mut buf = vec![0u8; 16 * 1024];
            let (status, chunked, end) = loop {
                let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("closed before the response head".into());
                }
                raw.extend_from_slice(&buf[..n]);
                match parse_head(&raw) {
                    None if raw.len() > 64 * 1024 => return Err("head too large".into()),
                    None => continue,
                    Some(Err(e)) => return Err(e),
                    Some(Ok(h)) => break h,
                }
            };
            let head_text = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let close = head_text.contains("\r\nconnection: close");
            let length = head_text.split("\r\n").find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            let mut out = Vec::new();
            // 1xx, 204 and 304 answers have no body (RFC 9112 6.3).
            if status < 200 || status == 204 || status == 304 {
                if close {
                    self.s = None;
                }
                return Ok(Answer { status, body: out });
            }
            let mut dechunk = Dechunker::default();
            let mut pending = raw[end..].to_vec();
            let mut seen = 0usize;
            loop {
                if chunked {
                    let mut dec = Vec::new();
                    dechunk.feed(&pending, &mut dec)?;
                    on_body(&dec)?;
                    out.extend_from_slice(&dec);
                    if dechunk.done {
                        break;
                    }
                } else {
                    seen += pending.len();
                    on_body(&pending)?;
                    out.extend_from_slice(&pending);
                    if length.is_some_and(|l| seen >= l) {
                        break;
                    }
                }
                let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    if chunked || length.is_some() {
                        return Err("closed inside the body".into());
                    }
                    self.s = None;
                    break;
                }
                pending = buf[..n].to_vec();
            }
            if close {
                self.s = None;
            }
            Ok(Answer { status, body: out })
        })
        .await;
        match r {
            Ok(Ok(a)) => Ok(a),
            Ok(Err(e)) => {
                self.s = None;
                Err(e)
            }
            Err(_) => {
                self.s = None;
                Err("timed out".into())
            }
        }
    }
}

type Ws = WebSocketStream<TcpStream>;

/// One session's life in a slot.
struct Session {
    id: String,
    target: usize,
}

struct Slot {
    n: usize,
    sh: Arc<Shared>,
    conn: Conn,
    stats: Stats,
    ws_mode: bool,
    generation: u64,
}

impl Slot {
    fn headers(&self, s: Option<&Session>) -> String {
        let mut h = String::new();
        if let Some(k) = &self.sh.args.api_key {
            h.push_str(&format!("X-API-Key: {k}\r\n"));
        }
        if let (Ids::Client, Some(s)) = (self.sh.args.ids, s) {
            h.push_str(&format!("X-Hotplex-Session: {}\r\n", s.id));
        }
        h
    }

    async fn create(&mut self) -> Result<Session, String> {
        self.generation += 1;
        let sh = self.sh.clone();
        let mut s = Session {
            id: String::new(),
            target: 0,
        };
        if let Ids::Client = sh.args.ids {
            s.id = format!("{}-{}-{}", sh.args.prefix, self.n, self.generation);
            s.target = (fnv1a(&s.id) % sh.targets.len() as u64) as usize;
        }
        let t = &sh.targets[s.target];
        let head = format!(
            "POST /sessions HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n{}\r\n",
            t.host,
            self.headers(Some(&s))
        );
        let started = Instant::now();
        let a = self.conn.request(t, &head, b"", |_| Ok(())).await?;
        if a.status != 201 {
            return Err(format!(
                "POST /sessions: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            ));
        }
        if let Ids::Minted = sh.args.ids {
            let body = String::from_utf8_lossy(&a.body);
            s.id = json_str(&body, "session_id")
                .ok_or("no session_id in the answer")?
                .to_string();
        }
        if sh.in_window(started) {
            self.stats.created += 1;
            self.stats.create.push(started.elapsed().as_micros() as u64);
        }
        Ok(s)
    }

    async fn delete(&mut self, s: &Session) {
        let sh = self.sh.clone();
        let t = &sh.targets[s.target];
        let head = format!(
            "DELETE /sessions/{} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\n{}\r\n",
            s.id,
            t.host,
            self.headers(Some(s))
        );
        match self.conn.request(t, &head, b"", |_| Ok(())).await {
            Ok(a) if a.status < 300 => {}
            Ok(a) => sh.fail(self.n, &format!("DELETE: {}", a.status)),
            Err(e) => sh.fail(self.n, &format!("DELETE: {e}")),
        }
    }

    /// Records one received event; `Ok(true)` when it ends the turn.
    fn event(
        &mut self,
        name: &str,
        data: &[u8],
        sent: Instant,
        first: &mut bool,
        counted: bool,
    ) -> Result<bool, String> {
        let now = unix_nanos();
        if counted {
            if *first {
                self.stats.first.push(sent.elapsed().as_micros() as u64);
            }
            self.stats.events += 1;
            if let Some(t) = stamp(data) {
                self.stats.event.push((now.saturating_sub(t) / 1000) as u64);
            }
        }
        *first = false;
        match name {
            "completed" => Ok(true),
            "error" | "stopped" => Err(format!(
                "turn ended with {name}: {}",
                String::from_utf8_lossy(data)
            )),
            _ => Ok(false),
        }
    }

    async fn sse_turn(&mut self, s: &Session) -> Result<(), String> {
        let sh = self.sh.clone();
        let t = &sh.targets[s.target];
        let body = br#"{"prompt":"summarise the repository"}"#;
        let head = format!(
            "POST /sessions/{}/messages HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: {}\r\n{}\r\n",
            s.id,
            t.host,
            body.len(),
            self.headers(Some(s))
        );
        let sent = Instant::now();
        let counted = sh.in_window(sent);
        let mut first = true;
        let mut done = false;
        let mut buf = Vec::<u8>::with_capacity(4096);
        let mut conn = std::mem::replace(&mut self.conn, Conn { s: None });
        let r = conn
            .request(t, &head, body, |bytes| {
                buf.extend_from_slice(bytes);
                let mut start = 0;
                while let Some(i) = buf[start..].windows(2).position(|w| w == b"\n\n") {
                    let ev = &buf[start..start + i];
                    let mut name = "message";
                    let mut data: &[u8] = b"";
                    for l in ev.split(|&b| b == b'\n') {
                        if let Some(v) = l.strip_prefix(b"event:") {
                            name = std::str::from_utf8(v).unwrap_or("").trim();
                        } else if let Some(v) = l.strip_prefix(b"data:") {
                            data = v;
                        }
                    }
                    if !data.is_empty() && self.event(name, data, sent, &mut first, counted)? {
                        done = true;
                    }
                    start += i + 2;
                }
                buf.drain(..start);
                Ok(())
            })
            .await;
        self.conn = conn;
        let a = r?;
        if a.status != 200 {
            return Err(format!(
                "messages: {} {}",
                a.status,
                String::from_utf8_lossy(&a.body)
            ));
        }
        if !done {
            return Err("SSE stream ended without `completed`".into());
        }
        if counted {
            self.stats.sse_turns += 1;
        }
        Ok(())
    }

    async fn ws_open(&mut self, s: &Session) -> Result<Ws, String> {
        let t = &self.sh.targets[s.target];
        let url = format!("ws://{}/ws/v1/agent?session_id={}", t.host, s.id);
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        if let Some(k) = &self.sh.args.api_key {
            let v = HeaderValue::from_str(k).map_err(|e| e.to_string())?;
            req.headers_mut().insert("x-api-key", v);
        }
        if let Ids::Client = self.sh.args.ids {
            let v = HeaderValue::from_str(&s.id).map_err(|e| e.to_string())?;
            req.headers_mut().insert("x-hotplex-session", v);
        }
        let tcp = TcpStream::connect(t.addr)
            .await
            .map_err(|e| format!("ws connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (ws, _) = tokio::time::timeout(IO_TIMEOUT, client_async(req, tcp))
            .await
            .map_err(|_| "ws handshake timed out".to_string())?
            .map_err(|e| format!("ws handshake: {e}"))?;
        Ok(ws)
    }

    async fn ws_turn(&mut self, ws: &mut Ws, s: &Session, rid: u64) -> Result<(), String> {
        let frame = format!(
            r#"{{"type":"execute","request_id":{rid},"session_id":"{}","prompt":"summarise the repository"}}"#,
            s.id
        );
        let sent = Instant::now();
        let counted = self.sh.in_window(sent);
        ws.send(Message::text(frame))
            .await
            .map_err(|e| format!("ws send: {e}"))?;
        let mut first = true;
        let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
        loop {
            let m = match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => return Err("ws turn timed out".into()),
                Ok(None) => return Err("ws closed".into()),
                Ok(Some(Err(e))) => return Err(format!("ws read: {e}")),
                Ok(Some(Ok(m))) => m,
            };
            let Message::Text(text) = m else { continue };
            let text = text.as_str();
            let name = json_str(text, "event").unwrap_or("").to_string();
            if self.event(&name, text.as_bytes(), sent, &mut first, counted)? {
                break;
            }
        }
        if counted {
            self.stats.ws_turns += 1;
        }
        Ok(())
    }

    /// One session: create, turns, delete. `Err` after a failure (the session is deleted).
    async fn session(&mut self) -> Result<(), String> {
        let s = self.create().await?;
        if self.generation == 1 {
            self.sh.holding.fetch_add(1, Ordering::Relaxed);
        }
        let think = Duration::from_millis(self.sh.args.think_ms);
        let mut ws = None;
        let mut r = Ok(());
        for k in 0..self.sh.args.turns {
            if self.sh.over() {
                break;
            }
            r = if self.ws_mode {
                if ws.is_none() {
                    match self.ws_open(&s).await {
                        Ok(w) => ws = Some(w),
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                match ws.as_mut() {
                    Some(w) => self.ws_turn(w, &s, u64::from(k) + 1).await,
                    None => Err("no WebSocket".into()),
                }
            } else {
                self.sse_turn(&s).await
            };
            if r.is_err() {
                break;
            }
            tokio::time::sleep(think).await;
        }
        if let Some(mut w) = ws {
            let _ = w.close(None).await;
        }
        self.delete(&s).await;
        r
    }
}

/// A slot: sessions one after the other until the window ends.
async fn slot(n: usize, sh: Arc<Shared>) -> Stats {
    let ws_mode = (n as f64 + 0.5) / sh.args.sessions as f64 > 1.0 - sh.args.ws_share;
    let mut slot = Slot {
        n,
        sh: sh.clone(),
        conn: Conn { s: None },
        stats: Stats::default(),
        ws_mode,
        generation: 0,
    };
    while !sh.over() {
        if let Err(e) = slot.session().await {
            sh.fail(n, &e);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    slot.stats
}

fn ms(v: u64) -> f64 {
    v as f64 / 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::parse();
    let mut targets = Vec::new();
    for b in &args.bases {
        match parse_base(b) {
            Ok(t) => targets.push(t),
            Err(e) => {
                eprintln!("workload: --base {b}: {e}");
                std::process::exit(2);
            }
        }
    }
    if matches!(args.ids, Ids::Minted) && targets.len() != 1 {
        eprintln!("workload: --ids minted takes exactly one --base (the proxy)");
        std::process::exit(2);
    }
    let sessions = args.sessions.max(1);
    let gap = Duration::from_secs_f64(1.0 / args.arrival_rate.max(0.001));
    let ramp_timeout = Duration::from_secs_f64(args.ramp_timeout);
    let duration = Duration::from_secs_f64(args.duration);
    let ready_file = args.ready_file.clone();
    let sh = Arc::new(Shared {
        args,
        targets,
        window: OnceCell::new(),
        holding: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        teardown_errors: AtomicU64::new(0),
    });
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(sessions);
    let mut next = tokio::time::Instant::now();
    for n in 0..sessions {
        tokio::time::sleep_until(next).await;
        next += gap;
        tasks.push(tokio::spawn(slot(n, sh.clone())));
    }
    // Every slot holds a session (or the ramp took too long): the window starts.
    while (sh.holding.load(Ordering::Relaxed) as usize) < sessions && began.elapsed() < ramp_timeout
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ramp = began.elapsed();
    let start = Instant::now();
    let _ = sh.window.set((start, start + duration));
    if let Some(f) = &ready_file {
        if let Err(e) = std::fs::write(f, "ready\n") {
            eprintln!("workload: --ready-file: {e}");
        }
    }
    let mut st = Stats::default();
    for t in tasks {
        if let Ok(s) = t.await {
            st.merge(s);
        }
    }
    st.first.sort_unstable();
    st.event.sort_unstable();
    st.create.sort_unstable();
    let secs = duration.as_secs_f64();
    println!(
        "name={} sessions={sessions} holding={} ramp_s={:.1} window_s={secs:.0} turns={} sse_turns={} ws_turns={} \
         events={} created={} arrivals_per_s={:.1} turns_per_s={:.1} first_p50_ms={:.2} first_p99_ms={:.2} \
         event_p50_ms={:.2} event_p99_ms={:.2} create_p50_ms={:.2} create_p99_ms={:.2} errors={} teardown_errors={}",
        sh.args.name,
        sh.holding.load(Ordering::Relaxed),
        ramp.as_secs_f64(),
        st.sse_turns + st.ws_turns,
        st.sse_turns,
        st.ws_turns,
        st.events,
        st.created,
        st.created as f64 / secs,
        (st.sse_turns + st.ws_turns) as f64 / secs,
        ms(percentile(&st.first, 50.0)),
        ms(percentile(&st.first, 99.0)),
        ms(percentile(&st.event, 50.0)),
        ms(percentile(&st.event, 99.0)),
        ms(percentile(&st.create, 50.0)),
        ms(percentile(&st.create, 99.0)),
        sh.errors.load(Ordering::Relaxed),
        sh.teardown_errors.load(Ordering::Relaxed),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_and_json_fields() {
        let d = br#"{"request_id":1,"event":"answer","data":{"text":"t=1733091234123456789 turn 1 part 0 xx"}}"#;
        assert_eq!(stamp(d), Some(1_733_091_234_123_456_789));
        assert_eq!(stamp(b"no stamp"), None);
        let s = std::str::from_utf8(d).expect("utf8");
        assert_eq!(json_str(s, "event"), Some("answer"));
        assert_eq!(
            json_str(r#"{"session_id":"w1.abc","node_id":"w1"}"#, "session_id"),
            Some("w1.abc")
        );
        assert_eq!(json_str("{}", "event"), None);
        // FNV-1a 64 test vectors (the direct target's worker choice).
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
