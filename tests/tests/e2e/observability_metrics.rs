//! Every metric the Grafana dashboard (`conf/grafana/hotplex-dashboard.json`) and the alert
//! rules (`conf/prometheus/alerts.yml`) use exists in a live `/metrics` of the proxy or a
//! worker: on fresh processes before any traffic (known label values are zero-initialised,
//! so no panel or alert starts with "no data"), and again after real traffic: HTTP, a
//! session with an SSE turn, a WebSocket execute, a rate-limited request, a config reload
//! and a TLS handshake. Equality label matchers of the expressions (`reason="rate_limit"`,
//! `component="worker"`...) must match a series.
//! Also: heap profiles. A worker with its built-in defaults serves `/debug/pprof/heap`
//! (sampling on); the proxy's (admin listener, bearer token) is off until
//! `POST /admin/profiling {"active": true}`, then a real jemalloc heap profile.

use hotplex_common::names;
use std::collections::BTreeSet;
use std::io::Read as _;
use std::time::Duration;

use crate::support::proxy::*;
use serde_json::{json, Value};

const TOKEN: &str = "observability-admin-token-0123";

/// A metric selector of a PromQL expression: name and equality label matchers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Selector {
    name: String,
    /// `(label, value)` of `label="value"` matchers (regex and negative matchers are not
    /// checked, only the label's presence).
    equal: Vec<(String, String)>,
    /// Labels of the other matchers (`=~`, `!=`, `!~`).
    other: Vec<String>,
}

/// The `hotplex_*` selectors of one PromQL expression.
fn selectors(expr: &str) -> Vec<Selector> {
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = (i == 0 || !ident(b[i - 1])) && expr[i..].starts_with("hotplex_");
        if !starts {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && ident(b[i]) {
            i += 1;
        }
        let name = expr[start..i].to_string();
        let mut sel = Selector {
            name,
            equal: vec![],
            other: vec![],
        };
        if i < b.len() && b[i] == b'{' {
            let end = expr[i..].find('}').map(|e| i + e).expect("closing brace");
            for m in expr[i + 1..end]
                .split(',')
                .map(str::trim)
                .filter(|m| !m.is_empty())
            {
                let op_at = m.find(['=', '!']).expect("matcher operator");
                let label = m[..op_at].trim().to_string();
                let rest = &m[op_at..];
                let value = rest
                    .trim_start_matches(['=', '!', '~'])
                    .trim()
                    .trim_matches('"');
                if rest.starts_with("=") && !rest.starts_with("=~") {
                    sel.equal.push((label, value.to_string()));
                } else {
                    sel.other.push(label);
                }
            }
            i = end + 1;
        }
        out.push(sel);
    }
    out
}

#[test]
fn selector_parsing() {
    let s = selectors(
        r#"sum by (instance) (rate(hotplex_proxy_rejections_total{reason="rate_limit"}[5m])) / sum(rate(hotplex_proxy_requests_total{status=~"5.."}[5m]))"#,
    );
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].name, names::proxy::REJECTIONS);
    assert_eq!(
        s[0].equal,
        vec![("reason".to_string(), "rate_limit".to_string())]
    );
    assert_eq!(s[1].name, names::proxy::REQUESTS_TOTAL);
    assert_eq!(s[1].other, vec!["status".to_string()]);
    assert!(selectors("time() - max(up)").is_empty());

    // Presence: name, equality matchers, labels of other matchers; histogram suffixes.
    let text = "# TYPE hotplex_h histogram\nhotplex_h_bucket{le=\"1\",component=\"proxy\"} 1\nhotplex_h_count{component=\"proxy\"} 1\nhotplex_c{reason=\"auth\",component=\"proxy\"} 3\n";
    let (all, hist) = (samples(text), histograms(text));
    let one = |e: &str| selectors(e).remove(0);
    assert!(present(&one("hotplex_c"), &all, &hist));
    assert!(present(&one(r#"hotplex_c{reason="auth"}"#), &all, &hist));
    assert!(!present(
        &one(r#"hotplex_c{reason="rate_limit"}"#),
        &all,
        &hist
    ));
    assert!(!present(&one(r#"hotplex_c{status=~"5.."}"#), &all, &hist));
    assert!(present(
        &one(r#"hotplex_h_bucket{component="proxy"}"#),
        &all,
        &hist
    ));
    assert!(!present(
        &one(r#"hotplex_h_bucket{component="worker"}"#),
        &all,
        &hist
    ));
    assert!(!present(&one("hotplex_missing_total"), &all, &hist));
}

/// Every `expr` of the dashboard.
fn dashboard_exprs() -> Vec<String> {
    let text = include_str!("../../../conf/grafana/hotplex-dashboard.json");
    let v: Value = serde_json::from_str(text).expect("dashboard is JSON");
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&v, &mut out);
    out
}

/// Every rule `expr` of the alert file.
fn alert_exprs() -> Vec<String> {
    let text = include_str!("../../../conf/prometheus/alerts.yml");
    let v: serde_yaml::Value = serde_yaml::from_str(text).expect("alerts.yml is YAML");
    let mut out = Vec::new();
    for g in v["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            if let Some(e) = r["expr"].as_str() {
                out.push(e.to_string());
            }
        }
    }
    out
}

/// One sample line of the text format: name and labels.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
}

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let name_end = l.find(['{', ' '])?;
            let name = l[..name_end].to_string();
            let mut labels = Vec::new();
            if l[name_end..].starts_with('{') {
                let end = l.rfind('}')?;
                for kv in l[name_end + 1..end].split("\",") {
                    if let Some((k, v)) = kv.split_once('=') {
                        labels.push((k.trim().to_string(), v.trim_matches('"').to_string()));
                    }
                }
            }
            Some(Sample { name, labels })
        })
        .collect()
}

/// Names of histogram families (`# TYPE x histogram`).
fn histograms(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" histogram"))
        .map(str::to_string)
        .collect()
}

