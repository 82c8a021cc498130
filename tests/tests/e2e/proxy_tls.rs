//! Proxy e2e over TLS with real TLS clients (rustls via reqwest, OpenSSL for pinned
//! protocol versions and wss): ALPN h2/http1.1, sessions and SSE over h2, wss, SNI,
//! certificate rotation under an open connection, TLS 1.1 refusal, HSTS, HTTP→HTTPS
//! redirect, bad certificates on reload.

use hotplex_common::names;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::proxy::*;
use crate::support::tls::{https_to, spawn_tls_worker, Ca, Leaf};
use hotplex_e2e::sse::Reader;
use hotplex_e2e::{eventually, free_addr, metric_value};
use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use openssl::x509::X509;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// An HTTPS client trusting `ca`, resolving `a.test`/`b.test` to `tls`, keeping TLS info.
fn https_client(ca: &Ca, tls: SocketAddr, http1_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("ca"))
        .resolve("a.test", tls)
        .resolve("b.test", tls)
        .tls_info(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30));
    if http1_only {
        b = b.http1_only();
    }
    b.build().expect("client")
}

fn peer_cert(r: &reqwest::Response) -> Vec<u8> {
    r.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("peer certificate")
        .to_vec()
}

/// Waits until the TLS listener completes a handshake and answers (a bare TCP probe would
/// log a handshake error).
async fn wait_tls(ca: &Ca, tls: SocketAddr) {
    let c = https_client(ca, tls, true);
    let url = format!("https://a.test:{}/health/live", tls.port());
    assert!(
        eventually(WAIT, || async { c.get(&url).send().await.is_ok() }).await,
        "{tls} never came up"
    );
}

fn tls_yaml(tls: SocketAddr, certs: &[(&str, &Path, &Path)], extra: &str) -> String {
    let mut y = format!("tls:\n  listen: \"{tls}\"\n  watch_debounce_ms: 100\n  certificates:\n");
    for (name, c, k) in certs {
        y.push_str(&format!(
            "    - server_names: [\"{name}\"]\n      cert: \"{}\"\n      key: \"{}\"\n",
            c.display(),
            k.display()
        ));
    }
    y.push_str(extra);
    y
}

/// An OpenSSL handshake to `addr` for `sni`, limited to `max` (blocking).
fn openssl_handshake(
    addr: SocketAddr,
    sni: &str,
    ca: &str,
    max: SslVersion,
) -> Result<String, String> {
    let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
    // Let the client offer old versions: the refusal must come from the server.
    b.set_security_level(0);
    b.set_cipher_list("ALL:@SECLEVEL=0")
        .map_err(|e| e.to_string())?;
    b.set_min_proto_version(Some(SslVersion::TLS1))
        .map_err(|e| e.to_string())?;
    b.set_max_proto_version(Some(max))
        .map_err(|e| e.to_string())?;
    b.cert_store_mut()
        .add_cert(X509::from_pem(ca.as_bytes()).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let s = b
        .build()
        .connect(sni, tcp)
        .map_err(|e| format!("handshake: {e}"))?;
    Ok(s.ssl().version_str().to_string())
}

type Wss = tokio_tungstenite::WebSocketStream<tokio_openssl::SslStream<tokio::net::TcpStream>>;

/// wss over an OpenSSL stream (ALPN http/1.1, SNI `a.test`).
async fn wss_connect(tls: SocketAddr, ca: &str) -> (Wss, Option<String>) {
    let mut b = SslConnector::builder(SslMethod::tls()).expect("builder");
    b.cert_store_mut()
        .add_cert(X509::from_pem(ca.as_bytes()).expect("ca"))
        .expect("add ca");
    b.set_alpn_protos(b"\x08http/1.1").expect("alpn");
    let ssl = b
        .build()
        .configure()
        .expect("configure")
        .into_ssl("a.test")
        .expect("ssl");
    let tcp = tokio::net::TcpStream::connect(tls).await.expect("connect");
    let mut s = tokio_openssl::SslStream::new(ssl, tcp).expect("stream");
    std::pin::Pin::new(&mut s)
        .connect()
        .await
        .expect("TLS handshake");
    let req = format!("wss://a.test:{}/ws/v1/agent", tls.port())
        .into_client_request()
        .expect("request");
    let (ws, resp) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, s))
        .await
        .expect("ws timeout")
        .expect("ws handshake");
    assert_eq!(resp.status().as_u16(), 101);
    let worker = resp
        .headers()
        .get("x-hotplex-worker")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (ws, worker)
}

