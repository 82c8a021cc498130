//! Command line: `hotplex-proxy [--config FILE]` runs (embedded default without
//! `--config`); `hotplex-proxy check FILE` validates like `nginx -t` (exit 0 and a summary,
//! or exit 1 and `FILE: key.path: reason`); `hotplex-proxy default-config` prints the
//! embedded default. `--upgrade` starts a new binary that takes the
//! listening sockets over from the running one (pingora graceful upgrade).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config;

/// HotPlex edge proxy.
#[derive(Debug, Parser)]
#[command(name = "hotplex-proxy", version, about)]
pub struct Cli {
    /// Config file (YAML). Without it the embedded default runs (3 local workers).
    #[arg(long, short = 'c', env = "HOTPLEX_PROXY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Graceful upgrade: take the listening sockets over from the running proxy (same
    /// config, same `upgrade.sock`); then send SIGQUIT to the old process.
    #[arg(long, short = 'u')]
    pub upgrade: bool,
    /// Write the bound addresses to this file as JSON once the listeners are bound
    /// (`{"listen":..,"admin":..,"tls":..|null}`; written whole, then renamed into place). With
    /// port 0 in `listen`, `admin.listen` or `tls.listen` the proxy picks the port itself:
    /// this file says which (not with `--upgrade`, whose sockets are keyed by address).
    #[arg(long, value_name = "FILE")]
    pub addr_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file and exit (0: valid, 1: invalid).
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the embedded default config (a starting point to edit: `make run` writes it
    /// to `.local/hotplex.yaml` on first run and serves from that file).
    DefaultConfig,
    /// Run the proxy (the default).
    Run,
    /// Binary upgrade in one step: start `<this binary> --upgrade` with the same config,
    /// send SIGQUIT to the running proxy `--pid`, exit 0 once the new process took the
    /// listening sockets (1 otherwise). For systemd: `ExecReload=... upgrade --pid $MAINPID`.
    Upgrade {
        /// The running proxy's pid.
        #[arg(long)]
        pid: i32,
    },
}

/// Exit code of an invalid config.
pub const EXIT_INVALID_CONFIG: u8 = 1;
/// Exit code of a startup failure (busy port...).
pub const EXIT_STARTUP: u8 = 2;
/// Exit code after a SIGQUIT that handed the listening sockets to no new process.
pub use crate::handover::EXIT_NO_HANDOVER;

/// Entry point of both `hotplex-proxy` and the test launcher.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { file }) => match config::load(&file) {
            Ok(c) => {
                for w in &c.secret_warnings {
                    eprintln!("hotplex-proxy: warning: {}: {w}", c.source);
                }
                println!("{}", c.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hotplex-proxy: invalid config: {e}");
                ExitCode::from(EXIT_INVALID_CONFIG)
            }
        },
        Some(Command::DefaultConfig) => {
            print!("{}", config::EMBEDDED_DEFAULT);
            ExitCode::SUCCESS
        }
        Some(Command::Upgrade { pid }) => {
            match crate::upgrade_cmd::run(cli.config.as_deref(), pid) {
                Ok(new_pid) => {
                    println!("hotplex-proxy: upgraded: process {new_pid} took the listening sockets from {pid}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("hotplex-proxy: upgrade failed: {e}");
                    ExitCode::from(EXIT_INVALID_CONFIG)
                }
            }
        }
        Some(Command::Run) | None => {
            let loaded = match &cli.config {
                Some(p) => config::load(p),
                None => config::embedded_default(),
            };
            let cfg = match loaded {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("hotplex-proxy: invalid config: {e}");
                    return ExitCode::from(EXIT_INVALID_CONFIG);
                }
            };
            match crate::server::run_reporting(
                cfg,
                cli.config.clone(),
                cli.upgrade,
                cli.addr_file.as_deref(),
            ) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ crate::server::StartError::Config(_)) => {
                    eprintln!("hotplex-proxy: {e}");
                    ExitCode::from(EXIT_INVALID_CONFIG)
                }
                Err(e) => {
                    eprintln!("hotplex-proxy: {e}");
                    ExitCode::from(EXIT_STARTUP)
                }
            }
        }
    }
}
