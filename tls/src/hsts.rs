//! HSTS: the `tls.hsts` section and the `Strict-Transport-Security` header value, plus
//! the `Location` for the plain-HTTP -> HTTPS redirect listener (`tls.redirect_http`).
//! Send the HSTS header on TLS responses only (RFC 6797 §7.2).

use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// Default for `tls.hsts.max_age`: one year, in seconds.
pub const DEFAULT_HSTS_MAX_AGE_SECS: u64 = 31_536_000;
/// Minimum `max-age` (seconds) accepted together with `preload` (hstspreload.org rule).
pub const HSTS_PRELOAD_MIN_MAX_AGE_SECS: u64 = 31_536_000;

fn default_hsts_age() -> Seconds {
    Seconds::Secs(DEFAULT_HSTS_MAX_AGE_SECS)
}

/// `tls.hsts`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HstsFile {
    /// `max-age`: integer seconds or a humantime string (`"365d"`). Default one year.
    #[serde(default = "default_hsts_age")]
    pub max_age: Seconds,
    /// Add `includeSubDomains`. Default false.
    #[serde(default)]
    pub include_subdomains: bool,
    /// Add `preload` (requires `include_subdomains` and max_age >= 1 year). Default false.
    #[serde(default)]
    pub preload: bool,
}

/// A duration written as integer seconds or as a humantime string (`"30s"`, `"365d"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Seconds {
    /// Integer seconds.
    Secs(u64),
    /// Humantime string.
    Text(String),
}

impl Seconds {
    /// As a [`Duration`]; `path` names the key in errors.
    pub fn to_duration(&self, path: &str) -> Result<Duration, ConfigError> {
        match self {
            Seconds::Secs(s) => Ok(Duration::from_secs(*s)),
            Seconds::Text(t) => humantime::parse_duration(t)
                .map_err(|e| ConfigError::new(path, format!("invalid duration {t:?}: {e}"))),
        }
    }
}

/// Validated HSTS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hsts {
    /// `max-age` (whole seconds are used).
    pub max_age: Duration,
    /// `includeSubDomains`.
    pub include_subdomains: bool,
    /// `preload`.
    pub preload: bool,
}

impl Hsts {
    /// The `Strict-Transport-Security` header value, e.g.
    /// `max-age=31536000; includeSubDomains; preload`.
    pub fn header_value(&self) -> String {
        let mut v = format!("max-age={}", self.max_age.as_secs());
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        v
    }
}

impl HstsFile {
    /// Validate; `prefix` is the key path of this section (e.g. `tls.hsts`).
    pub fn validate_at(&self, prefix: &str) -> Result<Hsts, ConfigError> {
        let p = format!("{prefix}.max_age");
        let max_age = self.max_age.to_duration(&p)?;
        if self.preload && !self.include_subdomains {
            return Err(ConfigError::new(
                format!("{prefix}.preload"),
                "preload requires include_subdomains: true",
            ));
        }
        if self.preload && max_age.as_secs() < HSTS_PRELOAD_MIN_MAX_AGE_SECS {
            return Err(ConfigError::new(
                p,
                format!("preload requires max_age >= {HSTS_PRELOAD_MIN_MAX_AGE_SECS}s"),
            ));
        }
        Ok(Hsts {
            max_age,
            include_subdomains: self.include_subdomains,
            preload: self.preload,
        })
    }
}

/// `Location` for a 301 from plain HTTP to HTTPS: `https://{host}[:tls_port]{path_and_query}`.
/// `host` is the request's Host header (its port, if any, is replaced by `tls_port`; `:443`
/// is omitted). Returns `None` for a missing/invalid host (answer 400 then), so header
/// injection or a redirect to a malformed URL is impossible.
pub fn https_redirect_location(host: &str, path_and_query: &str, tls_port: u16) -> Option<String> {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        let end = rest.find(']')?;
        let v6 = &rest[..end];
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        format!("[{v6}]")
    } else {
        let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let ok = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !ok {
            return None;
        }
        name.to_ascii_lowercase()
    };
    let path = if path_and_query.starts_with('/')
        && !path_and_query.starts_with("//")
        && path_and_query.bytes().all(|b| (0x21..0x7f).contains(&b))
    {
        path_and_query
    } else {
        "/"
    };
    Some(if tls_port == 443 {
        format!("https://{name}{path}")
    } else {
        format!("https://{name}:{tls_port}{path}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_location() {
        let l = |h, p, port| https_redirect_location(h, p, port);
        assert_eq!(
            l("Example.com", "/a?b=1", 443).as_deref(),
            Some("https://example.com/a?b=1")
        );
        assert_eq!(
            l("example.com:80", "/", 8443).as_deref(),
            Some("https://example.com:8443/")
        );
        assert_eq!(
            l("[::1]:8080", "/x", 443).as_deref(),
            Some("https://[::1]/x")
        );
        assert_eq!(
            l("a.com", "//evil.com/", 443).as_deref(),
            Some("https://a.com/")
        );
        assert_eq!(
            l("a.com", "/x\r\nSet-Cookie: a", 443).as_deref(),
            Some("https://a.com/")
        );
        assert_eq!(l("evil.com/path", "/", 443), None);
        assert_eq!(l("a.com\r\nX: y", "/", 443), None);
        assert_eq!(l("", "/", 443), None);
        assert_eq!(l("[zz]:1", "/", 443), None);
    }
}
