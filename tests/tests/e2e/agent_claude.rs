//! The real Claude Code CLI behind the real worker and the real proxy (issue #23).
//!
//! The CLI is installed from the npm registry (`@anthropic-ai/claude-code`, pinned
//! [`CLI_VERSION`]) into `<target>/claude-cli`, once. When the registry cannot be reached
//! the test is skipped with a loud message; any other install failure fails it. The CLI
//! talks only to an in-test fake of the Messages API on loopback (`ANTHROPIC_BASE_URL`),
//! which records every request it got; the test asserts on them (model, tools offered,
//! the tool result sent back, the conversation carried across turns and restarts).
//!
//! Covered: a multi-turn session over WebSocket and one over SSE, a Bash tool call the
//! CLI executes, stop mid-turn (the CLI is interrupted and stays hot: same pid), the CLI
//! crashing mid-turn (killed; the worker restarts it with `--resume` and the conversation
//! goes on), the CLI under the configured rlimits, token and cost counters, the session
//! directory removed on close.

use hotplex_common::names;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hotplex_e2e::{eventually, metric_value};
use serde_json::{json, Value};

/// The pinned CLI version.
const CLI_VERSION: &str = "2.1.328";
const PACKAGE: &str = "@anthropic-ai/claude-code";
/// The model the worker config asks for.
const MODEL: &str = "claude-sonnet-4-5";

// ---------------------------------------------------------------- the fake Messages API

/// The fake: records every request body; answers by the last prompt of the conversation.
#[derive(Default)]
struct Fake {
    requests: Mutex<Vec<Value>>,
    /// `slow-*` markers already delayed (each is delayed once).
    delayed: Mutex<HashSet<String>>,
}

impl Fake {
    fn requests(&self) -> Vec<Value> {
        self.requests.lock().expect("lock").clone()
    }

    /// Whether some request's messages mention `text`.
    fn saw(&self, text: &str) -> bool {
        self.requests()
            .iter()
            .any(|r| r["messages"].to_string().contains(text))
    }
}

/// The last prompt text of a request (the CLI adds `<system-reminder>` blocks).
fn last_prompt(req: &Value) -> String {
    let last = req["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    match &last["content"] {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| b["type"] == "text")
            .filter_map(|b| b["text"].as_str())
            .rfind(|t| !t.starts_with("<system-reminder>"))
            .unwrap_or_default()
            .to_string(),
        _ => String::new(),
    }
}