/// One worker behind a proxy whose TLS listener serves one certificate for `a.test`,
/// signed by `ca`; `tls_extra` is appended to the `tls:` section. Waits for the listener.
struct OneCert {
    dir: tempfile::TempDir,
    ca: Ca,
    leaf: Leaf,
    cert: PathBuf,
    key: PathBuf,
    tls: SocketAddr,
    workers: Vec<TestWorker>,
    proxy: TestProxy,
}

async fn one_cert_proxy(tls_extra: &str) -> OneCert {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let leaf = ca.leaf(&["a.test"]);
    let (cert, key) = leaf.write(dir.path(), "a");
    let tls = free_addr();
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let proxy = spawn_proxy(&proxy_yaml(
        &worker_list(&workers),
        &tls_yaml(tls, &[("a.test", &cert, &key)], tls_extra),
    ))
    .await;
    wait_tls(&ca, tls).await;
    OneCert {
        dir,
        ca,
        leaf,
        cert,
        key,
        tls,
        workers,
        proxy,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_h1_h2_sni_sessions_sse_wss_hsts_redirect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let (la, lb) = (ca.leaf(&["a.test"]), ca.leaf(&["b.test"]));
    let (ca_, ka) = la.write(dir.path(), "a");
    let (cb, kb) = lb.write(dir.path(), "b");
    // The redirect listener is bound by the proxy outside pingora and not reported: a
    // picked port.
    let redirect = free_addr();
    let workers = spawn_workers(2, WorkerOpts::default()).await;
    let extra = tls_yaml(
        ANY_PORT,
        &[("a.test", &ca_, &ka), ("b.test", &cb, &kb)],
        &format!("  hsts:\n    max_age: 31536000\n  redirect_http: \"{redirect}\"\n  h2_max_concurrent_streams: 50\n"),
    );
    let p = spawn_proxy(&proxy_yaml(&worker_list(&workers), &extra)).await;
    let tls = p.tls.expect("TLS listener");
    wait_tls(&ca, tls).await;
    let port = tls.port();
    let h2 = https_client(&ca, tls, false);
    let h1 = https_client(&ca, tls, true);

    // ALPN: h2 by default, http/1.1 when the client only offers that. HSTS on both.
    let r = h2
        .post(format!("https://a.test:{port}/sessions"))
        .send()
        .await
        .expect("create over h2");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 201);
    assert_eq!(peer_cert(&r), la.der, "SNI a.test -> certificate a");
    assert_eq!(
        hdr(&r, "strict-transport-security").as_deref(),
        Some("max-age=31536000")
    );
    let node = hdr(&r, "x-hotplex-node").expect("node");
    let body: Value = r.json().await.expect("json");
    let id = body["session_id"].as_str().expect("session_id").to_string();

    // The session sticks to its worker over h2 (several streams on one connection).
    for _ in 0..5 {
        let r = h2
            .get(format!("https://a.test:{port}/sessions/{id}"))
            .send()
            .await
            .expect("get over h2");
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status(), 200);
        assert_eq!(hdr(&r, "x-hotplex-node").as_deref(), Some(node.as_str()));
    }

    // POST with a body + SSE turn over h2 to an HTTP/1.1 worker (pingora issue 935).
    let r = h2
        .post(format!("https://a.test:{port}/sessions/{id}/messages"))
        .json(&json!({"prompt": "hello over h2"}))
        .send()
        .await
        .expect("SSE over h2");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, "x-hotplex-node").as_deref(), Some(node.as_str()));
    let events = Reader::new(r).collect().await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names.last().copied(), Some("completed"), "{names:?}");
    assert!(names.contains(&"answer"), "{names:?}");
    // Connection still healthy after the stream (no double terminator / protocol error).
    let r = h2
        .get(format!("https://a.test:{port}/sessions/{id}"))
        .send()
        .await
        .expect("after SSE");
    assert_eq!(r.status(), 200);

    // HTTP/1.1 over TLS; SNI b.test -> certificate b.
    let r = h1
        .get(format!("https://b.test:{port}/sessions/{id}"))
        .send()
        .await
        .expect("h1");
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
    assert_eq!(peer_cert(&r), lb.der, "SNI b.test -> certificate b");
    assert!(hdr(&r, "strict-transport-security").is_some());

    // No HSTS on the plain listener.
    let r = client()
        .get(format!("{}/sessions/{id}", p.base()))
        .send()
        .await
        .expect("plain");
    assert_eq!(r.status(), 200);
    assert!(hdr(&r, "strict-transport-security").is_none());

    // The plain redirect listener: 301 to https, same host, TLS port, path and query.
    let nr = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = nr
        .get(format!("http://{redirect}/sessions/{id}?x=1"))
        .header("host", "a.test")
        .send()
        .await
        .expect("redirect");
    assert_eq!(r.status(), 301);
    assert_eq!(
        hdr(&r, "location"),
        Some(format!("https://a.test:{port}/sessions/{id}?x=1"))
    );

    // wss: WebSocket over HTTP/1.1 TLS, two turns.
    let (mut ws, worker) = wss_connect(tls, &ca.pem()).await;
    assert!(worker.is_some(), "x-hotplex-worker on the 101");
    for rid in 1..=2 {
        // (id-less: the connection's session, minted by the proxy for this connection)
        let frames = ws_execute(&mut ws, rid, "", "hi").await.expect("wss turn");
        assert_eq!(
            frames.last().expect("f")["event"],
            "completed",
            "{frames:?}"
        );
    }
    ws.close(None).await.ok();

    // TLS 1.0/1.1 refused, 1.2 accepted (OpenSSL client pinned to each).
    let (pem, pem2) = (ca.pem(), ca.pem());
    let old = tokio::task::spawn_blocking(move || {
        openssl_handshake(tls, "a.test", &pem, SslVersion::TLS1_1)
    })
    .await
    .expect("join");
    assert!(old.is_err(), "TLS 1.1 must be refused: {old:?}");
    let v12 = tokio::task::spawn_blocking(move || {
        openssl_handshake(tls, "a.test", &pem2, SslVersion::TLS1_2)
    })
    .await
    .expect("join");
    assert_eq!(v12.as_deref(), Ok("TLSv1.2"));

    // Handshakes and certificate expiry are exported.
    let m = metrics(&client(), &p).await;
    assert!(
        metric_value(&m, names::proxy::TLS_HANDSHAKES, &["TLSv1.3"]).unwrap_or(0.0) >= 2.0,
        "{m}"
    );
    assert!(metric_value(&m, names::proxy::TLS_HANDSHAKES, &["TLSv1.2"]).unwrap_or(0.0) >= 1.0);
    assert!(
        metric_value(&m, names::proxy::TLS_CERT_EXPIRY, &["tls.certificates[1]"]).unwrap_or(0.0)
            > 1.7e9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_keeps_connections_and_rejects_bad_certs() {
    let OneCert {
        dir,
        ca,
        leaf: first,
        cert,
        key,
        tls,
        workers: _workers,
        proxy: p,
    } = one_cert_proxy("").await;
    let url = format!("https://a.test:{}/health/live", tls.port());
    let served = |c: reqwest::Client| {
        let url = url.clone();
        async move {
            let r = c.get(&url).send().await.expect("request");
            (r.status().as_u16(), peer_cert(&r))
        }
    };

    // An HTTP/1.1 keep-alive connection made with the first certificate.
    let old = https_client(&ca, tls, true);
    let (_, der) = served(old.clone()).await;
    assert_eq!(der, first.der);

    // Rotate the files: new handshakes get the new certificate (file watcher)...
    let second = ca.leaf(&["a.test"]);
    second.write(dir.path(), "a");
    assert!(
        eventually(WAIT, || async {
            served(https_client(&ca, tls, true)).await.1 == second.der
        })
        .await,
        "rotated certificate never served"
    );
    // ...while the open connection keeps working on its original handshake.
    let (_, der) = served(old.clone()).await;
    assert_eq!(der, first.der, "open connection kept (same TLS session)");

    // A mismatched pair written in place: rejected, the second certificate keeps serving.
    let c = client();
    let third = ca.leaf(&["a.test"]);
    std::fs::write(&key, &third.key_pem).expect("write mismatched key");
    assert!(
        eventually(WAIT, || async {
            metric_value(
                &metrics(&c, &p).await,
                names::proxy::TLS_CERT_RELOADS,
                &["failure"],
            )
            .unwrap_or(0.0)
                >= 1.0
        })
        .await,
        "failed reload counted"
    );
    assert_eq!(served(https_client(&ca, tls, true)).await.1, second.der);
    std::fs::write(&key, &second.key_pem).expect("restore key");

    // Config reload naming a bad pair: the whole reload is rejected, old cert served.
    let bad_dir = tempfile::tempdir().expect("tempdir");
    let (bc, _) = third.write(bad_dir.path(), "bad");
    let (_, bk) = ca.leaf(&["a.test"]).write(bad_dir.path(), "other");
    let text = std::fs::read_to_string(&p.config_path).expect("config");
    let bad = text
        .replace(&cert.display().to_string(), &bc.display().to_string())
        .replace(&key.display().to_string(), &bk.display().to_string());
    std::fs::write(&p.config_path, bad).expect("write config");
    let fails =
        |m: &str| metric_value(m, names::config::RELOADS_TOTAL, &["failure"]).unwrap_or(0.0);
    let before = fails(&metrics(&c, &p).await);
    p.guard.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        eventually(WAIT, || async { fails(&metrics(&c, &p).await) > before }).await,
        "bad certificate on config reload rejected"
    );
    assert_eq!(served(https_client(&ca, tls, true)).await.1, second.der);

    // Changing tls.listen is refused (not live-reloadable).
    let moved = text.replace(
        &format!("listen: \"{tls}\""),
        &format!("listen: \"{}\"", free_addr()),
    );
    assert_ne!(moved, text);
    std::fs::write(&p.config_path, moved).expect("write config");
    let before = fails(&metrics(&c, &p).await);
    p.guard.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        eventually(WAIT, || async { fails(&metrics(&c, &p).await) > before }).await,
        "tls.listen change rejected"
    );

    // A good config reload switching to new files applies.
    let fourth = ca.leaf(&["a.test"]);
    let (c4, k4) = fourth.write(bad_dir.path(), "fourth");
    let good = text
        .replace(&cert.display().to_string(), &c4.display().to_string())
        .replace(&key.display().to_string(), &k4.display().to_string());
    std::fs::write(&p.config_path, good).expect("write config");
    p.guard.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        eventually(WAIT, || async {
            served(https_client(&ca, tls, true)).await.1 == fourth.der
        })
        .await,
        "config reload switched certificates"
    );
    let (status, der) = served(old).await;
    assert_eq!(
        (status, der),
        (200, first.der),
        "first connection still open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_stream_in_flight_finishes_on_graceful_stop() {
    // Keep the fixture bound: its worker must outlive the test.
    let f = one_cert_proxy("").await;
    let (ca, tls) = (&f.ca, f.tls);
    let mut p = f.proxy;
    let port = tls.port();
    let h2 = https_client(ca, tls, false);
    let r = h2
        .post(format!("https://a.test:{port}/sessions"))
        .send()
        .await
        .expect("create");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let id = r.json::<Value>().await.expect("json")["session_id"]
        .as_str()
        .expect("id")
        .to_string();
    let r = h2
        .post(format!("https://a.test:{port}/sessions/{id}/messages"))
        .json(&json!({"prompt": "sleep 400"}))
        .send()
        .await
        .expect("SSE over h2");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let mut reader = Reader::new(r);
    let first = reader.next().await.expect("first event");
    assert_eq!(first.event, "thinking");
    // SIGTERM: graceful stop (GOAWAY to h2 clients); the open stream still completes
    // (it is shorter than the proxy's grace period, server::GRACE_PERIOD_SECS = 1 s).
    p.guard.signal(nix::sys::signal::Signal::SIGTERM);
    let mut names = vec![first.event];
    while let Some(ev) = reader.next().await {
        names.push(ev.event);
    }
    assert_eq!(
        names.last().map(String::as_str),
        Some("completed"),
        "{names:?}"
    );
    assert!(
        p.guard.wait_timeout(Duration::from_secs(10)).is_some(),
        "proxy exits after the graceful stop"
    );
}

