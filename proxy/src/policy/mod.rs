//! Per-route policies (issue #19): each lives in the route's validated struct, so a
//! reload swaps it atomically with the route table.

pub mod compression;
pub mod error_pages;
pub mod route_limits;
