//! HotPlex edge proxy: a Pingora `ProxyHttp` in front of HotPlex session workers, with
//! sticky, load-aware session routing.
//!
//! Modules:
//! - [`cli`]: `hotplex-proxy [--config FILE]`, `hotplex-proxy check FILE`;
//! - [`config`]: YAML file layer + validated runtime config;
//! - [`routing`]: key extraction, signed affinity ids/cookies, rendezvous hashing, placement;
//! - [`upstream`]: live worker registry, pingora service discovery and health check;
//! - [`proxy`]: the `ProxyHttp` hooks (routing, headers, streaming timeouts, failures);
//! - [`admin`]: `/metrics`, `/admin/workers`, `/health/live` on the admin listener;
//! - [`reload`]: hot reload of the config file (`SIGHUP`, `POST /admin/reload`);
//! - [`metrics`]: the typed `ProxyMetrics`;
//! - [`errors`]: the JSON error answers;
//! - [`server`]: assembles the pingora server;
//! - [`upgrade`]: graceful upgrade/stop (`Connection: close` once SIGQUIT/SIGTERM arrived);
//! - [`tls`]: TLS termination, HTTP/2, HSTS, HTTPS redirect, certificate reload.
//!
//! Routing in one paragraph: a request's key comes from the path, query, header or cookie
//! (configurable order). A key signed by this deployment names its worker and always goes
//! there (410 if that worker was removed from the config, 503 if it is down: never
//! rerouted). Other keys are hashed (weighted rendezvous on worker ids). Keyless requests
//! are new sessions, placed on the least-filled healthy worker with room; `POST /sessions`
//! gets a signed id, and the response sets a signed affinity cookie.

pub mod admin;
pub mod audit;
pub mod cli;
pub mod config;
pub mod errors;
pub mod limit_store;
pub mod limits;
pub mod metrics;
pub mod proxy;
pub mod reload;
pub mod routing;
pub mod security;
pub mod server;
pub mod tls;
pub mod upgrade;
pub mod upstream;
