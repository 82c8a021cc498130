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
    /// An invalid `OTEL_*` environment variable.
    #[error("invalid environment: {0}")]
    Telemetry(#[from] hotplex_common::telemetry::SettingError),
}

/// Runs the proxy until a shutdown signal; returns only on a startup error. `upgrade`: take
/// the listening sockets over from the running process (pingora graceful upgrade); the admin
/// listener is then bound as soon as the old process releases it.
pub fn run(
    cfg: RuntimeConfig,
    path: Option<std::path::PathBuf>,
    upgrade: bool,
) -> Result<(), StartError> {
    let log_opts = hotplex_common::logging::LogOptions {
        telemetry: Some(cfg.telemetry.clone().with_process_env()?),
        static_fields: Vec::new(),
    };
    // A failed exporter is logged; the proxy runs without traces.
    let _ = hotplex_common::logging::init_with(cfg.log_format, &cfg.log_level, log_opts);
    if cfg.insecure_secret {
        tracing::warn!(
            "the public development affinity secret is in use: set routing.affinity_secrets"
        );
    }
    if cfg.admin_tokens.is_empty() {
        tracing::warn!(admin = %cfg.admin_listen, "no admin.tokens: /admin/* is open to anyone who can reach the (loopback) admin listener");
    }
    // Fail early and clearly on busy ports (when upgrading, the old process holds them).
    let admin_listener = if upgrade {
        None
    } else {
        let l =
            std::net::TcpListener::bind(cfg.admin_listen).map_err(|source| StartError::Bind {
                what: "admin.listen",
                addr: cfg.admin_listen,
                source,
            })?;
        drop(
            std::net::TcpListener::bind(cfg.listen).map_err(|source| StartError::Bind {
                what: "listen",
                addr: cfg.listen,
                source,
            })?,
        );
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
        upgrade_sock: cfg.upgrade_sock.clone(),
        ..ServerConf::default()
    };
    let opt = pingora::server::configuration::Opt {
        upgrade,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();

    // pingora's HTTP proxy app behind connection limits and the request-head deadline
    // (limits.max_connections*, limits.header_read_timeout: see crate::conn_guard).
    let mut http = pingora::proxy::http_proxy(
        &server.configuration,
        HotplexProxy::new(registry.clone(), metrics.clone()),
    );
    // Idle HTTP/2 connections (no open stream) are closed and free their slot.
    let mut opts = http.server_options.take().unwrap_or_default();
    opts.h2_idle_timeout = Some(cfg.limits.h2_idle_timeout);
    http.server_options = Some(opts);
    let guarded = crate::conn_guard::GuardedApp::new(http, registry.clone(), &metrics);
    let mut proxy = pingora::services::listening::Service::new("hotplex proxy".into(), guarded);
    let b = cfg.buffers;
    proxy.add_listener(
        ListenerConfig::tcp(cfg.listen.to_string())
            .l4_buffer(L4BufferSettings::new(b.read, b.write)),
    );
    let https_redirect = crate::tls::setup(&cfg, &mut proxy, &metrics)?;

    let mut backends = Backends::new(ConfigDiscovery::new(registry.clone()));
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
            crate::upstream::dns::DiscoveryMetrics::new(&metrics.registry),
        ),
    );

    let reloader = Arc::new(Reloader::new(path, registry.clone(), metrics.clone()));
    reloader.add_hook(Arc::new(crate::telemetry::TelemetryReloadHook));
    let sighup = background_service("sighup reload", SighupService(reloader.clone()));
    let watch = background_service("config file watch", WatchService(reloader.clone()));
    let admin = background_service(
        "admin",
        AdminService::new_or_deferred(
            admin_listener,
            cfg.admin_listen,
            admin::router(registry, metrics, reloader),
        ),
    );

    server.add_service(proxy);
    server.add_service(health);
    server.add_service(dns_discovery);
    server.add_service(admin);
    server.add_service(sighup);
    server.add_service(watch);
    server.add_service(background_service(
        "upgrade watch",
        crate::upgrade::LeavingService,
    ));
    if let Some(r) = https_redirect {
        server.add_service(r);
    }
    tracing::info!(listen = %cfg.listen, admin = %cfg.admin_listen, workers = cfg.workers.len(), config = %cfg.source, hash = %cfg.hash, "hotplex-proxy starting");
    server.run(pingora::server::RunArgs::default());
    // Export the last spans before exiting (run_forever would exit without it).
    hotplex_common::telemetry::shutdown();
    std::process::exit(0)
}
