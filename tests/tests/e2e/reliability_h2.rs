//! Reliability: hostile HTTP/2 on the TLS + h2 listener (ALPN `h2`, the proxy's dev
//! certificate) from a raw client that writes frames and HPACK by hand
//! (`support/h2raw.rs`): missing, repeated, misplaced and unknown pseudo-headers, uppercase
//! names, connection-specific headers, `te`, `:authority`/`Host` conflicts, CONNECT,
//! `content-length` against DATA, oversized header lists, bytes h1 would read as line ends.
//!
//! Each case must be refused the way RFC 9113 8.1.1/8.2 says (stream reset, GOAWAY or a
//! 4xx), must never reach the worker (a fake upstream logs every request it parses, and
//! parses strictly), and the connection (or, after a GOAWAY, a new one) must keep serving.
//! The proxy's stderr is kept and must show no panic. (h2c upgrade smuggling over HTTP/1 is
//! in `reliability_hostile.rs`.)

use crate::support::fake_upstream;
use crate::support::h2raw;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::proxy::{
    addr_file, addr_of, proxy_yaml, write_config_file, ANY_PORT, PROXY_BIN, WAIT,
};
use fake_upstream::Mode;
use h2raw::{Outcome, H2};
use hotplex_e2e::ChildGuard;

/// The TLS limit on decoded header lists used here (bytes).
const MAX_HEADER_LIST: usize = 4096;

/// A proxy child process whose stderr goes to a file (killed on drop).
struct LoggedProxy {
    guard: ChildGuard,
    admin: SocketAddr,
    tls: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoggedProxy {
    /// Panics unless the proxy runs and its admin listener answers.
    async fn assert_alive(&mut self) {
        let url = format!("http://{}/health/live", self.admin);
        self.guard.assert_serving(&url).await;
    }
    /// Lines of the proxy's stderr that show a panic.
    fn panics(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("panicked"))
            .map(str::to_string)
            .collect()
    }
}