/// Whether a series matching `sel` is in the scraped samples. `name_bucket` etc. of a
/// histogram are its own sample names; a bare histogram name (not valid PromQL for data)
/// is accepted if its `_count` exists.
fn present(sel: &Selector, all: &[Sample], hist: &BTreeSet<String>) -> bool {
    let mut names = vec![sel.name.clone()];
    if hist.contains(&sel.name) {
        names.push(format!("{}_count", sel.name));
    }
    all.iter().any(|s| {
        names.contains(&s.name)
            && sel
                .equal
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
            && sel
                .other
                .iter()
                .all(|k| s.labels.iter().any(|(lk, _)| lk == k))
    })
}

/// The parts of a heap profile this test checks (fields of `perftools.profiles.Profile`).
#[derive(Clone, PartialEq, prost::Message)]
struct Profile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<ProfileSample>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProfileSample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_alert_metric_is_exported() {
    let workers = spawn_workers(2, WorkerOpts::default()).await;
    let extra = format!(
        "limits:\n  routes:\n    session: {{rate: 0.01, burst: 1}}\n\
         tls:\n  listen: \"{ANY_PORT}\"\n"
    );
    let p = spawn_proxy_with_token(&proxy_yaml(&worker_list(&workers), &extra)).await;
    let tls = p.tls.expect("TLS listener");
    let c = client();
    let base = format!("http://{}", p.listen);
    let admin = format!("http://{}", p.admin);

    // Fresh processes (no request through the proxy yet): every selector of the dashboard
    // and the alerts has a series, equality matchers included.
    let (all, hist) = scrape(&c, &admin, &workers).await;
    let wanted = wanted_selectors(&hist);
    let missing: Vec<&Selector> = wanted.iter().filter(|s| !present(s, &all, &hist)).collect();
    assert!(
        missing.is_empty(),
        "metrics used by the dashboard/alerts but absent from a fresh /metrics: {missing:#?}"
    );

