//! The contract shared by the HotPlex edge proxy (`hotplex-proxy`) and the session
//! workers (`hotplex-worker`).
//!
//! Nothing here depends on Pingora: the worker links this crate too. It holds
//! - [`names`]: every Prometheus metric name, defined exactly once;
//! - [`headers`]: the HTTP header, cookie and subprotocol names both sides speak;
//! - [`identity`]: the worker identity proof (HMAC challenge on the health probe);
//! - [`session_id`]: the session-id format and its validation;
//! - [`metrics`]: small helpers to build registries and render the text format;
//! - [`logging`]: tracing setup (JSON or human-readable);
//! - [`telemetry`]: OpenTelemetry traces (OTLP export, `traceparent` propagation).

pub mod dirwatch;
pub mod gcra;
pub mod headers;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod names;
pub mod profiling;
pub mod secrets;
pub mod session_id;
pub mod telemetry;

pub use session_id::{signed_shape, SessionId, SessionIdError, SignedShape};