/// `upstream_tls`: proxy A reaches its worker over verified TLS: a real worker serving TLS
/// itself (its `tls:` listener) with a certificate for `worker.test` (the shared-name `sni`
/// mode). With another CA, the worker is refused and not one request reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_to_workers_is_verified() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, Ca::new().pem()).expect("write other ca");

    let w = spawn_tls_worker("w1", ANY_PORT, &ca.leaf(&["worker.test"]), "").await;
    let b_tls = w.addr;
    let up = |ca: &Path| {
        format!(
            "upstream_tls:\n  enabled: true\n  ca_file: \"{}\"\n  sni: worker.test\nhealth_check:\n  path: /health/live\n  interval: 200ms\n  timeout: 500ms\n  failures: 1\n  successes: 1\n",
            ca.display()
        )
    };
    let a = spawn_proxy(&proxy_yaml(&[("w1", b_tls)], &up(&ca_file))).await;
    let c = client();
    let (id, _) = create(&c, &a.base()).await;
    let r = get_session(&c, &a.base(), &id).await;
    assert_eq!(r.status, 200, "{r:?}");
    let ws = admin_worker(&c, &a, "w1").await;
    assert_eq!(ws["healthy"], true, "TLS health probes pass: {ws}");
    let wc = https_to(&ca, "worker.test", w.addr);
    let base = format!("https://worker.test:{}", w.addr.port());
    let _ = wc
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("scrape");
    let before = worker_requests_at(&wc, &base).await;
    assert!(
        before >= 2.0,
        "A's create and get reached the worker: {before}"
    );

    // The wrong CA: the worker's certificate is refused, nothing reaches it.
    let bad = spawn_proxy(&proxy_yaml(&[("w1", b_tls)], &up(&other_ca))).await;
    let r = send(c.post(format!("{}/sessions", bad.base()))).await;
    assert!(r.status >= 500, "unverifiable worker must fail: {r:?}");
    let ws = admin_worker(&c, &bad, "w1").await;
    assert_eq!(ws["healthy"], false, "{ws}");
    assert_eq!(
        worker_requests_at(&wc, &base).await,
        before,
        "a request of the proxy with the wrong CA reached the worker"
    );
}

