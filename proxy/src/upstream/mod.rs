//! Workers: the live registry ([`registry`]), pingora service discovery over the
//! arc-swapped config ([`discovery`]), DNS worker discovery ([`dns`]) and the
//! `/health/ready` health check ([`health`]), the workers' identity checks ([`identity`]) and
//! the per-worker gauges of `ProxyMetrics` ([`gauges`]).

pub mod discovery;
pub mod dns;
pub mod gauges;
pub mod health;
pub mod identity;
pub mod registry;

pub use registry::{ReadyReport, Registry, Worker, WorkerSet, WorkerState};