async fn spawn_tls_proxy(upstream: SocketAddr) -> LoggedProxy {
    // Every listener on port 0: the proxy binds them and reports them in --addr-file.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("proxy.yaml");
    let yaml = proxy_yaml(
        &[("w1", upstream)],
        &format!("tls:\n  listen: \"{ANY_PORT}\"\n  max_header_list_size: {MAX_HEADER_LIST}\n"),
    );
    write_config_file(&cfg, ANY_PORT, ANY_PORT, "", &yaml);
    let log = dir.path().join("proxy.stderr");
    let err = std::fs::File::create(&log).expect("log file");
    let addr_path = dir.path().join("addr.json");
    let mut cmd = Command::new(PROXY_BIN);
    cmd.arg("--config")
        .arg(&cfg)
        .arg("--addr-file")
        .arg(&addr_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(err);
    let mut guard = ChildGuard::spawn_with_output("proxy", &mut cmd);
    let bound = addr_file(&addr_path, &mut guard).await;
    let (admin, tls) = (addr_of(&bound, "admin"), addr_of(&bound, "tls"));
    let p = LoggedProxy {
        guard,
        admin,
        tls,
        log,
        _dir: dir,
    };
    hotplex_e2e::wait_until_http_ok(&format!("http://{admin}/health/live"), WAIT).await;
    let deadline = Instant::now() + WAIT;
    loop {
        match H2::connect(tls).await {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "TLS listener never came up: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The worker is known healthy.
    crate::support::proxy::wait_probed(admin).await;
    p
}

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The pseudo-headers of a valid GET of `path`.
fn get(path: &str) -> Fields {
    vec![
        (b":method".to_vec(), b"GET".to_vec()),
        (b":scheme".to_vec(), b"https".to_vec()),
        (b":path".to_vec(), path.as_bytes().to_vec()),
        (b":authority".to_vec(), b"localhost".to_vec()),
    ]
}

/// The pseudo-headers of a `POST {path}/messages` (a declared route with a body: the edge
/// reads the body, so body framing errors are its to refuse).
fn post(path: &str) -> Fields {
    set(get(&format!("{path}/messages")), ":method", b"POST")
}

fn without(mut f: Fields, name: &str) -> Fields {
    f.retain(|(n, _)| n != name.as_bytes());
    f
}

fn with(mut f: Fields, name: &str, value: &[u8]) -> Fields {
    f.push((name.as_bytes().to_vec(), value.to_vec()));
    f
}

fn set(mut f: Fields, name: &str, value: &[u8]) -> Fields {
    for (n, v) in f.iter_mut() {
        if n == name.as_bytes() {
            *v = value.to_vec();
        }
    }
    f
}

/// One step of a case, on stream 1 unless said otherwise.
enum Step {
    Headers(Fields, bool),
    Data(Vec<u8>, bool),
    /// A raw frame: kind, flags, stream, payload.
    Frame(u8, u8, u32, Vec<u8>),
}

/// What a case must get.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// RST_STREAM PROTOCOL_ERROR; the connection keeps serving.
    Reset,
    /// GOAWAY (connection error) with this code.
    GoAway(u32),
    /// A response with this status (maybe followed by a reset), nothing forwarded.
    Status(u16),
    /// Valid: forwarded, 200 from the worker.
    Forwarded,
}

const PROTOCOL_ERROR: u32 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn cases() -> Vec<(&'static str, Vec<Step>, Expect)> {
    use Expect::*;
    use Step::*;
    let p = "/sessions/h2-case";
    let b = |s: &str| s.as_bytes().to_vec();
    let big = "a".repeat(2 * MAX_HEADER_LIST);
    let huge = "a".repeat(5 * MAX_HEADER_LIST);
    vec![
        (
            "missing :method",
            vec![Headers(without(get(p), ":method"), true)],
            Reset,
        ),
        (
            "missing :path",
            vec![Headers(without(get(p), ":path"), true)],
            Reset,
        ),
        (
            "missing :scheme",
            vec![Headers(without(get(p), ":scheme"), true)],
            Reset,
        ),
        (
            "empty :path",
            vec![Headers(set(get(p), ":path", b""), true)],
            Reset,
        ),
        (
            "duplicate :path",
            vec![Headers(with(get(p), ":path", b"/sessions/other"), true)],
            Reset,
        ),
        (
            "duplicate :method",
            vec![Headers(with(get(p), ":method", b"POST"), true)],
            Reset,
        ),
        (
            "pseudo-header after a regular header",
            vec![Headers(
                with(
                    with(without(get(p), ":path"), "x-a", b"1"),
                    ":path",
                    p.as_bytes(),
                ),
                true,
            )],
            Reset,
        ),
        (
            "unknown pseudo-header :foo",
            vec![Headers(with(get(p), ":foo", b"bar"), true)],
            GoAway(PROTOCOL_ERROR),
        ),
        (
            ":status in a request",
            vec![Headers(with(get(p), ":status", b"200"), true)],
            Reset,
        ),
        (
            ":protocol on a GET",
            vec![Headers(with(get(p), ":protocol", b"websocket"), true)],
            Reset,
        ),
        (
            "uppercase header name",
            vec![Headers(with(get(p), "X-Upper", b"1"), true)],
            GoAway(PROTOCOL_ERROR),
        ),
        (
            "uppercase Content-Length",
            vec![
                Headers(with(post(p), "Content-Length", b"3"), false),
                Data(b("abc"), true),
            ],
            GoAway(PROTOCOL_ERROR),
        ),
        (
            "connection: keep-alive",
            vec![Headers(with(get(p), "connection", b"keep-alive"), true)],
            Reset,
        ),
        (
            "transfer-encoding: chunked",
            vec![
                Headers(with(post(p), "transfer-encoding", b"chunked"), false),
                Data(b("3\r\nabc\r\n0\r\n\r\n"), true),
            ],
            Reset,
        ),
        (
            "keep-alive",
            vec![Headers(with(get(p), "keep-alive", b"timeout=5"), true)],
            Reset,
        ),
        (
            "upgrade: websocket",
            vec![Headers(with(get(p), "upgrade", b"websocket"), true)],
            Reset,
        ),
        (
            "proxy-connection",
            vec![Headers(
                with(get(p), "proxy-connection", b"keep-alive"),
                true,
            )],
            Reset,
        ),
        (
            "te: gzip",
            vec![Headers(with(get(p), "te", b"gzip"), true)],
            Reset,
        ),
        (
            "te: trailers (valid)",
            vec![Headers(
                with(get("/sessions/h2-te-trailers"), "te", b"trailers"),
                true,
            )],
            Forwarded,
        ),
        (
            ":authority vs Host mismatch",
            vec![Headers(with(get(p), "host", b"evil.example"), true)],
            Status(400),
        ),
        (
            "two Host headers, no :authority",
            vec![Headers(
                with(
                    with(without(get(p), ":authority"), "host", b"a"),
                    "host",
                    b"b",
                ),
                true,
            )],
            Status(400),
        ),
        (
            "neither :authority nor Host",
            vec![Headers(without(get(p), ":authority"), true)],
            Status(400),
        ),
        (
            "userinfo in :authority",
            vec![Headers(set(get(p), ":authority", b"user@localhost"), true)],
            Status(400),
        ),
        (
            "absolute-form :path",
            vec![Headers(
                set(get(p), ":path", b"http://evil.example/sessions/x"),
                true,
            )],
            Reset,
        ),
        (
            "CONNECT without :authority",
            vec![Headers(vec![(b(":method"), b("CONNECT"))], true)],
            Status(400),
        ),
        (
            "CONNECT with :path and :scheme",
            vec![Headers(set(get(p), ":method", b"CONNECT"), true)],
            Reset,
        ),
        (
            "CONNECT evil.example:443",
            vec![Headers(
                vec![
                    (b(":method"), b("CONNECT")),
                    (b(":authority"), b("evil.example:443")),
                ],
                false,
            )],
            Status(405),
        ),
        (
            "content-length 10, DATA 5",
            vec![
                Headers(with(post(p), "content-length", b"10"), false),
                Data(b("hello"), true),
            ],
            Reset,
        ),
        (
            "content-length 3, DATA 10",
            vec![
                Headers(with(post(p), "content-length", b"3"), false),
                Data(b("helloworld"), true),
            ],
            Reset,
        ),
        (
            "content-length 5, END_STREAM on HEADERS",
            vec![Headers(with(post(p), "content-length", b"5"), true)],
            Reset,
        ),
        (
            "two different content-length",
            vec![
                Headers(
                    with(
                        with(post(p), "content-length", b"3"),
                        "content-length",
                        b"5",
                    ),
                    false,
                ),
                Data(b("abc"), true),
            ],
            Reset,
        ),
        (
            "CR LF in a header value",
            vec![Headers(with(get(p), "x-a", b"a\r\nx-injected: 1"), true)],
            GoAway(PROTOCOL_ERROR),
        ),
        (
            "NUL in a header value",
            vec![Headers(with(get(p), "x-a", b"a\0b"), true)],
            GoAway(PROTOCOL_ERROR),
        ),
        (
            "space in a header name",
            vec![Headers(with(get(p), "x a", b"1"), true)],
            GoAway(PROTOCOL_ERROR),
        ),
        (
            "CR LF in :path",
            vec![Headers(
                set(get(p), ":path", b"/sessions/a\r\nx-injected: 1"),
                true,
            )],
            Reset,
        ),
        (
            "space in :path",
            vec![Headers(set(get(p), ":path", b"/sessions/a HTTP/1.1"), true)],
            Reset,
        ),
        (
            "invalid :method token",
            vec![Headers(set(get(p), ":method", b"GE T"), true)],
            GoAway(PROTOCOL_ERROR),
        ),
        (
            "header list 2x the limit",
            vec![Headers(with(get(p), "x-big", big.as_bytes()), true)],
            Status(431),
        ),
        (
            "header list 5x the limit",
            vec![Headers(with(get(p), "x-big", huge.as_bytes()), true)],
            GoAway(ENHANCE_YOUR_CALM),
        ),
        (
            "DATA inside an unfinished header block",
            vec![
                Frame(
                    h2raw::HEADERS,
                    0,
                    1,
                    h2raw::encode_block(&[(b":method", b"POST")]),
                ),
                Frame(h2raw::DATA, h2raw::END_STREAM, 1, b("abc")),
            ],
            GoAway(PROTOCOL_ERROR),
        ),
        (
            "HEADERS on an even (server) stream id",
            vec![Frame(
                h2raw::HEADERS,
                h2raw::END_HEADERS | h2raw::END_STREAM,
                2,
                h2raw::encode_block(&[(b":method", b"GET")]),
            )],
            GoAway(PROTOCOL_ERROR),
        ),
    ]
}

/// A valid GET on `h` (stream `id`): must be answered 200 by the worker, target echoed.
async fn check_valid(h: &mut H2, id: u32, target: &str) -> Result<(), String> {
    let f = get(target);
    let refs: Vec<(&[u8], &[u8])> = f.iter().map(|(n, v)| (&n[..], &v[..])).collect();
    h.send_headers(id, &refs, true).await?;
    match h.outcome(id, WAIT).await {
        Outcome::Response {
            status: 200, body, ..
        } if body.contains(&format!("\"target\":\"{target}\"")) => Ok(()),
        o => Err(format!("valid GET {target} on stream {id}: {o:?}")),
    }
}

async fn run_steps(h: &mut H2, steps: &[Step]) -> Result<(), String> {
    for s in steps {
        match s {
            Step::Headers(f, end) => {
                let refs: Vec<(&[u8], &[u8])> = f.iter().map(|(n, v)| (&n[..], &v[..])).collect();
                h.send_headers(1, &refs, *end).await?;
            }
            Step::Data(d, end) => h.send_data(1, d, *end).await?,
            Step::Frame(kind, flags, stream, payload) => {
                h.send_frame(*kind, *flags, *stream, payload).await?
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_h2_requests_are_refused_and_never_reach_the_worker() {
    h2raw::self_check();
    let up = fake_upstream::start(Mode::Echo).await;
    let mut p = spawn_tls_proxy(up.addr).await;
    let mut h = H2::connect(p.tls).await.expect("h2 connect");
    check_valid(&mut h, 1, "/sessions/h2-warmup")
        .await
        .expect("warm-up");
    drop(h);
    let mut failures = Vec::new();
    println!("| case | outcome | reached the worker | same connection | new connection |");
    for (i, (name, steps, expect)) in cases().iter().enumerate() {
        let before = up.seen().len();
        let mut h = H2::connect(p.tls).await.expect("h2 connect");
        let sent = run_steps(&mut h, steps).await;
        let outcome = h.outcome(1, WAIT).await;
        // Let anything the proxy forwarded arrive before counting.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let forwarded: Vec<String> = up.seen()[before..]
            .iter()
            .map(|s| format!("{} {}", s.method, s.target))
            .collect();
        // The same connection serves another stream unless it went away.
        let same = if h.alive() && !matches!(outcome, Outcome::Closed) {
            check_valid(&mut h, 3, &format!("/sessions/h2-same-{i}")).await
        } else {
            Err("gone".to_string())
        };
        let mut fresh = H2::connect(p.tls).await.expect("h2 connect");
        let new_conn = check_valid(&mut fresh, 1, &format!("/sessions/h2-new-{i}")).await;
        println!(
            "| {name} | {} | {forwarded:?} | {} | {} |",
            outcome.describe(),
            same.as_ref().map_or_else(|e| e.clone(), |_| "ok".into()),
            new_conn
                .as_ref()
                .map_or_else(|e| e.clone(), |_| "ok".into())
        );
        let ok = match *expect {
            Expect::Reset => outcome == Outcome::Reset(PROTOCOL_ERROR),
            Expect::GoAway(code) => matches!(outcome, Outcome::GoAway { code: c, .. } if c == code),
            Expect::Status(s) => matches!(outcome, Outcome::Response { status, .. } if status == s),
            Expect::Forwarded => matches!(outcome, Outcome::Response { status: 200, .. }),
        };
        if !ok {
            failures.push(format!(
                "{name}: expected {expect:?}, got {outcome:?} (send: {sent:?})"
            ));
        }
        if *expect != Expect::Forwarded {
            if !outcome.refused() {
                failures.push(format!("{name}: not refused: {outcome:?}"));
            }
            if !forwarded.is_empty() {
                failures.push(format!("{name}: reached the worker: {forwarded:?}"));
            }
        } else if forwarded.len() != 1 {
            failures.push(format!("{name}: forwarded {forwarded:?}"));
        }
        if !matches!(expect, Expect::GoAway(_)) && same.is_err() {
            failures.push(format!("{name}: the connection stopped serving: {same:?}"));
        }
        if let Err(e) = new_conn {
            failures.push(format!("{name}: a new connection failed: {e}"));
        }
    }
    let seen = up.seen();
    let te = seen
        .iter()
        .find(|s| s.target == "/sessions/h2-te-trailers")
        .map(|s| s.headers.clone());
    println!("te: trailers forwarded as headers {te:?}");
    println!(
        "upstream: {} requests, {} parse errors; proxy panics: {:?}",
        seen.len(),
        up.parse_errors.load(Ordering::Relaxed),
        p.panics()
    );
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        up.parse_errors.load(Ordering::Relaxed),
        0,
        "upstream saw unparseable bytes"
    );
    assert!(
        seen.iter()
            .all(|s| !s.target.contains("h2-case") && !s.target.contains("evil")),
        "a malformed request reached the worker"
    );
    assert!(p.panics().is_empty(), "proxy panicked: {:?}", p.panics());
    p.assert_alive().await;
}

/// A client that keeps sending malformed streams on one connection (here: `:authority`
/// conflicts, answered 400 each) is cut off by pingora after a bounded number; other
/// connections are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_of_malformed_streams_is_cut_off_and_others_are_served() {
    let up = fake_upstream::start(Mode::Echo).await;
    let p = spawn_tls_proxy(up.addr).await;
    let mut h = H2::connect(p.tls).await.expect("h2 connect");
    let mut other = H2::connect(p.tls).await.expect("h2 connect");
    let (mut answered, mut cut_at) = (0u32, None);
    let mut last = Outcome::Timeout;
    for k in 0..100u32 {
        let id = 2 * k + 1;
        let f = with(get("/sessions/h2-flood"), "host", b"evil.example");
        let refs: Vec<(&[u8], &[u8])> = f.iter().map(|(n, v)| (&n[..], &v[..])).collect();
        if h.send_headers(id, &refs, true).await.is_err() {
            cut_at = Some(k);
            break;
        }
        last = h.outcome(id, WAIT).await;
        match last {
            Outcome::Response { status: 400, .. } => answered += 1,
            _ => {
                cut_at = Some(k);
                break;
            }
        }
    }
    let other_ok = check_valid(&mut other, 1, "/sessions/h2-other").await;
    println!(
        "malformed-stream flood: {answered} answered 400, connection cut at stream #{cut_at:?} ({}); other connection: {other_ok:?}",
        last.describe()
    );
    assert!(cut_at.is_some(), "the connection was never cut off");
    assert!((1..100).contains(&answered), "{answered}");
    other_ok.expect("another connection keeps being served");
    assert!(up.seen().iter().all(|s| s.target != "/sessions/h2-flood"));
    assert!(p.panics().is_empty(), "proxy panicked: {:?}", p.panics());
}
