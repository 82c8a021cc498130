//! What turns cost, per tenant, through the real proxy: an agent that reports `usage` and
//! `cost_usd` in its results (as the Claude Code adapter does), two tenants authenticated
//! by the proxy, and the worker's `hotplex_worker_agent_tokens_total{tenant,kind}` /
//! `hotplex_worker_agent_cost_usd_total{tenant}` counting each tenant apart.

use std::process::Command;

use hotplex_common::names::worker::{AGENT_COST_USD, AGENT_TOKENS};
use hotplex_e2e::metric_value;
use serde_json::json;

const KEY_A: &str = "tenant-a-usage-key-0123456789";
const KEY_B: &str = "tenant-b-usage-key-0123456789";

/// Every turn: 100 input and 7 output tokens, a quarter of a dollar.
const AGENT: &str = r#"echo '{"type":"ready"}'
while read -r line; do
  echo '{"type":"answer","text":"ok"}'
  echo '{"type":"result","usage":{"input_tokens":100,"output_tokens":7},"cost_usd":0.25}'
done
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_cost_are_counted_per_tenant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("agent.sh");
    std::fs::write(&script, AGENT).expect("agent");
    let cfg = dir.path().join("worker.yaml");
    std::fs::write(
        &cfg,
        format!("agent:\n  command: [sh, {}]\n", script.display()),
    )
    .expect("config");
    let mut cmd = Command::new(crate::support::worker::WORKER_BIN);
    cmd.arg("--node-id")
        .arg("w1")
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn");
    // Bind-then-pass: the worker binds port 0 and reports its address.
    let (_worker, waddr) =
        crate::support::spawn_worker_cmd("e2e-worker (usage)", cmd, dir.path()).await;
    let wbase = format!("http://{waddr}");
    let auth = format!(
        "auth:\n  enabled: true\n  keys:\n    - name: tenant-a\n      hash: \"{}\"\n    - name: tenant-b\n      hash: \"{}\"\n",
        crate::support::proxy::key_hash(KEY_A),
        crate::support::proxy::key_hash(KEY_B)
    );
    let proxy = crate::support::proxy::spawn_proxy(&crate::support::proxy::proxy_yaml(
        &[("w1", waddr)],
        &auth,
    ))
    .await;
    let c = crate::support::worker::client();
    for (key, turns) in [(KEY_A, 2), (KEY_B, 1)] {
        let r = c
            .post(format!("{}/sessions", proxy.base()))
            .header("x-api-key", key)
            .send()
            .await
            .expect("create");
        assert_eq!(r.status(), 201);
        let id = r.json::<serde_json::Value>().await.expect("json")["session_id"]
            .as_str()
            .expect("id")
            .to_string();
        for _ in 0..turns {
            let r = c
                .post(format!("{}/sessions/{id}/messages", proxy.base()))
                .header("x-api-key", key)
                .json(&json!({"prompt": "hi"}))
                .send()
                .await
                .expect("turn");
            let body = r.text().await.expect("sse");
            assert!(body.contains("event: completed"), "{body}");
            assert!(body.contains("\"cost_usd\":0.25"), "{body}");
        }
    }
    let m = crate::support::metrics_at(&c, &wbase).await;
    let get = |name: &str, labels: &[&str]| metric_value(&m, name, labels).unwrap_or(-1.0);
    assert_eq!(
        get(
            AGENT_TOKENS,
            &["tenant=\"tenant-a\"", "kind=\"input_tokens\""]
        ),
        200.0
    );
    assert_eq!(
        get(
            AGENT_TOKENS,
            &["tenant=\"tenant-a\"", "kind=\"output_tokens\""]
        ),
        14.0
    );
    assert_eq!(
        get(
            AGENT_TOKENS,
            &["tenant=\"tenant-b\"", "kind=\"input_tokens\""]
        ),
        100.0
    );
    assert_eq!(get(AGENT_COST_USD, &["tenant=\"tenant-a\""]), 0.5);
    assert_eq!(get(AGENT_COST_USD, &["tenant=\"tenant-b\""]), 0.25);
    assert_eq!(get(AGENT_COST_USD, &["tenant=\"_anonymous\""]), 0.0);
}