/// `upstream_tls` proves which worker answers (issue 24): each worker's certificate must
/// carry its own name (`server_name: "{id}.workers.test"`) under the private CA. Two real
/// workers serving TLS themselves with valid certificates of that CA: B1's names w1, B2's
/// names w9 although A knows it as w2. A refuses B2 at the handshake (identity `impostor`,
/// reason `certificate`, counted) and places every session on w1; B2 never sees one HTTP
/// request (not even a probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_certificates_must_name_their_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("write ca");
    let b1 = spawn_tls_worker("w1", ANY_PORT, &ca.leaf(&["w1.workers.test"]), "").await;
    let b2 = spawn_tls_worker("w2", ANY_PORT, &ca.leaf(&["w9.workers.test"]), "").await;
    let (b1_tls, b2_tls) = (b1.addr, b2.addr);
    let up = format!(
        "upstream_tls:\n  enabled: true\n  ca_file: \"{}\"\n  server_name: \"{{id}}.workers.test\"\nhealth_check:\n  path: /health/live\n  interval: 200ms\n  timeout: 500ms\n  failures: 1\n  successes: 1\n",
        ca_file.display()
    );
    let a = spawn_proxy(&proxy_yaml(&[("w1", b1_tls), ("w2", b2_tls)], &up)).await;
    let c = client();
    let identities = || async {
        let w1 = admin_worker(&c, &a, "w1").await;
        let w2 = admin_worker(&c, &a, "w2").await;
        w1["identity"] == "verified" && w2["identity"] == "impostor"
    };
    assert!(
        eventually(WAIT, identities).await,
        "w1 verified, w2 impostor: {}",
        admin_workers(&c, &a).await
    );
    for _ in 0..8 {
        let (id, _) = create(&c, &a.base()).await;
        assert!(
            id.starts_with("w1."),
            "placed on the worker whose certificate names it: {id}"
        );
    }
    let m = metrics(&c, &a).await;
    let failures = metric_value(&m, names::identity::FAILURES, &["reason=\"certificate\""]);
    assert!(failures.unwrap_or(0.0) >= 1.0, "{m}");
    // B2 refused at the handshake: not one HTTP request reached it (probes included).
    let b2c = https_to(&ca, "w9.workers.test", b2.addr);
    let b2m = b2c
        .get(format!(
            "https://w9.workers.test:{}/metrics",
            b2.addr.port()
        ))
        .send()
        .await
        .expect("B2 metrics")
        .text()
        .await
        .expect("text");
    let count = format!("{}_count{{", names::shared::REQUEST_DURATION_SECONDS);
    let seen: Vec<&str> = b2m
        .lines()
        .filter(|l| l.starts_with(&count) && !l.contains("route=\"/metrics\""))
        .filter(|l| l.rsplit(' ').next() != Some("0"))
        .collect();
    assert!(seen.is_empty(), "B2 got requests: {seen:?}");
}

