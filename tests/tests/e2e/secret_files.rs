//! e2e: private keys and secret files readable by group or others. A 0644 key file named by
//! the config is a visible warning (the log at start and on reload, `hotplex-proxy check`),
//! or refuses the config with `security.refuse_readable_secrets: true` (start, check,
//! reload), in the proxy and in the worker.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::proxy::*;
use hotplex_e2e::{eventually, ChildGuard};

const REASON: &str = "readable by group or others (mode 0644)";

fn key_file(dir: &Path, name: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, "0123456789abcdef0123456789abcdef\n").expect("write key");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    p
}

fn proxy_config(dir: &Path, key: &Path, refuse: bool) -> std::path::PathBuf {
    let extra = format!(
        "worker_auth:\n  key: \"file:{}\"\nsecurity:\n  refuse_readable_secrets: {refuse}\n",
        key.display()
    );
    let yaml = proxy_yaml(&[("w1", "127.0.0.1:1".parse().expect("addr"))], &extra);
    let f = dir.join("proxy.yaml");
    write_config_file(&f, ANY_PORT, ANY_PORT, "", &yaml);
    f
}

async fn wait_log(path: &Path, needle: &str) -> bool {
    let (p, n) = (path.to_path_buf(), needle.to_string());
    eventually(WAIT, || {
        let (p, n) = (p.clone(), n.clone());
        async move {
            std::fs::read_to_string(&p)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains(&n) && l.contains("worker_auth.key") && l.contains("WARN"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_warns_on_a_world_readable_key_file_or_refuses_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(dir.path(), "worker.key", 0o644);

    // Default: a warning, visible in `check` and in the log; the proxy runs.
    let cfg = proxy_config(dir.path(), &key, false);
    let (code, _, err) = check(&cfg);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("warning") && err.contains("worker_auth.key") && err.contains(REASON),
        "{err}"
    );
    let log = dir.path().join("proxy.log");
    let addr = dir.path().join("addr.json");
    let mut cmd = Command::new(PROXY_BIN);
    cmd.arg("--config")
        .arg(&cfg)
        .arg("--addr-file")
        .arg(&addr)
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(&log).expect("log"));
    let mut g = ChildGuard::spawn_with_output("proxy", &mut cmd);
    let bound = addr_file(&addr, &mut g).await;
    let admin = format!("http://{}", addr_of(&bound, "admin"));
    assert!(wait_log(&log, REASON).await, "start-up warning in the log");
    hotplex_e2e::wait_until_http_ok(&format!("{admin}/health/live"), WAIT).await;

    // Reload: fixed (0600) then no new warning; opened again with refusal on: refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let before = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    let c = client();
    let r = c
        .post(format!("{admin}/admin/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 200);
    let after = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !after.lines().skip(before).any(|l| l.contains(REASON)),
        "a private key file gives no warning: {after}"
    );
    proxy_config(dir.path(), &key, true);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let r = c
        .post(format!("{admin}/admin/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 400, "reload refused");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["key"], "worker_auth.key", "{body}");
    assert!(
        body["reason"].as_str().unwrap_or("").contains(REASON),
        "{body}"
    );
    g.assert_alive();
    drop(g);

    // Refusal at start and in `check`.
    let (code, _, err) = check(&cfg);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("worker_auth.key") && err.contains(REASON),
        "{err}"
    );
    let out = Command::new(PROXY_BIN)
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("worker_auth.key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_warns_on_a_world_readable_proxy_key_file_or_refuses_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(dir.path(), "proxy.key", 0o644);
    let cfg = dir.path().join("worker.yaml");
    let write = |refuse: bool| {
        std::fs::write(
            &cfg,
            format!(
                "proxy_keys: [\"file:{}\"]\nsecurity:\n  refuse_readable_secrets: {refuse}\n",
                key.display()
            ),
        )
        .expect("write")
    };
    write(false);
    let log = dir.path().join("worker.log");
    let addr = dir.path().join("addr.json");
    let mut cmd = Command::new(WORKER_BIN);
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--addr-file")
        .arg(&addr)
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(&log).expect("log"));
    let mut g = ChildGuard::spawn_with_output("worker", &mut cmd);
    addr_file(&addr, &mut g).await;
    let (p, n) = (log.clone(), REASON.to_string());
    let warned = eventually(WAIT, || {
        let (p, n) = (p.clone(), n.clone());
        async move {
            std::fs::read_to_string(&p)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains(&n) && l.contains("proxy_keys[0]") && l.contains("WARN"))
        }
    })
    .await;
    assert!(
        warned,
        "worker start-up warning: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    g.assert_alive();
    drop(g);

    write(true);
    let out = Command::new(WORKER_BIN)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--config")
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .expect("run worker");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("proxy_keys[0]") && err.contains(REASON),
        "{err}"
    );
}