    // Plain HTTP: create a session and read it.
    let (id, _) = create(&c, &base).await;
    assert_eq!(get_session(&c, &base, &id).await.status, 200);
    // An SSE turn (execute + tool use).
    let r = c
        .post(format!("{base}/sessions/{id}/messages"))
        .header("accept", "text/event-stream")
        .json(&json!({"prompt": "metrics"}))
        .send()
        .await
        .expect("SSE turn");
    assert_eq!(r.status(), 200);
    let events = tokio::time::timeout(WAIT, hotplex_e2e::sse::Reader::new(r).collect())
        .await
        .expect("SSE in time");
    assert_eq!(events.last().map(|e| e.event.as_str()), Some("completed"));
    // A WebSocket execute, kept open while the metrics are scraped.
    // (a client-chosen session over WebSocket: named in the URL, so the proxy routes it)
    let ws_url = format!(
        "ws://{}/ws/v1/agent?session_id=metrics-ws-session",
        p.listen
    );
    let (mut ws, _, _) = ws_connect_checked(&ws_url, &[]).await;
    let frames = ws_execute(&mut ws, 7, "metrics-ws-session", "hello")
        .await
        .expect("ws turn");
    assert_eq!(terminal_event(&frames), "completed");
    // A rate-limited request (session: burst 1).
    let first = send(c.get(format!("{base}/sessions/rate-probe"))).await;
    let second = send(c.get(format!("{base}/sessions/rate-probe"))).await;
    assert!(
        first.status == 429 || second.status == 429,
        "{first:?} {second:?}"
    );
    // A config reload.
    let r = c
        .post(format!("{admin}/admin/reload"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    // A TLS handshake (self-signed development certificate).
    let https = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("https client");
    let r = https
        .get(format!("https://{tls}/health/live"))
        .send()
        .await
        .expect("https request");
    assert!(r.status().is_success(), "{}", r.status());

    // After traffic: still every selector (now with real values behind them).
    let (all, hist) = scrape(&c, &admin, &workers).await;
    let missing: Vec<&Selector> = wanted.iter().filter(|s| !present(s, &all, &hist)).collect();
    assert!(
        missing.is_empty(),
        "metrics used by the dashboard/alerts but absent from /metrics after traffic: {missing:#?}"
    );
    drop(ws);

    // A worker with its built-in defaults (no MALLOC_CONF) serves a heap profile.
    let r = c
        .get(format!("{}/debug/pprof/heap", workers[0].base()))
        .send()
        .await
        .expect("worker pprof");
    assert_eq!(r.status(), 200, "worker heap profile out of the box");
    let body = r.bytes().await.expect("worker profile");
    assert!(body.len() > 20 && body[..2] == [0x1f, 0x8b], "gzip magic");

    // The proxy's heap profile: token-protected, off until switched on at runtime.
    let r = c
        .get(format!("{admin}/debug/pprof/heap"))
        .send()
        .await
        .expect("pprof without token");
    assert_eq!(r.status(), 401);
    let r = c
        .get(format!("{admin}/debug/pprof/heap"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("pprof");
    assert_eq!(r.status(), 503, "the proxy samples nothing by default");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["error"], "profiling_disabled", "{v}");
    let profiling = |active: bool| {
        let c = c.clone();
        let url = format!("{admin}/admin/profiling");
        async move {
            let r = c
                .post(url)
                .bearer_auth(TOKEN)
                .json(&json!({ "active": active }))
                .send()
                .await
                .expect("profiling switch");
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.expect("json")
        }
    };
    let st = profiling(true).await;
    assert_eq!(st, json!({"enabled": true, "active": true, "lg_sample": 0}));
    // Traffic while sampling. The proxy runs with lg_prof_sample:0 (every allocation is
    // sampled), so the profile holds the live allocations of these requests whatever
    // their size: the check does not depend on the sampling rate.
    // (creates only: the `session` route is rate limited to one request in this test)
    for _ in 0..5 {
        let (id, _) = create(&c, &base).await;
        assert!(!id.is_empty());
    }
    let r = c
        .get(format!("{admin}/debug/pprof/heap"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("pprof");
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.expect("profile");
    assert!(body.len() > 20 && body[..2] == [0x1f, 0x8b], "gzip magic");
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(body.as_ref())
        .read_to_end(&mut raw)
        .expect("gunzip");
    let profile = <Profile as prost::Message>::decode(raw.as_slice()).expect("pprof protobuf");
    assert!(!profile.sample_type.is_empty(), "sample types");
    assert!(
        profile.string_table.first().is_some_and(String::is_empty),
        "pprof string_table[0] is the empty string"
    );
    assert!(
        profile
            .string_table
            .iter()
            .any(|s| s == "bytes" || s == "space"),
        "{:?}",
        profile.string_table.iter().take(10).collect::<Vec<_>>()
    );
    assert!(
        !profile.sample.is_empty(),
        "the proxy has sampled allocations"
    );
    // Off again: no profile.
    assert_eq!(profiling(false).await["active"], false);
    let r = c
        .get(format!("{admin}/debug/pprof/heap"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("pprof");
    assert_eq!(r.status(), 503);
}

/// `/metrics` of the proxy (admin listener) and of every worker: samples and histogram names.
async fn scrape(
    c: &reqwest::Client,
    admin: &str,
    workers: &[TestWorker],
) -> (Vec<Sample>, BTreeSet<String>) {
    let mut text = String::new();
    for url in std::iter::once(format!("{admin}/metrics"))
        .chain(workers.iter().map(|w| format!("{}/metrics", w.base())))
    {
        let t = c
            .get(url)
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        text.push('\n');
        text.push_str(&t);
    }
    (samples(&text), histograms(&text))
}

/// The selectors of every dashboard and alert expression; each name is one of the
/// constants of common/src/names.rs (histogram suffixes stripped; `hist`: histogram names).
fn wanted_selectors(hist: &BTreeSet<String>) -> BTreeSet<Selector> {
    let mut wanted: BTreeSet<Selector> = BTreeSet::new();
    let dash = dashboard_exprs();
    let alerts = alert_exprs();
    assert!(dash.len() >= 20, "dashboard expressions: {dash:?}");
    assert!(alerts.len() >= 7, "alert expressions: {alerts:?}");
    for e in dash.iter().chain(alerts.iter()) {
        let s = selectors(e);
        assert!(!s.is_empty(), "no hotplex metric in {e:?}");
        wanted.extend(s);
    }
    assert!(wanted.len() >= 25, "selectors: {wanted:#?}");
    let names_rs = include_str!("../../../common/src/names.rs");
    for s in &wanted {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| s.name.strip_suffix(suf).filter(|b| hist.contains(*b)))
            .unwrap_or(&s.name);
        assert!(
            names_rs.contains(&format!("\"{base}\"")),
            "{base} is not defined in common/src/names.rs"
        );
    }
    wanted
}

/// A proxy child process with admin tokens (`spawn_proxy` writes its own `admin:`).
struct Proxy {
    _guard: hotplex_e2e::ChildGuard,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    tls: Option<std::net::SocketAddr>,
    _dir: tempfile::TempDir,
}

async fn spawn_proxy_with_token(body: &str) -> Proxy {
    // Every listener on port 0: the proxy binds them and reports them in --addr-file.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("proxy.yaml");
    let admin_extra = format!("  tokens: [\"{TOKEN}\"]\n");
    write_config_file(&path, ANY_PORT, ANY_PORT, &admin_extra, body);
    let addr_path = dir.path().join("addr.json");
    let mut cmd = std::process::Command::new(PROXY_BIN);
    // The proxy's built-in profiling defaults (sampling off, switched on at runtime by the
    // test), with every allocation sampled once on: the profile check is deterministic.
    cmd.arg("--config")
        .arg(&path)
        .arg("--addr-file")
        .arg(&addr_path)
        .env("RUST_LOG", "warn")
        .env("MALLOC_CONF", "lg_prof_sample:0");
    let mut guard = hotplex_e2e::ChildGuard::spawn("proxy", &mut cmd);
    let bound = addr_file(&addr_path, &mut guard).await;
    let (listen, admin) = (addr_of(&bound, "listen"), addr_of(&bound, "admin"));
    let tls = bound["tls"].as_str().and_then(|a| a.parse().ok());
    hotplex_e2e::wait_until_http_ok(&format!("http://{admin}/health/live"), WAIT).await;
    // One probe round: the workers are known up.
    let c = client();
    assert!(
        hotplex_e2e::eventually(WAIT, || {
            let c = c.clone();
            async move {
                let r = c
                    .get(format!("http://{admin}/admin/workers"))
                    .bearer_auth(TOKEN)
                    .send()
                    .await;
                match r {
                    Ok(r) => r.json::<Value>().await.is_ok_and(|v| {
                        v["workers"]
                            .as_array()
                            .is_some_and(|l| l.iter().all(|w| w["healthy"] == true))
                    }),
                    Err(_) => false,
                }
            }
        })
        .await,
        "workers never became healthy"
    );
    assert!(
        hotplex_e2e::eventually(WAIT, || async {
            tokio::net::TcpStream::connect(listen).await.is_ok()
        })
        .await,
        "proxy listener never came up"
    );
    Proxy {
        _guard: guard,
        listen,
        admin,
        tls,
        _dir: dir,
    }
}
