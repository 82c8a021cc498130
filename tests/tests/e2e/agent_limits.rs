//! Agents run confined (issue #18, item 7), against the real worker binary:
//! - `agent.limits` reach the agent (rlimits read back with `ulimit`; RLIMIT_CPU enforced:
//!   a CPU burner in the agent is killed after one CPU second). RLIMIT_NPROC is per user id and not
//!   enforced for root, so only its readback is checked.
//! - a worker variable outside `agent.env_allowlist` (a stand-in secret) is invisible to
//!   the agent; an allowlisted one is passed.
//! - `agent.session_dirs`: the agent runs in its own directory, which exists during the
//!   session and is gone after `DELETE /sessions/{id}`.
//! - a stdout line over `agent.max_line_bytes` ends the turn with `agent_protocol_error`
//!   (the next turn runs on a restarted agent).
//! - the demo agent's test prompts are off unless `agent.demo_test_hooks` is set.

use std::process::Command;

use crate::support::worker::*;
use hotplex_e2e::eventually;
use serde_json::Value;

/// A hotplex-jsonl agent in sh: `limits` reports its limits, environment and directory;
/// `burn` runs a CPU burner child and reports how it ended; `big` prints a 3 MB line.
const AGENT: &str = r#"echo '{"type":"ready"}'
while read -r line; do
  case "$line" in
    *'"prompt":"limits"'*)
      printf '{"type":"answer","text":"nofile=%s as=%s cpu=%s nproc=%s secret=%s passed=%s cwd=%s"}\n' \
        "$(ulimit -n)" "$(ulimit -v)" "$(ulimit -t)" "$(awk '/^Max processes/ {print $3}' /proc/self/limits)" \
        "${HOTPLEX_E2E_WORKER_SECRET:-unset}" "${HOTPLEX_E2E_PASSED:-unset}" "$(pwd)"
      echo '{"type":"result"}' ;;
    *'"prompt":"burn"'*)
      sh -c 'while :; do :; done'
      printf '{"type":"answer","text":"burner exit %s"}\n' "$?"
      echo '{"type":"result"}' ;;
    *'"prompt":"big"'*)
      head -c 3000000 /dev/zero | tr '\0' x; echo ;;
    *)
      echo '{"type":"answer","text":"ok"}'; echo '{"type":"result"}' ;;
  esac
done
"#;

fn answer(events: &[hotplex_e2e::sse::Event]) -> String {
    events
        .iter()
        .find(|e| e.event == "answer")
        .and_then(|e| serde_json::from_str::<Value>(&e.data).ok())
        .and_then(|v| v["data"]["text"].as_str().map(str::to_string))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_get_limits_an_env_allowlist_a_session_dir_and_a_line_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("agent.sh");
    std::fs::write(&script, AGENT).expect("write agent");
    let sessions = dir.path().join("sessions");
    let yaml = format!(
        "max_sessions: 5\nexecution_timeout: 30s\nagent:\n  command: [sh, {script}]\n  \
         env_allowlist: [PATH, HOTPLEX_E2E_PASSED]\n  session_dirs: {sessions}\n  \
         max_line_bytes: 1048576\n  limits:\n    open_files: 64\n    \
         address_space_bytes: 1073741824\n    cpu_seconds: 1\n    processes: 4096\n",
        script = script.display(),
        sessions = sessions.display()
    );
    let cfg = dir.path().join("worker.yaml");
    std::fs::write(&cfg, yaml).expect("write config");
    let mut cmd = Command::new(WORKER_BIN);
    cmd.arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .env("HOTPLEX_E2E_WORKER_SECRET", "do-not-leak")
        .env("HOTPLEX_E2E_PASSED", "yes");
    // Bind-then-pass: the worker binds port 0 and reports its address.
    let (_worker, addr) =
        crate::support::spawn_worker_cmd("e2e-worker (limits)", cmd, dir.path()).await;
    let base = format!("http://{addr}");
    let c = client();

    let id = create_session(&c, &base).await;
    let events = sse_turn(&c, &base, &id, "limits").await;
    let text = answer(&events);
    assert!(text.contains("nofile=64 "), "{text} {events:?}");
    assert!(text.contains("as=1048576 "), "RLIMIT_AS in KiB: {text}");
    assert!(text.contains("cpu=1 "), "{text}");
    assert!(text.contains("nproc=4096 "), "{text}");
    assert!(
        text.contains("secret=unset "),
        "worker secret leaked: {text}"
    );
    assert!(text.contains("passed=yes "), "allowlisted variable: {text}");
    let cwd = text.split("cwd=").nth(1).unwrap_or_default().to_string();
    assert!(cwd.starts_with(&sessions.display().to_string()), "{text}");
    assert!(std::path::Path::new(&cwd).is_dir(), "session dir exists");

    // RLIMIT_CPU is enforced: the burner (a child, inheriting the limit) is killed after
    // one CPU second (soft = hard: SIGKILL, 137; SIGXCPU would be 152).
    let text = answer(&sse_turn(&c, &base, &id, "burn").await);
    assert!(
        text == "burner exit 137" || text == "burner exit 152",
        "{text}"
    );

    // A line over the cap ends the turn; the agent is restarted in the same directory.
    let events = sse_turn(&c, &base, &id, "big").await;
    let last = events.last().expect("terminal event");
    assert_eq!(last.event, "error");
    assert!(last.data.contains("agent_protocol_error"), "{}", last.data);
    assert!(last.data.contains("1048576"), "{}", last.data);
    let text = answer(&sse_turn(&c, &base, &id, "limits").await);
    assert!(
        text.ends_with(&format!("cwd={cwd}")),
        "same dir after restart: {text}"
    );

    let r = c
        .delete(format!("{base}/sessions/{id}"))
        .send()
        .await
        .expect("DELETE");
    assert!(r.status().is_success(), "{}", r.status());
    assert!(
        eventually(WAIT, || async { !std::path::Path::new(&cwd).exists() }).await,
        "session dir removed on close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_test_prompts_need_the_switch() {
    let mut cfg = test_config();
    cfg.agent = hotplex_worker::AgentConfig::command(vec![
        WORKER_BIN.to_string(),
        "demo-agent".to_string(),
    ]);
    let w = start(cfg).await;
    let c = client();
    let id = create_session(&c, &w.base).await;
    for p in ["crash", "garbage", "spawn", "history"] {
        let events = sse_turn(&c, &w.base, &id, p).await;
        assert_eq!(
            events.last().map(|e| e.event.as_str()),
            Some("completed"),
            "{p}"
        );
        assert!(
            answer(&events).ends_with(&format!("you said: {p}")),
            "{p}: {events:?}"
        );
    }
    w.stop().await;
    // The shipped configs do not switch them on.
    for f in ["worker.example.yaml", "k8s/configmap.yaml"] {
        let text = std::fs::read_to_string(format!("{}/../conf/{f}", env!("CARGO_MANIFEST_DIR")))
            .expect("read conf");
        assert!(!text.contains("demo_test_hooks: true"), "{f}");
    }
}
