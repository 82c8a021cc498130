//! The end-to-end suites of HotPlex Edge: one test binary (like tokio's and Linkerd's
//! integration tests), every suite a module, the helpers in [`support`]. One binary links
//! pingora, the proxy and the worker once, instead of once per suite.
//!
//! Run one suite with `cargo test -p hotplex-e2e --test e2e proxy_trust::`, one test with
//! its full path (`cargo test -p hotplex-e2e --test e2e proxy_trust::some_test -- --exact`).

mod support;

mod abuse_limits;
mod admin_hardening;
mod agent_claude;
mod agent_isolation;
mod agent_isolation_caps;
mod agent_limits;
mod agent_sandbox;
mod agent_usage;
mod example_nginx;
mod observability_metrics;
mod observability_traces;
mod proxy_admin;
mod proxy_affinity;
mod proxy_audit_sink;
mod proxy_cli;
mod proxy_conn_limits;
mod proxy_dns;
mod proxy_drain;
mod proxy_errors;
mod proxy_failures;
mod proxy_jwt;
mod proxy_limits_redis;
mod proxy_limits_redis_auth;
mod proxy_pool_dns;
mod proxy_reload;
mod proxy_reservations;
mod proxy_route_auth;
mod proxy_route_compression;
mod proxy_route_error_pages;
mod proxy_route_limits;
mod proxy_route_policies_ip;
mod proxy_routes;
mod proxy_routes_reload;
mod proxy_routing;
mod proxy_security;
mod proxy_streams;
mod proxy_tls;
mod proxy_trust;
mod proxy_upgrade;
mod proxy_upgrade_hijack;
mod reliability_faults;
mod reliability_flood;
mod reliability_h2;
mod reliability_hostile;
mod reliability_memory;
mod reliability_restart;
mod secret_files;
mod systemd_upgrade;
mod tenant_quotas;
mod worker_api;
mod worker_drain;
mod worker_identity;
mod worker_identity_relay;
mod worker_metrics;
mod worker_pool;
mod worker_tls;
mod worker_trust;
mod worker_ws;