/// Reads HTTP/2 frames from `s` until the server's (non-ACK) SETTINGS frame; returns its
/// parameters as (identifier, value) pairs.
fn read_server_settings(s: &mut impl std::io::Read) -> Vec<(u16, u32)> {
    for _ in 0..16 {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).expect("frame header");
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).expect("frame payload");
        if kind == 0x4 && flags & 0x1 == 0 {
            return payload
                .chunks_exact(6)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    )
                })
                .collect();
        }
    }
    panic!("no SETTINGS frame from the server");
}

/// HTTP/2 limits from the config reach the wire (SETTINGS_MAX_CONCURRENT_STREAMS,
/// SETTINGS_MAX_HEADER_LIST_SIZE), a client multiplexing more requests than the stream
/// limit on one connection gets every answer, and an oversized header list is refused
/// without harming the connection's other requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_limits_are_advertised_and_enforced() {
    use std::io::Write;
    let f = one_cert_proxy("  h2_max_concurrent_streams: 7\n  max_header_list_size: 4096\n").await;
    let (ca, tls) = (&f.ca, f.tls);

    // The server's SETTINGS, read off a raw h2 connection (ALPN h2).
    let ca_pem = ca.pem();
    let settings = tokio::task::spawn_blocking(move || {
        let mut b = SslConnector::builder(SslMethod::tls()).expect("builder");
        b.cert_store_mut()
            .add_cert(X509::from_pem(ca_pem.as_bytes()).expect("ca"))
            .expect("add ca");
        b.set_alpn_protos(b"\x02h2").expect("alpn");
        let tcp = std::net::TcpStream::connect(tls).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut s = b.build().connect("a.test", tcp).expect("handshake");
        assert_eq!(s.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .expect("preface");
        read_server_settings(&mut s)
    })
    .await
    .expect("settings task");
    assert!(
        settings.contains(&(0x3, 7)),
        "MAX_CONCURRENT_STREAMS: {settings:?}"
    );
    assert!(
        settings.contains(&(0x6, 4096)),
        "MAX_HEADER_LIST_SIZE: {settings:?}"
    );

    // 40 concurrent requests on one h2 connection (limit 7 streams): all answered.
    let h2 = https_client(ca, tls, false);
    let url = format!("https://a.test:{}/health/live", tls.port());
    let r = h2.get(&url).send().await.expect("first request");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let results = futures_util::future::join_all((0..40).map(|_| h2.get(&url).send())).await;
    let ok = results
        .iter()
        .filter(|r| r.as_ref().map(|r| r.status().is_success()).unwrap_or(false))
        .count();
    assert_eq!(
        ok, 40,
        "multiplexed past the stream limit: {ok}/40 answered"
    );

    // A header list over 4096 bytes is refused (stream reset or 4xx), never proxied...
    let big = "x".repeat(8192);
    let r = h2.get(&url).header("x-big", &big).send().await;
    let oversized = match &r {
        Ok(r) => {
            assert!(
                r.status().is_client_error(),
                "oversized headers: {}",
                r.status()
            );
            r.status().to_string()
        }
        Err(e) => format!("refused ({e})"),
    };
    // ...and the client's next request still works.
    let r = h2.get(&url).send().await.expect("after oversized headers");
    assert!(r.status().is_success());
    eprintln!(
        "h2 limits: settings {settings:?}, 40/40 multiplexed, oversized headers -> {oversized}"
    );
}

