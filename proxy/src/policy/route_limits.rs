//! `routes[].timeouts` and `routes[].max_body_bytes`: a route's own upstream timeouts and
//! request-body limit, overriding `timeouts.*` and `limits.max_body_bytes` for its
//! requests (`http` and `sessions` routes). A route's body limit obeys the global
//! streamed-body rule: over the 64 KiB the edge reads whole (or 0, unlimited) only with
//! `limits.allow_streamed_bodies: true`, like `limits.max_body_bytes`.

use std::time::Duration;

/// A route's validated timeouts (`None`: the global one).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteTimeouts {
    pub connect: Option<Duration>,
    pub read: Option<Duration>,
    pub idle: Option<Duration>,
}
