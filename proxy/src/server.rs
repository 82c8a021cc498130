//! Assembles and runs the pingora server: the proxy service, the health-check background
//! service (pingora-load-balancing over [`ConfigDiscovery`] + [`ReadyCheck`]) and the admin
//! service, and the SIGHUP reload service.

use std::sync::Arc;

use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backends, LoadBalancer};
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;

use crate::admin::{self, AdminService};
use crate::config::RuntimeConfig;
use crate::metrics::ProxyMetrics;
use crate::proxy::HotplexProxy;
use crate::reload::{Reloader, SighupService, WatchService};
use crate::upstream::discovery::ConfigDiscovery;
use crate::upstream::health::ReadyCheck;
use crate::upstream::Registry;

/// The proxy service's app: [`crate::proxy::HotplexProxy`] in pingora's HTTP proxy,
/// guarded ([`crate::conn_guard`]).
pub type GuardedProxy =
    crate::conn_guard::GuardedApp<pingora::proxy::HttpProxy<crate::proxy::HotplexProxy>>;

/// Errors at startup.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind {what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsStartError),
    #[error("cannot write --addr-file {path}: {source}")]
    AddrFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// A config value refused at start (e.g. an `upgrade.sock` others could reach).
    #[error("invalid config: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// `--upgrade` got no listening sockets.
    #[error("graceful upgrade: {0}")]
    Upgrade(String),
    /// An invalid `OTEL_*` environment variable.
    #[error("invalid environment: {0}")]
    Telemetry(#[from] hotplex_common::telemetry::SettingError),
    /// The signal handlers could not be installed.
    #[error("cannot install the signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Runs the proxy until a shutdown signal; returns only on a startup error. `upgrade`: take
/// the listening sockets over from the running process (pingora graceful upgrade); the admin
/// listener is then bound as soon as the old process releases it.
pub fn run(
    cfg: RuntimeConfig,
    path: Option<std::path::PathBuf>,
    upgrade: bool,
) -> Result<(), StartError> {
    run_reporting(cfg, path, upgrade, None)
}

/// [`run`], writing the bound listener addresses to `addr_file` (JSON) once they are bound.
/// Port 0 in `listen`, `admin.listen` or `tls.listen` lets the proxy pick the port: the
/// admin listener is bound here; a pingora listener's port is picked and held by a bound,
/// not listening `SO_REUSEADDR` socket (see [`reserve_port`]) until pingora's own listener
/// (also `SO_REUSEADDR`) binds the same address, so no other process can take it between.
/// The active config keeps the configured addresses (a reload compares them).
pub fn run_reporting(
    cfg: RuntimeConfig,
    path: Option<std::path::PathBuf>,
    upgrade: bool,
    addr_file: Option<&std::path::Path>,
) -> Result<(), StartError> {
    let audit = cfg.audit_sink.open().map_err(|e| {
        crate::config::ConfigError::new(&cfg.source, "audit.file", format!("cannot open: {e}"))
    })?;
    let log_opts = hotplex_common::logging::LogOptions {
        telemetry: Some(cfg.telemetry.clone().with_process_env()?),
        static_fields: Vec::new(),
        audit: Some(audit),
    };
    // A failed exporter is logged; the proxy runs without traces.
    let _ = hotplex_common::logging::init_with(cfg.log_format, &cfg.log_level, log_opts);
    for w in &cfg.secret_warnings {
        tracing::warn!(config = %cfg.source, "{w}");
    }
    if cfg.insecure_secret {
        tracing::warn!(
            "the public development affinity secret is in use: set routing.affinity_secrets"
        );
    }
    if cfg.admin_tokens.is_empty() {
        tracing::warn!(admin = %cfg.admin_listen, "no admin.tokens: /admin/* is open to anyone who can reach the (loopback) admin listener");
    }
    let upgrade_sock = prepare_upgrade_sock(&cfg)?;
    // Fail early and clearly on busy ports (when upgrading, the old process holds them).
    // `bound`: the config with the addresses as bound (port 0 resolved); only the listeners
    // use it.
    let mut bound = cfg.clone();
    let mut _reserved = Vec::new();
    let admin_listener = if upgrade {
        None
    } else {
        let l =
            std::net::TcpListener::bind(cfg.admin_listen).map_err(|source| StartError::Bind {
                what: "admin.listen",
                addr: cfg.admin_listen,
                source,
            })?;
        if let Ok(a) = l.local_addr() {
            bound.admin_listen = a;
        }
        if cfg.listen.port() == 0 {
            let (addr, socket) = reserve_port("listen", cfg.listen)?;
            bound.listen = addr;
            _reserved.push(socket);
        } else {
            drop(
                std::net::TcpListener::bind(cfg.listen).map_err(|source| StartError::Bind {
                    what: "listen",
                    addr: cfg.listen,
                    source,
                })?,
            );
        }
        if let Some(tls) = bound.tls.as_mut().filter(|t| t.listen.port() == 0) {
            let (addr, socket) = reserve_port("tls.listen", tls.listen)?;
            tls.listen = addr;
            _reserved.push(socket);
        }
        Some(l)
    };

    let metrics = Arc::new(ProxyMetrics::new());
    metrics.config_loaded(&cfg.hash);
    let registry = Arc::new(Registry::new(cfg.clone()));

    let pid = std::process::id();
    let conf = ServerConf {
        threads: cfg.threads,
        work_stealing: cfg.work_stealing,
        upstream_keepalive_pool_size: cfg.keepalive_pool_size,
        grace_period_seconds: Some(cfg.upgrade_grace.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(cfg.shutdown_timeout.as_secs().max(1)),
        pid_file: std::env::temp_dir()
            .join(format!("hotplex-proxy-{pid}.pid"))
            .display()
            .to_string(),
        ..ServerConf::default()
    };
    // The handover is the proxy's own (crate::handover): pingora's upgrade stays off and its
    // listener table empty; the listening service gets `listen_fds` instead.
    let listen_fds = crate::handover::table(if upgrade {
        receive_listeners(&bound, upgrade_sock.as_deref())?
    } else {
        pingora::server::Fds::new()
    });
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    // pingora's HTTP proxy app behind connection limits and the request-head deadline
    // (limits.max_connections*, limits.header_read_timeout: see crate::conn_guard).
    let app = HotplexProxy::new(registry.clone(), metrics.clone());
    let pool_health = background_service(
        "http pool health check",
        crate::pools::health::PoolHealthService::new(registry.clone(), app.pool_metrics()),
    );
    let pool_dns = background_service(
        "http pool dns discovery",
        crate::pools::dns::PoolDnsService::new(registry.clone()),
    );
    let mut http = pingora::proxy::http_proxy(&server.configuration, app);
    // Idle HTTP/2 connections (no open stream) are closed and free their slot.
    let mut opts = http.server_options.take().unwrap_or_default();
    opts.h2_idle_timeout = Some(cfg.limits.h2_idle_timeout);
    http.server_options = Some(opts);
    let guarded = crate::conn_guard::GuardedApp::new(http, registry.clone(), &metrics);
    let mut proxy = pingora::services::listening::Service::new("hotplex proxy".into(), guarded);
    let b = cfg.buffers;
    proxy.add_listener(
        ListenerConfig::tcp(bound.listen.to_string())
            .l4_buffer(L4BufferSettings::new(b.read, b.write)),
    );
    let https_redirect = match crate::tls::setup(&bound, &metrics, upgrade)? {
        Some(t) => {
            proxy.add_listener(
                ListenerConfig::tcp(t.listen.to_string())
                    .tls(t.settings)
                    .l4_buffer(L4BufferSettings::new(b.tls_read, b.write)),
            );
            if let Some(app) = proxy.app_logic_mut().and_then(|a| a.inner_mut()) {
                app.h2_options = Some(t.h2_options);
            }
            t.redirect.map(|(l, addr)| {
                background_service(
                    "https redirect",
                    AdminService::new_or_deferred(
                        l,
                        addr,
                        crate::tls::redirect_router(t.listen.port()),
                    ),
                )
            })
        }
        None => None,
    };

    let mut backends = Backends::new(ConfigDiscovery::new(registry.clone()));
    crate::metrics::IdentityMetrics::register(&metrics.registry);
    backends.set_health_check(ReadyCheck::new(registry.clone(), metrics.clone()));
    let mut lb: LoadBalancer<RoundRobin> = LoadBalancer::from_backends(backends);
    lb.health_check_frequency = Some(cfg.health.interval);
    lb.update_frequency = Some(cfg.health.interval);
    lb.parallel_health_check = true;
    let health = background_service("health check", lb);
    let dns_discovery = background_service(
        "dns discovery",
        crate::upstream::dns::DnsDiscoveryService::new(
            registry.clone(),
            crate::metrics::DiscoveryMetrics::new(&metrics.registry),
        ),
    );

    let reloader = Arc::new(Reloader::new(path, registry.clone(), metrics.clone()));
    reloader.add_hook(Arc::new(crate::telemetry::TelemetryReloadHook));
    // From here on SIGHUP/SIGQUIT/SIGTERM/SIGINT are recorded, so that one arriving before a
    // watcher made its signal stream still reaches it (crate::signals).
    let early = crate::signals::Early::install().map_err(StartError::Signals)?;
    let sighup = background_service(
        "sighup reload",
        SighupService {
            reloader: reloader.clone(),
            early: early.clone(),
        },
    );
    let watch = background_service("config file watch", WatchService(reloader.clone()));
    let admin = background_service(
        "admin",
        AdminService::new_or_deferred(
            admin_listener,
            bound.admin_listen,
            admin::router(registry, metrics, reloader),
        ),
    );

    server.add_service(crate::handover::OwnFds::new(proxy, listen_fds.clone()));
    server.add_service(health);
    server.add_service(pool_health);
    server.add_service(pool_dns);
    server.add_service(dns_discovery);
    server.add_service(admin);
    server.add_service(sighup);
    server.add_service(watch);
    server.add_service(background_service(
        "upgrade watch",
        crate::upgrade::LeavingService(early.clone()),
    ));
    server.add_service(background_service(
        "systemd notify",
        crate::sd_notify::NotifyReady,
    ));
    if let Some(r) = https_redirect {
        server.add_service(r);
    }
    tracing::info!(listen = %bound.listen, admin = %bound.admin_listen, workers = cfg.workers.len(), config = %cfg.source, hash = %cfg.hash, "hotplex-proxy starting");
    if let Some(path) = addr_file {
        write_addr_file(path, &bound).map_err(|source| StartError::AddrFile {
            path: path.to_path_buf(),
            source,
        })?;
    }
    server.run(pingora::server::RunArgs {
        shutdown_signal: Box::new(crate::handover::HandoverSignals {
            sock: upgrade_sock,
            fds: listen_fds,
            early,
        }),
    });
    // Export the last spans before exiting (run_forever would exit without it).
    hotplex_common::telemetry::shutdown();
    // A SIGQUIT that handed nothing over is a failure (systemd's Restart=on-failure).
    std::process::exit(if crate::handover::handover_failed() {
        i32::from(crate::handover::EXIT_NO_HANDOVER)
    } else {
        0
    })
}

/// The upgrade socket to use, checked: a configured path must be private (see
/// [`crate::upgrade_sock::check`]: refused otherwise); the default one's directory is
/// created 0700 when missing (when that is impossible, upgrades are disabled, with a warning).
fn prepare_upgrade_sock(cfg: &RuntimeConfig) -> Result<Option<std::path::PathBuf>, StartError> {
    let disabled = |reason: &str| {
        tracing::warn!(
            reason,
            "graceful upgrade disabled: SIGQUIT stops the proxy with a failure status; set upgrade.sock (a private directory) to enable it"
        );
        Ok(None)
    };
    let Some(sock) = cfg.upgrade_sock.clone() else {
        return disabled(
            "no private runtime directory: RUNTIME_DIRECTORY and XDG_RUNTIME_DIR unset, not root",
        );
    };
    if !cfg.upgrade_sock_configured {
        if let Err(reason) = crate::upgrade_sock::create_dir(&sock) {
            return disabled(&reason);
        }
    }
    crate::upgrade_sock::check(&sock, crate::upgrade_sock::euid())
        .map_err(|reason| crate::config::ConfigError::new(&cfg.source, "upgrade.sock", reason))?;
    Ok(Some(sock))
}

/// `--upgrade`: the running proxy's listening sockets for `listen` and `tls.listen`.
fn receive_listeners(
    bound: &RuntimeConfig,
    sock: Option<&std::path::Path>,
) -> Result<pingora::server::Fds, StartError> {
    let sock = sock.ok_or_else(|| {
        StartError::Upgrade(
            "no upgrade socket (upgrade.sock, or a private runtime directory)".into(),
        )
    })?;
    let mut expected = vec![bound.listen];
    expected.extend(bound.tls.as_ref().map(|t| t.listen));
    crate::handover::receive(sock, &expected, crate::handover::RECEIVE_WAIT)
        .map_err(StartError::Upgrade)
}

/// Picks a free port for `addr` (port 0) and holds it: a bound, not listening socket with
/// `SO_REUSEADDR`. Linux lets another `SO_REUSEADDR` socket bind the same address while no
/// socket listens on it, which is what pingora's listener does (it sets `SO_REUSEADDR`);
/// meanwhile the kernel never hands the port to anyone else's port-0 bind or connect (a
/// process naming this exact port with `SO_REUSEADDR` could still bind it, as with any port).
fn reserve_port(
    what: &'static str,
    addr: std::net::SocketAddr,
) -> Result<(std::net::SocketAddr, tokio::net::TcpSocket), StartError> {
    let err = |source| StartError::Bind { what, addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    let local = socket.local_addr().map_err(err)?;
    Ok((local, socket))
}

/// Writes the bound addresses as JSON to `path` (a temporary file renamed over it).
fn write_addr_file(path: &std::path::Path, bound: &RuntimeConfig) -> std::io::Result<()> {
    let body = serde_json::json!({
        "listen": bound.listen.to_string(),
        "admin": bound.admin_listen.to_string(),
        "tls": bound.tls.as_ref().map(|t| t.listen.to_string()),
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{body}\n"))?;
    std::fs::rename(&tmp, path)
}
