//! Proxy e2e: audit lines have their own sink (`audit.file` or `audit.stream`), written
//! whatever `log.level` says and never into the main log; every admin audit line names
//! the peer's IP. The proxies run with `log.level: warn` and no `RUST_LOG`.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::proxy::*;
use hotplex_e2e::{eventually, ChildGuard};
use serde_json::Value;

/// A proxy with `extra` config, no `RUST_LOG`, stdout/stderr in `dir/<name>.out|err`.
async fn start(dir: &Path, name: &str, extra: &str) -> (ChildGuard, String) {
    let yaml = proxy_yaml(&[("w1", "127.0.0.1:1".parse().expect("addr"))], extra);
    let config = dir.join(format!("{name}.yaml"));
    write_config_file(&config, ANY_PORT, ANY_PORT, "", &yaml);
    let addr = dir.join(format!("{name}.addr.json"));
    let mut cmd = Command::new(PROXY_BIN);
    cmd.arg("--config")
        .arg(&config)
        .arg("--addr-file")
        .arg(&addr)
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(dir.join(format!("{name}.out"))).expect("out"))
        .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).expect("err"))
        .stdin(Stdio::null());
    let mut g = ChildGuard::spawn_with_output(name, &mut cmd);
    let bound = addr_file(&addr, &mut g).await;
    let admin = format!("http://{}", addr_of(&bound, "admin"));
    hotplex_e2e::wait_until_http_ok(&format!("{admin}/health/live"), WAIT).await;
    (g, admin)
}

/// The JSON lines of `path` whose target is `audit`.
fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "audit")
        .collect()
}

async fn wait_audit(path: &Path, action: &str) -> Vec<Value> {
    let p = path.to_path_buf();
    let a = action.to_string();
    let found = eventually(WAIT, || {
        let (p, a) = (p.clone(), a.clone());
        async move { audit_lines(&p).iter().any(|v| v["action"] == a.as_str()) }
    })
    .await;
    let lines = audit_lines(path);
    assert!(
        found,
        "audit line {action} in {}: {lines:?}",
        path.display()
    );
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_file_gets_every_admin_action_with_the_peer_ip_at_level_warn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let audit = dir.path().join("audit.log");
    let extra = format!(
        "log:\n  level: warn\naudit:\n  file: \"{}\"\n",
        audit.display()
    );
    let (_g, admin) = start(dir.path(), "p", &extra).await;
    let c = client();
    for path in ["workers/w1/drain", "workers/w1/resume", "reload"] {
        let r = c
            .post(format!("{admin}/admin/{path}"))
            .send()
            .await
            .expect("admin");
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = c
        .post(format!("{admin}/admin/profiling"))
        .header("content-type", "application/json")
        .body(r#"{"active":false}"#)
        .send()
        .await
        .expect("profiling");
    assert!(
        r.status().is_success() || r.status() == 503,
        "{}",
        r.status()
    );
    // A refused (cross-site) request is audited too.
    let r = c
        .post(format!("{admin}/admin/reload"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("denied");
    assert_eq!(r.status(), 403);

    let lines = wait_audit(&audit, "admin POST /admin/reload").await;
    for action in [
        "admin.drain",
        "admin.resume",
        "config.reload",
        "admin.profiling",
        "admin POST /admin/reload",
    ] {
        let line = lines
            .iter()
            .find(|v| v["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {lines:?}"));
        assert_eq!(line["ip"], "127.0.0.1", "peer ip on {action}: {line}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&audit)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "audit file is private");
    // The main log (stderr, level warn) has neither audit nor info lines.
    let main = std::fs::read_to_string(dir.path().join("p.err")).expect("stderr");
    assert!(!main.contains("\"target\":\"audit\""), "{main}");
    assert!(!main.contains("\"level\":\"INFO\""), "{main}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_streams_stderr_by_default_and_stdout_on_request_at_level_warn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_a, admin_a) = start(dir.path(), "a", "log:\n  level: warn\n").await;
    let (_b, admin_b) = start(
        dir.path(),
        "b",
        "log:\n  level: warn\naudit:\n  stream: stdout\n",
    )
    .await;
    let c = client();
    for admin in [&admin_a, &admin_b] {
        let r = c
            .post(format!("{admin}/admin/reload"))
            .send()
            .await
            .expect("reload");
        assert_eq!(r.status(), 200);
    }
    let a = wait_audit(&dir.path().join("a.err"), "config.reload").await;
    assert_eq!(a[0]["ip"], "127.0.0.1");
    let b = wait_audit(&dir.path().join("b.out"), "config.reload").await;
    assert_eq!(b[0]["ip"], "127.0.0.1");
    assert!(
        audit_lines(&dir.path().join("b.err")).is_empty(),
        "stdout sink: nothing on stderr"
    );

    // audit.file and audit.stream together are a config error.
    let f = dir.path().join("bad.yaml");
    write_config_file(
        &f,
        ANY_PORT,
        ANY_PORT,
        "",
        &proxy_yaml(
            &[("w1", "127.0.0.1:1".parse().expect("addr"))],
            "audit:\n  file: /tmp/x.log\n  stream: stderr\n",
        ),
    );
    let (code, _, err) = check(&f);
    assert_eq!(code, 1);
    assert!(
        err.contains("audit.file") && err.contains("not both"),
        "{err}"
    );
}
