//! Workers: the live registry ([`registry`]), pingora service discovery over the
//! arc-swapped config ([`discovery`]), DNS worker discovery ([`dns`]) and the
//! `/health/ready` health check ([`health`]) and the workers' identity checks ([`identity`]).

pub mod discovery;
pub mod dns;
pub mod health;
pub mod identity;
pub mod registry;

pub use registry::{ReadyReport, Registry, Worker, WorkerSet, WorkerState};
