//! `routes[].error_pages`: a route's own bodies for the answers the EDGE writes on it
//! (401, 403, 404, 408, 413, 429, 502, 503, 504), e.g. an HTML page for a UI route while
//! the API keeps the JSON errors. Files are read, size-capped and checked at config load
//! (a reload re-reads them); an upstream's own error answers pass unchanged.
//! `no_route` cannot have one: no route matched, so there is no route to take it from.

use bytes::Bytes;
use http::HeaderValue;

/// Largest error page (file or inline), bytes.
pub const MAX_ERROR_PAGE_BYTES: usize = 64 * 1024;
/// The statuses the edge itself answers with on a route.
pub const ERROR_PAGE_STATUSES: &[u16] = &[401, 403, 404, 408, 413, 429, 502, 503, 504];

/// One validated page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPage {
    pub content_type: HeaderValue,
    pub body: Bytes,
}

/// A route's pages, by status (a handful: a linear scan).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorPages(Vec<(u16, ErrorPage)>);

impl ErrorPages {
    /// The pages of one route (validated: [`crate::config`]).
    pub fn new(pages: Vec<(u16, ErrorPage)>) -> ErrorPages {
        ErrorPages(pages)
    }

    pub fn get(&self, status: u16) -> Option<&ErrorPage> {
        self.0.iter().find(|(s, _)| *s == status).map(|(_, p)| p)
    }
}
