//! Validation of the per-route policies of the "compression, timeouts, error pages" part
//! of issue #19 (`routes[].compression`, `.timeouts`, `.error_pages`) into the types of
//! [`crate::policy`] (which imports nothing of the config: the file types and the key
//! paths of the errors are here). Every key is documented with its unit and default in
//! `conf/hotplex.yaml`.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::HeaderValue;

use super::file::routes::{
    CompressionFile, ErrorPageFile, RouteTimeoutsFile, DEFAULT_ERROR_PAGE_CONTENT_TYPE,
};
use super::ConfigError;
use crate::policy::compression::{Compression, MAX_COMPRESSION_LEVEL};
use crate::policy::error_pages::{
    ErrorPage, ErrorPages, ERROR_PAGE_STATUSES, MAX_ERROR_PAGE_BYTES,
};
use crate::policy::route_limits::RouteTimeouts;

impl CompressionFile {
    /// Validates `key` (`routes[i].compression`) of `file`.
    pub fn validate(&self, file: &str, key: &str) -> Result<Compression, ConfigError> {
        if !self.gzip && !self.brotli {
            return Err(ConfigError::new(
                file,
                format!("{key}.gzip"),
                "gzip and brotli both false: leave compression out to send responses as is",
            ));
        }
        if !(1..=MAX_COMPRESSION_LEVEL).contains(&self.level) {
            return Err(ConfigError::new(
                file,
                format!("{key}.level"),
                format!("{} is not a level 1..={MAX_COMPRESSION_LEVEL}", self.level),
            ));
        }
        Ok(Compression {
            gzip: self.gzip,
            brotli: self.brotli,
            level: self.level,
            min_size: self.min_size,
        })
    }
}

impl RouteTimeoutsFile {
    /// Validates `key` (`routes[i].timeouts`) of `file`: every value greater than 0.
    pub fn validate(&self, file: &str, key: &str) -> Result<RouteTimeouts, ConfigError> {
        for (name, v) in [
            ("connect", self.connect),
            ("read", self.read),
            ("idle", self.idle),
        ] {
            if v.is_some_and(|d| d.is_zero()) {
                return Err(ConfigError::new(
                    file,
                    format!("{key}.{name}"),
                    "must be greater than 0 (leave it out for the global timeout)",
                ));
            }
        }
        Ok(RouteTimeouts {
            connect: self.connect,
            read: self.read,
            idle: self.idle,
        })
    }
}

