//! Host, path and method matchers of a route. Everything is compared on the raw request
//! bytes, without allocation (this runs for every request when `routes:` is set).
//!
//! - host: exact (`api.example.com`) or a suffix wildcard (`*.example.com`: any name
//!   ending in `.example.com`, one or more labels deep; not `example.com` itself);
//!   ASCII case-insensitive; the port of the `Host` header (or `:authority`) is ignored.
//!   A route without hosts matches any host (and a request without a host).
//! - path: `prefix` (default) on segment boundaries: `/api` matches `/api`, `/api/` and
//!   `/api/x`, never `/apix`; a prefix ending in `/` (`/api/`) matches what starts with
//!   it; `/` matches every path. `exact`: the path equals it. The query is not part of
//!   the path. No decoding and no dot-segment removal: `/api/../admin` is matched as is.
//! - methods: a list (`GET`, `POST`...); empty matches every method.

use http::Method;

/// One host pattern, lower-cased at config time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this name.
    Exact(String),
    /// `*.suffix`: stores `.suffix` (with the dot).
    Suffix(String),
}

impl HostPattern {
    /// Parses `name` or `*.name`; `None` when not a plausible host name.
    pub fn parse(s: &str) -> Option<HostPattern> {
        let s = s.trim().to_ascii_lowercase();
        let (wild, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, s),
        };
        let ok = !name.is_empty()
            && name.len() <= 253
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok {
            return None;
        }
        Some(if wild {
            HostPattern::Suffix(format!(".{name}"))
        } else {
            HostPattern::Exact(name)
        })
    }

    /// Whether `host` (already without its port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(n) => host.eq_ignore_ascii_case(n),
            HostPattern::Suffix(sfx) => {
                host.len() > sfx.len()
                    && host
                        .get(host.len() - sfx.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(sfx))
            }
        }
    }
}

/// The host of a `Host` value or `:authority`, without its port (`[::1]:80` -> `[::1]`).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

/// How a route's path matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// Prefix on segment boundaries (see the module docs).
    Prefix(String),
    /// The whole path.
    Exact(String),
}

impl PathPattern {
    /// Whether `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => path == p,
            PathPattern::Prefix(p) => match path.strip_prefix(p.as_str()) {
                None => false,
                Some(rest) => rest.is_empty() || p.ends_with('/') || rest.starts_with('/'),
            },
        }
    }

    /// The configured text.
    pub fn as_str(&self) -> &str {
        match self {
            PathPattern::Prefix(p) | PathPattern::Exact(p) => p,
        }
    }
}

/// Checks a configured path: absolute, printable, no spaces, no query or fragment.
pub fn valid_path(p: &str) -> Result<(), &'static str> {
    if !p.starts_with('/') {
        return Err("must start with /");
    }
    if p.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err("must be printable ASCII without spaces");
    }
    if p.contains('?') || p.contains('#') {
        return Err("must not contain a query (?) or fragment (#)");
    }
    if p.contains("//") {
        return Err("must not contain an empty segment (//)");
    }
    Ok(())
}

/// A route's full condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    /// Empty: any host.
    pub hosts: Vec<HostPattern>,
    pub path: PathPattern,
    /// Empty: any method.
    pub methods: Vec<Method>,
}

impl Matcher {
    /// Whether the request matches. `host`: without its port (see [`strip_port`]).
    pub fn matches(&self, host: Option<&str>, method: &Method, path: &str) -> bool {
        (self.hosts.is_empty() || host.is_some_and(|h| self.hosts.iter().any(|p| p.matches(h))))
            && (self.methods.is_empty() || self.methods.contains(method))
            && self.path.matches(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(s: &str) -> HostPattern {
        HostPattern::parse(s).expect("valid host pattern")
    }

    #[test]
    fn hosts_exact_and_suffix_case_insensitive() {
        assert!(hp("api.example.com").matches("API.Example.com"));
        assert!(!hp("api.example.com").matches("api.example.com.evil"));
        assert!(!hp("api.example.com").matches("xapi.example.com"));
        let w = hp("*.Example.com");
        assert_eq!(w, HostPattern::Suffix(".example.com".into()));
        assert!(w.matches("ui.example.com"));
        assert!(w.matches("a.b.EXAMPLE.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("badexample.com"));
        assert!(!w.matches(".example.com"));
        for bad in ["", "*.", "a..b", ".a", "a b", "*", "*.*.x", "a/b", "x:80"] {
            assert!(HostPattern::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn ports_are_ignored() {
        assert_eq!(strip_port("example.com:8000"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:8000"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("127.0.0.1:80"), "127.0.0.1");
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let p = PathPattern::Prefix("/api".into());
        assert!(p.matches("/api"));
        assert!(p.matches("/api/"));
        assert!(p.matches("/api/v1/x"));
        assert!(!p.matches("/apix"));
        assert!(!p.matches("/ap"));
        assert!(!p.matches("/"));
        let slash = PathPattern::Prefix("/api/".into());
        assert!(slash.matches("/api/"));
        assert!(slash.matches("/api/x"));
        assert!(!slash.matches("/api"));
        let root = PathPattern::Prefix("/".into());
        for p in ["/", "/x", "/sessions/a/messages", "//x"] {
            assert!(root.matches(p), "{p}");
        }
        let exact = PathPattern::Exact("/".into());
        assert!(exact.matches("/"));
        assert!(!exact.matches("/x"));
    }

    #[test]
    fn paths_are_validated() {
        assert!(valid_path("/api/v1").is_ok());
        assert!(valid_path("api").is_err());
        assert!(valid_path("/a b").is_err());
        assert!(valid_path("/a?b=1").is_err());
        assert!(valid_path("/a//b").is_err());
        assert!(valid_path("/é").is_err());
    }

    #[test]
    fn a_matcher_needs_host_method_and_path() {
        let m = Matcher {
            hosts: vec![hp("ui.example.com"), hp("*.ui.example.com")],
            path: PathPattern::Prefix("/app".into()),
            methods: vec![Method::GET, Method::HEAD],
        };
        assert!(m.matches(Some("ui.example.com"), &Method::GET, "/app/x"));
        assert!(m.matches(Some("x.ui.example.com"), &Method::HEAD, "/app"));
        assert!(!m.matches(Some("api.example.com"), &Method::GET, "/app"));
        assert!(!m.matches(None, &Method::GET, "/app"));
        assert!(!m.matches(Some("ui.example.com"), &Method::POST, "/app"));
        assert!(!m.matches(Some("ui.example.com"), &Method::GET, "/apps"));
        let any = Matcher {
            hosts: vec![],
            path: PathPattern::Prefix("/".into()),
            methods: vec![],
        };
        assert!(any.matches(None, &Method::DELETE, "/whatever"));
    }
}
