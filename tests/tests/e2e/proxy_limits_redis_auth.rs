//! Proxy e2e: the shared rate-limit store behind Redis AUTH and TLS, addressed by hostname
//! (`localhost`), on a real `redis-server` (see `support::redis`).
//!
//! - AUTH: an ACL user with a password file, the default user with a password from an
//!   environment variable, both proxies sharing one limit; a wrong password fails closed
//!   and is never logged; an inline password is refused by `hotplex-proxy check`.
//! - TLS (`rediss://localhost`, a test CA in `tls_ca_file`): two proxies share one limit;
//!   without the CA, or by an address the certificate does not name, the store is refused.

use hotplex_common::names;
use std::path::{Path, PathBuf};

use crate::support::proxy::*;
use crate::support::redis::*;
use hotplex_e2e::{eventually, free_port};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

const BURST: u32 = 4;
const USER_PW: &str = "edge-user-pw-4f1c9a";
const DEFAULT_PW: &str = "default-pw-77e2b0";
const PW_ENV: &str = "HOTPLEX_E2E_REDIS_PASSWORD";

fn store_yaml(workers: &[TestWorker], store: &str) -> String {
    proxy_yaml(
        &worker_list(workers),
        &format!(
            "limits:\n  trusted_proxies: [\"127.0.0.1/32\"]\n  routes:\n    session: {{rate: 0.0001, burst: {BURST}}}\n  store:\n{store}    fail: closed\n    timeout: 300ms\n"
        ),
    )
}

fn probe(c: &reqwest::Client, base: &str, ip: &str) -> reqwest::RequestBuilder {
    c.get(format!("{base}/sessions/probe"))
        .header("x-forwarded-for", ip)
}

/// One bucket through `bases` in turn: exactly `BURST` admitted (remaining 3..0), then 429.
async fn shared_bucket(c: &reqwest::Client, bases: &[String], ip: &str) -> Bucket {
    let mut b = Bucket::new("shared", BURST);
    for i in 0..(BURST as usize + 4) {
        b.observe(&hit(probe(c, &bases[i % bases.len()], ip)).await);
    }
    assert!(b.exhausted, "{b:?}");
    if b.failed == 0 {
        assert_eq!((b.admitted, b.last), (BURST, 0), "{b:?}");
    }
    b
}

/// A proxy whose store never answers: 503 `rate_limit_unavailable`, gauge 0, a WARN line
/// (returned), never "reachable again".
async fn refused_store(c: &reqwest::Client, p: &LoggedProxy) -> String {
    let h = hit(probe(c, &p.base(), "198.51.100.1")).await;
    assert_eq!(
        (h.status, h.error.as_str()),
        (503, "rate_limit_unavailable"),
        "{h:?}"
    );
    assert!(
        eventually(WAIT, || async {
            metric(c, p, names::proxy::RATELIMIT_STORE_UP, &[]).await == 0.0
        })
        .await
    );
    let log = p.log();
    let warn = log
        .lines()
        .find(|l| l.contains("rate-limit store unreachable: failing closed"))
        .unwrap_or_else(|| panic!("no WARN line in {log}"))
        .to_string();
    assert!(!log.contains("reachable again"), "{log}");
    warn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auth_with_user_or_default_password_and_hostname() {
    if skip_without_redis() {
        return;
    }
    let port = free_port();
    let user_rule = format!(">{USER_PW}");
    let _redis = start_redis(
        port,
        &[
            "--requirepass",
            DEFAULT_PW,
            "--user",
            "edge",
            "on",
            &user_rule,
            "~hotplex:rl:*",
            "+@all",
        ],
    )
    .await;
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let pw_file = dir.path().join("redis-password");
    std::fs::write(&pw_file, format!("{USER_PW}\n")).expect("write password");
    let c = client();

    // An ACL user, password from a file, `localhost` in a URL.
    let user = spawn_proxy(&store_yaml(
        &workers,
        &format!(
            "    redis: \"redis://localhost:{port}/0\"\n    username: edge\n    password: \"file:{}\"\n",
            pw_file.display()
        ),
    ))
    .await;
    // The default user, password from an environment variable, `localhost:port`.
    let d1 = tempfile::tempdir().expect("tempdir");
    let default = spawn_logged_proxy(
        d1.path(),
        &store_yaml(
            &workers,
            &format!("    redis: \"localhost:{port}\"\n    password: \"env:{PW_ENV}\"\n"),
        ),
        &[(PW_ENV, DEFAULT_PW), ("RUST_LOG", "info")],
    )
    .await;
    wait_store_answers(&c, &user.base()).await;
    wait_store_answers(&c, &default.base()).await;
    let b = shared_bucket(&c, &[user.base(), default.base()], "198.51.100.20").await;
    eprintln!("redis AUTH via localhost: two proxies (ACL user + file, default user + env) shared one bucket: {b:?}");
    // The decisions are in Redis, under the prefix the ACL user may write.
    let mut side_conn = side(&format!("redis://edge:{USER_PW}@127.0.0.1:{port}/")).await;
    let tat: Option<String> = redis::cmd("GET")
        .arg("hotplex:rl:route|session|ip:198.51.100.20")
        .query_async(&mut side_conn)
        .await
        .expect("GET");
    assert!(tat.is_some(), "bucket not in Redis");
    assert!(!default.log().contains(DEFAULT_PW), "password in the log");

    // A wrong password: refused login, fail closed, the password never logged.
    let d2 = tempfile::tempdir().expect("tempdir");
    let wrong = "wrong-pw-31337-abc";
    let bad = spawn_logged_proxy(
        d2.path(),
        &store_yaml(
            &workers,
            &format!("    redis: \"localhost:{port}\"\n    password: \"env:{PW_ENV}\"\n"),
        ),
        &[(PW_ENV, wrong), ("RUST_LOG", "info")],
    )
    .await;
    let warn = refused_store(&c, &bad).await;
    eprintln!("redis wrong password: {warn}");
    assert!(!bad.log().contains(wrong), "password in the log");

    // An inline password is refused before start.
    let cfg = dir.path().join("inline.yaml");
    write_config_file(
        &cfg,
        ANY_PORT,
        ANY_PORT,
        "",
        &store_yaml(
            &workers,
            &format!("    redis: \"localhost:{port}\"\n    password: \"{DEFAULT_PW}\"\n"),
        ),
    );
    let (code, out, err) = check(&cfg);
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("limits.store.password"), "{err}");
    assert!(
        !err.contains(DEFAULT_PW) && !out.contains(DEFAULT_PW),
        "{out}{err}"
    );
}

