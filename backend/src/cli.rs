//! Command line: `hotplex-worker [--listen ADDR] [--config FILE] [--node-id ID]` and
//! `hotplex-worker demo-agent`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hotplex_common::logging::{self, LogFormat};

use crate::config::{resolve_secret, validate_node_id, FileConfig, WorkerConfig};

/// HotPlex session worker.
#[derive(Debug, Parser)]
#[command(name = "hotplex-worker", version, about)]
pub struct Cli {
    /// Listen address [default: 127.0.0.1:8080, or `listen` from the config file]. Port 0
    /// picks a free port (see `--addr-file`).
    #[arg(long, env = "HOTPLEX_WORKER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Once serving, write the bound addresses to this file as JSON
    /// (`{"listen":"127.0.0.1:PORT","admin":null|"ADDR"}`; written whole, then renamed into
    /// place), e.g. for `--listen 127.0.0.1:0` under a test harness or supervisor.
    #[arg(long, value_name = "FILE")]
    pub addr_file: Option<PathBuf>,
    /// YAML config file (unknown keys are rejected).
    #[arg(long, env = "HOTPLEX_WORKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Node id, sent as `X-Hotplex-Node` on every response [default: the host name].
    #[arg(long, env = "HOTPLEX_WORKER_NODE_ID")]
    pub node_id: Option<String>,
    /// Log format, `json` or `text` [default: json].
    #[arg(long)]
    pub log_format: Option<LogFormat>,
    /// One more trusted-proxy key (added to `proxy_keys`; a literal, `env:NAME` or
    /// `file:/path`).
    #[arg(long, env = "HOTPLEX_WORKER_PROXY_KEY", hide_env_values = true)]
    pub proxy_key: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the built-in demo agent on stdin/stdout (what each session starts by default).
    DemoAgent {
        /// Enable the test prompts (crash, garbage, fail, sleep N, spawn, history); the
        /// worker passes this with `agent.demo_test_hooks: true`.
        #[arg(long)]
        test_hooks: bool,
    },
    /// Apply resource limits to this process, then exec the agent (the worker's own
    /// launcher for `agent.limits`).
    AgentExec(crate::agent_exec::AgentExec),
    /// Validate the config (flags + file) and print the effective values.
    CheckConfig,
    /// Ask a running worker to drain (`POST /admin/drain`), e.g. from a Kubernetes
    /// preStop hook. Exits 0 when the worker accepted.
    Drain(AdminCall),
    /// Ask a running worker to take new sessions again (`POST /admin/resume`). Exits 0
    /// when the worker accepted.
    Resume(AdminCall),
}

