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
//! - [`body`]: request bodies read whole at the edge before anything reaches a worker;
//! - [`surface`]: the declared public surface (the only requests forwarded);
//! - [`trust`]: the headers the edge sets for, and strips before, a worker;
//! - [`head_map`]: pingora's heads edited as one plain header map on the hot path;
//! - [`hostile`]: raw HTTP/1 head checks (bare LF/CR, NUL, missing `Host`: 400);
//! - [`server`]: assembles the pingora server;
//! - [`signals`]: SIGHUP/SIGQUIT/SIGTERM/SIGINT recorded from before the services start;
//! - [`upgrade`]: graceful upgrade/stop (`Connection: close` once SIGQUIT/SIGTERM arrived);
//! - [`upgrade_sock`], [`handover`]: the private upgrade socket and the checked handover of
//!   the listening sockets (peer uid, configured addresses only, non-zero exit without one);
//! - [`upgrade_cmd`], [`sd_notify`]: `hotplex-proxy upgrade --pid PID` (the upgrade in one
//!   command, e.g. systemd `ExecReload=`) and `READY=1`/`MAINPID=` for `Type=notify`;
//! - [`tls`]: TLS termination, HTTP/2, HSTS, HTTPS redirect, certificate reload;
//! - [`jwt`]: JWT bearer-token validation (`auth.jwt`);
//! - [`conn_guard`]: connection limits and the request-head deadline (slowloris);
//! - [`telemetry`]: OpenTelemetry spans per request (`traceparent` in and out);
//! - [`routes`], [`pools`]: ordered routes (host, path, method) to the session pool or to
//!   `http` pools (round robin, least connections, hash; health checks; passive ejection);
//!
//! Layers (bottom to top; a module imports only modules of lower layers, no import cycle
//! between top-level modules: `scripts/check-cycles.py`, run by `make lint`, issue #19):
//!
//! 0. leaves: [`affinity`], [`audit`], [`head_map`], [`hostile`], [`policy`], [`sd_notify`],
//!    [`signals`], [`surface`], [`upgrade_sock`];
//! 1. [`config`] (the runtime config with its route table and the http pools' live state),
//!    [`handover`], [`upgrade`];
//! 2. [`jwt`], [`limits`], [`metrics`], [`upgrade_cmd`];
//! 3. [`errors`], [`limit_store`], [`tls`];
//! 4. [`body`], [`security`], [`upstream`];
//! 5. [`conn_guard`], [`reload`], [`routing`];
//! 6. [`admin`], [`pools`], [`telemetry`], [`trust`];
//! 7. [`routes`]; 8. [`proxy`]; 9. [`server`]; 10. [`cli`].
//!
//! Routing in one paragraph: a request's key comes from the path, query, header or cookie
//! (configurable order). A key signed by this deployment names its worker and always goes
//! there (410 if that worker was removed from the config, 503 if it is down: never
//! rerouted). Other keys are hashed (weighted rendezvous on worker ids). Keyless requests
//! are new sessions, placed on the least-filled healthy worker with room; `POST /sessions`
//! gets a signed id, and the response sets a signed affinity cookie.

pub mod admin;
pub mod affinity;
pub mod audit;
pub mod body;
pub mod cli;
pub mod config;
pub mod conn_guard;
pub mod errors;
pub mod handover;
pub mod head_map;
pub mod hostile;
pub mod jwt;
pub mod limit_store;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod pools;
pub mod proxy;
pub mod reload;
pub mod routes;
pub mod routing;
pub mod sd_notify;
pub mod security;
pub mod server;
pub mod signals;
pub mod surface;
pub mod telemetry;
pub mod tls;
pub mod trust;
pub mod upgrade;
pub mod upgrade_cmd;
pub mod upgrade_sock;
pub mod upstream;
