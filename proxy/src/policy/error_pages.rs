//! `routes[].error_pages`: a route's own bodies for the answers the EDGE writes on it
//! (401, 403, 404, 408, 413, 429, 502, 503, 504), e.g. an HTML page for a UI route while
//! the API keeps the JSON errors. Files are read, size-capped and checked at config load
//! (a reload re-reads them); an upstream's own error answers pass unchanged.
//! `no_route` cannot have one: no route matched, so there is no route to take it from.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::HeaderValue;

pub use crate::config::file::routes::{ErrorPageFile, DEFAULT_ERROR_PAGE_CONTENT_TYPE};
use crate::config::ConfigError;

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
    pub fn get(&self, status: u16) -> Option<&ErrorPage> {
        self.0.iter().find(|(s, _)| *s == status).map(|(_, p)| p)
    }
}

/// Validates `key` (`routes[i].error_pages`) of `file`.
pub fn validate(
    file: &str,
    key: &str,
    pages: &BTreeMap<u16, ErrorPageFile>,
) -> Result<ErrorPages, ConfigError> {
    let mut out = Vec::with_capacity(pages.len());
    for (status, p) in pages {
        let k = format!("{key}.{status}");
        if !ERROR_PAGE_STATUSES.contains(status) {
            return Err(ConfigError::new(
                file,
                k,
                format!("the edge never answers {status} itself (pages for: 401, 403, 404, 408, 413, 429, 502, 503, 504)"),
            ));
        }
        let ct = p
            .content_type
            .as_deref()
            .unwrap_or(DEFAULT_ERROR_PAGE_CONTENT_TYPE);
        let content_type = HeaderValue::from_str(ct)
            .ok()
            .filter(|_| ct.contains('/'))
            .ok_or_else(|| {
                ConfigError::new(
                    file,
                    format!("{k}.content_type"),
                    format!("{ct:?} is not a media type"),
                )
            })?;
        let body = match (&p.file, &p.body) {
            (Some(path), None) => {
                let fk = format!("{k}.file");
                let meta = std::fs::metadata(path)
                    .map_err(|e| ConfigError::new(file, fk.as_str(), format!("{path}: {e}")))?;
                if meta.len() > MAX_ERROR_PAGE_BYTES as u64 {
                    return Err(ConfigError::new(
                        file,
                        fk,
                        format!(
                            "{path}: {} bytes, over the {MAX_ERROR_PAGE_BYTES} allowed",
                            meta.len()
                        ),
                    ));
                }
                let b = std::fs::read(path)
                    .map_err(|e| ConfigError::new(file, fk.as_str(), format!("{path}: {e}")))?;
                if b.len() > MAX_ERROR_PAGE_BYTES {
                    return Err(ConfigError::new(
                        file,
                        fk,
                        format!("{path}: over {MAX_ERROR_PAGE_BYTES} bytes"),
                    ));
                }
                Bytes::from(b)
            }
            (None, Some(b)) if b.len() <= MAX_ERROR_PAGE_BYTES => Bytes::from(b.clone()),
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    file,
                    format!("{k}.body"),
                    format!("over the {MAX_ERROR_PAGE_BYTES} bytes allowed"),
                ))
            }
            _ => {
                return Err(ConfigError::new(
                    file,
                    k,
                    "give exactly one of file: (a path) or body: (inline)",
                ))
            }
        };
        out.push((*status, ErrorPage { content_type, body }));
    }
    Ok(ErrorPages(out))
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const BASE: &str = "workers:\n  - id: w1\n    address: 127.0.0.1:8081\nroutes:\n  - name: api\n    path: /\n    pool: sessions\n";

    #[test]
    fn pages_load_and_bad_ones_are_refused_with_the_key_path() {
        let dir = tempfile::tempdir().expect("dir");
        let page = dir.path().join("503.html");
        std::fs::write(&page, "<h1>down</h1>").expect("write");
        let big = dir.path().join("big.html");
        std::fs::write(&big, vec![b'x'; super::MAX_ERROR_PAGE_BYTES + 1]).expect("write");
        let c = parse(
            "p.yaml",
            &format!(
                "{BASE}    error_pages:\n      503: {{file: {}}}\n      429: {{content_type: text/plain, body: slow down}}\n",
                page.display()
            ),
        )
        .expect("valid");
        let pages = &c.routes.routes[0].error_pages;
        let p = pages.get(503).expect("503");
        assert_eq!(&p.body[..], b"<h1>down</h1>");
        assert_eq!(p.content_type, super::DEFAULT_ERROR_PAGE_CONTENT_TYPE);
        assert_eq!(&pages.get(429).expect("429").body[..], b"slow down");
        assert!(pages.get(502).is_none());
        let cases = [
            (
                format!("      503: {{file: {}/none.html}}\n", dir.path().display()),
                "routes[0].error_pages.503.file",
                "none.html",
            ),
            (
                format!("      503: {{file: {}}}\n", big.display()),
                "routes[0].error_pages.503.file",
                "over the",
            ),
            (
                "      500: {body: x}\n".to_string(),
                "routes[0].error_pages.500",
                "never answers 500",
            ),
            (
                "      503: {}\n".to_string(),
                "routes[0].error_pages.503",
                "exactly one",
            ),
            (
                "      503: {body: x, content_type: html}\n".to_string(),
                "routes[0].error_pages.503.content_type",
                "media type",
            ),
        ];
        for (extra, key, why) in cases {
            let e = parse("p.yaml", &format!("{BASE}    error_pages:\n{extra}")).expect_err(&extra);
            assert_eq!((e.file.as_str(), e.key.as_str()), ("p.yaml", key), "{e}");
            assert!(e.reason.contains(why), "{e}");
        }
    }
}