/// A test CA and a `localhost` server certificate for Redis, written to `dir`:
/// (ca.pem, redis.crt, redis.key).
fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "hotplex e2e redis CA");
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("ca");
    let leaf = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    let key = KeyPair::generate().expect("key");
    let cert = leaf.signed_by(&key, &ca).expect("sign");
    let paths = (
        dir.join("ca.pem"),
        dir.join("redis.crt"),
        dir.join("redis.key"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write ca");
    std::fs::write(&paths.1, cert.pem()).expect("write cert");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write key");
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_with_ca_file_and_hostname_check() {
    if skip_without_redis() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, crt, key) = tls_files(dir.path());
    let port = free_port();
    let port_s = port.to_string();
    let (crt_s, key_s, ca_s) = (
        crt.display().to_string(),
        key.display().to_string(),
        ca.display().to_string(),
    );
    // TLS only: the plain port is off.
    let _redis = start_redis(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port_s,
            "--tls-cert-file",
            &crt_s,
            "--tls-key-file",
            &key_s,
            "--tls-ca-cert-file",
            &ca_s,
            "--tls-auth-clients",
            "no",
        ],
    )
    .await;
    let workers = spawn_workers(1, WorkerOpts::default()).await;
    let c = client();
    let with_ca = store_yaml(
        &workers,
        &format!("    redis: \"rediss://localhost:{port}\"\n    tls_ca_file: \"{ca_s}\"\n"),
    );
    let a = spawn_proxy(&with_ca).await;
    let b = spawn_proxy(&with_ca).await;
    wait_store_answers(&c, &a.base()).await;
    wait_store_answers(&c, &b.base()).await;
    let bucket = shared_bucket(&c, &[a.base(), b.base()], "198.51.100.30").await;
    eprintln!("redis TLS (rediss://localhost, test CA): two proxies shared one bucket: {bucket:?}");

    // Without the CA (web PKI roots only): the certificate is refused.
    let d1 = tempfile::tempdir().expect("tempdir");
    let no_ca = spawn_logged_proxy(
        d1.path(),
        &store_yaml(
            &workers,
            &format!("    redis: \"rediss://localhost:{port}\"\n"),
        ),
        &[("RUST_LOG", "info")],
    )
    .await;
    eprintln!(
        "redis TLS without the CA: {}",
        refused_store(&c, &no_ca).await
    );
    // With the CA, but by an address the certificate does not name.
    let d2 = tempfile::tempdir().expect("tempdir");
    let by_ip = spawn_logged_proxy(
        d2.path(),
        &store_yaml(
            &workers,
            &format!("    redis: \"rediss://127.0.0.1:{port}\"\n    tls_ca_file: \"{ca_s}\"\n"),
        ),
        &[("RUST_LOG", "info")],
    )
    .await;
    eprintln!(
        "redis TLS, name mismatch: {}",
        refused_store(&c, &by_ip).await
    );
}