/// Where and how to reach a worker's admin endpoints.
#[derive(Debug, clap::Args)]
pub struct AdminCall {
    /// Base URL of the worker's admin endpoints (its `admin.listen` when set).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key, when the worker requires one (and has no admin tokens).
    #[arg(long, env = "HOTPLEX_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Admin bearer token, when the worker has `admin.tokens`.
    #[arg(long, env = "HOTPLEX_WORKER_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl AdminCall {
    /// Posts to `path`; prints the answer. Exit 0 on a 2xx.
    fn run(&self, name: &str, path: &str) -> ExitCode {
        let creds = crate::drain_client::Credentials {
            api_key: self.api_key.as_deref(),
            token: self.token.as_deref(),
        };
        let url = &self.url;
        match crate::drain_client::post(url, path, creds, crate::drain_client::DEFAULT_TIMEOUT) {
            Ok((status, body)) if (200..300).contains(&status) => {
                println!("{body}");
                ExitCode::SUCCESS
            }
            Ok((status, body)) => {
                eprintln!("hotplex-worker {name}: {url} answered {status}: {body}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("hotplex-worker {name}: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

impl Cli {
    /// The effective configuration: flags over file over defaults.
    pub fn worker_config(&self) -> Result<WorkerConfig, String> {
        let (file, name) = match &self.config {
            Some(p) => (
                FileConfig::load(p).map_err(|e| e.to_string())?,
                p.display().to_string(),
            ),
            None => (FileConfig::default(), "<defaults>".to_string()),
        };
        let mut cfg = file.into_runtime(&name).map_err(|e| e.to_string())?;
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if let Some(n) = &self.node_id {
            validate_node_id(n).map_err(|e| format!("--node-id: {e}"))?;
            cfg.node_id = n.clone();
        }
        if let Some(f) = self.log_format {
            cfg.log_format = f;
        }
        if let Some(k) = &self.proxy_key {
            let key = resolve_secret(k).map_err(|e| format!("--proxy-key: {e}"))?;
            cfg.proxy_keys.push(key);
        }
        Ok(cfg)
    }
}

/// The whole program; both `hotplex-worker` and the e2e launcher call this.
pub fn main() -> ExitCode {
    // The uid sweep helper (this binary re-executed as a session's uid): before anything.
    if let Some(code) = crate::uid_sweep::child_main() {
        return code;
    }
    crate::uid_sweep::enable_helper();
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::DemoAgent { test_hooks }) => {
            return ExitCode::from(crate::demo_agent::run(*test_hooks).clamp(0, 255) as u8)
        }
        Some(Command::AgentExec(x)) => return ExitCode::from(x.run().clamp(0, 255) as u8),
        _ => {}
    }
    match &cli.command {
        Some(Command::Drain(call)) => return call.run("drain", crate::admin::DRAIN_PATH),
        Some(Command::Resume(call)) => return call.run("resume", crate::admin::RESUME_PATH),
        _ => {}
    }
    let cfg = match cli.worker_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hotplex-worker: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if matches!(cli.command, Some(Command::CheckConfig)) {
        println!("{cfg:#?}");
        return ExitCode::SUCCESS;
    }
    // Capabilities and groups are per thread: settled before the first thread starts.
    // (A mode that cannot be resolved is reported by `serve` with its key.)
    // (What prepare_process removes does not count here.)
    let privileges = crate::sandbox::Privileges {
        ambient_caps: 0,
        extra_groups: false,
        ..crate::sandbox::Privileges::detect()
    };
    let per_session_uids = matches!(
        crate::sandbox::resolve_mode(&cfg.agent.isolation, privileges),
        Ok(crate::sandbox::IsolationMode::PerSessionUid(_))
    );
    if let Err(e) = crate::uid_sweep::prepare_process(per_session_uids) {
        eprintln!("hotplex-worker: {e}");
        return ExitCode::from(2);
    }
    let telemetry = match cfg.telemetry.clone().with_process_env() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("hotplex-worker: invalid environment: {e}");
            return ExitCode::from(2);
        }
    };
    let audit = match cfg.audit_sink.open() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hotplex-worker: invalid configuration: audit.file: cannot open: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = logging::LogOptions {
        telemetry: Some(telemetry),
        static_fields: vec![("node_id", cfg.node_id.clone())],
        audit: Some(audit),
    };
    // A failed exporter is logged; the worker runs without traces.
    let _ = logging::init_with(cfg.log_format, &cfg.log_level, opts);
    for w in &cfg.secret_warnings {
        tracing::warn!("{w}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hotplex-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run_reporting(cfg, cli.addr_file.clone()));
    // Export the spans still queued (the last turns) before exiting.
    hotplex_common::telemetry::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "worker failed");
            eprintln!("hotplex-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds, serves, and on SIGTERM/SIGINT drains and exits.
pub async fn run(cfg: WorkerConfig) -> std::io::Result<()> {
    run_reporting(cfg, None).await
}

/// [`run`], writing the bound addresses to `addr_file` (when given) once serving.
pub async fn run_reporting(cfg: WorkerConfig, addr_file: Option<PathBuf>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot bind {}: {e}", cfg.listen)))?;
    let node = cfg.node_id.clone();
    let server = crate::serve(cfg, listener).await?;
    tracing::info!(addr = %server.local_addr(), node_id = %node, version = env!("CARGO_PKG_VERSION"), "hotplex-worker started");
    if let Some(path) = addr_file {
        write_addr_file(&path, server.local_addr(), server.admin_addr())?;
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    server.shutdown().await;
    Ok(())
}

/// Writes `{"listen":..,"admin":..}` to `path` atomically (a temporary file renamed over it).
fn write_addr_file(
    path: &std::path::Path,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
) -> std::io::Result<()> {
    let body = serde_json::json!({
        "listen": listen.to_string(),
        "admin": admin.map(|a| a.to_string()),
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{body}\n"))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| std::io::Error::new(e.kind(), format!("--addr-file {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("w.yaml");
        std::fs::write(
            &p,
            "listen: 127.0.0.1:9999\nnode_id: from-file\nmax_sessions: 3\n",
        )
        .expect("write");
        let cli = Cli::try_parse_from([
            "hotplex-worker",
            "--config",
            p.to_str().expect("utf8"),
            "--node-id",
            "from-flag",
        ])
        .expect("parse");
        let c = cli.worker_config().expect("valid");
        assert_eq!(c.node_id, "from-flag");
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.max_sessions, 3);
        let cli = Cli::try_parse_from(["hotplex-worker", "--node-id", "bad id"]).expect("parse");
        assert!(cli.worker_config().is_err());
        let cli = Cli::try_parse_from(["hotplex-worker", "--proxy-key", " pk "]).expect("parse");
        let c = cli.worker_config().expect("valid");
        assert_eq!(c.proxy_keys, vec![crate::config::Secret::new("pk")]);
        let cli = Cli::try_parse_from([
            "x",
            "resume",
            "--url",
            "http://127.0.0.1:9091",
            "--token",
            "t",
        ])
        .expect("parse");
        assert!(
            matches!(cli.command, Some(Command::Resume(AdminCall { ref token, .. })) if token.as_deref() == Some("t"))
        );
    }

    #[test]
    fn unknown_key_error_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("w.yaml");
        std::fs::write(&p, "bogus: 1\n").expect("write");
        let cli = Cli::try_parse_from(["x", "--config", p.to_str().expect("utf8")]).expect("parse");
        let e = cli.worker_config().expect_err("invalid");
        assert!(e.contains("w.yaml") && e.contains("bogus"), "{e}");
    }
}