/// The tool result the request answers: the last block of its last message (system
/// reminders aside) when that is a `tool_result` (a new prompt comes after the results
/// of earlier turns).
fn tool_result(req: &Value) -> Option<Value> {
    req["messages"].as_array()?.last()?["content"]
        .as_array()?
        .iter()
        .rfind(|b| {
            !(b["type"] == "text"
                && b["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("<system-reminder>")))
        })
        .filter(|b| b["type"] == "tool_result")
        .cloned()
}

fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
        .collect()
}

async fn messages(State(fake): State<Arc<Fake>>, Json(req): Json<Value>) -> Response {
    fake.requests.lock().expect("lock").push(req.clone());
    let prompt = last_prompt(&req);
    let result = tool_result(&req);
    if result.is_none() {
        if let Some(marker) = prompt.split_whitespace().find(|w| w.starts_with("slow-")) {
            if fake
                .delayed
                .lock()
                .expect("lock")
                .insert(marker.to_string())
            {
                // Long enough for the test to stop or kill the CLI mid-turn.
                // allow-sleep: the fake Messages API stalls on purpose (a turn to interrupt)
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
    let model = req["model"].clone();
    let mut ev = vec![
        json!({"type":"message_start","message":{"id":"msg_e2e","type":"message",
        "role":"assistant","model":model,"content":[],"stop_reason":null,"stop_sequence":null,
        "usage":{"input_tokens":100,"output_tokens":1}}}),
    ];
    let stop = if let Some(r) = result {
        // The CLI appends `<system-reminder>` notes to tool results.
        let out = r["content"].as_str().unwrap_or_default();
        let out = out
            .split("<system-reminder>")
            .next()
            .unwrap_or_default()
            .trim();
        let text = format!("Tool said: {out}");
        text_block(&mut ev, &text);
        "end_turn"
    } else if prompt.contains("use the tool") {
        ev.push(json!({"type":"content_block_start","index":0,
            "content_block":{"type":"thinking","thinking":"","signature":""}}));
        ev.push(json!({"type":"content_block_delta","index":0,
            "delta":{"type":"thinking_delta","thinking":"I will run echo."}}));
        ev.push(json!({"type":"content_block_delta","index":0,
            "delta":{"type":"signature_delta","signature":"sig-e2e"}}));
        ev.push(json!({"type":"content_block_stop","index":0}));
        ev.push(
            json!({"type":"content_block_start","index":1,"content_block":{"type":"tool_use",
            "id":"toolu_e2e_1","name":"Bash","input":{}}}),
        );
        ev.push(
            json!({"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",
            "partial_json":"{\"command\": \"echo hello\", \"description\": \"Say hello\"}"}}),
        );
        ev.push(json!({"type":"content_block_stop","index":1}));
        "tool_use"
    } else {
        text_block(&mut ev, &format!("Echo: {prompt}"));
        "end_turn"
    };
    ev.push(
        json!({"type":"message_delta","delta":{"stop_reason":stop,"stop_sequence":null},
        "usage":{"output_tokens":20}}),
    );
    ev.push(json!({"type":"message_stop"}));
    ([("content-type", "text/event-stream")], sse(&ev)).into_response()
}

fn text_block(ev: &mut Vec<Value>, text: &str) {
    ev.push(
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    );
    ev.push(
        json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":text}}),
    );
    ev.push(json!({"type":"content_block_stop","index":0}));
}

async fn start_fake() -> (Arc<Fake>, String) {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route("/v1/messages", post(messages))
        .route(
            "/v1/messages/count_tokens",
            post(|| async { Json(json!({"input_tokens": 1})) }),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind fake API");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (fake, format!("http://{addr}"))
}

// ---------------------------------------------------------------- the CLI from npm

/// `<target>/claude-cli/node_modules/.bin/claude`, installed at [`CLI_VERSION`] when
/// missing; `None` (after a loud message) when the registry cannot be reached.
fn install_cli() -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("test executable");
    // <target>/debug/deps/<test>: the cache lives next to the build output.
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let prefix = target.join("claude-cli");
    let bin = prefix.join("node_modules/.bin/claude");
    let version = |bin: &Path| {
        Command::new(bin)
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    if version(&bin).starts_with(CLI_VERSION) {
        return Some(bin);
    }
    let spec = format!("{PACKAGE}@{CLI_VERSION}");
    let view = Command::new("npm")
        .args([
            "view",
            &spec,
            "version",
            "--fetch-timeout=20000",
            "--fetch-retries=1",
        ])
        .output()
        .expect("npm must be installed (node and npm are part of the test machine)");
    let err = String::from_utf8_lossy(&view.stderr);
    let unreachable = [
        "ECONNREFUSED",
        "ENOTFOUND",
        "ETIMEDOUT",
        "EAI_AGAIN",
        "ECONNRESET",
        "ENETUNREACH",
        "EHOSTUNREACH",
        "network",
    ]
    .iter()
    .any(|e| err.contains(e));
    assert!(
        view.status.success() || unreachable,
        "npm view {spec} failed (not a network error): {err}"
    );
    if !view.status.success() {
        eprintln!(
            "\n########################################################################\n\
             ## SKIPPED agent_claude: the npm registry cannot be reached, so the real\n\
             ## Claude Code CLI ({spec}) cannot be installed.\n\
             ## npm said: {}\n\
             ########################################################################\n",
            err.trim()
        );
        return None;
    }
    std::fs::create_dir_all(&prefix).expect("create the CLI cache dir");
    let out = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .arg(&spec)
        .output()
        .expect("run npm install");
    assert!(
        out.status.success(),
        "npm install {spec} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = version(&bin);
    assert!(v.starts_with(CLI_VERSION), "claude --version: {v:?}");
    Some(bin)
}

// ---------------------------------------------------------------- the test

fn worker_yaml(cli: &Path, api: &str, home: &Path, sessions: &Path) -> String {
    format!(
        r#"max_sessions: 10
execution_timeout: 120s
startup_timeout: 60s
agent:
  protocol: claude-stream-json
  command: ["{cli}", "-p", "--input-format", "stream-json", "--output-format", "stream-json",
            "--verbose", "--model", "{MODEL}", "--allowedTools", "Bash(echo:*)"]
  env_allowlist: [PATH, ANTHROPIC_API_KEY]
  env:
    ANTHROPIC_BASE_URL: "{api}"
{home}    DISABLE_TELEMETRY: "1"
    DISABLE_AUTOUPDATER: "1"
    DISABLE_ERROR_REPORTING: "1"
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1"
  session_dirs: "{sessions}"
  limits: {{open_files: 2048, cpu_seconds: 600}}
  # The CLI's own /proc entries are checked below (in a sandbox the pid is bwrap's).
  isolation: {{sandbox: none}}
"#,
        cli = cli.display(),
        // As root each session's CLI runs as its own uid with HOME = its session dir
        // (agent.isolation); a shared HOME would be unwritable by those users.
        home = if hotplex_worker::sandbox::Privileges::detect().euid == 0 {
            String::new()
        } else {
            format!("    HOME: \"{}\"\n", home.display())
        },
        sessions = sessions.display(),
    )
}

/// The `data` of an SSE event's frame.
fn data(e: &hotplex_e2e::sse::Event) -> Value {
    serde_json::from_str::<Value>(&e.data)
        .ok()
        .and_then(|v| v.get("data").cloned())
        .unwrap_or_default()
}

fn sse_answer(events: &[hotplex_e2e::sse::Event]) -> String {
    events
        .iter()
        .filter(|e| e.event == "answer")
        .filter_map(|e| data(e)["text"].as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join("")
}

async fn session_pid(c: &reqwest::Client, base: &str, id: &str) -> Option<u64> {
    let r = crate::support::proxy::get_session(c, base, id).await;
    r.body["pid"].as_u64()
}

fn dirs_in(p: &Path) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_behind_worker_and_proxy() {
    let Some(cli) = tokio::task::spawn_blocking(install_cli)
        .await
        .expect("install task")
    else {
        return;
    };
    let (fake, api) = start_fake().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let sessions = dir.path().join("sessions");
    std::fs::create_dir_all(&home).expect("home");
    let cfg = dir.path().join("worker.yaml");
    std::fs::write(&cfg, worker_yaml(&cli, &api, &home, &sessions)).expect("config");
    let mut cmd = Command::new(crate::support::worker::WORKER_BIN);
    cmd.arg("--node-id")
        .arg("w1")
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .env("ANTHROPIC_API_KEY", "sk-ant-e2e-dummy")
        .env("HOTPLEX_E2E_WORKER_SECRET", "not-for-agents");
    // Bind-then-pass: the worker binds port 0 and reports its address.
    let (_worker, waddr) =
        crate::support::spawn_worker_cmd("e2e-worker (claude)", cmd, dir.path()).await;
    let wbase = format!("http://{waddr}");
    let proxy = crate::support::proxy::spawn_proxy(&crate::support::proxy::proxy_yaml(
        &[("w1", waddr)],
        "",
    ))
    .await;
    let pbase = proxy.base();
    let c = crate::support::worker::client();

    // ---- SSE: a tool call, then more turns in the same hot process.
    let (sid, _) = crate::support::proxy::create(&c, &pbase).await;
    let pid = session_pid(&c, &pbase, &sid).await.expect("pid");
    // The CLI runs under the session's limits (the launcher exec'd it: same pid).
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("");
    assert!(nofile.contains(" 2048 "), "{nofile}");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains("stream-json"),
        "the CLI itself"
    );
    if hotplex_worker::sandbox::Privileges::detect().euid == 0 {
        // A worker running as root runs the CLI as the session's own user.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|u| u.split_whitespace().next())
            .unwrap_or("");
        assert!(uid.parse::<u32>().is_ok_and(|u| u >= 1000), "CLI uid {uid}");
    }
    let ev = crate::support::worker::sse_turn(&c, &pbase, &sid, "please use the tool").await;
    assert_eq!(
        crate::support::worker::event_names(&ev),
        ["thinking", "tool_use", "tool_result", "answer", "completed"],
        "{ev:?}"
    );
    assert_eq!(data(&ev[0])["text"], "I will run echo.");
    let (tu, tr) = (data(&ev[1]), data(&ev[2]));
    assert_eq!(
        (tu["tool"].as_str(), tu["id"].as_str()),
        (Some("Bash"), Some("toolu_e2e_1"))
    );
    assert_eq!(tu["input"]["command"], "echo hello");
    assert_eq!(tr["tool_use_id"], "toolu_e2e_1");
    assert_eq!(tr["output"], "hello", "the CLI ran Bash for real");
    assert_eq!(sse_answer(&ev), "Tool said: hello");
    let done = data(&ev[4]);
    assert!(done["usage"]["input_tokens"].as_u64() > Some(0), "{done}");
    assert!(done["cost_usd"].as_f64() > Some(0.0), "{done}");
    assert!(done["agent_session_id"].is_string(), "{done}");

    let ev = crate::support::worker::sse_turn(&c, &pbase, &sid, "remember alpha").await;
    assert_eq!(sse_answer(&ev), "Echo: remember alpha", "{ev:?}");
    assert_eq!(
        session_pid(&c, &pbase, &sid).await,
        Some(pid),
        "same hot process"
    );
    // The API saw the model, the tools, the tool result and the whole conversation.
    let reqs = fake.requests();
    assert!(reqs.iter().all(|r| r["model"] == MODEL), "model");
    let tools: Vec<&str> = reqs[0]["tools"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(tools.contains(&"Bash"), "tools offered: {tools:?}");
    let back = reqs
        .iter()
        .find_map(tool_result)
        .expect("a tool result was sent back");
    assert_eq!(back["tool_use_id"], "toolu_e2e_1");
    assert!(
        back["content"]
            .as_str()
            .is_some_and(|t| t.starts_with("hello")),
        "{back}"
    );
    let last = reqs.last().expect("request");
    assert!(
        last["messages"].to_string().contains("please use the tool"),
        "history"
    );

    // ---- SSE: the CLI crashes mid-turn; the worker restarts it with --resume.
    let turn = {
        let (c, pbase, sid) = (c.clone(), pbase.clone(), sid.clone());
        tokio::spawn(async move {
            crate::support::worker::sse_turn(&c, &pbase, &sid, "slow-crash now").await
        })
    };
    assert!(
        eventually(crate::support::worker::WAIT, || async {
            fake.saw("slow-crash")
        })
        .await
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the CLI");
    let ev = turn.await.expect("turn");
    let end = ev.last().expect("terminal");
    assert_eq!(end.event, "error");
    assert_eq!(data(end)["error"], "agent_crashed", "{:?}", end.data);
    let new_pid = session_pid(&c, &pbase, &sid)
        .await
        .expect("session survives");
    assert_ne!(new_pid, pid, "a new CLI process");
    let seen = fake.requests().len();
    let ev = crate::support::worker::sse_turn(&c, &pbase, &sid, "after the crash").await;
    assert_eq!(sse_answer(&ev), "Echo: after the crash", "{ev:?}");
    let resumed = &fake.requests()[seen..];
    assert!(
        resumed
            .iter()
            .any(|r| r["messages"].to_string().contains("remember alpha")),
        "the restarted CLI resumed the conversation"
    );

    // ---- WebSocket: multi-turn, and stop mid-turn without losing the hot process.
    let (wid, _) = crate::support::proxy::create(&c, &pbase).await;
    let wpid = session_pid(&c, &pbase, &wid).await.expect("pid");
    let url = format!(
        "{}/ws/v1/agent?session_id={wid}",
        pbase.replacen("http", "ws", 1)
    );
    let (mut ws, _, _) = crate::support::proxy::ws_connect_checked(&url, &[]).await;
    let f = crate::support::proxy::ws_execute(&mut ws, 1, &wid, "first ws turn")
        .await
        .expect("turn 1");
    assert_eq!(
        crate::support::proxy::terminal_event(&f),
        "completed",
        "{f:?}"
    );
    let f = crate::support::proxy::ws_execute(&mut ws, 2, &wid, "please use the tool")
        .await
        .expect("turn 2");
    let kinds: Vec<&str> = f.iter().filter_map(|v| v["event"].as_str()).collect();
    assert_eq!(
        kinds,
        ["thinking", "tool_use", "tool_result", "answer", "completed"]
    );
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let exec =
            json!({"type":"execute","request_id":3,"session_id":wid,"prompt":"slow-stop now"});
        ws.send(Message::text(exec.to_string()))
            .await
            .expect("send");
        assert!(
            eventually(crate::support::worker::WAIT, || async {
                fake.saw("slow-stop")
            })
            .await
        );
        let stop = json!({"type":"stop","request_id":4,"session_id":wid});
        ws.send(Message::text(stop.to_string()))
            .await
            .expect("send");
        let mut ended = None;
        while ended.is_none() {
            let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
                .await
                .expect("frame in time")
                .expect("open")
                .expect("frame");
            let Ok(t) = m.to_text() else { continue };
            let v: Value = serde_json::from_str(t).unwrap_or_default();
            if v["request_id"] == 3 && v["event"] == "stopped" {
                ended = Some(v);
            }
        }
    }
    assert_eq!(
        session_pid(&c, &pbase, &wid).await,
        Some(wpid),
        "interrupted, not restarted"
    );
    let f = crate::support::proxy::ws_execute(&mut ws, 5, &wid, "after the stop")
        .await
        .expect("turn after stop");
    assert_eq!(
        crate::support::proxy::terminal_event(&f),
        "completed",
        "{f:?}"
    );
    let last = fake.requests().last().cloned().unwrap_or_default();
    assert!(
        last["messages"].to_string().contains("first ws turn"),
        "ws history"
    );

    // ---- What turns cost, per tenant.
    let m = crate::support::metrics_at(&c, &wbase).await;
    let tokens = metric_value(&m, names::worker::AGENT_TOKENS, &["kind=\"input_tokens\""]);
    assert!(tokens > Some(0.0), "tokens counted: {tokens:?}");
    let cost = metric_value(&m, names::worker::AGENT_COST_USD, &[]);
    assert!(cost > Some(0.0), "cost counted: {cost:?}");

    // ---- Closing removes the session directories.
    assert_eq!(dirs_in(&sessions), 2);
    for id in [&sid, &wid] {
        let r = c
            .delete(format!("{pbase}/sessions/{id}"))
            .send()
            .await
            .expect("DELETE");
        assert!(r.status().is_success(), "{}", r.status());
    }
    assert!(
        eventually(crate::support::worker::WAIT, || async {
            dirs_in(&sessions) == 0
        })
        .await
    );
    assert!(!crate::support::procs::process_alive(
        u32::try_from(wpid).expect("pid")
    ));
}
