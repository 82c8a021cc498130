//! Per-route policies (issue #19): each lives in the route's validated struct
//! ([`crate::routes::Route`]), so a reload swaps it atomically with the route table. A
//! route without them costs one `Option` test per hook.
//!
//! `policy` imports nothing of the crate: the route table ([`crate::config`]) holds these
//! types, and their validation from the file types, with the key paths of the errors, is
//! in `config::route_policy` and `config::route_options`.

pub mod compression;
pub mod error_pages;
pub mod headers;
pub mod ip;
pub mod redirect;
pub mod route_limits;

/// The policies of one route (this part's), all `None` by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    /// `allow` / `deny` ([`ip::IpRules`]).
    pub ip: Option<ip::IpRules>,
    /// `redirect` ([`redirect::Redirect`]): answered by the edge, no pool.
    pub redirect: Option<redirect::Redirect>,
    /// `request_headers` ([`headers::HeaderRules`]), `http` routes only.
    pub request_headers: Option<headers::HeaderRules>,
    /// `response_headers`.
    pub response_headers: Option<headers::HeaderRules>,
}

impl RoutePolicy {
    /// Whether the route has IP rules or a redirect (checked in `request_filter`).
    pub fn admits(&self) -> bool {
        self.ip.is_some() || self.redirect.is_some()
    }

    /// The policies for `hotplex-proxy check` ("" when none).
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if let Some(ip) = &self.ip {
            s.push_str(&format!(
                ", allow {} deny {} CIDRs",
                ip.allow.len(),
                ip.deny.len()
            ));
        }
        if let Some(r) = &self.redirect {
            s.push_str(&format!(
                ", redirect {} to {}{} (no pool)",
                r.status, r.origin, r.path
            ));
        }
        for (name, h) in [
            ("request", &self.request_headers),
            ("response", &self.response_headers),
        ] {
            if let Some(h) = h {
                s.push_str(&format!(
                    ", {name} headers -{} ={} +{}",
                    h.remove.len(),
                    h.set.len(),
                    h.add.len()
                ));
            }
        }
        s
    }
}
