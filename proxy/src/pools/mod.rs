//! `http` pools: named groups of plain HTTP upstreams (a web UI, a docs site, a legacy
//! API) that routes ([`crate::routes`]) send requests to. The session pool (`workers:`,
//! DNS discovery, placement) is not here: it is [`crate::upstream`] and [`crate::routing`].
//!
//! - [`balance`]: `round_robin`, `least_conn`, `hash` (rendezvous on a header or cookie);
//! - [`health`]: the active health checks (pingora's `HttpHealthCheck`) of every pool;
//! - [`http`]: the per-request part the proxy hooks call (pick, peer, passive failures);
//! - [`dns`]: DNS discovery of a pool's upstreams (`pools[].discovery.dns`).
//!
//! A pool's members are its static `upstreams` plus the addresses DNS discovery last
//! found, swapped atomically ([`HttpPool::members`]); a request keeps the member list it
//! started with, so an upstream DNS dropped finishes what it serves.
//!
//! Each upstream's live state ([`UpstreamState`]: active health, consecutive failures,
//! passive ejection, requests in flight) is shared by `Arc`: a reload carries it over for
//! every upstream whose pool name and address are unchanged ([`HttpPool::adopt`]), and a
//! request in flight keeps the pool it started with until it ends.
//!
//! The pool types themselves ([`HttpPool`], [`Upstream`], [`UpstreamState`], the specs) are
//! part of the config's route table, so they live in [`crate::config::runtime::pools`] and
//! are re-exported here; this module is the behaviour around them.

pub mod balance;
pub mod dns;
pub mod health;
pub mod http;

pub use crate::config::runtime::pools::{
    EjectSpec, HealthSpec, HttpPool, InFlight, Members, PoolTls, Upstream, UpstreamState,
};
pub use balance::Balance;