/// Validates `key` (`routes[i].error_pages`) of `file`.
pub fn error_pages(
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
    Ok(ErrorPages::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::file::routes::DEFAULT_COMPRESSION_LEVEL;
    use crate::config::file::routes::DEFAULT_COMPRESSION_MIN_SIZE;
    use crate::config::parse;

    const BASE: &str = "workers:\n  - id: w1\n    address: 127.0.0.1:8081\nroutes:\n  - name: api\n    path: /\n    pool: sessions\n";

    #[test]
    fn a_route_with_compression_in_the_config() {
        let base = "workers:\n  - id: w1\n    address: 127.0.0.1:8081\nroutes:\n  - name: api\n    path: /\n    pool: sessions\n";
        let c = parse(
            "c.yaml",
            &format!("{base}    compression: {{gzip: true}}\n"),
        )
        .expect("valid");
        let got = c.routes.routes[0].compression.clone().expect("on");
        assert_eq!(
            got,
            Compression {
                gzip: true,
                brotli: true,
                level: DEFAULT_COMPRESSION_LEVEL,
                min_size: DEFAULT_COMPRESSION_MIN_SIZE
            }
        );
        assert!(parse("c.yaml", base).expect("valid").routes.routes[0]
            .compression
            .is_none());
        for (extra, key) in [
            (
                "    compression: {level: 12}\n",
                "routes[0].compression.level",
            ),
            (
                "    compression: {gzip: false, brotli: false}\n",
                "routes[0].compression.gzip",
            ),
        ] {
            let e = parse("c.yaml", &format!("{base}{extra}")).expect_err(extra);
            assert_eq!((e.file.as_str(), e.key.as_str()), ("c.yaml", key), "{e}");
        }
        let e = parse(
            "c.yaml",
            &format!("{base}    compression: {{zstd: true}}\n"),
        )
        .expect_err("unknown key");
        assert!(e.key.starts_with("routes[0]"), "{e}");
        assert!(e.reason.contains("zstd"), "{e}");
    }

    #[test]
    fn validation_names_the_key() {
        let f = |gzip, brotli, level| CompressionFile {
            gzip,
            brotli,
            level,
            min_size: 0,
        };
        let e = f(false, false, 6)
            .validate("x.yaml", "routes[2].compression")
            .expect_err("none");
        assert_eq!(
            (e.file.as_str(), e.key.as_str()),
            ("x.yaml", "routes[2].compression.gzip")
        );
        for l in [0, 10] {
            let e = f(true, true, l)
                .validate("x.yaml", "routes[2].compression")
                .expect_err("level");
            assert_eq!(e.key, "routes[2].compression.level");
            assert!(e.reason.contains("1..=9"), "{}", e.reason);
        }
    }

    #[test]
    fn parsed_validated_and_refused_with_the_key_path() {
        let c = parse(
            "r.yaml",
            &format!(
                "{BASE}    timeouts: {{connect: 250ms, read: 3s}}\n    max_body_bytes: 1024\n"
            ),
        )
        .expect("valid");
        let r = &c.routes.routes[0];
        assert_eq!(r.max_body_bytes, Some(1024));
        assert_eq!(
            r.timeouts,
            RouteTimeouts {
                connect: Some(std::time::Duration::from_millis(250)),
                read: Some(std::time::Duration::from_secs(3)),
                idle: None
            }
        );
        let none = parse("r.yaml", BASE).expect("valid");
        assert_eq!(none.routes.routes[0].max_body_bytes, None);
        assert_eq!(none.routes.routes[0].timeouts, Default::default());
        for (extra, key, why) in [
            (
                "    timeouts: {read: 0s}\n",
                "routes[0].timeouts.read",
                "greater than 0",
            ),
            (
                "    max_body_bytes: 65537\n",
                "routes[0].max_body_bytes",
                "allow_streamed_bodies",
            ),
            (
                "    max_body_bytes: 0\n",
                "routes[0].max_body_bytes",
                "unlimited",
            ),
        ] {
            let e = parse("r.yaml", &format!("{BASE}{extra}")).expect_err(extra);
            assert_eq!((e.file.as_str(), e.key.as_str()), ("r.yaml", key), "{e}");
            assert!(e.reason.contains(why), "{e}");
        }
        let e =
            parse("r.yaml", &format!("{BASE}    timeouts: {{write: 1s}}\n")).expect_err("unknown");
        assert!(
            e.key.starts_with("routes[0]") && e.reason.contains("write"),
            "{e}"
        );
        // With streamed bodies allowed, a route may go past the edge buffer.
        let streamed = "limits:\n  allow_streamed_bodies: true\n  max_body_bytes: 1048576\n";
        let c = parse(
            "r.yaml",
            &format!("{streamed}{BASE}    max_body_bytes: 2097152\n"),
        )
        .expect("valid with streamed bodies");
        assert_eq!(c.routes.routes[0].max_body_bytes, Some(2_097_152));
    }

    #[test]
    fn pages_load_and_bad_ones_are_refused_with_the_key_path() {
        let dir = tempfile::tempdir().expect("dir");
        let page = dir.path().join("503.html");
        std::fs::write(&page, "<h1>down</h1>").expect("write");
        let big = dir.path().join("big.html");
        std::fs::write(&big, vec![b'x'; MAX_ERROR_PAGE_BYTES + 1]).expect("write");
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
        assert_eq!(p.content_type, DEFAULT_ERROR_PAGE_CONTENT_TYPE);
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