/// `buffers:` at the edges: a plain-HTTP read buffer smaller than one request, no TLS read
/// buffer at all (OpenSSL reads straight from the socket) and a write buffer smaller than
/// one response. Large bodies must still cross intact on HTTP/1.1, HTTP/2 and WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_listener_buffers_still_carry_large_bodies() {
    // 96 KiB of prompt (over the 64 KiB the edge reads whole, so with the opt-in):
    // many reads and writes of every buffer, below limits.max_body_bytes.
    let s = one_cert_proxy(
        "buffers:\n  read: 700\n  tls_read: 0\n  write: 300\nlimits:\n  allow_streamed_bodies: true\n  max_body_bytes: 1048576\n",
    )
    .await;
    let port = s.tls.port();
    let prompt: String = (0..96 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .chain("END-OF-PROMPT".chars())
        .collect();
    let plain = client();
    let clients = [
        (plain.clone(), s.proxy.base(), reqwest::Version::HTTP_11),
        (
            https_client(&s.ca, s.tls, true),
            format!("https://a.test:{port}"),
            reqwest::Version::HTTP_11,
        ),
        (
            https_client(&s.ca, s.tls, false),
            format!("https://a.test:{port}"),
            reqwest::Version::HTTP_2,
        ),
    ];
    for (c, base, version) in clients {
        let (id, _) = create(&c, &base).await;
        let r = c
            .post(format!("{base}/sessions/{id}/messages"))
            .json(&json!({ "prompt": prompt }))
            .send()
            .await
            .expect("message");
        assert_eq!(r.status(), 200, "{base}");
        assert_eq!(r.version(), version);
        let events = Reader::new(r).collect().await;
        let answer = events
            .iter()
            .find(|e| e.event == "answer")
            .unwrap_or_else(|| panic!("no answer over {version:?}: {events:?}"));
        assert!(
            answer.data.contains(&prompt),
            "{version:?}: the answer lost bytes of the prompt ({} bytes)",
            answer.data.len()
        );
        assert_eq!(events.last().map(|e| e.event.as_str()), Some("completed"));
    }
    let (mut ws, _) = wss_connect(s.tls, &s.ca.pem()).await;
    let frames = ws_execute(&mut ws, 1, "", &prompt).await.expect("wss turn");
    let answer = frames
        .iter()
        .find(|f| f["event"] == "answer")
        .expect("answer frame");
    let text = answer["data"]["text"].as_str().unwrap_or("");
    assert!(
        text.ends_with("END-OF-PROMPT"),
        "wss answer: {} bytes",
        text.len()
    );
    assert!(text.contains(&prompt));
    ws.close(None).await.ok();
}
